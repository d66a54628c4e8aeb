//! `PUT /machine-config`: vCPUs and memory.

use serde::{Deserialize, Serialize};

use super::{ConfigError, HostFacts};
use crate::arch::mptable::MAX_CPUS;

/// Most vCPUs a kiln VM may have (as Firecracker).
pub const MAX_VCPUS: u8 = 32;
/// Least memory a Linux guest with an initramfs boots in.
pub const MIN_MEM_MIB: u64 = 32;

/// Firecracker's static CPU templates (its spellings). kiln-vmm has none: the guest sees
/// KVM's supported CPUID with kiln's topology, so only `None` is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CpuTemplate {
    None,
    C3,
    T2,
    T2S,
    T2CL,
    T2A,
}

/// Firecracker's guest memory page sizes (its spellings). kiln-vmm backs guest memory
/// with ordinary 4 KiB pages, so only `None` is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    None,
    #[serde(rename = "2M")]
    Size2M,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub vcpu_count: u8,
    pub mem_size_mib: u64,
    #[serde(default)]
    pub smt: bool,
    /// Only `false`: kiln-vmm takes Full snapshots and does not track dirty pages.
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// Only `"None"` (or absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
    /// Only `"None"` (or absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
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

impl MachineConfig {
    /// Checks the values, and the memory size against what `host` has.
    pub fn validate(&self, host: &HostFacts) -> Result<(), ConfigError> {
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
        if self.track_dirty_pages {
            return Err(ConfigError::new(
                "track_dirty_pages: true is not supported by kiln-vmm (it takes Full snapshots \
                 only and tracks no dirty pages): set it to false or omit it",
            ));
        }
        if let Some(t) = self.cpu_template.filter(|t| *t != CpuTemplate::None) {
            return Err(ConfigError::new(format!(
                "cpu_template \"{}\" is not supported by kiln-vmm (only \"None\": the guest \
                 sees the CPU features KVM supports): omit it or use \"None\"",
                spelling(&t)
            )));
        }
        if let Some(h) = self.huge_pages.filter(|h| *h != HugePages::None) {
            return Err(ConfigError::new(format!(
                "huge_pages \"{}\" is not supported by kiln-vmm (only \"None\": guest memory \
                 uses 4 KiB pages): omit it or use \"None\"",
                spelling(&h)
            )));
        }
        if self.mem_size_mib < MIN_MEM_MIB {
            return Err(ConfigError::new(format!(
                "mem_size_mib {} is too little memory to boot Linux; use at least {MIN_MEM_MIB}",
                self.mem_size_mib
            )));
        }
        if let Some(host) = host.mem_mib {
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

/// How a unit enum variant is spelled in JSON.
fn spelling<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
