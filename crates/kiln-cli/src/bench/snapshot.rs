//! `kiln bench snapshot | restore | fork | density`, each with a cold create (boot →
//! first exec finished) measured in the same run as the baseline.
//!
//! - snapshot: pause window and seal time vs guest memory size (a quarter of RAM filled).
//! - restore: restore → first exec finished, File and Uffd memory backends.
//! - fork: a parent running python3 with live data forks N children; each child's
//!   time from the fork call to its first exec finished, and the parent's pause window.
//! - density: private and proportional memory per idle forked child
//!   (`/proc/PID/smaps_rollup`), and how many would fit in 16 GiB.

use std::time::Instant;

use anyhow::{Context, Result};
use kiln::{MemoryBackend, Sandbox};
use serde_json::{json, Value};

use super::sandbox::{cold_creates, ratio, true_opts};
use super::stats::{ms, p50, summary};

#[derive(clap::Args)]
pub struct SnapBenchArgs {
    /// Samples per figure.
    #[arg(short = 'n', long, default_value_t = 10)]
    n: usize,
    /// Guest memory sizes for `snapshot` (MiB, comma-separated).
    #[arg(long, default_value = "256,1024")]
    memory: String,
    /// Children per fork (comma-separated) for `fork`; the first is used by `density`.
    #[arg(long, default_value = "1,10,100")]
    children: String,
    /// Live data held by python3 in the forked parent (MiB).
    #[arg(long, default_value_t = 200)]
    live_mib: u64,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy)]
pub enum What {
    Snapshot,
    Restore,
    Fork,
    Density,
}

fn list(s: &str) -> Result<Vec<u64>> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.trim()
                .parse()
                .with_context(|| format!("{x}: not a number"))
        })
        .collect()
}

fn sh(sb: &Sandbox, script: &str) -> Result<String> {
    let out = sb.exec(&kiln::ExecOptions::new(["sh", "-c", script]))?;
    anyhow::ensure!(out.status.success(), "{script}: {}", out.stderr_str());
    Ok(out.stdout_str())
}

fn bench_snapshot(a: &SnapBenchArgs) -> Result<Value> {
    let mut out = json!({});
    for mib in list(&a.memory)? {
        let mut sb = Sandbox::builder()
            .image("minimal")
            .memory_mib(mib)
            .create()?;
        sh(
            &sb,
            &format!("yes kiln-bench | head -c {} > /tmp/fill", (mib / 4) << 20),
        )?;
        let (mut pause, mut seal, mut file) = (Vec::new(), Vec::new(), 0);
        for _ in 0..a.n {
            let (snap, [p, s]) = sb.snapshot_timed(None)?;
            pause.push(ms(p));
            seal.push(ms(s));
            file = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(snap.memory_path())?)
                * 512;
            snap.remove()?;
        }
        sb.remove()?;
        let cold = cold_creates("minimal", mib, a.n.min(5), !a.json)?;
        out[format!("{mib}_mib")] = json!({
            "pause_window_ms": summary(&pause),
            "seal_sha256_ms": summary(&seal),
            "memory_file_allocated_mib": file >> 20,
            "cold_create_ms": summary(&cold),
            "ratio_pause_over_cold_create_p50": ratio(&pause, &cold),
        });
    }
    Ok(out)
}

fn timed_restores(snap: &str, backend: MemoryBackend, n: usize) -> Result<Vec<f64>> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let sb = Sandbox::builder()
                .from_snapshot(snap)
                .memory_backend(backend)
                .create()?;
            sb.exec(&true_opts())?;
            let took = ms(t.elapsed());
            sb.remove()?;
            Ok(took)
        })
        .collect()
}

fn bench_restore(a: &SnapBenchArgs) -> Result<Value> {
    let mut sb = Sandbox::builder().image("minimal").create()?;
    let snap = sb.snapshot(None)?;
    sb.remove()?;
    let run = || -> Result<Value> {
        let file = timed_restores(snap.name(), MemoryBackend::File, a.n)?;
        // The first Uffd restore records the working set the others prefetch.
        timed_restores(snap.name(), MemoryBackend::Uffd, 1)?;
        let uffd = timed_restores(snap.name(), MemoryBackend::Uffd, a.n)?;
        let cold = cold_creates("minimal", 256, a.n, !a.json)?;
        Ok(json!({
            "restore_to_first_exec_ms_file": summary(&file),
            "restore_to_first_exec_ms_uffd": summary(&uffd),
            "cold_create_to_first_exec_ms": summary(&cold),
            "ratio_file_over_cold_p50": ratio(&file, &cold),
            "ratio_uffd_over_cold_p50": ratio(&uffd, &cold),
        }))
    };
    let result = run();
    snap.remove()?;
    result
}

/// A Debian sandbox with python3 holding `live_mib` MiB (every page written).
fn python_parent(live_mib: u64) -> Result<Sandbox> {
    let sb = Sandbox::builder()
        .image("debian")
        .memory_mib(live_mib * 2 + 256)
        .create()?;
    let py = format!(
        "import time\nx = bytearray({live_mib} << 20)\nx[::4096] = b'k' * (len(x) // 4096)\nopen('/tmp/ready', 'w').close()\ntime.sleep(1e9)\n"
    );
    sb.write_file("/tmp/live.py", py.as_bytes(), None)?;
    sh(&sb, "python3 /tmp/live.py >/dev/null 2>&1 &")?;
    sh(&sb, "while [ ! -e /tmp/ready ]; do sleep 0.1; done")?;
    Ok(sb)
}

fn bench_fork(a: &SnapBenchArgs) -> Result<Value> {
    let mut parent = python_parent(a.live_mib)?;
    let mut out = json!({ "live_mib": a.live_mib });
    for n in list(&a.children)? {
        let t0 = Instant::now();
        let f = parent.fork_timed(n as usize)?;
        let ready: Vec<f64> = std::thread::scope(|s| {
            let hs: Vec<_> = f
                .children
                .chunks(f.children.len().div_ceil(8))
                .map(|chunk| {
                    s.spawn(move || {
                        chunk
                            .iter()
                            .map(|c| c.exec(&true_opts()).map(|_| ms(t0.elapsed())))
                            .collect::<kiln::Result<Vec<f64>>>()
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("exec thread"))
                .collect::<kiln::Result<Vec<Vec<f64>>>>()
        })?
        .into_iter()
        .flatten()
        .collect();
        out[format!("children_{n}")] = json!({
            "child_first_exec_finished_ms": summary(&ready),
            "parent_pause_window_ms": ms(f.pause_window),
            "all_ready_ms": ms(f.total),
        });
        drop(f.children);
    }
    parent.remove()?;
    let cold = cold_creates("debian", a.live_mib * 2 + 256, a.n.min(5), !a.json)?;
    out["cold_create_debian_ms"] = summary(&cold);
    Ok(out)
}

/// (Pss, Private_Clean + Private_Dirty) of `pid` in KiB.
fn smaps(pid: u32) -> Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((
        field("Pss:"),
        field("Private_Clean:") + field("Private_Dirty:"),
    ))
}

fn bench_density(a: &SnapBenchArgs) -> Result<Value> {
    let n = list(&a.children)?.first().copied().unwrap_or(10) as usize;
    let cold = Sandbox::builder().image("minimal").create()?;
    cold.exec(&true_opts())?;
    let (cold_pss, cold_private) = smaps(cold.record().pid)?;
    let mut parent = Sandbox::builder().image("minimal").create()?;
    let kids = parent.fork(n)?;
    for k in &kids {
        k.exec(&true_opts())?;
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (mut pss, mut private) = (Vec::new(), Vec::new());
    for k in &kids {
        let (p, q) = smaps(k.record().pid)?;
        pss.push(p as f64 / 1024.0);
        private.push(q as f64 / 1024.0);
    }
    drop(kids);
    parent.remove()?;
    cold.remove()?;
    let fit = |mib: f64| (16.0 * 1024.0 / mib).floor();
    Ok(json!({
        "children": n,
        "child_private_mib": summary(&private),
        "child_pss_mib": summary(&pss),
        "cold_sandbox_private_mib": cold_private as f64 / 1024.0,
        "cold_sandbox_pss_mib": cold_pss as f64 / 1024.0,
        "idle_children_in_16_gib_by_pss": fit(p50(&pss)),
        "cold_sandboxes_in_16_gib_by_pss": fit(cold_pss as f64 / 1024.0),
    }))
}

pub fn run(what: What, a: SnapBenchArgs) -> Result<i32> {
    let report = match what {
        What::Snapshot => bench_snapshot(&a)?,
        What::Restore => bench_restore(&a)?,
        What::Fork => bench_fork(&a)?,
        What::Density => bench_density(&a)?,
    };
    if !a.json {
        eprintln!();
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(0)
}
