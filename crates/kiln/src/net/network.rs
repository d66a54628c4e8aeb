//! One sandbox's network: made all or nothing, removed by name.

use std::net::Ipv4Addr;

use super::config::{
    EgressPolicy, Names, NetConfig, Pool, GATEWAY, GATEWAY_MAC, GUEST_ADDR, GUEST_MAC,
    GUEST_PREFIX, SANDBOX_TABLE, SANDBOX_VETH, TAP_NAME,
};
use super::error::{step, NetError};
use super::rtnl::Rtnl;
use super::{netns, nft, pool, tap, teardown};

/// A sandbox's network namespace with its TAP, veth pair, nftables tables and pool lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    names: Names,
    /// The leased /30's network address: `.1` is the host's end, `.2` the namespace's.
    subnet: Ipv4Addr,
}

/// Whether the calling thread has CAP_NET_ADMIN (bit 12 of CapEff).
pub(crate) fn has_net_admin() -> bool {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

/// Writes a sysctl under /proc/sys of the calling thread's namespace.
fn sysctl(id: &str, key: &str, value: &str) -> Result<(), NetError> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(step(id, format!("cannot set {key}={value}")))
}

/// What a create has made so far, undone in reverse if a later step fails.
struct Made<'a> {
    names: &'a Names,
    netns: bool,
    veth: bool,
    host_table: bool,
}

impl Made<'_> {
    fn undo(&self) {
        if self.host_table {
            let _ = nft::delete_table(None, "ip", &self.names.host_table);
        }
        if self.veth {
            let _ = Rtnl::new().and_then(|r| r.delete(&self.names.host_veth));
        }
        if self.netns {
            let _ = teardown::remove_namespace(self.names);
            let _ = pool::release(&self.names.id);
        }
    }
}

impl Network {
    /// Makes the network of sandbox `id`: all of it, or nothing (the error says which
    /// step failed). `id` must be unique on the host ([`Names::of`]).
    pub fn create(id: &str, cfg: &NetConfig) -> Result<Network, NetError> {
        let names = Names::of(id)?;
        if !has_net_admin() {
            return Err(NetError::NeedsRoot);
        }
        let pool = match cfg.pool {
            Some(p) => p,
            None => Pool::from_env()?,
        };
        if netns::exists(&names.netns) {
            return Err(NetError::Exists(names.netns));
        }
        let mut made = Made {
            names: &names,
            netns: false,
            veth: false,
            host_table: false,
        };
        let subnet = pool::lease(&pool, &names, || {
            netns::create(&names.netns).map_err(|e| match e.raw_os_error() {
                Some(libc::EEXIST) => NetError::Exists(names.netns.clone()),
                Some(libc::EPERM) => NetError::NeedsRoot,
                _ => step(id, format!("cannot create namespace {}", names.netns))(e),
            })
        })?;
        made.netns = true;
        let net = Network {
            names: names.clone(),
            subnet,
        };
        match net.build(cfg, &mut made) {
            Ok(()) => Ok(net),
            Err(e) => {
                made.undo();
                Err(e)
            }
        }
    }

    fn build(&self, cfg: &NetConfig, made: &mut Made) -> Result<(), NetError> {
        let n = &self.names;
        let id = n.id.as_str();
        let (host, sbx) = (self.host_addr(), self.sandbox_addr());

        // The veth pair, its peer made directly inside the namespace; the host's end.
        let rtnl = Rtnl::new().map_err(step(id, "cannot open rtnetlink"))?;
        let ns = netns::open(&n.netns).map_err(step(id, format!("cannot open {}", n.netns)))?;
        {
            use std::os::fd::AsRawFd;
            rtnl.add_veth(&n.host_veth, SANDBOX_VETH, ns.as_raw_fd())
                .map_err(step(
                    id,
                    format!("cannot create veth {} <-> {SANDBOX_VETH}", n.host_veth),
                ))?;
        }
        made.veth = true;
        let host_end = format!("host end {} ({host}/30)", n.host_veth);
        rtnl.add_addr(&n.host_veth, host, 30)
            .and_then(|()| rtnl.up(&n.host_veth, None))
            .map_err(step(id, format!("cannot set up the {host_end}")))?;
        sysctl(
            id,
            &format!("net.ipv6.conf.{}.disable_ipv6", n.host_veth),
            "1",
        )?;
        sysctl(
            id,
            &format!("net.ipv4.conf.{}.forwarding", n.host_veth),
            "1",
        )?;

        // Inside: loopback, the TAP the VMM opens, the veth's end and the default route.
        let owner = cfg.tap_owner;
        netns::run_in(&n.netns, || -> Result<(), NetError> {
            let r = Rtnl::new().map_err(step(id, "cannot open rtnetlink in the namespace"))?;
            r.up("lo", None).map_err(step(id, "cannot set lo up"))?;
            tap::create_persistent(TAP_NAME, owner)
                .map_err(step(id, format!("cannot create TAP {TAP_NAME}")))?;
            r.up(TAP_NAME, Some(GATEWAY_MAC))
                .and_then(|()| r.add_addr(TAP_NAME, GATEWAY, GUEST_PREFIX))
                .map_err(step(
                    id,
                    format!("cannot set up TAP {TAP_NAME} ({GATEWAY}/30)"),
                ))?;
            r.add_addr(SANDBOX_VETH, sbx, 30)
                .and_then(|()| r.up(SANDBOX_VETH, None))
                .map_err(step(id, format!("cannot set up {SANDBOX_VETH} ({sbx}/30)")))?;
            r.add_default_route(host)
                .map_err(step(id, format!("cannot add the default route via {host}")))?;
            for (k, v) in [
                ("net.ipv6.conf.all.disable_ipv6", "1"),
                ("net.ipv6.conf.default.disable_ipv6", "1"),
                ("net.ipv4.ip_forward", "1"),
            ] {
                sysctl(id, k, v)?;
            }
            Ok(())
        })
        .map_err(step(id, format!("cannot enter {}", n.netns)))??;

        // The rules: the namespace's table first (nothing leaves before it is there),
        // then the host's.
        nft::load(Some(&n.netns), &nft::sandbox_ruleset(cfg.policy)).map_err(|message| {
            NetError::Nft {
                id: id.to_string(),
                table: format!("inet {SANDBOX_TABLE} in {}", n.netns),
                message,
            }
        })?;
        nft::load(None, &nft::host_ruleset(n, sbx, cfg.host_nat)).map_err(|message| {
            NetError::Nft {
                id: id.to_string(),
                table: format!("ip {}", n.host_table),
                message,
            }
        })?;
        made.host_table = true;
        let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward");
        // Only a network that lets something out needs it (a deny-all one is quiet).
        if cfg.policy != EgressPolicy::DenyAll && forwarding.is_ok_and(|v| v.trim() == "0") {
            tracing::warn!(
                "network of {id}: net.ipv4.ip_forward is 0, so replies coming in on the host's \
                 uplink are not forwarded to sandboxes; set it to 1 (or forwarding on the uplink) \
                 for egress out of this host"
            );
        }
        Ok(())
    }

    /// The network of `id` if its namespace and lease exist (e.g. for another process
    /// than the one that made it).
    pub fn find(id: &str) -> Result<Option<Network>, NetError> {
        let names = Names::of(id)?;
        if !netns::exists(&names.netns) {
            return Ok(None);
        }
        Ok(pool::held_by(id).map(|subnet| Network { names, subnet }))
    }

    /// Replaces the egress policy atomically (new connections follow it at once).
    pub fn set_policy(&self, policy: EgressPolicy) -> Result<(), NetError> {
        nft::load(Some(&self.names.netns), &nft::policy_update(policy)).map_err(|message| {
            NetError::Nft {
                id: self.names.id.clone(),
                table: format!("inet {SANDBOX_TABLE} in {}", self.names.netns),
                message,
            }
        })
    }

    /// Removes everything; see [`teardown::destroy_leftovers`].
    pub fn destroy(&self) -> Result<(), NetError> {
        teardown::destroy_leftovers(&self.names.id)
    }

    pub fn id(&self) -> &str {
        &self.names.id
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The namespace's path, for setns (the VMM or its jail joins it before opening the TAP).
    pub fn netns_path(&self) -> std::path::PathBuf {
        netns::path(&self.names.netns)
    }

    pub fn netns_name(&self) -> &str {
        &self.names.netns
    }

    /// The TAP's name inside the namespace (the same in every sandbox).
    pub fn tap_name(&self) -> &'static str {
        TAP_NAME
    }

    pub fn guest_addr(&self) -> Ipv4Addr {
        GUEST_ADDR
    }

    pub fn guest_prefix(&self) -> u8 {
        GUEST_PREFIX
    }

    pub fn gateway(&self) -> Ipv4Addr {
        GATEWAY
    }

    /// The guest NIC's MAC (the same in every sandbox).
    pub fn mac(&self) -> [u8; 6] {
        GUEST_MAC
    }

    /// The host's end of the veth pair (the namespace's default gateway).
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + 1)
    }

    /// The namespace's end of the veth pair: the source of the sandbox's traffic on the
    /// host (before the host's own masquerade, if any).
    pub fn sandbox_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + 2)
    }

    /// The host-side veth's name.
    pub fn host_veth(&self) -> &str {
        &self.names.host_veth
    }
}
