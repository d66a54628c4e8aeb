//! `kiln bench net` (root): a sandbox's network against the host's own, in one run.
//!
//! The bench makes an "upstream" namespace standing for the internet (a veth to the
//! host, 198.51.100.10 inside, a documentation address reached only through that veth:
//! the route is checked before anything is sent) with a TCP sink and a TCP echo server.
//!
//! - TCP throughput guest → upstream (a Debian sandbox with `--net allow-all` streams
//!   N MiB per sample) vs the same stream from the host namespace over the veth; the
//!   sink times each stream from its first byte to its end.
//! - Connect round trip (connect, one byte there and back, close) from the guest vs from
//!   the host namespace.
//! - What a network adds to a create: create → first exec of minimal sandboxes with
//!   `--net default` and `--net none`, one of each in turn.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kiln::net::{netns, rtnl::Rtnl, NetMode};
use kiln::{ExecOptions, Sandbox};
use serde_json::{json, Value};

use super::sandbox::{ratio, true_opts};
use super::stats::{ms, p50, summary};

#[derive(clap::Args)]
pub struct NetBenchArgs {
    /// Samples per figure.
    #[arg(short = 'n', long, default_value_t = 5)]
    n: usize,
    /// MiB per throughput sample.
    #[arg(long, default_value_t = 32)]
    mib: usize,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const HOST_END: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const SINK: u16 = 5001;
const ECHO: u16 = 5002;

/// The upstream namespace and its veth; removed (with the servers' sockets' namespace)
/// on drop, and ip_forward put back.
struct Upstream {
    ns: String,
    link: String,
    forward: String,
    /// Bytes and first-byte-to-end time of each stream the sink took.
    streams: Receiver<(u64, Duration)>,
}

impl Upstream {
    fn new() -> Result<Upstream> {
        let tag = std::process::id() % 100_000;
        let (ns, link) = (format!("kiln-bench-up{tag}"), format!("kbu{tag}"));
        netns::create(&ns).with_context(|| format!("create namespace {ns}"))?;
        let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?;
        let mut up = Upstream {
            ns,
            link,
            forward,
            streams: channel().1,
        };
        up.build()?;
        Ok(up)
    }

    fn build(&mut self) -> Result<()> {
        let r = Rtnl::new()?;
        let nsf = netns::open(&self.ns)?;
        r.add_veth(&self.link, "up0", nsf.as_raw_fd())?;
        r.add_addr(&self.link, HOST_END, 24)?;
        r.up(&self.link, None)?;
        netns::run_in(&self.ns, || -> std::io::Result<()> {
            let r = Rtnl::new()?;
            r.up("lo", None)?;
            r.add_addr("up0", SERVER, 24)?;
            r.up("up0", None)?;
            r.add_default_route(HOST_END)
        })??;
        let (dev, via) = r.route_to(SERVER)?;
        ensure!(
            dev == self.link && via.is_none(),
            "{SERVER} is routed via {dev} ({via:?}), not into the bench's namespace; nothing was sent"
        );
        // Sandboxes' traffic is forwarded by the host to this link.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
        let sink = netns::run_in(&self.ns, || TcpListener::bind((SERVER, SINK)))??;
        let echo = netns::run_in(&self.ns, || TcpListener::bind((SERVER, ECHO)))??;
        let (tx, rx) = channel();
        self.streams = rx;
        std::thread::spawn(move || {
            for c in sink.incoming().flatten() {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let _ = tx.send(drain(c));
                });
            }
        });
        std::thread::spawn(move || {
            for mut c in echo.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut b = [0u8; 1];
                    while matches!(c.read(&mut b), Ok(1)) {
                        if c.write_all(&b).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(())
    }

    /// The next stream the sink finished, as MiB/s.
    fn next_stream(&self) -> Result<f64> {
        let (bytes, took) = self
            .streams
            .recv_timeout(Duration::from_secs(600))
            .context("the sink got no stream")?;
        Ok(bytes as f64 / f64::from(1 << 20) / took.as_secs_f64().max(1e-9))
    }
}

/// Reads `c` to its end: (bytes, time from the first byte to the end).
fn drain(mut c: TcpStream) -> (u64, Duration) {
    let mut buf = vec![0u8; 1 << 16];
    let (mut n, mut t0) = (0u64, None);
    while let Ok(k) = c.read(&mut buf) {
        if k == 0 {
            break;
        }
        t0.get_or_insert_with(Instant::now);
        n += k as u64;
    }
    (n, t0.map_or(Duration::ZERO, |t| t.elapsed()))
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Ok(r) = Rtnl::new() {
            let _ = r.delete(&self.link);
        }
        let _ = netns::remove(&self.ns);
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", self.forward.trim());
    }
}

/// The host namespace's side: `n` streams of `mib` MiB (MiB/s) and `n` connect round
/// trips (ms).
fn host_side(up: &Upstream, n: usize, mib: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let chunk = vec![0x5au8; 1 << 20];
    let mut rates = Vec::new();
    for _ in 0..n {
        let mut c = TcpStream::connect((SERVER, SINK))?;
        for _ in 0..mib {
            c.write_all(&chunk)?;
        }
        drop(c);
        rates.push(up.next_stream()?);
    }
    let mut rtt = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let mut c = TcpStream::connect(SocketAddr::from((SERVER, ECHO)))?;
        c.write_all(b"x")?;
        let mut b = [0u8; 1];
        c.read_exact(&mut b)?;
        drop(c);
        rtt.push(ms(t.elapsed()));
    }
    Ok((rates, rtt))
}

/// The guest's side, the same work in python3 inside a Debian sandbox.
fn guest_side(up: &Upstream, n: usize, mib: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let sb = Sandbox::builder()
        .image("debian")
        .network(NetMode::AllowAll)
        .create()
        .context("create a Debian sandbox with --net allow-all")?;
    let script = format!(
        "import socket, time\n\
         chunk = b'Z' * (1 << 20)\n\
         for _ in range({n}):\n\
         \x20   s = socket.create_connection(('{SERVER}', {SINK}))\n\
         \x20   for _ in range({mib}): s.sendall(chunk)\n\
         \x20   s.close()\n\
         for _ in range({n}):\n\
         \x20   t = time.perf_counter()\n\
         \x20   s = socket.create_connection(('{SERVER}', {ECHO}))\n\
         \x20   s.sendall(b'x'); assert s.recv(1) == b'x'; s.close()\n\
         \x20   print((time.perf_counter() - t) * 1000)\n"
    );
    let out =
        sb.exec(&ExecOptions::new(["python3", "-c", &script]).timeout(Duration::from_secs(900)))?;
    if out.status.code != Some(0) {
        bail!(
            "the guest's transfer failed: {} {}",
            out.stdout_str(),
            out.stderr_str()
        );
    }
    let rates = (0..n)
        .map(|_| up.next_stream())
        .collect::<Result<Vec<_>>>()?;
    let rtt = out
        .stdout_str()
        .lines()
        .map(|l| l.trim().parse::<f64>().context("a round trip"))
        .collect::<Result<Vec<_>>>()?;
    sb.remove()?;
    Ok((rates, rtt))
}

/// Create → first exec of minimal sandboxes with and without a network, alternating.
fn setup_cost(n: usize, dots: bool) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..n {
        for (mode, v) in [(NetMode::Deny, &mut with), (NetMode::None, &mut without)] {
            let t = Instant::now();
            let sb = Sandbox::builder().image("minimal").network(mode).create()?;
            sb.exec(&true_opts())?;
            v.push(ms(t.elapsed()));
            sb.remove()?;
            if dots {
                eprint!(".");
            }
        }
    }
    Ok((with, without))
}

pub fn run(a: NetBenchArgs) -> Result<i32> {
    // SAFETY: a getter.
    if unsafe { libc::geteuid() } != 0 {
        bail!("kiln bench net makes network namespaces and sandbox networks: run it as root");
    }
    ensure!(a.n > 0 && a.mib > 0, "-n and --mib must be at least 1");
    let up = Upstream::new()?;
    let (veth_rate, veth_rtt) = host_side(&up, a.n, a.mib)?;
    let (guest_rate, guest_rtt) = guest_side(&up, a.n, a.mib)?;
    let (with, without) = setup_cost(a.n, !a.json)?;
    drop(up);
    if !a.json {
        eprintln!();
    }
    let report: Value = json!({
        "mib_per_stream": a.mib,
        "guest_tcp_mib_s": summary(&guest_rate),
        "veth_tcp_mib_s": summary(&veth_rate),
        "ratio_guest_over_veth_tcp_p50": ratio(&guest_rate, &veth_rate),
        "guest_connect_rtt_ms": summary(&guest_rtt),
        "veth_connect_rtt_ms": summary(&veth_rtt),
        "ratio_guest_over_veth_rtt_p50": ratio(&guest_rtt, &veth_rtt),
        "create_to_first_exec_ms_net_default": summary(&with),
        "create_to_first_exec_ms_net_none": summary(&without),
        "net_setup_added_ms_p50": ((p50(&with) - p50(&without)) * 10.0).round() / 10.0,
        "ratio_net_default_over_none_p50": ratio(&with, &without),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(0)
}
