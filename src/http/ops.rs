//! The operator's routes: liveness, readiness and the Prometheus scrape.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::{ApiError, Problem};
use super::extract::Auth;
use super::{AppState, edge};
use crate::db::Scope;

/// Alive: the process answers. Says nothing of its stores (that is `/readyz`).
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when both stores answer and the node is not fenced off the cluster; 503 otherwise,
/// with what failed, so a load balancer routes around the node while it recovers.
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
    let checks = json!({
        "database": verdict(&r.database, "database"),
        "storage": verdict(&r.storage, "storage"),
        "cluster": if r.fenced { "fenced" } else { "ok" },
    });
    if r.ready() {
        Json(json!({ "status": "ready", "checks": checks })).into_response()
    } else {
        ApiError::not_ready(checks).into_response()
    }
}

/// The Prometheus exposition, to a bearer of an admin key (of any workspace: the figures are
/// the process's, and carry no tenant's names).
pub async fn metrics(State(state): State<AppState>, Auth(caller): Auth) -> Response {
    if caller.key.scope != Scope::Admin {
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
