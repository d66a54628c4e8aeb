//! An in-process `kiln serve` with chosen limits on its own socket, token and TCP port
//! (all servers of a test binary share one state directory, set once), and raw
//! connections to it, for the tests that need to hold sockets open or send half a
//! request.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kiln_server::client::Client;
use kiln_server::{Limits, ServeOptions};

fn state_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("kiln-server-limits-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::env::set_var("KILN_STATE_DIR", &d);
        std::env::remove_var("KILN_TOKEN");
        d
    })
}

pub struct Server {
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub tcp: SocketAddr,
    pub token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(name: &str, limits: Limits) -> Server {
        let dir = state_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("kiln.sock");
        let token_file = dir.join("token");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tcp: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let opts = ServeOptions {
            socket: Some(sock.clone()),
            listen: Some(tcp),
            token_file: Some(token_file.clone()),
            limits: Some(limits),
            ..Default::default()
        };
        let thread = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(kiln_server::run(opts, async {
                    let _ = stop_rx.await;
                }))
                .expect("the server ran");
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sock.exists() || !token_file.exists() {
            assert!(Instant::now() < deadline, "the server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        let token = std::fs::read_to_string(&token_file)
            .unwrap()
            .trim()
            .to_string();
        let s = Server {
            dir,
            sock,
            tcp,
            token,
            stop: Some(stop),
            thread: Some(thread),
        };
        while s.client().health().is_err() {
            assert!(Instant::now() < deadline, "the server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// A client with the token (a connection per request).
    pub fn client(&self) -> Client {
        Client::new(
            &format!("unix://{}", self.sock.display()),
            Some(self.token.clone()),
        )
        .unwrap()
    }

    pub fn unix(&self) -> Conn {
        Conn::new(Box::new(UnixStream::connect(&self.sock).unwrap()))
    }

    pub fn tcp_from(&self, source: &str) -> Conn {
        let sock = socket_from(source, self.tcp);
        Conn::new(Box::new(sock))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP connection from the loopback address `source` (e.g. 127.0.0.2).
fn socket_from(source: &str, to: SocketAddr) -> TcpStream {
    // SAFETY: plain socket calls on a descriptor we own; addresses are built in place.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let ip: std::net::Ipv4Addr = source.parse().unwrap();
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as u16;
        a.sin_addr.s_addr = u32::from(ip).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        assert_eq!(
            libc::bind(fd, (&a as *const libc::sockaddr_in).cast(), len),
            0
        );
        let SocketAddr::V4(to) = to else { panic!() };
        a.sin_addr.s_addr = u32::from(*to.ip()).to_be();
        a.sin_port = to.port().to_be();
        assert_eq!(
            libc::connect(fd, (&a as *const libc::sockaddr_in).cast(), len),
            0
        );
        std::os::fd::FromRawFd::from_raw_fd(fd)
    }
}

pub trait Stream: Read + Write + Send {
    fn set_timeout(&self, t: Duration);
}
impl Stream for UnixStream {
    fn set_timeout(&self, t: Duration) {
        self.set_read_timeout(Some(t)).unwrap();
    }
}
impl Stream for TcpStream {
    fn set_timeout(&self, t: Duration) {
        self.set_read_timeout(Some(t)).unwrap();
    }
}

/// A raw connection.
pub struct Conn(pub Box<dyn Stream>);

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub close: bool,
}

impl Answer {
    pub fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body).unwrap_or_default();
        v["error"]["code"].as_str().unwrap_or_default().to_string()
    }
}

impl Conn {
    fn new(s: Box<dyn Stream>) -> Conn {
        s.set_timeout(Duration::from_secs(20));
        Conn(s)
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).unwrap();
    }

    /// A kept-alive GET, with the token if given.
    pub fn get(&mut self, path: &str, token: Option<&str>) -> io::Result<Answer> {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
        self.0.write_all(req.as_bytes())?;
        self.answer()
    }

    /// Reads one answer (its body by Content-Length).
    pub fn answer(&mut self) -> io::Result<Answer> {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if self.0.read(&mut b)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
            }
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let status = head[9..12].parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body)?;
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            close: head.contains("connection: close"),
        })
    }

    /// Whether the server closes the connection within `within` (reading and dropping
    /// whatever comes first).
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.0.set_timeout(within);
        let mut buf = [0u8; 4096];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// A limit set with long timeouts, for tests about something else.
pub fn limits(max_conns: usize, per_peer: usize) -> Limits {
    Limits {
        max_conns,
        max_conns_per_peer: per_peer,
        ..Limits::default()
    }
}
