//! Snapshots, restore and fork with real guests: processes and memory continue, files in
//! tmpfs survive, children diverge, identities differ, damaged snapshots are refused
//! with nothing left behind.

use std::collections::BTreeSet;

use kiln::{Error, ExecOptions, MemoryBackend, Sandbox, Snapshot, State};
use kiln_e2e::{sandbox, sh, unique};

fn name(test: &str) -> String {
    format!("{test}-{}-{}", std::process::id(), unique())
}

fn restore(snap: &str) -> Sandbox {
    Sandbox::builder()
        .from_snapshot(snap)
        .create()
        .unwrap_or_else(|e| panic!("restore {snap}: {e}"))
}

/// Starts a shell loop that counts in a shell variable (process memory) and writes the
/// count to /tmp/count (tmpfs) every 50 ms, by rename so a reader never sees it empty.
fn start_counter(sb: &Sandbox) {
    sh(
        sb,
        "(i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done) >/dev/null 2>&1 &",
    );
}

fn count(sb: &Sandbox) -> u64 {
    sh(sb, "cat /tmp/count")
        .stdout_str()
        .trim()
        .parse()
        .unwrap()
}

/// Waits until the counter has moved past `above` (the loop runs on in the guest).
fn counter_moves_past(sb: &Sandbox, above: u64) -> bool {
    (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        count(sb) > above
    })
}

#[test]
fn restored_process_and_tmpfs_continue_and_the_parent_can_go() {
    let Some(mut sb) = sandbox("snap_restore", "minimal") else {
        return;
    };
    sh(&sb, "echo kept > /tmp/file");
    start_counter(&sb);
    assert!(counter_moves_past(&sb, 3));
    let before = count(&sb);
    let snap = sb.snapshot(Some(&name("restore"))).unwrap();
    if let Some(r) = kiln_e2e::cgroup_report(&sb) {
        eprintln!("after a snapshot: {r}");
    }
    // The parent runs on and is then removed: the snapshot does not need it.
    assert_eq!(sb.state(), State::Running);
    sb.remove().unwrap();

    let r = restore(snap.name());
    assert_eq!(sh(&r, "cat /tmp/file").stdout_str(), "kept\n");
    let at_restore = count(&r);
    assert!(
        at_restore >= before,
        "counter went back: {at_restore} < {before}"
    );
    assert!(
        counter_moves_past(&r, at_restore),
        "the counting process did not continue"
    );
    assert_eq!(sh(&r, "hostname").stdout_str().trim(), r.id());
    if let Some(rep) = kiln_e2e::cgroup_report(&r) {
        eprintln!("a restored sandbox: {rep}");
    }
    let snap_name = snap.name().to_string();
    r.remove().unwrap();
    // The working-set recording Uffd restore, then one that prefetches it.
    for _ in 0..2 {
        let u = Sandbox::builder()
            .from_snapshot(&snap_name)
            .memory_backend(MemoryBackend::Uffd)
            .create()
            .unwrap();
        assert_eq!(sh(&u, "cat /tmp/file").stdout_str(), "kept\n");
        assert!(count(&u) >= before);
        u.remove().unwrap();
    }
    assert!(Snapshot::get(&snap_name)
        .unwrap()
        .working_set_path()
        .is_file());
    Snapshot::get(&snap_name).unwrap().remove().unwrap();
}

#[test]
fn twenty_restores_run_side_by_side() {
    // Twenty guests of 256 MiB are more than the harness VM's memory budget (its 4 GiB
    // x 1.5); file-backed restores share the snapshot's pages, and admission has its own
    // suite (limits.rs), so this one raises the budget.
    std::env::set_var(kiln::memory::BUDGET_ENV, "65536");
    let Some(mut sb) = sandbox("snap_twenty", "minimal") else {
        return;
    };
    sh(&sb, "echo twenty > /tmp/mark");
    let snap = sb.snapshot(Some(&name("twenty"))).unwrap();
    sb.remove().unwrap();
    let all: Vec<Sandbox> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| (0..5).map(|_| restore(snap.name())).collect::<Vec<_>>()))
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(all.len(), 20);
    let mut hosts = BTreeSet::new();
    for r in &all {
        let out = sh(r, "cat /tmp/mark; hostname");
        let mut lines = out
            .stdout_str()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>();
        assert_eq!(lines[0], "twenty");
        hosts.insert(lines.pop().unwrap());
    }
    assert_eq!(hosts.len(), 20, "hostnames are not unique: {hosts:?}");
    drop(all);
    snap.remove().unwrap();
}

#[test]
fn fork_children_diverge_with_their_own_identity() {
    let Some(mut parent) = sandbox("snap_fork", "debian") else {
        return;
    };
    sh(
        &parent,
        "echo base > /root/disk.txt; echo base > /tmp/mem.txt",
    );
    start_counter(&parent);
    // A vsock connection the parent has open across the fork keeps working.
    let mut open = parent
        .exec_stream(&ExecOptions::new(["sh", "-c", "sleep 2; echo survived"]))
        .unwrap();
    let mut kids = parent.fork(2).unwrap();
    let mut streamed = Vec::new();
    while let Some(ev) = open.next_event().unwrap() {
        if let kiln::ExecEvent::Stdout(b) = ev {
            streamed.extend(b);
        }
    }
    assert_eq!(String::from_utf8_lossy(&streamed), "survived\n");
    assert_eq!(kids.len(), 2);
    // Parent, children: all continue from the same instant.
    for sb in [&parent, &kids[0], &kids[1]] {
        assert_eq!(
            sh(sb, "cat /root/disk.txt /tmp/mem.txt").stdout_str(),
            "base\nbase\n"
        );
        let c = count(sb);
        assert!(counter_moves_past(sb, c));
    }
    // A write in one child is invisible to the parent and the sibling, on disk and in memory.
    sh(
        &kids[0],
        "echo child0 > /root/disk.txt; echo child0 > /tmp/mem.txt; sync",
    );
    assert_eq!(
        sh(&kids[0], "cat /root/disk.txt /tmp/mem.txt").stdout_str(),
        "child0\nchild0\n"
    );
    for sb in [&parent, &kids[1]] {
        assert_eq!(
            sh(sb, "cat /root/disk.txt /tmp/mem.txt").stdout_str(),
            "base\nbase\n"
        );
    }
    // New identities, and the RNG never repeats between children.
    let ident = |sb: &Sandbox| {
        let out = sh(
            sb,
            "hostname; echo $(cat /etc/machine-id 2>/dev/null || echo none); echo $(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')",
        );
        assert_eq!(out.stdout_str().lines().count(), 3, "{out:?}");
        out.stdout_str()
    };
    let (a, b, p) = (ident(&kids[0]), ident(&kids[1]), ident(&parent));
    let la: Vec<&str> = a.lines().collect();
    let lb: Vec<&str> = b.lines().collect();
    let lp: Vec<&str> = p.lines().collect();
    assert_eq!(la[0], kids[0].id());
    assert_eq!(lb[0], kids[1].id());
    for i in 0..3 {
        assert_ne!(la[i], lb[i], "children share line {i}: {a} / {b}");
        assert_ne!(la[i], lp[i], "child and parent share line {i}");
    }
    assert_eq!(kids[0].record().parent.as_deref(), Some(parent.id()));
    // Nothing of the fork is left in the parent's folder.
    let left: Vec<_> = std::fs::read_dir(parent.dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("fork-"))
        .collect();
    assert!(left.is_empty(), "fork left {left:?}");
    let dirs: Vec<_> = kids.iter().map(|k| k.dir().to_path_buf()).collect();
    kids.clear();
    assert!(dirs.iter().all(|d| !d.exists()));
}

#[test]
fn a_paused_sandbox_snapshots_consistently_and_stays_paused() {
    let Some(mut sb) = sandbox("snap_paused", "minimal") else {
        return;
    };
    start_counter(&sb);
    assert!(counter_moves_past(&sb, 2));
    let c0 = count(&sb);
    sb.pause().unwrap();
    assert_eq!(sb.state(), State::Paused);
    let err = sb.exec(&ExecOptions::new(["true"])).unwrap_err();
    assert!(err.to_string().contains("paused"), "{err}");
    let snap = sb.snapshot(Some(&name("paused"))).unwrap();
    assert_eq!(
        sb.state(),
        State::Paused,
        "snapshot resumed a paused sandbox"
    );
    let r = restore(snap.name());
    let child = count(&r);
    sb.resume().unwrap();
    // Both continue from the paused instant (give or take the seconds each ran since).
    let parent = count(&sb);
    assert!(child >= c0 && parent >= c0, "{child} / {parent} < {c0}");
    assert!(
        child.abs_diff(parent) < 60,
        "child {child} vs parent {parent}"
    );
    assert!(counter_moves_past(&r, child));
    assert!(matches!(sb.resume(), Err(Error::InvalidTransition { .. })));
    drop(r);
    snap.remove().unwrap();
}

/// Copies snapshot `src` to a new name, then damages it with `f`.
fn damaged(src: &Snapshot, f: impl FnOnce(&std::path::Path)) -> String {
    let n = name("bad");
    let dir = kiln::snapshot::snapshots_dir().unwrap().join(&n);
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(&src.dir).unwrap().flatten() {
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    f(&dir);
    n
}

#[test]
fn damaged_snapshots_are_refused_and_nothing_is_left() {
    let Some(mut sb) = sandbox("snap_damaged", "minimal") else {
        return;
    };
    let good = sb.snapshot(Some(&name("good"))).unwrap();
    sb.remove().unwrap();
    let state = kiln::state_dir::state_dir().unwrap();
    type Damage = Box<dyn FnOnce(&std::path::Path)>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            "does not match",
            Box::new(|d| {
                use std::os::unix::fs::FileExt;
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(d.join("memory.bin"))
                    .unwrap();
                let mut b = [0u8; 1];
                f.read_at(&mut b, 0x10_0000).unwrap();
                f.write_at(&[b[0] ^ 0xff], 0x10_0000).unwrap();
            }),
        ),
        (
            "truncated",
            Box::new(|d| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("memory.bin"))
                    .unwrap();
                f.set_len(1 << 20).unwrap();
            }),
        ),
        (
            "version",
            Box::new(|d| {
                let p = d.join("state.json");
                let t = std::fs::read_to_string(&p).unwrap();
                std::fs::write(&p, t.replacen("\"version\":2", "\"version\":99", 1)).unwrap();
            }),
        ),
        (
            "missing",
            Box::new(|d| std::fs::remove_file(d.join("memory.bin")).unwrap()),
        ),
    ];
    for (want, damage) in cases {
        let bad = damaged(&good, damage);
        let id = format!("bad-{}", unique());
        let err = Sandbox::builder()
            .from_snapshot(&bad)
            .id(&id)
            .create()
            .err()
            .unwrap_or_else(|| panic!("damaged snapshot ({want}) was restored"));
        assert!(matches!(err, Error::BadSnapshot(_)), "{want}: {err:?}");
        assert!(err.to_string().contains(want), "{want}: {err}");
        assert!(
            !state.join(&id).exists(),
            "{want}: a sandbox folder was left"
        );
        Snapshot::get(&bad).unwrap().remove().unwrap();
    }
    // The intact one still restores, and `verify` hashes it.
    let (_, v) = good.verify(kiln::snapshot::Trust::Rehash).unwrap();
    assert_eq!(v.hashed, 1);
    drop(restore(good.name()));
    good.remove().unwrap();
}

#[test]
fn warm_pool_hands_out_running_sandboxes() {
    let Some(mut sb) = sandbox("snap_pool", "minimal") else {
        return;
    };
    let snap = sb.snapshot(Some(&name("pool"))).unwrap();
    sb.remove().unwrap();
    assert_eq!(Sandbox::pool_fill(snap.name(), 2).unwrap(), 2);
    let members: BTreeSet<String> = Sandbox::pool_members(snap.name())
        .unwrap()
        .iter()
        .map(|s| s.id().to_string())
        .collect();
    let a = restore(snap.name());
    assert!(
        members.contains(a.id()),
        "create did not take a pooled sandbox"
    );
    assert_eq!(a.record().pool, None);
    assert_eq!(sh(&a, "hostname").stdout_str().trim(), a.id());
    assert_eq!(Sandbox::pool_members(snap.name()).unwrap().len(), 1);
    drop(a);
    for m in Sandbox::pool_members(snap.name()).unwrap() {
        m.remove().unwrap();
    }
    snap.remove().unwrap();
}
