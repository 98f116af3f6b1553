//! Signing in and out of the dashboard, and the signed-in user of a request.

use super::forms::SessionCsrf;
use super::{WebError, WebResult};
use crate::panel::api::extract::{actor_of, source_address, Source};
use crate::panel::auth::secret;
use crate::panel::auth::session::{self, sign_in, SignInError, COOKIE, SESSION_TTL};
use crate::panel::policy::Actor;
use crate::panel::AppState;
use crate::store::rows::UserRow;
use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

/// The cookie holding the sign-in form's CSRF token (there is no session yet).
const LOGIN_CSRF_COOKIE: &str = "lodge_login_csrf";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The signed-in user of a dashboard request. Without a live session: the sign-in page.
#[derive(Debug, Clone)]
pub struct WebUser {
    pub actor: Actor,
    pub user: UserRow,
    pub csrf: String,
    pub cookie: String,
}

impl FromRequestParts<AppState> for WebUser {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = cookie(&parts.headers, COOKIE)
            .ok_or(WebError::SignIn)?
            .to_owned();
        let (user, csrf) = session::lookup(&state.control.store, &value)
            .await?
            .ok_or(WebError::SignIn)?;
        parts.extensions.insert(SessionCsrf(csrf.clone()));
        let mut actor = actor_of(&user, source_address(parts));
        actor.session = Some(crate::panel::auth::secret::digest(&value));
        Ok(WebUser {
            actor,
            user,
            csrf,
            cookie: value,
        })
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    username: String,
    error: Option<String>,
    need_code: bool,
}

async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> WebResult {
    // Already signed in: straight to the overview.
    if let Some(value) = cookie(&headers, COOKIE) {
        if session::lookup(&state.control.store, value)
            .await?
            .is_some()
        {
            return Ok(Redirect::to("/").into_response());
        }
    }
    let csrf = secret::random_hex(24);
    let html = LoginPage {
        csrf: csrf.clone(),
        username: String::new(),
        error: None,
        need_code: false,
    }
    .render()?;
    let mut response = Html(html).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(
            LOGIN_CSRF_COOKIE,
            &csrf,
            3600,
            state.control.config.secure_cookies,
        ),
    );
    Ok(response)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: String,
}

async fn login(
    State(state): State<AppState>,
    Source(source): Source,
    headers: HeaderMap,
    body: Bytes,
) -> WebResult {
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).map(str::to_owned);
    let form: LoginForm = serde_urlencoded::from_bytes(&body).map_err(|_| WebError::Csrf)?;
    match expected {
        Some(expected) if !form.csrf.is_empty() && secret::same(&form.csrf, &expected) => {}
        _ => return Err(WebError::Csrf),
    }
    let again = |error: &str, need_code: bool, status: StatusCode| -> WebResult {
        let html = LoginPage {
            csrf: form.csrf.clone(),
            username: super::forms::echo(&form.username),
            error: Some(error.to_owned()),
            need_code,
        }
        .render()?;
        Ok((status, Html(html)).into_response())
    };
    let code = Some(form.code.as_str()).filter(|c| !c.is_empty());
    match sign_in(
        &state.control.store,
        &state.throttle,
        &form.username,
        &form.password,
        code,
        &source,
    )
    .await
    {
        Ok(user) => {
            let value = session::create(&state.control.store, user.id).await?;
            let mut response = Redirect::to("/").into_response();
            let secure = state.control.config.secure_cookies;
            response.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(COOKIE, &value, SESSION_TTL, secure),
            );
            response.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(LOGIN_CSRF_COOKIE, "", 0, secure),
            );
            Ok(response)
        }
        Err(SignInError::Throttled(wait)) => {
            let mut response = again(
                &format!(
                    "Too many failed sign-ins. Try again in {} minutes.",
                    wait.as_secs().div_ceil(60)
                ),
                false,
                StatusCode::TOO_MANY_REQUESTS,
            )?;
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
            Ok(response)
        }
        Err(SignInError::Rejected) => again(
            "Wrong user name, password or code.",
            code.is_some(),
            StatusCode::UNAUTHORIZED,
        ),
        Err(SignInError::CodeRequired) => again(
            "Enter the 6-digit code from your authenticator app.",
            true,
            StatusCode::UNAUTHORIZED,
        ),
        Err(SignInError::Internal(e)) => Err(WebError::Control(e.into())),
    }
}

async fn logout(
    State(state): State<AppState>,
    user: WebUser,
    super::forms::CsrfForm(_): super::forms::CsrfForm<Empty>,
) -> Response {
    let _ = session::delete(&state.control.store, &user.cookie).await;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(COOKIE, "", 0, state.control.config.secure_cookies),
    );
    response
}

/// A form with no fields but the CSRF token.
#[derive(Deserialize)]
pub struct Empty {}
