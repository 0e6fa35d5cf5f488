//! The HTTP edge: routes of the TroveFiles wire protocol, request/response shapes, and the
//! mapping of errors to status codes. The only module that knows JSON and HTTP.

mod audit;
mod audit_query;
mod error;
mod events;
mod exec;
mod extract;
mod files;
mod keys;
mod namespaces;
mod ops;
pub mod serve;
mod snapshots;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
pub use error::{ApiError, ApiResult, Problem};
pub use ops::metrics_router;

use crate::services::Services;

pub type AppState = Arc<Services>;

/// The full router. No route redirects (the CLI treats a 3xx as an error), and every error,
/// unknown routes included, is a JSON `{"detail": ...}`.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
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
        .route("/v1/workspaces/{ws}/audit", get(audit_query::list))
        .route("/v1/workspaces/{ws}/audit/export", get(audit_query::export))
        .merge(runtime(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    edge(routes)
}

/// What every response passes through, whatever route made it: a request id (the client's
/// `X-Request-Id`, or one made here) echoed on the response; one span per request, which
/// authentication fills in with the workspace, namespace and key; one log line and the
/// request metrics per answer; and a JSON 500 for a handler that panicked, logged with the
/// panic's message.
pub fn edge(router: Router) -> Router {
    use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
    router.layer(
        tower::ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(NewRequestId))
            .layer(
                tower_http::trace::TraceLayer::new_for_http()
                    .make_span_with(|req: &axum::http::Request<axum::body::Body>| {
                        let id = req
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        // The route template, never the path: paths are tenants' data.
                        tracing::info_span!(
                            "request",
                            method = %req.method(),
                            route = route_of(req),
                            request_id = id,
                            workspace = tracing::field::Empty,
                            namespace = tracing::field::Empty,
                            key_id = tracing::field::Empty,
                        )
                    })
                    // `observe` logs each answer once, with what a request log needs.
                    .on_request(())
                    .on_response(())
                    .on_failure(()),
            )
            .layer(axum::middleware::from_fn(observe))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked)),
    )
}

/// The template of the route that matched (`/files/{*path}`), or `unmatched`.
fn route_of<B>(req: &axum::http::Request<B>) -> &str {
    req.extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
}

/// Logs the answer (in the request's span, so with its id, workspace, namespace and key) and
/// counts it. The latency is to the response head: a download streams on after it.
async fn observe(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let start = std::time::Instant::now();
    let method = req.method().clone();
    let route = route_of(&req).to_owned();
    let response = next.run(req).await;
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    tracing::info!(
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "answered"
    );
    crate::metrics::http_request(method.as_str(), &route, status, elapsed);
    response
}

/// Request ids made here: 16 random hex digits.
#[derive(Clone, Copy)]
struct NewRequestId;

impl tower_http::request_id::MakeRequestId for NewRequestId {
    fn make_request_id<B>(
        &mut self,
        _: &axum::http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        let mut bytes = [0u8; 8];
        rand::fill(&mut bytes);
        let value = axum::http::HeaderValue::from_str(&hex::encode(bytes)).ok()?;
        Some(tower_http::request_id::RequestId::new(value))
    }
}

fn panicked(payload: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "a request handler panicked");
    ApiError::internal().into_response()
}

/// The runtime routes (files, exec and snapshots): every call is audited, under the operation
/// its method names.
fn runtime(state: AppState) -> Router<AppState> {
    use audit::operation as op;
    Router::new()
        .route(
            "/v1/snapshots",
            post(snapshots::create)
                .layer(op("snapshot.create"))
                .merge(get(snapshots::list).layer(op("snapshot.list"))),
        )
        .route(
            "/v1/snapshots/import",
            post(snapshots::import).layer((op("snapshot.import"), DefaultBodyLimit::disable())),
        )
        .route(
            "/v1/snapshots/{id}",
            delete(snapshots::delete).layer(op("snapshot.delete")),
        )
        .route(
            "/v1/snapshots/{id}/restore",
            post(snapshots::restore).layer(op("snapshot.restore")),
        )
        .route(
            "/v1/snapshots/{id}/download",
            get(snapshots::download).layer(op("snapshot.download")),
        )
        .route(
            "/v1/exec",
            post(exec::exec).layer((op("exec"), DefaultBodyLimit::max(exec::EXEC_BODY_LIMIT))),
        )
        .route(
            "/exec",
            post(exec::exec_text).layer((op("exec"), DefaultBodyLimit::max(exec::EXEC_BODY_LIMIT))),
        )
        .route(
            "/write",
            post(files::write).layer((op("write"), DefaultBodyLimit::max(files::WRITE_BODY_LIMIT))),
        )
        .route(
            "/files/{*path}",
            put(files::upload)
                .layer((op("upload"), DefaultBodyLimit::disable()))
                .merge(get(files::download).layer((op("download"), DefaultBodyLimit::disable()))),
        )
        .route(
            "/files/",
            put(files::root_path)
                .layer(op("upload"))
                .merge(get(files::root_path).layer(op("download"))),
        )
        .route("/delete", post(files::delete).layer(op("delete")))
        .route("/v1/files", get(files::list).layer(op("list")))
        .route("/v1/files/content", get(files::content).layer(op("read")))
        .route_layer(axum::middleware::from_fn_with_state(state, audit::record))
}

async fn not_found() -> ApiError {
    ApiError::new(Problem::NotFound, "Not Found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(Problem::MethodNotAllowed, "Method Not Allowed")
}
