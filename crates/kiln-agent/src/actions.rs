//! What PID 1 does after signalling ready (`kiln.action=`), and the power-off
//! and reboot paths the server's `shutdown` request shares. PID 1 exiting panics
//! the kernel, so power off and reboot return only when they failed; the caller
//! then keeps running (serving, or waiting).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cmdline::Action;
use crate::mounts;
use crate::port::{ControlPort, MAGIC_POWEROFF};

/// Set by `kiln.poweroff=reboot`: power off means reboot (see [`power_off_by_reboot`]).
static POWEROFF_BY_REBOOT: AtomicBool = AtomicBool::new(false);

/// Powers off by rebooting from now on: for a VM without a power-off device, whose
/// VMM exits on a guest reboot (QEMU microvm with `-no-reboot`). Without this the
/// kernel would halt and the VM would stay up.
pub fn power_off_by_reboot() {
    POWEROFF_BY_REBOOT.store(true, Ordering::Relaxed);
}

/// Runs `action`. Returns for [`Action::Wait`] and when power off or reboot failed.
pub fn run(action: Action, port: &ControlPort, mounted: &[PathBuf]) {
    match action {
        Action::Poweroff => power_off(port, mounted),
        Action::Reboot => reboot(mounted),
        Action::Panic => {
            say!("exiting PID 1 on request");
            std::process::exit(1);
        }
        Action::Wait => {}
    }
}

/// Syncs, unmounts the `kiln.mount=` mounts and powers the VM off. Returns only
/// if that failed (after printing why).
///
/// `port` must have been opened on the calling thread: I/O permissions from
/// `ioperm` are per thread.
pub fn power_off(port: &ControlPort, mounted: &[PathBuf]) {
    if POWEROFF_BY_REBOOT.load(Ordering::Relaxed) {
        return reboot(mounted);
    }
    shutdown(mounted);
    // The VMM exits 0 on this write; the reboot calls are the fallback for
    // other VMMs (and for kiln without ioperm).
    port.write(MAGIC_POWEROFF);
    // SAFETY: reboot(2) with valid commands; we are PID 1 (CAP_SYS_BOOT).
    unsafe {
        libc::reboot(libc::LINUX_REBOOT_CMD_POWER_OFF);
        libc::reboot(libc::RB_AUTOBOOT);
    }
    say!(
        "poweroff failed: {}",
        crate::console::strerror(crate::console::errno())
    );
}

/// Syncs, unmounts and reboots. Returns only if that failed.
pub fn reboot(mounted: &[PathBuf]) {
    shutdown(mounted);
    // SAFETY: as above.
    unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_RESTART) };
    say!(
        "reboot failed: {}",
        crate::console::strerror(crate::console::errno())
    );
}

/// Sleeps forever (PID 1 must not exit); another thread does the work.
pub fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

/// Flushes filesystems and unmounts the `kiln.mount=` mounts (newest first).
fn shutdown(mounted: &[PathBuf]) {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    mounts::unmount_all(mounted);
}

extern "C" fn on_sigchld(_: libc::c_int) {}

/// Reaps zombies forever (init's job: orphans are re-parented to PID 1). Only
/// for a PID 1 without the server's reaper (`server::reaper`), which would
/// otherwise lose exit statuses to this loop.
///
/// SIGCHLD is blocked and only let through inside `sigsuspend`, so a child
/// that exits between a `waitpid` that found nothing and the wait cannot be
/// missed (the race a plain `waitpid`/`pause` loop has). The no-op handler is
/// needed because a signal with the default disposition does not wake
/// `sigsuspend`. Note for later stages: children spawned from here inherit
/// the blocked mask and must reset it before exec.
pub fn reap_forever() -> ! {
    // SAFETY: plain signal-mask and sigaction calls on zero-initialised,
    // then properly initialised, sigset_t/sigaction values; the handler is
    // async-signal-safe (it does nothing).
    unsafe {
        let mut chld: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        let mut wait_mask: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, &chld, &mut wait_mask);
        libc::sigdelset(&mut wait_mask, libc::SIGCHLD);

        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigchld as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_NOCLDSTOP;
        libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut());

        loop {
            // Reap everything that has exited.
            let mut status = 0;
            while libc::waitpid(-1, &mut status, libc::WNOHANG) > 0 {}
            // No exited children left (0), or no children at all (ECHILD):
            // sleep until the next SIGCHLD.
            libc::sigsuspend(&wait_mask);
        }
    }
}
