use serde_json::json;

use super::*;
use crate::{Frame, Kind};

fn reidentify() -> Request {
    Request::Reidentify(Reidentify {
        entropy: "ab".repeat(crate::identity::ENTROPY_LEN),
        unix_time_ns: 1_700_000_000_123_456_789,
        hostname: "sb-1234".into(),
        machine_id: "0123456789abcdef0123456789abcdef".into(),
    })
}

#[test]
fn reidentify_round_trips_with_its_wire_shape() {
    let req = reidentify();
    let f = Frame::json(Kind::Request, 5, &req);
    assert_eq!(f.parse::<Request>().unwrap(), req);
    let v: serde_json::Value = serde_json::from_slice(&f.payload).unwrap();
    assert_eq!(
        v,
        json!({
            "op": "reidentify",
            "entropy": "ab".repeat(64),
            "unix_time_ns": 1_700_000_000_123_456_789u64,
            "hostname": "sb-1234",
            "machine_id": "0123456789abcdef0123456789abcdef",
        })
    );
    // Unknown or missing fields are refused, like every request.
    let mut extra = v.clone();
    extra["surprise"] = json!(1);
    assert!(serde_json::from_value::<Request>(extra).is_err());
    let mut missing = v;
    missing.as_object_mut().unwrap().remove("unix_time_ns");
    assert!(serde_json::from_value::<Request>(missing).is_err());
}

#[test]
fn reidentified_round_trips_and_errors_default_to_empty() {
    let reply = Reply::Reidentified(Reidentified {
        reseeded: true,
        clock_stepped: false,
        hostname: "sb-1234".into(),
        machine_id_written: false,
        errors: vec!["clock_settime: Operation not permitted".into()],
    });
    let f = Frame::json(Kind::Reply, 5, &reply);
    assert_eq!(f.parse::<Reply>().unwrap(), reply);
    let v: serde_json::Value = serde_json::from_slice(&f.payload).unwrap();
    assert_eq!(v["type"], "reidentified");
    assert_eq!(v["errors"][0], "clock_settime: Operation not permitted");

    let bare = json!({
        "type": "reidentified", "reseeded": true, "clock_stepped": true,
        "hostname": "h", "machine_id_written": true,
    });
    match serde_json::from_value::<Reply>(bare).unwrap() {
        Reply::Reidentified(r) => assert!(r.errors.is_empty() && r.reseeded),
        r => panic!("{r:?}"),
    }
}

#[test]
fn debug_never_shows_the_entropy() {
    let shown = format!("{:?}", reidentify());
    assert!(!shown.contains("abab"), "{shown}");
    assert!(
        shown.contains("<128 hex digits>") && shown.contains("sb-1234"),
        "{shown}"
    );
}

#[test]
fn connect_round_trips_with_its_wire_shape() {
    let req = Request::Connect { port: 8080 };
    let f = Frame::json(Kind::Request, 1, &req);
    assert_eq!(f.parse::<Request>().unwrap(), req);
    let v: serde_json::Value = serde_json::from_slice(&f.payload).unwrap();
    assert_eq!(v, json!({"op": "connect", "port": 8080}));
    let f = Frame::json(Kind::Reply, 1, &Reply::Connected);
    assert_eq!(f.parse::<Reply>().unwrap(), Reply::Connected);
}

#[test]
fn connect_refuses_ports_out_of_range_and_extra_or_missing_fields() {
    for bad in [
        json!({"op": "connect", "port": 65536}),
        json!({"op": "connect", "port": -1}),
        json!({"op": "connect", "port": "80"}),
        json!({"op": "connect", "port": 80.5}),
        json!({"op": "connect"}),
        json!({"op": "connect", "port": 80, "host": "10.0.0.1"}),
    ] {
        assert!(
            serde_json::from_value::<Request>(bad.clone()).is_err(),
            "{bad} was accepted"
        );
    }
    assert_eq!(
        serde_json::from_value::<Request>(json!({"op": "connect", "port": 65535})).unwrap(),
        Request::Connect { port: 65535 }
    );
}
