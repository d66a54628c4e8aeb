//! The guest side of MMDS as Firecracker speaks it, as pure functions: [`parse`] turns
//! the bytes a client sent so far into a [`Request`] (or says more are needed, or fails
//! with the response to send), [`respond`] answers it from the [`Store`].
//!
//! - `GET /path/to/key`: a string value is sent as text; an object as the list of its
//!   keys, one a line, an object's key with a trailing `/` (IMDS format), or with
//!   `Accept: application/json` (unless `imds_compat`) the subtree as JSON. Other value
//!   types in IMDS format are a 501, as in Firecracker. Unknown paths are a 404.
//! - `PUT /latest/api/token` with `X-metadata-token-ttl-seconds: 1..=21600` returns a
//!   session token; V2 requires it as `X-metadata-token` on every GET (401 without or
//!   with an invalid or expired one); V1 ignores it. The `X-aws-ec2-metadata-token*`
//!   spellings are accepted too. A token request carrying `X-Forwarded-For` is refused.
//!
//! Everything from the guest is bounded: the request line, each header and their count,
//! the head as a whole and the body (which MMDS never needs).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::token::MAX_TTL_SECS;
use super::{MmdsVersion, Store};

/// Longest request head (request line and headers with their line ends).
pub const MAX_HEAD: usize = 8192;
/// Longest request line.
pub const MAX_REQUEST_LINE: usize = 2048;
/// Most headers in one request.
pub const MAX_HEADERS: usize = 32;
/// Largest body accepted (and ignored).
pub const MAX_BODY: usize = 4096;

pub const TOKEN_PATH: &str = "/latest/api/token";

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// Bytes of the whole request, body included (what to consume).
    pub len: usize,
}

impl Request {
    fn header(&self, names: &[&str]) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| names.contains(&n.as_str()))
            .map(|(_, v)| v.as_str())
    }
}

/// One response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub allow: bool,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain",
            body: body.into(),
            allow: false,
        }
    }

    fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            413 => "Payload Too Large",
            431 => "Request Header Fields Too Large",
            501 => "Not Implemented",
            _ => "Error",
        }
    }

    /// The response as sent (the connection is closed after it).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason(),
            self.content_type,
            self.body.len()
        );
        if self.allow {
            head.push_str("Allow: GET, PUT\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }

    pub fn timeout() -> Self {
        Self::text(408, "The request did not arrive in time.")
    }
}

/// What the bytes so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole request yet (and within bounds).
    Incomplete,
    Request(Request),
    /// Malformed or over a bound: send this and close.
    Fail(Response),
}

fn bad(msg: &str) -> Parsed {
    Parsed::Fail(Response::text(400, msg))
}

/// Parses the first request in `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, p + 4));
    let Some((head_len, body_at)) = end else {
        if buf.len() > MAX_HEAD {
            return Parsed::Fail(Response::text(431, "The request head is too long."));
        }
        let first_line = buf.split(|&b| b == b'\n').next().unwrap_or(&[]);
        if first_line.len() > MAX_REQUEST_LINE {
            return Parsed::Fail(Response::text(431, "The request line is too long."));
        }
        return Parsed::Incomplete;
    };
    if head_len > MAX_HEAD {
        return Parsed::Fail(Response::text(431, "The request head is too long."));
    }
    let Ok(head) = std::str::from_utf8(&buf[..head_len]) else {
        return bad("The request head is not valid UTF-8.");
    };
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("");
    if line.len() > MAX_REQUEST_LINE {
        return Parsed::Fail(Response::text(431, "The request line is too long."));
    }
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return bad("Malformed request line.");
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return bad("Unsupported HTTP version; use HTTP/1.1.");
    }
    if !target.starts_with('/') || method.is_empty() {
        return bad("Malformed request line.");
    }
    let mut headers = Vec::new();
    for l in lines {
        if headers.len() == MAX_HEADERS {
            return Parsed::Fail(Response::text(431, "Too many headers."));
        }
        let Some((name, value)) = l.split_once(':') else {
            return bad("Malformed header line.");
        };
        if name.is_empty() || name.contains(' ') {
            return bad("Malformed header line.");
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path: target.split(['?', '#']).next().unwrap_or("/").to_string(),
        headers,
        len: body_at,
    };
    if req.header(&["transfer-encoding"]).is_some() {
        return bad("Transfer-Encoding is not supported; MMDS requests have no body.");
    }
    let body = match req.header(&["content-length"]) {
        None => 0,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= MAX_BODY => n,
            Ok(_) => return Parsed::Fail(Response::text(413, "The request body is too large.")),
            Err(_) => return bad("Invalid Content-Length."),
        },
    };
    if buf.len() < body_at + body {
        return Parsed::Incomplete;
    }
    req.len = body_at + body;
    Parsed::Request(req)
}

/// Walks `path` (`/a/b/0`) into `v`: object keys and array indices; empty segments and
/// a trailing `/` are ignored.
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .try_fold(v, |cur, seg| match cur {
            Value::Object(m) => m.get(seg),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        })
}

/// The IMDS (text) form of a value, if it has one.
fn imds(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => Some(
            m.iter()
                .map(|(k, v)| {
                    if v.is_object() {
                        format!("{k}/")
                    } else {
                        k.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

fn put_token(store: &mut Store, req: &Request, now: Instant) -> Response {
    if req.header(&["x-forwarded-for"]).is_some() {
        return Response::text(400, "MMDS token requests must not carry X-Forwarded-For.");
    }
    let Some(ttl) = req.header(&[
        "x-metadata-token-ttl-seconds",
        "x-aws-ec2-metadata-token-ttl-seconds",
    ]) else {
        return Response::text(
            400,
            "Token time to live value not found. Use `X-metadata-token-ttl-seconds` header \
             to specify the token's lifetime.",
        );
    };
    match ttl.parse::<u64>() {
        Ok(s) if (1..=MAX_TTL_SECS).contains(&s) => {
            Response::text(200, store.tokens.issue(now, Duration::from_secs(s)))
        }
        _ => Response::text(
            400,
            format!(
                "Invalid time to live value provided for token: {ttl}. Please provide a \
                 value between 1 and {MAX_TTL_SECS}."
            ),
        ),
    }
}

fn get(store: &Store, req: &Request, now: Instant) -> Response {
    if store.version == MmdsVersion::V2 {
        match req.header(&["x-metadata-token", "x-aws-ec2-metadata-token"]) {
            None => {
                return Response::text(
                    401,
                    "No MMDS token provided. Use `X-metadata-token` header to specify the \
                     session token.",
                )
            }
            Some(t) if !store.tokens.valid(t, now) => {
                return Response::text(401, "MMDS token not valid.")
            }
            Some(_) => {}
        }
    }
    let Some(v) = lookup(store.data(), &req.path) else {
        return Response::text(404, format!("Resource not found: {}.", req.path));
    };
    let json = !store.imds_compat
        && req
            .header(&["accept"])
            .is_some_and(|a| a.contains("application/json"));
    if json {
        return Response {
            status: 200,
            content_type: "application/json",
            body: v.to_string(),
            allow: false,
        };
    }
    match imds(v) {
        Some(body) => Response::text(200, body),
        None => Response::text(
            501,
            "Cannot retrieve value. The value has an unsupported type.",
        ),
    }
}

/// Answers one request at time `now`.
pub fn respond(store: &mut Store, req: &Request, now: Instant) -> Response {
    match req.method.as_str() {
        "PUT" if req.path.trim_end_matches('/') == TOKEN_PATH => put_token(store, req, now),
        "GET" => get(store, req, now),
        _ => Response {
            allow: true,
            ..Response::text(405, "Not allowed HTTP method.")
        },
    }
}
