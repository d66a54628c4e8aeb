//! Snapshots through the API: snapshot and restore, warm pools, removing a snapshot.

use super::*;

pub(super) fn snapshot_and_restore(t: &mut Tour) {
    let c = &t.c;
    // Snapshot and restore: the copy continues with the original's environment.
    let snap = c.snapshot("srv-a", Some("tour-snap")).unwrap();
    assert_eq!(
        (snap.name.as_str(), snap.source.as_str()),
        ("tour-snap", "srv-a")
    );
    assert_eq!(
        err(c.snapshot("srv-a", Some("tour-snap"))),
        (409, "snapshot_exists".into())
    );
    assert_eq!(c.snapshots().unwrap().len(), 1);
    let images = c.images().unwrap();
    assert!(
        images
            .iter()
            .any(|i| i.name == "minimal" && i.size_bytes > Some(0)),
        "{images:?}"
    );
    let restore = kiln_server::api::RestoreRequest {
        id: Some("srv-copy".into()),
        memory_backend: None,
    };
    let copy = c.restore("tour-snap", &restore).unwrap();
    assert_eq!(
        (copy.state, copy.snapshot.as_deref()),
        (kiln::State::Running, Some("tour-snap"))
    );
    let r = c
        .exec_collect(
            "srv-copy",
            &ExecRequest::new(["sh", "-c", "echo $GREETING; hostname"]),
            OutputEncoding::Text,
        )
        .unwrap();
    assert_eq!(r.stdout, "hello\nsrv-copy\n");
    t.copy_pid = copy.pid.unwrap();
    c.remove("srv-copy").unwrap();
}

pub(super) fn warm_pool(t: &mut Tour) {
    let c = &t.c;
    let server = &t.served.server;
    // A warm pool through the API: a create from the snapshot is a hand-off of the
    // pooled sandbox, and the server refills the pool behind it.
    let pooled = c.pool("tour-snap", 1).unwrap();
    assert_eq!((pooled.meta.name.as_str(), pooled.pool), ("tour-snap", 1));
    let member = c
        .list(&ListFilter::default())
        .unwrap()
        .into_iter()
        .find(|s| s.id != "srv-a")
        .expect("the pooled sandbox is listed");
    let handed = c
        .create(&CreateSandbox {
            from_snapshot: Some("tour-snap".into()),
            timeout_secs: Some(1.0),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        handed.id, member.id,
        "the create did not take the pooled sandbox"
    );
    // Its per-command timeout is the one given at creation, not the snapshot's (none).
    let r = c
        .exec_collect(
            &handed.id,
            &ExecRequest::new(["sleep", "30"]),
            OutputEncoding::Text,
        )
        .unwrap();
    assert!(r.timed_out, "{r:?}");
    let refilled = wait_until(Duration::from_secs(60), || {
        c.snapshots().unwrap().first().is_some_and(|s| s.pool == 1)
    });
    assert!(refilled, "the pool was not refilled:\n{}", server.log());
    assert_eq!(
        c.pool("tour-snap", 0).unwrap().pool,
        1,
        "size 0 keeps members"
    );
    for s in c.list(&ListFilter::default()).unwrap() {
        if s.id != "srv-a" {
            c.remove(&s.id).unwrap();
        }
    }
    assert_eq!(c.snapshots().unwrap()[0].pool, 0);
    assert_eq!(
        err(c.pool("tour-snap", 1001)),
        (400, "invalid_input".into())
    );
}

pub(super) fn removing_the_snapshot(t: &mut Tour) {
    let c = &t.c;
    let copy_pid = t.copy_pid;
    c.remove_snapshot("tour-snap").unwrap();
    assert!(c.snapshots().unwrap().is_empty());
    assert!(
        wait_gone(copy_pid),
        "restored VMM {copy_pid} is still there"
    );
}
