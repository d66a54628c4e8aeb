//! Exec through the server on the host (no VM): statuses, streams, env, stdin,
//! timeouts, the drain rule, volume, concurrency, signals, PTYs, users.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use kiln_agent::server::Waiter;
use kiln_proto::{Control, ErrorKind, Frame, Kind, Reply, Request, WinSize, CHUNK};

fn agent_for(name: &str) -> Agent {
    agent(Waiter::PerPid, name)
}

#[test]
fn exit_codes_signals_and_start_errors() {
    let a = agent_for("exit");
    let mut c = a.connect();
    let r = c.exec(1, sh("exit 3"), None);
    assert_eq!((r.code, r.signal, r.timed_out), (Some(3), None, false));
    assert!(r.pid > 0);
    let r = c.exec(2, sh("kill -TERM $$"), None);
    assert_eq!((r.code, r.signal), (None, Some(libc::SIGTERM)));

    let r = c.exec(3, argv(&["/no/such/binary", "x"]), None);
    let e = r.error.expect("an error reply");
    assert_kind(&e, ErrorKind::NotFound, Some("/no/such/binary"));
    let r = c.exec(4, argv(&[]), None);
    assert_eq!(r.error.expect("error").kind, ErrorKind::InvalidInput);
    let r = c.exec(5, argv(&["no-such-command-kiln"]), None);
    assert_eq!(r.error.expect("error").kind, ErrorKind::NotFound);
}

#[test]
fn stdout_and_stderr_are_kept_apart() {
    let a = agent_for("streams");
    let mut c = a.connect();
    let r = c.exec(1, sh("echo out; echo err >&2; echo out2"), None);
    assert_eq!(r.stdout_str(), "out\nout2\n");
    assert_eq!(r.stderr_str(), "err\n");
    assert_eq!(r.code, Some(0));
}

#[test]
fn environment_and_working_directory() {
    let a = agent_for("env");
    let mut c = a.connect();
    let set = |pairs: &[(&str, Option<&str>)]| Request::SetEnv {
        env: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect(),
    };
    assert_eq!(
        c.call(
            1,
            &set(&[("FROM_SANDBOX", Some("s1")), ("GONE", Some("x"))])
        ),
        Reply::Done
    );
    assert_eq!(c.call(2, &set(&[("GONE", None)])), Reply::Done);
    let mut e = sh("echo $FROM_SANDBOX $FROM_EXEC ${GONE:-unset} $HOME $PATH; pwd");
    e.env = BTreeMap::from([("FROM_EXEC".to_string(), "e1".to_string())]);
    e.cwd = Some("/tmp".into());
    let r = c.exec(3, e, None);
    assert_eq!(
        r.stdout_str(),
        "s1 e1 unset /root /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/tmp\n"
    );
    // The request's env overrides set_env's, which overrides the base.
    let mut e = sh("echo $FROM_SANDBOX $HOME");
    e.env = BTreeMap::from([
        ("FROM_SANDBOX".to_string(), "req".to_string()),
        ("HOME".to_string(), "/h".to_string()),
    ]);
    assert_eq!(c.exec(4, e, None).stdout_str(), "req /h\n");
    // Only what we pass: the test runner's environment does not leak in.
    let vars = c.exec(5, sh("env | cut -d= -f1"), None).stdout_str();
    let vars: Vec<&str> = vars.lines().collect();
    for v in ["FROM_SANDBOX", "HOME", "PATH"] {
        assert!(vars.contains(&v), "{vars:?}");
    }
    assert!(!vars.iter().any(|v| v.starts_with("CARGO")), "{vars:?}");

    let mut e = argv(&["true"]);
    e.cwd = Some("/nope".into());
    let err = c.exec(6, e, None).error.expect("an error");
    assert_kind(&err, ErrorKind::NotFound, Some("/nope"));
    let mut e = argv(&["true"]);
    e.cwd = Some("/etc/passwd".into());
    let err = c.exec(7, e, None).error.expect("an error");
    assert_kind(&err, ErrorKind::NotADirectory, Some("/etc/passwd"));
    assert_eq!(
        c.call_err(8, &set(&[("A=B", Some("x"))])).kind,
        ErrorKind::InvalidInput
    );
}

#[test]
fn stdin_is_piped_binary_safe_and_eof_closes_it() {
    let a = agent_for("stdin");
    let mut c = a.connect();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let r = c.exec(1, argv(&["cat"]), Some(data.clone()));
    assert_eq!(r.code, Some(0));
    assert!(
        r.stdout == data,
        "cat echoed {} of {} bytes",
        r.stdout.len(),
        data.len()
    );

    let r = c.exec(2, argv(&["wc", "-c"]), Some(b"12345".to_vec()));
    assert_eq!(r.stdout_str().trim(), "5");
    // Without stdin the command reads /dev/null.
    let r = c.exec(3, argv(&["cat"]), None);
    assert_eq!((r.code, r.stdout.len()), (Some(0), 0));
    // A command that exits without reading: the rest of stdin is swallowed, and
    // the id is usable again afterwards.
    let r = c.exec(4, sh("exit 7"), Some(vec![1u8; 2 * CHUNK]));
    assert_eq!(r.code, Some(7));
    assert!(matches!(c.call(4, &Request::Ping), Reply::Pong { .. }));
}

#[test]
fn a_timeout_kills_a_tree_that_ignores_sigterm() {
    let a = agent_for("timeout");
    let mut c = a.connect();
    let mut e = sh("trap '' TERM; (trap '' TERM; sleep 100) & sleep 100; echo never");
    e.timeout_ms = Some(300);
    let t = Instant::now();
    let r = c.exec(1, e, None);
    assert!(r.timed_out);
    assert_eq!((r.code, r.signal), (None, Some(libc::SIGKILL)));
    assert!(!r.stdout_str().contains("never"));
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        !group_alive(r.pid),
        "the process group survived the timeout"
    );

    // An absurd timeout is no timeout (and no crash).
    let mut e = sh("exit 5");
    e.timeout_ms = Some(u64::MAX);
    assert_eq!(c.exec(4, e, None).code, Some(5));

    // A command that ends in time is not timed out...
    let mut e = sh("exit 0");
    e.timeout_ms = Some(10_000);
    let r = c.exec(2, e, None);
    assert_eq!((r.code, r.timed_out), (Some(0), false));

    // ...but what it left in its group is killed at the deadline.
    let mut e = sh("trap '' TERM; sleep 100 & echo left");
    e.timeout_ms = Some(1_000);
    let r = c.exec(3, e, None);
    assert_eq!(
        (r.code, r.timed_out, r.stdout_str().as_str()),
        (Some(0), false, "left\n")
    );
    let t = Instant::now();
    while group_alive(r.pid) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the leftover sleep outlived the timeout"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_leftover_process_that_keeps_writing_dies_at_the_deadline() {
    // The command exits at once; a background loop in its group keeps the pipes
    // busy (the drain rule would wait for it forever). The deadline ends it.
    let a = agent_for("spam");
    let mut c = a.connect();
    let mut e = sh("(trap '' TERM; while :; do echo spam; sleep 0.01; done) & exit 4");
    e.timeout_ms = Some(700);
    let r = c.exec(1, e, None);
    assert_eq!((r.code, r.signal, r.timed_out), (Some(4), None, false));
    assert!(r.stdout_str().starts_with("spam\n"), "{:?}", r.stdout_str());
    assert!(!group_alive(r.pid), "the loop outlived the deadline");
}

#[test]
fn a_background_grandchild_holding_the_pipes_does_not_hold_the_reply() {
    let a = agent_for("grandchild");
    let mut c = a.connect();
    let t = Instant::now();
    let r = c.exec(1, sh("sleep 60 & echo started"), None);
    assert_eq!((r.code, r.stdout_str().as_str()), (Some(0), "started\n"));
    // Without a timeout the background sleep lives on (by design); clean up.
    // SAFETY: kill of the exec's own process group.
    unsafe { libc::kill(-r.pid, libc::SIGKILL) };
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    // Output that keeps flowing after the exit is still collected.
    let r = c.exec(2, sh("seq 1 300000 & exit 0"), None);
    let want: String = (1..=300_000).map(|i| format!("{i}\n")).collect();
    assert_eq!(r.code, Some(0));
    assert!(
        r.stdout == want.as_bytes(),
        "got {} of {} bytes",
        r.stdout.len(),
        want.len()
    );
}

#[test]
fn twenty_mib_of_output_arrive_complete_and_in_order() {
    let a = agent_for("bulk");
    let mut c = a.connect();
    let r = c.exec(1, argv(&["seq", "1", "3000000"]), None);
    assert_eq!(r.code, Some(0));
    let mut want = String::with_capacity(21 << 20);
    for i in 1..=3_000_000u32 {
        want.push_str(&i.to_string());
        want.push('\n');
    }
    assert!(want.len() > 20 << 20);
    assert_eq!(r.stdout.len(), want.len());
    assert!(r.stdout == want.as_bytes(), "output differs");
}

#[test]
fn thirty_two_concurrent_execs_share_one_connection() {
    let a = agent_for("concurrent");
    let mut c = a.connect();
    let ids: Vec<u32> = (1..=32).collect();
    for &i in &ids {
        c.request(
            i,
            &Request::Exec(sh(&format!(
                "sleep 0.2; echo {i}; echo e{i} >&2; exit {}",
                i % 5
            ))),
        );
    }
    let results = c.collect(&ids);
    for (i, r) in results {
        assert_eq!(r.stdout_str(), format!("{i}\n"));
        assert_eq!(r.stderr_str(), format!("e{i}\n"));
        assert_eq!(r.code, Some((i % 5) as i32));
    }
}

#[test]
fn signals_reach_the_command_and_control_gets_no_reply() {
    let a = agent_for("signal");
    let mut c = a.connect();
    c.request(1, &Request::Exec(argv(&["sleep", "100"])));
    let (_, started) = c.reply();
    assert!(matches!(started, Reply::Started { .. }));
    c.raw(
        &Frame::json(
            Kind::Control,
            1,
            &Control::Signal {
                signal: libc::SIGINT,
            },
        )
        .encode(),
    );
    let mut res = ExecResult::default();
    let r = loop {
        let f = c.recv();
        if let Ok(Reply::Exited { signal, .. }) = f.parse::<Reply>() {
            break signal;
        }
        let _ = &mut res;
    };
    assert_eq!(r, Some(libc::SIGINT));
    // Bad control JSON on a live id: an error, the exec goes on.
    c.request(2, &Request::Exec(sh("sleep 0.2; echo fine")));
    assert!(matches!(c.reply(), (2, Reply::Started { .. })));
    c.send(Kind::Control, 0, 2, b"{\"op\":\"explode\"}");
    let (id, e) = c.error_reply();
    assert_eq!((id, e.kind), (2, ErrorKind::Protocol));
    let mut out = Vec::new();
    loop {
        let f = c.recv();
        if f.kind == Kind::Stdout {
            out.extend(f.payload);
        } else if let Ok(Reply::Exited { code, .. }) = f.parse::<Reply>() {
            assert_eq!(code, Some(0));
            break;
        }
    }
    assert_eq!(out, b"fine\n");
}

#[test]
fn pty_mode_gives_a_terminal_and_takes_input_and_resizes() {
    let a = agent_for("pty");
    let mut c = a.connect();
    let mut e = sh("tty; stty size; echo $TERM; echo to-stderr >&2");
    e.pty = Some(WinSize { rows: 24, cols: 80 });
    let r = c.exec(1, e, None);
    let out = r.stdout_str();
    assert_eq!(r.code, Some(0));
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("24 80"), "{out:?}");
    assert!(out.contains("xterm-256color"), "{out:?}");
    assert!(
        out.contains("to-stderr"),
        "PTY output is one stream: {out:?}"
    );
    assert!(r.stderr.is_empty());

    let mut e = sh("read line; echo got:$line; read x; stty size");
    e.pty = Some(WinSize { rows: 24, cols: 80 });
    c.request(2, &Request::Exec(e));
    assert!(matches!(c.reply(), (2, Reply::Started { .. })));
    c.send(Kind::DataIn, 0, 2, b"hello\n");
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains("got:hello") {
        let f = c.recv();
        assert_eq!(f.kind, Kind::Stdout, "{f:?}");
        out.extend(f.payload);
    }
    c.raw(
        &Frame::json(
            Kind::Control,
            2,
            &Control::Resize(WinSize {
                rows: 30,
                cols: 100,
            }),
        )
        .encode(),
    );
    c.send(Kind::DataIn, 0, 2, b"\n");
    let mut res = ExecResult::default();
    loop {
        let f = c.recv();
        match f.kind {
            Kind::Stdout | Kind::Stderr => out.extend(&f.payload),
            _ => {
                if let Ok(Reply::Exited { code, .. }) = f.parse::<Reply>() {
                    assert_eq!(code, Some(0));
                    break;
                }
            }
        }
        let _ = &mut res;
    }
    assert!(
        String::from_utf8_lossy(&out).contains("30 100"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn exec_with_uid_and_gid_drops_privileges() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let a = agent_for("uid");
    let mut c = a.connect();
    let mut e = argv(&["id"]);
    (e.uid, e.gid) = (Some(65534), Some(65533));
    let r = c.exec(1, e, None);
    let out = r.stdout_str();
    assert!(
        out.starts_with("uid=65534") && out.contains("gid=65533"),
        "{out}"
    );
    assert!(
        !out.contains("groups=0") && !out.contains("(root)"),
        "root's groups were kept: {out}"
    );
    // A child's OOM score is back to normal.
    let r = c.exec(2, argv(&["cat", "/proc/self/oom_score_adj"]), None);
    assert_eq!(r.stdout_str(), "0\n");
}
