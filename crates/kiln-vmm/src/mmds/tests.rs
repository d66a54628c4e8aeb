//! MMDS: the store and its limit, merge patch, the guest protocol, and the responder on
//! 127.0.0.1 over real TCP.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::protocol::{parse, respond, Parsed, Request};
use super::*;

fn req(raw: &str) -> Request {
    match parse(raw.as_bytes()) {
        Parsed::Request(r) => r,
        other => panic!("{raw:?}: {other:?}"),
    }
}

fn store_with(v: Value) -> Store {
    let mut s = Store::default();
    s.put(v).unwrap();
    s
}

fn meta() -> Value {
    json!({"latest": {"meta-data": {"ami-id": "ami-1", "tags": {"a": "b"}, "n": 3, "list": ["x", "y"]}}})
}

#[test]
fn merge_patch_follows_rfc_7396() {
    let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
    merge::apply(&mut t, &json!({"a": "z", "c": {"f": null}, "h": [1]}));
    assert_eq!(t, json!({"a": "z", "c": {"d": "e"}, "h": [1]}));
    let mut t = json!({"a": [1, 2]});
    merge::apply(&mut t, &json!({"a": {"b": "c"}}));
    assert_eq!(t, json!({"a": {"b": "c"}}));
    let mut t = json!({"a": "b"});
    merge::apply(&mut t, &json!(["c"]));
    assert_eq!(t, json!(["c"]));
}

#[test]
fn the_store_keeps_to_its_limit_and_to_objects() {
    let mut s = Store::default();
    s.set_size_limit(64);
    s.put(json!({"k": "v"})).unwrap();
    let e = s.put(json!({"k": "v".repeat(100)})).unwrap_err();
    assert!(e.contains("over its limit of 64 bytes"), "{e}");
    assert!(e.contains("--mmds-size-limit"), "{e}");
    assert_eq!(s.data(), &json!({"k": "v"}), "unchanged after a refusal");
    let e = s.patch(&json!({"big": "x".repeat(100)})).unwrap_err();
    assert!(e.contains("over its limit"), "{e}");
    assert_eq!(s.data(), &json!({"k": "v"}));
    s.patch(&json!({"k": null, "j": "w"})).unwrap();
    assert_eq!(s.data(), &json!({"j": "w"}));
    let e = s.put(json!("text")).unwrap_err();
    assert!(e.contains("must be a JSON object"), "{e}");
    assert_eq!(Store::default().size_limit, 51200);
}

#[test]
fn config_names_existing_interfaces_and_a_link_local_address() {
    let c: MmdsConfig = serde_json::from_str(r#"{"network_interfaces": ["eth0"]}"#).unwrap();
    assert_eq!(c.version, MmdsVersion::V1);
    assert_eq!(c.address(), Ipv4Addr::new(169, 254, 169, 254));
    c.validate(&["eth0"]).unwrap();
    let e = c.validate(&[]).unwrap_err();
    assert!(e.contains("PUT /network-interfaces/eth0 first"), "{e}");
    let c: MmdsConfig = serde_json::from_str(
        r#"{"version": "V2", "network_interfaces": ["eth0"], "ipv4_address": "10.0.0.1"}"#,
    )
    .unwrap();
    assert!(c
        .validate(&["eth0"])
        .unwrap_err()
        .contains("not link-local"));
    let c: MmdsConfig = serde_json::from_str(r#"{"network_interfaces": []}"#).unwrap();
    assert!(c.validate(&["eth0"]).unwrap_err().contains("is empty"));
    assert!(
        serde_json::from_str::<MmdsConfig>(r#"{"version": "V3", "network_interfaces": []}"#)
            .is_err()
    );
}

#[test]
fn gets_list_keys_as_text_or_send_json() {
    let mut s = store_with(meta());
    let now = Instant::now();
    let r = respond(
        &mut s,
        &req("GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n"),
        now,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "text/plain");
    assert_eq!(r.body, "ami-id\nlist\nn\ntags/");
    let r = respond(
        &mut s,
        &req("GET /latest/meta-data/ami-id HTTP/1.1\r\n\r\n"),
        now,
    );
    assert_eq!((r.status, r.body.as_str()), (200, "ami-1"));
    let r = respond(
        &mut s,
        &req("GET /latest/meta-data/n HTTP/1.1\r\n\r\n"),
        now,
    );
    assert_eq!(r.status, 501, "numbers have no IMDS form");
    let r = respond(
        &mut s,
        &req("GET /latest/meta-data/tags?x=1 HTTP/1.1\r\nAccept: application/json\r\n\r\n"),
        now,
    );
    assert_eq!((r.status, r.content_type), (200, "application/json"));
    assert_eq!(r.body, r#"{"a":"b"}"#);
    let r = respond(
        &mut s,
        &req("GET /latest/meta-data/list/1 HTTP/1.1\r\nAccept: application/json\r\n\r\n"),
        now,
    );
    assert_eq!(r.body, r#""y""#);
    let r = respond(&mut s, &req("GET /latest/nothing HTTP/1.1\r\n\r\n"), now);
    assert_eq!(r.status, 404);
    assert!(r.body.contains("/latest/nothing"), "{}", r.body);
    s.imds_compat = true;
    let r = respond(
        &mut s,
        &req("GET /latest/meta-data/tags HTTP/1.1\r\nAccept: application/json\r\n\r\n"),
        now,
    );
    assert_eq!((r.content_type, r.body.as_str()), ("text/plain", "a"));
    let r = respond(&mut s, &req("POST / HTTP/1.1\r\n\r\n"), now);
    assert_eq!(r.status, 405);
    assert!(String::from_utf8(r.to_bytes())
        .unwrap()
        .contains("Allow: GET, PUT\r\n"));
}

#[test]
fn v2_needs_a_live_session_token_v1_does_not() {
    let mut s = store_with(meta());
    let t0 = Instant::now();
    let get = "GET /latest/meta-data/ami-id HTTP/1.1\r\n";
    // V1: served with or without a token.
    assert_eq!(respond(&mut s, &req(&format!("{get}\r\n")), t0).status, 200);
    assert_eq!(
        respond(
            &mut s,
            &req(&format!("{get}X-metadata-token: junk\r\n\r\n")),
            t0
        )
        .status,
        200
    );
    s.version = MmdsVersion::V2;
    let r = respond(&mut s, &req(&format!("{get}\r\n")), t0);
    assert_eq!(r.status, 401);
    assert!(r.body.contains("No MMDS token provided"), "{}", r.body);
    let r = respond(
        &mut s,
        &req(&format!("{get}X-metadata-token: junk\r\n\r\n")),
        t0,
    );
    assert_eq!((r.status, r.body.as_str()), (401, "MMDS token not valid."));

    let tok = |ttl: &str| {
        format!("PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: {ttl}\r\n\r\n")
    };
    for bad in ["0", "21601", "-1", "x"] {
        let r = respond(&mut s, &req(&tok(bad)), t0);
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.body.contains("between 1 and 21600"), "{}", r.body);
    }
    let r = respond(&mut s, &req("PUT /latest/api/token HTTP/1.1\r\n\r\n"), t0);
    assert!(
        r.body.contains("X-metadata-token-ttl-seconds"),
        "{}",
        r.body
    );
    let r = respond(
        &mut s,
        &req("PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"),
        t0,
    );
    assert_eq!(r.status, 400);
    let r = respond(&mut s, &req(&tok("60")), t0);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 64);
    let with = format!("{get}x-metadata-token: {}\r\n\r\n", r.body);
    assert_eq!(respond(&mut s, &req(&with), t0).body, "ami-1");
    let aws = format!("{get}X-aws-ec2-metadata-token: {}\r\n\r\n", r.body);
    assert_eq!(respond(&mut s, &req(&aws), t0).status, 200);
    // Expired after its TTL.
    let later = t0 + Duration::from_secs(61);
    assert_eq!(respond(&mut s, &req(&with), later).status, 401);
}

#[test]
fn tokens_are_bounded() {
    let mut t = Tokens::default();
    let now = Instant::now();
    let first = t.issue(now, Duration::from_secs(100));
    for _ in 0..token::MAX_TOKENS {
        t.issue(now, Duration::from_secs(100));
    }
    assert!(!t.valid(&first, now), "the oldest was dropped");
}

#[test]
fn requests_are_bounded_and_malformed_ones_refused() {
    assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Incomplete);
    let status = |raw: &[u8]| match parse(raw) {
        Parsed::Fail(r) => r.status,
        other => panic!("{other:?}"),
    };
    let long = format!("GET /{} HTTP/1.1", "a".repeat(3000));
    assert_eq!(status(long.as_bytes()), 431);
    let many: String = (0..40).map(|i| format!("H{i}: v\r\n")).collect();
    assert_eq!(
        status(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
        431
    );
    assert_eq!(status(&vec![b'a'; 9000]), 431);
    assert_eq!(status(b"GET / HTTP/2\r\n\r\n"), 400);
    assert_eq!(status(b"GET\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\nbad header\r\n\r\n"), 400);
    assert_eq!(
        status(b"GET / HTTP/1.1\r\nContent-Length: 99999\r\n\r\n"),
        413
    );
    assert_eq!(
        status(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        400
    );
    assert_eq!(status(b"GET / HTTP/1.1\r\n\xff: x\r\n\r\n"), 400);
    assert_eq!(
        parse(b"PUT / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab"),
        Parsed::Incomplete
    );
    let r = req("PUT / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd");
    assert_eq!(r.len, 41);
}

fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(raw).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_responder_serves_over_tcp_and_outlasts_slow_clients() {
    let store = Arc::new(Mutex::new(store_with(meta())));
    let addr = server::start(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), store.clone()).unwrap();
    let out = exchange(
        addr,
        b"GET /latest/meta-data/ami-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("Content-Length: 5\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\nami-1"), "{out}");
    // A silent client gets a 408 and the next one is still served.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(b"GET /latest").unwrap();
    let mut out = String::new();
    slow.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    // Data changed through the store is what the guest sees next.
    store
        .lock()
        .unwrap()
        .patch(&json!({"latest": {"meta-data": {"ami-id": "ami-2"}}}))
        .unwrap();
    let out = exchange(addr, b"GET /latest/meta-data/ami-id HTTP/1.1\r\n\r\n");
    assert!(out.ends_with("ami-2"), "{out}");
    // Garbage: a 400, and the responder still serves.
    let out = exchange(addr, b"\x00\x01\x02 nonsense\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    let busy = server::start(SocketAddrV4::new(Ipv4Addr::LOCALHOST, addr.port()), store);
    let e = busy.unwrap_err();
    assert!(e.contains("cannot listen for MMDS on 127.0.0.1:"), "{e}");
}
