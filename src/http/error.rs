//! The one place where errors become HTTP responses: a status and a `{"detail": "..."}` body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::services;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
    /// Seconds a client should wait before retrying (`Retry-After`), for retryable failures.
    pub retry_after: Option<u32>,
}

/// What a client told to retry waits, in seconds.
const RETRY_AFTER_SECS: u32 = 1;

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            retry_after: None,
        }
    }
}

impl From<services::Error> for ApiError {
    fn from(e: services::Error) -> Self {
        use services::Error as E;
        let status = match &e {
            E::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            E::Forbidden(_) => StatusCode::FORBIDDEN,
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::BadRequest(_) => StatusCode::BAD_REQUEST,
            E::Conflict(_) => StatusCode::CONFLICT,
            E::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            E::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            E::Unavailable(_) | E::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            // Logged here, where it is handled; clients get no internals.
            tracing::error!(error = %e, "request failed");
            return Self::new(status, "Internal server error");
        }
        let retry_after = matches!(e, E::Busy(_)).then_some(RETRY_AFTER_SECS);
        Self {
            retry_after,
            ..Self::new(status, e.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "detail": self.detail }))).into_response();
        if let Some(secs) = self.retry_after {
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
}
