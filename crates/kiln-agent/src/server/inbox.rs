//! An operation's input: the `DataIn` bytes and `Control` messages the connection
//! thread routes to it, plus cancellation when the connection goes away.
//!
//! Data is bounded ([`CAP`] bytes queued): when a command does not read its stdin,
//! the connection thread blocks in [`Inbox::push_data`] and stops reading the
//! socket — flow control back to the host — until the command reads, exits, the
//! operation ends or the host closes the connection. (Frames behind the blocked
//! data wait too, including a `Control` for that command: a host that needs to
//! stop a command that does not read should close the connection.) Control messages never wait behind data. An exec polls the
//! optional eventfd; a file write blocks in [`Inbox::wait_data`].

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use kiln_proto::{Control, CHUNK};

use super::sys::{lock, EventFd};

/// Bytes queued before the producer waits (one frame is always accepted).
pub const CAP: usize = 4 * CHUNK;
/// Control messages queued at most; later ones are dropped.
const MAX_CONTROLS: usize = 64;
/// How often a producer waiting for space checks that its connection is open.
const OPEN_CHECK: Duration = Duration::from_millis(100);

pub struct Inbox {
    state: Mutex<State>,
    cv: Condvar,
    wake: Option<EventFd>,
    accepts_data: bool,
}

#[derive(Default)]
struct State {
    data: VecDeque<Vec<u8>>,
    bytes: usize,
    eof: bool,
    controls: VecDeque<Control>,
    cancelled: bool,
    /// The consumer takes no more data: queued and future bytes are dropped.
    discard: bool,
}

/// What a consumer gets next from the data stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Data {
    Bytes(Vec<u8>),
    Eof,
    /// The connection is gone.
    Cancelled,
}

impl Inbox {
    /// `accepts_data`: whether `DataIn` frames are meant for this operation;
    /// `wakeable`: whether to create an eventfd for a polling consumer.
    pub fn new(accepts_data: bool, wakeable: bool) -> io::Result<Inbox> {
        Ok(Inbox {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            wake: if wakeable {
                Some(EventFd::new()?)
            } else {
                None
            },
            accepts_data,
        })
    }

    pub fn accepts_data(&self) -> bool {
        self.accepts_data
    }

    // --- the connection thread ---

    /// Queues `bytes` (waiting while the queue is full) and notes EOF. Data after
    /// EOF is dropped. While waiting, `still_open` is asked now and then whether
    /// the connection is still there; if not, the bytes are dropped (the caller
    /// goes on to read the end of the stream and cancels everything).
    pub fn push_data(&self, bytes: Vec<u8>, eof: bool, still_open: &dyn Fn() -> bool) {
        let mut st = lock(&self.state);
        if st.eof {
            return;
        }
        if !bytes.is_empty() {
            while !st.discard && !st.cancelled && st.bytes > 0 && st.bytes + bytes.len() > CAP {
                let (guard, timeout) = self
                    .cv
                    .wait_timeout(st, OPEN_CHECK)
                    .unwrap_or_else(|e| e.into_inner());
                st = guard;
                if timeout.timed_out() && !still_open() {
                    return;
                }
            }
            if !st.discard && !st.cancelled {
                st.bytes += bytes.len();
                st.data.push_back(bytes);
            }
        }
        st.eof |= eof;
        drop(st);
        self.wake();
    }

    pub fn push_control(&self, c: Control) {
        let mut st = lock(&self.state);
        if st.controls.len() < MAX_CONTROLS {
            st.controls.push_back(c);
        }
        drop(st);
        self.wake();
    }

    /// The connection is gone: the operation should stop (an exec kills its command).
    pub fn cancel(&self) {
        lock(&self.state).cancelled = true;
        self.wake();
    }

    /// Whether the host has ended the data stream (EOF frame seen).
    pub fn eof_seen(&self) -> bool {
        lock(&self.state).eof
    }

    // --- the operation ---

    /// Drops queued data and all data still to come (and releases a waiting producer).
    pub fn discard(&self) {
        let mut st = lock(&self.state);
        st.discard = true;
        st.data.clear();
        st.bytes = 0;
        drop(st);
        self.cv.notify_all();
    }

    /// The next data item without waiting; `None` if nothing is queued yet.
    pub fn try_data(&self) -> Option<Data> {
        let mut st = lock(&self.state);
        let item = match st.data.pop_front() {
            Some(b) => {
                st.bytes -= b.len();
                Data::Bytes(b)
            }
            None if st.eof => Data::Eof,
            None => return None,
        };
        drop(st);
        self.cv.notify_all();
        Some(item)
    }

    /// The next data item, waiting for it.
    pub fn wait_data(&self) -> Data {
        let mut st = lock(&self.state);
        loop {
            if st.cancelled {
                return Data::Cancelled;
            }
            if let Some(b) = st.data.pop_front() {
                st.bytes -= b.len();
                drop(st);
                self.cv.notify_all();
                return Data::Bytes(b);
            }
            if st.eof {
                return Data::Eof;
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn try_control(&self) -> Option<Control> {
        lock(&self.state).controls.pop_front()
    }

    pub fn cancelled(&self) -> bool {
        lock(&self.state).cancelled
    }

    /// The eventfd a polling consumer waits on (readable after any push or cancel).
    pub fn wake_fd(&self) -> Option<RawFd> {
        self.wake.as_ref().map(EventFd::raw)
    }

    /// Resets the eventfd; call before draining the queues.
    pub fn clear_wake(&self) {
        if let Some(w) = &self.wake {
            w.clear();
        }
    }

    fn wake(&self) {
        self.cv.notify_all();
        if let Some(w) = &self.wake {
            w.notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn open() -> bool {
        true
    }

    #[test]
    fn data_then_eof_in_order_and_nothing_after_eof() {
        let i = Inbox::new(true, true).unwrap();
        assert_eq!(i.try_data(), None);
        i.push_data(b"ab".to_vec(), false, &open);
        i.push_data(b"c".to_vec(), true, &open);
        i.push_data(b"late".to_vec(), false, &open);
        assert!(i.eof_seen());
        assert_eq!(i.try_data(), Some(Data::Bytes(b"ab".to_vec())));
        assert_eq!(i.wait_data(), Data::Bytes(b"c".to_vec()));
        assert_eq!(i.try_data(), Some(Data::Eof));
    }

    #[test]
    fn a_full_queue_blocks_the_producer_until_the_consumer_reads_or_discards() {
        let i = Arc::new(Inbox::new(true, false).unwrap());
        i.push_data(vec![0; CAP], false, &open);
        let p = {
            let i = i.clone();
            std::thread::spawn(move || i.push_data(vec![1; 10], true, &open))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!p.is_finished(), "the producer should wait for space");
        assert_eq!(i.wait_data(), Data::Bytes(vec![0; CAP]));
        p.join().unwrap();
        assert_eq!(i.wait_data(), Data::Bytes(vec![1; 10]));
        assert_eq!(i.wait_data(), Data::Eof);

        let j = Arc::new(Inbox::new(true, false).unwrap());
        j.push_data(vec![0; CAP], false, &open);
        let p = {
            let j = j.clone();
            std::thread::spawn(move || j.push_data(vec![1; 10], false, &open))
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        j.discard();
        p.join().unwrap();
        assert_eq!(j.try_data(), None);
    }

    #[test]
    fn a_waiting_producer_gives_up_when_the_connection_closes() {
        let i = Inbox::new(true, false).unwrap();
        i.push_data(vec![0; CAP], false, &open);
        i.push_data(vec![1; 10], false, &|| false);
        assert_eq!(i.try_data(), Some(Data::Bytes(vec![0; CAP])));
        assert_eq!(i.try_data(), None, "the second push was dropped");
    }

    #[test]
    fn cancel_wakes_a_waiting_consumer() {
        let i = Arc::new(Inbox::new(true, false).unwrap());
        let c = {
            let i = i.clone();
            std::thread::spawn(move || i.wait_data())
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        i.cancel();
        assert_eq!(c.join().unwrap(), Data::Cancelled);
    }
}
