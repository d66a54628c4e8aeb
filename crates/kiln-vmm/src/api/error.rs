//! Why an API call failed: every variant is served as `400 {"fault_message": ...}` with
//! its message, which says what to fix (texts clients and tests rely on: keep them).

use crate::config::ConfigError;
use crate::metrics::MetricsError;
use crate::vmm::VmmError;

/// The error of one API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A malformed body or an invalid configuration value.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The VMM refused or failed the operation.
    #[error(transparent)]
    Vmm(#[from] VmmError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("the requested operation is not supported after starting the microVM; configure before InstanceStart")]
    AfterStart,
    #[error("metrics can only be configured before the microVM starts; PUT /metrics before InstanceStart (or pass --metrics PATH)")]
    MetricsAfterStart,
    #[error("the drive_id in the body ('{body}') does not match the one in the path ('{path}')")]
    DriveIdMismatch { body: String, path: String },
    #[error("drive '{0}' does not exist; PUT /drives/{0} first")]
    NoSuchDrive(String),
    #[error("network interfaces can only be added before the microVM starts; PUT /network-interfaces/{{iface_id}} before InstanceStart (a running VM's rate limiters change with PATCH)")]
    NetAfterStart,
    #[error("the iface_id in the body ('{body}') does not match the one in the path ('{path}')")]
    IfaceIdMismatch { body: String, path: String },
    #[error("network interface '{0}' does not exist; PUT /network-interfaces/{0} first")]
    NoSuchIface(String),
    #[error("unknown action_type '{0}'; use InstanceStart, SendCtrlAltDel or FlushMetrics")]
    UnknownAction(String),
    #[error("unknown state '{0}'; use Paused or Resumed")]
    UnknownVmState(String),
    #[error("Diff snapshots are not supported by kiln-vmm yet; use Full")]
    DiffSnapshot,
    #[error("unknown snapshot_type '{0}'; use Full")]
    UnknownSnapshotType(String),
    #[error("version \"{0}\" is not supported by kiln-vmm (it writes only its own snapshot format, version {v}): remove it", v = crate::snapshot::format::VERSION)]
    SnapshotVersion(String),
    #[error("Diff snapshots are not supported by kiln-vmm yet; leave enable_diff_snapshots false")]
    DiffRestore,
    #[error("give either mem_backend or mem_file_path, not both")]
    TwoMemorySources,
    #[error("kiln_working_set is used only by the Uffd memory backend; remove it or load with mem_backend {{\"backend_type\": \"Uffd\", ...}}")]
    WorkingSetWithoutUffd,
    #[error("unknown backend_type '{0}'; use File or Uffd")]
    UnknownBackend(String),
    #[error("invalid request method and/or path: {method} {path}")]
    NoRoute { method: String, path: String },
    /// A reply that cannot be encoded as JSON (a bug).
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
}

/// A route's answer, or the error served as 400.
pub(super) type Outcome = Result<super::http::Response, ApiError>;
