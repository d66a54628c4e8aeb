//! The sandbox ↔ [`crate::net`] glue: which network a sandbox gets (`--net`), the host-
//! unique id of its network, making it before the VMM starts, removing it whenever the
//! VMM is gone, and what `kiln inspect` shows of it.
//!
//! Every sandbox with a network has the same guest side (eth0 169.254.0.2/30, gateway
//! .1, one MAC), so a snapshot restores and a fork child runs unchanged in a namespace
//! of its own; only the host side (namespace, veth, pool /30) differs.

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::net::{self, NetConfig, NetMode, Network};
use crate::state_dir::Dir;
use crate::vmm::{GuestSpec, NicSpec};

/// `KILN_NET_HOST_NAT=0`: do not masquerade sandboxes' traffic again on the way out of
/// the host (for hosts that route the pool; tests use it to tell sandboxes apart).
pub const HOST_NAT_ENV: &str = "KILN_NET_HOST_NAT";

/// The network a new sandbox gets: `asked`, or when nothing was asked a NIC with no
/// egress where it can be made (root, a backend with TAP networking) and none, said
/// in one line, where it cannot.
pub fn resolve(asked: Option<NetMode>, backend: &dyn crate::backend::VmBackend) -> Result<NetMode> {
    let tap = backend.capabilities().tap_networking;
    let can = net::has_net_admin();
    match asked {
        Some(NetMode::None) => Ok(NetMode::None),
        Some(m) if !tap => Err(Error::InvalidInput(format!(
            "--net {}: the {} backend has no TAP networking; use --net none or another backend",
            m.name(),
            backend.name()
        ))),
        Some(_) if !can => Err(net::NetError::NeedsRoot.into()),
        Some(m) => Ok(m),
        None if tap && can => Ok(NetMode::Deny),
        None => {
            if tap {
                tracing::warn!(
                    "no network for this sandbox: making its namespace, veth and TAP needs \
                     root (CAP_NET_ADMIN); it runs as with --net none (say --net none to \
                     silence this)"
                );
            }
            Ok(NetMode::None)
        }
    }
}

/// The host-unique id of the network of the sandbox in `dir`: its state dir's key and
/// its id (two state dirs may both have a sandbox `web`).
pub fn net_id(dir: &Dir) -> String {
    let state = dir.path.parent().unwrap_or(std::path::Path::new("/"));
    let id = dir.path.file_name().unwrap_or_default().to_string_lossy();
    format!("{}{id}", net_id_prefix(state))
}

/// The prefix of every network id of the state dir `state` (for reconcile).
pub fn net_id_prefix(state: &std::path::Path) -> String {
    let canonical = std::fs::canonicalize(state).unwrap_or_else(|_| state.to_path_buf());
    let key = crate::cgroup::state_key(&canonical);
    format!("{}-", key.strip_prefix("state-").unwrap_or(&key))
}

/// Makes the network of the sandbox in `dir` for `mode` (nothing for `None`). All or
/// nothing.
pub fn attach(dir: &Dir, mode: NetMode) -> Result<Option<Network>> {
    let Some(policy) = mode.policy() else {
        return Ok(None);
    };
    let host_nat = crate::backend::switch::read(HOST_NAT_ENV, true, "masquerade on the host")?;
    let cfg = NetConfig {
        policy,
        host_nat,
        ..NetConfig::default()
    };
    Ok(Some(Network::create(&net_id(dir), &cfg)?))
}

/// Gives the VM `g` the NIC on `n`'s TAP, the guest's `kiln.net=` and the VMM `n`'s
/// namespace.
pub fn wire(g: &mut GuestSpec, n: &Network) {
    g.nic = Some(nic());
    g.netns = Some(n.netns_name().to_string());
    g.boot_args = Some(g.boot_args.take().unwrap_or_default() + &boot_arg());
}

/// The NIC every sandbox with a network has.
pub fn nic() -> NicSpec {
    NicSpec {
        iface_id: "eth0".into(),
        host_dev_name: net::TAP_NAME.into(),
        guest_mac: net::config::mac_string(&net::GUEST_MAC),
    }
}

/// The guest's `kiln.net=` boot parameter.
pub fn boot_arg() -> String {
    format!(
        " kiln.net={}/{},{},{}",
        net::GUEST_ADDR,
        net::GUEST_PREFIX,
        net::GATEWAY,
        net::config::MTU
    )
}

/// Removes the network of the sandbox in `dir` if it has one (its VMM is gone);
/// whether there was one. An unreadable record counts as maybe having one. A failure
/// is logged: reconcile tries again.
pub fn detach(dir: &Dir) -> bool {
    // Every path where a VMM is gone comes here, with a network or not: a sandbox whose
    // record says it never had one costs no nft run and no link dump.
    let sandbox = dir.path.file_name().unwrap_or_default().to_string_lossy();
    if dir.load(&sandbox).is_ok_and(|r| r.net == NetMode::None) {
        return false;
    }
    let id = net_id(dir);
    if net::leftovers_of(&id).is_empty() {
        return false;
    }
    if let Err(e) = net::destroy_leftovers(&id) {
        tracing::warn!("{e}");
    }
    true
}

/// Reconcile: removes every network of the state dir `state` whose sandbox `live`
/// refuses (no such sandbox, or its VMM is gone). Networks of other state dirs and
/// programs are left alone. Returns how many were removed.
pub fn remove_orphans(state: &std::path::Path, live: impl Fn(&str) -> bool) -> usize {
    let prefix = net_id_prefix(state);
    let removed = net::destroy_unless(|nid| match nid.strip_prefix(&prefix) {
        Some(id) => live(id),
        None => true,
    });
    for (id, r) in &removed {
        if let Err(e) = r {
            tracing::warn!("removing the leftover network {id}: {e}");
        }
    }
    removed.len()
}

/// What `kiln inspect` and the API show of a sandbox's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInfo {
    /// `none`, `default` or `allow-all`.
    pub mode: &'static str,
    /// The guest's eth0 address (the same in every sandbox).
    pub guest_ip: Option<Ipv4Addr>,
    pub guest_prefix: Option<u8>,
    pub gateway: Option<Ipv4Addr>,
    pub guest_mac: Option<String>,
    /// The network namespace (`ip netns list` shows it).
    pub netns: Option<String>,
    /// The TAP in that namespace.
    pub tap: Option<String>,
    /// The host's end of the veth pair.
    pub host_ip: Option<Ipv4Addr>,
    /// The namespace's end: the sandbox's source address on the host.
    pub sandbox_ip: Option<Ipv4Addr>,
    pub host_veth: Option<String>,
}

/// The network of the sandbox in `dir` as it is now (`mode` from its record).
pub fn info(dir: &Dir, mode: NetMode) -> NetworkInfo {
    let found = match mode {
        NetMode::None => None,
        _ => Network::find(&net_id(dir)).ok().flatten(),
    };
    NetworkInfo {
        mode: mode.name(),
        guest_ip: found.as_ref().map(Network::guest_addr),
        guest_prefix: found.as_ref().map(Network::guest_prefix),
        gateway: found.as_ref().map(Network::gateway),
        guest_mac: found.as_ref().map(|n| net::config::mac_string(&n.mac())),
        netns: found.as_ref().map(|n| n.netns_name().to_string()),
        tap: found.as_ref().map(|n| n.tap_name().to_string()),
        host_ip: found.as_ref().map(Network::host_addr),
        sandbox_ip: found.as_ref().map(Network::sandbox_addr),
        host_veth: found.as_ref().map(|n| n.host_veth().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_ids_carry_the_state_dir_and_fit_a_name() {
        let a = Dir::of(std::path::Path::new("/nonexistent/a"), "web");
        let b = Dir::of(std::path::Path::new("/nonexistent/b"), "web");
        assert_ne!(net_id(&a), net_id(&b));
        assert!(net_id(&a).ends_with("-web"));
        assert!(net_id(&a).starts_with(&net_id_prefix(std::path::Path::new("/nonexistent/a"))));
        let long = Dir::of(std::path::Path::new("/x"), &"a".repeat(40));
        assert!(net::config::Names::of(&net_id(&long)).is_ok());
    }

    #[test]
    fn the_boot_arg_is_what_the_agent_parses() {
        assert_eq!(boot_arg(), " kiln.net=169.254.0.2/30,169.254.0.1,1500");
        assert_eq!(nic().guest_mac, "06:00:a9:fe:00:02");
    }
}
