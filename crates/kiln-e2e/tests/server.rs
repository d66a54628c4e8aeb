//! `kiln serve` as a client drives it: the real binary on a unix socket in a private
//! state directory, real guests behind it, the blocking client of kiln-server in front.
//! Two guests in all: one for the API tour, one that outlives kills of the server.
//! The tour is named steps over one fixture (kiln_e2e::steps): a failure names its step.

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_e2e::serve::{Leftovers, Serve, Served};
use kiln_e2e::steps::run_steps;
use kiln_e2e::{process_running, require_kvm, wait_until, TempDir};
use kiln_server::api::{CreateSandbox, ExecRequest, OutputEncoding, Removed};
use kiln_server::client::{Client, ClientError, ListFilter, Output};

fn minimal(id: &str) -> CreateSandbox {
    CreateSandbox {
        id: Some(id.into()),
        image: Some("minimal".into()),
        ..Default::default()
    }
}

/// (status, code) of a failed call.
fn err<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, String) {
    let e = r.expect_err("an error");
    (e.status().unwrap_or(0), e.code().unwrap_or("").to_string())
}

/// Waits until `pid` is not even a zombie (the server reaps its VMM children).
fn wait_gone(pid: u32) -> bool {
    wait_until(Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    })
}

/// The API tour's fixture: the server, its client (with the token) and what the steps
/// hand on (srv-a's VMM, the restored copy's VMM, the answer to srv-a's delete).
struct Tour {
    served: Served,
    c: Client,
    pid: u32,
    copy_pid: u32,
    removed: Option<Removed>,
}

#[test]
fn server_api_tour() {
    if !require_kvm("server_api_tour") {
        return;
    }
    let served = Served::start("server-tour");
    let c = served.server.client();
    let mut tour = Tour {
        served,
        c,
        pid: 0,
        copy_pid: 0,
        removed: None,
    };
    run_steps(
        &mut tour,
        &[
            ("auth is required", auth_is_required),
            ("create, get and list with filters", create_get_and_list),
            ("exec output is streamed", exec_output_is_streamed),
            (
                "a streamed exec whose client leaves is killed",
                exec_client_gone,
            ),
            ("collected exec: exit code, stdin, timeout", collected_exec),
            ("files: mkdir, write, read, stat, list, remove", files),
            (
                "4xx answers are JSON with stable codes",
                errors_are_json_with_stable_codes,
            ),
            (
                "pause refuses exec and names wrong transitions",
                pause_and_resume,
            ),
            ("metrics per sandbox and per exec", metrics),
            (
                "the OpenAPI document lists every route",
                openapi_lists_every_route,
            ),
            ("events and logs", events_and_logs),
            (
                "snapshot and restore keep the environment",
                snapshot_and_restore,
            ),
            ("a warm pool hands off and refills", warm_pool),
            (
                "a copy from a snapshot takes labels and limits, and is reaped",
                labels_limits_and_reaping,
            ),
            (
                "removing the snapshot leaves no restored VMM",
                removing_the_snapshot,
            ),
            (
                "a followed log ends when its sandbox goes",
                followed_log_ends,
            ),
            ("delete leaves nothing", delete_leaves_nothing),
        ],
    );
}

fn auth_is_required(t: &mut Tour) {
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

fn create_get_and_list(t: &mut Tour) {
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

fn exec_output_is_streamed(t: &mut Tour) {
    let c = &t.c;
    // Streamed exec: output arrives while the command runs.
    let t0 = Instant::now();
    let (mut out, mut errout, mut early_at) = (Vec::new(), Vec::new(), None);
    let cmd = "echo $GREETING early; echo oops >&2; sleep 2; echo late; exit 3";
    let exit = c
        .exec("srv-a", &ExecRequest::new(["sh", "-c", cmd]), |o| match o {
            Output::Stdout(b) => {
                early_at.get_or_insert_with(|| t0.elapsed());
                out.extend_from_slice(b)
            }
            Output::Stderr(b) => errout.extend_from_slice(b),
        })
        .unwrap();
    let total = t0.elapsed();
    assert_eq!(String::from_utf8_lossy(&out), "hello early\nlate\n");
    assert_eq!(String::from_utf8_lossy(&errout), "oops\n");
    assert_eq!(
        (exit.code, exit.signal, exit.timed_out),
        (Some(3), None, false)
    );
    let early_at = early_at.expect("stdout arrived");
    assert!(
        total - early_at >= Duration::from_millis(1500),
        "the early line came {early_at:?} after the start and the end {total:?}: it was not streamed"
    );
}

/// How many processes in srv-a run `sleep 1001` (a /proc scan in the guest; the
/// pattern does not match the scanning shell's own command line).
fn sleepers(c: &Client) -> String {
    let scan = "cat /proc/[0-9]*/cmdline | tr '\\0' ' ' | grep -o 'sleep 100[1]' | wc -l";
    let out = c
        .exec_collect(
            "srv-a",
            &ExecRequest::new(["sh", "-c", scan]),
            OutputEncoding::Text,
        )
        .unwrap();
    out.stdout.trim().to_string()
}

fn exec_client_gone(t: &mut Tour) {
    use std::io::{Read, Write};
    // A raw request, so the client can go away after the first line.
    let state = &t.served.state.0;
    let token = std::fs::read_to_string(state.join("token")).unwrap();
    let body = serde_json::to_vec(&ExecRequest::new([
        "sh",
        "-c",
        "echo started; exec sleep 1001",
    ]))
    .unwrap();
    let mut sock = std::os::unix::net::UnixStream::connect(state.join("kiln.sock")).unwrap();
    write!(
        sock,
        "POST /v1/sandboxes/srv-a/exec HTTP/1.1\r\nHost: kiln\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        token.trim(),
        body.len()
    )
    .unwrap();
    sock.write_all(&body).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"type\":\"stdout\"") {
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        sleepers(&t.c),
        "1",
        "the command runs while its client is there"
    );
    drop(sock);
    let gone = wait_until(Duration::from_secs(30), || sleepers(&t.c) == "0");
    assert!(
        gone,
        "the command outlived its client: {} left",
        sleepers(&t.c)
    );
}

fn collected_exec(t: &mut Tour) {
    let c = &t.c;
    // Collected exec: a non-zero exit, stdin, a timeout.
    let r = c
        .exec_collect(
            "srv-a",
            &ExecRequest::new(["sh", "-c", "echo out; exit 5"]),
            OutputEncoding::Text,
        )
        .unwrap();
    assert_eq!((r.stdout.as_str(), r.exit_code), ("out\n", Some(5)));
    let mut cat = ExecRequest::new(["cat"]);
    cat.stdin = Some("from stdin".into());
    let r = c
        .exec_collect("srv-a", &cat, OutputEncoding::Base64)
        .unwrap();
    assert_eq!(r.stdout, "ZnJvbSBzdGRpbg==");
    let mut slow = ExecRequest::new(["sleep", "30"]);
    slow.timeout_secs = Some(1.0);
    let r = c
        .exec_collect("srv-a", &slow, OutputEncoding::Text)
        .unwrap();
    assert!(r.timed_out && r.exit_code.is_none(), "{r:?}");
}

fn files(t: &mut Tour) {
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

fn errors_are_json_with_stable_codes(t: &mut Tour) {
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

fn pause_and_resume(t: &mut Tour) {
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

fn metrics(t: &mut Tour) {
    let c = &t.c;
    // Metrics: per-sandbox samples from /proc and the VMM's metrics file, exec counts.
    let text = c.metrics().unwrap();
    let value = |prefix: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("kiln_sandbox_info{sandbox=\"srv-a\",state=\"running\"") == 1.0);
    assert!(value("kiln_sandbox_cpu_seconds_total{sandbox=\"srv-a\"}") > 0.0);
    assert!(value("kiln_sandbox_memory_rss_bytes{sandbox=\"srv-a\"}") > 1e6);
    assert!(value("kiln_sandbox_vcpu_exits_total{sandbox=\"srv-a\"}") > 0.0);
    assert!(value("kiln_sandbox_vsock_tx_bytes_total{sandbox=\"srv-a\"}") > 0.0);
    assert!(value("kiln_sandbox_boot_seconds{sandbox=\"srv-a\"}") > 0.0);
    assert_eq!(
        value("kiln_sandbox_execs_total{sandbox=\"srv-a\",status=\"failure\"}"),
        2.0
    );
    assert_eq!(
        value("kiln_sandbox_execs_total{sandbox=\"srv-a\",status=\"timeout\"}"),
        1.0
    );
    assert!(value("kiln_exec_duration_seconds_count") >= 5.0);
    assert!(value("kiln_sandbox_exec_duration_seconds_count{sandbox=\"srv-a\"}") >= 5.0);
}

fn openapi_lists_every_route(t: &mut Tour) {
    let c = &t.c;
    // The OpenAPI document lists every route the server serves.
    let doc = c.openapi().unwrap();
    for (m, p) in kiln_server::routes() {
        assert!(
            doc["paths"][p][m.as_str().to_lowercase()].is_object(),
            "{m} {p} is not documented"
        );
    }
}

fn events_and_logs(t: &mut Tour) {
    let c = &t.c;
    // Events and logs.
    let kinds: Vec<String> = c
        .sandbox_events("srv-a", 100)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.iter().any(|k| k == "created"), "{kinds:?}");
    let r = c
        .raw("GET", "/v1/sandboxes/srv-a/logs?kind=vmm", None)
        .unwrap();
    assert_eq!(
        (r.status, r.content_type.as_deref()),
        (200, Some("text/plain; charset=utf-8"))
    );
}

fn snapshot_and_restore(t: &mut Tour) {
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

fn warm_pool(t: &mut Tour) {
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

fn labels_limits_and_reaping(t: &mut Tour) {
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
    let reaped = wait_until(Duration::from_secs(60), || {
        c.get("srv-copy2")
            .is_err_and(|e| e.status() == Some(404) && e.code() == Some("not_found"))
    });
    assert!(reaped, "srv-copy2 outlived its lifetime:\n{}", server.log());
    let events = c.events(0, 1000).unwrap();
    let why = events
        .iter()
        .find(|e| e.sandbox.as_deref() == Some("srv-copy2") && e.kind == "reaped")
        .map(|e| e.detail["why"].clone());
    assert_eq!(why, Some(serde_json::json!("lifetime")), "{events:?}");
    assert!(
        !state.path("srv-copy2").exists(),
        "the reaped folder is left"
    );
}

fn removing_the_snapshot(t: &mut Tour) {
    let c = &t.c;
    let copy_pid = t.copy_pid;
    c.remove_snapshot("tour-snap").unwrap();
    assert!(c.snapshots().unwrap().is_empty());
    assert!(
        wait_gone(copy_pid),
        "restored VMM {copy_pid} is still there"
    );
}

fn followed_log_ends(t: &mut Tour) {
    let c = &t.c;
    // A followed log ends when its sandbox goes.
    let follower = {
        let c = c.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut got = 0;
            let r = c.follow_logs("srv-a", true, |b| {
                got += b.len();
                true
            });
            let _ = tx.send((r.is_ok(), got));
        });
        rx
    };
    std::thread::sleep(Duration::from_millis(500));

    // Delete leaves nothing: no folder, no VMM process (not even a zombie), no row.
    let removed = c.remove("srv-a").unwrap();
    let (ok, got) = follower
        .recv_timeout(Duration::from_secs(10))
        .expect("the followed log did not end with its sandbox");
    assert!(ok && got > 0, "follow: ok {ok}, {got} bytes");
    t.removed = Some(removed);
}

fn delete_leaves_nothing(t: &mut Tour) {
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

#[test]
fn sandboxes_outlive_the_server() {
    if !require_kvm("sandboxes_outlive_the_server") {
        return;
    }
    let state = TempDir::new("server-restart");
    let _leftovers = Leftovers(state.0.clone());
    let mut first = Serve::start(&state.0);
    let c = first.client();
    let sb = c.create(&minimal("srv-k")).unwrap();
    let pid = sb.pid.unwrap();
    let run = |c: &Client, what: &str| {
        let r = c
            .exec_collect(
                "srv-k",
                &ExecRequest::new(["echo", what]),
                OutputEncoding::Text,
            )
            .unwrap();
        assert_eq!(r.stdout, format!("{what}\n"));
    };
    run(&c, "one");

    // A graceful stop leaves the sandbox running and removes the socket.
    let st = first.signal(libc::SIGTERM);
    assert!(
        st.success(),
        "kiln serve exited with {st}:\n{}",
        first.log()
    );
    assert!(!state.path("kiln.sock").exists());
    assert!(
        process_running(pid as i32),
        "SIGTERM of the server stopped the VMM"
    );

    // A new server adopts it; then a kill -9 of that one loses nothing either.
    let mut second = Serve::start(&state.0);
    let c = second.client();
    assert!(
        second.log().contains("adopted [\"srv-k\"]"),
        "{}",
        second.log()
    );
    run(&c, "two");
    second.signal(libc::SIGKILL);
    assert!(
        process_running(pid as i32),
        "kill -9 of the server stopped the VMM"
    );
    let third = Serve::start(&state.0);
    let c = third.client();
    let listed = c.list(&ListFilter::default()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].state),
        ("srv-k", kiln::State::Running)
    );
    run(&c, "three");
    assert_eq!(c.stop("srv-k").unwrap().step, "agent shutdown");
    assert_eq!(c.get("srv-k").unwrap().state, kiln::State::Stopped);
    assert!(c.remove("srv-k").unwrap().step.is_none());
    assert!(!state.path("srv-k").exists());
    assert!(
        !process_running(pid as i32),
        "the VMM still runs:\n{}",
        third.log()
    );
}
