//! `PUT /entropy` and the config file's `entropy` (Firecracker's `EntropyDevice`): the
//! virtio-rng's rate limiter. kiln-vmm always attaches a virtio-rng; this only limits it.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::devices::rate_limiter::RateLimiterConfig;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntropyConfig {
    /// `bandwidth` counts random bytes handed to the guest, `ops` requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiterConfig>,
}

impl EntropyConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.rate_limiter {
            Some(l) => l.validate("entropy.rate_limiter").map_err(ConfigError::new),
            None => Ok(()),
        }
    }
}
