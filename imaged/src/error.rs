//! `AppError`: the one place that turns a failure into an HTTP status and a JSON body
//! (`api::ErrorBody`). The status follows from the code (`api::ErrorCode::http_status`).

use api::{ErrorBody, ErrorCode};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A request failure: the body the client gets (a stable code, a client-safe message and
/// the details some codes carry).
#[derive(Debug)]
pub struct AppError(pub ErrorBody);

impl AppError {
    /// A failure with no details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> AppError {
        AppError(ErrorBody::new(code, message))
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> AppError {
        AppError::new(ErrorCode::NotFound, message)
    }

    /// 500, logged; the client sees only that something failed on our side.
    pub fn internal(what: &str, err: impl std::fmt::Display) -> AppError {
        tracing::error!(error = %err, "{what}");
        AppError::new(ErrorCode::Internal, format!("{what} failed on the server"))
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.0.error
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0.message
    }
}

/// The code of a rejection the framework made (bad JSON, oversized body, bad path), which
/// arrives with a status and a text.
pub fn rejection_code(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::BadContentType,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        _ => ErrorCode::BadRequest,
    }
}

/// A rejection the framework answered with text (bad path, range not satisfiable, oversized
/// body) as a JSON error that keeps its status.
pub fn rejection_response(status: StatusCode, text: &[u8]) -> Response {
    let body = ErrorBody::new(rejection_code(status), String::from_utf8_lossy(text).trim().to_string());
    (status, axum::Json(body)).into_response()
}

impl From<axum::extract::rejection::JsonRejection> for AppError {
    fn from(e: axum::extract::rejection::JsonRejection) -> AppError {
        AppError::new(rejection_code(e.status()), e.body_text())
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.error, self.0.message)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.0)).into_response()
    }
}
