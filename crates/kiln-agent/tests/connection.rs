//! The server's connection handling on the host (no VM): handshake, request ids,
//! garbage, and what a closed connection does. Connections are `UnixStream` pairs;
//! exit statuses are collected per pid (the non-PID-1 waiter).

mod common;

use std::time::{Duration, Instant};

use common::*;
use kiln_agent::server::Waiter;
use kiln_proto::{Control, ErrorKind, Frame, Kind, Reply, Request, VERSION};

fn agent_for(name: &str) -> Agent {
    agent(Waiter::PerPid, name)
}

#[test]
fn hello_answers_with_the_agent_version_and_a_mismatch_is_refused() {
    let a = agent_for("hello");
    let mut c = a.connect_raw();
    let h = c.hello(VERSION);
    assert_eq!(h.version, VERSION);
    assert!(h.software.starts_with("kiln-agent "), "{h:?}");

    let mut c = a.connect_raw();
    c.raw(
        &Frame::json(
            Kind::Hello,
            0,
            &kiln_proto::Hello {
                version: VERSION + 1,
                software: "future".into(),
            },
        )
        .encode(),
    );
    let (id, e) = c.error_reply();
    assert_eq!((id, e.kind), (0, ErrorKind::Protocol));
    assert!(e.message.contains("version"), "{e:?}");
    assert!(c.recv_or_end().is_none(), "the connection closes");

    // Anything but hello first: refused and closed.
    let mut c = a.connect_raw();
    c.request(1, &Request::Ping);
    let (id, e) = c.error_reply();
    assert_eq!((id, e.kind), (0, ErrorKind::Protocol));
    assert!(c.recv_or_end().is_none());
}

#[test]
fn garbage_frames_get_errors_and_serving_goes_on() {
    let a = agent_for("garbage");
    let mut c = a.connect();

    // Unknown kind: an error with its id, same connection.
    let mut f = Frame::new(Kind::Request, 5, b"{}".to_vec()).encode();
    f[4] = 200;
    c.raw(&f);
    let (id, e) = c.error_reply();
    assert_eq!((id, e.kind), (5, ErrorKind::Protocol));
    // Bad JSON, an unknown op, a request on id 0.
    c.send(Kind::Request, 0, 6, b"{not json");
    assert_eq!(c.error_reply().0, 6);
    c.send(Kind::Request, 0, 7, br#"{"op":"format_disk"}"#);
    let (id, e) = c.error_reply();
    assert_eq!((id, e.kind), (7, ErrorKind::Protocol));
    c.request(0, &Request::Ping);
    assert_eq!(c.error_reply().0, 0);
    // Data and control for ids nobody uses.
    c.send(Kind::DataIn, 0, 9, b"stray");
    let (id, e) = c.error_reply();
    assert_eq!((id, e.kind), (9, ErrorKind::Protocol));
    c.raw(&Frame::json(Kind::Control, 10, &Control::Signal { signal: 9 }).encode());
    assert_eq!(c.error_reply().0, 10);
    // Frames only the agent sends; a second hello.
    c.send(Kind::Stdout, 0, 11, b"x");
    assert_eq!(c.error_reply().0, 11);
    c.raw(
        &Frame::json(
            Kind::Hello,
            0,
            &kiln_proto::Hello {
                version: VERSION,
                software: String::new(),
            },
        )
        .encode(),
    );
    assert_eq!(c.error_reply().0, 0);
    // Still serving.
    assert!(matches!(c.call(8, &Request::Ping), Reply::Pong { agent_ns } if agent_ns > 0));

    // Reserved header bits: error on id 0, then the connection closes.
    let mut f = Frame::new(Kind::Request, 12, b"{}".to_vec()).encode();
    f[6] = 1;
    c.raw(&f);
    let (id, e) = c.error_reply();
    assert_eq!((id, e.kind), (0, ErrorKind::Protocol));
    assert!(c.recv_or_end().is_none());

    // An oversized header: the same, and a new connection works.
    let mut c = a.connect();
    c.raw(&[0xff, 0xff, 0xff, 0x7f, 2, 0, 0, 0, 9, 0, 0, 0]);
    let (id, e) = c.error_reply();
    assert_eq!((id, e.kind), (0, ErrorKind::Protocol));
    assert!(c.recv_or_end().is_none());

    // Raw noise without a handshake, then a connection closed mid-frame.
    let mut c = a.connect_raw();
    c.raw(&[0x42; 4096]);
    let mut c = a.connect();
    c.raw(&[10, 0, 0, 0, 2, 0]);
    drop(c);

    let mut c = a.connect();
    assert!(matches!(c.call(1, &Request::Ping), Reply::Pong { .. }));
    let r = c.exec(2, sh("echo ok"), None);
    assert_eq!(r.stdout_str(), "ok\n");
}

#[test]
fn a_live_id_cannot_be_reused_but_a_finished_one_can() {
    let a = agent_for("ids");
    let mut c = a.connect();
    c.request(1, &Request::Exec(sh("sleep 0.3; echo done")));
    c.request(1, &Request::Ping);
    let mut res = ExecResult::default();
    let mut refused = false;
    loop {
        let f = c.recv();
        assert_eq!(f.id, 1);
        match f.parse::<Reply>() {
            Ok(Reply::Error(e)) if !refused && e.kind == ErrorKind::Protocol => {
                assert!(e.message.contains("in use"), "{e:?}");
                refused = true;
            }
            Ok(Reply::Exited { code, .. }) => {
                assert_eq!(code, Some(0));
                break;
            }
            _ => {}
        }
        let _ = &mut res;
    }
    assert!(refused);
    assert!(matches!(c.call(1, &Request::Ping), Reply::Pong { .. }));
}

#[test]
fn closing_the_connection_kills_its_execs() {
    let a = agent_for("close");
    let mut c = a.connect();
    c.request(
        1,
        &Request::Exec(sh("trap '' TERM HUP; sleep 100 & sleep 100")),
    );
    let pid = match c.reply() {
        (1, Reply::Started { pid }) => pid,
        r => panic!("{r:?}"),
    };
    assert!(group_alive(pid));
    drop(c);
    let t = Instant::now();
    while group_alive(pid) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "exec survived its connection"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The agent serves on.
    let mut c = a.connect();
    assert!(matches!(c.call(1, &Request::Ping), Reply::Pong { .. }));
}

#[test]
fn closing_the_connection_is_noticed_while_stdin_is_backed_up() {
    // The command never reads, so the agent stops reading the socket (flow
    // control); the close must still be noticed and the command killed.
    let a = agent_for("close-backed-up");
    let mut c = a.connect();
    let mut e = argv(&["sleep", "100"]);
    e.stdin = true;
    c.request(1, &Request::Exec(e));
    let pid = match c.reply() {
        (1, Reply::Started { pid }) => pid,
        r => panic!("{r:?}"),
    };
    // Whole frames from another thread, until the agent stops taking them.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (mut w, sent) = (c.w.try_clone().unwrap(), sent.clone());
        std::thread::spawn(move || {
            let chunk = vec![0u8; 64 << 10];
            while kiln_proto::write_frame(&mut w, Kind::DataIn, 0, 1, &chunk).is_ok() {
                sent.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let load = || sent.load(std::sync::atomic::Ordering::Relaxed);
    let mut last = usize::MAX;
    while load() != last {
        last = load();
        assert!(last < 64 << 20, "the agent never pushed back");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Close: shutdown wakes our blocked writer; the agent sees the hang-up.
    c.w.shutdown(std::net::Shutdown::Both).unwrap();
    writer.join().unwrap();
    drop(c);
    let t = Instant::now();
    while group_alive(pid) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "exec survived its connection"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
