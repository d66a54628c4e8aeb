//! The network-interface routes, with a real TAP in the test's own network namespace.

use std::sync::Mutex;

use crate::api::http::Request;
use crate::api::routes::handle;
use crate::api::test_support::vmm;
use crate::devices::virtio::net::tests::{in_netns, TAP_NAME};
use crate::devices::virtio::Tap;
use crate::vmm::Vmm;

/// Status and body of one call.
fn call(vmm: &Mutex<Vmm>, method: &str, path: &str, body: &str) -> (u16, String) {
    let req = Request {
        method: method.into(),
        path: path.into(),
        body: body.into(),
        keep_alive: true,
    };
    let r = handle(vmm, &req);
    (r.status, r.body.unwrap_or_default())
}

fn put(vmm: &Mutex<Vmm>, id: &str, body: &str) -> (u16, String) {
    call(vmm, "PUT", &format!("/network-interfaces/{id}"), body)
}

#[test]
fn interfaces_are_configured_replaced_and_refused_with_a_reason() {
    in_netns(|| {
        let v = vmm();
        let good = format!(
            r#"{{"iface_id": "eth0", "host_dev_name": "{TAP_NAME}", "guest_mac": "06:00:ac:10:00:02",
                "rx_rate_limiter": {{"ops": {{"size": 1000, "refill_time": 1000}}}}}}"#
        );
        assert_eq!(put(&v, "eth0", &good), (204, String::new()));
        // The same id again replaces it.
        assert_eq!(put(&v, "eth0", &good).0, 204);
        let (_, cfg) = call(&v, "GET", "/vm/config", "");
        let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
        assert_eq!(cfg["network-interfaces"][0]["host_dev_name"], TAP_NAME);
        assert_eq!(
            cfg["network-interfaces"][0]["rx_rate_limiter"]["ops"]["size"],
            1000
        );
        assert_eq!(cfg["network-interfaces"].as_array().unwrap().len(), 1);

        let fault = |id: &str, body: &str, want: &str| {
            let (status, msg) = put(&v, id, body);
            assert_eq!(status, 400, "{body}: {msg}");
            assert!(msg.contains(want), "{body}: {msg}");
        };
        fault(
            "eth1",
            &format!(r#"{{"iface_id": "eth1", "host_dev_name": "{TAP_NAME}"}}"#),
            "host_dev_name 'kilnt0' is used by interfaces 'eth0' and 'eth1'",
        );
        fault(
            "eth1",
            r#"{"iface_id": "eth1", "host_dev_name": "kilnnone2"}"#,
            "ip tuntap add kilnnone2 mode tap",
        );
        fault(
            "eth1",
            r#"{"iface_id": "eth1", "host_dev_name": "../tap0"}"#,
            "not a valid interface name",
        );
        fault(
            "eth1",
            r#"{"iface_id": "eth1", "host_dev_name": "tap1", "guest_mac": "06:00:ac:10:00"}"#,
            "six hex bytes",
        );
        fault(
            "eth1",
            r#"{"iface_id": "eth2", "host_dev_name": "tap1"}"#,
            "does not match the one in the path",
        );
        fault(
            "eth1",
            r#"{"iface_id": "eth1", "host_dev_name": "tap1", "tx_rate_limiter": {"bandwidth": {"size": 1}}}"#,
            "refill_time",
        );

        // PATCH before boot changes the configured limiters.
        let (status, msg) = call(
            &v,
            "PATCH",
            "/network-interfaces/eth0",
            r#"{"iface_id": "eth0", "tx_rate_limiter": {"bandwidth": {"size": 1048576, "refill_time": 1000}}}"#,
        );
        assert_eq!(status, 204, "{msg}");
        let (_, cfg) = call(&v, "GET", "/vm/config", "");
        assert!(cfg.contains("1048576"), "{cfg}");
        // Firecracker's merge: a bucket left out of the PATCH stays.
        let (status, msg) = call(
            &v,
            "PATCH",
            "/network-interfaces/eth0",
            r#"{"iface_id": "eth0", "rx_rate_limiter": {"bandwidth": {"size": 4096, "refill_time": 10}}}"#,
        );
        assert_eq!(status, 204, "{msg}");
        let (_, cfg) = call(&v, "GET", "/vm/config", "");
        let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
        let rx = &cfg["network-interfaces"][0]["rx_rate_limiter"];
        assert_eq!(rx["ops"]["size"], 1000, "{rx}");
        assert_eq!(rx["bandwidth"]["size"], 4096, "{rx}");
        let (status, msg) = call(
            &v,
            "PATCH",
            "/network-interfaces/eth9",
            r#"{"iface_id": "eth9", "tx_rate_limiter": {}}"#,
        );
        assert_eq!(status, 400);
        assert!(msg.contains("PUT /network-interfaces/eth9 first"), "{msg}");
    });
}

#[test]
fn a_busy_tap_is_a_400() {
    in_netns(|| {
        let held = Tap::open(TAP_NAME).unwrap();
        let v = vmm();
        let (status, msg) = put(
            &v,
            "eth0",
            &format!(r#"{{"iface_id": "eth0", "host_dev_name": "{TAP_NAME}"}}"#),
        );
        assert_eq!(status, 400);
        assert!(msg.contains("busy: another process has it open"), "{msg}");
        drop(held);
        let (_, cfg) = call(&v, "GET", "/vm/config", "");
        assert!(!cfg.contains("network-interfaces"), "nothing kept: {cfg}");
    });
}
