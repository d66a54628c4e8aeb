//! Every open connection, counted in all and per peer, and who goes when the server is
//! full: the oldest connection that has made no authenticated request, preferring one
//! that is idle (nothing in flight, no request bytes waiting); if every connection has
//! authenticated, none is closed and the newcomer is refused.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// Who is at the other end: the uid (SO_PEERCRED) on the unix socket, the IP on TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    Uid(u32),
    Ip(IpAddr),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Uid(u) => write!(f, "uid {u}"),
            Peer::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// What a connection's task, its requests and the registry share about it.
pub struct ConnState {
    born: Instant,
    authenticated: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds after `born` (+1; 0 = none) of the first byte of a request whose
    /// headers are not complete yet.
    head_since: AtomicU64,
    /// Milliseconds after `born` at which the last request ended (or the connection
    /// was accepted).
    idle_since: AtomicU64,
    /// Wakes the connection's watchdog: a request started or ended, bytes came.
    pub(super) changed: Notify,
    /// Tells the connection's task to close it (evicted).
    pub(super) close: Notify,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            born: Instant::now(),
            authenticated: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            head_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            changed: Notify::new(),
            close: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    pub fn authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    /// A request on this connection passed the bearer-token check.
    pub fn mark_authenticated(&self) {
        self.authenticated.store(true, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Bytes arrived: with no request in flight, they begin a request's headers.
    pub(super) fn bytes_read(&self) {
        if self.in_flight() == 0 && self.head_since.load(Ordering::Relaxed) == 0 {
            self.head_since.store(self.now_ms() + 1, Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// A request's headers are complete; it is in flight until [`Self::request_ended`].
    pub(super) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Relaxed);
        self.changed.notify_one();
    }

    pub(super) fn request_ended(&self) {
        self.idle_since.store(self.now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.changed.notify_one();
    }

    /// When the connection is to be closed if nothing changes: the header timeout from
    /// the first byte of a request, the idle timeout from the end of the last one;
    /// never while a request is in flight.
    pub(super) fn deadline(
        &self,
        header: std::time::Duration,
        idle: std::time::Duration,
    ) -> Option<Instant> {
        if self.in_flight() > 0 {
            return None;
        }
        let ms = std::time::Duration::from_millis;
        Some(match self.head_since.load(Ordering::Relaxed) {
            0 => self.born + ms(self.idle_since.load(Ordering::Relaxed)) + idle,
            t => self.born + ms(t - 1) + header,
        })
    }

    /// Whether the connection is doing nothing: no request in flight or begun.
    fn idle(&self) -> bool {
        self.in_flight() == 0 && self.head_since.load(Ordering::Relaxed) == 0
    }
}

/// Put in every request's extensions, so the auth check can mark its connection.
#[derive(Clone)]
pub struct ConnMark(pub(super) Arc<ConnState>);

impl ConnMark {
    pub fn authenticated(&self) {
        self.0.mark_authenticated();
    }
}

struct Entry {
    peer: Peer,
    fd: RawFd,
    state: Arc<ConnState>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    /// By id, which is the order of arrival.
    conns: BTreeMap<u64, Entry>,
    per_peer: HashMap<Peer, usize>,
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.conns.remove(&id)?;
        if let Some(n) = self.per_peer.get_mut(&e.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&e.peer);
            }
        }
        Some(e)
    }

    /// The connection to close to make room (among `peer`'s, or all): the oldest
    /// unauthenticated idle one, else the oldest unauthenticated one.
    fn victim(&self, peer: Option<Peer>) -> Option<u64> {
        let candidates = || {
            self.conns
                .iter()
                .filter(move |(_, e)| peer.is_none_or(|p| e.peer == p))
                .filter(|(_, e)| !e.state.authenticated())
        };
        candidates()
            .find(|(_, e)| e.state.idle() && pending_bytes(e.fd) == 0)
            .or_else(|| candidates().next())
            .map(|(id, _)| *id)
    }

    fn evict(&mut self, peer: Option<Peer>) -> bool {
        let Some(id) = self.victim(peer) else {
            return false;
        };
        if let Some(e) = self.remove(id) {
            tracing::debug!(
                "closing an unauthenticated connection of {} to make room",
                e.peer
            );
            e.state.close.notify_one();
        }
        true
    }
}

/// Bytes waiting in the socket's receive queue (a request sent, not read yet).
fn pending_bytes(fd: RawFd) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `n`; on a stale descriptor it fails harmlessly.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } != 0 {
        return 0;
    }
    n
}

/// Why a connection was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// `limit` connections in all, every one authenticated.
    Total { limit: usize },
    /// `limit` connections of this peer, every one authenticated.
    Peer { peer: Peer, limit: usize },
}

impl Refused {
    pub fn message(&self) -> String {
        match self {
            Refused::Total { limit } => format!(
                "the server holds {limit} connections, its limit (KILN_SERVE_MAX_CONNS), all of them authenticated; retry later or close some"
            ),
            Refused::Peer { peer, limit } => format!(
                "{peer} holds {limit} connections, the per-peer limit (KILN_SERVE_MAX_CONNS_PER_PEER), all of them authenticated; retry later or close some"
            ),
        }
    }
}

/// The open connections.
pub struct Registry {
    inner: Mutex<Inner>,
    max_total: usize,
    max_per_peer: usize,
}

/// A connection's place in the registry, given up when dropped.
pub struct Slot {
    registry: Arc<Registry>,
    id: u64,
    pub state: Arc<ConnState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.lock().remove(self.id);
    }
}

impl Registry {
    pub fn new(max_total: usize, max_per_peer: usize) -> Arc<Registry> {
        Arc::new(Registry {
            inner: Mutex::new(Inner::default()),
            max_total: max_total.max(1),
            max_per_peer: max_per_peer.max(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets a new connection of `peer` (socket `fd`) in, closing another to make room
    /// if a cap is reached; refuses it when none may be closed.
    pub fn admit(self: &Arc<Self>, peer: Peer, fd: RawFd) -> Result<Slot, Refused> {
        let mut inner = self.lock();
        if inner.per_peer.get(&peer).copied().unwrap_or(0) >= self.max_per_peer
            && !inner.evict(Some(peer))
        {
            return Err(Refused::Peer {
                peer,
                limit: self.max_per_peer,
            });
        }
        if inner.conns.len() >= self.max_total && !inner.evict(None) {
            return Err(Refused::Total {
                limit: self.max_total,
            });
        }
        let id = inner.next;
        inner.next += 1;
        let state = Arc::new(ConnState::new());
        inner.conns.insert(
            id,
            Entry {
                peer,
                fd,
                state: state.clone(),
            },
        );
        *inner.per_peer.entry(peer).or_default() += 1;
        Ok(Slot {
            registry: self.clone(),
            id,
            state,
        })
    }

    /// Open connections (in all).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().conns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_FD: RawFd = -1;

    #[test]
    fn the_oldest_unauthenticated_goes_first_and_authenticated_ones_stay() {
        let r = Registry::new(3, 3);
        let me = Peer::Uid(1000);
        let a = r.admit(me, NO_FD).unwrap();
        let b = r.admit(me, NO_FD).unwrap();
        let c = r.admit(me, NO_FD).unwrap();
        a.state.mark_authenticated();
        let _d = r.admit(me, NO_FD).unwrap();
        assert_eq!(r.len(), 3);
        // b (the oldest unauthenticated) was told to close; a and c were not.
        assert!(futures_now(b.state.close.notified()));
        assert!(!futures_now(a.state.close.notified()));
        assert!(!futures_now(c.state.close.notified()));
        drop(b); // its task ends: nothing more is removed
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn a_busy_connection_is_spared_while_an_idle_one_can_go() {
        let r = Registry::new(2, 2);
        let me = Peer::Uid(0);
        let busy = r.admit(me, NO_FD).unwrap();
        busy.state.request_started();
        let idle = r.admit(me, NO_FD).unwrap();
        let _new = r.admit(me, NO_FD).unwrap();
        assert!(futures_now(idle.state.close.notified()));
        assert!(!futures_now(busy.state.close.notified()));
    }

    #[test]
    fn full_of_authenticated_connections_refuses_per_peer_and_in_all() {
        let r = Registry::new(3, 2);
        let (u, v) = (Peer::Uid(1), Peer::Ip("127.0.0.2".parse().unwrap()));
        let held: Vec<Slot> = [u, u, v]
            .into_iter()
            .map(|p| {
                let s = r.admit(p, NO_FD).unwrap();
                s.state.mark_authenticated();
                s
            })
            .collect();
        let e = r.admit(u, NO_FD).err().unwrap();
        assert_eq!(e, Refused::Peer { peer: u, limit: 2 });
        assert!(
            e.message().contains("uid 1 holds 2 connections"),
            "{}",
            e.message()
        );
        let e = r.admit(Peer::Uid(7), NO_FD).err().unwrap();
        assert_eq!(e, Refused::Total { limit: 3 });
        drop(held);
        assert_eq!(r.len(), 0);
        assert!(r.admit(u, NO_FD).is_ok());
    }

    #[test]
    fn deadlines_run_from_the_first_header_byte_or_the_last_request() {
        let s = ConnState::new();
        let (h, i) = (
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(60),
        );
        assert_eq!(s.deadline(h, i), Some(s.born + i));
        s.bytes_read();
        let d = s.deadline(h, i).unwrap();
        assert!(d < s.born + i && d >= s.born + h);
        s.request_started();
        assert_eq!(
            s.deadline(h, i),
            None,
            "no deadline while a request is in flight"
        );
        s.bytes_read(); // its body: not a new request's headers
        assert_eq!(s.deadline(h, i), None);
        s.request_ended();
        assert!(s.deadline(h, i).unwrap() >= s.born + i);
    }

    /// Whether a future is ready at its first poll.
    fn futures_now<F: std::future::Future>(f: F) -> bool {
        let mut f = std::pin::pin!(f);
        let waker = std::task::Waker::noop();
        f.as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
            .is_ready()
    }
}
