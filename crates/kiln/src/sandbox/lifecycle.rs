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
    /// The current state: the store's, brought in line with what runs. A snapshot or
    /// fork whose process is gone is undone first (the VM it paused resumes, see
    /// `operation`). A running or paused sandbox whose VMM is gone becomes `stopped`
    /// when the guest powered off or rebooted by itself, else `failed` with the reason
    /// (its sockets and disk layers removed). A sandbox removed meanwhile reads as
    /// stopped.
    pub fn state(&self) -> State {
        let mut row = match self.row() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("sandbox {}: {e}", self.id);
                return State::Stopped;
            }
        };
        match self.undo_abandoned(&row) {
            Ok(Some(_)) => match self.row() {
                Ok(r) => row = r,
                Err(_) => return State::Stopped,
            },
            Ok(None) => {}
            Err(e) => tracing::warn!("sandbox {}: {e}", self.id),
        }
        match row.state {
            State::Running | State::Paused if !self.vmm_alive() => {
                self.mark_exited().unwrap_or_else(|e| {
                    tracing::warn!("sandbox {}: {e}", self.id);
                    State::Failed
                })
            }
            s => s,
        }
    }

    /// Whether our VMM process still runs (see [`crate::backend::vm_alive`]).
    pub(super) fn vmm_alive(&self) -> bool {
        self.backend().status(&self.vm()) == crate::backend::VmStatus::Running
    }

    /// Running or paused (its VMM is up).
    pub fn is_up(&mut self) -> bool {
        matches!(self.state(), State::Running | State::Paused)
    }

    /// Stops the VM: agent shutdown, then Ctrl-Alt-Del, then SIGTERM, then SIGKILL
    /// (see [`crate::backend`]). Returns the step that ended it: `"agent shutdown"`,
    /// `"Ctrl-Alt-Del"`, `"SIGTERM"`, `"SIGKILL"`, or `"already exited"` when the VMM
    /// was gone before we started (the sandbox then stays failed or stopped). A failed
    /// sandbox whose VMM still runs (its creation was interrupted) has it killed
    /// (`"SIGKILL"`). A paused sandbox is
    /// resumed first. Moving to `stopping` is atomic: of two concurrent stops, one wins
    /// and the other gets `InvalidTransition`.
    pub fn stop(&mut self) -> Result<&'static str> {
        let mut from = self.state();
        if from == State::Paused {
            // A paused guest cannot shut down by itself: let it run to do so.
            self.resume()?;
            from = State::Running;
        }
        let how = match from {
            State::Running => {
                let store = crate::state_dir::store()?;
                store.transition(&self.id, &[State::Running], State::Stopping, None)?;
                match self.backend().stop(&self.vm()) {
                    Ok(how) => {
                        let why = format!("stopped by kiln ({how})");
                        store.transition(
                            &self.id,
                            &[State::Stopping],
                            State::Stopped,
                            Some(&why),
                        )?;
                        how
                    }
                    Err(e) => {
                        let why = format!("stop failed: {e}");
                        let _ = store.transition(
                            &self.id,
                            &[State::Stopping],
                            State::Failed,
                            Some(&why),
                        );
                        return Err(e);
                    }
                }
            }
            State::Failed if super::registry::kill_vmms(&self.dir, self.record.pid) => "SIGKILL",
            State::Failed => "already exited",
            from => {
                return Err(Error::InvalidTransition {
                    id: self.id.clone(),
                    from,
                    to: State::Stopped,
                })
            }
        };
        self.unpublish_ports();
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        } else {
            let _ = crate::process::reap_if_our_zombie(self.record.pid);
        }
        // The VMM is gone: so go its cgroup and network.
        super::registry::release_vm_resources(&self.dir);
        // The disk layer stays until `remove` (it can be inspected).
        Ok(how)
    }

    /// Stops the sandbox if it runs and deletes everything it left on the host: its
    /// folder (sockets, logs, writable layer) and its row (the events stay).
    pub fn remove(mut self) -> Result<()> {
        self.remove_inner()
    }

    fn remove_inner(&mut self) -> Result<()> {
        if crate::state_dir::low_on_space() {
            self.free_own_files();
        }
        if matches!(self.state(), State::Running | State::Paused | State::Failed) {
            self.stop()?;
        }
        if let Some(mut c) = self.child.take() {
            crate::process::kill_if_running(&mut c);
        }
        // A creation interrupted in another process leaves its VMM running.
        super::registry::kill_vmms(&self.dir, self.record.pid);
        self.unpublish_ports();
        super::registry::release_vm_resources(&self.dir);
        // A creation that failed is `failed` already; one interrupted in this process
        // (a panic) is still `creating`.
        let store = crate::state_dir::store()?;
        let _ = store.transition(
            &self.id,
            &[State::Creating],
            State::Failed,
            Some("removed while creating"),
        );
        match store.delete_sandbox(&self.id) {
            Ok(_) | Err(crate::store::StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.removed = true;
        crate::backend::jail::release(&self.dir);
        self.dir.remove()?;
        // Space came free: the store's reserve is allocated again if it was used.
        store.ensure_reserve();
        Ok(())
    }

    /// On a full disk, a removal frees this sandbox's space before it writes to the
    /// store: its VMM is killed (no graceful stop: it is being removed, and a guest
    /// cannot shut down cleanly without room anyway), its disk layers, sockets and logs
    /// are deleted, and only then is the row marked failed with why. If the store still
    /// cannot commit, it uses its reserve (see [`crate::store::reserve`]).
    fn free_own_files(&mut self) {
        tracing::warn!(
            "sandbox {}: the state directory's filesystem is full; killing its VMM and              deleting its files before removing it",
            self.id
        );
        if let Some(mut c) = self.child.take() {
            crate::process::kill_if_running(&mut c);
        }
        super::registry::kill_vmms(&self.dir, self.record.pid);
        super::registry::clean_runtime_files(&self.dir);
        for f in [
            self.dir.console_log(),
            self.dir.vmm_log(),
            self.dir.metrics(),
        ] {
            let _ = std::fs::remove_file(f);
        }
        if let Ok(store) = crate::state_dir::store() {
            let up = [
                State::Creating,
                State::Running,
                State::Paused,
                State::Stopping,
            ];
            let why = "removed on a full disk: its VMM was killed and its files deleted first";
            let _ = store.transition(&self.id, &up, State::Failed, Some(why));
        }
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
