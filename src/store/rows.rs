//! Rows as read from the store, and the JSON shape the API gives them. Secrets (password
//! hashes, TOTP secrets, private keys, token hashes) never leave through these views.

use super::rfc3339;
use crate::domain::plan::{self, PlanChanges, PlanLimits, PlanPhpChanges};
use crate::domain::{AppliedState, FieldError, PhpBounds, RedirectWww, Role, TenantState, TlsMode};
use serde_json::{json, Value};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub password_hash: String,
    pub totp_secret: Option<String>,
    pub max_tenants: Option<i64>,
    pub max_vhosts: Option<i64>,
    pub max_php_workers: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// For a tenant login: its tenant.
    pub tenant_id: Option<i64>,
    pub tenant: Option<String>,
}

impl UserRow {
    pub const SELECT: &'static str =
        "SELECT u.id, u.username, u.role, u.password_hash, u.totp_secret,
            u.max_tenants, u.max_vhosts, u.max_php_workers, u.created_at, u.updated_at,
            tl.tenant_id, t.name AS tenant
        FROM users u
        LEFT JOIN tenant_logins tl ON tl.user_id = u.id
        LEFT JOIN tenants t ON t.id = tl.tenant_id";

    pub fn json(&self) -> Value {
        let mut v = json!({
            "username": self.username,
            "role": self.role,
            "totp": self.totp_secret.is_some(),
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        });
        if self.role == Role::Reseller {
            v["limits"] = json!({
                "max_tenants": self.max_tenants,
                "max_vhosts": self.max_vhosts,
                "max_php_workers": self.max_php_workers,
            });
        }
        if let Some(t) = &self.tenant {
            v["tenant"] = json!(t);
        }
        v
    }
}

/// A plan's limits as stored (what `PlanLimits` checks again before anything acts on them).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlanColumns {
    pub max_vhosts: i64,
    pub php_pm: String,
    pub php_max_children: i64,
    pub php_max_requests: i64,
    pub php_memory_limit_mb: i64,
    pub php_upload_max_mb: i64,
    pub php_max_execution_time: i64,
    pub php_disable_functions: String,
    pub disk_mb: i64,
    pub memory_mb: i64,
    pub cpu_percent: i64,
    pub max_processes: i64,
}

impl PlanColumns {
    /// The columns, for a query that joins plans (`p`).
    pub const SELECT: &'static str = "p.max_vhosts, p.php_pm, p.php_max_children, p.php_max_requests,
            p.php_memory_limit_mb, p.php_upload_max_mb, p.php_max_execution_time, p.php_disable_functions,
            p.disk_mb, p.memory_mb, p.cpu_percent, p.max_processes";

    /// The stored values as the changes [`PlanLimits::from_stored`] checks.
    pub fn stored(&self) -> PlanChanges {
        PlanChanges {
            name: None,
            max_vhosts: Some(self.max_vhosts),
            php: Some(PlanPhpChanges {
                pm: Some(self.php_pm.clone()),
                max_children: Some(self.php_max_children),
                max_requests: Some(self.php_max_requests),
                memory_limit_mb: Some(self.php_memory_limit_mb),
                upload_max_mb: Some(self.php_upload_max_mb),
                max_execution_time: Some(self.php_max_execution_time),
                disable_functions: Some(plan::split_function_list(&self.php_disable_functions)),
            }),
            disk_mb: Some(self.disk_mb),
            memory_mb: Some(self.memory_mb),
            cpu_percent: Some(self.cpu_percent),
            max_processes: Some(self.max_processes),
        }
    }

    /// The limits, every value checked.
    pub fn limits(&self) -> Result<PlanLimits, Vec<FieldError>> {
        PlanLimits::from_stored(&self.stored())
    }

    pub fn disable_functions(&self) -> Vec<&str> {
        self.php_disable_functions
            .split(',')
            .filter(|s| !s.is_empty())
            .collect()
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlanRow {
    pub id: i64,
    pub name: String,
    #[sqlx(flatten)]
    pub limits: PlanColumns,
    pub created_at: i64,
    pub updated_at: i64,
}

impl PlanRow {
    pub const SELECT: &'static str =
        "SELECT p.id, p.name, p.max_vhosts, p.php_pm, p.php_max_children, p.php_max_requests,
            p.php_memory_limit_mb, p.php_upload_max_mb, p.php_max_execution_time, p.php_disable_functions,
            p.disk_mb, p.memory_mb, p.cpu_percent, p.max_processes, p.created_at, p.updated_at
        FROM plans p";

    /// The ceilings on a tenant's own PHP settings. The store holds checked values; one
    /// that no longer checks (changed behind the panel's back) bounds nothing above it.
    pub fn php_bounds(&self) -> PhpBounds {
        let l = &self.limits;
        let cap = |v: i64| u32::try_from(v).unwrap_or(0);
        PhpBounds {
            memory_limit_mb: cap(l.php_memory_limit_mb),
            upload_max_mb: cap(l.php_upload_max_mb),
            max_execution_time: cap(l.php_max_execution_time),
        }
    }

    pub fn json(&self) -> Value {
        let l = &self.limits;
        json!({
            "name": self.name,
            "max_vhosts": l.max_vhosts,
            "php": {
                "pm": l.php_pm,
                "max_children": l.php_max_children,
                "max_requests": l.php_max_requests,
                "memory_limit_mb": l.php_memory_limit_mb,
                "upload_max_mb": l.php_upload_max_mb,
                "max_execution_time": l.php_max_execution_time,
                "disable_functions": l.disable_functions(),
            },
            "disk_mb": l.disk_mb,
            "memory_mb": l.memory_mb,
            "cpu_percent": l.cpu_percent,
            "max_processes": l.max_processes,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        })
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    pub id: i64,
    pub name: String,
    pub owner_id: i64,
    pub owner: String,
    pub plan_id: i64,
    pub plan: String,
    #[sqlx(try_from = "String")]
    pub state: TenantState,
    pub uid: i64,
    pub gid: i64,
    pub php_settings: String,
    pub generation: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub applied_generation: Option<i64>,
    /// `ok` or `error` as the agent recorded it; `pending` before its first apply.
    #[sqlx(try_from = "String")]
    pub applied_state: AppliedState,
    pub applied_error: Option<String>,
    pub vhost_count: i64,
    pub has_login: bool,
}

impl TenantRow {
    pub const SELECT: &'static str =
        "SELECT t.id, t.name, t.owner_id, o.username AS owner, t.plan_id,
            p.name AS plan, t.state, t.uid, t.gid, t.php_settings, t.generation, t.created_at,
            t.updated_at, a.generation AS applied_generation, COALESCE(a.state, 'pending') AS applied_state,
            a.error AS applied_error,
            (SELECT COUNT(*) FROM vhosts v WHERE v.tenant_id = t.id) AS vhost_count,
            EXISTS (SELECT 1 FROM tenant_logins tl WHERE tl.tenant_id = t.id) AS has_login
        FROM tenants t
        JOIN users o ON o.id = t.owner_id
        JOIN plans p ON p.id = t.plan_id
        LEFT JOIN tenant_applied a ON a.tenant_id = t.id";

    /// The agent's view: `pending` until it has applied this tenant's generation.
    pub fn applied(&self) -> (i64, AppliedState, Option<&str>) {
        let generation = self.applied_generation.unwrap_or(0);
        let state = match self.applied_state {
            AppliedState::Error => AppliedState::Error,
            AppliedState::Ok if generation >= self.generation => AppliedState::Ok,
            _ => AppliedState::Pending,
        };
        (generation, state, self.applied_error.as_deref())
    }

    pub fn php_json(&self) -> Value {
        serde_json::from_str(&self.php_settings).unwrap_or_else(|_| json!({}))
    }

    pub fn json(&self) -> Value {
        let (generation, state, error) = self.applied();
        json!({
            "name": self.name,
            "owner": self.owner,
            "plan": self.plan,
            "state": self.state,
            "uid": self.uid,
            "gid": self.gid,
            "php": self.php_json(),
            "vhost_count": self.vhost_count,
            "login": self.has_login,
            "generation": self.generation,
            "applied": {"generation": generation, "state": state, "error": error},
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        })
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VhostRow {
    pub id: i64,
    pub tenant_id: i64,
    pub tenant: String,
    pub owner_id: i64,
    pub domain: String,
    pub docroot: String,
    pub php: bool,
    pub front_controller: Option<String>,
    #[sqlx(try_from = "String")]
    pub tls_mode: TlsMode,
    pub tls_cert_pem: Option<String>,
    pub has_tls_key: bool,
    #[sqlx(try_from = "String")]
    pub redirect_www: RedirectWww,
    pub redirect_https: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// Aliases joined by spaces (names cannot contain one).
    pub aliases: Option<String>,
    #[sqlx(try_from = "String")]
    pub tenant_state: TenantState,
}

impl VhostRow {
    pub const SELECT: &'static str = "SELECT v.id, v.tenant_id, t.name AS tenant, t.owner_id, v.domain,
            v.docroot, v.php, v.front_controller, v.tls_mode, v.tls_cert_pem,
            v.tls_key_pem IS NOT NULL AS has_tls_key, v.redirect_www, v.redirect_https,
            v.created_at, v.updated_at,
            (SELECT group_concat(n.name, ' ') FROM
                (SELECT name FROM vhost_names WHERE vhost_id = v.id AND is_alias = 1 ORDER BY name) n) AS aliases,
            t.state AS tenant_state
        FROM vhosts v
        JOIN tenants t ON t.id = v.tenant_id";

    pub fn alias_list(&self) -> Vec<&str> {
        self.aliases
            .as_deref()
            .map(|a| a.split(' ').collect())
            .unwrap_or_default()
    }

    /// A vhost is suspended while its tenant is.
    pub fn state(&self) -> TenantState {
        self.tenant_state
    }

    pub fn json(&self) -> Value {
        json!({
            "domain": self.domain,
            "tenant": self.tenant,
            "aliases": self.alias_list(),
            "docroot": self.docroot,
            "php": self.php,
            "front_controller": self.front_controller,
            "tls_mode": self.tls_mode,
            "tls_certificate": self.tls_cert_pem,
            "tls_has_key": self.has_tls_key,
            "redirect_www": self.redirect_www,
            "redirect_https": self.redirect_https,
            "state": self.state(),
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        })
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

impl TokenRow {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "created_at": rfc3339(self.created_at),
            "last_used_at": self.last_used_at.map(rfc3339),
        })
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub source: String,
}

impl AuditRow {
    pub fn json(&self) -> Value {
        let parse = |s: &Option<String>| {
            s.as_deref()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
        };
        json!({
            "id": self.id,
            "at": rfc3339(self.at),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "before": parse(&self.before),
            "after": parse(&self.after),
            "source": self.source,
        })
    }
}

/// What the agent last saw of a tenant's pool.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HealthRow {
    pub checked_at: i64,
    pub ok: bool,
    pub error: Option<String>,
    pub ping_ms: Option<f64>,
    pub active_processes: Option<i64>,
    pub idle_processes: Option<i64>,
    pub total_processes: Option<i64>,
    pub listen_queue: Option<i64>,
    pub max_children_reached: Option<i64>,
    pub slow_requests: Option<i64>,
    pub accepted_conn: Option<i64>,
    pub restarts: i64,
    pub memory_bytes: Option<i64>,
    pub processes: Option<i64>,
    pub cpu_usec: Option<i64>,
}

impl HealthRow {
    pub const SELECT: &'static str = "SELECT checked_at, ok, error, ping_ms, active_processes, idle_processes,
            total_processes, listen_queue, max_children_reached, slow_requests, accepted_conn, restarts,
            memory_bytes, processes, cpu_usec
        FROM tenant_health";

    pub fn json(&self) -> Value {
        json!({
            "checked_at": rfc3339(self.checked_at),
            "ok": self.ok,
            "error": self.error,
            "ping_ms": self.ping_ms,
            "active_processes": self.active_processes,
            "idle_processes": self.idle_processes,
            "total_processes": self.total_processes,
            "listen_queue": self.listen_queue,
            "max_children_reached": self.max_children_reached,
            "slow_requests": self.slow_requests,
            "accepted_conn": self.accepted_conn,
            "restarts": self.restarts,
            "usage": {"memory_bytes": self.memory_bytes, "processes": self.processes, "cpu_usec": self.cpu_usec},
        })
    }
}

/// One point of the last hour's chart.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HealthSample {
    pub at: i64,
    pub active_processes: Option<i64>,
    pub total_processes: Option<i64>,
    pub listen_queue: Option<i64>,
    pub memory_bytes: Option<i64>,
}

impl HealthSample {
    pub fn json(&self) -> Value {
        json!({
            "at": rfc3339(self.at),
            "active_processes": self.active_processes,
            "total_processes": self.total_processes,
            "listen_queue": self.listen_queue,
            "memory_bytes": self.memory_bytes,
        })
    }
}
