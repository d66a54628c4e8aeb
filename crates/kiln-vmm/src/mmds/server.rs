//! The MMDS responder: a TCP listener on `ipv4_address:80` in the VMM's network
//! namespace, served by a thread of its own (seccomp kind `mmds`), one connection at a
//! time, one request per connection (`Connection: close`). A client has
//! [`REQUEST_DEADLINE`] to send its whole request, else it gets a 408 and is closed, so
//! a slow or silent client holds the responder for at most that long.
//!
//! The seccomp filters let no thread make an `AF_INET` socket, so the binary calls
//! [`reserve_socket`] before it installs them; [`start`] binds that socket.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::protocol::{self, Parsed, Response, MAX_BODY, MAX_HEAD};
use super::Store;

/// Time a client has to send its request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

static RESERVED: Mutex<Option<OwnedFd>> = Mutex::new(None);

fn tcp_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket no one else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes the one TCP socket MMDS may bind later (before the seccomp filters).
pub fn reserve_socket() {
    match tcp_socket() {
        Ok(fd) => *RESERVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(fd),
        Err(e) => tracing::warn!("mmds: cannot make its TCP socket: {e}; MMDS will not be served"),
    }
}

/// Binds `addr` and listens, on the reserved socket (or a new one when none was reserved:
/// the unit tests, which run without filters).
fn listen(addr: SocketAddrV4) -> io::Result<TcpListener> {
    let reserved = RESERVED.lock().unwrap_or_else(|p| p.into_inner()).take();
    let fd = match reserved {
        Some(fd) => fd,
        None => tcp_socket()?,
    };
    let one: libc::c_int = 1;
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: setsockopt/bind/listen on our own socket with correctly sized arguments.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        if libc::bind(
            fd.as_raw_fd(),
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
            || libc::listen(fd.as_raw_fd(), 16) != 0
        {
            let e = io::Error::last_os_error();
            // Give the socket back: a corrected config may bind it.
            *RESERVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(fd);
            return Err(e);
        }
    }
    Ok(TcpListener::from(fd))
}

/// Binds `addr` and serves MMDS from `store` on a new thread; returns the bound address.
/// The error says what to fix.
pub fn start(addr: SocketAddrV4, store: Arc<Mutex<Store>>) -> Result<SocketAddr, String> {
    let l = listen(addr).map_err(|e| {
        format!(
            "cannot listen for MMDS on {addr}: {e}; the address must be on an interface of \
             kiln-vmm's network namespace (e.g. `ip addr add {}/32 dev lo`) and port {} \
             bindable by it",
            addr.ip(),
            addr.port()
        )
    })?;
    let bound = l
        .local_addr()
        .map_err(|e| format!("MMDS listener on {addr}: {e}"))?;
    std::thread::Builder::new()
        .name("mmds".into())
        .spawn(move || {
            crate::seccomp::enter("mmds");
            serve(&l, &store)
        })
        .map_err(|e| format!("cannot start the MMDS thread: {e}"))?;
    tracing::info!("mmds: serving on {bound}");
    Ok(bound)
}

fn serve(l: &TcpListener, store: &Mutex<Store>) {
    loop {
        match l.accept() {
            Ok((s, _)) => {
                if let Err(e) = serve_one(s, store) {
                    tracing::debug!("mmds: connection: {e}");
                }
            }
            Err(e) => {
                tracing::warn!("mmds: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Reads one request within the deadline and answers it.
fn serve_one(mut s: TcpStream, store: &Mutex<Store>) -> io::Result<()> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    s.set_write_timeout(Some(REQUEST_DEADLINE))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let response = loop {
        match protocol::parse(&buf) {
            Parsed::Request(req) => {
                let mut st = store.lock().unwrap_or_else(|p| p.into_inner());
                break protocol::respond(&mut st, &req, Instant::now());
            }
            Parsed::Fail(r) => break r,
            Parsed::Incomplete => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Response::timeout();
        }
        s.set_read_timeout(Some(left))?;
        // Never read past what a request may hold.
        let room = (MAX_HEAD + 4 + MAX_BODY + 1).saturating_sub(buf.len());
        let take = room.min(chunk.len());
        let n = match s.read(&mut chunk[..take]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break Response::timeout()
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
    };
    s.write_all(&response.to_bytes())?;
    let _ = s.shutdown(std::net::Shutdown::Both);
    Ok(())
}
