//! A sandbox's state, and stopping and removing it.
//!
//! Stop is the backend's escalation (agent shutdown → Ctrl-Alt-Del → SIGTERM → SIGKILL,
//! see [`crate::backend`]); [`Sandbox::stop`] says which step ended it. Remove stops a
//! running sandbox and deletes its folder (sockets, logs, writable layer).

use super::Sandbox;
use crate::error::{Error, Result};

/// Where a sandbox is in its life (the state store's state machine).
pub use crate::store::SbState as State;

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
            // Reap our own child, so that it does not linger as a zombie.
            if !matches!(c.try_wait(), Ok(None)) {
                return false;
            }
        }
        self.backend().status(&self.vm()) == crate::backend::VmStatus::Running
    }

    /// Running or paused (its VMM is up).
    pub fn is_up(&mut self) -> bool {
        matches!(self.state(), State::Running | State::Paused)
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
            self.backend().stop(&self.vm())?
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
