//! The MMDS routes over the router: config, data store, merge patch, limits.

use serde_json::{json, Value};

use crate::api::test_support::{call, vmm};
use crate::config::NetworkInterface;

fn fault(r: (u16, String), want: &str) {
    assert_eq!(r.0, 400, "{}", r.1);
    assert!(r.1.contains(want), "{}", r.1);
}

#[test]
fn mmds_config_needs_existing_interfaces_and_shows_in_vm_config() {
    let v = vmm();
    let body = r#"{"version": "V2", "network_interfaces": ["eth0"]}"#;
    fault(
        call(&v, "PUT", "/mmds/config", body),
        "PUT /network-interfaces/eth0 first",
    );
    v.lock()
        .unwrap()
        .config
        .network_interfaces
        .push(NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            guest_mac: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        });
    assert_eq!(call(&v, "PUT", "/mmds/config", body), (204, String::new()));
    let (_, cfg) = call(&v, "GET", "/vm/config", "");
    let cfg: Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["mmds-config"]["version"], "V2");
    assert_eq!(cfg["mmds-config"]["network_interfaces"], json!(["eth0"]));
    assert_eq!(
        v.lock().unwrap().mmds.lock().unwrap().version,
        crate::mmds::MmdsVersion::V2
    );
    fault(
        call(
            &v,
            "PUT",
            "/mmds/config",
            r#"{"network_interfaces": ["eth0"], "ipv4_address": "10.1.1.1"}"#,
        ),
        "not link-local",
    );
    fault(
        call(
            &v,
            "PUT",
            "/mmds/config",
            r#"{"version": "V9", "network_interfaces": ["eth0"]}"#,
        ),
        "unknown variant `V9`",
    );
    fault(
        call(
            &v,
            "PUT",
            "/mmds/config",
            r#"{"network_interfaces": ["eth0"], "x": 1}"#,
        ),
        "unknown field `x`",
    );
    // The failed calls changed nothing.
    let (_, cfg) = call(&v, "GET", "/vm/config", "");
    assert!(cfg.contains("\"V2\""), "{cfg}");
}

#[test]
fn the_data_store_is_put_patched_and_read() {
    let v = vmm();
    assert_eq!(call(&v, "GET", "/mmds", ""), (200, "{}".into()));
    let put = r#"{"latest": {"meta-data": {"ami-id": "ami-1", "drop": "me"}}}"#;
    assert_eq!(call(&v, "PUT", "/mmds", put).0, 204);
    let patch = r#"{"latest": {"meta-data": {"drop": null, "new": "x"}}}"#;
    assert_eq!(call(&v, "PATCH", "/mmds", patch).0, 204);
    let (status, body) = call(&v, "GET", "/mmds", "");
    assert_eq!(status, 200);
    let got: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        got,
        json!({"latest": {"meta-data": {"ami-id": "ami-1", "new": "x"}}})
    );
    fault(call(&v, "PUT", "/mmds", "[1]"), "must be a JSON object");
    fault(call(&v, "PUT", "/mmds", "{"), "malformed JSON body");
    v.lock().unwrap().mmds.lock().unwrap().set_size_limit(100);
    let big = format!(r#"{{"k": "{}"}}"#, "v".repeat(200));
    fault(
        call(&v, "PUT", "/mmds", &big),
        "over its limit of 100 bytes",
    );
    fault(call(&v, "PATCH", "/mmds", &big), "--mmds-size-limit");
    let (_, body) = call(&v, "GET", "/mmds", "");
    assert!(body.contains("ami-1"), "kept after refusals: {body}");
}
