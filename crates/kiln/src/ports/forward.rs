//! The forwarder: host listeners whose connections are spliced to guest ports.
//!
//! Every listener is bound before anything is served, so a forwarder starts whole or not
//! at all (a busy port is an error naming it). Each accepted connection gets a thread
//! that dials the guest ([`Dial`]) and splices the two; at most [`MAX_CONNECTIONS`] at
//! once per forwarder (past that a new connection is closed at once).

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::dial::Dial;
use super::error::PortError;
use super::spec::PortSpec;
use super::splice::splice;

/// Connections served at once by one forwarder.
pub const MAX_CONNECTIONS: usize = 512;

/// Where a failed connection is reported (a line for the user or the log).
pub type OnError = Arc<dyn Fn(String) + Send + Sync>;

pub struct Forwarder {
    listeners: Vec<(TcpListener, PortSpec)>,
    dial: Arc<Dial>,
    live: Arc<AtomicUsize>,
}

impl Forwarder {
    /// Binds every spec's host address (host port 0: any free port). If one cannot be
    /// bound, none stays bound.
    pub fn bind(specs: &[PortSpec], dial: Dial) -> Result<Forwarder, PortError> {
        let mut listeners = Vec::with_capacity(specs.len());
        for spec in specs {
            let addr = spec.host_addr();
            let l = TcpListener::bind(addr).map_err(|cause| {
                if cause.kind() == std::io::ErrorKind::AddrInUse {
                    PortError::InUse { addr }
                } else {
                    PortError::Bind { addr, cause }
                }
            })?;
            let bound = l
                .local_addr()
                .map_err(|cause| PortError::Bind { addr, cause })?;
            listeners.push((l, PortSpec::new(bound.ip(), bound.port(), spec.guest_port)));
        }
        Ok(Forwarder {
            listeners,
            dial: Arc::new(dial),
            live: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The specs as bound: host port 0 replaced by the port the kernel chose.
    pub fn bound(&self) -> Vec<PortSpec> {
        self.listeners.iter().map(|(_, s)| *s).collect()
    }

    /// Serves every listener until the process ends (one accept thread each).
    pub fn serve(self, on_error: OnError) {
        let mut threads = Vec::new();
        for (l, spec) in self.listeners {
            let (dial, live, report) = (self.dial.clone(), self.live.clone(), on_error.clone());
            let t = std::thread::Builder::new()
                .name(format!("accept-{}", spec.host_port))
                .spawn(move || accept_loop(l, spec, dial, live, report));
            match t {
                Ok(t) => threads.push(t),
                Err(e) => on_error(format!("cannot start a thread for {spec}: {e}")),
            }
        }
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    l: TcpListener,
    spec: PortSpec,
    dial: Arc<Dial>,
    live: Arc<AtomicUsize>,
    on_error: OnError,
) {
    loop {
        let client = match l.accept() {
            Ok((c, _)) => c,
            Err(e) => {
                // EMFILE and the like: wait a little and go on.
                if e.kind() != std::io::ErrorKind::Interrupted {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                continue;
            }
        };
        if live.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            live.fetch_sub(1, Ordering::SeqCst);
            on_error(format!(
                "{}: over {MAX_CONNECTIONS} connections at once; closed a new one",
                spec.host_addr()
            ));
            continue;
        }
        let (dial, live2, on_error2) = (dial.clone(), live.clone(), on_error.clone());
        let spawned = std::thread::Builder::new()
            .name("forward".into())
            .stack_size(256 << 10)
            .spawn(move || {
                serve_one(client, spec, &dial, &on_error2);
                live2.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            live.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn serve_one(client: TcpStream, spec: PortSpec, dial: &Dial, on_error: &OnError) {
    let _ = client.set_nodelay(true);
    match dial.connect(spec.guest_port) {
        Ok(d) => {
            if let Err(e) = splice(Box::new(client), d.stream, &d.pending) {
                on_error(format!("{}: {e}", spec.host_addr()));
            }
        }
        // Dropping the client closes it: it sees the connection end.
        Err(e) => on_error(format!(
            "{} -> guest port {}: {e}",
            spec.host_addr(),
            spec.guest_port
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, Shutdown};
    use std::sync::Mutex;

    fn lo(port: u16) -> PortSpec {
        PortSpec::new(Ipv4Addr::LOCALHOST.into(), port, 1)
    }

    /// Dialling "into" this process's own namespace exercises the Netns path (a thread
    /// that setns()es, then connects) without a sandbox; setns needs CAP_SYS_ADMIN.
    fn own_netns() -> Dial {
        Dial::Netns {
            netns: "/proc/self/ns/net".into(),
            guest: Ipv4Addr::LOCALHOST,
        }
    }

    #[test]
    fn a_busy_port_fails_the_whole_bind_and_names_the_address() {
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = busy.local_addr().unwrap();
        let specs = [lo(0), lo(addr.port())];
        match Forwarder::bind(&specs, own_netns()) {
            Err(e @ PortError::InUse { .. }) => {
                assert_eq!(
                    e.to_string(),
                    format!("{addr} is in use: choose another host port")
                )
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("bound a busy port"),
        }
        let f = Forwarder::bind(&[lo(0), lo(0)], own_netns()).unwrap();
        let bound = f.bound();
        assert!(bound.iter().all(|s| s.host_port != 0) && bound[0] != bound[1]);
    }

    #[test]
    fn connections_are_dialled_from_the_namespace_and_spliced() {
        // SAFETY: geteuid has no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: setns needs root");
            return;
        }
        // The "guest": an upper-casing server that answers after the client's EOF.
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let guest_port = server.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in server.incoming() {
                let mut s = s.unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).unwrap();
                s.write_all(&got.to_ascii_uppercase()).unwrap();
            }
        });
        let refused = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let specs = [
            PortSpec::new(Ipv4Addr::LOCALHOST.into(), 0, guest_port),
            PortSpec::new(Ipv4Addr::LOCALHOST.into(), 0, refused),
        ];
        let f = Forwarder::bind(&specs, own_netns()).unwrap();
        let bound = f.bound();
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = errors.clone();
        std::thread::spawn(move || f.serve(Arc::new(move |m| seen.lock().unwrap().push(m))));
        let mut c = TcpStream::connect(bound[0].host_addr()).unwrap();
        c.write_all(b"hello over the namespace").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"HELLO OVER THE NAMESPACE");
        // Nothing listens: the client's connection ends empty and the error says why.
        let mut c = TcpStream::connect(bound[1].host_addr()).unwrap();
        let mut back = Vec::new();
        let _ = c.read_to_end(&mut back);
        assert!(back.is_empty());
        let errors = errors.lock().unwrap();
        assert!(
            errors.iter().any(|e| e.contains(&format!(
                "connection refused: nothing listens on guest port {refused}"
            ))),
            "{errors:?}"
        );
    }
}
