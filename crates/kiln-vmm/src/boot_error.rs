//! `boot-error.json`: why a VM failed before its agent was ready, written atomically
//! (temporary file + rename) where `--boot-error PATH` says, so a launcher can show the
//! cause instead of "the process exited". A successful InstanceStart removes a stale
//! record; a later failure before the agent is ready writes a new one.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::builder::StartError;
use crate::kernel::{BootFile, LoadError};

/// The stages a boot can fail in.
pub const STAGES: [&str; 7] = [
    "config", "image", "kernel", "devices", "network", "agent", "other",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootError {
    /// Milliseconds since the epoch.
    pub time_unix_ms: u64,
    /// One of [`STAGES`].
    pub stage: String,
    pub errno: Option<i32>,
    pub message: String,
}

static PATH: OnceLock<PathBuf> = OnceLock::new();

/// Where records go (set once, from `--boot-error`).
pub fn set_path(p: PathBuf) {
    let _ = PATH.set(p);
}

/// Writes `stage`/`errno`/`message` to `path` atomically.
pub fn write(path: &Path, stage: &str, errno: Option<i32>, message: &str) -> std::io::Result<()> {
    let rec = BootError {
        time_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        stage: stage.into(),
        errno,
        message: message.into(),
    };
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&rec).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)
}

/// Reads a record (None if there is none or it does not parse).
pub fn read(path: &Path) -> Option<BootError> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Records a failure at the configured path, if any.
pub fn record(stage: &str, errno: Option<i32>, message: &str) {
    if let Some(p) = PATH.get() {
        if let Err(e) = write(p, stage, errno, message) {
            tracing::warn!("cannot write {}: {e}", p.display());
        }
    }
}

/// Records a failure unless a more specific record was already written.
pub fn record_if_absent(stage: &str, message: &str) {
    if PATH.get().is_some_and(|p| !p.exists()) {
        record(stage, None, message);
    }
}

/// Removes a stale record.
pub fn clear() {
    if let Some(p) = PATH.get() {
        let _ = std::fs::remove_file(p);
    }
}

/// The stage and errno of an InstanceStart failure.
pub fn classify(e: &StartError) -> (&'static str, Option<i32>) {
    match e {
        StartError::Config(_) => ("config", None),
        StartError::Load(LoadError::Open { what, source, .. }) => {
            let stage = match what {
                BootFile::Kernel => "kernel",
                BootFile::Initrd => "image",
            };
            (stage, source.raw_os_error())
        }
        StartError::Load(LoadError::Format { .. }) => ("kernel", None),
        StartError::Load(_) => ("image", None),
        StartError::Drive { .. } => ("image", None),
        StartError::Device { .. } | StartError::Restore(_) => ("devices", None),
        StartError::Memory(_) | StartError::Kvm(_) | StartError::Vcpu(_) => ("other", None),
        StartError::BootMemory(_) => ("kernel", None),
    }
}

/// The stage of a failed pre-boot API call on `path`.
pub fn api_stage(path: &str) -> &'static str {
    if path.starts_with("/drives") {
        "image"
    } else if path.starts_with("/boot-source") {
        "kernel"
    } else if path.starts_with("/network-interfaces") {
        "network"
    } else if path.starts_with("/snapshot") {
        "image"
    } else if path.starts_with("/vsock") {
        "devices"
    } else {
        "config"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_atomically_and_stages_are_known() {
        let p = std::env::temp_dir().join(format!("kiln-boot-error-{}.json", std::process::id()));
        write(&p, "kernel", Some(2), "no such file").unwrap();
        let r = read(&p).unwrap();
        assert_eq!(
            (r.stage.as_str(), r.errno, r.message.as_str()),
            ("kernel", Some(2), "no such file")
        );
        assert!(!p.with_extension("json.tmp").exists());
        std::fs::remove_file(&p).unwrap();
        assert!(read(&p).is_none());
        for path in [
            "/drives/rootfs",
            "/boot-source",
            "/vsock",
            "/machine-config",
            "/actions",
        ] {
            assert!(STAGES.contains(&api_stage(path)));
        }
        let e = StartError::Load(LoadError::Open {
            what: BootFile::Kernel,
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        });
        assert_eq!(classify(&e), ("kernel", Some(libc::ENOENT)));
        let e = StartError::Load(LoadError::Open {
            what: BootFile::Initrd,
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        });
        assert_eq!(classify(&e), ("image", Some(libc::ENOENT)));
        let gone = || std::io::Error::from_raw_os_error(libc::ENOENT).into();
        let e = StartError::Drive {
            drive_id: "scratch".into(),
            what: "drive 'scratch'".into(),
            source: gone(),
        };
        assert_eq!(classify(&e).0, "image");
        let e = StartError::Device {
            what: "vsock".into(),
            source: gone(),
        };
        assert_eq!(classify(&e).0, "devices");
        let e = StartError::Restore(crate::builder::RestoreError::DeviceCount {
            saved: 2,
            configured: 1,
        });
        assert_eq!(classify(&e), ("devices", None));
    }
}
