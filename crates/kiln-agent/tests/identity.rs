//! `reidentify` through the server on the host (no VM): bad fields get an error
//! reply with the request's id and the connection keeps serving; a good request
//! runs every step (on a fake: host tests never touch the host's RNG, clock or
//! hostname) and the reply says what was done. The real system calls are proven
//! by the e2e fork test.

mod common;

use common::*;
use kiln_agent::server::Waiter;
use kiln_proto::identity::{encode_hex, ENTROPY_LEN};
use kiln_proto::{ErrorKind, Kind, Reidentified, Reidentify, Reply, Request};

const MID: &str = "0123456789abcdef0123456789abcdef";

fn req(entropy: &[u8], hostname: &str, machine_id: &str) -> Request {
    Request::Reidentify(Reidentify {
        entropy: encode_hex(entropy),
        unix_time_ns: 1_700_000_000_000_000_000,
        hostname: hostname.into(),
        machine_id: machine_id.into(),
    })
}

#[test]
fn bad_fields_are_refused_with_their_id_and_serving_goes_on() {
    let a = agent(Waiter::PerPid, "reid-bad");
    let mut c = a.connect();
    let good = [9u8; ENTROPY_LEN];
    let cases = [
        (req(&good[..63], "sb-1", MID), "entropy"),
        (req(&[9u8; 65], "sb-1", MID), "entropy"),
        (req(&good, "sb_1", MID), "hostname"),
        (req(&good, &"h".repeat(65), MID), "hostname"),
        (req(&good, "sb-1", "0123"), "machine id"),
    ];
    for (i, (r, what)) in cases.iter().enumerate() {
        let id = 10 + i as u32;
        let e = c.call_err(id, r);
        assert_eq!(e.kind, ErrorKind::InvalidInput, "{e:?}");
        assert!(e.message.contains(what), "{e:?}");
    }
    // Not hex at all: refused the same way, and the entropy is never echoed.
    let raw = format!(
        r#"{{"op":"reidentify","entropy":"{}","unix_time_ns":1,"hostname":"h","machine_id":"{MID}"}}"#,
        "zq".repeat(ENTROPY_LEN)
    );
    c.send(Kind::Request, 0, 20, raw.as_bytes());
    let (id, e) = c.error_reply();
    assert_eq!((id, e.kind), (20, ErrorKind::InvalidInput));
    assert!(!e.message.contains("zqzq"), "{e:?}");
    // A field of the wrong type is a protocol error, also answered on its id.
    c.send(
        Kind::Request,
        0,
        21,
        br#"{"op":"reidentify","entropy":"","unix_time_ns":"soon","hostname":"h","machine_id":""}"#,
    );
    let (id, e) = c.error_reply();
    assert_eq!((id, e.kind), (21, ErrorKind::Protocol));

    assert!(
        a.identity.calls.lock().unwrap().is_empty(),
        "nothing changed"
    );
    assert!(matches!(c.call(22, &Request::Ping), Reply::Pong { .. }));
}

#[test]
fn a_good_request_runs_every_step_and_can_be_repeated() {
    let a = agent(Waiter::PerPid, "reid-ok");
    let mut c = a.connect();
    let entropy: Vec<u8> = (0..ENTROPY_LEN as u8).collect();
    let want = Reply::Reidentified(Reidentified {
        reseeded: true,
        clock_stepped: true,
        hostname: "sb-2.example".into(),
        machine_id_written: true,
        errors: vec![],
    });
    for id in [1, 2] {
        assert_eq!(c.call(id, &req(&entropy, "sb-2.example", MID)), want);
    }
    let calls = a.identity.calls.lock().unwrap().clone();
    let one = [
        format!("reseed {}", encode_hex(&entropy)),
        "clock 1700000000000000000".to_string(),
        "hostname sb-2.example".to_string(),
        format!("machine-id {MID}"),
    ];
    assert_eq!(calls, [&one[..], &one[..]].concat());
    assert!(matches!(c.call(3, &Request::Ping), Reply::Pong { .. }));
}
