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
