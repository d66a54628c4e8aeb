//! The jailer stays as the jailed program's parent, outside its PID namespace: it
//! forwards termination signals to it, and exits as it exits (same code, or killed by
//! the same signal), so whoever started the jailer sees the program's own end. If the
//! jailer is killed, the program gets SIGKILL (its parent-death signal).

use std::io;

/// The signals passed on to the jailed program.
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset takes valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn all_handled() -> libc::sigset_t {
    let mut s = FORWARDED.to_vec();
    s.push(libc::SIGCHLD);
    sigset(&s)
}

/// Blocks the forwarded signals and SIGCHLD, so none is lost between fork and wait.
pub fn block_signals() -> io::Result<()> {
    let set = all_handled();
    // SAFETY: `set` is initialised; the old mask is not wanted.
    let ret = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    crate::sys::check(ret.into()).map(drop)
}

/// In the child, before exec: an empty signal mask, as a program expects.
pub fn unblock_all() -> io::Result<()> {
    let set = sigset(&[]);
    // SAFETY: as above.
    let ret = unsafe { libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) };
    crate::sys::check(ret.into()).map(drop)
}

/// Waits for `child`, forwarding signals, and returns how it ended: Ok(code) or
/// Err(signal).
pub fn wait(child: libc::pid_t) -> Result<i32, libc::c_int> {
    let set = all_handled();
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let got = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if got == child {
            if libc::WIFEXITED(status) {
                return Ok(libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                return Err(libc::WTERMSIG(status));
            }
        } else if got < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Ok(125);
        }
        // SAFETY: `set` is initialised; a null info pointer is allowed.
        let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if sig > 0 && sig != libc::SIGCHLD {
            // SAFETY: kill takes plain integers; `child` is ours and not yet reaped.
            unsafe { libc::kill(child, sig) };
        }
    }
}

/// Ends this process the way the child ended.
pub fn exit_like(end: Result<i32, libc::c_int>) -> ! {
    match end {
        Ok(code) => std::process::exit(code),
        Err(sig) => {
            // SAFETY: restoring the default action and unblocking `sig`, then raising
            // it, ends the process with that signal (no core: RLIMIT_CORE is set 0).
            unsafe {
                let zero = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &zero);
                libc::signal(sig, libc::SIG_DFL);
                let set = sigset(&[sig]);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::raise(sig);
            }
            std::process::exit(128 + sig)
        }
    }
}
