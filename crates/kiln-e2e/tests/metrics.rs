//! VMM metrics (`PUT /metrics`, `FlushMetrics`): a real guest's vCPU exits, boot time,
//! drive reads, vsock traffic and pauses reach the metrics file, which holds the latest
//! line (rewritten in place by each flush; every counter is cumulative).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use kiln_e2e::*;
use serde_json::{json, Value};

fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("metrics file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() <= 1, "the file holds one line: {text}");
    lines
}

fn counter(v: &Value, section: &str, key: &str) -> u64 {
    v[section][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {section}.{key} in {v}"))
}

/// Asks the guest for a vsock port nothing listens on: the VMM sends a REQUEST, the
/// guest answers with a reset and the host socket is closed without an `OK` line.
fn refused_vsock_connect(uds: &Path) {
    let mut s = UnixStream::connect(uds).expect("connect to the vsock uds_path");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"CONNECT 4321\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .expect("the VMM closes the socket");
    assert_eq!(answer, "", "nothing listens on guest port 4321");
}

#[test]
fn flush_metrics_reports_the_guests_exits_boot_time_drive_reads_and_vsock() {
    if !require_kvm("flush_metrics") {
        return;
    }
    let t = TempDir::new("metrics");
    let files = t.path("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("hello.txt"), "hello from the host\n").unwrap();
    let img = t.path("disk.ext4");
    ext4_image(&img, &files, 16);
    let metrics = t.path("metrics.json");
    let uds = t.path("v.sock");

    let mut g = spec("kiln.mount=/dev/vda,/mnt,ro kiln.cat=/mnt/hello.txt kiln.action=wait");
    g.drives.push(DriveSpec {
        id: "data".into(),
        path: img,
        read_only: true,
        root: false,
    });
    g.vsock = Some(uds.clone());
    let console = t.path("console.log");
    let mut vm = VmmProcess::spawn(console.to_str().unwrap(), false).expect("spawn kiln-vmm");
    vm.wait_api(TIMEOUT).expect("API socket");
    vm.client
        .put("/metrics", &json!({"metrics_path": metrics}))
        .expect("PUT /metrics");
    vm.configure(&g).expect("configure");
    vm.instance_start().expect("InstanceStart");
    vm.wait_ready(TIMEOUT).expect("guest ready");
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(
        log.contains("cat /mnt/hello.txt: hello from the host"),
        "console:\n{log}"
    );
    refused_vsock_connect(&uds);

    vm.client.action("FlushMetrics").expect("FlushMetrics");
    let first = lines(&metrics).pop().expect("a metrics line");
    assert!(counter(&first, "vcpu", "exits_total") > 0, "{first}");
    assert_eq!(
        first["per_vcpu"].as_array().map(Vec::len),
        Some(1),
        "{first}"
    );
    assert!(
        first["boot_time_us"].as_u64().is_some_and(|us| us > 0),
        "{first}"
    );
    assert!(first["utc_timestamp_ms"].as_u64().is_some_and(|ms| ms > 0));
    let blk = &first["block"]["data"];
    assert!(counter(&first["block"], "data", "read_ops") > 0, "{blk}");
    assert!(
        counter(&first["block"], "data", "read_bytes") >= 512,
        "{blk}"
    );
    assert_eq!(counter(&first["block"], "data", "write_ops"), 0, "{blk}");
    assert_eq!(counter(&first["block"], "data", "errors"), 0, "{blk}");
    for key in ["conns_opened", "conns_closed", "rx_packets", "tx_packets"] {
        assert!(counter(&first, "vsock", key) >= 1, "vsock.{key}: {first}");
    }
    assert_eq!(counter(&first, "vm", "pauses"), 0);

    // Configuration after start is refused, as in Firecracker.
    let e = vm
        .client
        .put("/metrics", &json!({"metrics_path": t.path("other.json")}))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("400") && e.contains("before the microVM starts"),
        "{e}"
    );

    // Counters are cumulative: a pause and a resume show up in the next line.
    vm.client.patch("/vm", &json!({"state": "Paused"})).unwrap();
    vm.client
        .patch("/vm", &json!({"state": "Resumed"}))
        .unwrap();
    vm.client.action("FlushMetrics").unwrap();
    let second = lines(&metrics).pop().unwrap();
    assert_eq!(counter(&second, "vm", "pauses"), 1, "{second}");
    assert_eq!(counter(&second, "vm", "resumes"), 1, "{second}");
    assert!(counter(&second, "vcpu", "exits_total") >= counter(&first, "vcpu", "exits_total"));
    assert!(second["uptime_ms"].as_u64() >= first["uptime_ms"].as_u64());

    // The VMM writes a last line when it exits.
    vm.client.action("SendCtrlAltDel").unwrap();
    let status = vm.wait_exit(TIMEOUT).expect("VMM exit");
    assert_eq!(status.code(), Some(0), "{}", vm.stderr());
    let last = lines(&metrics).pop().expect("a last line");
    assert!(
        last["uptime_ms"].as_u64() > second["uptime_ms"].as_u64(),
        "{last}"
    );
    let data = &last["block"]["data"];
    assert_eq!(
        (data["io_errors"].as_u64(), data["enospc"].as_u64()),
        (Some(0), Some(0)),
        "{data}"
    );
    assert!(data["last_io_error"].is_null(), "{data}");
}
