//! The snapshot directory: `state.json` (versioned; everything but memory and disks),
//! `memory.bin` (guest RAM, regions concatenated in guest-address order, sparse) and,
//! for snapshots taken with disks, one copy of each writable drive.
//!
//! Loading checks, before any VM is built: the format name and version (a state file of
//! another version is refused, naming both), that every field parses, that the vCPU
//! count and memory layout agree with the machine config, that the saved virtio devices
//! are the kinds the config attaches, in its order, and that the memory file and disk
//! copies exist with the recorded sizes. Content integrity (SHA-256) is
//! [`super::seal`]'s job.
//!
//! Versions: 1 kept each virtio device's own state as untyped JSON beside a numeric
//! `device_type`; 2 tags it with the device's kind (`"kind": "block"`, see
//! [`VirtioDeviceState`](crate::devices::virtio::VirtioDeviceState)).

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::arch::layout::ram_ranges;
use crate::config::VmConfig;
use crate::devices::i8042::I8042State;
use crate::devices::serial::UartState;
use crate::devices::virtio::{blk, net, rng, vsock, TransportState};
use crate::host_file::{self, Accept};
use crate::vstate::mem_file::FileStamp;
use crate::vstate::vcpu_state::VcpuState;
use crate::vstate::vm_state::VmState;

pub const FORMAT: &str = "kiln-snapshot";
/// Bumped on any incompatible change of `state.json`.
pub const VERSION: u32 = 2;
pub const STATE_FILE: &str = "state.json";
pub const MEMORY_FILE: &str = "memory.bin";
/// state.json files larger than this are refused unread.
const MAX_STATE_BYTES: u64 = 64 << 20;

/// A file of the snapshot with its digest and the stamp it was verified under.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SnapFile {
    /// File name relative to the snapshot directory (or an absolute path).
    pub file: String,
    pub size: u64,
    /// See [`crate::vstate::mem_file::digest`]; None until the snapshot is sealed.
    pub sha256: Option<String>,
    /// The file's identity when the digest was last checked (the fast path).
    pub stamp: Option<FileStamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiskCopy {
    pub drive_id: String,
    #[serde(flatten)]
    pub data: SnapFile,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesState {
    /// One per virtio-mmio transport, in attach order (drives, rng, vsock).
    pub virtio: Vec<TransportState>,
    pub serial: UartState,
    pub i8042: I8042State,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotState {
    pub format: String,
    pub version: u32,
    pub created_unix_ms: u64,
    pub config: VmConfig,
    /// Guest RAM ranges (guest address, length) in file order.
    pub memory_ranges: Vec<(u64, u64)>,
    pub memory: SnapFile,
    pub disks: Vec<DiskCopy>,
    pub vm: VmState,
    pub vcpus: Vec<VcpuState>,
    pub devices: DevicesState,
}

/// Why a snapshot cannot be used. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
#[error("snapshot {path}: {msg}")]
pub struct SnapshotError {
    pub path: String,
    pub msg: String,
}

pub fn snap_err(path: &Path, msg: impl Into<String>) -> SnapshotError {
    SnapshotError {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

impl SnapshotState {
    /// Resolves a file named in the snapshot against its directory.
    pub fn resolve(dir: &Path, file: &str) -> PathBuf {
        let p = Path::new(file);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    }

    /// Reads and validates `state_path` (see the module docs).
    pub fn load(state_path: &Path) -> Result<Self, SnapshotError> {
        let err = |m: String| snap_err(state_path, m);
        // Opened without blocking: a FIFO or device is refused (see crate::host_file).
        let file = host_file::open(state_path, false, Accept::File).map_err(|e| {
            err(match host_file::not_regular(&e) {
                Some(r) => format!("snapshot_path {r}; give the path of a snapshot's state.json"),
                None => format!("cannot read the state file: {e}"),
            })
        })?;
        let meta = file
            .metadata()
            .map_err(|e| err(format!("cannot read the state file: {e}")))?;
        if meta.len() > MAX_STATE_BYTES {
            return Err(err(format!(
                "the state file is {} bytes; not a snapshot",
                meta.len()
            )));
        }
        let mut text = String::new();
        file.take(MAX_STATE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| err(format!("cannot read the state file: {e}")))?;
        let head: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            err(format!(
                "the state file is not valid JSON ({e}); the snapshot is damaged"
            ))
        })?;
        if head.get("format").and_then(|v| v.as_str()) != Some(FORMAT) {
            return Err(err(format!("not a {FORMAT} state file")));
        }
        let version = head.get("version").and_then(|v| v.as_u64());
        if version != Some(u64::from(VERSION)) {
            return Err(err(format!(
                "snapshot format version {} is not supported by this kiln-vmm (it reads version \
                 {VERSION}): take the snapshot again with this version",
                version.map_or("unknown".into(), |v| v.to_string())
            )));
        }
        let s: SnapshotState = serde_json::from_value(head).map_err(|e| {
            err(format!(
                "the state file does not parse ({e}); the snapshot is damaged"
            ))
        })?;
        s.validate(state_path)?;
        Ok(s)
    }

    fn validate(&self, state_path: &Path) -> Result<(), SnapshotError> {
        let err = |m: String| snap_err(state_path, m);
        let mc = &self.config.machine_config;
        mc.validate(&crate::config::HostFacts::read())
            .map_err(|e| err(e.0))?;
        if self.vcpus.len() != usize::from(mc.vcpu_count) {
            return Err(err(format!(
                "{} saved vCPUs for a {}-vCPU machine; the snapshot is damaged",
                self.vcpus.len(),
                mc.vcpu_count
            )));
        }
        let want = ram_ranges(mc.mem_size_mib << 20);
        let total: u64 = want.iter().map(|r| r.1).sum();
        if self.memory_ranges != want || self.memory.size != total {
            return Err(err(format!(
                "the memory layout does not match {} MiB of RAM; the snapshot is damaged",
                mc.mem_size_mib
            )));
        }
        let want = self.attached_kinds();
        let saved: Vec<_> = self
            .devices
            .virtio
            .iter()
            .map(|t| t.device.kind())
            .collect();
        if saved != want {
            return Err(err(format!(
                "the saved virtio devices are [{}], the configuration attaches [{}]; the \
                 snapshot is damaged",
                saved.join(", "),
                want.join(", ")
            )));
        }
        let dir = state_path.parent().unwrap_or(Path::new("."));
        let files = std::iter::once(&self.memory).chain(self.disks.iter().map(|d| &d.data));
        for f in files {
            let path = Self::resolve(dir, &f.file);
            let len = std::fs::metadata(&path)
                .map_err(|e| snap_err(&path, format!("missing ({e}); the snapshot is incomplete")))?
                .len();
            if len != f.size {
                return Err(snap_err(
                    &path,
                    format!(
                        "is {len} bytes, the snapshot recorded {}: it is truncated or was changed",
                        f.size
                    ),
                ));
            }
        }
        for d in &self.disks {
            if !self.config.drives.iter().any(|x| x.drive_id == d.drive_id) {
                return Err(err(format!("disk copy for unknown drive '{}'", d.drive_id)));
            }
        }
        Ok(())
    }

    /// The kinds of virtio device the configuration attaches, in attach order (the
    /// builder's: one block device per drive, the rng, vsock if configured, then one
    /// net device per network interface).
    fn attached_kinds(&self) -> Vec<&'static str> {
        let drives = self.config.drives.iter().map(|_| blk::KIND);
        let vsock = self.config.vsock.iter().map(|_| vsock::KIND);
        let nets = self.config.network_interfaces.iter().map(|_| net::KIND);
        drives.chain([rng::KIND]).chain(vsock).chain(nets).collect()
    }

    /// Writes the state file atomically (temporary file + rename).
    pub fn write(&self, state_path: &Path) -> Result<(), SnapshotError> {
        let text = serde_json::to_vec(self)
            .map_err(|e| snap_err(state_path, format!("cannot encode the state: {e}")))?;
        let tmp = state_path.with_extension("json.tmp");
        // O_NONBLOCK: a FIFO planted at the temporary path fails the open instead of
        // blocking it (regular files ignore the flag).
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&text))
            .and_then(|()| std::fs::rename(&tmp, state_path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                snap_err(state_path, format!("cannot write the state file: {e}"))
            })
    }
}

#[cfg(test)]
mod tests;
