//! Bringing the state store in line with the processes that actually run, and
//! enforcing idle timeouts and lifetimes.
//!
//! [`reconcile`] runs when `kiln serve` starts (and on `kiln ls`): a kill -9 of the
//! server or the CLI loses nothing, because every sandbox is a row in the store and a
//! detached VMM process; the new process adopts the ones still running.

use std::collections::HashSet;

use serde::Serialize;
use serde_json::json;

use super::registry::{clean_runtime_files, failure_reason};
use super::{Sandbox, State};
use crate::backend::vm_alive;
use crate::error::Result;
use crate::state_dir::store;
use crate::state_dir::{self as state, Dir};
use crate::store::now_ms;

/// What [`reconcile`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Reconciled {
    /// Running or paused sandboxes whose VMM still runs (or whose creator died after
    /// the VMM came up).
    pub adopted: Vec<String>,
    /// Sandboxes whose VMM is gone, with the reason recorded.
    pub failed: Vec<(String, String)>,
    /// Sandboxes (or orphan folders) whose leftover sockets, disk layers or folders were
    /// removed.
    pub cleaned: Vec<String>,
}

/// Whether the process that creates the sandbox in `dir` still runs (a creation in
/// progress is left alone).
fn creator_alive(dir: &Dir, id: &str) -> bool {
    let Ok(r) = dir.load(id) else { return false };
    let same =
        r.creator_start == 0 || crate::process::start_time(r.creator) == Some(r.creator_start);
    r.creator != 0 && crate::process::is_running(r.creator) && same
}

/// Kills the VMM of an interrupted creation (checked to be this folder's).
fn kill_vmm(pid: u32, dir: &Dir) {
    if vm_alive(pid, dir) {
        if let Ok(p) = i32::try_from(pid) {
            // SAFETY: kill has no memory effects; vm_alive checked the pid is this VMM.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while vm_alive(pid, dir) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// Adopts sandboxes whose VMM still runs, marks dead ones failed with the reason and
/// removes what they left (sockets, disk layers), finishes stops whose stopper died, and
/// removes folders no row knows (a creator killed before it registered).
pub fn reconcile() -> Result<Reconciled> {
    let store = store()?;
    let mut out = Reconciled::default();
    let rows = store.list_sandboxes(&Default::default())?;
    let known: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    for row in rows {
        let dir = Dir::of(&state::state_dir()?, &row.id);
        let pid = row.pid.unwrap_or(0);
        let alive = vm_alive(pid, &dir);
        match row.state {
            State::Running | State::Paused if alive => out.adopted.push(row.id),
            State::Creating if creator_alive(&dir, &row.id) => {}
            State::Running | State::Paused | State::Creating => {
                let reason = if row.state == State::Creating {
                    // Its VMM may be half configured: it goes, with the creation.
                    let pid = dir.load(&row.id).map(|r| r.pid).unwrap_or(pid);
                    kill_vmm(pid, &dir);
                    "creation was interrupted: the process creating it exited".to_string()
                } else {
                    failure_reason(&dir, pid)
                };
                let from = [row.state];
                if store
                    .transition(&row.id, &from, State::Failed, Some(&reason))
                    .is_ok()
                {
                    clean_runtime_files(&dir);
                    out.failed.push((row.id, reason));
                }
            }
            State::Stopping if !alive => {
                store.transition(&row.id, &[State::Stopping], State::Stopped, None)?;
                clean_runtime_files(&dir);
                out.cleaned.push(row.id);
            }
            State::Stopping => {}
            State::Stopped | State::Failed => {
                if clean_runtime_files(&dir) {
                    out.cleaned.push(row.id);
                }
            }
        }
    }
    let root = state::state_dir()?;
    for id in state::list_ids(&root)? {
        if known.contains(&id) {
            continue;
        }
        let dir = Dir::of(&root, &id);
        if creator_alive(&dir, &id) {
            continue; // being created: it registers in a moment
        }
        kill_vmm(dir.load(&id).map(|r| r.pid).unwrap_or(0), &dir);
        dir.remove()?;
        out.cleaned.push(id);
    }
    crate::snapshot::sync_catalog()?;
    Ok(out)
}

/// Stops and removes every running or paused sandbox past its idle timeout or max
/// lifetime; returns `(id, "idle" | "lifetime")` for each one removed. `kiln serve`
/// calls it every second; every `kiln` command calls it once.
pub fn reap_expired() -> Result<Vec<(String, &'static str)>> {
    let store = store()?;
    let mut out = Vec::new();
    for (id, why) in store.expired(now_ms())? {
        let Ok(sb) = Sandbox::get(&id) else { continue };
        let _ = store.append_event(Some(&id), "reaped", json!({ "why": why }));
        match sb.remove() {
            Ok(()) => {
                tracing::info!("sandbox {id} reaped: {why} limit reached");
                out.push((id, why));
            }
            Err(e) => tracing::warn!("reaping sandbox {id} ({why}): {e}"),
        }
    }
    Ok(out)
}
