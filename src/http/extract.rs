//! Request extractors: authentication, the runtime namespace, and JSON, URL and query inputs
//! whose rejections come back as `{"detail": ...}` like every other error.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use warren_storage::{Namespace, NsPath};

use super::AppState;
use super::audit::AuditSlot;
use super::error::{ApiError, Problem};
use crate::services::Caller;

/// Default cap on JSON request bodies.
pub const JSON_LIMIT: usize = 1024 * 1024;

/// The authenticated key of the request (`Authorization: Bearer <key>`).
pub struct Auth(pub Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let bearer = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let caller = state.keys.authenticate(bearer).await?;
        let span = tracing::Span::current();
        span.record("workspace", caller.key.workspace.as_str());
        span.record("key_id", caller.key.id.as_str());
        Ok(Auth(caller))
    }
}

/// A runtime call's caller and the namespace it acts on (`X-Namespace` checked against the
/// key's scope). Also the handle through which the handler tells the audit trail its path.
pub struct Runtime {
    pub caller: Caller,
    pub ns: Namespace,
    audit: Option<AuditSlot>,
}

impl Runtime {
    /// Records the path the client asked for, before it is validated.
    pub fn note_path(&self, path: &str) {
        if let Some(slot) = &self.audit {
            slot.path(path);
        }
    }

    /// A write-side path (`/write`, `/delete`, `/files/…`), noted for the audit trail.
    pub fn path(&self, raw: &str) -> Result<NsPath, ApiError> {
        self.note_path(raw);
        NsPath::parse(raw).map_err(bad_path)
    }

    /// A read-side path (`/v1/files*`: the `workspace/` forms too), noted for the audit trail.
    pub fn client_path(&self, raw: &str) -> Result<NsPath, ApiError> {
        self.note_path(raw);
        NsPath::parse_client(raw).map_err(bad_path)
    }
}

fn bad_path(e: warren_storage::NameError) -> ApiError {
    ApiError::bad_request(e.to_string())
}

impl FromRequestParts<AppState> for Runtime {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Auth(caller) = Auth::from_request_parts(parts, state).await?;
        let audit = parts.extensions.get::<AuditSlot>().cloned();
        let raw = parts.headers.get("x-namespace");
        if let Some(slot) = &audit {
            slot.caller(&caller, raw.and_then(|v| v.to_str().ok()));
        }
        let header = raw
            .map(|v| v.to_str())
            .transpose()
            .map_err(|_| ApiError::bad_request("X-Namespace is not valid text"))?;
        let ns = caller.runtime_namespace(header)?;
        if let Some(slot) = &audit {
            slot.namespace(ns.as_str());
        }
        tracing::Span::current().record("namespace", ns.as_str());
        state.namespaces.check_live(&caller.key.workspace, &ns)?;
        Ok(Runtime { caller, ns, audit })
    }
}

/// A JSON body of at most `LIMIT` bytes, accepted whatever its Content-Type. Malformed JSON is
/// 400; well-formed JSON of the wrong shape (missing fields, wrong types) is 422; too large is
/// 413.
pub struct ApiJson<T, const LIMIT: usize = JSON_LIMIT>(pub T);

impl<T, S, const LIMIT: usize> FromRequest<S> for ApiJson<T, LIMIT>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let body: Bytes = axum::body::to_bytes(req.into_body(), LIMIT)
            .await
            .map_err(|_| {
                ApiError::new(
                    Problem::TooLarge,
                    format!("request body exceeds {LIMIT} bytes"),
                )
            })?;
        serde_json::from_slice(&body).map(ApiJson).map_err(|e| {
            if e.is_data() {
                ApiError::unprocessable(format!("invalid request body: {e}"))
            } else {
                ApiError::bad_request(format!("malformed JSON: {e}"))
            }
        })
    }
}

/// Typed URL path parameters.
pub struct UrlParams<T>(pub T);

impl<T, S> FromRequestParts<S> for UrlParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| UrlParams(t))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// Typed query parameters; missing or mistyped ones are 422.
pub struct QueryParams<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| QueryParams(t))
            .map_err(|e| ApiError::unprocessable(e.body_text()))
    }
}
