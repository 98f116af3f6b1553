//! The REST API under `/api/v1`: JSON in and out, bearer tokens, problem documents.

pub mod error;
pub mod extract;
mod openapi;
mod resources;

use crate::panel::AppState;
use axum::routing::MethodRouter;
use axum::Router;

/// Builds the API router while recording each (method, path) it registers, so the OpenAPI
/// document can be checked against what is really served.
pub(crate) struct Routes {
    router: Router<AppState>,
    pub(crate) table: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn new() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    fn at(
        mut self,
        path: &'static str,
        methods: Vec<(&'static str, MethodRouter<AppState>)>,
    ) -> Self {
        let mut route = MethodRouter::new();
        for (method, handler) in methods {
            self.table.push((method, path));
            route = route.merge(handler);
        }
        self.router = self.router.route(path, route);
        self
    }
}

pub(crate) fn routes() -> Routes {
    use axum::routing::{delete, get, patch, post};
    use resources::*;
    Routes::new()
        .at("/openapi.json", vec![("GET", get(openapi::serve))])
        .at("/me", vec![("GET", get(me))])
        .at(
            "/tokens",
            vec![("GET", get(list_tokens)), ("POST", post(create_token))],
        )
        .at("/tokens/{id}", vec![("DELETE", delete(revoke_token))])
        .at(
            "/users",
            vec![("GET", get(list_users)), ("POST", post(create_user))],
        )
        .at(
            "/users/{username}",
            vec![
                ("GET", get(get_user)),
                ("PATCH", patch(update_user)),
                ("DELETE", delete(delete_user)),
            ],
        )
        .at(
            "/plans",
            vec![("GET", get(list_plans)), ("POST", post(create_plan))],
        )
        .at(
            "/plans/{name}",
            vec![
                ("GET", get(get_plan)),
                ("PATCH", patch(update_plan)),
                ("DELETE", delete(delete_plan)),
            ],
        )
        .at(
            "/tenants",
            vec![("GET", get(list_tenants)), ("POST", post(create_tenant))],
        )
        .at(
            "/tenants/{name}",
            vec![
                ("GET", get(get_tenant)),
                ("PATCH", patch(update_tenant)),
                ("DELETE", delete(delete_tenant)),
            ],
        )
        .at("/tenants/{name}/health", vec![("GET", get(tenant_health))])
        .at(
            "/tenants/{name}/suspend",
            vec![("POST", post(suspend_tenant))],
        )
        .at(
            "/tenants/{name}/unsuspend",
            vec![("POST", post(unsuspend_tenant))],
        )
        .at(
            "/tenants/{name}/vhosts",
            vec![("GET", get(list_vhosts)), ("POST", post(create_vhost))],
        )
        .at(
            "/tenants/{name}/vhosts/{domain}/access-log",
            vec![("GET", get(vhost_access_log))],
        )
        .at(
            "/vhosts/{domain}",
            vec![
                ("GET", get(get_vhost)),
                ("PATCH", patch(update_vhost)),
                ("DELETE", delete(delete_vhost)),
            ],
        )
        .at("/audit", vec![("GET", get(list_audit))])
}

pub fn router() -> Router<AppState> {
    routes().router.fallback(|| async {
        error::problem(axum::http::StatusCode::NOT_FOUND, "no such API route", None)
    })
}
