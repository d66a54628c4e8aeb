//! Bringing the state store in line with the processes that actually run, and
//! enforcing idle timeouts and lifetimes.
//!
//! [`reconcile`] runs when `kiln serve` starts (and on `kiln ls`): a kill -9 of the
//! server or the CLI loses nothing, because every sandbox is a row in the store and a
//! detached VMM process; the new process adopts the ones still running.

use std::collections::HashSet;

use serde::Serialize;
use serde_json::json;

use super::registry::{clean_runtime_files, how_it_ended, kill_vmms, Ended};
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
    /// Sandboxes whose guest powered off or rebooted by itself (a normal stop), with
    /// the reason recorded.
    #[serde(default)]
    pub stopped: Vec<(String, String)>,
    /// Sandboxes a snapshot or fork had paused when its process died: resumed.
    #[serde(default)]
    pub resumed: Vec<String>,
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

/// The VMM pid recorded for `id`: the row's, else the folder's record (written first).
fn recorded_pid(dir: &Dir, id: &str, row_pid: Option<u32>) -> u32 {
    match row_pid {
        Some(p) if p != 0 => p,
        _ => dir.load(id).map(|r| r.pid).unwrap_or(0),
    }
}

/// Adopts sandboxes whose VMM still runs, marks dead ones failed with the reason (or
/// stopped, when the guest powered off by itself) and removes what they left (sockets,
/// disk layers), ends the VMM of a creation whose creator died (by its recorded pid,
/// and by its socket path in any process's command line), undoes snapshots and forks
/// whose process died (resumes the VM they paused, removes their folders), finishes
/// stops whose stopper died, removes half-written snapshots whose writer died, and
/// removes folders no row knows (a creator killed before it registered).
pub fn reconcile() -> Result<Reconciled> {
    let store = store()?;
    let mut out = Reconciled::default();
    let rows = store.list_sandboxes(&Default::default())?;
    let known: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    for mut row in rows {
        let dir = Dir::of(&state::state_dir()?, &row.id);
        if row.operation.is_some() {
            if let Ok(sb) = Sandbox::get(&row.id) {
                match sb.undo_abandoned(&row) {
                    Ok(Some((_, resumed))) => {
                        if resumed {
                            out.resumed.push(row.id.clone());
                        } else {
                            out.cleaned.push(row.id.clone());
                        }
                        row = store.get_sandbox(&row.id)?;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!("sandbox {}: {e}", row.id),
                }
            }
        }
        let pid = row.pid.unwrap_or(0);
        let alive = vm_alive(pid, &dir);
        if super::ports::reconcile_ports(&row, &dir, alive) && !out.cleaned.contains(&row.id) {
            out.cleaned.push(row.id.clone());
        }
        match row.state {
            State::Running | State::Paused if alive => out.adopted.push(row.id),
            State::Creating if creator_alive(&dir, &row.id) => {}
            State::Creating => {
                // Its VMM may be half configured: it goes, with the creation.
                kill_vmms(&dir, recorded_pid(&dir, &row.id, row.pid));
                let reason = "creation was interrupted: the process creating it exited";
                if store
                    .transition(&row.id, &[State::Creating], State::Failed, Some(reason))
                    .is_ok()
                {
                    clean_runtime_files(&dir);
                    out.failed.push((row.id, reason.to_string()));
                }
            }
            State::Running | State::Paused => match how_it_ended(&dir, pid) {
                Ended::Guest(why) => {
                    if store.stopped_by_guest(&row.id, &[row.state], &why).is_ok() {
                        super::registry::release_vm_resources(&dir);
                        out.stopped.push((row.id, why));
                    }
                }
                Ended::Failed(why) => {
                    if store
                        .transition(&row.id, &[row.state], State::Failed, Some(&why))
                        .is_ok()
                    {
                        clean_runtime_files(&dir);
                        out.failed.push((row.id, why));
                    }
                }
            },
            State::Stopping if !alive => {
                store.transition(&row.id, &[State::Stopping], State::Stopped, None)?;
                clean_runtime_files(&dir);
                out.cleaned.push(row.id);
            }
            State::Stopping => {}
            State::Stopped | State::Failed => {
                let killed = row.state == State::Failed && alive && kill_vmms(&dir, pid);
                if clean_runtime_files(&dir) || killed {
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
        kill_vmms(&dir, dir.load(&id).map(|r| r.pid).unwrap_or(0));
        crate::backend::jail::release(&dir);
        dir.remove()?;
        out.cleaned.push(id);
    }
    // Groups and networks whose sandbox has no row, or whose VMM is gone (a row that is
    // not running, paused, stopping or being created by a live process).
    let rows = store.list_sandboxes(&Default::default())?;
    let keep = |id: &str| {
        let dir = Dir::of(&root, id);
        let live = rows
            .iter()
            .find(|r| r.id == id)
            .is_some_and(|r| match r.state {
                State::Running | State::Paused | State::Stopping => true,
                State::Creating => creator_alive(&dir, id),
                State::Stopped | State::Failed => false,
            });
        live || (!dir.path.exists() && creator_alive(&dir, id))
    };
    let nets = super::network::remove_orphans(&root, keep);
    if nets > 0 {
        tracing::info!("removed {nets} leftover sandbox network(s)");
    }
    for (id, group) in crate::cgroup::groups_of(&root) {
        if keep(&id) {
            continue;
        }
        match group.remove() {
            Ok(()) => {
                if !out.cleaned.contains(&id) {
                    out.cleaned.push(id);
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
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
