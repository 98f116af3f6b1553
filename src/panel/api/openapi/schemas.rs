//! The document's schemas: what each request body must be, field by field, and what each
//! answer holds.
//!
//! A request the schemas allow is never refused as malformed (422): it succeeds, or the
//! current state refuses it (409: a plan that does not exist, a value above the tenant's plan,
//! a name taken). Optional fields take `null` for "not given", as the API reads them.

use super::patterns as p;
use crate::domain::plan::{self, Bound};
use serde_json::{json, Value};

pub fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// `schema`, or `null` for "not given".
fn or_null(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

fn string() -> Value {
    json!({"type": "string"})
}

fn integer(min: i64, max: i64) -> Value {
    json!({"type": "integer", "minimum": min, "maximum": max})
}

fn opt_integer(min: i64, max: i64) -> Value {
    or_null(integer(min, max))
}

fn output(t: &str) -> Value {
    json!({"type": t})
}

fn output_or_null(t: &str) -> Value {
    json!({"type": [t, "null"]})
}

/// A PHP size in megabytes from `min` to `max`: a number, or text like `256M`, `256` or `1G`
/// of at most six digits.
fn php_megabytes(min: u64, max: u64) -> Value {
    let gigabytes = (min.div_ceil(1024).max(1), max / 1024);
    let mut forms = vec![
        integer(min as i64, max as i64),
        json!({"type": "string", "maxLength": 6, "pattern": p::number_between(min, max, "")}),
        json!({"type": "string", "maxLength": 7, "pattern": p::number_between(min, max, "[Mm]")}),
    ];
    if gigabytes.0 <= gigabytes.1 {
        forms.push(json!({"type": "string", "maxLength": 7,
            "pattern": p::number_between(gigabytes.0, gigabytes.1, "[Gg]")}));
    }
    forms.push(json!({"type": "null"}));
    json!({"anyOf": forms, "description": format!("megabytes, {min} to {max}; above the tenant's plan is a 409")})
}

/// A whole number from `min` to `max`: a number, or its digits as text (at most ten).
fn php_count(min: u64, max: u64, description: &str) -> Value {
    json!({"anyOf": [
        integer(min as i64, max as i64),
        {"type": "string", "maxLength": 10, "pattern": p::number_between(min, max, "")},
        {"type": "null"},
    ], "description": description})
}

fn php_flag() -> Value {
    json!({"anyOf": [
        {"type": "boolean"},
        {"enum": ["on", "On", "true", "1", "off", "Off", "false", "0"]},
        {"type": "null"},
    ]})
}

/// Collections: a page of items and the cursor to the next.
fn list_of(item: &str) -> Value {
    json!({"type": "object", "required": ["items", "next"], "properties": {
        "items": {"type": "array", "items": schema_ref(item)},
        "next": {"type": ["string", "null"], "description": "cursor for `after`, null on the last page"}}})
}

/// Names, passwords, domains, paths and PEM text, each as its parser in `crate::domain` takes it.
fn names() -> Value {
    let reserved = p::reserved_tenant_names();
    json!({
        "TenantName": {"type": "string", "pattern": p::TENANT_NAME, "not": {"enum": reserved},
            "description": "a letter, then lowercase letters and digits; not a word reserved for the system"},
        "Username": {"type": "string", "pattern": p::USERNAME},
        "PlanName": {"type": "string", "pattern": p::PLAN_NAME},
        "Password": {"type": "string", "minLength": 10, "maxLength": 256, "pattern": p::password(),
            "description": "10 to 256 characters, no control characters"},
        "Domain": {"type": "string", "maxLength": 253, "pattern": p::domain(),
            "not": {"pattern": p::DOMAIN_NUMERIC_TLD},
            "description": "a host name (case is ignored); a name in Unicode is also taken and stored in \
                            punycode, and an `xn--` label must be valid punycode"},
        "DocRoot": {"type": "string", "maxLength": 255, "pattern": p::docroot(),
            "not": {"pattern": p::reserved_docroot()},
            "description": "a directory under the tenant's home, at most 8 deep; not one of lodge's own \
                            (logs, tmp, sessions, conf, php, run, backups)"},
        "FrontController": {"type": "string", "maxLength": 256, "pattern": p::front_controller(),
            "description": "the .php file that answers URLs no file matches, like /index.php; empty removes it"},
        "CertificateChain": {"type": "string", "maxLength": 65536, "pattern": p::certificate_chain(),
            "description": "PEM CERTIFICATE blocks; empty keeps the stored one"},
        "PrivateKey": {"type": "string", "maxLength": 65536, "pattern": p::private_key(),
            "description": "one PEM private key block; empty keeps the stored one"},
    })
}

fn accounts() -> Value {
    let user = |role: &str, username: &str, limits: Value| {
        json!({"type": "object", "required": ["username", "password", "role"], "additionalProperties": false,
            "properties": {"username": schema_ref(username), "password": schema_ref("Password"),
                "role": {"const": role}, "limits": limits}})
    };
    json!({
        "TokenRequest": {"type": "object", "required": ["username", "password"], "additionalProperties": false, "properties": {
            "username": string(), "password": string(), "totp": or_null(string()),
            "name": or_null(json!({"type": "string", "pattern": p::token_name(),
                "description": "a label, at most 64 bytes once trimmed; `api` when not given"}))}},
        "NewToken": {"type": "object", "properties": {"token": output("string"), "id": output("integer"),
            "name": output("string"), "username": output("string")}},
        "Token": {"type": "object", "properties": {"id": output("integer"), "name": output("string"),
            "prefix": output("string"), "created_at": output("string"), "last_used_at": output_or_null("string")}},
        "TokenList": list_of("Token"),
        "Limits": {"type": "object", "additionalProperties": false, "description": "null: no limit", "properties": {
            "max_tenants": opt_integer(0, 1_000_000), "max_vhosts": opt_integer(0, 1_000_000),
            "max_php_workers": opt_integer(0, 1_000_000)}},
        "NewUser": {"description": "limits are for resellers; a tenant login is named after its tenant (409 if \
                                    there is no such tenant or it has a login)",
            "oneOf": [
                user("admin", "Username", json!({"type": "null"})),
                user("reseller", "Username", or_null(schema_ref("Limits"))),
                user("tenant", "TenantName", json!({"type": "null"})),
            ]},
        "UserPatch": {"type": "object", "additionalProperties": false,
            "description": "your own new password needs `current_password` (409 if it is wrong); limits are \
                            for resellers (409 for another account)",
            "properties": {"password": or_null(schema_ref("Password")), "current_password": or_null(string()),
                "limits": or_null(schema_ref("Limits"))}},
        "User": {"type": "object", "properties": {"username": output("string"), "role": output("string"),
            "totp": output("boolean"), "limits": schema_ref("Limits"), "tenant": output("string"),
            "created_at": output("string"), "updated_at": output("string")}},
        "UserList": list_of("User"),
    })
}

/// A plan's number, in the range `crate::domain::plan` checks it against.
fn plan_number(bound: Bound) -> Value {
    opt_integer(bound.min, bound.max)
}

fn plans() -> Value {
    let plan_php = json!({"type": "object", "additionalProperties": false, "properties": {
        "pm": or_null(json!({"enum": ["ondemand", "dynamic", "static"]})),
        "max_children": plan_number(plan::PHP_MAX_CHILDREN),
        "max_requests": plan_number(plan::PHP_MAX_REQUESTS),
        "memory_limit_mb": plan_number(plan::PHP_MEMORY_LIMIT_MB),
        "upload_max_mb": plan_number(plan::PHP_UPLOAD_MAX_MB),
        "max_execution_time": plan_number(plan::PHP_MAX_EXECUTION_TIME),
        "disable_functions": or_null(json!({"type": "array", "maxItems": plan::MAX_DISABLED_FUNCTIONS,
            "items": {"type": "string", "pattern": p::PHP_FUNCTION}}))}});
    let fields = |name: Value| {
        json!({"name": name, "max_vhosts": plan_number(plan::MAX_VHOSTS), "php": or_null(schema_ref("PlanPhp")),
            "disk_mb": plan_number(plan::DISK_MB), "memory_mb": plan_number(plan::MEMORY_MB),
            "cpu_percent": plan_number(plan::CPU_PERCENT), "max_processes": plan_number(plan::MAX_PROCESSES)})
    };
    let plan_php_out = json!({"type": "object", "properties": {
        "pm": output("string"), "max_children": output("integer"), "max_requests": output("integer"),
        "memory_limit_mb": output("integer"), "upload_max_mb": output("integer"),
        "max_execution_time": output("integer"), "disable_functions": {"type": "array", "items": output("string")}}});
    json!({
        "PlanPhp": plan_php,
        "NewPlan": {"type": "object", "required": ["name"], "additionalProperties": false,
            "description": "a field not given takes its default", "properties": fields(schema_ref("PlanName"))},
        "PlanPatch": {"type": "object", "additionalProperties": false,
            "description": "a field not given keeps its value; `name` cannot change (409); lowering a limit \
                            below a tenant's own setting is a 409",
            "properties": fields(or_null(schema_ref("PlanName")))},
        "Plan": {"type": "object", "properties": {
            "name": output("string"), "max_vhosts": output("integer"), "php": plan_php_out,
            "disk_mb": output("integer"), "memory_mb": output("integer"), "cpu_percent": output("integer"),
            "max_processes": output("integer"), "created_at": output("string"), "updated_at": output("string")}},
        "PlanList": list_of("Plan"),
    })
}

fn tenants() -> Value {
    // A tenant's own setting is capped by its plan (a 409 above it), so by the largest a
    // plan may set.
    let largest = |bound: Bound| bound.max as u64;
    let seconds = format!(
        "seconds, 1 to {}; above the tenant's plan is a 409",
        plan::PHP_MAX_EXECUTION_TIME.max
    );
    json!({
        "PhpSettings": {"type": "object", "additionalProperties": false,
            "description": "whitelisted PHP settings; null removes one", "properties": {
            "memory_limit": php_megabytes(16, largest(plan::PHP_MEMORY_LIMIT_MB)),
            "upload_max_filesize": php_megabytes(1, largest(plan::PHP_UPLOAD_MAX_MB)),
            "post_max_size": php_megabytes(1, largest(plan::PHP_UPLOAD_MAX_MB)),
            "max_execution_time": php_count(1, largest(plan::PHP_MAX_EXECUTION_TIME), &seconds),
            "max_input_time": php_count(1, largest(plan::PHP_MAX_EXECUTION_TIME), &seconds),
            "max_input_vars": php_count(100, 100_000, "form fields per request"),
            "session.gc_maxlifetime": php_count(60, 2_592_000, "seconds a session lives"),
            "display_errors": php_flag(), "short_open_tag": php_flag(), "allow_url_fopen": php_flag(),
            "date.timezone": or_null(json!({"type": "string", "maxLength": 64, "pattern": p::TIMEZONE,
                "description": "a time zone name, like Europe/Berlin; one this machine does not know is a 409"}))}},
        "NewTenant": {"type": "object", "required": ["name", "plan"], "additionalProperties": false,
            "description": "a plan or owner that does not exist, or a name this machine already uses for an \
                            account, is a 409",
            "properties": {
            "name": schema_ref("TenantName"), "plan": schema_ref("PlanName"),
            "password": or_null(schema_ref("Password")), "owner": or_null(schema_ref("Username")),
            "php": or_null(schema_ref("PhpSettings"))}},
        "TenantPatch": {"type": "object", "additionalProperties": false, "properties": {
            "plan": or_null(schema_ref("PlanName")), "owner": or_null(schema_ref("Username")),
            "php": or_null(schema_ref("PhpSettings")), "password": or_null(schema_ref("Password"))}},
        "Applied": {"type": "object", "properties": {"generation": output("integer"),
            "state": {"enum": ["ok", "pending", "error"]}, "error": output_or_null("string")}},
        "Tenant": {"type": "object", "properties": {
            "name": output("string"), "owner": output("string"), "plan": output("string"),
            "state": {"enum": ["active", "suspended"]}, "uid": output("integer"), "gid": output("integer"),
            "php": schema_ref("PhpSettings"), "vhost_count": output("integer"), "login": output("boolean"),
            "generation": output("integer"), "applied": schema_ref("Applied"), "fpm_socket": output("string"),
            "created_at": output("string"), "updated_at": output("string")}},
        "TenantList": list_of("Tenant"),
        "Health": {"type": "object", "properties": {
            "checked_at": output("string"), "ok": output("boolean"), "error": output_or_null("string"),
            "ping_ms": output_or_null("number"), "active_processes": output_or_null("integer"),
            "idle_processes": output_or_null("integer"), "total_processes": output_or_null("integer"),
            "listen_queue": output_or_null("integer"), "max_children_reached": output_or_null("integer"),
            "slow_requests": output_or_null("integer"), "accepted_conn": output_or_null("integer"),
            "restarts": output("integer"),
            "usage": {"type": "object", "properties": {"memory_bytes": output_or_null("integer"),
                "processes": output_or_null("integer"), "cpu_usec": output_or_null("integer")}}}},
        "TenantHealth": {"type": "object", "properties": {
            "tenant": output("string"), "health": {"oneOf": [schema_ref("Health"), {"type": "null"}]},
            "samples": {"type": "array", "items": {"type": "object", "properties": {
                "at": output("string"), "active_processes": output_or_null("integer"),
                "total_processes": output_or_null("integer"), "listen_queue": output_or_null("integer"),
                "memory_bytes": output_or_null("integer")}}}}},
    })
}

fn vhosts() -> Value {
    let fields = |domain: Value| {
        json!({
            "domain": domain,
            "aliases": or_null(json!({"type": "array", "maxItems": 32, "uniqueItems": true,
                "items": schema_ref("Domain"),
                "description": "more names of the site; one listed twice, or already served, is a 409"})),
            "docroot": or_null(schema_ref("DocRoot")), "php": or_null(json!({"type": "boolean"})),
            "front_controller": or_null(schema_ref("FrontController")),
            "tls_mode": or_null(json!({"enum": ["none", "self-signed", "custom"]})),
            "tls_certificate": or_null(schema_ref("CertificateChain")),
            "tls_key": or_null(schema_ref("PrivateKey")),
            "redirect_www": or_null(json!({"enum": ["none", "to-www", "to-apex"]})),
            "redirect_https": or_null(json!({"type": "boolean"})),
        })
    };
    let custom_tls = json!({
        "if": {"required": ["tls_mode"], "properties": {"tls_mode": {"const": "custom"}}},
        "then": {"required": ["tls_certificate", "tls_key"], "properties": {
            "tls_certificate": {"type": "string", "minLength": 1}, "tls_key": {"type": "string", "minLength": 1}}},
    });
    let https_needs_tls = json!({
        "if": {"required": ["redirect_https"], "properties": {"redirect_https": {"const": true}}},
        "then": {"required": ["tls_mode"], "properties": {"tls_mode": {"enum": ["self-signed", "custom"]}}},
    });
    json!({
        "NewVhost": {"type": "object", "required": ["domain"], "additionalProperties": false,
            "description": "custom TLS needs a certificate and a key; an HTTPS redirect needs TLS",
            "allOf": [custom_tls, https_needs_tls], "properties": fields(schema_ref("Domain"))},
        "VhostPatch": {"type": "object", "additionalProperties": false,
            "description": "a field not given keeps its value; `domain` cannot change, and a change that \
                            leaves custom TLS without a certificate and key or an HTTPS redirect without TLS \
                            is a 409",
            "properties": fields(or_null(schema_ref("Domain")))},
        "Vhost": {"type": "object", "properties": {
            "domain": output("string"), "tenant": output("string"),
            "aliases": {"type": "array", "items": output("string")}, "docroot": output("string"),
            "php": output("boolean"), "front_controller": output_or_null("string"), "tls_mode": output("string"),
            "tls_certificate": output_or_null("string"), "tls_has_key": output("boolean"),
            "redirect_www": output("string"), "redirect_https": output("boolean"),
            "state": {"enum": ["active", "suspended"]}, "created_at": output("string"), "updated_at": output("string")}},
        "VhostList": list_of("Vhost"),
        "AccessLog": {"type": "object", "properties": {"tenant": output("string"), "vhost": output("string"),
            "lines": {"type": "array", "items": output("string")},
            "complete": {"type": "boolean", "description": "the file was read to its start: no older line was left out"}}},
    })
}

pub fn all() -> Value {
    let mut schemas = json!({
        "Problem": {"type": "object", "description": "RFC 9457 problem details", "properties": {
            "type": output("string"), "title": output("string"), "status": output("integer"),
            "detail": output("string"), "limit": output("string"),
            "errors": {"type": "array", "items": {"type": "object", "properties": {
                "field": output("string"), "message": output("string")}}}}},
        "AuditEntry": {"type": "object", "properties": {"id": output("integer"), "at": output("string"),
            "actor": output("string"), "action": output("string"), "target": output("string"),
            "before": {}, "after": {}, "source": output("string")}},
        "AuditList": list_of("AuditEntry"),
    });
    for part in [names(), accounts(), plans(), tenants(), vhosts()] {
        if let (Some(into), Value::Object(part)) = (schemas.as_object_mut(), part) {
            into.extend(part);
        }
    }
    schemas
}
