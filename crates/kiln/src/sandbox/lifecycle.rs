//! A sandbox's state, and stopping and removing it.
//!
//! Stop escalates, each step with a bounded wait for the VMM to exit:
//!
//! 1. **agent shutdown**: the agent syncs and powers off (reply within [`GRACE`],
//!    then [`GRACE`] for the VMM to exit). An unreachable agent fails at once.
//! 2. **Ctrl-Alt-Del** through the VMM API (i8042): the kernel sends SIGINT to
//!    the agent (PID 1), which syncs and powers off the same way ([`CAD_GRACE`]).
//!    This catches a guest whose vsock path is broken but whose kernel still runs.
//! 3. **SIGTERM** to the VMM ([`TERM_GRACE`]), then 4. **SIGKILL** ([`KILL_GRACE`]).
//!
//! [`Sandbox::stop`] says which step ended it. Remove stops a running sandbox and
//! deletes its folder (sockets, logs, writable layer).

use std::fmt;
use std::time::{Duration, Instant};

use super::Sandbox;
use crate::error::{Error, Result};
use crate::fc::FcClient;

const GRACE: Duration = Duration::from_secs(10);
const CAD_GRACE: Duration = Duration::from_secs(5);
/// How long the VMM API may take to take the Ctrl-Alt-Del request.
const API_TIMEOUT: Duration = Duration::from_secs(5);
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
    /// line names this sandbox's API socket (so a reused pid is not mistaken for it) — or
    /// it is exiting (its command line is empty by then, but it still tears the VM down;
    /// "stopped" must mean gone).
    fn vmm_alive(&mut self) -> bool {
        if let Some(c) = &mut self.child {
            return matches!(c.try_wait(), Ok(None));
        }
        let pid = self.record.pid;
        if !crate::process::is_running(pid) {
            return false;
        }
        let sock = self.dir.api_sock();
        let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                c.split(|&b| b == 0)
                    .any(|arg| arg == sock.as_os_str().as_encoded_bytes())
            })
            .unwrap_or(false);
        ours || crate::process::is_exiting(pid)
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

    /// Stops the VM: agent shutdown, then Ctrl-Alt-Del, then SIGTERM, then SIGKILL
    /// (see the module docs). Returns the step that ended it: `"agent shutdown"`,
    /// `"Ctrl-Alt-Del"`, `"SIGTERM"`, `"SIGKILL"`, or `"already exited"` when the
    /// VMM was gone before we started. A paused sandbox is resumed first.
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
        let how = if from == State::Running {
            self.escalate()?
        } else {
            "already exited"
        };
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        self.record.stopped = true;
        self.dir.save(&self.record)?;
        Ok(how)
    }

    /// Runs the steps until the VMM is gone. A step whose request failed does not
    /// wait (its VMM is only checked once) and the next one starts.
    fn escalate(&mut self) -> Result<&'static str> {
        let asked = self.agent.shutdown_within(GRACE);
        if self.wait_after("agent shutdown", asked, GRACE) {
            return Ok("agent shutdown");
        }
        let cad = FcClient::new(self.dir.api_sock())
            .with_timeout(API_TIMEOUT)
            .action("SendCtrlAltDel");
        if self.wait_after("Ctrl-Alt-Del", cad, CAD_GRACE) {
            return Ok("Ctrl-Alt-Del");
        }
        self.signal(libc::SIGTERM);
        if self.wait_after("SIGTERM", Ok::<(), Error>(()), TERM_GRACE) {
            return Ok("SIGTERM");
        }
        self.signal(libc::SIGKILL);
        // SIGKILL always ends it, but tearing down a VM takes a moment.
        if self.wait_gone(KILL_GRACE) {
            return Ok("SIGKILL");
        }
        Err(Error::Unsupported(format!(
            "the VMM of sandbox {} (pid {}) survived SIGKILL for {KILL_GRACE:?}",
            self.id, self.record.pid
        )))
    }

    /// Whether the VMM is gone within `limit` after `step` was requested (at once
    /// if the request failed); logs why a step did not end it.
    fn wait_after<E: fmt::Display>(
        &mut self,
        step: &str,
        requested: std::result::Result<(), E>,
        limit: Duration,
    ) -> bool {
        let limit = if requested.is_ok() {
            limit
        } else {
            Duration::ZERO
        };
        if self.wait_gone(limit) {
            return true;
        }
        match requested {
            Ok(()) => tracing::info!(
                "stop {}: the VMM still runs {limit:?} after {step}; escalating",
                self.id
            ),
            Err(e) => tracing::info!("stop {}: {step} failed ({e}); escalating", self.id),
        }
        false
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
