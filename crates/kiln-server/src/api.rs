//! The REST API's wire types: request bodies the server parses and the client sends,
//! and the response shapes the client reads back. Responses the server builds straight
//! from library types ([`kiln::SandboxInfo`], [`kiln::store::Event`], [`kiln::FileStat`],
//! [`kiln::DirEntry`], [`kiln::snapshot::SnapshotMeta`]) are read back as [`SandboxView`]
//! or as those same types.
//!
//! Unknown fields in a request body are refused (400 `bad_request`), so a misspelt
//! option is an error rather than silently ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a restored sandbox's memory is backed (see [`kiln::MemoryBackend`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryBackendName {
    File,
    Uffd,
}

impl From<MemoryBackendName> for kiln::MemoryBackend {
    fn from(m: MemoryBackendName) -> Self {
        match m {
            MemoryBackendName::File => kiln::MemoryBackend::File,
            MemoryBackendName::Uffd => kiln::MemoryBackend::Uffd,
        }
    }
}

/// `POST /v1/sandboxes`. Every field is optional; an empty body boots the default image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// CPUs of time per second the VMM may use (its cgroup's `cpu.max`), e.g. 0.5;
    /// 0.01 up to `cpus`. Also with `from_snapshot` (default: the snapshot's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<f64>,
    /// Environment for every command.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Default per-command timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// `kiln` (default), `firecracker` or `qemu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Restore this snapshot instead of booting an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_backend: Option<MemoryBackendName>,
    /// Published ports, `[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]` (docs/NETWORK.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// The sandbox's network (default: a NIC with no egress where the server can make
    /// one; with `from_snapshot`, the snapshot's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkRequest>,
}

/// The `network` object of a create.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRequest {
    /// `default` (a NIC, no egress), `none` (no NIC) or `allow-all` (a NIC, all egress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// `POST /v1/sandboxes/{id}/exec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Kills the command's process group after this long (default: the sandbox's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
    /// Text fed to the command's stdin, which is then closed. Without it stdin is
    /// `/dev/null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
}

impl ExecRequest {
    pub fn new<I, S>(cmd: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecRequest {
            cmd: cmd.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }
}

/// One line of a streamed exec (`application/x-ndjson`). Output data is base64.
/// `exit` is the last line of a command that ran to its end; `error` (the agent broke
/// off) ends a stream instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ExecLine {
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    Exit {
        code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
        duration_ms: u64,
    },
    Error {
        error: ErrorDetail,
    },
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
}

/// How `?stream=false` returns output: `text` (UTF-8, invalid sequences replaced; the
/// default) or `base64` (exact bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputEncoding {
    #[default]
    Text,
    Base64,
}

/// The answer to `POST /v1/sandboxes/{id}/exec?stream=false`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    pub stdout: String,
    pub stderr: String,
    pub encoding: OutputEncoding,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
}

/// `POST /v1/sandboxes/{id}/stop`: the step of the stop escalation that ended the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopResult {
    pub step: String,
}

/// `DELETE /v1/sandboxes/{id}`: `step` is how it was stopped (None: it was not running).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub id: String,
    pub step: Option<String>,
}

/// `POST /v1/sandboxes/{id}/snapshot`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `POST /v1/sandboxes/{id}/fork`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    pub count: usize,
}

/// `POST /v1/snapshots/{name}/restore`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_backend: Option<MemoryBackendName>,
}

/// A sandbox as the API returns it (the fields of [`kiln::SandboxInfo`]; anything the
/// server adds later lands in `extra`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxView {
    pub id: String,
    pub state: kiln::State,
    pub backend: String,
    pub image: String,
    pub cpus: u8,
    pub memory_mib: u64,
    pub pid: Option<u32>,
    pub created_ms: i64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub idle_timeout_ms: Option<u64>,
    pub max_lifetime_ms: Option<u64>,
    pub last_activity_ms: Option<i64>,
    pub failure: Option<String>,
    pub snapshot: Option<String>,
    pub parent: Option<String>,
    pub boot_ms: Option<u64>,
    /// Host I/O errors of its disks (kiln-vmm); None on other VMMs.
    #[serde(default)]
    pub disk_errors: Option<kiln::vmm_metrics::DiskErrors>,
    /// Published ports as bound, `127.0.0.1:8080:80/tcp`.
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The body of every error response: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A stable machine-readable `code`, a message for people, and per-code fields (for
/// example `id`, `from`, `to` for `invalid_transition`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// `GET /v1/snapshots`: a snapshot and how many warm sandboxes its pool holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotView {
    #[serde(flatten)]
    pub meta: kiln::snapshot::SnapshotMeta,
    /// Running, unclaimed members of its warm pool (`kiln pool`).
    #[serde(default)]
    pub pool: usize,
}

/// `POST /v1/snapshots/{name}/pool`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolRequest {
    /// Warm sandboxes to keep (0 to 1000).
    pub size: usize,
}
