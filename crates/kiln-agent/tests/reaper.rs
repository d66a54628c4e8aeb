//! The server with the PID 1 reaper (`waitpid(-1)` on one thread). This test
//! process makes itself a child subreaper, so orphans come to it as they come to
//! PID 1 in the guest. Nothing else in this binary may spawn processes: the
//! reaper would take their statuses.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kiln_agent::server::Waiter;
use kiln_proto::{ErrorKind, Request};

fn reaper_agent(name: &str) -> Agent {
    static SUBREAPER: std::sync::Once = std::sync::Once::new();
    SUBREAPER.call_once(|| {
        // SAFETY: prctl with an integer argument; affects only this process.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER");
    });
    agent(Waiter::reaper().expect("reaper thread"), name)
}

/// Our children in /proc: (pid, state, comm).
fn children() -> Vec<(i32, String, String)> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if f.len() > 1 && f[1] == me {
            out.push((
                stat[..open].trim().parse().unwrap_or(0),
                f[0].to_string(),
                stat[open + 1..close].to_string(),
            ));
        }
    }
    out
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn orphans_are_reaped_and_statuses_reach_their_execs() {
    let a = reaper_agent("orphans");
    let mut c = a.connect();
    let r = c.exec(1, sh("sleep 0.3 & exit 3"), None);
    assert_eq!(r.code, Some(3));
    // The orphaned sleep became our child; once it exits it must not stay a zombie.
    wait_until("the orphan to be reaped", || {
        !children().iter().any(|(_, _, comm)| comm == "sleep")
    });
    assert!(
        !children().iter().any(|(_, state, _)| state == "Z"),
        "zombies left: {:?}",
        children()
    );
}

#[test]
fn many_short_and_failing_execs_race_the_reaper() {
    let a = reaper_agent("race");
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let a = &a;
            s.spawn(move || {
                let mut c = a.connect();
                for i in 0..25u32 {
                    let id = i + 1;
                    match i % 3 {
                        0 => {
                            let r = c.exec(id, argv(&["true"]), None);
                            assert_eq!(r.code, Some(0));
                        }
                        1 => {
                            let r = c.exec(id, sh(&format!("exit {}", (t * 25 + i) % 200)), None);
                            assert_eq!(r.code, Some(((t * 25 + i) % 200) as i32));
                        }
                        _ => {
                            // std reaps a child whose exec failed itself; the reaper
                            // must not have taken it first.
                            let r = c.exec(id, argv(&["/no/such/program"]), None);
                            assert_eq!(r.error.expect("an error").kind, ErrorKind::NotFound);
                        }
                    }
                }
            });
        }
    });
    let mut c = a.connect();
    assert!(matches!(
        c.call(1, &Request::Ping),
        kiln_proto::Reply::Pong { .. }
    ));
}

#[test]
fn a_timeout_kills_a_whole_crowd_and_leaves_no_zombies() {
    let a = reaper_agent("crowd");
    let mut c = a.connect();
    let mut e =
        sh("trap '' TERM; i=0; while [ $i -lt 100 ]; do sleep 100 & i=$((i+1)); done; wait");
    e.timeout_ms = Some(500);
    let r = c.exec(1, e, None);
    assert!(r.timed_out);
    assert_eq!(r.signal, Some(libc::SIGKILL));
    assert!(!group_alive(r.pid));
    // As PID 1 would: every member reaped, so the group is gone entirely.
    wait_until("the group to be gone", || {
        // SAFETY: signal 0 only checks existence.
        unsafe { libc::kill(-r.pid, 0) != 0 }
    });
    wait_until("no zombies", || {
        !children().iter().any(|(_, state, _)| state == "Z")
    });
}
