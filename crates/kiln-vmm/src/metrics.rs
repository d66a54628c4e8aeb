//! VMM metrics, exported like Firecracker's: one JSON object per line, appended to the
//! file or written to the named pipe given by `--metrics PATH`, `PUT /metrics
//! {"metrics_path": ...}` or the config file's `"metrics"` section (see [`sink`]).
//! A line is written on `FlushMetrics`, every [`FLUSH_INTERVAL`], soon after a drive's
//! host I/O error ([`pacer`]), once the guest is up, and when the VMM exits.
//!
//! Unlike Firecracker, which resets most counters at each flush, every counter here is
//! cumulative since the process started: a lost or skipped line loses nothing, and a
//! scraper gets rates by diffing two lines.
//!
//! The counters live in one process-wide [`METRICS`] (one VM per process, as the boot
//! error record). Bumping one is a single relaxed `fetch_add`; only the per-drive table
//! takes a lock, once per drive when it is attached.

mod block;
pub mod pacer;
mod sink;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::ser::{Serialize, SerializeStruct, Serializer};

pub use block::{BlockMetrics, MAX_ERROR_TEXT};
pub use sink::{configure, flush, MetricsConfig, MetricsError, MetricsWriter, RESERVE};

/// How often the timer thread writes a line (Firecracker's period).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(60);
/// vCPU slots (the largest `vcpu_count` kiln-vmm accepts).
pub const MAX_VCPUS: usize = 32;

/// Adds `n` to a counter (relaxed: counters order nothing).
#[inline]
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

/// Adds one to a counter.
#[inline]
pub fn inc(counter: &AtomicU64) {
    add(counter, 1);
}

/// A struct of `AtomicU64` counters that serializes as `{"field": value, ...}`.
macro_rules! counters {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: AtomicU64,)*
        }

        impl $name {
            pub const fn new() -> Self {
                Self { $($field: AtomicU64::new(0),)* }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let len = [$(stringify!($field)),*].len();
                let mut st = s.serialize_struct(stringify!($name), len)?;
                $(st.serialize_field(stringify!($field), &self.$field.load(Relaxed))?;)*
                st.end()
            }
        }
    };
}

counters!(
    /// KVM_RUN returns of one vCPU, by exit kind (`exits_total` is their sum).
    VcpuMetrics { io_in, io_out, mmio_read, mmio_write, hlt, other }
);

counters!(
    /// virtio-vsock. rx is host to guest (the rx queue), tx guest to host; bytes are
    /// stream payload (rx: put into guest buffers, tx: written to host sockets);
    /// `resets` counts transport resets (after a snapshot restore).
    VsockMetrics { rx_bytes, tx_bytes, conns_opened, conns_closed, rx_packets, tx_packets, resets }
);

counters!(
    /// One virtio-net interface. rx is host to guest, tx guest to host; bytes are frame
    /// bytes without the 12-byte vnet header. `*_drops` counts every frame lost (a full
    /// TAP queue, a failed TAP write, a malformed chain); `*_malformed` those of them the
    /// guest's descriptors were to blame for; `*_throttled` how often a rate limiter
    /// stopped the queue.
    NetMetrics {
        rx_bytes, rx_packets, rx_drops, rx_malformed, rx_throttled,
        tx_bytes, tx_packets, tx_drops, tx_malformed, tx_throttled
    }
);

counters!(
    /// virtio-rng: random bytes given to the guest; `throttled` how often its rate
    /// limiter (`PUT /entropy`) stopped the queue.
    RngMetrics { bytes, throttled }
);

counters!(
    /// VM lifecycle events.
    VmMetrics { pauses, resumes, snapshots_created, snapshots_loaded }
);

/// Every counter of the process.
pub struct Metrics {
    vcpus: [VcpuMetrics; MAX_VCPUS],
    vcpu_count: AtomicUsize,
    drives: Mutex<Vec<(String, Arc<BlockMetrics>)>>,
    nets: Mutex<Vec<(String, Arc<NetMetrics>)>>,
    pub vsock: VsockMetrics,
    pub rng: RngMetrics,
    pub vm: VmMetrics,
    /// Microseconds from InstanceStart to the agent's ready signal; 0 until then.
    boot_time_us: AtomicU64,
}

/// The process's metrics.
pub static METRICS: Metrics = Metrics::new();

static PROCESS_START: OnceLock<Instant> = OnceLock::new();

/// Records the process start `uptime_ms` counts from (call first thing in `main`).
pub fn mark_start() {
    PROCESS_START.get_or_init(Instant::now);
}

/// One vCPU's counters in a line: the kinds and their sum.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct VcpuCounts {
    pub exits_total: u64,
    pub io_in: u64,
    pub io_out: u64,
    pub mmio_read: u64,
    pub mmio_write: u64,
    pub hlt: u64,
    pub other: u64,
}

impl VcpuCounts {
    fn of(m: &VcpuMetrics) -> Self {
        let mut c = VcpuCounts {
            io_in: m.io_in.load(Relaxed),
            io_out: m.io_out.load(Relaxed),
            mmio_read: m.mmio_read.load(Relaxed),
            mmio_write: m.mmio_write.load(Relaxed),
            hlt: m.hlt.load(Relaxed),
            other: m.other.load(Relaxed),
            exits_total: 0,
        };
        c.exits_total = c.io_in + c.io_out + c.mmio_read + c.mmio_write + c.hlt + c.other;
        c
    }

    fn add(&mut self, o: &VcpuCounts) {
        self.exits_total += o.exits_total;
        self.io_in += o.io_in;
        self.io_out += o.io_out;
        self.mmio_read += o.mmio_read;
        self.mmio_write += o.mmio_write;
        self.hlt += o.hlt;
        self.other += o.other;
    }
}

/// One metrics line, as serialized.
#[derive(serde::Serialize)]
struct Line<'a> {
    utc_timestamp_ms: u64,
    uptime_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    boot_time_us: Option<u64>,
    vcpu: VcpuCounts,
    per_vcpu: Vec<VcpuCounts>,
    block: BTreeMap<&'a str, &'a BlockMetrics>,
    net: BTreeMap<&'a str, &'a NetMetrics>,
    vsock: &'a VsockMetrics,
    rng: &'a RngMetrics,
    vm: &'a VmMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub const fn new() -> Self {
        Self {
            vcpus: [const { VcpuMetrics::new() }; MAX_VCPUS],
            vcpu_count: AtomicUsize::new(0),
            drives: Mutex::new(Vec::new()),
            nets: Mutex::new(Vec::new()),
            vsock: VsockMetrics::new(),
            rng: RngMetrics::new(),
            vm: VmMetrics::new(),
            boot_time_us: AtomicU64::new(0),
        }
    }

    /// The counters of vCPU `index` (indexes past [`MAX_VCPUS`] share the last slot).
    pub fn vcpu(&self, index: usize) -> &VcpuMetrics {
        &self.vcpus[index.min(MAX_VCPUS - 1)]
    }

    /// How many vCPUs the VM has (the length of `per_vcpu`).
    pub fn set_vcpu_count(&self, n: usize) {
        self.vcpu_count.store(n.min(MAX_VCPUS), Relaxed);
    }

    /// The counters of drive `drive_id`, created on first use; the same drive attached
    /// again (a retried InstanceStart) keeps counting where it was.
    pub fn drive(&self, drive_id: &str) -> Arc<BlockMetrics> {
        let mut drives = self.drives.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, m)) = drives.iter().find(|(id, _)| id == drive_id) {
            return m.clone();
        }
        let m = Arc::new(BlockMetrics::new());
        drives.push((drive_id.to_string(), m.clone()));
        m
    }

    /// The counters of network interface `iface_id`, created on first use (as
    /// [`Metrics::drive`]).
    pub fn net(&self, iface_id: &str) -> Arc<NetMetrics> {
        let mut nets = self.nets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, m)) = nets.iter().find(|(id, _)| id == iface_id) {
            return m.clone();
        }
        let m = Arc::new(NetMetrics::new());
        nets.push((iface_id.to_string(), m.clone()));
        m
    }

    /// Records the boot time (the first report wins).
    pub fn set_boot_time(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        if self
            .boot_time_us
            .compare_exchange(0, us, Relaxed, Relaxed)
            .is_ok()
        {
            // The first line once the guest is up, so readers (kiln inspect's
            // disk_errors) have counters from the start, not after FLUSH_INTERVAL.
            pacer::request_flush();
        }
    }

    /// The metrics as one line of JSON, newline included.
    pub fn line(&self, utc_timestamp_ms: u64, uptime_ms: u64) -> String {
        let per_vcpu: Vec<VcpuCounts> = self.vcpus[..self.vcpu_count.load(Relaxed)]
            .iter()
            .map(VcpuCounts::of)
            .collect();
        let mut vcpu = VcpuCounts::default();
        per_vcpu.iter().for_each(|c| vcpu.add(c));
        let drives = self
            .drives
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let block = drives.iter().map(|(id, m)| (id.as_str(), &**m)).collect();
        let nets = self.nets.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let net = nets.iter().map(|(id, m)| (id.as_str(), &**m)).collect();
        let boot = self.boot_time_us.load(Relaxed);
        let line = Line {
            utc_timestamp_ms,
            uptime_ms,
            boot_time_us: (boot != 0).then_some(boot),
            vcpu,
            per_vcpu,
            block,
            net,
            vsock: &self.vsock,
            rng: &self.rng,
            vm: &self.vm,
        };
        // Plain structs of integers and strings: serialization cannot fail.
        let mut s = serde_json::to_string(&line).unwrap_or_default();
        s.push('\n');
        s
    }

    /// The metrics as of now.
    pub fn line_now(&self) -> String {
        let utc = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let uptime = PROCESS_START.get_or_init(Instant::now).elapsed();
        self.line(utc, uptime.as_millis() as u64)
    }
}
