//! `GET /v1/workspaces/{ws}/events`: the event feed, and the envelope every event is shown in
//! (spec §7.1), shared by the feed, webhook deliveries and the live stream.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use warren_storage::Namespace;

use super::extract::{Auth, QueryParams, UrlParams};
use super::{ApiError, ApiResult, AppState};
use crate::db::EventRecord;
use crate::ids::Micros;
use crate::services::events::{Cursor, DEFAULT_LIMIT, Feed};

/// The API version stamped on every envelope (the one trove-sdk's fixtures carry).
pub const API_VERSION: &str = "2026-04-30";

/// The envelope of an event. `event_id` repeats `id` for clients that read either.
pub fn envelope(e: &EventRecord) -> Value {
    let data: Value = serde_json::from_str(&e.data).unwrap_or_else(|_| json!({}));
    json!({
        "id": e.id.as_str(),
        "event_id": e.id.as_str(),
        "type": e.kind,
        "api_version": API_VERSION,
        "workspace_id": e.workspace.as_str(),
        "namespace": e.namespace,
        "key_id": e.key_id,
        "created_at": e.created_at.to_rfc3339(),
        "data": data,
    })
}

#[derive(Deserialize)]
pub struct FeedQuery {
    limit: Option<u32>,
    namespace: Option<String>,
    types: Option<String>,
    since: Option<String>,
    cursor: Option<String>,
}

fn unprocessable(detail: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
}

pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams(ws): UrlParams<String>,
    QueryParams(q): QueryParams<FeedQuery>,
) -> ApiResult<Json<Value>> {
    let feed = Feed {
        namespace: q
            .namespace
            .filter(|n| !n.is_empty())
            .map(|n| Namespace::parse(&n))
            .transpose()
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?,
        types: q
            .types
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        since: q
            .since
            .map(|s| {
                Micros::parse_rfc3339(&s)
                    .ok_or_else(|| unprocessable(format!("since is not an ISO-8601 time: {s:?}")))
            })
            .transpose()?,
        cursor: q
            .cursor
            .map(|c| {
                Cursor::parse(&c).ok_or_else(|| unprocessable(format!("invalid cursor {c:?}")))
            })
            .transpose()?,
        limit: q.limit.unwrap_or(DEFAULT_LIMIT),
    };
    let page = state.events.list(&caller, &ws, feed).await?;
    Ok(Json(json!({
        "events": page.events.iter().map(envelope).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor.map(Cursor::encode),
    })))
}
