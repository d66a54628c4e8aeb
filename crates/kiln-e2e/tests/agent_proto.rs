//! The agent against a hostile host-side peer: garbage frames get error replies and the
//! agent keeps serving.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use kiln_e2e::sandbox;
use kiln_proto::{read_frame, Frame, Hello, Kind, Reply, Request, AGENT_PORT, VERSION};

fn connect(sb: &kiln::Sandbox) -> (BufReader<UnixStream>, UnixStream) {
    let s = UnixStream::connect(&sb.agent().uds).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut w = s.try_clone().unwrap();
    w.write_all(format!("CONNECT {AGENT_PORT}\n").as_bytes())
        .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("OK "), "{line:?}");
    (r, w)
}

fn hello(w: &mut UnixStream, r: &mut BufReader<UnixStream>) {
    let h = Hello {
        version: VERSION,
        software: "e2e".into(),
    };
    w.write_all(&Frame::json(Kind::Hello, 0, &h).encode())
        .unwrap();
    let f = read_frame(r).unwrap().unwrap();
    assert_eq!(f.kind, Kind::Hello);
}

fn error_reply(r: &mut BufReader<UnixStream>) -> (u32, kiln_proto::ErrorReply) {
    let f = read_frame(r).unwrap().expect("a reply");
    match f.parse::<Reply>() {
        Ok(Reply::Error(e)) => (f.id, e),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[test]
fn garbage_frames_get_errors_and_the_agent_keeps_serving() {
    let Some(sb) = sandbox("garbage_frames", "minimal") else {
        return;
    };
    let (mut r, mut w) = connect(&sb);
    hello(&mut w, &mut r);

    // Unknown kind, bad JSON, unknown request: each an error with its id; same connection.
    let mut f = Frame::new(Kind::Request, 5, b"{}".to_vec()).encode();
    f[4] = 200;
    w.write_all(&f).unwrap();
    let (id, e) = error_reply(&mut r);
    assert_eq!((id, e.kind), (5, kiln_proto::ErrorKind::Protocol));
    w.write_all(&Frame::new(Kind::Request, 6, b"{not json".to_vec()).encode())
        .unwrap();
    assert_eq!(error_reply(&mut r).0, 6);
    w.write_all(&Frame::new(Kind::Request, 7, br#"{"op":"format_disk"}"#.to_vec()).encode())
        .unwrap();
    assert_eq!(error_reply(&mut r).0, 7);
    // Still serving on this connection.
    w.write_all(&Frame::json(Kind::Request, 8, &Request::Ping).encode())
        .unwrap();
    let f = read_frame(&mut r).unwrap().unwrap();
    assert!(matches!(f.parse::<Reply>(), Ok(Reply::Pong { .. })) && f.id == 8);

    // An oversized header: an error on id 0, then the agent closes this connection.
    w.write_all(&[0xff, 0xff, 0xff, 0x7f, 2, 0, 0, 0, 9, 0, 0, 0])
        .unwrap();
    let (id, e) = error_reply(&mut r);
    assert_eq!((id, e.kind), (0, kiln_proto::ErrorKind::Protocol));
    assert!(read_frame(&mut r).map(|f| f.is_none()).unwrap_or(true));

    // A wrong protocol version is refused.
    let (mut r2, mut w2) = connect(&sb);
    let h = Hello {
        version: VERSION + 1,
        software: "future".into(),
    };
    w2.write_all(&Frame::json(Kind::Hello, 0, &h).encode())
        .unwrap();
    assert_eq!(error_reply(&mut r2).1.kind, kiln_proto::ErrorKind::Protocol);

    // Raw noise without a handshake.
    let (_r3, mut w3) = connect(&sb);
    w3.write_all(&[0x42; 4096]).unwrap();
    drop(w3);

    // And the agent is fine.
    assert!(sb.ping().is_ok());
    assert_eq!(kiln_e2e::sh(&sb, "echo ok").stdout_str(), "ok\n");
}
