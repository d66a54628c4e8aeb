//! Every VMM runs in its own cgroup v2 group with limits from the sandbox's settings,
//! with real guests: the limit files say what was asked, `kiln inspect` shows them, a
//! busy guest under `--cpu-quota 0.5` gets about half a CPU, an OOM kill in the group
//! is named in the failure, and the group is gone after `kiln rm`, after a SIGKILLed
//! VMM and a reconcile, and after a refused create.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln::cgroup::{self, Group};
use kiln_e2e::cli::{kill9, Kiln};
use kiln_e2e::{require_kvm, TempDir};

const MIB: u64 = 1 << 20;

/// cgroup v2 must be there wherever guests run (the harness mounts it).
fn cgroups_ready(test: &str) -> bool {
    if !require_kvm(test) {
        return false;
    }
    assert!(
        Path::new("/sys/fs/cgroup/cgroup.controllers").is_file(),
        "{test}: no cgroup v2 at /sys/fs/cgroup"
    );
    true
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

fn create(k: &Kiln, args: &[&str]) -> String {
    let mut all = vec!["create", "--image", "minimal", "--memory", "128"];
    all.extend_from_slice(args);
    k.ok(&all).trim().to_string()
}

fn group_of(state: &Path, id: &str) -> PathBuf {
    cgroup::state_group(&cgroup::root(), state).join(id)
}

#[test]
fn limits_are_set_shown_by_inspect_and_removed_with_the_sandbox() {
    if !cgroups_ready("cgroup_limits") {
        return;
    }
    let t = TempDir::new("cg-limits");
    let k = Kiln { state: &t.0 };
    let id = create(&k, &["--cpus", "2", "--cpu-quota", "0.5"]);
    let g = group_of(&t.0, &id);
    assert_eq!(read(&g.join("cpu.max")), "50000 100000");
    let allowance = cgroup::file_allowance_mib(&t.0, 128, 0);
    let max = (128 + cgroup::VMM_OVERHEAD_MIB + allowance) * MIB;
    assert_eq!(read(&g.join("memory.max")), max.to_string());
    assert_eq!(read(&g.join("memory.swap.max")), "0");
    assert_eq!(
        read(&g.join("pids.max")),
        (cgroup::PIDS_BASE + 2).to_string()
    );

    let info = k.inspect(&id).expect("inspect");
    let pid = info["pid"].as_u64().expect("a pid") as u32;
    let procs = read(&g.join("cgroup.procs"));
    assert!(
        procs.lines().any(|l| l == pid.to_string()),
        "{pid} not in {procs}"
    );
    let own = read(Path::new(&format!("/proc/{pid}/cgroup")));
    assert!(own.ends_with(&format!("/{id}")), "{own}");
    assert_eq!(info["cpu_quota"], serde_json::json!(0.5));
    let c = &info["cgroup"];
    assert_eq!(c["path"], serde_json::json!(g), "{info:#}");
    assert_eq!(c["cpu_max"], "50000 100000");
    assert_eq!(c["memory_max"], serde_json::json!(max));
    assert!(c["memory_current"].as_u64().unwrap() > 0, "{c}");
    assert!(c["memory_peak"].as_u64().unwrap() >= c["memory_current"].as_u64().unwrap());
    assert!(c["cpu_usage_usec"].as_u64().unwrap() > 0, "{c}");
    let pids = c["pids_current"].as_u64().unwrap();
    assert!((3..=cgroup::PIDS_BASE).contains(&pids), "{c}");
    assert_eq!(c["oom_kills"], 0);

    // A sandbox without a quota has a group too, with no CPU limit.
    let other = create(&k, &[]);
    assert_eq!(read(&group_of(&t.0, &other).join("cpu.max")), "max 100000");
    assert_eq!(
        k.inspect(&other).unwrap()["cpu_quota"],
        serde_json::Value::Null
    );

    k.ok(&["rm", &id]);
    assert!(!g.exists(), "the group outlived kiln rm");
    assert!(group_of(&t.0, &other).exists());
    k.ok(&["rm", &other]);
    assert!(
        !cgroup::state_group(&cgroup::root(), &t.0).exists(),
        "the state directory's group was left"
    );
}

#[test]
fn a_busy_guest_under_half_a_cpu_quota_uses_about_half_a_cpu() {
    if !cgroups_ready("cgroup_cpu") {
        return;
    }
    let t = TempDir::new("cg-cpu");
    let k = Kiln { state: &t.0 };
    let id = create(&k, &["--cpu-quota", "0.5"]);
    let g = Group::at(group_of(&t.0, &id));
    let mut busy = k
        .cmd(&[
            "exec",
            &id,
            "--timeout",
            "60",
            "--",
            "sh",
            "-c",
            "while :; do :; done",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn kiln exec");
    // Let the loop start, then measure the group's CPU time over an interval.
    std::thread::sleep(Duration::from_secs(2));
    let usage = || {
        g.stats()
            .and_then(|s| s.cpu_usage_usec)
            .expect("usage_usec")
    };
    let (u0, t0) = (usage(), Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let (u1, wall) = (usage(), t0.elapsed());
    let _ = busy.kill();
    let _ = busy.wait();
    let cpus = (u1 - u0) as f64 / wall.as_micros() as f64;
    eprintln!("a busy guest under --cpu-quota 0.5 used {cpus:.3} CPUs over {wall:?}");
    assert!(cpus < 0.75, "the quota did not hold: {cpus:.3} CPUs");
    assert!(cpus > 0.1, "the guest was not busy: {cpus:.3} CPUs");
    let stat = read(&g.path().join("cpu.stat"));
    assert!(
        stat.lines()
            .any(|l| l.starts_with("nr_throttled ") && l != "nr_throttled 0"),
        "never throttled: {stat}"
    );
    k.ok(&["rm", &id]);
    assert!(!g.path().exists());
}

#[test]
fn a_killed_vmm_loses_its_group_on_reconcile() {
    if !cgroups_ready("cgroup_kill") {
        return;
    }
    let t = TempDir::new("cg-kill");
    let k = Kiln { state: &t.0 };
    let id = create(&k, &[]);
    let g = group_of(&t.0, &id);
    let pid = k.inspect(&id).unwrap()["pid"].as_u64().unwrap() as u32;
    kill9(pid);
    assert!(g.exists(), "nobody has looked yet");
    k.ok(&["ls"]);
    assert!(!g.exists(), "reconcile left the dead VMM's group");
    let info = k.inspect(&id).unwrap();
    assert_eq!(info["state"], "failed");
    assert_eq!(info["cgroup"], serde_json::Value::Null);
    let why = info["failure"].as_str().unwrap();
    assert!(!why.contains("memory limit"), "{why}");
    k.ok(&["rm", &id]);
}

#[test]
fn an_oom_kill_in_the_group_is_named_in_the_failure() {
    if !cgroups_ready("cgroup_oom") {
        return;
    }
    let t = TempDir::new("cg-oom");
    let k = Kiln { state: &t.0 };
    let id = k
        .ok(&["create", "--image", "minimal", "--memory", "512"])
        .trim()
        .to_string();
    let g = Group::at(group_of(&t.0, &id));
    // Tighten the limit under the running guest, then make the guest touch more of
    // its memory than that allows: the VMM's anonymous memory cannot be swapped out.
    let now = g.stats().unwrap().memory_current.unwrap();
    let tight = (now / MIB + 48) * MIB;
    std::fs::write(g.path().join("memory.max"), tight.to_string()).unwrap();
    let out = k
        .cmd(&[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "dd if=/dev/zero of=/tmp/fill bs=1M count=400",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the guest filled 400 MiB under the limit"
    );
    let info = k.inspect(&id).unwrap();
    assert_eq!(info["state"], "failed", "{info:#}");
    let why = info["failure"].as_str().unwrap();
    let want = format!(
        "the sandbox's VMM was killed for exceeding its memory limit (memory.max {} MiB)",
        tight / MIB
    );
    assert!(why.contains(&want), "{why}");
    assert!(!g.path().exists(), "the OOM-killed VMM's group was left");
    k.ok(&["rm", &id]);
}

#[test]
fn a_bad_cpu_quota_is_a_clear_error_and_leaves_nothing() {
    if !cgroups_ready("cgroup_bad_quota") {
        return;
    }
    let t = TempDir::new("cg-bad");
    let k = Kiln { state: &t.0 };
    for (quota, want) in [
        ("0", "use 0.01 to 1"),
        ("1.5", "use 0.01 to 1"),
        ("-1", "use 0.01 to 1"),
        ("NaN", "use a number of CPUs"),
    ] {
        let arg = format!("--cpu-quota={quota}");
        let out = k
            .cmd(&["create", "--image", "minimal", &arg])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{quota} was taken");
        assert!(
            err.contains("cpu quota") && err.contains(want),
            "{quota}: {err}"
        );
    }
    assert_eq!(k.ok(&["ls"]).lines().count(), 1, "only the header");
    let folders: Vec<_> = std::fs::read_dir(&t.0)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(folders.is_empty(), "{folders:?}");
    assert!(cgroup::groups_of(&t.0).is_empty());
}
