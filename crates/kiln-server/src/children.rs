//! The VMMs this server starts are its child processes (the library spawns them
//! directly, in their own session, and leaves them running). When one exits, it stays a
//! zombie until its parent waits for it, so the server remembers the pids of the
//! sandboxes it created, restored or forked and reaps the exited ones every second.
//! Only these pids are waited for: a `waitpid(-1)` could steal the status of a child
//! the library itself waits for.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default, Clone)]
pub struct Children(Arc<Mutex<HashSet<u32>>>);

impl Children {
    /// Notes the VMM of a sandbox this server started.
    pub fn adopt(&self, pid: Option<u32>) {
        if let Some(pid) = pid.filter(|p| *p > 0) {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(pid);
        }
    }

    /// Waits for the ones that exited; returns their pids.
    pub fn reap(&self) -> Vec<u32> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut gone = Vec::new();
        set.retain(|&pid| {
            let mut status = 0;
            // SAFETY: waitpid with WNOHANG only reads our child table; status is ours.
            let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
            // 0: still running. Otherwise reaped, or not our child (ECHILD: a pooled
            // sandbox another process made, or already waited for): forget it.
            if r == 0 {
                true
            } else {
                gone.push(pid);
                false
            }
        });
        gone
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exited_children_are_reaped_and_running_ones_kept() {
        let c = Children::default();
        let mut quick = std::process::Command::new("true").spawn().unwrap();
        let mut slow = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        c.adopt(Some(quick.id()));
        c.adopt(Some(slow.id()));
        c.adopt(Some(0));
        c.adopt(None);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while c.len() == 2 && std::time::Instant::now() < deadline {
            c.reap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(c.len(), 1, "the exited child is reaped");
        // It was reaped: waiting again finds no such child.
        assert!(quick.try_wait().is_err());
        slow.kill().unwrap();
        let _ = slow.wait();
        assert_eq!(c.reap(), vec![slow.id()], "already waited for: forgotten");
        assert_eq!(c.len(), 0);
    }
}
