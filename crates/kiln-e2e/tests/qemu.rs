//! The `qemu` backend with real guests, beyond the exec and file suites (exec.rs and
//! files.rs, which scripts/e2e-run runs a second time with `KILN_E2E_BACKEND=qemu`):
//! the agent channel is a multiplexed virtio-console port behind `kiln-relay`;
//! pause/resume over QMP; stop and remove leave no process and no folder; and
//! `kiln run --backend qemu`.

use std::process::Command;
use std::time::Duration;

use kiln::backend::GuestChannel;
use kiln_e2e::{kiln_bin, process_running, require_kvm, sandbox_with, sh, wait_until, TempDir};

fn qemu(test: &str, image: &str) -> Option<kiln::Sandbox> {
    let b = kiln::Sandbox::builder().image(image).backend("qemu");
    sandbox_with(test, b)
}

/// QEMU's and the relay's pids.
fn pids(sb: &mut kiln::Sandbox) -> (i32, i32) {
    let info = sb.info();
    assert_eq!(info.backend, "qemu");
    let GuestChannel::Serial {
        relay_pid: Some(relay),
        port_name,
        ..
    } = info.guest_channel
    else {
        panic!("no relay: {:?}", info.guest_channel);
    };
    assert_eq!(port_name, "kiln.agent");
    (sb.record().pid as i32, relay as i32)
}

/// Whether `pid` is gone within a few seconds (the relay exits right after QEMU).
fn gone(pid: i32) -> bool {
    wait_until(Duration::from_secs(10), || !process_running(pid))
}

#[test]
fn pause_resume_then_stop_and_remove_leave_no_process_and_no_folder() {
    let Some(mut sb) = qemu("qemu_lifecycle", "debian") else {
        return;
    };
    let (vmm, relay) = pids(&mut sb);
    assert!(process_running(vmm) && process_running(relay));
    assert!(sb.backend().capabilities().pause_resume);

    sb.pause().expect("pause");
    assert_eq!(sb.state(), kiln::State::Paused);
    // While paused the guest does not run: a ping sent now (straight to the agent; the
    // library refuses operations on a paused sandbox) is answered only after the
    // resume, the relay holding the connection meanwhile.
    let agent = sb.agent().clone();
    let ping = std::thread::spawn(move || agent.ping());
    std::thread::sleep(Duration::from_millis(500));
    assert!(!ping.is_finished(), "a paused guest answered");
    sb.resume().expect("resume");
    assert_eq!(sb.state(), kiln::State::Running);
    ping.join().unwrap().expect("ping across the pause");
    assert_eq!(sh(&sb, "echo resumed").stdout_str(), "resumed\n");

    assert_eq!(sb.stop().expect("stop"), "agent shutdown");
    assert!(gone(vmm), "QEMU {vmm} still runs");
    assert!(gone(relay), "the relay {relay} still runs");
    let folder = sb.dir().to_path_buf();
    sb.remove().expect("remove");
    assert!(!folder.exists(), "{} is left", folder.display());

    // Remove of a running sandbox (the usual drop path) leaves nothing either.
    let Some(mut sb) = qemu("qemu_remove", "minimal") else {
        return;
    };
    let (vmm, relay) = pids(&mut sb);
    let folder = sb.dir().to_path_buf();
    sb.remove().expect("remove");
    assert!(
        gone(vmm) && gone(relay),
        "QEMU {vmm} or the relay {relay} still runs"
    );
    assert!(!folder.exists(), "{} is left", folder.display());
}

#[test]
fn kiln_run_with_the_qemu_backend() {
    if !require_kvm("qemu_cli_run") {
        return;
    }
    let state = TempDir::new("qemu-cli");
    let out = Command::new(kiln_bin())
        .args(["run", "--backend", "qemu", "--", "uname", "-a"])
        .env("KILN_STATE_DIR", &state.0)
        .output()
        .expect("run kiln");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("Linux "),
        "{stderr}"
    );
    let left = kiln_e2e::cli::state_entries(&state.0);
    assert!(left.is_empty(), "left behind: {left:?}");
    let out = Command::new(kiln_bin())
        .args(["run", "--backend", "nope", "--", "true"])
        .env("KILN_STATE_DIR", &state.0)
        .output()
        .expect("run kiln");
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("qemu"));
}
