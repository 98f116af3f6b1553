//! Health and status: every few seconds the agent pings each active tenant's pool, reads its
//! status page (`?json`) with our own FastCGI client, reads the tenant's cgroup usage, and
//! records it for the API and the dashboard; a sample every half minute keeps the last hour
//! for the chart.

use super::cgroup::Cgroups;
use super::pool::PoolPaths;
use crate::contract::report::{HealthRecord, Report, Reporter};
use crate::contract::RunDir;
use crate::domain::{PmMode, TenantName};
use crate::fastcgi;
use crate::store::agent as agent_store;
use crate::store::{now, StoreReader};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often each pool is checked.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// An ondemand pool has no worker while idle, and a check starts one: such pools are checked
/// this much less often, so that an idle tenant costs its master and little more.
const ONDEMAND_EVERY: i64 = 60;
/// How often a sample is kept for the chart.
const SAMPLE_EVERY: i64 = 30;
const TIMEOUT: Duration = Duration::from_secs(2);
/// Checks run this many pools at a time.
const PARALLEL: usize = 16;

/// Restarts per tenant, counted by the supervisor, read here.
pub type Restarts = Arc<Mutex<HashMap<String, u32>>>;

async fn check_one(
    tenant_id: i64,
    name: TenantName,
    socket: PathBuf,
    restarts: u32,
    cgroups: Arc<Cgroups>,
    privileged: bool,
) -> HealthRecord {
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
    let status = status.ok();
    let s = status.as_ref();
    let count = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok());
    HealthRecord {
        tenant_id,
        ok: error.is_none(),
        error,
        ping_ms: ping.ok().map(|d| d.as_secs_f64() * 1000.0),
        active_processes: count(s.map(|s| s.active_processes)),
        idle_processes: count(s.map(|s| s.idle_processes)),
        total_processes: count(s.map(|s| s.total_processes)),
        listen_queue: count(s.map(|s| s.listen_queue)),
        max_children_reached: count(s.map(|s| s.max_children_reached)),
        slow_requests: count(s.map(|s| s.slow_requests)),
        accepted_conn: count(s.map(|s| s.accepted_conn)),
        restarts: i64::from(restarts),
        memory_bytes: count(usage.memory_bytes),
        processes: count(usage.processes),
        cpu_usec: count(usage.cpu_usec),
    }
}

/// What the checks keep from one round to the next.
struct Checker {
    store: StoreReader,
    reporter: Reporter,
    run_dir: RunDir,
    restarts: Restarts,
    cgroups: Arc<Cgroups>,
    privileged: bool,
    /// When the chart got its last point.
    last_sample: i64,
    /// When each ondemand pool was last checked, by tenant id.
    last_check: HashMap<i64, i64>,
}

/// Runs the checks forever (until the task is dropped).
pub async fn run(store: StoreReader, run_dir: RunDir, restarts: Restarts, privileged: bool) {
    let mut checker = Checker {
        store,
        reporter: Reporter::new(run_dir.clone()),
        run_dir,
        restarts,
        cgroups: Arc::new(Cgroups::detect()),
        privileged,
        last_sample: 0,
        last_check: HashMap::new(),
    };
    let mut interval = tokio::time::interval(INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(e) = checker.round().await {
            tracing::warn!(error = %e, "health round failed");
        }
    }
}

impl Checker {
    async fn round(&mut self) -> anyhow::Result<()> {
        let Checker {
            store,
            reporter,
            run_dir,
            restarts,
            cgroups,
            privileged,
            last_sample,
            last_check,
        } = self;
        let privileged = *privileged;
        let t = now();
        let tenants = agent_store::health_targets(store).await?;
        let mut due = Vec::with_capacity(tenants.len());
        for (id, name, pm) in tenants {
            if PmMode::parse(&pm) != Ok(PmMode::Ondemand)
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
        let report = Report::Health {
            at: t,
            sample,
            checks,
        };
        reporter.send(&report).await?;
        if sample {
            *last_sample = t;
        }
        Ok(())
    }
}
