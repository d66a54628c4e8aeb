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

#[cfg(test)]
mod tests {
    #[test]
    fn we_are_running_and_a_reaped_child_is_not() {
        assert!(super::is_running(std::process::id()));
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        assert!(!super::is_running(pid));
    }
}
