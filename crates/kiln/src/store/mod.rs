//! The durable state store: one SQLite database, `<state dir>/kiln.db`, that records
//! sandboxes, snapshots, images and an event log for every kiln process on the host (CLI
//! invocations and `kiln serve` alike).
//!
//! - Several processes may open it at once: WAL journal (readers never block the writer),
//!   a 5 s busy timeout, and every read-modify-write runs in an IMMEDIATE transaction so
//!   it takes the write lock before it reads and cannot lose an update.
//! - `synchronous=NORMAL`: a committed change survives a crash of kiln; a power loss may
//!   drop the last commits but never corrupts the database.
//! - The schema is versioned with `PRAGMA user_version` and migrated forward on open
//!   ([`schema`]); a database from a newer kiln is refused.
//! - State changes go through [`Store::transition`], which checks the state machine
//!   ([`allowed`]) and appends an event in the same transaction.
//!
//! Times are milliseconds since the Unix epoch (`*_ms` instants, `i64`); durations are
//! milliseconds too (`u64`).
//!
//! Decisions worth knowing:
//! - Sandbox metadata is a map of strings (labels), stored as a JSON object, so a filter
//!   `key=value` matches exactly (via `json_each`, whatever characters the key has).
//! - No state moves to itself; `failed` is final; "any → failed" includes `stopped` (a
//!   cleanup that fails after the stop). Deleting a record needs `stopped` or `failed`.
//! - `transition`'s `from` is the caller's expectation and is narrowed by [`allowed`], so
//!   a wrong `from` list cannot bypass the state machine.
//! - The store indexes files (snapshot dirs, images) but never creates or removes them,
//!   except its reserve (`<state dir>/.reserve`, [`reserve`]): on a full disk a write
//!   (or the opening of the WAL) that fails is retried once after deleting it, so a
//!   removal can commit and free space.
//! - Memory admission ([`Store::insert_sandbox_within`]): the sum of the memory of the
//!   sandboxes that hold some and the insertion of a new `creating` row happen in one
//!   IMMEDIATE transaction, so concurrent creates cannot all pass a budget.

pub mod catalog;
mod error;
mod events;
mod lifecycle;
mod memory;
pub mod reserve;
mod sandboxes;
pub mod schema;
mod state;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, TransactionBehavior};

pub use catalog::{ImageRow, SnapshotRow};
pub use error::{Result, StoreError};
pub use events::Event;
pub use memory::MemoryLimit;
pub use sandboxes::{Operation, SandboxFilter, SandboxRow};
pub use schema::SCHEMA_VERSION;
pub use state::{allowed, deletable, SbState, UnknownState};

/// How long a statement waits for another process's write lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// An open state database. `Send + Sync`: share one per process (e.g. in an `Arc`);
/// other processes open their own.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
    reserve: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, usually `<state dir>/kiln.db`,
    /// and migrates it to [`SCHEMA_VERSION`]. The directory must exist.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        let reserve = reserve::reserve_path(&path);
        let conn = match Store::connect(&path) {
            // A full disk may keep SQLite from creating its -wal and -shm files: give
            // it the reserve and try once more.
            Err(_) if Store::low_on_space(&reserve) && reserve::release(&reserve) => {
                Store::connect(&path)?
            }
            r => r?,
        };
        reserve::ensure(&reserve);
        Ok(Store {
            conn: Mutex::new(conn),
            path,
            reserve,
        })
    }

    /// Whether the filesystem of the reserve has less than the reserve's size free.
    fn low_on_space(reserve: &Path) -> bool {
        let dir = reserve.parent().unwrap_or(Path::new("."));
        reserve::free_bytes(dir).is_ok_and(|f| f < reserve::RESERVE_BYTES)
    }

    /// Allocates the reserve again if it was released and there is room now (see
    /// [`reserve::ensure`]); whether it is in place.
    pub fn ensure_reserve(&self) -> bool {
        reserve::ensure(&self.reserve)
    }

    fn connect(path: &Path) -> Result<Connection> {
        let path = path.to_path_buf();
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        // First, so that everything below waits for other processes instead of failing.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // Switching a new file to WAL takes an exclusive lock and, when another
        // connection is doing the same, SQLite reports SQLITE_BUSY at once instead of
        // calling the busy handler: retry it here, within the same bound.
        let deadline = Instant::now() + BUSY_TIMEOUT;
        let mode: String = loop {
            match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                r => break r.map_err(open_err)?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal { path, mode });
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        schema::migrate(&mut conn, &path)?;
        Ok(conn)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection. A panic while it was held cannot leave a transaction open (a
    /// dropped `Transaction` rolls back), so a poisoned lock is safe to take over.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in an IMMEDIATE transaction and commits if it returns `Ok`; an `Err` (or a
    /// panic) rolls everything back. A full disk releases the reserve and runs it once more.
    fn write<T>(
        &self,
        op: &'static str,
        mut f: impl FnMut(&Transaction) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.conn();
        let mut once = |conn: &mut Connection| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(StoreError::db(op))?;
            let out = f(&tx)?;
            tx.commit().map_err(StoreError::db(op))?;
            Ok::<T, StoreError>(out)
        };
        match once(&mut conn) {
            Err(e) if e.is_full() && reserve::release(&self.reserve) => once(&mut conn),
            r => r,
        }
    }

    /// The folder that holds the database (the state directory).
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A path as the TEXT the database stores; non-UTF-8 paths are refused, not mangled.
fn path_text<'a>(what: &str, p: &'a Path) -> Result<&'a str> {
    p.to_str().ok_or_else(|| {
        StoreError::InvalidInput(format!(
            "{what} path {} is not UTF-8; use a path of UTF-8 characters",
            p.display()
        ))
    })
}
