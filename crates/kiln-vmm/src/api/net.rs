//! `PUT /network-interfaces/{iface_id}` (before boot) and `PATCH` of its rate limiters
//! (before boot, or on a running VM), as Firecracker has them.

use serde::Deserialize;

use super::error::{ApiError, Outcome};
use super::http::Response;
use crate::config::{net, parse_json, NetworkInterface};
use crate::devices::rate_limiter::RateLimiterConfig;
use crate::vmm::Vmm;

fn same_id(body: &str, path: &str) -> Result<(), ApiError> {
    if body == path {
        return Ok(());
    }
    Err(ApiError::IfaceIdMismatch {
        body: body.into(),
        path: path.into(),
    })
}

/// PUT: a new interface, or a replacement for one of the same iface_id. The TAP is
/// opened once now so a missing, busy or forbidden one is a 400 here.
pub fn put(vmm: &mut Vmm, id: &str, body: &str) -> Outcome {
    if vmm.is_running() {
        return Err(ApiError::NetAfterStart);
    }
    let n: NetworkInterface = parse_json(body)?;
    same_id(&n.iface_id, id)?;
    n.validate()?;
    let mut nets = vmm.config.network_interfaces.clone();
    match nets.iter_mut().position(|x| x.iface_id == id) {
        Some(i) => nets[i] = n.clone(),
        None => nets.push(n.clone()),
    }
    net::check_unique(&nets)?;
    n.check_host()?;
    vmm.config.network_interfaces = nets;
    Ok(Response::no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    iface_id: String,
    #[serde(default)]
    rx_rate_limiter: Option<RateLimiterConfig>,
    #[serde(default)]
    tx_rate_limiter: Option<RateLimiterConfig>,
}

/// PATCH: new rate limiters, merged as Firecracker does ([`RateLimiterConfig::patched`]:
/// a bucket given replaces the current one, a bucket left out stays).
pub fn patch(vmm: &mut Vmm, id: &str, body: &str) -> Outcome {
    let p: Patch = parse_json(body)?;
    same_id(&p.iface_id, id)?;
    let Some(pos) = vmm
        .config
        .network_interfaces
        .iter()
        .position(|n| n.iface_id == id)
    else {
        return Err(ApiError::NoSuchIface(id.into()));
    };
    let mut n = vmm.config.network_interfaces[pos].clone();
    let merge = |cur: Option<RateLimiterConfig>, patch: Option<RateLimiterConfig>| {
        patch.map(|p| cur.unwrap_or_default().patched(&p))
    };
    let rx = merge(n.rx_rate_limiter, p.rx_rate_limiter);
    let tx = merge(n.tx_rate_limiter, p.tx_rate_limiter);
    n.rx_rate_limiter = rx.or(n.rx_rate_limiter);
    n.tx_rate_limiter = tx.or(n.tx_rate_limiter);
    n.validate()?;
    if vmm.is_running() {
        vmm.update_net_limiters(id, rx.as_ref(), tx.as_ref())?;
    }
    vmm.config.network_interfaces[pos] = n;
    Ok(Response::no_content())
}

#[cfg(test)]
mod tests;
