//! The panel: the unprivileged part people and scripts talk to. Its HTTP server serves the
//! REST API under `/api/v1` (`api`), the dashboard (`web`), static files, and `/metrics` for
//! admins; both call the same operations (`control`), which check every name, ask one policy
//! (`policy`) who may act, and write the store. `auth` holds passwords, tokens, sessions,
//! TOTP and the sign-in throttle.

pub(crate) mod api;
mod assets;
pub mod auth;
pub(crate) mod control;
mod metrics;
pub(crate) mod policy;
mod report;
pub(crate) mod web;

use crate::panel::auth::Throttle;
use crate::panel::control::Control;
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower_http::set_header::SetResponseHeaderLayer;

/// What every handler gets: the control plane and the sign-in throttle.
#[derive(Clone)]
pub struct AppState {
    pub control: Control,
    pub throttle: Arc<Throttle>,
    /// Tells the agent the desired state changed.
    pub waker: crate::contract::wake::Waker,
}

/// After a request that may have changed the desired state (not GET or HEAD) and did not
/// fail, wakes the agent so the change is applied now rather than at the next full pass.
async fn wake_agent(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let changes = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let response = next.run(request).await;
    if changes && response.status().as_u16() < 400 {
        state.waker.wake();
    }
    response
}

/// Request bodies larger than this are refused (a PEM bundle is the largest legitimate one).
pub(crate) const BODY_LIMIT: usize = 256 * 1024;

/// The whole panel: API, dashboard, static files and the layers around them.
pub fn router(state: AppState) -> Router {
    let static_files = Router::new().route("/static/{name}", axum::routing::get(assets::serve));
    Router::new()
        .nest("/api/v1", api::router())
        .merge(web::router())
        .merge(metrics::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            wake_agent,
        ))
        .with_state(state)
        .merge(static_files)
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                 frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(axum::middleware::from_fn(api_problem_for_413))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// The body limit answers before any route runs, in plain text; API clients get a problem
/// document like for every other error.
async fn api_problem_for_413(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let api = request.uri().path().starts_with("/api/");
    let response = next.run(request).await;
    if api && response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return api::error::ApiError::TooLarge.into_response();
    }
    response
}

/// Binds the panel's listener, prints its URL, and serves until `shutdown` resolves.
pub async fn serve(
    state: AppState,
    listen: SocketAddr,
    report: Option<std::os::unix::net::UnixListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding the panel to {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    if let Some(report) = report {
        report.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(report)?;
        tokio::spawn(report::serve(listener, state.control.store.clone()));
    }
    // Tests and scripts read this line to find the port when listening on port 0.
    println!("lodge panel listening on http://{addr}/");
    tracing::info!(%addr, "panel listening");
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
