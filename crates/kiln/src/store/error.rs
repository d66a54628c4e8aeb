//! The store's error type: each message says what went wrong and what to do about it.

use std::path::PathBuf;

use super::state::SbState;

/// Everything [`Store`](super::Store) can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the state database {path}: {source}; check that its directory exists and \
         is writable, and that it is on a local filesystem (SQLite needs file locks and shared \
         memory, which 9p and NFS do not give reliably)"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "the state database {path} uses journal mode {mode:?}, not WAL: its filesystem cannot \
         share memory between processes; put the state directory on a local filesystem"
    )]
    NoWal { path: PathBuf, mode: String },

    #[error(
        "the state database {path} has schema version {found} but this kiln knows only up to \
         {known}: it was created by a newer kiln; upgrade kiln or use another state directory"
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        known: u32,
    },

    #[error("no {what} {id:?} in the state store; check the name against the list of {what}s")]
    NotFound { what: &'static str, id: String },

    #[error("a {what} named {id:?} already exists; pick another name or remove the old one first")]
    AlreadyExists { what: &'static str, id: String },

    #[error(
        "sandbox {id:?} is {from}, it cannot become {to}; allowed: creating → running ⇄ paused \
         → stopping → stopped, any state → failed, and only stopped or failed sandboxes can be \
         deleted (stop it first)"
    )]
    InvalidTransition {
        id: String,
        from: SbState,
        /// The target state, or `"deleted"`.
        to: &'static str,
    },

    #[error(
        "sandbox {id:?} is busy: a {kind} by process {pid} is in progress on it; wait for it to \
         finish (if that process is gone, `kiln ls` undoes what it left)"
    )]
    OperationInProgress { id: String, kind: String, pid: u32 },

    #[error("invalid input for the state store: {0}")]
    InvalidInput(String),

    #[error(
        "the state database stayed locked by another kiln process for more than 5 s ({op}); \
         retry, or find the process that holds it (`fuser` on kiln.db)"
    )]
    Busy {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "the state directory's filesystem is full ({op}: {source}); free space there (`kiln rm` \
         sandboxes and `kiln snapshot rm` snapshots you do not need) or use a state directory \
         on a larger filesystem (KILN_STATE_DIR)"
    )]
    Full {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "not enough memory for sandbox {id:?}: it needs {requested_mib} MiB (its memory plus \
         the VMM's overhead), {committed_mib} MiB of the budget of {budget_mib} MiB are \
         committed to other sandboxes; remove sandboxes you do not need, ask for less \
         (--memory), or raise the budget with KILN_MEMORY_BUDGET_MIB"
    )]
    InsufficientMemory {
        id: String,
        requested_mib: u64,
        committed_mib: u64,
        budget_mib: u64,
    },

    #[error(
        "state database error ({op}): {source}; if it says the file is corrupt, move kiln.db \
         aside (the sandboxes' folders stay) or use another state directory"
    )]
    Db {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Wraps a SQLite error met while doing `op`, telling a lock timeout apart.
    pub(crate) fn db(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        move |source| match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Busy { op, source }
            }
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full { op, source },
            _ => StoreError::Db { op, source },
        }
    }

    /// Whether the disk was full (SQLite's SQLITE_FULL: its VFS maps ENOSPC to it).
    pub fn is_full(&self) -> bool {
        let src = match self {
            StoreError::Full { .. } => return true,
            StoreError::Db { source, .. } | StoreError::Open { source, .. } => source,
            _ => return false,
        };
        match src {
            rusqlite::Error::SqliteFailure(f, _) => f.code == rusqlite::ErrorCode::DiskFull,
            _ => false,
        }
    }
}

/// Whether `e` is a violated PRIMARY KEY or UNIQUE constraint (a duplicate name).
pub(crate) fn is_duplicate(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}
