//! `kiln --remote`: the CLI against a real `kiln serve` on a unix socket, real guests
//! behind it. Two guests: one long-lived for the tour, one for `kiln run`. The tour is
//! named steps over one fixture (kiln_e2e::steps): a failure names its step.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use kiln_e2e::serve::Served;
use kiln_e2e::steps::run_steps;
use kiln_e2e::{kiln_bin, require_kvm, sha256_hex, TempDir};
use kiln_server::client::ListFilter;

/// `kiln --remote URL ARGS`, with no token or remote from our environment.
fn remote(url: &str, args: &[&str]) -> Output {
    Command::new(kiln_bin())
        .arg("--remote")
        .arg(url)
        .args(args)
        .env_remove("KILN_TOKEN")
        .env_remove("KILN_REMOTE")
        .output()
        .expect("run kiln")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and insists on exit code 0.
fn ok(url: &str, args: &[&str]) -> String {
    let o = remote(url, args);
    assert!(
        o.status.success(),
        "kiln --remote {args:?}: {:?}\n{}",
        o.status,
        stderr(&o)
    );
    stdout(&o)
}

/// The `kiln ls` line of `id`, split in columns.
fn ls_row(ls: &str, id: &str) -> Option<Vec<String>> {
    ls.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
}

/// Entries of a state directory besides the store, its reserve, token, socket and snapshot folder,
/// and processes whose command line names it.
fn leftovers(state: &Path) -> (Vec<String>, Vec<String>) {
    let files = kiln_e2e::cli::state_entries(state);
    let needle = state.to_string_lossy().into_owned();
    let procs = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle))
        .collect();
    (files, procs)
}

/// The CLI tour's fixture: the server, its URL, the tour's sandbox and a host
/// directory for the files copied in and out.
struct Tour {
    served: Served,
    url: String,
    id: String,
    host: TempDir,
}

#[test]
fn remote_cli_tour() {
    if !require_kvm("remote_cli_tour") {
        return;
    }
    let served = Served::start("remote-cli");
    let url = served.server.url();
    let mut tour = Tour {
        served,
        url,
        id: String::new(),
        host: TempDir::new("remote-cli-files"),
    };
    run_steps(
        &mut tour,
        &[
            (
                "create prints the id, and only the id",
                create_prints_the_id,
            ),
            (
                "exec keeps stdout and stderr apart and passes the exit code",
                exec_streams_and_exit_code,
            ),
            (
                "-e, -w and -i reach the command",
                exec_env_workdir_and_stdin,
            ),
            ("cp copies a file and a tree both ways", cp_file_and_tree),
            (
                "300 MiB streams through both ways in bounded memory",
                big_file_streams,
            ),
            ("ls matches the local command", ls_matches_local),
            (
                "pause and resume show in ls, events and exec",
                pause_and_resume,
            ),
            ("errors: an unknown id, a wrong token, a shell", errors),
            (
                "run has a sandbox of its own and its exit code",
                run_has_its_own_sandbox,
            ),
            (
                "snapshots, pool and logs work remotely",
                snapshots_pool_and_logs,
            ),
            ("stop and rm leave nothing", stop_and_rm_leave_nothing),
        ],
    );
}

fn create_prints_the_id(t: &mut Tour) {
    let url = t.url.as_str();
    // create prints the id, and only the id.
    // 1 GiB: the 300 MiB file below lives in the guest's RAM.
    let out = ok(url, &["create", "--image", "minimal", "--memory", "1024"]);
    let id = out.trim().to_string();
    assert!(
        !id.is_empty() && out.lines().count() == 1,
        "create printed {out:?}"
    );
    t.id = id;
}

fn exec_streams_and_exit_code(t: &mut Tour) {
    let url = t.url.as_str();
    let id = t.id.clone();
    // exec: stdout and stderr apart, the exit code propagated.
    let o = remote(
        url,
        &["exec", &id, "--", "sh", "-c", "echo a; echo b >&2; exit 3"],
    );
    assert_eq!(
        (stdout(&o).as_str(), stderr(&o).as_str(), o.status.code()),
        ("a\n", "b\n", Some(3))
    );
}

fn exec_env_workdir_and_stdin(t: &mut Tour) {
    let url = t.url.as_str();
    let id = t.id.clone();
    // -e, -w and -i reach the command.
    let mut child = Command::new(kiln_bin())
        .args([
            "--remote", url, "exec", "-i", "-e", "X=y", "-w", "/tmp", &id, "--",
        ])
        .args(["sh", "-c", "echo $X $(pwd) $(cat)"])
        .env_remove("KILN_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "y /tmp from stdin\n");
}

fn cp_file_and_tree(t: &mut Tour) {
    let url = t.url.as_str();
    let id = t.id.clone();
    let host = &t.host;
    // cp: a file in and back out with the same bytes, then a directory tree.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(host.path("in.bin"), &data).unwrap();
    let remote_file = format!("{id}:/tmp/in.bin");
    ok(
        url,
        &["cp", host.path("in.bin").to_str().unwrap(), &remote_file],
    );
    ok(
        url,
        &["cp", &remote_file, host.path("out.bin").to_str().unwrap()],
    );
    assert!(std::fs::read(host.path("out.bin")).unwrap() == data);
    std::fs::create_dir_all(host.path("tree/sub")).unwrap();
    std::fs::write(host.path("tree/a.txt"), "alpha").unwrap();
    std::fs::write(host.path("tree/sub/b.txt"), "beta").unwrap();
    let remote_tree = format!("{id}:/tmp/tree");
    ok(
        url,
        &["cp", host.path("tree").to_str().unwrap(), &remote_tree],
    );
    let listing = ok(
        url,
        &[
            "exec",
            &id,
            "--",
            "cat",
            "/tmp/tree/a.txt",
            "/tmp/tree/sub/b.txt",
        ],
    );
    assert_eq!(listing, "alphabeta");
    ok(
        url,
        &["cp", &remote_tree, host.path("back").to_str().unwrap()],
    );
    assert_eq!(
        std::fs::read_to_string(host.path("back/sub/b.txt")).unwrap(),
        "beta"
    );
    let o = remote(
        url,
        &[
            "cp",
            &format!("{id}:/no/such"),
            host.path("x").to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("/no/such"), "{}", stderr(&o));
}

fn big_file_streams(t: &mut Tour) {
    let url = t.url.as_str();
    let id = t.id.clone();
    let server = &t.served.server;
    let host = &t.host;
    // 300 MiB, more than any request body the server buffers, both ways: the file
    // streams through, and the server's peak memory stays far below its size.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let big: Vec<u8> = (0..(300usize << 20) / 8)
        .flat_map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed.to_le_bytes()
        })
        .collect();
    std::fs::write(host.path("big.bin"), &big).unwrap();
    let want = sha256_hex(&big);
    let guest_big = format!("{id}:/tmp/big.bin");
    ok(
        url,
        &["cp", host.path("big.bin").to_str().unwrap(), &guest_big],
    );
    let sum = ok(url, &["exec", &id, "--", "sha256sum", "/tmp/big.bin"]);
    assert_eq!(sum.split_whitespace().next(), Some(want.as_str()));
    ok(
        url,
        &["cp", &guest_big, host.path("big.back").to_str().unwrap()],
    );
    assert!(std::fs::read(host.path("big.back")).unwrap() == big);
    drop(big);
    for f in ["big.bin", "big.back"] {
        std::fs::remove_file(host.path(f)).unwrap();
    }
    ok(url, &["exec", &id, "--", "rm", "/tmp/big.bin"]);
    let peak = server.peak_rss_kib();
    eprintln!("kiln serve: peak RSS {peak} KiB after moving 300 MiB each way");
    assert!(
        peak < 150 << 10,
        "kiln serve peaked at {peak} KiB while moving 300 MiB"
    );
}

fn ls_matches_local(t: &mut Tour) {
    let url = t.url.as_str();
    let id = t.id.clone();
    let state = &t.served.state;
    // ls: the local command's header, and the sandbox in it.
    let ls = ok(url, &["ls"]);
    let local = Command::new(kiln_bin())
        .arg("ls")
        .env("KILN_STATE_DIR", &state.0)
        .output()
        .unwrap();
    let local = stdout(&local);
    assert_eq!(ls.lines().next(), local.lines().next(), "ls headers differ");
    let row = ls_row(&ls, &id).unwrap_or_else(|| panic!("{id} not in\n{ls}"));
    assert_eq!(row[1..5], ["running", "kiln", "minimal", "1"]);
    let local_row = ls_row(&local, &id).expect("local ls row");
    assert_eq!(row[..6], local_row[..6], "remote and local ls rows differ");
}

fn pause_and_resume(t: &mut Tour) {
    let url = t.url.as_str();
    let id = t.id.clone();
    // pause / resume, seen by ls, events and exec.
    assert_eq!(ok(url, &["pause", &id]), format!("{id} paused\n"));
    assert_eq!(ls_row(&ok(url, &["ls"]), &id).unwrap()[1], "paused");
    assert_eq!(ok(url, &["resume", &id]), format!("{id} resumed\n"));
    assert_eq!(ok(url, &["exec", &id, "--", "echo", "back"]), "back\n");
    let events = ok(url, &["events", &id]);
    assert!(
        events.contains(r#""to":"paused""#) && events.contains(r#""to":"running""#),
        "{events}"
    );
    let inspect: serde_json::Value = serde_json::from_str(&ok(url, &["inspect", &id])).unwrap();
    assert_eq!(inspect["state"], "running");
}

fn errors(t: &mut Tour) {
    let url = t.url.as_str();
    let id = t.id.clone();
    // Errors: an unknown id (the server's message, exit 125), a wrong token, a shell.
    let o = remote(url, &["exec", "no-such-sb", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(
        err.starts_with("kiln: error: ") && err.contains("no-such-sb") && err.contains("not_found"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let o = remote(url, &["--token", &"0".repeat(64), "ls"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("refused our credentials") && stderr(&o).contains("--token"),
        "{}",
        stderr(&o)
    );
    let o = remote(url, &["shell", &id]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("does not work with --remote"),
        "{}",
        stderr(&o)
    );
}

fn run_has_its_own_sandbox(t: &mut Tour) {
    let url = t.url.as_str();
    // run: a sandbox of its own, the exit code, nothing left of it.
    let o = remote(
        url,
        &[
            "run",
            "--image",
            "minimal",
            "--memory",
            "128",
            "--",
            "sh",
            "-c",
            "echo ran; exit 7",
        ],
    );
    assert_eq!(
        (stdout(&o).as_str(), o.status.code()),
        ("ran\n", Some(7)),
        "{}",
        stderr(&o)
    );
}

fn snapshots_pool_and_logs(t: &mut Tour) {
    let url = t.url.as_str();
    let id = t.id.clone();
    // Snapshots (no restore: it would boot another guest), logs.
    assert_eq!(
        ok(url, &["snapshot", &id, "--name", "remote-snap"]),
        "remote-snap\n"
    );
    let snaps = ok(url, &["snapshot", "ls"]);
    assert!(
        snaps.lines().any(|l| l.starts_with("remote-snap ")
            && l.contains(&id)
            && l.split_whitespace().last() == Some("0")),
        "{snaps}"
    );
    // The pool column and `pool` work remotely too (size 0: no guest booted here; the
    // API tour in server.rs fills one and checks the hand-off and refill).
    let o = remote(url, &["pool", "remote-snap", "-n", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "kiln: pool of remote-snap holds 0\n");
    assert_eq!(
        ok(url, &["snapshot", "rm", "remote-snap"]),
        "remote-snap removed\n"
    );
    assert!(!ok(url, &["logs", "--vmm", &id]).is_empty());
}

fn stop_and_rm_leave_nothing(t: &mut Tour) {
    let url = t.url.as_str();
    let id = t.id.clone();
    let server = &t.served.server;
    let state = &t.served.state;
    // stop, then rm: nothing left: no row, folder, socket or VMM.
    assert!(ok(url, &["stop", &id]).starts_with(&format!("{id} stopped (")));
    assert_eq!(ls_row(&ok(url, &["ls"]), &id).unwrap()[1], "stopped");
    assert_eq!(ok(url, &["rm", &id]), format!("{id} removed\n"));
    assert!(ls_row(&ok(url, &["ls"]), &id).is_none());
    assert!(server
        .client()
        .list(&ListFilter::default())
        .unwrap()
        .is_empty());
    let (files, procs) = leftovers(&state.0);
    assert!(
        files.is_empty() && procs.is_empty(),
        "left: {files:?} {procs:?}"
    );
}
