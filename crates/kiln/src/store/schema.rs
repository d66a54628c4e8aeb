//! The schema and its forward migrations, versioned with `PRAGMA user_version`.
//!
//! `MIGRATIONS[i]` takes a database from version `i` to `i + 1`. A released migration is
//! never edited: change the schema by appending one. A database whose version is higher
//! than `MIGRATIONS.len()` was written by a newer kiln and is refused, not guessed at.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::error::{Result, StoreError};

/// The schema version this code writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

const V1: &str = "
CREATE TABLE sandboxes (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL
        CHECK (state IN ('creating','running','paused','stopping','stopped','failed')),
    backend TEXT NOT NULL DEFAULT 'kiln',
    image TEXT,
    cpus INTEGER,
    memory_mib INTEGER,
    pid INTEGER,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    failure TEXT,          -- why, when state = 'failed'
    metadata TEXT,         -- a JSON object of string values
    idle_timeout_ms INTEGER,
    max_lifetime_ms INTEGER,
    last_activity_ms INTEGER,
    snapshot TEXT,         -- restored from this snapshot
    parent TEXT            -- forked from this sandbox
);
CREATE INDEX sandboxes_state ON sandboxes (state);

CREATE TABLE snapshots (
    name TEXT PRIMARY KEY,
    source TEXT,
    dir TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    size_bytes INTEGER
);

CREATE TABLE images (
    name TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    sha256 TEXT,
    size_bytes INTEGER,
    added_ms INTEGER NOT NULL
);

CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    sandbox TEXT,
    kind TEXT NOT NULL,
    detail TEXT            -- JSON
);
CREATE INDEX events_sandbox_seq ON events (sandbox, seq);
";

#[cfg(test)]
pub(super) const V1_FOR_TESTS: &str = V1;

/// What a killed process must not lose (issue "Hardening"): the VMM's start time (with
/// its pid it names the process even after the pid is reused), the operation that holds
/// a sandbox (a snapshot or fork that paused it, by which process: reconcile undoes it
/// when that process is gone), and why a stopped sandbox stopped (the guest powered
/// off, or the step of `kiln stop` that ended it).
const V2: &str = "
ALTER TABLE sandboxes ADD COLUMN vmm_start INTEGER;  -- clock ticks after boot
ALTER TABLE sandboxes ADD COLUMN operation TEXT;     -- JSON: store::Operation
ALTER TABLE sandboxes ADD COLUMN stop_reason TEXT;   -- why, when state = 'stopped'
";

/// The CPU quota of a sandbox's cgroup (CPUs of time per second; NULL: none).
const V3: &str = "
ALTER TABLE sandboxes ADD COLUMN cpu_quota REAL;
";

/// Published ports (`kiln create -p`): a JSON array of specs as bound,
/// `["127.0.0.1:8080:80/tcp"]`; NULL: none.
const V4: &str = "
ALTER TABLE sandboxes ADD COLUMN ports TEXT;
";

/// Brings the database up to [`SCHEMA_VERSION`], or refuses one from a newer kiln.
///
/// The version is read inside an IMMEDIATE transaction (the write lock), so processes
/// that open a new database at the same time migrate it once, one after the other.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    // Fast path without the write lock: most opens find the schema current.
    let found = user_version(conn)?;
    check_not_newer(found, path)?;
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StoreError::db("begin migration"))?;
    let found = user_version(&tx)?;
    check_not_newer(found, path)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)
            .map_err(StoreError::db("migrate the schema"))?;
        tx.pragma_update(None, "user_version", i as u32 + 1)
            .map_err(StoreError::db("migrate the schema"))?;
    }
    tx.commit().map_err(StoreError::db("commit migration"))
}

pub(super) fn user_version(conn: &Connection) -> Result<u32> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(StoreError::db("read the schema version"))
}

fn check_not_newer(found: u32, path: &Path) -> Result<()> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    Ok(())
}
