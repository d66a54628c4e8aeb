//! What the API tells about sandboxes: metrics, the OpenAPI document, events and logs.

use super::*;

pub(super) fn metrics(t: &mut Tour) {
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

pub(super) fn openapi_lists_every_route(t: &mut Tour) {
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

pub(super) fn events_and_logs(t: &mut Tour) {
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

pub(super) fn followed_log_ends(t: &mut Tour) {
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
