//! What a sandbox network is made of: the guest side that is the same in every sandbox,
//! the per-sandbox names, the host-side address pool, and the caller's choices.

use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

use super::error::NetError;

/// The TAP inside every sandbox namespace (the VMM's `host_dev_name`).
pub const TAP_NAME: &str = "kt0";
/// The guest's address, the same in every sandbox (a link-local /30), so a snapshot
/// restores and a fork child runs with no guest reconfiguration.
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 2);
/// The guest's gateway: the TAP's address in the sandbox namespace.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);
/// The prefix of [`GUEST_ADDR`] and [`GATEWAY`].
pub const GUEST_PREFIX: u8 = 30;
/// The guest NIC's MAC (locally administered, unicast), the same in every sandbox.
pub const GUEST_MAC: [u8; 6] = [0x06, 0x00, 0xa9, 0xfe, 0x00, 0x02];
/// The TAP's own MAC: fixed too, so the guest's ARP entry for the gateway stays right
/// after a restore into another sandbox's namespace.
pub const GATEWAY_MAC: [u8; 6] = [0x06, 0x00, 0xa9, 0xfe, 0x00, 0x01];
/// The MTU of the TAP and the veth.
pub const MTU: u32 = 1500;
/// The sandbox namespace's end of the veth pair (the host's end is per sandbox).
pub const SANDBOX_VETH: &str = "kv0";
/// The nftables table inside every sandbox namespace (family `inet`).
pub const SANDBOX_TABLE: &str = "kiln";
/// Chain of [`SANDBOX_TABLE`] holding the egress policy's rules; new guest connections
/// out of the veth jump to it and are dropped unless a rule accepts them.
pub const EGRESS_CHAIN: &str = "egress";

/// Prefix of every name kiln gives a namespace (`kiln-<id>`), a host link (`kh<hash>`)
/// or a host nftables table (`ip kiln-<hash>`).
pub const NETNS_PREFIX: &str = "kiln-";
pub const HOST_VETH_PREFIX: &str = "kh";
pub const HOST_TABLE_PREFIX: &str = "kiln-";

/// `KILN_NET_POOL=A.B.C.D/N`: where the host-side /30s come from.
pub const POOL_ENV: &str = "KILN_NET_POOL";
pub const DEFAULT_POOL: &str = "10.200.0.0/16";

/// What may leave the sandbox. Issue 16's rules (CIDRs, domains, ports) extend this;
/// until then there are two values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EgressPolicy {
    /// Nothing leaves: every new connection from the guest is dropped. The default.
    #[default]
    DenyAll,
    /// Everything leaves (NATed). Only for tests and explicit opt-in: it opens private
    /// ranges and link-local addresses too.
    AllowAll,
}

/// The caller's choices for one sandbox network.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// uid and gid that own the TAP, so a VMM running as its own (jailed) uid can open
    /// it; `None`: only root (CAP_NET_ADMIN) can.
    pub tap_owner: Option<(u32, u32)>,
    pub policy: EgressPolicy,
    /// Masquerade the sandbox's traffic again on the way out of the host (true: what a
    /// host whose uplink knows nothing of the pool needs). False: the sandbox's own
    /// pool address is the source upstream, for hosts that route the pool.
    pub host_nat: bool,
    /// The pool; `None`: [`POOL_ENV`] or [`DEFAULT_POOL`].
    pub pool: Option<Pool>,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            tap_owner: None,
            policy: EgressPolicy::DenyAll,
            host_nat: true,
            pool: None,
        }
    }
}

/// An IPv4 block split into /30s: one per sandbox, `.1` the host's end of the veth,
/// `.2` the namespace's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    base: u32,
    prefix: u8,
}

impl Pool {
    /// Parses `A.B.C.D/N` (N at most 30, the address the block's first).
    pub fn parse(s: &str) -> Result<Pool, NetError> {
        let bad = |why: &str| NetError::BadPool {
            value: s.to_string(),
            why: why.to_string(),
        };
        let (addr, len) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| bad("expected A.B.C.D/N"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = len.parse().map_err(|_| bad("not a prefix length"))?;
        if prefix > 30 {
            return Err(bad(
                "the prefix must be at most /30 (each sandbox takes a /30)",
            ));
        }
        let base = u32::from(addr);
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        if base & !mask != 0 {
            return Err(bad(&format!(
                "host bits set; did you mean {}/{prefix}?",
                Ipv4Addr::from(base & mask)
            )));
        }
        Ok(Pool { base, prefix })
    }

    /// [`POOL_ENV`], or [`DEFAULT_POOL`] when it is unset.
    pub fn from_env() -> Result<Pool, NetError> {
        match std::env::var(POOL_ENV) {
            Ok(v) => Pool::parse(&v),
            Err(_) => Pool::parse(DEFAULT_POOL),
        }
    }

    /// How many /30s the pool holds.
    pub fn slots(&self) -> u32 {
        1u32 << ((30 - self.prefix) as u32)
    }

    /// The `i`th /30's network address.
    pub fn slot(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + (i % self.slots()) * 4)
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// The names of one sandbox network's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub id: String,
    /// `kiln-<id>`, under /run/netns (`ip netns list` shows it).
    pub netns: String,
    /// `kh<10 hex of SHA-256(id)>`: within the 15 bytes a link name may have.
    pub host_veth: String,
    /// `kiln-<same hash>`, family `ip`, in the host namespace.
    pub host_table: String,
}

impl Names {
    /// Checks `id` (1-200 letters, digits, '-', '_', '.') and names its parts. The id
    /// must be unique on the host: two state directories' sandboxes of one name would
    /// collide, so the create path passes an id that includes its state dir's key.
    pub fn of(id: &str) -> Result<Names, NetError> {
        let ok = !id.is_empty()
            && id.len() <= 200
            && !id.starts_with('.')
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(NetError::BadId(id.to_string()));
        }
        let hash: String = Sha256::digest(id.as_bytes())[..5]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Names {
            id: id.to_string(),
            netns: format!("{NETNS_PREFIX}{id}"),
            host_veth: format!("{HOST_VETH_PREFIX}{hash}"),
            host_table: format!("{HOST_TABLE_PREFIX}{hash}"),
        })
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_parse_and_split_into_30s() {
        let p = Pool::parse("10.200.0.0/16").unwrap();
        assert_eq!(p.slots(), 16384);
        assert_eq!(p.slot(0), Ipv4Addr::new(10, 200, 0, 0));
        assert_eq!(p.slot(1), Ipv4Addr::new(10, 200, 0, 4));
        assert_eq!(p.slot(16383), Ipv4Addr::new(10, 200, 255, 252));
        assert_eq!(Pool::parse("192.168.7.0/30").unwrap().slots(), 1);
        for bad in [
            "10.200.0.1/16",
            "10.200.0.0/31",
            "10.200.0.0",
            "x/16",
            "10.0.0.0/a",
        ] {
            let e = Pool::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{POOL_ENV}={bad}: ")), "{e}");
        }
        assert!(Pool::parse("10.200.0.1/16")
            .unwrap_err()
            .to_string()
            .contains("did you mean 10.200.0.0/16"));
    }

    #[test]
    fn names_fit_linux_limits_and_differ_per_id() {
        let long = "a".repeat(200);
        let a = Names::of(&long).unwrap();
        assert_eq!(a.netns.len(), 205);
        assert!(a.host_veth.len() <= 15, "{}", a.host_veth);
        let b = Names::of("sb-1").unwrap();
        assert_ne!(a.host_veth, b.host_veth);
        assert_eq!(b.netns, "kiln-sb-1");
        assert_eq!(b.host_table, format!("kiln-{}", &b.host_veth[2..]));
        for bad in ["", "a/b", "..", "a b", &"a".repeat(201)] {
            assert!(matches!(Names::of(bad), Err(NetError::BadId(_))), "{bad:?}");
        }
        assert_eq!(mac_string(&GUEST_MAC), "06:00:a9:fe:00:02");
    }
}
