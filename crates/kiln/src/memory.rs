//! Memory admission: how much guest memory kiln lets its sandboxes commit on this host.
//!
//! Every sandbox that holds memory (creating, running, paused, stopping) counts its guest
//! memory plus [`VMM_OVERHEAD_MIB`] for its VMM process (page tables, device queues,
//! thread stacks, the API). A new sandbox (create, restore, each fork child, each warm
//! pool member) is admitted only if that sum, its own share included, stays within the
//! budget: `KILN_MEMORY_BUDGET_MIB`, else the host's `MemTotal` × [`OVERCOMMIT`] (guest
//! memory is touched lazily and restored or forked memory is shared copy-on-write, so
//! some overcommit is safe; a host that runs sandboxes near their full size should set
//! the budget to its RAM or less). The check and the insertion of the new row are one
//! IMMEDIATE transaction of the state store, so concurrent creates in separate
//! processes cannot all pass ([`crate::store::MemoryLimit`]).

use crate::error::{Error, Result};
use crate::store::MemoryLimit;

/// What each VMM process costs besides its guest memory, in MiB.
pub const VMM_OVERHEAD_MIB: u64 = 32;

/// The default budget as a multiple of the host's memory: 1.5.
pub const OVERCOMMIT: f64 = 1.5;

/// The environment variable that sets the budget in MiB.
pub const BUDGET_ENV: &str = "KILN_MEMORY_BUDGET_MIB";

/// `MemTotal` of a `/proc/meminfo` text, in MiB.
pub fn mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut it = line["MemTotal:".len()..].split_whitespace();
    let kib: u64 = it.next()?.parse().ok()?;
    (it.next() == Some("kB")).then_some(kib / 1024)
}

/// The budget from the variable's value (if set) or the host's `/proc/meminfo`.
pub fn budget_from(env: Option<&str>, meminfo: &str) -> Result<u64> {
    match env.map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) => v.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| {
            Error::InvalidInput(format!(
                "{BUDGET_ENV}={v:?}: use a whole number of MiB above 0, e.g. {BUDGET_ENV}=8192"
            ))
        }),
        None => {
            let total = mem_total_mib(meminfo).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "cannot read MemTotal from /proc/meminfo; set {BUDGET_ENV} (MiB)"
                ))
            })?;
            Ok((total as f64 * OVERCOMMIT) as u64)
        }
    }
}

/// This host's limit, from the environment and `/proc/meminfo`.
pub fn limit() -> Result<MemoryLimit> {
    let env = std::env::var(BUDGET_ENV).ok();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Ok(MemoryLimit {
        budget_mib: budget_from(env.as_deref(), &meminfo)?,
        overhead_mib: VMM_OVERHEAD_MIB,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:        6045696 kB\nMemFree:  100 kB\n";

    #[test]
    fn the_default_budget_is_the_hosts_memory_with_the_stated_overcommit() {
        assert_eq!(mem_total_mib(MEMINFO), Some(5904));
        assert_eq!(budget_from(None, MEMINFO).unwrap(), 5904 * 3 / 2);
        assert_eq!(budget_from(Some(""), MEMINFO).unwrap(), 5904 * 3 / 2);
        assert!(mem_total_mib("MemFree: 1 kB\n").is_none());
        assert!(budget_from(None, "").is_err());
    }

    #[test]
    fn the_variable_overrides_and_bad_values_say_what_to_use() {
        assert_eq!(budget_from(Some("4096"), MEMINFO).unwrap(), 4096);
        for bad in ["0", "-1", "4G", "x"] {
            let e = budget_from(Some(bad), MEMINFO).unwrap_err().to_string();
            assert!(e.contains("KILN_MEMORY_BUDGET_MIB"), "{e}");
        }
    }

    #[test]
    fn ten_creates_of_5000_mib_do_not_fit_a_6_gib_host() {
        // The case: 10 × 5000 MiB on a 5.9 GiB host.
        let budget = budget_from(None, MEMINFO).unwrap();
        let fit = budget / (5000 + VMM_OVERHEAD_MIB);
        assert_eq!(fit, 1);
    }
}
