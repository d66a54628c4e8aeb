//! `Sandbox::stop` escalation with real guests: agent shutdown while the agent is
//! reachable, Ctrl-Alt-Del (the agent takes SIGINT as PID 1, syncs and powers off)
//! when it is not.
//!
//! The agent is made unreachable without touching the guest: the host-side vsock
//! socket `v.sock` is removed. The VMM keeps serving the guest, but nothing on the
//! host can connect any more.

use kiln_e2e::{ext4_cat, process_running, sandbox, sh};

/// What the agent prints when it takes Ctrl-Alt-Del.
const CAD_LINE: &str = "kiln-agent: Ctrl-Alt-Del: syncing and powering off";

fn vmm_pid(sb: &kiln::Sandbox) -> i32 {
    i32::try_from(sb.record().pid).expect("pid")
}

fn console(sb: &kiln::Sandbox) -> String {
    std::fs::read_to_string(sb.dir().join("vm/console.log")).unwrap_or_default()
}

/// Removes `v.sock`: from now on the agent cannot be reached from the host.
fn cut_off_agent(sb: &kiln::Sandbox) {
    std::fs::remove_file(sb.dir().join("vm/v.sock")).expect("remove v.sock");
    assert!(sb.ping().is_err(), "the agent is still reachable");
}

#[test]
fn stop_with_a_reachable_agent_is_an_agent_shutdown() {
    let Some(mut sb) = sandbox("stop_agent", "minimal") else {
        return;
    };
    let pid = vmm_pid(&sb);
    assert_eq!(sb.stop().expect("stop"), "agent shutdown");
    assert!(!process_running(pid), "the VMM {pid} still runs");
    assert_eq!(sb.state(), kiln::State::Stopped);
    assert!(!console(&sb).contains(CAD_LINE), "{}", console(&sb));
}

#[test]
fn stop_without_the_agent_sends_ctrl_alt_del_and_the_guest_syncs() {
    let Some(mut sb) = sandbox("stop_cad", "debian") else {
        return;
    };
    // Written without fsync: only the agent's sync on Ctrl-Alt-Del puts it on the
    // writable layer before the VM goes away (writeback would take ~30 s).
    let out = sh(&sb, "echo synced-by-cad > /root/cad-marker");
    assert!(out.status.success(), "{}", out.stderr_str());
    let pid = vmm_pid(&sb);

    cut_off_agent(&sb);
    assert_eq!(sb.stop().expect("stop"), "Ctrl-Alt-Del");
    assert!(!process_running(pid), "the VMM {pid} still runs");
    assert_eq!(sb.state(), kiln::State::Stopped);
    // The agent took it (not the kernel's immediate restart) ...
    let con = console(&sb);
    assert!(con.contains(CAD_LINE), "console:\n{con}");
    // ... and synced: the overlay's upper dir on the scratch disk has the file.
    let scratch = sb.dir().join("vm/scratch.ext4");
    assert_eq!(
        ext4_cat(&scratch, "/upper/root/cad-marker"),
        "synced-by-cad\n"
    );
}

#[test]
fn stop_of_a_paused_sandbox_without_the_agent_resumes_and_sends_ctrl_alt_del() {
    let Some(mut sb) = sandbox("stop_paused_cad", "minimal") else {
        return;
    };
    let pid = vmm_pid(&sb);
    sb.pause().expect("pause");
    assert_eq!(sb.state(), kiln::State::Paused);
    std::fs::remove_file(sb.dir().join("vm/v.sock")).expect("remove v.sock");
    assert_eq!(sb.stop().expect("stop"), "Ctrl-Alt-Del");
    assert!(!process_running(pid), "the VMM {pid} still runs");
    assert!(console(&sb).contains(CAD_LINE), "{}", console(&sb));
}
