//! Named snapshots: `<state>/.snapshots/<name>/` holds the VMM's snapshot (`state.json`,
//! `memory.bin`, `disk-scratch.img`) and `snapshot.json`, what kiln needs to make a
//! sandbox of it again (image, size, default timeout, where it came from).
//!
//! A snapshot being written (taken or imported) lives in `<state>/.snapshots/.partial.
//! <pid>.<start>.<name>/`, named after the process writing it, and is renamed to
//! `<name>` only once complete and sealed. So a snapshot under its name is always whole;
//! a partial folder whose writer is gone is removed whenever the catalog is synced
//! (`kiln snapshot ls`, reconcile). Names cannot hold a '.', so the two never collide.
//!
//! Integrity: a snapshot is sealed (SHA-256 of memory and disk, with a stamp of each
//! file) right after it is taken. A restore trusts stamped, unchanged files; `import`
//! and `verify` hash everything. A snapshot from another format version, with a missing,
//! truncated or altered file is refused before any VM runs.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_vmm::snapshot::format::{SnapshotState, MEMORY_FILE, STATE_FILE};
pub use kiln_vmm::snapshot::{Trust, Verified};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::state_dir::{check_id, state_dir, store};
use crate::store::SnapshotRow;

const META_FILE: &str = "snapshot.json";

/// What kiln records beside the VMM's snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub name: String,
    /// The sandbox it was taken of.
    pub source: String,
    pub image: String,
    pub cpus: u8,
    pub memory_mib: u64,
    #[serde(default)]
    pub exec_timeout_ms: Option<u64>,
    /// The CPU quota of the sandbox's cgroup; restores and forks keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<f64>,
    /// The sandbox's network: restores and forks get a network of their own like it.
    #[serde(default)]
    pub net: crate::net::NetMode,
    /// Seconds since the epoch.
    pub created: u64,
}

/// A snapshot on disk.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub dir: PathBuf,
}

/// Where named snapshots live.
pub fn snapshots_dir() -> Result<PathBuf> {
    let d = state_dir()?.join(".snapshots");
    fs::create_dir_all(&d).map_err(Error::host_io("cannot create", &d))?;
    Ok(d)
}

/// Brings the state store's catalog of snapshots in line with the snapshot directories
/// (see [`crate::store::catalog`]); returns the rows.
pub fn sync_catalog() -> Result<Vec<SnapshotRow>> {
    sweep_partials()?;
    let on_disk: Vec<SnapshotRow> = Snapshot::list_on_disk()?
        .iter()
        .map(Snapshot::row)
        .collect();
    Ok(store()?.sync_snapshots(&on_disk)?)
}

const PARTIAL: &str = ".partial.";

/// The temporary name of snapshot `name` written by this process.
fn partial_name(name: &str) -> String {
    let (pid, start) = crate::process::me();
    format!("{PARTIAL}{pid}.{start}.{name}")
}

/// The writer (pid, start time) a partial folder's name records.
fn partial_owner(file_name: &str) -> Option<(u32, u64)> {
    let rest = file_name.strip_prefix(PARTIAL)?;
    let mut parts = rest.splitn(3, '.');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    parts.next().filter(|n| check_id(n).is_ok())?;
    Some((pid, start))
}

/// Removes the partial snapshots whose writer is gone (killed midway); returns their
/// folders.
pub fn sweep_partials() -> Result<Vec<PathBuf>> {
    let root = snapshots_dir()?;
    let mut out = Vec::new();
    for e in fs::read_dir(&root)
        .map_err(Error::host_io("cannot list", &root))?
        .flatten()
    {
        let name = e.file_name();
        let Some((pid, start)) = name.to_str().and_then(partial_owner) else {
            continue;
        };
        if crate::process::runs_as(pid, start) {
            continue;
        }
        let p = e.path();
        fs::remove_dir_all(&p).map_err(Error::host_io("cannot remove", &p))?;
        tracing::warn!(
            "removed {}: a snapshot whose writer (pid {pid}) is gone",
            p.display()
        );
        out.push(p);
    }
    Ok(out)
}

/// Apparent size of the regular files directly in `dir`.
fn dir_size(dir: &Path) -> Option<u64> {
    let entries = fs::read_dir(dir).ok()?;
    let sizes = entries.flatten().filter_map(|e| e.metadata().ok());
    Some(sizes.filter(|m| m.is_file()).map(|m| m.len()).sum())
}

/// rename(2) that fails with `EEXIST` instead of replacing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths; renameat2 only reads them.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub(crate) fn bad(e: impl std::fmt::Display) -> Error {
    Error::BadSnapshot(e.to_string())
}

impl Snapshot {
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }
    pub fn memory_path(&self) -> PathBuf {
        self.dir.join(MEMORY_FILE)
    }
    /// The recorded userfaultfd working set (pages a restore touched before its first
    /// command finished), once one was recorded.
    pub fn working_set_path(&self) -> PathBuf {
        self.dir.join("working-set")
    }
    pub fn name(&self) -> &str {
        &self.meta.name
    }

    /// Its row in the state store's catalog.
    pub fn row(&self) -> SnapshotRow {
        SnapshotRow {
            name: self.meta.name.clone(),
            source: Some(self.meta.source.clone()),
            dir: self.dir.clone(),
            created_ms: (self.meta.created as i64).saturating_mul(1000),
            size_bytes: dir_size(&self.dir),
        }
    }

    /// Records this complete snapshot in the state store's catalog.
    pub(crate) fn record(&self) -> Result<()> {
        Ok(store()?.record_snapshot(&self.row())?)
    }

    /// A snapshot by name (or by path to a snapshot directory, if it has a '/').
    pub fn get(name: &str) -> Result<Snapshot> {
        if name.contains('/') {
            return Snapshot::open(Path::new(name), name);
        }
        check_id(name).map_err(|_| Error::SnapshotNotFound { name: name.into() })?;
        Snapshot::open(&snapshots_dir()?.join(name), name)
    }

    fn open(dir: &Path, name: &str) -> Result<Snapshot> {
        let dir = dir.to_path_buf();
        let text = match fs::read(dir.join(META_FILE)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::SnapshotNotFound { name: name.into() })
            }
            Err(e) => return Err(Error::host_io("cannot read", dir.join(META_FILE))(e)),
        };
        let meta: SnapshotMeta = serde_json::from_slice(&text)
            .map_err(|e| bad(format!("{}: corrupt snapshot record: {e}", dir.display())))?;
        Ok(Snapshot { meta, dir })
    }

    /// Every snapshot, by name (the state store's catalog is brought in line first).
    pub fn list() -> Result<Vec<Snapshot>> {
        sync_catalog()?;
        Snapshot::list_on_disk()
    }

    /// Every complete snapshot directory, by name.
    pub(crate) fn list_on_disk() -> Result<Vec<Snapshot>> {
        let root = snapshots_dir()?;
        let mut out = Vec::new();
        for e in fs::read_dir(&root)
            .map_err(Error::host_io("cannot list", &root))?
            .flatten()
        {
            if let Some(name) = e.file_name().to_str() {
                if let Ok(s) = Snapshot::get(name) {
                    out.push(s);
                }
            }
        }
        out.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        Ok(out)
    }

    /// Makes the (empty) partial folder a new snapshot `name` is written into; fails
    /// with `SnapshotExists` if the name is taken. [`Snapshot::commit`] puts it in place.
    pub(crate) fn reserve(name: &str) -> Result<PathBuf> {
        check_id(name).map_err(|_| {
            Error::InvalidInput(format!(
                "snapshot name {name:?}: use 1-40 letters, digits or '-'"
            ))
        })?;
        let root = snapshots_dir()?;
        if fs::symlink_metadata(root.join(name)).is_ok() {
            return Err(Error::SnapshotExists { name: name.into() });
        }
        let dir = root.join(partial_name(name));
        match fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            // Another thread of this process writes the same name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::SnapshotExists { name: name.into() })
            }
            Err(e) => Err(Error::host_io("cannot create", &dir)(e)),
        }
    }

    /// Renames the complete partial folder `dir` to `<snapshots>/<name>`, never over an
    /// existing one (`SnapshotExists`: another process took the name meanwhile).
    pub(crate) fn commit(dir: &Path, name: &str) -> Result<PathBuf> {
        let dest = snapshots_dir()?.join(name);
        rename_noreplace(dir, &dest).map_err(|e| match e.raw_os_error() {
            Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => {
                Error::SnapshotExists { name: name.into() }
            }
            _ => Error::host_io("cannot rename into place", dir)(e),
        })?;
        Ok(dest)
    }

    pub(crate) fn write_meta(dir: &Path, meta: &SnapshotMeta) -> Result<()> {
        let text = serde_json::to_vec_pretty(meta).expect("metadata serialises");
        let p = dir.join(META_FILE);
        fs::write(&p, text).map_err(Error::host_io("cannot write", &p))
    }

    /// Checks the snapshot's content (see the module docs): `Trust::Stamp` is the fast
    /// path restores use, `Trust::Rehash` hashes every file.
    pub fn verify(&self, trust: Trust) -> Result<(SnapshotState, Verified)> {
        kiln_vmm::snapshot::verify(&self.state_path(), trust).map_err(bad)
    }

    /// Copies a snapshot directory (e.g. from another machine) into the store under
    /// `name`, verifying every file's digest first.
    pub fn import(src: &Path, name: &str) -> Result<Snapshot> {
        let src_snap = Snapshot::open(src, &src.display().to_string())?;
        kiln_vmm::snapshot::verify(&src_snap.state_path(), Trust::Rehash).map_err(bad)?;
        let dir = Snapshot::reserve(name)?;
        let copy = || -> Result<PathBuf> {
            for e in fs::read_dir(src)
                .map_err(Error::host_io("cannot list", src))?
                .flatten()
            {
                let from = e.path();
                if from.is_file() && e.file_name() != "working-set" {
                    kiln_vmm::snapshot::disk::sparse_copy(&from, &dir.join(e.file_name()))
                        .map_err(Error::host_io("cannot copy", &from))?;
                }
            }
            let mut meta = src_snap.meta.clone();
            meta.name = name.into();
            Snapshot::write_meta(&dir, &meta)?;
            // The copies have new stamps: hash once more so restores take the fast path.
            kiln_vmm::snapshot::verify(&dir.join(STATE_FILE), Trust::Rehash).map_err(bad)?;
            Snapshot::commit(&dir, name)
        };
        let made = copy().and_then(|_| {
            let s = Snapshot::get(name)?;
            s.record()?;
            Ok(s)
        });
        if made.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        made
    }

    /// Removes snapshot `name`: a complete one as [`Snapshot::remove`] does, and also a
    /// folder under that name that is not a complete snapshot (left by a kiln before
    /// partial folders, or damaged), with its catalog row if it has one.
    pub fn remove_named(name: &str) -> Result<()> {
        match Snapshot::get(name) {
            Ok(s) => s.remove(),
            Err(Error::SnapshotNotFound { .. }) if !name.contains('/') => {
                let dir = snapshots_dir()?.join(name);
                let on_disk = fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
                let store = store()?;
                let forgot = store.get_snapshot(name).is_ok();
                if forgot {
                    store.forget_snapshot(name)?;
                }
                if on_disk {
                    fs::remove_dir_all(&dir).map_err(Error::host_io("cannot remove", &dir))?;
                }
                if on_disk || forgot {
                    Ok(())
                } else {
                    Err(Error::SnapshotNotFound { name: name.into() })
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Forgets the snapshot in the state store, then removes its directory.
    pub fn remove(self) -> Result<()> {
        store()?.forget_snapshot(&self.meta.name)?;
        fs::remove_dir_all(&self.dir).map_err(Error::host_io("cannot remove", &self.dir))
    }
}
