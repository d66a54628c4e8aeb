//! The server on a real unix socket and loopback TCP, driven by the blocking client,
//! without guests: auth, error shapes, the routes that need no VMM, the socket's mode,
//! the non-loopback refusal and shutdown. (Sandboxes are exercised in
//! crates/kiln-e2e/tests/server.rs.)

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use kiln_server::api::CreateSandbox;
use kiln_server::client::{Client, ClientError, ListFilter};
use kiln_server::{ServeError, ServeOptions};

fn wait_up(c: &Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.health().is_err() {
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the test's state directory however the test ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn server_and_client_over_real_sockets() {
    let state = std::env::temp_dir().join(format!("kiln-server-local-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).unwrap();
    let _cleanup = RemoveOnDrop(state.clone());
    // This test binary has this one test: the process-wide variable is ours.
    std::env::set_var("KILN_STATE_DIR", &state);
    std::env::remove_var("KILN_TOKEN");

    let refused = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(kiln_server::run(
            ServeOptions {
                listen: Some("0.0.0.0:0".parse().unwrap()),
                ..Default::default()
            },
            async {},
        ));
    let Err(ServeError::NonLoopback(_)) = refused else {
        panic!("a non-loopback address must be refused: {refused:?}")
    };
    assert!(refused
        .unwrap_err()
        .to_string()
        .contains("--allow-non-loopback"));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(kiln_server::run(
                ServeOptions {
                    listen: Some(format!("127.0.0.1:{port}").parse().unwrap()),
                    ..Default::default()
                },
                async {
                    let _ = stop_rx.await;
                },
            ))
    });
    let sock = state.join("kiln.sock");
    let url = format!("unix://{}", sock.display());
    let c = Client::new(&url, None).unwrap();
    wait_up(&c);
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(state.join("token"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // The token beside the socket was found; over TCP it must be given.
    assert!(c.list(&ListFilter::default()).unwrap().is_empty());
    let tcp = Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
    assert_eq!(tcp.health().unwrap().status, "ok");
    let e = tcp.list(&ListFilter::default()).unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(401), Some("unauthorized")));
    let token = std::fs::read_to_string(state.join("token"))
        .unwrap()
        .trim()
        .to_string();
    let tcp = tcp.with_token(Some(token.clone()));
    assert!(tcp.list(&ListFilter::default()).unwrap().is_empty());
    let wrong = c.clone().with_token(Some("0".repeat(64)));
    assert_eq!(wrong.metrics().unwrap_err().status(), Some(401));

    // Error shapes.
    fn err<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, String) {
        let e = r.expect_err("an error");
        (e.status().unwrap_or(0), e.code().unwrap_or("").to_string())
    }
    assert_eq!(err(c.get("no-such")), (404, "not_found".into()));
    assert_eq!(err(c.get("bad_id")), (404, "not_found".into()));
    assert_eq!(
        err(c.remove_snapshot("nope")),
        (404, "snapshot_not_found".into())
    );
    assert_eq!(
        err(c.sandbox_events("no-such", 10)),
        (404, "not_found".into())
    );
    assert_eq!(err(c.events(0, 0)), (400, "invalid_input".into()));
    let bad_image = CreateSandbox {
        image: Some("no-such-image".into()),
        ..Default::default()
    };
    assert_eq!(err(c.create(&bad_image)), (400, "invalid_input".into()));
    let bad = CreateSandbox {
        cpus: Some(0),
        image: Some("minimal".into()),
        ..Default::default()
    };
    assert_eq!(err(c.create(&bad)), (400, "invalid_input".into()));
    for (method, target, body, status, code) in [
        ("POST", "/v1/sandboxes", "{", 400, "bad_request"),
        (
            "POST",
            "/v1/sandboxes",
            r#"{"cpus":"two"}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/sandboxes/x/exec",
            r#"{"cmd":"ls"}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/sandboxes/x/exec?stream=maybe",
            r#"{"cmd":["ls"]}"#,
            400,
            "bad_request",
        ),
        ("GET", "/v1/sandboxes?owner=me", "", 400, "invalid_input"),
        ("GET", "/v1/nope", "", 404, "no_route"),
        ("PATCH", "/v1/sandboxes", "", 405, "method_not_allowed"),
        (
            "GET",
            "/v1/sandboxes/x/files?path=relative",
            "",
            400,
            "invalid_input",
        ),
        (
            "POST",
            "/v1/snapshots/..%2Fetc/restore",
            "",
            404,
            "snapshot_not_found",
        ),
    ] {
        let body = (!body.is_empty()).then_some(("application/json", body.as_bytes()));
        let r = c.raw(method, target, body).unwrap();
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/json"),
            "{method} {target}"
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (r.status, v["error"]["code"].as_str().unwrap()),
            (status, code),
            "{method} {target}: {v}"
        );
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }

    // Metadata routes.
    let doc = c.openapi().unwrap();
    for (m, p) in kiln_server::routes() {
        assert!(
            doc["paths"][p][m.as_str().to_lowercase()].is_object(),
            "{m} {p}"
        );
    }
    let text = c.metrics().unwrap();
    assert!(text.contains("kiln_http_requests_total{route=\"/v1/sandboxes/{id}\",method=\"GET\",status=\"404\"} 2"), "{text}");
    assert!(c.snapshots().unwrap().is_empty());
    let events = c.events(0, 1000).unwrap();
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));

    // A second server on the same socket is refused while this one runs.
    let second = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(kiln_server::run(ServeOptions::default(), async {}));
    assert!(
        matches!(second, Err(ServeError::AlreadyServing(_))),
        "{second:?}"
    );

    stop_tx.send(()).unwrap();
    server.join().unwrap().unwrap();
    assert!(!sock.exists(), "the socket is removed on shutdown");
    assert!(matches!(c.health(), Err(ClientError::Connect { .. })));
}
