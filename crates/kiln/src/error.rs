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
    /// The state directory's filesystem has too little room for the operation (checked
    /// before it starts, or met as ENOSPC on the way).
    #[error(
        "not enough disk space for {what}: the filesystem of {} has {} MiB free{}; free space \
         there (`kiln rm` sandboxes and `kiln snapshot rm` snapshots you do not need) or set \
         KILN_STATE_DIR to a state directory on a larger filesystem",
        path.display(), free_mib, needed_mib.map(|n| format!(", this needs about {n} MiB")).unwrap_or_default()
    )]
    DiskFull {
        what: String,
        path: PathBuf,
        free_mib: u64,
        needed_mib: Option<u64>,
    },
    /// Admitting the sandbox would commit more guest memory than the budget
    /// (`KILN_MEMORY_BUDGET_MIB`, see [`crate::memory`]).
    #[error(
        "not enough memory for sandbox {id}: it needs {requested_mib} MiB (guest memory plus \
         the VMM's overhead) and {committed_mib} MiB of the memory budget of {budget_mib} MiB \
         are committed to other sandboxes; remove sandboxes you do not need, ask for less \
         memory (--memory), or raise the budget with KILN_MEMORY_BUDGET_MIB"
    )]
    InsufficientMemory {
        id: String,
        requested_mib: u64,
        committed_mib: u64,
        budget_mib: u64,
    },
    /// The state store failed (locked too long, unreadable, too new).
    #[error("{0}")]
    Store(StoreError),
    /// A sandbox's cgroup could not be made, or a CPU quota is out of range.
    #[error("{0}")]
    Cgroup(#[from] crate::cgroup::CgroupError),
    /// A sandbox network could not be made or removed (docs/NETWORK.md).
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    /// A published port's host address is taken (`kiln create -p`).
    #[error("{addr} is in use: choose another host port")]
    PortInUse { addr: std::net::SocketAddr },
    /// A port could not be published or forwarded (`crate::ports`; a bad spec is
    /// `InvalidInput`, a busy host port `PortInUse`).
    #[error("{0}")]
    Ports(String),
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

    /// Whether this is a full disk: [`Error::DiskFull`], or an ENOSPC met on the way.
    pub fn is_disk_full(&self) -> bool {
        let enospc = |e: &std::io::Error| e.raw_os_error() == Some(libc::ENOSPC);
        match self {
            Error::DiskFull { .. } => true,
            Error::HostIo { cause, .. } | Error::Io(cause) => enospc(cause),
            Error::Store(e) => e.is_full(),
            _ => false,
        }
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
            StoreError::InsufficientMemory {
                id,
                requested_mib,
                committed_mib,
                budget_mib,
            } => Error::InsufficientMemory {
                id,
                requested_mib,
                committed_mib,
                budget_mib,
            },
            e => Error::Store(e),
        }
    }
}
