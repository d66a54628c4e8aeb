//! The serial transport's demultiplexer on the host (no VM): a `UnixStream` pair
//! stands in for the virtio-console port, the test plays kiln's relay.

mod common;

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use common::*;
use kiln_agent::server::mux::{serve_channel, ChannelWriter};
use kiln_agent::server::Waiter;
use kiln_proto::{
    read_mux_frame, Decoder, Frame, Hello, Kind, MuxError, MuxFrame, MuxKind, Reply, Request,
    AGENT_PORT, VERSION,
};

/// The relay's end of a channel served on a thread; `join` gives its result.
struct Relay {
    r: BufReader<UnixStream>,
    w: UnixStream,
    server: std::thread::JoinHandle<Result<(), MuxError>>,
    _agent: Agent,
}

impl Relay {
    fn start(name: &str) -> Relay {
        let agent = agent(Waiter::PerPid, name);
        let (guest, host) = UnixStream::pair().unwrap();
        let ctx = agent.ctx.clone();
        let server = std::thread::spawn(move || {
            let writer = Arc::new(ChannelWriter::new(guest.try_clone().unwrap()));
            let mut reader = BufReader::new(guest);
            serve_channel(&mut reader, &writer, &ctx)
        });
        let mut relay = Relay {
            r: BufReader::new(host.try_clone().unwrap()),
            w: host,
            server,
            _agent: agent,
        };
        assert_eq!(relay.recv(), MuxFrame::listen(AGENT_PORT));
        relay
    }

    fn send(&mut self, f: &MuxFrame) {
        self.w.write_all(&f.encode()).unwrap();
    }

    fn recv(&mut self) -> MuxFrame {
        read_mux_frame(&mut self.r).unwrap().expect("a frame")
    }

    /// Sends hello + ping on `stream` and collects the agent's frames until the reply.
    fn ping(&mut self, stream: u32) -> Vec<Frame> {
        let mut out = Frame::json(
            Kind::Hello,
            0,
            &Hello {
                version: VERSION,
                software: "test".into(),
            },
        )
        .encode();
        out.extend(Frame::json(Kind::Request, 1, &Request::Ping).encode());
        self.send(&MuxFrame::data(stream, &out));
        let mut dec = Decoder::new();
        let mut frames = Vec::new();
        while frames.len() < 2 {
            let f = self.recv();
            assert_eq!((f.stream, f.kind), (stream, MuxKind::Data), "{f:?}");
            dec.push(&f.payload);
            while let Some(fr) = dec.next_frame().unwrap() {
                frames.push(fr);
            }
        }
        frames
    }
}

#[test]
fn streams_are_agent_connections_and_end_cleanly() {
    let mut relay = Relay::start("mux-streams");
    relay.send(&MuxFrame::open(1, AGENT_PORT));
    assert_eq!(relay.recv(), MuxFrame::accept(1));
    relay.send(&MuxFrame::open(2, AGENT_PORT));
    assert_eq!(relay.recv(), MuxFrame::accept(2));
    for id in [2, 1] {
        let frames = relay.ping(id);
        assert_eq!(frames[0].kind, Kind::Hello);
        assert!(matches!(
            frames[1].parse::<Reply>().unwrap(),
            Reply::Pong { .. }
        ));
    }
    // Host EOF: the connection ends, and the guest says so.
    relay.send(&MuxFrame::eof(1));
    assert_eq!(relay.recv(), MuxFrame::eof(1));
    // Host reset: nothing more on that stream; the channel still serves.
    relay.send(&MuxFrame::reset(2));
    relay.send(&MuxFrame::open(3, AGENT_PORT));
    assert_eq!(relay.recv(), MuxFrame::accept(3));
    // The host goes away: a clean end.
    relay.w.shutdown(std::net::Shutdown::Both).unwrap();
    assert!(relay.server.join().unwrap().is_ok());
}

#[test]
fn other_ports_and_live_ids_are_refused() {
    let mut relay = Relay::start("mux-refuse");
    relay.send(&MuxFrame::open(5, 99));
    assert_eq!(relay.recv(), MuxFrame::reset(5));
    relay.send(&MuxFrame::open(6, AGENT_PORT));
    assert_eq!(relay.recv(), MuxFrame::accept(6));
    relay.send(&MuxFrame::open(6, AGENT_PORT));
    assert_eq!(relay.recv(), MuxFrame::reset(6));
    // Data for a stream nobody opened is dropped.
    relay.send(&MuxFrame::data(77, b"stray"));
    relay.send(&MuxFrame::open(7, AGENT_PORT));
    assert_eq!(relay.recv(), MuxFrame::accept(7));
}

#[test]
fn a_malformed_frame_ends_the_session_with_an_error() {
    let mut relay = Relay::start("mux-garbage");
    relay.send(&MuxFrame::open(1, AGENT_PORT));
    assert_eq!(relay.recv(), MuxFrame::accept(1));
    // A data frame announcing 4 GiB.
    relay
        .w
        .write_all(&[1, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff])
        .unwrap();
    let e = relay.server.join().unwrap().unwrap_err();
    assert!(matches!(e, MuxError::BadLength { .. }), "{e}");
}
