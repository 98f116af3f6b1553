//! Form handling: the CSRF-checked form extractor, inline field errors, and parsing form
//! strings into the control plane's inputs.

use super::WebError;
use crate::domain::FieldError;
use crate::panel::auth::secret;
use crate::panel::control::ControlError;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

/// The CSRF token of the signed-in session, put in the request by `WebUser`.
#[derive(Clone)]
pub struct SessionCsrf(pub String);

/// A form body whose `csrf` field must equal the session's token. Without a session the
/// sign-in page is shown; with a wrong or missing token the answer is 403.
pub struct CsrfForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for CsrfForm<T> {
    type Rejection = WebError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let expected = req
            .extensions()
            .get::<SessionCsrf>()
            .cloned()
            .ok_or(WebError::SignIn)?;
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| WebError::Csrf)?;
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_bytes(&bytes).map_err(|_| WebError::Csrf)?;
        let sent = pairs
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        if !secret::same(sent, &expected.0) {
            return Err(WebError::Csrf);
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|_| {
            WebError::Control(ControlError::invalid(
                "form",
                "the form's fields could not be read",
            ))
        })?;
        Ok(CsrfForm(form))
    }
}

/// Field errors shown next to their inputs.
#[derive(Debug, Default, Clone)]
pub struct Errors {
    pub list: Vec<FieldError>,
    /// An error about the whole form (a limit, a refusal).
    pub general: Option<String>,
}

impl Errors {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.list
            .iter()
            .find(|e| {
                e.field == field
                    || e.field.starts_with(&format!("{field}["))
                    || e.field.starts_with(&format!("{field}."))
            })
            .map(|e| e.message.as_str())
    }

    pub fn has(&self, field: &str) -> bool {
        self.get(field).is_some()
    }

    /// Field errors whose field no input of the form shows (reported at the top).
    pub fn others(&self, shown: &[&str]) -> Vec<String> {
        self.list
            .iter()
            .filter(|e| {
                !shown.iter().any(|s| {
                    e.field == *s
                        || e.field.starts_with(&format!("{s}["))
                        || e.field.starts_with(&format!("{s}."))
                })
            })
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }
}

/// Turns a refusal of the control plane into inline errors and the status to answer with;
/// anything that is not about the input becomes an error page.
pub fn form_errors(e: ControlError) -> Result<(StatusCode, Errors), WebError> {
    match e {
        ControlError::Invalid(list) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Errors {
                list,
                general: None,
            },
        )),
        ControlError::Refused(list) => Ok((
            StatusCode::CONFLICT,
            Errors {
                list,
                general: None,
            },
        )),
        ControlError::Conflict { field, message } => Ok((
            StatusCode::CONFLICT,
            Errors {
                list: vec![FieldError::new(field, message)],
                general: None,
            },
        )),
        ControlError::LimitExceeded { message, .. } => Ok((
            StatusCode::FORBIDDEN,
            Errors {
                list: Vec::new(),
                general: Some(message),
            },
        )),
        other => Err(WebError::Control(other)),
    }
}

/// Parses an optional whole number from a form field; empty means "not given".
pub fn number(errors: &mut Vec<FieldError>, field: &str, raw: &str) -> Option<i64> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    match raw.parse::<i64>() {
        Ok(n) => Some(n),
        Err(_) => {
            errors.push(FieldError::new(field, "must be a whole number"));
            None
        }
    }
}

/// An HTML checkbox: present ("on") or absent.
pub fn checked(raw: &Option<String>) -> bool {
    raw.as_deref()
        .is_some_and(|v| v == "on" || v == "true" || v == "1")
}

/// Splits a textarea of names (one per line, or separated by spaces or commas).
pub fn name_list(raw: &str) -> Vec<String> {
    raw.split(['\n', ',', ' ', '\r', '\t'])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Text no longer than `max` characters, for echoing a submitted value back into a form.
pub fn echo(raw: &str) -> String {
    raw.chars().take(2048).collect()
}
