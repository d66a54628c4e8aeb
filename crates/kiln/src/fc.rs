//! A Firecracker-API client over a unix socket (one connection per request). It speaks
//! to `kiln-vmm` and, unchanged, to Firecracker itself.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot reach the VMM API at {sock}: {source}")]
    Io { sock: PathBuf, source: io::Error },
    #[error("VMM API {method} {path} failed ({status}): {message}")]
    Fault {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("VMM API sent a malformed response: {0}")]
    Protocol(String),
}

#[derive(Debug, Clone)]
pub struct FcClient {
    sock: PathBuf,
    timeout: Duration,
}

impl FcClient {
    pub fn new(sock: impl AsRef<Path>) -> Self {
        Self {
            sock: sock.as_ref().to_path_buf(),
            timeout: Duration::from_secs(120),
        }
    }

    /// How long a request may wait for the VMM's answer (default 120 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn io(&self) -> impl Fn(io::Error) -> ApiError + '_ {
        |source| ApiError::Io {
            sock: self.sock.clone(),
            source,
        }
    }

    /// Sends one request; returns the status and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String), ApiError> {
        let mut s = UnixStream::connect(&self.sock).map_err(self.io())?;
        s.set_read_timeout(Some(self.timeout)).map_err(self.io())?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).map_err(self.io())?;
        let mut r = BufReader::new(s);
        let mut status_line = String::new();
        r.read_line(&mut status_line).map_err(self.io())?;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| ApiError::Protocol(format!("status line '{}'", status_line.trim())))?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).map_err(self.io())? == 0 {
                break;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v
                        .trim()
                        .parse()
                        .map_err(|_| ApiError::Protocol(line.into()))?;
                }
            }
        }
        let mut buf = vec![0; length.min(1 << 20)];
        r.read_exact(&mut buf).map_err(self.io())?;
        Ok((status, String::from_utf8_lossy(&buf).into_owned()))
    }

    fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        ok: u16,
    ) -> Result<String, ApiError> {
        let (status, text) = self.request(method, path, body)?;
        if status == ok {
            return Ok(text);
        }
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v.get("fault_message")
                    .and_then(|m| m.as_str())
                    .map(String::from)
            })
            .unwrap_or(text);
        Err(ApiError::Fault {
            method: method.into(),
            path: path.into(),
            status,
            message,
        })
    }

    /// PUT expecting 204.
    pub fn put(&self, path: &str, body: &Value) -> Result<(), ApiError> {
        self.expect("PUT", path, Some(body), 204).map(|_| ())
    }

    /// PATCH expecting 204.
    pub fn patch(&self, path: &str, body: &Value) -> Result<(), ApiError> {
        self.expect("PATCH", path, Some(body), 204).map(|_| ())
    }

    /// GET expecting 200 and JSON.
    pub fn get(&self, path: &str) -> Result<Value, ApiError> {
        let text = self.expect("GET", path, None, 200)?;
        serde_json::from_str(&text).map_err(|e| ApiError::Protocol(e.to_string()))
    }

    pub fn action(&self, action_type: &str) -> Result<(), ApiError> {
        self.put(
            "/actions",
            &serde_json::json!({ "action_type": action_type }),
        )
    }
}
