//! Commands in real sandboxes: status, output, env, stdin, timeouts, volume, concurrency,
//! and a guest that misbehaves.

use std::time::Duration;

use kiln::{Error, ExecEvent, ExecOptions};
use kiln_e2e::{sandbox, sandbox_with, sh, sha256_hex};

#[test]
fn exit_codes_and_signals_are_reported() {
    let Some(sb) = sandbox("exit_codes", "minimal") else {
        return;
    };
    let out = sh(&sb, "exit 3");
    assert_eq!((out.status.code, out.status.signal), (Some(3), None));
    let out = sh(&sb, "kill -TERM $$");
    assert_eq!((out.status.code, out.status.signal), (None, Some(15)));
    assert_eq!(out.status.shell_code(), 143);
    let e = sb.exec(&ExecOptions::new(["/no/such/binary"])).unwrap_err();
    assert!(e.to_string().contains("/no/such/binary"), "{e}");
}

#[test]
fn stdout_and_stderr_are_kept_apart_and_env_and_cwd_apply() {
    let b = kiln::Sandbox::builder()
        .image("minimal")
        .env("FROM_SANDBOX", "s1");
    let Some(sb) = sandbox_with("stdout_stderr_env", b) else {
        return;
    };
    let out = sh(&sb, "echo out; echo err >&2; echo out2");
    assert_eq!(out.stdout_str(), "out\nout2\n");
    assert_eq!(out.stderr_str(), "err\n");
    let out = sb
        .exec(
            &ExecOptions::new(["sh", "-c", "echo $FROM_SANDBOX $FROM_EXEC; pwd"])
                .env("FROM_EXEC", "e1")
                .cwd("/tmp"),
        )
        .unwrap();
    assert_eq!(out.stdout_str(), "s1 e1\n/tmp\n");
    let e = sb
        .exec(&ExecOptions::new(["true"]).cwd("/nope"))
        .unwrap_err();
    assert!(e.to_string().contains("/nope"), "{e}");
}

#[test]
fn stdin_is_piped_binary_safe_and_closable() {
    let Some(sb) = sandbox("stdin", "minimal") else {
        return;
    };
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let out = sb
        .exec(&ExecOptions::new(["cat"]).stdin(data.clone()))
        .unwrap();
    assert!(
        out.stdout == data,
        "cat echoed {} of {} bytes",
        out.stdout.len(),
        data.len()
    );

    // Streaming: write, close, then the command sees EOF and exits.
    let mut s = sb
        .exec_stream(&ExecOptions::new(["wc", "-c"]).stdin(Vec::new()))
        .unwrap();
    let mut input = s.input().unwrap();
    use std::io::Write;
    input.write_all(b"12345").unwrap();
    input.close().unwrap();
    let mut got = Vec::new();
    while let Some(ev) = s.next_event().unwrap() {
        match ev {
            ExecEvent::Stdout(b) => got.extend(b),
            ExecEvent::Exit(st) => assert!(st.success()),
            ExecEvent::Stderr(_) => {}
        }
    }
    assert_eq!(String::from_utf8_lossy(&got).trim(), "5");
}

#[test]
fn timeout_kills_a_tree_that_ignores_sigterm_and_says_so() {
    let Some(sb) = sandbox("timeout", "minimal") else {
        return;
    };
    let opts = ExecOptions::new([
        "sh",
        "-c",
        "trap '' TERM; (trap '' TERM; sleep 1000) & sleep 1000; echo never",
    ])
    .timeout(Duration::from_secs(2));
    match sb.exec(&opts) {
        Err(Error::CommandTimedOut { output, .. }) => {
            assert!(output.status.timed_out);
            assert_eq!(output.status.signal, Some(9));
            assert!(!output.stdout_str().contains("never"));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let left = sh(
        &sb,
        "for p in /proc/[0-9]*; do cat $p/comm 2>/dev/null; done | grep -c '^sleep$'",
    );
    assert_eq!(
        left.stdout_str().trim(),
        "0",
        "sleep processes survived the timeout"
    );
}

#[test]
fn signals_reach_a_running_command() {
    let Some(sb) = sandbox("signal", "minimal") else {
        return;
    };
    let mut s = sb
        .exec_stream(&ExecOptions::new(["sleep", "1000"]))
        .unwrap();
    s.input().unwrap().signal(libc::SIGINT).unwrap();
    let st = loop {
        match s.next_event().unwrap() {
            Some(ExecEvent::Exit(st)) => break st,
            Some(_) => {}
            None => panic!("no exit"),
        }
    };
    assert_eq!(st.signal, Some(libc::SIGINT));
}

#[test]
fn two_hundred_mib_of_output_arrive_complete_and_in_order() {
    let b = kiln::Sandbox::builder().image("minimal").memory_mib(512);
    let Some(sb) = sandbox_with("bulk_output", b) else {
        return;
    };
    // The guest hashes exactly what it sends; the host hashes what it received.
    let out = sh(
        &sb,
        "head -c 209715200 /dev/urandom > /tmp/o && cat /tmp/o && sha256sum /tmp/o >&2",
    );
    assert!(out.status.success(), "{}", out.stderr_str());
    assert_eq!(out.stdout.len(), 200 << 20);
    let want = out.stderr_str();
    assert_eq!(
        want.split_whitespace().next(),
        Some(sha256_hex(&out.stdout).as_str())
    );
}

#[test]
fn thirty_two_concurrent_execs_in_one_sandbox() {
    let Some(sb) = sandbox("concurrent", "minimal") else {
        return;
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let sb = &sb;
                s.spawn(move || {
                    let out = sh(
                        sb,
                        &format!("sleep 0.5; echo {i}; echo e{i} >&2; exit {}", i % 5),
                    );
                    assert_eq!(out.stdout_str(), format!("{i}\n"));
                    assert_eq!(out.stderr_str(), format!("e{i}\n"));
                    assert_eq!(out.status.code, Some(i % 5));
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

#[test]
fn a_fork_bomb_and_a_memory_hog_do_not_take_down_the_agent() {
    let b = kiln::Sandbox::builder().image("minimal").memory_mib(256);
    let Some(sb) = sandbox_with("hostile_guest", b) else {
        return;
    };
    let bomb = ExecOptions::new(["sh", "-c", "b() { b | b & }; b"]).timeout(Duration::from_secs(5));
    match sb.exec(&bomb) {
        Err(Error::CommandTimedOut { .. }) | Ok(_) => {}
        Err(e) => panic!("fork bomb: {e}"),
    }
    assert!(
        alive_within(&sb, 60),
        "the agent did not recover from the fork bomb"
    );

    // More memory than the guest has: the OOM killer takes the hog, not the agent.
    let hog = sh(&sb, "tail /dev/zero");
    assert!(!hog.status.success(), "the hog should have been killed");
    assert!(
        alive_within(&sb, 60),
        "the agent did not recover from the memory hog"
    );
}

/// Whether the agent answers a ping and runs a command within `secs` seconds: right
/// after a fork bomb or an OOM kill the guest may need a moment (the bomb's remains are
/// being killed and reaped; memory is being reclaimed).
fn alive_within(sb: &kiln::Sandbox, secs: u64) -> bool {
    kiln_e2e::wait_until(Duration::from_secs(secs), || {
        let echo = sb.exec(&ExecOptions::new(["echo", "alive"]));
        sb.ping().is_ok() && echo.is_ok_and(|o| o.stdout_str() == "alive\n")
    })
}

#[test]
fn pty_mode_gives_a_terminal_that_can_be_resized() {
    let Some(sb) = sandbox("pty", "minimal") else {
        return;
    };
    let opts = ExecOptions::new([
        "sh",
        "-c",
        "tty; stty size; read line; stty size; echo got:$line",
    ]);
    let mut s = sb
        .spawn_pty(
            &opts,
            kiln::WinSize {
                rows: 30,
                cols: 100,
            },
        )
        .unwrap();
    let mut input = s.input().unwrap();
    let mut seen = String::new();
    let mut resized = false;
    let status = loop {
        match s.next_event().unwrap() {
            Some(ExecEvent::Stdout(b)) => {
                seen.push_str(&String::from_utf8_lossy(&b));
                if !resized && seen.contains("30 100") {
                    resized = true;
                    input.resize(40, 120).unwrap();
                    // Give the resize a moment to land before the command reads on.
                    std::thread::sleep(Duration::from_millis(300));
                    use std::io::Write;
                    input.write_all(b"hello\n").unwrap();
                }
            }
            Some(ExecEvent::Exit(st)) => break st,
            Some(ExecEvent::Stderr(_)) => {}
            None => panic!("no exit"),
        }
    };
    assert!(status.success(), "{seen}");
    assert!(seen.contains("/dev/pts/"), "{seen}");
    assert!(seen.contains("40 120"), "{seen}");
    assert!(seen.contains("got:hello"), "{seen}");
}

#[test]
fn metadata_env_secrets_and_ping() {
    let Some(sb) = sandbox("metadata", "minimal") else {
        return;
    };
    let mut env = std::collections::BTreeMap::new();
    env.insert("LATER".to_string(), Some("yes".to_string()));
    sb.agent().set_env(env).unwrap();
    assert_eq!(sh(&sb, "echo $LATER").stdout_str(), "yes\n");
    sb.set_secret("api_key", "s3cr3t").unwrap();
    let st = sb.stat("/run/kiln/secrets/api_key").unwrap();
    assert_eq!(st.mode & 0o777, 0o600);
    assert_eq!(
        sb.read_file("/run/kiln/secrets/api_key").unwrap(),
        b"s3cr3t"
    );
    assert!(sb.set_secret("../escape", "x").is_err());
    assert!(sb.ping().unwrap() > Duration::ZERO);
}
