//! Removing a sandbox network by name: for destroy, a failed create's undo and
//! reconcile after a crash.

use super::config::Names;
use super::error::{step, NetError};
use super::rtnl::Rtnl;
use super::{conntrack, netns, nft, pool};

/// Removes the namespace; the TAP, the namespace's table and its conntrack entries go
/// with it once no process is left inside (the VMM is gone before teardown).
pub(super) fn remove_namespace(names: &Names) -> Result<(), NetError> {
    netns::remove(&names.netns).map_err(step(
        &names.id,
        format!("cannot remove namespace {}", names.netns),
    ))
}

/// Removes everything named for network `id`: the host's nftables table, the host's
/// veth (its peer goes with it), the host's conntrack entries of its address, the
/// namespace (its TAP, table and conntrack entries go with it), and the pool lease.
/// Idempotent: what is already gone is skipped. Every part is tried; the first error
/// is returned.
pub fn destroy_leftovers(id: &str) -> Result<(), NetError> {
    let names = Names::of(id)?;
    let mut first: Option<NetError> = None;
    let mut keep = |r: Result<(), NetError>| {
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    };
    keep(
        nft::delete_table(None, "ip", &names.host_table).map_err(|message| NetError::Nft {
            id: id.to_string(),
            table: format!("ip {} (deleting)", names.host_table),
            message,
        }),
    );
    keep(
        Rtnl::new()
            .and_then(|r| r.delete(&names.host_veth))
            .map_err(step(id, format!("cannot delete veth {}", names.host_veth))),
    );
    // No connection state for a later holder of the /30 to inherit.
    if let Some(subnet) = pool::held_by(id) {
        let sandbox_addr = std::net::Ipv4Addr::from(u32::from(subnet) + 2);
        keep(conntrack::flush(sandbox_addr).map_err(step(
            id,
            format!("cannot delete the conntrack entries of {sandbox_addr}"),
        )));
    }
    keep(remove_namespace(&names));
    keep(pool::release(id));
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Reconcile: destroys every sandbox network on the host whose id `keep` refuses. The
/// namespaces are host-wide, so `keep` must accept every id that is not its caller's
/// (another state dir's, another program's) and refuse only its own ids with no live
/// sandbox. Returns each id removed, with the result of removing it.
pub fn destroy_unless(keep: impl Fn(&str) -> bool) -> Vec<(String, Result<(), NetError>)> {
    super::leftovers::network_ids()
        .into_iter()
        .filter(|id| !keep(id))
        .map(|id| {
            let r = destroy_leftovers(&id);
            (id, r)
        })
        .collect()
}
