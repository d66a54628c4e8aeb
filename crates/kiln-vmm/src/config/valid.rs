//! A whole configuration checked once, as a type: [`ValidConfig`] is made only by
//! validating every section and how they fit together, and is what the builder starts a
//! VM from. Section checks run again here on purpose: files named at `PUT` time may be
//! gone by `InstanceStart`.

use std::ops::Deref;

use super::{drive, net, parse_json, BootSource, ConfigError, HostFacts, VmConfig};

/// A [`VmConfig`] that passed [`ValidConfig::new`]: it has a boot source, every section
/// is valid on the host it was checked against, drive ids are unique and at most one
/// drive is the root device.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidConfig(VmConfig);

impl ValidConfig {
    /// Validates each section as its API call would, plus what `InstanceStart` needs.
    pub fn new(cfg: VmConfig, host: &HostFacts) -> Result<Self, ConfigError> {
        for n in &cfg.network_interfaces {
            n.validate()?;
        }
        net::check_unique(&cfg.network_interfaces)?;
        if let Some(m) = &cfg.mmds_config {
            let ids: Vec<&str> = cfg
                .network_interfaces
                .iter()
                .map(|n| n.iface_id.as_str())
                .collect();
            m.validate(&ids).map_err(ConfigError::new)?;
        }
        if let Some(v) = &cfg.vsock {
            v.validate()?;
        }
        if let Some(e) = &cfg.entropy {
            e.validate()?;
        }
        cfg.machine_config.validate(host)?;
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
        Ok(Self(cfg))
    }

    /// Parses and validates a whole config file (`--config-file`).
    pub fn from_json(json: &str, host: &HostFacts) -> Result<Self, ConfigError> {
        Self::new(parse_json(json)?, host)
    }

    /// The boot source (a valid config always has one).
    pub fn boot_source(&self) -> &BootSource {
        self.0
            .boot_source
            .as_ref()
            .expect("ValidConfig::new checked the boot source")
    }

    pub fn as_config(&self) -> &VmConfig {
        &self.0
    }

    pub fn into_inner(self) -> VmConfig {
        self.0
    }
}

impl Deref for ValidConfig {
    type Target = VmConfig;

    fn deref(&self) -> &VmConfig {
        &self.0
    }
}
