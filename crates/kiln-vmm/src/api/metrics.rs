//! `PUT /metrics {"metrics_path": ...}` (Firecracker's): where metric lines go, set once
//! before the VM starts. `PUT /actions {"action_type": "FlushMetrics"}` writes a line.

use super::error::{ApiError, Outcome};
use super::http::Response;
use crate::config::parse_json;
use crate::metrics::{self, MetricsConfig};
use crate::vmm::Vmm;

pub fn put(vmm: &Vmm, body: &str) -> Outcome {
    if vmm.is_running() {
        return Err(ApiError::MetricsAfterStart);
    }
    let cfg: MetricsConfig = parse_json(body)?;
    metrics::configure(&cfg)?;
    Ok(Response::no_content())
}

#[cfg(test)]
mod tests;
