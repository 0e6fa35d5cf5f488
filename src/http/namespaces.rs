//! Namespace lifecycle for admins: `GET /v1/workspaces/{ws}/namespaces`,
//! `DELETE …/namespaces/{ns}` and `POST …/namespaces/{ns}/restore`.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::extract::{Auth, UrlParams};
use super::{ApiResult, AppState};

pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams(ws): UrlParams<String>,
) -> ApiResult<Json<Value>> {
    let all = state.namespaces.list(&caller, &ws).await?;
    let namespaces: Vec<Value> = all
        .iter()
        .map(|n| {
            json!({
                "namespace": n.name,
                "state": n.state,
                "file_count": n.files,
                "bytes": n.bytes,
                "snapshot_count": n.snapshots,
                "snapshot_bytes": n.snapshot_bytes,
                "created_at": n.created_at.to_rfc3339(),
                "last_activity_at": n.last_activity.map(|t| t.to_rfc3339()),
                "deleted_at": n.deleted_at.map(|t| t.to_rfc3339()),
            })
        })
        .collect();
    Ok(Json(json!({ "namespaces": namespaces })))
}

pub async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams((ws, ns)): UrlParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    state.namespaces.delete(&caller, &ws, &ns).await?;
    Ok(Json(json!({ "namespace": ns, "deleted": true })))
}

pub async fn restore(
    State(state): State<AppState>,
    Auth(caller): Auth,
    UrlParams((ws, ns)): UrlParams<(String, String)>,
) -> ApiResult<Json<Value>> {
    state.namespaces.restore(&caller, &ws, &ns).await?;
    Ok(Json(json!({ "namespace": ns, "restored": true })))
}
