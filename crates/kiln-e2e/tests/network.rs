//! Sandbox networks end to end (docs/NETWORK.md): real guests, each in a network
//! namespace kiln made, reaching an "upstream" namespace this test makes, with an HTTP
//! server on 198.51.100.10 (a documentation range) that is reached only through a route
//! into that namespace (checked before any packet is sent).
//!
//! - eth0 has the fixed guest address, MAC and resolv.conf; `--net none` has no NIC;
//! - allow-all egress reaches upstream, the default (deny) does not;
//! - large transfers both ways keep their SHA-256;
//! - two sandboxes, fork children and a restored sandbox share the guest address, yet
//!   upstream sees each one's own source address;
//! - a 1 MiB/s tx limit holds an upload near 1 MiB/s;
//! - nothing (namespace, veth, nftables table, lease) is left after removal, a kill -9
//!   of a VMM and a failed create.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln::sandbox::{network, NetMode};
use kiln::Sandbox;
use kiln_e2e::cli::{kill9, Kiln};
use kiln_e2e::{require_kvm, sh, sha256_hex, TempDir};

const UPSTREAM: &str = "198.51.100.10";
const UPSTREAM_HOST: &str = "198.51.100.1";
const PORT: u16 = 8080;

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the upstream server saw: each request's source address and, for uploads, the
/// bytes, their SHA-256 and the time from first to last byte.
#[derive(Default)]
struct Seen {
    sources: Vec<IpAddr>,
    uploads: Vec<(usize, String, Duration)>,
}

/// The upstream namespace, its veth to the host and its server; removed on drop.
struct Upstream {
    ns: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    forward: String,
}

impl Upstream {
    fn new() -> Upstream {
        let tag = std::process::id() % 100_000;
        let (ns, host, peer) = (
            format!("kiln-test-up{tag}"),
            format!("ktu{tag}"),
            format!("ktp{tag}"),
        );
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", &peer, "netns", &ns,
        ]);
        ip(&["addr", "add", &format!("{UPSTREAM_HOST}/24"), "dev", &host]);
        ip(&["link", "set", &host, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{UPSTREAM}/24"),
            "dev",
            &peer,
        ]);
        ip(&["-n", &ns, "link", "set", &peer, "up"]);
        ip(&["-n", &ns, "route", "add", "default", "via", UPSTREAM_HOST]);
        // Before any packet: the upstream address is reached through our veth only.
        let route = ip(&["-o", "route", "get", UPSTREAM]);
        assert!(
            route.contains(&format!("dev {host}")),
            "{UPSTREAM} is not routed into the test's namespace: {route}"
        );
        let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
        let up = Upstream {
            ns,
            stop: Arc::new(AtomicBool::new(false)),
            seen: Arc::default(),
            forward,
        };
        up.serve();
        up
    }

    /// The HTTP server, on a thread inside the namespace (its socket belongs there).
    fn serve(&self) {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.ns)).unwrap();
        let (stop, seen) = (self.stop.clone(), self.seen.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns on an fd we own; only this thread moves.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into the upstream namespace");
            let l = TcpListener::bind((UPSTREAM, PORT)).unwrap();
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, peer)) => {
                        seen.lock().unwrap().sources.push(peer.ip());
                        let seen = seen.clone();
                        std::thread::spawn(move || handle(s, peer.ip(), &seen));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        rx.recv().unwrap();
    }

    fn sources(&self) -> Vec<IpAddr> {
        self.seen.lock().unwrap().sources.clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", self.forward.trim());
    }
}

/// `n` bytes the same on both sides.
fn pattern(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// One HTTP/1.0 request: `GET /whoami` (the source address), `GET /big/N` (N pattern
/// bytes), `POST /sink` (the body's SHA-256).
fn handle(s: TcpStream, peer: IpAddr, seen: &Mutex<Seen>) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let body = if path == "/whoami" {
        peer.to_string().into_bytes()
    } else if let Some(n) = path.strip_prefix("/big/") {
        pattern(n.parse().unwrap_or(0))
    } else if path == "/sink" {
        let mut data = vec![0u8; len];
        let mut got = 0;
        let mut t0 = None;
        while got < len {
            match r.read(&mut data[got..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    t0.get_or_insert_with(Instant::now);
                    got += k;
                }
            }
        }
        let took = t0.map_or(Duration::ZERO, |t| t.elapsed());
        let sum = sha256_hex(&data[..got]);
        seen.lock().unwrap().uploads.push((got, sum.clone(), took));
        sum.into_bytes()
    } else {
        b"not found".to_vec()
    };
    let mut s = s;
    let _ = write!(
        s,
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(&body);
}

fn exec_ok(sb: &Sandbox, script: &str) -> String {
    let out = sh(sb, script);
    assert_eq!(
        out.status.code,
        Some(0),
        "{script}: {} {}",
        out.stdout_str(),
        out.stderr_str()
    );
    out.stdout_str().trim().to_string()
}

fn whoami(sb: &Sandbox) -> String {
    exec_ok(
        sb,
        // Debian has python3 and no wget; minimal has busybox's wget (whose -T crashes
        // in the static build: no timeout flag here).
        &format!(
            "url=http://{UPSTREAM}:{PORT}/whoami; if command -v python3 >/dev/null; then \
             python3 -c \"import urllib.request as u; print(u.urlopen('$url', timeout=30).read().decode())\"; \
             else wget -q -O - $url; fi"
        ),
    )
}

/// The guest's side of the network is the same in every sandbox (read from /sys and
/// /proc: the Debian image has no `ip`).
fn check_guest_side(sb: &Sandbox) {
    let mac = exec_ok(sb, "cat /sys/class/net/eth0/address");
    assert_eq!(mac, "06:00:a9:fe:00:02");
    assert_eq!(exec_ok(sb, "cat /sys/class/net/eth0/mtu"), "1500");
    let fib = exec_ok(sb, "cat /proc/net/fib_trie");
    assert!(fib.contains("169.254.0.2"), "no 169.254.0.2 on eth0: {fib}");
    // The default route: destination 0, gateway 169.254.0.1 (little-endian hex).
    let route = exec_ok(sb, "cat /proc/net/route");
    assert!(
        route
            .lines()
            .any(|l| l.starts_with("eth0\t00000000\t0100FEA9")),
        "{route}"
    );
    let resolv = exec_ok(sb, "cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 169.254.0.1"), "{resolv}");
}

fn sandbox_ip(sb: &mut Sandbox) -> String {
    let info = sb.info();
    info.network
        .sandbox_ip
        .unwrap_or_else(|| panic!("no sandbox address in {:?}", info.network))
        .to_string()
}

/// The networks of the state dir `state` that still exist.
fn networks_of(state: &Path) -> Vec<String> {
    let prefix = network::net_id_prefix(state);
    kiln::net::network_ids()
        .into_iter()
        .filter(|id| id.starts_with(&prefix))
        .collect()
}

#[test]
fn sandboxes_get_their_own_network_and_egress_follows_the_mode() {
    if !require_kvm("network") {
        return;
    }
    let state = TempDir::new("network");
    std::env::set_var("KILN_STATE_DIR", &state.0);
    // Upstream sees each sandbox's own pool address, not the host's.
    std::env::set_var(network::HOST_NAT_ENV, "0");
    let up = Upstream::new();

    // A NIC with all egress: the guest side, then upstream, from the sandbox's address.
    let mut a = Sandbox::builder()
        .image("minimal")
        .network(NetMode::AllowAll)
        .create()
        .expect("create with --net allow-all");
    check_guest_side(&a);
    let a_ip = sandbox_ip(&mut a);
    assert_eq!(whoami(&a), a_ip);
    let info = a.info().network;
    assert_eq!(info.mode, "allow-all");
    assert_eq!(
        info.guest_ip.map(|i| i.to_string()).as_deref(),
        Some("169.254.0.2")
    );
    assert!(info
        .netns
        .as_deref()
        .is_some_and(|n| n.starts_with("kiln-")));

    // The Debian image: 16 MiB down and up keep their SHA-256.
    let mut b = Sandbox::builder()
        .image("debian")
        .network(NetMode::AllowAll)
        .create()
        .expect("create debian with --net allow-all");
    check_guest_side(&b);
    let n = 16 << 20;
    let down = exec_ok(
        &b,
        &format!(
            "python3 -c \"import hashlib,urllib.request as u; d=u.urlopen('http://{UPSTREAM}:{PORT}/big/{n}',timeout=60).read(); print(len(d), hashlib.sha256(d).hexdigest())\""
        ),
    );
    assert_eq!(down, format!("{n} {}", sha256_hex(&pattern(n))));
    let up_script = format!(
        "python3 -c \"import hashlib,os,urllib.request as u; d=os.urandom({n}); r=u.urlopen(u.Request('http://{UPSTREAM}:{PORT}/sink',data=d),timeout=60).read().decode(); print(r == hashlib.sha256(d).hexdigest(), r)\""
    );
    let sent = exec_ok(&b, &up_script);
    assert!(sent.starts_with("True "), "upload: {sent}");
    let b_ip = sandbox_ip(&mut b);
    assert_ne!(a_ip, b_ip, "two sandboxes share a source address");
    assert_eq!(whoami(&b), b_ip);

    // A tx limit on b's NIC (through its VMM's API, as Firecracker's clients set it):
    // 1 MiB/s, or a quarter of what the unlimited upload above managed where that is
    // slower (the nested harness); a 4 MiB upload then arrives at about that rate.
    let (bytes, _, took) = up.seen.lock().unwrap().uploads[0].clone();
    let free = bytes as f64 / took.as_secs_f64();
    let limit = (free / 4.0).min(f64::from(1 << 20)) as u64;
    let client = kiln::FcClient::new(b.dir().join("vm/api.sock"));
    let body = serde_json::json!({"iface_id": "eth0", "tx_rate_limiter": {"bandwidth": {"size": limit / 4, "refill_time": 250}}});
    client
        .patch("/network-interfaces/eth0", &body)
        .expect("PATCH the tx limit");
    let before = up.seen.lock().unwrap().uploads.len();
    let limited = up_script.replace(&n.to_string(), &(4usize << 20).to_string());
    assert!(exec_ok(&b, &limited).starts_with("True "));
    let (bytes, _, took) = up.seen.lock().unwrap().uploads[before].clone();
    let rate = bytes as f64 / took.as_secs_f64();
    let mib = |r: f64| r / f64::from(1 << 20);
    println!(
        "network: upload unlimited {:.2} MiB/s; under a {:.2} MiB/s tx limit {:.2} MiB/s",
        mib(free),
        mib(limit as f64),
        mib(rate)
    );
    let ratio = rate / limit as f64;
    assert!(
        (0.5..1.5).contains(&ratio),
        "{:.2} MiB/s under a {:.2} MiB/s limit",
        mib(rate),
        mib(limit as f64)
    );

    // The default: a NIC with no egress. The connection never reaches upstream.
    let mut d = Sandbox::builder()
        .image("minimal")
        .network(NetMode::Deny)
        .create()
        .expect("create with --net default");
    check_guest_side(&d);
    let d_ip = sandbox_ip(&mut d);
    let denied = sh(&d, &format!("nc -w 3 {UPSTREAM} {PORT} </dev/null"));
    assert_ne!(denied.status.code, Some(0), "{}", denied.stdout_str());
    assert!(!up.sources().iter().any(|s| s.to_string() == d_ip));

    // --net none: no NIC at all.
    let mut none = Sandbox::builder()
        .image("minimal")
        .network(NetMode::None)
        .create()
        .expect("create with --net none");
    assert_eq!(exec_ok(&none, "ls /sys/class/net"), "lo");
    let ni = none.info().network;
    assert_eq!((ni.mode, ni.netns), ("none", None));

    // Fork children and a restored sandbox: the same guest address, their own sources.
    let mut kids = a.fork(2).expect("fork");
    let mut seen = BTreeSet::from([a_ip.clone(), b_ip.clone()]);
    for k in kids.iter_mut() {
        check_guest_side(k);
        let ip = sandbox_ip(k);
        assert_eq!(whoami(k), ip);
        assert!(seen.insert(ip.clone()), "a child reuses {ip}");
    }
    let snap = a.snapshot(Some("net-snap")).expect("snapshot");
    let mut r = Sandbox::builder()
        .from_snapshot("net-snap")
        .create()
        .expect("restore");
    assert_eq!(r.info().network.mode, "allow-all");
    let r_ip = sandbox_ip(&mut r);
    assert_eq!(whoami(&r), r_ip);
    assert!(seen.insert(r_ip), "the restored sandbox reuses an address");

    let all = networks_of(&state.0);
    // a, b, d, two children, the restored one; `none` has no network.
    assert_eq!(all.len(), 6, "{all:?}");
    for sb in kids.into_iter().chain([a, b, d, none, r]) {
        sb.remove().expect("remove");
    }
    snap.remove().expect("remove the snapshot");
    assert_eq!(networks_of(&state.0), Vec::<String>::new());
    drop(up);
}

#[test]
fn nothing_is_left_after_a_kill_or_a_failed_create() {
    if !require_kvm("network leftovers") {
        return;
    }
    let state = TempDir::new("network-leftovers");
    let k = Kiln { state: &state.0 };
    let id = k.ok(&["create", "--image", "minimal", "--net", "default"]);
    let id = id.trim();
    let info = k.inspect(id).expect("inspect");
    let net = &info["network"];
    assert_eq!(net["mode"], "default");
    assert_eq!(net["guest_ip"], "169.254.0.2");
    assert_eq!(net["gateway"], "169.254.0.1");
    let ns = net["netns"].as_str().expect("a namespace").to_string();
    assert!(Path::new("/run/netns").join(&ns).exists());
    assert_eq!(networks_of(&state.0).len(), 1);

    // kill -9 of the VMM: the next kiln command's reconcile removes the network.
    kill9(info["pid"].as_u64().unwrap() as u32);
    k.ok(&["ls"]);
    assert_eq!(networks_of(&state.0), Vec::<String>::new());
    assert!(!Path::new("/run/netns").join(&ns).exists());
    assert!(
        kiln::net::leftovers_of(&format!("{}{id}", network::net_id_prefix(&state.0))).is_empty()
    );
    k.ok(&["rm", id]);

    // A create that fails after its network was made (the VMM cannot start).
    let out = k
        .cmd(&["create", "--image", "minimal", "--net", "default"])
        .env("KILN_VMM", "/nonexistent/kiln-vmm")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(networks_of(&state.0), Vec::<String>::new());

    // Bad input is refused before anything exists.
    let bad = k.cmd(&["create", "--net", "bridge"]).output().unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("use none"));
    let qemu = k
        .cmd(&["create", "--backend", "qemu", "--net", "default"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&qemu.stderr).contains("no TAP networking"),
        "{}",
        String::from_utf8_lossy(&qemu.stderr)
    );
    assert_eq!(networks_of(&state.0), Vec::<String>::new());
}
