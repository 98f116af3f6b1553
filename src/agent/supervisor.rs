//! The supervisor: starts the panel, the proxy and one php-fpm master per tenant, each in
//! its own process group, restarts what dies with exponential back-off, stops a crash loop,
//! and signals masters: SIGUSR2 to reload a changed file, SIGUSR1 to reopen logs, SIGQUIT to
//! stop gracefully.
//!
//! What serves sites (the proxy, the masters) outlives the agent: no parent-death signal,
//! and a record of each process in `<run-dir>/pids/` (`process`). A restarted agent adopts
//! them ([`Supervisor::adopt`]) and supervises them as its own children, through a pidfd.

use super::process::{self, Pidfd, Record};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// More crashes than this within `CRASH_WINDOW` is a crash loop: no more restarts until the
/// next apply.
const CRASH_LIMIT: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a graceful stop may take before SIGKILL (php-fpm's process_control_timeout + 2 s).
pub const STOP_GRACE: Duration = Duration::from_secs(32);

/// How to start a service.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    /// Run as this user and group (root only); `None` keeps the agent's own.
    pub user: Option<(u32, u32)>,
    /// A pid file the service writes (php-fpm), removed when it stops.
    pub pid_file: Option<PathBuf>,
    /// The signal that stops it gracefully.
    pub stop_signal: Signal,
    /// A signal the kernel sends it when the agent dies (the panel must not outlive the
    /// agent; tenant masters do, and keep serving until the next agent takes over).
    pub parent_death: Option<Signal>,
    /// Descriptors to hand over: (descriptor in the agent, number in the child). The
    /// proxy gets its listening sockets this way and never needs root to bind :80 or :443.
    pub fds: Vec<(i32, i32)>,
}

impl Launch {
    /// A php-fpm master in the foreground with the given pool file.
    pub fn php_fpm(php_fpm: &Path, conf: &Path, pid_file: &Path) -> Self {
        Self {
            program: php_fpm.to_owned(),
            // Foreground; its messages go to the pool's own log (error_log), not the agent's.
            args: vec!["-F".into(), "-y".into(), conf.into()],
            env: Vec::new(),
            user: None,
            pid_file: Some(pid_file.to_owned()),
            stop_signal: Signal::SIGQUIT,
            parent_death: None,
            fds: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Running {
        pid: u32,
    },
    /// Died; starts again at the given time.
    Waiting,
    /// Died too often; left stopped until `reset`.
    CrashLoop(String),
}

/// A running service: a child of this agent, or one a previous agent started.
pub enum Proc {
    Child(Child),
    Adopted(Pidfd),
}

impl Proc {
    fn id(&self) -> Option<u32> {
        match self {
            Proc::Child(c) => c.id(),
            Proc::Adopted(p) => (!p.exited()).then_some(p.pid),
        }
    }

    /// `Some(how)` once it has exited.
    fn try_exited(&mut self) -> std::io::Result<Option<String>> {
        match self {
            Proc::Child(c) => Ok(c.try_wait()?.map(|status| status.to_string())),
            Proc::Adopted(p) => Ok(p.exited().then(|| "exited".to_owned())),
        }
    }

    fn signal(&self, signal: Signal) -> bool {
        match self {
            Proc::Child(c) => c.id().is_some_and(|pid| {
                nix::sys::signal::kill(Pid::from_raw(pid as i32), signal).is_ok()
            }),
            Proc::Adopted(p) => p.signal(signal).is_ok(),
        }
    }

    async fn wait(&mut self) {
        match self {
            Proc::Child(c) => {
                let _ = c.wait().await;
            }
            Proc::Adopted(p) => p.wait().await,
        }
    }

    fn start_kill(&mut self) {
        match self {
            Proc::Child(c) => {
                let _ = c.start_kill();
            }
            Proc::Adopted(p) => {
                let _ = p.signal(Signal::SIGKILL);
            }
        }
    }
}

struct Service {
    launch: Launch,
    child: Option<Proc>,
    crashes: VecDeque<Instant>,
    next_start: Option<Instant>,
    crash_loop: Option<String>,
    restarts: u32,
    /// The process group of the last child started (its pid).
    last_pid: Option<u32>,
}

/// Something the reconciler should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Restarted { key: String, restarts: u32 },
    CrashLoop { key: String, message: String },
}

pub struct Supervisor {
    services: HashMap<String, Service>,
    /// Services told to stop whose exit is awaited by `tick`: (process, kill it after).
    stopping: Vec<(Proc, Instant)>,
    /// Where each started process is recorded (none: not recorded, in unit tests).
    records: Option<PathBuf>,
    /// The first step of the back-off (1 s; the tests use less).
    backoff_unit: Duration,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self {
            services: HashMap::new(),
            backoff_unit: Duration::from_secs(1),
            stopping: Vec::new(),
            records: None,
        }
    }
}

fn spawn(launch: &Launch) -> std::io::Result<Child> {
    let mut cmd = Command::new(&launch.program);
    cmd.args(&launch.args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        // Its own process group: a terminal's Ctrl-C reaches the agent, which stops the
        // children in order, instead of reaching every child at once.
        .process_group(0)
        .kill_on_drop(false);
    let parent_death = launch.parent_death;
    let fds = launch.fds.clone();
    if parent_death.is_some() || !fds.is_empty() {
        // SAFETY: only async-signal-safe system calls (prctl, dup2, fcntl) run between fork
        // and exec; nothing is allocated.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(signal) = parent_death {
                    nix::sys::prctl::set_pdeathsig(signal).map_err(std::io::Error::from)?;
                }
                for &(from, to) in &fds {
                    if from == to {
                        nix::fcntl::fcntl(
                            to,
                            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                        )?;
                    } else {
                        nix::unistd::dup2(from, to)?;
                    }
                }
                Ok(())
            });
        }
    }
    if let Some((uid, gid)) = launch.user {
        // std drops supplementary groups (setgroups(0)) when switching from root.
        cmd.uid(uid).gid(gid);
    }
    cmd.spawn()
}

impl Supervisor {
    /// A supervisor that records what it starts in `records` (root's alone).
    pub fn new(records: PathBuf) -> Self {
        Self {
            records: Some(records),
            ..Self::default()
        }
    }

    fn start(&self, key: &str, launch: &Launch) -> std::io::Result<Proc> {
        let child = spawn(launch)?;
        if let (Some(dir), Some(pid)) = (&self.records, child.id()) {
            match Record::of(pid).and_then(|r| process::save(dir, key, &r)) {
                Ok(()) => {}
                Err(e) => tracing::warn!(service = key, error = %e, "recording a started process"),
            }
        }
        Ok(Proc::Child(child))
    }

    /// Takes over `key`'s process that a previous agent started, if its record names a
    /// process that still runs `launch`'s program: from now on it is supervised (restarted
    /// when it dies, stopped with the others) as if it were a child. A record that names
    /// another program or a reused pid is dropped, and that process left alone.
    pub fn adopt(&mut self, key: &str, launch: Launch) -> Option<u32> {
        let dir = self.records.as_ref()?;
        let record = process::load(dir, key)?;
        let program = std::fs::canonicalize(&launch.program).unwrap_or(launch.program.clone());
        let pidfd = match Pidfd::adopt(&record) {
            Ok(p) if record.exe == program => p,
            Ok(_) | Err(_) => {
                tracing::info!(
                    service = key,
                    pid = record.pid,
                    "a record names a process that is not ours now; left alone"
                );
                process::forget(dir, key);
                return None;
            }
        };
        let pid = pidfd.pid;
        self.services.insert(
            key.to_owned(),
            Service {
                launch,
                child: Some(Proc::Adopted(pidfd)),
                crashes: VecDeque::new(),
                next_start: None,
                crash_loop: None,
                restarts: 0,
                last_pid: Some(pid),
            },
        );
        tracing::info!(service = key, pid, "adopted");
        Some(pid)
    }

    /// The keys of every process a previous agent recorded.
    pub fn recorded(&self) -> Vec<String> {
        self.records
            .as_deref()
            .map(process::keys)
            .unwrap_or_default()
    }

    /// Forgets `key` without stopping it (its record goes too): a replaced proxy that is
    /// draining, say.
    pub fn release(&mut self, key: &str) -> Option<Proc> {
        if let Some(dir) = &self.records {
            process::forget(dir, key);
        }
        self.services.remove(key)?.child
    }

    /// Makes a process that was released wind down: `signal`, then SIGKILL to its group
    /// after `grace` (reaped by `tick`).
    pub fn retire(&mut self, process: Proc, signal: Signal, grace: Duration) {
        process.signal(signal);
        self.stopping.push((process, Instant::now() + grace));
    }

    /// Where the records are (a directory nothing uses, for a supervisor without them).
    pub fn records_dir(&self) -> PathBuf {
        self.records.clone().unwrap_or_default()
    }

    fn forget_record(&self, key: &str) {
        if let Some(dir) = &self.records {
            process::forget(dir, key);
        }
    }

    /// A supervisor whose back-off starts at `unit` instead of one second.
    #[cfg(test)]
    pub fn with_backoff_unit(unit: Duration) -> Self {
        Self {
            backoff_unit: unit,
            ..Self::default()
        }
    }

    /// Makes sure `key` runs with `launch`: starts it if it is not running and not waiting
    /// out a back-off. A crash loop is cleared (an apply is a new attempt).
    pub fn ensure(&mut self, key: &str, launch: Launch) -> std::io::Result<State> {
        let service = self
            .services
            .entry(key.to_owned())
            .or_insert_with(|| Service {
                launch: launch.clone(),
                child: None,
                crashes: VecDeque::new(),
                next_start: None,
                crash_loop: None,
                restarts: 0,
                last_pid: None,
            });
        service.launch = launch;
        if service.crash_loop.take().is_some() {
            service.crashes.clear();
            service.next_start = None;
        }
        if service.child.is_none() && service.next_start.is_none_or(|t| t <= Instant::now()) {
            let launch = service.launch.clone();
            let child = self.start(key, &launch)?;
            let service = self.services.get_mut(key).expect("inserted above");
            service.next_start = None;
            service.last_pid = child.id();
            service.child = Some(child);
        }
        Ok(self.state(key).unwrap_or(State::Waiting))
    }

    pub fn state(&self, key: &str) -> Option<State> {
        let s = self.services.get(key)?;
        Some(match (&s.child, &s.crash_loop) {
            (_, Some(message)) => State::CrashLoop(message.clone()),
            (Some(child), None) => match child.id() {
                Some(pid) => State::Running { pid },
                None => State::Waiting,
            },
            (None, None) => State::Waiting,
        })
    }

    pub fn pid(&self, key: &str) -> Option<u32> {
        self.services.get(key)?.child.as_ref()?.id()
    }

    #[cfg(test)]
    pub fn restarts(&self, key: &str) -> u32 {
        self.services.get(key).map(|s| s.restarts).unwrap_or(0)
    }

    pub fn keys(&self) -> Vec<String> {
        self.services.keys().cloned().collect()
    }

    /// Sends a signal to a running service's main process.
    pub fn signal(&self, key: &str, signal: Signal) -> bool {
        self.services
            .get(key)
            .and_then(|s| s.child.as_ref())
            .is_some_and(|p| p.signal(signal))
    }

    /// Reaps what exited, restarts what is due, and reports restarts and crash loops.
    pub fn tick(&mut self) -> Vec<Event> {
        let now_reap = Instant::now();
        self.stopping
            .retain_mut(|(child, deadline)| match child.try_exited() {
                Ok(Some(_)) | Err(_) => false,
                Ok(None) if now_reap >= *deadline => {
                    if let Some(pid) = child.id() {
                        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    }
                    child.start_kill();
                    true
                }
                Ok(None) => true,
            });
        let now = Instant::now();
        let mut events = Vec::new();
        let unit = self.backoff_unit;
        let mut restart = Vec::new();
        for (key, s) in self.services.iter_mut() {
            if let Some(child) = s.child.as_mut() {
                match child.try_exited() {
                    Ok(None) => continue,
                    Ok(Some(status)) => {
                        tracing::warn!(service = %key, %status, "service exited; restarting");
                        // Workers of a killed master would keep the old socket: end the group.
                        if let Some(pid) = s.last_pid {
                            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                        }
                        s.child = None;
                        if let Some(pid) = &s.launch.pid_file {
                            let _ = std::fs::remove_file(pid);
                        }
                        s.crashes.push_back(now);
                        while s
                            .crashes
                            .front()
                            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
                        {
                            s.crashes.pop_front();
                        }
                        if s.crashes.len() > CRASH_LIMIT {
                            let message = format!("{key} died {} times within a minute (last: {status}); not restarting", s.crashes.len());
                            s.crash_loop = Some(message.clone());
                            events.push(Event::CrashLoop {
                                key: key.clone(),
                                message,
                            });
                            continue;
                        }
                        // The first crash restarts at once, then 1 s, 2 s, 4 s ... up to 30 s.
                        let n = s.crashes.len() as u32;
                        let delay = if n <= 1 {
                            Duration::ZERO
                        } else {
                            (unit * (1 << (n - 2).min(5))).min(MAX_BACKOFF)
                        };
                        s.next_start = Some(now + delay);
                    }
                    Err(e) => {
                        tracing::error!(service = %key, error = %e, "waiting for a child");
                        continue;
                    }
                }
            }
            if s.child.is_none() && s.crash_loop.is_none() && s.next_start.is_some_and(|t| t <= now)
            {
                restart.push(key.clone());
            }
        }
        for key in restart {
            let launch = self.services[&key].launch.clone();
            let started = self.start(&key, &launch);
            let s = self.services.get_mut(&key).expect("listed above");
            match started {
                Ok(child) => {
                    s.last_pid = child.id();
                    s.child = Some(child);
                    s.next_start = None;
                    s.restarts += 1;
                    events.push(Event::Restarted {
                        key: key.clone(),
                        restarts: s.restarts,
                    });
                }
                Err(e) => {
                    tracing::error!(service = %key, error = %e, "restart failed");
                    s.next_start = Some(now + Duration::from_secs(5));
                }
            }
        }
        events
    }

    /// Stops a service gracefully (its stop signal to the whole process group), then kills
    /// what is left after `grace`. The service is forgotten.
    #[cfg(test)]
    pub async fn stop(&mut self, key: &str, grace: Duration) {
        let Some(mut s) = self.services.remove(key) else {
            return;
        };
        self.forget_record(key);
        if let Some(mut child) = s.child.take() {
            stop_child(&mut child, s.launch.stop_signal, grace).await;
        }
        if let Some(pid) = &s.launch.pid_file {
            let _ = std::fs::remove_file(pid);
        }
    }

    /// Tells a service to stop (its stop signal to the whole group) without waiting: `tick`
    /// reaps it, and kills what is left after `grace`. The service is forgotten at once, so
    /// a suspended tenant does not hold up the agent while its last requests finish.
    pub fn stop_soon(&mut self, key: &str, grace: Duration) {
        let Some(mut s) = self.services.remove(key) else {
            return;
        };
        self.forget_record(key);
        if let Some(child) = s.child.take() {
            if let Some(pid) = child.id() {
                let _ = killpg(Pid::from_raw(pid as i32), s.launch.stop_signal);
            }
            self.stopping.push((child, Instant::now() + grace));
        }
        if let Some(pid) = &s.launch.pid_file {
            let _ = std::fs::remove_file(pid);
        }
    }

    /// Leaves every service running for the next agent to adopt (their records stay); only
    /// what was already stopping is seen to the end.
    pub async fn leave(&mut self) {
        let stopping = std::mem::take(&mut self.stopping)
            .into_iter()
            .map(|(mut child, deadline)| async move { finish(&mut child, deadline).await });
        futures_util::future::join_all(stopping).await;
        self.services.clear();
    }

    /// Stops everything, masters first, in parallel.
    pub async fn stop_all(&mut self, grace: Duration) {
        if let Some(dir) = &self.records {
            for key in self.services.keys() {
                process::forget(dir, key);
            }
        }
        let services: Vec<(String, Service)> = self.services.drain().collect();
        let stops = services.into_iter().map(|(_, mut s)| async move {
            if let Some(mut child) = s.child.take() {
                stop_child(&mut child, s.launch.stop_signal, grace).await;
            }
            if let Some(pid) = &s.launch.pid_file {
                let _ = std::fs::remove_file(pid);
            }
        });
        // Services already told to stop (a suspended tenant's master) finish within their
        // own deadline, or are killed: nothing outlives the agent's shutdown.
        let stopping = std::mem::take(&mut self.stopping)
            .into_iter()
            .map(|(mut child, deadline)| async move { finish(&mut child, deadline).await });
        futures_util::future::join_all(stops).await;
        futures_util::future::join_all(stopping).await;
    }
}

/// Waits for a stopping process until `deadline`, then kills its group.
async fn finish(child: &mut Proc, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    if tokio::time::timeout(left, child.wait()).await.is_err() {
        if let Some(pid) = child.id() {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        child.start_kill();
        child.wait().await;
    }
}

async fn stop_child(child: &mut Proc, signal: Signal, grace: Duration) {
    if let Some(pid) = child.id() {
        // The group: the master and its workers.
        let _ = killpg(Pid::from_raw(pid as i32), signal);
    }
    finish(child, Instant::now() + grace).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(program: &str, args: &[&str]) -> Launch {
        Launch {
            program: program.into(),
            args: args.iter().map(Into::into).collect(),
            env: Vec::new(),
            user: None,
            pid_file: None,
            stop_signal: Signal::SIGTERM,
            parent_death: None,
            fds: Vec::new(),
        }
    }

    #[tokio::test]
    async fn restarts_with_backoff_then_declares_a_crash_loop() {
        let mut sup = Supervisor::with_backoff_unit(Duration::from_millis(10));
        sup.ensure("crasher", launch("/bin/false", &[])).unwrap();
        let mut restarts = 0;
        let mut crash_loop = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while crash_loop.is_none() && Instant::now() < deadline {
            for event in sup.tick() {
                match event {
                    Event::Restarted { .. } => restarts += 1,
                    Event::CrashLoop { message, .. } => crash_loop = Some(message),
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(restarts, CRASH_LIMIT, "restarted until the limit");
        assert!(crash_loop.is_some_and(|m| m.contains("crasher")));
        assert!(matches!(sup.state("crasher"), Some(State::CrashLoop(_))));
        // Stays down: more ticks start nothing.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(sup.tick().is_empty());
        // A new apply is a new attempt.
        sup.ensure("crasher", launch("/bin/sleep", &["5"])).unwrap();
        assert!(matches!(sup.state("crasher"), Some(State::Running { .. })));
        sup.stop("crasher", Duration::from_secs(2)).await;
        assert!(sup.state("crasher").is_none());
    }

    #[tokio::test]
    async fn a_killed_service_is_restarted_at_once() {
        let mut sup = Supervisor::default();
        sup.ensure("sleeper", launch("/bin/sleep", &["30"]))
            .unwrap();
        let first = sup.pid("sleeper").unwrap();
        nix::sys::signal::kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while sup.pid("sleeper").is_none_or(|p| p == first) {
            assert!(Instant::now() < deadline, "not restarted");
            sup.tick();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(sup.restarts("sleeper"), 1);
        sup.stop_all(Duration::from_secs(2)).await;
    }
}
