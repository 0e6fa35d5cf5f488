//! Namespace lifecycle for admins: `GET /v1/workspaces/{ws}/namespaces`,
//! `DELETE …/namespaces/{ns}` and `POST …/namespaces/{ns}/restore`.

use axum::Json;
use axum::extract::State;

use super::extract::{Auth, UrlParams};
use super::wire::{NamespaceDeleted, NamespaceInfo, NamespaceList, NamespaceRestored};
use super::{ApiResult, AppState};

/// Every namespace of the workspace with its usage, deleted ones (until purged) included.
#[utoipa::path(
    get, path = "/v1/workspaces/{ws}/namespaces", tag = "namespaces",
    params(("ws" = String, Path, description = "Workspace id")),
    responses((status = 200, body = NamespaceList)),
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams(ws): UrlParams<String>,
) -> ApiResult<Json<NamespaceList>> {
    let all = state.namespaces.list(&caller, &ws).await?;
    Ok(Json(NamespaceList {
        namespaces: all.iter().map(NamespaceInfo::from).collect(),
    }))
}

/// Deletes a namespace: it refuses calls at once and is purged, snapshots included, after
/// the grace period.
#[utoipa::path(
    delete, path = "/v1/workspaces/{ws}/namespaces/{ns}", tag = "namespaces",
    params(("ws" = String, Path, description = "Workspace id"), ("ns" = String, Path)),
    responses((status = 200, body = NamespaceDeleted)),
)]
pub async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams((ws, ns)): UrlParams<(String, String)>,
) -> ApiResult<Json<NamespaceDeleted>> {
    state.namespaces.delete(&caller, &ws, &ns).await?;
    Ok(Json(NamespaceDeleted {
        namespace: ns,
        deleted: true,
    }))
}

/// Brings a deleted namespace back before its purge.
#[utoipa::path(
    post, path = "/v1/workspaces/{ws}/namespaces/{ns}/restore", tag = "namespaces",
    params(("ws" = String, Path, description = "Workspace id"), ("ns" = String, Path)),
    responses((status = 200, body = NamespaceRestored)),
)]
pub async fn restore(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams((ws, ns)): UrlParams<(String, String)>,
) -> ApiResult<Json<NamespaceRestored>> {
    state.namespaces.restore(&caller, &ws, &ns).await?;
    Ok(Json(NamespaceRestored {
        namespace: ns,
        restored: true,
    }))
}
