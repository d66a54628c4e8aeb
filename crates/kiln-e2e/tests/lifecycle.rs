//! The sandbox lifecycle on the state store, with real guests: a killed VMM is marked
//! failed with the reason and what it left is removed; idle timeouts and lifetimes reap;
//! a CLI killed while creating leaves nothing running; transitions are typed errors.

use std::process::Command;
use std::time::{Duration, Instant};

use kiln::{Error, ExecOptions, Sandbox, State};
use kiln_e2e::{kiln_bin, process_running, require_kvm, sandbox, sh, TempDir};

fn kill9(pid: u32) {
    // SAFETY: kill has no memory effects; the pid is a process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while process_running(pid as i32) {
        assert!(Instant::now() < deadline, "pid {pid} survived SIGKILL");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_killed_vmm_is_marked_failed_with_the_reason_and_cleaned_up() {
    let Some(mut sb) = sandbox("lifecycle_kill", "debian") else {
        return;
    };
    assert!(sh(&sb, "true").status.success());
    let dir = sb.dir().to_path_buf();
    assert!(dir.join("scratch.ext4").exists() && dir.join("v.sock").exists());
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
    for gone in ["api.sock", "v.sock", "scratch.ext4"] {
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
fn a_cli_killed_while_creating_leaves_nothing_running() {
    if !require_kvm("lifecycle_cli_kill") {
        return;
    }
    let state = TempDir::new("lifecycle-cli-kill");
    let kiln = |args: &[&str]| {
        Command::new(kiln_bin())
            .args(args)
            .env("KILN_STATE_DIR", &state.0)
            .output()
            .expect("run kiln")
    };
    let mut cli = Command::new(kiln_bin())
        .args(["create", "--image", "debian"])
        .env("KILN_STATE_DIR", &state.0)
        .spawn()
        .expect("spawn kiln create");
    // Kill it once its VMM is being spawned (vmm.log is opened just before).
    let deadline = Instant::now() + Duration::from_secs(60);
    let folder = loop {
        let found = std::fs::read_dir(&state.0).unwrap().flatten().find(|e| {
            e.path().join("vmm.log").exists() && !e.file_name().to_string_lossy().starts_with('.')
        });
        if let Some(f) = found {
            break f.path();
        }
        assert!(Instant::now() < deadline, "kiln create never spawned a VMM");
        std::thread::sleep(Duration::from_millis(1));
    };
    kill9(cli.id());
    let _ = cli.wait();
    let id = folder.file_name().unwrap().to_string_lossy().into_owned();

    let ls = kiln(&["ls"]);
    let out = String::from_utf8_lossy(&ls.stdout);
    let err = String::from_utf8_lossy(&ls.stderr);
    assert!(ls.status.success(), "{err}");
    let line = out.lines().find(|l| l.starts_with(&id)).expect("listed");
    assert!(line.contains("failed"), "{out}");
    assert!(err.contains("creation was interrupted"), "{err}");
    let vmms = Command::new("pgrep")
        .args(["-f", &folder.display().to_string()])
        .output()
        .unwrap();
    assert!(vmms.stdout.is_empty(), "a VMM of {id} still runs");
    for gone in ["api.sock", "v.sock", "scratch.ext4"] {
        assert!(!folder.join(gone).exists(), "{gone} was left behind");
    }
    assert!(kiln(&["rm", &id]).status.success());
    assert!(!folder.exists());
}
