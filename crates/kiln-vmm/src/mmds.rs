//! MMDS, Firecracker's microVM metadata service: a JSON data store the host fills
//! (`PUT/PATCH/GET /mmds`), configured by `PUT /mmds/config`, and served to the guest
//! over HTTP/1.1 by the VMM itself ([`server`]) on `ipv4_address:80` in the VMM's network
//! namespace. [`protocol`] is the guest-facing protocol (pure: bytes in, response out);
//! [`merge`] is RFC 7396's JSON merge patch.

pub mod merge;
pub mod protocol;
pub mod server;
mod token;

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use token::Tokens;

/// Firecracker's default data-store limit (bytes of JSON).
pub const DEFAULT_SIZE_LIMIT: usize = 51200;
/// Firecracker's default MMDS address.
pub const DEFAULT_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MmdsVersion {
    /// Tokens optional (a token header is ignored).
    #[default]
    V1,
    /// Session tokens required on every GET.
    V2,
}

/// The body of `PUT /mmds/config` and the config file's `mmds-config` (Firecracker's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmdsConfig {
    #[serde(default)]
    pub version: MmdsVersion,
    /// The interfaces (iface_id) whose guest may reach MMDS; each must exist.
    pub network_interfaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<Ipv4Addr>,
    /// Always answer in IMDS (text) format, whatever the Accept header says.
    #[serde(default)]
    pub imds_compat: bool,
}

impl MmdsConfig {
    /// The address the responder listens on.
    pub fn address(&self) -> Ipv4Addr {
        self.ipv4_address.unwrap_or(DEFAULT_ADDRESS)
    }

    /// Checks the config against the configured interfaces' ids.
    pub fn validate(&self, iface_ids: &[&str]) -> Result<(), String> {
        if self.network_interfaces.is_empty() {
            return Err(
                "mmds-config: network_interfaces is empty; name at least one iface_id \
                 (PUT /network-interfaces/{iface_id} first)"
                    .into(),
            );
        }
        for id in &self.network_interfaces {
            if !iface_ids.contains(&id.as_str()) {
                return Err(format!(
                    "mmds-config: network interface '{id}' is not configured; PUT \
                     /network-interfaces/{id} first or name another iface_id"
                ));
            }
        }
        let ip = self.address();
        if !ip.is_link_local() {
            return Err(format!(
                "mmds-config: ipv4_address {ip} is not link-local; give an address in \
                 169.254.0.0/16 (default 169.254.169.254)"
            ));
        }
        Ok(())
    }
}

/// The data store, its limit and the V2 session tokens; shared by the API and the
/// guest-facing responder.
#[derive(Debug)]
pub struct Store {
    data: Value,
    size_limit: usize,
    pub version: MmdsVersion,
    pub imds_compat: bool,
    pub tokens: Tokens,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            data: Value::Object(Default::default()),
            size_limit: DEFAULT_SIZE_LIMIT,
            version: MmdsVersion::V1,
            imds_compat: false,
            tokens: Tokens::default(),
        }
    }
}

impl Store {
    pub fn set_size_limit(&mut self, limit: usize) {
        self.size_limit = limit;
    }

    pub fn data(&self) -> &Value {
        &self.data
    }

    fn check(&self, v: &Value) -> Result<(), String> {
        if !v.is_object() {
            return Err(
                "the MMDS data store must be a JSON object, e.g. {\"latest\": {...}}".into(),
            );
        }
        let size = v.to_string().len();
        if size > self.size_limit {
            return Err(format!(
                "the MMDS data store would be {size} bytes of JSON, over its limit of {} \
                 bytes; store less, or start kiln-vmm with a larger --mmds-size-limit",
                self.size_limit
            ));
        }
        Ok(())
    }

    /// `PUT /mmds`: replaces the whole store.
    pub fn put(&mut self, v: Value) -> Result<(), String> {
        self.check(&v)?;
        self.data = v;
        Ok(())
    }

    /// `PATCH /mmds`: applies an RFC 7396 merge patch; nothing changes on error.
    pub fn patch(&mut self, patch: &Value) -> Result<(), String> {
        let mut next = self.data.clone();
        merge::apply(&mut next, patch);
        self.check(&next)?;
        self.data = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
