//! The `kiln-relay` process: one per QEMU sandbox, running a [`Relay`] between
//! QEMU's `kiln.agent` chardev socket and `<sandbox>/v.sock`.
//!
//! `kiln-relay --channel <dir>/agent.port --listen <dir>/v.sock` connects to the
//! channel, binds the listener, then forks: the parent prints the relay's pid and
//! exits 0 (so the starter knows it is ready, and never has to reap it), the child
//! starts its own session and relays until QEMU closes the channel (the VM is gone),
//! then removes the listener's socket and exits. Its log is its stderr
//! (`<dir>/relay.log`). Both paths are inside the sandbox folder, so
//! [`crate::backend::vm_alive`] recognises the process by its command line.

use std::fs::OpenOptions;
use std::io::BufReader;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::relay::Relay;
use super::{files, RELAY_STOP_GRACE};
use crate::backend::fc_launch::failed;
use crate::backend::vm_alive;
use crate::error::{Error, Result};
use crate::state_dir::Dir;

/// How long the relay waits for QEMU's chardev socket to appear.
const CHANNEL_WAIT: Duration = Duration::from_secs(20);
/// Channel read buffer: many frames per syscall.
const READ_BUF: usize = 256 << 10;

/// Why `kiln-relay` could not start relaying.
#[derive(Debug, thiserror::Error)]
pub enum RelayStartError {
    #[error("unknown argument {0:?}")]
    UnknownArgument(String),
    #[error("{0} needs a path")]
    MissingPath(String),
    #[error("{0} is required")]
    Required(&'static str),
    /// QEMU's chardev socket did not accept within `CHANNEL_WAIT` (20 s).
    #[error("connect {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("listen on {}: {source}", path.display())]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The `kiln-relay` binary's main; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let (channel, listen) = match parse_args(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kiln-relay: {e}\nusage: kiln-relay --channel PATH --listen PATH");
            return 2;
        }
    };
    let (stream, listener) = match connect(&channel).and_then(|s| Ok((s, bind(&listen)?))) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kiln-relay: {e}");
            return 1;
        }
    };
    // SAFETY: we are single-threaded here (no thread has been started), so the child
    // may run any code.
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("kiln-relay: fork: {}", std::io::Error::last_os_error());
            1
        }
        0 => {
            detach();
            relay(stream, listener, &listen)
        }
        pid => {
            println!("{pid}");
            0
        }
    }
}

fn parse_args(args: &[String]) -> std::result::Result<(PathBuf, PathBuf), RelayStartError> {
    let (mut channel, mut listen) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let slot = match a.as_str() {
            "--channel" => &mut channel,
            "--listen" => &mut listen,
            other => return Err(RelayStartError::UnknownArgument(other.into())),
        };
        let path = it
            .next()
            .ok_or_else(|| RelayStartError::MissingPath(a.clone()))?;
        *slot = Some(PathBuf::from(path));
    }
    Ok((
        channel.ok_or(RelayStartError::Required("--channel"))?,
        listen.ok_or(RelayStartError::Required("--listen"))?,
    ))
}

/// Connects to QEMU's chardev socket (QEMU creates it at start-up).
fn connect(path: &Path) -> std::result::Result<UnixStream, RelayStartError> {
    let deadline = Instant::now() + CHANNEL_WAIT;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(source) if Instant::now() > deadline => {
                return Err(RelayStartError::Connect {
                    path: path.to_path_buf(),
                    source,
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn bind(path: &Path) -> std::result::Result<UnixListener, RelayStartError> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).map_err(|source| RelayStartError::Listen {
        path: path.to_path_buf(),
        source,
    })
}

/// Own session, stdout on /dev/null (the starter reads our parent's stdout to EOF).
fn detach() {
    // SAFETY: setsid/open/dup2/close on descriptors we own; no memory is shared.
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::close(null);
        }
    }
}

fn relay(stream: UnixStream, listener: UnixListener, listen: &Path) -> i32 {
    let relay = match stream.try_clone() {
        Ok(w) => Relay::new(w),
        Err(e) => {
            eprintln!("kiln-relay: {e}");
            return 1;
        }
    };
    let acceptor = relay.clone();
    if let Err(e) = std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || acceptor.accept_loop(listener))
    {
        eprintln!("kiln-relay: no accept thread: {e}");
        return 1;
    }
    let mut reader = BufReader::with_capacity(READ_BUF, stream);
    let code = match relay.serve(&mut reader) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kiln-relay: channel: {e}");
            1
        }
    };
    let _ = std::fs::remove_file(listen);
    code
}

/// Starts the relay for `dir` (QEMU runs); returns its pid once it listens.
pub fn spawn(dir: &Dir) -> Result<u32> {
    let bin = crate::paths::relay_binary();
    let log = files::relay_log(dir);
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(Error::host_io("cannot create", &log))?;
    let out = Command::new(&bin)
        .arg("--channel")
        .arg(files::agent_port(dir))
        .arg("--listen")
        .arg(dir.vsock())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .output()
        .map_err(|e| {
            failed(
                "other",
                e.raw_os_error(),
                format!(
                    "cannot start {}: {e}; build it with `cargo build --release`, or set KILN_RELAY",
                    bin.display()
                ),
            )
        })?;
    let pid = String::from_utf8_lossy(&out.stdout).trim().parse::<u32>();
    match pid {
        Ok(pid) if out.status.success() && pid > 0 => {
            let pid_file = files::relay_pid(dir);
            std::fs::write(&pid_file, format!("{pid}\n"))
                .map_err(Error::host_io("cannot write", &pid_file))?;
            Ok(pid)
        }
        _ => {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let last = text.lines().last().unwrap_or("no message");
            Err(failed(
                "other",
                None,
                format!("the agent relay did not start ({}): {last}", out.status),
            ))
        }
    }
}

/// The relay's pid from `<dir>/relay.pid`, if it still runs.
pub fn running_pid(dir: &Dir) -> Option<u32> {
    let pid = std::fs::read_to_string(files::relay_pid(dir))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    vm_alive(pid, dir).then_some(pid)
}

/// Makes sure the relay is gone: it exits by itself once QEMU has (give it
/// `RELAY_STOP_GRACE`), else SIGTERM, then SIGKILL. Only a process whose command
/// line names this folder is signalled.
pub fn reap(dir: &Dir) {
    for sig in [0, libc::SIGTERM, libc::SIGKILL] {
        let Some(pid) = running_pid(dir) else { return };
        if sig != 0 {
            // SAFETY: kill has no memory effects; the pid was just checked to be ours.
            unsafe { libc::kill(pid as i32, sig) };
        }
        let deadline = Instant::now() + RELAY_STOP_GRACE;
        while vm_alive(pid, dir) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        let e = parse_args(&args(&["--channel", "c", "--bogus"])).unwrap_err();
        assert_eq!(e.to_string(), "unknown argument \"--bogus\"");
        let e = parse_args(&args(&["--channel"])).unwrap_err();
        assert_eq!(e.to_string(), "--channel needs a path");
        let e = parse_args(&args(&["--channel", "c"])).unwrap_err();
        assert_eq!(e.to_string(), "--listen is required");
        let e = parse_args(&args(&["--listen", "l"])).unwrap_err();
        assert_eq!(e.to_string(), "--channel is required");
        let ok = parse_args(&args(&["--listen", "l", "--channel", "c"])).unwrap();
        assert_eq!(ok, (PathBuf::from("c"), PathBuf::from("l")));
    }

    #[test]
    fn a_listener_that_cannot_bind_names_its_path() {
        let e = bind(Path::new("/nonexistent-dir/v.sock")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("listen on /nonexistent-dir/v.sock: "),
            "{e}"
        );
    }
}
