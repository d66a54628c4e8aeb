//! A running sandbox's VMM process as the host sees it: its pid behind the jailer, its
//! threads' `/proc` status, and a syscall injected into one of its threads with ptrace
//! (how the seccomp suite makes a real, jailed VMM break its filter without a back door
//! in the binary).

use std::fs;

/// The VMM process of `sb`: the jailer's only child when jailed, else the recorded pid.
pub fn vmm_pid(sb: &kiln::Sandbox) -> u32 {
    let pid = sb.record().pid;
    if !crate::cli::is_jailer(pid) {
        return pid;
    }
    let kids = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let kids: Vec<u32> = kids
        .split_whitespace()
        .map(|k| k.parse().unwrap())
        .collect();
    assert_eq!(kids.len(), 1, "the jailer {pid} has children {kids:?}");
    kids[0]
}

/// The value of `key` (e.g. `"Seccomp:"`) in `/proc/PID[/task/TID]/status`, spaces
/// collapsed; empty if absent.
pub fn status(path: &str, key: &str) -> String {
    let s = fs::read_to_string(format!("{path}/status")).unwrap_or_default();
    let l = s.lines().find(|l| l.starts_with(key)).unwrap_or_default();
    l.get(key.len()..)
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `(tid, name)` of every thread of `pid`.
pub fn threads(pid: u32) -> Vec<(i32, String)> {
    let mut out: Vec<(i32, String)> = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let tid = e.file_name().to_str()?.parse().ok()?;
            let name = fs::read_to_string(e.path().join("comm")).ok()?;
            Some((tid, name.trim().to_string()))
        })
        .collect();
    out.sort();
    out
}

/// The thread of `pid` named `name`.
pub fn thread_named(pid: u32, name: &str) -> i32 {
    let all = threads(pid);
    all.iter()
        .find(|(_, n)| n == name)
        .map(|(t, _)| *t)
        .unwrap_or_else(|| panic!("no thread {name} in VMM {pid}: {all:?}"))
}

fn check(what: &str, r: libc::c_long) {
    assert!(
        r != -1,
        "ptrace {what}: {}",
        std::io::Error::last_os_error()
    );
}

/// Makes thread `tid` (stopped in a blocking syscall, as an idle vCPU in KVM_RUN or the
/// API thread in accept) run syscall `nr` next: seize, interrupt, point its registers
/// at the `syscall` instruction it just left with `nr` in rax, and let it go. Its
/// filter sees `nr` as if the VMM's own code made it.
pub fn inject_syscall(tid: i32, nr: i64) {
    // SAFETY: plain ptrace/waitpid calls on a thread we seize; the register block is
    // a valid out/in pointer of the right type.
    unsafe {
        check(
            "seize",
            libc::ptrace(libc::PTRACE_SEIZE, tid, 0usize, 0usize),
        );
        check(
            "interrupt",
            libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0usize, 0usize),
        );
        let mut st = 0;
        let w = libc::waitpid(tid, &mut st, libc::__WALL);
        assert_eq!(w, tid, "waitpid: {}", std::io::Error::last_os_error());
        let mut regs: libc::user_regs_struct = std::mem::zeroed();
        check(
            "getregs",
            libc::ptrace(libc::PTRACE_GETREGS, tid, 0usize, &mut regs),
        );
        // The two bytes before rip must be `syscall` (0f 05): the thread was in one.
        let at = regs.rip - 2;
        *libc::__errno_location() = 0;
        let word = libc::ptrace(libc::PTRACE_PEEKTEXT, tid, at as usize, 0usize);
        assert_eq!(
            word & 0xffff,
            0x050f,
            "thread {tid} is not stopped after a syscall instruction (rip {:#x})",
            regs.rip
        );
        regs.rip = at;
        regs.rax = nr as u64;
        // No syscall restart on the way out: the injected call replaces the old one.
        regs.orig_rax = u64::MAX;
        check(
            "setregs",
            libc::ptrace(libc::PTRACE_SETREGS, tid, 0usize, &regs),
        );
        check(
            "detach",
            libc::ptrace(libc::PTRACE_DETACH, tid, 0usize, 0usize),
        );
    }
}
