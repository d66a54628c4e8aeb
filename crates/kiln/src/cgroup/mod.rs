//! cgroup v2 groups for sandbox VMMs: one group per sandbox, with CPU, memory and pids
//! limits from its settings, which the VMM joins before it execs.
//!
//! A group lives at `<root>/state-<key>/<sandbox id>`, where `<root>` is
//! `$KILN_CGROUP_ROOT` (default `/sys/fs/cgroup/kiln`) and `<key>` the first 12 hex
//! digits of the SHA-256 of the canonical state directory path, so two state
//! directories on one host never share a group. The controllers (cpu, memory, pids, io,
//! where the hierarchy has them) are enabled in `cgroup.subtree_control` at each level
//! above the leaf; only leaves hold processes.
//!
//! This module knows nothing of sandboxes or processes beyond a group's path: a jailer
//! uses it the same way (create the group with [`Group::create`], open
//! [`Group::procs`] before forking, write to it with [`join_in_child`] after the fork).
//!
//! `KILN_CGROUPS`: `auto` (default: use cgroups where the hierarchy is cgroup v2 and
//! writable, else say so once on stderr and run without), `required` (refuse to start a
//! VMM without its group), `off` (never).

use std::fs;
use std::io::{self, Write};
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

mod limits;

pub use limits::{
    check_quota, file_allowance_mib, on_memory_fs, Limits, PERIOD_US, PIDS_BASE, VMM_OVERHEAD_MIB,
};

/// Where the groups live without `$KILN_CGROUP_ROOT`.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup/kiln";
/// The controllers a sandbox's group uses, where the hierarchy offers them.
pub const CONTROLLERS: [&str; 4] = ["cpu", "memory", "pids", "io"];

/// How long [`Group::remove`] waits for a killed group to empty.
const EMPTY_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("KILN_CGROUPS={0:?}: use off, auto or required")]
    BadMode(String),
    #[error("cpu quota {quota}: {why}")]
    BadQuota { quota: String, why: String },
    #[error(
        "cgroup v2 is required (KILN_CGROUPS=required) but {0}; mount cgroup2 at \
         /sys/fs/cgroup, set KILN_CGROUP_ROOT to a writable cgroup v2 folder, or set \
         KILN_CGROUPS=auto"
    )]
    Unavailable(String),
    #[error("cgroup {}: cannot {what}: {cause}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
}

type Result<T> = std::result::Result<T, CgroupError>;

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |cause| CgroupError::Io { what, path, cause }
}

/// `KILN_CGROUPS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    Auto,
    Required,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode> {
        match s {
            "off" => Ok(Mode::Off),
            "" | "auto" => Ok(Mode::Auto),
            "required" => Ok(Mode::Required),
            other => Err(CgroupError::BadMode(other.into())),
        }
    }

    /// The mode `$KILN_CGROUPS` asks for.
    pub fn from_env() -> Result<Mode> {
        Mode::parse(&std::env::var("KILN_CGROUPS").unwrap_or_default())
    }
}

/// `$KILN_CGROUP_ROOT`, else [`DEFAULT_ROOT`].
pub fn root() -> PathBuf {
    match std::env::var_os("KILN_CGROUP_ROOT").filter(|r| !r.is_empty()) {
        Some(r) => PathBuf::from(r),
        None => PathBuf::from(DEFAULT_ROOT),
    }
}

/// `state-<first 12 hex digits of sha256(path)>`: the name of a state directory's
/// group (`path` is canonical).
pub fn state_key(canonical_state_dir: &Path) -> String {
    let digest = Sha256::digest(canonical_state_dir.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("state-{hex}")
}

/// The group that holds the sandboxes of `state_dir` under `root`.
pub fn state_group(root: &Path, state_dir: &Path) -> PathBuf {
    let canonical = fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    root.join(state_key(&canonical))
}

/// A cgroup v2 group (a folder of the cgroup2 filesystem).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    path: PathBuf,
}

/// What [`Group::stats`] reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub path: PathBuf,
    /// `cpu.max` as written (`50000 100000`, `max 100000`).
    pub cpu_max: Option<String>,
    pub memory_max: Option<u64>,
    pub memory_current: Option<u64>,
    pub memory_peak: Option<u64>,
    /// `cpu.stat`'s `usage_usec`.
    pub cpu_usage_usec: Option<u64>,
    pub pids_current: Option<u64>,
    pub pids_max: Option<u64>,
    /// `memory.events`' `oom_kill`.
    pub oom_kills: u64,
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// Says once per process why sandboxes run without limits.
fn warn_once(why: &str) {
    if !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "kiln: {why}: sandboxes run without cgroup CPU, memory and pids limits \
             (KILN_CGROUPS=required refuses instead, KILN_CGROUPS=off silences this)"
        );
    }
}

/// Why cgroups cannot be had under `root`, if they cannot: its parent must be a cgroup v2
/// folder (`cgroup.controllers`), and it must be writable.
fn unavailable(root: &Path) -> Option<String> {
    let parent = root.parent().unwrap_or(Path::new("/"));
    if !parent.join("cgroup.controllers").is_file() {
        return Some(format!(
            "cgroup v2 is not available (no {})",
            parent.join("cgroup.controllers").display()
        ));
    }
    let target = if root.exists() { root } else { parent };
    let c = std::ffi::CString::new(target.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: access only reads the NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        return Some(format!(
            "the cgroup folder {} is not writable",
            target.display()
        ));
    }
    None
}

fn read_trimmed(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

fn write_file(p: &Path, what: &'static str, value: &str) -> Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(p)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(io_err(what, p))
}

/// Creates `dir` (if needed) and enables in its `cgroup.subtree_control` those of
/// [`CONTROLLERS`] its own `cgroup.controllers` lists.
fn delegate(dir: &Path) -> Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(io_err("create", dir)(e)),
        _ => {}
    }
    let have = read_trimmed(&dir.join("cgroup.controllers")).unwrap_or_default();
    let on = read_trimmed(&dir.join("cgroup.subtree_control")).unwrap_or_default();
    let want: Vec<String> = CONTROLLERS
        .iter()
        .filter(|c| have.split(' ').any(|h| h == **c) && !on.split(' ').any(|h| h == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if want.is_empty() {
        return Ok(());
    }
    write_file(
        &dir.join("cgroup.subtree_control"),
        "enable controllers in",
        &want.join(" "),
    )
}

impl Group {
    /// The group at `path` (nothing is checked or created).
    pub fn at(path: impl Into<PathBuf>) -> Group {
        Group { path: path.into() }
    }

    /// The group of sandbox `id` of `state_dir` under [`root`].
    pub fn of(state_dir: &Path, id: &str) -> Group {
        Group::at(state_group(&root(), state_dir).join(id))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists(&self) -> bool {
        self.path.join("cgroup.procs").is_file()
    }

    /// Creates sandbox `id`'s group with `limits`, as [`Mode::from_env`] says: `None`
    /// when cgroups are off, or unavailable in `auto` mode (said once on stderr). A group
    /// left by an earlier sandbox of the same id is emptied and replaced.
    pub fn create(state_dir: &Path, id: &str, limits: &Limits) -> Result<Option<Group>> {
        let mode = Mode::from_env()?;
        if mode == Mode::Off {
            return Ok(None);
        }
        let root = root();
        let why = match unavailable(&root) {
            None => match Group::create_at(&root, state_dir, id, limits) {
                Ok(g) => return Ok(Some(g)),
                Err(e) => e.to_string(),
            },
            Some(why) => why,
        };
        if mode == Mode::Required {
            return Err(CgroupError::Unavailable(why));
        }
        warn_once(&why);
        Ok(None)
    }

    fn create_at(root: &Path, state_dir: &Path, id: &str, limits: &Limits) -> Result<Group> {
        let parent = state_group(root, state_dir);
        let group = Group::at(parent.join(id));
        if group.exists() {
            group.remove()?;
        }
        // Another process may remove an empty state group between our steps (its last
        // sandbox went): start again.
        let mut tries = 0;
        loop {
            let made = root
                .parent()
                .map_or(Ok(()), delegate)
                .and_then(|()| delegate(root))
                .and_then(|()| delegate(&parent))
                .and_then(|()| fs::create_dir(&group.path).map_err(io_err("create", &group.path)));
            match made {
                Err(CgroupError::Io { cause, .. })
                    if cause.kind() == io::ErrorKind::NotFound && tries < 5 =>
                {
                    tries += 1;
                }
                Err(e) => return Err(e),
                Ok(()) => break,
            }
        }
        if let Err(e) = group.set_limits(limits) {
            let _ = group.remove();
            return Err(e);
        }
        Ok(group)
    }

    /// Writes `limits` into the group's files (those its controllers provide).
    fn set_limits(&self, l: &Limits) -> Result<()> {
        let mib = 1024 * 1024;
        let files = [
            ("cpu.max", l.cpu_max()),
            ("memory.max", (l.memory_max_mib() * mib).to_string()),
            ("memory.swap.max", "0".to_string()),
            ("memory.oom.group", "1".to_string()),
            ("pids.max", l.pids_max().to_string()),
        ];
        for (name, value) in files {
            let p = self.path.join(name);
            if p.exists() {
                write_file(&p, "set a limit in", &value)?;
            } else if name == "memory.max" || (name == "cpu.max" && l.cpu_quota.is_some()) {
                return Err(CgroupError::Unavailable(format!(
                    "{} has no {name} (is the {} controller enabled above it?)",
                    self.path.display(),
                    name.split('.').next().unwrap_or(name)
                )));
            }
        }
        Ok(())
    }

    /// The group's `cgroup.procs`, opened for writing (close-on-exec), for a child to
    /// join with [`join_in_child`] between fork and exec.
    pub fn procs(&self) -> Result<OwnedFd> {
        let p = self.path.join("cgroup.procs");
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .map_err(io_err("open", &p))?;
        Ok(OwnedFd::from(f))
    }

    /// A number from one of the group's files (`memory.current`), or `key`'s value in a
    /// flat-keyed one (`cpu.stat`'s `usage_usec`).
    fn number(&self, file: &str, key: Option<&str>) -> Option<u64> {
        let text = fs::read_to_string(self.path.join(file)).ok()?;
        match key {
            None => text.trim().parse().ok(),
            Some(k) => text.lines().find_map(|l| {
                let (name, v) = l.split_once(' ')?;
                (name == k).then(|| v.trim().parse().ok())?
            }),
        }
    }

    /// How many times the kernel's OOM killer killed a task in the group.
    pub fn oom_kills(&self) -> u64 {
        self.number("memory.events", Some("oom_kill")).unwrap_or(0)
    }

    /// Why the VMM died, if the OOM killer killed in the group: "the sandbox's VMM was
    /// killed for exceeding its memory limit (memory.max N MiB)".
    pub fn oom_reason(&self) -> Option<String> {
        if self.oom_kills() == 0 {
            return None;
        }
        let max = self
            .memory_max()
            .map_or("max".to_string(), |b| format!("{} MiB", b >> 20));
        Some(format!(
            "the sandbox's VMM was killed for exceeding its memory limit (memory.max {max})"
        ))
    }

    /// `memory.max` in bytes (`None`: no limit or no group).
    pub fn memory_max(&self) -> Option<u64> {
        self.number("memory.max", None)
    }

    /// What the group uses and is allowed now; `None` when it does not exist.
    pub fn stats(&self) -> Option<Stats> {
        if !self.exists() {
            return None;
        }
        Some(Stats {
            path: self.path.clone(),
            cpu_max: read_trimmed(&self.path.join("cpu.max")),
            memory_max: self.memory_max(),
            memory_current: self.number("memory.current", None),
            memory_peak: self.number("memory.peak", None),
            cpu_usage_usec: self.number("cpu.stat", Some("usage_usec")),
            pids_current: self.number("pids.current", None),
            pids_max: self.number("pids.max", None),
            oom_kills: self.oom_kills(),
        })
    }

    fn populated(&self) -> bool {
        self.number("cgroup.events", Some("populated"))
            .is_some_and(|n| n != 0)
    }

    /// Kills whatever still runs in the group (`cgroup.kill`, else SIGKILL to each of
    /// `cgroup.procs`), waits until it is empty and removes it, then its state group if
    /// that is empty now. A group that does not exist is not an error.
    pub fn remove(&self) -> Result<()> {
        if !self.path.exists() {
            return Ok(());
        }
        if self.populated() {
            let kill = self.path.join("cgroup.kill");
            if write_file(&kill, "kill", "1").is_err() {
                let procs = fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill has no memory effects; the pid is in the group.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let deadline = Instant::now() + EMPTY_WAIT;
        loop {
            match fs::remove_dir(&self.path) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(io_err("remove", &self.path)(e)),
            }
        }
        if let Some(parent) = self.path.parent() {
            // Fails while the state group holds other sandboxes: that is fine.
            let _ = fs::remove_dir(parent);
        }
        Ok(())
    }
}

/// The sandbox groups of `state_dir` under [`root`], by id (nothing if there are none).
pub fn groups_of(state_dir: &Path) -> Vec<(String, Group)> {
    let parent = state_group(&root(), state_dir);
    let Ok(rd) = fs::read_dir(&parent) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.path().join("cgroup.procs").is_file())
        .filter_map(|e| Some((e.file_name().to_str()?.to_string(), Group::at(e.path()))))
        .collect()
}

/// Moves the calling process into the group whose `cgroup.procs` is `fd` (writes `0`,
/// "this process"). Only async-signal-safe calls: for `pre_exec`, between fork and exec,
/// so the VMM never runs a guest instruction outside its group.
pub fn join_in_child(fd: RawFd) -> io::Result<()> {
    // SAFETY: write from a static buffer to a descriptor we own.
    let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    if n == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests;
