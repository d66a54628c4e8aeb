//! Snapshot integrity. Sealing records the SHA-256 digest of the memory file and of
//! every disk copy, with a stamp of each file's identity (device, inode, size, mtime,
//! ctime). Verifying trusts a file whose stamp is unchanged (the fast path restores
//! use); any other file is hashed again and must match its digest. Importing a snapshot
//! from elsewhere, or asking for it, always hashes.

use std::path::Path;

use super::format::{snap_err, SnapFile, SnapshotError, SnapshotState};
use crate::vstate::mem_file::{digest, stamp};

/// How far to trust stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Unchanged stamped files are not hashed again.
    Stamp,
    /// Hash every file.
    Rehash,
}

/// What verification did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub hashed: usize,
    pub trusted: usize,
}

fn seal_file(dir: &Path, f: &mut SnapFile) -> Result<(), SnapshotError> {
    let path = SnapshotState::resolve(dir, &f.file);
    let e = |m: String| snap_err(&path, m);
    let before = stamp(&path).map_err(|x| e(x.to_string()))?;
    f.sha256 = Some(digest(&path).map_err(|x| e(x.to_string()))?);
    let after = stamp(&path).map_err(|x| e(x.to_string()))?;
    if before != after {
        return Err(e("changed while it was hashed; seal again".into()));
    }
    f.stamp = Some(after);
    Ok(())
}

/// Computes and records the digests and stamps, then rewrites `state.json`.
pub fn seal(state_path: &Path) -> Result<SnapshotState, SnapshotError> {
    let mut s = SnapshotState::load(state_path)?;
    let dir = state_path.parent().unwrap_or(Path::new("."));
    seal_file(dir, &mut s.memory)?;
    for d in &mut s.disks {
        seal_file(dir, &mut d.data)?;
    }
    s.write(state_path)?;
    Ok(s)
}

fn verify_file(dir: &Path, f: &mut SnapFile, trust: Trust) -> Result<bool, SnapshotError> {
    let path = SnapshotState::resolve(dir, &f.file);
    let e = |m: String| snap_err(&path, m);
    let Some(want) = f.sha256.clone() else {
        return Err(e(
            "has no recorded digest: the snapshot was never sealed (run `kiln snapshot verify`)"
                .into(),
        ));
    };
    let now = stamp(&path).map_err(|x| e(x.to_string()))?;
    if trust == Trust::Stamp && f.stamp.as_ref() == Some(&now) {
        return Ok(false);
    }
    let got = digest(&path).map_err(|x| e(x.to_string()))?;
    if got != want {
        return Err(e(format!(
            "SHA-256 {got} does not match the recorded {want}: the file was altered or damaged; take the snapshot again"
        )));
    }
    f.stamp = Some(now);
    Ok(true)
}

/// Loads `state_path` and checks every file's content (see the module docs). Files that
/// had to be hashed and matched get a fresh stamp, so the next check is fast.
pub fn verify(state_path: &Path, trust: Trust) -> Result<(SnapshotState, Verified), SnapshotError> {
    let mut s = SnapshotState::load(state_path)?;
    let dir = state_path.parent().unwrap_or(Path::new("."));
    let mut v = Verified::default();
    let mut count = |hashed: bool| {
        if hashed {
            v.hashed += 1
        } else {
            v.trusted += 1
        }
    };
    count(verify_file(dir, &mut s.memory, trust)?);
    for d in &mut s.disks {
        count(verify_file(dir, &mut d.data, trust)?);
    }
    if v.hashed > 0 {
        // Best effort: a read-only snapshot directory just stays on the slow path.
        if let Err(e) = s.write(state_path) {
            tracing::warn!("cannot record fresh stamps: {e}");
        }
    }
    Ok((s, v))
}
