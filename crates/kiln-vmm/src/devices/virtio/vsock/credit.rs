//! Credit-based flow control of one connection (virtio 1.2 §5.10.6.3). All counters are
//! free-running u32s that wrap, as on the wire.
//!
//! Our side: we advertise [`BUF_ALLOC`] and `fwd_cnt` (bytes handed to the host socket) in
//! every packet. The guest may send at most `BUF_ALLOC` beyond the last `fwd_cnt` it heard;
//! more is a violation. A credit update is due once half of `BUF_ALLOC` was forwarded since
//! the guest last heard our `fwd_cnt`.
//!
//! The guest's side: it may be sent at most `peer_buf_alloc - (tx_cnt - peer_fwd_cnt)`.

use std::num::Wrapping;

/// Receive buffer we advertise to the guest, per connection.
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Forwarded bytes after which the guest is told our new `fwd_cnt` unprompted.
const UPDATE_AFTER: u32 = BUF_ALLOC / 2;

#[derive(Debug, Default)]
pub struct Credit {
    /// Payload bytes received from the guest.
    rx_cnt: Wrapping<u32>,
    /// Of those, bytes written to the host socket.
    fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as of the last packet we sent the guest.
    fwd_cnt_sent: Wrapping<u32>,
    /// Payload bytes sent to the guest.
    tx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
}

impl Credit {
    /// Every guest packet carries its receive buffer size and forwarded count.
    pub fn update_peer(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = Wrapping(fwd_cnt);
    }

    /// Bytes the guest can still take. A guest claiming to have forwarded more than we
    /// sent gets no credit rather than a wrapped-around huge one.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Records `len` bytes sent to the guest (`len` <= [`Credit::peer_credit`]).
    pub fn sent(&mut self, len: u32) {
        self.tx_cnt += Wrapping(len);
    }

    /// Accepts `len` bytes from the guest if its credit covers them; else returns the room
    /// it had.
    pub fn receive(&mut self, len: usize) -> Result<(), usize> {
        let unacked = (self.rx_cnt - self.fwd_cnt_sent).0 as usize;
        let room = (BUF_ALLOC as usize).saturating_sub(unacked);
        if len > room {
            return Err(room);
        }
        // len <= BUF_ALLOC.
        self.rx_cnt += Wrapping(len as u32);
        Ok(())
    }

    /// Records `n` received bytes written to the host socket; true if the guest should
    /// now be told (a credit update is due).
    pub fn forwarded(&mut self, n: usize) -> bool {
        // n <= BUF_ALLOC.
        self.fwd_cnt += Wrapping(n as u32);
        (self.fwd_cnt - self.fwd_cnt_sent).0 >= UPDATE_AFTER
    }

    /// Our `(buf_alloc, fwd_cnt)` for an outgoing packet; the guest will know them.
    pub fn stamp(&mut self) -> (u32, u32) {
        self.fwd_cnt_sent = self.fwd_cnt;
        (BUF_ALLOC, self.fwd_cnt.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_credit_follows_the_guest_and_never_wraps_up() {
        let mut c = Credit::default();
        assert_eq!(c.peer_credit(), 0);
        c.update_peer(1000, 0);
        c.sent(600);
        assert_eq!(c.peer_credit(), 400);
        c.update_peer(1000, 500);
        assert_eq!(c.peer_credit(), 900);
        // A guest "forwarding" more than it got: no credit.
        c.update_peer(1000, 700);
        assert_eq!(c.peer_credit(), 0);
        // Counters wrap.
        let mut c = Credit {
            tx_cnt: Wrapping(u32::MAX - 9),
            ..Credit::default()
        };
        c.update_peer(100, u32::MAX - 9);
        c.sent(20);
        assert_eq!(c.peer_credit(), 80);
    }

    #[test]
    fn guest_is_held_to_what_it_heard() {
        let mut c = Credit::default();
        assert_eq!(c.receive(BUF_ALLOC as usize), Ok(()));
        assert_eq!(c.receive(1), Err(0));
        // Forwarding alone is not enough: the guest has not heard of it yet.
        assert!(c.forwarded(BUF_ALLOC as usize));
        assert_eq!(c.receive(1), Err(0));
        assert_eq!(c.stamp(), (BUF_ALLOC, BUF_ALLOC));
        assert_eq!(c.receive(BUF_ALLOC as usize), Ok(()));
    }

    #[test]
    fn update_is_due_after_half_the_buffer() {
        let mut c = Credit::default();
        c.receive(BUF_ALLOC as usize).unwrap();
        assert!(!c.forwarded(UPDATE_AFTER as usize - 1));
        assert!(c.forwarded(1));
        c.stamp();
        assert!(!c.forwarded(10));
    }
}
