//! `append_event_once`: once per sandbox life, across connections.

use super::*;

#[test]
fn an_event_once_is_logged_once_per_life_of_a_sandbox() {
    let t = TempDb::new("once");
    let (a, b) = (t.open(), t.open());
    a.insert_sandbox(&sandbox("sb", Running, 1)).unwrap();
    let first = a
        .append_event_once("sb", "disk_error", json!({"count": 1}))
        .unwrap();
    assert!(first.is_some());
    // Again, from this or another connection (another process): nothing new.
    assert_eq!(
        a.append_event_once("sb", "disk_error", json!({"count": 2}))
            .unwrap(),
        None
    );
    assert_eq!(
        b.append_event_once("sb", "disk_error", json!({"count": 3}))
            .unwrap(),
        None
    );
    // Another kind, or another sandbox, is its own.
    assert!(b
        .append_event_once("sb", "other", json!(null))
        .unwrap()
        .is_some());
    let once = |s: &Store, id: &str| {
        s.events_for(id, 100)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "disk_error")
            .collect::<Vec<_>>()
    };
    assert_eq!(once(&a, "sb").len(), 1);
    assert_eq!(once(&a, "sb")[0].detail, json!({"count": 1}));

    // The id used again after removal: a new life, logged again.
    a.transition("sb", &[Running], Stopping, None).unwrap();
    a.transition("sb", &[Stopping], Stopped, None).unwrap();
    a.delete_sandbox("sb").unwrap();
    a.insert_sandbox(&sandbox("sb", Running, 2)).unwrap();
    assert!(a
        .append_event_once("sb", "disk_error", json!({"count": 9}))
        .unwrap()
        .is_some());
    assert_eq!(once(&a, "sb").len(), 2);
    assert!(a.append_event_once("sb", "", json!(null)).is_err());
}
