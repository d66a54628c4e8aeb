//! A tiny QMP client: connect, read the greeting, `qmp_capabilities`, one command,
//! its `return`. Asynchronous events are skipped; every read has a timeout and every
//! line a length limit (QEMU runs guest-facing code: its output is not trusted).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

/// Longest QMP line we read.
const MAX_LINE: u64 = 1 << 20;

/// Runs `command` (with `arguments`, if any) and returns its `return` value; the
/// error says what failed.
pub fn execute(
    sock: &Path,
    command: &str,
    arguments: Option<Value>,
    timeout: Duration,
) -> Result<Value, String> {
    let stream =
        UnixStream::connect(sock).map_err(|e| format!("connect {}: {e}", sock.display()))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let greeting = read_message(&mut reader)?;
    if greeting.get("QMP").is_none() {
        return Err(format!("not a QMP greeting: {greeting}"));
    }
    call(
        &mut reader,
        &mut writer,
        &json!({ "execute": "qmp_capabilities" }),
    )?;
    let mut msg = json!({ "execute": command });
    if let Some(a) = arguments {
        msg["arguments"] = a;
    }
    call(&mut reader, &mut writer, &msg)
}

fn call(reader: &mut impl BufRead, writer: &mut impl Write, msg: &Value) -> Result<Value, String> {
    let mut line = msg.to_string();
    line.push('\n');
    writer
        .write_all(line.as_bytes())
        .map_err(|e| format!("send {}: {e}", msg["execute"]))?;
    loop {
        let m = read_message(reader)?;
        if let Some(r) = m.get("return") {
            return Ok(r.clone());
        }
        if let Some(e) = m.get("error") {
            let desc = e
                .get("desc")
                .and_then(Value::as_str)
                .unwrap_or("no description");
            return Err(format!("{}: {desc}", msg["execute"]));
        }
        // An event ({"event": ...}): not ours.
    }
}

/// One JSON line, at most [`MAX_LINE`] bytes.
fn read_message(reader: &mut impl BufRead) -> Result<Value, String> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("QMP read: {e}"))?;
    if n == 0 {
        return Err("QMP closed the connection".into());
    }
    if !line.ends_with(b"\n") {
        return Err(format!("QMP line over {MAX_LINE} bytes"));
    }
    serde_json::from_slice(&line).map_err(|e| format!("QMP sent bad JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake QEMU that greets, answers capabilities, sends an event, then answers.
    fn fake(name: &str, answer: &'static str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-qmp-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("qmp.sock");
        let l = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("qmp_capabilities"));
            w.write_all(b"{\"return\": {}}\n").unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            w.write_all(b"{\"event\": \"STOP\", \"timestamp\": {}}\n")
                .unwrap();
            w.write_all(answer.as_bytes()).unwrap();
        });
        sock
    }

    #[test]
    fn a_command_returns_its_value_past_events() {
        let sock = fake("ok", "{\"return\": {\"status\": \"paused\"}}\n");
        let v = execute(&sock, "query-status", None, Duration::from_secs(5)).unwrap();
        assert_eq!(v["status"], "paused");
        let _ = std::fs::remove_dir_all(sock.parent().unwrap());
    }

    #[test]
    fn an_error_reply_is_an_error() {
        let sock = fake(
            "err",
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n",
        );
        let e = execute(&sock, "stop", None, Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("nope"), "{e}");
        let _ = std::fs::remove_dir_all(sock.parent().unwrap());
    }
}
