//! The Firecracker-compatible API over a real unix socket: bad input gets a 400 with
//! `fault_message` and the VMM stays usable; bad config files end the VMM with a clear
//! error and leave no socket behind. These do not need a bootable KVM.

use std::process::Command;

use kiln_e2e::*;
use serde_json::json;

fn fault(vm: &VmmProcess, method: &str, path: &str, body: serde_json::Value) -> String {
    let (status, text) = vm
        .client
        .request(method, path, Some(&body))
        .expect("request");
    assert_eq!(status, 400, "{method} {path} {body} -> {status} {text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON error body");
    v["fault_message"]
        .as_str()
        .expect("fault_message")
        .to_string()
}

fn started_vmm() -> VmmProcess {
    let mut vm = VmmProcess::spawn("off", false).expect("spawn");
    vm.wait_api(TIMEOUT).expect("API");
    vm
}

#[test]
fn bad_configuration_gets_400_with_what_to_fix_and_the_vmm_stays_usable() {
    let vm = started_vmm();
    let kernel = GuestSpec::minimal().kernel;
    let mc = "/machine-config";
    let e = fault(
        &vm,
        "PUT",
        mc,
        json!({"vcpu_count": 0, "mem_size_mib": 128}),
    );
    assert!(e.contains("vcpu_count 0") && e.contains("1 to 32"), "{e}");
    let e = fault(&vm, "PUT", mc, json!({"vcpu_count": 1, "mem_size_mib": 8}));
    assert!(e.contains("mem_size_mib"), "{e}");
    let e = fault(
        &vm,
        "PUT",
        mc,
        json!({"vcpu_count": 1, "mem_size_mib": 1u64 << 30}),
    );
    assert!(e.contains("host"), "{e}");
    let e = fault(
        &vm,
        "PUT",
        "/boot-source",
        json!({"kernel_image_path": "/nonexistent/vmlinux"}),
    );
    assert!(
        e.contains("/nonexistent/vmlinux") && e.contains("No such file"),
        "{e}"
    );
    let e = fault(
        &vm,
        "PUT",
        "/boot-source",
        json!({"kernel_image_path": "/"}),
    );
    assert!(e.contains("not a regular file"), "{e}");
    let e = fault(
        &vm,
        "PUT",
        "/drives/data",
        json!({"drive_id": "data", "path_on_host": "/nope.img"}),
    );
    assert!(e.contains("/nope.img"), "{e}");
    let e = fault(
        &vm,
        "PUT",
        "/drives/a",
        json!({"drive_id": "b", "path_on_host": kernel}),
    );
    assert!(e.contains("does not match"), "{e}");
    let e = fault(
        &vm,
        "PATCH",
        "/drives/unknown",
        json!({"drive_id": "unknown", "path_on_host": kernel}),
    );
    assert!(
        e.contains("unknown") && e.contains("PUT /drives/unknown"),
        "{e}"
    );
    let e = fault(&vm, "PUT", "/actions", json!({"action_type": "Explode"}));
    assert!(e.contains("InstanceStart"), "{e}");
    // Malformed JSON.
    let (status, text) = vm.client.request("PUT", mc, None).unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("malformed JSON"), "{text}");
    // Unknown field (Firecracker rejects them too).
    let e = fault(
        &vm,
        "PUT",
        mc,
        json!({"vcpu_count": 1, "mem_size_mib": 128, "cpus": 4}),
    );
    assert!(e.contains("unknown field"), "{e}");
    // Still usable: a valid config is accepted and reported back.
    vm.client
        .put(mc, &json!({"vcpu_count": 2, "mem_size_mib": 256}))
        .unwrap();
    let cfg = vm.client.get("/vm/config").unwrap();
    assert_eq!(cfg["machine-config"]["vcpu_count"], 2);
    assert_eq!(
        vm.client.get("/machine-config").unwrap()["mem_size_mib"],
        256
    );
}

#[test]
fn out_of_order_calls_are_rejected() {
    let vm = started_vmm();
    let e = fault(
        &vm,
        "PUT",
        "/actions",
        json!({"action_type": "InstanceStart"}),
    );
    assert!(e.contains("boot-source"), "{e}");
    let e = fault(
        &vm,
        "PUT",
        "/actions",
        json!({"action_type": "SendCtrlAltDel"}),
    );
    assert!(e.contains("not running"), "{e}");
    assert_eq!(vm.client.get("/").unwrap()["state"], "Not started");
}

#[test]
fn a_kernel_that_is_not_a_kernel_fails_instance_start_and_the_vmm_stays_usable() {
    let t = TempDir::new("badkernel");
    let bogus = t.path("vmlinux");
    std::fs::write(&bogus, vec![0x41u8; 4096]).unwrap();
    let vm = started_vmm();
    vm.client
        .put("/boot-source", &json!({"kernel_image_path": bogus}))
        .unwrap();
    let e = fault(
        &vm,
        "PUT",
        "/actions",
        json!({"action_type": "InstanceStart"}),
    );
    assert!(
        e.contains("neither an x86-64 ELF vmlinux nor a bzImage"),
        "{e}"
    );
    assert_eq!(vm.client.get("/").unwrap()["state"], "Not started");
}

fn run_vmm(args: &[&str]) -> std::process::Output {
    Command::new(kiln::paths::vmm_binary())
        .args(args)
        .output()
        .expect("run kiln-vmm")
}

#[test]
fn bad_config_file_exits_2_with_a_reason_and_leaves_no_socket() {
    let t = TempDir::new("badcfg");
    let sock = t.path("api.sock");
    let cfg = t.path("vm.json");
    let cases = [
        ("{not json", "malformed JSON"),
        (
            r#"{"boot-source": {"kernel_image_path": "/missing"}, "machine-config": {"vcpu_count": 1, "mem_size_mib": 128}}"#,
            "/missing",
        ),
        (
            r#"{"boot-source": {"kernel_image_path": "/missing"}, "machine-config": {"vcpu_count": 0, "mem_size_mib": 128}}"#,
            "vcpu_count",
        ),
    ];
    for (json, want) in cases {
        std::fs::write(&cfg, json).unwrap();
        let out = run_vmm(&[
            "--api-sock",
            sock.to_str().unwrap(),
            "--config-file",
            cfg.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "want '{want}' in: {err}");
        assert!(!sock.exists(), "socket left behind");
    }
    let out = run_vmm(&["--no-api"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config-file"));
}

#[test]
fn existing_socket_path_is_refused_and_sigterm_removes_the_socket() {
    let t = TempDir::new("sock");
    let sock = t.path("api.sock");
    std::fs::write(&sock, "").unwrap();
    let out = run_vmm(&["--api-sock", sock.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert!(sock.exists(), "someone else's file is not removed");
    std::fs::remove_file(&sock).unwrap();

    let mut vm = started_vmm();
    let sock = vm.sock.clone();
    assert!(sock.exists());
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(vm.pid() as i32, libc::SIGTERM) };
    let st = vm.wait_exit(TIMEOUT).unwrap();
    assert!(!st.success());
    assert!(!sock.exists(), "SIGTERM left the API socket behind");
}

#[test]
fn boot_error_json_says_why_a_vm_did_not_boot_and_a_good_start_clears_it() {
    if !require_kvm("boot_error_json") {
        return;
    }
    let dir = TempDir::new("boot-error");
    let (sock, rec) = (dir.path("api.sock"), dir.path("boot-error.json"));
    let mut child = Command::new(kiln::paths::vmm_binary())
        .arg("--api-sock")
        .arg(&sock)
        .arg("--boot-error")
        .arg(&rec)
        .spawn()
        .expect("spawn kiln-vmm");
    let c = kiln::FcClient::new(&sock);
    for _ in 0..2000 {
        if c.get("/").is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let read = || kiln::boot_error::read(&rec).expect("boot-error.json written");

    // A missing image.
    let missing = dir.path("missing.ext4");
    let drive = json!({"drive_id": "rootfs", "path_on_host": missing, "is_root_device": false, "is_read_only": true});
    assert!(c.put("/drives/rootfs", &drive).is_err());
    let r = read();
    assert_eq!(r.stage, "image");
    assert!(r.message.contains("missing.ext4"), "{r:?}");

    // A kernel that is not a kernel.
    let bad = dir.path("vmlinux");
    std::fs::write(&bad, b"not a kernel at all").unwrap();
    let mut g = spec("kiln.action=poweroff");
    g.kernel = bad;
    kiln::vmm::configure(&c, &g).expect("configure");
    assert!(c.action("InstanceStart").is_err());
    let r = read();
    assert_eq!(r.stage, "kernel");
    assert!(
        r.message
            .contains("neither an x86-64 ELF vmlinux nor a bzImage"),
        "{r:?}"
    );

    // Fixed and started: the stale record goes.
    kiln::vmm::configure(&c, &spec("kiln.action=poweroff")).expect("configure");
    c.action("InstanceStart").expect("start");
    assert!(!rec.exists(), "a stale boot-error.json was left");
    assert!(child.wait().unwrap().success());
    assert!(!rec.exists(), "a clean run wrote boot-error.json");
}
