//! A sandbox's state, and stopping and removing it.
//!
//! Stop escalates: the agent is asked to sync and power off; if the VMM has not exited
//! after [`GRACE`], it gets SIGTERM, then SIGKILL. Remove stops a running sandbox and
//! deletes its folder (sockets, logs, writable layer).

use std::fmt;
use std::time::{Duration, Instant};

use super::Sandbox;
use crate::error::{Error, Result};

const GRACE: Duration = Duration::from_secs(10);
const TERM_GRACE: Duration = Duration::from_secs(3);
const KILL_GRACE: Duration = Duration::from_secs(30);

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Creating,
    Running,
    Paused,
    Stopping,
    Stopped,
    /// The VMM is gone although nobody stopped it (crash, kill, guest panic).
    Failed,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Creating => "creating",
            State::Running => "running",
            State::Paused => "paused",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
        })
    }
}

impl Sandbox {
    /// The current state, from the record and the VMM process.
    pub fn state(&mut self) -> State {
        if self.record.stopped {
            State::Stopped
        } else if self.record.pid == 0 {
            State::Creating
        } else if self.vmm_alive() {
            if self.record.paused {
                State::Paused
            } else {
                State::Running
            }
        } else {
            State::Failed
        }
    }

    /// Whether our VMM process still runs: the pid is alive, not a zombie, and its command
    /// line names this sandbox's API socket (so a reused pid is not mistaken for it).
    fn vmm_alive(&mut self) -> bool {
        if let Some(c) = &mut self.child {
            return matches!(c.try_wait(), Ok(None));
        }
        let pid = self.record.pid;
        if !crate::process::is_running(pid) {
            return false;
        }
        let sock = self.dir.api_sock();
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                c.split(|&b| b == 0)
                    .any(|arg| arg == sock.as_os_str().as_encoded_bytes())
            })
            .unwrap_or(false)
    }

    fn wait_gone(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.vmm_alive() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    fn signal(&self, sig: i32) {
        if let Ok(pid) = i32::try_from(self.record.pid) {
            if pid > 0 {
                // SAFETY: kill has no memory effects; the pid was checked to be our VMM.
                unsafe { libc::kill(pid, sig) };
            }
        }
    }

    /// Stops the VM (agent power-off, then SIGTERM, then SIGKILL). Returns how it ended.
    pub fn stop(&mut self) -> Result<&'static str> {
        let mut from = self.state();
        if from == State::Paused {
            // A paused guest cannot shut down by itself: let it run to do so.
            self.resume()?;
            from = State::Running;
        }
        if from != State::Running && from != State::Failed {
            return Err(Error::InvalidTransition {
                id: self.id.clone(),
                from,
                to: State::Stopped,
            });
        }
        let mut how = "already exited";
        if from == State::Running {
            how = "agent shutdown";
            if self.agent.shutdown().is_err() || !self.wait_gone(GRACE) {
                how = "SIGTERM";
                self.signal(libc::SIGTERM);
                if !self.wait_gone(TERM_GRACE) {
                    how = "SIGKILL";
                    self.signal(libc::SIGKILL);
                    // SIGKILL always ends it, but tearing down a VM takes a moment.
                    if !self.wait_gone(KILL_GRACE) {
                        return Err(Error::Unsupported(format!(
                            "the VMM of sandbox {} (pid {}) survived SIGKILL for {KILL_GRACE:?}",
                            self.id, self.record.pid
                        )));
                    }
                }
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        self.record.stopped = true;
        self.dir.save(&self.record)?;
        Ok(how)
    }

    /// Stops the sandbox if it runs and deletes everything it left on the host.
    pub fn remove(mut self) -> Result<()> {
        self.remove_inner()
    }

    fn remove_inner(&mut self) -> Result<()> {
        if matches!(self.state(), State::Running | State::Paused | State::Failed) {
            self.stop()?;
        }
        if let Some(mut c) = self.child.take() {
            crate::process::kill_if_running(&mut c);
        }
        self.removed = true;
        self.dir.remove()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !self.detach && !self.removed {
            if let Err(e) = self.remove_inner() {
                tracing::warn!("removing sandbox {}: {e}", self.id);
            }
        }
    }
}
