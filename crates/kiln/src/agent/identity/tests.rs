use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::thread;

use kiln_proto::identity::{decode_hex, valid_machine_id};
use kiln_proto::{read_frame, Frame, Hello, Kind, VERSION};

use super::*;

/// A one-connection fake of the VMM's vsock socket and the agent behind it: answers
/// the handshake and hello, returns the request it got and sends `reply`.
fn fake_agent(name: &str, reply: Reply) -> (AgentAddr, thread::JoinHandle<Reidentify>) {
    let dir = std::env::temp_dir().join(format!("kiln-reid-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let uds = dir.join("v.sock");
    let listener = UnixListener::bind(&uds).unwrap();
    let server = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "CONNECT 1024\n");
        w.write_all(b"OK 1\n").unwrap();
        let hello = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(hello.kind, Kind::Hello);
        let ours = Hello {
            version: VERSION,
            software: "fake".into(),
        };
        w.write_all(&Frame::json(Kind::Hello, 0, &ours).encode())
            .unwrap();
        let f = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(f.kind, Kind::Request);
        w.write_all(&Frame::json(Kind::Reply, f.id, &reply).encode())
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        match f.parse::<Request>().unwrap() {
            Request::Reidentify(r) => r,
            r => panic!("{r:?}"),
        }
    });
    (AgentAddr::new(uds, name), server)
}

fn done(hostname: &str) -> Reidentified {
    Reidentified {
        reseeded: true,
        clock_stepped: true,
        hostname: hostname.into(),
        machine_id_written: false,
        errors: vec![],
    }
}

#[test]
fn sends_fresh_entropy_time_and_machine_id_and_returns_the_reply() {
    let mut sent = Vec::new();
    for i in 0..2 {
        let name = format!("sb-{i}");
        let (addr, agent) = fake_agent(&name, Reply::Reidentified(done(&name)));
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(addr.reidentify(&name).unwrap(), done(&name));
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let req = agent.join().unwrap();
        assert_eq!(req.hostname, name);
        assert!(req.check().is_ok(), "{req:?}");
        assert!(valid_machine_id(&req.machine_id) && req.machine_id.as_bytes()[12] == b'4');
        let t = u128::from(req.unix_time_ns);
        assert!(before.as_nanos() <= t && t <= after.as_nanos());
        sent.push(req);
    }
    assert_ne!(sent[0].entropy, sent[1].entropy);
    assert_ne!(sent[0].machine_id, sent[1].machine_id);
    assert_eq!(decode_hex(&sent[0].entropy).unwrap().len(), ENTROPY_LEN);
}

#[test]
fn a_bad_hostname_fails_before_connecting_and_odd_replies_are_errors() {
    let addr = AgentAddr::new("/nonexistent/v.sock", "sb");
    for bad in ["", "a_b", &"x".repeat(65)] {
        assert!(
            matches!(addr.reidentify(bad), Err(Error::InvalidInput(_))),
            "{bad:?}"
        );
    }
    let (addr, agent) = fake_agent("odd", Reply::Done);
    assert!(matches!(addr.reidentify("odd"), Err(Error::Protocol(_))));
    agent.join().unwrap();
}
