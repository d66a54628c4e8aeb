//! Host-wide leases of the pool's /30s: `/run/kiln-net/leases/<network address>` names
//! the sandbox network id holding it ([`crate::lease`]). A lease is in force while its
//! holder's namespace exists, so a crashed create or a lost teardown frees it by itself
//! once the namespace is gone. Leases are keyed by address, not slot number, so two
//! processes with different pools never hand out one /30 twice.

use std::net::Ipv4Addr;

use crate::lease::{self, Registry};

use super::config::{Names, Pool, NETNS_PREFIX};
use super::error::NetError;

pub const LEASE_DIR: &str = "/run/kiln-net/leases";

pub fn registry() -> Registry {
    Registry::new(
        LEASE_DIR,
        |n| Ipv4Addr::from(n).to_string(),
        |s| s.parse::<Ipv4Addr>().ok().map(u32::from),
    )
}

/// Whether `holder`'s lease is still in force: its namespace exists.
fn live(_: u32, holder: &str) -> bool {
    super::netns::exists(&format!("{NETNS_PREFIX}{holder}"))
}

/// Leases a /30 of `pool` to `names.id` and, under the same lock, runs `claim` (which
/// makes the namespace that keeps the lease live). Returns the /30's network address.
pub fn lease(
    pool: &Pool,
    names: &Names,
    claim: impl FnOnce() -> Result<(), NetError>,
) -> Result<Ipv4Addr, NetError> {
    let span = pool.slots();
    let start = lease::spread(&names.id, u64::from(span)) as u32;
    let candidates = (0..span).map(|i| u32::from(pool.slot(start.wrapping_add(i) % span)));
    match registry().allocate(&names.id, candidates, live, |_| claim())? {
        Some(n) => Ok(Ipv4Addr::from(n)),
        None => Err(NetError::PoolExhausted {
            pool: pool.to_string(),
        }),
    }
}

/// The /30 `id` holds, if any.
pub fn held_by(id: &str) -> Option<Ipv4Addr> {
    registry().held_by(id).first().map(|&n| Ipv4Addr::from(n))
}

/// Drops every lease `id` holds.
pub fn release(id: &str) -> Result<(), NetError> {
    let r = registry();
    for n in r.held_by(id) {
        r.release(n, id)?;
    }
    Ok(())
}
