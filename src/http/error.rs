//! The one table of HTTP status codes: every error becomes a [`Problem`] whose status is chosen
//! here and whose body is `{"detail": "..."}`; the few success codes other than 200 and the
//! status recorded for abandoned calls are named here too.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::services;

/// What went wrong, as far as a client is concerned. Each maps to one status in [`status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    /// Malformed input: bad JSON, bad path, bad header.
    BadRequest,
    Conflict,
    TooLarge,
    /// Well-formed input the call cannot take (wrong shape, bad value, bad cursor).
    Unprocessable,
    Timeout,
    /// A rate or count limit; retry after `Retry-After`.
    TooManyRequests,
    /// This server cannot do it (no sandbox on this host); retrying will not help.
    Unavailable,
    /// Momentarily impossible; the same call may succeed after `Retry-After`.
    Busy,
    Internal,
}

/// The table.
const fn status(p: Problem) -> StatusCode {
    match p {
        Problem::Unauthorized => StatusCode::UNAUTHORIZED,
        Problem::Forbidden => StatusCode::FORBIDDEN,
        Problem::NotFound => StatusCode::NOT_FOUND,
        Problem::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Problem::BadRequest => StatusCode::BAD_REQUEST,
        Problem::Conflict => StatusCode::CONFLICT,
        Problem::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Problem::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        Problem::Timeout => StatusCode::REQUEST_TIMEOUT,
        Problem::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        Problem::Unavailable | Problem::Busy => StatusCode::SERVICE_UNAVAILABLE,
        Problem::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl Problem {
    const ALL: [Problem; 13] = [
        Problem::BadRequest,
        Problem::Unauthorized,
        Problem::Forbidden,
        Problem::NotFound,
        Problem::MethodNotAllowed,
        Problem::Timeout,
        Problem::Conflict,
        Problem::TooLarge,
        Problem::Unprocessable,
        Problem::TooManyRequests,
        Problem::Internal,
        Problem::Unavailable,
        Problem::Busy,
    ];

    fn describe(self) -> &'static str {
        match self {
            Problem::Unauthorized => "No key, or a revoked or unknown one",
            Problem::Forbidden => "The key's scope does not cover this",
            Problem::NotFound => "No such file, snapshot, key, webhook or namespace",
            Problem::MethodNotAllowed => "The route has no such method",
            Problem::BadRequest => "Malformed input: bad JSON, path or header",
            Problem::Conflict => "The call conflicts with the current state",
            Problem::TooLarge => "The body exceeds its limit",
            Problem::Unprocessable => "Well-formed input the call cannot take",
            Problem::Timeout => "The command ran past its time limit",
            Problem::TooManyRequests => "A limit was reached; retry after Retry-After seconds",
            Problem::Unavailable | Problem::Busy => {
                "Cannot be done now (busy or unreachable stores: see Retry-After), or not on \
                 this server (no sandbox)"
            }
            Problem::Internal => "The server failed; the details are in its log",
        }
    }
}

/// Every error status this API answers with, and what it means: what the OpenAPI document
/// lists for every operation.
pub fn documented_errors() -> Vec<(StatusCode, &'static str)> {
    let mut out: Vec<(StatusCode, &'static str)> = Vec::new();
    for p in Problem::ALL {
        if !out.iter().any(|(s, _)| *s == status(p)) {
            out.push((status(p), p.describe()));
        }
    }
    out
}

/// The status of a call that created what it names.
pub const CREATED: StatusCode = StatusCode::CREATED;

/// The status the audit trail records for a call whose client went away before the answer
/// (nginx's 499, "client closed request"); never sent.
pub const CLIENT_CLOSED: u16 = 499;

/// What a client told to retry waits, in seconds: a busy store clears quickly, a rate limit
/// does not.
const RETRY_AFTER_SECS: u32 = 1;
const RETRY_AFTER_LIMIT_SECS: u32 = 60;

#[derive(Debug)]
pub struct ApiError {
    problem: Problem,
    detail: String,
    /// Fields the body carries beside `detail` (readiness checks).
    extra: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn new(problem: Problem, detail: impl Into<String>) -> Self {
        Self {
            problem,
            detail: detail.into(),
            extra: Default::default(),
        }
    }

    /// A node that cannot serve yet: 503 with what its checks found, and a retry hint.
    pub fn not_ready(checks: serde_json::Value) -> Self {
        let mut e = Self::new(Problem::Busy, "Not ready");
        e.extra.insert("checks".into(), checks);
        e
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(Problem::BadRequest, detail)
    }

    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(Problem::Unprocessable, detail)
    }

    /// The answer to a request that broke, with nothing of why (that is logged).
    pub fn internal() -> Self {
        Self::new(Problem::Internal, "Internal server error")
    }
}

impl From<services::Error> for ApiError {
    fn from(e: services::Error) -> Self {
        use services::Error as E;
        let problem = match &e {
            E::Unauthorized(_) => Problem::Unauthorized,
            E::Forbidden(_) => Problem::Forbidden,
            E::NotFound(_) => Problem::NotFound,
            E::BadRequest(_) => Problem::BadRequest,
            E::Conflict(_) => Problem::Conflict,
            E::TooLarge(_) => Problem::TooLarge,
            E::Unprocessable(_) => Problem::Unprocessable,
            E::Timeout(_) => Problem::Timeout,
            E::TooManyRequests(_) => Problem::TooManyRequests,
            E::Unavailable(_) => Problem::Unavailable,
            E::Busy(_) => Problem::Busy,
            E::Internal(_) => {
                // Logged here, where it is handled; clients get no internals.
                tracing::error!(error = %e, "request failed");
                return Self::internal();
            }
        };
        Self::new(problem, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.extra;
        body.insert("detail".into(), json!(self.detail));
        let mut response = (status(self.problem), Json(body)).into_response();
        let retry_after = match self.problem {
            Problem::Busy => Some(RETRY_AFTER_SECS),
            Problem::TooManyRequests => Some(RETRY_AFTER_LIMIT_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_failures_say_when_to_retry() {
        let busy: Response = ApiError::from(services::Error::Busy("busy".into())).into_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()["retry-after"], "1");

        // No sandbox on this host is not going to change by retrying.
        let none =
            ApiError::from(services::Error::Unavailable("no sandbox".into())).into_response();
        assert_eq!(none.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!none.headers().contains_key("retry-after"));
    }

    #[test]
    fn internal_errors_keep_their_reasons_from_clients() {
        let e = ApiError::from(services::Error::Internal("disk at /var/secret".into()));
        assert_eq!(e.detail, "Internal server error");
        assert_eq!(
            e.into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
