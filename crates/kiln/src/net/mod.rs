//! Per-sandbox networking: one network namespace per sandbox (`kiln-<id>` under
//! /run/netns), inside it a persistent TAP with the same name, guest address, gateway and
//! MACs in every sandbox, a veth pair to the host with a /30 leased from a host-wide pool,
//! and nftables tables that NAT what leaves and drop, by default, everything the guest
//! starts. Links, addresses and routes go through rtnetlink; each table is loaded as one
//! atomic ruleset. docs/NETWORK.md has the layout.
//!
//! ```no_run
//! use kiln::net::{NetConfig, Network};
//! let net = Network::create("state1-sb1", &NetConfig::default())?;
//! // the VMM joins net.netns_path(), then opens net.tap_name()
//! net.destroy()?;
//! # Ok::<(), kiln::net::NetError>(())
//! ```
//!
//! Layers inside: `network` (create, destroy) uses `teardown` (removal by name), which
//! uses `leftovers` (listing by name) and `nft`, `rtnl`, `conntrack`, `netns`, `pool`;
//! `leftovers` uses those too; `pool` uses `netns`; `tap` and everything else only
//! `config` and `error`.

pub mod config;
pub mod conntrack;
pub mod error;
mod leftovers;
pub mod mode;
pub mod netns;
mod network;
pub mod nft;
pub mod policy;
mod pool;
pub mod rtnl;
pub mod tap;
mod teardown;

pub use config::{
    EgressPolicy, NetConfig, Pool, GATEWAY, GUEST_ADDR, GUEST_MAC, GUEST_PREFIX, POOL_ENV, TAP_NAME,
};
pub use error::NetError;
pub use leftovers::{leftovers_of, list_leftovers, network_ids};
pub use mode::NetMode;
pub(crate) use network::has_net_admin;
pub use network::Network;
pub use teardown::{destroy_leftovers, destroy_unless};
