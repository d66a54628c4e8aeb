//! `/v1/sandboxes/{id}/files`: upload (raw body), download (raw bytes), both streamed
//! ([`super::transfer`]), stat, list, remove, mkdir. `path` is a path in the guest;
//! guest-side errors come back as 404 `guest_file_not_found` or 400 `guest_file_error`
//! with `kind` and `path`.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln::Sandbox;
use serde::Deserialize;

use super::transfer::{consume_body, produce_body};
use super::{blocking, json};
use crate::errors::ApiError;
use crate::extract::{SandboxId, Q};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathParam {
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteParams {
    path: String,
    /// Octal permission bits, e.g. `644` or `0755` (default: the agent's, 0644).
    mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveParams {
    path: String,
    recursive: Option<bool>,
}

fn check_path(p: &str) -> Result<(), ApiError> {
    if p.starts_with('/') && !p.contains('\0') {
        Ok(())
    } else {
        Err(ApiError::invalid_input(format!(
            "path {p:?}: use an absolute path in the guest"
        )))
    }
}

/// Octal permission bits (at most 0o7777).
pub fn parse_mode(m: &str) -> Result<u32, ApiError> {
    u32::from_str_radix(m, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            ApiError::invalid_input(format!("mode {m:?}: use octal permission bits like 644"))
        })
}

/// `PUT ...?path=&mode=` with the file's bytes as the body → 204. The body is streamed
/// to the agent as it arrives (no size limit but the guest's disk).
pub async fn write(
    SandboxId(id): SandboxId,
    Q(p): Q<WriteParams>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    check_path(&p.path)?;
    let mode = p.mode.as_deref().map(parse_mode).transpose()?;
    // An unknown or stopped sandbox is answered before the body is read.
    let sb = blocking(move || Ok(Sandbox::get(&id)?)).await?;
    consume_body(body, move |r| Ok(sb.write_file_from(&p.path, r, mode)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET ...?path=` → the file's bytes, streamed from the agent as they come.
pub async fn read(SandboxId(id): SandboxId, Q(p): Q<PathParam>) -> Result<Response, ApiError> {
    check_path(&p.path)?;
    let body = produce_body(move |w| Ok(Sandbox::get(&id)?.read_file_to(&p.path, w)?)).await?;
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(r)
}

/// `GET .../stat?path=` → [`kiln::FileStat`] (symlinks are not followed).
pub async fn stat(SandboxId(id): SandboxId, Q(p): Q<PathParam>) -> Result<Response, ApiError> {
    check_path(&p.path)?;
    let st = blocking(move || Ok(Sandbox::get(&id)?.stat(&p.path)?)).await?;
    Ok(json(StatusCode::OK, &st))
}

/// `GET .../list?path=` → [`kiln::DirEntry`] list.
pub async fn list(SandboxId(id): SandboxId, Q(p): Q<PathParam>) -> Result<Response, ApiError> {
    check_path(&p.path)?;
    let entries = blocking(move || Ok(Sandbox::get(&id)?.list_dir(&p.path)?)).await?;
    Ok(json(StatusCode::OK, &entries))
}

/// `DELETE ...?path=&recursive=` → 204.
pub async fn remove(
    SandboxId(id): SandboxId,
    Q(p): Q<RemoveParams>,
) -> Result<StatusCode, ApiError> {
    check_path(&p.path)?;
    let recursive = p.recursive.unwrap_or(false);
    blocking(move || Ok(Sandbox::get(&id)?.remove_path(&p.path, recursive)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST .../mkdir?path=` (with parents, like `mkdir -p`) → 204.
pub async fn mkdir(SandboxId(id): SandboxId, Q(p): Q<PathParam>) -> Result<StatusCode, ApiError> {
    check_path(&p.path)?;
    blocking(move || Ok(Sandbox::get(&id)?.mkdir(&p.path)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal_and_paths_absolute() {
        assert_eq!(parse_mode("644").unwrap(), 0o644);
        assert_eq!(parse_mode("0755").unwrap(), 0o755);
        for bad in ["9", "rw", "77777", ""] {
            assert_eq!(parse_mode(bad).unwrap_err().code, "invalid_input");
        }
        assert!(check_path("/tmp/x").is_ok());
        assert!(check_path("tmp/x").is_err());
        assert!(check_path("/a\0b").is_err());
    }
}
