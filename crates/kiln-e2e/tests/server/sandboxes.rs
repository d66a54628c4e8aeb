//! Sandboxes through the API: auth, create/get/list, files, errors with stable codes, pause and resume, limits and reaping, delete.

use super::*;

pub(super) fn auth_is_required(t: &mut Tour) {
    let c = &t.c;
    // Auth: health is open, everything else needs the token.
    assert_eq!(c.health().unwrap().status, "ok");
    let anon = c.clone().with_token(None);
    assert_eq!(anon.health().unwrap().status, "ok");
    assert_eq!(
        err(anon.list(&ListFilter::default())),
        (401, "unauthorized".into())
    );
    let wrong = c.clone().with_token(Some("f".repeat(64)));
    assert_eq!(err(wrong.get("srv-a")), (401, "unauthorized".into()));
}

pub(super) fn create_get_and_list(t: &mut Tour) {
    let c = &t.c;
    // Create, get, list with filters.
    let mut req = minimal("srv-a");
    req.metadata.insert("suite".into(), "server".into());
    req.metadata.insert("role".into(), "tour".into());
    req.env.insert("GREETING".into(), "hello".into());
    let sb = c.create(&req).unwrap();
    assert_eq!((sb.id.as_str(), sb.state), ("srv-a", kiln::State::Running));
    assert_eq!(sb.metadata["role"], "tour");
    t.pid = sb.pid.expect("a running sandbox has a VMM pid");
    assert!(process_running(t.pid as i32));
    assert_eq!(c.get("srv-a").unwrap().image, "minimal");
    assert_eq!(
        err(c.create(&minimal("srv-a"))),
        (409, "already_exists".into())
    );
    let by = |k: &str, v: &str| ListFilter {
        metadata: vec![(k.into(), v.into())],
        ..Default::default()
    };
    let ids =
        |l: Vec<kiln_server::api::SandboxView>| l.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(c.list(&by("role", "tour")).unwrap()), ["srv-a"]);
    assert!(c.list(&by("role", "other")).unwrap().is_empty());
    let running = ListFilter {
        state: Some(kiln::State::Running),
        ..Default::default()
    };
    assert_eq!(ids(c.list(&running).unwrap()), ["srv-a"]);
}

pub(super) fn files(t: &mut Tour) {
    let c = &t.c;
    // Files.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    c.mkdir("srv-a", "/tmp/up/sub").unwrap();
    c.write_file("srv-a", "/tmp/up/data.bin", &data, Some(0o600))
        .unwrap();
    assert_eq!(c.read_file("srv-a", "/tmp/up/data.bin").unwrap(), data);
    let st = c.stat("srv-a", "/tmp/up/data.bin").unwrap();
    assert_eq!(
        (st.kind, st.size, st.mode & 0o777),
        (kiln::FileKind::File, data.len() as u64, 0o600)
    );
    let names: Vec<String> = c
        .list_dir("srv-a", "/tmp/up")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["data.bin", "sub"]);
    c.remove_path("srv-a", "/tmp/up", true).unwrap();
    let e = c.stat("srv-a", "/tmp/up").unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(404), Some("guest_file_not_found"))
    );
    let ClientError::Api { extra, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(
        (extra["kind"].as_str(), extra["path"].as_str()),
        (Some("not_found"), Some("/tmp/up"))
    );
}

pub(super) fn errors_are_json_with_stable_codes(t: &mut Tour) {
    let c = &t.c;
    // 4xx answers are JSON with stable codes.
    assert_eq!(err(c.get("no-such")), (404, "not_found".into()));
    assert_eq!(err(c.get("bad_id")), (404, "not_found".into()));
    assert_eq!(
        err(c.remove_snapshot("no-such-snap")),
        (404, "snapshot_not_found".into())
    );
    assert_eq!(
        err(c.restore("no-such-snap", &Default::default())),
        (404, "snapshot_not_found".into())
    );
    for (method, target, body, status, code) in [
        (
            "POST",
            "/v1/sandboxes/srv-a/exec",
            "{\"cmd\":",
            400,
            "bad_request",
        ),
        ("POST", "/v1/sandboxes/srv-a/exec", "{}", 400, "bad_request"),
        (
            "POST",
            "/v1/sandboxes/srv-a/fork",
            r#"{"count":"x"}"#,
            400,
            "bad_request",
        ),
        ("GET", "/v1/nope", "", 404, "no_route"),
        ("DELETE", "/v1/events", "", 405, "method_not_allowed"),
    ] {
        let body = (!body.is_empty()).then_some(("application/json", body.as_bytes()));
        let r = c.raw(method, target, body).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON error");
        assert_eq!(
            (r.status, v["error"]["code"].as_str().unwrap()),
            (status, code),
            "{method} {target}"
        );
    }
}

pub(super) fn pause_and_resume(t: &mut Tour) {
    let c = &t.c;
    // Pause: exec is refused with a JSON conflict; wrong transitions name the states.
    assert_eq!(c.pause("srv-a").unwrap().state, kiln::State::Paused);
    let (status, code) = err(c.exec("srv-a", &ExecRequest::new(["true"]), |_| {}));
    assert_eq!(status, 409);
    assert!(
        code == "agent_unavailable" || code == "invalid_transition",
        "{code}"
    );
    let e = c.pause("srv-a").unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(409), Some("invalid_transition"))
    );
    let ClientError::Api { extra, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(
        (extra["from"].as_str(), extra["to"].as_str()),
        (Some("paused"), Some("paused"))
    );
    assert_eq!(c.resume("srv-a").unwrap().state, kiln::State::Running);
    assert_eq!(err(c.resume("srv-a")), (409, "invalid_transition".into()));
    let r = c
        .exec_collect(
            "srv-a",
            &ExecRequest::new(["echo", "back"]),
            OutputEncoding::Text,
        )
        .unwrap();
    assert_eq!(r.stdout, "back\n");
}

pub(super) fn labels_limits_and_reaping(t: &mut Tour) {
    let c = &t.c;
    let server = &t.served.server;
    let state = &t.served.state;
    // Created from the snapshot with labels and limits: they apply to the copy.
    let labelled = c
        .create(&CreateSandbox {
            id: Some("srv-copy2".into()),
            from_snapshot: Some("tour-snap".into()),
            metadata: [("origin".to_string(), "snap".to_string())].into(),
            idle_timeout_secs: Some(600.0),
            max_lifetime_secs: Some(8.0),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        labelled.metadata.get("origin").map(String::as_str),
        Some("snap")
    );
    assert_eq!(
        (labelled.idle_timeout_ms, labelled.max_lifetime_ms),
        (Some(600_000), Some(8_000))
    );
    // The server's reaper removes it when its lifetime is up, with an event saying why.
    // The row goes first and the folder right after it (a removal in flight), so the
    // wait is for both.
    let reaped = wait_until(Duration::from_secs(60), || {
        c.get("srv-copy2")
            .is_err_and(|e| e.status() == Some(404) && e.code() == Some("not_found"))
            && !state.path("srv-copy2").exists()
    });
    assert!(
        reaped,
        "srv-copy2 outlived its lifetime, or its folder is left:\n{}",
        server.log()
    );
    let events = c.events(0, 1000).unwrap();
    let why = events
        .iter()
        .find(|e| e.sandbox.as_deref() == Some("srv-copy2") && e.kind == "reaped")
        .map(|e| e.detail["why"].clone());
    assert_eq!(why, Some(serde_json::json!("lifetime")), "{events:?}");
}

pub(super) fn delete_leaves_nothing(t: &mut Tour) {
    let c = &t.c;
    let server = &t.served.server;
    let state = &t.served.state;
    let pid = t.pid;
    let removed = t.removed.as_ref().expect("the step before removed srv-a");
    assert!(removed.step.is_some(), "{removed:?}");
    assert_eq!(err(c.get("srv-a")), (404, "not_found".into()));
    assert!(!state.path("srv-a").exists(), "the sandbox folder is left");
    assert!(
        wait_gone(pid),
        "VMM {pid} is still there:\n{}",
        server.log()
    );
    assert!(c.list(&ListFilter::default()).unwrap().is_empty());
    assert_eq!(err(c.stop("srv-a")), (404, "not_found".into()));
}
