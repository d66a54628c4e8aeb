//! Pause/resume and snapshot routes, in Firecracker's shape: `PATCH /vm`,
//! `PUT /snapshot/create`, `PUT /snapshot/load`. kiln's additions are `kiln_`-prefixed
//! fields (copying disks into the snapshot, new vsock/drive paths for the restored VM, a
//! working set for the userfaultfd backend) and `PUT /snapshot/working-set`.
//!
//! One difference: Firecracker's `Uffd` backend names the socket of an external page
//! fault handler; kiln serves page faults itself, so its `backend_path` is the memory
//! file in both backends.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::{ApiError, Outcome};
use super::http::Response;
use crate::builder::{MemBackend, RestoreOptions};
use crate::config::parse_json;
use crate::snapshot::format::{SnapshotState, MEMORY_FILE};
use crate::snapshot::CreateRequest;
use crate::vmm::Vmm;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VmStatePatch {
    state: String,
}

/// The states `PATCH /vm` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VmState {
    Paused,
    Resumed,
}

impl VmState {
    fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "Paused" => Ok(Self::Paused),
            "Resumed" => Ok(Self::Resumed),
            other => Err(ApiError::UnknownVmState(other.into())),
        }
    }
}

pub fn patch_vm(vmm: &mut Vmm, body: &str) -> Outcome {
    let p: VmStatePatch = parse_json(body)?;
    match VmState::parse(&p.state)? {
        VmState::Paused => vmm.pause()?,
        VmState::Resumed => vmm.resume()?,
    }
    Ok(Response::no_content())
}

/// Firecracker's snapshot types; kiln-vmm takes only Full ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SnapshotType {
    Full,
    Diff,
}

impl SnapshotType {
    /// Absent means Full.
    fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s {
            None | Some("Full") => Ok(Self::Full),
            Some("Diff") => Ok(Self::Diff),
            Some(other) => Err(ApiError::UnknownSnapshotType(other.into())),
        }
    }
}

/// Where a restored VM's memory comes from (`mem_backend.backend_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackendType {
    File,
    Uffd,
}

impl BackendType {
    fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "File" => Ok(Self::File),
            "Uffd" => Ok(Self::Uffd),
            other => Err(ApiError::UnknownBackend(other.into())),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotCreate {
    #[serde(default)]
    snapshot_type: Option<String>,
    snapshot_path: PathBuf,
    mem_file_path: PathBuf,
    /// Firecracker's target format version: refused (kiln-vmm writes its own format).
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    kiln_copy_disks: bool,
}

pub fn create(vmm: &mut Vmm, body: &str) -> Outcome {
    let c: SnapshotCreate = parse_json(body)?;
    match SnapshotType::parse(c.snapshot_type.as_deref())? {
        SnapshotType::Full => {}
        SnapshotType::Diff => return Err(ApiError::DiffSnapshot),
    }
    if let Some(v) = c.version {
        return Err(ApiError::SnapshotVersion(v));
    }
    let report = vmm.snapshot_create(&CreateRequest {
        state_path: c.snapshot_path,
        mem_path: c.mem_file_path,
        copy_disks: c.kiln_copy_disks,
    })?;
    tracing::info!(
        us = report.took.as_micros() as u64,
        memory_bytes = report.memory_bytes_written,
        disk_bytes = report.disk_bytes_copied,
        "snapshot created"
    );
    Ok(Response::no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemBackendBody {
    backend_type: String,
    backend_path: PathBuf,
}

/// Only for the Uffd backend (refused with File, which has no use for it).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WorkingSet {
    prefetch: Option<PathBuf>,
    record: Option<PathBuf>,
}

impl WorkingSet {
    fn is_empty(&self) -> bool {
        self.prefetch.is_none() && self.record.is_none()
    }
}

/// One entry of `network_overrides` (Firecracker's): the TAP a restored interface uses.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkOverride {
    iface_id: String,
    host_dev_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotLoad {
    snapshot_path: PathBuf,
    #[serde(default)]
    mem_file_path: Option<PathBuf>,
    #[serde(default)]
    mem_backend: Option<MemBackendBody>,
    #[serde(default)]
    enable_diff_snapshots: bool,
    #[serde(default)]
    resume_vm: bool,
    #[serde(default)]
    kiln_vsock_uds_path: Option<String>,
    #[serde(default)]
    kiln_drives: BTreeMap<String, String>,
    #[serde(default)]
    kiln_working_set: WorkingSet,
    #[serde(default)]
    network_overrides: Vec<NetworkOverride>,
}

pub fn load(vmm: &mut Vmm, body: &str) -> Outcome {
    let l: SnapshotLoad = parse_json(body)?;
    if l.enable_diff_snapshots {
        return Err(ApiError::DiffRestore);
    }
    let dir = l
        .snapshot_path
        .parent()
        .unwrap_or(std::path::Path::new("."));
    let (mem_path, backend) = match (l.mem_backend, l.mem_file_path) {
        (Some(_), Some(_)) => return Err(ApiError::TwoMemorySources),
        (Some(b), None) => {
            let backend = match BackendType::parse(&b.backend_type)? {
                BackendType::File => MemBackend::File,
                BackendType::Uffd => MemBackend::Uffd {
                    prefetch: l.kiln_working_set.prefetch.clone(),
                    record: l.kiln_working_set.record.clone(),
                },
            };
            (b.backend_path, backend)
        }
        (None, path) => (
            path.unwrap_or_else(|| SnapshotState::resolve(dir, MEMORY_FILE)),
            MemBackend::File,
        ),
    };
    if matches!(backend, MemBackend::File) && !l.kiln_working_set.is_empty() {
        return Err(ApiError::WorkingSetWithoutUffd);
    }
    let opts = RestoreOptions {
        mem_path,
        backend,
        vsock_uds_path: l.kiln_vsock_uds_path,
        drives: l.kiln_drives,
        nets: l
            .network_overrides
            .into_iter()
            .map(|o| (o.iface_id, o.host_dev_name))
            .collect(),
    };
    vmm.snapshot_load(&l.snapshot_path, &opts, l.resume_vm)?;
    Ok(Response::no_content())
}

/// PUT /snapshot/working-set: writes the pages touched since a Uffd restore.
pub fn save_working_set(vmm: &mut Vmm) -> Outcome {
    let pages = vmm.save_working_set()?;
    Ok(Response::json(200, &serde_json::json!({ "pages": pages })))
}

#[cfg(test)]
mod tests;
