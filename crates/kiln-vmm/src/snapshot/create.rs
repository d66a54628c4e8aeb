//! Taking a snapshot of a paused VM: VM, vCPU and device state into `state.json`,
//! guest RAM into a sparse memory file and, on request, a copy of every writable drive.
//! Nothing is hashed here (that would lengthen the pause): [`super::seal`] does it after
//! the VM runs again. On any failure the files this call created are removed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::disk::sparse_copy;
use super::format::{
    snap_err, DevicesState, DiskCopy, SnapFile, SnapshotError, SnapshotState, FORMAT, VERSION,
};
use crate::arch::layout::ram_ranges;
use crate::config::VmConfig;
use crate::devices::persist::Persist;
use crate::vstate::machine::Machine;
use crate::vstate::mem_file::dump;
use crate::vstate::vcpu_state::VcpuState;
use crate::vstate::vm_state::VmState;

/// Where to write and what to include.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub state_path: PathBuf,
    pub mem_path: PathBuf,
    /// Copy writable drives next to the state file (`disk-<drive_id>.img`).
    pub copy_disks: bool,
}

/// What the snapshot cost.
#[derive(Debug, Clone, Copy)]
pub struct CreateReport {
    pub memory_bytes_written: u64,
    pub disk_bytes_copied: u64,
    pub took: Duration,
}

/// Removes created files unless disarmed.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The name a file gets in state.json: relative when it sits in the state file's
/// directory (the snapshot can then be moved as a whole), else absolute.
fn name_in(dir: &Path, file: &Path) -> String {
    match file.parent() {
        Some(p) if p == dir => file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        _ => file.display().to_string(),
    }
}

/// Snapshots a paused machine; `vcpus` are the states its vCPUs parked with.
pub fn create(
    machine: &Machine,
    config: &VmConfig,
    vcpus: Vec<VcpuState>,
    req: &CreateRequest,
) -> Result<CreateReport, SnapshotError> {
    let t0 = Instant::now();
    for p in [&req.state_path, &req.mem_path] {
        if p.exists() {
            return Err(snap_err(
                p,
                "already exists; choose another path or remove it",
            ));
        }
    }
    let dir = req
        .state_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    if !dir.is_dir() {
        return Err(snap_err(&dir, "is not a directory; create it first"));
    }
    let mut cleanup = Cleanup(Vec::new());
    let vm = VmState::capture(&machine.vm).map_err(|e| snap_err(&req.state_path, e.to_string()))?;
    let devices = DevicesState {
        virtio: machine.transports.iter().map(|t| lock(t).save()).collect(),
        serial: lock(&machine.serial).save(),
        i8042: lock(&machine.i8042).save(),
    };

    if let Some(u) = &machine.uffd {
        // Pages never faulted in exist only in the source file; load them so the dump
        // (which reads the mapping) sees them.
        u.populate_all()
            .map_err(|e| snap_err(&req.mem_path, e.to_string()))?;
    }
    cleanup.0.push(req.mem_path.clone());
    let memory_bytes_written =
        dump(&machine.mem, &req.mem_path).map_err(|e| snap_err(&req.mem_path, e.to_string()))?;
    let ranges = ram_ranges(config.machine_config.mem_size_mib << 20);
    let mem_size = ranges.iter().map(|r| r.1).sum();

    let mut disks = Vec::new();
    let mut disk_bytes_copied = 0;
    if req.copy_disks {
        for d in config.drives.iter().filter(|d| !d.is_read_only) {
            let dst = dir.join(format!("disk-{}.img", d.drive_id));
            if dst.exists() {
                return Err(snap_err(&dst, "already exists; use an empty directory"));
            }
            cleanup.0.push(dst.clone());
            disk_bytes_copied += sparse_copy(Path::new(&d.path_on_host), &dst)
                .map_err(|e| snap_err(&dst, format!("cannot copy drive '{}': {e}", d.drive_id)))?;
            let size = std::fs::metadata(&dst)
                .map_err(|e| snap_err(&dst, e.to_string()))?
                .len();
            disks.push(DiskCopy {
                drive_id: d.drive_id.clone(),
                data: SnapFile {
                    file: name_in(&dir, &dst),
                    size,
                    sha256: None,
                    stamp: None,
                },
            });
        }
    }

    let state = SnapshotState {
        format: FORMAT.into(),
        version: VERSION,
        created_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        config: config.clone(),
        memory_ranges: ranges,
        memory: SnapFile {
            file: name_in(&dir, &req.mem_path),
            size: mem_size,
            sha256: None,
            stamp: None,
        },
        disks,
        vm,
        vcpus,
        devices,
    };
    state.write(&req.state_path)?;
    cleanup.0.clear();
    Ok(CreateReport {
        memory_bytes_written,
        disk_bytes_copied,
        took: t0.elapsed(),
    })
}
