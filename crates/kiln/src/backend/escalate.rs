//! The stop escalation every backend shares, and the liveness check of a VMM process.
//!
//! 1. **agent shutdown**: the agent syncs and powers off (reply within [`GRACE`], then
//!    [`GRACE`] for the VMM to exit). An unreachable agent fails at once.
//! 2. **power-off request** through the VMM ([`VmBackend::request_poweroff`]: i8042
//!    Ctrl-Alt-Del for kiln-vmm and Firecracker): the kernel sends SIGINT to the agent
//!    (PID 1), which syncs and powers off the same way ([`CAD_GRACE`]). This catches a
//!    guest whose agent channel is broken but whose kernel still runs.
//! 3. **SIGTERM** to the VMM ([`TERM_GRACE`]), then 4. **SIGKILL** ([`KILL_GRACE`]).

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{GuestChannel, VmBackend, VmRef};
use crate::agent::AgentAddr;
use crate::error::{Error, Result};
use crate::state_dir::Dir;

const GRACE: Duration = Duration::from_secs(10);
const CAD_GRACE: Duration = Duration::from_secs(5);
const TERM_GRACE: Duration = Duration::from_secs(3);
const KILL_GRACE: Duration = Duration::from_secs(30);

/// Whether `pid` is a live (not zombie) process whose command line names a path inside
/// `dir` — or one that is exiting (its command line is empty by then, but it still
/// tears the VM down; "stopped" must mean gone).
pub fn vm_alive(pid: u32, dir: &Dir) -> bool {
    if pid == 0 || !crate::process::is_running(pid) {
        return false;
    }
    let folder = dir.path.as_os_str().as_encoded_bytes();
    let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|&b| b == 0)
                .any(|arg| names_inside(arg, folder) || contains(arg, folder))
        })
        .unwrap_or(false);
    ours || crate::process::is_exiting(pid)
}

/// Every live process that is a VMM of the folder `dir`, found by its command line
/// whatever pid was recorded: an argument that is exactly `<dir>/api.sock` (kiln-vmm,
/// Firecracker: `--api-sock`) or holds `<dir>/qmp.sock` (QEMU). This finds a VMM whose
/// creator was killed between spawning it and recording its pid.
pub fn vmms_of(dir: &Dir) -> Vec<u32> {
    let api = dir.api_sock();
    let api = api.as_os_str().as_encoded_bytes();
    let qmp = dir.path.join("qmp.sock");
    let qmp = qmp.as_os_str().as_encoded_bytes();
    crate::process::find_by_arg(|arg| arg == api || arg.windows(qmp.len()).any(|w| w == qmp))
}

fn names_inside(arg: &[u8], folder: &[u8]) -> bool {
    arg.len() > folder.len() && arg.starts_with(folder) && arg[folder.len()] == b'/'
}

/// QEMU takes paths inside option strings (`path=<dir>/qmp.sock`).
fn contains(arg: &[u8], folder: &[u8]) -> bool {
    let mut needle = folder.to_vec();
    needle.push(b'/');
    arg.windows(needle.len()).any(|w| w == needle.as_slice())
}

fn wait_gone(pid: u32, dir: &Dir, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while vm_alive(pid, dir) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

fn signal(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 0 {
            // SAFETY: kill has no memory effects; the pid was checked to be our VMM.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

/// The agent address of a channel.
pub(crate) fn agent_of(ch: &GuestChannel, id: &str) -> AgentAddr {
    let uds: &Path = match ch {
        GuestChannel::Vsock { uds, .. } | GuestChannel::Serial { uds, .. } => uds,
    };
    AgentAddr::new(uds, id)
}

/// Runs the steps until the VMM is gone (see the module docs). A step whose request
/// failed does not wait (the VMM is only checked once) and the next one starts.
pub fn escalate<B: VmBackend + ?Sized>(b: &B, vm: &VmRef) -> Result<&'static str> {
    if !vm_alive(vm.pid, vm.dir) {
        return Ok("already exited");
    }
    let agent = agent_of(&b.guest_channel_info(vm), vm.id);
    let asked = agent.shutdown_within(GRACE);
    if wait_after(vm, "agent shutdown", asked, GRACE) {
        return Ok("agent shutdown");
    }
    let cad = b.request_poweroff(vm);
    if wait_after(vm, "Ctrl-Alt-Del", cad, CAD_GRACE) {
        return Ok("Ctrl-Alt-Del");
    }
    signal(vm.pid, libc::SIGTERM);
    if wait_after(vm, "SIGTERM", Ok::<(), Error>(()), TERM_GRACE) {
        return Ok("SIGTERM");
    }
    signal(vm.pid, libc::SIGKILL);
    // SIGKILL always ends it, but tearing down a VM takes a moment.
    if wait_gone(vm.pid, vm.dir, KILL_GRACE) {
        return Ok("SIGKILL");
    }
    Err(Error::Unsupported(format!(
        "the VMM of sandbox {} (pid {}) survived SIGKILL for {KILL_GRACE:?}",
        vm.id, vm.pid
    )))
}

/// Whether the VMM is gone within `limit` after `step` was requested (at once if the
/// request failed); logs why a step did not end it.
fn wait_after<E: fmt::Display>(
    vm: &VmRef,
    step: &str,
    requested: std::result::Result<(), E>,
    limit: Duration,
) -> bool {
    let limit = if requested.is_ok() {
        limit
    } else {
        Duration::ZERO
    };
    if wait_gone(vm.pid, vm.dir, limit) {
        return true;
    }
    match requested {
        Ok(()) => tracing::info!(
            "stop {}: the VMM still runs {limit:?} after {step}; escalating",
            vm.id
        ),
        Err(e) => tracing::info!("stop {}: {step} failed ({e}); escalating", vm.id),
    }
    false
}
