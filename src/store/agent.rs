//! The agent's queries: what it reads of the desired state (through its read-only
//! `StoreReader`), and how the panel writes what the agent reports (`tenant_applied`,
//! `tenant_health`, `tenant_health_samples`, `tenant_removals.done_at`).
//!
//! Rows come back raw: the agent parses every value again before acting on it (the panel owns
//! the store, and a compromised panel must not mean root).

use super::rows::PlanColumns;
use super::{now, Store, StoreReader};
use crate::contract::report::{HealthRecord, Report};
use crate::domain::{AppliedState, Role};
use std::collections::HashMap;

/// A tenant as the store describes it, with its plan, still raw.
#[derive(Debug, sqlx::FromRow)]
pub struct TenantRecord {
    pub id: i64,
    pub name: String,
    pub state: String,
    pub uid: i64,
    pub gid: i64,
    pub php_settings: String,
    pub generation: i64,
    #[sqlx(flatten)]
    pub plan: PlanColumns,
    pub applied_generation: Option<i64>,
    pub applied_state: Option<String>,
}

/// Every tenant, by id.
pub async fn tenants(store: &StoreReader) -> sqlx::Result<Vec<TenantRecord>> {
    sqlx::query_as(&format!(
        "SELECT t.id, t.name, t.state, t.uid, t.gid, t.php_settings, t.generation, {},
                a.generation AS applied_generation, a.state AS applied_state
         FROM tenants t JOIN plans p ON p.id = t.plan_id LEFT JOIN tenant_applied a ON a.tenant_id = t.id
         ORDER BY t.id",
        PlanColumns::SELECT
    ))
    .fetch_all(&store.read)
    .await
}

/// Each tenant's vhost docroots, raw.
pub async fn docroots(store: &StoreReader) -> sqlx::Result<HashMap<i64, Vec<String>>> {
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT tenant_id, docroot FROM vhosts")
        .fetch_all(&store.read)
        .await?;
    let mut by_tenant: HashMap<i64, Vec<String>> = HashMap::new();
    for (tenant, docroot) in rows {
        by_tenant.entry(tenant).or_default().push(docroot);
    }
    Ok(by_tenant)
}

/// Whether an admin account exists (the agent says how to make one when not).
pub async fn has_admin(store: &StoreReader) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE role = ?)")
        .bind(Role::Admin.as_str())
        .fetch_one(&store.read)
        .await
}

/// Writes a report of the agent (the panel's side of `contract::report`).
pub async fn store_report(store: &Store, report: &Report) -> sqlx::Result<()> {
    match report {
        Report::Applied {
            tenant_id,
            generation,
            state,
            error,
        } => record_applied(store, *tenant_id, *generation, *state, error.as_deref()).await,
        Report::Failed { tenant, message } => record_failure(store, tenant, message).await,
        Report::Removed { removal_id } => removal_done(store, *removal_id).await,
        Report::Health { at, sample, checks } => {
            record_health(store, checks, *at, *sample, HEALTH_KEEP).await
        }
    }
}

/// How long the chart's points are kept, in seconds.
const HEALTH_KEEP: i64 = 3600;

/// Records what the agent made of a tenant's generation.
async fn record_applied(
    store: &Store,
    tenant_id: i64,
    generation: i64,
    state: AppliedState,
    error: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO tenant_applied (tenant_id, generation, state, error, updated_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (tenant_id) DO UPDATE SET generation = excluded.generation, state = excluded.state,
             error = excluded.error, updated_at = excluded.updated_at",
    )
    .bind(tenant_id)
    .bind(generation)
    .bind(state.as_str())
    .bind(error)
    .bind(now())
    .execute(&store.write)
    .await
    .map(|_| ())
}

/// Marks a tenant's last apply failed with `message`, whatever its generation (a crash loop
/// the supervisor found between passes).
async fn record_failure(store: &Store, tenant: &str, message: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE tenant_applied SET state = ?, error = ?, updated_at = ?
         WHERE tenant_id = (SELECT id FROM tenants WHERE name = ?)",
    )
    .bind(AppliedState::Error.as_str())
    .bind(message)
    .bind(now())
    .bind(tenant)
    .execute(&store.write)
    .await
    .map(|_| ())
}

/// A deleted tenant the agent has not torn down yet, raw.
#[derive(Debug, sqlx::FromRow)]
pub struct Removal {
    pub id: i64,
    pub name: String,
    pub uid: i64,
    pub gid: i64,
}

pub async fn removals(store: &StoreReader) -> sqlx::Result<Vec<Removal>> {
    sqlx::query_as(
        "SELECT id, name, uid, gid FROM tenant_removals WHERE done_at IS NULL ORDER BY id",
    )
    .fetch_all(&store.read)
    .await
}

async fn removal_done(store: &Store, id: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE tenant_removals SET done_at = ? WHERE id = ?")
        .bind(now())
        .bind(id)
        .execute(&store.write)
        .await
        .map(|_| ())
}

/// A vhost as the routes snapshot needs it, with its tenant and plan, still raw.
#[derive(Debug, sqlx::FromRow)]
pub struct VhostRecord {
    pub id: i64,
    pub domain: String,
    pub docroot: String,
    pub php: bool,
    pub front_controller: Option<String>,
    pub tls_mode: String,
    pub tls_cert_pem: Option<String>,
    pub tls_key_pem: Option<String>,
    pub redirect_www: String,
    pub redirect_https: bool,
    pub tenant: String,
    pub state: String,
    #[sqlx(flatten)]
    pub plan: PlanColumns,
    /// The domain and its aliases, space-separated.
    pub names: Option<String>,
}

/// Every vhost, by domain.
pub async fn vhosts(store: &StoreReader) -> sqlx::Result<Vec<VhostRecord>> {
    sqlx::query_as(&format!(
        "SELECT v.id, v.domain, v.docroot, v.php, v.front_controller, v.tls_mode, v.tls_cert_pem,
                v.tls_key_pem, v.redirect_www, v.redirect_https, t.name AS tenant, t.state, {},
                (SELECT group_concat(n.name, ' ') FROM vhost_names n WHERE n.vhost_id = v.id) AS names
         FROM vhosts v JOIN tenants t ON t.id = v.tenant_id JOIN plans p ON p.id = t.plan_id
         ORDER BY v.domain",
        PlanColumns::SELECT
    ))
    .fetch_all(&store.read)
    .await
}

/// An active tenant the health checks look at: id, name and its plan's `pm`, raw.
pub async fn health_targets(store: &StoreReader) -> sqlx::Result<Vec<(i64, String, String)>> {
    sqlx::query_as(
        "SELECT t.id, t.name, p.php_pm FROM tenants t JOIN plans p ON p.id = t.plan_id
         JOIN tenant_applied a ON a.tenant_id = t.id
         WHERE t.state = 'active' ORDER BY t.id",
    )
    .fetch_all(&store.read)
    .await
}

/// Records a round of checks at time `at`; with `sample`, also a point of the chart (and
/// drops the points older than `keep` seconds).
async fn record_health(
    store: &Store,
    checks: &[HealthRecord],
    at: i64,
    sample: bool,
    keep: i64,
) -> sqlx::Result<()> {
    let mut tx = store.begin().await?;
    for c in checks {
        sqlx::query(
            "INSERT INTO tenant_health (tenant_id, checked_at, ok, error, ping_ms, active_processes, idle_processes,
                 total_processes, listen_queue, max_children_reached, slow_requests, accepted_conn, restarts,
                 memory_bytes, processes, cpu_usec)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id) DO UPDATE SET checked_at = excluded.checked_at, ok = excluded.ok,
                 error = excluded.error, ping_ms = excluded.ping_ms, active_processes = excluded.active_processes,
                 idle_processes = excluded.idle_processes, total_processes = excluded.total_processes,
                 listen_queue = excluded.listen_queue, max_children_reached = excluded.max_children_reached,
                 slow_requests = excluded.slow_requests, accepted_conn = excluded.accepted_conn,
                 restarts = excluded.restarts, memory_bytes = excluded.memory_bytes,
                 processes = excluded.processes, cpu_usec = excluded.cpu_usec",
        )
        .bind(c.tenant_id)
        .bind(at)
        .bind(c.ok)
        .bind(&c.error)
        .bind(c.ping_ms)
        .bind(c.active_processes)
        .bind(c.idle_processes)
        .bind(c.total_processes)
        .bind(c.listen_queue)
        .bind(c.max_children_reached)
        .bind(c.slow_requests)
        .bind(c.accepted_conn)
        .bind(c.restarts)
        .bind(c.memory_bytes)
        .bind(c.processes)
        .bind(c.cpu_usec)
        .execute(&mut *tx)
        .await?;
        if sample {
            sqlx::query(
                "INSERT OR REPLACE INTO tenant_health_samples (tenant_id, at, active_processes, total_processes, listen_queue, memory_bytes)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(c.tenant_id)
            .bind(at)
            .bind(c.active_processes)
            .bind(c.total_processes)
            .bind(c.listen_queue)
            .bind(c.memory_bytes)
            .execute(&mut *tx)
            .await?;
        }
    }
    if sample {
        sqlx::query("DELETE FROM tenant_health_samples WHERE at < ?")
            .bind(at - keep)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}
