use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use kiln_proto::{read_mux_frame, MuxError, MuxFrame, MuxKind};

use super::{parse_connect, Relay};

/// A relay on a temp socket, with the test playing the guest on the channel.
struct Setup {
    sock: PathBuf,
    guest: UnixStream,
    guest_r: UnixStream,
    relay: std::sync::Arc<Relay>,
    serve: Option<std::thread::JoinHandle<Result<(), MuxError>>>,
}

impl Setup {
    fn new(name: &str) -> Setup {
        let dir = std::env::temp_dir().join(format!("kiln-relay-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("v.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let (host, guest) = UnixStream::pair().unwrap();
        let relay = Relay::new(host.try_clone().unwrap());
        let r2 = relay.clone();
        std::thread::spawn(move || r2.accept_loop(listener));
        let watched = relay.clone();
        let serve = std::thread::spawn(move || {
            let mut host = host;
            let out = relay.serve(&mut host);
            drop(relay);
            out
        });
        Setup {
            sock,
            guest_r: guest.try_clone().unwrap(),
            guest,
            relay: watched,
            serve: Some(serve),
        }
    }

    /// The guest listens on `port`; returns once the relay has taken that in (a client
    /// that connects earlier is refused, as with vsock).
    fn listen(&mut self, port: u32) {
        self.send_to_host(&MuxFrame::listen(port));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !super::lock(&self.relay.ports).contains(&port) {
            assert!(std::time::Instant::now() < deadline, "Listen not taken in");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn join(&mut self) -> Result<(), MuxError> {
        self.serve.take().unwrap().join().unwrap()
    }

    fn recv_from_host(&mut self) -> MuxFrame {
        read_mux_frame(&mut self.guest_r).unwrap().expect("a frame")
    }

    fn send_to_host(&mut self, f: &MuxFrame) {
        self.guest.write_all(&f.encode()).unwrap();
    }

    /// Connects and sends the handshake line; the reader sees the answer.
    fn connect(&self, line: &str) -> (BufReader<UnixStream>, UnixStream) {
        let c = UnixStream::connect(&self.sock).unwrap();
        (&c).write_all(line.as_bytes()).unwrap();
        (BufReader::new(c.try_clone().unwrap()), c)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.sock.parent().unwrap());
    }
}

/// The next line, or "" once the relay closed (a close with our bytes unread is a
/// reset).
fn line(r: &mut BufReader<UnixStream>) -> String {
    let mut l = String::new();
    match r.read_line(&mut l) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => String::new(),
        other => {
            other.unwrap();
            l
        }
    }
}

#[test]
fn handshake_lines_are_parsed_strictly() {
    assert_eq!(parse_connect(b"CONNECT 1024"), Some(1024));
    assert_eq!(parse_connect(b"CONNECT 4294967295"), Some(u32::MAX));
    for bad in [
        &b"CONNECT 4294967296"[..],
        b"CONNECT ",
        b"CONNECT -1",
        b"CONNECT 1 2",
        b"connect 1",
        b"",
    ] {
        assert_eq!(
            parse_connect(bad),
            None,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn a_stream_is_opened_relayed_and_half_closed_both_ways() {
    let mut s = Setup::new("stream");
    // Before the guest listens, connections are refused at once.
    let (mut r, _c) = s.connect("CONNECT 1024\n");
    assert_eq!(line(&mut r), "");
    s.listen(1024);
    // A port the guest does not listen on is refused too.
    let (mut r, _c) = s.connect("CONNECT 5\n");
    assert_eq!(line(&mut r), "");

    let (mut r, c) = s.connect("CONNECT 1024\n");
    let open = s.recv_from_host();
    assert_eq!((open.kind, open.port()), (MuxKind::Open, Some(1024)));
    let id = open.stream;
    s.send_to_host(&MuxFrame::accept(id));
    assert_eq!(line(&mut r), format!("OK {id}\n"));

    (&c).write_all(b"hello").unwrap();
    assert_eq!(s.recv_from_host(), MuxFrame::data(id, b"hello"));
    s.send_to_host(&MuxFrame::data(id, b"world"));
    let mut got = [0u8; 5];
    r.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"world");

    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(s.recv_from_host(), MuxFrame::eof(id));
    s.send_to_host(&MuxFrame::eof(id));
    assert_eq!(line(&mut r), "", "the guest's EOF reaches the client");
}

#[test]
fn a_refused_open_closes_the_client_and_bad_lines_are_dropped() {
    let mut s = Setup::new("refused");
    s.listen(1024);
    let (mut r, _c) = s.connect("CONNECT 1024\n");
    let id = s.recv_from_host().stream;
    s.send_to_host(&MuxFrame::reset(id));
    assert_eq!(line(&mut r), "");
    let (mut r, _c) = s.connect("HELLO THERE\n");
    assert_eq!(line(&mut r), "");
    let (mut r, _c) = s.connect(&format!("CONNECT {}\n", "9".repeat(100)));
    assert_eq!(line(&mut r), "");
    // Frames for unknown streams are dropped; the relay still serves.
    s.send_to_host(&MuxFrame::data(999, b"stray"));
    s.send_to_host(&MuxFrame::eof(998));
    let (mut r, _c) = s.connect("CONNECT 1024\n");
    let id = s.recv_from_host().stream;
    s.send_to_host(&MuxFrame::accept(id));
    assert_eq!(line(&mut r), format!("OK {id}\n"));
}

#[test]
fn a_malformed_frame_ends_the_relay_and_closes_clients() {
    let mut s = Setup::new("malformed");
    s.listen(1024);
    let (mut r, _c) = s.connect("CONNECT 1024\n");
    let id = s.recv_from_host().stream;
    s.send_to_host(&MuxFrame::accept(id));
    assert_eq!(line(&mut r), format!("OK {id}\n"));
    // Data announcing 16 MiB.
    s.guest.write_all(&[1, 0, 0, 0, 4, 0, 0, 0, 1]).unwrap();
    let e = s.join().unwrap_err();
    assert!(matches!(e, MuxError::BadLength { .. }), "{e}");
    assert_eq!(line(&mut r), "");
}

#[test]
fn the_relay_ends_when_the_channel_closes() {
    let mut s = Setup::new("closes");
    s.guest.shutdown(std::net::Shutdown::Both).unwrap();
    assert!(s.join().is_ok());
}
