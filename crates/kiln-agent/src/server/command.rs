//! Turning an exec request into a `std::process::Command`: environment, working
//! directory, user, and what the child does between `fork` and `exec`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use kiln_proto::{ErrorReply, Exec};

use super::sys::{errno_error, invalid, io_error};

/// The environment every command starts from (then `set_env`, then the request's).
pub const BASE_ENV: [(&str, &str); 2] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/root"),
];
/// TERM for PTY commands unless the environment sets one.
pub const PTY_TERM: &str = "xterm-256color";
/// The working directory when the request names none.
pub const DEFAULT_CWD: &str = "/";

/// A command ready to spawn (stdio still to be set by the caller).
pub fn build(req: &Exec, agent_env: &BTreeMap<String, String>) -> Result<Command, ErrorReply> {
    let argv0 = &req.argv[0];
    if req.argv.iter().any(|a| a.contains('\0')) {
        return Err(invalid("argv contains a NUL byte", None));
    }
    for (k, v) in &req.env {
        check_env(k, Some(v))?;
    }

    let cwd_given = req.cwd.as_deref().unwrap_or(DEFAULT_CWD);
    let cwd = Path::new("/").join(cwd_given);
    if cwd_given.contains('\0') {
        return Err(invalid("cwd contains a NUL byte", Some(cwd_given)));
    }
    match std::fs::metadata(&cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(errno_error(libc::ENOTDIR, "working directory", cwd_given)),
        Err(e) => return Err(io_error(&e, "working directory", cwd_given)),
    }
    let cwd_c = CString::new(cwd.into_os_string().into_encoded_bytes())
        .map_err(|_| invalid("cwd contains a NUL byte", Some(cwd_given)))?;

    // A uid without a gid takes the user's primary group from /etc/passwd (else
    // gid = uid), never root's group by accident.
    let user = req.uid.and_then(passwd_entry);
    let gid = req
        .gid
        .or_else(|| req.uid.map(|u| user.as_ref().map_or(u, |e| e.gid)));

    let mut env: BTreeMap<&str, &str> = BASE_ENV.into_iter().collect();
    if let Some(home) = user.as_ref().map(|e| e.home.as_str()) {
        env.insert("HOME", home);
    }
    if req.pty.is_some() {
        env.insert("TERM", PTY_TERM);
    }
    env.extend(agent_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    env.extend(req.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));

    let mut cmd = Command::new(argv0);
    cmd.args(&req.argv[1..]).env_clear().envs(env);
    let setup = ChildSetup {
        ctty: req.pty.is_some(),
        uid: req.uid,
        gid,
        cwd: cwd_c,
    };
    // SAFETY: the closure only makes async-signal-safe syscalls on data prepared
    // before fork (see ChildSetup::run).
    unsafe { cmd.pre_exec(move || setup.run()) };
    Ok(cmd)
}

/// Validates an environment entry (`None` value: a removal).
pub fn check_env(key: &str, value: Option<&str>) -> Result<(), ErrorReply> {
    if key.is_empty() || key.contains('=') || key.contains('\0') {
        return Err(invalid(
            format!("bad environment variable name {key:?}"),
            None,
        ));
    }
    if value.is_some_and(|v| v.contains('\0')) {
        return Err(invalid(
            format!("environment variable {key} contains a NUL byte"),
            None,
        ));
    }
    Ok(())
}

/// What the child does after `fork`, before `exec` (std has already put the
/// stdio fds in place).
struct ChildSetup {
    ctty: bool,
    uid: Option<u32>,
    gid: Option<u32>,
    cwd: CString,
}

impl ChildSetup {
    /// Only async-signal-safe calls, no allocation: another thread of the agent
    /// may have held the allocator's lock at fork time.
    fn run(&self) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
        // SAFETY: plain syscalls on constants and on data owned by self.
        unsafe {
            // Its own session and process group: signals and kills reach the
            // whole tree, and a PTY can become its controlling terminal.
            if libc::setsid() < 0 {
                return Err(err());
            }
            if self.ctty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(err());
            }
            // PID 1 runs at -1000; commands are fair game for the OOM killer.
            // (Before setuid: afterwards the file is no longer ours to write.)
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
            // Default dispositions and an empty mask: the agent's are not the
            // command's business (PID 1 blocks SIGINT in every thread for
            // `ctrl_alt_del`, and SIGCHLD in `actions::reap_forever`).
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            for sig in 1..=64 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::sigaction(sig, &dfl, std::ptr::null_mut());
                }
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());

            if let Some(gid) = self.gid {
                if libc::setgroups(1, &gid) < 0 || libc::setgid(gid) < 0 {
                    return Err(err());
                }
            }
            if let Some(uid) = self.uid {
                if libc::setuid(uid) < 0 {
                    return Err(err());
                }
            }
            // After setuid, so the user needs the right to enter it.
            if libc::chdir(self.cwd.as_ptr()) < 0 {
                return Err(err());
            }
        }
        Ok(())
    }
}

struct PasswdEntry {
    gid: u32,
    home: String,
}

/// The /etc/passwd entry of `uid`, if there is one.
fn passwd_entry(uid: u32) -> Option<PasswdEntry> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || f[2].parse::<u32>().ok()? != uid {
            return None;
        }
        Some(PasswdEntry {
            gid: f[3].parse().ok()?,
            home: f[5].to_owned(),
        })
    })
}
