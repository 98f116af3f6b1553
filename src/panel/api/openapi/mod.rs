//! The OpenAPI 3.1 document of the API. Written by hand, route by route; a test checks it
//! against the routes the router really registers, both ways.

mod patterns;
mod schemas;

use axum::Json;
use schemas::schema_ref;
use serde_json::{json, Map, Value};

/// One documented operation.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    tag: &'static str,
    /// Schema of the JSON body, if it takes one.
    body: Option<&'static str>,
    /// Success status and the schema of its body (`None`: no body).
    ok: (u16, Option<&'static str>),
    /// Whether a bearer token is needed.
    auth: bool,
    /// The refusals beyond those every operation of its kind has (401 without a token, 404
    /// for an object not found, 400 and 422 for a malformed request).
    refusals: &'static [u16],
}

const OPS: &[Op] = &[
    Op {
        method: "GET",
        path: "/openapi.json",
        summary: "This document",
        tag: "meta",
        body: None,
        ok: (200, None),
        auth: false,
        refusals: &[],
    },
    Op {
        method: "GET",
        path: "/me",
        summary: "The account behind the token",
        tag: "accounts",
        body: None,
        ok: (200, Some("User")),
        auth: true,
        refusals: &[],
    },
    Op {
        method: "GET",
        path: "/tokens",
        summary: "List your API tokens",
        tag: "accounts",
        body: None,
        ok: (200, Some("TokenList")),
        auth: true,
        refusals: &[],
    },
    Op {
        method: "POST",
        path: "/tokens",
        summary: "Sign in and create an API token (shown once)",
        tag: "accounts",
        body: Some("TokenRequest"),
        ok: (201, Some("NewToken")),
        auth: false,
        refusals: &[429],
    },
    Op {
        method: "DELETE",
        path: "/tokens/{id}",
        summary: "Revoke one of your tokens",
        tag: "accounts",
        body: None,
        ok: (204, None),
        auth: true,
        refusals: &[],
    },
    Op {
        method: "GET",
        path: "/users",
        summary: "List accounts (admins: all; others: themselves)",
        tag: "accounts",
        body: None,
        ok: (200, Some("UserList")),
        auth: true,
        refusals: &[],
    },
    Op {
        method: "POST",
        path: "/users",
        summary: "Create an account (admins only)",
        tag: "accounts",
        body: Some("NewUser"),
        ok: (201, Some("User")),
        auth: true,
        refusals: &[403, 409],
    },
    Op {
        method: "GET",
        path: "/users/{username}",
        summary: "One account",
        tag: "accounts",
        body: None,
        ok: (200, Some("User")),
        auth: true,
        refusals: &[],
    },
    Op {
        method: "PATCH",
        path: "/users/{username}",
        summary: "Change a password or a reseller's limits",
        tag: "accounts",
        body: Some("UserPatch"),
        ok: (200, Some("User")),
        auth: true,
        refusals: &[403, 409],
    },
    Op {
        method: "DELETE",
        path: "/users/{username}",
        summary: "Delete an account (admins only)",
        tag: "accounts",
        body: None,
        ok: (204, None),
        auth: true,
        refusals: &[403, 409],
    },
    Op {
        method: "GET",
        path: "/plans",
        summary: "List plans",
        tag: "plans",
        body: None,
        ok: (200, Some("PlanList")),
        auth: true,
        refusals: &[],
    },
    Op {
        method: "POST",
        path: "/plans",
        summary: "Create a plan; only a name is needed",
        tag: "plans",
        body: Some("NewPlan"),
        ok: (201, Some("Plan")),
        auth: true,
        refusals: &[403, 409],
    },
    Op {
        method: "GET",
        path: "/plans/{name}",
        summary: "One plan",
        tag: "plans",
        body: None,
        ok: (200, Some("Plan")),
        auth: true,
        refusals: &[],
    },
    Op {
        method: "PATCH",
        path: "/plans/{name}",
        summary: "Change a plan",
        tag: "plans",
        body: Some("PlanPatch"),
        ok: (200, Some("Plan")),
        auth: true,
        refusals: &[403, 409],
    },
    Op {
        method: "DELETE",
        path: "/plans/{name}",
        summary: "Delete an unused plan",
        tag: "plans",
        body: None,
        ok: (204, None),
        auth: true,
        refusals: &[403, 409],
    },
    Op {
        method: "GET",
        path: "/tenants",
        summary: "List tenants (`q` searches names and domains, `owner` filters)",
        tag: "tenants",
        body: None,
        ok: (200, Some("TenantList")),
        auth: true,
        refusals: &[],
    },
    Op {
        method: "POST",
        path: "/tenants",
        summary: "Create a tenant",
        tag: "tenants",
        body: Some("NewTenant"),
        ok: (201, Some("Tenant")),
        auth: true,
        refusals: &[403, 409],
    },
    Op {
        method: "GET",
        path: "/tenants/{name}",
        summary: "One tenant, with its applied state",
        tag: "tenants",
        body: None,
        ok: (200, Some("Tenant")),
        auth: true,
        refusals: &[],
    },
    Op {
        method: "PATCH",
        path: "/tenants/{name}",
        summary: "Change a tenant's plan, owner, PHP settings or login password",
        tag: "tenants",
        body: Some("TenantPatch"),
        ok: (200, Some("Tenant")),
        auth: true,
        refusals: &[403, 409],
    },
    Op {
        method: "DELETE",
        path: "/tenants/{name}",
        summary: "Delete a tenant (its UID stays reserved)",
        tag: "tenants",
        body: None,
        ok: (204, None),
        auth: true,
        refusals: &[403],
    },
    Op {
        method: "GET",
        path: "/tenants/{name}/health",
        summary: "The tenant's PHP-FPM pool: last check and the last hour's samples",
        tag: "tenants",
        body: None,
        ok: (200, Some("TenantHealth")),
        auth: true,
        refusals: &[],
    },
    Op {
        method: "POST",
        path: "/tenants/{name}/suspend",
        summary: "Suspend a tenant",
        tag: "tenants",
        body: None,
        ok: (200, Some("Tenant")),
        auth: true,
        refusals: &[403],
    },
    Op {
        method: "POST",
        path: "/tenants/{name}/unsuspend",
        summary: "Reactivate a suspended tenant",
        tag: "tenants",
        body: None,
        ok: (200, Some("Tenant")),
        auth: true,
        refusals: &[403],
    },
    Op {
        method: "GET",
        path: "/tenants/{name}/vhosts",
        summary: "List a tenant's vhosts",
        tag: "vhosts",
        body: None,
        ok: (200, Some("VhostList")),
        auth: true,
        refusals: &[],
    },
    Op {
        method: "POST",
        path: "/tenants/{name}/vhosts",
        summary: "Create a vhost",
        tag: "vhosts",
        body: Some("NewVhost"),
        ok: (201, Some("Vhost")),
        auth: true,
        refusals: &[403, 409],
    },
    Op {
        method: "GET",
        path: "/tenants/{name}/vhosts/{domain}/access-log",
        summary: "The end of a vhost's access log (combined format, oldest line first); `q` keeps \
                  the lines that contain it (ASCII case ignored)",
        tag: "vhosts",
        body: None,
        ok: (200, Some("AccessLog")),
        auth: true,
        refusals: &[],
    },
    Op {
        method: "GET",
        path: "/vhosts/{domain}",
        summary: "One vhost",
        tag: "vhosts",
        body: None,
        ok: (200, Some("Vhost")),
        auth: true,
        refusals: &[],
    },
    Op {
        method: "PATCH",
        path: "/vhosts/{domain}",
        summary: "Change a vhost",
        tag: "vhosts",
        body: Some("VhostPatch"),
        ok: (200, Some("Vhost")),
        auth: true,
        refusals: &[409],
    },
    Op {
        method: "DELETE",
        path: "/vhosts/{domain}",
        summary: "Delete a vhost",
        tag: "vhosts",
        body: None,
        ok: (204, None),
        auth: true,
        refusals: &[],
    },
    Op {
        method: "GET",
        path: "/audit",
        summary: "The audit log, newest first (filters: actor, target, since, until)",
        tag: "audit",
        body: None,
        ok: (200, Some("AuditList")),
        auth: true,
        refusals: &[],
    },
];

/// The operations the document describes, as (method, path).
#[cfg(test)]
pub(crate) fn documented() -> impl Iterator<Item = (&'static str, &'static str)> {
    OPS.iter().map(|op| (op.method, op.path))
}

/// The schema of a path parameter: the names lodge gives out. Anything else is a 404.
fn path_schema(path: &str, name: &str) -> Value {
    match name {
        "id" => json!({"type": "integer"}),
        "username" => schema_ref("Username"),
        "domain" => schema_ref("Domain"),
        "name" if path.starts_with("/plans") => schema_ref("PlanName"),
        _ => schema_ref("TenantName"),
    }
}

fn query(name: &str, schema: Value, description: &str) -> Value {
    let mut param = json!({"name": name, "in": "query", "schema": schema});
    if !description.is_empty() {
        param["description"] = json!(description);
    }
    param
}

/// Whether the operation reads its query string (and so may refuse it with 400 or 422).
fn reads_query(op: &Op) -> bool {
    !query_parameters(op).is_empty()
}

fn query_parameters(op: &Op) -> Vec<Value> {
    let mut params = Vec::new();
    if op.ok.1 == Some("AccessLog") {
        params.push(query(
            "lines",
            json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 200}),
            "",
        ));
        params.push(query(
            "q",
            json!({"type": "string", "maxLength": 200, "pattern": patterns::log_search()}),
            "only lines containing this text, ASCII case ignored; empty: every line",
        ));
    }
    if op.method == "GET" && op.ok.1.is_some_and(|s| s.ends_with("List")) {
        params.push(query(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": 500, "default": 50}),
            "",
        ));
        let after = match op.path {
            "/audit" | "/tokens" => json!({"type": "integer", "format": "int64"}),
            _ => json!({"type": "string", "maxLength": 300}),
        };
        params.push(query(
            "after",
            after,
            "the `next` cursor of the previous page",
        ));
        let any = || json!({"type": "string"});
        match op.path {
            "/tenants" => {
                params.push(query(
                    "q",
                    json!({"type": "string", "pattern": patterns::tenant_search()}),
                    "part of a tenant's name or of one of its domains; blank: every tenant",
                ));
                params.push(query("owner", any(), "the owner's user name"));
            }
            "/users" => params.push(query(
                "role",
                json!({"enum": ["admin", "reseller", "tenant"]}),
                "",
            )),
            "/audit" => {
                let time = json!({"anyOf": [{"type": "integer", "format": "int64"}, {"type": "string", "format": "date-time"}]});
                params.push(query("actor", any(), "the actor's user name"));
                params.push(query(
                    "target",
                    any(),
                    "a target like `tenant:acme`, or a prefix ending in `:`",
                ));
                params.push(query(
                    "since",
                    time.clone(),
                    "Unix seconds or an RFC 3339 time",
                ));
                params.push(query("until", time, "Unix seconds or an RFC 3339 time"));
            }
            _ => {}
        }
    }
    params
}

fn parameters(op: &Op) -> Vec<Value> {
    let mut params: Vec<Value> = path_parameter_names(op.path)
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": path_schema(op.path, name)}))
        .collect();
    params.extend(query_parameters(op));
    params
}

fn problem_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/problem+json": {"schema": schema_ref("Problem")}}})
}

/// Each refusal the API answers with, and what it means.
fn refusal(status: u16, op: &Op) -> Value {
    let text = match status {
        400 => "the body is not JSON, or the query string is malformed",
        401 if op.auth => "no valid token",
        401 => "wrong user name, password or code",
        403 => "the role may not do this, or a limit is reached (`limit` names it)",
        404 => "no such object within your reach",
        409 => {
            "well-formed, but the current state refuses it: a name taken, a plan, owner or tenant \
             that does not exist, a value above the tenant's plan, an object still in use; \
             `errors` names each field"
        }
        413 => "the body is larger than the panel accepts",
        415 => "the body is not sent as application/json",
        422 => "the request does not match this document; `errors` names each field",
        429 => "too many failed sign-ins",
        _ => unreachable!("no refusal {status} is documented"),
    };
    let mut response = problem_response(text);
    let header = match status {
        401 => Some(("WWW-Authenticate", json!({"type": "string"}))),
        429 => Some((
            "Retry-After",
            json!({"type": "integer", "minimum": 1, "description": "seconds to wait"}),
        )),
        _ => None,
    };
    if let Some((name, schema)) = header {
        response["headers"] = json!({name: {"required": true, "schema": schema}});
    }
    response
}

/// Where a created object's answer leads (OpenAPI links, which a client or a fuzzer follows):
/// the creating operation, the paths of the operations on the object, the parameter the
/// answer fills and the field it takes it from.
const LINKS: &[(&str, &str, &str, &str)] = &[
    ("POST /plans", "/plans/{name}", "name", "name"),
    ("POST /users", "/users/{username}", "username", "username"),
    ("POST /tenants", "/tenants/{name}", "name", "name"),
    (
        "POST /tenants/{name}/vhosts",
        "/vhosts/{domain}",
        "domain",
        "domain",
    ),
    (
        "POST /tenants/{name}/vhosts",
        "/tenants/{name}/vhosts/{domain}",
        "domain",
        "domain",
    ),
];

fn operation_id(op: &Op) -> String {
    format!(
        "{}{}",
        op.method.to_lowercase(),
        op.path.replace(['/', '{', '}', '.'], "_")
    )
}

fn path_parameter_names(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

/// The links of `op`'s answer: every operation under a path it creates, each parameter filled
/// from the answer or from `op`'s own path.
fn links(op: &Op) -> Map<String, Value> {
    let name = format!("{} {}", op.method, op.path);
    let mut links = Map::new();
    for (_, under, param, field) in LINKS.iter().filter(|l| l.0 == name) {
        // Only the operations whose every parameter the answer or `op`'s path can fill.
        let fillable = |p: &str| p == *param || path_parameter_names(op.path).any(|q| q == p);
        let targets = OPS.iter().filter(|t| {
            (t.path == *under || t.path.starts_with(&format!("{under}/")))
                && path_parameter_names(t.path).all(fillable)
        });
        for target in targets {
            let parameters: Map<String, Value> = path_parameter_names(target.path)
                .map(|p| {
                    let source = if p == *param {
                        format!("$response.body#/{field}")
                    } else {
                        format!("$request.path.{p}")
                    };
                    (p.to_owned(), json!(source))
                })
                .collect();
            links.insert(
                operation_id(target),
                json!({"operationId": operation_id(target), "parameters": parameters}),
            );
        }
    }
    links
}

fn operation(op: &Op) -> Value {
    let mut responses = Map::new();
    let mut ok = match op.ok.1 {
        Some(schema) => {
            json!({"description": "success", "content": {"application/json": {"schema": schema_ref(schema)}}})
        }
        None => json!({"description": "success"}),
    };
    let links = links(op);
    if !links.is_empty() {
        ok["links"] = Value::Object(links);
    }
    responses.insert(op.ok.0.to_string(), ok);
    let mut refusals: Vec<u16> = op.refusals.to_vec();
    if op.auth || op.body.is_some() {
        refusals.push(401);
    }
    if op.path.contains('{') {
        refusals.push(404);
    }
    if op.body.is_some() {
        refusals.extend([400, 413, 415, 422]);
    }
    if reads_query(op) {
        refusals.extend([400, 422]);
    }
    refusals.sort_unstable();
    refusals.dedup();
    for status in refusals {
        responses.insert(status.to_string(), refusal(status, op));
    }
    let mut value = json!({
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": operation_id(op),
        "parameters": parameters(op),
        "responses": responses,
    });
    if let Some(body) = op.body {
        value["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema_ref(body)}}});
    }
    if !op.auth {
        value["security"] = json!([]);
    }
    value
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPS {
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[op.method.to_lowercase()] = operation(op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "lodge",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The control plane of lodge: accounts, plans, tenants, vhosts and the audit log. \
                            Errors are RFC 9457 problem documents. A request this document allows is never \
                            refused as malformed (422); it succeeds, or the current state refuses it (409). \
                            Optional fields take null for \"not given\"; unknown query parameters are ignored.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas::all(),
        },
    })
}

pub async fn serve() -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every route the router registers is documented, and every documented route exists.
    #[test]
    fn document_matches_router() {
        let served: BTreeSet<_> = super::super::routes().table.into_iter().collect();
        let documented: BTreeSet<_> = documented().collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let phantom: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from openapi.json: {undocumented:?}"
        );
        assert!(
            phantom.is_empty(),
            "openapi.json documents routes that do not exist: {phantom:?}"
        );
    }
}
