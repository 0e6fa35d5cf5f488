//! The audit trail at the HTTP edge: a middleware on every runtime route records the
//! operation, the key, the namespace, the path and the response status; and the admin
//! endpoints `GET /v1/workspaces/{ws}/audit` (pages) and `…/audit/export` (JSON lines).

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{Auth, QueryParams, UrlParams};
use super::{ApiError, ApiResult, AppState};
use crate::db::{AuditQuery, AuditRecord};
use crate::ids::Micros;
use crate::services::Caller;
use crate::services::audit::MAX_PAGE;

const MAX_RECORDED_PATH: usize = 1024;

/// Filled in while a request is handled: the caller by authentication, the namespace and path
/// by the handler; read by the middleware once the response status is known.
#[derive(Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Slot>>);

#[derive(Default)]
struct Slot {
    caller: Option<Caller>,
    namespace: Option<String>,
    path: Option<String>,
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_RECORDED_PATH).collect()
}

impl AuditSlot {
    pub fn caller(&self, caller: &Caller, namespace: Option<&str>) {
        let mut s = self.0.lock().unwrap();
        s.caller = Some(caller.clone());
        s.namespace = namespace.map(clip);
    }

    pub fn namespace(&self, ns: &str) {
        self.0.lock().unwrap().namespace = Some(ns.to_owned());
    }

    /// The path as the client sent it, valid or not.
    pub fn path(&self, path: &str) {
        self.0.lock().unwrap().path = Some(clip(path));
    }
}

fn operation(method: &Method, route: &str) -> &'static str {
    match (method.as_str(), route) {
        ("POST", "/write") => "write",
        ("POST", "/v1/exec" | "/exec") => "exec",
        ("POST", "/v1/snapshots") => "snapshot.create",
        ("GET", "/v1/snapshots") => "snapshot.list",
        ("POST", "/v1/snapshots/import") => "snapshot.import",
        ("POST", "/v1/snapshots/{id}/restore") => "snapshot.restore",
        ("DELETE", "/v1/snapshots/{id}") => "snapshot.delete",
        ("GET", "/v1/snapshots/{id}/download") => "snapshot.download",
        ("PUT", _) => "upload",
        ("GET", "/files/{*path}" | "/files/") => "download",
        ("POST", "/delete") => "delete",
        ("GET", "/v1/files") => "list",
        ("GET", "/v1/files/content") => "read",
        _ => "other",
    }
}

/// The status recorded for a call whose client went away before the answer (nginx's 499,
/// "client closed request").
const CLIENT_CLOSED: u16 = 499;

/// One call's audit record. Normally written once the response status is known; if the
/// handler is dropped first (hyper drops it when the client disconnects), written from
/// `Drop` as [`CLIENT_CLOSED`], so the trail still shows the call.
struct Pending {
    state: AppState,
    slot: AuditSlot,
    op: &'static str,
}

impl Pending {
    fn take(&self, status: u16) -> Option<AuditRecord> {
        let taken = std::mem::take(&mut *self.slot.0.lock().unwrap());
        let caller = taken.caller?;
        Some(AuditRecord {
            seq: 0,
            workspace: caller.key.workspace.clone(),
            key_id: caller.key.id.to_string(),
            namespace: taken.namespace,
            operation: self.op.to_owned(),
            path: taken.path,
            status,
            created_at: Micros::now(),
        })
    }

    async fn finish(self, status: StatusCode) {
        if let Some(record) = self.take(status.as_u16()) {
            self.state.audit.record(record).await;
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Empty after `finish`; still filled if the call never got that far.
        if let Some(record) = self.take(CLIENT_CLOSED) {
            let audit = Arc::clone(&self.state.audit);
            tokio::spawn(async move { audit.record(record).await });
        }
    }
}

/// Middleware for runtime routes: records every authenticated call, failures and client
/// disconnects included.
pub async fn record(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let slot = AuditSlot::default();
    req.extensions_mut().insert(slot.clone());
    let pending = Pending {
        op: operation(req.method(), &route),
        state,
        slot,
    };
    let resp = next.run(req).await;
    pending.finish(resp.status()).await;
    resp
}

#[derive(Deserialize)]
pub struct AuditParams {
    key_id: Option<String>,
    namespace: Option<String>,
    operation: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

fn time(name: &str, v: Option<String>) -> ApiResult<Option<Micros>> {
    v.map(|s| {
        Micros::parse_rfc3339(&s).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{name} is not an ISO-8601 time: {s:?}"),
            )
        })
    })
    .transpose()
}

fn query_of(p: AuditParams, caller: &Caller, oldest_first: bool) -> ApiResult<AuditQuery> {
    Ok(AuditQuery {
        workspace: caller.key.workspace.clone(),
        key_id: p.key_id,
        namespace: p.namespace,
        operation: p.operation,
        from: time("from", p.from)?,
        to: time("to", p.to)?,
        cursor: p
            .cursor
            .map(|c| {
                c.strip_prefix("seq-")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            format!("invalid cursor {c:?}"),
                        )
                    })
            })
            .transpose()?,
        oldest_first,
        limit: p.limit.unwrap_or(100),
    })
}

fn record_json(r: &AuditRecord) -> Value {
    json!({
        "key_id": r.key_id,
        "namespace": r.namespace,
        "operation": r.operation,
        "path": r.path,
        "status": r.status,
        "created_at": r.created_at.to_rfc3339(),
    })
}

/// `GET /v1/workspaces/{ws}/audit`: newest first, filtered, paged by cursor.
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams(ws): UrlParams<String>,
    QueryParams(p): QueryParams<AuditParams>,
) -> ApiResult<Json<Value>> {
    let q = query_of(p, &caller, false)?;
    let (records, next) = state.audit.page(&caller, &ws, q).await?;
    let next = next.map(|seq| format!("seq-{seq}"));
    Ok(Json(json!({
        "records": records.iter().map(record_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

/// `GET /v1/workspaces/{ws}/audit/export`: every matching record, oldest first, one JSON
/// object per line, streamed page by page.
pub async fn export(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams(ws): UrlParams<String>,
    QueryParams(p): QueryParams<AuditParams>,
) -> ApiResult<Response> {
    let mut q = query_of(p, &caller, true)?;
    q.limit = MAX_PAGE;
    // Checks scope (and flushes) before the response starts, so errors are still JSON.
    let first = state.audit.query(&caller, &ws, q.clone()).await?;
    let stream = futures::stream::unfold(Some((first, q)), move |st| {
        let state = state.clone();
        let caller = caller.clone();
        let ws = ws.clone();
        async move {
            let (page, mut q) = st?;
            if page.is_empty() {
                return None;
            }
            let mut out = String::new();
            for r in &page {
                out.push_str(&record_json(r).to_string());
                out.push('\n');
            }
            let next = if page.len() < q.limit as usize {
                None
            } else {
                q.cursor = page.last().map(|r| r.seq);
                match state.audit.query(&caller, &ws, q.clone()).await {
                    Ok(p) => Some((p, q)),
                    Err(e) => {
                        tracing::error!(error = %e, "audit export stopped early");
                        None
                    }
                }
            };
            Some((Ok::<_, std::io::Error>(out), next))
        }
    });
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}
