//! The sandbox lifecycle on the state store, with real guests: a killed VMM is marked
//! failed with the reason and what it left is removed; idle timeouts and lifetimes reap;
//! a CLI killed at any point of a create, restore, fork or snapshot (`KILN_TEST_PAUSE_AT`)
//! leaves nothing running, paused or half-written; a guest that reboots or powers off is
//! stopped, not failed; transitions are typed errors.

use std::time::{Duration, Instant};

use kiln::{Error, ExecOptions, Sandbox, State};
use kiln_e2e::cli::{assert_only_running, kill9, processes_under, Kiln};
use kiln_e2e::{process_running, require_kvm, sandbox, sh, wait_until, TempDir, TIMEOUT};

#[test]
fn a_killed_vmm_is_marked_failed_with_the_reason_and_cleaned_up() {
    let Some(mut sb) = sandbox("lifecycle_kill", "debian") else {
        return;
    };
    assert!(sh(&sb, "true").status.success());
    let dir = sb.dir().to_path_buf();
    assert!(dir.join("vm/scratch.ext4").exists() && dir.join("vm/v.sock").exists());
    let pid = sb.record().pid;
    kill9(pid);

    assert_eq!(sb.state(), State::Failed);
    let info = sb.info();
    let why = info.failure.expect("a failure reason");
    // This process started the VMM, so it reaps it (no zombie left) and says how it ended.
    assert!(
        why.contains(&format!("pid {pid}"))
            && why.contains("exited unexpectedly (killed by signal 9 (SIGKILL))"),
        "{why}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the killed VMM is left a zombie"
    );
    assert_eq!(info.pid, None);
    for gone in ["vm/api.sock", "vm/v.sock", "vm/scratch.ext4"] {
        assert!(!dir.join(gone).exists(), "{gone} was left behind");
    }
    assert!(dir.join("vmm.log").exists(), "the logs stay for diagnosis");
    let err = sb.exec(&ExecOptions::new(["true"])).unwrap_err();
    assert!(matches!(err, Error::AgentUnavailable { .. }), "{err}");
    match sb.pause().unwrap_err() {
        Error::InvalidTransition { from, to, .. } => {
            assert_eq!((from, to), (State::Failed, State::Paused))
        }
        e => panic!("pause of a failed sandbox: {e}"),
    }
    let events = kiln::events_for(sb.id(), 50).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "state" && e.detail["to"] == "failed"),
        "{events:?}"
    );
    let id = sb.id().to_string();
    sb.remove().expect("remove a failed sandbox");
    assert!(!dir.exists());
    assert!(matches!(Sandbox::get(&id), Err(Error::NotFound { .. })));
}

#[test]
fn idle_timeouts_and_lifetimes_reap_sandboxes() {
    if !require_kvm("lifecycle_reap") {
        return;
    }
    let b = || Sandbox::builder().image("minimal");
    let idle = b().idle_timeout(Duration::from_secs(2)).create().unwrap();
    let old = b().max_lifetime(Duration::from_secs(4)).create().unwrap();
    let busy = b().idle_timeout(Duration::from_secs(5)).create().unwrap();
    let pids = [idle.record().pid, old.record().pid];
    let mut reaped = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while reaped.len() < 2 && Instant::now() < deadline {
        // `old` and `busy` are in use all along; `idle` is not.
        for sb in [&old, &busy] {
            let _ = sb.exec(&ExecOptions::new(["true"]));
        }
        reaped.extend(kiln::reap_expired().unwrap());
        std::thread::sleep(Duration::from_millis(200));
    }
    reaped.sort();
    let mut want = vec![
        (idle.id().to_string(), "idle"),
        (old.id().to_string(), "lifetime"),
    ];
    want.sort();
    assert_eq!(reaped, want);
    for pid in pids {
        assert!(!process_running(pid as i32), "the VMM {pid} still runs");
    }
    for sb in [&idle, &old] {
        assert!(matches!(Sandbox::get(sb.id()), Err(Error::NotFound { .. })));
        assert!(!sb.dir().exists());
        let ev = kiln::events_for(sb.id(), 50).unwrap();
        assert!(ev.iter().any(|e| e.kind == "reaped"), "{ev:?}");
    }
    assert_eq!(busy.state(), State::Running, "a sandbox in use is not idle");
    assert!(sh(&busy, "true").status.success());
}

#[test]
fn kills_at_every_point_of_create_restore_fork_and_snapshot_leave_nothing() {
    if !require_kvm("lifecycle_kill_points") {
        return;
    }
    let state = TempDir::new("lifecycle-kills");
    let k = Kiln { state: &state.0 };
    // Create: right after the VMM was spawned (not configured yet), and with the guest
    // up but the row still `creating`.
    for (id, point) in [
        ("kc-spawned", "after-spawn"),
        ("kc-booted", "before-running"),
    ] {
        k.killed_at(&["create", "--image", "minimal", "--id", id], point);
        assert_only_running(&k, &[]);
    }
    k.ok(&["create", "--image", "minimal", "--id", "base"]);
    k.ok(&["snapshot", "base", "--name", "s1"]);
    // Snapshot: with the sandbox paused, and with the files written but not sealed.
    for (name, point) in [("sk-1", "snapshot-paused"), ("sk-2", "snapshot-written")] {
        k.killed_at(&["snapshot", "base", "--name", name], point);
        assert_only_running(&k, &["base"]);
        assert!(!k.ok(&["snapshot", "ls"]).contains(name));
        // The name is free again.
        k.ok(&["snapshot", "base", "--name", name]);
        k.ok(&["snapshot", "rm", name]);
    }
    // Restore: spawned, and loaded but not yet running.
    for (id, point) in [
        ("kr-spawned", "after-spawn"),
        ("kr-loaded", "before-running"),
    ] {
        k.killed_at(&["restore", "s1", "--id", id], point);
        assert_only_running(&k, &["base"]);
    }
    // Fork: the parent paused, its children being made, a child's VMM just spawned.
    for point in ["snapshot-paused", "fork-restoring", "after-spawn"] {
        k.killed_at(&["fork", "base"], point);
        assert_only_running(&k, &["base"]);
    }
    // A snapshot folder without a record (what an older kiln left) is removable.
    let old = state.0.join(".snapshots").join("half");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("memory.bin"), b"x").unwrap();
    assert!(!k.ok(&["snapshot", "ls"]).contains("half"));
    k.ok(&["snapshot", "rm", "half"]);
    assert!(!old.exists());
    k.ok(&["snapshot", "rm", "s1"]);
    k.ok(&["rm", "base"]);
    assert!(processes_under(&state.0).is_empty());
}

#[test]
fn a_guest_that_reboots_is_stopped_not_failed() {
    let Some(mut sb) = sandbox("lifecycle_guest_reboot", "minimal") else {
        return;
    };
    // This process is the VMM's parent: its exit status tells.
    let _ = sb.exec(&ExecOptions::new(["reboot", "-f"]));
    assert!(wait_until(TIMEOUT, || sb.state() != State::Running));
    let info = sb.info();
    assert_eq!(info.state, State::Stopped, "{info:?}");
    assert_eq!(
        info.stop_reason.as_deref(),
        Some("the guest rebooted"),
        "{info:?}"
    );
    assert_eq!(info.failure, None);
    sb.remove().unwrap();

    // A detached sandbox that no kiln process is the parent of: kiln-vmm's last log
    // line tells. (A guest `poweroff -f` halts the kernel: without ACPI it has no way to
    // power off, so its VMM stays up; `kiln stop` ends it.)
    let state = TempDir::new("lifecycle-guest-reboot");
    let k = Kiln { state: &state.0 };
    {
        let (id, cmd, why) = ("g-reboot", "reboot -f", "the guest rebooted");
        k.ok(&["create", "--image", "minimal", "--id", id]);
        let _ = k.cmd(&["exec", id, "--", "sh", "-c", cmd]).output();
        let stopped = wait_until(TIMEOUT, || {
            k.inspect(id).is_some_and(|i| i["state"] != "running")
        });
        let info = k.inspect(id).expect("listed");
        assert!(stopped, "{cmd}: {info}");
        assert_eq!(info["state"], "stopped", "{cmd}: {info}");
        assert_eq!(info["stop_reason"], why, "{cmd}: {info}");
        let ls = k.cmd(&["ls"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&ls.stderr).contains("failed"));
        k.ok(&["rm", id]);
    }
}
