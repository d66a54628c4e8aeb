//! The catalog kept in step with the files: recording, forgetting and syncing snapshots,
//! recording images once per file.

use std::path::Path;

use super::TempDb;
use crate::store::*;

fn snap(name: &str, source: Option<&str>) -> SnapshotRow {
    SnapshotRow {
        name: name.into(),
        source: source.map(String::from),
        dir: Path::new("/s").join(name),
        created_ms: 1,
        size_bytes: Some(3),
    }
}

fn event_kinds(s: &Store) -> Vec<String> {
    s.events_since(0, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

#[test]
fn record_replaces_a_stale_row_and_forget_tolerates_a_missing_one() {
    let t = TempDb::new("catalog-record");
    let s = t.open();
    s.record_snapshot(&snap("a", Some("sb-1"))).unwrap();
    let mut newer = snap("a", Some("sb-2"));
    newer.created_ms = 2;
    s.record_snapshot(&newer).unwrap();
    assert_eq!(s.list_snapshots().unwrap(), vec![newer]);
    s.forget_snapshot("a").unwrap();
    s.forget_snapshot("a").unwrap();
    assert!(s.list_snapshots().unwrap().is_empty());
    assert_eq!(
        event_kinds(&s),
        [
            "snapshot_created",
            "snapshot_created",
            "snapshot_removed",
            "snapshot_removed"
        ]
    );
}

#[test]
fn sync_drops_rows_without_a_directory_and_adds_missing_ones() {
    let t = TempDb::new("catalog-sync");
    let s = t.open();
    s.insert_snapshot(&snap("gone", None)).unwrap();
    let mut kept = snap("kept", None);
    kept.created_ms = 7;
    s.insert_snapshot(&kept).unwrap();
    // On disk: "kept" (its row stays as it was) and "new" (no row yet).
    let rows = s
        .sync_snapshots(&[snap("kept", None), snap("new", Some("sb-3"))])
        .unwrap();
    assert_eq!(rows, vec![kept, snap("new", Some("sb-3"))]);
    assert_eq!(s.list_snapshots().unwrap(), rows);
}

#[test]
fn an_image_is_recorded_again_only_when_its_file_changed() {
    let t = TempDb::new("catalog-image");
    let s = t.open();
    let file = std::env::temp_dir().join(format!("kiln-catalog-img-{}", std::process::id()));
    std::fs::write(&file, b"12345").unwrap();
    s.record_image("img", &file).unwrap();
    let first = s.get_image("img").unwrap();
    assert_eq!(
        (first.path.as_path(), first.size_bytes),
        (file.as_path(), Some(5))
    );
    s.upsert_image(&ImageRow {
        added_ms: 0,
        ..first.clone()
    })
    .unwrap();
    // Same path and size: the row is left alone.
    s.record_image("img", &file).unwrap();
    assert_eq!(s.get_image("img").unwrap().added_ms, 0);
    // A changed size: recorded again.
    std::fs::write(&file, b"1234567").unwrap();
    s.record_image("img", &file).unwrap();
    let again = s.get_image("img").unwrap();
    assert_eq!(again.size_bytes, Some(7));
    assert_ne!(again.added_ms, 0);
    std::fs::remove_file(&file).unwrap();
}
