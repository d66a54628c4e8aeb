//! Child-process helpers shared by everything that runs a VMM.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Waits up to `timeout` for `child` to exit. On timeout it is killed and reaped and
/// `None` is returned.
pub fn wait_or_kill(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if Instant::now() > deadline {
            kill_if_running(child);
            return Ok(None);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Kills and reaps `child` if it is still running (drop paths: never leave a VMM behind).
pub fn kill_if_running(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// How long [`reap_if_our_zombie`] waits for the last thread of an exited child.
pub const REAP_WAIT: Duration = Duration::from_secs(10);

/// Whether `pid` is a live process: it exists and is not a zombie (an exited process
/// its parent has not reaped yet, e.g. an orphan under an init that reaps lazily).
pub fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold any
        // character: split at the last ')'.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// When `pid` started, in clock ticks after boot (`/proc/<pid>/stat` field 22): with
/// the pid, it names one process even after the pid is reused.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, field 3 (state) is the first; starttime is field 22.
    let rest = stat.rsplit(')').next()?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is a process in the middle of exiting (`PF_EXITING`, not yet a
/// zombie). Its command line is already empty then (its memory is gone), but it
/// still holds its files — for a VMM, the VM, whose teardown can take a while.
pub fn is_exiting(pid: u32) -> bool {
    const PF_EXITING: u64 = 0x4;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // After the command name: state ppid pgrp session tty_nr tpgid flags ...
    let mut fields = stat.rsplit(')').next().unwrap_or("").split_whitespace();
    let state = fields.next().unwrap_or("Z");
    let flags = fields
        .nth(5)
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0);
    !state.starts_with('Z') && flags & PF_EXITING != 0
}

/// Reaps `pid` if it is an exited child of this process (a zombie whose parent is us):
/// a VMM this process spawned, whether or not it still holds its [`Child`] (e.g. a
/// detached sandbox removed later through `Sandbox::get`). A zombie keeps its pid, so
/// the pid cannot have been reused; anything else is left alone. Returns how it ended
/// (`exit status 1`, `killed by signal 9 (SIGKILL)`) when it reaped it.
///
/// A multi-threaded process shows as a zombie as soon as its main thread is gone, but
/// can be reaped only once its last thread is (a VMM's vCPU thread may still be tearing
/// the VM down): this waits up to [`REAP_WAIT`] for that.
pub fn reap_if_our_zombie(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit(')').next().unwrap_or("").split_whitespace();
    let zombie = fields.next().is_some_and(|s| s.starts_with('Z'));
    let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
    if !zombie || ppid != Some(std::process::id()) {
        return None;
    }
    let pid = i32::try_from(pid).ok()?;
    let mut status = 0;
    let deadline = Instant::now() + REAP_WAIT;
    loop {
        // SAFETY: waitpid on an exited child of ours, without blocking; `status` is ours.
        match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
            0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            r if r == pid => break,
            _ => return None,
        }
    }
    Some(if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        match sig {
            libc::SIGKILL => format!("killed by signal {sig} (SIGKILL)"),
            libc::SIGTERM => format!("killed by signal {sig} (SIGTERM)"),
            libc::SIGSEGV => format!("killed by signal {sig} (SIGSEGV)"),
            libc::SIGABRT => format!("killed by signal {sig} (SIGABRT)"),
            _ => format!("killed by signal {sig}"),
        }
    } else {
        format!("exit status {}", libc::WEXITSTATUS(status))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn we_are_running_and_a_reaped_child_is_not() {
        assert!(super::is_running(std::process::id()));
        assert!(!super::is_exiting(std::process::id()));
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        assert!(!super::is_running(pid));
        assert!(!super::is_exiting(pid));
    }

    #[test]
    fn start_times_tell_processes_apart() {
        let me = super::start_time(std::process::id()).expect("our start time");
        assert_eq!(super::start_time(std::process::id()), Some(me));
        let mut c = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let child = super::start_time(c.id()).expect("the child's start time");
        assert!(child >= me, "{child} < {me}");
        assert_eq!(super::start_time(1).map(|t| t <= me), Some(true));
        c.kill().unwrap();
        c.wait().unwrap();
        assert_eq!(super::start_time(c.id()), None);
    }

    #[test]
    fn an_exited_child_we_dropped_is_reaped_and_others_are_left_alone() {
        let c = std::process::Command::new("true").spawn().unwrap();
        // (`true` exits 0; a kill -9 is covered by the lifecycle e2e test.)
        let pid = c.id();
        drop(c); // no wait: it becomes our zombie
        let proc_entry = format!("/proc/{pid}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while super::is_running(pid) {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(std::path::Path::new(&proc_entry).exists(), "not a zombie");
        assert_eq!(
            super::reap_if_our_zombie(pid).as_deref(),
            Some("exit status 0")
        );
        assert!(
            !std::path::Path::new(&proc_entry).exists(),
            "still a zombie"
        );
        // Not our child (pid 1), ourselves, a pid that is gone: nothing happens.
        assert_eq!(super::reap_if_our_zombie(1), None);
        assert_eq!(super::reap_if_our_zombie(std::process::id()), None);
        assert_eq!(super::reap_if_our_zombie(pid), None);
        assert!(super::is_running(std::process::id()));
    }
}
