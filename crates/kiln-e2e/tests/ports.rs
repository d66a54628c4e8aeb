//! Port forwarding into real guests: `kiln port-forward` over the agent's vsock (a
//! sandbox with no NIC at all) and published ports (`kiln create -p`, `kiln port`;
//! dialled from the sandbox's namespace when it has a network, else over the agent),
//! with a busybox `nc` server in the guest. Nothing is left behind: no publisher
//! process, no listener, no sandbox of a create that failed on a busy port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Stdio};

use kiln_e2e::cli::{kill9, processes_under, Kiln};
use kiln_e2e::{require_kvm, sha256_hex, wait_until, TempDir, TIMEOUT};

/// Removes the sandboxes and stops the processes a test made, also when it fails.
struct World {
    state: TempDir,
    ids: Vec<String>,
    children: Vec<Child>,
}

impl World {
    fn new(name: &str) -> World {
        World {
            state: TempDir::new(name),
            ids: Vec::new(),
            children: Vec::new(),
        }
    }

    fn kiln(&self) -> Kiln<'_> {
        Kiln {
            state: &self.state.0,
        }
    }

    /// `kiln create --image minimal --id ID ARGS...`, which must succeed.
    fn create(&mut self, id: &str, args: &[&str]) {
        let mut a = vec!["create", "--image", "minimal", "--id", id];
        a.extend_from_slice(args);
        self.ids.push(id.to_string());
        self.kiln().ok(&a);
    }

    /// Starts an echo server (`cat` per connection) on guest port `port`.
    fn serve_echo(&self, id: &str, port: u16) {
        let script = format!("setsid nc -ll -p {port} -e cat </dev/null >/dev/null 2>&1 &");
        self.kiln().ok(&["exec", id, "--", "sh", "-c", &script]);
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for id in &self.ids {
            let _ = self.kiln().cmd(&["rm", id]).output();
        }
    }
}

/// Sends `data`, half-closes, and reads the reply to its end.
fn exchange(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    let mut w = s.try_clone()?;
    let data = data.to_vec();
    // Written on its own thread: the echo comes back while we still send.
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        w.write_all(&data)?;
        w.shutdown(Shutdown::Write)
    });
    let mut back = Vec::new();
    s.read_to_end(&mut back)?;
    writer.join().expect("writer thread")?;
    Ok(back)
}

/// The echo server may take a moment to listen: retries until "ping" comes back.
fn wait_for_echo(addr: SocketAddr) {
    let up = wait_until(TIMEOUT, || {
        exchange(addr, b"ping\n").is_ok_and(|b| b == b"ping\n")
    });
    assert!(up, "no echo from {addr}");
}

/// A pattern of `n` bytes that no off-by-some shift reproduces.
fn payload(n: usize) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

fn port_free(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
}

/// `kiln port ID` as `(addr, guest port)` pairs.
fn listed_ports(k: &Kiln, id: &str) -> Vec<(SocketAddr, u16)> {
    k.ok(&["port", id])
        .lines()
        .map(|l| {
            let (host, guest) = l.split_once(" -> ").expect("HOST -> GUEST/tcp");
            let guest = guest.strip_suffix("/tcp").expect("/tcp").parse().unwrap();
            (host.parse().expect("a host address"), guest)
        })
        .collect()
}

fn publisher_pid(state: &TempDir, id: &str) -> u32 {
    let rec = std::fs::read(state.0.join(id).join("publisher.json")).expect("publisher.json");
    let v: serde_json::Value = serde_json::from_slice(&rec).unwrap();
    v["pid"].as_u64().expect("pid") as u32
}

fn publishers(state: &TempDir) -> Vec<(u32, String)> {
    processes_under(&state.0)
        .into_iter()
        .filter(|(_, l)| l.contains("kiln-publish"))
        .collect()
}

#[test]
fn port_forward_carries_requests_byte_for_byte_and_says_when_nothing_listens() {
    if !require_kvm("ports_forward") {
        return;
    }
    let mut w = World::new("ports-forward");
    // No NIC at all: the forward goes over the agent's vsock.
    w.create("pf", &["--net", "none"]);
    w.serve_echo("pf", 8080);
    let mut child = w
        .kiln()
        .cmd(&["port-forward", "pf", "127.0.0.1:0:8080", "0:8089"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln port-forward");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let err = child.stderr.take().unwrap();
    w.children.push(child);
    let mut addrs = Vec::new();
    for guest in [8080, 8089] {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let rest = line
            .strip_prefix("forwarding ")
            .unwrap_or_else(|| panic!("{line:?}"));
        let (host, g) = rest.trim_end().split_once(" -> guest port ").expect(&line);
        assert_eq!(g, guest.to_string());
        let addr: SocketAddr = host.parse().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{line}");
        addrs.push(addr);
    }
    wait_for_echo(addrs[0]);
    assert_eq!(exchange(addrs[0], b"hello\n").unwrap(), b"hello\n");
    // 1 MiB there and back, byte for byte (the reply keeps coming after our half-close).
    let big = payload(1 << 20);
    let back = exchange(addrs[0], &big).unwrap();
    assert_eq!(back.len(), big.len());
    assert_eq!(sha256_hex(&back), sha256_hex(&big));
    // Guest port 8089 has no server: the connection ends without a byte, and
    // port-forward says why.
    assert_eq!(exchange(addrs[1], b"anyone?").unwrap_or_default(), b"");
    let mut err = BufReader::new(err);
    let mut said = String::new();
    err.read_line(&mut said).unwrap();
    assert!(
        said.contains("connection refused: nothing listens on guest port 8089"),
        "{said}"
    );
    // SIGTERM ends it and frees its ports.
    let child = w.children.last_mut().unwrap();
    // SAFETY: kill has no memory effects; the pid is our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    assert!(wait_until(TIMEOUT, || addrs.iter().all(|a| port_free(*a))));
}

#[test]
fn published_ports_are_listed_serve_the_guest_and_a_busy_port_fails_the_create_cleanly() {
    if !require_kvm("ports_publish") {
        return;
    }
    let mut w = World::new("ports-publish");
    w.create("pub", &["-p", "127.0.0.1:0:8080"]);
    let k = w.kiln();
    let listed = listed_ports(&k, "pub");
    assert_eq!(listed.len(), 1, "{listed:?}");
    let (addr, guest) = listed[0];
    assert_eq!(guest, 8080);
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let info = k.inspect("pub").unwrap();
    assert_eq!(info["ports"][0], format!("{addr}:8080/tcp"), "{info}");
    w.serve_echo("pub", 8080);
    wait_for_echo(addr);
    let big = payload(1 << 20);
    assert_eq!(sha256_hex(&exchange(addr, &big).unwrap()), sha256_hex(&big));

    // The same host port again: the create fails with the message, leaving nothing.
    let spec = format!("{addr}:8080");
    let out = k
        .cmd(&["create", "--image", "minimal", "--id", "busy", "-p", &spec])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{addr} is in use: choose another host port")),
        "{stderr}"
    );
    assert!(k.inspect("busy").is_none(), "the failed create left a row");
    assert!(
        !w.state.0.join("busy").exists(),
        "the failed create left its folder"
    );
    let procs = processes_under(&w.state.0);
    assert!(
        procs.iter().all(|(_, l)| !l.contains("/busy/")),
        "the failed create left a process: {procs:?}"
    );
    // The first sandbox still serves.
    assert_eq!(exchange(addr, b"still\n").unwrap(), b"still\n");

    // A publisher killed by accident is restarted by reconcile on the same port.
    kill9(publisher_pid(&w.state, "pub"));
    k.ok(&["ls"]);
    assert_eq!(listed_ports(&k, "pub"), listed);
    wait_for_echo(addr);

    // rm: no publisher left, the port is free again.
    k.ok(&["rm", "pub"]);
    w.ids.clear();
    assert_eq!(publishers(&w.state), Vec::new());
    assert!(port_free(addr), "{addr} is still bound after rm");
}

#[test]
fn the_publisher_exits_when_the_vmm_is_killed() {
    if !require_kvm("ports_vmm_killed") {
        return;
    }
    let mut w = World::new("ports-kill");
    // Without a NIC the publisher dials over the agent (with one, as root, from the
    // sandbox's namespace: the other tests).
    w.create(
        "pk",
        &["--net", "none", "-p", "0:8080", "-p", "127.0.0.1:0:9090"],
    );
    let k = w.kiln();
    let listed = listed_ports(&k, "pk");
    assert_eq!(listed.iter().map(|p| p.1).collect::<Vec<_>>(), [8080, 9090]);
    let publisher = publisher_pid(&w.state, "pk");
    let vmm = k.inspect("pk").unwrap()["pid"].as_u64().unwrap() as u32;
    kill9(vmm);
    assert!(
        wait_until(TIMEOUT, || !kiln::process::is_running(publisher)),
        "the publisher outlived its VMM"
    );
    // Its sockets close as its last thread exits, a moment after it stops counting as
    // running.
    assert!(
        wait_until(TIMEOUT, || listed.iter().all(|(a, _)| port_free(*a))),
        "the ports are still bound after the publisher exited"
    );
    // Reconcile does not start a publisher for the failed sandbox.
    k.ok(&["ls"]);
    assert_eq!(publishers(&w.state), Vec::new());
    k.ok(&["rm", "pk"]);
    w.ids.clear();
    assert_eq!(processes_under(&w.state.0), Vec::new());
}

#[test]
fn bad_specs_are_refused_before_anything_is_made() {
    if !require_kvm("ports_bad_specs") {
        return;
    }
    let w = World::new("ports-bad");
    let k = w.kiln();
    for (spec, says) in [
        ("8080:53/udp", "udp is not supported: only tcp is forwarded"),
        ("8080", "a host port and a guest port are needed"),
        ("localhost:1:2", "is not an IP address"),
    ] {
        let out = k
            .cmd(&["create", "--image", "minimal", "--id", "bad", "-p", spec])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(says),
            "{spec}: {stderr}"
        );
    }
    assert!(k.inspect("bad").is_none());
    assert!(!w.state.0.join("bad").exists());
    let out = k
        .cmd(&["port-forward", "nope", "8080:80"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[test]
fn the_api_publishes_shows_and_refuses_ports_with_stable_codes() {
    if !require_kvm("ports_api") {
        return;
    }
    let served = kiln_e2e::serve::Served::start("ports-api");
    let c = served.server.client();
    let k = Kiln {
        state: &served.state.0,
    };
    let req = |id: &str, ports: &[&str]| kiln_server::api::CreateSandbox {
        id: Some(id.into()),
        image: Some("minimal".into()),
        ports: ports.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    };
    let sb = c.create(&req("api-pub", &["127.0.0.1:0:8080"])).unwrap();
    assert_eq!(sb.ports.len(), 1, "{sb:?}");
    let spec: kiln::ports::PortSpec = sb.ports[0].parse().unwrap();
    assert_eq!(spec.guest_port, 8080);
    assert_eq!(c.get("api-pub").unwrap().ports, sb.ports);
    k.ok(&[
        "exec",
        "api-pub",
        "--",
        "sh",
        "-c",
        "setsid nc -ll -p 8080 -e cat </dev/null >/dev/null 2>&1 &",
    ]);
    wait_for_echo(spec.host_addr());
    // `kiln --remote URL port ID` prints what the server shows.
    let url = served.server.url();
    let remote = k.ok(&["--remote", &url, "port", "api-pub"]);
    assert_eq!(remote.trim(), format!("{} -> 8080/tcp", spec.host_addr()));

    let busy = c
        .create(&req("api-busy", &[&format!("{}:8080", spec.host_addr())]))
        .unwrap_err();
    assert_eq!(
        (busy.status(), busy.code()),
        (Some(409), Some("port_in_use"))
    );
    let kiln_server::client::ClientError::Api { extra, .. } = &busy else {
        panic!("{busy}")
    };
    assert_eq!(extra["addr"], spec.host_addr().to_string());
    assert_eq!(c.get("api-busy").unwrap_err().status(), Some(404));
    let bad = c.create(&req("api-bad", &["8080:53/udp"])).unwrap_err();
    assert_eq!(
        (bad.status(), bad.code()),
        (Some(400), Some("invalid_input"))
    );

    c.remove("api-pub").unwrap();
    assert_eq!(publishers(&served.state), Vec::new());
    assert!(port_free(spec.host_addr()));
}
