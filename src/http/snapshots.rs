//! Snapshots (spec §4.9): `POST|GET /v1/snapshots`, `POST /v1/snapshots/{id}/restore`,
//! `DELETE /v1/snapshots/{id}`, `GET /v1/snapshots/{id}/download`, and the extension
//! `POST /v1/snapshots/import`.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::CREATED;
use super::extract::{QueryParams, Runtime, UrlParams};
use super::{ApiError, ApiResult, AppState};
use crate::services::snapshots::Snapshot;

fn snapshot_json(s: &Snapshot) -> Value {
    json!({
        "snapshot_id": s.id.as_str(),
        "namespace": s.namespace.as_str(),
        "label": s.label,
        "size_bytes": s.size_bytes,
        "file_count": s.file_count,
        "created_at": s.created_at.to_rfc3339(),
        "expires_at": s.expires_at.to_rfc3339(),
    })
}

#[derive(Deserialize, Default)]
pub struct LabelBody {
    #[serde(default)]
    label: Option<String>,
}

/// The create body is optional: no body, `{}` and `{"label": null}` all mean no label.
fn label_from(body: &Bytes) -> ApiResult<Option<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let parsed: LabelBody = serde_json::from_slice(body).map_err(|e| {
        let detail = format!("invalid body: {e}");
        if e.is_data() {
            ApiError::unprocessable(detail)
        } else {
            ApiError::bad_request(detail)
        }
    })?;
    Ok(parsed.label)
}

pub async fn create(
    State(state): State<AppState>,
    rt: Runtime,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let label = label_from(&body)?;
    let snap = state.snapshots.create(&rt.caller, &rt.ns, label).await?;
    Ok((CREATED, Json(snapshot_json(&snap))))
}

pub async fn list(State(state): State<AppState>, rt: Runtime) -> ApiResult<Json<Value>> {
    let all = state.snapshots.list(&rt.caller, &rt.ns).await?;
    Ok(Json(json!({
        "snapshots": all.iter().map(snapshot_json).collect::<Vec<_>>()
    })))
}

pub async fn restore(
    State(state): State<AppState>,
    rt: Runtime,
    UrlParams(id): UrlParams<String>,
) -> ApiResult<Json<Value>> {
    let files = state.snapshots.restore(&rt.caller, &rt.ns, &id).await?;
    Ok(Json(json!({ "snapshot_id": id, "files_restored": files })))
}

pub async fn delete(
    State(state): State<AppState>,
    rt: Runtime,
    UrlParams(id): UrlParams<String>,
) -> ApiResult<Json<Value>> {
    state.snapshots.delete(&rt.caller, &rt.ns, &id).await?;
    Ok(Json(json!({ "snapshot_id": id, "deleted": true })))
}

pub async fn download(
    State(state): State<AppState>,
    rt: Runtime,
    UrlParams(id): UrlParams<String>,
) -> ApiResult<Response> {
    let blob = state.snapshots.download(&rt.caller, &rt.ns, &id).await?;
    let stream = blob.stream.map(|r| r.map_err(std::io::Error::other));
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(blob.size));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{id}.tar.gz\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[derive(Deserialize)]
pub struct ImportQuery {
    label: Option<String>,
}

/// The body is the archive itself (as `…/download` gives it); `?label=` names it.
pub async fn import(
    State(state): State<AppState>,
    rt: Runtime,
    QueryParams(q): QueryParams<ImportQuery>,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let snap = state
        .snapshots
        .import(&rt.caller, &rt.ns, q.label, body.into_data_stream())
        .await?;
    Ok((CREATED, Json(snapshot_json(&snap))))
}
