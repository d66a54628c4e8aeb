//! `kiln bench boot --json` runs end to end and reports every figure.
//!
//! The QEMU baseline is not run here: inside the nested-KVM harness the outer VM
//! sometimes stops responding after a few QEMU microvm boots (kiln-vmm boots do not do
//! this; see docs/BENCHMARKS.md), and a suite must not hang. The baseline is run by hand:
//! `scripts/harness -- kiln bench boot -n 1 --json`.

use std::process::Command;

use kiln_e2e::require_kvm;

#[test]
fn bench_boot_reports_its_figures() {
    if !require_kvm("bench_boot") {
        return;
    }
    let kiln = kiln::paths::vmm_binary().with_file_name("kiln");
    let out = Command::new(&kiln)
        .args(["bench", "boot", "-n", "2", "--json", "--no-qemu"])
        .output()
        .expect("run kiln bench boot");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    for side in ["kiln"] {
        for key in [
            "spawn_to_api_ready_ms",
            "start_to_guest_ready_ms",
            "spawn_to_exit_ms",
        ] {
            let p50 = v[side][key]["p50"].as_f64();
            assert!(
                p50.is_some_and(|x| x > 0.0),
                "{side}.{key} missing: {stdout}"
            );
        }
        assert!(
            v[side]["rss_without_guest_kib"]["p50"]
                .as_f64()
                .is_some_and(|x| x > 0.0),
            "{stdout}"
        );
    }
    assert!(
        v["kiln"]["vm_exits_to_ready"]["p50"]
            .as_f64()
            .is_some_and(|x| x > 0.0),
        "{stdout}"
    );
    assert!(v["qemu_microvm"].is_null() && v["ratio_kiln_over_qemu_p50"].is_null());
}

/// Runs `kiln bench ARGS` and returns its JSON report.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let kiln = kiln::paths::vmm_binary().with_file_name("kiln");
    let out = Command::new(&kiln)
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("run kiln bench");
    assert!(
        out.status.success(),
        "kiln bench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

fn positive(v: &serde_json::Value, key: &str) {
    assert!(
        v[key]["p50"].as_f64().is_some_and(|x| x > 0.0),
        "{key}: {v}"
    );
}

#[test]
fn bench_create_exec_and_files_report_their_figures() {
    if !require_kvm("bench_sandbox") {
        return;
    }
    let v = bench_json(&["create", "-n", "1", "--images", "minimal"]);
    positive(&v, "create_to_first_exec_ms_minimal");
    positive(&v, "host_fork_exec_true_ms");
    assert!(v["ratio_minimal_over_host_p50"].as_f64().is_some(), "{v}");

    let v = bench_json(&["exec", "-n", "3"]);
    positive(&v, "exec_true_round_trip_ms");
    positive(&v, "agent_ping_ms");
    assert!(v["ratio_exec_over_host_p50"].as_f64().is_some(), "{v}");

    let v = bench_json(&["files", "-n", "1", "--size-mib", "8"]);
    positive(&v, "upload_mib_s");
    positive(&v, "download_mib_s");
    assert!(
        v["host_copy_mib_s"].as_f64().is_some_and(|x| x > 0.0),
        "{v}"
    );
}

#[test]
fn bench_api_reports_no_errors_and_no_leftovers() {
    if !require_kvm("bench_api") {
        return;
    }
    let v = bench_json(&["api", "-n", "6", "--clients", "3"]);
    assert_eq!(
        (v["errors"].as_u64(), v["leaked"].as_u64()),
        (Some(0), Some(0)),
        "{v}"
    );
    assert_eq!(
        (v["sandboxes"].as_u64(), v["clients"].as_u64()),
        (Some(6), Some(3)),
        "{v}"
    );
    for side in ["api", "api_one_client", "library_baseline"] {
        for op in ["create_ms", "exec_ms", "delete_ms"] {
            positive(&v[side], op);
        }
        assert!(
            v[side]["sandboxes_per_s"].as_f64().is_some_and(|x| x > 0.0),
            "{v}"
        );
    }
    assert_eq!(v["api"]["create_ms"]["n"].as_u64(), Some(6), "{v}");
    assert_eq!(v["library_baseline"]["sandboxes"].as_u64(), Some(4), "{v}");
    assert_eq!(
        v["api_one_client"]["create_ms"]["n"].as_u64(),
        Some(4),
        "{v}"
    );
    for r in [
        "ratio_api_over_library_create_p50",
        "ratio_api_over_library_exec_p50",
    ] {
        assert!(v[r].as_f64().is_some_and(|x| x > 0.0), "{r}: {v}");
    }
    let leaks = &v["leaks"];
    assert!(
        leaks["rows"].as_array().is_some_and(|a| a.is_empty()),
        "{v}"
    );
    assert!(
        leaks["local"]["vmm_processes"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "{v}"
    );
    assert!(
        leaks["local"]["state_dir_entries"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "{v}"
    );
}
