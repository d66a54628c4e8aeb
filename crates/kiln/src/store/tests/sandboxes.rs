//! Sandbox records, transitions, listing and expiry on real SQLite files.

use super::{full_row, sandbox, TempDb};
use crate::store::*;
use SbState::*;

#[test]
fn vmm_start_times_operations_and_stop_reasons_are_recorded() {
    let t = TempDb::new("ops");
    let s = t.open();
    s.insert_sandbox(&sandbox("sb-1", Creating, 1)).unwrap();
    s.set_vmm("sb-1", 77, 12_345).unwrap();
    let row = s.get_sandbox("sb-1").unwrap();
    assert_eq!((row.pid, row.vmm_start), (Some(77), Some(12_345)));
    assert!(matches!(
        s.set_vmm("nope", 1, 1),
        Err(StoreError::NotFound { .. })
    ));
    s.transition("sb-1", &[Creating], Running, None).unwrap();

    let op = Operation {
        kind: "snapshot".into(),
        pid: 9,
        start: 99,
        paused: false,
        scratch: Some("/state/.snapshots/.partial-x".into()),
    };
    s.swap_operation("sb-1", None, Some(&op)).unwrap();
    // A second taker loses, and is told who holds it.
    let other = Operation {
        pid: 10,
        ..op.clone()
    };
    let e = s.swap_operation("sb-1", None, Some(&other)).unwrap_err();
    assert!(
        matches!(&e, StoreError::OperationInProgress { kind, pid: 9, .. } if kind == "snapshot"),
        "{e:?}"
    );
    assert!(e.to_string().contains("wait for it to finish"), "{e}");
    let paused = Operation {
        paused: true,
        ..op.clone()
    };
    s.swap_operation("sb-1", Some(&op), Some(&paused)).unwrap();
    assert_eq!(
        s.get_sandbox("sb-1").unwrap().operation,
        Some(paused.clone())
    );
    s.swap_operation("sb-1", Some(&paused), None).unwrap();
    // Clearing what someone else cleared already is fine.
    s.swap_operation("sb-1", Some(&paused), None).unwrap();
    assert_eq!(s.get_sandbox("sb-1").unwrap().operation, None);

    s.stopped_by_guest("sb-1", &[Running, Paused], "the guest powered off")
        .unwrap();
    let row = s.get_sandbox("sb-1").unwrap();
    assert_eq!(row.state, Stopped);
    assert_eq!(row.stop_reason.as_deref(), Some("the guest powered off"));
    assert_eq!(row.failure, None);
    let kinds: Vec<_> = s
        .events_for("sb-1", 10)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "state")
        .map(|e| e.detail["to"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(kinds, ["running", "stopping", "stopped"]);
    // Only from running or paused.
    assert!(s
        .stopped_by_guest("sb-1", &[Running, Paused], "again")
        .is_err());
}

#[test]
fn sandbox_records_pids_activity_and_errors() {
    let t = TempDb::new("records");
    let s = t.open();
    s.insert_sandbox(&full_row()).unwrap();
    let e = s.insert_sandbox(&full_row()).unwrap_err();
    assert!(matches!(&e, StoreError::AlreadyExists { what: "sandbox", id } if id == "sb-1"));
    assert!(e.to_string().contains("pick another name"), "{e}");
    let e = s.get_sandbox("nope").unwrap_err();
    assert!(matches!(&e, StoreError::NotFound { what: "sandbox", id } if id == "nope"));

    s.set_pid("sb-1", None).unwrap();
    assert_eq!(s.get_sandbox("sb-1").unwrap().pid, None);
    s.set_pid("sb-1", Some(7)).unwrap();
    assert_eq!(s.get_sandbox("sb-1").unwrap().pid, Some(7));
    assert!(matches!(
        s.set_pid("nope", Some(1)),
        Err(StoreError::NotFound { .. })
    ));

    s.touch_activity("sb-1", 9_000).unwrap();
    s.touch_activity("sb-1", 8_000).unwrap(); // a late writer does not move it back
    assert_eq!(s.get_sandbox("sb-1").unwrap().last_activity_ms, Some(9_000));
    assert!(matches!(
        s.touch_activity("nope", 1),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn transitions_follow_the_state_machine_and_log_events() {
    let t = TempDb::new("transitions");
    let s = t.open();
    s.insert_sandbox(&sandbox("a", Creating, 1)).unwrap();
    assert_eq!(
        s.transition("a", &[Creating], Running, None).unwrap(),
        Creating
    );
    assert_eq!(
        s.transition("a", &[Running], Paused, None).unwrap(),
        Running
    );
    assert_eq!(
        s.transition("a", &[Running, Paused], Running, None)
            .unwrap(),
        Paused
    );

    // Not in `from`: refused with the actual state, nothing changes.
    let e = s.transition("a", &[Paused], Stopping, None).unwrap_err();
    let want = |e: &StoreError| match e {
        StoreError::InvalidTransition { id, from, to } => (id == "a", *from, *to),
        _ => (false, Creating, ""),
    };
    assert_eq!(want(&e), (true, Running, "stopping"), "{e:?}");
    assert!(e
        .to_string()
        .contains("sandbox \"a\" is running, it cannot become stopping"));
    // In `from` but not allowed by the state machine: refused too.
    let e = s.transition("a", &[Running], Stopped, None).unwrap_err();
    assert!(
        matches!(e, StoreError::InvalidTransition { from: Running, .. }),
        "{e:?}"
    );
    // Up: cannot be deleted.
    let e = s.delete_sandbox("a").unwrap_err();
    assert!(
        matches!(e, StoreError::InvalidTransition { to: "deleted", .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("stop it first"));

    s.transition("a", &[Running], Stopping, Some("idle"))
        .unwrap();
    s.transition("a", &[Stopping], Stopped, None).unwrap();
    assert_eq!(s.get_sandbox("a").unwrap().failure, None);
    assert_eq!(s.delete_sandbox("a").unwrap().state, Stopped);
    assert!(matches!(
        s.get_sandbox("a"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.delete_sandbox("a"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.transition("a", &[Stopped], Failed, None),
        Err(StoreError::NotFound { .. })
    ));

    s.insert_sandbox(&sandbox("b", Creating, 2)).unwrap();
    s.transition("b", &SbState::ALL, Failed, Some("kernel panic"))
        .unwrap();
    let b = s.get_sandbox("b").unwrap();
    assert_eq!(
        (b.state, b.failure.as_deref()),
        (Failed, Some("kernel panic"))
    );
    let e = s.transition("b", &SbState::ALL, Failed, None).unwrap_err();
    assert!(matches!(
        e,
        StoreError::InvalidTransition { from: Failed, .. }
    ));

    let events = s.events_for("a", 100).unwrap();
    let log: Vec<String> = events
        .iter()
        .map(|e| match e.kind.as_str() {
            "state" => format!("{}>{}", e.detail["from"], e.detail["to"]).replace('"', ""),
            k => k.to_string(),
        })
        .collect();
    let want = [
        "created",
        "creating>running",
        "running>paused",
        "paused>running",
        "running>stopping",
        "stopping>stopped",
        "deleted",
    ];
    assert_eq!(log, want);
    assert_eq!(events[4].detail["reason"], "idle");
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[test]
fn list_filters_by_state_backend_and_metadata() {
    let t = TempDb::new("list");
    let s = t.open();
    let mk = |id: &str, state, backend: &str, meta: &[(&str, &str)], created| SandboxRow {
        backend: backend.into(),
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..sandbox(id, state, created)
    };
    s.insert_sandbox(&mk(
        "c",
        Running,
        "kiln",
        &[("team", "a"), ("a.b \"q\"", "x")],
        3,
    ))
    .unwrap();
    s.insert_sandbox(&mk("a", Running, "kiln", &[("team", "b")], 1))
        .unwrap();
    s.insert_sandbox(&mk("b", Paused, "firecracker", &[("team", "a")], 2))
        .unwrap();
    s.insert_sandbox(&mk("d", Stopped, "kiln", &[], 4)).unwrap();
    let ids = |f: SandboxFilter| -> Vec<String> {
        s.list_sandboxes(&f)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    let meta = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(ids(SandboxFilter::default()), ["a", "b", "c", "d"]);
    assert_eq!(
        ids(SandboxFilter {
            state: Some(Running),
            ..Default::default()
        }),
        ["a", "c"]
    );
    let f = SandboxFilter {
        backend: Some("kiln".into()),
        ..Default::default()
    };
    assert_eq!(ids(f), ["a", "c", "d"]);
    let f = SandboxFilter {
        metadata: meta(&[("team", "a")]),
        ..Default::default()
    };
    assert_eq!(ids(f), ["b", "c"]);
    let f = SandboxFilter {
        state: Some(Running),
        metadata: meta(&[("team", "a"), ("a.b \"q\"", "x")]),
        ..Default::default()
    };
    assert_eq!(ids(f), ["c"]);
    let f = SandboxFilter {
        metadata: meta(&[("team", "a"), ("a", "x")]),
        ..Default::default()
    };
    assert!(ids(f).is_empty());
}

#[test]
fn expired_finds_idle_and_overage_sandboxes_that_are_up() {
    let t = TempDb::new("expired");
    let s = t.open();
    let mk = |id: &str, state, idle: Option<u64>, max: Option<u64>, last: Option<i64>| SandboxRow {
        idle_timeout_ms: idle,
        max_lifetime_ms: max,
        last_activity_ms: last,
        ..sandbox(id, state, 1_000)
    };
    let now = 10_000;
    for row in [
        mk("idle", Running, Some(5_000), None, Some(4_000)), // 6 s idle > 5 s
        mk("fresh", Running, Some(5_000), None, Some(5_000)), // exactly 5 s: not yet
        mk("never-touched", Paused, Some(5_000), None, None), // idle since creation
        mk("old", Running, Some(60_000), Some(8_000), Some(9_999)), // 9 s > 8 s lifetime
        mk("both", Paused, Some(1), Some(1), Some(1_000)),   // lifetime wins
        mk("no-limits", Running, None, None, None),
        mk("stopped", Stopped, Some(1), Some(1), None),
        mk("creating", Creating, Some(1), Some(1), None),
        mk("failed", Failed, Some(1), Some(1), None),
    ] {
        s.insert_sandbox(&row).unwrap();
    }
    let got = s.expired(now).unwrap();
    let want = [
        ("both", "lifetime"),
        ("idle", "idle"),
        ("never-touched", "idle"),
        ("old", "lifetime"),
    ];
    let want: Vec<(String, &str)> = want.iter().map(|(i, w)| (i.to_string(), *w)).collect();
    assert_eq!(got, want);
    assert!(s.expired(1_000).unwrap().is_empty());
}

#[test]
fn limits_and_labels_can_be_replaced_and_then_filter_and_expire() {
    let t = TempDb::new("limits");
    let s = t.open();
    s.insert_sandbox(&sandbox("a", Running, 1_000)).unwrap();
    let labels = std::collections::BTreeMap::from([("team".to_string(), "x".to_string())]);
    s.set_limits("a", &labels, Some(500), None).unwrap();
    let row = s.get_sandbox("a").unwrap();
    assert_eq!((row.metadata, row.idle_timeout_ms), (labels, Some(500)));
    let f = SandboxFilter {
        metadata: vec![("team".into(), "x".into())],
        ..Default::default()
    };
    assert_eq!(s.list_sandboxes(&f).unwrap().len(), 1);
    assert_eq!(s.expired(1_400).unwrap(), vec![]);
    assert_eq!(s.expired(1_600).unwrap(), vec![("a".to_string(), "idle")]);
    assert!(matches!(
        s.set_limits("nope", &Default::default(), None, None),
        Err(StoreError::NotFound { .. })
    ));
}
