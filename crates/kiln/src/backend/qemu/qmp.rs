//! A tiny QMP client: connect, read the greeting, `qmp_capabilities`, one command,
//! its `return`. Asynchronous events are skipped; every read has a timeout and every
//! line a length limit (QEMU runs guest-facing code: its output is not trusted).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

/// Longest QMP line we read.
const MAX_LINE: u64 = 1 << 20;

/// What went wrong talking QMP; `command` is the command's name as JSON (`"stop"`).
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("connect {}: {source}", path.display())]
    Connect { path: PathBuf, source: io::Error },
    /// Setting the socket's timeouts or cloning it failed.
    #[error("{0}")]
    Socket(io::Error),
    #[error("not a QMP greeting: {0}")]
    NotQmp(Value),
    #[error("send {command}: {source}")]
    Send { command: Value, source: io::Error },
    /// QEMU answered the command with an error.
    #[error("{command}: {desc}")]
    Refused { command: Value, desc: String },
    #[error("QMP read: {0}")]
    Read(io::Error),
    #[error("QMP closed the connection")]
    Closed,
    #[error("QMP line over {} bytes", MAX_LINE)]
    LineTooLong,
    #[error("QMP sent bad JSON: {0}")]
    BadJson(serde_json::Error),
}

/// Runs `command` (with `arguments`, if any) and returns its `return` value; the
/// error says what failed.
pub fn execute(
    sock: &Path,
    command: &str,
    arguments: Option<Value>,
    timeout: Duration,
) -> Result<Value, QmpError> {
    let stream = UnixStream::connect(sock).map_err(|source| QmpError::Connect {
        path: sock.to_path_buf(),
        source,
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(QmpError::Socket)?;
    let mut writer = stream.try_clone().map_err(QmpError::Socket)?;
    let mut reader = BufReader::new(stream);
    let greeting = read_message(&mut reader)?;
    if greeting.get("QMP").is_none() {
        return Err(QmpError::NotQmp(greeting));
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

fn call(
    reader: &mut impl BufRead,
    writer: &mut impl Write,
    msg: &Value,
) -> Result<Value, QmpError> {
    let mut line = msg.to_string();
    line.push('\n');
    writer
        .write_all(line.as_bytes())
        .map_err(|source| QmpError::Send {
            command: msg["execute"].clone(),
            source,
        })?;
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
            return Err(QmpError::Refused {
                command: msg["execute"].clone(),
                desc: desc.into(),
            });
        }
        // An event ({"event": ...}): not ours.
    }
}

/// One JSON line, at most [`MAX_LINE`] bytes.
fn read_message(reader: &mut impl BufRead) -> Result<Value, QmpError> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .map_err(QmpError::Read)?;
    if n == 0 {
        return Err(QmpError::Closed);
    }
    if !line.ends_with(b"\n") {
        return Err(QmpError::LineTooLong);
    }
    serde_json::from_slice(&line).map_err(QmpError::BadJson)
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
        let e = execute(&sock, "stop", None, Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
        let _ = std::fs::remove_dir_all(sock.parent().unwrap());
    }

    #[test]
    fn errors_read_as_before() {
        let refused = QmpError::Refused {
            command: json!("stop"),
            desc: "nope".into(),
        };
        assert_eq!(refused.to_string(), "\"stop\": nope");
        assert_eq!(
            QmpError::LineTooLong.to_string(),
            "QMP line over 1048576 bytes"
        );
        let mut r = BufReader::new(&b""[..]);
        assert_eq!(
            read_message(&mut r).unwrap_err().to_string(),
            "QMP closed the connection"
        );
        let mut r = BufReader::new(&b"{oops\n"[..]);
        let e = read_message(&mut r).unwrap_err().to_string();
        assert!(e.starts_with("QMP sent bad JSON: "), "{e}");
    }
}
