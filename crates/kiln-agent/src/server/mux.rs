//! The guest end of a multiplexed channel ([`kiln_proto::mux`]): many agent
//! connections over one byte stream (the virtio-console port, see `serial`).
//!
//! For each `Open` to [`kiln_proto::AGENT_PORT`] the demultiplexer makes a
//! `UnixStream::pair()`, hands one end to [`spawn_connection`] exactly as an accepted
//! vsock connection, and pumps the other end: a thread per stream reads what the
//! connection writes and sends it as `Data` frames (`Eof` at its end); the
//! demultiplexer writes incoming `Data` into the stream and turns `Eof` into a
//! half-close. Writes to the channel go through one mutex, a frame at a time.
//!
//! Head-of-line blocking: the demultiplexer writes each `Data` frame into its stream
//! before it reads the next frame, so a connection that stops reading its input (an
//! exec whose command does not read stdin, once the socket buffer is full) stalls
//! input to every other stream until it reads again or ends. Output (guest → host)
//! is not affected: each stream has its own pump thread. kiln's host library reads
//! and writes each operation's streams concurrently, so this never deadlocks; it only
//! delays.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use kiln_proto::{read_mux_frame, write_mux_frame, MuxError, MuxFrame, MuxKind, AGENT_PORT};

use super::sys::lock;
use super::{spawn_connection, Context};

/// Stack of a pump thread (it only copies bytes).
const PUMP_STACK: usize = 64 << 10;

/// The channel's write half, shared by every stream: one frame per lock.
pub struct ChannelWriter(Mutex<Box<dyn Write + Send>>);

impl ChannelWriter {
    pub fn new(w: impl Write + Send + 'static) -> ChannelWriter {
        ChannelWriter(Mutex::new(Box::new(w)))
    }

    pub fn send(&self, f: &MuxFrame) -> io::Result<()> {
        let mut w = lock(&self.0);
        write_mux_frame(&mut *w, f)?;
        w.flush()
    }
}

/// A live stream: our end of the pair, and which side has finished sending.
struct Stream {
    sock: Arc<UnixStream>,
    host_eof: bool,
    guest_eof: bool,
}

type Streams = Arc<Mutex<HashMap<u32, Stream>>>;

/// Serves one session of the channel until it ends: announces the agent port, then
/// demultiplexes. Returns `Ok` on a clean end (the host went away), `Err` on an I/O
/// error or a malformed frame. Either way every stream of the session is reset.
pub fn serve_channel(
    reader: &mut dyn Read,
    writer: &Arc<ChannelWriter>,
    ctx: &Arc<Context>,
) -> Result<(), MuxError> {
    let streams: Streams = Arc::default();
    let result = writer
        .send(&MuxFrame::listen(AGENT_PORT))
        .map_err(MuxError::from)
        .and_then(|()| demux(reader, writer, ctx, &streams));
    for (_, s) in lock(&streams).drain() {
        let _ = s.sock.shutdown(Shutdown::Both);
    }
    result
}

fn demux(
    reader: &mut dyn Read,
    writer: &Arc<ChannelWriter>,
    ctx: &Arc<Context>,
    streams: &Streams,
) -> Result<(), MuxError> {
    while let Some(f) = read_mux_frame(reader)? {
        let id = f.stream;
        match f.kind {
            MuxKind::Open => open(id, f.port(), writer, ctx, streams)?,
            MuxKind::Data => {
                let sock = lock(streams).get(&id).map(|s| s.sock.clone());
                // Data after a reset crosses it on the wire: dropped.
                if let Some(sock) = sock {
                    if (&*sock).write_all(&f.payload).is_err() {
                        // The connection is gone: tell the host.
                        drop_stream(streams, id);
                        writer.send(&MuxFrame::reset(id))?;
                    }
                }
            }
            MuxKind::Eof => {
                let mut map = lock(streams);
                if let Some(s) = map.get_mut(&id) {
                    let _ = s.sock.shutdown(Shutdown::Write);
                    s.host_eof = true;
                    if s.guest_eof {
                        map.remove(&id);
                    }
                }
            }
            MuxKind::Reset => drop_stream(streams, id),
            // Only the guest sends these; a host that does is ignored.
            MuxKind::Listen | MuxKind::Accept => {}
        }
    }
    Ok(())
}

/// Shuts a stream down both ways and forgets it.
fn drop_stream(streams: &Streams, id: u32) {
    if let Some(s) = lock(streams).remove(&id) {
        let _ = s.sock.shutdown(Shutdown::Both);
    }
}

/// Accepts an `Open` for the agent port (a connection, as vsock's accept), or refuses.
fn open(
    id: u32,
    port: Option<u32>,
    writer: &Arc<ChannelWriter>,
    ctx: &Arc<Context>,
    streams: &Streams,
) -> io::Result<()> {
    if port != Some(AGENT_PORT) || lock(streams).contains_key(&id) {
        return writer.send(&MuxFrame::reset(id));
    }
    let Ok((theirs, ours)) = UnixStream::pair() else {
        return writer.send(&MuxFrame::reset(id));
    };
    let ours = Arc::new(ours);
    lock(streams).insert(
        id,
        Stream {
            sock: ours.clone(),
            host_eof: false,
            guest_eof: false,
        },
    );
    let (w, s) = (writer.clone(), streams.clone());
    let pump = std::thread::Builder::new()
        .name("mux-pump".into())
        .stack_size(PUMP_STACK)
        .spawn(move || pump(id, &ours, &w, &s));
    if pump.is_err() {
        // No thread (a fork bomb exhausts pids): refuse, as a full accept queue would.
        drop_stream(streams, id);
        return writer.send(&MuxFrame::reset(id));
    }
    // Before the connection exists: nothing can be sent on the stream before `Accept`.
    writer.send(&MuxFrame::accept(id))?;
    spawn_connection(theirs, ctx.clone());
    Ok(())
}

/// Copies what the connection writes to the channel until it ends.
fn pump(id: u32, sock: &Arc<UnixStream>, writer: &ChannelWriter, streams: &Streams) {
    let mut buf = vec![0u8; kiln_proto::MUX_MAX_PAYLOAD];
    loop {
        match (&**sock).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if writer.send(&MuxFrame::data(id, &buf[..n])).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                if take_if_same(streams, id, sock).is_some() {
                    let _ = writer.send(&MuxFrame::reset(id));
                }
                return;
            }
        }
    }
    // The connection finished sending; if the stream was reset meanwhile, say nothing.
    let live = {
        let mut map = lock(streams);
        match map.get_mut(&id) {
            Some(s) if Arc::ptr_eq(&s.sock, sock) => {
                s.guest_eof = true;
                if s.host_eof {
                    map.remove(&id);
                }
                true
            }
            _ => false,
        }
    };
    if live {
        let _ = writer.send(&MuxFrame::eof(id));
    }
}

/// Removes stream `id` if it is still `sock` (not a newer stream with the same id).
fn take_if_same(streams: &Streams, id: u32, sock: &Arc<UnixStream>) -> Option<Stream> {
    let mut map = lock(streams);
    match map.get(&id) {
        Some(s) if Arc::ptr_eq(&s.sock, sock) => map.remove(&id),
        _ => None,
    }
}
