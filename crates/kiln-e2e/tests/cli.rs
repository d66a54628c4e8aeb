//! The `kiln` command line as a user drives it: run, create/exec/cp/ls/stop/rm across
//! separate invocations, and what is left behind.

use std::process::{Command, Output};

use kiln_e2e::{kiln_bin, require_kvm, TempDir};

/// What is in the state directory besides the state database, its reserve and the
/// snapshot store: sandbox folders, sockets, disk layers.
fn leftovers(state: &TempDir) -> Vec<String> {
    kiln_e2e::cli::state_entries(&state.0)
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
    assert_eq!(leftovers(&state), Vec::<String>::new());

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
    assert_eq!(leftovers(&state), Vec::<String>::new());
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

    let out = kiln(&state, &["logs", "--vmm", &id]);
    assert!(
        text(&out.stdout).contains("Guest-boot-time"),
        "{}",
        text(&out.stderr)
    );
    assert!(kiln(&state, &["logs", &id]).status.success());

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
    assert!(dir.join("vm/scratch.ext4").is_file());
    assert!(dir.join("vm/v.sock").exists());
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

/// Runs `kiln ARGS`, asserts success, returns stdout.
fn ok(state: &TempDir, args: &[&str]) -> String {
    let out = kiln(state, args);
    assert!(out.status.success(), "kiln {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn pause_snapshot_restore_fork_and_pool_from_the_cli_leave_nothing() {
    if !require_kvm("cli_snapshots") {
        return;
    }
    let state = TempDir::new("cli-snap");
    let id = ok(&state, &["create", "--image", "minimal"])
        .trim()
        .to_string();
    ok(
        &state,
        &["exec", &id, "--", "sh", "-c", "echo cli > /tmp/mark"],
    );
    ok(&state, &["pause", &id]);
    assert!(ok(&state, &["ls"])
        .lines()
        .any(|l| l.starts_with(&id) && l.contains("paused")));
    let out = kiln(&state, &["exec", &id, "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("paused"),
        "{}",
        text(&out.stderr)
    );
    ok(&state, &["resume", &id]);
    assert_eq!(ok(&state, &["snapshot", &id, "--name", "s1"]).trim(), "s1");
    let out = kiln(&state, &["snapshot", &id, "--name", "s1"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    assert!(ok(&state, &["snapshot", "ls"])
        .lines()
        .any(|l| l.starts_with("s1")));
    assert!(ok(&state, &["snapshot", "verify", "s1"]).contains("match"));
    // The state store indexes the snapshot and the image it booted.
    let db = kiln::store::Store::open(state.path("kiln.db")).unwrap();
    let rows = db.list_snapshots().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].name.as_str(), rows[0].source.as_deref()),
        ("s1", Some(id.as_str()))
    );
    assert!(rows[0].size_bytes.is_some_and(|b| b > 0), "{rows:?}");
    // A row lost (a crash between the seal and the insert) comes back on the next list.
    db.delete_snapshot("s1").unwrap();
    ok(&state, &["snapshot", "ls"]);
    assert_eq!(db.list_snapshots().unwrap(), rows);
    let images = ok(&state, &["images"]);
    assert!(
        images.lines().any(|l| l.starts_with("minimal ")),
        "{images}"
    );

    let r = ok(&state, &["restore", "s1"]).trim().to_string();
    assert_eq!(ok(&state, &["exec", &r, "--", "cat", "/tmp/mark"]), "cli\n");
    let kids: Vec<String> = ok(&state, &["fork", &r, "-n", "2"])
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(kids.len(), 2);
    for k in &kids {
        assert_eq!(ok(&state, &["exec", k, "--", "hostname"]).trim(), k);
    }
    ok(&state, &["pool", "s1", "-n", "1"]);
    assert!(ok(&state, &["ls"]).contains("pooled"));
    let from = ok(&state, &["create", "--from", "s1"]).trim().to_string();
    assert_eq!(
        ok(&state, &["exec", &from, "--", "cat", "/tmp/mark"]),
        "cli\n"
    );
    let out = kiln(&state, &["restore", "nope"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );

    // Wait for the background refill, then remove everything.
    for _ in 0..600 {
        if ok(&state, &["ls"]).contains("pooled") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let ids: Vec<String> = ok(&state, &["ls"])
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    assert!(ids.len() >= 5, "{ids:?}");
    let mut args = vec!["rm"];
    args.extend(ids.iter().map(String::as_str));
    ok(&state, &args);
    ok(&state, &["snapshot", "rm", "s1"]);
    let left = leftovers(&state);
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(
        ok(&state, &["ls"]).lines().count(),
        1,
        "no sandbox rows left"
    );
    assert!(ok(&state, &["snapshot", "ls"]).lines().count() == 1);
    assert!(db.list_snapshots().unwrap().is_empty(), "snapshot row left");
}

#[test]
fn a_guest_that_cannot_boot_is_reported_with_its_stage_and_nothing_is_left() {
    if !require_kvm("cli_boot_error") {
        return;
    }
    let state = TempDir::new("cli-boot-error");
    let guest = TempDir::new("cli-bad-guest");
    std::fs::write(guest.path("vmlinux"), b"garbage").unwrap();
    std::fs::copy(
        kiln::paths::default_initramfs(),
        guest.path("initramfs.cpio"),
    )
    .unwrap();
    let out = Command::new(kiln_bin())
        .args(["create", "--image", "minimal"])
        .env("KILN_STATE_DIR", &state.0)
        .env("KILN_GUEST_DIR", &guest.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(err.contains("boot failed at kernel"), "{err}");
    assert!(
        err.contains("neither an x86-64 ELF vmlinux nor a bzImage"),
        "{err}"
    );
    let left = leftovers(&state);
    assert!(left.is_empty(), "left behind: {left:?}");
}
