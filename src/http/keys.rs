//! Identity and key management: `GET /v1/me` and `/v1/workspaces/{ws}/keys`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::error::CREATED;
use super::extract::{ApiJson, Auth, UrlParams};
use super::wire::{Key, KeyList, KeyRevoked, KeyWithSecret, Me};
use super::{ApiResult, AppState};
use crate::ids::KeyId;
use crate::services::auth::KeyRequest;

/// Who the key is: its workspace, scope and namespace lock.
#[utoipa::path(get, path = "/v1/me", tag = "keys", responses((status = 200, body = Me)))]
pub async fn me(Auth(caller): Auth) -> Json<Me> {
    let k = &caller.key;
    Json(Me {
        workspace_id: k.workspace.as_str().to_owned(),
        key_id: k.id.as_str().to_owned(),
        key_name: k.name.clone(),
        scope: k.scope.as_str().to_owned(),
        namespace: k.namespace.as_ref().map(|n| n.as_str().to_owned()),
        capabilities: vec!["exec.stdin".into()],
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateKey {
    name: String,
    /// Lock the key to this namespace.
    #[serde(default)]
    namespace: Option<String>,
    /// An admin key of the workspace instead.
    #[serde(default)]
    admin: bool,
}

/// Mints a key; its plaintext is in this answer only.
#[utoipa::path(
    post, path = "/v1/workspaces/{ws}/keys", tag = "keys",
    params(("ws" = String, Path, description = "Workspace id")),
    request_body = CreateKey,
    responses((status = 201, body = KeyWithSecret)),
)]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams(ws): UrlParams<String>,
    ApiJson(body): ApiJson<CreateKey>,
) -> ApiResult<(StatusCode, Json<KeyWithSecret>)> {
    let ws = caller.require_admin(&ws, "keys")?;
    let req = KeyRequest {
        name: body.name,
        namespace: body.namespace,
        admin: body.admin,
    };
    let (record, api_key) = state.keys.mint(Some(&caller), &ws, req).await?;
    let key = Key::from(&record);
    Ok((CREATED, Json(KeyWithSecret { key, api_key })))
}

#[utoipa::path(
    get, path = "/v1/workspaces/{ws}/keys", tag = "keys",
    params(("ws" = String, Path, description = "Workspace id")),
    responses((status = 200, body = KeyList)),
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams(ws): UrlParams<String>,
) -> ApiResult<Json<KeyList>> {
    let ws = caller.require_admin(&ws, "keys")?;
    let keys = state.keys.list(&ws).await?;
    Ok(Json(KeyList {
        keys: keys.iter().map(Key::from).collect(),
    }))
}

/// Revokes a key at once: its execs in flight are killed, its next call is 401.
#[utoipa::path(
    delete, path = "/v1/workspaces/{ws}/keys/{key_id}", tag = "keys",
    params(("ws" = String, Path, description = "Workspace id"), ("key_id" = String, Path)),
    responses((status = 200, body = KeyRevoked)),
)]
pub async fn revoke(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams((ws, key_id)): UrlParams<(String, String)>,
) -> ApiResult<Json<KeyRevoked>> {
    let ws = caller.require_admin(&ws, "keys")?;
    let id = KeyId::from_string(key_id);
    state.keys.revoke(&caller, &ws, &id).await?;
    Ok(Json(KeyRevoked {
        key_id: id.as_str().to_owned(),
        revoked: true,
    }))
}

/// Replaces a key's secret (the old one stops working); the new plaintext is in this answer.
#[utoipa::path(
    post, path = "/v1/workspaces/{ws}/keys/{key_id}/rotate", tag = "keys",
    params(("ws" = String, Path, description = "Workspace id"), ("key_id" = String, Path)),
    responses((status = 200, body = KeyWithSecret)),
)]
pub async fn rotate(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams((ws, key_id)): UrlParams<(String, String)>,
) -> ApiResult<Json<KeyWithSecret>> {
    let ws = caller.require_admin(&ws, "keys")?;
    let id = KeyId::from_string(key_id);
    let (record, api_key) = state.keys.rotate(&caller, &ws, &id).await?;
    let key = Key::from(&record);
    Ok(Json(KeyWithSecret { key, api_key }))
}
