//! Webhook management (`/v1/workspaces/{ws}/webhooks`, spec §6.2) and the live event stream
//! (`…/webhooks/stream`, SSE, spec §6.4). Admin keys only.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::error::CREATED;
use super::extract::{ApiJson, Auth, QueryParams, UrlParams};
use super::wire::{WebhookDeleted, WebhookInfo, WebhookList, WebhookTest, WebhookWithSecret};
use super::{ApiResult, AppState};
use crate::envelope::envelope;
use crate::ids::EventId;
use crate::services::webhooks::NewWebhook;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateWebhook {
    /// Where deliveries are POSTed (public addresses unless the server allows private ones).
    url: String,
    /// Event types, or `*` for all [default: all].
    #[serde(default)]
    events: Option<Vec<String>>,
    /// Only this namespace's events.
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

/// Subscribes a URL to events; the signing secret is in this answer only.
#[utoipa::path(
    post, path = "/v1/workspaces/{ws}/webhooks", tag = "webhooks",
    params(("ws" = String, Path, description = "Workspace id")),
    request_body = CreateWebhook,
    responses((status = 201, body = WebhookWithSecret)),
)]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams(ws): UrlParams<String>,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<WebhookWithSecret>)> {
    let ws = caller.require_admin(&ws, "webhooks")?;
    let req = NewWebhook {
        url: body.url,
        events: body.events.unwrap_or_else(|| vec!["*".into()]),
        namespace: body.namespace,
        description: body.description,
    };
    let hook = state.webhooks.create(&caller, &ws, req).await?;
    Ok((
        CREATED,
        Json(WebhookWithSecret {
            webhook: WebhookInfo::from(&hook),
            signing_secret: hook.secret.clone(),
        }),
    ))
}

#[utoipa::path(
    get, path = "/v1/workspaces/{ws}/webhooks", tag = "webhooks",
    params(("ws" = String, Path, description = "Workspace id")),
    responses((status = 200, body = WebhookList)),
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams(ws): UrlParams<String>,
) -> ApiResult<Json<WebhookList>> {
    let ws = caller.require_admin(&ws, "webhooks")?;
    let hooks = state.webhooks.list(&ws).await?;
    Ok(Json(WebhookList {
        webhooks: hooks.iter().map(WebhookInfo::from).collect(),
    }))
}

/// Unsubscribes; pending deliveries are cancelled.
#[utoipa::path(
    delete, path = "/v1/workspaces/{ws}/webhooks/{id}", tag = "webhooks",
    params(("ws" = String, Path, description = "Workspace id"), ("id" = String, Path, description = "Webhook id")),
    responses((status = 200, body = WebhookDeleted)),
)]
pub async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams((ws, id)): UrlParams<(String, String)>,
) -> ApiResult<Json<WebhookDeleted>> {
    let ws = caller.require_admin(&ws, "webhooks")?;
    state.webhooks.delete(&caller, &ws, &id).await?;
    Ok(Json(WebhookDeleted {
        webhook_id: id,
        deleted: true,
    }))
}

/// Sends a signed test event now and says how the receiver answered.
#[utoipa::path(
    post, path = "/v1/workspaces/{ws}/webhooks/{id}/test", tag = "webhooks",
    params(("ws" = String, Path, description = "Workspace id"), ("id" = String, Path, description = "Webhook id")),
    responses((status = 200, body = WebhookTest)),
)]
pub async fn test(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams((ws, id)): UrlParams<(String, String)>,
) -> ApiResult<Json<WebhookTest>> {
    let ws = caller.require_admin(&ws, "webhooks")?;
    let out = state.webhooks.test(&ws, &id).await?;
    Ok(Json(WebhookTest {
        ok: out.ok,
        status: out.status,
        event_id: out.event_id.as_str().to_owned(),
        error: out.error,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Only this namespace's events.
    namespace: Option<String>,
}

/// Server-sent events: a synthetic `connected` frame, then one single-line JSON envelope per
/// event committed after the connection opened, LF-framed, with keepalive comments.
#[utoipa::path(
    get, path = "/v1/workspaces/{ws}/webhooks/stream", tag = "webhooks",
    params(("ws" = String, Path, description = "Workspace id"), StreamQuery),
    responses((status = 200, description = "An event stream of envelopes", content_type = "text/event-stream", body = String)),
)]
pub async fn stream(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams(ws): UrlParams<String>,
    QueryParams(q): QueryParams<StreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let ns = q.namespace.filter(|n| !n.is_empty());
    let events = state.events.live(&caller, &ws, ns.as_deref()).await?;
    let connected = json!({ "type": "connected", "id": EventId::random().as_str() });
    let frames = events.map(|e| Ok(Event::default().data(envelope(&e).to_string())));
    let stream =
        futures::stream::once(async move { Ok(Event::default().data(connected.to_string())) })
            .chain(frames)
            .take_until(state.shutdown.clone().cancelled_owned());
    Ok(Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keepalive"),
    ))
}
