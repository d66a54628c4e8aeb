//! Several processes at once, and crashes: the store's promises that need more than one
//! connection to show.

use std::sync::{Arc, Barrier};

use rusqlite::TransactionBehavior;
use serde_json::json;

use super::{sandbox, TempDb};
use crate::store::lifecycle::transition_tx;
use crate::store::*;
use SbState::*;

#[test]
fn two_stores_on_one_file_do_200_writes_each_without_errors() {
    let t = TempDb::new("two-writers");
    drop(t.open());
    let start = Arc::new(Barrier::new(2));
    let workers: Vec<_> = (0..2)
        .map(|n| {
            let (path, start) = (t.path(), start.clone());
            std::thread::spawn(move || {
                // Its own Store, as another process would have: its own connection and locks.
                let s = Store::open(path).unwrap();
                start.wait();
                for i in 0..40 {
                    let id = format!("t{n}-{i}");
                    s.insert_sandbox(&sandbox(&id, Creating, i)).unwrap();
                    s.transition(&id, &[Creating], Running, None).unwrap();
                    s.transition(&id, &[Running], Paused, None).unwrap();
                    s.transition(&id, &[Paused], Running, None).unwrap();
                    s.transition(&id, &[Running, Paused], Stopping, None)
                        .unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a writer failed");
    }
    let s = t.open();
    let all = s.list_sandboxes(&SandboxFilter::default()).unwrap();
    assert_eq!(all.len(), 80);
    assert!(all.iter().all(|r| r.state == Stopping));
    let events = s.events_since(0, 1000).unwrap();
    assert_eq!(events.len(), 80 * 5);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[test]
fn stores_opened_at_once_on_a_new_file_migrate_it_once() {
    let t = TempDb::new("first-open");
    let start = Arc::new(Barrier::new(8));
    let openers: Vec<_> = (0..8)
        .map(|n| {
            let (path, start) = (t.path(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let s = Store::open(path).unwrap();
                s.insert_sandbox(&sandbox(&format!("o{n}"), Creating, n))
                    .unwrap();
            })
        })
        .collect();
    for o in openers {
        o.join().expect("an opener failed");
    }
    let s = t.open();
    assert_eq!(
        s.list_sandboxes(&SandboxFilter::default()).unwrap().len(),
        8
    );
    assert_eq!(schema::user_version(&s.conn()).unwrap(), SCHEMA_VERSION);
}

#[test]
fn a_transaction_dropped_before_commit_leaves_the_previous_state() {
    let t = TempDb::new("rollback");
    let s = t.open();
    let other = t.open();
    s.insert_sandbox(&sandbox("a", Running, 1)).unwrap();
    {
        let mut c = s.conn();
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        assert_eq!(
            transition_tx(&tx, "a", &[Running], Paused, None).unwrap(),
            Running
        );
        let inside: SbState = tx
            .query_row("SELECT state FROM sandboxes WHERE id = 'a'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(inside, Paused);
        // Another connection (process) never sees the uncommitted change.
        assert_eq!(other.get_sandbox("a").unwrap().state, Running);
        drop(tx); // the "crash": no commit
    }
    for store in [&s, &other] {
        assert_eq!(store.get_sandbox("a").unwrap().state, Running);
        assert_eq!(store.events_for("a", 10).unwrap().len(), 1); // only "created"
    }
    // And the store goes on working.
    s.transition("a", &[Running], Paused, None).unwrap();
    assert_eq!(other.get_sandbox("a").unwrap().state, Paused);
}

const CRASH_ENV: &str = "KILN_STORE_CRASH_DB";

/// Run by `a_process_killed_mid_transaction_leaves_the_previous_state` in a child process:
/// changes a state and writes enough events that SQLite spills them into the WAL file,
/// then aborts before committing.
#[test]
#[ignore = "a helper that aborts its process; run by the crash test"]
fn crash_helper() {
    let Some(path) = std::env::var_os(CRASH_ENV) else {
        return;
    };
    let s = Store::open(path).unwrap();
    let mut c = s.conn();
    c.pragma_update(None, "cache_size", 16).unwrap();
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    transition_tx(&tx, "a", &[Running], Paused, None).unwrap();
    let pad = "x".repeat(1024);
    for i in 0..4000 {
        events::insert_event(&tx, i, Some("a"), "pad", &json!({ "pad": pad })).unwrap();
    }
    std::process::abort();
}

#[test]
fn a_process_killed_mid_transaction_leaves_the_previous_state() {
    use std::os::unix::process::ExitStatusExt;
    let t = TempDb::new("abort");
    {
        let s = t.open();
        s.insert_sandbox(&sandbox("a", Running, 1)).unwrap();
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "store::tests::concurrency::crash_helper",
            "--exact",
            "--ignored",
        ])
        .arg("--test-threads=1")
        .env(CRASH_ENV, t.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "the helper did not abort: {status:?}"
    );
    // The uncommitted pages did reach the disk: recovery has to skip them.
    let wal = std::fs::metadata(t.path().with_extension("db-wal"))
        .unwrap()
        .len();
    assert!(wal > 1 << 20, "WAL is only {wal} bytes");

    let s = t.open();
    assert_eq!(s.get_sandbox("a").unwrap().state, Running);
    assert_eq!(s.events_since(0, 10_000).unwrap().len(), 1);
    let check: String = s
        .conn()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    s.transition("a", &[Running], Paused, None).unwrap();
}
