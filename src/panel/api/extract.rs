//! Extractors of the API: the bearer-token actor, JSON bodies and query strings that fail
//! as problem documents.

use super::error::ApiError;
use crate::domain::FieldError;
use crate::panel::control::{tokens, ControlError};
use crate::panel::policy::Actor;
use crate::panel::AppState;
use crate::store::rows::UserRow;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;

/// The client's address, as the audit log records it.
pub fn source_address(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub fn actor_of(user: &UserRow, source: String) -> Actor {
    Actor {
        user_id: user.id,
        username: user.username.clone(),
        role: user.role,
        tenant_id: user.tenant_id,
        source,
        session: None,
    }
}

/// The account behind `Authorization: Bearer <token>`.
pub struct ApiActor(pub Actor);

impl FromRequestParts<AppState> for ApiActor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = || {
            ApiError::Control(ControlError::Unauthorized(
                "send a valid API token as 'Authorization: Bearer <token>'".into(),
            ))
        };
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(unauthorized)?;
        let user = tokens::authenticate(&state.control, token.trim())
            .await?
            .ok_or_else(unauthorized)?;
        Ok(ApiActor(actor_of(&user, source_address(parts))))
    }
}

/// A JSON body; a malformed one is 400, a well-formed one of the wrong shape 422 naming
/// the field.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let mime = ct.split(';').next().unwrap_or("").trim();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge
                } else {
                    ApiError::BadRequest("the body could not be read".into())
                }
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut value: Value = serde_json::from_slice(bytes)
        .map_err(|_| ApiError::BadRequest("the body is not valid JSON".into()))?;
    whole_numbers(&mut value);
    match serde_path_to_error::deserialize(value) {
        Ok(v) => Ok(v),
        Err(e) => {
            let inner = e.inner();
            let path = e.path().to_string();
            let field = if path == "." || path.is_empty() {
                "body".to_owned()
            } else {
                path
            };
            let message = describe_serde(&inner.to_string());
            Err(ApiError::Control(ControlError::Invalid(vec![
                FieldError::new(field, message),
            ])))
        }
    }
}

/// Writes every number without a fraction as a whole number: JSON (and the JSON Schema of
/// the API's document) does not tell `5.0` from `5`, so neither does the API.
fn whole_numbers(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                // Within i64 (2^63 is exactly representable; the range is half open).
                if f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63) {
                    *value = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(map) => map.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

/// serde's message without its position suffix, and with any echoed input cut short.
fn describe_serde(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    crate::domain::names_for_field(message).replace('?', " ")
}

/// The query string as key/value pairs; a malformed one is 400.
pub struct ApiQuery(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for ApiQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .map(|pairs| ApiQuery(pairs.into_iter().collect()))
            .map_err(|_| ApiError::BadRequest("the query string is malformed".into()))
    }
}

impl ApiQuery {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A whole-number parameter; given but empty or not a number is malformed, on every route.
    pub fn integer(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            Some(raw) => raw
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ControlError::invalid(key, "must be a whole number").into()),
            None => Ok(None),
        }
    }

    /// `?limit=` and `?after=` as a page request.
    pub fn page(&self) -> Result<crate::panel::control::PageRequest, ApiError> {
        Ok(crate::panel::control::PageRequest::new(
            self.integer("limit")?,
            self.get("after").map(str::to_owned),
        )?)
    }
}

/// The client's address, for handlers that have no actor yet (signing in).
pub struct Source(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Source(source_address(parts)))
    }
}
