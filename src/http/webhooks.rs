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
use serde_json::{Value, json};

use super::error::CREATED;
use super::extract::{ApiJson, Auth, QueryParams, UrlParams};
use super::{ApiResult, AppState};
use crate::envelope::envelope;
use crate::ids::EventId;
use crate::services::webhooks::{NewWebhook, Webhook};

fn webhook_json(w: &Webhook) -> Value {
    json!({
        "webhook_id": w.id,
        "url": w.url,
        "events": w.events,
        "namespace": w.namespace.as_ref().map(|n| n.as_str()),
        "description": w.description,
        "enabled": w.enabled,
        "created_at": w.created_at.to_rfc3339(),
        "last_delivery_ok": w.last_delivery_ok,
        "last_delivery_at": w.last_delivery_at.map(|t| t.to_rfc3339()),
        "last_delivery_status": w.last_delivery_status,
    })
}

#[derive(Deserialize)]
pub struct CreateWebhook {
    url: String,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams(ws): UrlParams<String>,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let ws = caller.require_admin(&ws, "webhooks")?;
    let req = NewWebhook {
        url: body.url,
        events: body.events.unwrap_or_else(|| vec!["*".into()]),
        namespace: body.namespace,
        description: body.description,
    };
    let hook = state.webhooks.create(&caller, &ws, req).await?;
    let mut v = webhook_json(&hook);
    v["signing_secret"] = Value::String(hook.secret.clone());
    Ok((CREATED, Json(v)))
}

pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams(ws): UrlParams<String>,
) -> ApiResult<Json<Value>> {
    let ws = caller.require_admin(&ws, "webhooks")?;
    let hooks = state.webhooks.list(&ws).await?;
    Ok(Json(
        json!({ "webhooks": hooks.iter().map(webhook_json).collect::<Vec<_>>() }),
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams((ws, id)): UrlParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let ws = caller.require_admin(&ws, "webhooks")?;
    state.webhooks.delete(&caller, &ws, &id).await?;
    Ok(Json(json!({ "webhook_id": id, "deleted": true })))
}

pub async fn test(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams((ws, id)): UrlParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let ws = caller.require_admin(&ws, "webhooks")?;
    let out = state.webhooks.test(&ws, &id).await?;
    Ok(Json(json!({
        "ok": out.ok,
        "status": out.status,
        "event_id": out.event_id.as_str(),
        "error": out.error,
    })))
}

#[derive(Deserialize)]
pub struct StreamQuery {
    namespace: Option<String>,
}

/// Server-sent events: a synthetic `connected` frame, then one single-line JSON envelope per
/// event committed after the connection opened, LF-framed, with keepalive comments.
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
