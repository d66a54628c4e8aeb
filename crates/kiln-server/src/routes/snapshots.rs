//! Snapshots: `POST /v1/sandboxes/{id}/snapshot`, `GET /v1/snapshots`,
//! `DELETE /v1/snapshots/{name}`, `POST /v1/snapshots/{name}/restore`,
//! `POST /v1/snapshots/{name}/pool` (warm pools); and the image
//! catalog, `GET /v1/images`. Snapshots are
//! answered as [`kiln::snapshot::SnapshotMeta`].

use std::collections::BTreeSet;
use std::sync::Mutex;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use kiln::{Sandbox, Snapshot};

use super::{blocking, json};
use crate::api::{PoolRequest, RestoreRequest, SnapshotRequest, SnapshotView};
use crate::app::AppState;
use crate::errors::ApiError;
use crate::extract::{JsonBody, SandboxId, SnapshotName};

/// `POST /v1/sandboxes/{id}/snapshot {"name"?}` → 201 with the snapshot; the sandbox
/// keeps running (or stays paused).
pub async fn take(
    SandboxId(id): SandboxId,
    JsonBody(req, _): JsonBody<SnapshotRequest>,
) -> Result<Response, ApiError> {
    let snap = blocking(move || Ok(Sandbox::get(&id)?.snapshot(req.name.as_deref())?)).await?;
    Ok(json(StatusCode::CREATED, &snap.meta))
}

/// `GET /v1/snapshots`, sorted by name, with the size of each one's warm pool.
pub async fn list() -> Result<Response, ApiError> {
    let views = blocking(|| {
        let pools = Sandbox::pool_sizes()?;
        let views: Vec<_> = Snapshot::list()?
            .into_iter()
            .map(|s| {
                let pool = pools.get(&s.meta.name).copied().unwrap_or(0);
                SnapshotView { meta: s.meta, pool }
            })
            .collect();
        Ok(views)
    })
    .await?;
    Ok(json(StatusCode::OK, &views))
}

/// `GET /v1/images`: the images sandboxes have booted, by name.
pub async fn images() -> Result<Response, ApiError> {
    let rows = blocking(|| Ok(kiln::sandbox::images()?)).await?;
    Ok(json(StatusCode::OK, &rows))
}

/// The most sandboxes one pool may hold.
const MAX_POOL: usize = 1000;

/// `POST /v1/snapshots/{name}/pool {"size"}` → the snapshot, its warm pool filled to
/// `size` sandboxes (kept at that size: creates from it refill it).
pub async fn pool(
    State(app): State<AppState>,
    SnapshotName(name): SnapshotName,
    JsonBody(req, _): JsonBody<PoolRequest>,
) -> Result<Response, ApiError> {
    if req.size > MAX_POOL {
        return Err(ApiError::invalid_input(format!(
            "size {}: use 0 to {MAX_POOL}",
            req.size
        )));
    }
    let view = blocking(move || {
        let pool = fill_pool(&app, &name, req.size)?.1;
        let meta = Snapshot::get(&name)?.meta;
        Ok(SnapshotView { meta, pool })
    })
    .await?;
    Ok(json(StatusCode::OK, &view))
}

/// Fills `snap`'s pool to `n` and adopts its members' VMMs (this server reaps them);
/// returns (added, members).
fn fill_pool(app: &AppState, snap: &str, n: usize) -> kiln::Result<(usize, usize)> {
    let added = Sandbox::pool_fill(snap, n)?;
    let members = Sandbox::pool_members(snap)?;
    for m in &members {
        app.children.adopt(Some(m.record().pid));
    }
    Ok((added, members.len()))
}

/// After a create from a snapshot (which may have taken a member of its warm pool), tops
/// the pool up to its target size in the background, as `kiln create --from` does; one
/// refill per snapshot at a time.
pub fn refill_pool(app: AppState, snap: String) {
    static BUSY: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let busy = || BUSY.lock().unwrap_or_else(|p| p.into_inner());
    if !busy().insert(snap.clone()) {
        return;
    }
    tokio::task::spawn_blocking(move || {
        let filled = match Sandbox::pool_refill_target(&snap) {
            Some(target) => fill_pool(&app, &snap, target),
            None => Ok((0, 0)),
        };
        match filled {
            Ok((0, _)) => {}
            Ok((n, _)) => tracing::info!("pool of {snap}: {n} sandboxes added"),
            Err(e) => tracing::warn!("pool of {snap}: refill failed: {e}"),
        }
        busy().remove(&snap);
    });
}

/// `DELETE /v1/snapshots/{name}` → 204.
pub async fn remove(SnapshotName(name): SnapshotName) -> Result<StatusCode, ApiError> {
    blocking(move || Ok(Snapshot::remove_named(&name)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/snapshots/{name}/restore {"id"?, "memory_backend"?}` → 201 with the new
/// (detached) sandbox.
pub async fn restore(
    State(app): State<AppState>,
    SnapshotName(name): SnapshotName,
    JsonBody(req, _): JsonBody<RestoreRequest>,
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
