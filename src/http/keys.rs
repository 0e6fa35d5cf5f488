//! Identity and key management: `GET /v1/me` and `/v1/workspaces/{ws}/keys`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::CREATED;
use super::extract::{ApiJson, Auth, UrlParams};
use super::{ApiResult, AppState};
use crate::ids::KeyId;
use crate::services::auth::{KeyRecord, KeyRequest};

fn key_json(k: &KeyRecord) -> Value {
    json!({
        "key_id": k.id.as_str(),
        "name": k.name,
        "prefix": k.prefix,
        "scope": k.scope.as_str(),
        "namespace": k.namespace.as_ref().map(|n| n.as_str()),
        "created_at": k.created_at.to_rfc3339(),
        "last_used_at": k.last_used_at.map(|t| t.to_rfc3339()),
    })
}

fn key_with_secret(k: &KeyRecord, plaintext: String) -> Value {
    let mut v = key_json(k);
    v["api_key"] = Value::String(plaintext);
    v
}

pub async fn me(Auth(caller): Auth) -> Json<Value> {
    let k = &caller.key;
    Json(json!({
        "workspace_id": k.workspace.as_str(),
        "key_id": k.id.as_str(),
        "key_name": k.name,
        "scope": k.scope.as_str(),
        "namespace": k.namespace.as_ref().map(|n| n.as_str()),
        "capabilities": ["exec.stdin"],
    }))
}

#[derive(Deserialize)]
pub struct CreateKey {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    admin: bool,
}

pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams(ws): UrlParams<String>,
    ApiJson(body): ApiJson<CreateKey>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let ws = caller.require_admin(&ws, "keys")?;
    let req = KeyRequest {
        name: body.name,
        namespace: body.namespace,
        admin: body.admin,
    };
    let (record, plaintext) = state.keys.mint(Some(&caller), &ws, req).await?;
    Ok((CREATED, Json(key_with_secret(&record, plaintext))))
}

pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams(ws): UrlParams<String>,
) -> ApiResult<Json<Value>> {
    let ws = caller.require_admin(&ws, "keys")?;
    let keys = state.keys.list(&ws).await?;
    Ok(Json(
        json!({ "keys": keys.iter().map(key_json).collect::<Vec<_>>() }),
    ))
}

pub async fn revoke(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams((ws, key_id)): UrlParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let ws = caller.require_admin(&ws, "keys")?;
    let id = KeyId::from_string(key_id);
    state.keys.revoke(&caller, &ws, &id).await?;
    Ok(Json(json!({ "key_id": id.as_str(), "revoked": true })))
}

pub async fn rotate(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams((ws, key_id)): UrlParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    let ws = caller.require_admin(&ws, "keys")?;
    let id = KeyId::from_string(key_id);
    let (record, plaintext) = state.keys.rotate(&caller, &ws, &id).await?;
    Ok(Json(key_with_secret(&record, plaintext)))
}
