//! `PUT /drives/{id}`: block devices backed by raw image files (a regular file, or a
//! host block device; anything else, a FIFO above all, is refused: see
//! [`crate::host_file`]).

use serde::{Deserialize, Serialize};

use super::boot_source::check_readable;
use super::ConfigError;
use crate::devices::rate_limiter::RateLimiterConfig;
use crate::host_file::Accept;

/// Firecracker's block cache modes (its spellings). kiln-vmm's block device always offers
/// `VIRTIO_BLK_F_FLUSH` and completes a guest flush only once the data is on the host's
/// disk, which is `Writeback`'s promise. `Unsafe` (Firecracker's default) only permits
/// dropping flushes and promises nothing kiln breaks, so both are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    Unsafe,
    Writeback,
}

/// Firecracker's block I/O engines (its spellings). kiln-vmm has only `Sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    Sync,
    Async,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: String,
    #[serde(default)]
    pub is_root_device: bool,
    #[serde(default)]
    pub is_read_only: bool,
    /// Refused: the root drive is always the whole disk `/dev/vda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// Either value (see [`CacheType`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<CacheType>,
    /// `Sync` (kiln-vmm's only engine) or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
    /// Firecracker's token buckets on the drive's requests (bandwidth in bytes, ops in
    /// requests); see [`crate::devices::rate_limiter`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiterConfig>,
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
        check_readable(
            "path_on_host",
            &self.path_on_host,
            Accept::FileOrBlockDevice,
        )?;
        if self.io_engine.is_some_and(|e| e != IoEngine::Sync) {
            return Err(ConfigError::new(
                "io_engine must be \"Sync\" (the only engine kiln-vmm has) or omitted",
            ));
        }
        if let Some(l) = &self.rate_limiter {
            l.validate("rate_limiter").map_err(ConfigError::new)?;
        }
        if let Some(uuid) = &self.partuuid {
            return Err(ConfigError::new(format!(
                "partuuid \"{uuid}\" is not supported by kiln-vmm (a root drive is always the \
                 whole disk, root=/dev/vda): remove it and give the filesystem image itself"
            )));
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

#[cfg(test)]
mod tests;
