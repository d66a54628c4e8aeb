//! Finding what kiln's networking made on this host, by name: for reconcile after a
//! crash and the tests' leftover checks.

use super::config::{Names, HOST_TABLE_PREFIX, HOST_VETH_PREFIX, NETNS_PREFIX};
use super::rtnl::Rtnl;
use super::{netns, nft, pool};

/// The ids whose namespaces (`kiln-<id>`) exist on this host.
pub fn network_ids() -> Vec<String> {
    netns::list()
        .into_iter()
        .filter_map(|n| n.strip_prefix(NETNS_PREFIX).map(str::to_string))
        .collect()
}

/// Everything of kiln's networking on this host, one line each (`netns kiln-x`,
/// `link kh0123456789`, `nft table ip kiln-0123456789`, `lease 10.200.0.4 x`).
pub fn list_leftovers() -> Vec<String> {
    let mut out: Vec<String> = network_ids()
        .into_iter()
        .map(|id| format!("netns {NETNS_PREFIX}{id}"))
        .collect();
    if let Ok(links) = Rtnl::new().and_then(|r| r.links()) {
        out.extend(
            links
                .into_iter()
                .filter(|l| is_host_veth(l))
                .map(|l| format!("link {l}")),
        );
    }
    if let Ok(tables) = nft::tables(None) {
        out.extend(
            tables
                .into_iter()
                .filter(|(f, n)| f == "ip" && n.starts_with(HOST_TABLE_PREFIX))
                .map(|(f, n)| format!("nft table {f} {n}")),
        );
    }
    out.extend(
        pool::registry()
            .leases()
            .into_iter()
            .map(|(n, id)| format!("lease {} {id}", std::net::Ipv4Addr::from(n))),
    );
    out
}

/// What of network `id` exists (empty once it is destroyed).
pub fn leftovers_of(id: &str) -> Vec<String> {
    let Ok(names) = Names::of(id) else {
        return Vec::new();
    };
    let mine = [
        format!("netns {}", names.netns),
        format!("link {}", names.host_veth),
        format!("nft table ip {}", names.host_table),
    ];
    let mut found: Vec<String> = list_leftovers()
        .into_iter()
        .filter(|l| {
            mine.contains(l)
                || l.strip_prefix("lease ")
                    .and_then(|r| r.split_once(' '))
                    .is_some_and(|(_, h)| h == id)
        })
        .collect();
    if let Some(subnet) = pool::held_by(id) {
        let addr = std::net::Ipv4Addr::from(u32::from(subnet) + 2);
        match super::conntrack::count(addr) {
            Ok(0) => {}
            Ok(n) => found.push(format!("conntrack {n} entries of {addr}")),
            Err(e) => found.push(format!("conntrack of {addr} unreadable: {e}")),
        }
    }
    found
}

fn is_host_veth(name: &str) -> bool {
    name.strip_prefix(HOST_VETH_PREFIX)
        .is_some_and(|h| h.len() == 10 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}
