//! The event log: `GET /v1/events?since=<seq>&limit=` (everything after `seq`, oldest
//! first: poll with the last `seq` seen) and `GET /v1/sandboxes/{id}/events?limit=`
//! (the last events of one sandbox, which outlive it). `limit` is 1 to 1000, default
//! 100.

use axum::http::StatusCode;
use axum::response::Response;
use kiln::Sandbox;
use serde::Deserialize;

use super::{blocking, json};
use crate::errors::ApiError;
use crate::extract::{SandboxId, Q};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinceParams {
    since: Option<i64>,
    limit: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitParam {
    limit: Option<u32>,
}

fn limit(l: Option<u32>) -> Result<u32, ApiError> {
    match l.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(ApiError::invalid_input(format!(
            "limit {n}: use 1 to {MAX_LIMIT}"
        ))),
    }
}

pub async fn since(Q(p): Q<SinceParams>) -> Result<Response, ApiError> {
    let limit = limit(p.limit)?;
    let since = p.since.unwrap_or(0);
    if since < 0 {
        return Err(ApiError::invalid_input(format!(
            "since {since}: use 0 (from the start) or the last seq seen"
        )));
    }
    let events = blocking(move || Ok(kiln::events_since(since, limit)?)).await?;
    Ok(json(StatusCode::OK, &events))
}

/// A sandbox's events, also after it was removed; 404 when there are none and no such
/// sandbox.
pub async fn of_sandbox(
    SandboxId(id): SandboxId,
    Q(p): Q<LimitParam>,
) -> Result<Response, ApiError> {
    let limit = limit(p.limit)?;
    let events = blocking(move || {
        let events = kiln::events_for(&id, limit)?;
        if events.is_empty() {
            Sandbox::get(&id)?;
        }
        Ok(events)
    })
    .await?;
    Ok(json(StatusCode::OK, &events))
}

#[cfg(test)]
mod tests {
    #[test]
    fn limits_are_bounded() {
        assert_eq!(super::limit(None).unwrap(), 100);
        assert_eq!(super::limit(Some(1000)).unwrap(), 1000);
        assert!(super::limit(Some(0)).is_err());
        assert!(super::limit(Some(1001)).is_err());
    }
}
