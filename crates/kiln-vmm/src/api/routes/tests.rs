use std::sync::mpsc::channel;

use super::*;
use crate::config::HostFacts;
use crate::vmm::ConsoleTarget;

fn call(vmm: &Mutex<Vmm>, method: &str, path: &str, body: &str) -> Response {
    let req = Request {
        method: method.into(),
        path: path.into(),
        body: body.into(),
        keep_alive: true,
    };
    handle(vmm, &req)
}

#[test]
fn put_vsock_validates_and_shows_in_vm_config() {
    let (tx, _rx) = channel();
    let vmm = Mutex::new(Vmm::new(
        "t".into(),
        ConsoleTarget::Off,
        HostFacts::default(),
        tx,
    ));
    let dir = std::env::temp_dir();
    let uds = dir.join(format!("kiln-routes-vsock-{}.sock", std::process::id()));
    let body = format!(
        r#"{{"vsock_id": "vsock0", "guest_cid": 3, "uds_path": "{}"}}"#,
        uds.display()
    );
    assert_eq!(call(&vmm, "PUT", "/vsock", &body).status, 204);
    let cfg = call(&vmm, "GET", "/vm/config", "").body.unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["vsock"]["guest_cid"], 3);
    assert_eq!(cfg["vsock"]["uds_path"], uds.display().to_string());

    let fault = |body: &str| {
        let r = call(&vmm, "PUT", "/vsock", body);
        assert_eq!(r.status, 400, "{body}");
        r.body.unwrap()
    };
    assert!(
        fault(r#"{"guest_cid": 3, "uds_path": "/tmp/x", "bogus": 1}"#).contains("unknown field")
    );
    assert!(fault(r#"{"guest_cid": 2, "uds_path": "/tmp/x.sock"}"#).contains("guest_cid"));
    let taken = dir.display().to_string();
    let msg = fault(&format!(r#"{{"guest_cid": 3, "uds_path": "{taken}"}}"#));
    assert!(msg.contains("already exists"), "{msg}");
    // The failed PUTs changed nothing.
    let cfg = call(&vmm, "GET", "/vm/config", "").body.unwrap();
    assert!(cfg.contains(&uds.display().to_string()));
}

fn vmm_on(host: HostFacts) -> Mutex<Vmm> {
    let (tx, _rx) = channel();
    Mutex::new(Vmm::new("t".into(), ConsoleTarget::Off, host, tx))
}

/// The status and `fault_message` of a call.
fn fault(vmm: &Mutex<Vmm>, method: &str, path: &str, body: &str) -> (u16, String) {
    let r = call(vmm, method, path, body);
    let v: serde_json::Value = serde_json::from_str(&r.body.unwrap_or_default()).unwrap();
    (
        r.status,
        v["fault_message"].as_str().unwrap_or_default().into(),
    )
}

/// Clients match on these texts: they must not change with the error types behind them.
#[test]
fn out_of_order_and_unknown_calls_keep_their_exact_messages() {
    let vmm = vmm_on(HostFacts::default());
    let start = r#"{"action_type": "InstanceStart"}"#;
    assert_eq!(
        fault(&vmm, "PUT", "/actions", start),
        (
            400,
            "cannot start the microVM: no boot source; PUT /boot-source with a kernel_image_path first"
                .into()
        )
    );
    assert_eq!(
        fault(
            &vmm,
            "PUT",
            "/actions",
            r#"{"action_type": "SendCtrlAltDel"}"#
        ),
        (
            400,
            "the microVM is not running; send InstanceStart first".into()
        )
    );
    assert_eq!(
        fault(&vmm, "PUT", "/actions", r#"{"action_type": "Explode"}"#).1,
        "unknown action_type 'Explode'; use InstanceStart, SendCtrlAltDel or FlushMetrics"
    );
    assert_eq!(
        fault(&vmm, "DELETE", "/drives/x", "").1,
        "invalid request method and/or path: DELETE /drives/x"
    );
    assert_eq!(
        fault(
            &vmm,
            "PATCH",
            "/drives/a",
            r#"{"drive_id": "a", "path_on_host": "/x"}"#
        )
        .1,
        "drive 'a' does not exist; PUT /drives/a first"
    );
    assert_eq!(
        fault(
            &vmm,
            "PUT",
            "/drives/a",
            r#"{"drive_id": "b", "path_on_host": "/x"}"#
        )
        .1,
        "the drive_id in the body ('b') does not match the one in the path ('a')"
    );
}

#[test]
fn machine_config_is_checked_against_the_vmms_host_facts() {
    let vmm = vmm_on(HostFacts {
        mem_mib: Some(1024),
    });
    let mc = |mib: u64| format!(r#"{{"vcpu_count": 1, "mem_size_mib": {mib}}}"#);
    let (status, e) = fault(&vmm, "PUT", "/machine-config", &mc(2048));
    assert_eq!(status, 400);
    assert!(e.contains("host's 1024 MiB"), "{e}");
    assert_eq!(call(&vmm, "PUT", "/machine-config", &mc(1024)).status, 204);
    let (_, e) = fault(
        &vmm,
        "PATCH",
        "/machine-config",
        r#"{"mem_size_mib": 4096}"#,
    );
    assert!(e.contains("host's 1024 MiB"), "{e}");
    // The failed calls changed nothing.
    let shown = call(&vmm, "GET", "/machine-config", "").body.unwrap();
    assert!(shown.contains(r#""mem_size_mib":1024"#), "{shown}");
}

#[test]
fn firecracker_defaults_pass_and_ignored_choices_are_refused() {
    let vmm = vmm_on(HostFacts::default());
    let defaults = r#"{"vcpu_count": 2, "mem_size_mib": 256, "smt": false,
        "track_dirty_pages": false, "cpu_template": "None", "huge_pages": "None"}"#;
    assert_eq!(call(&vmm, "PUT", "/machine-config", defaults).status, 204);
    let (status, e) = fault(
        &vmm,
        "PATCH",
        "/machine-config",
        r#"{"track_dirty_pages": true}"#,
    );
    assert_eq!(status, 400);
    assert!(
        e.contains("track_dirty_pages: true is not supported"),
        "{e}"
    );
    let (_, e) = fault(
        &vmm,
        "PATCH",
        "/machine-config",
        r#"{"cpu_template": "T2"}"#,
    );
    assert!(e.contains("cpu_template \"T2\""), "{e}");
    let shown: serde_json::Value =
        serde_json::from_str(&call(&vmm, "GET", "/machine-config", "").body.unwrap()).unwrap();
    assert_eq!(shown["cpu_template"], "None");
    assert_eq!(shown["track_dirty_pages"], false);
}

#[test]
fn version_and_serial() {
    use crate::api::test_support::{call, vmm};
    let v = vmm();
    let (status, body) = call(&v, "GET", "/version", "");
    assert_eq!(status, 200);
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["firecracker_version"], env!("CARGO_PKG_VERSION"));

    let dir = crate::test_dir::TempDir::new("serial");
    let out = dir.path().join("serial.log");
    let body = format!(r#"{{"serial_out_path": "{}"}}"#, out.display());
    assert_eq!(call(&v, "PUT", "/serial", &body), (204, String::new()));
    assert!(out.is_file(), "opened at the PUT");
    let fault = |body: &str, want: &str| {
        let (status, msg) = call(&v, "PUT", "/serial", body);
        assert_eq!(status, 400, "{body}: {msg}");
        assert!(msg.contains(want), "{body}: {msg}");
    };
    fault(r#"{"serial_out_path": ""}"#, "is empty");
    fault(
        r#"{"serial_out_path": "/no/such/dir/x"}"#,
        "serial_out_path /no/such/dir/x",
    );
    fault(r#"{"path": "/tmp/x"}"#, "unknown field `path`");
}

#[test]
fn put_entropy_sets_the_rng_limiter() {
    use crate::api::test_support::{call, vmm};
    let v = vmm();
    let body = r#"{"rate_limiter": {"bandwidth": {"size": 1024, "refill_time": 100}}}"#;
    assert_eq!(call(&v, "PUT", "/entropy", body), (204, String::new()));
    let (_, cfg) = call(&v, "GET", "/vm/config", "");
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["entropy"]["rate_limiter"]["bandwidth"]["size"], 1024);
    assert_eq!(call(&v, "PUT", "/entropy", "{}").0, 204);
    let fault = |body: &str, want: &str| {
        let (status, msg) = call(&v, "PUT", "/entropy", body);
        assert_eq!(status, 400, "{body}: {msg}");
        assert!(msg.contains(want), "{body}: {msg}");
    };
    fault(
        r#"{"rate_limiter": {"ops": {"size": 1, "refill_time": 9999999999999}}}"#,
        "entropy.rate_limiter.ops: refill_time",
    );
    fault(
        r#"{"rate_limiter": {"bandwidth": {"size": 1}}}"#,
        "refill_time",
    );
    fault(r#"{"limiter": {}}"#, "unknown field `limiter`");
}
