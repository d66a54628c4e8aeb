//! The errors of making and removing sandbox networks.

use crate::lease::LeaseError;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No CAP_NET_ADMIN: nothing was made.
    #[error(
        "networking needs root (CAP_NET_ADMIN) to make the sandbox's network namespace, veth, \
         TAP and nftables rules; run kiln as root, or use --net none for a sandbox without a network"
    )]
    NeedsRoot,
    #[error("network id {0:?}: use 1-200 letters, digits, '-', '_' or '.'")]
    BadId(String),
    #[error(
        "network namespace {0} already exists (a sandbox of that id on this host, or a leftover \
         that reconcile removes); nothing was changed"
    )]
    Exists(String),
    #[error("{}={value}: {why}", super::config::POOL_ENV)]
    BadPool { value: String, why: String },
    #[error(
        "every /30 of the network pool {pool} is leased; remove sandboxes or give a larger pool \
         with {}",
        super::config::POOL_ENV
    )]
    PoolExhausted { pool: String },
    /// A step of making or removing the network failed (what, on which sandbox, errno).
    #[error("network of {id}: {step}: {cause}")]
    Step {
        id: String,
        step: String,
        cause: std::io::Error,
    },
    /// nft refused a ruleset (its own message).
    #[error("network of {id}: nft refused the ruleset of table {table}: {message}")]
    Nft {
        id: String,
        table: String,
        message: String,
    },
    #[error("{0}")]
    Lease(#[from] LeaseError),
}

impl NetError {
    /// The errno of a failed step, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetError::Step { cause, .. } => cause.raw_os_error(),
            NetError::Lease(e) => e.cause.raw_os_error(),
            _ => None,
        }
    }
}

/// `.map_err(step(id, "what"))` for an io::Error.
pub(crate) fn step<'a>(
    id: &'a str,
    what: impl Into<String> + 'a,
) -> impl FnOnce(std::io::Error) -> NetError + 'a {
    move |cause| NetError::Step {
        id: id.to_string(),
        step: what.into(),
        cause,
    }
}
