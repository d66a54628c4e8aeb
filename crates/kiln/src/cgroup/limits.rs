//! What a sandbox's group limits, computed from its settings: `cpu.max` from a CPU
//! quota, `memory.max` from guest memory, the VMM's overhead and (on tmpfs) its files,
//! `pids.max` from its vCPUs.

use std::path::Path;

use super::{CgroupError, Result};

/// `cpu.max`'s period.
pub const PERIOD_US: u64 = 100_000;
/// The kernel's smallest `cpu.max` quota.
const MIN_QUOTA_US: u64 = 1_000;
/// What the VMM process may use beyond guest memory: its binary, stacks, device queues,
/// API buffers and the host page cache of the files it reads and writes (measured in
/// docs/SANDBOX.md, "Resource limits").
pub const VMM_OVERHEAD_MIB: u64 = 192;
/// Tasks (threads) beyond one per vCPU: kiln-vmm runs main, api, up to 16 api-conn,
/// devices, signals, metrics and kiln-uffd threads (21 at most), the rest is margin.
pub const PIDS_BASE: u64 = 32;
/// Checks a CPU quota (a fraction of CPUs, e.g. 0.5) against the sandbox's vCPUs.
pub fn check_quota(quota: f64, cpus: u8) -> Result<()> {
    let min = MIN_QUOTA_US as f64 / PERIOD_US as f64;
    let why = if !quota.is_finite() {
        Some("use a number of CPUs such as 0.5".to_string())
    } else if quota < min || quota > f64::from(cpus) {
        Some(format!(
            "use {min} to {cpus} (CPUs of time per second, at most the sandbox's {cpus} vCPUs), \
             e.g. 0.5 for half a CPU"
        ))
    } else {
        None
    };
    match why {
        Some(why) => Err(CgroupError::BadQuota {
            quota: quota.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// What a sandbox's group limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub cpus: u8,
    pub memory_mib: u64,
    /// CPUs of time per second (`None`: no quota).
    pub cpu_quota: Option<f64>,
    /// Host memory the VMM's own files take when the state directory is on tmpfs (see
    /// [`file_allowance_mib`]); 0 on a disk filesystem.
    pub file_allowance_mib: u64,
}

impl Limits {
    /// `cpu.max`: `<quota> <period>` or `max <period>`.
    pub fn cpu_max(&self) -> String {
        match self.cpu_quota {
            Some(q) => {
                let us = ((q * PERIOD_US as f64).round() as u64).max(MIN_QUOTA_US);
                format!("{us} {PERIOD_US}")
            }
            None => format!("max {PERIOD_US}"),
        }
    }

    /// `memory.max` in MiB: guest memory, the VMM's overhead and the file allowance.
    pub fn memory_max_mib(&self) -> u64 {
        self.memory_mib + VMM_OVERHEAD_MIB + self.file_allowance_mib
    }

    /// `pids.max`: [`PIDS_BASE`] plus one per vCPU.
    pub fn pids_max(&self) -> u64 {
        PIDS_BASE + u64::from(self.cpus)
    }
}

/// On a memory filesystem (tmpfs, ramfs: root's default state dir `/run/kiln` is one),
/// every block the VMM writes to a file in the sandbox's folder or a snapshot is host
/// memory charged to its group and cannot be reclaimed (no swap): the disk layer as the
/// guest fills it (`disk_mib`), a snapshot's memory file (guest memory) and its copy of
/// the disk layer. Returns what that adds to `memory.max`, 0 elsewhere.
pub fn file_allowance_mib(dir: &Path, memory_mib: u64, disk_mib: u64) -> u64 {
    if on_memory_fs(dir) {
        memory_mib + 2 * disk_mib
    } else {
        0
    }
}

/// Whether `path` is on tmpfs or ramfs.
pub fn on_memory_fs(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a zeroed statfs is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs writes into `st`, which is ours and large enough; `c` is a valid
    // NUL-terminated string.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    matches!(st.f_type as i64, TMPFS_MAGIC | RAMFS_MAGIC)
}
