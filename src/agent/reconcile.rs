//! The reconciler: reads the desired state, works out per tenant what differs from what is
//! applied, applies it idempotently, and records per tenant the applied generation, the
//! state and the last error.
//!
//! Every value read from the store is parsed again before it is acted on: a compromised
//! panel (which owns the store) must not mean root.

use super::home::{self, Ids};
use super::pool::{self, PoolPaths, PoolSpec};
use super::supervisor::{Launch, State, Supervisor, STOP_GRACE};
use super::system;
use super::{cgroup, fault};
use crate::config::Config;
use crate::domain::{DocRoot, PhpBounds, PhpSettings, PmMode, TenantName};
use crate::store::{now, Store};
use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

/// How long a suspended tenant's running requests may take to finish before its workers are
/// killed: a suspension is meant to take effect now.
const SUSPEND_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A tenant as the store describes it, still raw.
#[derive(Debug, sqlx::FromRow)]
struct TenantRecord {
    id: i64,
    name: String,
    state: String,
    uid: i64,
    gid: i64,
    php_settings: String,
    generation: i64,
    php_pm: String,
    php_max_children: i64,
    php_max_requests: i64,
    php_memory_limit_mb: i64,
    php_upload_max_mb: i64,
    php_max_execution_time: i64,
    php_disable_functions: String,
    memory_mb: i64,
    cpu_percent: i64,
    max_processes: i64,
    applied_generation: Option<i64>,
    applied_state: Option<String>,
}

/// The same tenant, every value checked.
struct Desired {
    name: TenantName,
    suspended: bool,
    uid: u32,
    gid: u32,
    pm: PmMode,
    max_children: u32,
    max_requests: u32,
    max_execution_time: u32,
    disable_functions: Vec<String>,
    settings: PhpSettings,
    docroots: Vec<DocRoot>,
    limits: cgroup::Limits,
}

fn in_range(value: i64, low: i64, high: i64, what: &str) -> anyhow::Result<u32> {
    if value < low || value > high {
        bail!("{what} {value} is outside {low}..={high}");
    }
    Ok(value as u32)
}

impl Desired {
    fn parse(r: TenantRecord, docroots: &[String], config: &Config) -> anyhow::Result<Self> {
        let name = TenantName::parse(&r.name)
            .map_err(|e| anyhow::anyhow!("tenant name {:?}: {e}", r.name))?;
        let range = config.uid_range;
        let uid = in_range(r.uid, range.first as i64, range.last as i64, "UID")?;
        let gid = in_range(r.gid, range.first as i64, range.last as i64, "GID")?;
        let bounds = PhpBounds {
            memory_limit_mb: in_range(r.php_memory_limit_mb, 16, 16_384, "memory limit")?,
            upload_max_mb: in_range(r.php_upload_max_mb, 1, 10_240, "upload limit")?,
            max_execution_time: in_range(r.php_max_execution_time, 1, 86_400, "execution time")?,
        };
        let settings = PhpSettings::from_stored(&r.php_settings, &bounds).map_err(|errors| {
            anyhow::anyhow!(
                "PHP settings: {}",
                errors
                    .iter()
                    .map(|e| format!("{} {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
        let mut disable_functions = Vec::new();
        for f in r.php_disable_functions.split(',').filter(|f| !f.is_empty()) {
            let ok = f.len() <= 64
                && f.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && f.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                bail!("disable_functions holds {f:?}, not a function name");
            }
            disable_functions.push(f.to_owned());
        }
        let mut parsed_docroots = Vec::new();
        for d in docroots {
            parsed_docroots
                .push(DocRoot::parse(d).map_err(|e| anyhow::anyhow!("docroot {d:?}: {e}"))?);
        }
        let suspended = match r.state.as_str() {
            "active" => false,
            "suspended" => true,
            other => bail!("unknown tenant state {other:?}"),
        };
        Ok(Self {
            name,
            suspended,
            uid,
            gid,
            pm: PmMode::parse(&r.php_pm).map_err(|e| anyhow::anyhow!("pm: {e}"))?,
            max_children: in_range(r.php_max_children, 1, 1000, "max_children")?,
            max_requests: in_range(r.php_max_requests, 0, 1_000_000, "max_requests")?,
            max_execution_time: bounds.max_execution_time,
            disable_functions,
            settings,
            docroots: parsed_docroots,
            limits: cgroup::Limits {
                memory_mb: in_range(r.memory_mb, 64, 1_048_576, "memory")? as u64,
                max_processes: in_range(r.max_processes, 8, 100_000, "processes")? as u64,
                cpu_percent: in_range(r.cpu_percent, 1, 6400, "cpu")? as u64,
            },
        })
    }
}

/// What the reconciler keeps between passes.
pub struct Reconciler {
    pub config: Config,
    pub store: Store,
    pub supervisor: Supervisor,
    pub cgroups: cgroup::Cgroups,
    /// Root: users, ownership and UID switching are real.
    pub privileged: bool,
    www_gid: Option<Gid>,
    /// Owners of the access log directories (root only).
    log_owners: Option<super::logs::Owners>,
    /// Tenants whose last apply failed, with the generation it failed at.
    failed: HashMap<String, i64>,
}

/// The supervisor key of a tenant's master.
pub fn master_key(name: &TenantName) -> String {
    format!("fpm:{name}")
}

impl Reconciler {
    pub fn new(
        config: Config,
        store: Store,
        privileged: bool,
        www_gid: Option<Gid>,
        log_owners: Option<super::logs::Owners>,
    ) -> Self {
        Self {
            log_owners,
            config,
            store,
            supervisor: Supervisor::new(),
            cgroups: cgroup::Cgroups::detect(),
            privileged,
            www_gid,
            failed: HashMap::new(),
        }
    }

    fn php_fpm(&self) -> anyhow::Result<PathBuf> {
        self.config
            .php_fpm
            .clone()
            .context("no php-fpm found: install php-fpm or pass --php-fpm")
    }

    /// One pass. `full` re-applies every tenant (idempotently); otherwise only tenants whose
    /// generation moved, whose last apply failed, or whose master is not running.
    pub async fn pass(&mut self, full: bool) -> anyhow::Result<PassReport> {
        let started = Instant::now();
        let mut report = PassReport::default();
        // Suspensions and removals reach the proxy before the pools are touched.
        if let Err(e) =
            super::publish::routes(&self.config, &self.store, self.www_gid, self.log_owners).await
        {
            tracing::warn!(error = %format!("{e:#}"), "publishing the routes failed");
        }
        self.process_removals(&mut report).await?;
        let records: Vec<TenantRecord> = sqlx::query_as(
            "SELECT t.id, t.name, t.state, t.uid, t.gid, t.php_settings, t.generation,
                    p.php_pm, p.php_max_children, p.php_max_requests, p.php_memory_limit_mb, p.php_upload_max_mb,
                    p.php_max_execution_time, p.php_disable_functions, p.memory_mb, p.cpu_percent, p.max_processes,
                    a.generation AS applied_generation, a.state AS applied_state
             FROM tenants t JOIN plans p ON p.id = t.plan_id LEFT JOIN tenant_applied a ON a.tenant_id = t.id
             ORDER BY t.id",
        )
        .fetch_all(&self.store.read)
        .await?;
        let mut docroots: HashMap<i64, Vec<String>> = HashMap::new();
        let rows: Vec<(i64, String)> = sqlx::query_as("SELECT tenant_id, docroot FROM vhosts")
            .fetch_all(&self.store.read)
            .await?;
        for (tenant, docroot) in rows {
            docroots.entry(tenant).or_default().push(docroot);
        }
        for record in records {
            let up_to_date = record.applied_generation == Some(record.generation)
                && record.applied_state.as_deref() == Some("ok");
            let name_key = TenantName::parse(&record.name)
                .map(|n| master_key(&n))
                .unwrap_or_default();
            let master_fine = record.state == "suspended"
                || matches!(
                    self.supervisor.state(&name_key),
                    Some(State::Running { .. })
                );
            if up_to_date && master_fine && !full {
                continue;
            }
            let (id, generation, raw_name) = (record.id, record.generation, record.name.clone());
            let result = match Desired::parse(
                record,
                docroots.get(&id).map(Vec::as_slice).unwrap_or(&[]),
                &self.config,
            ) {
                Ok(desired) => self.apply(&desired).await,
                Err(e) => Err(e.context("the store holds a value lodge would never write")),
            };
            report.applied += 1;
            match result {
                Ok(()) => {
                    self.failed.remove(&raw_name);
                    self.record(id, generation, "ok", None).await?;
                }
                Err(e) => {
                    let message = format!("{e:#}");
                    tracing::warn!(tenant = %raw_name, error = %message, "apply failed");
                    self.failed.insert(raw_name, generation);
                    report.errors += 1;
                    self.record(id, generation, "error", Some(&message)).await?;
                }
            }
        }
        report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        // The proxy learns the vhosts (and their certificates) after the pools are there.
        if let Err(e) =
            super::publish::routes(&self.config, &self.store, self.www_gid, self.log_owners).await
        {
            tracing::warn!(error = %format!("{e:#}"), "publishing the routes failed");
        }
        Ok(report)
    }

    async fn record(
        &self,
        tenant_id: i64,
        generation: i64,
        state: &str,
        error: Option<&str>,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO tenant_applied (tenant_id, generation, state, error, updated_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id) DO UPDATE SET generation = excluded.generation, state = excluded.state,
                 error = excluded.error, updated_at = excluded.updated_at",
        )
        .bind(tenant_id)
        .bind(generation)
        .bind(state)
        .bind(error)
        .bind(now())
        .execute(&self.store.write)
        .await
        .map(|_| ())
    }

    /// Records a crash loop reported by the supervisor in the tenant's applied state.
    pub async fn crash_loop(&mut self, key: &str, message: &str) -> anyhow::Result<()> {
        let Some(name) = key.strip_prefix("fpm:") else {
            return Ok(());
        };
        sqlx::query(
            "UPDATE tenant_applied SET state = 'error', error = ?, updated_at = ?
             WHERE tenant_id = (SELECT id FROM tenants WHERE name = ?)",
        )
        .bind(message)
        .bind(now())
        .bind(name)
        .execute(&self.store.write)
        .await?;
        Ok(())
    }

    async fn apply(&mut self, t: &Desired) -> anyhow::Result<()> {
        let php_fpm = self.php_fpm()?;
        let home_path = self.config.tenants_root.home(&t.name);
        let ids = if self.privileged {
            system::ensure_tenant_user(&t.name, t.uid, t.gid, &home_path)?;
            Some(Ids {
                uid: Uid::from_raw(t.uid),
                gid: Gid::from_raw(t.gid),
                www_gid: self.www_gid.context("no lodge-www group")?,
            })
        } else {
            None
        };
        fault("after-user", t.name.as_str());
        let home = home::ensure_home(&self.config.tenants_root, &t.name, ids, &t.docroots)?;
        fault("after-home", t.name.as_str());

        let paths = PoolPaths::new(&self.config.run_dir, &t.name);
        let key = master_key(&t.name);
        if t.suspended {
            self.supervisor.stop_soon(&key, SUSPEND_GRACE);
            let _ = std::fs::remove_file(&paths.socket);
            return Ok(());
        }
        let spec = PoolSpec {
            name: t.name.clone(),
            home,
            paths: paths.clone(),
            privileged: self.privileged,
            www_group: system::PROXY_USER.to_owned(),
            pm: t.pm,
            max_children: t.max_children,
            max_requests: t.max_requests,
            // A little above max_execution_time, so PHP's own limit speaks first.
            terminate_timeout: t.max_execution_time + 10,
            disable_functions: t.disable_functions.clone(),
            settings: t.settings.clone(),
        };
        let mut content = spec.render().context("rendering the pool file")?;
        if super::fault_set("bad-pool", t.name.as_str()) {
            content.push_str("pm.max_children = 0\n");
        }
        let changed = pool::differs(&paths.conf, &content);
        let running = matches!(self.supervisor.state(&key), Some(State::Running { .. }));
        if changed {
            if let Err(rejected) = pool::replace_checked(&php_fpm, &paths.conf, &content).await {
                // The live file stays; if its master is down (an agent restart), it serves again.
                if !running && paths.conf.exists() {
                    let launch = Launch::php_fpm(&php_fpm, &paths.conf, &paths.pid);
                    if self.supervisor.ensure(&key, launch).is_ok() {
                        if let Some(pid) = self.supervisor.pid(&key) {
                            self.limit(&t.name, &t.limits, pid);
                        }
                    }
                }
                bail!(rejected);
            }
        }
        fault("after-pool", t.name.as_str());
        if running && changed {
            // A graceful reload of this master only: running requests finish.
            self.supervisor.signal(&key, Signal::SIGUSR2);
        } else if !running {
            let launch = Launch::php_fpm(&php_fpm, &paths.conf, &paths.pid);
            self.supervisor
                .ensure(&key, launch)
                .context("starting php-fpm")?;
            if let Some(pid) = self.supervisor.pid(&key) {
                self.limit(&t.name, &t.limits, pid);
            }
        }
        if self.privileged && self.cgroups.available() {
            let group = self.cgroups.tenant(t.name.as_str());
            group.apply(&t.limits).context("cgroup limits")?;
        }
        Ok(())
    }

    /// Puts a new master in the tenant's cgroup with the plan's limits.
    fn limit(&self, name: &TenantName, limits: &cgroup::Limits, pid: u32) {
        if !self.privileged || !self.cgroups.available() {
            return;
        }
        let group = self.cgroups.tenant(name.as_str());
        if let Err(e) = group
            .apply(limits)
            .and_then(|_| group.add_process(pid as i32))
        {
            tracing::warn!(tenant = %name, error = %e, "cgroup");
        }
    }

    /// Tears down deleted tenants: stop the master, archive and remove the home, remove the
    /// user and group. The UID stays reserved in the store.
    async fn process_removals(&mut self, report: &mut PassReport) -> anyhow::Result<()> {
        let removals: Vec<(i64, String, i64, i64)> = sqlx::query_as(
            "SELECT id, name, uid, gid FROM tenant_removals WHERE done_at IS NULL ORDER BY id",
        )
        .fetch_all(&self.store.read)
        .await?;
        for (id, raw, uid, gid) in removals {
            let Ok(name) = TenantName::parse(&raw) else {
                tracing::error!(name = %raw, "a removal names no valid tenant; skipped");
                continue;
            };
            let range = self.config.uid_range;
            let (Ok(uid), Ok(gid)) = (
                in_range(uid, range.first as i64, range.last as i64, "UID"),
                in_range(gid, range.first as i64, range.last as i64, "GID"),
            ) else {
                tracing::error!(tenant = %name, "a removal has IDs outside the range; skipped");
                continue;
            };
            match self.remove(&name, uid, gid).await {
                Ok(archive) => {
                    sqlx::query("UPDATE tenant_removals SET done_at = ? WHERE id = ?")
                        .bind(now())
                        .bind(id)
                        .execute(&self.store.write)
                        .await?;
                    report.removed += 1;
                    tracing::info!(tenant = %name, archive = ?archive, "tenant removed");
                }
                Err(e) => {
                    tracing::warn!(tenant = %name, error = %format!("{e:#}"), "removal failed; retrying next pass")
                }
            }
        }
        Ok(())
    }

    async fn remove(
        &mut self,
        name: &TenantName,
        uid: u32,
        gid: u32,
    ) -> anyhow::Result<Option<PathBuf>> {
        self.supervisor.stop(&master_key(name), STOP_GRACE).await;
        let paths = PoolPaths::new(&self.config.run_dir, name);
        for f in [&paths.conf, &paths.pid, &paths.socket] {
            let _ = std::fs::remove_file(f);
        }
        super::logs::remove_tenant(&self.config.log_dir, name)?;
        let home = self.config.tenants_root.home(name);
        let archive = if home.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            let archive = super::archive::home(&self.config, name, &home).await?;
            std::fs::remove_dir_all(&home)
                .with_context(|| format!("removing {}", home.display()))?;
            Some(archive)
        } else {
            None
        };
        if self.privileged {
            system::remove_tenant_user(name, uid, gid)?;
            if self.cgroups.available() {
                let _ = self.cgroups.tenant(name.as_str()).remove();
            }
        }
        Ok(archive)
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PassReport {
    pub applied: usize,
    pub errors: usize,
    pub removed: usize,
    pub elapsed_ms: f64,
}
