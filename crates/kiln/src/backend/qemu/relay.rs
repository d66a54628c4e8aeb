//! The host end of the multiplexed agent channel ([`kiln_proto::mux`]): turns the one
//! byte stream of QEMU's `kiln.agent` port (a chardev unix socket that takes a single
//! client) back into connections that speak Firecracker's hybrid-vsock handshake on
//! `<sandbox>/v.sock`, so [`crate::agent::AgentAddr`] works unchanged.
//!
//! Per client: read `CONNECT <port>\n` (bounded), refuse at once (close) if the guest
//! does not listen on that port, else `Open` a new stream and wait for `Accept`
//! (→ `OK <stream>\n`) or `Reset` (→ close). Then a thread copies the client's bytes
//! to `Data` frames (`Eof` when it half-closes); the demultiplexer (the thread that
//! called [`Relay::serve`]) writes the guest's `Data` to the client and turns `Eof`
//! into a half-close. Frames go out whole under one mutex.
//!
//! The guest is not trusted: every frame is bounds-checked by the codec; a malformed
//! one ends the relay (the channel cannot be resynchronised). Frames for streams we
//! do not know are dropped. Like the guest side, the demultiplexer writes each frame
//! into its client before reading the next: a client that stops reading stalls the
//! others (head-of-line blocking; kiln's clients always read).

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kiln_proto::{read_mux_frame, write_mux_frame, MuxError, MuxFrame, MuxKind, MUX_MAX_PAYLOAD};

/// Longest handshake line we read (`CONNECT 4294967295\n` is 19 bytes).
const MAX_LINE: usize = 32;
/// How long a client may take to send its handshake line.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the guest may take to accept a stream.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// One client stream.
struct Stream {
    client: Arc<UnixStream>,
    /// Until the guest answers: where the answer goes.
    pending: Option<Sender<bool>>,
    host_eof: bool,
    guest_eof: bool,
}

/// The relay between one channel and its clients.
pub struct Relay {
    channel: Mutex<UnixStream>,
    streams: Mutex<HashMap<u32, Stream>>,
    /// Ports the guest listens on (its `Listen` frames).
    ports: Mutex<HashSet<u32>>,
    next: AtomicU32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Relay {
    /// A relay writing to `channel` (a clone of the stream [`Relay::serve`] reads).
    pub fn new(channel: UnixStream) -> Arc<Relay> {
        Arc::new(Relay {
            channel: Mutex::new(channel),
            streams: Mutex::default(),
            ports: Mutex::default(),
            next: AtomicU32::new(1),
        })
    }

    fn send(&self, f: &MuxFrame) -> io::Result<()> {
        write_mux_frame(&mut *lock(&self.channel), f)
    }

    /// Sends `f` from another thread: the demultiplexer must never wait for the
    /// channel's write lock. A pump may hold it while QEMU's socket is full, which
    /// drains only once the guest reads, which may need the demultiplexer to deliver
    /// the guest's output first: waiting here could close that cycle.
    fn send_detached(self: &Arc<Self>, f: MuxFrame) {
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("relay-reset".into())
            .spawn(move || me.send(&f));
        if let Err(e) = spawned {
            eprintln!("kiln-relay: no thread to send a reset: {e}");
        }
    }

    /// Accepts clients on `listener` forever, a thread each.
    pub fn accept_loop(self: &Arc<Self>, listener: UnixListener) {
        for client in listener.incoming() {
            let Ok(client) = client else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let me = self.clone();
            if let Err(e) = std::thread::Builder::new()
                .name("relay-client".into())
                .spawn(move || me.serve_client(client))
            {
                eprintln!("kiln-relay: no thread for a client: {e}");
            }
        }
    }

    /// Demultiplexes `channel` until it ends (the VM is gone): `Ok` at a clean end,
    /// `Err` on an I/O error or a malformed frame. Every client is closed on return.
    pub fn serve(self: &Arc<Self>, channel: &mut dyn Read) -> Result<(), MuxError> {
        let result = self.demux(channel);
        for (_, s) in lock(&self.streams).drain() {
            let _ = s.client.shutdown(Shutdown::Both);
        }
        result
    }

    fn demux(self: &Arc<Self>, channel: &mut dyn Read) -> Result<(), MuxError> {
        while let Some(f) = read_mux_frame(channel)? {
            let id = f.stream;
            match f.kind {
                MuxKind::Listen => {
                    // A (re)started guest session: earlier streams are gone.
                    for (_, s) in lock(&self.streams).drain() {
                        let _ = s.client.shutdown(Shutdown::Both);
                    }
                    lock(&self.ports).extend(f.port());
                }
                MuxKind::Accept | MuxKind::Reset => self.answer(id, f.kind == MuxKind::Accept),
                MuxKind::Data => self.to_client(id, &f.payload),
                MuxKind::Eof => {
                    let mut map = lock(&self.streams);
                    if let Some(s) = map.get_mut(&id).filter(|s| s.pending.is_none()) {
                        let _ = s.client.shutdown(Shutdown::Write);
                        s.guest_eof = true;
                        if s.host_eof {
                            map.remove(&id);
                        }
                    }
                }
                // The guest cannot open streams to the host.
                MuxKind::Open => self.send_detached(MuxFrame::reset(id)),
            }
        }
        Ok(())
    }

    /// The guest's answer to an `Open`, or a reset of a live stream.
    fn answer(&self, id: u32, accepted: bool) {
        let mut map = lock(&self.streams);
        let Some(s) = map.get_mut(&id) else { return };
        if let Some(tx) = s.pending.take() {
            let _ = tx.send(accepted);
            if accepted {
                return;
            }
        } else if accepted {
            return; // a second Accept: ignored
        }
        if let Some(s) = map.remove(&id) {
            let _ = s.client.shutdown(Shutdown::Both);
        }
    }

    fn to_client(self: &Arc<Self>, id: u32, data: &[u8]) {
        let client = lock(&self.streams)
            .get(&id)
            .filter(|s| s.pending.is_none() && !s.guest_eof)
            .map(|s| s.client.clone());
        let Some(client) = client else { return };
        if (&*client).write_all(data).is_err() && self.forget(id, &client) {
            self.send_detached(MuxFrame::reset(id));
        }
    }

    /// Removes stream `id` if it still is `client`; whether it was.
    fn forget(&self, id: u32, client: &Arc<UnixStream>) -> bool {
        let mut map = lock(&self.streams);
        let same = map.get(&id).is_some_and(|s| Arc::ptr_eq(&s.client, client));
        if same {
            map.remove(&id);
            let _ = client.shutdown(Shutdown::Both);
        }
        same
    }

    /// A new stream id: never 0, never a live one.
    fn new_id(&self, map: &HashMap<u32, Stream>) -> u32 {
        loop {
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            if id != 0 && !map.contains_key(&id) {
                return id;
            }
        }
    }

    /// One client: handshake, then its bytes to the guest until it ends.
    fn serve_client(&self, client: UnixStream) {
        let Some(port) = read_connect(&client) else {
            return;
        };
        if !lock(&self.ports).contains(&port) {
            return; // nothing listens: refused, as vsock would
        }
        let client = Arc::new(client);
        let (tx, rx) = channel();
        let id = {
            let mut map = lock(&self.streams);
            let id = self.new_id(&map);
            map.insert(
                id,
                Stream {
                    client: client.clone(),
                    pending: Some(tx),
                    host_eof: false,
                    guest_eof: false,
                },
            );
            id
        };
        let accepted = self.send(&MuxFrame::open(id, port)).is_ok()
            && rx.recv_timeout(ACCEPT_TIMEOUT).unwrap_or(false);
        if !accepted {
            if self.forget(id, &client) {
                let _ = self.send(&MuxFrame::reset(id));
            }
            return;
        }
        if (&*client)
            .write_all(format!("OK {id}\n").as_bytes())
            .is_err()
            || client.set_read_timeout(None).is_err()
        {
            if self.forget(id, &client) {
                let _ = self.send(&MuxFrame::reset(id));
            }
            return;
        }
        self.pump(id, &client);
    }

    /// Copies the client's bytes to the guest until the client half-closes or fails.
    fn pump(&self, id: u32, client: &Arc<UnixStream>) {
        let mut buf = vec![0u8; MUX_MAX_PAYLOAD];
        loop {
            match (&**client).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if self.send(&MuxFrame::data(id, &buf[..n])).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    if self.forget(id, client) {
                        let _ = self.send(&MuxFrame::reset(id));
                    }
                    return;
                }
            }
        }
        let live = {
            let mut map = lock(&self.streams);
            match map.get_mut(&id) {
                Some(s) if Arc::ptr_eq(&s.client, client) => {
                    s.host_eof = true;
                    if s.guest_eof {
                        map.remove(&id);
                    }
                    true
                }
                _ => false,
            }
        };
        if live {
            let _ = self.send(&MuxFrame::eof(id));
        }
    }
}

/// Reads `CONNECT <port>\n` a byte at a time (nothing after it is consumed); `None`
/// for anything else, a line over [`MAX_LINE`] or a client that is too slow.
fn read_connect(client: &UnixStream) -> Option<u32> {
    client.set_read_timeout(Some(LINE_TIMEOUT)).ok()?;
    let mut line = Vec::with_capacity(MAX_LINE);
    let mut byte = [0u8; 1];
    while line.len() < MAX_LINE {
        match (&*client).read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => return parse_connect(&line),
            Ok(1) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => return None,
        }
    }
    None
}

/// The port of a `CONNECT <port>` line (without its newline).
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let rest = line.strip_prefix(b"CONNECT ")?;
    if rest.is_empty() || !rest.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(rest).ok()?.parse().ok()
}

#[cfg(test)]
mod tests;
