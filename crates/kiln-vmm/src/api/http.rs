//! Just enough HTTP/1.1 for a control socket: one request at a time per connection,
//! keep-alive, `Content-Length` bodies only. Every size a client controls is bounded
//! (every time too: [`super::server`] reads with deadlines).

use std::io::{self, BufRead, Read, Write};

/// Longest request line plus headers we accept.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body we accept (Firecracker's API bodies are small JSON objects).
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: String,
    pub keep_alive: bool,
}

/// What went wrong reading a request: a reply-able client error or a dead connection.
#[derive(Debug)]
pub enum ReadError {
    Closed,
    Io(io::Error),
    Bad(String),
}

pub struct Response {
    pub status: u16,
    pub body: Option<String>,
}

impl Response {
    pub fn no_content() -> Self {
        Self {
            status: 204,
            body: None,
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            body: Some(value.to_string()),
        }
    }

    /// Firecracker's error shape.
    pub fn fault(status: u16, msg: impl std::fmt::Display) -> Self {
        Self::json(
            status,
            &serde_json::json!({ "fault_message": msg.to_string() }),
        )
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// Reads one line (CRLF or LF), counting it against the head budget.
fn read_line<R: BufRead>(r: &mut R, budget: &mut usize) -> Result<String, ReadError> {
    let mut line = Vec::new();
    let n = r
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(ReadError::Io)?;
    if n == 0 {
        return Err(ReadError::Closed);
    }
    if n > *budget || !line.ends_with(b"\n") {
        return Err(ReadError::Bad(format!(
            "request head is longer than {MAX_HEAD} bytes or truncated"
        )));
    }
    *budget -= n;
    let s =
        String::from_utf8(line).map_err(|_| ReadError::Bad("request head is not UTF-8".into()))?;
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

pub fn read_request<R: BufRead>(r: &mut R) -> Result<Request, ReadError> {
    let mut budget = MAX_HEAD;
    let mut first = read_line(r, &mut budget)?;
    // Tolerate stray blank lines between pipelined requests.
    while first.is_empty() {
        first = read_line(r, &mut budget)?;
    }
    let mut parts = first.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(format!("malformed request line '{first}'")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Bad(format!(
            "unsupported protocol '{version}'; use HTTP/1.1"
        )));
    }
    let mut keep_alive = version == "HTTP/1.1";
    let mut length = 0usize;
    loop {
        let line = read_line(r, &mut budget)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Bad(format!("malformed header line '{line}'")));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = value
                    .parse()
                    .map_err(|_| ReadError::Bad(format!("bad Content-Length '{value}'")))?;
                if length > MAX_BODY {
                    return Err(ReadError::Bad(format!(
                        "request body of {length} bytes is larger than the {MAX_BODY}-byte limit"
                    )));
                }
            }
            "transfer-encoding" => {
                return Err(ReadError::Bad(
                    "chunked request bodies are not supported; send Content-Length".into(),
                ))
            }
            "connection" => keep_alive = !value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).map_err(ReadError::Io)?;
    let body =
        String::from_utf8(body).map_err(|_| ReadError::Bad("request body is not UTF-8".into()))?;
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        body,
        keep_alive,
    })
}

pub fn write_response<W: Write>(w: &mut W, resp: &Response, keep_alive: bool) -> io::Result<()> {
    let body = resp.body.as_deref().unwrap_or("");
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nServer: kiln-vmm\r\nContent-Length: {}\r\n",
        resp.status,
        reason(resp.status),
        body.len()
    );
    if resp.body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    w.write_all(body.as_bytes())?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use super::*;

    fn parse(raw: &str) -> Result<Request, ReadError> {
        read_request(&mut BufReader::new(raw.as_bytes()))
    }

    #[test]
    fn parses_a_put_with_body() {
        let r = parse("PUT /actions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.body.as_str()),
            ("PUT", "/actions", "{}")
        );
        assert!(r.keep_alive);
        let r = parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!r.keep_alive);
    }

    #[test]
    fn rejects_oversized_and_malformed_requests() {
        let big = format!("PUT / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        assert!(matches!(parse(&big), Err(ReadError::Bad(m)) if m.contains("limit")));
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(parse(&long), Err(ReadError::Bad(_))));
        assert!(matches!(parse("GARBAGE\r\n\r\n"), Err(ReadError::Bad(_))));
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Err(ReadError::Bad(_))
        ));
        assert!(matches!(parse(""), Err(ReadError::Closed)));
        // Body shorter than announced: the connection is broken, not a panic.
        assert!(matches!(
            parse("PUT / HTTP/1.1\r\nContent-Length: 9\r\n\r\n{}"),
            Err(ReadError::Io(_))
        ));
    }
}
