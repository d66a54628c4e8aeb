//! kiln serve against clients that hold connections without using them (issue 14 item
//! 2), on a real unix socket and loopback TCP, without guests: idle connections past the
//! cap are closed oldest first and never the authenticated ones, a server full of
//! authenticated connections answers 503, the per-peer cap counts each IP apart, slow
//! headers and idle connections are closed, a stalled body gets 408, and a body larger
//! than the body memory budget 413.

mod support;

use std::time::Duration;

use kiln_server::client::ListFilter;
use kiln_server::Limits;
use support::{limits, Conn, Server};

const LONG: Duration = Duration::from_secs(20);

#[test]
fn idle_connections_past_the_cap_go_oldest_first_and_authenticated_ones_stay() {
    let s = Server::start("evict", limits(8, 8));
    let token = s.token.clone();
    let mut authed = s.unix();
    assert_eq!(
        authed.get("/v1/sandboxes", Some(&token)).unwrap().status,
        200
    );
    let mut idle: Vec<Conn> = (0..7).map(|_| s.unix()).collect();
    // The cap is reached: each newcomer closes the oldest unauthenticated connection.
    let newcomer = s.unix();
    assert!(
        idle[0].closed_within(LONG),
        "the oldest idle connection stays open"
    );
    idle.push(newcomer);
    for _ in 0..40 {
        idle.push(s.unix());
    }
    assert!(idle[1].closed_within(LONG));
    // The authenticated connection was spared all along, and works.
    assert_eq!(
        authed.get("/v1/sandboxes", Some(&token)).unwrap().status,
        200
    );
    // An authenticated client (a connection per request) is served among the idle ones.
    let c = s.client();
    for _ in 0..20 {
        idle.push(s.unix());
        assert!(c.list(&ListFilter::default()).unwrap().is_empty());
    }
    // The newest idle connection is still served (health needs no token).
    let last = idle.last_mut().unwrap();
    assert_eq!(last.get("/v1/health", None).unwrap().status, 200);
}

#[test]
fn a_server_full_of_authenticated_connections_answers_503() {
    let s = Server::start("full", limits(3, 3));
    let token = s.token.clone();
    let mut held: Vec<Conn> = (0..3)
        .map(|_| {
            let mut c = s.unix();
            assert_eq!(c.get("/v1/sandboxes", Some(&token)).unwrap().status, 200);
            c
        })
        .collect();
    let mut refused = s.unix();
    let a = refused.get("/v1/health", None).unwrap();
    assert_eq!(
        (a.status, a.code().as_str()),
        (503, "too_many_connections"),
        "{a:?}"
    );
    assert!(a.body.contains("KILN_SERVE_MAX_CONNS"), "{}", a.body);
    assert!(refused.closed_within(LONG));
    // Room again once one goes.
    drop(held.pop());
    let served = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        s.unix()
            .get("/v1/health", None)
            .is_ok_and(|a| a.status == 200)
    });
    assert!(served, "no room after a connection closed");
    assert_eq!(
        held[0].get("/v1/sandboxes", Some(&token)).unwrap().status,
        200
    );
}

#[test]
fn the_per_peer_cap_counts_each_ip_apart() {
    let s = Server::start("per-peer", limits(100, 2));
    let token = s.token.clone();
    let _held: Vec<Conn> = (0..2)
        .map(|_| {
            let mut c = s.tcp_from("127.0.0.1");
            assert_eq!(c.get("/v1/sandboxes", Some(&token)).unwrap().status, 200);
            c
        })
        .collect();
    let a = s.tcp_from("127.0.0.1").get("/v1/health", None).unwrap();
    assert_eq!(
        (a.status, a.code().as_str()),
        (503, "too_many_connections"),
        "{a:?}"
    );
    assert!(
        a.body.contains("127.0.0.1 holds 2 connections") && a.body.contains("PER_PEER"),
        "{}",
        a.body
    );
    // Another peer is not held back by that one.
    let mut other = s.tcp_from("127.0.0.2");
    assert_eq!(
        other.get("/v1/sandboxes", Some(&token)).unwrap().status,
        200
    );
    // Nor is the unix socket's peer (a uid).
    assert_eq!(s.unix().get("/v1/health", None).unwrap().status, 200);
}

#[test]
fn slow_headers_are_cut_and_idle_connections_wait_for_the_idle_timeout() {
    let s = Server::start(
        "slow-headers",
        Limits {
            header_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    );
    let mut slow = s.unix();
    slow.send(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n");
    let mut slow_tcp = s.tcp_from("127.0.0.1");
    slow_tcp.send(b"GET /v1/he");
    // Silent, not slow: the header timeout does not apply before the first byte, nor
    // after a request on a kept-alive connection.
    let mut silent = s.unix();
    let mut kept = s.unix();
    assert_eq!(kept.get("/v1/health", None).unwrap().status, 200);
    assert!(slow.closed_within(LONG), "slowloris headers are held open");
    assert!(
        slow_tcp.closed_within(LONG),
        "slowloris headers are held open (TCP)"
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(silent.get("/v1/health", None).unwrap().status, 200);
    assert_eq!(kept.get("/v1/health", None).unwrap().status, 200);

    let s = Server::start(
        "idle",
        Limits {
            idle_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    );
    let mut kept = s.unix();
    assert_eq!(kept.get("/v1/health", None).unwrap().status, 200);
    let mut silent = s.tcp_from("127.0.0.1");
    assert!(
        kept.closed_within(LONG),
        "an idle kept-alive connection stays open"
    );
    assert!(silent.closed_within(LONG), "a silent connection stays open");
}

#[test]
fn a_stalled_body_is_answered_408_and_closed() {
    let s = Server::start(
        "stalled-body",
        Limits {
            body_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    );
    let mut c = s.unix();
    c.send(
        format!(
            "POST /v1/sandboxes/x/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"cmd\":",
            s.token
        )
        .as_bytes(),
    );
    let a = c.answer().unwrap();
    assert_eq!(
        (a.status, a.code().as_str()),
        (408, "request_timeout"),
        "{a:?}"
    );
    assert!(a.close, "a 408 must close the connection: {a:?}");
    assert!(c.closed_within(LONG));
}

#[test]
fn a_body_larger_than_the_memory_budget_is_refused_with_what_to_do() {
    let s = Server::start(
        "budget",
        Limits {
            body_memory: 1 << 20,
            ..Limits::default()
        },
    );
    let body = format!(r#"{{"cmd":["cat"],"stdin":"{}"}}"#, "a".repeat(600 << 10));
    let r = s
        .client()
        .raw(
            "POST",
            "/v1/sandboxes/x/exec",
            Some(("application/json", body.as_bytes())),
        )
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (r.status, v["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{v}"
    );
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("KILN_SERVE_BODY_MEMORY_MIB"), "{msg}");
    // Within the budget, the body is read (and the unknown sandbox is named).
    let small = r#"{"cmd":["cat"],"stdin":"hi"}"#;
    let r = s
        .client()
        .raw(
            "POST",
            "/v1/sandboxes/x/exec",
            Some(("application/json", small.as_bytes())),
        )
        .unwrap();
    assert_eq!(r.status, 404);
}
