//! `GET /v1/workspaces/{ws}/events`: the event feed.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use warren_storage::Namespace;

use super::extract::{Auth, QueryParams, UrlParams};
use super::wire::EventPage;
use super::{ApiError, ApiResult, AppState};
use crate::envelope::envelope;
use crate::ids::Micros;
use crate::services::events::{Cursor, DEFAULT_LIMIT, Feed};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// Events per page.
    limit: Option<u32>,
    /// Only this namespace's events (a locked key sees only its own).
    namespace: Option<String>,
    /// Comma-separated event types.
    types: Option<String>,
    /// Only events from this ISO-8601 time on.
    since: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The workspace's events, oldest first, paged.
#[utoipa::path(
    get, path = "/v1/workspaces/{ws}/events", tag = "events",
    params(("ws" = String, Path, description = "Workspace id"), FeedQuery),
    responses((status = 200, body = EventPage)),
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams(ws): UrlParams<String>,
    QueryParams(q): QueryParams<FeedQuery>,
) -> ApiResult<Json<EventPage>> {
    let feed = Feed {
        namespace: q
            .namespace
            .filter(|n| !n.is_empty())
            .map(|n| Namespace::parse(&n))
            .transpose()
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
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
                Micros::parse_rfc3339(&s).ok_or_else(|| {
                    ApiError::unprocessable(format!("since is not an ISO-8601 time: {s:?}"))
                })
            })
            .transpose()?,
        cursor: q
            .cursor
            .map(|c| {
                Cursor::parse(&c)
                    .ok_or_else(|| ApiError::unprocessable(format!("invalid cursor {c:?}")))
            })
            .transpose()?,
        limit: q.limit.unwrap_or(DEFAULT_LIMIT),
    };
    let page = state.events.list(&caller, &ws, feed).await?;
    Ok(Json(EventPage {
        events: page.events.iter().map(envelope).collect(),
        next_cursor: page.next_cursor.map(Cursor::encode),
    }))
}
