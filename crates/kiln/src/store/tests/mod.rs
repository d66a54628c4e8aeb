//! The store's API on real SQLite files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::json;

use super::*;
use SbState::*;

mod catalog;
mod concurrency;
mod events;
mod memory;
mod sandboxes;

/// A fresh directory under the temp dir for one test's database; removed on drop.
pub(super) struct TempDb {
    dir: PathBuf,
}

impl TempDb {
    pub(super) fn new(tag: &str) -> TempDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kiln-store-{tag}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDb { dir }
    }
    pub(super) fn path(&self) -> PathBuf {
        self.dir.join("kiln.db")
    }
    pub(super) fn open(&self) -> Store {
        Store::open(self.path()).unwrap()
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) fn sandbox(id: &str, state: SbState, created: i64) -> SandboxRow {
    SandboxRow {
        state,
        ..SandboxRow::new(id, created)
    }
}

pub(super) fn full_row() -> SandboxRow {
    SandboxRow {
        image: Some("debian".into()),
        cpus: Some(2),
        memory_mib: Some(512),
        pid: Some(4242),
        metadata: BTreeMap::from([
            ("team".into(), "a".into()),
            ("a.b \"q\"".into(), "x".into()),
        ]),
        idle_timeout_ms: Some(60_000),
        max_lifetime_ms: Some(3_600_000),
        last_activity_ms: Some(1_000),
        snapshot: Some("warm".into()),
        parent: Some("sb-parent".into()),
        ..SandboxRow::new("sb-1", 1_000)
    }
}

#[test]
fn open_sets_wal_normal_sync_foreign_keys_busy_timeout_and_version() {
    let t = TempDb::new("pragmas");
    let s = t.open();
    let c = s.conn();
    let q = |p: &str| -> String {
        c.query_row(&format!("SELECT * FROM pragma_{p}"), [], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .map(|v| format!("{v:?}"))
        .unwrap()
    };
    assert_eq!(q("journal_mode"), "Text(\"wal\")");
    assert_eq!(q("synchronous"), "Integer(1)"); // NORMAL
    assert_eq!(q("foreign_keys"), "Integer(1)");
    assert_eq!(q("busy_timeout"), "Integer(5000)");
    assert_eq!(schema::user_version(&c).unwrap(), SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 4);
}

#[test]
fn a_database_from_a_newer_kiln_is_refused_and_left_alone() {
    let t = TempDb::new("newer");
    drop(t.open());
    let c = rusqlite::Connection::open(t.path()).unwrap();
    c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(c);
    let e = Store::open(t.path()).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::TooNew {
                found: 5,
                known: 4,
                ..
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("created by a newer kiln; upgrade kiln or use another state directory"),
        "{msg}"
    );
    let c = rusqlite::Connection::open(t.path()).unwrap();
    assert_eq!(schema::user_version(&c).unwrap(), 5);
}

#[test]
fn a_version_1_database_migrates_and_keeps_its_rows() {
    let t = TempDb::new("v1");
    {
        let c = rusqlite::Connection::open(t.path()).unwrap();
        c.execute_batch(schema::V1_FOR_TESTS).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c.execute(
            "INSERT INTO sandboxes (id, state, created_ms, updated_ms, pid) \
             VALUES ('sb-old', 'running', 1, 1, 42)",
            [],
        )
        .unwrap();
    }
    let s = t.open();
    let row = s.get_sandbox("sb-old").unwrap();
    assert_eq!((row.state, row.pid), (Running, Some(42)));
    assert_eq!(
        (row.vmm_start, row.operation, row.stop_reason, row.cpu_quota),
        (None, None, None, None)
    );
    assert_eq!(schema::user_version(&s.conn()).unwrap(), 4);
    // The migrated table takes the new columns.
    let mut new = SandboxRow::new("sb-new", 2);
    new.cpu_quota = Some(0.5);
    s.insert_sandbox(&new).unwrap();
    assert_eq!(s.get_sandbox("sb-new").unwrap().cpu_quota, Some(0.5));
    assert!(s.ports("sb-old").unwrap().is_empty());
    let ports = vec!["127.0.0.1:8080:80/tcp".to_string()];
    s.set_ports("sb-old", &ports).unwrap();
    assert_eq!(s.ports("sb-old").unwrap(), ports);
    assert!(matches!(
        s.set_ports("sb-none", &ports),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn a_missing_directory_is_a_clear_open_error() {
    let t = TempDb::new("nodir");
    let e = Store::open(t.path().with_file_name("no-such-dir").join("kiln.db")).unwrap_err();
    assert!(matches!(e, StoreError::Open { .. }), "{e:?}");
    assert!(
        e.to_string().contains("check that its directory exists"),
        "{e}"
    );
}

#[test]
fn everything_written_survives_a_reopen() {
    let t = TempDb::new("durable");
    let snap = SnapshotRow {
        name: "warm".into(),
        source: Some("sb-1".into()),
        dir: PathBuf::from("/state/.snapshots/warm"),
        created_ms: 5,
        size_bytes: Some(1 << 30),
    };
    let image = ImageRow {
        name: "debian".into(),
        path: PathBuf::from("/images/debian.ext4"),
        sha256: Some("ab".repeat(32)),
        size_bytes: Some(u64::MAX >> 1),
        added_ms: 6,
    };
    {
        let s = t.open();
        s.insert_sandbox(&full_row()).unwrap();
        s.transition("sb-1", &[Creating], Running, None).unwrap();
        s.insert_snapshot(&snap).unwrap();
        s.upsert_image(&image).unwrap();
        s.append_event(None, "note", json!({"n": 1})).unwrap();
    }
    let s = t.open();
    let row = s.get_sandbox("sb-1").unwrap();
    assert_eq!(
        row,
        SandboxRow {
            state: Running,
            updated_ms: row.updated_ms,
            ..full_row()
        }
    );
    assert_eq!(s.get_snapshot("warm").unwrap(), snap);
    assert_eq!(s.get_image("debian").unwrap(), image);
    let kinds: Vec<_> = s
        .events_since(0, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["created", "state", "note"]);
}

#[test]
fn snapshots_and_images_catalog() {
    let t = TempDb::new("catalog");
    let s = t.open();
    let snap = |name: &str| SnapshotRow {
        name: name.into(),
        source: None,
        dir: Path::new("/s").join(name),
        created_ms: 1,
        size_bytes: None,
    };
    s.insert_snapshot(&snap("b")).unwrap();
    s.insert_snapshot(&snap("a")).unwrap();
    let e = s.insert_snapshot(&snap("a")).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::AlreadyExists {
                what: "snapshot",
                ..
            }
        ),
        "{e:?}"
    );
    let names: Vec<_> = s
        .list_snapshots()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    s.delete_snapshot("a").unwrap();
    assert!(matches!(
        s.get_snapshot("a"),
        Err(StoreError::NotFound {
            what: "snapshot",
            ..
        })
    ));
    assert!(matches!(
        s.delete_snapshot("a"),
        Err(StoreError::NotFound { .. })
    ));

    let mut img = ImageRow {
        name: "debian".into(),
        path: "/i/v1.ext4".into(),
        sha256: None,
        size_bytes: Some(10),
        added_ms: 1,
    };
    s.upsert_image(&img).unwrap();
    img.path = "/i/v2.ext4".into();
    img.sha256 = Some("00".repeat(32));
    s.upsert_image(&img).unwrap();
    assert_eq!(s.list_images().unwrap(), vec![img.clone()]);
    s.delete_image("debian").unwrap();
    assert!(matches!(
        s.get_image("debian"),
        Err(StoreError::NotFound { what: "image", .. })
    ));
    assert!(s.list_images().unwrap().is_empty());

    use std::os::unix::ffi::OsStrExt;
    let bad = PathBuf::from(std::ffi::OsStr::from_bytes(b"/i/\xff.ext4"));
    let e = s.upsert_image(&ImageRow { path: bad, ..img }).unwrap_err();
    assert!(matches!(e, StoreError::InvalidInput(_)), "{e:?}");
}

#[test]
fn events_since_and_for_page_through_the_log() {
    let t = TempDb::new("events");
    let s = t.open();
    let mut seqs = Vec::new();
    for i in 0..10 {
        let sb = if i % 2 == 0 { Some("x") } else { None };
        seqs.push(s.append_event(sb, "tick", json!({ "i": i })).unwrap());
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let page = s.events_since(0, 4).unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs[..4]);
    let rest = s.events_since(page[3].seq, 100).unwrap();
    assert_eq!(rest.len(), 6);
    assert_eq!(rest[0].detail, json!({ "i": 4 }));
    let last2 = s.events_for("x", 2).unwrap();
    assert_eq!(
        last2
            .iter()
            .map(|e| e.detail["i"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [6, 8]
    );
    assert_eq!(last2[0].sandbox.as_deref(), Some("x"));
    assert!(s.events_for("y", 5).unwrap().is_empty());
    s.append_event(None, "bare", serde_json::Value::Null)
        .unwrap();
    assert_eq!(
        s.events_since(seqs[9], 1).unwrap()[0].detail,
        serde_json::Value::Null
    );
    assert!(matches!(
        s.append_event(None, "", json!({})),
        Err(StoreError::InvalidInput(_))
    ));
}
