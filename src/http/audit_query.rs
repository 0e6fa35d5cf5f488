//! The audit trail's admin endpoints: `GET /v1/workspaces/{ws}/audit` (pages) and
//! `…/audit/export` (JSON lines).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{Auth, QueryParams, UrlParams};
use super::{ApiError, ApiResult, AppState};
use crate::ids::Micros;
use crate::services::Caller;
use crate::services::audit::{AuditPos, AuditQuery, AuditRecord, MAX_PAGE};

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
            ApiError::unprocessable(format!("{name} is not an ISO-8601 time: {s:?}"))
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
                AuditPos::from_token(&c)
                    .ok_or_else(|| ApiError::unprocessable(format!("invalid cursor {c:?}")))
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
    let next = next.map(AuditPos::token);
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
