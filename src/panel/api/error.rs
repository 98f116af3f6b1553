//! API errors as RFC 9457 problem documents (`application/problem+json`).

use crate::domain::FieldError;
use crate::panel::control::ControlError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug)]
pub enum ApiError {
    Control(ControlError),
    /// The body is not JSON, or not of the right content type.
    BadRequest(String),
    UnsupportedMediaType,
    /// The body is larger than the panel accepts.
    TooLarge,
    /// Too many failed sign-ins: wait this long.
    Throttled(Duration),
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        ApiError::Control(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Control(e.into())
    }
}

pub fn problem(status: StatusCode, detail: &str, extra: Option<(&str, Value)>) -> Response {
    let mut body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some((key, value)) = extra {
        body[key] = value;
    }
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

fn field_errors(errors: &[FieldError]) -> Value {
    serde_json::to_value(errors).unwrap_or_default()
}

/// A problem naming each refused field in `errors`, and all of them in `detail`.
fn field_problem(status: StatusCode, errors: &[FieldError]) -> Response {
    let detail = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ");
    problem(status, &detail, Some(("errors", field_errors(errors))))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Control(e) => match e {
                ControlError::NotFound(what) => {
                    problem(StatusCode::NOT_FOUND, &format!("{what} not found"), None)
                }
                ControlError::Forbidden(why) => problem(StatusCode::FORBIDDEN, &why, None),
                ControlError::LimitExceeded { limit, message } => problem(
                    StatusCode::FORBIDDEN,
                    &message,
                    Some(("limit", json!(limit))),
                ),
                ControlError::Conflict { field, message } => problem(
                    StatusCode::CONFLICT,
                    &message,
                    Some((
                        "errors",
                        field_errors(&[FieldError::new(field, message.clone())]),
                    )),
                ),
                ControlError::Invalid(errors) => {
                    field_problem(StatusCode::UNPROCESSABLE_ENTITY, &errors)
                }
                ControlError::Refused(errors) => field_problem(StatusCode::CONFLICT, &errors),
                ControlError::Unauthorized(why) => {
                    let mut r = problem(StatusCode::UNAUTHORIZED, &why, None);
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"lodge\""),
                    );
                    r
                }
                ControlError::Internal(e) => {
                    tracing::error!(error = ?e, "internal error");
                    problem(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "lodge could not complete the request; see its log",
                        None,
                    )
                }
            },
            ApiError::BadRequest(why) => problem(StatusCode::BAD_REQUEST, &why, None),
            ApiError::UnsupportedMediaType => problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as application/json",
                None,
            ),
            ApiError::TooLarge => problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "the body is larger than {} KiB",
                    crate::panel::BODY_LIMIT / 1024
                ),
                None,
            ),
            ApiError::Throttled(wait) => {
                let secs = wait.as_secs().max(1);
                let mut r = problem(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!("too many failed sign-ins; try again in {secs} seconds"),
                    None,
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                r
            }
        }
    }
}
