//! The errors a caller of the `kiln` library can match on.

use std::path::PathBuf;
use std::time::Duration;

pub use kiln_proto::ErrorKind as FileErrorKind;

use crate::exec::ExecOutput;
use crate::store::{SbState as State, StoreError};

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sandbox {id} not found; `kiln ls` lists the sandboxes")]
    NotFound { id: String },
    #[error("sandbox {id} already exists")]
    AlreadyExists { id: String },
    #[error("sandbox {id} is {from}, it cannot go to {to}")]
    InvalidTransition { id: String, from: State, to: State },
    #[error("in the guest: {path}: {message}")]
    GuestFile {
        kind: FileErrorKind,
        path: String,
        message: String,
    },
    #[error("command timed out after {after:?} (its process group was killed)")]
    CommandTimedOut {
        after: Duration,
        output: Box<ExecOutput>,
    },
    #[error("the agent of sandbox {id} is unavailable: {reason}")]
    AgentUnavailable { id: String, reason: String },
    #[error("boot failed at {stage}: {message}")]
    BootFailed {
        stage: &'static str,
        errno: Option<i32>,
        message: String,
    },
    #[error("snapshot {name} not found; `kiln snapshot ls` lists the snapshots")]
    SnapshotNotFound { name: String },
    #[error("snapshot {name} already exists; choose another --name or remove it")]
    SnapshotExists { name: String },
    /// A snapshot that is damaged, truncated, altered or from another format version.
    #[error("{0}")]
    BadSnapshot(String),
    /// The VMM refused or failed an operation on a running VM (pause, snapshot).
    #[error("sandbox {id}: {message}")]
    Vmm { id: String, message: String },
    #[error(
        "sandbox {id}: the {backend} backend does not support {operation}; use --backend kiln"
    )]
    UnsupportedByBackend {
        id: String,
        backend: String,
        operation: String,
    },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The agent broke the protocol or answered something unexpected.
    #[error("agent protocol error: {0}")]
    Protocol(String),
    #[error("{what} {}: {cause}", path.display())]
    HostIo {
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The state directory or a file in it is another user's or writable by others.
    #[error("{0}")]
    StateDir(#[from] crate::paths::StateDirError),
    /// The state store failed (locked too long, unreadable, too new).
    #[error("{0}")]
    Store(StoreError),
    /// A sandbox's cgroup could not be made, or a CPU quota is out of range.
    #[error("{0}")]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub(crate) fn host_io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |cause| Error::HostIo { what, path, cause }
    }

    /// The guest-side error kind, for file operations.
    pub fn file_kind(&self) -> Option<FileErrorKind> {
        match self {
            Error::GuestFile { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

impl From<kiln_proto::ErrorReply> for Error {
    fn from(e: kiln_proto::ErrorReply) -> Error {
        match e.kind {
            FileErrorKind::Protocol => Error::Protocol(e.message),
            FileErrorKind::Unsupported => Error::Unsupported(e.message),
            kind => Error::GuestFile {
                kind,
                path: e.path.unwrap_or_default(),
                message: e.message,
            },
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        match e {
            StoreError::NotFound {
                what: "sandbox",
                id,
            } => Error::NotFound { id },
            StoreError::AlreadyExists {
                what: "sandbox",
                id,
            } => Error::AlreadyExists { id },
            StoreError::InvalidTransition { id, from, to } => match to.parse::<State>() {
                Ok(to) => Error::InvalidTransition { id, from, to },
                Err(_) => Error::Store(StoreError::InvalidTransition { id, from, to }),
            },
            e => Error::Store(e),
        }
    }
}
