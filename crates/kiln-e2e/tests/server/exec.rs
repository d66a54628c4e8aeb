//! Exec through the API: streamed, collected, and killed when its client leaves.

use super::*;

pub(super) fn exec_output_is_streamed(t: &mut Tour) {
    let c = &t.c;
    // Streamed exec: output arrives while the command runs.
    let t0 = Instant::now();
    let (mut out, mut errout, mut early_at) = (Vec::new(), Vec::new(), None);
    let cmd = "echo $GREETING early; echo oops >&2; sleep 2; echo late; exit 3";
    let exit = c
        .exec("srv-a", &ExecRequest::new(["sh", "-c", cmd]), |o| match o {
            Output::Stdout(b) => {
                early_at.get_or_insert_with(|| t0.elapsed());
                out.extend_from_slice(b)
            }
            Output::Stderr(b) => errout.extend_from_slice(b),
        })
        .unwrap();
    let total = t0.elapsed();
    assert_eq!(String::from_utf8_lossy(&out), "hello early\nlate\n");
    assert_eq!(String::from_utf8_lossy(&errout), "oops\n");
    assert_eq!(
        (exit.code, exit.signal, exit.timed_out),
        (Some(3), None, false)
    );
    let early_at = early_at.expect("stdout arrived");
    assert!(
        total - early_at >= Duration::from_millis(1500),
        "the early line came {early_at:?} after the start and the end {total:?}: it was not streamed"
    );
}

/// How many processes in srv-a run `sleep 1001` (a /proc scan in the guest; the
/// pattern does not match the scanning shell's own command line).
pub(super) fn sleepers(c: &Client) -> String {
    let scan = "cat /proc/[0-9]*/cmdline | tr '\\0' ' ' | grep -o 'sleep 100[1]' | wc -l";
    let out = c
        .exec_collect(
            "srv-a",
            &ExecRequest::new(["sh", "-c", scan]),
            OutputEncoding::Text,
        )
        .unwrap();
    out.stdout.trim().to_string()
}

pub(super) fn exec_client_gone(t: &mut Tour) {
    use std::io::{Read, Write};
    // A raw request, so the client can go away after the first line.
    let state = &t.served.state.0;
    let token = std::fs::read_to_string(state.join("token")).unwrap();
    let body = serde_json::to_vec(&ExecRequest::new([
        "sh",
        "-c",
        "echo started; exec sleep 1001",
    ]))
    .unwrap();
    let mut sock = std::os::unix::net::UnixStream::connect(state.join("kiln.sock")).unwrap();
    write!(
        sock,
        "POST /v1/sandboxes/srv-a/exec HTTP/1.1\r\nHost: kiln\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        token.trim(),
        body.len()
    )
    .unwrap();
    sock.write_all(&body).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"type\":\"stdout\"") {
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        sleepers(&t.c),
        "1",
        "the command runs while its client is there"
    );
    drop(sock);
    let gone = wait_until(Duration::from_secs(30), || sleepers(&t.c) == "0");
    assert!(
        gone,
        "the command outlived its client: {} left",
        sleepers(&t.c)
    );
}

pub(super) fn collected_exec(t: &mut Tour) {
    let c = &t.c;
    // Collected exec: a non-zero exit, stdin, a timeout.
    let r = c
        .exec_collect(
            "srv-a",
            &ExecRequest::new(["sh", "-c", "echo out; exit 5"]),
            OutputEncoding::Text,
        )
        .unwrap();
    assert_eq!((r.stdout.as_str(), r.exit_code), ("out\n", Some(5)));
    let mut cat = ExecRequest::new(["cat"]);
    cat.stdin = Some("from stdin".into());
    let r = c
        .exec_collect("srv-a", &cat, OutputEncoding::Base64)
        .unwrap();
    assert_eq!(r.stdout, "ZnJvbSBzdGRpbg==");
    let mut slow = ExecRequest::new(["sleep", "30"]);
    slow.timeout_secs = Some(1.0);
    let r = c
        .exec_collect("srv-a", &slow, OutputEncoding::Text)
        .unwrap();
    assert!(r.timed_out && r.exit_code.is_none(), "{r:?}");
}
