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

use super::error::ApiError;
use super::http::Response;
use super::routes::Outcome;
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WorkingSet {
    prefetch: Option<PathBuf>,
    record: Option<PathBuf>,
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
                    prefetch: l.kiln_working_set.prefetch,
                    record: l.kiln_working_set.record,
                },
            };
            (b.backend_path, backend)
        }
        (None, path) => (
            path.unwrap_or_else(|| SnapshotState::resolve(dir, MEMORY_FILE)),
            MemBackend::File,
        ),
    };
    let opts = RestoreOptions {
        mem_path,
        backend,
        vsock_uds_path: l.kiln_vsock_uds_path,
        drives: l.kiln_drives,
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
mod tests {
    use std::sync::mpsc::channel;
    use std::sync::Mutex;

    use crate::api::http::Request;
    use crate::api::routes::handle;
    use crate::config::HostFacts;
    use crate::vmm::{ConsoleTarget, Vmm};

    fn fault(vmm: &Mutex<Vmm>, method: &str, path: &str, body: &str) -> String {
        let req = Request {
            method: method.into(),
            path: path.into(),
            body: body.into(),
            keep_alive: true,
        };
        let r = handle(vmm, &req);
        assert_eq!(r.status, 400, "{method} {path} {body}");
        r.body.unwrap()
    }

    fn vmm() -> Mutex<Vmm> {
        let (tx, _rx) = channel();
        Mutex::new(Vmm::new(
            "t".into(),
            ConsoleTarget::Off,
            HostFacts::default(),
            tx,
        ))
    }

    #[test]
    fn pause_and_snapshot_need_a_running_vm() {
        let v = vmm();
        assert!(fault(&v, "PATCH", "/vm", r#"{"state": "Paused"}"#).contains("not running"));
        assert!(fault(&v, "PATCH", "/vm", r#"{"state": "Frozen"}"#).contains("Paused or Resumed"));
        assert!(
            fault(&v, "PATCH", "/vm", r#"{"state": "Paused", "x": 1}"#).contains("unknown field")
        );
        let create =
            r#"{"snapshot_path": "/nonexistent/s.json", "mem_file_path": "/nonexistent/m"}"#;
        assert!(fault(&v, "PUT", "/snapshot/create", create).contains("not running"));
        let diff = r#"{"snapshot_type": "Diff", "snapshot_path": "/a", "mem_file_path": "/b"}"#;
        assert!(
            fault(&v, "PUT", "/snapshot/create", diff).contains("Diff snapshots are not supported")
        );
    }

    #[test]
    fn bad_snapshots_are_refused_before_any_vm_exists() {
        let v = vmm();
        let dir = std::env::temp_dir().join(format!("kiln-api-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("state.json");
        let load = format!(r#"{{"snapshot_path": "{}"}}"#, state.display());
        assert!(fault(&v, "PUT", "/snapshot/load", &load).contains("cannot read the state file"));
        std::fs::write(&state, r#"{"format": "kiln-snapshot", "version": 2}"#).unwrap();
        let msg = fault(&v, "PUT", "/snapshot/load", &load);
        assert!(msg.contains("format version 2"), "{msg}");
        std::fs::write(&state, r#"{"format": "other", "version": 1}"#).unwrap();
        assert!(fault(&v, "PUT", "/snapshot/load", &load).contains("not a kiln-snapshot"));
        std::fs::write(&state, r#"{"format": "kiln-snapshot", "version": 1}"#).unwrap();
        assert!(fault(&v, "PUT", "/snapshot/load", &load).contains("damaged"));
        let both = format!(
            r#"{{"snapshot_path": "{}", "mem_file_path": "/m", "mem_backend": {{"backend_type": "File", "backend_path": "/m"}}}}"#,
            state.display()
        );
        assert!(fault(&v, "PUT", "/snapshot/load", &both).contains("not both"));
        let uffd = format!(
            r#"{{"snapshot_path": "{}", "mem_backend": {{"backend_type": "Bogus", "backend_path": "/m"}}}}"#,
            state.display()
        );
        assert!(fault(&v, "PUT", "/snapshot/load", &uffd).contains("File or Uffd"));
        assert!(!v.lock().unwrap().is_running());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
