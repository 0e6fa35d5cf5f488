//! The HTTP edge: routes of the TroveFiles wire protocol, request/response shapes, and the
//! mapping of errors to status codes. The only module that knows JSON and HTTP.

mod audit;
mod audit_query;
mod device;
mod error;
mod events;
mod exec;
mod extract;
mod files;
mod keys;
mod namespaces;
mod openapi;
mod ops;
pub mod serve;
mod snapshots;
mod webhooks;
pub mod wire;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
pub use error::{ApiError, ApiResult, Problem};
pub use ops::metrics_router;

use crate::services::Services;

pub type AppState = Arc<Services>;

/// The full router. No route redirects (the CLI treats a 3xx as an error), and every error,
/// unknown routes included, is a JSON `{"detail": ...}`. The OpenAPI document is collected
/// from the same handler annotations that register the routes, and served at
/// `/openapi.json`.
pub fn router(state: AppState) -> Router {
    let (routes, api) = routes(state.clone());
    let routes = routes
        .layer(axum::Extension(Arc::new(api)))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    edge(routes)
}

fn routes(state: AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    let (router, api) = OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi_json))
        .routes(routes!(keys::me))
        .routes(routes!(device::start))
        .routes(routes!(device::poll))
        .routes(routes!(device::approve))
        .routes(routes!(device::deny))
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::revoke))
        .routes(routes!(keys::rotate))
        .routes(routes!(events::list))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::stream))
        .routes(routes!(webhooks::delete))
        .routes(routes!(webhooks::test))
        .routes(routes!(namespaces::list))
        .routes(routes!(namespaces::delete))
        .routes(routes!(namespaces::restore))
        .routes(routes!(audit_query::list))
        .routes(routes!(audit_query::export))
        .merge(runtime(state))
        .split_for_parts();
    (router, openapi::finish(api))
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
fn runtime(state: AppState) -> utoipa_axum::router::OpenApiRouter<AppState> {
    use audit::operation as op;
    use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
    use utoipa_axum::routes;
    let exec_limit = || DefaultBodyLimit::max(exec::EXEC_BODY_LIMIT);
    OpenApiRouter::new()
        .routes(routes!(snapshots::create).layer(op("snapshot.create")))
        .routes(routes!(snapshots::list).layer(op("snapshot.list")))
        .routes(
            routes!(snapshots::import).layer((op("snapshot.import"), DefaultBodyLimit::disable())),
        )
        .routes(routes!(snapshots::delete).layer(op("snapshot.delete")))
        .routes(routes!(snapshots::restore).layer(op("snapshot.restore")))
        .routes(routes!(snapshots::download).layer(op("snapshot.download")))
        .routes(routes!(exec::exec).layer((op("exec"), exec_limit())))
        .routes(routes!(exec::exec_text).layer((op("exec"), exec_limit())))
        .routes(
            routes!(files::write)
                .layer((op("write"), DefaultBodyLimit::max(files::WRITE_BODY_LIMIT))),
        )
        .routes(routes!(files::upload).layer((op("upload"), DefaultBodyLimit::disable())))
        .routes(routes!(files::download).layer((op("download"), DefaultBodyLimit::disable())))
        .routes(routes!(files::upload_root).layer(op("upload")))
        .routes(routes!(files::download_root).layer(op("download")))
        .routes(routes!(files::delete).layer(op("delete")))
        .routes(routes!(files::list).layer(op("list")))
        .routes(routes!(files::content).layer(op("read")))
        .route_layer(axum::middleware::from_fn_with_state(state, audit::record))
}

async fn not_found() -> ApiError {
    ApiError::new(Problem::NotFound, "Not Found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(Problem::MethodNotAllowed, "Method Not Allowed")
}
