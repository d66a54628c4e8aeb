//! Egress rules (`--allow-net RULE`, `--deny-net RULE`): their grammar, and the
//! nftables rules of the address part (CIDRs and `public`) for a sandbox's `egress`
//! chain. Domain rules are parsed and kept; they are enforced by name through kiln's DNS
//! and proxy (docs/NETWORK.md), not by addresses here.
//!
//! `RULE` is `DEST[:PORT|:LOW-HIGH][/tcp|/udp]`, `DEST` one of: an IPv4 address, a CIDR
//! (`10.1.0.0/16`), a domain (`pypi.org`), a suffix wildcard (`*.pythonhosted.org`:
//! subdomains only, not the bare parent), or `public` (the public internet).
//!
//! Precedence, first match wins:
//! 1. deny rules (so deny wins over allow for the same destination);
//! 2. allow CIDR rules that lie inside an always-denied range (they name it explicitly);
//! 3. the always-denied ranges ([`ALWAYS_DENIED`]);
//! 4. the other allow CIDR rules, then `public`;
//! 5. everything else is dropped.

use std::fmt;
use std::net::Ipv4Addr;

/// Ranges no allow rule opens unless it lies inside one of them: private (RFC 1918),
/// CGNAT, loopback, link-local (with the cloud metadata address), "this network",
/// multicast and the reserved/broadcast block. The host's own addresses are refused by
/// the host's table of every sandbox (docs/NETWORK.md).
pub const ALWAYS_DENIED: [(Ipv4Addr, u8); 8] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(224, 0, 0, 0), 3),
];

/// Where a rule points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// An address block (a bare address is a /32).
    Cidr { addr: Ipv4Addr, prefix: u8 },
    /// Exactly this name (lowercase).
    Domain(String),
    /// Any name under this one (`*.example.com` is `example.com` here).
    Suffix(String),
    /// The public internet: everything outside [`ALWAYS_DENIED`].
    Public,
}

/// The transport a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proto {
    #[default]
    Any,
    Tcp,
    Udp,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub dest: Dest,
    /// An inclusive port range; `None`: every port.
    pub ports: Option<(u16, u16)>,
    pub proto: Proto,
}

fn bad(rule: &str, why: &str) -> String {
    format!(
        "--allow-net/--deny-net {rule:?}: {why}; a rule is ADDRESS, CIDR, DOMAIN, *.DOMAIN or \
         public, then optionally :PORT or :LOW-HIGH and /tcp or /udp (e.g. 10.1.0.0/16:443/tcp)"
    )
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// A DNS name of 1-253 bytes in labels of 1-63 letters, digits and inner `-`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn parse_port(rule: &str, p: &str) -> Result<u16, String> {
    match p.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err(bad(rule, &format!("port {p:?} is not 1-65535"))),
    }
}

impl Rule {
    pub fn parse(rule: &str) -> Result<Rule, String> {
        let s = rule.trim().to_ascii_lowercase();
        let (s, proto) = if let Some(r) = s.strip_suffix("/tcp") {
            (r, Proto::Tcp)
        } else if let Some(r) = s.strip_suffix("/udp") {
            (r, Proto::Udp)
        } else {
            (s.as_str(), Proto::Any)
        };
        let (dest, ports) = match s.rsplit_once(':') {
            Some((d, p)) => {
                let range = match p.split_once('-') {
                    Some((lo, hi)) => (parse_port(rule, lo)?, parse_port(rule, hi)?),
                    None => {
                        let n = parse_port(rule, p)?;
                        (n, n)
                    }
                };
                if range.0 > range.1 {
                    return Err(bad(rule, "the port range runs backwards"));
                }
                (d, Some(range))
            }
            None => (s, None),
        };
        let dest = if dest.is_empty() {
            return Err(bad(rule, "it names no destination"));
        } else if dest == "public" {
            Dest::Public
        } else if let Some((a, p)) = dest.split_once('/') {
            let addr: Ipv4Addr = a
                .parse()
                .map_err(|_| bad(rule, &format!("{a:?} is not an IPv4 address")))?;
            let prefix: u8 = match p.parse() {
                Ok(n @ 0..=32) => n,
                _ => return Err(bad(rule, &format!("prefix /{p} is not 0-32"))),
            };
            let net = u32::from(addr) & mask(prefix);
            if net != u32::from(addr) {
                return Err(bad(
                    rule,
                    &format!(
                        "host bits set; did you mean {}/{prefix}?",
                        Ipv4Addr::from(net)
                    ),
                ));
            }
            Dest::Cidr { addr, prefix }
        } else if let Ok(addr) = dest.parse::<Ipv4Addr>() {
            Dest::Cidr { addr, prefix: 32 }
        } else if let Some(parent) = dest.strip_prefix("*.") {
            if !valid_name(parent) {
                return Err(bad(rule, "a wildcard needs a domain after \"*.\""));
            }
            Dest::Suffix(parent.to_string())
        } else if dest.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(bad(rule, &format!("{dest:?} is not an IPv4 address")));
        } else if valid_name(dest) {
            Dest::Domain(dest.to_string())
        } else {
            return Err(bad(
                rule,
                &format!("{dest:?} is not an address or a domain"),
            ));
        };
        Ok(Rule { dest, ports, proto })
    }

    /// Whether this CIDR rule lies inside an always-denied range (it opens it).
    fn names_denied_range(&self) -> bool {
        let Dest::Cidr { addr, prefix } = self.dest else {
            return false;
        };
        ALWAYS_DENIED
            .iter()
            .any(|(a, p)| prefix >= *p && u32::from(addr) & mask(*p) == u32::from(*a))
    }

    /// The nft match of its transport and ports (empty: any).
    fn l4(&self) -> Vec<String> {
        let range = |(lo, hi): (u16, u16)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        };
        match (self.proto, self.ports) {
            (Proto::Any, None) => vec![String::new()],
            (Proto::Any, Some(p)) => vec![
                format!(" tcp dport {}", range(p)),
                format!(" udp dport {}", range(p)),
            ],
            (Proto::Tcp, p) => vec![format!(" meta l4proto tcp{}", dport("tcp", p, range))],
            (Proto::Udp, p) => vec![format!(" meta l4proto udp{}", dport("udp", p, range))],
        }
    }
}

fn put_line(out: &mut String, rule: &str) {
    out.push_str("\t\t");
    out.push_str(rule);
    out.push('\n');
}

fn dport(proto: &str, p: Option<(u16, u16)>, range: impl Fn((u16, u16)) -> String) -> String {
    p.map(|p| format!(" {proto} dport {}", range(p)))
        .unwrap_or_default()
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.dest {
            Dest::Cidr { addr, prefix: 32 } => write!(f, "{addr}")?,
            Dest::Cidr { addr, prefix } => write!(f, "{addr}/{prefix}")?,
            Dest::Domain(d) => write!(f, "{d}")?,
            Dest::Suffix(d) => write!(f, "*.{d}")?,
            Dest::Public => write!(f, "public")?,
        }
        match self.ports {
            Some((lo, hi)) if lo == hi => write!(f, ":{lo}")?,
            Some((lo, hi)) => write!(f, ":{lo}-{hi}")?,
            None => {}
        }
        match self.proto {
            Proto::Any => Ok(()),
            Proto::Tcp => write!(f, "/tcp"),
            Proto::Udp => write!(f, "/udp"),
        }
    }
}

/// A sandbox's egress rules. Empty: nothing leaves (the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
}

impl NetworkPolicy {
    /// Parses every rule; the first bad one is the error.
    pub fn parse(allow: &[String], deny: &[String]) -> Result<NetworkPolicy, String> {
        let all = |v: &[String]| {
            v.iter()
                .map(|r| Rule::parse(r))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(NetworkPolicy {
            allow: all(allow)?,
            deny: all(deny)?,
        })
    }

    /// The `egress` chain's rules for the address part of the policy, in precedence
    /// order (see the module docs). Domain rules add nothing here.
    pub fn nft_rules(&self) -> String {
        let mut out = String::new();
        let put = |out: &mut String, daddr: &str, r: &Rule, verdict: &str| {
            for l4 in r.l4() {
                put_line(out, &format!("{daddr}{l4} {verdict}"));
            }
        };
        let cidr = |r: &Rule| match r.dest {
            Dest::Cidr { addr, prefix } => Some(format!("ip daddr {addr}/{prefix}")),
            _ => None,
        };
        let denied_set = ALWAYS_DENIED
            .iter()
            .map(|(a, p)| format!("{a}/{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        for r in &self.deny {
            match &r.dest {
                Dest::Cidr { .. } => put(&mut out, &cidr(r).unwrap_or_default(), r, "drop"),
                Dest::Public => put(
                    &mut out,
                    &format!("ip daddr != {{ {denied_set} }}"),
                    r,
                    "drop",
                ),
                _ => {}
            }
        }
        for r in self.allow.iter().filter(|r| r.names_denied_range()) {
            put(&mut out, &cidr(r).unwrap_or_default(), r, "accept");
        }
        put_line(&mut out, &format!("ip daddr {{ {denied_set} }} drop"));
        for r in self.allow.iter().filter(|r| !r.names_denied_range()) {
            match &r.dest {
                Dest::Cidr { .. } => put(&mut out, &cidr(r).unwrap_or_default(), r, "accept"),
                Dest::Public => put(&mut out, "ip daddr 0.0.0.0/0", r, "accept"),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Rule {
        Rule::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn rules_parse_and_print_back() {
        for s in [
            "10.1.0.0/16",
            "203.0.113.7",
            "203.0.113.7:443/tcp",
            "192.0.2.0/24:8000-8100",
            "pypi.org",
            "*.pythonhosted.org:443",
            "public",
            "public/udp",
            "198.51.100.0/24:53/udp",
        ] {
            assert_eq!(p(s).to_string(), s);
        }
        assert_eq!(p("PyPI.org").dest, Dest::Domain("pypi.org".into()));
        assert_eq!(
            p("*.pythonhosted.org").dest,
            Dest::Suffix("pythonhosted.org".into())
        );
        assert_eq!(
            p("1.2.3.4").dest,
            Dest::Cidr {
                addr: Ipv4Addr::new(1, 2, 3, 4),
                prefix: 32
            }
        );
    }

    #[test]
    fn bad_rules_say_why() {
        for (s, why) in [
            ("10.0.0.0/33", "prefix /33"),
            ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
            ("*.", "wildcard"),
            ("example.com:70000", "port \"70000\""),
            ("example.com:0", "port \"0\""),
            ("example.com:90-80", "backwards"),
            ("300.1.1.1", "not an IPv4 address"),
            ("exa mple.com", "not an address or a domain"),
            ("-bad.com", "not an address or a domain"),
            ("", "no destination"),
            (":443", "no destination"),
        ] {
            let e = Rule::parse(s).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn deny_comes_first_and_always_denied_ranges_stay_shut_to_wide_rules() {
        let pol = NetworkPolicy::parse(
            &[
                "public".into(),
                "0.0.0.0/0".into(),
                "10.9.0.0/16:443/tcp".into(),
                "pypi.org".into(),
            ],
            &["203.0.113.0/24".into()],
        )
        .unwrap();
        let text = pol.nft_rules();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert_eq!(lines[0], "ip daddr 203.0.113.0/24 drop");
        assert_eq!(
            lines[1],
            "ip daddr 10.9.0.0/16 meta l4proto tcp tcp dport 443 accept"
        );
        assert!(
            lines[2].starts_with("ip daddr { 0.0.0.0/8, 10.0.0.0/8,")
                && lines[2].ends_with("} drop")
        );
        assert!(lines[2].contains("169.254.0.0/16") && lines[2].contains("100.64.0.0/10"));
        // public and 0.0.0.0/0 come after the always-denied drop.
        assert_eq!(lines[3], "ip daddr 0.0.0.0/0 accept");
        assert_eq!(lines[4], "ip daddr 0.0.0.0/0 accept");
        assert_eq!(lines.len(), 5, "{text}");
        // Empty: only the always-denied drop; everything else falls to the chain's end.
        assert_eq!(NetworkPolicy::default().nft_rules().lines().count(), 1);
        // A port without a protocol covers both.
        let both = NetworkPolicy::parse(&["192.0.2.1:53".into()], &[])
            .unwrap()
            .nft_rules();
        assert!(
            both.contains("ip daddr 192.0.2.1/32 tcp dport 53 accept"),
            "{both}"
        );
        assert!(
            both.contains("ip daddr 192.0.2.1/32 udp dport 53 accept"),
            "{both}"
        );
    }
}
