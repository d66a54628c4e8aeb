//! `connect`: a connection becomes a raw TCP stream to a loopback port (no VM: the
//! server runs on the host and the "guest port" is a listener of this test).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::thread;

use common::*;
use kiln_agent::server::Waiter;
use kiln_proto::{ErrorKind, Exec, Reply, Request, ECONNREFUSED};

fn agent_for(name: &str) -> Agent {
    agent(Waiter::PerPid, name)
}

#[test]
fn bytes_pass_both_ways_and_a_half_close_leaves_the_other_way_open() {
    let a = agent_for("tunnel");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // The "guest server": reads everything up to EOF, then answers with its length and
    // a 1 MiB pattern, then closes.
    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        let reply: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        s.write_all(format!("{}\n", got.len()).as_bytes()).unwrap();
        s.write_all(&reply).unwrap();
        got
    });
    let mut c = a.connect();
    assert_eq!(c.call(1, &Request::Connect { port }), Reply::Connected);
    let sent: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    c.w.write_all(&sent).unwrap();
    // Half-close: the server sees EOF and still answers through the same connection.
    c.w.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.r.read_to_end(&mut back).unwrap();
    assert_eq!(server.join().unwrap(), sent);
    let header = format!("{}\n", sent.len());
    assert_eq!(&back[..header.len()], header.as_bytes());
    let pattern: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    assert!(back[header.len()..] == pattern[..], "reply differs");
}

#[test]
fn the_guest_side_closing_first_leaves_the_host_side_sending() {
    let a = agent_for("tunnel-back");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"hello").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let mut c = a.connect();
    assert_eq!(c.call(1, &Request::Connect { port }), Reply::Connected);
    let mut hello = Vec::new();
    c.r.read_to_end(&mut hello).unwrap();
    assert_eq!(hello, b"hello");
    c.w.write_all(b"still here").unwrap();
    c.w.shutdown(Shutdown::Write).unwrap();
    assert_eq!(server.join().unwrap(), b"still here");
}

#[test]
fn a_port_nothing_listens_on_is_refused_clearly() {
    let a = agent_for("tunnel-refused");
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = a.connect();
    let e = c.call_err(1, &Request::Connect { port });
    assert_eq!(e.kind, ErrorKind::Io);
    assert_eq!(e.errno, Some(ECONNREFUSED));
    assert_eq!(
        e.message,
        format!("connection refused: nothing listens on guest port {port}")
    );
    let e = c.call_err(2, &Request::Connect { port: 0 });
    assert_eq!(e.kind, ErrorKind::InvalidInput);
}

#[test]
fn connect_beside_a_live_operation_is_refused_and_the_connection_goes_on() {
    let a = agent_for("tunnel-busy");
    let mut c = a.connect();
    // A live exec waiting on stdin holds id 1.
    c.request(
        1,
        &Request::Exec(Exec {
            argv: vec!["cat".into()],
            stdin: true,
            ..Default::default()
        }),
    );
    assert!(matches!(c.reply(), (1, Reply::Started { .. })));
    let e = c.call_err(2, &Request::Connect { port: 80 });
    assert_eq!(e.kind, ErrorKind::Protocol);
    assert!(e.message.contains("only request"), "{}", e.message);
    assert!(matches!(c.call(3, &Request::Ping), Reply::Pong { .. }));
}
