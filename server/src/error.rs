//! One error type for every transport: a status, a stable code and a message
//! that says what to do. Internals are logged, never shown.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use xianlu_domain::Rejection;
use xianlu_domain::wire::Problem;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("the order changed meanwhile: it is at version {current}; reload and try again")]
    VersionConflict { current: u64 },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    Unauthorized(String),
    /// It existed and is no more (an expired link).
    #[error("{message}")]
    Gone { code: &'static str, message: String },
    #[error("the request body is too large")]
    TooLarge,
    #[error("too many attempts from this address; wait a minute")]
    TooManyAttempts,
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest { code, message: message.into() }
    }
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Unprocessable { code, message: message.into() }
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Conflict { code, message: message.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::VersionConflict { .. } | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Rejected(Rejection::IllegalTransition { .. }) => StatusCode::CONFLICT,
            ApiError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::Unprocessable { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Gone { code, .. } => code,
            ApiError::NotFound(_) => "not_found",
            ApiError::VersionConflict { .. } => "version_conflict",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::TooLarge => "body_too_large",
            ApiError::TooManyAttempts => "too_many_attempts",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Rejected(r) => r.code(),
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn to_problem(&self, request_id: Option<String>) -> Problem {
        let status = self.status();
        Problem {
            type_uri: format!("urn:xianlu:problem:{}", self.code()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: match self {
                ApiError::Internal(_) => "something went wrong on our side; it has been logged".to_owned(),
                other => other.to_string(),
            },
            code: self.code().to_owned(),
            instance: None,
            request_id,
            current_version: match self {
                ApiError::VersionConflict { current } => Some(*current),
                _ => None,
            },
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::Internal(error.into())
    }
}

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Renders a problem document.
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(error) = &self {
            tracing::error!(error = format!("{error:#}"), "request failed");
        }
        // The request id is filled in by the middleware that knows it.
        problem_response(&self.to_problem(None))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
