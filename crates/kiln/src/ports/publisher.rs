//! The publisher: one detached `kiln-publish` process per sandbox with published ports.
//!
//! [`publish`] spawns it in its own session (a Ctrl-C of the creating terminal does not
//! reach it). It binds every listener first and only then answers on its stdout, one
//! line: `OK SPEC...` (the specs as bound) or `ERR in_use ADDR` / `ERR other MESSAGE`,
//! after which it exits; so a busy port fails the caller's create with nothing left
//! running. Its pid and start time go to `<sandbox>/publisher.json` (with the ports),
//! which [`unpublish`] uses to kill it; it also exits by itself when the sandbox's VMM
//! does (it waits on a pidfd of the VMM, checked against the VMM's start time).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::dial::Dial;
use super::error::PortError;
use super::forward::Forwarder;
use super::spec::PortSpec;
use crate::agent::AgentAddr;

/// The record of a running publisher, `<sandbox>/publisher.json`.
pub const RECORD: &str = "publisher.json";
/// Its log (connection errors), `<sandbox>/publisher.log`.
pub const LOG: &str = "publisher.log";

/// A running publisher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub pid: u32,
    /// Its start time (clock ticks after boot).
    pub start: u64,
    /// The ports as bound (`127.0.0.1:8080:80/tcp`).
    pub ports: Vec<String>,
}

impl Published {
    /// The ports as specs.
    pub fn specs(&self) -> Vec<PortSpec> {
        self.ports.iter().filter_map(|p| p.parse().ok()).collect()
    }
}

/// Starts the publisher of sandbox `id` (folder `dir`, VMM `vmm_pid`) for `specs` and
/// waits until it has bound them all: `Err` (nothing left running) if one cannot be.
pub fn publish(
    dir: &Path,
    id: &str,
    vmm_pid: u32,
    specs: &[PortSpec],
    dial: &Dial,
) -> Result<Published, PortError> {
    let fail = |reason: String| PortError::Publisher {
        id: id.to_string(),
        reason,
    };
    let vmm_start = crate::process::start_time(vmm_pid)
        .ok_or_else(|| fail(format!("its VMM (pid {vmm_pid}) is not running")))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG))
        .map_err(|e| fail(format!("cannot open {}: {e}", dir.join(LOG).display())))?;
    let bin = crate::paths::publish_binary();
    let mut cmd = Command::new(&bin);
    cmd.arg("--dir")
        .arg(dir)
        .args(["--id", id])
        .args(["--vmm-pid", &vmm_pid.to_string()])
        .args(["--vmm-start", &vmm_start.to_string()]);
    match dial {
        Dial::Agent(a) => cmd.arg("--agent").arg(&a.uds),
        Dial::Netns { netns, guest } => cmd
            .arg("--netns")
            .arg(netns)
            .args(["--guest", &guest.to_string()]),
    };
    cmd.arg("--")
        .args(specs.iter().map(|s| s.to_string()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    crate::process::in_own_session(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start {}: {e}", bin.display())))?;
    let pid = child.id();
    let mut line = String::new();
    let read = match child.stdout.take() {
        Some(out) => BufReader::new(out).read_line(&mut line),
        None => Ok(0),
    };
    let answer = line.trim_end();
    if let Some(ports) = answer.strip_prefix("OK") {
        let start = crate::process::start_time(pid).unwrap_or(0);
        let p = Published {
            pid,
            start,
            ports: ports.split_whitespace().map(str::to_string).collect(),
        };
        let text = serde_json::to_vec_pretty(&p).expect("records serialise");
        if let Err(e) = write_record(dir, &text) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "cannot write {}: {e}",
                dir.join(RECORD).display()
            )));
        }
        return Ok(p);
    }
    // It failed (or said nothing): it exits, or is made to.
    let _ = child.kill();
    let _ = child.wait();
    if let Some(addr) = answer.strip_prefix("ERR in_use ") {
        if let Ok(addr) = addr.parse() {
            return Err(PortError::InUse { addr });
        }
    }
    if let Some(msg) = answer.strip_prefix("ERR other ") {
        return Err(fail(msg.to_string()));
    }
    let tail = std::fs::read_to_string(dir.join(LOG)).unwrap_or_default();
    let tail = tail.lines().last().unwrap_or("no log line").to_string();
    Err(fail(match read {
        Err(e) => format!("no answer from {}: {e}", bin.display()),
        Ok(_) => format!("{} exited without an answer: {tail}", bin.display()),
    }))
}

fn write_record(dir: &Path, text: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{RECORD}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(RECORD))
}

/// The recorded publisher of `dir`, if its record is there (running or not).
pub fn record(dir: &Path) -> Option<Published> {
    let text = std::fs::read(dir.join(RECORD)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The publisher of `dir` if it runs.
pub fn running(dir: &Path) -> Option<Published> {
    record(dir).filter(|p| crate::process::runs_as(p.pid, p.start))
}

/// Publisher processes serving the folder `dir` (by their `--dir` argument): the
/// recorded one, and any whose record was lost (a creator killed before writing it).
fn publishers_of(dir: &Path) -> Vec<u32> {
    let want = dir.as_os_str().as_encoded_bytes();
    let mut pids: Vec<u32> = crate::process::find_by_arg(|a| a == want)
        .into_iter()
        .filter(|&p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| c.split(|&b| b == 0).any(|a| a == b"--dir") && is_publisher(&c))
                .unwrap_or(false)
        })
        .collect();
    if let Some(p) = running(dir) {
        if !pids.contains(&p.pid) {
            pids.push(p.pid);
        }
    }
    pids
}

fn is_publisher(cmdline: &[u8]) -> bool {
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or(&[]);
    argv0.ends_with(b"kiln-publish")
}

/// Stops the publisher of `dir` (if any) and removes its record; whether one ran. Its
/// listeners are closed when it returns.
pub fn unpublish(dir: &Path) -> bool {
    let pids = publishers_of(dir);
    for &p in &pids {
        if let Ok(p) = i32::try_from(p) {
            // SAFETY: kill has no memory effects; the pid was checked to be a publisher.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for &p in &pids {
        // Until its last thread is gone (only then are its sockets closed).
        let alive = |p| crate::process::is_running(p) || crate::process::is_exiting(p);
        while alive(p) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = crate::process::reap_if_our_zombie(p);
    }
    let _ = std::fs::remove_file(dir.join(RECORD));
    !pids.is_empty()
}

/// What `kiln-publish` is told.
pub struct PublisherArgs {
    pub dir: PathBuf,
    pub id: String,
    pub vmm_pid: u32,
    pub vmm_start: u64,
    pub dial: Dial,
    pub specs: Vec<PortSpec>,
}

impl PublisherArgs {
    /// Parses `kiln-publish`'s arguments (see [`publish`] for how they are written).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<PublisherArgs, String> {
        let mut it = args.into_iter();
        let (mut dir, mut id, mut pid, mut start) = (None, None, None, None);
        let (mut agent, mut netns, mut guest) = (None, None, None);
        let mut specs = Vec::new();
        while let Some(a) = it.next() {
            let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
            match a.as_str() {
                "--dir" => dir = Some(PathBuf::from(val()?)),
                "--id" => id = Some(val()?),
                "--vmm-pid" => pid = Some(val()?.parse().map_err(|e| format!("--vmm-pid: {e}"))?),
                "--vmm-start" => {
                    start = Some(val()?.parse().map_err(|e| format!("--vmm-start: {e}"))?)
                }
                "--agent" => agent = Some(PathBuf::from(val()?)),
                "--netns" => netns = Some(PathBuf::from(val()?)),
                "--guest" => guest = Some(val()?.parse().map_err(|e| format!("--guest: {e}"))?),
                "--" => {
                    for s in it.by_ref() {
                        specs.push(s.parse().map_err(|e: PortError| e.to_string())?);
                    }
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        let id: String = id.ok_or("--id is required")?;
        let dial = match (agent, netns, guest) {
            (Some(uds), None, None) => Dial::Agent(AgentAddr::new(uds, &id)),
            (None, Some(netns), Some(guest)) => Dial::Netns { netns, guest },
            _ => return Err("give --agent UDS, or --netns PATH --guest ADDR".into()),
        };
        if specs.is_empty() {
            return Err("no ports given after --".into());
        }
        Ok(PublisherArgs {
            dir: dir.ok_or("--dir is required")?,
            id,
            vmm_pid: pid.ok_or("--vmm-pid is required")?,
            vmm_start: start.ok_or("--vmm-start is required")?,
            dial,
            specs,
        })
    }
}

/// The body of `kiln-publish`: binds, answers on stdout, then serves until the VMM
/// exits (or it is killed). Returns the exit status when it could not start.
pub fn run_publisher(a: PublisherArgs) -> i32 {
    let answer = |line: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let vmm = match crate::process::pidfd_of(a.vmm_pid, a.vmm_start) {
        Ok(fd) => fd,
        Err(e) => {
            answer(&format!("ERR other its VMM (pid {}): {e}", a.vmm_pid));
            return 1;
        }
    };
    let fwd = match Forwarder::bind(&a.specs, a.dial) {
        Ok(f) => f,
        Err(PortError::InUse { addr }) => {
            answer(&format!("ERR in_use {addr}"));
            return 1;
        }
        Err(e) => {
            answer(&format!("ERR other {e}"));
            return 1;
        }
    };
    let bound: Vec<String> = fwd.bound().iter().map(|s| s.to_string()).collect();
    answer(&format!("OK {}", bound.join(" ")));
    // Nobody reads stdout any more.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto our own stdout fd.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1) };
    }
    let id = a.id.clone();
    let spawned = std::thread::Builder::new()
        .name("vmm-watch".into())
        .spawn(move || {
            crate::process::wait_pidfd(&vmm);
            eprintln!("kiln-publish {id}: the VMM exited; closing the listeners");
            std::process::exit(0);
        });
    if let Err(e) = spawned {
        eprintln!("kiln-publish {}: cannot watch the VMM: {e}", a.id);
        return 1;
    }
    let id = a.id.clone();
    fwd.serve(Arc::new(move |msg| eprintln!("kiln-publish {id}: {msg}")));
    0
}
