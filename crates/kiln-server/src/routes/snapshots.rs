//! Snapshots: `POST /v1/sandboxes/{id}/snapshot`, `GET /v1/snapshots`,
//! `DELETE /v1/snapshots/{name}`, `POST /v1/snapshots/{name}/restore`; and the image
//! catalog, `GET /v1/images`. Snapshots are
//! answered as [`kiln::snapshot::SnapshotMeta`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use kiln::{Sandbox, Snapshot};

use super::{blocking, json};
use crate::api::{RestoreRequest, SnapshotRequest};
use crate::errors::ApiError;
use crate::extract::{JsonBody, SandboxId, SnapshotName};
use crate::router::AppState;

/// `POST /v1/sandboxes/{id}/snapshot {"name"?}` → 201 with the snapshot; the sandbox
/// keeps running (or stays paused).
pub async fn take(
    SandboxId(id): SandboxId,
    JsonBody(req): JsonBody<SnapshotRequest>,
) -> Result<Response, ApiError> {
    let snap = blocking(move || Ok(Sandbox::get(&id)?.snapshot(req.name.as_deref())?)).await?;
    Ok(json(StatusCode::CREATED, &snap.meta))
}

/// `GET /v1/snapshots`, sorted by name.
pub async fn list() -> Result<Response, ApiError> {
    let all = blocking(|| Ok(Snapshot::list()?)).await?;
    let metas: Vec<_> = all.into_iter().map(|s| s.meta).collect();
    Ok(json(StatusCode::OK, &metas))
}

/// `GET /v1/images`: the images sandboxes have booted, by name.
pub async fn images() -> Result<Response, ApiError> {
    let rows = blocking(|| Ok(kiln::catalog::images()?)).await?;
    Ok(json(StatusCode::OK, &rows))
}

/// `DELETE /v1/snapshots/{name}` → 204.
pub async fn remove(SnapshotName(name): SnapshotName) -> Result<StatusCode, ApiError> {
    blocking(move || Ok(Snapshot::get(&name)?.remove()?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/snapshots/{name}/restore {"id"?, "memory_backend"?}` → 201 with the new
/// (detached) sandbox.
pub async fn restore(
    State(app): State<AppState>,
    SnapshotName(name): SnapshotName,
    JsonBody(req): JsonBody<RestoreRequest>,
) -> Result<Response, ApiError> {
    let mut b = Sandbox::builder().from_snapshot(name).detach(true);
    if let Some(id) = req.id {
        b = b.id(id);
    }
    if let Some(m) = req.memory_backend {
        b = b.memory_backend(m.into());
    }
    let info = blocking(move || Ok(b.create()?.info())).await?;
    app.children.adopt(info.pid);
    Ok(json(StatusCode::CREATED, &info))
}
