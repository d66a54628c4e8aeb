//! OOM kills in the kernel log: when a VMM dies without saying why, `/dev/kmsg` may
//! hold the kernel's record of killing it. Read without blocking (the records since
//! boot that the ring buffer still holds, then stop); needs root or `CAP_SYSLOG`
//! (`kernel.dmesg_restrict`), else nothing is found and the death stays unexplained.
//! A memory cgroup's own account (`memory.events`) is the jail's concern; this module
//! tells the two kinds apart only by the kernel's wording.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

/// Which OOM killer ended a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomKill {
    /// The host ran out of memory.
    Host,
    /// A memory cgroup hit its limit.
    Cgroup,
}

impl OomKill {
    /// How a failure reason says it.
    pub fn describe(self) -> &'static str {
        match self {
            OomKill::Host => "killed by the kernel's OOM killer (host out of memory)",
            OomKill::Cgroup => "killed by the kernel's OOM killer (its memory cgroup's limit)",
        }
    }
}

/// At most this many records are read (a ring buffer holds far fewer).
const MAX_RECORDS: usize = 200_000;

/// A `/dev/kmsg` record `prio,seq,usec,flags[,..];message` as (microseconds since
/// boot, message); continuation lines (` KEY=value`) are dropped.
pub fn parse_record(rec: &str) -> Option<(u64, &str)> {
    let (head, rest) = rec.split_once(';')?;
    let ts = head.split(',').nth(2)?.parse().ok()?;
    Some((ts, rest.lines().next().unwrap_or("")))
}

/// Whether `msg` is the kernel's line about OOM-killing `pid`, and which kind.
pub fn oom_kill_in(msg: &str, pid: u32) -> Option<OomKill> {
    let killed = format!("Killed process {pid} (");
    if let Some(at) = msg.find(&killed) {
        let before = &msg[..at];
        if !before.contains("out of memory") && !before.contains("Out of memory") {
            return None;
        }
        return Some(if before.contains("Memory cgroup") {
            OomKill::Cgroup
        } else {
            OomKill::Host
        });
    }
    let rest = msg.strip_prefix("oom-kill:")?;
    let names_pid = rest.split(',').any(|kv| kv == format!("pid={pid}"));
    names_pid.then(|| {
        if rest.contains("constraint=CONSTRAINT_MEMCG") {
            OomKill::Cgroup
        } else {
            OomKill::Host
        }
    })
}

/// The kernel's OOM kill of `pid` logged at or after `since_us` (microseconds since
/// boot: the process's start, so a reused pid is not blamed), if the log has one.
pub fn find_oom_kill(pid: u32, since_us: u64) -> Option<OomKill> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()?;
    let mut buf = vec![0u8; 8192];
    let mut found = None;
    for _ in 0..MAX_RECORDS {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                if let Some((ts, msg)) = parse_record(&rec) {
                    if ts >= since_us {
                        if let Some(k) = oom_kill_in(msg, pid) {
                            found = Some(k);
                        }
                    }
                }
            }
            // Records overwritten while we read: the next read goes on from the oldest.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break, // EAGAIN: the end of the log
        }
    }
    found
}

/// Microseconds since boot of a start time in clock ticks (`/proc/<pid>/stat`).
pub fn ticks_to_us(ticks: u64) -> u64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    ticks.saturating_mul(1_000_000) / hz
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_and_oom_lines_name_their_pid_and_kind() {
        let rec = "3,1742,8123456789,-;Out of memory: Killed process 4242 (kiln-vmm) \
                   total-vm:5243000kB, anon-rss:5100000kB\n SUBSYSTEM=x\n";
        let (ts, msg) = parse_record(rec).unwrap();
        assert_eq!(ts, 8_123_456_789);
        assert_eq!(oom_kill_in(msg, 4242), Some(OomKill::Host));
        assert_eq!(oom_kill_in(msg, 424), None);
        assert_eq!(oom_kill_in(msg, 42421), None);
        let cg = "Memory cgroup out of memory: Killed process 77 (kiln-vmm) total-vm:1kB";
        assert_eq!(oom_kill_in(cg, 77), Some(OomKill::Cgroup));
        let ok = "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),task=kiln-vmm,pid=9,uid=0";
        assert_eq!(oom_kill_in(ok, 9), Some(OomKill::Host));
        assert_eq!(oom_kill_in(ok, 90), None);
        let memcg = "oom-kill:constraint=CONSTRAINT_MEMCG,task=kiln-vmm,pid=9,uid=0";
        assert_eq!(oom_kill_in(memcg, 9), Some(OomKill::Cgroup));
        // Not an OOM line although it names the pid.
        assert_eq!(oom_kill_in("audit: Killed process 9 (x)", 9), None);
        assert!(parse_record("garbage").is_none());
        assert!(parse_record("1,2,notanumber,-;x").is_none());
        assert!(OomKill::Host.describe().contains("host out of memory"));
    }

    #[test]
    fn reading_the_log_never_blocks() {
        // Whatever the log holds (or if it cannot be read), this returns.
        assert_eq!(find_oom_kill(u32::MAX, u64::MAX), None);
        assert_eq!(ticks_to_us(0), 0);
    }
}
