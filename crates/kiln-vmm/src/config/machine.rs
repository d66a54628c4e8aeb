//! `PUT /machine-config`: vCPUs and memory.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::arch::mptable::MAX_CPUS;

/// Most vCPUs a kiln VM may have (as Firecracker).
pub const MAX_VCPUS: u8 = 32;
/// Least memory a Linux guest with an initramfs boots in.
pub const MIN_MEM_MIB: u64 = 32;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub vcpu_count: u8,
    pub mem_size_mib: u64,
    #[serde(default)]
    pub smt: bool,
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// Accepted for compatibility; only "None" (or absent) is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<String>,
    /// Accepted for compatibility; only "None" (or absent) is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<String>,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            vcpu_count: 1,
            mem_size_mib: 128,
            smt: false,
            track_dirty_pages: false,
            cpu_template: None,
            huge_pages: None,
        }
    }
}

/// Host RAM in MiB, from /proc/meminfo.
pub fn host_mem_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

impl MachineConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpu_count == 0 || self.vcpu_count > MAX_VCPUS.min(MAX_CPUS) {
            return Err(ConfigError::new(format!(
                "vcpu_count {} is out of range; use 1 to {MAX_VCPUS}",
                self.vcpu_count
            )));
        }
        if self.smt {
            return Err(ConfigError::new(
                "smt: true is not supported; kiln gives each vCPU its own core (set smt to false)",
            ));
        }
        for (name, v) in [
            ("cpu_template", &self.cpu_template),
            ("huge_pages", &self.huge_pages),
        ] {
            if v.as_deref().is_some_and(|v| v != "None") {
                return Err(ConfigError::new(format!(
                    "{name} {:?} is not supported; omit it or use \"None\"",
                    v.as_deref().unwrap_or_default()
                )));
            }
        }
        if self.mem_size_mib < MIN_MEM_MIB {
            return Err(ConfigError::new(format!(
                "mem_size_mib {} is too little memory to boot Linux; use at least {MIN_MEM_MIB}",
                self.mem_size_mib
            )));
        }
        if let Some(host) = host_mem_mib() {
            if self.mem_size_mib > host {
                return Err(ConfigError::new(format!(
                    "mem_size_mib {} is more than the host's {host} MiB of RAM; ask for less",
                    self.mem_size_mib
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vcpu_count: u8, mem_size_mib: u64) -> MachineConfig {
        MachineConfig {
            vcpu_count,
            mem_size_mib,
            ..Default::default()
        }
    }

    #[test]
    fn bad_sizes_say_what_to_use() {
        assert!(cfg(0, 128).validate().unwrap_err().0.contains("1 to 32"));
        assert!(cfg(33, 128).validate().is_err());
        assert!(cfg(1, 8).validate().unwrap_err().0.contains("at least 32"));
        assert!(cfg(1, 1 << 40).validate().unwrap_err().0.contains("host's"));
        assert!(cfg(2, 256).validate().is_ok());
        let smt = MachineConfig {
            smt: true,
            ..cfg(2, 256)
        };
        assert!(smt.validate().is_err());
    }
}
