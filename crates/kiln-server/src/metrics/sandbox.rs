//! Per-sandbox samples, taken at scrape time: the VMM process's CPU time and resident
//! memory from `/proc/<pid>`, and its device counters from the last complete line of
//! `<sandbox dir>/metrics.json` (kiln-vmm's cumulative JSON lines, written on
//! `FlushMetrics`, which is asked for first). Firecracker writes that file too, but
//! with other field names and per-flush deltas, so its sandboxes get the process and
//! lifecycle metrics only.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use kiln::{Sandbox, State};
use serde_json::Value;

use super::text::{family, sample};

/// What one sandbox reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SandboxSample {
    pub id: String,
    pub state: String,
    pub backend: String,
    pub image: String,
    pub boot_ms: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub vmm: Option<VmmCounters>,
    /// Host I/O errors of its disks (kiln-vmm).
    pub block_io_errors: Option<u64>,
    /// Bytes its network interfaces took from the guest (tx) and gave it (rx), all
    /// interfaces (kiln-vmm; None without a NIC).
    pub net: Option<NetBytes>,
}

/// A sandbox's NIC traffic: rx is host to guest, tx guest to host (frame bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetBytes {
    pub rx: u64,
    pub tx: u64,
}

/// The NIC bytes of a kiln-vmm metrics line (`net.<iface>.rx_bytes`/`tx_bytes`, totals
/// since start), summed saturating over interfaces; None without interfaces.
pub fn net_bytes(line: &str) -> Option<NetBytes> {
    let v: Value = serde_json::from_str(line).ok()?;
    let ifaces = v.get("net")?.as_object()?;
    if ifaces.is_empty() {
        return None;
    }
    let mut out = NetBytes::default();
    for i in ifaces.values() {
        let n = |k: &str| i.get(k).and_then(Value::as_u64).unwrap_or(0);
        out.rx = out.rx.saturating_add(n("rx_bytes"));
        out.tx = out.tx.saturating_add(n("tx_bytes"));
    }
    Some(out)
}

/// Cumulative VMM counters of one sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmmCounters {
    pub vcpu_exits: u64,
    pub vsock_rx_bytes: u64,
    pub vsock_tx_bytes: u64,
}

/// Samples every sandbox in the store (blocking: it asks each VMM to flush).
pub fn collect() -> kiln::Result<Vec<SandboxSample>> {
    Ok(Sandbox::list()?.iter_mut().map(sample_of).collect())
}

fn sample_of(sb: &mut Sandbox) -> SandboxSample {
    let info = sb.info();
    let mut s = SandboxSample {
        id: info.id,
        state: info.state.to_string(),
        backend: info.backend.clone(),
        image: info.image,
        boot_ms: info.boot_ms,
        block_io_errors: info.disk_errors.as_ref().map(|d| d.count),
        ..Default::default()
    };
    let up = matches!(info.state, State::Running | State::Paused);
    if let (true, Some(pid)) = (up, info.pid) {
        let pid = kiln::process::vmm_of(pid);
        s.cpu_seconds = cpu_seconds(pid);
        s.rss_bytes = rss_bytes(pid);
        if matches!(info.backend.as_str(), "kiln" | "firecracker") {
            let flushed = kiln::FcClient::new(info.dir.join("vm/api.sock"))
                .with_timeout(Duration::from_secs(2))
                .action("FlushMetrics");
            if let Err(e) = flushed {
                tracing::debug!("sandbox {}: FlushMetrics: {e}", s.id);
            }
            let metrics = info.dir.join("vm/metrics.json");
            s.vmm = vmm_counters(&metrics);
            // After the flush: the latest count.
            if let Some(d) = kiln::vmm_metrics::read_disk_errors(&metrics) {
                s.block_io_errors = Some(d.count);
            }
            s.net = last_line(&metrics).as_deref().and_then(net_bytes);
        }
    }
    s
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    parse_cpu_ticks(&stat).map(|t| t as f64 / ticks.max(1) as f64)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, index 11.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn rss_bytes(pid: u32) -> Option<u64> {
    parse_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// `VmRSS` of a `/proc/<pid>/status`, in bytes.
pub fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub use kiln::vmm_metrics::last_line;

/// The counters of a VMM metrics line, and whether they are cumulative: kiln-vmm's
/// (`vcpu.exits_total`, `vsock.rx_bytes`/`tx_bytes`, totals since start) or
/// Firecracker's (the sum of the `vcpu.exit_*` counters, `vsock.rx_bytes_count`/
/// `tx_bytes_count`, each the change since the previous flush).
pub fn counters(line: &str) -> Option<(VmmCounters, bool)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let n = |a: &str, b: &str| v.get(a)?.get(b)?.as_u64();
    if let Some(exits) = n("vcpu", "exits_total") {
        let c = VmmCounters {
            vcpu_exits: exits,
            vsock_rx_bytes: n("vsock", "rx_bytes")?,
            vsock_tx_bytes: n("vsock", "tx_bytes")?,
        };
        return Some((c, true));
    }
    let vcpu = v.get("vcpu")?.as_object()?;
    let exits = vcpu.iter().filter(|(k, _)| k.starts_with("exit_"));
    let c = VmmCounters {
        vcpu_exits: exits.map(|(_, x)| x.as_u64()).sum::<Option<u64>>()?,
        vsock_rx_bytes: n("vsock", "rx_bytes_count")?,
        vsock_tx_bytes: n("vsock", "tx_bytes_count")?,
    };
    Some((c, false))
}

/// The largest metrics file summed line by line (Firecracker's per-flush deltas).
const MAX_DELTA_FILE: u64 = 16 << 20;

/// A sandbox's VMM counters from its metrics file: the last complete line when it holds
/// totals (kiln-vmm), else the sum of every line's deltas (Firecracker).
pub fn vmm_counters(path: &Path) -> Option<VmmCounters> {
    let (last, cumulative) = counters(&last_line(path)?)?;
    if cumulative {
        return Some(last);
    }
    let f = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    f.take(MAX_DELTA_FILE).read_to_string(&mut text).ok()?;
    let complete = &text[..text.rfind('\n')?];
    let mut sum = VmmCounters::default();
    for (c, _) in complete.lines().filter_map(counters) {
        sum.vcpu_exits = sum.vcpu_exits.saturating_add(c.vcpu_exits);
        sum.vsock_rx_bytes = sum.vsock_rx_bytes.saturating_add(c.vsock_rx_bytes);
        sum.vsock_tx_bytes = sum.vsock_tx_bytes.saturating_add(c.vsock_tx_bytes);
    }
    Some(sum)
}

/// Writes the per-sandbox families (label `sandbox`).
pub fn render(out: &mut String, all: &[SandboxSample]) {
    family(
        out,
        "kiln_sandbox_info",
        "gauge",
        "One per sandbox in the store, with its state, backend and image.",
    );
    for s in all {
        let labels = [
            ("sandbox", s.id.as_str()),
            ("state", &s.state),
            ("backend", &s.backend),
            ("image", &s.image),
        ];
        sample(out, "kiln_sandbox_info", &labels, 1.0);
    }
    type Get = fn(&SandboxSample) -> Option<f64>;
    let families: [(&str, &str, &str, Get); 9] = [
        (
            "kiln_sandbox_boot_seconds",
            "gauge",
            "From spawning the VMM to the guest agent answering (booted sandboxes).",
            |s| s.boot_ms.map(|m| m as f64 / 1000.0),
        ),
        (
            "kiln_sandbox_cpu_seconds_total",
            "counter",
            "CPU time (user + system) of the sandbox's VMM process, vCPUs included.",
            |s| s.cpu_seconds,
        ),
        (
            "kiln_sandbox_memory_rss_bytes",
            "gauge",
            "Resident memory of the sandbox's VMM process (VmRSS).",
            |s| s.rss_bytes.map(|b| b as f64),
        ),
        (
            "kiln_sandbox_vcpu_exits_total",
            "counter",
            "KVM exits of all the sandbox's vCPUs (kiln-vmm).",
            |s| s.vmm.map(|c| c.vcpu_exits as f64),
        ),
        (
            "kiln_sandbox_vsock_rx_bytes_total",
            "counter",
            "vsock stream bytes from host to guest (kiln-vmm).",
            |s| s.vmm.map(|c| c.vsock_rx_bytes as f64),
        ),
        (
            "kiln_sandbox_vsock_tx_bytes_total",
            "counter",
            "vsock stream bytes from guest to host (kiln-vmm).",
            |s| s.vmm.map(|c| c.vsock_tx_bytes as f64),
        ),
        (
            "kiln_sandbox_block_io_errors_total",
            "counter",
            "Reads, writes and flushes of the sandbox's disk images that failed on the host (e.g. ENOSPC: its filesystem is full); the guest saw I/O errors (kiln-vmm).",
            |s| s.block_io_errors.map(|n| n as f64),
        ),
        (
            "kiln_sandbox_net_rx_bytes_total",
            "counter",
            "Frame bytes the sandbox's network interface gave the guest (kiln-vmm; sandboxes with a NIC).",
            |s| s.net.map(|n| n.rx as f64),
        ),
        (
            "kiln_sandbox_net_tx_bytes_total",
            "counter",
            "Frame bytes the sandbox's network interface took from the guest (kiln-vmm; sandboxes with a NIC).",
            |s| s.net.map(|n| n.tx as f64),
        ),
    ];
    for (name, kind, help, get) in families {
        family(out, name, kind, help);
        for s in all {
            if let Some(v) = get(s) {
                sample(out, name, &[("sandbox", &s.id)], v);
            }
        }
    }
}
