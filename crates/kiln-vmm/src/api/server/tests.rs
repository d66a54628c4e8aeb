use std::io::Read;
use std::os::unix::net::UnixStream;

use super::*;

/// A connection as the accept loop sees it: our end goes in the table, `peer` is the
/// connection's own end (reading it shows whether the slot was shut down).
fn conn() -> (UnixStream, UnixStream) {
    UnixStream::pair().unwrap()
}

fn was_shut_down(s: &mut UnixStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    matches!(s.read(&mut [0u8; 1]), Ok(0))
}

#[test]
fn a_full_table_evicts_the_longest_idle_connection_never_a_handling_one() {
    let conns = Arc::new(Conns::default());
    let (a, mut a_peer) = conn();
    let (b, mut b_peer) = conn();
    let (c, mut c_peer) = conn();
    let a_id = conns.admit(a, 2);
    let b_id = conns.admit(b, 2);
    conns.set_phase(a_id, Phase::Handling);
    // b is the only evictable one: admitting c shuts it down and waits for its release.
    let waiter = {
        let conns = conns.clone();
        std::thread::spawn(move || conns.admit(c, 2))
    };
    let mut b_seen = false;
    while !b_seen {
        b_seen = was_shut_down(&mut b_peer);
    }
    assert!(
        !was_shut_down(&mut a_peer),
        "a handling connection was evicted"
    );
    conns.release(b_id);
    let c_id = waiter.join().unwrap();
    assert!(!was_shut_down(&mut c_peer));
    let live: Vec<u64> = conns.lock().slots.iter().map(|s| s.id).collect();
    assert_eq!(live, vec![a_id, c_id]);
}

#[test]
fn an_idle_connection_goes_before_one_reading_a_request() {
    let conns = Conns::default();
    let (a, mut a_peer) = conn();
    let (b, mut b_peer) = conn();
    let a_id = conns.admit(a, 2);
    let b_id = conns.admit(b, 2);
    conns.set_phase(a_id, Phase::Reading);
    conns.set_phase(b_id, Phase::Idle);
    let mut t = conns.lock();
    assert_eq!(victim(&mut t.slots).map(|s| s.id), Some(b_id));
    conns_phase_all(&mut t.slots, Phase::Handling);
    assert!(victim(&mut t.slots).is_none());
    drop(t);
    assert!(!was_shut_down(&mut a_peer) && !was_shut_down(&mut b_peer));
}

fn conns_phase_all(slots: &mut [Slot], phase: Phase) {
    for s in slots {
        s.phase = phase;
    }
}

#[test]
fn a_deadline_reader_times_out_once_the_deadline_passed() {
    let (a, _b) = conn();
    let mut r = DeadlineReader {
        stream: &a,
        deadline: Some(Instant::now()),
    };
    let e = r.read(&mut [0u8; 4]).unwrap_err();
    assert!(timed_out(&e), "{e}");
}
