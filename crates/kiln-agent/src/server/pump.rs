//! The exec's event loop: one `poll` over the output fds, the stdin fd (when
//! there are bytes to write), the inbox eventfd (stdin data, control messages,
//! cancellation) and the exit eventfd (see `reaper`). The rules it implements
//! (drain, timeout, control, stdin, cancellation) are described in `exec`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_proto::{Control, Kind, CHUNK, FLAG_EOF};

use super::group::{signal_group, Killer};
use super::inbox::{Data, Inbox};
use super::pty;
use super::reaper::ExitCell;
use super::routes::Op;
use super::sys::{poll, set_nonblocking};

/// How long output may be silent after the command exited before the streams
/// are closed.
pub const DRAIN_IDLE: Duration = Duration::from_millis(100);
/// Pipe buffer size asked for (fewer wakeups for bulk output; best effort).
const PIPE_SIZE: libc::c_int = 1 << 20;

/// The exec's fds on our side.
pub struct Streams {
    /// Output streams: index 0 → `Stdout`, 1 → `Stderr`. `None` once closed.
    out: [Option<OwnedFd>; 2],
    /// Whether each stream's EOF frame has been sent.
    eof_sent: [bool; 2],
    /// Where stdin bytes go (pipe, or a dup of the PTY master).
    stdin: Option<OwnedFd>,
    /// PTY mode: EOF does not close stdin; resizes go to `stdin`.
    pty: bool,
}

impl Streams {
    pub fn pipes(
        stdin: Option<OwnedFd>,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    ) -> Streams {
        for fd in [&stdin, &stdout, &stderr].into_iter().flatten() {
            let _ = set_nonblocking(fd.as_raw_fd());
        }
        for fd in [&stdout, &stderr].into_iter().flatten() {
            // SAFETY: fcntl on a pipe we own; failure only keeps the default size.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        }
        let eof_sent = [stdout.is_none(), stderr.is_none()];
        Streams {
            out: [stdout, stderr],
            eof_sent,
            stdin,
            pty: false,
        }
    }

    pub fn pty(master: OwnedFd) -> Streams {
        let _ = set_nonblocking(master.as_raw_fd());
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own; checked below.
        let dup = unsafe { libc::fcntl(master.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
        // SAFETY: dup is a new descriptor we own (if not -1).
        let stdin = (dup >= 0).then(|| unsafe { OwnedFd::from_raw_fd(dup) });
        Streams {
            out: [Some(master), None],
            eof_sent: [false, false],
            stdin,
            pty: true,
        }
    }
}

/// The state of one exec's loop; [`Pump::run`] returns when the exec is over.
pub struct Pump<'a> {
    op: &'a Op,
    inbox: &'a Arc<Inbox>,
    exit: &'a Arc<ExitCell>,
    pgid: libc::pid_t,
    io: Streams,
    /// Stdin bytes not yet written, and how far we got.
    pending: Option<(Vec<u8>, usize)>,
    status: Option<i32>,
    exited_at: Option<Instant>,
    last_output: Instant,
    deadline: Option<Instant>,
    timed_out: bool,
    cancelled: bool,
    killer: Option<Killer>,
    buf: Vec<u8>,
}

const KINDS: [Kind; 2] = [Kind::Stdout, Kind::Stderr];

/// How an exec ended.
pub struct Outcome {
    /// The raw wait status, if the command was reaped.
    pub status: Option<i32>,
    /// Still running at the deadline (and killed).
    pub timed_out: bool,
    /// The connection went away (nothing more to send).
    pub cancelled: bool,
    /// The group was killed (timeout or cancellation).
    pub killed: bool,
}

impl<'a> Pump<'a> {
    /// `started`: when the command was spawned (the drain clock's origin).
    pub fn new(
        op: &'a Op,
        inbox: &'a Arc<Inbox>,
        exit: &'a Arc<ExitCell>,
        pgid: libc::pid_t,
        io: Streams,
        started: Instant,
        deadline: Option<Instant>,
    ) -> Pump<'a> {
        Pump {
            op,
            inbox,
            exit,
            pgid,
            io,
            pending: None,
            status: None,
            exited_at: None,
            last_output: started,
            deadline,
            timed_out: false,
            cancelled: false,
            killer: None,
            buf: vec![0; CHUNK],
        }
    }

    /// Runs until the command has exited, its output is closed or drained, and
    /// (after a kill) its group is gone. EOF frames are sent; `Exited` is not.
    pub fn run(mut self) -> Outcome {
        self.run_loop();
        Outcome {
            status: self.status,
            timed_out: self.timed_out,
            cancelled: self.cancelled,
            killed: self.killer.is_some(),
        }
    }
}

impl Pump<'_> {
    fn run_loop(&mut self) {
        loop {
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) && self.killer.is_none() {
                // A command that exited in time is not timed out, but what it left
                // in its group (still writing to the pipes) dies at the deadline.
                self.timed_out = self.status.is_none();
                self.kill(now);
            }
            if let Some(k) = &mut self.killer {
                k.tick(now);
            }
            if self.finished(now) {
                break;
            }
            self.feed_stdin();

            let mut fds = Vec::with_capacity(5);
            let mut slots = Vec::with_capacity(5);
            if let Some(fd) = self.inbox.wake_fd() {
                fds.push(pollfd(fd, libc::POLLIN));
                slots.push(Slot::Inbox);
            }
            if self.status.is_none() {
                fds.push(pollfd(self.exit.fd(), libc::POLLIN));
                slots.push(Slot::Exit);
            }
            for (i, out) in self.io.out.iter().enumerate() {
                if let Some(fd) = out {
                    fds.push(pollfd(fd.as_raw_fd(), libc::POLLIN));
                    slots.push(Slot::Out(i));
                }
            }
            if let (Some(fd), Some(_)) = (&self.io.stdin, &self.pending) {
                fds.push(pollfd(fd.as_raw_fd(), libc::POLLOUT));
                slots.push(Slot::Stdin);
            }
            let timeout = self.wake_at().map(|t| t.saturating_duration_since(now));
            if poll(&mut fds, timeout).is_err() {
                // EINVAL/ENOMEM: nothing sensible to wait on; do not spin.
                std::thread::sleep(Duration::from_millis(5));
            }
            for (pfd, slot) in fds.iter().zip(&slots) {
                if pfd.revents == 0 {
                    continue;
                }
                match *slot {
                    Slot::Inbox => self.on_inbox(),
                    Slot::Exit => {
                        if let Some(s) = self.exit.get() {
                            self.status = Some(s);
                            self.exited_at = Some(Instant::now());
                        }
                    }
                    Slot::Out(i) => self.read_output(i),
                    // feed_stdin at the top of the loop writes.
                    Slot::Stdin => {}
                }
            }
        }
        self.close_outputs();
    }

    /// Whether the exec is over: exited, output closed or drained, group dead.
    fn finished(&mut self, now: Instant) -> bool {
        let Some(exited_at) = self.exited_at else {
            return false;
        };
        let killing_done = match &self.killer {
            None => None,
            Some(k) => match k.done_at() {
                Some(t) => Some(t),
                None => return false,
            },
        };
        if self.io.out.iter().all(Option::is_none) {
            return true;
        }
        let idle_since = self.last_output.max(exited_at);
        if now >= idle_since + DRAIN_IDLE {
            return true;
        }
        // After a kill, a process outside the group may keep writing: stop anyway.
        killing_done.is_some_and(|t| now >= t + DRAIN_IDLE)
    }

    /// The next moment something is due without fd activity.
    fn wake_at(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        if let (Some(d), None) = (self.deadline, &self.killer) {
            at(d);
        }
        if let Some(next) = self.killer.as_ref().and_then(Killer::next_tick) {
            at(next);
        }
        if let Some(exited_at) = self.exited_at {
            at(self.last_output.max(exited_at) + DRAIN_IDLE);
            if let Some(done) = self.killer.as_ref().and_then(Killer::done_at) {
                at(done + DRAIN_IDLE);
            }
        }
        t
    }

    fn kill(&mut self, now: Instant) {
        if self.killer.is_none() {
            self.killer = Some(Killer::new(self.pgid, now));
        }
    }

    fn on_inbox(&mut self) {
        self.inbox.clear_wake();
        if self.inbox.cancelled() && !self.cancelled {
            self.cancelled = true;
            // Nobody reads the output any more; the command goes.
            self.io.out = [None, None];
            self.io.eof_sent = [true, true];
            self.io.stdin = None;
            self.pending = None;
            self.inbox.discard();
            self.kill(Instant::now());
        }
        while let Some(c) = self.inbox.try_control() {
            self.control(c);
        }
    }

    fn control(&mut self, c: Control) {
        match c {
            Control::Signal { signal } => {
                let group_gone = self.killer.as_ref().is_some_and(|k| k.done_at().is_some());
                if (1..=64).contains(&signal) && !group_gone {
                    signal_group(self.pgid, signal);
                }
            }
            Control::Resize(size) => {
                if let (true, Some(fd)) = (self.io.pty, &self.io.stdin) {
                    let _ = pty::set_size(fd.as_raw_fd(), size);
                }
            }
        }
    }

    /// Writes queued stdin bytes until the pipe is full or the queue is empty.
    fn feed_stdin(&mut self) {
        loop {
            let Some(fd) = &self.io.stdin else {
                return;
            };
            let fd = fd.as_raw_fd();
            if self.pending.is_none() {
                match self.inbox.try_data() {
                    Some(Data::Bytes(b)) => self.pending = Some((b, 0)),
                    Some(Data::Eof) => {
                        if !self.io.pty {
                            self.io.stdin = None;
                        }
                        return;
                    }
                    Some(Data::Cancelled) | None => return,
                }
            }
            let Some((bytes, off)) = &mut self.pending else {
                return;
            };
            match write(fd, &bytes[*off..]) {
                Ok(n) => {
                    *off += n;
                    if *off == bytes.len() {
                        self.pending = None;
                    }
                }
                Err(libc::EAGAIN) => return,
                Err(libc::EINTR) => {}
                Err(_) => {
                    // EPIPE: the command closed its stdin. Drop the rest.
                    self.pending = None;
                    if !self.io.pty {
                        self.io.stdin = None;
                    }
                    self.inbox.discard();
                    return;
                }
            }
        }
    }

    fn read_output(&mut self, i: usize) {
        let Some(fd) = &self.io.out[i] else {
            return;
        };
        match read(fd.as_raw_fd(), &mut self.buf) {
            Ok(0) => self.close_output(i),
            Ok(n) => {
                self.last_output = Instant::now();
                self.op.send(KINDS[i], 0, &self.buf[..n]);
            }
            Err(libc::EAGAIN) | Err(libc::EINTR) => {}
            // EIO: the PTY's last slave fd closed. Anything else: give up the stream.
            Err(_) => self.close_output(i),
        }
    }

    fn close_output(&mut self, i: usize) {
        self.io.out[i] = None;
        if !self.io.eof_sent[i] {
            self.io.eof_sent[i] = true;
            self.op.send(KINDS[i], FLAG_EOF, &[]);
        }
    }

    fn close_outputs(&mut self) {
        for i in 0..2 {
            self.close_output(i);
        }
    }
}

#[derive(Clone, Copy)]
enum Slot {
    Inbox,
    Exit,
    Out(usize),
    Stdin,
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

fn read(fd: RawFd, buf: &mut [u8]) -> Result<usize, i32> {
    // SAFETY: buf is writable for its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(crate::console::errno());
    }
    Ok(n as usize)
}

fn write(fd: RawFd, buf: &[u8]) -> Result<usize, i32> {
    // SAFETY: buf is readable for its length.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(crate::console::errno());
    }
    Ok(n as usize)
}
