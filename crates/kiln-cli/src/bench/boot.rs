//! `kiln bench boot`: N boots with kiln-vmm and, interleaved in the same run, N boots of
//! the same kernel and initramfs with QEMU microvm. Reports p50/p99 of
//! (a) spawn → control socket ready, (b) start → guest ready, (c) spawn → exit after
//! the guest shuts down, plus VMM RSS without guest memory and VM exits up to ready
//! (from a few extra boots held at ready), and the kiln/QEMU ratios.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kiln::vmm::{GuestSpec, VmmProcess, DEFAULT_BOOT_ARGS};
use serde_json::{json, Value};

use super::procstat::{ensure_debugfs, rss_without_guest_kib, vm_dirs, vm_exits};
use super::qemu::{QemuSpec, QemuVm};
use super::stats::{ms, p50, summary};

const T: Duration = Duration::from_secs(120);

static PHASE: std::sync::Mutex<&str> = std::sync::Mutex::new("start");

fn phase(p: &'static str) {
    if let Ok(mut g) = PHASE.lock() {
        *g = p;
    }
}

/// Every step has its own timeout; this catches what none of them can (e.g. a child
/// stuck in the kernel that a kill cannot reap) and says where it happened.
fn start_watchdog(limit: Duration) {
    std::thread::spawn(move || {
        let mut last = String::new();
        let mut since = std::time::Instant::now();
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = PHASE.lock().map(|g| g.to_string()).unwrap_or_default();
            if now != last {
                last = now;
                since = std::time::Instant::now();
            } else if since.elapsed() > limit {
                eprintln!("kiln bench: stuck for {limit:?} in phase '{last}'; aborting");
                std::process::exit(3);
            }
        }
    });
}
/// Boots held at "ready" to read RSS and exit counts.
const PROBES: usize = 3;

#[derive(clap::Args)]
pub struct BootBenchArgs {
    /// Number of boots per VMM.
    #[arg(short = 'n', default_value_t = 10)]
    n: usize,
    /// Print only a JSON document.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 1)]
    cpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    memory: u64,
    /// Skip the QEMU baseline (no ratio is reported).
    #[arg(long)]
    no_qemu: bool,
}

#[derive(Default)]
struct Series {
    api: Vec<f64>,
    ready: Vec<f64>,
    exit: Vec<f64>,
    rss_kib: Vec<f64>,
    exits: Vec<f64>,
}

impl Series {
    /// RSS and VM exits of a VMM (`pid`) whose guest is held at ready; `before` is
    /// the set of KVM debugfs dirs taken before it was spawned.
    fn record_probe(&mut self, before: &HashSet<PathBuf>, pid: u32, guest_mib: u64) {
        if let Some(e) = vm_exits(before, pid) {
            self.exits.push(e as f64);
        }
        if let Some(r) = rss_without_guest_kib(pid, guest_mib * 1024) {
            self.rss_kib.push(r as f64);
        }
    }

    fn json(&self) -> Value {
        json!({
            "spawn_to_api_ready_ms": summary(&self.api),
            "start_to_guest_ready_ms": summary(&self.ready),
            "spawn_to_exit_ms": summary(&self.exit),
            "rss_without_guest_kib": summary(&self.rss_kib),
            "vm_exits_to_ready": summary(&self.exits),
        })
    }
}

fn kiln_boot(g: &GuestSpec, s: &mut Series) -> Result<()> {
    phase("kiln: spawn + InstanceStart");
    let (mut vm, api) = VmmProcess::boot(g, "off", false, T)?;
    s.api.push(ms(api));
    phase("kiln: wait ready");
    s.ready.push(ms(vm.wait_ready(T)?));
    phase("kiln: wait exit");
    let st = vm.wait_exit(T)?;
    s.exit.push(ms(vm.spawned_at.elapsed()));
    if !st.success() {
        bail!("kiln-vmm exited with {st}: {}", vm.stderr());
    }
    Ok(())
}

fn kiln_probe(g: &GuestSpec, s: &mut Series) -> Result<()> {
    let before = vm_dirs();
    let (mut vm, _) = VmmProcess::boot(g, "off", false, T)?;
    vm.wait_ready(T)?;
    s.record_probe(&before, vm.pid(), g.memory_mib);
    vm.client.action("SendCtrlAltDel")?;
    let st = vm.wait_exit(T)?;
    if !st.success() {
        bail!(
            "kiln-vmm did not exit cleanly after SendCtrlAltDel ({st}): {}",
            vm.stderr()
        );
    }
    Ok(())
}

fn qemu_boot(spec: &QemuSpec, s: &mut Series, probe: bool) -> Result<()> {
    let before = vm_dirs();
    phase("qemu: spawn + QMP");
    let mut vm = QemuVm::spawn(spec, "bench")?;
    let api = vm.wait_qmp(T)?;
    phase("qemu: wait ready");
    let t = vm.cont()?;
    let ready = vm.wait_ready(T)?;
    phase("qemu: wait exit");
    if probe {
        s.record_probe(&before, vm.pid(), spec.memory_mib);
        vm.quit()?;
        vm.wait_exit(T)?;
        return Ok(());
    }
    vm.wait_exit(T)?;
    s.api.push(ms(api));
    s.ready.push(ms(ready - t));
    s.exit.push(ms(vm.spawned_at.elapsed()));
    Ok(())
}

fn ratio(k: &[f64], q: &[f64]) -> Value {
    let r = p50(k) / p50(q);
    if r.is_finite() {
        json!((r * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

fn fmt(v: &Value) -> String {
    match (v["p50"].as_f64(), v["p99"].as_f64()) {
        (Some(a), Some(b)) => format!("{a:>10.1} {b:>10.1}"),
        _ => format!("{:>10} {:>10}", "n/a", "n/a"),
    }
}

pub fn run(a: BootBenchArgs) -> Result<i32> {
    if a.n == 0 {
        bail!("-n must be at least 1");
    }
    let mut g = GuestSpec::minimal();
    g.cpus = a.cpus;
    g.memory_mib = a.memory;
    let initrd = g.initrd.clone().context("no initramfs")?;
    for p in [&g.kernel, &initrd] {
        if !p.is_file() {
            bail!("{} not found; run scripts/setup first", p.display());
        }
    }
    let debugfs = ensure_debugfs();
    let boot = |action: &str| format!("{DEFAULT_BOOT_ARGS} kiln.action={action}");
    // QEMU microvm has no i8042 reset path: the guest resets by triple fault instead.
    let qargs = |action: &str| boot(action).replace("reboot=k", "reboot=t");
    let (qa_boot, qa_wait) = (qargs("reboot"), qargs("wait"));
    let qspec = |append| QemuSpec {
        kernel: &g.kernel,
        initrd: &initrd,
        append,
        memory_mib: a.memory,
        cpus: a.cpus,
    };
    let mut gb = g.clone();
    gb.boot_args = Some(boot("poweroff"));
    let mut gw = g.clone();
    gw.boot_args = Some(boot("wait"));

    let (mut k, mut q) = (Series::default(), Series::default());
    let t0 = std::time::Instant::now();
    start_watchdog(Duration::from_secs(300));
    for i in 0..a.n + PROBES {
        let probe = i >= a.n;
        phase(if i % 2 == 0 {
            "iteration (even)"
        } else {
            "iteration (odd)"
        });
        if probe {
            kiln_probe(&gw, &mut k).context("kiln probe boot")?;
        } else {
            kiln_boot(&gb, &mut k).context("kiln boot")?;
        }
        if !a.no_qemu {
            let spec = qspec(if probe { &qa_wait } else { &qa_boot });
            qemu_boot(&spec, &mut q, probe).context("QEMU baseline boot")?;
        }
        if !a.json {
            eprint!("\rboot {}/{}", i + 1, a.n + PROBES);
        }
        if std::env::var_os("KILN_BENCH_TRACE").is_some() {
            eprintln!("bench: iteration {i} done after {:?}", t0.elapsed());
        }
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines()
            .find(|l| l.starts_with("model name"))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
    });
    let report = json!({
        "bench": "boot",
        "n": a.n,
        "vcpus": a.cpus,
        "memory_mib": a.memory,
        "host_cpu": cpu,
        "vm_exit_counts": if debugfs { "debugfs" } else { "unavailable (needs root and debugfs)" },
        "kiln": k.json(),
        "qemu_microvm": if a.no_qemu { Value::Null } else { q.json() },
        "ratio_kiln_over_qemu_p50": if a.no_qemu { Value::Null } else { json!({
            "spawn_to_api_ready": ratio(&k.api, &q.api),
            "start_to_guest_ready": ratio(&k.ready, &q.ready),
            "spawn_to_exit": ratio(&k.exit, &q.exit),
            "rss_without_guest": ratio(&k.rss_kib, &q.rss_kib),
            "vm_exits_to_ready": ratio(&k.exits, &q.exits),
        })},
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    eprintln!();
    println!(
        "kiln bench boot: n={} vcpus={} memory={} MiB",
        a.n, a.cpus, a.memory
    );
    println!(
        "{:<34} {:>10} {:>10}   {:>10} {:>10}  {:>8}",
        "", "kiln p50", "p99", "qemu p50", "p99", "ratio"
    );
    let kj = k.json();
    let qj = q.json();
    let rows = [
        (
            "spawn -> API/QMP ready (ms)",
            "spawn_to_api_ready_ms",
            "spawn_to_api_ready",
        ),
        (
            "start -> guest ready (ms)",
            "start_to_guest_ready_ms",
            "start_to_guest_ready",
        ),
        (
            "spawn -> exit after shutdown (ms)",
            "spawn_to_exit_ms",
            "spawn_to_exit",
        ),
        (
            "RSS without guest memory (KiB)",
            "rss_without_guest_kib",
            "rss_without_guest",
        ),
        (
            "VM exits, start -> ready",
            "vm_exits_to_ready",
            "vm_exits_to_ready",
        ),
    ];
    for (label, key, rkey) in rows {
        let r = &report["ratio_kiln_over_qemu_p50"][rkey];
        println!(
            "{label:<34} {}   {}  {:>8}",
            fmt(&kj[key]),
            fmt(&qj[key]),
            r.as_f64()
                .map(|x| format!("{x:.3}"))
                .unwrap_or("n/a".into())
        );
    }
    Ok(0)
}
