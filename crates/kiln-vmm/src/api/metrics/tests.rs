use std::sync::mpsc::channel;
use std::sync::Mutex;

use super::super::http::Request;
use super::super::routes::handle;
use crate::config::HostFacts;
use crate::vmm::{ConsoleTarget, Vmm};

fn call(vmm: &Mutex<Vmm>, path: &str, body: &str) -> (u16, String) {
    let req = Request {
        method: "PUT".into(),
        path: path.into(),
        body: body.into(),
        keep_alive: true,
    };
    let r = handle(vmm, &req);
    (r.status, r.body.unwrap_or_default())
}

/// The only test that sets the process-wide metrics destination.
#[test]
fn put_metrics_validates_is_set_once_and_flush_writes_a_line() {
    let (tx, _rx) = channel();
    let vmm = Mutex::new(Vmm::new(
        "t".into(),
        ConsoleTarget::Off,
        HostFacts::default(),
        tx,
    ));
    let dir = std::env::temp_dir().join(format!("kiln-api-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("metrics.json");
    let body = |p: &std::path::Path| format!(r#"{{"metrics_path": "{}"}}"#, p.display());

    // Without a destination FlushMetrics does nothing, as in Firecracker.
    let flush = r#"{"action_type": "FlushMetrics"}"#;
    assert_eq!(call(&vmm, "/actions", flush).0, 204);

    let (status, msg) = call(&vmm, "/metrics", r#"{"metrics_path": "/tmp/m", "x": 1}"#);
    assert_eq!(status, 400);
    assert!(msg.contains("unknown field"), "{msg}");
    let (status, msg) = call(&vmm, "/metrics", "{}");
    assert!(status == 400 && msg.contains("metrics_path"), "{msg}");
    let (status, msg) = call(&vmm, "/metrics", &body(&dir.join("missing/m.json")));
    assert_eq!(status, 400);
    assert!(
        msg.contains("does not exist") && msg.contains("create it"),
        "{msg}"
    );

    assert_eq!(call(&vmm, "/metrics", &body(&path)), (204, String::new()));
    let (status, msg) = call(&vmm, "/metrics", &body(&dir.join("other.json")));
    assert!(status == 400 && msg.contains("only once"), "{msg}");

    // The file holds the latest line, rewritten in place by each flush.
    let mut uptimes = Vec::new();
    for _ in 0..2 {
        assert_eq!(call(&vmm, "/actions", flush).0, 204);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v["utc_timestamp_ms"].as_u64().unwrap() > 0, "{text}");
        assert!(v["vcpu"]["exits_total"].is_u64(), "{text}");
        uptimes.push(v["uptime_ms"].as_u64().unwrap());
    }
    assert!(uptimes[1] >= uptimes[0], "{uptimes:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
