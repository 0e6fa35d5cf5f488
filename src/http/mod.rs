//! The HTTP edge: routes of the TroveFiles wire protocol, request/response shapes, and the
//! mapping of errors to status codes. The only module that knows JSON and HTTP.

mod audit;
mod error;
mod events;
mod exec;
mod extract;
mod files;
mod keys;
mod namespaces;
pub mod serve;
mod snapshots;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use serde_json::json;

pub use error::{ApiError, ApiResult};

use crate::services::Services;

pub type AppState = Arc<Services>;

/// The full router. No route redirects (the CLI treats a 3xx as an error), and every error,
/// unknown routes included, is a JSON `{"detail": ...}`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/me", get(keys::me))
        .route(
            "/v1/workspaces/{ws}/keys",
            post(keys::create).get(keys::list),
        )
        .route("/v1/workspaces/{ws}/keys/{key_id}", delete(keys::revoke))
        .route(
            "/v1/workspaces/{ws}/keys/{key_id}/rotate",
            post(keys::rotate),
        )
        .route("/v1/workspaces/{ws}/events", get(events::list))
        .route(
            "/v1/workspaces/{ws}/webhooks",
            post(webhooks::create).get(webhooks::list),
        )
        .route("/v1/workspaces/{ws}/webhooks/stream", get(webhooks::stream))
        .route(
            "/v1/workspaces/{ws}/webhooks/{id}",
            delete(webhooks::delete),
        )
        .route(
            "/v1/workspaces/{ws}/webhooks/{id}/test",
            post(webhooks::test),
        )
        .route("/v1/workspaces/{ws}/namespaces", get(namespaces::list))
        .route(
            "/v1/workspaces/{ws}/namespaces/{ns}",
            delete(namespaces::delete),
        )
        .route(
            "/v1/workspaces/{ws}/namespaces/{ns}/restore",
            post(namespaces::restore),
        )
        .route("/v1/workspaces/{ws}/audit", get(audit::list))
        .route("/v1/workspaces/{ws}/audit/export", get(audit::export))
        .merge(runtime(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The runtime routes (files, exec and snapshots): every call is audited.
fn runtime(state: AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/v1/snapshots",
            post(snapshots::create).get(snapshots::list),
        )
        .route(
            "/v1/snapshots/import",
            post(snapshots::import).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/snapshots/{id}", delete(snapshots::delete))
        .route("/v1/snapshots/{id}/restore", post(snapshots::restore))
        .route("/v1/snapshots/{id}/download", get(snapshots::download))
        .route(
            "/v1/exec",
            post(exec::exec).layer(DefaultBodyLimit::max(exec::EXEC_BODY_LIMIT)),
        )
        .route(
            "/exec",
            post(exec::exec_text).layer(DefaultBodyLimit::max(exec::EXEC_BODY_LIMIT)),
        )
        .route(
            "/write",
            post(files::write).layer(DefaultBodyLimit::max(files::WRITE_BODY_LIMIT)),
        )
        .route(
            "/files/{*path}",
            put(files::upload)
                .get(files::download)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/files/", put(files::root_path).get(files::root_path))
        .route("/delete", post(files::delete))
        .route("/v1/files", get(files::list))
        .route("/v1/files/content", get(files::content))
        .route_layer(axum::middleware::from_fn_with_state(state, audit::record))
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "status": "ok" }))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not Found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}
