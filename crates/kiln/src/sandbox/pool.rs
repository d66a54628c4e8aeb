//! Warm pools: sandboxes restored from a snapshot ahead of time, so that creating one
//! from that snapshot is a hand-off. A pooled sandbox is already running with its own
//! identity (reseeded, clock stepped, own hostname); claiming it only marks it taken.
//!
//! Claims are atomic across processes: a claim creates `<sandbox>/claimed` with
//! O_EXCL, so two creators never get the same sandbox. The pool's target size is kept
//! in the snapshot folder (`pool-target`), so whoever claims can refill it.

use std::collections::HashMap;

use super::restore::{restore, RestoreArgs, RestoreSource};
use super::{Sandbox, State};
use crate::backend::MemoryBackend;
use crate::error::{Error, Result};
use crate::snapshot::Snapshot;

fn target_path(snap: &Snapshot) -> std::path::PathBuf {
    snap.dir.join("pool-target")
}

/// The pool size wanted for `snap` (0 if none was set).
fn pool_target(snap: &Snapshot) -> usize {
    std::fs::read_to_string(target_path(snap))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

impl Sandbox {
    /// Whether this sandbox is an unclaimed, running member of a pool (and whose).
    fn pooled_in(&self) -> Option<&str> {
        let pool = self.record.pool.as_deref()?;
        let free = !self.dir.path.join("claimed").exists() && self.state() == State::Running;
        free.then_some(pool)
    }

    /// The unclaimed, running members of `snapshot`'s pool.
    pub fn pool_members(snapshot: &str) -> Result<Vec<Sandbox>> {
        let mut all = Sandbox::list()?;
        all.retain(|sb| sb.pooled_in() == Some(snapshot));
        Ok(all)
    }

    /// How many unclaimed, running members each snapshot's pool has (one listing for
    /// all of them; snapshots without members are absent).
    pub fn pool_sizes() -> Result<HashMap<String, usize>> {
        let mut sizes = HashMap::new();
        for sb in Sandbox::list()? {
            if let Some(pool) = sb.pooled_in() {
                *sizes.entry(pool.to_string()).or_default() += 1;
            }
        }
        Ok(sizes)
    }

    /// The target size of `snapshot`'s pool if the pool is below it (a create took a
    /// member): what to refill it to. `None` when it has no pool, is full, or cannot
    /// be read.
    pub fn pool_refill_target(snapshot: &str) -> Option<usize> {
        let target = pool_target(&Snapshot::get(snapshot).ok()?);
        let have = Sandbox::pool_members(snapshot).map_or(0, |m| m.len());
        (target > have).then_some(target)
    }

    /// Restores sandboxes from `snapshot` until its pool holds `n`, and records `n` as
    /// the pool's target size. Returns how many were added.
    pub fn pool_fill(snapshot: &str, n: usize) -> Result<usize> {
        let snap = Snapshot::get(snapshot)?;
        let p = target_path(&snap);
        std::fs::write(&p, n.to_string()).map_err(Error::host_io("cannot write", &p))?;
        let have = Sandbox::pool_members(snapshot)?.len();
        if have >= n {
            return Ok(0);
        }
        let (state, _) = snap.verify(kiln_vmm::snapshot::Trust::Stamp)?;
        let src = RestoreSource::new(&snap.state_path(), &state, snap.meta.clone(), None);
        for _ in have..n {
            restore(
                &src,
                RestoreArgs {
                    id: None,
                    detach: true,
                    backend: MemoryBackend::File,
                    snapshot: Some(snap.meta.name.clone()),
                    parent: None,
                    pool: Some(snap.meta.name.clone()),
                    cpu_quota: None,
                },
            )?;
        }
        Ok(n - have)
    }

    /// Takes one sandbox out of `snapshot`'s pool, if it has one.
    pub fn pool_claim(snapshot: &str) -> Result<Option<Sandbox>> {
        for mut sb in Sandbox::pool_members(snapshot)? {
            let claim = sb.dir.path.join("claimed");
            let taken = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&claim);
            if taken.is_err() {
                continue; // another process was first
            }
            sb.record.pool = None;
            sb.dir.save(&sb.record)?;
            let _ = std::fs::remove_file(&claim);
            return Ok(Some(sb));
        }
        Ok(None)
    }
}
