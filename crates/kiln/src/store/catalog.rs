//! The catalog: the `snapshots` and `images` tables, kept in step with the files they
//! index. A snapshot's directory (`<state>/.snapshots/<name>/`) and an image file stay
//! the data; the rows are the catalog a server or a script queries.
//!
//! - A snapshot is recorded once it is sealed (or imported) ([`Store::record_snapshot`])
//!   and forgotten before its directory is removed ([`Store::forget_snapshot`]).
//!   [`Store::sync_snapshots`] (run by `Snapshot::list` and `reconcile()` with the
//!   snapshot directories found on disk) repairs what a crash in between left: a row
//!   without a directory goes, a complete directory without a row gets one.
//! - An image is recorded the first time a sandbox boots it, and again when its file
//!   changed (path or size) ([`Store::record_image`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::{is_duplicate, Result, StoreError};
use super::{now_ms, path_text, Store};

/// A snapshot directory and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRow {
    pub name: String,
    /// The sandbox it was taken from.
    pub source: Option<String>,
    pub dir: PathBuf,
    pub created_ms: i64,
    pub size_bytes: Option<u64>,
}

/// A root filesystem image that sandboxes can boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRow {
    pub name: String,
    pub path: PathBuf,
    /// Hex SHA-256 of the file, when known.
    pub sha256: Option<String>,
    pub size_bytes: Option<u64>,
    pub added_ms: i64,
}

fn snapshot_from_row(r: &Row<'_>) -> rusqlite::Result<SnapshotRow> {
    Ok(SnapshotRow {
        name: r.get(0)?,
        source: r.get(1)?,
        dir: PathBuf::from(r.get::<_, String>(2)?),
        created_ms: r.get(3)?,
        size_bytes: r.get(4)?,
    })
}

fn image_from_row(r: &Row<'_>) -> rusqlite::Result<ImageRow> {
    Ok(ImageRow {
        name: r.get(0)?,
        path: PathBuf::from(r.get::<_, String>(1)?),
        sha256: r.get(2)?,
        size_bytes: r.get(3)?,
        added_ms: r.get(4)?,
    })
}

const SNAPSHOT_COLUMNS: &str = "name, source, dir, created_ms, size_bytes";
const IMAGE_COLUMNS: &str = "name, path, sha256, size_bytes, added_ms";

fn get_one<T>(
    conn: &Connection,
    sql: &str,
    name: &str,
    what: &'static str,
    f: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<T> {
    conn.query_row(sql, [name], f)
        .optional()
        .map_err(StoreError::db("read the catalog"))?
        .ok_or_else(|| StoreError::NotFound {
            what,
            id: name.into(),
        })
}

fn list_all<T>(
    conn: &Connection,
    sql: &str,
    f: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn
        .prepare(sql)
        .map_err(StoreError::db("list the catalog"))?;
    let rows = stmt
        .query_map([], f)
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
    rows.map_err(StoreError::db("list the catalog"))
}

fn delete_one(
    conn: &Connection,
    table: &str,
    key: &str,
    name: &str,
    what: &'static str,
) -> Result<()> {
    let n = conn
        .execute(&format!("DELETE FROM {table} WHERE {key} = ?1"), [name])
        .map_err(StoreError::db("delete from the catalog"))?;
    if n == 0 {
        return Err(StoreError::NotFound {
            what,
            id: name.into(),
        });
    }
    Ok(())
}

impl Store {
    /// Records a snapshot; `AlreadyExists` if the name is taken.
    pub fn insert_snapshot(&self, row: &SnapshotRow) -> Result<()> {
        let dir = path_text("snapshot", &row.dir)?;
        let r = self.conn().execute(
            &format!("INSERT INTO snapshots ({SNAPSHOT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
            params![row.name, row.source, dir, row.created_ms, row.size_bytes],
        );
        match r {
            Err(e) if is_duplicate(&e) => Err(StoreError::AlreadyExists {
                what: "snapshot",
                id: row.name.clone(),
            }),
            r => r.map(drop).map_err(StoreError::db("insert a snapshot")),
        }
    }

    pub fn get_snapshot(&self, name: &str) -> Result<SnapshotRow> {
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE name = ?1");
        get_one(&self.conn(), &sql, name, "snapshot", snapshot_from_row)
    }

    /// All snapshots, by name.
    pub fn list_snapshots(&self) -> Result<Vec<SnapshotRow>> {
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots ORDER BY name");
        list_all(&self.conn(), &sql, snapshot_from_row)
    }

    /// Forgets a snapshot (its directory is the caller's to remove).
    pub fn delete_snapshot(&self, name: &str) -> Result<()> {
        delete_one(&self.conn(), "snapshots", "name", name, "snapshot")
    }

    /// Records an image, replacing the row of the same name (a rebuilt image).
    pub fn upsert_image(&self, row: &ImageRow) -> Result<()> {
        let path = path_text("image", &row.path)?;
        self.conn()
            .execute(
                &format!(
                    "INSERT INTO images ({IMAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (name) DO UPDATE SET path = excluded.path, \
                     sha256 = excluded.sha256, size_bytes = excluded.size_bytes, \
                     added_ms = excluded.added_ms"
                ),
                params![row.name, path, row.sha256, row.size_bytes, row.added_ms],
            )
            .map(drop)
            .map_err(StoreError::db("record an image"))
    }

    pub fn get_image(&self, name: &str) -> Result<ImageRow> {
        let sql = format!("SELECT {IMAGE_COLUMNS} FROM images WHERE name = ?1");
        get_one(&self.conn(), &sql, name, "image", image_from_row)
    }

    /// All images, by name.
    pub fn list_images(&self) -> Result<Vec<ImageRow>> {
        let sql = format!("SELECT {IMAGE_COLUMNS} FROM images ORDER BY name");
        list_all(&self.conn(), &sql, image_from_row)
    }

    /// Forgets an image (its file is the caller's to remove).
    pub fn delete_image(&self, name: &str) -> Result<()> {
        delete_one(&self.conn(), "images", "name", name, "image")
    }
}

/// Keeping the tables in step with the files.
impl Store {
    /// Deletes a snapshot's row if there is one.
    fn delete_snapshot_row(&self, name: &str) -> Result<()> {
        match self.delete_snapshot(name) {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Records a complete snapshot (replacing a stale row of the same name) and appends a
    /// `snapshot_created` event.
    pub fn record_snapshot(&self, row: &SnapshotRow) -> Result<()> {
        self.delete_snapshot_row(&row.name)?;
        self.insert_snapshot(row)?;
        let detail = json!({ "name": row.name, "source": row.source });
        let _ = self.append_event(row.source.as_deref(), "snapshot_created", detail);
        Ok(())
    }

    /// Forgets a snapshot that is about to be removed and appends a `snapshot_removed`
    /// event.
    pub fn forget_snapshot(&self, name: &str) -> Result<()> {
        self.delete_snapshot_row(name)?;
        let _ = self.append_event(None, "snapshot_removed", json!({ "name": name }));
        Ok(())
    }

    /// Brings the `snapshots` table in line with the complete snapshot directories
    /// `on_disk`; returns the rows.
    pub fn sync_snapshots(&self, on_disk: &[SnapshotRow]) -> Result<Vec<SnapshotRow>> {
        let names: HashSet<&str> = on_disk.iter().map(|s| s.name.as_str()).collect();
        let rows = self.list_snapshots()?;
        let known: HashSet<String> = rows.iter().map(|r| r.name.clone()).collect();
        for r in rows.iter().filter(|r| !names.contains(r.name.as_str())) {
            self.delete_snapshot_row(&r.name)?;
        }
        for s in on_disk.iter().filter(|s| !known.contains(&s.name)) {
            match self.insert_snapshot(s) {
                Ok(()) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.list_snapshots()
    }

    /// Records the image `name` that a sandbox boots from `path`, unless the same file
    /// (path and size) is recorded already.
    pub fn record_image(&self, name: &str, path: &Path) -> Result<()> {
        let size = std::fs::metadata(path).ok().map(|m| m.len());
        match self.get_image(name) {
            Ok(r) if r.path == path && r.size_bytes == size => return Ok(()),
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        self.upsert_image(&ImageRow {
            name: name.into(),
            path: path.to_path_buf(),
            sha256: None,
            size_bytes: size,
            added_ms: now_ms(),
        })
    }
}
