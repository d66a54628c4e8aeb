//! The VM's configuration as Firecracker's API and config file spell it, validated once
//! at the boundary. Field names match Firecracker's so its clients work unchanged.

pub mod boot_source;
pub mod drive;
pub mod machine;
pub mod vsock;

use serde::{Deserialize, Serialize};

pub use boot_source::BootSource;
pub use drive::Drive;
pub use machine::MachineConfig;
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
    /// Accepted for compatibility with Firecracker config files; must be empty for now.
    #[serde(rename = "network-interfaces", default, skip_serializing)]
    pub network_interfaces: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockConfig>,
    /// Firecracker's logger section is accepted and ignored (kiln logs to stderr).
    #[serde(default, skip_serializing)]
    pub logger: Option<serde_json::Value>,
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

    /// Validates a whole config file (each section as its API call would, plus what
    /// `InstanceStart` needs).
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let cfg: VmConfig = parse_json(json)?;
        if !cfg.network_interfaces.is_empty() {
            return Err(ConfigError::new(
                "network-interfaces are not supported by this kiln-vmm yet; remove them",
            ));
        }
        if let Some(v) = &cfg.vsock {
            v.validate()?;
        }
        cfg.machine_config.validate()?;
        let Some(boot) = &cfg.boot_source else {
            return Err(ConfigError::new(
                "the config has no \"boot-source\"; add {\"kernel_image_path\": ...}",
            ));
        };
        boot.validate()?;
        let mut seen = Vec::new();
        for d in &cfg.drives {
            d.validate()?;
            if seen.contains(&&d.drive_id) {
                return Err(ConfigError::new(format!(
                    "drive_id '{}' is used twice; drive ids must be unique",
                    d.drive_id
                )));
            }
            seen.push(&d.drive_id);
        }
        drive::check_single_root(&cfg.drives)?;
        Ok(cfg)
    }
}

/// Parses a JSON body into `T` with an error that names the problem.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, ConfigError> {
    serde_json::from_str(body).map_err(|e| ConfigError::new(format!("malformed JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firecracker_config_file_parses() {
        let dir = std::env::temp_dir();
        let kernel = dir.join("kiln-cfg-test-kernel");
        std::fs::write(&kernel, b"x").unwrap();
        let json = format!(
            r#"{{"boot-source": {{"kernel_image_path": "{}", "boot_args": "console=ttyS0"}},
                "drives": [], "machine-config": {{"vcpu_count": 2, "mem_size_mib": 256, "smt": false}},
                "network-interfaces": [], "logger": null}}"#,
            kernel.display()
        );
        let cfg = VmConfig::from_json(&json).unwrap();
        assert_eq!(cfg.machine_config.vcpu_count, 2);
        assert!(VmConfig::from_json("{\"boot-source\": 3}")
            .unwrap_err()
            .0
            .starts_with("malformed JSON"));
        assert!(VmConfig::from_json(
            r#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 128}}"#
        )
        .unwrap_err()
        .0
        .contains("boot-source"));
        std::fs::remove_file(kernel).unwrap();
    }

    #[test]
    fn config_file_vsock_section() {
        let dir = std::env::temp_dir();
        let kernel = dir.join(format!("kiln-cfg-vsock-kernel-{}", std::process::id()));
        std::fs::write(&kernel, b"x").unwrap();
        let uds = dir.join(format!("kiln-cfg-vsock-{}.sock", std::process::id()));
        let json = |vsock: &str| {
            format!(
                r#"{{"boot-source": {{"kernel_image_path": "{}"}}, "vsock": {vsock}}}"#,
                kernel.display()
            )
        };
        let body = format!(r#"{{"guest_cid": 7, "uds_path": "{}"}}"#, uds.display());
        let cfg = VmConfig::from_json(&json(&body)).unwrap();
        assert_eq!(cfg.vsock.as_ref().unwrap().guest_cid, 7);
        let shown = serde_json::to_value(&cfg).unwrap();
        assert_eq!(shown["vsock"]["guest_cid"], 7);
        assert!(VmConfig::from_json(&json("null")).unwrap().vsock.is_none());
        let bad = format!(r#"{{"guest_cid": 2, "uds_path": "{}"}}"#, uds.display());
        assert!(VmConfig::from_json(&json(&bad))
            .unwrap_err()
            .0
            .contains("guest_cid"));
        std::fs::remove_file(kernel).unwrap();
    }

    #[test]
    fn config_file_metrics_section() {
        let dir = std::env::temp_dir();
        let kernel = dir.join(format!("kiln-cfg-metrics-kernel-{}", std::process::id()));
        std::fs::write(&kernel, b"x").unwrap();
        let json = |metrics: &str| {
            format!(
                r#"{{"boot-source": {{"kernel_image_path": "{}"}}, "metrics": {metrics}}}"#,
                kernel.display()
            )
        };
        let cfg = VmConfig::from_json(&json(r#"{"metrics_path": "/run/m.fifo"}"#)).unwrap();
        let m = cfg.metrics.as_ref().unwrap();
        assert_eq!(m.metrics_path, std::path::Path::new("/run/m.fifo"));
        // Not part of the VM's shown (or snapshotted) configuration.
        assert!(serde_json::to_value(&cfg).unwrap().get("metrics").is_none());
        assert!(VmConfig::from_json(&json("null"))
            .unwrap()
            .metrics
            .is_none());
        let e = VmConfig::from_json(&json(r#"{"metrics_path": "/m", "level": 1}"#)).unwrap_err();
        assert!(e.0.contains("unknown field"), "{e}");
        std::fs::remove_file(kernel).unwrap();
    }
}
