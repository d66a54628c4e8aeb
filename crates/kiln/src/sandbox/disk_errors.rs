//! A sandbox whose disk fails on the host (its disk layer's filesystem is full, or the
//! host disk errs): the VMM counts the failed requests in its metrics file
//! ([`crate::vmm_metrics`]); here they become the sandbox's `disk_errors` and one
//! `disk_error` event per sandbox. `kiln serve` checks the running sandboxes every
//! second ([`note_disk_errors`]); `kiln inspect` and the API's GET of a sandbox read
//! the file when asked, so nothing needs a server.

use serde_json::json;

use crate::error::Result;
use crate::state_dir::{self as state, store, Dir};
use crate::store::{SandboxFilter, SbState};
use crate::vmm_metrics::{read_disk_errors, DiskErrors};

/// The event's kind.
pub const EVENT: &str = "disk_error";

/// The disk errors of the sandbox in `dir` (None: its VMM writes no such counters, as
/// Firecracker and QEMU), and the `disk_error` event logged once there are any.
pub(super) fn read_and_note(id: &str, dir: &Dir) -> Option<DiskErrors> {
    let d = read_disk_errors(&dir.metrics())?;
    if d.count > 0 {
        if let Err(e) = note(id, &d) {
            tracing::warn!("sandbox {id}: cannot log its disk errors: {e}");
        }
    }
    Some(d)
}

/// Logs the `disk_error` event of sandbox `id` unless its life already has one; true
/// when it was logged now.
fn note(id: &str, d: &DiskErrors) -> Result<bool> {
    let detail = json!({ "count": d.count, "enospc": d.enospc, "last_error": d.last_error });
    let logged = store()?.append_event_once(id, EVENT, detail)?;
    if logged.is_some() {
        tracing::warn!(
            "sandbox {id}: {} host I/O error(s) on its disks ({} ENOSPC), last: {}",
            d.count,
            d.enospc,
            d.last_error.as_deref().unwrap_or("-")
        );
    }
    Ok(logged.is_some())
}

/// Checks every running or paused sandbox's metrics file and logs a `disk_error` event
/// for each one whose disks failed (once per sandbox); returns those logged now.
/// Reads one small file per sandbox; the store is written only for a new event.
pub fn note_disk_errors() -> Result<Vec<(String, DiskErrors)>> {
    let root = state::state_dir()?;
    let store = store()?;
    let mut out = Vec::new();
    for st in [SbState::Running, SbState::Paused] {
        let filter = SandboxFilter {
            state: Some(st),
            ..Default::default()
        };
        for row in store.list_sandboxes(&filter)? {
            let dir = Dir::of(&root, &row.id);
            let Some(d) = read_disk_errors(&dir.metrics()) else {
                continue;
            };
            if d.count > 0 && note(&row.id, &d)? {
                out.push((row.id, d));
            }
        }
    }
    Ok(out)
}
