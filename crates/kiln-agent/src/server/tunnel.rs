//! `connect`: a connection becomes a raw TCP stream to a port on the guest's loopback
//! (the host's port-forward without a NIC).
//!
//! The connection thread handles it itself, since after the `Connected` reply nothing on
//! the connection is a frame any more: it connects to `127.0.0.1:PORT`, answers, then
//! copies both ways. An EOF one way is passed on as a half-close (`shutdown(SHUT_WR)`)
//! and the other way goes on until it ends too; an error either way ends both.

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use kiln_proto::{ErrorKind, ErrorReply, Reply, ECONNREFUSED};

use super::writer::Writer;
use super::Stream;

/// How long a connect to a guest port may take (loopback answers at once; a full
/// listen backlog makes it wait).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Copy buffer per direction.
const BUF: usize = 64 << 10;
/// Stack of the second copying thread.
const STACK: usize = 256 << 10;

/// Connects to guest port `port` and answers request `id`. On success carries bytes
/// both ways until both directions have ended and returns true (the connection is
/// done); a failed connect is answered with the error and returns false (the
/// connection goes on serving frames).
pub fn serve<S: Stream>(id: u32, port: u16, writer: &Writer, reader: &mut BufReader<S>) -> bool {
    let tcp = match connect(port) {
        Ok(t) => t,
        Err(e) => {
            writer.error(id, e);
            return false;
        }
    };
    let (to_host, host_reader_closer) = match (reader.get_ref().try_clone_box(), tcp.try_clone()) {
        (Ok(out), Ok(tcp_in)) => (out, tcp_in),
        (Err(e), _) | (_, Err(e)) => {
            writer.error(id, io_error(&format!("cannot set up the tunnel: {e}")));
            return false;
        }
    };
    if !writer.reply(id, &Reply::Connected) {
        return true;
    }
    // guest port → host, on its own thread.
    let back = std::thread::Builder::new()
        .name("tunnel".into())
        .stack_size(STACK)
        .spawn(move || {
            let mut to_host = to_host;
            let mut from = host_reader_closer;
            let ok = copy(&mut from, &mut *to_host);
            if ok {
                to_host.shutdown_write();
            } else {
                to_host.shutdown_both();
                let _ = from.shutdown(Shutdown::Both);
            }
        });
    let Ok(back) = back else {
        let _ = tcp.shutdown(Shutdown::Both);
        return true;
    };
    // host → guest port, here.
    let mut tcp_out = tcp;
    if copy(reader, &mut tcp_out) {
        let _ = tcp_out.shutdown(Shutdown::Write);
    } else {
        let _ = tcp_out.shutdown(Shutdown::Both);
        reader.get_ref().shutdown_both();
    }
    let _ = back.join();
    true
}

/// Copies until EOF; false on an error either side.
fn copy(from: &mut impl Read, to: &mut dyn Write) -> bool {
    let mut buf = vec![0u8; BUF];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                if super::writer::write_patiently(to, &buf[..n]).is_err() {
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn connect(port: u16) -> Result<TcpStream, ErrorReply> {
    if port == 0 {
        return Err(ErrorReply::new(
            ErrorKind::InvalidInput,
            "guest port 0: use a port from 1 to 65535",
        ));
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(t) => {
            let _ = t.set_nodelay(true);
            Ok(t)
        }
        Err(e) if e.raw_os_error() == Some(ECONNREFUSED) => Err(ErrorReply {
            kind: ErrorKind::Io,
            message: format!("connection refused: nothing listens on guest port {port}"),
            path: None,
            errno: Some(ECONNREFUSED),
        }),
        Err(e) => {
            let mut r = io_error(&format!(
                "cannot connect to guest port {port}: {}",
                crate::console::io_strerror(&e)
            ));
            r.errno = e.raw_os_error();
            Err(r)
        }
    }
}

fn io_error(msg: &str) -> ErrorReply {
    ErrorReply::new(ErrorKind::Io, msg)
}
