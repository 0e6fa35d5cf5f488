//! The file endpoints: `POST /write`, `PUT|GET /files/{path}`, `POST /delete`, `GET /v1/files`
//! and `GET /v1/files/content`.
//!
//! Path forms follow spec §3: the write side (`/write`, `/delete`, `/files/…`) takes
//! namespace-relative paths as given; the read side (`/v1/files*`) also accepts the
//! `workspace/` prefix. Every path in a response carries the `workspace/` prefix.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use warren_storage::NsPath;

use super::extract::{ApiJson, QueryParams, Runtime};
use super::wire::{Content, Deleted, DirEntry, Listing, Written};
use super::{ApiError, ApiResult, AppState};
use crate::services::files::{MAX_FILE_BYTES, WriteSource};

/// `POST /write` carries the content inside JSON, so its body may be a little larger than the
/// file cap; the content itself is checked against the cap exactly.
pub const WRITE_BODY_LIMIT: usize = MAX_FILE_BYTES as usize + 1024 * 1024;

/// The file path of a `/files/{path}` URL, percent-decoded once.
fn url_file_path(rt: &Runtime, uri: &Uri) -> ApiResult<NsPath> {
    let raw = uri.path().strip_prefix("/files/").unwrap_or_default();
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    match std::str::from_utf8(&bytes) {
        Ok(decoded) => rt.path(decoded),
        Err(_) => {
            rt.note_path(&String::from_utf8_lossy(&bytes));
            Err(ApiError::bad_request("path is not valid UTF-8"))
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct WriteBody {
    /// Namespace-relative (`notes/a.txt`).
    path: String,
    /// The whole file, as text.
    content: String,
}

/// Writes a text file, replacing what was there.
#[utoipa::path(
    post, path = "/write", tag = "files",
    request_body = WriteBody,
    responses((status = 200, body = Written)),
)]
pub async fn write(
    State(state): State<AppState>,
    rt: Runtime,
    ApiJson(body): ApiJson<WriteBody, WRITE_BODY_LIMIT>,
) -> ApiResult<Json<Written>> {
    let path = rt.path(&body.path)?;
    let bytes = axum::body::Bytes::from(body.content);
    let declared = Some(bytes.len() as u64);
    let stream = futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]);
    let size = state
        .files
        .write(
            &rt.caller,
            &rt.ns,
            &path,
            WriteSource::Write,
            declared,
            stream,
        )
        .await?;
    Ok(Json(Written {
        path: path.wire(),
        size_bytes: size,
    }))
}

/// Uploads a file's bytes (streamed; any size up to the file cap), replacing what was there.
/// The path may have several segments (`/files/a/b/c.bin`).
#[utoipa::path(
    put, path = "/files/{*path}", tag = "files",
    params(("path" = String, Path, description = "Namespace-relative, percent-encoded")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = Written)),
)]
pub async fn upload(
    State(state): State<AppState>,
    rt: Runtime,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Written>> {
    let path = url_file_path(&rt, &uri)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let size = state
        .files
        .write(
            &rt.caller,
            &rt.ns,
            &path,
            WriteSource::Upload,
            declared,
            body.into_data_stream(),
        )
        .await?;
    Ok(Json(Written {
        path: path.wire(),
        size_bytes: size,
    }))
}

/// `/files/` with no path names the namespace root, which is not a file: always 400.
#[utoipa::path(
    put, path = "/files/", tag = "files",
    responses((status = 400, body = super::wire::Detail)),
)]
pub async fn upload_root(_rt: Runtime) -> ApiError {
    root_is_not_a_file()
}

/// `/files/` with no path names the namespace root, which is not a file: always 400.
#[utoipa::path(
    get, path = "/files/", tag = "files",
    responses((status = 400, body = super::wire::Detail)),
)]
pub async fn download_root(_rt: Runtime) -> ApiError {
    root_is_not_a_file()
}

fn root_is_not_a_file() -> ApiError {
    ApiError::bad_request("workspace/ is a directory; give a file path")
}

/// A file's bytes; `X-Trove-Size` is its full size, `X-Trove-Truncated` is set when the
/// answer stops at the file cap.
#[utoipa::path(
    get, path = "/files/{*path}", tag = "files",
    params(("path" = String, Path, description = "Namespace-relative, percent-encoded")),
    responses((status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = Vec<u8>)),
)]
pub async fn download(State(state): State<AppState>, rt: Runtime, uri: Uri) -> ApiResult<Response> {
    let path = url_file_path(&rt, &uri)?;
    let dl = state.files.download(&rt.caller, &rt.ns, &path).await?;
    let sent = dl.size.min(MAX_FILE_BYTES);
    let stream = dl.stream.map(|r| r.map_err(std::io::Error::other));
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(sent));
    h.insert("x-trove-size", HeaderValue::from(dl.size));
    if dl.truncated {
        h.insert("x-trove-truncated", HeaderValue::from_static("1"));
    }
    Ok(resp)
}

/// `{"path": …}` in a JSON body or `?path=…` in a query.
#[derive(Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PathParam {
    /// A file's path (the read side also takes the `workspace/` form).
    path: String,
}

/// Deletes a file, or a directory with everything below it.
#[utoipa::path(
    post, path = "/delete", tag = "files",
    request_body = PathParam,
    responses((status = 200, body = Deleted)),
)]
pub async fn delete(
    State(state): State<AppState>,
    rt: Runtime,
    ApiJson(body): ApiJson<PathParam>,
) -> ApiResult<Json<Deleted>> {
    let path = rt.path(&body.path)?;
    state.files.delete(&rt.caller, &rt.ns, &path).await?;
    Ok(Json(Deleted {
        deleted: path.wire(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The directory [default: `workspace/`, the namespace root].
    #[serde(default)]
    path: Option<String>,
    /// `true` or `false` (also `1` or `0`).
    #[serde(default)]
    recursive: Option<String>,
}

/// A directory's entries (or, recursive, everything below it).
#[utoipa::path(
    get, path = "/v1/files", tag = "files",
    params(ListQuery),
    responses((status = 200, body = Listing)),
)]
pub async fn list(
    State(state): State<AppState>,
    rt: Runtime,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Listing>> {
    let dir = rt.client_path(q.path.as_deref().unwrap_or("workspace/"))?;
    let recursive = match q.recursive.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "recursive must be true or false, not {other:?}"
            )));
        }
    };
    let listing = state
        .files
        .list(&rt.caller, &rt.ns, &dir, recursive)
        .await?;
    Ok(Json(Listing {
        entries: listing.entries.iter().map(DirEntry::from).collect(),
        truncated: listing.truncated,
    }))
}

/// A file's content as text (null for binary files), cut at the read cap.
#[utoipa::path(
    get, path = "/v1/files/content", tag = "files",
    params(PathParam),
    responses((status = 200, body = Content)),
)]
pub async fn content(
    State(state): State<AppState>,
    rt: Runtime,
    QueryParams(q): QueryParams<PathParam>,
) -> ApiResult<Json<Content>> {
    let path = rt.client_path(&q.path)?;
    let c = state.files.read_text(&rt.caller, &rt.ns, &path).await?;
    let encoding = if c.text.is_some() { "utf-8" } else { "binary" };
    Ok(Json(Content {
        path: c.path.wire(),
        size_bytes: c.size,
        modified_at: c.mtime.to_rfc3339(),
        encoding: encoding.to_owned(),
        truncated: c.truncated && c.text.is_some(),
        content: c.text,
    }))
}
