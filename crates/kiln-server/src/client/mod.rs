//! A blocking client for `kiln serve` (for `kiln --remote` and load generators).
//!
//! ```no_run
//! use kiln_server::client::{Client, Output};
//! use kiln_server::api::{CreateSandbox, ExecRequest};
//! let c = Client::new("unix:///run/user/1000/kiln/kiln.sock", None)?;
//! let sb = c.create(&CreateSandbox { image: Some("minimal".into()), ..Default::default() })?;
//! let exit = c.exec(&sb.id, &ExecRequest::new(["echo", "hi"]), |out| {
//!     if let Output::Stdout(b) = out { print!("{}", String::from_utf8_lossy(b)) }
//! })?;
//! assert_eq!(exit.code, Some(0));
//! c.remove(&sb.id)?;
//! # Ok::<(), kiln_server::client::ClientError>(())
//! ```
//!
//! The URL is `unix:///path/to/kiln.sock` or `http://127.0.0.1:PORT`. The token is the
//! one given, else `$KILN_TOKEN`, else (for a unix socket) the `token` file beside the
//! socket, read at each request (so a client made before the server's first start
//! works once it runs).

mod calls;
pub mod chunked;
mod error;
pub mod http;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use calls::{ListFilter, Output};
pub use error::ClientError;
pub use http::ReqBody;
use http::{Request, Response, Target};

use crate::api::ErrorBody;

/// A connection target and credentials; each call opens its own connection.
#[derive(Debug, Clone)]
pub struct Client {
    url: String,
    target: Target,
    token: Option<String>,
    /// Read at each request when there is no `token`.
    token_file: Option<PathBuf>,
    timeout: Option<Duration>,
}

/// A response as it came, for callers that inspect statuses and bodies themselves.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Client {
    pub fn new(url: &str, token: Option<String>) -> Result<Client, ClientError> {
        let target = parse_url(url)?;
        let token = token.or_else(|| std::env::var("KILN_TOKEN").ok().filter(|t| !t.is_empty()));
        let token_file = match (&token, &target) {
            (None, Target::Unix(p)) => p.parent().map(|d| d.join("token")),
            _ => None,
        };
        Ok(Client {
            url: url.to_string(),
            target,
            token,
            token_file,
            timeout: None,
        })
    }

    /// A read/write timeout per socket operation (default none: an exec may take long).
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Replaces the token (`None`: send no Authorization header).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self.token_file = None;
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one request; any status comes back as it is.
    pub fn send(
        &self,
        method: &str,
        target: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Response, ClientError> {
        self.send_body(method, target, body.into())
    }

    /// [`Client::send`] with any kind of body (a reader streams an upload).
    pub fn send_body<'a>(
        &self,
        method: &'a str,
        target: &'a str,
        body: ReqBody<'a>,
    ) -> Result<Response, ClientError> {
        let mut headers = vec![("Accept", "application/json".to_string())];
        let token = self
            .token
            .clone()
            .or_else(|| self.token_file.as_deref().and_then(read_token));
        if let Some(t) = token {
            headers.push(("Authorization", format!("Bearer {t}")));
        }
        let req = Request {
            method,
            target,
            headers,
            body,
        };
        http::send(&self.target, self.timeout, req).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::PermissionDenied => ClientError::Connect {
                url: self.url.clone(),
                source: e,
            },
            _ => ClientError::Io(e),
        })
    }

    /// [`Client::send`], reading the whole body.
    pub fn raw(
        &self,
        method: &str,
        target: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<RawResponse, ClientError> {
        let r = self.send(method, target, body)?;
        let status = r.status;
        let content_type = r.header("content-type").map(str::to_string);
        Ok(RawResponse {
            status,
            content_type,
            body: r.bytes()?,
        })
    }

    /// Sends a request and turns an error status into [`ClientError::Api`].
    fn call(
        &self,
        method: &str,
        target: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Response, ClientError> {
        self.call_body(method, target, body.into())
    }

    /// [`Client::call`] with any kind of body.
    fn call_body<'a>(
        &self,
        method: &'a str,
        target: &'a str,
        body: ReqBody<'a>,
    ) -> Result<Response, ClientError> {
        let r = self.send_body(method, target, body)?;
        if r.status < 400 {
            return Ok(r);
        }
        let status = r.status;
        let bytes = r.bytes()?;
        Err(api_error(status, &bytes))
    }

    /// A JSON call: `body` is serialised, the answer parsed as `T`.
    fn json<T: DeserializeOwned>(
        &self,
        method: &str,
        target: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let bytes = match body {
            Some(b) => {
                Some(serde_json::to_vec(b).map_err(|e| ClientError::Protocol(e.to_string()))?)
            }
            None => None,
        };
        let r = self.call(
            method,
            target,
            bytes.as_deref().map(|b| ("application/json", b)),
        )?;
        let bytes = r.bytes()?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Protocol(format!(
                "{method} {target}: {e}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })
    }

    /// A call whose answer has no body worth reading.
    fn empty(&self, method: &str, target: &str) -> Result<(), ClientError> {
        self.call(method, target, None)?.bytes()?;
        Ok(())
    }
}

/// The error of an error response.
pub fn api_error(status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => ClientError::Api {
            status,
            code: b.error.code,
            message: b.error.message,
            extra: b.error.extra,
        },
        Err(_) => ClientError::Api {
            status,
            code: "unknown".into(),
            message: String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned(),
            extra: Default::default(),
        },
    }
}

fn parse_url(url: &str) -> Result<Target, ClientError> {
    if let Some(path) = url.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(ClientError::Config(format!(
                "{url}: use unix:///absolute/path/to/kiln.sock"
            )));
        }
        return Ok(Target::Unix(PathBuf::from(path)));
    }
    if let Some(rest) = url.strip_prefix("http://") {
        let hostport = rest.strip_suffix('/').unwrap_or(rest);
        if hostport.is_empty() || hostport.contains('/') || !hostport.contains(':') {
            return Err(ClientError::Config(format!(
                "{url}: use http://HOST:PORT (no path)"
            )));
        }
        return Ok(Target::Tcp(hostport.to_string()));
    }
    Err(ClientError::Config(format!(
        "{url}: use unix:///path/to/kiln.sock or http://127.0.0.1:PORT"
    )))
}

/// The token in a token file (the server's default one sits beside its socket).
fn read_token(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_unix_sockets_or_http_host_ports() {
        assert_eq!(
            parse_url("unix:///run/kiln.sock").unwrap(),
            Target::Unix("/run/kiln.sock".into())
        );
        assert_eq!(
            parse_url("http://127.0.0.1:8080/").unwrap(),
            Target::Tcp("127.0.0.1:8080".into())
        );
        for bad in [
            "unix://rel.sock",
            "http://host",
            "http://h:1/api",
            "https://h:1",
            "/x",
        ] {
            assert!(
                matches!(parse_url(bad), Err(ClientError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn error_bodies_become_api_errors() {
        let e = api_error(
            409,
            br#"{"error":{"code":"invalid_transition","message":"m","from":"paused"}}"#,
        );
        assert_eq!(e.status(), Some(409));
        assert_eq!(e.code(), Some("invalid_transition"));
        let ClientError::Api { extra, .. } = &e else {
            panic!()
        };
        assert_eq!(extra["from"], "paused");
        let e = api_error(502, b"Bad Gateway");
        assert_eq!(e.code(), Some("unknown"));
        assert!(e.to_string().contains("Bad Gateway"));
    }
}
