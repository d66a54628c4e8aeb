//! Ctrl-Alt-Del: the host's second way to ask for a clean shutdown, for when the
//! `shutdown` request cannot reach the agent (vsock down, agent wedged in a
//! connection, ...).
//!
//! The VMM injects the key combination (Firecracker's `SendCtrlAltDel`, i8042).
//! The kernel's default (`C_A_D` = 1) is to restart at once, without syncing
//! anything. After `reboot(LINUX_REBOOT_CMD_CAD_OFF)` it sends SIGINT to PID 1
//! instead, and we shut down the way the `shutdown` request does: sync, unmount
//! the `kiln.mount=` mounts, power off ([`crate::actions::power_off`]).
//!
//! PID 1 has no default signal actions, so an unhandled SIGINT would be dropped.
//! We block SIGINT on the main thread before any other thread starts (every
//! thread inherits the mask, so the signal is never delivered to a random
//! thread) and one thread takes it with `sigwait`. Commands do not inherit the
//! mask: `server::command` gives every child an empty mask and default
//! dispositions before `exec`.
//!
//! The kernel setting changes only once the watcher thread runs: a guest whose
//! watcher could not start still restarts (and so stops) on Ctrl-Alt-Del.

use std::io;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::thread::JoinHandle;

use crate::actions;
use crate::port::ControlPort;

/// The signal the kernel sends init on Ctrl-Alt-Del when `C_A_D` is off.
pub const CAD_SIGNAL: libc::c_int = libc::SIGINT;

/// Blocks `sig` on the calling thread. Threads started afterwards inherit it.
pub fn block(sig: libc::c_int) -> io::Result<()> {
    change_mask(libc::SIG_BLOCK, &sigset(sig)).map(drop)
}

/// Starts a thread that waits for `sig` with `sigwait` and calls `on_signal` for
/// each one, until it returns `Break`. The signal is blocked on the new thread
/// from its first instruction (it inherits the mask the caller has while
/// spawning; the caller's own mask is restored afterwards). To keep the signal
/// from every other thread, the caller must have blocked it everywhere
/// ([`block`] before starting threads).
pub fn watch(
    sig: libc::c_int,
    name: &str,
    mut on_signal: impl FnMut() -> ControlFlow<()> + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    let set = sigset(sig);
    let old = change_mask(libc::SIG_BLOCK, &set)?;
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            let mut got = 0;
            // SAFETY: set is an initialised sigset_t and got a writable int.
            let rc = unsafe { libc::sigwait(&set, &mut got) };
            if rc == 0 && got == sig && on_signal().is_break() {
                return;
            }
        });
    change_mask(libc::SIG_SETMASK, &old)?;
    spawned
}

/// PID 1 only: starts the Ctrl-Alt-Del watcher (sync and power off on SIGINT),
/// then tells the kernel to signal us instead of restarting. [`block`] must have
/// blocked SIGINT before the first thread started.
pub fn start(mounted: Vec<PathBuf>) -> io::Result<()> {
    refuse_unless_pid1()?;
    watch(CAD_SIGNAL, "ctrl-alt-del", move || {
        say!("Ctrl-Alt-Del: syncing and powering off");
        // ioperm is per thread: open the port on the thread that powers off.
        let port = ControlPort::open();
        actions::power_off(&port, &mounted);
        // Power off failed (printed): stay up, and try again on the next one.
        ControlFlow::Continue(())
    })?;
    signal_init_on_cad()
}

/// PID 1 only: `reboot(LINUX_REBOOT_CMD_CAD_OFF)` — Ctrl-Alt-Del sends SIGINT
/// to init instead of restarting the machine.
pub fn signal_init_on_cad() -> io::Result<()> {
    refuse_unless_pid1()?;
    // SAFETY: reboot(2) with CAD_OFF only changes what Ctrl-Alt-Del does.
    if unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_CAD_OFF) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Powering off and the machine-wide Ctrl-Alt-Del setting are init's business;
/// elsewhere (tests on a host, possibly as root) they must never happen.
fn refuse_unless_pid1() -> io::Result<()> {
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } != 1 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "only the guest's PID 1 handles Ctrl-Alt-Del",
        ));
    }
    Ok(())
}

fn sigset(sig: libc::c_int) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it and sigaddset
    // adds a valid signal number.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        set
    }
}

/// pthread_sigmask on the calling thread; returns the previous mask.
fn change_mask(how: libc::c_int, set: &libc::sigset_t) -> io::Result<libc::sigset_t> {
    // SAFETY: as in `sigset`.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set and old are valid sigset_t values; only this thread's mask changes.
    let rc = unsafe { libc::pthread_sigmask(how, set, &mut old) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(old)
}

#[cfg(test)]
mod tests;
