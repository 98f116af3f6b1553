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
use crate::contract::proxy_control;
use crate::contract::report::{Report, Reporter, MAX_MESSAGE};
use crate::domain::{
    AppliedState, DocRoot, PhpBounds, PhpSettings, PmMode, TenantName, TenantState,
};
use crate::store::agent::{self as agent_store, TenantRecord};
use crate::store::StoreReader;
use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// How long a suspended tenant's running requests may take to finish before its workers are
/// killed: a suspension is meant to take effect now.
const SUSPEND_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a pass waits for the proxy to confirm it serves the routes just published (it
/// answers in milliseconds; a proxy that is restarting loads them itself when it starts).
const PROXY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

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
    bounds: PhpBounds,
    docroots: Vec<DocRoot>,
    limits: cgroup::Limits,
}

fn in_range(value: i64, low: i64, high: i64, what: &str) -> anyhow::Result<u32> {
    if value < low || value > high {
        bail!("{what} {value} is outside {low}..={high}");
    }
    Ok(value as u32)
}

/// Field errors as one line, for a tenant's applied error.
fn describe(errors: &[crate::domain::FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{} {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Desired {
    fn parse(r: TenantRecord, docroots: &[String], config: &Config) -> anyhow::Result<Self> {
        let name = TenantName::parse(&r.name)
            .map_err(|e| anyhow::anyhow!("tenant name {:?}: {e}", r.name))?;
        let range = config.uid_range;
        let uid = in_range(r.uid, range.first as i64, range.last as i64, "UID")?;
        let gid = in_range(r.gid, range.first as i64, range.last as i64, "GID")?;
        let plan = r
            .plan
            .limits()
            .map_err(|errors| anyhow::anyhow!("plan: {}", describe(&errors)))?;
        let settings = PhpSettings::from_stored(&r.php_settings, &plan.php_bounds())
            .map_err(|errors| anyhow::anyhow!("PHP settings: {}", describe(&errors)))?;
        let mut parsed_docroots = Vec::new();
        for d in docroots {
            parsed_docroots
                .push(DocRoot::parse(d).map_err(|e| anyhow::anyhow!("docroot {d:?}: {e}"))?);
        }
        let state = TenantState::parse(&r.state).map_err(|e| anyhow::anyhow!("state: {e}"))?;
        Ok(Self {
            name,
            suspended: state.is_suspended(),
            uid,
            gid,
            pm: plan.pm,
            max_children: plan.max_children,
            max_requests: plan.max_requests,
            max_execution_time: plan.max_execution_time,
            disable_functions: plan
                .disable_functions
                .iter()
                .map(|f| f.as_str().to_owned())
                .collect(),
            settings,
            bounds: plan.php_bounds(),
            docroots: parsed_docroots,
            limits: cgroup::Limits {
                memory_mb: plan.memory_mb,
                max_processes: u64::from(plan.max_processes),
                cpu_percent: u64::from(plan.cpu_percent),
            },
        })
    }
}

/// How long a pass waits for the masters it started to listen.
const LISTEN_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Waits (at most `bound`, all at once) until each socket takes a connection: a master
/// listens some milliseconds after it starts.
async fn wait_listening(sockets: &[PathBuf], bound: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + bound;
    let waits = sockets.iter().map(|socket| async move {
        while tokio::net::UnixStream::connect(socket).await.is_err() {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(socket = %socket.display(), "a master did not listen in time");
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    });
    futures_util::future::join_all(waits).await;
}

/// How many tenants are prepared at once.
const PREPARE_AT_ONCE: usize = 8;

/// What preparing a tenant needs: nothing of the reconciler that changes.
struct PrepareCtx {
    config: Config,
    privileged: bool,
    www_gid: Option<Gid>,
}

/// A tenant whose user and home are in place, with its new pool file (when it changed)
/// written beside the live one, not yet checked.
struct Prepared {
    paths: PoolPaths,
    candidate: Option<crate::nofollow::Pending>,
}

/// The part of an apply that touches only this tenant's user, home and files: blocking, and
/// safe to run for many tenants at once.
fn prepare(ctx: &PrepareCtx, t: &Desired) -> anyhow::Result<Prepared> {
    let home_path = ctx.config.tenants_root.home(&t.name);
    let ids = if ctx.privileged {
        system::ensure_tenant_user(&t.name, t.uid, t.gid, &home_path)?;
        Some(Ids {
            uid: Uid::from_raw(t.uid),
            gid: Gid::from_raw(t.gid),
            www_gid: ctx.www_gid.context("no lodge-www group")?,
        })
    } else {
        None
    };
    fault("after-user", t.name.as_str());
    let home = home::ensure_home(&ctx.config.tenants_root, &t.name, ids, &t.docroots)?;
    fault("after-home", t.name.as_str());
    let paths = PoolPaths::new(&ctx.config.run_dir, &t.name);
    if t.suspended {
        return Ok(Prepared {
            paths,
            candidate: None,
        });
    }
    let spec = PoolSpec {
        name: t.name.clone(),
        home,
        paths: paths.clone(),
        privileged: ctx.privileged,
        www_group: system::PROXY_USER.to_owned(),
        pm: t.pm,
        max_children: t.max_children,
        max_requests: t.max_requests,
        // A little above max_execution_time, so PHP's own limit speaks first.
        terminate_timeout: t.max_execution_time + 10,
        disable_functions: t.disable_functions.clone(),
        settings: t.settings.clone(),
        bounds: t.bounds,
    };
    let mut content = spec.render().context("rendering the pool file")?;
    if super::fault_set("bad-pool", t.name.as_str()) {
        content.push_str("pm.max_children = 0\n");
    }
    let candidate = if pool::differs(&paths.conf, &content) {
        Some(pool::write_candidate(&paths.conf, &content).map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    Ok(Prepared { paths, candidate })
}

/// What the reconciler keeps between passes.
pub struct Reconciler {
    pub config: Config,
    pub store: StoreReader,
    pub supervisor: Supervisor,
    pub cgroups: cgroup::Cgroups,
    /// Root: users, ownership and UID switching are real.
    pub privileged: bool,
    www_gid: Option<Gid>,
    /// Owners of the access log directories (root only).
    log_owners: Option<super::logs::Owners>,
    /// Whether a proxy runs that loads the routes when asked.
    pub proxy_runs: bool,
    /// The generation each tenant was last applied at without error, by tenant id.
    applied: std::collections::HashMap<i64, i64>,
    /// Tenant ids by name, as last read: a crash loop names the tenant.
    ids: std::collections::HashMap<String, i64>,
    /// Removals under way, by removal id.
    removing: std::collections::HashMap<i64, RemovalTask>,
    reporter: Reporter,
}

type RemovalTask =
    tokio::task::JoinHandle<anyhow::Result<(TenantName, Option<super::archive::Archived>)>>;

/// An error message as a report carries it: at most `MAX_MESSAGE` bytes, cut at a character.
fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

/// The supervisor key of a tenant's master.
pub fn master_key(name: &TenantName) -> String {
    master_key_of(name.as_str())
}

fn master_key_of(name: &str) -> String {
    format!("fpm:{name}")
}

impl Reconciler {
    pub fn new(
        config: Config,
        store: StoreReader,
        privileged: bool,
        www_gid: Option<Gid>,
        log_owners: Option<super::logs::Owners>,
        supervisor: Supervisor,
    ) -> Self {
        Self {
            reporter: Reporter::new(config.run_dir.clone()),
            log_owners,
            config,
            store,
            supervisor,
            cgroups: cgroup::Cgroups::detect(),
            privileged,
            www_gid,
            proxy_runs: false,
            applied: Default::default(),
            ids: Default::default(),
            removing: Default::default(),
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
        self.publish_routes().await;
        self.process_removals(&mut report).await?;
        let records = agent_store::tenants(&self.store).await?;
        let docroots = agent_store::docroots(&self.store).await?;
        // Tenants applied without error, recorded `ok` once the proxy serves their vhosts.
        let mut applied = Vec::new();
        let mut due = Vec::new();
        let mut failures: Vec<(i64, i64, String, anyhow::Error)> = Vec::new();
        self.ids.clear();
        for record in records {
            self.ids.insert(record.name.clone(), record.id);
            // What this agent applied counts even when the panel missed the report.
            let up_to_date = self.applied.get(&record.id) == Some(&record.generation)
                || (record.applied_generation == Some(record.generation)
                    && record.applied_state.as_deref() == Some(AppliedState::Ok.as_str()));
            let name_key = TenantName::parse(&record.name)
                .map(|n| master_key(&n))
                .unwrap_or_default();
            let master_fine = TenantState::parse(&record.state)
                .is_ok_and(TenantState::is_suspended)
                || matches!(
                    self.supervisor.state(&name_key),
                    Some(State::Running { .. })
                );
            if up_to_date && master_fine && !full {
                continue;
            }
            let (id, generation, raw_name) = (record.id, record.generation, record.name.clone());
            report.applied += 1;
            match Desired::parse(
                record,
                docroots.get(&id).map(Vec::as_slice).unwrap_or(&[]),
                &self.config,
            ) {
                Ok(desired) => due.push((id, generation, desired)),
                Err(e) => {
                    let e = e.context("the store holds a value lodge would never write");
                    failures.push((id, generation, raw_name, e));
                }
            }
        }
        // Each due tenant's user, home and pool file, many at once; their checks together;
        // then the masters, one after the other.
        let results = self.apply_all(due).await;
        let mut sockets = Vec::new();
        for (id, generation, name, result) in results {
            match result {
                Ok(socket) => {
                    applied.push((id, generation));
                    sockets.extend(socket);
                }
                Err(e) => failures.push((id, generation, name, e)),
            }
        }
        // Applied means serving: a master just started listens before its tenant is ok.
        wait_listening(&sockets, LISTEN_WAIT).await;
        for (id, generation, name, e) in failures {
            let message = format!("{e:#}");
            tracing::warn!(tenant = %name, error = %message, "apply failed");
            report.errors += 1;
            self.applied.remove(&id);
            self.report(Report::Applied {
                tenant_id: id,
                generation,
                state: AppliedState::Error,
                error: Some(truncate(message)),
            })
            .await;
        }
        if full {
            // A master adopted from a previous agent whose tenant is gone.
            let known: std::collections::HashSet<String> =
                self.ids.keys().map(|n| master_key_of(n)).collect();
            for key in self.supervisor.keys() {
                if key.starts_with("fpm:") && !known.contains(&key) {
                    tracing::info!(service = %key, "stopping a master no tenant owns");
                    self.supervisor.stop_soon(&key, STOP_GRACE);
                }
            }
        }
        report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        // The proxy learns the vhosts (and their certificates) after the pools are there.
        self.publish_routes().await;
        for (id, generation) in applied {
            self.applied.insert(id, generation);
            self.report(Report::Applied {
                tenant_id: id,
                generation,
                state: AppliedState::Ok,
                error: None,
            })
            .await;
        }
        Ok(report)
    }

    /// Tells the panel, which stores it. A report that does not arrive (the panel is
    /// restarting) is not retried: the next change or full pass reports that tenant again.
    async fn report(&mut self, report: Report) {
        if let Err(e) = self.reporter.send(&report).await {
            tracing::warn!(error = %e, ?report, "the panel did not take a report");
        }
    }

    /// Publishes the routes snapshot and, when a proxy runs, waits (a bounded time) until it
    /// serves that generation: a tenant is `ok` once its sites answer.
    async fn publish_routes(&self) {
        let generation =
            match super::publish::routes(&self.config, &self.store, self.www_gid, self.log_owners)
                .await
            {
                Ok(generation) => generation,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "publishing the routes failed");
                    return;
                }
            };
        if !self.proxy_runs {
            return;
        }
        let deadline = Instant::now() + PROXY_WAIT;
        loop {
            match proxy_control::load(&self.config.run_dir, PROXY_WAIT).await {
                Ok(served) if served >= generation => return,
                Ok(served) => {
                    tracing::debug!(served, generation, "the proxy serves an older snapshot")
                }
                Err(e) => tracing::debug!(error = %e, "asking the proxy to load the routes"),
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    generation,
                    "the proxy did not confirm the new routes; they are served once it loads them"
                );
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    fn applied_id(&self, tenant: &TenantName) -> Option<i64> {
        self.ids.get(tenant.as_str()).copied()
    }

    /// Records a crash loop reported by the supervisor in the tenant's applied state.
    pub async fn crash_loop(&mut self, key: &str, message: &str) -> anyhow::Result<()> {
        let Some(name) = key.strip_prefix("fpm:") else {
            return Ok(());
        };
        let Ok(tenant) = TenantName::parse(name) else {
            return Ok(());
        };
        if let Some(id) = self.applied_id(&tenant) {
            self.applied.remove(&id);
        }
        self.report(Report::Failed {
            tenant: tenant.as_str().to_owned(),
            message: truncate(message.to_owned()),
        })
        .await;
        Ok(())
    }

    /// Applies many tenants: [`prepare`] for each, [`PREPARE_AT_ONCE`] at a time, on
    /// blocking threads (users, homes and pool files are system calls and short programs);
    /// the new pool files checked together; then each master started or reloaded.
    async fn apply_all(
        &mut self,
        due: Vec<(i64, i64, Desired)>,
    ) -> Vec<(i64, i64, String, anyhow::Result<Option<PathBuf>>)> {
        let ctx = Arc::new(PrepareCtx {
            config: self.config.clone(),
            privileged: self.privileged,
            www_gid: self.www_gid,
        });
        let mut prepared = Vec::with_capacity(due.len());
        let mut pending = due.into_iter();
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.len() < PREPARE_AT_ONCE {
                let Some((id, generation, desired)) = pending.next() else {
                    break;
                };
                let ctx = ctx.clone();
                running.spawn_blocking(move || {
                    let name = desired.name.as_str().to_owned();
                    let result = prepare(&ctx, &desired);
                    (id, generation, name, desired, result)
                });
            }
            match running.join_next().await {
                Some(Ok(done)) => prepared.push(done),
                Some(Err(e)) => tracing::error!(error = %e, "a tenant's apply panicked"),
                None => break,
            }
        }
        // The pool files that changed, checked by php-fpm in one run.
        let php_fpm = self.php_fpm();
        let candidates: Vec<&Path> = prepared
            .iter()
            .filter_map(|(.., r)| r.as_ref().ok()?.candidate.as_ref().map(|c| c.path()))
            .collect();
        let mut verdicts = match &php_fpm {
            Ok(php_fpm) => {
                pool::check_all(php_fpm, &self.config.run_dir.pools_dir(), &candidates).await
            }
            Err(e) => candidates.iter().map(|_| Err(format!("{e:#}"))).collect(),
        }
        .into_iter();
        let mut results = Vec::with_capacity(prepared.len());
        for (id, generation, name, desired, result) in prepared {
            let result = match result {
                Ok(p) => {
                    let verdict = p.candidate.as_ref().map(|_| {
                        verdicts
                            .next()
                            .unwrap_or_else(|| Err("not checked".to_owned()))
                    });
                    self.finish(&desired, p, verdict)
                }
                Err(e) => Err(e),
            };
            results.push((id, generation, name, result));
        }
        results
    }

    /// The supervisor's part of an apply: the new pool file put in place (when php-fpm
    /// took it), then the master started, or reloaded gracefully if its file changed.
    /// Returns the socket of a master it started (none when one was running already, or
    /// for a suspended tenant).
    fn finish(
        &mut self,
        t: &Desired,
        p: Prepared,
        verdict: Option<Result<(), String>>,
    ) -> anyhow::Result<Option<PathBuf>> {
        let php_fpm = self.php_fpm()?;
        let key = master_key(&t.name);
        if t.suspended {
            self.supervisor.stop_soon(&key, SUSPEND_GRACE);
            let _ = std::fs::remove_file(&p.paths.socket);
            return Ok(None);
        }
        let running = matches!(self.supervisor.state(&key), Some(State::Running { .. }));
        let changed = match (p.candidate, verdict) {
            (Some(candidate), Some(Ok(()))) => {
                candidate
                    .commit()
                    .with_context(|| format!("installing {}", p.paths.conf.display()))?;
                true
            }
            (Some(_), Some(Err(rejected))) => {
                // The live file stays; if its master is down (an agent restart), it serves again.
                if !running && p.paths.conf.exists() {
                    let launch = Launch::php_fpm(&php_fpm, &p.paths.conf, &p.paths.pid);
                    if self.supervisor.ensure(&key, launch).is_ok() {
                        if let Some(pid) = self.supervisor.pid(&key) {
                            self.limit(&t.name, &t.limits, pid);
                        }
                    }
                }
                bail!(rejected);
            }
            _ => false,
        };
        fault("after-pool", t.name.as_str());
        if running && changed {
            // A graceful reload of this master only: running requests finish.
            self.supervisor.signal(&key, Signal::SIGUSR2);
        } else if !running {
            let launch = Launch::php_fpm(&php_fpm, &p.paths.conf, &p.paths.pid);
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
        // Only a master started now is not listening yet (a reloaded one keeps its socket).
        Ok((!running).then_some(p.paths.socket))
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
    /// Tears down deleted tenants, off the pass: the master is told to stop at once, and
    /// a task of its own archives the home (once, bounded), removes it and the user and
    /// group. The pass only starts removals and collects the finished ones, so a large home
    /// never holds up the other tenants. The UID stays reserved in the store.
    async fn process_removals(&mut self, report: &mut PassReport) -> anyhow::Result<()> {
        let finished: Vec<i64> = self
            .removing
            .iter()
            .filter(|(_, task)| task.is_finished())
            .map(|(id, _)| *id)
            .collect();
        for id in finished {
            let Some(task) = self.removing.remove(&id) else {
                continue;
            };
            match task.await {
                Ok(Ok((name, archived))) => {
                    self.report(Report::Removed { removal_id: id }).await;
                    report.removed += 1;
                    let archive = archived.map_or("no home".to_owned(), |a| a.to_string());
                    tracing::info!(tenant = %name, %archive, "tenant removed");
                }
                Ok(Err(e)) => {
                    tracing::warn!(removal = id, error = %format!("{e:#}"), "removal failed; retrying next pass")
                }
                Err(e) => tracing::error!(removal = id, error = %e, "a removal task panicked"),
            }
        }
        for agent_store::Removal {
            id,
            name: raw,
            uid,
            gid,
        } in agent_store::removals(&self.store).await?
        {
            if self.removing.contains_key(&id) {
                continue;
            }
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
            self.supervisor.stop_soon(&master_key(&name), STOP_GRACE);
            let removal = Removal {
                id,
                name,
                uid,
                gid,
                config: self.config.clone(),
                privileged: self.privileged,
                cgroups: self.cgroups.clone(),
            };
            self.removing.insert(id, tokio::spawn(removal.run()));
        }
        Ok(())
    }
}

/// One deleted tenant being torn down, in a task of its own.
struct Removal {
    id: i64,
    name: TenantName,
    uid: u32,
    gid: u32,
    config: Config,
    privileged: bool,
    cgroups: cgroup::Cgroups,
}

impl Removal {
    async fn run(self) -> anyhow::Result<(TenantName, Option<super::archive::Archived>)> {
        let name = &self.name;
        // The master was told to stop; its workers may still finish requests meanwhile.
        let deadline = Instant::now() + STOP_GRACE + std::time::Duration::from_secs(2);
        while self.privileged && Instant::now() < deadline && !processes_of(self.uid).is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let paths = PoolPaths::new(&self.config.run_dir, name);
        for f in [&paths.conf, &paths.pid, &paths.socket] {
            let _ = std::fs::remove_file(f);
        }
        super::logs::remove_tenant(&self.config.log_dir, name)?;
        let home = self.config.tenants_root.home(name);
        let archived = if home.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            let archived =
                super::archive::home(&self.config.agent_dir, name, self.id, &home).await?;
            let doomed = home.clone();
            tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&doomed))
                .await?
                .with_context(|| format!("removing {}", home.display()))?;
            Some(archived)
        } else {
            None
        };
        if self.privileged {
            let (name, uid, gid) = (name.clone(), self.uid, self.gid);
            tokio::task::spawn_blocking(move || system::remove_tenant_user(&name, uid, gid))
                .await??;
            if self.cgroups.available() {
                let _ = self.cgroups.tenant(self.name.as_str()).remove();
            }
        }
        Ok((self.name, archived))
    }
}

/// The processes running as `uid`, from /proc.
fn processes_of(uid: u32) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            (e.metadata().ok()?.uid() == uid).then_some(pid)
        })
        .collect()
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PassReport {
    pub applied: usize,
    pub errors: usize,
    pub removed: usize,
    pub elapsed_ms: f64,
}
