//! `kiln bench create | exec | files`: sandbox creation, exec round trips and file
//! throughput, each against the host's own floor measured in the same run.
//!
//! - create: create → first exec (`true`) finished, minimal and Debian images (cold:
//!   a new VM each time); floor: the host's fork+exec of `true`. As root (where VMMs
//!   are jailed by default) also the jail's cost: minimal creates jailed and unjailed
//!   (`KILN_JAIL=0`), one of each in turn.
//! - exec: round trip of `true` in one running sandbox; floor: host fork+exec of `true`.
//! - files: upload and download of a 256 MiB file; floor: a host-to-host copy of it.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kiln::{ExecOptions, Sandbox};
use serde_json::{json, Value};

use super::stats::{ms, p50, summary};

#[derive(clap::Args)]
pub struct SandboxBenchArgs {
    /// Samples per figure.
    #[arg(short = 'n', long, default_value_t = 20)]
    n: usize,
    /// Images for `create` (comma-separated).
    #[arg(long, default_value = "minimal,debian")]
    images: String,
    /// File size in MiB for `files`.
    #[arg(long, default_value_t = 256)]
    size_mib: u64,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy)]
pub enum What {
    Create,
    Exec,
    Files,
}

/// Host fork+exec of `true`, N times (ms).
pub(super) fn host_true(n: usize) -> Result<Vec<f64>> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let st = std::process::Command::new("true").status()?;
            anyhow::ensure!(st.success(), "host `true` failed");
            Ok(ms(t.elapsed()))
        })
        .collect()
}

pub(super) fn true_opts() -> ExecOptions {
    ExecOptions::new(["true"])
}

pub(super) fn ratio(a: &[f64], b: &[f64]) -> Value {
    json!((p50(a) / p50(b) * 1000.0).round() / 1000.0)
}

fn bench_create(a: &SandboxBenchArgs) -> Result<Value> {
    let floor = host_true(a.n)?;
    let mut out = json!({ "host_fork_exec_true_ms": summary(&floor) });
    for image in a.images.split(',').filter(|s| !s.is_empty()) {
        let v = cold_creates(image, 256, a.n, !a.json)?;
        out[format!("create_to_first_exec_ms_{image}")] = summary(&v);
        out[format!("ratio_{image}_over_host_p50")] = ratio(&v, &floor);
    }
    // SAFETY: a getter.
    if unsafe { libc::geteuid() } == 0 && std::env::var_os("KILN_JAIL").is_none() {
        let (jailed, unjailed) = jail_pairs(a.n, !a.json)?;
        out["create_to_first_exec_ms_minimal_jailed"] = summary(&jailed);
        out["create_to_first_exec_ms_minimal_unjailed"] = summary(&unjailed);
        out["jail_added_ms_p50"] = json!(((p50(&jailed) - p50(&unjailed)) * 10.0).round() / 10.0);
        out["ratio_jailed_over_unjailed_p50"] = ratio(&jailed, &unjailed);
    }
    Ok(out)
}

/// `n` cold minimal creates jailed and `n` unjailed, alternating so both see the same
/// machine (ms each).
fn jail_pairs(n: usize, dots: bool) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut jailed, mut unjailed) = (Vec::new(), Vec::new());
    for _ in 0..n {
        std::env::set_var("KILN_JAIL", "1");
        let j = cold_creates("minimal", 256, 1, dots);
        std::env::set_var("KILN_JAIL", "0");
        let u = cold_creates("minimal", 256, 1, dots);
        std::env::remove_var("KILN_JAIL");
        jailed.extend(j?);
        unjailed.extend(u?);
    }
    Ok((jailed, unjailed))
}

/// Cold create → first exec (`true`) finished, `n` times (ms).
pub(super) fn cold_creates(image: &str, memory_mib: u64, n: usize, dots: bool) -> Result<Vec<f64>> {
    let mut v = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let sb = Sandbox::builder()
            .image(image)
            .memory_mib(memory_mib)
            .create()
            .with_context(|| format!("create #{i} ({image})"))?;
        sb.exec(&true_opts())?;
        v.push(ms(t.elapsed()));
        sb.remove()?;
        if dots {
            eprint!(".");
        }
    }
    Ok(v)
}

fn bench_exec(a: &SandboxBenchArgs) -> Result<Value> {
    let floor = host_true(a.n)?;
    let sb = Sandbox::builder().image("minimal").create()?;
    sb.exec(&true_opts())?; // warm
    let mut v = Vec::new();
    let mut ping = Vec::new();
    for _ in 0..a.n {
        let t = Instant::now();
        sb.exec(&true_opts())?;
        v.push(ms(t.elapsed()));
        ping.push(ms(sb.ping()?));
    }
    sb.remove()?;
    Ok(json!({
        "exec_true_round_trip_ms": summary(&v),
        "agent_ping_ms": summary(&ping),
        "host_fork_exec_true_ms": summary(&floor),
        "ratio_exec_over_host_p50": ratio(&v, &floor),
    }))
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    (bytes as f64 / (1 << 20) as f64 / d.as_secs_f64() * 10.0).round() / 10.0
}

fn bench_files(a: &SandboxBenchArgs) -> Result<Value> {
    let dir = std::env::temp_dir().join(format!("kiln-bench-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = files_in(a, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn files_in(a: &SandboxBenchArgs, dir: &std::path::Path) -> Result<Value> {
    let src = dir.join("src.bin");
    let bytes = a.size_mib << 20;
    let mut f = std::fs::File::create(&src)?;
    let chunk: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    for _ in 0..a.size_mib {
        f.write_all(&chunk)?;
    }
    drop(f);
    let t = Instant::now();
    std::fs::copy(&src, dir.join("host-copy.bin"))?;
    let host = mib_s(bytes, t.elapsed());
    std::fs::remove_file(dir.join("host-copy.bin"))?;

    let sb = Sandbox::builder()
        .image("minimal")
        // The file lands in the guest's /tmp, a tmpfs of half the guest's memory.
        .memory_mib(a.size_mib * 2 + 256)
        .create()?;
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for _ in 0..a.n.clamp(1, 5) {
        let t = Instant::now();
        sb.upload(&src, "/tmp/f.bin")?;
        up.push(mib_s(bytes, t.elapsed()));
        let t = Instant::now();
        sb.download("/tmp/f.bin", &dir.join("back.bin"))?;
        down.push(mib_s(bytes, t.elapsed()));
        std::fs::remove_file(dir.join("back.bin"))?;
        sb.remove_path("/tmp/f.bin", false)?;
    }
    sb.remove()?;
    Ok(json!({
        "size_mib": a.size_mib,
        "upload_mib_s": summary(&up),
        "download_mib_s": summary(&down),
        "host_copy_mib_s": host,
        "ratio_upload_over_host_p50": (p50(&up) / host * 1000.0).round() / 1000.0,
        "ratio_download_over_host_p50": (p50(&down) / host * 1000.0).round() / 1000.0,
    }))
}

pub fn run(what: What, a: SandboxBenchArgs) -> Result<i32> {
    let report = match what {
        What::Create => bench_create(&a)?,
        What::Exec => bench_exec(&a)?,
        What::Files => bench_files(&a)?,
    };
    if !a.json {
        eprintln!();
    }
    // One document either way: the figures are nested, a table would hide the units.
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(0)
}
