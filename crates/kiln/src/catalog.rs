//! The state store's `snapshots` and `images` tables, kept in step with the files they
//! index. A snapshot's directory (`<state>/.snapshots/<name>/`) and an image file stay
//! the data; the rows are the catalog a server or a script queries.
//!
//! - A snapshot is recorded once it is sealed (or imported) and forgotten before its
//!   directory is removed. [`sync_snapshots`] (run by [`Snapshot::list`] and
//!   `reconcile()`) repairs what a crash in between left: a row without a directory goes,
//!   a complete directory without a row gets one.
//! - An image is recorded the first time a sandbox boots it, and again when its file
//!   changed (path or size).

use std::collections::HashSet;
use std::path::Path;

use serde_json::json;

use crate::error::Result;
use crate::sandbox::registry::store;
use crate::sandbox::Image;
use crate::snapshot::Snapshot;
use crate::store::{now_ms, ImageRow, SnapshotRow, Store, StoreError};

/// Apparent size of the regular files directly in `dir`.
fn dir_size(dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(dir).ok()?;
    let sizes = entries.flatten().filter_map(|e| e.metadata().ok());
    Some(sizes.filter(|m| m.is_file()).map(|m| m.len()).sum())
}

fn row_of(s: &Snapshot) -> SnapshotRow {
    SnapshotRow {
        name: s.meta.name.clone(),
        source: Some(s.meta.source.clone()),
        dir: s.dir.clone(),
        created_ms: (s.meta.created as i64).saturating_mul(1000),
        size_bytes: dir_size(&s.dir),
    }
}

/// Deletes a snapshot's row if there is one.
fn delete_row(st: &Store, name: &str) -> Result<()> {
    match st.delete_snapshot(name) {
        Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Records a complete snapshot (replacing a stale row of the same name).
pub(crate) fn record_snapshot(s: &Snapshot) -> Result<()> {
    let st = store()?;
    delete_row(&st, &s.meta.name)?;
    st.insert_snapshot(&row_of(s))?;
    let detail = json!({ "name": s.meta.name, "source": s.meta.source });
    let _ = st.append_event(Some(&s.meta.source), "snapshot_created", detail);
    Ok(())
}

/// Forgets a snapshot that is about to be removed.
pub(crate) fn forget_snapshot(name: &str) -> Result<()> {
    let st = store()?;
    delete_row(&st, name)?;
    let _ = st.append_event(None, "snapshot_removed", json!({ "name": name }));
    Ok(())
}

/// Brings the `snapshots` table in line with the snapshot directories; returns the rows.
pub fn sync_snapshots() -> Result<Vec<SnapshotRow>> {
    let st = store()?;
    let on_disk = Snapshot::list_on_disk()?;
    let names: HashSet<&str> = on_disk.iter().map(|s| s.meta.name.as_str()).collect();
    let rows = st.list_snapshots()?;
    let known: HashSet<String> = rows.iter().map(|r| r.name.clone()).collect();
    for r in rows.iter().filter(|r| !names.contains(r.name.as_str())) {
        delete_row(&st, &r.name)?;
    }
    for s in on_disk.iter().filter(|s| !known.contains(&s.meta.name)) {
        match st.insert_snapshot(&row_of(s)) {
            Ok(()) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(st.list_snapshots()?)
}

/// Records the image a sandbox boots, unless the same file is recorded already.
pub(crate) fn record_image(img: &Image) -> Result<()> {
    let (name, path) = match img {
        Image::Minimal => ("minimal", crate::paths::default_initramfs()),
        Image::Disk { name, rootfs } => (name.as_str(), rootfs.clone()),
    };
    let size = std::fs::metadata(&path).ok().map(|m| m.len());
    let st = store()?;
    match st.get_image(name) {
        Ok(r) if r.path == path && r.size_bytes == size => return Ok(()),
        Ok(_) | Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    st.upsert_image(&ImageRow {
        name: name.into(),
        path,
        sha256: None,
        size_bytes: size,
        added_ms: now_ms(),
    })?;
    Ok(())
}

/// The images sandboxes have booted, by name.
pub fn images() -> Result<Vec<ImageRow>> {
    Ok(store()?.list_images()?)
}
