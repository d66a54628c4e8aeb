//! `/v1/sandboxes`: create, list, get, remove, pause, resume, stop, fork.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use kiln::store::SandboxFilter;
use kiln::{Sandbox, SandboxBuilder, SandboxInfo};

use super::{blocking, json, secs};
use crate::api::{CreateSandbox, ForkRequest, Removed, StopResult};
use crate::app::AppState;
use crate::errors::ApiError;
use crate::extract::{check_snapshot_name, JsonBody, SandboxId, Q};

/// `POST /v1/sandboxes` → 201 with the sandbox. It is detached: it runs until it is
/// removed, reaped (idle timeout, max lifetime) or fails, whatever the server does.
pub async fn create(
    State(app): State<AppState>,
    JsonBody(req, _): JsonBody<CreateSandbox>,
) -> Result<Response, ApiError> {
    let from = req.from_snapshot.clone();
    let b = builder(req)?;
    let info = blocking(move || Ok(b.create()?.info())).await?;
    app.children.adopt(info.pid);
    if let Some(snap) = from {
        super::snapshots::refill_pool(app, snap);
    }
    Ok(json(StatusCode::CREATED, &info))
}

/// The builder for a create request; refuses combinations the library would ignore.
pub fn builder(req: CreateSandbox) -> Result<SandboxBuilder, ApiError> {
    let mut b = Sandbox::builder().detach(true);
    if let Some(snap) = &req.from_snapshot {
        check_snapshot_name(snap)?;
        let from_snapshot = [
            ("image", req.image.is_some()),
            ("cpus", req.cpus.is_some()),
            ("memory_mib", req.memory_mib.is_some()),
            ("backend", req.backend.as_ref().is_some_and(|b| b != "kiln")),
        ];
        if let Some((field, _)) = from_snapshot.iter().find(|(_, set)| *set) {
            return Err(ApiError::invalid_input(format!(
                "{field} cannot be combined with from_snapshot (a restored sandbox takes its image, size and backend from the snapshot)"
            )));
        }
        b = b.from_snapshot(snap.as_str());
        if let Some(m) = req.memory_backend {
            b = b.memory_backend(m.into());
        }
    } else if req.memory_backend.is_some() {
        return Err(ApiError::invalid_input(
            "memory_backend applies to from_snapshot only",
        ));
    }
    if let Some(id) = req.id {
        b = b.id(id);
    }
    for p in &req.ports {
        let spec: kiln::ports::PortSpec = p
            .parse()
            .map_err(|e: kiln::ports::PortError| ApiError::invalid_input(e.to_string()))?;
        b = b.port(spec);
    }
    if let Some(image) = req.image {
        // The library also takes a host path to an ext4 image; over the API that would
        // let a client attach (and so read) any host file the server can read.
        if image.contains('/') || image.ends_with(".ext4") {
            return Err(ApiError::invalid_input(format!(
                "image {image:?}: the API takes image names (minimal, debian), not host paths"
            )));
        }
        b = b.image(image);
    }
    if let Some(n) = req.cpus {
        b = b.cpus(n);
    }
    if let Some(m) = req.memory_mib {
        b = b.memory_mib(m);
    }
    if let Some(q) = req.cpu_quota {
        b = b.cpu_quota(q);
    }
    if let Some(name) = req.backend {
        b = b.backend(name);
    }
    if let Some(mode) = req.network.and_then(|n| n.mode) {
        if req.from_snapshot.is_some() {
            return Err(ApiError::invalid_input(
                "network applies to new sandboxes only: a restored one gets a network like its snapshot's",
            ));
        }
        let mode = kiln::sandbox::NetMode::parse(&mode)
            .map_err(|e| ApiError::invalid_input(e.replace("--net ", "network.mode ")))?;
        b = b.network(mode);
    }
    for (k, v) in req.env {
        b = b.env(k, v);
    }
    for (k, v) in req.metadata {
        b = b.metadata(k, v);
    }
    if let Some(t) = secs("timeout_secs", req.timeout_secs)? {
        b = b.timeout(t);
    }
    if let Some(t) = secs("idle_timeout_secs", req.idle_timeout_secs)? {
        b = b.idle_timeout(t);
    }
    if let Some(t) = secs("max_lifetime_secs", req.max_lifetime_secs)? {
        b = b.max_lifetime(t);
    }
    Ok(b)
}

/// `GET /v1/sandboxes?state=&backend=&metadata.<key>=<value>` (all must match).
pub async fn list(Q(params): Q<Vec<(String, String)>>) -> Result<Response, ApiError> {
    let filter = filter(params)?;
    let all = blocking(move || {
        let mut out: Vec<SandboxInfo> = Vec::new();
        for mut sb in Sandbox::list_filtered(&filter)? {
            out.push(sb.info());
        }
        Ok(out)
    })
    .await?;
    Ok(json(StatusCode::OK, &all))
}

pub fn filter(params: Vec<(String, String)>) -> Result<SandboxFilter, ApiError> {
    let mut f = SandboxFilter::default();
    for (k, v) in params {
        if k == "state" {
            f.state =
                Some(v.parse().map_err(|e: kiln::store::UnknownState| {
                    ApiError::invalid_input(e.to_string())
                })?);
        } else if k == "backend" {
            f.backend = Some(v);
        } else if let Some(key) = k.strip_prefix("metadata.").filter(|k| !k.is_empty()) {
            f.metadata.push((key.to_string(), v));
        } else {
            return Err(ApiError::invalid_input(format!(
                "unknown filter {k:?}: use state, backend or metadata.<key>"
            )));
        }
    }
    Ok(f)
}

/// `GET /v1/sandboxes/{id}`.
pub async fn get(SandboxId(id): SandboxId) -> Result<Response, ApiError> {
    let info = blocking(move || Ok(Sandbox::get(&id)?.info())).await?;
    Ok(json(StatusCode::OK, &info))
}

/// `DELETE /v1/sandboxes/{id}`: stops it if it runs, then removes it and its folder.
pub async fn remove(SandboxId(id): SandboxId) -> Result<Response, ApiError> {
    let removed = blocking(move || {
        let mut sb = Sandbox::get(&id)?;
        let step = if sb.is_up() {
            Some(sb.stop()?.to_string())
        } else {
            None
        };
        sb.remove()?;
        Ok(Removed { id, step })
    })
    .await?;
    Ok(json(StatusCode::OK, &removed))
}

/// Runs `op` on the sandbox, then answers with the sandbox.
async fn with_sandbox(
    id: String,
    op: fn(&mut Sandbox) -> kiln::Result<()>,
) -> Result<Response, ApiError> {
    let info = blocking(move || {
        let mut sb = Sandbox::get(&id)?;
        op(&mut sb)?;
        Ok(sb.info())
    })
    .await?;
    Ok(json(StatusCode::OK, &info))
}

/// `POST /v1/sandboxes/{id}/pause`.
pub async fn pause(SandboxId(id): SandboxId) -> Result<Response, ApiError> {
    with_sandbox(id, Sandbox::pause).await
}

/// `POST /v1/sandboxes/{id}/resume`.
pub async fn resume(SandboxId(id): SandboxId) -> Result<Response, ApiError> {
    with_sandbox(id, Sandbox::resume).await
}

/// `POST /v1/sandboxes/{id}/stop` → `{"step": ...}`; the sandbox stays (stopped) until
/// it is removed.
pub async fn stop(SandboxId(id): SandboxId) -> Result<Response, ApiError> {
    let step = blocking(move || Ok(Sandbox::get(&id)?.stop()?.to_string())).await?;
    Ok(json(StatusCode::OK, &StopResult { step }))
}

/// `POST /v1/sandboxes/{id}/fork {"count": N}` → 201 with the children (detached).
pub async fn fork(
    State(app): State<AppState>,
    SandboxId(id): SandboxId,
    JsonBody(req, _): JsonBody<ForkRequest>,
) -> Result<Response, ApiError> {
    let children = blocking(move || {
        let mut children = Sandbox::get(&id)?.fork(req.count)?;
        Ok(children
            .iter_mut()
            .map(|c| {
                c.set_detach(true);
                c.info()
            })
            .collect::<Vec<_>>())
    })
    .await?;
    for c in &children {
        app.children.adopt(c.pid);
    }
    Ok(json(StatusCode::CREATED, &children))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MemoryBackendName;

    #[test]
    fn list_filters_are_parsed_and_unknown_ones_refused() {
        let p = |kv: &[(&str, &str)]| {
            filter(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let f = p(&[
            ("state", "running"),
            ("backend", "kiln"),
            ("metadata.team", "a"),
        ])
        .unwrap();
        assert_eq!(f.state, Some(kiln::State::Running));
        assert_eq!(f.backend.as_deref(), Some("kiln"));
        assert_eq!(f.metadata, vec![("team".to_string(), "a".to_string())]);
        for bad in [
            &[("state", "dead")][..],
            &[("owner", "x")],
            &[("metadata.", "x")],
        ] {
            assert_eq!(p(bad).unwrap_err().code, "invalid_input");
        }
    }

    #[test]
    fn create_refuses_what_a_restore_would_ignore() {
        let req = |f: fn(&mut CreateSandbox)| {
            let mut r = CreateSandbox {
                from_snapshot: Some("snap".into()),
                ..Default::default()
            };
            f(&mut r);
            builder(r)
        };
        assert!(req(|_| {}).is_ok());
        assert!(req(|r| r.memory_backend = Some(MemoryBackendName::Uffd)).is_ok());
        let e = req(|r| r.image = Some("debian".into())).unwrap_err();
        assert!(e.message.contains("image"), "{}", e.message);
        assert!(req(|r| {
            r.metadata.insert("a".into(), "b".into());
            r.idle_timeout_secs = Some(5.0);
        })
        .is_ok());
        // The per-command timeout given at creation replaces the snapshot's.
        assert!(req(|r| r.timeout_secs = Some(5.0)).is_ok());
        let e = req(|r| r.from_snapshot = Some("../etc".into())).unwrap_err();
        assert_eq!(e.code, "snapshot_not_found");
        let e = builder(CreateSandbox {
            memory_backend: Some(MemoryBackendName::File),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.code, "invalid_input");
        for path in ["/etc/shadow", "../x.ext4", "disk.ext4"] {
            let e = builder(CreateSandbox {
                image: Some(path.into()),
                ..Default::default()
            })
            .unwrap_err();
            assert!(e.message.contains("not host paths"), "{}", e.message);
        }
        let e = builder(CreateSandbox {
            idle_timeout_secs: Some(-1.0),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.message.contains("idle_timeout_secs"));
    }
}
