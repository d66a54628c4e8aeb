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
