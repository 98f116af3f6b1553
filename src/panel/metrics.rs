//! `/metrics` in the Prometheus text format, for admins only (an admin's API token as
//! `Authorization: Bearer`, or an admin's dashboard session): the proxy's metrics, read from
//! its unix socket, followed by the panel's own.

use crate::contract::RunDir;
use crate::domain::Role;
use crate::panel::api::extract::actor_of;
use crate::panel::auth::session;
use crate::panel::control::{tenants, tokens};
use crate::panel::web::cookie;
use crate::panel::AppState;
use crate::store::rows::UserRow;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::fmt::Write;
use std::time::Duration;

/// How long the proxy may take to answer.
const PROXY_TIMEOUT: Duration = Duration::from_secs(3);
/// The most the proxy's answer may weigh.
const PROXY_MAX: u64 = 16 * 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

fn text(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The account behind the bearer token, or else behind the session cookie.
async fn account(state: &AppState, headers: &HeaderMap) -> anyhow::Result<Option<UserRow>> {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let Some(token) = auth.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
            return Ok(None);
        };
        return Ok(tokens::authenticate(&state.control, token.trim()).await?);
    }
    match cookie(headers, session::COOKIE) {
        Some(value) => Ok(session::lookup(&state.control.store, value)
            .await?
            .map(|(user, _)| user)),
        None => Ok(None),
    }
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let user = match account(&state, &headers).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "send an admin's API token as 'Authorization: Bearer <token>', or sign in as an admin\n"
                    .into(),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"lodge\""),
            );
            return r;
        }
        Err(e) => {
            tracing::error!(error = ?e, "authenticating a metrics request");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "see lodge's log\n".into(),
            );
        }
    };
    if user.role != Role::Admin {
        return text(
            StatusCode::FORBIDDEN,
            "only an admin may read the metrics\n".into(),
        );
    }
    let proxy = proxy_metrics(&state.control.config.run_dir).await;
    let mut out = proxy.clone().unwrap_or_default();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let actor = actor_of(&user, "metrics".into());
    match tenants::counts(&state.control, &actor).await {
        Ok(counts) => panel_metrics(&mut out, proxy.is_some(), &counts),
        Err(e) => {
            tracing::error!(error = %e, "counting tenants for the metrics");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "see lodge's log\n".into(),
            );
        }
    }
    text(StatusCode::OK, out)
}

/// The proxy's metrics from its socket; `None` when it does not answer (not running, or
/// the proxy is off).
async fn proxy_metrics(run_dir: &RunDir) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let path = run_dir.proxy_metrics();
    let read = async {
        let stream = tokio::net::UnixStream::connect(&path).await.ok()?;
        let mut text = String::new();
        stream
            .take(PROXY_MAX)
            .read_to_string(&mut text)
            .await
            .ok()?;
        Some(text)
    };
    tokio::time::timeout(PROXY_TIMEOUT, read)
        .await
        .ok()
        .flatten()
}

fn panel_metrics(out: &mut String, proxy_up: bool, c: &tenants::Counts) {
    let mut gauge = |name: &str, help: &str, samples: &[(&str, i64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    gauge(
        "lodge_proxy_up",
        "Whether the proxy answered on its metrics socket.",
        &[("", i64::from(proxy_up))],
    );
    gauge(
        "lodge_tenants",
        "Tenants, by state.",
        &[
            ("{state=\"active\"}", c.tenants - c.suspended),
            ("{state=\"suspended\"}", c.suspended),
        ],
    );
    gauge(
        "lodge_tenants_applied",
        "Tenants by what the agent has applied: ok (the current generation), pending, error.",
        &[
            ("{state=\"ok\"}", c.applied),
            ("{state=\"pending\"}", c.pending),
            ("{state=\"error\"}", c.errors),
        ],
    );
    gauge("lodge_vhosts", "Vhosts.", &[("", c.vhosts)]);
    gauge(
        "lodge_resellers",
        "Reseller accounts.",
        &[("", c.resellers)],
    );
}
