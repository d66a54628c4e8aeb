//! The `snapshots` and `images` tables: what exists on disk, by name. The files stay where
//! they are (`<state>/.snapshots/<name>/`, image files); these rows index them.

use std::path::PathBuf;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::error::{is_duplicate, Result, StoreError};
use super::{path_text, Store};

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
