//! Decoding a `Transfer-Encoding: chunked` body as it arrives: each `read` returns data
//! of the current chunk as soon as it is there, so a streamed response (exec output,
//! followed logs) is seen line by line, not at its end.

use std::io::{self, BufRead, Read};

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: u64 = 4096;

enum Step {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    Done,
}

/// Reads the decoded body out of a chunked stream.
pub struct ChunkedReader<R> {
    inner: R,
    step: Step,
}

impl<R: BufRead> ChunkedReader<R> {
    pub fn new(inner: R) -> Self {
        ChunkedReader {
            inner,
            step: Step::Size,
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// One CRLF- (or LF-) terminated line without its terminator; EOF first is an error.
pub fn read_line<R: BufRead>(r: &mut R, max: u64) -> io::Result<String> {
    let mut line = Vec::new();
    r.by_ref().take(max + 2).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(if line.len() as u64 >= max {
            invalid(format!("a line longer than {max} bytes"))
        } else {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed mid-message",
            )
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| invalid("a line that is not UTF-8".into()))
}

/// The size of a chunk-size line (`1a`, `1a;ext=1`).
fn chunk_size(line: &str) -> io::Result<u64> {
    let hex = line.split(';').next().unwrap_or("").trim();
    if hex.is_empty() || hex.len() > 15 {
        return Err(invalid(format!("bad chunk size {line:?}")));
    }
    u64::from_str_radix(hex, 16).map_err(|_| invalid(format!("bad chunk size {line:?}")))
}

impl<R: BufRead> Read for ChunkedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.step {
                Step::Done => return Ok(0),
                Step::Size => {
                    let n = chunk_size(&read_line(&mut self.inner, MAX_LINE)?)?;
                    if n == 0 {
                        // Trailers, up to the empty line.
                        while !read_line(&mut self.inner, MAX_LINE)?.is_empty() {}
                        self.step = Step::Done;
                    } else {
                        self.step = Step::Data(n);
                    }
                }
                Step::Data(left) => {
                    if buf.is_empty() {
                        return Ok(0);
                    }
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the connection closed inside a chunk",
                        ));
                    }
                    let left = left - n as u64;
                    self.step = if left == 0 {
                        Step::DataEnd
                    } else {
                        Step::Data(left)
                    };
                    return Ok(n);
                }
                Step::DataEnd => {
                    let rest = read_line(&mut self.inner, MAX_LINE)?;
                    if !rest.is_empty() {
                        return Err(invalid(format!("{rest:?} after a chunk's data")));
                    }
                    self.step = Step::Size;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn decode(wire: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ChunkedReader::new(BufReader::new(wire)).read_to_end(&mut out)?;
        Ok(out)
    }

    /// A reader that hands out at most `n` bytes per read, like a socket.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn chunks_extensions_and_trailers_decode() {
        assert_eq!(
            decode(b"5\r\nhello\r\n1;x=y\r\n!\r\n0\r\n\r\n").unwrap(),
            b"hello!"
        );
        assert_eq!(
            decode(b"A\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n").unwrap(),
            b"0123456789"
        );
        assert_eq!(decode(b"0\r\n\r\n").unwrap(), b"");
        assert_eq!(
            decode(b"3\nabc\n0\n\n").unwrap(),
            b"abc",
            "bare LF is tolerated"
        );
    }

    #[test]
    fn byte_by_byte_arrival_decodes_the_same() {
        let wire = b"5\r\nab\ncd\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
        for step in [1, 2, 3, 7] {
            let mut r = ChunkedReader::new(BufReader::with_capacity(4, Trickle(wire, step)));
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, b"ab\ncd0123456789abcdef", "step {step}");
        }
    }

    #[test]
    fn data_is_returned_before_the_next_chunk_arrives() {
        // Only the first chunk has arrived: a read returns it instead of waiting.
        let mut r = ChunkedReader::new(BufReader::new(&b"3\r\nabc\r\n"[..]));
        let mut buf = [0u8; 16];
        assert_eq!(r.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(
            r.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn malformed_and_truncated_bodies_are_errors() {
        for (wire, kind) in [
            (&b"zz\r\nabc\r\n0\r\n\r\n"[..], io::ErrorKind::InvalidData),
            (b"\r\n", io::ErrorKind::InvalidData),
            (b"3\r\nabcX\r\n0\r\n\r\n", io::ErrorKind::InvalidData),
            (b"ffffffffffffffffff\r\n", io::ErrorKind::InvalidData),
            (b"5\r\nab", io::ErrorKind::UnexpectedEof),
            (b"5", io::ErrorKind::UnexpectedEof),
            (b"0\r\nX-T: 1\r\n", io::ErrorKind::UnexpectedEof),
        ] {
            let e = decode(wire).unwrap_err();
            assert_eq!(e.kind(), kind, "{:?}: {e}", String::from_utf8_lossy(wire));
        }
        let long = format!("{}\r\n", "1".repeat(5000));
        assert_eq!(
            decode(long.as_bytes()).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
