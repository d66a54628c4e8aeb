//! Child-process helpers shared by everything that runs a VMM.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Waits up to `timeout` for `child` to exit. On timeout it is killed and reaped and
/// `None` is returned.
pub fn wait_or_kill(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if Instant::now() > deadline {
            kill_if_running(child);
            return Ok(None);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Kills and reaps `child` if it is still running (drop paths: never leave a VMM behind).
pub fn kill_if_running(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Whether the process `pid` that started at `start` (clock ticks after boot, see
/// [`start_time`]) still runs: a reused pid is not taken for it.
pub fn runs_as(pid: u32, start: u64) -> bool {
    pid != 0 && is_running(pid) && start_time(pid) == Some(start)
}

/// This process's pid and start time, as an owner record ([`runs_as`] checks it).
pub fn me() -> (u32, u64) {
    let pid = std::process::id();
    (pid, start_time(pid).unwrap_or(0))
}

/// Live processes (not zombies) with an argument for which `matches` holds, e.g. the
/// VMM whose `--api-sock` names a sandbox folder. Processes whose command line cannot
/// be read (another user's) are skipped.
pub fn find_by_arg(matches: impl Fn(&[u8]) -> bool) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|&b| b == 0).any(&matches) && is_running(pid) {
            out.push(pid);
        }
    }
    out
}

/// The environment variable that names a [`pause_point`].
pub const PAUSE_AT: &str = "KILN_TEST_PAUSE_AT";

/// A test hook: when `$KILN_TEST_PAUSE_AT` is `name`, the process says so on stderr
/// (`kiln: paused at NAME (pid N)`) and sleeps until it is killed, so that a test can
/// kill -9 it exactly there instead of guessing a delay. The points (docs/TESTING.md):
/// `after-spawn` (a VMM spawned and recorded, not yet configured), `before-running`
/// (the guest is up, the row still `creating`), `snapshot-paused` (the sandbox paused
/// for a snapshot or fork, its files not written yet), `snapshot-written` (the files
/// written, the sandbox not resumed yet) and `fork-restoring` (a fork's children being
/// made). Without the variable this costs one environment lookup.
pub fn pause_point(name: &str) {
    let Some(want) = std::env::var_os(PAUSE_AT) else {
        return;
    };
    if want != name {
        return;
    }
    eprintln!("kiln: paused at {name} (pid {})", std::process::id());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// How long [`reap_if_our_zombie`] waits for the last thread of an exited child.
pub const REAP_WAIT: Duration = Duration::from_secs(10);

/// The fields of `/proc/<pid>/stat` after the command name, from the state (field 3)
/// on: `stat(pid)?[n - 3]` is field n. The command name is in parentheses and may hold
/// any character, so the split is at the last ')'.
fn stat(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.rsplit(')').next()?;
    Some(rest.split_whitespace().map(String::from).collect())
}

/// Field `n` (numbered as in proc(5)) of `/proc/<pid>/stat`, as a number.
fn stat_number(fields: &[String], n: usize) -> Option<u64> {
    fields.get(n.checked_sub(3)?)?.parse().ok()
}

fn is_zombie(fields: &[String]) -> bool {
    fields.first().is_none_or(|s| s.starts_with('Z'))
}

/// Whether `pid` is a live process: it exists and is not a zombie (an exited process
/// its parent has not reaped yet, e.g. an orphan under an init that reaps lazily).
/// The VMM behind `pid`: a `kiln-jailer`'s only child (a jailed VMM, docs/JAIL.md), or
/// `pid` itself. What uses memory and CPU is the VMM; its jailer only waits.
pub fn vmm_of(pid: u32) -> u32 {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "kiln-jailer" {
        return pid;
    }
    let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
    let kids: Vec<u32> = kids
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|k| k.parse().ok())
        .collect();
    match kids[..] {
        [only] => only,
        _ => pid,
    }
}

pub fn is_running(pid: u32) -> bool {
    stat(pid).is_some_and(|f| !is_zombie(&f))
}

/// When `pid` started, in clock ticks after boot (field 22, starttime): with the pid,
/// it names one process even after the pid is reused.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_number(&stat(pid)?, 22)
}

/// Whether `pid` is a process in the middle of exiting: `PF_EXITING` and not yet a
/// zombie, or a zombie main thread whose other threads still run. Its command line may
/// already be empty then, but it still holds its files — for a VMM, the VM, whose
/// teardown (on a vCPU thread) can take a while.
pub fn is_exiting(pid: u32) -> bool {
    const PF_EXITING: u64 = 0x4;
    let Some(f) = stat(pid) else { return false };
    if is_zombie(&f) {
        // Field 20: num_threads.
        return stat_number(&f, 20).is_some_and(|n| n > 1);
    }
    // Field 9: flags.
    stat_number(&f, 9).unwrap_or(0) & PF_EXITING != 0
}

/// Reaps `pid` if it is an exited child of this process (a zombie whose parent is us):
/// a VMM this process spawned, whether or not it still holds its [`Child`] (e.g. a
/// detached sandbox removed later through `Sandbox::get`). A zombie keeps its pid, so
/// the pid cannot have been reused; anything else is left alone. Returns how it ended
/// (`exit status 1`, `killed by signal 9 (SIGKILL)`) when it reaped it.
///
/// A multi-threaded process shows as a zombie as soon as its main thread is gone, but
/// can be reaped only once its last thread is (a VMM's vCPU thread may still be tearing
/// the VM down): this waits up to [`REAP_WAIT`] for that.
pub fn reap_if_our_zombie(pid: u32) -> Option<String> {
    let f = stat(pid)?;
    // Field 4: ppid.
    if !is_zombie(&f) || stat_number(&f, 4) != Some(u64::from(std::process::id())) {
        return None;
    }
    let pid = i32::try_from(pid).ok()?;
    let mut status = 0;
    let deadline = Instant::now() + REAP_WAIT;
    loop {
        // SAFETY: waitpid on an exited child of ours, without blocking; `status` is ours.
        match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
            0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            r if r == pid => break,
            _ => return None,
        }
    }
    if !libc::WIFSIGNALED(status) {
        return Some(format!("exit status {}", libc::WEXITSTATUS(status)));
    }
    let sig = libc::WTERMSIG(status);
    let name = match sig {
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        _ => "",
    };
    Some(format!("killed by signal {sig}{name}"))
}

/// Starts `cmd`'s process in a session of its own (setsid before exec), so that a
/// Ctrl-C or hangup of the starting terminal does not reach it.
pub fn in_own_session(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe; it only detaches the child from our session.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        })
    }
}

/// A pidfd of `pid`, checked to be the process that started at `start` (so a reused
/// pid is not taken for it): [`wait_pidfd`] returns when it exits.
pub fn pidfd_of(pid: u32, start: u64) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let p = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd we own.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    // Checked after opening: the fd names the process that had this start time.
    if start_time(pid) != Some(start) {
        return Err(std::io::Error::other(format!(
            "process {pid} is not the one recorded (it exited)"
        )));
    }
    Ok(fd)
}

/// Blocks until the process behind `fd` (from [`pidfd_of`]) has exited.
pub fn wait_pidfd(fd: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    loop {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one pollfd we own.
        let rc = unsafe { libc::poll(&mut p, 1, -1) };
        if rc > 0 {
            return;
        }
        if rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn we_are_running_and_a_reaped_child_is_not() {
        assert!(super::is_running(std::process::id()));
        assert!(!super::is_exiting(std::process::id()));
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        assert!(!super::is_running(pid));
        assert!(!super::is_exiting(pid));
    }

    #[test]
    fn start_times_tell_processes_apart() {
        let me = super::start_time(std::process::id()).expect("our start time");
        assert_eq!(super::start_time(std::process::id()), Some(me));
        let mut c = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let child = super::start_time(c.id()).expect("the child's start time");
        assert!(child >= me, "{child} < {me}");
        assert_eq!(super::start_time(1).map(|t| t <= me), Some(true));
        c.kill().unwrap();
        c.wait().unwrap();
        assert_eq!(super::start_time(c.id()), None);
    }

    #[test]
    fn owners_are_told_apart_by_start_time_and_args_are_found() {
        let (pid, start) = super::me();
        assert!(super::runs_as(pid, start));
        assert!(
            !super::runs_as(pid, start + 1),
            "another start time: a reused pid"
        );
        assert!(!super::runs_as(0, start));
        let marker = format!("kiln-find-by-arg-{pid}");
        let mut c = std::os::unix::process::CommandExt::arg0(
            &mut std::process::Command::new("sleep"),
            &marker,
        )
        .arg("30")
        .spawn()
        .unwrap();
        // The child's command line is its own once it has exec'd; under load that can
        // lag behind spawn() returning, so look a few times before concluding.
        let mut found = Vec::new();
        for _ in 0..100 {
            found = super::find_by_arg(|a| a == marker.as_bytes());
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(found, vec![c.id()]);
        c.kill().unwrap();
        c.wait().unwrap();
        assert!(super::find_by_arg(|a| a == marker.as_bytes()).is_empty());
    }

    #[test]
    fn an_exited_child_we_dropped_is_reaped_and_others_are_left_alone() {
        let c = std::process::Command::new("true").spawn().unwrap();
        // (`true` exits 0; a kill -9 is covered by the lifecycle e2e test.)
        let pid = c.id();
        drop(c); // no wait: it becomes our zombie
        let proc_entry = format!("/proc/{pid}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while super::is_running(pid) {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(std::path::Path::new(&proc_entry).exists(), "not a zombie");
        assert_eq!(
            super::reap_if_our_zombie(pid).as_deref(),
            Some("exit status 0")
        );
        assert!(
            !std::path::Path::new(&proc_entry).exists(),
            "still a zombie"
        );
        // Not our child (pid 1), ourselves, a pid that is gone: nothing happens.
        assert_eq!(super::reap_if_our_zombie(1), None);
        assert_eq!(super::reap_if_our_zombie(std::process::id()), None);
        assert_eq!(super::reap_if_our_zombie(pid), None);
        assert!(super::is_running(std::process::id()));
    }

    #[test]
    fn a_pidfd_names_one_process_and_wakes_when_it_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = super::start_time(pid).unwrap();
        assert!(
            super::pidfd_of(pid, start + 1).is_err(),
            "a wrong start time is refused"
        );
        let fd = super::pidfd_of(pid, start).unwrap();
        super::wait_pidfd(&fd);
        // It has exited (a zombie until reaped): the wait returned because of that.
        assert!(!super::is_running(pid));
        child.wait().unwrap();
    }
}
