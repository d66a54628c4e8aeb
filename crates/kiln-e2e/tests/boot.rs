//! Real guests under KVM: vCPUs, memory, shutdown paths and panics.

use kiln_e2e::*;

fn boot_and_report(cpus: u8, memory_mib: u64) -> (String, i32) {
    let mut g = spec("kiln.report=1 kiln.action=poweroff");
    g.cpus = cpus;
    g.memory_mib = memory_mib;
    let mut b = boot(&g);
    b.vm.wait_ready(TIMEOUT).expect("guest ready");
    let code = b.exit_code();
    (b.console(), code)
}

#[test]
fn boots_with_one_vcpu_and_the_guest_sees_it() {
    if !require_kvm("boots_with_one_vcpu") {
        return;
    }
    let (console, code) = boot_and_report(1, 128);
    assert_eq!(code, 0, "console:\n{console}");
    assert_eq!(
        report_value(&console, "cpus"),
        Some(1),
        "console:\n{console}"
    );
}

#[test]
fn boots_with_two_vcpus_and_the_guest_sees_them() {
    if !require_kvm("boots_with_two_vcpus") {
        return;
    }
    let (console, code) = boot_and_report(2, 128);
    assert_eq!(code, 0, "console:\n{console}");
    assert_eq!(
        report_value(&console, "cpus"),
        Some(2),
        "console:\n{console}"
    );
}

#[test]
fn guest_sees_the_configured_memory() {
    if !require_kvm("guest_sees_the_configured_memory") {
        return;
    }
    let (console, code) = boot_and_report(1, 300);
    assert_eq!(code, 0);
    let kib = report_value(&console, "mem_total_kib").expect("report line");
    // MemTotal is RAM minus what the kernel reserves for itself.
    assert!(
        kib > 260 * 1024 && kib <= 300 * 1024,
        "MemTotal {kib} KiB for a 300 MiB guest"
    );
}

#[test]
fn guest_poweroff_ends_the_vmm_with_status_0() {
    if !require_kvm("guest_poweroff") {
        return;
    }
    let mut b = boot(&spec("kiln.action=poweroff"));
    b.vm.wait_ready(TIMEOUT).expect("ready");
    assert_eq!(b.exit_code(), 0, "{}", b.vm.stderr());
    assert!(!b.vm.sock.exists(), "the API socket is removed on exit");
}

#[test]
fn guest_reboot_ends_the_vmm_with_status_0() {
    if !require_kvm("guest_reboot") {
        return;
    }
    let mut b = boot(&spec("kiln.action=reboot"));
    assert_eq!(b.exit_code(), 0, "{}", b.vm.stderr());
}

#[test]
fn guest_panic_ends_the_vmm_nonzero_with_a_reason() {
    if !require_kvm("guest_panic") {
        return;
    }
    let mut b = boot(&spec("kiln.action=panic"));
    let code = b.exit_code();
    assert_eq!(code, 1, "stderr: {}", b.vm.stderr());
    std::thread::sleep(std::time::Duration::from_millis(50));
    let err = b.vm.stderr();
    assert!(
        err.contains("guest kernel panic: Attempted to kill init"),
        "stderr: {err}"
    );
}

#[test]
fn send_ctrl_alt_del_shuts_the_guest_down() {
    if !require_kvm("send_ctrl_alt_del") {
        return;
    }
    let mut b = boot(&spec("kiln.action=wait"));
    b.vm.wait_ready(TIMEOUT).expect("ready");
    b.vm.client
        .action("SendCtrlAltDel")
        .expect("SendCtrlAltDel");
    assert_eq!(b.exit_code(), 0, "{}", b.vm.stderr());
}

#[test]
fn instance_start_twice_is_rejected_and_the_vm_keeps_running() {
    if !require_kvm("instance_start_twice") {
        return;
    }
    let mut b = boot(&spec("kiln.action=wait"));
    b.vm.wait_ready(TIMEOUT).expect("ready");
    let e = b.vm.instance_start().unwrap_err().to_string();
    assert!(e.contains("400") && e.contains("already running"), "{e}");
    let e =
        b.vm.client
            .put(
                "/machine-config",
                &serde_json::json!({"vcpu_count": 2, "mem_size_mib": 256}),
            )
            .unwrap_err()
            .to_string();
    assert!(e.contains("after starting"), "{e}");
    let info = b.vm.client.get("/").expect("GET /");
    assert_eq!(info["state"], "Running");
    b.vm.client.action("SendCtrlAltDel").unwrap();
    assert_eq!(b.exit_code(), 0);
}
