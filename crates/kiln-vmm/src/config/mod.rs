//! The VM's configuration as Firecracker's API and config file spell it, validated once
//! at the boundary. Field names match Firecracker's so its clients work unchanged.

pub mod boot_source;
pub mod drive;
pub mod entropy;
pub mod host;
pub mod machine;
pub mod net;
pub mod valid;
pub mod vsock;

use serde::{Deserialize, Serialize};

pub use boot_source::BootSource;
pub use drive::{CacheType, Drive, IoEngine};
pub use entropy::EntropyConfig;
pub use host::HostFacts;
pub use machine::{CpuTemplate, HugePages, MachineConfig};
pub use net::NetworkInterface;
pub use valid::ValidConfig;
pub use vsock::VsockConfig;

/// A configuration error: the message says what to fix. Served as HTTP 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// Everything needed to build the VM (`GET /vm/config`, and `--config-file`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    #[serde(
        rename = "boot-source",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub boot_source: Option<BootSource>,
    #[serde(default)]
    pub drives: Vec<Drive>,
    #[serde(rename = "machine-config", default)]
    pub machine_config: MachineConfig,
    /// One virtio-net per entry, attached after the other devices in this order.
    #[serde(
        rename = "network-interfaces",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub network_interfaces: Vec<NetworkInterface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockConfig>,
    /// The virtio-rng's rate limiter (`PUT /entropy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<EntropyConfig>,
    /// Firecracker's logger section (as `PUT /logger`); applied by the binary.
    #[serde(default, skip_serializing)]
    pub logger: Option<crate::logger::LoggerConfig>,
    /// MMDS (as `PUT /mmds/config`); kept in snapshots, its data store is not.
    #[serde(
        rename = "mmds-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mmds_config: Option<crate::mmds::MmdsConfig>,
    /// Where metric lines go (as `PUT /metrics`); applied by the binary before the VM
    /// starts. Not part of the VM's state: not shown or saved in snapshots.
    #[serde(default, skip_serializing)]
    pub metrics: Option<crate::metrics::MetricsConfig>,
}

impl VmConfig {
    /// The boot source, which InstanceStart cannot do without.
    pub fn require_boot_source(&self) -> Result<&BootSource, ConfigError> {
        self.boot_source.as_ref().ok_or_else(|| {
            ConfigError::new("no boot source; PUT /boot-source with a kernel_image_path first")
        })
    }
}

/// Parses a JSON body into `T` with an error that names the problem.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, ConfigError> {
    serde_json::from_str(body).map_err(|e| ConfigError::new(format!("malformed JSON body: {e}")))
}

#[cfg(test)]
mod tests;
