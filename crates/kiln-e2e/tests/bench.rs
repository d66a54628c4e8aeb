//! `kiln bench boot --json` runs end to end and reports every figure with the QEMU ratio.

use std::process::Command;

use kiln_e2e::require_kvm;

#[test]
fn bench_boot_reports_figures_and_the_qemu_ratio() {
    if !require_kvm("bench_boot") {
        return;
    }
    let kiln = kiln::paths::vmm_binary().with_file_name("kiln");
    let out = Command::new(&kiln)
        .args(["bench", "boot", "-n", "1", "--json"])
        .output()
        .expect("run kiln bench boot");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    for side in ["kiln", "qemu_microvm"] {
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
    let r = v["ratio_kiln_over_qemu_p50"]["start_to_guest_ready"].as_f64();
    assert!(r.is_some_and(|x| x > 0.0), "{stdout}");
}
