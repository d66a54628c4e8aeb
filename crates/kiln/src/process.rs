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
}
