//! Browser login for the CLI (spec §5.2): `POST /v1/auth/device/start` and `…/poll`, both
//! unauthenticated, and the admin's `POST /v1/workspaces/{ws}/device/approve` and `…/deny`.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::extract::{ApiJson, Auth, UrlParams};
use super::wire::{DeviceDecided, DevicePolled, DeviceStarted};
use super::{ApiResult, AppState};
use crate::services::device::Poll;

/// Starts a login: the CLI shows `user_code` and opens `verification_uri_complete`, where an
/// operator approves it. No body.
#[utoipa::path(
    post, path = "/v1/auth/device/start", tag = "auth", security(()),
    responses((status = 200, body = DeviceStarted)),
)]
pub async fn start(State(state): State<AppState>) -> ApiResult<Json<DeviceStarted>> {
    let s = state.device.start().await?;
    Ok(Json(DeviceStarted {
        device_code: s.device_code,
        user_code: s.user_code,
        verification_uri: s.verification_uri,
        verification_uri_complete: s.verification_uri_complete,
        interval: s.interval.as_secs(),
        expires_in: s.expires_in.as_secs(),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct PollBody {
    device_code: String,
}

/// Where the login stands. Unknown, expired and already-used codes are `expired` (with 200:
/// the CLI aborts on any 4xx); `approved` carries the new key, once.
#[utoipa::path(
    post, path = "/v1/auth/device/poll", tag = "auth", security(()),
    request_body = PollBody,
    responses((status = 200, body = DevicePolled)),
)]
pub async fn poll(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<PollBody>,
) -> ApiResult<Json<DevicePolled>> {
    let (status, api_key, workspace_id) = match state.device.poll(&body.device_code).await? {
        Poll::Pending => ("pending", None, None),
        Poll::Denied => ("denied", None, None),
        Poll::Expired => ("expired", None, None),
        Poll::Approved {
            api_key,
            workspace_id,
        } => ("approved", Some(api_key), Some(workspace_id)),
    };
    Ok(Json(DevicePolled {
        status: status.into(),
        api_key,
        workspace_id,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ApproveBody {
    /// The code the CLI shows (`ABCD-1234`; case and dash do not matter).
    user_code: String,
    /// Lock the key to this namespace (new or existing); without it, a workspace key.
    #[serde(default)]
    namespace: Option<String>,
    /// The key's name [default: `trove login`].
    #[serde(default)]
    name: Option<String>,
}

/// Approves a pending login: the CLI's next poll receives a key as `POST …/keys` would mint
/// it, credited to this admin key.
#[utoipa::path(
    post, path = "/v1/workspaces/{ws}/device/approve", tag = "auth",
    params(("ws" = String, Path, description = "Workspace id")),
    request_body = ApproveBody,
    responses((status = 200, body = DeviceDecided)),
)]
pub async fn approve(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams(ws): UrlParams<String>,
    ApiJson(body): ApiJson<ApproveBody>,
) -> ApiResult<Json<DeviceDecided>> {
    let name = body.name.unwrap_or_else(|| "trove login".into());
    state
        .device
        .approve(&caller, &ws, &body.user_code, body.namespace, name)
        .await?;
    Ok(Json(DeviceDecided {
        status: "approved".into(),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct DenyBody {
    user_code: String,
}

/// Refuses a pending login: the CLI's next poll ends it.
#[utoipa::path(
    post, path = "/v1/workspaces/{ws}/device/deny", tag = "auth",
    params(("ws" = String, Path, description = "Workspace id")),
    request_body = DenyBody,
    responses((status = 200, body = DeviceDecided)),
)]
pub async fn deny(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams(ws): UrlParams<String>,
    ApiJson(body): ApiJson<DenyBody>,
) -> ApiResult<Json<DeviceDecided>> {
    state.device.deny(&caller, &ws, &body.user_code).await?;
    Ok(Json(DeviceDecided {
        status: "denied".into(),
    }))
}
