//! Operations that hold a sandbox for a while: a snapshot or a fork pauses it and writes
//! a folder. Each is recorded in the sandbox's row ([`crate::store::Operation`]) with the
//! process doing it and that process's start time, before it pauses anything; so when
//! that process is killed, the next kiln process that looks at the sandbox
//! ([`Sandbox::state`], [`crate::reconcile`]) undoes what it left: it resumes the VM the
//! operation paused and removes the folder it was writing.

use std::path::{Path, PathBuf};

use super::{Sandbox, State};
use crate::error::Result;
use crate::state_dir::store;
use crate::store::{Operation, SandboxRow};

/// An operation in progress on one sandbox, recorded in its row; cleared when dropped.
pub(super) struct Held {
    id: String,
    op: Operation,
}

impl Held {
    /// Records that this process starts a `kind` on `sb`, which writes `scratch`.
    /// Fails (`OperationInProgress`) while another live process holds the sandbox.
    pub fn begin(sb: &Sandbox, kind: &str, scratch: Option<&Path>) -> Result<Held> {
        // Undoes what a dead process left first.
        let _ = sb.state();
        let (pid, start) = crate::process::me();
        let op = Operation {
            kind: kind.into(),
            pid,
            start,
            paused: false,
            scratch: scratch.map(Path::to_path_buf),
        };
        store()?.swap_operation(&sb.id, None, Some(&op))?;
        Ok(Held {
            id: sb.id.clone(),
            op,
        })
    }

    /// Notes that the operation is about to pause the VM (`true`, before it does) or has
    /// resumed it (`false`).
    pub fn set_paused(&mut self, paused: bool) -> Result<()> {
        let new = Operation {
            paused,
            ..self.op.clone()
        };
        store()?.swap_operation(&self.id, Some(&self.op), Some(&new))?;
        self.op = new;
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(s) = store() {
            if let Err(e) = s.swap_operation(&self.id, Some(&self.op), None) {
                tracing::warn!("sandbox {}: clearing its {}: {e}", self.id, self.op.kind);
            }
        }
    }
}

/// Whether `p` lies inside the state directory (a scratch folder read back from the
/// store is removed only there).
fn inside_state_dir(p: &Path) -> bool {
    let Ok(root) = crate::state_dir::state_dir() else {
        return false;
    };
    p.starts_with(&root) && p != root && !p.components().any(|c| c.as_os_str() == "..")
}

impl Sandbox {
    /// If `row` records an operation whose process is gone, undoes it: resumes the VM it
    /// paused (the row goes back to `running`), removes the folder it was writing and
    /// clears the record. Returns the operation and whether the VM was resumed; `None`
    /// when there was nothing to undo.
    pub(crate) fn undo_abandoned(&self, row: &SandboxRow) -> Result<Option<(Operation, bool)>> {
        let Some(op) = row.operation.clone() else {
            return Ok(None);
        };
        if crate::process::runs_as(op.pid, op.start) {
            return Ok(None);
        }
        let s = store()?;
        let mut resumed = false;
        if op.paused && self.vmm_alive() {
            // Idempotent: the VM may not have been paused yet when its owner died.
            self.backend().resume(&self.vm())?;
            resumed = true;
            if row.state == State::Paused {
                let why = format!("resumed: the {} by process {} is gone", op.kind, op.pid);
                let _ = s.transition(&self.id, &[State::Paused], State::Running, Some(&why));
            }
        }
        if let Some(d) = op.scratch.as_deref().filter(|d| inside_state_dir(d)) {
            remove_tree(d);
        }
        s.swap_operation(&self.id, Some(&op), None)?;
        tracing::warn!(
            "sandbox {}: undid the {} of process {} (gone){}",
            self.id,
            op.kind,
            op.pid,
            if resumed { "; resumed the VM" } else { "" }
        );
        Ok(Some((op, resumed)))
    }
}

/// Removes a folder and what is in it; a missing one is fine.
pub(crate) fn remove_tree(d: &Path) {
    match std::fs::remove_dir_all(d) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!("cannot remove {}: {e}", d.display())
        }
        _ => {}
    }
}

/// The folder a fork writes its snapshot into, inside the parent's folder.
pub(super) fn fork_dir(sb: &Sandbox) -> PathBuf {
    sb.dir
        .path
        .join(format!("fork-{}", &crate::state_dir::new_id()[3..]))
}
