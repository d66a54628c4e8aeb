//! MMDS routes (Firecracker's): `PUT /mmds/config` (before boot, or after: the responder
//! starts then), `PUT /mmds` (replace the data store), `PATCH /mmds` (JSON merge patch,
//! RFC 7396), `GET /mmds`. The guest reads the store through [`crate::mmds::server`].

use serde_json::Value;

use super::error::{ApiError, Outcome};
use super::http::Response;
use crate::config::{parse_json, ConfigError};
use crate::mmds::MmdsConfig;
use crate::vmm::Vmm;

fn store_err(e: String) -> ApiError {
    ApiError::Config(ConfigError::new(e))
}

pub fn put_config(vmm: &mut Vmm, body: &str) -> Outcome {
    let cfg: MmdsConfig = parse_json(body)?;
    let ids: Vec<&str> = vmm
        .config
        .network_interfaces
        .iter()
        .map(|n| n.iface_id.as_str())
        .collect();
    cfg.validate(&ids).map_err(store_err)?;
    let old = vmm.config.mmds_config.replace(cfg);
    if let Err(e) = vmm.apply_mmds_config() {
        vmm.config.mmds_config = old;
        let _ = vmm.apply_mmds_config();
        return Err(store_err(e));
    }
    Ok(Response::no_content())
}

pub fn put(vmm: &Vmm, body: &str) -> Outcome {
    let v: Value = parse_json(body)?;
    vmm.mmds
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .put(v)
        .map_err(store_err)?;
    Ok(Response::no_content())
}

pub fn patch(vmm: &Vmm, body: &str) -> Outcome {
    let v: Value = parse_json(body)?;
    vmm.mmds
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .patch(&v)
        .map_err(store_err)?;
    Ok(Response::no_content())
}

pub fn get(vmm: &Vmm) -> Outcome {
    let st = vmm.mmds.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Response::json(200, st.data()))
}

#[cfg(test)]
mod tests;
