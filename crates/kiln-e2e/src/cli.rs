//! The `kiln` CLI on a private state directory ([`Kiln`]), SIGKILL of a process this
//! test started ([`kill9`]), and what a state directory holds that should not be there
//! ([`leftovers`]): the checks the kill tests (`lifecycle.rs`, `chaos.rs`) end with.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{kiln_bin, process_running, unique, wait_until, TIMEOUT};

/// Sends SIGKILL to `pid` (a process this test started, or a VMM of its own state
/// directory) and waits until it is gone (or a zombie of someone else's).
pub fn kill9(pid: u32) {
    // SAFETY: kill has no memory effects; the pid is a process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while process_running(pid as i32) {
        assert!(Instant::now() < deadline, "pid {pid} survived SIGKILL");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `kiln` CLI on a private state directory.
pub struct Kiln<'a> {
    pub state: &'a Path,
}

impl Kiln<'_> {
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(kiln_bin());
        c.args(args).env("KILN_STATE_DIR", self.state);
        c
    }

    /// Runs `kiln ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("run kiln");
        assert!(
            out.status.success(),
            "kiln {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `kiln ARGS` with `KILN_TEST_PAUSE_AT=point`, waits until it says it paused
    /// there, and kills it with SIGKILL: a kill at a known point, not a timing lottery.
    pub fn killed_at(&self, args: &[&str], point: &str) {
        let log = self.state.with_extension(format!("pause-{}.log", unique()));
        let mut child = self
            .cmd(args)
            .env(kiln::process::PAUSE_AT, point)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the stderr log"))
            .spawn()
            .expect("spawn kiln");
        let said = format!("kiln: paused at {point} ");
        let reached = wait_until(TIMEOUT, || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains(&said))
                || matches!(child.try_wait(), Ok(Some(_)))
        });
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        kill9(child.id());
        let _ = child.wait();
        assert!(
            reached && text.contains(&said),
            "kiln {args:?} never paused at {point}: {text}"
        );
    }

    /// `kiln inspect ID` as JSON, or None once the sandbox is gone.
    pub fn inspect(&self, id: &str) -> Option<serde_json::Value> {
        let out = self
            .cmd(&["inspect", id])
            .output()
            .expect("run kiln inspect");
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("inspect prints JSON"))
    }
}

/// Live processes whose command line names a path inside `state`, with that line.
pub fn processes_under(state: &Path) -> Vec<(u32, String)> {
    let needle = format!("{}/", state.display());
    let me = std::process::id();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(c) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&c).replace('\0', " ");
        if pid != me && line.contains(&needle) && process_running(pid as i32) {
            out.push((pid, line));
        }
    }
    out
}

/// Whether `pid` is a `kiln-jailer` (the supervisor of a jailed VMM).
pub fn is_jailer(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "kiln-jailer")
}

/// The files of a state directory that are kiln's own and no leftover.
pub use kiln::state_dir::STATE_FILES;

/// The entries of `state` besides [`STATE_FILES`]: sandbox folders and anything left.
pub fn state_entries(state: &Path) -> Vec<String> {
    std::fs::read_dir(state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !STATE_FILES.contains(&n.as_str()))
        .collect()
}

/// What `state` holds that no running sandbox in `running` accounts for, after a
/// reconcile (`kiln ls`): a process naming the state directory that is not the VMM of
/// one of them (by its api.sock argument), a running sandbox without its VMM, a fork
/// folder inside a sandbox, a half-written snapshot folder (`.snapshots/.*`), a
/// snapshot folder without a catalog row or a row without its folder, a file in the
/// state directory that is not one of [`STATE_FILES`]. Empty when all is as it should be.
pub fn leftovers(state: &Path, running: &[&str]) -> Vec<String> {
    let mut bad = Vec::new();
    for n in state_entries(state) {
        if !state.join(&n).is_dir() {
            bad.push(format!("a file was left in the state directory: {n}"));
        }
    }
    let procs = processes_under(state);
    for (pid, line) in &procs {
        let ours = running
            .iter()
            .any(|id| line.contains(&format!("{}/vm/api.sock", state.join(id).display())));
        if !ours {
            bad.push(format!(
                "a process that no running sandbox owns: pid {pid}: {line}"
            ));
        }
    }
    for id in running {
        let sock = format!("{}/vm/api.sock", state.join(id).display());
        // A jailed VMM's jailer names the same socket: count the VMMs only.
        let vmms = procs
            .iter()
            .filter(|(pid, l)| l.contains(&sock) && !is_jailer(*pid));
        match vmms.count() {
            1 => {}
            0 => bad.push(format!("{id} is running without a VMM")),
            n => bad.push(format!("{id} has {n} VMMs")),
        }
        for e in std::fs::read_dir(state.join(id))
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("fork-") {
                bad.push(format!("a fork folder was left in {id}: {n}"));
            }
        }
    }
    let snaps = state.join(".snapshots");
    let rows: Vec<String> = kiln::store::Store::open(state.join("kiln.db"))
        .and_then(|s| s.list_snapshots())
        .map(|v| v.into_iter().map(|r| r.name).collect())
        .unwrap_or_default();
    let mut folders = Vec::new();
    for e in std::fs::read_dir(&snaps).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with('.') {
            bad.push(format!("a half-written snapshot was left: {n}"));
        } else if !rows.contains(&n) {
            bad.push(format!("snapshot folder {n} has no catalog row"));
        }
        folders.push(n);
    }
    for r in rows.iter().filter(|r| !folders.contains(r)) {
        bad.push(format!("snapshot row {r} has no folder"));
    }
    for (id, g) in kiln::cgroup::groups_of(state) {
        if !running.contains(&id.as_str()) {
            bad.push(format!(
                "a cgroup was left for {id}: {}",
                g.path().display()
            ));
        }
    }
    bad
}

/// After `kiln ls` (reconcile): nothing is left but the VMMs of `running`, each of
/// which is listed running and answers an exec (see [`leftovers`]); every other row is
/// failed or stopped and `kiln rm` removes it with its folder.
pub fn assert_only_running(k: &Kiln, running: &[&str]) {
    k.ok(&["ls"]);
    let bad = leftovers(k.state, running);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    let state = k.state;
    for id in running {
        let info = k.inspect(id).expect("the running sandbox is listed");
        assert_eq!(info["state"], "running", "{info}");
        k.ok(&["exec", id, "--", "true"]);
    }
    for id in kiln::state_dir::list_ids(state).unwrap() {
        if running.contains(&id.as_str()) {
            continue;
        }
        if let Some(info) = k.inspect(&id) {
            let st = info["state"].as_str().unwrap_or("");
            assert!(st == "failed" || st == "stopped", "{id}: {info}");
        }
        k.ok(&["rm", &id]);
        assert!(!state.join(&id).exists(), "{id}'s folder is left");
        assert!(k.inspect(&id).is_none(), "{id} is still listed");
    }
}
