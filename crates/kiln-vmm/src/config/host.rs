//! Facts about the host that validation checks a configuration against, read once at
//! the edge (the binary's start, a snapshot load) and passed in, so validation itself
//! reads nothing and tests can give any host.

/// What the host offers a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostFacts {
    /// Host RAM in MiB (`MemTotal` of `/proc/meminfo`); None if unknown, and then memory
    /// sizes are not checked against it.
    pub mem_mib: Option<u64>,
}

impl HostFacts {
    /// Reads the facts of the host this process runs on.
    pub fn read() -> Self {
        Self {
            mem_mib: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|info| mem_total_mib(&info)),
        }
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in MiB.
fn mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_from_meminfo() {
        let info = "MemFree:  100 kB\nMemTotal:       16384000 kB\nBuffers: 1 kB\n";
        assert_eq!(mem_total_mib(info), Some(16000));
        assert_eq!(mem_total_mib("MemFree: 1 kB\n"), None);
        assert!(HostFacts::read().mem_mib.is_some_and(|m| m > 0));
    }
}
