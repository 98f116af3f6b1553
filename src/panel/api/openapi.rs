//! The OpenAPI 3.1 document of the API. Written by hand, route by route; a test checks it
//! against the routes the router really registers, both ways.

use axum::Json;
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
    },
    Op {
        method: "GET",
        path: "/me",
        summary: "The account behind the token",
        tag: "accounts",
        body: None,
        ok: (200, Some("User")),
        auth: true,
    },
    Op {
        method: "GET",
        path: "/tokens",
        summary: "List your API tokens",
        tag: "accounts",
        body: None,
        ok: (200, Some("TokenList")),
        auth: true,
    },
    Op {
        method: "POST",
        path: "/tokens",
        summary: "Sign in and create an API token (shown once)",
        tag: "accounts",
        body: Some("TokenRequest"),
        ok: (201, Some("NewToken")),
        auth: false,
    },
    Op {
        method: "DELETE",
        path: "/tokens/{id}",
        summary: "Revoke one of your tokens",
        tag: "accounts",
        body: None,
        ok: (204, None),
        auth: true,
    },
    Op {
        method: "GET",
        path: "/users",
        summary: "List accounts (admins: all; others: themselves)",
        tag: "accounts",
        body: None,
        ok: (200, Some("UserList")),
        auth: true,
    },
    Op {
        method: "POST",
        path: "/users",
        summary: "Create an account (admins only)",
        tag: "accounts",
        body: Some("NewUser"),
        ok: (201, Some("User")),
        auth: true,
    },
    Op {
        method: "GET",
        path: "/users/{username}",
        summary: "One account",
        tag: "accounts",
        body: None,
        ok: (200, Some("User")),
        auth: true,
    },
    Op {
        method: "PATCH",
        path: "/users/{username}",
        summary: "Change a password or a reseller's limits",
        tag: "accounts",
        body: Some("UserPatch"),
        ok: (200, Some("User")),
        auth: true,
    },
    Op {
        method: "DELETE",
        path: "/users/{username}",
        summary: "Delete an account (admins only)",
        tag: "accounts",
        body: None,
        ok: (204, None),
        auth: true,
    },
    Op {
        method: "GET",
        path: "/plans",
        summary: "List plans",
        tag: "plans",
        body: None,
        ok: (200, Some("PlanList")),
        auth: true,
    },
    Op {
        method: "POST",
        path: "/plans",
        summary: "Create a plan; only a name is needed",
        tag: "plans",
        body: Some("PlanInput"),
        ok: (201, Some("Plan")),
        auth: true,
    },
    Op {
        method: "GET",
        path: "/plans/{name}",
        summary: "One plan",
        tag: "plans",
        body: None,
        ok: (200, Some("Plan")),
        auth: true,
    },
    Op {
        method: "PATCH",
        path: "/plans/{name}",
        summary: "Change a plan",
        tag: "plans",
        body: Some("PlanInput"),
        ok: (200, Some("Plan")),
        auth: true,
    },
    Op {
        method: "DELETE",
        path: "/plans/{name}",
        summary: "Delete an unused plan",
        tag: "plans",
        body: None,
        ok: (204, None),
        auth: true,
    },
    Op {
        method: "GET",
        path: "/tenants",
        summary: "List tenants (`q` searches names and domains, `owner` filters)",
        tag: "tenants",
        body: None,
        ok: (200, Some("TenantList")),
        auth: true,
    },
    Op {
        method: "POST",
        path: "/tenants",
        summary: "Create a tenant",
        tag: "tenants",
        body: Some("NewTenant"),
        ok: (201, Some("Tenant")),
        auth: true,
    },
    Op {
        method: "GET",
        path: "/tenants/{name}",
        summary: "One tenant, with its applied state",
        tag: "tenants",
        body: None,
        ok: (200, Some("Tenant")),
        auth: true,
    },
    Op {
        method: "PATCH",
        path: "/tenants/{name}",
        summary: "Change a tenant's plan, owner, PHP settings or login password",
        tag: "tenants",
        body: Some("TenantPatch"),
        ok: (200, Some("Tenant")),
        auth: true,
    },
    Op {
        method: "DELETE",
        path: "/tenants/{name}",
        summary: "Delete a tenant (its UID stays reserved)",
        tag: "tenants",
        body: None,
        ok: (204, None),
        auth: true,
    },
    Op {
        method: "GET",
        path: "/tenants/{name}/health",
        summary: "The tenant's PHP-FPM pool: last check and the last hour's samples",
        tag: "tenants",
        body: None,
        ok: (200, Some("TenantHealth")),
        auth: true,
    },
    Op {
        method: "POST",
        path: "/tenants/{name}/suspend",
        summary: "Suspend a tenant",
        tag: "tenants",
        body: None,
        ok: (200, Some("Tenant")),
        auth: true,
    },
    Op {
        method: "POST",
        path: "/tenants/{name}/unsuspend",
        summary: "Reactivate a suspended tenant",
        tag: "tenants",
        body: None,
        ok: (200, Some("Tenant")),
        auth: true,
    },
    Op {
        method: "GET",
        path: "/tenants/{name}/vhosts",
        summary: "List a tenant's vhosts",
        tag: "vhosts",
        body: None,
        ok: (200, Some("VhostList")),
        auth: true,
    },
    Op {
        method: "POST",
        path: "/tenants/{name}/vhosts",
        summary: "Create a vhost",
        tag: "vhosts",
        body: Some("VhostInput"),
        ok: (201, Some("Vhost")),
        auth: true,
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
    },
    Op {
        method: "GET",
        path: "/vhosts/{domain}",
        summary: "One vhost",
        tag: "vhosts",
        body: None,
        ok: (200, Some("Vhost")),
        auth: true,
    },
    Op {
        method: "PATCH",
        path: "/vhosts/{domain}",
        summary: "Change a vhost",
        tag: "vhosts",
        body: Some("VhostInput"),
        ok: (200, Some("Vhost")),
        auth: true,
    },
    Op {
        method: "DELETE",
        path: "/vhosts/{domain}",
        summary: "Delete a vhost",
        tag: "vhosts",
        body: None,
        ok: (204, None),
        auth: true,
    },
    Op {
        method: "GET",
        path: "/audit",
        summary: "The audit log, newest first (filters: actor, target, since, until)",
        tag: "audit",
        body: None,
        ok: (200, Some("AuditList")),
        auth: true,
    },
];

/// The operations the document describes, as (method, path).
#[cfg(test)]
pub(crate) fn documented() -> impl Iterator<Item = (&'static str, &'static str)> {
    OPS.iter().map(|op| (op.method, op.path))
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn problem_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/problem+json": {"schema": schema_ref("Problem")}}})
}

fn parameters(op: &Op) -> Vec<Value> {
    let mut params: Vec<Value> = op
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if op.ok.1 == Some("AccessLog") {
        params.push(json!({"name": "lines", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 200}}));
        params.push(json!({"name": "q", "in": "query", "description": "only lines containing this text (no control characters)", "schema": {"type": "string", "maxLength": 200}}));
    }
    if op.method == "GET" && op.ok.1.is_some_and(|s| s.ends_with("List")) {
        params.push(json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}));
        params.push(json!({"name": "after", "in": "query", "description": "the `next` cursor of the previous page", "schema": {"type": "string"}}));
        let extra: &[&str] = match op.path {
            "/tenants" => &["q", "owner"],
            "/users" => &["role"],
            "/audit" => &["actor", "target", "since", "until"],
            _ => &[],
        };
        for name in extra {
            params.push(json!({"name": name, "in": "query", "schema": {"type": "string"}}));
        }
    }
    params
}

fn operation(op: &Op) -> Value {
    let mut responses = Map::new();
    let ok = match op.ok.1 {
        Some(schema) => {
            json!({"description": "success", "content": {"application/json": {"schema": schema_ref(schema)}}})
        }
        None => json!({"description": "success"}),
    };
    responses.insert(op.ok.0.to_string(), ok);
    if op.auth || op.body.is_some() {
        responses.insert(
            "401".into(),
            problem_response("no valid token (or wrong credentials)"),
        );
    }
    if op.auth {
        responses.insert(
            "403".into(),
            problem_response("the role may not do this, or a limit is reached (`limit` names it)"),
        );
        responses.insert(
            "404".into(),
            problem_response("no such object within your reach"),
        );
    }
    if op.body.is_some() {
        responses.insert("400".into(), problem_response("the body is not JSON"));
        responses.insert(
            "409".into(),
            problem_response("the name or domain is taken"),
        );
        responses.insert(
            "422".into(),
            problem_response("a field is invalid; `errors` names each"),
        );
    }
    if op.ok.1 == Some("AccessLog") {
        responses.insert(
            "422".into(),
            problem_response("`lines` or `q` is invalid; `errors` names it"),
        );
    }
    if op.path == "/tokens" && op.method == "POST" {
        responses.insert(
            "429".into(),
            problem_response("too many failed sign-ins; see Retry-After"),
        );
    }
    let mut value = json!({
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": format!("{}{}", op.method.to_lowercase(), op.path.replace(['/', '{', '}', '.'], "_")),
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

fn list_of(item: &str) -> Value {
    json!({"type": "object", "required": ["items", "next"], "properties": {
        "items": {"type": "array", "items": schema_ref(item)},
        "next": {"type": ["string", "null"], "description": "cursor for `after`, null on the last page"}}})
}

fn schemas() -> Value {
    let s = |t: &str| json!({"type": t});
    let opt = |t: &str| json!({"type": [t, "null"]});
    json!({
        "Problem": {"type": "object", "description": "RFC 9457 problem details", "properties": {
            "type": s("string"), "title": s("string"), "status": s("integer"), "detail": s("string"),
            "limit": s("string"),
            "errors": {"type": "array", "items": {"type": "object", "properties": {"field": s("string"), "message": s("string")}}}}},
        "TokenRequest": {"type": "object", "required": ["username", "password"], "additionalProperties": false, "properties": {
            "username": s("string"), "password": s("string"), "totp": s("string"), "name": s("string")}},
        "NewToken": {"type": "object", "properties": {"token": s("string"), "id": s("integer"), "name": s("string"), "username": s("string")}},
        "Token": {"type": "object", "properties": {"id": s("integer"), "name": s("string"), "prefix": s("string"),
            "created_at": s("string"), "last_used_at": opt("string")}},
        "TokenList": list_of("Token"),
        "Limits": {"type": "object", "additionalProperties": false, "properties": {
            "max_tenants": opt("integer"), "max_vhosts": opt("integer"), "max_php_workers": opt("integer")}},
        "NewUser": {"type": "object", "required": ["username", "password", "role"], "additionalProperties": false, "properties": {
            "username": s("string"), "password": s("string"), "role": {"enum": ["admin", "reseller", "tenant"]}, "limits": schema_ref("Limits")}},
        "UserPatch": {"type": "object", "additionalProperties": false, "properties": {
            "password": s("string"), "current_password": s("string"), "limits": schema_ref("Limits")}},
        "User": {"type": "object", "properties": {"username": s("string"), "role": s("string"), "totp": s("boolean"),
            "limits": schema_ref("Limits"), "tenant": s("string"), "created_at": s("string"), "updated_at": s("string")}},
        "UserList": list_of("User"),
        "PlanPhp": {"type": "object", "additionalProperties": false, "properties": {
            "pm": {"enum": ["ondemand", "dynamic", "static"]}, "max_children": s("integer"), "max_requests": s("integer"),
            "memory_limit_mb": s("integer"), "upload_max_mb": s("integer"), "max_execution_time": s("integer"),
            "disable_functions": {"type": "array", "items": s("string")}}},
        "PlanInput": {"type": "object", "additionalProperties": false, "properties": {
            "name": s("string"), "max_vhosts": s("integer"), "php": schema_ref("PlanPhp"), "disk_mb": s("integer"),
            "memory_mb": s("integer"), "cpu_percent": s("integer"), "max_processes": s("integer")}},
        "Plan": {"type": "object", "properties": {
            "name": s("string"), "max_vhosts": s("integer"), "php": schema_ref("PlanPhp"), "disk_mb": s("integer"),
            "memory_mb": s("integer"), "cpu_percent": s("integer"), "max_processes": s("integer"),
            "created_at": s("string"), "updated_at": s("string")}},
        "PlanList": list_of("Plan"),
        "PhpSettings": {"type": "object", "description": "whitelisted PHP settings, bounded by the plan", "additionalProperties": false, "properties": {
            "memory_limit": s("string"), "upload_max_filesize": s("string"), "post_max_size": s("string"),
            "max_execution_time": s("integer"), "max_input_time": s("integer"), "max_input_vars": s("integer"),
            "session.gc_maxlifetime": s("integer"), "display_errors": s("boolean"), "short_open_tag": s("boolean"),
            "allow_url_fopen": s("boolean"), "date.timezone": s("string")}},
        "NewTenant": {"type": "object", "required": ["name", "plan"], "additionalProperties": false, "properties": {
            "name": {"type": "string", "pattern": "^[a-z][a-z0-9]{1,30}$"}, "plan": s("string"),
            "password": s("string"), "owner": s("string"), "php": schema_ref("PhpSettings")}},
        "TenantPatch": {"type": "object", "additionalProperties": false, "properties": {
            "plan": s("string"), "owner": s("string"), "php": schema_ref("PhpSettings"), "password": s("string")}},
        "Applied": {"type": "object", "properties": {"generation": s("integer"),
            "state": {"enum": ["ok", "pending", "error"]}, "error": opt("string")}},
        "Tenant": {"type": "object", "properties": {
            "name": s("string"), "owner": s("string"), "plan": s("string"), "state": {"enum": ["active", "suspended"]},
            "uid": s("integer"), "gid": s("integer"), "php": schema_ref("PhpSettings"), "vhost_count": s("integer"),
            "login": s("boolean"), "generation": s("integer"), "applied": schema_ref("Applied"), "fpm_socket": s("string"),
            "created_at": s("string"), "updated_at": s("string")}},
        "TenantList": list_of("Tenant"),
        "Health": {"type": "object", "properties": {
            "checked_at": s("string"), "ok": s("boolean"), "error": opt("string"), "ping_ms": opt("number"),
            "active_processes": opt("integer"), "idle_processes": opt("integer"), "total_processes": opt("integer"),
            "listen_queue": opt("integer"), "max_children_reached": opt("integer"), "slow_requests": opt("integer"),
            "accepted_conn": opt("integer"), "restarts": s("integer"),
            "usage": {"type": "object", "properties": {"memory_bytes": opt("integer"), "processes": opt("integer"), "cpu_usec": opt("integer")}}}},
        "TenantHealth": {"type": "object", "properties": {
            "tenant": s("string"), "health": {"oneOf": [schema_ref("Health"), {"type": "null"}]},
            "samples": {"type": "array", "items": {"type": "object", "properties": {
                "at": s("string"), "active_processes": opt("integer"), "total_processes": opt("integer"),
                "listen_queue": opt("integer"), "memory_bytes": opt("integer")}}}}},
        "VhostInput": {"type": "object", "additionalProperties": false, "properties": {
            "domain": s("string"), "aliases": {"type": "array", "items": s("string")}, "docroot": s("string"),
            "php": s("boolean"), "front_controller": s("string"),
            "tls_mode": {"enum": ["none", "self-signed", "custom"]}, "tls_certificate": s("string"), "tls_key": s("string"),
            "redirect_www": {"enum": ["none", "to-www", "to-apex"]}, "redirect_https": s("boolean")}},
        "Vhost": {"type": "object", "properties": {
            "domain": s("string"), "tenant": s("string"), "aliases": {"type": "array", "items": s("string")},
            "docroot": s("string"), "php": s("boolean"), "front_controller": opt("string"), "tls_mode": s("string"),
            "tls_certificate": opt("string"), "tls_has_key": s("boolean"), "redirect_www": s("string"),
            "redirect_https": s("boolean"), "state": {"enum": ["active", "suspended"]},
            "created_at": s("string"), "updated_at": s("string")}},
        "VhostList": list_of("Vhost"),
        "AccessLog": {"type": "object", "properties": {"tenant": s("string"), "vhost": s("string"),
            "lines": {"type": "array", "items": s("string")},
            "complete": {"type": "boolean", "description": "the file was read to its start: no older line was left out"}}},
        "AuditEntry": {"type": "object", "properties": {"id": s("integer"), "at": s("string"), "actor": s("string"),
            "action": s("string"), "target": s("string"), "before": {}, "after": {}, "source": s("string")}},
        "AuditList": list_of("AuditEntry"),
    })
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
                            Errors are RFC 9457 problem documents.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
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
