//! `PUT /drives/{id}`: block devices backed by raw image files.

use serde::{Deserialize, Serialize};

use super::boot_source::check_readable;
use super::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: String,
    #[serde(default)]
    pub is_root_device: bool,
    #[serde(default)]
    pub is_read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// Accepted for compatibility: "Unsafe" or "Writeback". kiln always honours flushes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<String>,
    /// Accepted for compatibility: "Sync" (kiln's only engine) or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<serde_json::Value>,
}

impl Drive {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let id_ok = !self.drive_id.is_empty()
            && self.drive_id.len() <= 64
            && self
                .drive_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !id_ok {
            return Err(ConfigError::new(format!(
                "drive_id '{}' is invalid; use 1-64 letters, digits, '_' or '-'",
                self.drive_id
            )));
        }
        check_readable("drive image", &self.path_on_host)?;
        if self.io_engine.as_deref().is_some_and(|e| e != "Sync") {
            return Err(ConfigError::new(
                "io_engine must be \"Sync\" (the only engine kiln-vmm has) or omitted",
            ));
        }
        if self.rate_limiter.as_ref().is_some_and(|r| !r.is_null()) {
            return Err(ConfigError::new(
                "rate_limiter is not supported by this kiln-vmm yet; remove it",
            ));
        }
        Ok(())
    }
}

/// At most one drive may be the root device.
pub fn check_single_root(drives: &[Drive]) -> Result<(), ConfigError> {
    if drives.iter().filter(|d| d.is_root_device).count() > 1 {
        return Err(ConfigError::new(
            "more than one drive has is_root_device: true; mark only one",
        ));
    }
    Ok(())
}

/// Drives in device order: the root device first (it becomes /dev/vda), then the rest
/// in the order they were added.
pub fn device_order(drives: &[Drive]) -> Vec<&Drive> {
    let mut v: Vec<&Drive> = drives.iter().filter(|d| d.is_root_device).collect();
    v.extend(drives.iter().filter(|d| !d.is_root_device));
    v
}
