//! Health and status: every few seconds the agent pings each active tenant's pool, reads its
//! status page (`?json`) with our own FastCGI client, reads the tenant's cgroup usage, and
//! records it for the API and the dashboard; a sample every half minute keeps the last hour
//! for the chart.

use super::cgroup::Cgroups;
use super::pool::PoolPaths;
use crate::contract::RunDir;
use crate::domain::TenantName;
use crate::fastcgi::{self, PoolStatus};
use crate::store::{now, Store};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often each pool is checked.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// An ondemand pool has no worker while idle, and a check starts one: such pools are checked
/// this much less often, so that an idle tenant costs its master and little more.
const ONDEMAND_EVERY: i64 = 60;
/// How often a sample is kept for the chart, and for how long.
const SAMPLE_EVERY: i64 = 30;
const KEEP: i64 = 3600;
const TIMEOUT: Duration = Duration::from_secs(2);
/// Checks run this many pools at a time.
const PARALLEL: usize = 16;

/// Restarts per tenant, counted by the supervisor, read here.
pub type Restarts = Arc<Mutex<HashMap<String, u32>>>;

struct Check {
    tenant_id: i64,
    ok: bool,
    error: Option<String>,
    ping_ms: Option<f64>,
    status: Option<PoolStatus>,
    restarts: u32,
    usage: super::cgroup::Usage,
}

async fn check_one(
    tenant_id: i64,
    name: TenantName,
    socket: PathBuf,
    restarts: u32,
    cgroups: Arc<Cgroups>,
    privileged: bool,
) -> Check {
    let ping = fastcgi::ping(&socket, "/fpm-ping", TIMEOUT).await;
    let status = fastcgi::status(&socket, "/fpm-status", TIMEOUT).await;
    let usage = if privileged && cgroups.available() {
        cgroups.tenant(name.as_str()).usage()
    } else {
        Default::default()
    };
    let error = match (&ping, &status) {
        (Err(e), _) => Some(format!("ping: {e}")),
        (_, Err(e)) => Some(format!("status: {e}")),
        _ => None,
    };
    Check {
        tenant_id,
        ok: error.is_none(),
        error,
        ping_ms: ping.ok().map(|d| d.as_secs_f64() * 1000.0),
        status: status.ok(),
        restarts,
        usage,
    }
}

/// Runs the checks forever (until the task is dropped).
pub async fn run(store: Store, run_dir: RunDir, restarts: Restarts, privileged: bool) {
    let cgroups = Arc::new(Cgroups::detect());
    let mut interval = tokio::time::interval(INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sample = 0;
    let mut last_check: HashMap<i64, i64> = HashMap::new();
    loop {
        interval.tick().await;
        if let Err(e) = round(
            &store,
            &run_dir,
            &restarts,
            &cgroups,
            privileged,
            &mut last_sample,
            &mut last_check,
        )
        .await
        {
            tracing::warn!(error = %e, "health round failed");
        }
    }
}

async fn round(
    store: &Store,
    run_dir: &RunDir,
    restarts: &Restarts,
    cgroups: &Arc<Cgroups>,
    privileged: bool,
    last_sample: &mut i64,
    last_check: &mut HashMap<i64, i64>,
) -> anyhow::Result<()> {
    let t = now();
    let tenants: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT t.id, t.name, p.php_pm FROM tenants t JOIN plans p ON p.id = t.plan_id
         JOIN tenant_applied a ON a.tenant_id = t.id
         WHERE t.state = 'active' ORDER BY t.id",
    )
    .fetch_all(&store.read)
    .await?;
    let mut due = Vec::with_capacity(tenants.len());
    for (id, name, pm) in tenants {
        if pm != "ondemand"
            || last_check
                .get(&id)
                .is_none_or(|at| t - at >= ONDEMAND_EVERY)
        {
            last_check.insert(id, t);
            due.push((id, name));
        }
    }
    let tenants = due;
    let counts = restarts.lock().map(|m| m.clone()).unwrap_or_default();
    let mut checks = Vec::with_capacity(tenants.len());
    let mut set = tokio::task::JoinSet::new();
    for (id, raw) in tenants {
        let Ok(name) = TenantName::parse(&raw) else {
            continue;
        };
        let socket = PoolPaths::new(run_dir, &name).socket;
        let n = counts.get(&raw).copied().unwrap_or(0);
        if set.len() >= PARALLEL {
            if let Some(Ok(c)) = set.join_next().await {
                checks.push(c);
            }
        }
        set.spawn(check_one(id, name, socket, n, cgroups.clone(), privileged));
    }
    while let Some(result) = set.join_next().await {
        if let Ok(c) = result {
            checks.push(c);
        }
    }

    let sample = t - *last_sample >= SAMPLE_EVERY;
    let mut tx = store.begin().await?;
    for c in &checks {
        let s = c.status.as_ref();
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
        .bind(t)
        .bind(c.ok)
        .bind(&c.error)
        .bind(c.ping_ms)
        .bind(s.map(|s| s.active_processes as i64))
        .bind(s.map(|s| s.idle_processes as i64))
        .bind(s.map(|s| s.total_processes as i64))
        .bind(s.map(|s| s.listen_queue as i64))
        .bind(s.map(|s| s.max_children_reached as i64))
        .bind(s.map(|s| s.slow_requests as i64))
        .bind(s.map(|s| s.accepted_conn as i64))
        .bind(c.restarts as i64)
        .bind(c.usage.memory_bytes.map(|v| v as i64))
        .bind(c.usage.processes.map(|v| v as i64))
        .bind(c.usage.cpu_usec.map(|v| v as i64))
        .execute(&mut *tx)
        .await?;
        if sample {
            sqlx::query(
                "INSERT OR REPLACE INTO tenant_health_samples (tenant_id, at, active_processes, total_processes, listen_queue, memory_bytes)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(c.tenant_id)
            .bind(t)
            .bind(s.map(|s| s.active_processes as i64))
            .bind(s.map(|s| s.total_processes as i64))
            .bind(s.map(|s| s.listen_queue as i64))
            .bind(c.usage.memory_bytes.map(|v| v as i64))
            .execute(&mut *tx)
            .await?;
        }
    }
    if sample {
        sqlx::query("DELETE FROM tenant_health_samples WHERE at < ?")
            .bind(t - KEEP)
            .execute(&mut *tx)
            .await?;
        *last_sample = t;
    }
    tx.commit().await?;
    Ok(())
}
