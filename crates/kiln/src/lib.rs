//! kiln: the host runtime library. [`Sandbox`] creates microVMs with a guest agent, runs
//! commands and moves files through it; below it, a Firecracker-API client ([`fc`]) and
//! the `kiln-vmm` process launcher ([`vmm`]).
//!
//! # Layers
//!
//! A module uses only modules in the rows below its own (or its own row's leaf modules,
//! where the table says so); nothing reaches up. `scripts/check-cycles` (run by
//! `scripts/test`) fails on any cycle between modules.
//!
//! | layer | modules | may use |
//! | --- | --- | --- |
//! | 6 | [`sandbox`]: the `Sandbox` API, restore, fork, pools, reconcile | everything below |
//! | 4 | [`ports`]: port-forward, published ports and their publisher process | `agent`, `net`, `process`, `paths`, `error` |
//! | 5 | [`snapshot`]: named snapshots on disk | `state_dir`, `store`, `error` |
//! | 4 | [`backend`]: `VmBackend`, its backends, `MemoryBackend` | `agent`, `vmm`, `fc`, `process`, `cgroup`, `state_dir`, `paths`, `error` |
//! | 3 | [`agent`]: the guest agent client | `exec`, `error` |
//! | 3 | [`vmm`]: the `kiln-vmm` launcher | `fc`, `process`, `paths`, `cgroup` |
//! | 3 | [`memory`]: the memory budget and its admission | `store`, `error` |
//! | 2 | [`state_dir`]: the state directory, sandbox folders ([`state_dir::Dir`]), records, ids, the store opened there | `store`, `paths`, `cgroup`, `error` |
//! | 1 | [`error`]: the library's `Error` | `store` (its errors and the lifecycle state), `exec`, `cgroup`, `net` (their errors) |
//! | 0 | [`store`]: the SQLite state store (sandboxes, lifecycle [`State`], events, the catalog of snapshots and images) | nothing of kiln |
//! | 0 | [`kmsg`]: OOM kills in the kernel log | nothing of kiln |
//! | 0 | [`net`]: per-sandbox network namespaces, TAP, veth, NAT (docs/NETWORK.md) | `lease` |
//! | 0 | [`lease`]: host-wide leases of numbers (uids, /30s), safe across processes | nothing of kiln |
//! | 0 | [`exec`], [`fc`], [`process`], [`paths`], [`vmm_metrics`]: plain types, the Firecracker-API client, processes, file locations, reading kiln-vmm's metrics file | nothing of kiln |
//! | 0 | [`cgroup`]: a sandbox VMM's cgroup v2 group and its limits | nothing of kiln |

pub mod agent;
pub mod backend;
pub mod cgroup;
pub mod error;
pub mod exec;
pub mod fc;
pub mod kmsg;
pub mod lease;
pub mod memory;
pub mod net;
pub mod paths;
pub mod ports;
pub mod process;
pub mod sandbox;
pub mod snapshot;
pub mod state_dir;
pub mod store;
pub mod vmm;
pub mod vmm_metrics;

pub use backend::{Capabilities, MemoryBackend, VmBackend};
pub use error::{Error, FileErrorKind, Result};
pub use exec::{ExecEvent, ExecOptions, ExecOutput, ExitStatus, WinSize};
pub use fc::{ApiError, FcClient};
pub use kiln_proto::{DirEntry, FileKind, FileStat};
pub use kiln_vmm::boot_error;
pub use sandbox::{
    events_for, events_since, note_disk_errors, reap_expired, reconcile, Fork, Reconciled, Sandbox,
    SandboxBuilder, SandboxInfo, State,
};
pub use snapshot::Snapshot;
pub use vmm::{DriveSpec, GuestSpec, VmmProcess};
