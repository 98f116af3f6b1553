//! The dashboard: server-rendered pages that work without JavaScript.

use crate::http::AppState;
use axum::Router;

pub fn router() -> Router<AppState> {
    Router::new()
}
