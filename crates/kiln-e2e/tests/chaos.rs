//! Chaos: a bounded mixed workload (creates, execs, copies, snapshots, restores, forks,
//! removes; each through the local CLI or through `kiln serve` with `--remote`) while a
//! seeded random schedule SIGKILLs the `kiln` process doing the operation, the server,
//! or a VMM. Afterwards a reconcile (`kiln ls`) must leave every row telling the truth:
//! a running row has one live VMM that answers exec locally and over the API, no row is
//! paused or carries an operation, a failed row kept no socket or disk layer, and there
//! is no orphan process, folder, fork folder or half-written snapshot. Then everything
//! is removed and nothing is left.
//!
//! The seed is printed; `KILN_CHAOS_SEED=N` replays a schedule (the same operations,
//! targets and delays; what a kill hits still depends on timing). `KILN_CHAOS_OPS`
//! sets the number of operations (default 100).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use kiln::store::{SandboxFilter, SbState, Store};
use kiln_e2e::cli::{kill9, leftovers, processes_under, Kiln};
use kiln_e2e::serve::{Serve, Served};
use kiln_e2e::{require_kvm, TIMEOUT};

/// splitmix64: a tiny seeded generator, so a schedule can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        (!v.is_empty()).then(|| &v[self.below(v.len())])
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    /// The `kiln` process doing the operation.
    Cli,
    Server,
    /// A VMM of the state directory, chosen at random.
    Vmm,
}

#[derive(Default)]
struct Tally {
    ok: usize,
    kills: Vec<Target>,
}

/// What the workload knows it made (some of it may be dead or gone by now).
#[derive(Default)]
struct World {
    sandboxes: Vec<String>,
    snapshots: Vec<String>,
    made: usize,
}

/// At most this many sandboxes at once, so the workload stays bounded in memory.
const MAX_SANDBOXES: usize = 3;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The next operation's arguments (without `--remote`), and the names it will make.
fn plan(rng: &mut Rng, w: &mut World, payload: &Path) -> (Vec<String>, Vec<String>) {
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let full = w.sandboxes.len() >= MAX_SANDBOXES;
    let sb = rng.pick(&w.sandboxes).cloned();
    let snap = rng.pick(&w.snapshots).cloned();
    w.made += 1;
    let fresh = format!("c{}", w.made);
    let choice = if w.sandboxes.is_empty() {
        0
    } else {
        rng.below(9)
    };
    match (choice, sb, snap) {
        (0 | 1, _, _) if !full => (
            s(&["create", "--image", "minimal", "--id", &fresh]),
            vec![fresh],
        ),
        (2, Some(id), _) => (s(&["exec", &id, "--", "sh", "-c", "echo $((6*7))"]), vec![]),
        (3, Some(id), _) => {
            let to = format!("{id}:/tmp/payload");
            (s(&["cp", &payload.display().to_string(), &to]), vec![])
        }
        (4, Some(id), _) => (s(&["snapshot", &id, "--name", &fresh]), vec![fresh]),
        (5, _, Some(name)) if !full => (s(&["restore", &name, "--id", &fresh]), vec![fresh]),
        (6, Some(id), _) if !full => (s(&["fork", &id, "-n", "1"]), vec![]),
        (7, _, Some(name)) => (s(&["snapshot", "rm", &name]), vec![]),
        (_, Some(id), _) => (s(&["rm", &id]), vec![]),
        _ => (
            s(&["create", "--image", "minimal", "--id", &fresh]),
            vec![fresh],
        ),
    }
}

/// Waits for the operation, with a kill of `target` after `delay` if one is scheduled.
/// Returns whether it succeeded, its stdout and its stderr.
fn run(
    mut child: Child,
    kill: Option<(Target, Duration)>,
    served: &mut Served,
    tally: &mut Tally,
) -> (bool, String, String) {
    let started = Instant::now();
    let mut pending = kill;
    loop {
        if let Some((target, delay)) = pending {
            if started.elapsed() >= delay {
                pending = None;
                let hit = match target {
                    Target::Cli => matches!(child.try_wait(), Ok(None)).then(|| kill9(child.id())),
                    Target::Server => {
                        served.server.signal(libc::SIGKILL);
                        Some(())
                    }
                    Target::Vmm => {
                        let vmms: Vec<u32> = processes_under(&served.state.0)
                            .into_iter()
                            .filter(|(_, l)| l.contains("kiln-vmm"))
                            .map(|(p, _)| p)
                            .collect();
                        let mut r = Rng(delay.as_nanos() as u64);
                        r.pick(&vmms).map(|&p| kill9(p))
                    }
                };
                if hit.is_some() {
                    tally.kills.push(target);
                }
            }
        }
        match child.try_wait() {
            Ok(Some(_)) if pending.is_none() => break,
            Ok(Some(_)) => pending = None,
            _ => {}
        }
        assert!(
            started.elapsed() < TIMEOUT * 2,
            "an operation hung for {:?} (kill {kill:?})",
            TIMEOUT * 2
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("wait for kiln");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn seeded_kills_of_kiln_the_server_and_vmms_lose_nothing_and_leave_nothing() {
    if !require_kvm("chaos") {
        return;
    }
    let seed = env_u64("KILN_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let ops = env_u64("KILN_CHAOS_OPS").unwrap_or(100) as usize;
    eprintln!("chaos: seed {seed} ({ops} operations; replay with KILN_CHAOS_SEED={seed})");
    let mut rng = Rng(seed);
    let mut served = Served::start("chaos");
    let state = served.state.0.clone();
    let payload = state.with_extension("payload");
    std::fs::write(&payload, vec![7u8; 256 * 1024]).unwrap();
    let url = served.server.url();
    let mut w = World::default();
    let mut tally = Tally::default();
    // How long each kind of operation took last time: a kill lands at a random point
    // within that, so it hits the operation in flight rather than after it.
    let mut took: std::collections::HashMap<String, Duration> = Default::default();
    let k = Kiln { state: &state };

    for _ in 0..ops {
        let (args, made) = plan(&mut rng, &mut w, &payload);
        let remote = rng.below(2) == 1;
        let last = took
            .get(&args[0])
            .copied()
            .unwrap_or(Duration::from_secs(1));
        let kill = (rng.below(2) == 1).then(|| {
            let t = [Target::Cli, Target::Server, Target::Vmm][rng.below(3)];
            (t, last.mul_f64(rng.below(1000) as f64 / 1000.0))
        });
        let mut full: Vec<&str> = Vec::new();
        if remote {
            full.extend(["--remote", &url]);
        }
        full.extend(args.iter().map(String::as_str));
        let child = k
            .cmd(&full)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kiln");
        let t0 = Instant::now();
        let (ok, out, err) = run(child, kill, &mut served, &mut tally);
        if kill.is_none() && ok {
            took.insert(args[0].clone(), t0.elapsed());
        }
        let why = err.lines().last().unwrap_or("").to_string();
        let said = if ok {
            "ok".to_string()
        } else {
            format!("failed: {why}")
        };
        eprintln!("chaos: kiln {} -> {said} (kill {kill:?})", full.join(" "));
        tally.ok += usize::from(ok);
        if ok && args[0] == "exec" {
            assert_eq!(
                out.trim(),
                "42",
                "an exec that succeeded printed the wrong output"
            );
        }
        // What it made, or may have made before a kill: the invariants check the rest.
        if args[0] == "snapshot" && args.get(1).is_some_and(|a| a != "rm") {
            w.snapshots.extend(made);
        } else if args[0] == "snapshot" {
            w.snapshots.retain(|n| n != &args[2]);
        } else if args[0] == "rm" {
            w.sandboxes.retain(|n| n != &args[1]);
        } else if args[0] == "fork" {
            w.sandboxes
                .extend(out.split_whitespace().map(str::to_string));
        } else {
            w.sandboxes.extend(made);
        }
        if !served.server.alive() {
            served.server = Serve::start(&state);
        }
    }

    // Reconcile, then every row must tell the truth.
    k.ok(&["ls"]);
    let store = Store::open(state.join("kiln.db")).expect("open the store");
    let rows = store.list_sandboxes(&SandboxFilter::default()).unwrap();
    let mut bad = Vec::new();
    let mut running = Vec::new();
    for r in &rows {
        match r.state {
            SbState::Running => running.push(r.id.clone()),
            SbState::Stopped => {}
            SbState::Failed => {
                for f in ["vm/api.sock", "vm/v.sock", "vm/scratch.ext4"] {
                    if state.join(&r.id).join(f).exists() {
                        bad.push(format!("{} is failed but kept its {f}", r.id));
                    }
                }
            }
            s => bad.push(format!("{} is left {s:?} after reconcile", r.id)),
        }
        if r.operation.is_some() {
            bad.push(format!(
                "{} still carries an operation: {:?}",
                r.id, r.operation
            ));
        }
    }
    let ids: Vec<&str> = running.iter().map(String::as_str).collect();
    bad.extend(leftovers(&state, &ids));
    let folders = kiln::state_dir::list_ids(&state).unwrap();
    for f in &folders {
        if !rows.iter().any(|r| &r.id == f) {
            bad.push(format!("folder {f} has no row"));
        }
    }
    for r in &rows {
        if !folders.contains(&r.id) {
            bad.push(format!("row {} has no folder", r.id));
        }
    }
    for id in &ids {
        let local = k.cmd(&["exec", id, "--", "true"]).output().unwrap();
        let api = k
            .cmd(&["--remote", &url, "exec", id, "--", "true"])
            .output()
            .unwrap();
        if !local.status.success() || !api.status.success() {
            bad.push(format!(
                "running {id} does not answer exec (local and over the API)"
            ));
        }
    }
    let kills = |t| tally.kills.iter().filter(|&&k| k == t).count();
    eprintln!(
        "chaos: seed {seed}: {} operations ({} succeeded), survived {} kills ({} kiln, {} server, {} VMM); {} running, {} rows at the end",
        ops,
        tally.ok,
        tally.kills.len(),
        kills(Target::Cli),
        kills(Target::Server),
        kills(Target::Vmm),
        ids.len(),
        rows.len()
    );
    assert!(bad.is_empty(), "chaos seed {seed}:\n{}", bad.join("\n"));

    // Everything removes, and nothing is left.
    let all: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    if !all.is_empty() {
        let mut args = vec!["rm"];
        args.extend(&all);
        k.ok(&args);
    }
    for s in store.list_snapshots().unwrap() {
        k.ok(&["snapshot", "rm", &s.name]);
    }
    assert!(
        processes_under(&state).is_empty(),
        "{:?}",
        processes_under(&state)
    );
    assert!(kiln::state_dir::list_ids(&state).unwrap().is_empty());
    assert!(leftovers(&state, &[]).is_empty());
    let _ = std::fs::remove_file(&payload);
}
