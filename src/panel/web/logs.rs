//! A vhost's access log in the dashboard: the last lines, and a search box (a plain GET
//! form; the search runs on the server).

use super::{form_again, page, Chrome, WebResult, WebUser};
use crate::panel::control::access_log::{self, TailRequest, DEFAULT_LINES};
use crate::panel::control::ControlError;
use crate::panel::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/tenants/{name}/vhosts/{domain}/access-log",
        get(access_log_page),
    )
}

#[derive(Deserialize, Default)]
pub struct LogQuery {
    lines: Option<String>,
    q: Option<String>,
}

#[derive(Template)]
#[template(path = "access_log.html")]
struct AccessLogPage {
    chrome: Chrome,
    tenant: String,
    domain: String,
    q: String,
    lines: usize,
    choices: Vec<usize>,
    /// The lines, oldest first, one per text line.
    text: String,
    count: usize,
    complete: bool,
    error: Option<String>,
}

async fn access_log_page(
    State(state): State<AppState>,
    user: WebUser,
    Path((name, domain)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> WebResult {
    let ctl = &state.control;
    let echoed: String = query.q.as_deref().unwrap_or("").chars().take(200).collect();
    let mut view = AccessLogPage {
        chrome: Chrome::new(&user, "tenants"),
        tenant: String::new(),
        domain: String::new(),
        q: echoed,
        lines: DEFAULT_LINES,
        choices: vec![50, DEFAULT_LINES, 1000],
        text: String::new(),
        count: 0,
        complete: true,
        error: None,
    };
    match TailRequest::parse(query.lines.as_deref(), query.q.as_deref()) {
        Ok(request) => {
            let log = access_log::tail(ctl, &user.actor, &name, &domain, &request).await?;
            if !view.choices.contains(&request.lines) {
                view.choices.push(request.lines);
                view.choices.sort_unstable();
            }
            view.lines = request.lines;
            view.tenant = log.tenant;
            view.domain = log.domain;
            view.count = log.tail.lines.len();
            view.complete = log.tail.complete;
            view.text = log.tail.lines.join("\n");
            page(view)
        }
        Err(ControlError::Invalid(errors)) => {
            // Reach first: someone else's vhost stays a 404 whatever the input.
            let (tenant, domain) = access_log::reach(ctl, &user.actor, &name, &domain).await?;
            view.tenant = tenant.as_str().to_owned();
            view.domain = domain.as_str().to_owned();
            view.error = Some(
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            form_again(StatusCode::UNPROCESSABLE_ENTITY, view)
        }
        Err(e) => Err(e.into()),
    }
}
