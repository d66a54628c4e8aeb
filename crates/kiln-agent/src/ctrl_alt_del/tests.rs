//! Host tests: signals here are thread-directed (`pthread_kill` at a thread that
//! blocks them), never sent to the test process as a whole, and the PID-1-only
//! steps must refuse.

use std::collections::BTreeMap;
use std::os::unix::thread::JoinHandleExt;
use std::sync::mpsc;
use std::time::Duration;

use super::*;

/// Whether `sig` is blocked on the calling thread.
fn blocked(sig: libc::c_int) -> bool {
    let none = sigset(0);
    // SAFETY: sigset_t is plain data; all zeroes is a valid (empty) set.
    let mut cur: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live sigset_t values; SIG_BLOCK with an empty
    // set adds nothing, so the call only reads the current mask into `cur`.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &none, &mut cur) };
    assert_eq!(rc, 0);
    // SAFETY: cur is an initialised sigset_t.
    unsafe { libc::sigismember(&cur, sig) == 1 }
}

#[test]
fn the_watcher_takes_its_signal_until_told_to_stop() {
    let sig = libc::SIGUSR2;
    assert!(!blocked(sig));
    let (tx, rx) = mpsc::channel();
    let mut n = 0;
    let handle = watch(sig, "test-watch", move || {
        n += 1;
        tx.send(n).unwrap();
        if n == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    // The caller's mask is as it was.
    assert!(!blocked(sig));
    for want in 1..=2 {
        // SAFETY: the thread is alive (it stops after the second signal) and
        // blocks `sig`, so the signal waits for its sigwait.
        assert_eq!(unsafe { libc::pthread_kill(handle.as_pthread_t(), sig) }, 0);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(want));
    }
    handle.join().unwrap();
}

#[test]
fn pid1_only_steps_refuse_elsewhere() {
    let e = start(Vec::new()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    let e = signal_init_on_cad().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
}

#[test]
fn commands_do_not_inherit_the_blocked_signals() {
    // On a thread of its own, so the test harness's threads keep their masks.
    let status = std::thread::spawn(|| {
        block(CAD_SIGNAL).unwrap();
        block(libc::SIGTERM).unwrap();
        assert!(blocked(CAD_SIGNAL));
        let req = kiln_proto::Exec {
            argv: ["grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        };
        let out = crate::server::command::build(&req, &BTreeMap::new())
            .unwrap()
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    })
    .join()
    .unwrap();
    let field = |name: &str| {
        let line = status.lines().find_map(|l| l.strip_prefix(name)).unwrap();
        u64::from_str_radix(line.trim(), 16).unwrap()
    };
    assert_eq!(field("SigBlk:"), 0, "{status}");
    // Signals 32 and 33 are glibc's own (sigaction refuses them); an ignored
    // one inherited from whoever started the tests stays ignored.
    let glibc_internal = (1 << 31) | (1 << 32);
    assert_eq!(field("SigIgn:") & !glibc_internal, 0, "{status}");
}
