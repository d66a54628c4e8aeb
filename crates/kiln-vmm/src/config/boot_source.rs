//! `PUT /boot-source`: kernel, command line, initrd.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::host_file::{self, Accept};

/// The command line used when the client gives none (Firecracker's default, plus
/// `panic=-1` so a panicking guest ends the VMM at once and `loglevel=1` so only
/// emergency messages — panics — cost serial exits).
pub const DEFAULT_BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=-1 pci=off nomodule \
i8042.noaux i8042.nomux i8042.dumbkbd loglevel=1 io_delay=none";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    pub kernel_image_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
}

/// Checks that `path` (the value of the API field `field`) names a readable file of a
/// kind `accept` allows, without blocking on a FIFO or device (see [`crate::host_file`]).
pub fn check_readable(field: &str, path: &str, accept: Accept) -> Result<(), ConfigError> {
    match host_file::open(Path::new(path), false, accept) {
        Ok(_) => Ok(()),
        Err(e) => match host_file::not_regular(&e) {
            Some(r) => Err(ConfigError::new(format!(
                "{field} '{path}' {r}; give the path of {}",
                if accept == Accept::File {
                    "a file"
                } else {
                    "a disk image file or a block device"
                }
            ))),
            None => Err(ConfigError::new(format!(
                "cannot read {field} '{path}': {e}; check the path and its permissions"
            ))),
        },
    }
}

impl BootSource {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_readable("kernel_image_path", &self.kernel_image_path, Accept::File)?;
        if let Some(initrd) = &self.initrd_path {
            check_readable("initrd_path", initrd, Accept::File)?;
        }
        if let Some(args) = &self.boot_args {
            if args.len() >= crate::arch::layout::CMDLINE_MAX_SIZE {
                return Err(ConfigError::new(format!(
                    "boot_args is {} bytes; the kernel accepts at most {}",
                    args.len(),
                    crate::arch::layout::CMDLINE_MAX_SIZE - 1
                )));
            }
        }
        Ok(())
    }

    pub fn boot_args(&self) -> &str {
        self.boot_args.as_deref().unwrap_or(DEFAULT_BOOT_ARGS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_kernel_names_the_path() {
        let b = BootSource {
            kernel_image_path: "/nonexistent/vmlinux".into(),
            boot_args: None,
            initrd_path: None,
        };
        let e = b.validate().unwrap_err().0;
        assert!(
            e.contains("/nonexistent/vmlinux") && e.contains("No such file"),
            "{e}"
        );
        let dir = BootSource {
            kernel_image_path: "/".into(),
            ..b
        };
        assert!(dir.validate().unwrap_err().0.contains("not a regular file"));
    }
}
