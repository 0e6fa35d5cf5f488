//! The audit trail's admin endpoints: `GET /v1/workspaces/{ws}/audit` (pages) and
//! `…/audit/export` (JSON lines).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::extract::{Auth, QueryParams, UrlParams};
use super::wire::{AuditEntry, AuditPage};
use super::{ApiError, ApiResult, AppState};
use crate::ids::Micros;
use crate::services::Caller;
use crate::services::audit::{AuditPos, AuditQuery, MAX_PAGE};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    key_id: Option<String>,
    namespace: Option<String>,
    /// `write`, `exec`, `download`, ...
    operation: Option<String>,
    /// ISO-8601, inclusive.
    from: Option<String>,
    /// ISO-8601, exclusive.
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

/// The audit trail: newest first, filtered, paged by cursor.
#[utoipa::path(
    get, path = "/v1/workspaces/{ws}/audit", tag = "audit",
    params(("ws" = String, Path, description = "Workspace id"), AuditParams),
    responses((status = 200, body = AuditPage)),
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams(ws): UrlParams<String>,
    QueryParams(p): QueryParams<AuditParams>,
) -> ApiResult<Json<AuditPage>> {
    let q = query_of(p, &caller, false)?;
    let (records, next) = state.audit.page(&caller, &ws, q).await?;
    Ok(Json(AuditPage {
        records: records.iter().map(AuditEntry::from).collect(),
        next_cursor: next.map(AuditPos::token),
    }))
}

/// Every matching record, oldest first, one JSON object ([`AuditEntry`]) per line, streamed
/// page by page.
#[utoipa::path(
    get, path = "/v1/workspaces/{ws}/audit/export", tag = "audit",
    params(("ws" = String, Path, description = "Workspace id"), AuditParams),
    responses((status = 200, description = "JSON lines, one AuditEntry each", content_type = "application/x-ndjson", body = String)),
)]
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
                let line =
                    serde_json::to_string(&AuditEntry::from(r)).expect("an audit entry serializes");
                out.push_str(&line);
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
