//! Copying bytes both ways between two stream sockets with half-close: when one side
//! ends its sending (EOF), the other side's write half is shut down and the opposite
//! direction carries on until it ends too. An error either way ends both.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;

/// Copy buffer per direction.
const BUF: usize = 64 << 10;

/// A connected stream socket that can be cloned and half-closed.
pub trait Duplex: Read + Write + Send + 'static {
    fn try_clone_box(&self) -> io::Result<Box<dyn Duplex>>;
    fn shutdown(&self, how: Shutdown);
}

impl Duplex for TcpStream {
    fn try_clone_box(&self) -> io::Result<Box<dyn Duplex>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn shutdown(&self, how: Shutdown) {
        let _ = TcpStream::shutdown(self, how);
    }
}

impl Duplex for UnixStream {
    fn try_clone_box(&self) -> io::Result<Box<dyn Duplex>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn shutdown(&self, how: Shutdown) {
        let _ = UnixStream::shutdown(self, how);
    }
}

/// Bytes each way when a splice ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spliced {
    pub a_to_b: u64,
    pub b_to_a: u64,
}

/// Splices `a` and `b` until both directions have ended (`b → a` on a second thread);
/// `b_prefix` is written to `a` first (bytes already read from `b`).
pub fn splice(a: Box<dyn Duplex>, b: Box<dyn Duplex>, b_prefix: &[u8]) -> io::Result<Spliced> {
    let (mut a_w, mut b_r) = (a.try_clone_box()?, b.try_clone_box()?);
    let (mut a_r, mut b_w) = (a, b);
    if !b_prefix.is_empty() {
        a_w.write_all(b_prefix)?;
    }
    let back = std::thread::Builder::new()
        .name("splice".into())
        .stack_size(128 << 10)
        .spawn(move || {
            let r = pump(&mut *b_r, &mut *a_w);
            finish(&r, &*b_r, &*a_w);
            r
        })?;
    let there = pump(&mut *a_r, &mut *b_w);
    finish(&there, &*a_r, &*b_w);
    let back = back.join().unwrap_or(Ok(0));
    Ok(Spliced {
        a_to_b: there.unwrap_or(0),
        b_to_a: back.unwrap_or(0) + b_prefix.len() as u64,
    })
}

/// After one direction: an EOF half-closes the receiver; an error closes both ends.
fn finish(r: &io::Result<u64>, from: &dyn Duplex, to: &dyn Duplex) {
    match r {
        Ok(_) => to.shutdown(Shutdown::Write),
        Err(_) => {
            from.shutdown(Shutdown::Both);
            to.shutdown(Shutdown::Both);
        }
    }
}

/// Copies until EOF; the bytes copied.
fn pump(from: &mut dyn Read, to: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; BUF];
    let mut n = 0u64;
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => {
                to.write_all(&buf[..k])?;
                n += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connected loopback TCP pair.
    fn tcp_pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    #[test]
    fn bytes_pass_both_ways_and_half_close_keeps_the_other_way_open() {
        // client ⇄ [a | splice | b] ⇄ server
        let (mut client, a) = tcp_pair();
        let (b, mut server) = tcp_pair();
        let sp = std::thread::spawn(move || splice(Box::new(a), Box::new(b), b"pre:").unwrap());
        let sent: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&sent).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        // The server sees the whole request and then EOF ...
        let mut got = Vec::new();
        server.read_to_end(&mut got).unwrap();
        assert!(got == sent);
        // ... and its answer still reaches the client after the client's half-close.
        server.write_all(b"answer after EOF").unwrap();
        server.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"pre:answer after EOF");
        let n = sp.join().unwrap();
        assert_eq!(n.a_to_b, sent.len() as u64);
        assert_eq!(n.b_to_a, back.len() as u64);
    }

    #[test]
    fn the_server_closing_first_leaves_the_client_sending() {
        let (mut client, a) = tcp_pair();
        let (b, mut server) = tcp_pair();
        let sp = std::thread::spawn(move || splice(Box::new(a), Box::new(b), &[]).unwrap());
        server.write_all(b"banner").unwrap();
        server.shutdown(Shutdown::Write).unwrap();
        let mut banner = Vec::new();
        client.read_to_end(&mut banner).unwrap();
        assert_eq!(banner, b"banner");
        client.write_all(b"late").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"late");
        sp.join().unwrap();
    }

    #[test]
    fn unix_and_tcp_mix() {
        let (mut client, a) = tcp_pair();
        let (b, mut server) = UnixStream::pair().unwrap();
        let sp = std::thread::spawn(move || splice(Box::new(a), Box::new(b), &[]).unwrap());
        client.write_all(b"ping").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"ping");
        server.write_all(b"pong").unwrap();
        drop(server);
        let mut back = Vec::new();
        client.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"pong");
        sp.join().unwrap();
    }
}
