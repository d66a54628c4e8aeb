use std::time::Duration;

use super::sandbox::{
    counters, last_line, parse_cpu_ticks, parse_rss, vmm_counters, SandboxSample, VmmCounters,
};
use super::{ExecStatus, ServerMetrics};

#[test]
fn proc_fields_are_read_after_the_command_name() {
    // A command name with spaces and a ')' must not shift the fields.
    let stat = "1234 (kiln vmm) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 99";
    assert_eq!(parse_cpu_ticks(stat), Some(300));
    assert_eq!(parse_cpu_ticks("garbage"), None);
    assert_eq!(
        parse_rss("Name:\tkiln-vmm\nVmRSS:\t   2048 kB\n"),
        Some(2 * 1024 * 1024)
    );
    assert_eq!(parse_rss("Name:\tx\n"), None);
}

/// Removes a test's directory however the test ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_last_complete_metrics_line_is_read() {
    let dir = std::env::temp_dir().join(format!("kiln-server-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = RemoveOnDrop(dir.clone());
    let p = dir.join("metrics.json");
    let line = |exits: u64| {
        format!(
            r#"{{"vcpu":{{"exits_total":{exits},"hlt":1}},"vsock":{{"rx_bytes":10,"tx_bytes":20}}}}"#
        )
    };
    std::fs::write(&p, format!("{}\n{}\n{{\"vcpu\":", line(1), line(2))).unwrap();
    let last = last_line(&p).unwrap();
    let want = VmmCounters {
        vcpu_exits: 2,
        vsock_rx_bytes: 10,
        vsock_tx_bytes: 20,
    };
    assert_eq!(counters(&last), Some((want, true)));
    // kiln-vmm's lines are totals: the last one counts, not their sum.
    assert_eq!(vmm_counters(&p), Some(want));
    std::fs::write(&p, "{\"partial\":").unwrap();
    assert_eq!(last_line(&p), None);
    assert_eq!(last_line(&dir.join("missing")), None);
    assert_eq!(counters(r#"{"vcpu":{}}"#), None);
}

#[test]
fn the_exposition_has_counters_a_histogram_and_per_sandbox_lines() {
    let m = ServerMetrics::default();
    m.http_request("/v1/sandboxes/{id}", "GET", 200);
    m.http_request("/v1/sandboxes/{id}", "GET", 200);
    m.http_request("unmatched", "GET", 404);
    m.exec(
        "sb-1",
        ExecStatus::of(Some(0), false),
        Some(Duration::from_millis(30)),
    );
    m.exec(
        "sb-1",
        ExecStatus::of(Some(3), false),
        Some(Duration::from_secs(2)),
    );
    m.exec(
        "sb-gone",
        ExecStatus::of(None, false),
        Some(Duration::from_secs(400)),
    );
    let sb = SandboxSample {
        id: "sb-1".into(),
        state: "running".into(),
        backend: "kiln".into(),
        image: "minimal".into(),
        boot_ms: Some(1500),
        cpu_seconds: Some(0.5),
        rss_bytes: Some(4096),
        vmm: Some(VmmCounters {
            vcpu_exits: 7,
            vsock_rx_bytes: 8,
            vsock_tx_bytes: 9,
        }),
        block_io_errors: Some(3),
        net: Some(super::sandbox::NetBytes { rx: 11, tx: 12 }),
    };
    let text = m.render(&[sb]);
    for want in [
        "kiln_http_requests_total{route=\"/v1/sandboxes/{id}\",method=\"GET\",status=\"200\"} 2",
        "kiln_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "kiln_sandbox_execs_total{sandbox=\"sb-1\",status=\"success\"} 1",
        "kiln_sandbox_execs_total{sandbox=\"sb-1\",status=\"failure\"} 1",
        "kiln_exec_duration_seconds_bucket{le=\"0.05\"} 1",
        "kiln_exec_duration_seconds_bucket{le=\"2.5\"} 2",
        "kiln_exec_duration_seconds_bucket{le=\"300\"} 2",
        "kiln_exec_duration_seconds_bucket{le=\"+Inf\"} 3",
        "kiln_exec_duration_seconds_count 3",
        "# TYPE kiln_exec_duration_seconds histogram",
        "# TYPE kiln_sandbox_exec_duration_seconds histogram",
        "kiln_sandbox_exec_duration_seconds_bucket{sandbox=\"sb-1\",le=\"0.05\"} 1",
        "kiln_sandbox_exec_duration_seconds_bucket{sandbox=\"sb-1\",le=\"+Inf\"} 2",
        "kiln_sandbox_exec_duration_seconds_sum{sandbox=\"sb-1\"} 2.03",
        "kiln_sandbox_exec_duration_seconds_count{sandbox=\"sb-1\"} 2",
        "kiln_sandbox_info{sandbox=\"sb-1\",state=\"running\",backend=\"kiln\",image=\"minimal\"} 1",
        "kiln_sandbox_boot_seconds{sandbox=\"sb-1\"} 1.5",
        "kiln_sandbox_cpu_seconds_total{sandbox=\"sb-1\"} 0.5",
        "kiln_sandbox_memory_rss_bytes{sandbox=\"sb-1\"} 4096",
        "kiln_sandbox_vcpu_exits_total{sandbox=\"sb-1\"} 7",
        "kiln_sandbox_vsock_rx_bytes_total{sandbox=\"sb-1\"} 8",
        "kiln_sandbox_vsock_tx_bytes_total{sandbox=\"sb-1\"} 9",
        "# TYPE kiln_sandbox_block_io_errors_total counter",
        "kiln_sandbox_block_io_errors_total{sandbox=\"sb-1\"} 3",
        "kiln_sandbox_net_rx_bytes_total{sandbox=\"sb-1\"} 11",
        "kiln_sandbox_net_tx_bytes_total{sandbox=\"sb-1\"} 12",
    ] {
        assert!(text.lines().any(|l| l == want), "missing {want:?} in\n{text}");
    }
    // The exec counts of a sandbox that is gone are dropped; the histogram keeps it.
    assert!(!text.contains("sb-gone"), "{text}");
    assert_eq!(ExecStatus::of(Some(0), true), ExecStatus::Timeout);
}

#[test]
fn firecracker_metrics_deltas_are_summed() {
    let dir = std::env::temp_dir().join(format!("kiln-server-fc-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = RemoveOnDrop(dir.clone());
    let p = dir.join("metrics.json");
    let line = |io: u64, rx: u64| {
        format!(
            r#"{{"utc_timestamp_ms":1,"vcpu":{{"exit_io_in":{io},"exit_mmio_read":1,"failures":9}},"vsock":{{"rx_bytes_count":{rx},"tx_bytes_count":8,"rx_packets_count":1}}}}"#
        )
    };
    assert_eq!(
        counters(&line(3, 7)),
        Some((
            VmmCounters {
                vcpu_exits: 4,
                vsock_rx_bytes: 7,
                vsock_tx_bytes: 8
            },
            false
        ))
    );
    // Two complete flushes and one being written: the complete ones add up.
    let text = format!("{}\n{}\n{}", line(3, 7), line(10, 1), line(99, 99));
    std::fs::write(&p, text).unwrap();
    assert_eq!(
        vmm_counters(&p),
        Some(VmmCounters {
            vcpu_exits: 15,
            vsock_rx_bytes: 8,
            vsock_tx_bytes: 16
        })
    );
    // A counter that is not a number does not make a wrong total.
    let bad = r#"{"vcpu":{"exit_io_in":"x"},"vsock":{"rx_bytes_count":1,"tx_bytes_count":1}}"#;
    assert_eq!(counters(bad), None);
}

#[test]
fn nic_bytes_are_summed_over_interfaces() {
    use super::sandbox::{net_bytes, NetBytes};
    let line = r#"{"net":{"eth0":{"rx_bytes":5,"tx_bytes":7},"eth1":{"rx_bytes":1,"tx_bytes":18446744073709551615}}}"#;
    assert_eq!(
        net_bytes(line),
        Some(NetBytes {
            rx: 6,
            tx: u64::MAX
        })
    );
    assert_eq!(net_bytes(r#"{"net":{}}"#), None);
    assert_eq!(net_bytes(r#"{"vcpu":{}}"#), None);
    assert_eq!(net_bytes("garbage"), None);
}
