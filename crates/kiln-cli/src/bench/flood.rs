//! `kiln bench api --idle-flood N`: N connections to the server that never send a byte
//! (no token, no request), held open from one thread while the benchmark runs; each one
//! the server closes (to make room, or idle) is opened again at once, as an attacker
//! would. Reports how many were open at most, how often the server closed one, and how
//! many connects failed.

use std::io::Read;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Result};
use serde_json::{json, Value};

enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn fd(&self) -> i32 {
        match self {
            Conn::Unix(s) => s.as_raw_fd(),
            Conn::Tcp(s) => s.as_raw_fd(),
        }
    }
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

#[derive(Clone)]
enum Target {
    Unix(String),
    Tcp(String),
}

impl Target {
    fn connect(&self) -> std::io::Result<Conn> {
        Ok(match self {
            Target::Unix(p) => Conn::Unix(UnixStream::connect(p)?),
            Target::Tcp(a) => Conn::Tcp(TcpStream::connect(a.as_str())?),
        })
    }
}

#[derive(Default)]
struct Tally {
    open_max: usize,
    closed_by_server: u64,
    refused_503: u64,
    connect_errors: u64,
    first_connect_error: Option<String>,
}

pub struct Flood {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Tally>,
    n: usize,
}

impl Flood {
    /// Opens `n` idle connections to the server at `url` (`unix://` or `http://`).
    pub fn start(url: &str, n: usize) -> Result<Flood> {
        let target = if let Some(p) = url.strip_prefix("unix://") {
            Target::Unix(p.to_string())
        } else if let Some(a) = url.strip_prefix("http://") {
            Target::Tcp(a.trim_end_matches('/').to_string())
        } else {
            bail!("--idle-flood: cannot flood {url}: give a unix:// or http:// server");
        };
        raise_fd_limit(n + 256)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || hold(&target, n, &s));
        Ok(Flood { stop, thread, n })
    }

    /// Closes the connections; the tally as JSON.
    pub fn stop(self) -> Value {
        self.stop.store(true, Ordering::Relaxed);
        let t = self.thread.join().unwrap_or_default();
        json!({
            "connections": self.n,
            "open_max": t.open_max,
            "closed_by_server": t.closed_by_server,
            "refused_503": t.refused_503,
            "connect_errors": t.connect_errors,
            "first_connect_error": t.first_connect_error,
        })
    }
}

fn hold(target: &Target, n: usize, stop: &AtomicBool) -> Tally {
    let mut t = Tally::default();
    let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        for c in conns.iter_mut().filter(|c| c.is_none()) {
            match target.connect() {
                Ok(s) => *c = Some(s),
                Err(e) => {
                    t.connect_errors += 1;
                    t.first_connect_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        t.open_max = t.open_max.max(conns.iter().flatten().count());
        let mut fds: Vec<libc::pollfd> = conns
            .iter()
            .map(|c| libc::pollfd {
                fd: c.as_ref().map_or(-1, Conn::fd),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: poll reads and writes the pollfd array we own, of the length given.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
        if ready <= 0 {
            continue;
        }
        for (c, p) in conns.iter_mut().zip(&fds) {
            if p.revents == 0 {
                continue;
            }
            if let Some(mut s) = c.take() {
                match s.read(&mut buf) {
                    Ok(k) if k > 0 && buf.starts_with(b"HTTP/1.1 503") => t.refused_503 += 1,
                    _ => t.closed_by_server += 1,
                }
            }
        }
    }
    t
}

/// Raises the soft open-file limit so `need` descriptors fit, or says what to do.
fn raise_fd_limit(need: usize) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Ok(());
        }
        if (lim.rlim_cur as usize) < need {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    if (lim.rlim_max as usize) < need {
        bail!(
            "--idle-flood needs {need} open files, the hard limit is {}: raise it (ulimit -Hn) or flood less",
            lim.rlim_max
        );
    }
    Ok(())
}
