//! The `kiln` command line as a user drives it: run, create/exec/cp/ls/stop/rm across
//! separate invocations, and what is left behind.

use std::path::PathBuf;
use std::process::{Command, Output};

use kiln_e2e::{require_kvm, TempDir};

fn kiln_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    for d in [dir, &dir.join("..")] {
        if d.join("kiln").is_file() {
            return d.join("kiln");
        }
    }
    panic!("kiln binary not found next to {}", exe.display());
}

/// Runs `kiln ARGS` with its own state directory.
fn kiln(state: &TempDir, args: &[&str]) -> Output {
    Command::new(kiln_bin())
        .args(args)
        .env("KILN_STATE_DIR", &state.0)
        .output()
        .expect("run kiln")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn kiln_run_prints_output_and_propagates_the_exit_code() {
    if !require_kvm("cli_run") {
        return;
    }
    let state = TempDir::new("cli-run");
    let out = kiln(
        &state,
        &[
            "run",
            "--image",
            "minimal",
            "--",
            "sh",
            "-c",
            "echo hi; echo oops >&2; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n");
    assert!(text(&out.stderr).contains("oops"));
    // Nothing is left behind by run.
    assert_eq!(std::fs::read_dir(&state.0).unwrap().count(), 0);

    let out = kiln(&state, &["run", "--", "python3", "-c", "print(6*7)"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "42\n");

    let out = kiln(
        &state,
        &[
            "run",
            "--image",
            "minimal",
            "--timeout",
            "1",
            "--",
            "sleep",
            "100",
        ],
    );
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    let out = kiln(&state, &["run", "--image", "nope", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("unknown image"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(&state.0).unwrap().count(), 0);
}

#[test]
fn a_sandbox_created_by_one_invocation_is_used_by_others_and_rm_leaves_nothing() {
    if !require_kvm("cli_lifecycle") {
        return;
    }
    let state = TempDir::new("cli-life");
    let out = kiln(
        &state,
        &["create", "--image", "minimal", "-e", "GREETING=hello"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let dir = state.0.join(&id);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("sandbox.json")).unwrap()).unwrap();
    let pid = record["pid"].as_u64().unwrap() as i32;

    let out = kiln(
        &state,
        &[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "echo $GREETING > /tmp/g; cat /tmp/g",
        ],
    );
    assert_eq!(text(&out.stdout), "hello\n", "{}", text(&out.stderr));
    let out = kiln(
        &state,
        &["exec", "-w", "/tmp", &id, "--", "sh", "-c", "exit 4"],
    );
    assert_eq!(out.status.code(), Some(4));

    let files = TempDir::new("cli-cp");
    std::fs::create_dir_all(files.path("tree/sub")).unwrap();
    std::fs::write(files.path("tree/sub/x.txt"), "payload").unwrap();
    let src = files.path("tree");
    let out = kiln(
        &state,
        &["cp", src.to_str().unwrap(), &format!("{id}:/tmp/tree")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let back = files.path("back");
    let out = kiln(
        &state,
        &["cp", &format!("{id}:/tmp/tree"), back.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(back.join("sub/x.txt")).unwrap(),
        "payload"
    );

    let out = kiln(&state, &["ls"]);
    let ls = text(&out.stdout);
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&id) && l.contains("running")),
        "{ls}"
    );

    let out = kiln(&state, &["stop", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("agent shutdown"),
        "{}",
        text(&out.stdout)
    );
    let ls = text(&kiln(&state, &["ls"]).stdout);
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&id) && l.contains("stopped")),
        "{ls}"
    );
    let out = kiln(&state, &["exec", &id, "--", "true"]);
    assert_eq!(out.status.code(), Some(125));

    let out = kiln(&state, &["rm", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!dir.exists(), "rm left {}", dir.display());
    assert!(!kiln_e2e::process_running(pid), "the VMM {pid} still runs");
    let out = kiln(&state, &["exec", &id, "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn rm_of_a_running_sandbox_stops_it_and_removes_its_disk_layer() {
    if !require_kvm("cli_rm_running") {
        return;
    }
    let state = TempDir::new("cli-rm");
    let out = kiln(&state, &["create"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let dir = state.0.join(&id);
    assert!(dir.join("scratch.ext4").is_file());
    assert!(dir.join("v.sock").exists());
    let pid = serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(dir.join("sandbox.json")).unwrap(),
    )
    .unwrap()["pid"]
        .as_u64()
        .unwrap() as i32;
    let out = kiln(&state, &["rm", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!dir.exists());
    assert!(
        !kiln_e2e::process_running(pid),
        "the VMM {pid} still runs after: {}",
        text(&out.stdout)
    );
}
