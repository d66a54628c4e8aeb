//! A minimal blocking HTTP/1.1 exchange over a unix or TCP socket: one request per
//! connection (`Connection: close`), a response body delimited by `Content-Length`,
//! chunked encoding, or the end of the connection. Enough for this API without an async
//! runtime in the client.

use std::io::{self, BufReader, Read, Take, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use super::chunked::{read_line, ChunkedReader};

/// Longest status or header line, and most header lines, accepted.
const MAX_HEADER_LINE: u64 = 16 * 1024;
const MAX_HEADERS: usize = 100;

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

/// A response body, read as it arrives.
pub struct Body(Framing);

enum Framing {
    Empty,
    Length(Take<BufReader<Stream>>),
    Chunked(ChunkedReader<BufReader<Stream>>),
    Eof(BufReader<Stream>),
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Framing::Empty => Ok(0),
            Framing::Length(r) => r.read(buf),
            Framing::Chunked(r) => r.read(buf),
            Framing::Eof(r) => r.read(buf),
        }
    }
}

/// A response whose body has not been read yet.
pub struct Response {
    pub status: u16,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn bytes(mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.body.read_to_end(&mut out)?;
        Ok(out)
    }
}

/// A request body with its content type.
pub enum ReqBody<'a> {
    None,
    Bytes(&'a str, &'a [u8]),
    /// Exactly `len` bytes read from the reader as they are sent (file uploads).
    Reader(&'a str, &'a mut dyn Read, u64),
}

impl<'a> From<Option<(&'a str, &'a [u8])>> for ReqBody<'a> {
    fn from(b: Option<(&'a str, &'a [u8])>) -> Self {
        match b {
            Some((t, b)) => ReqBody::Bytes(t, b),
            None => ReqBody::None,
        }
    }
}

/// One request.
pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query, already encoded.
    pub target: &'a str,
    pub headers: Vec<(&'a str, String)>,
    pub body: ReqBody<'a>,
}

/// Connects, sends `req`, and reads the status line and headers. A server that answers
/// before it has read the whole body (an error) and closes is heard: its answer is
/// read even when sending the rest failed.
pub fn send(to: &Target, timeout: Option<Duration>, req: Request) -> io::Result<Response> {
    let (mut stream, host) = match to {
        Target::Unix(p) => {
            let s = UnixStream::connect(p)?;
            s.set_read_timeout(timeout)?;
            s.set_write_timeout(timeout)?;
            (Stream::Unix(s), "localhost".to_string())
        }
        Target::Tcp(addr) => {
            let s = TcpStream::connect(addr.as_str())?;
            s.set_read_timeout(timeout)?;
            s.set_write_timeout(timeout)?;
            s.set_nodelay(true)?;
            (Stream::Tcp(s), addr.clone())
        }
    };
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n",
        req.method, req.target
    );
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let (ctype, len) = match &req.body {
        ReqBody::None => (None, 0),
        ReqBody::Bytes(t, b) => (Some(*t), b.len() as u64),
        ReqBody::Reader(t, _, n) => (Some(*t), *n),
    };
    if let Some(t) = ctype {
        head.push_str(&format!("Content-Type: {t}\r\n"));
    }
    if ctype.is_some() || matches!(req.method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let sent = match req.body {
        ReqBody::None => Ok(()),
        ReqBody::Bytes(_, b) => stream.write_all(b),
        ReqBody::Reader(_, r, n) => send_exactly(r, n, &mut stream),
    }
    .and_then(|()| stream.flush());
    let head_only = req.method == "HEAD";
    match sent {
        Ok(()) => read_head(BufReader::new(stream), head_only),
        Err(e) if is_disconnect(&e) => read_head(BufReader::new(stream), head_only).map_err(|_| e),
        Err(e) => Err(e),
    }
}

/// Copies exactly `n` bytes of `r` to `w`; a reader that ends early is an error (a file
/// that shrank while it was sent).
fn send_exactly(r: &mut dyn Read, n: u64, w: &mut impl Write) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), w)?;
    if copied < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the body ended after {copied} of {n} bytes (did the file shrink?)"),
        ));
    }
    Ok(())
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn read_head(mut r: BufReader<Stream>, head_only: bool) -> io::Result<Response> {
    let line = read_line(&mut r, MAX_HEADER_LINE)?;
    let status = parse_status(&line)?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(&mut r, MAX_HEADER_LINE)?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(bad(format!("more than {MAX_HEADERS} header lines")));
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let chunked =
        get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Empty
    } else if chunked {
        Framing::Chunked(ChunkedReader::new(r))
    } else if let Some(len) = get("content-length") {
        let len: u64 = len
            .parse()
            .map_err(|_| bad(format!("bad Content-Length {len:?}")))?;
        Framing::Length(r.take(len))
    } else {
        Framing::Eof(r)
    };
    Ok(Response {
        status,
        headers,
        body: Body(body),
    })
}

/// The code of `HTTP/1.1 200 OK`.
pub fn parse_status(line: &str) -> io::Result<u16> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(bad(format!("bad status line {line:?}")));
    }
    code.parse()
        .map_err(|_| bad(format!("bad status line {line:?}")))
}

/// Percent-encodes a query value (everything but unreserved characters and `/`).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_and_query_values() {
        assert_eq!(parse_status("HTTP/1.1 201 Created").unwrap(), 201);
        assert_eq!(parse_status("HTTP/1.0 404").unwrap(), 404);
        assert!(parse_status("SSH-2.0 200 x").is_err());
        assert!(parse_status("HTTP/1.1 2000 x").is_err());
        assert_eq!(encode("/tmp/a b&c=ü"), "/tmp/a%20b%26c%3D%C3%BC");
    }
}
