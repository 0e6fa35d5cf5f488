//! The operator's routes: liveness, readiness and the Prometheus scrape.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{ApiError, Problem};
use super::extract::Auth;
use super::wire::{Health, NotReady, Ready, ReadyChecks};
use super::{AppState, edge};

/// Alive: the process answers. Says nothing of its stores (that is `/readyz`).
#[utoipa::path(
    get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, body = Health)),
)]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Ready when both stores answer and the node is not fenced off the cluster; 503 otherwise,
/// with what failed, so a load balancer routes around the node while it recovers.
#[utoipa::path(
    get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, body = Ready),
        (status = 503, body = NotReady, description = "A store does not answer, or the node is fenced"),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let r = state.readiness().await;
    // The reasons may name hosts and buckets: logged for the operator, not told to the
    // unauthenticated prober.
    let verdict = |why: &Option<String>, store: &str| match why {
        None => "ok",
        Some(why) => {
            tracing::warn!(store, %why, "not ready");
            "unreachable"
        }
    };
    let checks = ReadyChecks {
        database: verdict(&r.database, "database").into(),
        storage: verdict(&r.storage, "storage").into(),
        cluster: if r.fenced { "fenced" } else { "ok" }.into(),
    };
    if r.ready() {
        Json(Ready {
            status: "ready".into(),
            checks,
        })
        .into_response()
    } else {
        ApiError::not_ready(json!(checks)).into_response()
    }
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)),
)]
pub async fn openapi_json(
    axum::Extension(api): axum::Extension<std::sync::Arc<utoipa::openapi::OpenApi>>,
) -> Json<std::sync::Arc<utoipa::openapi::OpenApi>> {
    Json(api)
}

/// The Prometheus exposition, to a bearer of an admin key (of any workspace: the figures are
/// the process's, and carry no tenant's names).
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)),
)]
pub async fn metrics(State(state): State<AppState>, Auth(caller): Auth) -> Response {
    if !caller.is_admin() {
        return ApiError::new(Problem::Forbidden, "Metrics need an admin key").into_response();
    }
    exposition(&state).await
}

/// The same exposition without authentication, for `--metrics-listen` on a private network.
pub fn metrics_router(state: AppState) -> axum::Router {
    let routes = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|State(s): State<AppState>| async move { exposition(&s).await }),
        )
        .fallback(|| async { ApiError::new(Problem::NotFound, "Not Found") })
        .with_state(state);
    edge(routes)
}

async fn exposition(state: &AppState) -> Response {
    // Read at scrape time: the outbox is shared by every node, so any node can tell.
    match state.meta.pending_deliveries().await {
        Ok(depth) => crate::metrics::webhook_queue_depth(depth),
        Err(e) => tracing::warn!(error = %e, "could not count pending webhook deliveries"),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response()
}
