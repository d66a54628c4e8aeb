//! `PUT /boot-source`: kernel, command line, initrd.

use std::fs::File;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ConfigError;

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

/// Checks that `path` names a readable regular file.
pub fn check_readable(what: &str, path: &str) -> Result<(), ConfigError> {
    let p = Path::new(path);
    match File::open(p).and_then(|f| f.metadata()) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(ConfigError::new(format!(
            "{what} '{path}' is not a regular file; give the path of a file"
        ))),
        Err(e) => Err(ConfigError::new(format!(
            "cannot read {what} '{path}': {e}; check the path and its permissions"
        ))),
    }
}

impl BootSource {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_readable("kernel image", &self.kernel_image_path)?;
        if let Some(initrd) = &self.initrd_path {
            check_readable("initrd", initrd)?;
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
