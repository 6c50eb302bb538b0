//! `AppError`: the one place that turns a failure into an HTTP status and a JSON body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// A request failure: status, a stable machine code, a client-safe message, optional details.
#[derive(Debug)]
pub struct AppError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code scripts can branch on, e.g. `missing_objects`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Extra fields merged into the body.
    pub details: Option<Value>,
}

impl AppError {
    /// A failure with no details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> AppError {
        AppError { status, code, message: message.into(), details: None }
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500, logged; the client sees only that something failed on our side.
    pub fn internal(what: &str, err: impl std::fmt::Display) -> AppError {
        tracing::error!(error = %err, "{what}");
        AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{what} failed on the server"))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let (Some(Value::Object(extra)), Value::Object(map)) = (self.details, &mut body) {
            map.extend(extra);
        }
        (self.status, axum::Json(body)).into_response()
    }
}
