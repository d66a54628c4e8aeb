//! Killing a command's whole process group, and knowing when it is gone.
//!
//! One SIGKILL to the group is not enough: a fork bomb keeps forking while the
//! signal is delivered, so the [`Killer`] repeats it every few milliseconds until
//! the group is empty. "Empty" is `kill(-pgid, 0)` failing with ESRCH — zombies
//! still count there, which is right as PID 1 (the reaper removes them at once) —
//! or, where nobody reaps our orphans (tests on a host), no member that is not a
//! zombie in `/proc`. The killer gives up after [`GIVE_UP`] (a process stuck in
//! the kernel cannot be killed any faster).

use std::time::{Duration, Instant};

use crate::console::errno;

const RETRY: Duration = Duration::from_millis(5);
const SCAN_EVERY: Duration = Duration::from_millis(50);
const GIVE_UP: Duration = Duration::from_secs(10);
/// How often a lingering group is checked before its deadline.
const LINGER_POLL: Duration = Duration::from_millis(250);

pub struct Killer {
    pgid: libc::pid_t,
    started: Instant,
    next: Instant,
    next_scan: Instant,
    done_at: Option<Instant>,
}

impl Killer {
    /// Starts killing (the first SIGKILL goes out now).
    pub fn new(pgid: libc::pid_t, now: Instant) -> Killer {
        let mut k = Killer {
            pgid,
            started: now,
            next: now,
            next_scan: now + SCAN_EVERY,
            done_at: None,
        };
        k.tick(now);
        k
    }

    /// Sends the next SIGKILL if it is due and checks whether the group is gone.
    pub fn tick(&mut self, now: Instant) {
        if self.done_at.is_some() || now < self.next {
            return;
        }
        if !signal_group(self.pgid, libc::SIGKILL) {
            self.done_at = Some(now);
            return;
        }
        if now >= self.next_scan {
            self.next_scan = now + SCAN_EVERY;
            if !has_live_member(self.pgid) {
                self.done_at = Some(now);
                return;
            }
        }
        if now.duration_since(self.started) >= GIVE_UP {
            self.done_at = Some(now);
            return;
        }
        self.next = now + RETRY;
    }

    /// When the group was found gone (or the killer gave up).
    pub fn done_at(&self) -> Option<Instant> {
        self.done_at
    }

    /// When [`Killer::tick`] wants to run next.
    pub fn next_tick(&self) -> Option<Instant> {
        self.done_at.is_none().then_some(self.next)
    }
}

/// Waits until group `pgid` is gone or `deadline` has passed, then kills it to
/// the last process. For a command with a timeout that exited but left processes
/// in its group (a fork bomb, a forgotten `&`): the timeout bounds the group.
pub fn kill_at_deadline(pgid: libc::pid_t, deadline: Instant) {
    let mut checks = 0u32;
    loop {
        // kill(0) each time; the /proc scan (zombies only, where nobody reaps
        // them) now and then.
        checks += 1;
        if !signal_group(pgid, 0) || (checks.is_multiple_of(4) && !has_live_member(pgid)) {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            let mut k = Killer::new(pgid, now);
            while let Some(t) = k.next_tick() {
                std::thread::sleep(t.saturating_duration_since(Instant::now()));
                k.tick(Instant::now());
            }
            return;
        }
        std::thread::sleep(LINGER_POLL.min(deadline - now));
    }
}

/// kill(-pgid, sig); false if the group does not exist (ESRCH).
pub fn signal_group(pgid: libc::pid_t, sig: libc::c_int) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill has no memory-safety preconditions; pgid > 1 is one of our
    // command's groups (never -1, which would mean every process).
    unsafe { libc::kill(-pgid, sig) == 0 || errno() != libc::ESRCH }
}

/// Whether `/proc` shows a process in group `pgid` that is not a zombie.
fn has_live_member(pgid: libc::pid_t) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, pgrp)) = parse_stat(&stat) {
            if pgrp == pgid && state != 'Z' && state != 'X' {
                return true;
            }
        }
    }
    false
}

/// (state, pgrp) from a `/proc/<pid>/stat` line: `pid (comm) S ppid pgrp ...`;
/// comm may contain spaces and parentheses, so fields count from the last ')'.
fn parse_stat(stat: &str) -> Option<(char, libc::pid_t)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_odd_comm() {
        assert_eq!(
            parse_stat("42 (sleep) S 1 42 42 0 -1 4194560"),
            Some(('S', 42))
        );
        assert_eq!(parse_stat("7 (a) b (c)) Z 1 99 99 0"), Some(('Z', 99)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn no_group_means_nothing_to_kill() {
        // pid_max is at most 2^22, so this group cannot exist.
        assert!(!signal_group(1 << 23, 0));
        assert!(!signal_group(1, 0), "never signal init's group or everyone");
        let k = Killer::new(1 << 23, Instant::now());
        assert!(k.done_at().is_some());
    }
}
