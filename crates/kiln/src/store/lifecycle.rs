//! Lifecycle: state transitions through the state machine, deletion, and the reaper's
//! query. Each change and its event are written in one IMMEDIATE transaction.

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OptionalExtension};
use serde_json::json;

use super::error::{Result, StoreError};
use super::events::insert_event;
use super::sandboxes::{get, not_found, SandboxRow};
use super::state::{allowed, deletable, SbState};
use super::{now_ms, Store};

/// Moves `id` from one of `from` to `to` inside `tx` and appends a `state` event.
/// Returns the state it was in. Split out so tests can drop `tx` uncommitted.
pub(super) fn transition_tx(
    tx: &Connection,
    id: &str,
    from: &[SbState],
    to: SbState,
    failure: Option<&str>,
) -> Result<SbState> {
    let op = "change a sandbox's state";
    let current: SbState = tx
        .query_row("SELECT state FROM sandboxes WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()
        .map_err(StoreError::db(op))?
        .ok_or_else(|| not_found(id))?;
    let invalid = || StoreError::InvalidTransition {
        id: id.into(),
        from: current,
        to: to.as_str(),
    };
    // The caller's expectation, narrowed to what the state machine allows.
    let from: Vec<SbState> = from.iter().copied().filter(|f| allowed(*f, to)).collect();
    if !from.contains(&current) {
        return Err(invalid());
    }
    let now = now_ms();
    let marks = vec!["?"; from.len()].join(",");
    let sql = format!(
        "UPDATE sandboxes SET state = ?1, updated_ms = ?2, \
         failure = CASE WHEN ?1 = 'failed' THEN ?3 ELSE failure END, \
         stop_reason = CASE WHEN ?1 = 'stopped' THEN ?3 ELSE stop_reason END \
         WHERE id = ?4 AND state IN ({marks})"
    );
    let mut args: Vec<Value> = vec![
        to.as_str().to_string().into(),
        now.into(),
        failure.map(str::to_string).into(),
        id.to_string().into(),
    ];
    args.extend(from.iter().map(|s| Value::from(s.as_str().to_string())));
    let changed = tx
        .execute(&sql, params_from_iter(args))
        .map_err(StoreError::db(op))?;
    if changed != 1 {
        return Err(invalid());
    }
    let mut detail = json!({ "from": current, "to": to });
    if let Some(reason) = failure {
        detail["reason"] = reason.into();
    }
    insert_event(tx, now, Some(id), "state", &detail)?;
    Ok(current)
}

impl Store {
    /// Moves sandbox `id` to `to` if it is in one of `from` and the state machine allows
    /// it ([`allowed`]), and appends a `state` event, in one transaction. Returns the state
    /// it left. `failure` is stored as the reason when `to` is `Failed`, as the stop reason
    /// when it is `Stopped`; for other targets it is only noted in the event (e.g. `"idle"` for a reaped sandbox).
    /// `InvalidTransition` carries the state the sandbox is actually in.
    pub fn transition(
        &self,
        id: &str,
        from: &[SbState],
        to: SbState,
        failure: Option<&str>,
    ) -> Result<SbState> {
        self.write("change a sandbox's state", |tx| {
            transition_tx(tx, id, from, to, failure)
        })
    }

    /// A VMM that ended by itself with a clean exit (the guest powered off or rebooted):
    /// `running`/`paused` → `stopping` → `stopped` with `reason`, in one transaction (a
    /// normal stop, not a failure). Returns the state it left.
    pub fn stopped_by_guest(&self, id: &str, from: &[SbState], reason: &str) -> Result<SbState> {
        self.write("change a sandbox's state", |tx| {
            let was = transition_tx(tx, id, from, SbState::Stopping, Some(reason))?;
            transition_tx(tx, id, &[SbState::Stopping], SbState::Stopped, Some(reason))?;
            Ok(was)
        })
    }

    /// Removes a stopped or failed sandbox's record and appends a `deleted` event; returns
    /// the record. `InvalidTransition` (to `"deleted"`) while it is up.
    pub fn delete_sandbox(&self, id: &str) -> Result<SandboxRow> {
        self.write("delete a sandbox", |tx| {
            let row = get(tx, id)?;
            if !deletable(row.state) {
                return Err(StoreError::InvalidTransition {
                    id: id.into(),
                    from: row.state,
                    to: "deleted",
                });
            }
            tx.execute("DELETE FROM sandboxes WHERE id = ?1", [id])
                .map_err(StoreError::db("delete a sandbox"))?;
            insert_event(
                tx,
                now_ms(),
                Some(id),
                "deleted",
                &json!({ "state": row.state }),
            )?;
            Ok(row)
        })
    }

    /// Running or paused sandboxes past a limit at `now_ms`, with which one: `"lifetime"`
    /// (now − created > max_lifetime; checked first, it is the hard limit) or `"idle"`
    /// (now − last activity, or creation if none > idle_timeout). Sorted by id.
    pub fn expired(&self, now_ms: i64) -> Result<Vec<(String, &'static str)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, CASE \
                   WHEN max_lifetime_ms IS NOT NULL AND ?1 - created_ms > max_lifetime_ms \
                     THEN 1 \
                   WHEN idle_timeout_ms IS NOT NULL \
                     AND ?1 - COALESCE(last_activity_ms, created_ms) > idle_timeout_ms \
                     THEN 2 \
                 END AS why \
                 FROM sandboxes WHERE state IN ('running', 'paused') AND why IS NOT NULL \
                 ORDER BY id",
            )
            .map_err(StoreError::db("find expired sandboxes"))?;
        let rows = stmt
            .query_map([now_ms], |r| {
                let why = if r.get::<_, i64>(1)? == 1 {
                    "lifetime"
                } else {
                    "idle"
                };
                Ok((r.get(0)?, why))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(StoreError::db("find expired sandboxes"))
    }
}
