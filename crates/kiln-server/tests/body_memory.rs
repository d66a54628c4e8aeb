//! Request bodies the server buffers share one memory budget, and their memory goes
//! back to the OS afterwards (issue 14 item 2): 8 concurrent 64 MiB exec bodies (an
//! exec's stdin rides in its JSON) against a 160 MiB budget (one at a time: each is charged twice its size). Before the budget, such
//! bodies were all held at once, each twice (bytes and parsed stdin), and the heap kept
//! most of it after. A test binary of its own: it reads its process's peak RSS.

mod support;

use std::io::Write;
use std::time::Duration;

use kiln_server::Limits;
use support::Server;

const BODY: usize = 64 << 20;
const BODIES: usize = 8;

fn status_kib(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn concurrent_large_bodies_stay_within_the_budget_and_are_given_back() {
    let s = Server::start(
        "body-memory",
        Limits {
            body_memory: 160 << 20,
            ..Limits::default()
        },
    );
    let before = status_kib("VmRSS:");
    let prefix = br#"{"cmd":["cat"],"stdin":""#;
    let suffix = br#""}"#;
    let chunk = vec![b'a'; 1 << 20];
    let senders: Vec<_> = (0..BODIES)
        .map(|_| {
            let mut c = s.unix();
            let token = s.token.clone();
            let (prefix, suffix, chunk) = (prefix.to_vec(), suffix.to_vec(), chunk.clone());
            std::thread::spawn(move || {
                let len = prefix.len() + BODY + suffix.len();
                c.send(
                    format!(
                        "POST /v1/sandboxes/x/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
                    )
                    .as_bytes(),
                );
                c.0.write_all(&prefix).unwrap();
                for _ in 0..BODY / chunk.len() {
                    c.0.write_all(&chunk).unwrap();
                }
                c.0.write_all(&suffix).unwrap();
                c.answer().unwrap()
            })
        })
        .collect();
    for t in senders {
        let a = t.join().unwrap();
        // Read and parsed whole: the sandbox does not exist.
        assert_eq!((a.status, a.code().as_str()), (404, "not_found"), "{a:?}");
    }
    std::thread::sleep(Duration::from_millis(200));
    let (peak, after) = (status_kib("VmHWM:"), status_kib("VmRSS:"));
    eprintln!(
        "{BODIES} bodies of {} MiB, budget 160 MiB: RSS before {} MiB, peak {} MiB, after {} MiB",
        BODY >> 20,
        before >> 10,
        peak >> 10,
        after >> 10
    );
    // All at once, each held twice, would be 1 GiB over the start.
    assert!(
        peak < before + (320 << 10),
        "peak RSS {peak} KiB, {before} KiB before: the budget did not hold"
    );
    assert!(
        after < before + (48 << 10),
        "RSS {after} KiB after the bodies, {before} KiB before: the memory was kept"
    );
}
