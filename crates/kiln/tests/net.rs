//! Sandbox networks on the real kernel: namespaces, veth pairs, TAPs and nftables tables
//! are made and torn down for real (root only; with CI=true or KILN_E2E_REQUIRE=1 a
//! non-root run fails instead of skipping). Traffic goes only to namespaces these tests
//! make: an "upstream" namespace with a TCP server on a documentation address, reached
//! through a route the test checks first, and a "guest" namespace standing in for the
//! VM: its TAP `g0` is wired frame by frame to the sandbox's TAP `kt0`, exactly where a
//! VMM would read and write them.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kiln::net::rtnl::Rtnl;
use kiln::net::{
    conntrack, destroy_leftovers, leftovers_of, netns, tap, EgressPolicy, NetConfig, NetError,
    Network, GATEWAY, GUEST_ADDR, GUEST_MAC, TAP_NAME,
};

const PORT: u16 = 8080;

fn root_or_skip() -> bool {
    // SAFETY: a getter.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let must = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("KILN_E2E_REQUIRE").is_ok_and(|v| v == "1");
    assert!(
        !must,
        "the network tests need root (CI=true / KILN_E2E_REQUIRE=1 forbid skipping)"
    );
    eprintln!("skipped: the network tests need root");
    false
}

fn id(name: &str) -> String {
    format!("t{}-{name}", std::process::id())
}

/// Removes everything a test made, also when it fails, and checks kiln left nothing.
#[derive(Default)]
struct Guard {
    ids: Vec<String>,
    namespaces: Vec<String>,
    host_links: Vec<String>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Guard {
    fn net(&mut self, name: &str, cfg: &NetConfig) -> Network {
        let id = id(name);
        self.ids.push(id.clone());
        Network::create(&id, cfg).unwrap_or_else(|e| panic!("create {id}: {e}"))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for id in &self.ids {
            let _ = destroy_leftovers(id);
        }
        for ns in &self.namespaces {
            let _ = netns::remove(ns);
        }
        if let Ok(r) = Rtnl::new() {
            for l in &self.host_links {
                let _ = r.delete(l);
            }
        }
        if !std::thread::panicking() {
            for id in &self.ids {
                assert_eq!(leftovers_of(id), Vec::<String>::new(), "leftovers of {id}");
            }
        }
    }
}

fn sysctl(key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// An "upstream" namespace with a line server on 198.51.100.(16k+10) that answers with
/// the source address it saw, behind a veth whose host end is 198.51.100.(16k+1)/28.
struct Upstream {
    server: SocketAddr,
    host_end: Ipv4Addr,
    seen: Arc<Mutex<Vec<Ipv4Addr>>>,
    /// Datagrams the UDP server on the same address and port got: (source, payload).
    datagrams: Arc<Mutex<Vec<(Ipv4Addr, String)>>>,
}

fn upstream(g: &mut Guard, k: u8) -> Upstream {
    let ns = format!("knt-up{k}-{}", std::process::id());
    let link = format!("knu{k}-{}", std::process::id() % 100_000);
    g.namespaces.push(ns.clone());
    g.host_links.push(link.clone());
    netns::create(&ns).expect("upstream namespace");
    let host_end = Ipv4Addr::new(198, 51, 100, 16 * k + 1);
    let server_ip = Ipv4Addr::new(198, 51, 100, 16 * k + 10);
    let r = Rtnl::new().unwrap();
    let nsf = netns::open(&ns).unwrap();
    r.add_veth(&link, "up0", nsf.as_raw_fd()).unwrap();
    r.add_addr(&link, host_end, 28).unwrap();
    r.up(&link, None).unwrap();
    // Replies from upstream come in on this link and are forwarded to the sandboxes.
    sysctl(&format!("net.ipv4.conf.{link}.forwarding"), "1");
    netns::run_in(&ns, || {
        let r = Rtnl::new().unwrap();
        r.up("lo", None).unwrap();
        r.add_addr("up0", server_ip, 28).unwrap();
        r.up("up0", None).unwrap();
        r.add_default_route(host_end).unwrap();
    })
    .unwrap();
    // Nothing is sent before the route to the server is known to lead into upstream.
    let (dev, via) = r.route_to(server_ip).unwrap();
    assert_eq!(
        (dev.as_str(), via),
        (link.as_str(), None),
        "route to {server_ip}"
    );

    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = SocketAddr::from((server_ip, PORT));
    let listener = netns::run_in(&ns, || TcpListener::bind(server).unwrap()).unwrap();
    listener.set_nonblocking(true).unwrap();
    let (stop, log) = (g.stop.clone(), seen.clone());
    g.threads.push(std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut c, peer)) => {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let SocketAddr::V4(peer) = peer else { continue };
                    log.lock().unwrap().push(*peer.ip());
                    let mut line = String::new();
                    let _ = BufReader::new(&c).read_line(&mut line);
                    let _ = writeln!(c, "{} said {}", peer.ip(), line.trim());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }));
    let udp = netns::run_in(&ns, || std::net::UdpSocket::bind(server).unwrap()).unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let datagrams = Arc::new(Mutex::new(Vec::new()));
    let (stop, log) = (g.stop.clone(), datagrams.clone());
    g.threads.push(std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::SeqCst) {
            if let Ok((n, SocketAddr::V4(from))) = udp.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                log.lock().unwrap().push((*from.ip(), text));
            }
        }
    }));
    Upstream {
        server,
        host_end,
        seen,
        datagrams,
    }
}

/// Copies frames from `from` to `to` until `stop`.
fn pump(from: Arc<File>, to: Arc<File>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::SeqCst) {
            let mut p = libc::pollfd {
                fd: from.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd that lives across the call.
            if unsafe { libc::poll(&mut p, 1, 50) } <= 0 {
                continue;
            }
            match (&*from).read(&mut buf) {
                Ok(n) if n > 0 => {
                    let _ = (&*to).write(&buf[..n]);
                }
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

/// A "guest" namespace whose TAP `g0` has the guest's address and MAC, wired to `net`'s
/// TAP as a VMM would be. Returns the namespace's name.
fn guest(g: &mut Guard, net: &Network, k: u8) -> String {
    let ns = format!("knt-g{k}-{}", std::process::id());
    g.namespaces.push(ns.clone());
    netns::create(&ns).expect("guest namespace");
    let kt = netns::run_in(net.netns_name(), || tap::attach(TAP_NAME, false))
        .unwrap()
        .expect("open the sandbox's TAP");
    let g0 = netns::run_in(&ns, || {
        let f = tap::attach("g0", false).unwrap();
        let r = Rtnl::new().unwrap();
        r.up("lo", None).unwrap();
        r.up("g0", Some(GUEST_MAC)).unwrap();
        r.add_addr("g0", GUEST_ADDR, 30).unwrap();
        r.add_default_route(GATEWAY).unwrap();
        f
    })
    .unwrap();
    let (kt, g0) = (Arc::new(kt), Arc::new(g0));
    g.threads.push(pump(kt.clone(), g0.clone(), g.stop.clone()));
    g.threads.push(pump(g0, kt, g.stop.clone()));
    ns
}

/// From inside `ns`: connect to `to`, say `hello`, return the answer line.
fn ask(ns: &str, to: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    netns::run_in(ns, || {
        let mut c = TcpStream::connect_timeout(&to, timeout)?;
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        c.write_all(b"hello\n")?;
        let mut line = String::new();
        BufReader::new(&c).read_line(&mut line)?;
        Ok(line.trim().to_string())
    })?
}

#[test]
fn two_sandboxes_share_the_guest_side_and_differ_on_the_host_side() {
    if !root_or_skip() {
        return;
    }
    let mut g = Guard::default();
    let a = g.net(
        "two-a",
        &NetConfig {
            tap_owner: Some((900_000_001, 900_000_001)),
            ..Default::default()
        },
    );
    let b = g.net(
        "two-b",
        &NetConfig {
            tap_owner: Some((900_000_002, 900_000_003)),
            ..Default::default()
        },
    );
    assert_eq!(
        (a.tap_name(), a.guest_addr(), a.gateway(), a.mac()),
        (b.tap_name(), b.guest_addr(), b.gateway(), b.mac())
    );
    assert_ne!(a.host_addr(), b.host_addr());
    assert_ne!(a.sandbox_addr(), b.sandbox_addr());
    assert_ne!(a.netns_path(), b.netns_path());
    let listed = String::from_utf8(
        std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for (net, uid) in [(&a, 900_000_001), (&b, 900_000_002)] {
        assert!(listed.contains(net.netns_name()), "{listed}");
        let (kind, owner, route) = netns::run_in(net.netns_name(), || {
            let r = Rtnl::new().unwrap();
            let (kind, owner) = r.kind_and_tun_owner(TAP_NAME).unwrap();
            (
                kind,
                owner,
                r.route_to(Ipv4Addr::new(198, 51, 100, 10)).unwrap(),
            )
        })
        .unwrap();
        assert_eq!((kind.as_deref(), owner), (Some("tun"), Some(uid)));
        assert_eq!(route, ("kv0".to_string(), Some(net.host_addr())));
        // Another process finds it by id.
        assert_eq!(Network::find(net.id()).unwrap().as_ref(), Some(net));
    }
    a.destroy().unwrap();
    a.destroy().expect("destroy is idempotent");
    assert_eq!(leftovers_of(a.id()), Vec::<String>::new());
    assert!(Network::find(a.id()).unwrap().is_none());
    assert!(!leftovers_of(b.id()).is_empty(), "b is untouched");
}

#[test]
fn egress_is_denied_by_default_and_flows_under_allow_all_with_distinct_sources() {
    if !root_or_skip() {
        return;
    }
    let mut g = Guard::default();
    let up = upstream(&mut g, 1);
    let a = g.net("egress-a", &NetConfig::default());
    let ga = guest(&mut g, &a, 1);

    let denied = ask(&ga, up.server, Duration::from_secs(2));
    assert!(denied.is_err(), "default policy let through: {denied:?}");
    assert!(
        up.seen.lock().unwrap().is_empty(),
        "the server saw a connection"
    );

    a.set_policy(EgressPolicy::AllowAll).unwrap();
    let said = ask(&ga, up.server, Duration::from_secs(10)).expect("allow-all egress");
    // Masqueraded twice: in the sandbox namespace, then by the host onto its upstream link.
    assert_eq!(said, format!("{} said hello", up.host_end));

    // Without the host's masquerade each sandbox's own address is the source upstream.
    let direct = NetConfig {
        policy: EgressPolicy::AllowAll,
        host_nat: false,
        ..Default::default()
    };
    let b = g.net("egress-b", &direct);
    let c = g.net("egress-c", &direct);
    let (gb, gc) = (guest(&mut g, &b, 2), guest(&mut g, &c, 3));
    assert_eq!(
        ask(&gb, up.server, Duration::from_secs(10)).unwrap(),
        format!("{} said hello", b.sandbox_addr())
    );
    assert_eq!(
        ask(&gc, up.server, Duration::from_secs(10)).unwrap(),
        format!("{} said hello", c.sandbox_addr())
    );

    // A guest that lies about its source address gets nothing out, even under allow-all:
    // the spoofed datagram is sent first, the honest one after it on the same path.
    netns::run_in(&gb, || {
        Rtnl::new()
            .unwrap()
            .add_addr("g0", Ipv4Addr::new(10, 0, 0, 7), 32)
            .unwrap();
        let spoofed = std::net::UdpSocket::bind((Ipv4Addr::new(10, 0, 0, 7), 0)).unwrap();
        spoofed.send_to(b"spoofed", up.server).unwrap();
        let honest = std::net::UdpSocket::bind((GUEST_ADDR, 0)).unwrap();
        honest.send_to(b"honest", up.server).unwrap();
    })
    .unwrap();
    let mut waited = 0;
    while !up.datagrams.lock().unwrap().iter().any(|d| d.1 == "honest") {
        assert!(waited < 500, "the honest datagram never arrived");
        std::thread::sleep(Duration::from_millis(10));
        waited += 1;
    }
    assert_eq!(
        *up.datagrams.lock().unwrap(),
        vec![(b.sandbox_addr(), "honest".to_string())]
    );

    a.set_policy(EgressPolicy::DenyAll).unwrap();
    assert!(
        ask(&ga, up.server, Duration::from_secs(2)).is_err(),
        "revoked policy let through"
    );
    assert_eq!(up.seen.lock().unwrap().len(), 3);

    // The host tracked b's connection; destroying b leaves no entry for the /30's next holder.
    let tracked = conntrack::count(b.sandbox_addr()).unwrap();
    assert!(tracked > 0, "no conntrack entry of {}", b.sandbox_addr());
    assert!(leftovers_of(b.id())
        .iter()
        .any(|l| l.starts_with("conntrack ")));
    b.destroy().unwrap();
    assert_eq!(conntrack::count(b.sandbox_addr()).unwrap(), 0);
}

#[test]
fn a_failed_create_leaves_nothing_and_touches_nothing_of_others() {
    if !root_or_skip() {
        return;
    }
    let mut g = Guard::default();
    let id = id("fail");
    g.ids.push(id.clone());
    // A link with the name the host end of the veth would get makes that step fail.
    let names = kiln::net::config::Names::of(&id).unwrap();
    let blocker = tap::attach(&names.host_veth, false).unwrap();
    let e = Network::create(&id, &NetConfig::default()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&format!(
            "network of {id}: cannot create veth {}",
            names.host_veth
        )),
        "{msg}"
    );
    assert_eq!(e.errno(), Some(libc::EEXIST), "{msg}");
    assert!(!netns::exists(&names.netns));
    assert!(Network::find(&id).unwrap().is_none());
    assert_eq!(
        leftovers_of(&id),
        vec![format!("link {}", names.host_veth)],
        "only the blocker stays"
    );
    drop(blocker);

    // A namespace of the same name that is not ours is refused and left as it was.
    let other = g.net("taken", &NetConfig::default());
    let e = Network::create(other.id(), &NetConfig::default()).unwrap_err();
    assert!(matches!(e, NetError::Exists(_)), "{e}");
    assert_eq!(Network::find(other.id()).unwrap().as_ref(), Some(&other));
    assert_eq!(
        leftovers_of(other.id()).len(),
        4,
        "{:?}",
        leftovers_of(other.id())
    );
}

#[test]
fn without_cap_net_admin_it_says_so_in_one_line_and_makes_nothing() {
    if !root_or_skip() {
        return;
    }
    let mut g = Guard::default();
    g.ids.push(id("nocap"));
    let e = std::thread::spawn(|| {
        drop_net_admin();
        Network::create(&id("nocap"), &NetConfig::default()).unwrap_err()
    })
    .join()
    .unwrap();
    let msg = e.to_string();
    assert!(matches!(e, NetError::NeedsRoot), "{msg}");
    assert!(msg.contains("--net none") && !msg.contains('\n'), "{msg}");
}

/// Takes CAP_NET_ADMIN out of this thread's effective set (capabilities are per thread).
fn drop_net_admin() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data structs, as the ABI wants.
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()), 0);
        d[0].effective &= !(1 << 12);
        assert_eq!(libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()), 0);
    }
}

#[test]
fn concurrent_creates_get_distinct_addresses_and_reconcile_removes_the_unkept() {
    if !root_or_skip() {
        return;
    }
    let mut g = Guard::default();
    let ids: Vec<String> = (0..6).map(|i| id(&format!("many-{i}"))).collect();
    g.ids.extend(ids.iter().cloned());
    let nets: Vec<Network> = std::thread::scope(|s| {
        let hs: Vec<_> = ids
            .iter()
            .map(|id| s.spawn(move || Network::create(id, &NetConfig::default())))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    let mut addrs: Vec<Ipv4Addr> = nets.iter().map(|n| n.host_addr()).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), nets.len(), "{addrs:?}");

    // Reconcile keeps the ids it is told to and removes the others of this test.
    let mine = |id: &str| id.starts_with(&format!("t{}-many-", std::process::id()));
    let removed = kiln::net::destroy_unless(|id| !mine(id) || id.ends_with("-0"));
    let mut gone: Vec<&str> = removed.iter().map(|(id, _)| id.as_str()).collect();
    gone.sort();
    assert_eq!(
        gone,
        ids[1..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(removed.iter().all(|(_, r)| r.is_ok()), "{removed:?}");
    for id in &ids[1..] {
        assert_eq!(leftovers_of(id), Vec::<String>::new());
    }
    assert_eq!(Network::find(&ids[0]).unwrap().as_ref(), Some(&nets[0]));
}

#[test]
fn a_stale_lease_is_taken_again_and_a_full_pool_is_refused_cleanly() {
    if !root_or_skip() {
        return;
    }
    let mut g = Guard::default();
    // A pool of one /30 of its own, so no other sandbox on this host shares it.
    let one = kiln::net::Pool::parse(&format!("10.201.{}.0/30", std::process::id() % 250)).unwrap();
    let cfg = NetConfig {
        pool: Some(one),
        ..Default::default()
    };
    // A lease left by a create that crashed: its namespace is gone.
    let lease = format!("/run/kiln-net/leases/{}", one.slot(0));
    std::fs::create_dir_all("/run/kiln-net/leases").unwrap();
    std::fs::write(&lease, format!("{}\n", id("crashed"))).unwrap();
    g.ids.push(id("crashed"));
    let a = g.net("pool-a", &cfg);
    assert_eq!(a.host_addr(), Ipv4Addr::from(u32::from(one.slot(0)) + 1));
    assert_eq!(std::fs::read_to_string(&lease).unwrap().trim(), a.id());

    let b = id("pool-b");
    g.ids.push(b.clone());
    let e = Network::create(&b, &cfg).unwrap_err();
    assert!(matches!(e, NetError::PoolExhausted { .. }), "{e}");
    assert!(e.to_string().contains("KILN_NET_POOL"), "{e}");
    assert_eq!(leftovers_of(&b), Vec::<String>::new());
    // Nothing was made for b, and a's lease is still a's.
    assert_eq!(std::fs::read_to_string(&lease).unwrap().trim(), a.id());
}
