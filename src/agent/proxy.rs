//! The proxy as the agent runs it: the sockets it serves on (bound here, since only root
//! may bind :80, or taken back from a running proxy), its launch as `lodge-www`, and its
//! replacement without a dropped connection.
//!
//! A proxy outlives the agent. A restarted agent takes the running proxy's sockets back with
//! `pidfd_getfd(2)` (the numbers are in its `LODGE_FDS`), so the listening sockets are never
//! closed: then it adopts that proxy if it runs this binary with these settings, or starts a
//! new one on the same sockets and tells the old one to drain (SIGTERM: it stops accepting
//! and finishes the requests it has, within a bound), as nginx's binary upgrade does.

use super::process::Pidfd;
use super::supervisor::{Launch, Supervisor};
use super::system;
use crate::config::Config;
use crate::contract::handover::{self, Plan, Socket};
use anyhow::Context;
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::Duration;

/// The supervisor's key of the proxy.
pub const KEY: &str = "proxy";
/// How long a replaced proxy may take to finish its open requests.
pub const DRAIN: Duration = Duration::from_secs(30);

/// The sockets the proxy serves on, held by the agent for as long as it runs: a proxy that
/// is restarted is handed the same ones.
#[derive(Debug, Default)]
pub struct ProxySockets {
    pub http: Option<TcpListener>,
    pub https: Option<TcpListener>,
    pub metrics: Option<UnixListener>,
    pub control: Option<UnixListener>,
}

impl ProxySockets {
    /// Whether there is anything to serve on (both listeners may be off).
    pub fn serves(&self) -> bool {
        self.http.is_some() || self.https.is_some()
    }

    /// The sockets the settings ask for: each listener taken from `taken` where it listens
    /// on the address asked for, bound afresh otherwise; the metrics and control sockets
    /// taken too, or bound in the run directory.
    pub fn from_settings(
        config: &Config,
        panel: Option<(Uid, Gid)>,
        mut taken: ProxySockets,
    ) -> anyhow::Result<Self> {
        let listener = |socket: Socket,
                        wanted: Option<std::net::SocketAddr>,
                        old: Option<TcpListener>| {
            let Some(addr) = wanted else {
                return Ok::<_, anyhow::Error>(None);
            };
            // Port 0 asks for any free port: the one held is that.
            let fits =
                |a: std::net::SocketAddr| a == addr || (addr.port() == 0 && a.ip() == addr.ip());
            if let Some(old) = old.filter(|l| l.local_addr().is_ok_and(fits)) {
                return Ok(Some(old));
            }
            let l = TcpListener::bind(addr).with_context(|| {
                format!("binding the proxy's {} listener to {addr}", socket.name())
            })?;
            Ok(Some(l))
        };
        let http = listener(Socket::Http, config.http_listen, taken.http.take())?;
        let https = listener(Socket::Https, config.https_listen, taken.https.take())?;
        let mut sockets = ProxySockets {
            http,
            https,
            ..Default::default()
        };
        if sockets.serves() {
            sockets.metrics = match taken.metrics.take() {
                Some(m) => Some(m),
                None => Some(bind_metrics_socket(config, panel)?),
            };
            sockets.control = match taken.control.take() {
                Some(c) => Some(c),
                None => Some(super::bind_private_socket(&config.run_dir.proxy_control())?),
            };
        }
        Ok(sockets)
    }

    /// Copies of a running proxy's sockets, by the numbers its `LODGE_FDS` names.
    pub fn take_from(proxy: &Pidfd) -> anyhow::Result<Self> {
        let spec = proxy
            .env(handover::ENV)
            .context("the running proxy names no sockets")?;
        let mut sockets = ProxySockets::default();
        for (socket, fd) in handover::parse(&spec)? {
            let ours: OwnedFd = proxy
                .take_fd(fd)
                .with_context(|| format!("taking the proxy's {} socket", socket.name()))?;
            handover::check_listening(ours.as_raw_fd(), socket)?;
            match socket {
                Socket::Http => sockets.http = Some(TcpListener::from(ours)),
                Socket::Https => sockets.https = Some(TcpListener::from(ours)),
                Socket::Metrics => sockets.metrics = Some(UnixListener::from(ours)),
                Socket::Control => sockets.control = Some(UnixListener::from(ours)),
                // Not a proxy's socket: the copy is closed again.
                Socket::Report => drop(ours),
            }
        }
        Ok(sockets)
    }

    /// What the addresses are, to compare a running proxy with the settings.
    fn addresses(&self) -> (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>) {
        (
            self.http.as_ref().and_then(|l| l.local_addr().ok()),
            self.https.as_ref().and_then(|l| l.local_addr().ok()),
        )
    }
}

/// The socket the proxy serves its metrics on, bound here in the root-owned run directory
/// and handed over: root:lodge 0660, so the panel connects and tenants cannot.
fn bind_metrics_socket(config: &Config, panel: Option<(Uid, Gid)>) -> anyhow::Result<UnixListener> {
    let path = config.run_dir.proxy_metrics();
    let _ = std::fs::remove_file(&path);
    // Bound with root's umask: nobody else may connect before the owner and mode are set.
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    if let Some((_, gid)) = panel {
        nix::unistd::fchownat(
            None,
            &path,
            Some(Uid::from_raw(0)),
            Some(gid),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .with_context(|| format!("chown {}", path.display()))?;
        super::set_mode(&path, 0o660)?;
    } else {
        super::set_mode(&path, 0o600)?;
    }
    Ok(listener)
}

/// How to start the proxy: `lodge proxy` as lodge-www (root) with the sockets handed over.
pub fn launch(config: &Config, sockets: &ProxySockets, privileged: bool) -> anyhow::Result<Launch> {
    let plan = Plan::new(
        [
            (Socket::Http, sockets.http.as_ref().map(AsRawFd::as_raw_fd)),
            (
                Socket::Https,
                sockets.https.as_ref().map(AsRawFd::as_raw_fd),
            ),
            (
                Socket::Metrics,
                sockets.metrics.as_ref().map(AsRawFd::as_raw_fd),
            ),
            (
                Socket::Control,
                sockets.control.as_ref().map(AsRawFd::as_raw_fd),
            ),
        ]
        .into_iter()
        .filter_map(|(s, fd)| Some((s, fd?))),
    )?;
    let user = if privileged {
        let u = nix::unistd::User::from_name(system::PROXY_USER)?
            .with_context(|| format!("no user {}", system::PROXY_USER))?;
        Some((u.uid.as_raw(), u.gid.as_raw()))
    } else {
        None
    };
    let mut env: Vec<(std::ffi::OsString, std::ffi::OsString)> = vec![
        ("LODGE_RUN_DIR".into(), config.run_dir.path().into()),
        (handover::ENV.into(), plan.env_value().into()),
        ("LODGE_LOG_DIR".into(), config.log_dir.path().into()),
    ];
    for passthrough in ["LODGE_LOG", "LODGE_PROXY_THREADS"] {
        if let Some(v) = std::env::var_os(passthrough) {
            env.push((passthrough.into(), v));
        }
    }
    Ok(Launch {
        program: std::env::current_exe().context("finding the lodge binary")?,
        args: vec!["proxy".into()],
        env,
        user,
        pid_file: None,
        // A stop is a drain: it finishes what it serves.
        stop_signal: Signal::SIGTERM,
        // It serves every site: it outlives the agent.
        parent_death: None,
        fds: plan.fds(),
    })
}

/// Starts the proxy, or takes over the one a previous agent left: its sockets come back,
/// and it is kept when it runs this binary on the sockets the settings ask for, or replaced
/// by a new one on the same sockets (the old one drains). Returns the sockets the agent
/// holds from now on.
pub fn start(
    supervisor: &mut Supervisor,
    config: &Config,
    panel: Option<(Uid, Gid)>,
    privileged: bool,
) -> anyhow::Result<ProxySockets> {
    let left = super::process::load(&supervisor.records_dir(), KEY)
        .filter(|r| r.matches_live())
        .and_then(|r| Pidfd::adopt(&r).ok().map(|p| (r, p)));
    let Some((record, old)) = left else {
        let sockets = ProxySockets::from_settings(config, panel, ProxySockets::default())?;
        if sockets.serves() {
            supervisor
                .ensure(KEY, launch(config, &sockets, privileged)?)
                .context("starting the proxy")?;
        }
        return Ok(sockets);
    };
    let taken = match ProxySockets::take_from(&old) {
        Ok(taken) => taken,
        Err(e) => {
            // Without its sockets (not root: no pidfd_getfd), it is stopped first, then
            // the sockets bound again: a moment without a proxy.
            tracing::warn!(error = %format!("{e:#}"), "cannot take the running proxy's sockets; restarting it");
            let _ = old.signal(Signal::SIGTERM);
            wait_gone(&old, DRAIN);
            let sockets = ProxySockets::from_settings(config, panel, ProxySockets::default())?;
            if sockets.serves() {
                supervisor.ensure(KEY, launch(config, &sockets, privileged)?)?;
            }
            return Ok(sockets);
        }
    };
    let before = taken.addresses();
    let sockets = ProxySockets::from_settings(config, panel, taken)?;
    let same_binary = record.program_unchanged()
        && std::env::current_exe()
            .ok()
            .and_then(|e| std::fs::canonicalize(e).ok())
            .is_some_and(|e| e == record.exe);
    let launch = launch(config, &sockets, privileged)?;
    if same_binary
        && sockets.addresses() == before
        && sockets.serves()
        && same_settings(&old, &launch)
    {
        drop(old);
        if supervisor.adopt(KEY, launch).is_some() {
            return Ok(sockets);
        }
        anyhow::bail!("the running proxy could not be adopted");
    }
    // Another binary (an upgrade) or other settings: a new proxy on the same sockets, then
    // the old one drains.
    tracing::info!(
        pid = old.pid,
        "replacing the running proxy; it drains its open requests"
    );
    super::process::forget(&supervisor.records_dir(), KEY);
    if sockets.serves() {
        supervisor
            .ensure(KEY, launch)
            .context("starting the proxy")?;
    }
    supervisor.retire(
        super::supervisor::Proc::Adopted(old),
        Signal::SIGTERM,
        DRAIN,
    );
    Ok(sockets)
}

/// Replaces the running proxy (SIGHUP, or settings read again): a new one on the sockets
/// the settings ask for, then the old one drains.
pub fn restart(
    supervisor: &mut Supervisor,
    config: &Config,
    panel: Option<(Uid, Gid)>,
    privileged: bool,
    held: ProxySockets,
) -> anyhow::Result<ProxySockets> {
    let sockets = ProxySockets::from_settings(config, panel, held)?;
    let old = supervisor.release(KEY);
    if sockets.serves() {
        supervisor
            .ensure(KEY, launch(config, &sockets, privileged)?)
            .context("starting the new proxy")?;
    }
    if let Some(old) = old {
        supervisor.retire(old, Signal::SIGTERM, DRAIN);
    }
    Ok(sockets)
}

/// Whether the running proxy was started with the settings `launch` gives (its
/// environment, the sockets' numbers aside).
fn same_settings(old: &Pidfd, launch: &Launch) -> bool {
    let Some(mut running) = old.environment() else {
        return false;
    };
    // PATH is the supervisor's own, the same for every child.
    running.retain(|(k, _)| k != handover::ENV && k != "PATH");
    let mut wanted: Vec<(String, String)> = launch
        .env
        .iter()
        .filter(|(k, _)| k != handover::ENV)
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    running.sort();
    wanted.sort();
    running == wanted
}

fn wait_gone(p: &Pidfd, bound: Duration) {
    let deadline = std::time::Instant::now() + bound;
    while !p.exited() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !p.exited() {
        let _ = p.signal(Signal::SIGKILL);
    }
}
