//! The agent: the only privileged part of lodge. It makes each tenant real on the machine
//! (user, home, PHP-FPM master) and supervises the panel and the masters.
//!
//! `lodge serve` as root: the agent creates the system users `lodge` (panel) and
//! `lodge-www` (proxy), starts the panel as `lodge`, and converges the machine to the store,
//! woken by the panel after each change and by a periodic full pass. As an ordinary user the
//! same code runs without switching users: every pool runs as that user.

mod archive;
pub mod cgroup;
mod health;
mod home;
mod logs;
mod pool;
mod process;
mod proxy;
mod publish;
mod reconcile;
mod supervisor;
mod system;

use crate::config::Config;
use crate::contract::handover::{self, Plan, Socket};
use crate::domain::TenantName;
use anyhow::Context;
use nix::sys::signal::Signal;
use nix::unistd::{chown, Gid, Uid};
use reconcile::Reconciler;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use supervisor::{Event, Launch};

/// How often every tenant is re-applied even without a wake-up.
const FULL_PASS: Duration = Duration::from_secs(30);
/// How often the supervisor looks for exited children.
const TICK: Duration = Duration::from_millis(200);

/// Stops the process at a named point when `LODGE_FAULT=<point>:<tenant>` says so: the
/// tests kill the agent in the middle of an apply this way and check the next start heals.
pub(crate) fn fault(point: &str, tenant: &str) {
    if fault_set(point, tenant) {
        eprintln!("lodge: fault injected at {point} for {tenant}: aborting");
        std::process::abort();
    }
}

/// Whether `LODGE_FAULT=<point>:<tenant>` is set (e.g. `bad-pool`, a pool file php-fpm
/// rejects, which lodge's own checks never produce).
pub(crate) fn fault_set(point: &str, tenant: &str) -> bool {
    std::env::var("LODGE_FAULT").is_ok_and(|wanted| wanted == format!("{point}:{tenant}"))
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Directories: the store's (the panel's), the runtime directory with the sockets (the
/// proxy may pass through), the pool files (root's alone) and the access logs.
fn prepare_dirs(config: &Config, panel: Option<(Uid, Gid)>) -> anyhow::Result<()> {
    let run = &config.run_dir;
    make_data_dir(config, panel)?;
    for dir in [
        run.path().to_owned(),
        run.fpm_dir(),
        run.pools_dir(),
        process::records_dir(run),
        config.agent_dir.clone(),
    ] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    set_mode(&config.agent_dir, 0o700)?;
    set_mode(&process::records_dir(run), 0o700)?;
    if panel.is_some() {
        // The runtime and agent directories are root's.
        for dir in [run.path(), config.agent_dir.as_path()] {
            chown(dir, Some(Uid::from_raw(0)), Some(Gid::from_raw(0)))?;
        }
        crate::nofollow::root_only_path(&config.agent_dir)?;
        set_mode(run.path(), 0o755)?;
        set_mode(&run.fpm_dir(), 0o711)?;
    }
    set_mode(&run.pools_dir(), 0o700)?;
    logs::prepare(&config.log_dir, panel.is_some())?;
    Ok(())
}

/// The store's directory, the panel's own (it makes the store in it); made when missing.
fn make_data_dir(config: &Config, panel: Option<(Uid, Gid)>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    if let Some((uid, gid)) = panel {
        chown(&config.data_dir, Some(uid), Some(gid)).context("chown data dir")?;
        set_mode(&config.data_dir, 0o750)?;
    }
    Ok(())
}

/// As root, for a command that opens the store before any `serve` made its directory: the
/// panel's account and its data directory, as `serve` makes them.
pub(crate) fn make_panel_data_dir(config: &Config) -> anyhow::Result<()> {
    let panel = system::ensure_system_user(system::PANEL_USER)?;
    make_data_dir(config, Some((panel.uid, panel.gid)))
}

/// How to start the panel: this binary's `panel` command, as the `lodge` user when root,
/// with the settings passed in its environment.
fn panel_launch(
    config: &Config,
    panel: Option<(Uid, Gid)>,
    report: &std::os::unix::net::UnixListener,
) -> anyhow::Result<Launch> {
    use std::os::fd::AsRawFd;
    let plan = Plan::new([(Socket::Report, report.as_raw_fd())])?;
    let mut env: Vec<(std::ffi::OsString, std::ffi::OsString)> = vec![
        ("LODGE_DATA_DIR".into(), config.data_dir.clone().into()),
        (
            "LODGE_PANEL_LISTEN".into(),
            config.panel_listen.to_string().into(),
        ),
        (
            "LODGE_UID_RANGE".into(),
            config.uid_range.to_string().into(),
        ),
        (
            "LODGE_TENANTS_ROOT".into(),
            config.tenants_root.path().into(),
        ),
        ("LODGE_RUN_DIR".into(), config.run_dir.path().into()),
        ("LODGE_LOG_DIR".into(), config.log_dir.path().into()),
        (handover::ENV.into(), plan.env_value().into()),
    ];
    if let Some(url) = &config.public_url {
        env.push(("LODGE_PUBLIC_URL".into(), url.into()));
    }
    for passthrough in ["LODGE_LOG"] {
        if let Some(v) = std::env::var_os(passthrough) {
            env.push((passthrough.into(), v));
        }
    }
    Ok(Launch {
        program: std::env::current_exe().context("finding the lodge binary")?,
        args: vec!["panel".into()],
        env,
        user: panel.map(|(u, g)| (u.as_raw(), g.as_raw())),
        pid_file: None,
        stop_signal: Signal::SIGTERM,
        parent_death: Some(Signal::SIGTERM),
        fds: plan.fds(),
    })
}

/// Runs the agent: the panel, the proxy, the masters, the reconciler. SIGTERM or Ctrl-C
/// stops everything; SIGQUIT makes the agent leave the proxy and the masters serving for the
/// next agent, which adopts them (a restart or an upgrade of lodge); SIGHUP reads the
/// settings again and replaces the proxy without dropping a connection.
pub async fn serve(config: Config, settings: crate::config::SettingArgs) -> anyhow::Result<()> {
    let privileged = nix::unistd::geteuid().is_root();
    // 1. lodge's own accounts (root only).
    let (panel, www_gid, log_owners) = if privileged {
        let panel = system::ensure_system_user(system::PANEL_USER)?;
        let www = system::ensure_system_user(system::PROXY_USER)?;
        let log_owners = logs::Owners {
            proxy: www.uid,
            panel: panel.gid,
        };
        (
            Some((panel.uid, panel.gid)),
            Some(www.gid),
            Some(log_owners),
        )
    } else {
        eprintln!(
            "lodge: WARNING: not running as root. The panel, the agent and every tenant's PHP pool run as this \
             user, without separate Linux users: fine for a look, not for hosting."
        );
        (None, None, None)
    };
    if config.php_fpm.is_none() {
        eprintln!("lodge: WARNING: no php-fpm found (install php-fpm or pass --php-fpm); tenants will report an error");
    }
    // 2. directories: the store's belongs to the panel's user, who makes the store in it.
    prepare_dirs(&config, panel)?;
    // 3. what a previous agent left serving is adopted: the masters (kept when their pool
    //    file is still the one wanted, reloaded gracefully otherwise, by the first pass) and
    //    the proxy (its sockets taken back; kept, or replaced while it drains).
    let mut supervisor = supervisor::Supervisor::new(process::records_dir(&config.run_dir));
    adopt_masters(&config, &mut supervisor);
    stop_leftover_panel(&supervisor);
    let proxy_sockets = proxy::start(&mut supervisor, &config, panel, privileged)?;
    // 4. the wake-up socket the panel writes to after each change, and the one the agent
    //    reports on (bound here, handed to the panel; it stays open for a restarted panel).
    let wake = crate::contract::wake::bind(&config.run_dir, panel)?;
    let report = bind_private_socket(&config.run_dir.panel_report())?;
    // 5. the panel, supervised; the agent reads the store once the panel has made it.
    supervisor
        .ensure("panel", panel_launch(&config, panel, &report)?)
        .context("starting the panel")?;
    let store = wait_for_store(&config, &mut supervisor).await?;
    if !crate::store::agent::has_admin(&store).await? {
        eprintln!(
            "lodge: no admin yet. Make one with:\n  echo 'a-long-password' | lodge --data-dir {} user add admin --role admin --password-stdin",
            config.data_dir.display()
        );
    }
    let mut reconciler = Reconciler::new(
        config.clone(),
        store,
        privileged,
        www_gid,
        log_owners,
        supervisor,
    );
    reconciler.proxy_runs = proxy_sockets.serves();
    // 6. health checks of every pool, beside the reconciler.
    let restarts = health::Restarts::default();
    let checks = tokio::spawn(health::run(
        reconciler.store.clone(),
        config.run_dir.clone(),
        restarts.clone(),
        privileged,
    ));
    // 7. converge, then follow changes.
    let mut agent = Running {
        reconciler,
        proxy: proxy_sockets,
        panel,
        privileged,
        settings,
    };
    let exit = agent.run(wake, &restarts).await;
    checks.abort();
    match exit {
        Exit::Stop => {
            agent
                .reconciler
                .supervisor
                .stop_all(supervisor::STOP_GRACE)
                .await
        }
        Exit::Leave => {
            tracing::info!("leaving the proxy and the masters serving for the next agent");
            agent.reconciler.supervisor.leave().await;
        }
    }
    drop(report);
    Ok(())
}

/// Takes over the masters a previous agent recorded. Those of tenants that are gone are
/// stopped by the first full pass.
fn adopt_masters(config: &Config, supervisor: &mut supervisor::Supervisor) {
    let Some(php_fpm) = config.php_fpm.as_deref() else {
        return;
    };
    for key in supervisor.recorded() {
        let Some(tenant) = key
            .strip_prefix("fpm:")
            .and_then(|t| TenantName::parse(t).ok())
        else {
            continue;
        };
        let paths = pool::PoolPaths::new(&config.run_dir, &tenant);
        supervisor.adopt(&key, Launch::php_fpm(php_fpm, &paths.conf, &paths.pid));
    }
}

/// A panel a previous agent started should have ended with it (it is not on the serving
/// path); one that did not would hold the panel's port.
fn stop_leftover_panel(supervisor: &supervisor::Supervisor) {
    let dir = supervisor.records_dir();
    if let Some(record) = process::load(&dir, "panel") {
        if let Ok(p) = process::Pidfd::adopt(&record) {
            tracing::info!(pid = p.pid, "stopping a panel a previous agent left");
            let _ = p.signal(Signal::SIGTERM);
        }
        process::forget(&dir, "panel");
    }
}

/// How the agent ends.
enum Exit {
    /// Everything stops (SIGTERM, Ctrl-C).
    Stop,
    /// The servers keep serving for the next agent (SIGQUIT).
    Leave,
}

/// The running agent: what a SIGHUP needs besides the reconciler.
struct Running {
    reconciler: Reconciler,
    proxy: proxy::ProxySockets,
    panel: Option<(Uid, Gid)>,
    privileged: bool,
    settings: crate::config::SettingArgs,
}

impl Running {
    /// SIGHUP: the settings read again, the proxy replaced (the old one drains).
    fn reload(&mut self) {
        let config = match Config::load(&self.settings) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "reading the settings again failed; nothing changed");
                return;
            }
        };
        let old = &self.reconciler.config;
        if config.run_dir != old.run_dir
            || config.data_dir != old.data_dir
            || config.tenants_root != old.tenants_root
        {
            tracing::warn!("the directories changed: they take effect when lodge is started again");
        }
        let mut next = old.clone();
        next.http_listen = config.http_listen;
        next.https_listen = config.https_listen;
        next.php_fpm = config.php_fpm;
        let held = std::mem::take(&mut self.proxy);
        match proxy::restart(
            &mut self.reconciler.supervisor,
            &next,
            self.panel,
            self.privileged,
            held,
        ) {
            Ok(sockets) => {
                self.reconciler.proxy_runs = sockets.serves();
                self.proxy = sockets;
                tracing::info!("settings read again; the proxy was replaced");
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "replacing the proxy failed"),
        }
        self.reconciler.config = next;
    }

    async fn run(&mut self, wake: tokio::net::UnixDatagram, restarts: &health::Restarts) -> Exit {
        use tokio::signal::unix::{signal, SignalKind};
        let mut full = tokio::time::interval(FULL_PASS);
        // After a long pass, the next full pass waits its turn instead of running back to back.
        full.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut reopen = signal(SignalKind::user_defined1()).ok();
        let mut hangup = signal(SignalKind::hangup()).ok();
        let mut quit = signal(SignalKind::quit()).ok();
        let shutdown = crate::contract::signals::shutdown();
        tokio::pin!(shutdown);
        let mut buf = [0u8; 64];
        loop {
            let full_pass = tokio::select! {
                _ = &mut shutdown => return Exit::Stop,
                _ = recv(&mut quit) => return Exit::Leave,
                _ = tick.tick() => {
                    self.supervise(restarts).await;
                    continue;
                }
                _ = recv(&mut reopen) => {
                    // Log rotation: the masters and the proxy reopen their log files.
                    let s = &self.reconciler.supervisor;
                    for key in s.keys().iter().filter(|k| k.starts_with("fpm:") || *k == proxy::KEY) {
                        s.signal(key, Signal::SIGUSR1);
                    }
                    continue;
                }
                _ = recv(&mut hangup) => {
                    self.reload();
                    false
                }
                _ = wake.recv(&mut buf) => {
                    // Several changes in a burst make one pass.
                    while wake.try_recv(&mut buf).is_ok() {}
                    false
                }
                _ = full.tick() => true,
            };
            match self.reconciler.pass(full_pass).await {
                Ok(report) if report.applied > 0 || report.removed > 0 => {
                    tracing::info!(
                        applied = report.applied,
                        errors = report.errors,
                        removed = report.removed,
                        ms = report.elapsed_ms,
                        full = full_pass,
                        "pass"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %format!("{e:#}"), "reconcile pass failed"),
            }
        }
    }

    /// Restarts what died, and records crash loops.
    async fn supervise(&mut self, restarts: &health::Restarts) {
        let r = &mut self.reconciler;
        for event in r.supervisor.tick() {
            match event {
                Event::CrashLoop { key, message } => {
                    if let Err(e) = r.crash_loop(&key, &message).await {
                        tracing::error!(error = %e, "recording a crash loop");
                    }
                }
                Event::Restarted { key, restarts: n } => {
                    tracing::info!(service = %key, restarts = n, "restarted");
                    if let (Some(tenant), Ok(mut counts)) =
                        (key.strip_prefix("fpm:"), restarts.lock())
                    {
                        counts.insert(tenant.to_owned(), n);
                    }
                }
            }
        }
    }
}

/// The next delivery of a signal this process may not be able to watch.
async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal.as_mut() {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// A socket only the agent connects to (the proxy's control socket, the panel's report
/// socket), bound here in the root-owned run directory and handed to the child that serves
/// it: root's alone (0600).
pub(crate) fn bind_private_socket(path: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    // Bound with root's umask, then closed to everyone else before anything can connect
    // that matters: only root may connect to a 0600 socket.
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    set_mode(path, 0o600)?;
    Ok(listener)
}

/// How long the panel may take to make (or migrate) the store before the agent gives up.
const STORE_WAIT: Duration = Duration::from_secs(120);

/// Opens the store read-only once the panel has made and migrated it, keeping the panel
/// supervised meanwhile.
async fn wait_for_store(
    config: &Config,
    supervisor: &mut supervisor::Supervisor,
) -> anyhow::Result<crate::store::StoreReader> {
    let deadline = std::time::Instant::now() + STORE_WAIT;
    let mut said = false;
    loop {
        match crate::store::StoreReader::open(&config.database_path()).await {
            Ok(store) => return Ok(store),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(e.context("the panel did not make the store"))
            }
            Err(e) => {
                if !said {
                    tracing::info!(error = %format!("{e:#}"), "waiting for the panel to make the store");
                    said = true;
                }
            }
        }
        supervisor.tick();
        tokio::time::sleep(TICK).await;
    }
}
