//! The `events` table: an append-only log of what happened, numbered by `seq`, for
//! `kiln serve` to stream and for `kiln` to show a sandbox's history.
//!
//! The store itself appends `created`, `state` (`{from, to, reason?}`) and `deleted`
//! events for sandboxes; callers append their own kinds with [`Store::append_event`], or
//! with [`Store::append_event_once`] what must be logged once per sandbox (`disk_error`).
//! Events outlive the sandbox they name.

use rusqlite::{params, Connection, Row};
use serde::{Deserialize, Serialize};

use super::error::{Result, StoreError};
use super::{now_ms, Store};

/// One logged event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increases with every event, never reused.
    pub seq: i64,
    pub time_ms: i64,
    pub sandbox: Option<String>,
    pub kind: String,
    /// `Null` when there is none.
    pub detail: serde_json::Value,
}

const COLUMNS: &str = "seq, time_ms, sandbox, kind, detail";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    let detail = match r.get::<_, Option<String>>(4)? {
        None => serde_json::Value::Null,
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, e.into())
        })?,
    };
    Ok(Event {
        seq: r.get(0)?,
        time_ms: r.get(1)?,
        sandbox: r.get(2)?,
        kind: r.get(3)?,
        detail,
    })
}

/// Appends an event on `conn` (a transaction, when it belongs to a change); returns its seq.
pub(super) fn insert_event(
    conn: &Connection,
    time_ms: i64,
    sandbox: Option<&str>,
    kind: &str,
    detail: &serde_json::Value,
) -> Result<i64> {
    let detail = (!detail.is_null()).then(|| detail.to_string());
    conn.execute(
        "INSERT INTO events (time_ms, sandbox, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        params![time_ms, sandbox, kind, detail],
    )
    .map_err(StoreError::db("append an event"))?;
    Ok(conn.last_insert_rowid())
}

fn query(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Event>> {
    let mut stmt = conn.prepare(sql).map_err(StoreError::db("read events"))?;
    let rows = stmt
        .query_map(args, from_row)
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
    rows.map_err(StoreError::db("read events"))
}

impl Store {
    /// Appends an event now; returns its seq.
    pub fn append_event(
        &self,
        sandbox: Option<&str>,
        kind: &str,
        detail: serde_json::Value,
    ) -> Result<i64> {
        if kind.is_empty() {
            return Err(StoreError::InvalidInput(
                "an event needs a kind; name what happened (e.g. \"exec\")".into(),
            ));
        }
        // One statement: its own transaction, and the seq is read on the same connection.
        insert_event(&self.conn(), now_ms(), sandbox, kind, &detail)
    }

    /// Appends an event of `kind` for `sandbox` unless its current life already has one
    /// (since its last `created` event: an id used again starts afresh); returns the new
    /// seq, or None when there was one. Checked and appended in one IMMEDIATE
    /// transaction, so processes noticing the same thing at once log it once.
    pub fn append_event_once(
        &self,
        sandbox: &str,
        kind: &str,
        detail: serde_json::Value,
    ) -> Result<Option<i64>> {
        if kind.is_empty() {
            return Err(StoreError::InvalidInput(
                "an event needs a kind; name what happened (e.g. \"exec\")".into(),
            ));
        }
        const SEEN: &str = "SELECT EXISTS (SELECT 1 FROM events WHERE sandbox = ?1 AND kind = ?2 \
            AND seq > COALESCE((SELECT MAX(seq) FROM events WHERE sandbox = ?1 AND kind = 'created'), 0))";
        let seen = |conn: &Connection| {
            conn.query_row(SEEN, params![sandbox, kind], |r| r.get::<_, bool>(0))
                .map_err(StoreError::db("read events"))
        };
        // Without the write lock first: once logged, later calls only read.
        if seen(&self.conn())? {
            return Ok(None);
        }
        self.write("append an event", |tx| {
            if seen(tx)? {
                return Ok(None);
            }
            insert_event(tx, now_ms(), Some(sandbox), kind, &detail).map(Some)
        })
    }

    /// Up to `limit` events after `seq` (0: from the start), oldest first. A client that
    /// follows the log passes the last seq it saw.
    pub fn events_since(&self, seq: i64, limit: u32) -> Result<Vec<Event>> {
        query(
            &self.conn(),
            &format!("SELECT {COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"),
            params![seq, limit],
        )
    }

    /// The last `limit` events of `sandbox`, oldest first.
    pub fn events_for(&self, sandbox: &str, limit: u32) -> Result<Vec<Event>> {
        let mut events = query(
            &self.conn(),
            &format!("SELECT {COLUMNS} FROM events WHERE sandbox = ?1 ORDER BY seq DESC LIMIT ?2"),
            params![sandbox, limit],
        )?;
        events.reverse();
        Ok(events)
    }
}
