//! The route table, and the layers around it: bearer-token auth, request counting, the
//! body size limit, and JSON answers for unknown routes (404 `no_route`) and wrong
//! methods (405 `method_not_allowed`).

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;

use crate::app::{AppState, BODY_LIMIT};
use crate::auth::{require_token, Token};
use crate::errors::ApiError;
use crate::routes::{events, exec, files, logs, meta, sandboxes, snapshots};

type Route = (Method, &'static str, MethodRouter<AppState>);

fn table() -> Vec<Route> {
    let sb = "/v1/sandboxes/{id}";
    vec![
        (Method::GET, "/v1/health", get(meta::health)),
        (Method::GET, "/openapi.json", get(meta::openapi)),
        (Method::GET, "/metrics", get(meta::metrics)),
        (Method::POST, "/v1/sandboxes", post(sandboxes::create)),
        (Method::GET, "/v1/sandboxes", get(sandboxes::list)),
        (Method::GET, sb, get(sandboxes::get)),
        (Method::DELETE, sb, delete(sandboxes::remove)),
        (Method::POST, "/v1/sandboxes/{id}/exec", post(exec::exec)),
        (Method::PUT, "/v1/sandboxes/{id}/files", put(files::write)),
        (Method::GET, "/v1/sandboxes/{id}/files", get(files::read)),
        (
            Method::DELETE,
            "/v1/sandboxes/{id}/files",
            delete(files::remove),
        ),
        (
            Method::GET,
            "/v1/sandboxes/{id}/files/stat",
            get(files::stat),
        ),
        (
            Method::GET,
            "/v1/sandboxes/{id}/files/list",
            get(files::list),
        ),
        (
            Method::POST,
            "/v1/sandboxes/{id}/files/mkdir",
            post(files::mkdir),
        ),
        (
            Method::POST,
            "/v1/sandboxes/{id}/pause",
            post(sandboxes::pause),
        ),
        (
            Method::POST,
            "/v1/sandboxes/{id}/resume",
            post(sandboxes::resume),
        ),
        (
            Method::POST,
            "/v1/sandboxes/{id}/stop",
            post(sandboxes::stop),
        ),
        (
            Method::POST,
            "/v1/sandboxes/{id}/snapshot",
            post(snapshots::take),
        ),
        (
            Method::POST,
            "/v1/sandboxes/{id}/fork",
            post(sandboxes::fork),
        ),
        (Method::GET, "/v1/sandboxes/{id}/logs", get(logs::logs)),
        (
            Method::GET,
            "/v1/sandboxes/{id}/events",
            get(events::of_sandbox),
        ),
        (Method::GET, "/v1/events", get(events::since)),
        (Method::GET, "/v1/snapshots", get(snapshots::list)),
        (
            Method::POST,
            "/v1/snapshots/{name}/pool",
            post(snapshots::pool),
        ),
        (Method::GET, "/v1/images", get(snapshots::images)),
        (
            Method::DELETE,
            "/v1/snapshots/{name}",
            delete(snapshots::remove),
        ),
        (
            Method::POST,
            "/v1/snapshots/{name}/restore",
            post(snapshots::restore),
        ),
    ]
}

/// Every (method, path template) the router serves (what /openapi.json must describe).
pub fn routes() -> Vec<(Method, &'static str)> {
    table().into_iter().map(|(m, p, _)| (m, p)).collect()
}

/// The application.
pub fn router(app: AppState, token: Token) -> Router {
    let mut r = Router::new();
    for (_, path, handler) in table() {
        r = r.route(path, handler);
    }
    r.fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(token, require_token))
        .layer(middleware::from_fn_with_state(app.clone(), count))
        .with_state(app)
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!(
            "no route {method} {}; GET /openapi.json lists the routes",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not take {method}; GET /openapi.json lists the routes",
            uri.path()
        ),
    )
}

/// Counts every answer by route template, method and status.
async fn count(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().to_string();
    let r = next.run(req).await;
    app.metrics
        .http_request(&route, &method, r.status().as_u16());
    tracing::debug!("{method} {route} -> {}", r.status().as_u16());
    r
}
