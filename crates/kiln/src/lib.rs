//! kiln: the host runtime library. [`Sandbox`] creates microVMs with a guest agent, runs
//! commands and moves files through it; below it, a Firecracker-API client ([`fc`]) and
//! the `kiln-vmm` process launcher ([`vmm`]).

pub mod agent;
pub mod backend;
pub mod catalog;
pub mod error;
pub mod exec;
pub mod fc;
pub mod paths;
pub mod process;
pub mod sandbox;
pub mod snapshot;
pub mod store;
pub mod vmm;

pub use backend::{Capabilities, VmBackend};
pub use error::{Error, FileErrorKind, Result};
pub use exec::{ExecEvent, ExecOptions, ExecOutput, ExitStatus, WinSize};
pub use fc::{ApiError, FcClient};
pub use kiln_proto::{DirEntry, FileKind, FileStat};
pub use kiln_vmm::boot_error;
pub use sandbox::{
    events_for, events_since, reap_expired, reconcile, Fork, MemoryBackend, Reconciled, Sandbox,
    SandboxBuilder, SandboxInfo, State,
};
pub use snapshot::Snapshot;
pub use vmm::{DriveSpec, GuestSpec, VmmProcess};
