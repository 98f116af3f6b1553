//! The dashboard: server-rendered pages that work without JavaScript.
//!
//! Every page is an askama template (escaping everything it prints); every state-changing
//! form carries the session's CSRF token and is refused with 403 without it.

mod account;
mod admin;
mod forms;
mod logs;
mod session;
mod tenants;

use crate::domain::Role;
use crate::panel::control::ControlError;
use crate::panel::AppState;
use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Router;

pub use session::{cookie, WebUser};

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(session::router())
        .merge(account::router())
        .merge(tenants::router())
        .merge(logs::router())
        .merge(admin::router())
}

/// The frame around every signed-in page: who is signed in, which section is open, the
/// CSRF token for its forms and a notice from the last action.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub username: String,
    pub role: Role,
    pub csrf: String,
    pub nav: &'static str,
    pub notice: Option<String>,
}

impl Chrome {
    pub fn new(user: &WebUser, nav: &'static str) -> Self {
        Self {
            username: user.actor.username.clone(),
            role: user.actor.role,
            csrf: user.csrf.clone(),
            nav,
            notice: None,
        }
    }

    pub fn with_notice(mut self, done: Option<&str>) -> Self {
        self.notice = done.and_then(notice_text).map(str::to_owned);
        self
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn manages_tenants(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Reseller)
    }
}

/// Notices after a redirect, by code: the URL never carries text that a page would print.
fn notice_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "saved" => "Saved.",
        "created" => "Created.",
        "deleted" => "Deleted.",
        "suspended" => "Tenant suspended: its sites answer with a suspended page.",
        "unsuspended" => "Tenant reactivated.",
        "revoked" => "Token revoked.",
        "password" => "Password changed. Other sessions and API tokens were signed out.",
        "totp-on" => "Two-factor sign-in is on.",
        "totp-off" => "Two-factor sign-in is off.",
        _ => return None,
    })
}

/// `?done=<code>` after a redirect: which notice to show.
#[derive(Debug, Default, serde::Deserialize)]
pub struct DoneQuery {
    pub done: Option<String>,
}

/// Why a page could not be shown.
#[derive(Debug)]
pub enum WebError {
    Control(ControlError),
    /// A state-changing form without the session's CSRF token.
    Csrf,
    Render(askama::Error),
    /// Not signed in: go to the sign-in page.
    SignIn,
}

impl From<ControlError> for WebError {
    fn from(e: ControlError) -> Self {
        WebError::Control(e)
    }
}

impl From<crate::panel::policy::Denied> for WebError {
    fn from(e: crate::panel::policy::Denied) -> Self {
        WebError::Control(e.into())
    }
}

impl From<askama::Error> for WebError {
    fn from(e: askama::Error) -> Self {
        WebError::Render(e)
    }
}

impl From<sqlx::Error> for WebError {
    fn from(e: sqlx::Error) -> Self {
        WebError::Control(e.into())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    title: String,
    detail: String,
}

fn error_page(status: StatusCode, detail: &str) -> Response {
    let page = ErrorPage {
        status: status.as_u16(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        detail: detail.to_owned(),
    };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => (status, detail.to_owned()).into_response(),
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::SignIn => Redirect::to("/login").into_response(),
            WebError::Csrf => error_page(
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from lodge. Go back, reload the page and try again.",
            ),
            WebError::Render(e) => {
                tracing::error!(error = %e, "rendering a page");
                error_page(StatusCode::INTERNAL_SERVER_ERROR, "lodge could not render this page; see its log.")
            }
            WebError::Control(e) => match e {
                ControlError::NotFound(what) => error_page(StatusCode::NOT_FOUND, &format!("No such {what}.")),
                ControlError::Forbidden(why) | ControlError::Unauthorized(why) => error_page(StatusCode::FORBIDDEN, &why),
                ControlError::LimitExceeded { message, .. } => error_page(StatusCode::FORBIDDEN, &message),
                ControlError::Conflict { message, .. } => error_page(StatusCode::CONFLICT, &message),
                ControlError::Invalid(errors) => error_page(StatusCode::UNPROCESSABLE_ENTITY, &field_list(&errors)),
                ControlError::Refused(errors) => error_page(StatusCode::CONFLICT, &field_list(&errors)),
                ControlError::Internal(e) => {
                    tracing::error!(error = ?e, "internal error");
                    error_page(StatusCode::INTERNAL_SERVER_ERROR, "lodge could not complete the request; see its log.")
                }
            },
        }
    }
}

fn field_list(errors: &[crate::domain::FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

pub type WebResult = Result<Response, WebError>;

/// Renders a page with status 200.
pub fn page(t: impl Template) -> WebResult {
    Ok(Html(t.render()?).into_response())
}

/// Renders a form again with its errors: 422, or 409/403 for a conflict or a limit.
pub fn form_again(status: StatusCode, t: impl Template) -> WebResult {
    Ok((status, Html(t.render()?)).into_response())
}

/// After a successful POST: see the result page (post/redirect/get).
pub fn done(to: &str, code: &str) -> WebResult {
    let sep = if to.contains('?') { '&' } else { '?' };
    Ok(Redirect::to(&format!("{to}{sep}done={code}")).into_response())
}

/// A date and time for pages, in UTC.
pub fn when(unix: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}
