//! `PUT /logger` (Firecracker's `Logger`: `log_path`, `level`, `show_level`,
//! `show_log_origin`, `module`), once per process, as `--log-path`/`--level` would.

use super::error::Outcome;
use super::http::Response;
use crate::config::{parse_json, ConfigError};
use crate::logger::{self, LoggerConfig};

pub fn put(body: &str) -> Outcome {
    let cfg: LoggerConfig = parse_json(body)?;
    logger::configure(&cfg).map_err(|e| ConfigError::new(e.to_string()))?;
    Ok(Response::no_content())
}

#[cfg(test)]
mod tests;
