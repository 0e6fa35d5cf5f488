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

use super::error::CREATED;
use super::extract::{QueryParams, Runtime, UrlParams};
use super::wire::{SnapshotDeleted, SnapshotInfo, SnapshotList, SnapshotRestored};
use super::{ApiError, ApiResult, AppState};

#[derive(Deserialize, Default, utoipa::ToSchema)]
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

/// Snapshots the namespace into object storage (kept for the snapshot retention, 90 days by
/// default). The body is optional.
#[utoipa::path(
    post, path = "/v1/snapshots", tag = "snapshots",
    request_body(content = Option<LabelBody>, content_type = "application/json"),
    responses((status = 201, body = SnapshotInfo)),
)]
pub async fn create(
    State(state): State<AppState>,
    rt: Runtime,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<SnapshotInfo>)> {
    let label = label_from(&body)?;
    let snap = state.snapshots.create(&rt.caller, &rt.ns, label).await?;
    Ok((CREATED, Json(SnapshotInfo::from(&snap))))
}

#[utoipa::path(
    get, path = "/v1/snapshots", tag = "snapshots",
    responses((status = 200, body = SnapshotList)),
)]
pub async fn list(State(state): State<AppState>, rt: Runtime) -> ApiResult<Json<SnapshotList>> {
    let all = state.snapshots.list(&rt.caller, &rt.ns).await?;
    Ok(Json(SnapshotList {
        snapshots: all.iter().map(SnapshotInfo::from).collect(),
    }))
}

/// Replaces the namespace's files with the snapshot's, all or nothing.
#[utoipa::path(
    post, path = "/v1/snapshots/{id}/restore", tag = "snapshots",
    params(("id" = String, Path, description = "Snapshot id")),
    responses((status = 200, body = SnapshotRestored)),
)]
pub async fn restore(
    State(state): State<AppState>,
    rt: Runtime,
    UrlParams(id): UrlParams<String>,
) -> ApiResult<Json<SnapshotRestored>> {
    let files_restored = state.snapshots.restore(&rt.caller, &rt.ns, &id).await?;
    Ok(Json(SnapshotRestored {
        snapshot_id: id,
        files_restored,
    }))
}

#[utoipa::path(
    delete, path = "/v1/snapshots/{id}", tag = "snapshots",
    params(("id" = String, Path, description = "Snapshot id")),
    responses((status = 200, body = SnapshotDeleted)),
)]
pub async fn delete(
    State(state): State<AppState>,
    rt: Runtime,
    UrlParams(id): UrlParams<String>,
) -> ApiResult<Json<SnapshotDeleted>> {
    state.snapshots.delete(&rt.caller, &rt.ns, &id).await?;
    Ok(Json(SnapshotDeleted {
        snapshot_id: id,
        deleted: true,
    }))
}

/// The snapshot as a gzipped tar archive (what `/v1/snapshots/import` takes back).
#[utoipa::path(
    get, path = "/v1/snapshots/{id}/download", tag = "snapshots",
    params(("id" = String, Path, description = "Snapshot id")),
    responses((status = 200, description = "The archive", content_type = "application/gzip", body = Vec<u8>)),
)]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// A label for the imported snapshot.
    label: Option<String>,
}

/// The body is the archive itself (as `…/download` gives it); `?label=` names it.
#[utoipa::path(
    post, path = "/v1/snapshots/import", tag = "snapshots",
    params(ImportQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A gzipped tar archive, as `…/download` gives it"),
    responses((status = 201, body = SnapshotInfo)),
)]
pub async fn import(
    State(state): State<AppState>,
    rt: Runtime,
    QueryParams(q): QueryParams<ImportQuery>,
    body: Body,
) -> ApiResult<(StatusCode, Json<SnapshotInfo>)> {
    let snap = state
        .snapshots
        .import(&rt.caller, &rt.ns, q.label, body.into_data_stream())
        .await?;
    Ok((CREATED, Json(SnapshotInfo::from(&snap))))
}
