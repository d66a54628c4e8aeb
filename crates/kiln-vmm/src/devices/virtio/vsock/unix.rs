//! The host side on unix sockets: the `uds_path` listener, the `CONNECT <port>\n` line of
//! each accepted client (read without blocking, byte by byte so nothing after the newline
//! is consumed), the timer for deadlines, and connecting to `<uds_path>_<port>` for the
//! guest. Everything is registered in one epoll instance, which the event loop watches.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

use super::sys::{connect_nonblocking, set_nonblocking};

/// Longest `CONNECT <port>\n` line accepted, newline included.
pub const MAX_LINE: usize = 32;
/// Most host clients and connections alive at once.
pub const MAX_CLIENTS: usize = 1024;
/// How long the listener pauses after accept fails (e.g. out of file descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Events taken from the epoll instance per wake-up; the rest wait for the next one.
const EVENTS_PER_POLL: usize = 64;

const LISTENER: u64 = 0;
const TIMER: u64 = 1;
const FIRST_TOKEN: u64 = 2;

/// What happened on the host side.
pub enum HostEvent {
    /// A client asked for guest port `port`; `token` is free for its stream.
    Connect {
        stream: UnixStream,
        token: u64,
        port: u32,
    },
    /// Readiness of a connection's stream.
    Stream { token: u64, events: EventSet },
    /// The timer fired: check deadlines.
    Timer,
}

/// A client that has not finished its `CONNECT` line.
struct Handshake {
    stream: UnixStream,
    line: [u8; MAX_LINE],
    len: usize,
    deadline: Instant,
}

pub struct Backend {
    uds_path: PathBuf,
    listener: UnixListener,
    /// While accepting is paused: when to try again.
    accept_retry: Option<Instant>,
    epoll: Epoll,
    timer: TimerFd,
    timer_at: Option<Instant>,
    handshakes: HashMap<u64, Handshake>,
    next_token: u64,
    timeout: Duration,
}

impl Backend {
    /// Binds `uds_path` (removed again when the backend is dropped, and on process exit).
    pub fn new(uds_path: &Path, timeout: Duration) -> io::Result<Backend> {
        let epoll = Epoll::new()?;
        let timer = TimerFd::new()?;
        set_nonblocking(timer.as_raw_fd())?;
        let listener = crate::exit::bind_socket(uds_path)?;
        let backend = Backend {
            uds_path: uds_path.to_path_buf(),
            listener,
            accept_retry: None,
            epoll,
            timer,
            timer_at: None,
            handshakes: HashMap::new(),
            next_token: FIRST_TOKEN,
            timeout,
        };
        backend.listener.set_nonblocking(true)?;
        backend.ctl_listener(ControlOperation::Add)?;
        backend.epoll.ctl(
            ControlOperation::Add,
            backend.timer.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TIMER),
        )?;
        Ok(backend)
    }

    /// The epoll fd: readable whenever something on the host side needs attention.
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    pub fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    fn ctl_listener(&self, op: ControlOperation) -> io::Result<()> {
        let ev = EpollEvent::new(EventSet::IN, LISTENER);
        self.epoll.ctl(op, self.listener.as_raw_fd(), ev)
    }

    /// A fresh epoll token (never reused).
    pub fn new_token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    /// Makes sure the timer fires no later than `at`.
    pub fn schedule(&mut self, at: Instant) {
        if self.timer_at.is_some_and(|t| t <= at) {
            return;
        }
        let after = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        match self.timer.reset(after, None) {
            Ok(()) => self.timer_at = Some(at),
            Err(e) => tracing::error!("vsock: cannot arm the timer: {e}"),
        }
    }

    /// Takes ready events off the epoll instance; listener and handshake events are served
    /// here, the rest returned in `out`. `live` is the number of open connections.
    pub fn poll(&mut self, live: usize, out: &mut Vec<HostEvent>) {
        let mut events = [EpollEvent::default(); EVENTS_PER_POLL];
        let n = match self.epoll.wait(0, &mut events) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("vsock: epoll_wait failed: {e}");
                }
                return;
            }
        };
        for ev in &events[..n] {
            match ev.data() {
                LISTENER => self.accept(live),
                TIMER => {
                    // Drain the expiry count; EAGAIN if re-armed meanwhile is harmless.
                    let _ = self.timer.wait();
                    self.timer_at = None;
                    self.sweep();
                    out.push(HostEvent::Timer);
                }
                token if self.handshakes.contains_key(&token) => self.read_line(token, out),
                token => out.push(HostEvent::Stream {
                    token,
                    events: ev.event_set(),
                }),
            }
        }
    }

    fn accept(&mut self, live: usize) {
        for _ in 0..EVENTS_PER_POLL {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // E.g. EMFILE: the pending client stays queued; pause instead of spinning.
                    tracing::warn!("vsock: accept on {}: {e}", self.uds_path.display());
                    if self.ctl_listener(ControlOperation::Delete).is_ok() {
                        let at = Instant::now() + ACCEPT_RETRY;
                        self.accept_retry = Some(at);
                        self.schedule(at);
                    }
                    return;
                }
            };
            if live + self.handshakes.len() >= MAX_CLIENTS {
                tracing::warn!("vsock: {MAX_CLIENTS} connections open; refusing a host client");
                continue;
            }
            let token = self.new_token();
            let registered = stream.set_nonblocking(true).and_then(|()| {
                let ev = EpollEvent::new(EventSet::IN, token);
                self.epoll
                    .ctl(ControlOperation::Add, stream.as_raw_fd(), ev)
            });
            if let Err(e) = registered {
                tracing::warn!("vsock: cannot watch a host client: {e}");
                continue;
            }
            let deadline = Instant::now() + self.timeout;
            self.handshakes.insert(
                token,
                Handshake {
                    stream,
                    line: [0; MAX_LINE],
                    len: 0,
                    deadline,
                },
            );
            self.schedule(deadline);
        }
    }

    /// Reads what has arrived of a client's `CONNECT` line.
    fn read_line(&mut self, token: u64, out: &mut Vec<HostEvent>) {
        let Some(hs) = self.handshakes.get_mut(&token) else {
            return;
        };
        let outcome = loop {
            let mut byte = [0u8; 1];
            match (&hs.stream).read(&mut byte) {
                Ok(0) => break Err("closed before the CONNECT line ended".to_string()),
                Ok(_) if byte[0] == b'\n' => match parse_connect(&hs.line[..hs.len]) {
                    Some(port) => break Ok(port),
                    None => break Err(format!("malformed line {:?}", show(&hs.line[..hs.len]))),
                },
                Ok(_) if hs.len + 1 >= MAX_LINE => {
                    break Err(format!("line longer than {MAX_LINE} bytes"))
                }
                Ok(_) => {
                    hs.line[hs.len] = byte[0];
                    hs.len += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e.to_string()),
            }
        };
        let Some(hs) = self.handshakes.remove(&token) else {
            return;
        };
        match outcome {
            Ok(port) => {
                let ev = EpollEvent::new(EventSet::empty(), token);
                let fd = hs.stream.as_raw_fd();
                if let Err(e) = self.epoll.ctl(ControlOperation::Delete, fd, ev) {
                    tracing::warn!("vsock: cannot unwatch a host client: {e}");
                }
                out.push(HostEvent::Connect {
                    stream: hs.stream,
                    token,
                    port,
                });
            }
            // Dropping the stream closes it: that is the client's answer.
            Err(why) => tracing::warn!("vsock: host client refused: {why}"),
        }
    }

    /// Drops clients whose CONNECT line is overdue and resumes a paused listener.
    fn sweep(&mut self) {
        let now = Instant::now();
        let before = self.handshakes.len();
        self.handshakes.retain(|_, hs| hs.deadline > now);
        if self.handshakes.len() < before {
            tracing::warn!(
                "vsock: {} host client(s) sent no CONNECT line in time",
                before - self.handshakes.len()
            );
        }
        if self.accept_retry.is_some_and(|t| t <= now) {
            self.accept_retry = None;
            if let Err(e) = self.ctl_listener(ControlOperation::Add) {
                tracing::error!("vsock: cannot resume accepting: {e}");
            }
        }
        let next = self
            .handshakes
            .values()
            .map(|hs| hs.deadline)
            .chain(self.accept_retry)
            .min();
        if let Some(at) = next {
            self.schedule(at);
        }
    }

    /// Connects (without blocking) to the host application's socket for guest-initiated
    /// connections to `port`: `<uds_path>_<port>`.
    pub fn connect_port(&self, port: u32) -> io::Result<UnixStream> {
        let mut path = OsString::from(self.uds_path.as_os_str());
        path.push(format!("_{port}"));
        connect_nonblocking(Path::new(&path))
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        crate::exit::remove_socket(&self.uds_path);
    }
}

/// Parses `CONNECT <port>` (the newline already stripped): decimal digits only.
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let digits = line.strip_prefix(b"CONNECT ")?;
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let port: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    // u32::MAX is VMADDR_PORT_ANY, not a port.
    (port != u32::MAX).then_some(port)
}

fn show(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 52"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 4294967294"), Some(u32::MAX - 1));
        for bad in [
            &b"CONNECT"[..],
            b"CONNECT ",
            b"CONNECT 4294967295",
            b"CONNECT 4294967296",
            b"CONNECT 00000000001",
            b"CONNECT +5",
            b"CONNECT -5",
            b"CONNECT 5 ",
            b"CONNECT 5\r",
            b"connect 5",
            b"CONNECT  5",
            b"HELLO",
        ] {
            assert_eq!(parse_connect(bad), None, "{:?}", show(bad));
        }
    }
}
