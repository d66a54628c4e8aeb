//! The server's connection limits and timeouts ([`Limits`]), their defaults, and their
//! `KILN_SERVE_*` environment overrides (docs/API.md, "Limits").

use std::time::Duration;

/// Bounds on what clients may hold: connections, time and request-body memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections in all (unix socket and TCP together).
    pub max_conns: usize,
    /// Open connections per peer: a uid on the unix socket, an IP address on TCP.
    pub max_conns_per_peer: usize,
    /// From the first byte of a request to the end of its headers.
    pub header_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// A request body that sends nothing for this long ends the request with 408.
    pub body_timeout: Duration,
    /// Bytes of request bodies buffered at once, server-wide (JSON bodies, an exec's
    /// stdin among them; file uploads stream and are not counted).
    pub body_memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_conns: 4096,
            max_conns_per_peer: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            body_memory: 512 << 20,
        }
    }
}

/// A `KILN_SERVE_*` variable that does not hold a usable number.
#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?}: {want}")]
pub struct LimitsError {
    var: &'static str,
    value: String,
    want: &'static str,
}

impl Limits {
    /// The defaults, with each `KILN_SERVE_*` variable that is set in its place.
    pub fn from_env() -> Result<Limits, LimitsError> {
        Limits::from_vars(|k| std::env::var(k).ok())
    }

    fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Limits, LimitsError> {
        let num = |var: &'static str, want: &'static str| -> Result<Option<u64>, LimitsError> {
            let Some(value) = get(var).filter(|v| !v.is_empty()) else {
                return Ok(None);
            };
            match value.trim().parse::<u64>() {
                Ok(n) if n >= 1 => Ok(Some(n)),
                _ => Err(LimitsError { var, value, want }),
            }
        };
        let count = "give a whole number of connections, at least 1";
        let ms = "give a whole number of milliseconds, at least 1";
        let d = Limits::default();
        let per_peer = num("KILN_SERVE_MAX_CONNS_PER_PEER", count)?;
        let l = Limits {
            max_conns: num("KILN_SERVE_MAX_CONNS", count)?.map_or(d.max_conns, |n| n as usize),
            max_conns_per_peer: per_peer.map_or(d.max_conns_per_peer, |n| n as usize),
            header_timeout: num("KILN_SERVE_HEADER_TIMEOUT_MS", ms)?
                .map_or(d.header_timeout, Duration::from_millis),
            idle_timeout: num("KILN_SERVE_IDLE_TIMEOUT_MS", ms)?
                .map_or(d.idle_timeout, Duration::from_millis),
            body_timeout: num("KILN_SERVE_BODY_TIMEOUT_MS", ms)?
                .map_or(d.body_timeout, Duration::from_millis),
            body_memory: num(
                "KILN_SERVE_BODY_MEMORY_MIB",
                "give a whole number of MiB, at least 1",
            )?
            .map_or(d.body_memory, |m| m.saturating_mul(1 << 20)),
        };
        Ok(l)
    }

    /// Lowers the connection caps to what the process's open-file limit leaves room
    /// for (after raising its soft limit to the hard one), keeping `reserve` descriptors
    /// for everything else (the store, agent connections, VMM sockets).
    pub fn fit_to_fd_limit(&mut self, reserve: usize) {
        let fds = raise_fd_limit();
        let room = fds.saturating_sub(reserve).max(16);
        if self.max_conns > room {
            tracing::warn!(
                "the open-file limit is {fds}: serving at most {room} connections instead of {} (raise `ulimit -n` for more)",
                self.max_conns
            );
            self.max_conns = room;
        }
        self.max_conns_per_peer = self.max_conns_per_peer.min(self.max_conns);
    }
}

/// Raises RLIMIT_NOFILE's soft limit to its hard limit; returns the soft limit after.
fn raise_fd_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides_and_bad_values() {
        assert_eq!(Limits::from_vars(|_| None).unwrap(), Limits::default());
        let l = Limits::from_vars(|k| match k {
            "KILN_SERVE_MAX_CONNS" => Some("10".into()),
            "KILN_SERVE_IDLE_TIMEOUT_MS" => Some("1500".into()),
            "KILN_SERVE_BODY_MEMORY_MIB" => Some("64".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(l.max_conns, 10);
        assert_eq!(l.idle_timeout, Duration::from_millis(1500));
        assert_eq!(l.body_memory, 64 << 20);
        assert_eq!(l.max_conns_per_peer, 1024);
        for bad in ["0", "-1", "ten", "1.5"] {
            let e =
                Limits::from_vars(|k| (k == "KILN_SERVE_HEADER_TIMEOUT_MS").then(|| bad.into()))
                    .unwrap_err()
                    .to_string();
            assert!(
                e.starts_with("KILN_SERVE_HEADER_TIMEOUT_MS=") && e.contains("milliseconds"),
                "{e}"
            );
        }
    }

    #[test]
    fn caps_fit_the_fd_limit() {
        let mut l = Limits {
            max_conns: usize::MAX,
            ..Limits::default()
        };
        l.fit_to_fd_limit(256);
        assert!(l.max_conns < usize::MAX && l.max_conns >= 16);
        assert!(l.max_conns_per_peer <= l.max_conns);
    }
}
