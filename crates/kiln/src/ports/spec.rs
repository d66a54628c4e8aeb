//! `PortSpec`: `[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]`, as `-p` and `kiln port-forward`
//! take it. The host address defaults to 127.0.0.1; host port 0 means any free port
//! (the bound one is reported back); only TCP is forwarded.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use super::error::PortError;

/// One forwarded port: where the host listens and which guest port it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortSpec {
    pub host_ip: IpAddr,
    /// 0: any free port, chosen when the listener is bound.
    pub host_port: u16,
    pub guest_port: u16,
}

impl PortSpec {
    pub fn new(host_ip: IpAddr, host_port: u16, guest_port: u16) -> PortSpec {
        PortSpec {
            host_ip,
            host_port,
            guest_port,
        }
    }

    /// Where the host listens.
    pub fn host_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host_ip, self.host_port)
    }
}

impl fmt::Display for PortSpec {
    /// `127.0.0.1:8080:80/tcp` (IPv6 hosts in brackets), parsed back by `FromStr`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/tcp", self.host_addr(), self.guest_port)
    }
}

fn bad(spec: &str, why: impl fmt::Display) -> PortError {
    PortError::BadSpec(format!(
        "port {spec:?}: {why}; use [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp], e.g. 8080:80 or 127.0.0.1:0:8080"
    ))
}

fn port(spec: &str, what: &str, s: &str, zero_ok: bool) -> Result<u16, PortError> {
    let n: u16 = s.parse().map_err(|_| {
        bad(
            spec,
            format!("{what} {s:?} is not a number from 1 to 65535"),
        )
    })?;
    if n == 0 && !zero_ok {
        return Err(bad(spec, format!("{what} 0 is not a port")));
    }
    Ok(n)
}

impl FromStr for PortSpec {
    type Err = PortError;

    fn from_str(spec: &str) -> Result<PortSpec, PortError> {
        let (body, proto) = match spec.rsplit_once('/') {
            Some((b, p)) => (b, p),
            None => (spec, "tcp"),
        };
        match proto {
            "tcp" => {}
            "udp" | "sctp" => {
                return Err(bad(
                    spec,
                    format!("{proto} is not supported: only tcp is forwarded"),
                ))
            }
            p => return Err(bad(spec, format!("unknown protocol {p:?} (only tcp)"))),
        }
        let (host, guest) = body
            .rsplit_once(':')
            .ok_or_else(|| bad(spec, "a host port and a guest port are needed"))?;
        let guest_port = port(spec, "guest port", guest, false)?;
        let (ip, host_port) = match host.rsplit_once(':') {
            None => (IpAddr::V4(Ipv4Addr::LOCALHOST), host),
            Some((ip, hp)) => {
                let ip = ip
                    .strip_prefix('[')
                    .and_then(|i| i.strip_suffix(']'))
                    .unwrap_or(ip);
                let ip: IpAddr = ip
                    .parse()
                    .map_err(|_| bad(spec, format!("{ip:?} is not an IP address")))?;
                (ip, hp)
            }
        };
        let host_port = port(spec, "host port", host_port, true)?;
        Ok(PortSpec::new(ip, host_port, guest_port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> PortSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        match s.parse::<PortSpec>() {
            Ok(p) => panic!("{s} parsed as {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn good_specs_parse_with_loopback_by_default() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(ok("8080:80"), PortSpec::new(lo, 8080, 80));
        assert_eq!(ok("8080:80/tcp"), PortSpec::new(lo, 8080, 80));
        assert_eq!(ok("0:8080"), PortSpec::new(lo, 0, 8080));
        assert_eq!(
            ok("0.0.0.0:9000:9000"),
            PortSpec::new("0.0.0.0".parse().unwrap(), 9000, 9000)
        );
        assert_eq!(
            ok("[::1]:8080:80"),
            PortSpec::new("::1".parse().unwrap(), 8080, 80)
        );
        assert_eq!(
            ok("127.0.0.2:65535:1"),
            PortSpec::new("127.0.0.2".parse().unwrap(), 65535, 1)
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "127.0.0.1:8080:80/tcp",
            "[::1]:0:22/tcp",
            "0.0.0.0:1:65535/tcp",
        ] {
            assert_eq!(ok(s).to_string(), s);
            assert_eq!(ok(&ok(s).to_string()), ok(s));
        }
    }

    #[test]
    fn bad_specs_say_what_is_wrong_and_how_to_write_it() {
        assert!(err("8080:53/udp").contains("udp is not supported: only tcp is forwarded"));
        assert!(err("8080:80/icmp").contains("unknown protocol"));
        assert!(err("8080").contains("a host port and a guest port are needed"));
        assert!(err("8080:0").contains("guest port 0 is not a port"));
        assert!(err("8080:70000").contains("guest port \"70000\""));
        assert!(err("x:80").contains("host port \"x\""));
        assert!(err("-1:80").contains("host port"));
        assert!(err("localhost:8080:80").contains("\"localhost\" is not an IP address"));
        assert!(err("1.2.3:8080:80").contains("is not an IP address"));
        assert!(err(":80").contains("host port \"\""));
        assert!(err("").contains("use [HOST_IP:]HOST_PORT:GUEST_PORT"));
    }
}
