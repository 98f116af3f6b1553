//! The agent as root, through the real binary, real php-fpm and real Linux users: a tenant
//! made through the API serves PHP as its own UID, cannot reach other tenants or system
//! files, is healed when its master is killed, reloads without dropping requests, survives
//! a rejected pool file, is not fooled by planted symlinks, and suspend, unsuspend and
//! delete leave nothing behind; the agent's proxy serves, logs and counts the sites.
//! Skipped, loudly, when not root or without php-fpm.
//!
//! This file is the harness (a `Site` of directories and UIDs, an `Agent` to talk to);
//! the tests are in the files beside it, by topic.

use crate::harness::test_certificate;
use reqwest::Method;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const PASSWORD: &str = "admin-password-1";

/// Why the agent tests cannot run here, if they cannot.
fn unavailable() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root");
    }
    if !Path::new("/usr/sbin/php-fpm8.2").exists() && !Path::new("/usr/sbin/php-fpm").exists() {
        return Some("php-fpm is not installed");
    }
    if !Path::new("/usr/bin/cgi-fcgi").exists() {
        return Some("cgi-fcgi (libfcgi-bin) is not installed");
    }
    None
}

macro_rules! require_root {
    ($name:literal) => {
        if let Some(why) = unavailable() {
            eprintln!("SKIPPED {}: {why} (CI runs these as root; scripts/test installs php8.2-fpm and libfcgi-bin)", $name);
            return;
        }
    };
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Directories, a UID range and a tenant-name prefix no other test shares.
struct Site {
    base: PathBuf,
    uid_range: String,
    prefix: String,
}

impl Drop for Site {
    /// Removes the Linux users and groups this test's tenants got (the agent keeps a
    /// tenant's user until the tenant is deleted), so repeated runs leave nothing behind.
    fn drop(&mut self) {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        for name in passwd
            .lines()
            .filter_map(|l| l.split(':').next())
            .filter(|n| n.starts_with(&self.prefix))
        {
            let _ = Command::new("pkill").args(["-9", "-u", name]).status();
            let _ = Command::new("userdel").arg(name).status();
            let _ = Command::new("groupdel")
                .arg(name)
                .stderr(Stdio::null())
                .status();
        }
        // A master runs as root, so the tenants' pkill leaves it: any still running on one
        // of this site's pool files goes too (with it the test's output pipe, which it
        // holds open).
        let pools = format!("{}/", self.run().join("pools").display());
        for pid in std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&pools) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

impl Site {
    fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let base = PathBuf::from(format!("/tmp/lodge-agent-{pid}-{n}"));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        // Ranges of 15 UIDs per test (none makes more than three tenants), away from the
        // defaults, below nobody's 65534 and disjoint for the first 40 sites of a process:
        // two agents running at once must never reserve the same UID.
        let first = 30_000 + (pid % 50) * 600 + (n % 40) * 15;
        Site {
            base,
            uid_range: format!("{first}-{}", first + 14),
            prefix: format!("t{}{}x", pid % 10_000, n),
        }
    }

    fn tenant(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    fn data(&self) -> PathBuf {
        self.base.join("data")
    }
    fn run(&self) -> PathBuf {
        self.base.join("run")
    }
    fn tenants(&self) -> PathBuf {
        self.base.join("tenants")
    }
    fn log(&self) -> PathBuf {
        self.base.join("log")
    }
    fn socket(&self, tenant: &str) -> PathBuf {
        self.run().join("fpm").join(format!("{tenant}.sock"))
    }
    fn docroot(&self, tenant: &str, domain: &str) -> PathBuf {
        self.tenants()
            .join(tenant)
            .join("sites")
            .join(domain)
            .join("public")
    }
}

/// A running `lodge serve` as root (agent, panel, masters).
pub struct Agent {
    child: Child,
    base_url: String,
    http: reqwest::Client,
    token: String,
    proxy_urls: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// A store holding the admin and an API token for it, made once per test process and
/// written into each site's data directory: `lodge user add` and a sign-in each hash a
/// password, a good part of an agent test's start in a debug build.
struct Template {
    /// The data directory's owner and mode: the panel's user owns the store.
    dir: Owned,
    /// The store's files (`lodge.db`, its write-ahead log and its index), by name.
    files: Vec<(String, Vec<u8>, Owned)>,
    token: String,
}

/// Owner, group and mode of a file or directory.
#[derive(Clone, Copy)]
struct Owned(u32, u32, u32);

impl Owned {
    fn of(path: &Path) -> Owned {
        let m = std::fs::metadata(path).unwrap();
        Owned(m.uid(), m.gid(), m.mode() & 0o7777)
    }

    fn apply(self, path: &Path) {
        std::os::unix::fs::chown(path, Some(self.0), Some(self.1)).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(self.2)).unwrap();
    }
}

fn template() -> &'static Template {
    static TEMPLATE: std::sync::OnceLock<Template> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let lodge = env!("CARGO_BIN_EXE_lodge");
        let dir = PathBuf::from(format!("/tmp/lodge-agent-{}-template", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data = dir.to_str().unwrap();
        let mut add = Command::new(lodge)
            .args([
                "--data-dir",
                data,
                "user",
                "add",
                "admin",
                "--role",
                "admin",
            ])
            .arg("--password-stdin")
            .env("LODGE_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        add.stdin
            .take()
            .unwrap()
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .unwrap();
        assert!(add.wait().unwrap().success());
        let out = Command::new(lodge)
            .args(["--data-dir", data, "token", "create", "admin"])
            .env("LODGE_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "lodge token create: {out:?}");
        let token = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .find(|w| w.starts_with("lodge_"))
            .expect("a token printed")
            .to_owned();
        // No process has the store open now: these files are all of it. The shared-memory
        // index goes too, with its owner: were the agent (root, reading) the first to open
        // a copy without one, it would make it root's, and the panel could not write.
        let files = ["lodge.db", "lodge.db-wal", "lodge.db-shm"]
            .into_iter()
            .filter_map(|name| {
                let path = dir.join(name);
                Some((
                    name.to_owned(),
                    std::fs::read(&path).ok()?,
                    Owned::of(&path),
                ))
            })
            .collect();
        let owned = Owned::of(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        Template {
            dir: owned,
            files,
            token,
        }
    })
}

impl Agent {
    async fn start(site: &Site, fault: Option<&str>) -> Agent {
        Agent::start_with(site, fault, &[]).await
    }

    /// [`Agent::start`] with more environment for `lodge serve`.
    async fn start_with(site: &Site, fault: Option<&str>, env: &[(&str, &str)]) -> Agent {
        Agent::start_binary(site, fault, env, Path::new(env!("CARGO_BIN_EXE_lodge"))).await
    }

    /// [`Agent::start_with`] from another copy of the binary (an upgrade).
    async fn start_binary(
        site: &Site,
        fault: Option<&str>,
        env: &[(&str, &str)],
        lodge: &Path,
    ) -> Agent {
        let template = template();
        if !site.data().join("lodge.db").exists() {
            std::fs::create_dir_all(site.data()).unwrap();
            template.dir.apply(&site.data());
            for (name, bytes, owned) in &template.files {
                let path = site.data().join(name);
                std::fs::write(&path, bytes).unwrap();
                owned.apply(&path);
            }
        }
        let mut cmd = Command::new(lodge);
        cmd.args(["--data-dir", site.data().to_str().unwrap()])
            .args(["--run-dir", site.run().to_str().unwrap()])
            .args(["--tenants-root", site.tenants().to_str().unwrap()])
            .args(["--log-dir", site.log().to_str().unwrap()])
            .args(["--uid-range", &site.uid_range])
            .args([
                "--http-listen",
                "127.0.0.1:0",
                "--https-listen",
                "127.0.0.1:0",
            ])
            .args(["--panel-listen", "127.0.0.1:0", "serve"])
            .env("LODGE_LOG", "warn")
            .env_remove("LODGE_AGENT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(fault) = fault {
            cmd.env("LODGE_FAULT", fault);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let proxy_urls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let urls = proxy_urls.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("lodge proxy listening on ") {
                    urls.lock()
                        .unwrap()
                        .push(url.trim().trim_end_matches('/').to_owned());
                }
                if let Some(url) = line.strip_prefix("lodge panel listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().trim_end_matches('/').to_owned());
                    }
                }
            }
        });
        let base_url =
            tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
                .await
                .unwrap()
                .expect("the panel starts");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let token = template.token.clone();
        Agent {
            child,
            base_url,
            http,
            token,
            proxy_urls,
        }
    }

    /// The proxy's address for `scheme` (http or https), as it printed it.
    pub async fn proxy(&self, scheme: &str) -> String {
        let prefix = format!("{scheme}://");
        for _ in 0..200 {
            if let Some(url) = self
                .proxy_urls
                .lock()
                .unwrap()
                .iter()
                .find(|u| u.starts_with(&prefix))
            {
                return url.clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the proxy did not say where it listens for {scheme}");
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base_url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Waits until the tenant's applied state is `state` for its current generation.
    async fn applied(&self, tenant: &str, state: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (_, t) = self
                .call(Method::GET, &format!("/tenants/{tenant}"), None)
                .await;
            if t["applied"]["state"] == state && t["applied"]["generation"] == t["generation"] {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{tenant} not {state} within {within:?}: {t}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the agent as an operator would (SIGTERM): it stops the masters and the panel.
    fn stop(&mut self) {
        // Once reaped, its PID may be another process's.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh site, its agent running, and a plan `basic` made from `plan`.
async fn with_plan(plan: Value) -> (Site, Agent) {
    let site = Site::new();
    let agent = Agent::start(&site, None).await;
    let (status, body) = agent.post("/plans", plan).await;
    assert_eq!(status, 201, "{body}");
    (site, agent)
}

/// Runs `script` through the tenant's socket with cgi-fcgi; `None` if the request failed.
fn php(socket: &Path, script: &Path) -> Option<String> {
    let out = Command::new("cgi-fcgi")
        .args(["-bind", "-connect"])
        .arg(socket)
        .env_clear()
        .env("SCRIPT_FILENAME", script)
        .env("SCRIPT_NAME", "/test.php")
        .env("REQUEST_METHOD", "GET")
        .env("QUERY_STRING", "")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Writes a PHP script into a tenant's docroot, owned by the tenant.
fn script(site: &Site, tenant: &str, domain: &str, name: &str, body: &str) -> PathBuf {
    let path = site.docroot(tenant, domain).join(name);
    std::fs::write(&path, body).unwrap();
    // As a file the tenant makes in its docroot: the directory's setgid bit gives it the
    // proxy's group.
    let uid = ids(tenant).0;
    let www = nix::unistd::Group::from_name("lodge-www")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    std::os::unix::fs::chown(&path, Some(uid), Some(www)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    path
}

fn ids(user: &str) -> (u32, u32) {
    let u = nix::unistd::User::from_name(user)
        .unwrap()
        .unwrap_or_else(|| panic!("no user {user}"));
    (u.uid.as_raw(), u.gid.as_raw())
}

fn master_pid(site: &Site, tenant: &str) -> Option<i32> {
    std::fs::read_to_string(site.run().join("pools").join(format!("{tenant}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn processes_of(uid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::metadata(e.path())
                .map(|m| m.uid() == uid)
                .unwrap_or(false)
        })
        .count()
}

async fn wait_for<F: FnMut() -> bool>(what: &str, within: Duration, mut check: F) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn make_tenant(agent: &Agent, site: &Site, short: &str) -> (String, String) {
    let tenant = site.tenant(short);
    let domain = format!("{tenant}.example");
    let (status, body) = agent
        .post("/tenants", json!({"name": tenant, "plan": "basic"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = agent
        .post(
            &format!("/tenants/{tenant}/vhosts"),
            json!({"domain": domain}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (tenant, domain)
}

/// The php-fpm masters running with this tenant's pool file.
fn masters_of(site: &Site, tenant: &str) -> Vec<i32> {
    let conf = site.run().join("pools").join(format!("{tenant}.conf"));
    let conf = conf.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("php-fpm: master") && cmdline.contains(&conf)
        })
        .collect()
}

/// The `lodge panel` child of the agent.
fn panel_pid(agent: i32) -> Option<i32> {
    child_pid(agent, "panel")
}

/// The child of the agent that runs `lodge <role>` (the panel, the proxy).
fn child_pid(agent: i32, role: &str) -> Option<i32> {
    let suffix = format!("\0{role}\0");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The parent pid is the second field after the command in parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(agent) && cmdline.ends_with(suffix.as_bytes())
        })
}

/// A request through the proxy with the given Host header: (status, headers, body).
async fn through_proxy(
    base: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut req = client.get(format!("{base}{path}")).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap_or_default())
}

/// curl, for what reqwest here cannot do (TLS, HTTP/2): returns stdout and stderr.
fn curl(args: &[&str]) -> (String, String) {
    curl_long(10, args)
}

/// The peak resident memory of a process so far (`VmHWM`), in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

/// curl with a time limit of `secs`: returns stdout and stderr.
fn curl_long(secs: u32, args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", &secs.to_string()])
        .args(args)
        .output()
        .expect("curl runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `id.php`, which prints the UID PHP runs as, into the tenant's docroot.
fn id_script(site: &Site, tenant: &str, domain: &str) -> PathBuf {
    script(
        site,
        tenant,
        domain,
        "id.php",
        "<?php echo 'euid=', posix_geteuid();",
    )
}

/// A tenant of plan `basic` with one vhost, applied, whose pool answers `id.php`:
/// (tenant, domain, the script).
async fn serving_tenant(agent: &Agent, site: &Site, short: &str) -> (String, String, PathBuf) {
    let (tenant, domain) = make_tenant(agent, site, short).await;
    agent.applied(&tenant, "ok", Duration::from_secs(3)).await;
    let id = until_php_serves(site, &tenant, &domain).await;
    (tenant, domain, id)
}

/// Waits until the tenant's pool answers `id.php` on its socket (the applied state is
/// `ok` once the master is started, before it listens), straight through FastCGI so that
/// the proxy counts and logs nothing; returns the script.
async fn until_php_serves(site: &Site, tenant: &str, domain: &str) -> PathBuf {
    let id = id_script(site, tenant, domain);
    wait_for(
        "PHP answers on the tenant's socket",
        Duration::from_secs(3),
        || php(&site.socket(tenant), &id).is_some(),
    )
    .await;
    id
}

/// Waits until the proxy at `http` answers `path` of `domain` with 200.
async fn until_served(http: &str, domain: &str, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while through_proxy(http, domain, path, &[]).await.0 != 200 {
        assert!(Instant::now() < deadline, "the vhost answers");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The port of an address the proxy printed (`http://127.0.0.1:PORT`).
fn port_of(url: &str) -> String {
    url.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned()
}

mod adoption;
mod bodies;
mod healing;
mod isolation;
mod load;
mod logs;
mod proxy;
mod reload;
mod security;
mod tenants;
