//! `PUT /entropy`'s rate limiter on a real guest: a config-file boot whose guest reads
//! 4 KiB from /dev/hwrng through a 1 KiB bucket. The guest gets its bytes, the limiter
//! stopped the queue at least once (`rng.throttled` in the metrics line written at exit)
//! and the VMM exits cleanly when the guest powers off.

use std::process::{Command, Stdio};

use kiln_e2e::*;

#[test]
fn the_guest_reads_hwrng_through_the_entropy_limiter() {
    if !require_kvm("entropy") {
        return;
    }
    let t = TempDir::new("entropy");
    let g = spec("kiln.cat=/dev/hwrng kiln.action=poweroff");
    let cfg = serde_json::json!({
        "boot-source": {
            "kernel_image_path": g.kernel,
            "initrd_path": g.initrd,
            "boot_args": g.boot_args,
        },
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
        "entropy": {"rate_limiter": {"bandwidth": {"size": 1024, "refill_time": 100}}},
        "metrics": {"metrics_path": t.path("metrics.json")},
    });
    let cfg_path = t.path("vm.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let console = t.path("console.log");
    let mut child = Command::new(kiln::paths::vmm_binary())
        .arg("--config-file")
        .arg(&cfg_path)
        .arg("--no-api")
        .arg("--console")
        .arg(&console)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    wait_until(TIMEOUT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    // The random bytes are not UTF-8.
    let text = String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()).to_string();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "kiln-vmm did not power off cleanly\nstderr: {err}\nconsole:\n{text}"
    );
    assert!(
        text.contains("cat /dev/hwrng: "),
        "stderr: {err}\nconsole:\n{text}"
    );
    let line = std::fs::read_to_string(t.path("metrics.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert!(m["rng"]["bytes"].as_u64().unwrap() >= 4096, "{line}");
    assert!(m["rng"]["throttled"].as_u64().unwrap() >= 1, "{line}");
}
