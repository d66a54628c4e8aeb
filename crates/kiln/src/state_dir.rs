//! The state directory: one folder per sandbox, so a sandbox created by one process is
//! found again by id from another, and the state store (`kiln.db`) opened there.
//!
//! `<state>/<id>/` holds `sandbox.json` (the record), `vmm.log` and `vm/`, the VMM's
//! folder: `api.sock` (its API), `v.sock` (its vsock socket), `console.log`,
//! `metrics.json`, `boot-error.json` and, for disk images, the sandbox's writable layer
//! `scratch.ext4`. A jailed VMM also has `jail/` (its root). Removing the folder
//! removes every trace.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::paths::{self, private::check_private_file, private::create_private_file};
use crate::store::Store;

pub use crate::paths::StateDirError;

/// The entries of a state directory that are kiln's own, not a sandbox's: the store
/// (`kiln.db` and its `-wal`/`-shm`), the store's disk reserve (`.reserve`), the
/// server's token and socket, and the snapshot store.
pub const STATE_FILES: [&str; 7] = [
    "kiln.db",
    "kiln.db-wal",
    "kiln.db-shm",
    crate::store::reserve::RESERVE_FILE,
    "token",
    "kiln.sock",
    ".snapshots",
];

/// Where sandboxes are kept: `$KILN_STATE_DIR`, else [`paths::default_state_dir`]
/// (`$XDG_RUNTIME_DIR/kiln`; for root `/run/kiln`; else `<tmp>/kiln-<uid>`). It is
/// created 0700, and refused ([`StateDirError`]) when another user owns it or may write
/// to it ([`paths::ensure_private_dir`]). It must not be on a filesystem that cannot
/// hold unix sockets (9p, some FUSE mounts).
pub fn state_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("KILN_STATE_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => paths::default_state_dir(),
    };
    paths::ensure_private_dir(&dir)?;
    Ok(dir)
}

/// The store of the current state directory (one connection per process and directory).
/// `kiln.db` is created 0600 (SQLite gives its `-wal` and `-shm` the same mode); a
/// database file another user owns or may write to is refused.
pub fn store() -> Result<Arc<Store>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Arc<Store>>>> = OnceLock::new();
    let path = state_dir()?.join("kiln.db");
    let mut open = OPEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(s) = open.get(&path) {
        return Ok(s.clone());
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        check_private_file("the state database", Path::new(&p), true)?;
    }
    create_private_file(&path).map_err(Error::host_io("cannot create", &path))?;
    let s = Arc::new(Store::open(&path)?);
    open.insert(path, s.clone());
    Ok(s)
}

/// What [`check_room`] keeps free beyond an operation's own files: logs, records, the
/// store's growth, and room to allocate the store's reserve again.
pub const ROOM_MARGIN: u64 = crate::store::reserve::RESERVE_BYTES;

/// Bytes free on the state directory's filesystem (`u64::MAX` if it cannot be told).
pub fn free_bytes() -> Result<u64> {
    Ok(crate::store::reserve::free_bytes(&state_dir()?).unwrap_or(u64::MAX))
}

/// Whether the state directory's filesystem is (nearly) full: less than the store's
/// reserve is free.
pub fn low_on_space() -> bool {
    free_bytes().is_ok_and(|f| f < crate::store::reserve::RESERVE_BYTES)
}

/// Refuses `what` early, before it creates anything, when the state directory's
/// filesystem has less than `needed` bytes plus [`ROOM_MARGIN`] free.
pub fn check_room(what: &str, needed: u64) -> Result<()> {
    let free = free_bytes()?;
    let want = needed.saturating_add(ROOM_MARGIN);
    if free >= want {
        return Ok(());
    }
    Err(Error::DiskFull {
        what: what.into(),
        path: state_dir()?,
        free_mib: free >> 20,
        needed_mib: Some(want.div_ceil(1 << 20)),
    })
}

/// `e` as [`Error::DiskFull`] for `what` if it is an ENOSPC, else unchanged.
pub fn disk_full_as(what: &str, e: Error) -> Error {
    if !e.is_disk_full() || matches!(e, Error::DiskFull { .. }) {
        return e;
    }
    match state_dir() {
        Ok(path) => Error::DiskFull {
            what: what.into(),
            free_mib: crate::store::reserve::free_bytes(&path).unwrap_or(0) >> 20,
            path,
            needed_mib: None,
        },
        Err(_) => e,
    }
}

/// The bytes a file really occupies (its allocated blocks; 0 if it is missing).
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).map(|m| m.blocks() * 512).unwrap_or(0)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What `sandbox.json` says about a sandbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub image: String,
    pub cpus: u8,
    pub memory_mib: u64,
    /// The `VmBackend` that runs it.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// The VMM's pid (0 until it is spawned; recorded right after the spawn).
    pub pid: u32,
    /// The VMM's start time (clock ticks after boot; 0: not recorded).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub vmm_start: u64,
    /// Seconds since the epoch.
    pub created: u64,
    /// Default per-command timeout.
    #[serde(default)]
    pub exec_timeout_ms: Option<u64>,
    /// The pid of the process that created it: while that process lives and the row
    /// says `creating`, the creation is in progress.
    #[serde(default)]
    pub creator: u32,
    /// The creator's start time (clock ticks after boot, `/proc/<pid>/stat`), so a
    /// reused pid is not taken for the creator (0: not recorded).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub creator_start: u64,
    /// Milliseconds from spawning the VMM to the agent answering (booted sandboxes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_ms: Option<u64>,
    /// The snapshot it was restored from (None: booted from its image, or forked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The sandbox it was forked from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Waiting in the warm pool of this snapshot (not yet handed out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The CPU quota of its cgroup (CPUs of time per second; `None`: no quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<f64>,
    /// Its network (records from before networks: none).
    #[serde(default)]
    pub net: crate::net::NetMode,
}

fn default_backend() -> String {
    "kiln".into()
}

impl Record {
    pub fn exec_timeout(&self) -> Option<Duration> {
        self.exec_timeout_ms.map(Duration::from_millis)
    }
}

/// The files of one sandbox.
#[derive(Debug, Clone)]
pub struct Dir {
    pub path: PathBuf,
}

impl Dir {
    pub fn of(state: &Path, id: &str) -> Dir {
        Dir {
            path: state.join(id),
        }
    }

    pub fn record(&self) -> PathBuf {
        self.path.join("sandbox.json")
    }
    /// The VMM's own folder: its sockets, console, metrics and disk layers. The only
    /// place a jailed VMM may write (it owns it then); kiln's records stay outside.
    pub fn vm(&self) -> PathBuf {
        self.path.join("vm")
    }
    pub fn api_sock(&self) -> PathBuf {
        self.vm().join("api.sock")
    }
    pub fn vsock(&self) -> PathBuf {
        self.vm().join("v.sock")
    }
    pub fn vmm_log(&self) -> PathBuf {
        self.path.join("vmm.log")
    }
    pub fn console_log(&self) -> PathBuf {
        self.vm().join("console.log")
    }
    /// Why the VM failed before its agent was ready (written by kiln-vmm).
    pub fn boot_error(&self) -> PathBuf {
        self.vm().join("boot-error.json")
    }
    /// The VMM's metrics (kiln-vmm: its latest JSON line; Firecracker: its lines).
    pub fn metrics(&self) -> PathBuf {
        self.vm().join("metrics.json")
    }
    pub fn scratch(&self) -> PathBuf {
        self.vm().join("scratch.ext4")
    }
    /// The working set a userfaultfd restore records (kiln-vmm writes it).
    pub fn working_set_rec(&self) -> PathBuf {
        self.vm().join("working-set.rec")
    }
    /// The backing file of drive `id` (the writable layer is `scratch`).
    pub fn disk(&self, id: &str) -> PathBuf {
        if id == "scratch" {
            self.scratch()
        } else {
            self.vm().join(format!("disk-{id}.img"))
        }
    }

    /// The sandbox's cgroup (see [`crate::cgroup`]): `<root>/state-<key>/<id>` for this
    /// folder's state directory and id. It exists only while cgroups are in use.
    pub fn group(&self) -> crate::cgroup::Group {
        let state = self.path.parent().unwrap_or(Path::new("/"));
        let id = self.path.file_name().unwrap_or_default().to_string_lossy();
        crate::cgroup::Group::of(state, &id)
    }

    /// Creates the folder (mode 0700); fails with `AlreadyExists` if the id is taken.
    pub fn create(&self, id: &str) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        match fs::DirBuilder::new().mode(0o700).create(&self.path) {
            Ok(()) => fs::DirBuilder::new()
                .mode(0o700)
                .create(self.vm())
                .map_err(Error::host_io("cannot create", self.vm())),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::AlreadyExists { id: id.into() })
            }
            Err(e) => Err(Error::host_io("cannot create", &self.path)(e)),
        }
    }

    pub fn load(&self, id: &str) -> Result<Record> {
        let text = match fs::read(self.record()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound { id: id.into() })
            }
            Err(e) => return Err(Error::host_io("cannot read", self.record())(e)),
        };
        serde_json::from_slice(&text).map_err(|e| {
            Error::InvalidInput(format!("{}: corrupt record: {e}", self.record().display()))
        })
    }

    /// Writes the record atomically (temp file + rename).
    pub fn save(&self, r: &Record) -> Result<()> {
        let tmp = self.path.join(".sandbox.json.tmp");
        let text = serde_json::to_vec_pretty(r).expect("records serialise");
        fs::write(&tmp, text).map_err(Error::host_io("cannot write", &tmp))?;
        fs::rename(&tmp, self.record()).map_err(Error::host_io("cannot write", self.record()))
    }

    /// Removes the folder and everything in it.
    pub fn remove(&self) -> Result<()> {
        match fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::host_io("cannot remove", &self.path)(e))
            }
            _ => Ok(()),
        }
    }
}

/// Ids of all sandboxes in the state directory (folders with a record), sorted.
pub fn list_ids(state: &Path) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let rd = match fs::read_dir(state) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
        Err(e) => return Err(Error::host_io("cannot list", state)(e)),
    };
    for e in rd.flatten() {
        if e.path().join("sandbox.json").is_file() {
            if let Some(name) = e.file_name().to_str() {
                ids.push(name.to_string());
            }
        }
    }
    ids.sort();
    Ok(ids)
}

/// A fresh id: `sb-` and 8 hex digits from the kernel's RNG.
pub fn new_id() -> String {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        b = (t.subsec_nanos() ^ std::process::id()).to_le_bytes();
    }
    format!("sb-{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3])
}

/// Checks a caller-chosen id: 1-40 of `[A-Za-z0-9_-]` (it becomes a folder name).
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 40
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "sandbox id {id:?}: use 1-40 letters, digits or '-' (it is also the guest's hostname)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_fresh_ids_pass() {
        assert!(check_id(&new_id()).is_ok());
        assert_ne!(new_id(), new_id());
        for bad in ["", "../x", "a/b", "a b", &"x".repeat(41)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn records_round_trip_and_missing_is_not_found() {
        let tmp = std::env::temp_dir().join(format!("kiln-state-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).unwrap();
        let d = Dir::of(&tmp, "sb-1");
        assert!(matches!(d.load("sb-1"), Err(Error::NotFound { .. })));
        d.create("sb-1").unwrap();
        assert!(matches!(d.create("sb-1"), Err(Error::AlreadyExists { .. })));
        let r = Record {
            id: "sb-1".into(),
            image: "minimal".into(),
            cpus: 1,
            memory_mib: 128,
            pid: 42,
            created: 1,
            exec_timeout_ms: Some(5),
            ..Default::default()
        };
        d.save(&r).unwrap();
        assert_eq!(d.load("sb-1").unwrap().pid, 42);
        assert_eq!(list_ids(&tmp).unwrap(), vec!["sb-1".to_string()]);
        d.remove().unwrap();
        assert!(list_ids(&tmp).unwrap().is_empty());
        fs::remove_dir_all(&tmp).unwrap();
    }
}
