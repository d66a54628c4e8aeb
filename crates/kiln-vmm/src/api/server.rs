//! Serving the API socket: at most [`Limits::max_connections`] connections at a time,
//! each on its own thread, each with read deadlines.
//!
//! Firecracker serves one connection at a time; kiln's own client opens one connection
//! per request, but other clients may hold a keep-alive connection while they open
//! another, so a small bound (16) is kept. When every slot is taken and a connection
//! arrives, the oldest connection that is *not* handling a request is closed to make
//! room: first the longest-idle keep-alive connection, else the one that has been
//! sending its request longest. The newcomer waits (for that connection's thread to
//! end) and is then served. Neither refusing the newcomer nor leaving it in the listen
//! backlog would do: a client that opens connections and never sends anything would
//! then hold every slot until the idle timeout, again and again, and a well-behaved
//! client would never be served. With eviction it is served at once, however many idle
//! connections come and go. Only connections whose request is being handled are never
//! closed (the VMM lock serialises those; each ends when its call does). Closing an
//! idle keep-alive connection just as its client reuses it loses that request, as with
//! any HTTP server's idle close: the client sees the connection closed without a reply.
//!
//! Timeouts: a connection waiting for a request is closed after
//! [`Limits::idle_timeout`] (10 s), and a request whose first byte has arrived must be
//! complete (head and body) within [`Limits::request_timeout`] (5 s), else it gets a
//! 408 and the connection is closed. Replies that the client does not read time out
//! after the request timeout too.

use std::io::{self, BufRead, BufReader, Read};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::http::{read_request, write_response, ReadError, Response};
use super::routes;
use crate::vmm::Vmm;

/// How many connections, and for how long each may say nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once (one thread each).
    pub max_connections: usize,
    /// How long a connection may wait between requests.
    pub idle_timeout: Duration,
    /// How long a started request may take to arrive (and a reply to be taken).
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 16,
            idle_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// What a connection is doing; only `Handling` protects it from eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request.
    Idle,
    /// A request has started arriving.
    Reading,
    /// A complete request is being handled or answered.
    Handling,
}

struct Slot {
    id: u64,
    /// A second handle on the connection's socket, to shut it down when evicted.
    stream: UnixStream,
    phase: Phase,
    since: Instant,
    evicted: bool,
}

#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    next_id: u64,
}

/// The connection to close for room: the longest idle, else the one that has been
/// reading its request longest; never one handling a request or already closed.
fn victim(slots: &mut [Slot]) -> Option<&mut Slot> {
    slots
        .iter_mut()
        .filter(|s| s.phase != Phase::Handling && !s.evicted)
        .min_by_key(|s| (s.phase != Phase::Idle, s.since))
}

/// The live connections, shared by the accept loop and the connection threads.
#[derive(Default)]
struct Conns {
    table: Mutex<Table>,
    /// Signalled whenever a slot is freed.
    freed: Condvar,
}

impl Conns {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for `stream`, closing the oldest evictable connection and waiting
    /// for its thread to end while the table is full.
    fn admit(&self, stream: UnixStream, max: usize) -> u64 {
        let mut t = self.lock();
        while t.slots.len() >= max {
            // One eviction at a time; one whose request slipped in before the shutdown
            // (now handling it) may take long, so it does not hold up the next.
            let pending = t
                .slots
                .iter()
                .any(|s| s.evicted && s.phase != Phase::Handling);
            if !pending {
                if let Some(v) = victim(&mut t.slots) {
                    v.evicted = true;
                    // Its thread's next read returns end-of-file and it ends.
                    let _ = v.stream.shutdown(Shutdown::Both);
                    tracing::debug!(conn = v.id, "api: closing a connection to make room");
                }
            }
            // Bounded wait: a phase change may make a connection evictable.
            t = self
                .freed
                .wait_timeout(t, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let id = t.next_id;
        t.next_id += 1;
        t.slots.push(Slot {
            id,
            stream,
            phase: Phase::Idle,
            since: Instant::now(),
            evicted: false,
        });
        id
    }

    fn set_phase(&self, id: u64, phase: Phase) {
        if let Some(s) = self.lock().slots.iter_mut().find(|s| s.id == id) {
            s.phase = phase;
            s.since = Instant::now();
        }
    }

    fn release(&self, id: u64) {
        self.lock().slots.retain(|s| s.id != id);
        self.freed.notify_all();
    }
}

/// Frees a connection's slot when its thread ends, however it ends.
struct SlotGuard<'a> {
    conns: &'a Conns,
    id: u64,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.conns.release(self.id);
    }
}

/// Reads from the socket, failing with `TimedOut` once `deadline` has passed (without a
/// deadline, the socket's own read timeout applies).
struct DeadlineReader<'a> {
    stream: &'a UnixStream,
    deadline: Option<Instant>,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(d) = self.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        self.stream.read(buf)
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Serves requests on one connection until it closes, breaks, idles out or is evicted.
fn connection(stream: &UnixStream, id: u64, conns: &Conns, vmm: &Mutex<Vmm>, limits: Limits) {
    if stream
        .set_write_timeout(Some(limits.request_timeout))
        .is_err()
    {
        return;
    }
    let mut reader = BufReader::new(DeadlineReader {
        stream,
        deadline: None,
    });
    loop {
        reader.get_mut().deadline = None;
        if stream.set_read_timeout(Some(limits.idle_timeout)).is_err() {
            return;
        }
        // Idle until a request starts (or the client, the timeout or an eviction ends it).
        match reader.fill_buf() {
            Ok([]) | Err(_) => return,
            Ok(_) => {}
        }
        conns.set_phase(id, Phase::Reading);
        reader.get_mut().deadline = Some(Instant::now() + limits.request_timeout);
        let req = match read_request(&mut reader) {
            Ok(req) => req,
            Err(ReadError::Bad(msg)) => {
                let _ = write_response(&mut &*stream, &Response::fault(400, msg), false);
                return;
            }
            Err(ReadError::Io(e)) if timed_out(&e) => {
                let msg = format!(
                    "the request did not arrive within {:?}; send it whole",
                    limits.request_timeout
                );
                let _ = write_response(&mut &*stream, &Response::fault(408, msg), false);
                return;
            }
            Err(ReadError::Closed) | Err(ReadError::Io(_)) => return,
        };
        conns.set_phase(id, Phase::Handling);
        let resp = routes::handle(vmm, &req);
        if write_response(&mut &*stream, &resp, req.keep_alive).is_err() || !req.keep_alive {
            return;
        }
        conns.set_phase(id, Phase::Idle);
    }
}

/// Accepts connections forever within `limits` (see the module docs).
pub fn serve(listener: UnixListener, vmm: Arc<Mutex<Vmm>>, limits: Limits) {
    let conns = Arc::new(Conns::default());
    let max = limits.max_connections.max(1);
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // Out of fds or memory: back off rather than spin.
                tracing::warn!("api: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let Ok(handle) = stream.try_clone() else {
            continue; // no fd for the slot's handle: drop the connection
        };
        let id = conns.admit(handle, max);
        let (c, vmm) = (conns.clone(), vmm.clone());
        let spawned = std::thread::Builder::new()
            .name("api-conn".into())
            .spawn(move || {
                let _slot = SlotGuard { conns: &c, id };
                connection(&stream, id, &c, &vmm, limits);
            });
        if let Err(e) = spawned {
            tracing::error!("api: cannot start a connection thread: {e}");
            conns.release(id);
        }
    }
}

#[cfg(test)]
mod tests;
