//! The agent as root, through the real binary, real php-fpm and real Linux users: a tenant
//! made through the API serves PHP as its own UID, cannot reach other tenants or system
//! files, is healed when its master is killed, reloads without dropping requests, survives
//! a rejected pool file, is not fooled by planted symlinks, and suspend, unsuspend and
//! delete leave nothing behind. Skipped, loudly, when not root or without php-fpm.

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
        // Ranges of 40 UIDs per test, well away from the defaults and from each other.
        let first = 30_000 + (pid % 60) * 400 + (n % 10) * 40;
        Site {
            base,
            uid_range: format!("{first}-{}", first + 39),
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

impl Agent {
    async fn start(site: &Site, fault: Option<&str>) -> Agent {
        let lodge = env!("CARGO_BIN_EXE_lodge");
        if !site.data().join("lodge.db").exists() {
            let mut add = Command::new(lodge)
                .args([
                    "--data-dir",
                    site.data().to_str().unwrap(),
                    "user",
                    "add",
                    "admin",
                    "--role",
                    "admin",
                    "--password-stdin",
                ])
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
        let r: Value = http
            .post(format!("{base_url}/api/v1/tokens"))
            .json(&json!({"username": "admin", "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = r["token"].as_str().expect("a token").to_owned();
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
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the agent as an operator would (SIGTERM): it stops the masters and the panel.
    fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
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
        tokio::time::sleep(Duration::from_millis(50)).await;
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

#[tokio::test]
async fn tenants_are_real_isolated_and_healed() {
    require_root!("tenants_are_real_isolated_and_healed");
    let (site, agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;

    // 1. A tenant and a vhost made through the API serve PHP as the tenant within 2 s.
    let started = Instant::now();
    let (a, a_domain) = make_tenant(&agent, &site, "a").await;
    let t = agent.applied(&a, "ok", Duration::from_secs(2)).await;
    let id_script = script(
        &site,
        &a,
        &a_domain,
        "id.php",
        "<?php echo 'euid=', posix_geteuid();",
    );
    wait_for(
        "PHP answers on the new socket",
        Duration::from_secs(2),
        || php(&site.socket(&a), &id_script).is_some(),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "first PHP response after {:?}",
        started.elapsed()
    );
    let out = php(&site.socket(&a), &id_script).unwrap();
    assert!(out.contains(&format!("euid={}", t["uid"])), "{out}");
    assert_eq!(ids(&a).0 as i64, t["uid"].as_i64().unwrap());

    // 2. Isolation: no /etc/passwd, no other tenant's files, no other tenant's socket.
    let (b, b_domain) = make_tenant(&agent, &site, "b").await;
    agent.applied(&b, "ok", Duration::from_secs(3)).await;
    let secret = script(&site, &b, &b_domain, "secret.php", "<?php // b's secret");
    let spy_body = format!(
        r#"<?php
echo "passwd=", @file_get_contents('/etc/passwd') === false ? "denied" : "read", "\n";
echo "other=", @file_get_contents('{}') === false ? "denied" : "read", "\n";
echo "listing=", @scandir('{}') === false ? "denied" : "read", "\n";
$s = @stream_socket_client('unix://{}', $errno, $errstr, 1);
echo "socket=", $s === false ? "denied" : "connected", "\n";
"#,
        secret.display(),
        site.tenants().join(&b).display(),
        site.socket(&b).display()
    );
    let spy = script(&site, &a, &a_domain, "spy.php", &spy_body);
    let out = php(&site.socket(&a), &spy).unwrap();
    for line in [
        "passwd=denied",
        "other=denied",
        "listing=denied",
        "socket=denied",
    ] {
        assert!(out.contains(line), "{line} expected in {out}");
    }
    // The sockets: 0660, lodge-www's alone (not even the tenant may connect to its own).
    let meta = std::fs::metadata(site.socket(&a)).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!(meta.uid(), ids("lodge-www").0);
    assert_eq!(
        meta.gid(),
        nix::unistd::Group::from_name("lodge-www")
            .unwrap()
            .unwrap()
            .gid
            .as_raw()
    );

    // 3. kill -9 of a master is healed within 3 s.
    let old = master_pid(&site, &a).expect("a pid file");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    wait_for("a new master serving", Duration::from_secs(3), || {
        master_pid(&site, &a).is_some_and(|p| p != old)
            && php(&site.socket(&a), &id_script).is_some()
    })
    .await;
    eprintln!("master of {a} healed in {:?}", killed.elapsed());

    // 4. A symlink planted where the agent chowns and chmods leaves its target untouched.
    let shadow = std::fs::metadata("/etc/shadow").unwrap();
    let logs = site.tenants().join(&a).join("logs");
    std::fs::remove_dir_all(&logs).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", &logs).unwrap();
    let tmp = site.tenants().join(&a).join("tmp");
    std::fs::remove_dir_all(&tmp).unwrap();
    std::os::unix::fs::symlink("/etc", &tmp).unwrap();
    let (status, _) = agent
        .call(
            Method::PATCH,
            &format!("/tenants/{a}"),
            Some(json!({"php": {"memory_limit": "64M"}})),
        )
        .await;
    assert_eq!(status, 200);
    agent.applied(&a, "ok", Duration::from_secs(5)).await;
    let after = std::fs::metadata("/etc/shadow").unwrap();
    assert_eq!(
        (after.uid(), after.gid(), after.mode()),
        (shadow.uid(), shadow.gid(), shadow.mode()),
        "/etc/shadow changed"
    );
    let etc = std::fs::metadata("/etc").unwrap();
    assert_eq!((etc.uid(), etc.mode() & 0o7777), (0, 0o755), "/etc changed");
    assert!(
        std::fs::symlink_metadata(&logs).unwrap().is_dir(),
        "logs is a real directory again"
    );

    // 5. Suspend stops the pool; unsuspend brings it back.
    let (status, _) = agent
        .post(&format!("/tenants/{a}/suspend"), json!({}))
        .await;
    assert_eq!(status, 200);
    agent.applied(&a, "ok", Duration::from_secs(5)).await;
    wait_for(
        "no process of the suspended tenant",
        Duration::from_secs(10),
        || processes_of(ids(&a).0) == 0,
    )
    .await;
    assert!(!site.socket(&a).exists(), "the socket is gone");
    let (_, vhost) = agent
        .call(Method::GET, &format!("/vhosts/{a_domain}"), None)
        .await;
    assert_eq!(vhost["state"], "suspended");
    let (status, _) = agent
        .post(&format!("/tenants/{a}/unsuspend"), json!({}))
        .await;
    assert_eq!(status, 200);
    agent.applied(&a, "ok", Duration::from_secs(5)).await;
    wait_for("PHP again after unsuspend", Duration::from_secs(3), || {
        php(&site.socket(&a), &id_script).is_some()
    })
    .await;

    // 6. Health: the agent pings the pool and reads its status page (our FastCGI client) and
    //    the tenant's cgroup, whose limits come from the plan.
    let deadline = Instant::now() + Duration::from_secs(25);
    let health = loop {
        let (status, h) = agent
            .call(Method::GET, &format!("/tenants/{a}/health"), None)
            .await;
        assert_eq!(status, 200);
        if h["health"]["ok"] == true && h["health"]["total_processes"].as_i64().unwrap_or(0) >= 1 {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "no healthy check within 25 s: {h}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(health["health"]["ping_ms"].as_f64().unwrap() > 0.0);
    let pids_max = ["/sys/fs/cgroup/pids/lodge", "/sys/fs/cgroup/lodge"]
        .iter()
        .map(|root| Path::new(root).join(&a).join("pids.max"))
        .find(|p| p.exists());
    if let Some(pids_max) = pids_max {
        assert_eq!(
            std::fs::read_to_string(pids_max).unwrap().trim(),
            "64",
            "the plan's process limit"
        );
        assert!(
            health["health"]["usage"]["processes"].as_i64().unwrap_or(0) >= 1,
            "{health}"
        );
    } else {
        eprintln!("no pids cgroup controller here: the cgroup part is not checked");
    }
    let (_, t) = agent
        .call(Method::GET, &format!("/tenants/{a}"), None)
        .await;
    assert_eq!(t["fpm_socket"], site.socket(&a).to_str().unwrap());

    // 7. Delete stops the pool, archives the home, removes the user; the UID stays reserved.
    let uid = ids(&b).0;
    let (status, _) = agent
        .call(Method::DELETE, &format!("/tenants/{b}"), None)
        .await;
    assert_eq!(status, 204);
    wait_for(
        "the user and group removed",
        Duration::from_secs(10),
        || {
            nix::unistd::User::from_name(&b).unwrap().is_none()
                && nix::unistd::Group::from_name(&b).unwrap().is_none()
        },
    )
    .await;
    assert_eq!(processes_of(uid), 0, "no process left");
    assert!(!site.socket(&b).exists(), "no socket left");
    assert!(!site.tenants().join(&b).exists(), "no home left");
    let archives: Vec<String> = std::fs::read_dir(site.base.join("data-agent").join("archives"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        archives.iter().any(|n| n.starts_with(&format!("{b}-"))),
        "archived: {archives:?}"
    );
    let (status, again) = agent
        .post("/tenants", json!({"name": b, "plan": "basic"}))
        .await;
    assert_eq!(status, 201, "{again}");
    assert_ne!(
        again["uid"].as_u64().unwrap() as u32,
        uid,
        "a new tenant never gets the old UID"
    );

    drop(agent);
    let _ = std::fs::remove_dir_all(&site.base);
}

#[tokio::test]
async fn reloads_are_graceful_and_rejected_files_keep_the_old_pool() {
    require_root!("reloads_are_graceful_and_rejected_files_keep_the_old_pool");
    let (site, mut agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 4}})).await;
    let (a, a_domain) = make_tenant(&agent, &site, "a").await;
    let (b, b_domain) = make_tenant(&agent, &site, "b").await;
    agent.applied(&a, "ok", Duration::from_secs(3)).await;
    agent.applied(&b, "ok", Duration::from_secs(3)).await;
    let slow = script(
        &site,
        &a,
        &a_domain,
        "slow.php",
        "<?php sleep(2); echo 'slow-done';",
    );
    let hello = script(&site, &b, &b_domain, "hello.php", "<?php echo 'hello';");
    wait_for("B serves", Duration::from_secs(3), || {
        php(&site.socket(&b), &hello).is_some()
    })
    .await;

    // B under load while A's settings change twice; one of A's requests runs across a reload.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loaders = Vec::new();
    for _ in 0..3 {
        let (socket, hello, stop) = (site.socket(&b), hello.clone(), stop.clone());
        loaders.push(std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                match php(&socket, &hello) {
                    Some(out) if out.contains("hello") => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    let (socket_a, slow_a) = (site.socket(&a), slow.clone());
    let in_flight = std::thread::spawn(move || php(&socket_a, &slow_a));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b_pid = master_pid(&site, &b);
    for limit in ["96M", "112M"] {
        let (status, _) = agent
            .call(
                Method::PATCH,
                &format!("/tenants/{a}"),
                Some(json!({"php": {"memory_limit": limit}})),
            )
            .await;
        assert_eq!(status, 200);
        agent.applied(&a, "ok", Duration::from_secs(5)).await;
    }
    let slow_out = tokio::task::spawn_blocking(move || in_flight.join().unwrap())
        .await
        .unwrap();
    assert!(
        slow_out.is_some_and(|o| o.contains("slow-done")),
        "A's request running during the reload completed"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for l in loaders {
        let (o, f) = l.join().unwrap();
        ok += o;
        failed += f;
    }
    eprintln!("B under load during A's reloads: {ok} ok, {failed} failed");
    assert!(ok > 50, "the load ran ({ok} requests)");
    assert_eq!(failed, 0, "B lost requests while A reloaded");
    assert_eq!(master_pid(&site, &b), b_pid, "B's master was not touched");
    let conf = std::fs::read_to_string(site.run().join("pools").join(format!("{a}.conf"))).unwrap();
    assert!(conf.contains("php_admin_value[memory_limit] = 112M"));

    // A pool file php-fpm rejects (injected: lodge's own checks never produce one) leaves
    // the old pool serving and the error in the applied state.
    agent.stop();
    let mut agent = Agent::start(&site, Some(&format!("bad-pool:{a}"))).await;
    let (status, _) = agent
        .call(
            Method::PATCH,
            &format!("/tenants/{a}"),
            Some(json!({"php": {"memory_limit": "80M"}})),
        )
        .await;
    assert_eq!(status, 200);
    let t = agent.applied(&a, "error", Duration::from_secs(10)).await;
    assert!(
        t["applied"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("php-fpm rejected"),
        "{t}"
    );
    let still =
        std::fs::read_to_string(site.run().join("pools").join(format!("{a}.conf"))).unwrap();
    assert!(
        still.contains("php_admin_value[memory_limit] = 112M"),
        "the live file is the old one"
    );
    let hello_a = script(&site, &a, &a_domain, "hello.php", "<?php echo 'still';");
    wait_for("the old pool still serves", Duration::from_secs(5), || {
        php(&site.socket(&a), &hello_a).is_some_and(|o| o.contains("still"))
    })
    .await;
    agent.stop();
    drop(agent);
    let _ = std::fs::remove_dir_all(&site.base);
}

#[tokio::test]
async fn an_agent_killed_mid_apply_converges_on_its_next_start() {
    require_root!("an_agent_killed_mid_apply_converges_on_its_next_start");
    let site = Site::new();
    let tenant = site.tenant("a");
    let mut agent = Agent::start(&site, Some(&format!("after-home:{tenant}"))).await;
    assert_eq!(agent.post("/plans", json!({"name": "basic"})).await.0, 201);
    let (status, _) = agent
        .post("/tenants", json!({"name": tenant, "plan": "basic"}))
        .await;
    assert_eq!(status, 201);
    // The agent aborts after the user and the home, before the pool.
    wait_for(
        "the agent to abort at the fault point",
        Duration::from_secs(10),
        || matches!(agent.child.try_wait(), Ok(Some(_))),
    )
    .await;
    assert!(
        nix::unistd::User::from_name(&tenant).unwrap().is_some(),
        "the user was made before the fault"
    );
    assert!(!site.socket(&tenant).exists(), "no pool yet");
    drop(agent);

    let agent = Agent::start(&site, None).await;
    agent.applied(&tenant, "ok", Duration::from_secs(5)).await;
    wait_for("the pool after the restart", Duration::from_secs(3), || {
        site.socket(&tenant).exists()
    })
    .await;
    let (status, _) = agent
        .call(Method::DELETE, &format!("/tenants/{tenant}"), None)
        .await;
    assert_eq!(status, 204);
    wait_for("cleanup", Duration::from_secs(10), || {
        nix::unistd::User::from_name(&tenant).unwrap().is_none()
    })
    .await;
    drop(agent);
    let _ = std::fs::remove_dir_all(&site.base);
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

#[tokio::test]
async fn a_restarted_agent_leaves_no_orphan_and_no_duplicate() {
    require_root!("a_restarted_agent_leaves_no_orphan_and_no_duplicate");
    let (site, mut agent) = with_plan(json!({"name": "basic"})).await;
    let (tenant, _) = make_tenant(&agent, &site, "a").await;
    agent.applied(&tenant, "ok", Duration::from_secs(5)).await;
    wait_for("one master", Duration::from_secs(5), || {
        masters_of(&site, &tenant).len() == 1
    })
    .await;
    let old = masters_of(&site, &tenant)[0];

    // The supervisor restarts the panel when it dies.
    let agent_pid = agent.child.id() as i32;
    let panel = panel_pid(agent_pid).expect("the panel runs as a child of the agent");
    assert_eq!(
        std::fs::metadata(format!("/proc/{panel}")).unwrap().uid(),
        ids("lodge").0,
        "the panel runs as lodge"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(panel),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("a new panel", Duration::from_secs(3), || {
        panel_pid(agent_pid).is_some_and(|p| p != panel)
    })
    .await;

    // The agent dies without cleaning up: its master is left running.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = agent.child.wait();
    assert_eq!(
        masters_of(&site, &tenant),
        vec![old],
        "the master outlives the agent"
    );
    drop(agent);

    // The next agent adopts the master it finds (same process, no duplicate) ...
    let agent = Agent::start(&site, None).await;
    agent.applied(&tenant, "ok", Duration::from_secs(5)).await;
    assert_eq!(
        masters_of(&site, &tenant),
        vec![old],
        "the master is adopted"
    );
    // ... and supervises it as its own: killed, it is started again.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(
        "a new master for the adopted one",
        Duration::from_secs(5),
        || {
            let now = masters_of(&site, &tenant);
            now.len() == 1 && now[0] != old
        },
    )
    .await;
    let (status, _) = agent
        .call(Method::DELETE, &format!("/tenants/{tenant}"), None)
        .await;
    assert_eq!(status, 204);
    wait_for("cleanup", Duration::from_secs(10), || {
        masters_of(&site, &tenant).is_empty()
            && nix::unistd::User::from_name(&tenant).unwrap().is_none()
    })
    .await;
    drop(agent);
    let _ = std::fs::remove_dir_all(&site.base);
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

#[tokio::test]
async fn the_proxy_serves_sites_statically_and_through_php() {
    require_root!("the_proxy_serves_sites_statically_and_through_php");
    let (site, agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;
    let tenant = site.tenant("a");
    let domain = format!("{tenant}.example");
    assert_eq!(
        agent
            .post("/tenants", json!({"name": tenant, "plan": "basic"}))
            .await
            .0,
        201
    );
    let vhost = json!({"domain": domain, "aliases": [format!("www.{domain}")], "front_controller": "/index.php"});
    assert_eq!(
        agent
            .post(&format!("/tenants/{tenant}/vhosts"), vhost)
            .await
            .0,
        201
    );
    agent.applied(&tenant, "ok", Duration::from_secs(5)).await;
    let uid = ids(&tenant).0;
    script(
        &site,
        &tenant,
        &domain,
        "index.php",
        "<?php echo 'front euid=', posix_geteuid(), ' uri=', $_SERVER['REQUEST_URI'];",
    );
    script(
        &site,
        &tenant,
        &domain,
        "info.php",
        "<?php echo 'pi=', $_SERVER['PATH_INFO'] ?? '', ' https=', $_SERVER['HTTPS'] ?? 'off';",
    );
    script(&site, &tenant, &domain, "upload.jpg", "<?php echo 'ran';");
    script(&site, &tenant, &domain, "style.css", "body { color: teal }");
    script(&site, &tenant, &domain, ".env", "SECRET=1");
    std::os::unix::fs::symlink(
        "/etc/passwd",
        site.docroot(&tenant, &domain).join("escape.txt"),
    )
    .unwrap();
    let http = agent.proxy("http").await;

    // PHP as the tenant, through the front controller for pretty URLs; PATH_INFO split.
    let deadline = Instant::now() + Duration::from_secs(3);
    let body = loop {
        let (status, _, body) = through_proxy(&http, &domain, "/", &[]).await;
        if status == 200 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the vhost does not answer within 3 s: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.contains(&format!("front euid={uid}")), "{body}");
    let (status, _, body) =
        through_proxy(&http, &format!("www.{domain}"), "/blog/2026/hello", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("uri=/blog/2026/hello"), "{body}");
    let (_, _, body) = through_proxy(&http, &domain, "/info.php/x/y", &[]).await;
    assert!(body.contains("pi=/x/y https=off"), "{body}");

    // Static files with validators.
    let (status, headers, body) = through_proxy(&http, &domain, "/style.css", &[]).await;
    assert_eq!((status, body.as_str()), (200, "body { color: teal }"));
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let (status, _, _) =
        through_proxy(&http, &domain, "/style.css", &[("if-none-match", &etag)]).await;
    assert_eq!(status, 304);
    // Pipelined on one connection: GET and HEAD on the lean path, then a POST (hyper takes
    // the connection from there, with the bytes already read), then a GET hyper answers.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = http.trim_start_matches("http://");
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let requests = format!(
            "GET /style.css HTTP/1.1\r\nHost: {domain}\r\n\r\n\
             HEAD /style.css HTTP/1.1\r\nHost: {domain}\r\n\r\n\
             POST /info.php/p HTTP/1.1\r\nHost: {domain}\r\nContent-Length: 3\r\n\r\nabc\
             GET /style.css HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n"
        );
        c.write_all(requests.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got))
            .await
            .expect("the proxy closes after Connection: close")
            .unwrap();
        let got = String::from_utf8_lossy(&got);
        assert_eq!(got.matches("HTTP/1.1 200 OK\r\n").count(), 4, "{got}");
        assert_eq!(got.matches("body { color: teal }").count(), 2, "{got}");
        assert!(got.contains("pi=/p https=off"), "{got}");
        assert!(got.ends_with("body { color: teal }"), "{got}");
    }
    // A large file goes out with sendfile(2) on plain HTTP/1.1: every byte right, whole and
    // in a range.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let big_path = site.docroot(&tenant, &domain).join("big.bin");
    std::fs::write(&big_path, &big).unwrap();
    std::os::unix::fs::chown(&big_path, Some(uid), None).unwrap();
    let port = http
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let resolve = format!("{domain}:{port}:127.0.0.1");
    let out = site.base.join("big.out");
    let out_arg = out.display().to_string();
    let url = format!("http://{domain}:{port}/big.bin");
    curl_long(30, &["--resolve", &resolve, "-o", &out_arg, &url]);
    assert!(
        std::fs::read(&out).unwrap() == big,
        "the large file arrived changed"
    );
    curl_long(
        30,
        &[
            "--resolve",
            &resolve,
            "-r",
            "1000-2600000",
            "-o",
            &out_arg,
            &url,
        ],
    );
    assert!(
        std::fs::read(&out).unwrap() == big[1000..=2_600_000],
        "the range arrived changed"
    );

    // What must never be served or run.
    let (status, _, body) = through_proxy(&http, &domain, "/.env", &[]).await;
    assert_eq!(status, 403, "{body}");
    // Not found beneath the docroot: the front controller answers, never the link's target.
    let (status, _, body) = through_proxy(&http, &domain, "/escape.txt", &[]).await;
    assert!(
        status == 404 || status == 403 || body.contains("front euid"),
        "{status} {body}"
    );
    assert!(
        !body.contains("root:x:0"),
        "a symlink out of the docroot was followed"
    );
    // The tenant swaps its docroot for a symlink to /etc: the proxy does not follow it.
    let public = site.docroot(&tenant, &domain);
    let real = public.with_file_name("public.real");
    std::fs::rename(&public, &real).unwrap();
    std::os::unix::fs::symlink("/etc", &public).unwrap();
    let (status, _, body) = through_proxy(&http, &domain, "/passwd", &[]).await;
    assert!(
        !body.contains("root:x:0"),
        "the docroot symlink was followed: {status}"
    );
    std::fs::remove_file(&public).unwrap();
    std::fs::rename(&real, &public).unwrap();
    let (status, _, body) = through_proxy(&http, &domain, "/upload.jpg/x.php", &[]).await;
    assert!(!body.contains("ran"), "a .jpg ran as PHP: {status} {body}");
    let (status, _, _) = through_proxy(&http, &domain, "/a%0ab.php", &[]).await;
    assert_eq!(status, 400);
    // Repeated cookies reach PHP together; `Proxy` (httpoxy) and a name with an underscore
    // (which would pass for a dashed one) do not reach it at all.
    script(
        &site,
        &tenant,
        &domain,
        "headers.php",
        "<?php echo $_SERVER['HTTP_COOKIE'] ?? '-', '|', $_SERVER['HTTP_X_REAL_IP'] ?? '-', '|',
         $_SERVER['HTTP_PROXY'] ?? '-', '|', $_SERVER['HTTP_X_A'] ?? '-';",
    );
    let (status, _, body) = through_proxy(
        &http,
        &domain,
        "/headers.php",
        &[
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("x_real_ip", "192.0.2.1"),
            ("proxy", "http://192.0.2.2:3128"),
            ("x-a", "1"),
            ("x-a", "2"),
        ],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "a=1; b=2|-|-|1, 2"));
    let (status, _, body) = through_proxy(&http, "unknown.example", "/", &[]).await;
    assert_eq!(status, 404);
    assert!(body.contains("No site"), "{body}");

    // A dead pool is 502 (its socket gone and its workers, with the kept connections,
    // killed); the supervisor brings it back when the master is restarted.
    std::fs::remove_file(site.socket(&tenant)).unwrap();
    let _ = Command::new("pkill")
        .args(["-9", "-u", &uid.to_string()])
        .status();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, _) = through_proxy(&http, &domain, "/info.php", &[]).await;
    assert_eq!(status, 502);
    let pid = master_pid(&site, &tenant).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while through_proxy(&http, &domain, "/info.php", &[]).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "PHP back after the master's restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Suspended: 503 with the suspended page, within a second of the API call.
    assert_eq!(
        agent
            .post(&format!("/tenants/{tenant}/suspend"), json!({}))
            .await
            .0,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (status, _, body) = through_proxy(&http, &domain, "/style.css", &[]).await;
        if status == 503 {
            assert!(body.contains("suspended"));
            break;
        }
        assert!(Instant::now() < deadline, "not suspended within 2 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        agent
            .post(&format!("/tenants/{tenant}/unsuspend"), json!({}))
            .await
            .0,
        200
    );
    agent.applied(&tenant, "ok", Duration::from_secs(5)).await;

    // HTTPS with a self-signed certificate per vhost, chosen by SNI, over HTTP/2.
    let (status, _) = agent
        .call(
            Method::PATCH,
            &format!("/vhosts/{domain}"),
            Some(json!({"tls_mode": "self-signed"})),
        )
        .await;
    assert_eq!(status, 200);
    let other = format!("{tenant}b.example");
    let (status, _) = agent
        .post(
            &format!("/tenants/{tenant}/vhosts"),
            json!({"domain": other, "tls_mode": "self-signed"}),
        )
        .await;
    assert_eq!(status, 201);
    let https = agent.proxy("https").await;
    let port = https.rsplit(':').next().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resolve = format!("{domain}:{port}:127.0.0.1");
        let (out, err) = curl(&[
            "-k",
            "-v",
            "--http2",
            "--resolve",
            &resolve,
            "-w",
            "\n%{http_version} %{http_code}",
            &format!("https://{domain}:{port}/info.php"),
        ]);
        if out.ends_with("2 200") {
            assert!(out.contains("https=on"), "{out}");
            assert!(
                err.contains(&format!("CN={domain}")),
                "the certificate is the vhost's: {err}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HTTPS did not answer: {out} {err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resolve = format!("{other}:{port}:127.0.0.1");
        let (out, err) = curl(&[
            "-k",
            "-v",
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("https://{other}:{port}/"),
        ]);
        if err.contains(&format!("CN={other}")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second vhost's certificate: {out} {err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A Host that names another vhost than the SNI is refused.
    let resolve = format!("{domain}:{port}:127.0.0.1");
    let (out, _) = curl(&[
        "-k",
        "--resolve",
        &resolve,
        "-H",
        &format!("Host: {other}"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("https://{domain}:{port}/"),
    ]);
    assert_eq!(out, "421");
    let (out, _) = curl(&[
        "-k",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--resolve",
        &format!("unknown.example:{port}:127.0.0.1"),
        &format!("https://unknown.example:{port}/"),
    ]);
    assert_eq!(out, "000", "an unknown name gets no certificate at all");

    // HTTP to HTTPS: a redirect, and HSTS on the HTTPS answers.
    let (status, _) = agent
        .call(
            Method::PATCH,
            &format!("/vhosts/{domain}"),
            Some(json!({"redirect_https": true})),
        )
        .await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, headers, _) = through_proxy(&http, &domain, "/style.css?x=1", &[]).await;
        if status == 301 {
            assert_eq!(
                headers["location"],
                format!("https://{domain}/style.css?x=1")
            );
            break;
        }
        assert!(Instant::now() < deadline, "no redirect to HTTPS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (out, _) = curl(&[
        "-k",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "--resolve",
        &resolve,
        &format!("https://{domain}:{port}/style.css"),
    ]);
    assert!(
        out.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "{out}"
    );

    drop(agent);
    let _ = std::fs::remove_dir_all(&site.base);
}

#[tokio::test]
async fn the_proxy_under_load_adds_vhosts_without_failures_and_sheds_a_saturated_pool() {
    require_root!("the_proxy_under_load_adds_vhosts_without_failures_and_sheds_a_saturated_pool");
    let (site, agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;
    let (tenant, domain) = make_tenant(&agent, &site, "a").await;
    agent.applied(&tenant, "ok", Duration::from_secs(5)).await;
    script(&site, &tenant, &domain, "hello.txt", "hello");
    script(
        &site,
        &tenant,
        &domain,
        "slow.php",
        "<?php sleep(3); echo 'slow';",
    );
    let http = agent.proxy("http").await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while through_proxy(&http, &domain, "/hello.txt", &[]).await.0 != 200 {
        assert!(Instant::now() < deadline, "the vhost answers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Load on one vhost while another is added: the new one answers, the loaded one never fails.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loaders = Vec::new();
    for _ in 0..3 {
        let (http, domain, stop) = (http.clone(), domain.clone(), stop.clone());
        loaders.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                match through_proxy(&http, &domain, "/hello.txt", &[]).await {
                    (200, _, body) if body == "hello" => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    let added = format!("{tenant}new.example");
    assert_eq!(
        agent
            .post(
                &format!("/tenants/{tenant}/vhosts"),
                json!({"domain": added})
            )
            .await
            .0,
        201
    );
    let asked = Instant::now();
    loop {
        // Any answer of the site itself (its docroot is empty: 403 or 404 of the vhost, not
        // the unknown-host page) means the route is live.
        let (status, _, body) = through_proxy(&http, &added, "/", &[]).await;
        if !body.contains("No site") {
            eprintln!(
                "new vhost routed after {:?} (status {status})",
                asked.elapsed()
            );
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "the new vhost is not routed within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for l in loaders {
        let (o, f) = l.await.unwrap();
        ok += o;
        failed += f;
    }
    eprintln!("static load while a vhost was added: {ok} ok, {failed} failed");
    assert!(ok > 20, "the load ran");
    assert_eq!(failed, 0);

    // Two workers and far more slow requests than the queue holds: the excess gets 503 with
    // Retry-After at once instead of an ever-growing queue; the admitted ones complete.
    let mut requests = Vec::new();
    for _ in 0..60 {
        let (http, domain) = (http.clone(), domain.clone());
        requests.push(tokio::spawn(async move {
            through_proxy(&http, &domain, "/slow.php", &[]).await
        }));
    }
    let (mut done, mut shed) = (0, 0);
    for r in requests {
        let (status, headers, body) = r.await.unwrap();
        match status {
            200 if body == "slow" => done += 1,
            503 => {
                assert!(headers.contains_key("retry-after"));
                shed += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    eprintln!("saturated pool: {done} served, {shed} shed with 503");
    assert!(done >= 2 && shed >= 1, "{done} served, {shed} shed");
    drop(agent);
    let _ = std::fs::remove_dir_all(&site.base);
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

#[tokio::test]
async fn php_bodies_stream_in_bounded_memory_and_a_gone_client_aborts_the_script() {
    require_root!("php_bodies_stream_in_bounded_memory_and_a_gone_client_aborts_the_script");
    let (site, agent) = with_plan(json!({"name": "basic",
        "php": {"pm": "static", "max_children": 2, "upload_max_mb": 300, "max_execution_time": 120}}))
    .await;
    let (tenant, domain) = make_tenant(&agent, &site, "s").await;
    agent.applied(&tenant, "ok", Duration::from_secs(5)).await;
    // Counts and checksums what it reads, without keeping it.
    script(
        &site,
        &tenant,
        &domain,
        "sink.php",
        "<?php $in = fopen('php://input', 'r'); $n = 0; $h = hash_init('sha256');
         while (!feof($in)) { $d = fread($in, 65536); $n += strlen($d); hash_update($h, $d); }
         echo $n, ' ', hash_final($h);",
    );
    // 1 GiB, written a MiB at a time.
    script(
        &site,
        &tenant,
        &domain,
        "big.php",
        "<?php header('Content-Type: application/octet-stream'); $m = str_repeat('0123456789abcdef', 65536);
         for ($i = 0; $i < 1024; $i++) { echo $m; flush(); }",
    );
    // Writes forever, noting each round in the tenant's tmp/.
    let home = site.tenants().join(&tenant);
    script(
        &site,
        &tenant,
        &domain,
        "forever.php",
        &format!(
            "<?php ignore_user_abort(false); for ($i = 0; ; $i++) {{ echo str_repeat('x', 65536); flush();
             file_put_contents('{}/tmp/rounds-' . $_GET['n'], $i); usleep(10000); }}",
            home.display()
        ),
    );
    let http = agent.proxy("http").await;
    let port = http
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let resolve = format!("{domain}:{port}:127.0.0.1");
    let url = |path: &str| format!("http://{domain}:{port}{path}");
    let deadline = Instant::now() + Duration::from_secs(3);
    while through_proxy(&http, &domain, "/sink.php", &[]).await.0 != 200 {
        assert!(Instant::now() < deadline, "the vhost answers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let proxy = child_pid(agent.child.id() as i32, "proxy").expect("the proxy runs");
    let before = peak_rss_kib(proxy);

    // 200 MB up: PHP sees every byte, the proxy never holds it.
    let upload = site.base.join("upload.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&upload).unwrap());
        let block: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        for _ in 0..200 {
            f.write_all(&block).unwrap();
        }
    }
    let expected_sum = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(std::fs::read(&upload).unwrap());
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let upload_arg = upload.display().to_string();
    let (out, err) = curl_long(
        120,
        &[
            "--resolve",
            &resolve,
            "-T",
            &upload_arg,
            "-H",
            "content-type: application/octet-stream",
            &url("/sink.php"),
        ],
    );
    assert_eq!(out, format!("209715200 {expected_sum}"), "{err}");

    // A script that answers without reading its body: the answer comes back, the body's
    // pump is stopped, and the pool serves the next request.
    script(&site, &tenant, &domain, "early.php", "<?php echo 'early';");
    let (out, err) = curl_long(
        60,
        &[
            "--resolve",
            &resolve,
            "-T",
            &upload_arg,
            "-H",
            "content-type: application/octet-stream",
            &url("/early.php"),
        ],
    );
    assert_eq!(out, "early", "{err}");
    let (status, _, body) = through_proxy(&http, &domain, "/early.php", &[]).await;
    assert_eq!((status, body.as_str()), (200, "early"));

    // 1 GiB down.
    let (out, err) = curl_long(
        120,
        &[
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            &url("/big.php"),
        ],
    );
    assert_eq!(out, "200 1073741824", "{err}");
    let grown = peak_rss_kib(proxy).saturating_sub(before);
    eprintln!("proxy peak RSS grew by {grown} KiB over a 200 MB upload and a 1 GiB download");
    assert!(
        grown < 48 * 1024,
        "the proxy's peak RSS grew by {grown} KiB"
    );

    // A client that goes away: both workers' scripts stop, and the pool serves again.
    for n in 0..2 {
        let (resolve, target) = (resolve.clone(), url(&format!("/forever.php?n={n}")));
        std::thread::spawn(move || {
            curl_long(1, &["--resolve", &resolve, "-o", "/dev/null", &target]);
        });
    }
    let rounds = |n: u32| {
        std::fs::read_to_string(home.join(format!("tmp/rounds-{n}")))
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let first = (rounds(0), rounds(1));
    assert!(
        first.0.is_some() && first.1.is_some(),
        "the scripts ran: {first:?}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        (rounds(0), rounds(1)),
        first,
        "the scripts went on after their clients left"
    );
    let asked = Instant::now();
    let (status, _, body) = through_proxy(&http, &domain, "/sink.php", &[]).await;
    assert!(
        status == 200 && body.starts_with("0 e3b0c442"),
        "{status} {body}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "the workers are free"
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&site.base);
}

/// `/metrics` of the panel with this `Authorization` header: (status, text).
async fn metrics(agent: &Agent, authorization: Option<&str>) -> (u16, String) {
    let mut req = agent.http.get(format!("{}/metrics", agent.base_url));
    if let Some(auth) = authorization {
        req = req.header("authorization", auth);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of one series in a Prometheus text, 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Checks a combined-format line field by field: address, identity, user, time, request,
/// status, bytes, referer, user agent, and nothing after.
fn well_formed(line: &str) -> bool {
    let Some((addr, rest)) = line.split_once(" - - [") else {
        return false;
    };
    let Some((time, rest)) = rest.split_once("] \"") else {
        return false;
    };
    // The quoted fields hold no quote of their own: the rest splits into exactly
    // `request`, ` status bytes `, `referer`, ` `, `agent` and nothing.
    let parts: Vec<&str> = rest.split('"').collect();
    let numbers: Vec<&str> = parts
        .get(1)
        .map_or(vec![], |p| p.trim().split(' ').collect());
    addr.parse::<std::net::IpAddr>().is_ok()
        && time.len() == 26
        && time.ends_with(" +0000")
        && parts.len() == 6
        && parts[0].split(' ').count() == 3
        && numbers.len() == 2
        && numbers[0].parse::<u16>().is_ok()
        && (numbers[1] == "-" || numbers[1].parse::<u64>().is_ok())
        && parts[3] == " "
        && parts[5].is_empty()
}

#[tokio::test]
async fn the_proxy_logs_each_vhost_and_counts_requests_for_the_admins_metrics() {
    require_root!("the_proxy_logs_each_vhost_and_counts_requests_for_the_admins_metrics");
    let (site, agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;
    let (tenant, domain) = make_tenant(&agent, &site, "a").await;
    let other = site.tenant("b");
    let (status, body) = agent
        .post(
            "/tenants",
            json!({"name": other, "plan": "basic", "password": "other-password-1"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    agent.applied(&tenant, "ok", Duration::from_secs(5)).await;
    script(&site, &tenant, &domain, "hello.txt", "hello");
    script(&site, &tenant, &domain, "index.php", "<?php echo 'php';");
    let http = agent.proxy("http").await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while through_proxy(&http, &domain, "/hello.txt", &[]).await.0 != 200 {
        assert!(Instant::now() < deadline, "the vhost answers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = format!("Bearer {}", agent.token);
    let ok_series = format!("lodge_proxy_requests_total{{vhost=\"{domain}\",status=\"200\"}}");
    let (status, text) = metrics(&agent, Some(&admin)).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\nlodge_proxy_up 1\n"), "{text}");
    let before = sample(&text, &ok_series);
    assert!(before >= 1.0, "{text}");

    // Five static requests with a referer and a user agent that try to end their fields,
    // one through PHP, one not found.
    let hostile = [
        ("referer", "https://ref.example/\" 200 0 \"x"),
        ("user-agent", "evil\"\tagent\\"),
    ];
    for i in 0..5 {
        let (status, _, body) =
            through_proxy(&http, &domain, &format!("/hello.txt?n={i}"), &hostile).await;
        assert_eq!((status, body.as_str()), (200, "hello"));
    }
    let (status, _, body) = through_proxy(&http, &domain, "/index.php", &[]).await;
    assert_eq!((status, body.as_str()), (200, "php"));
    assert_eq!(
        through_proxy(&http, &domain, "/missing.txt", &[]).await.0,
        404
    );
    let (_, text) = metrics(&agent, Some(&admin)).await;
    assert_eq!(sample(&text, &ok_series), before + 6.0, "{text}");
    assert_eq!(
        sample(
            &text,
            &format!("lodge_proxy_requests_total{{vhost=\"{domain}\",status=\"404\"}}")
        ),
        1.0
    );
    assert!(
        sample(
            &text,
            &format!("lodge_proxy_request_duration_seconds_count{{vhost=\"{domain}\"}}")
        ) >= before + 7.0
    );
    assert!(text.contains(&format!(
        "lodge_proxy_pool_queue{{tenant=\"{tenant}\"}} 0\n"
    )));
    assert!(text.contains("lodge_proxy_log_lines_dropped_total{reason=\"queue_full\"} 0\n"));
    assert!(
        text.contains("lodge_tenants{state=\"active\"} 2\n"),
        "{text}"
    );

    // The lines reach the vhost's file within about a second, in the combined format.
    let file = site
        .log()
        .join("access")
        .join(&tenant)
        .join(format!("{domain}.log"));
    let mut text = String::new();
    wait_for(
        "the lines in the access log",
        Duration::from_secs(5),
        || {
            text = std::fs::read_to_string(&file).unwrap_or_default();
            text.contains("/missing.txt")
        },
    )
    .await;
    assert_eq!(text.matches("GET /hello.txt?n=").count(), 5, "{text}");
    for line in text.lines() {
        assert!(well_formed(line), "{line}");
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    }
    let line = text.lines().find(|l| l.contains("?n=3 ")).unwrap();
    assert!(
        line.ends_with(
            "\"GET /hello.txt?n=3 HTTP/1.1\" 200 5 \"https://ref.example/\\x22 200 0 \\x22x\" \"evil\\x22\\x09agent\\x5C\""
        ),
        "{line}"
    );
    assert!(
        text.contains("\"GET /index.php HTTP/1.1\" 200 3 \"-\" "),
        "{text}"
    );
    assert!(
        text.contains("\"GET /missing.txt HTTP/1.1\" 404 "),
        "{text}"
    );
    // The proxy writes, the panel's group reads, nobody else.
    let www = ids("lodge-www");
    let panel_gid = nix::unistd::Group::from_name("lodge")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (www.0, panel_gid, 0o640)
    );
    let dir = std::fs::metadata(file.parent().unwrap()).unwrap();
    assert_eq!(
        (dir.uid(), dir.gid(), dir.mode() & 0o7777),
        (www.0, panel_gid, 0o2750)
    );
    let socket = std::fs::metadata(site.run().join("proxy-metrics.sock")).unwrap();
    assert_eq!(
        (socket.uid(), socket.gid(), socket.mode() & 0o777),
        (0, panel_gid, 0o660)
    );

    // The API shows it to the admin, searched, and not to another tenant.
    let log = format!("/tenants/{tenant}/vhosts/{domain}/access-log");
    let (status, body) = agent
        .call(Method::GET, &format!("{log}?lines=2"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let lines = body["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].as_str().unwrap().contains("GET /index.php "));
    assert!(lines[1].as_str().unwrap().contains("GET /missing.txt "));
    let (_, body) = agent
        .call(Method::GET, &format!("{log}?q=n%3D3"), None)
        .await;
    assert_eq!(body["lines"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["lines"][0], line);
    let (status, body) = agent
        .call(Method::GET, &format!("{log}?lines=0"), None)
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "lines");
    let theirs: Value = agent
        .http
        .post(format!("{}/api/v1/tokens", agent.base_url))
        .json(&json!({"username": other, "password": "other-password-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let theirs = format!("Bearer {}", theirs["token"].as_str().unwrap());
    let r = agent
        .http
        .get(format!("{}/api/v1{log}", agent.base_url))
        .header("authorization", &theirs)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // Nor the metrics: they are the admins'.
    assert_eq!(metrics(&agent, Some(&theirs)).await.0, 403);
    assert_eq!(metrics(&agent, None).await.0, 401);

    // Rotation: the file moved away, SIGUSR1 to the agent, and the proxy starts a new one.
    let moved = file.with_extension("log.1");
    std::fs::rename(&file, &moved).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let fresh = loop {
        assert_eq!(
            through_proxy(&http, &domain, "/hello.txt?after=rotation", &[])
                .await
                .0,
            200
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let fresh = std::fs::read_to_string(&file).unwrap_or_default();
        if fresh.contains("?after=rotation") {
            break fresh;
        }
        assert!(Instant::now() < deadline, "no new log file after SIGUSR1");
    };
    assert!(!fresh.contains("?n="), "the new file starts empty: {fresh}");
    assert!(fresh.lines().all(well_formed), "{fresh}");
    assert!(std::fs::read_to_string(&moved)
        .unwrap()
        .contains("/missing.txt"));
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (www.0, panel_gid, 0o640)
    );
    // The proxy survived the signal (and so did the masters).
    assert_eq!(
        through_proxy(&http, &domain, "/index.php", &[]).await.0,
        200
    );

    // A pool that is down counts as a FastCGI error of its tenant.
    std::fs::remove_file(site.socket(&tenant)).unwrap();
    let _ = Command::new("pkill")
        .args(["-9", "-u", &ids(&tenant).0.to_string()])
        .status();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        through_proxy(&http, &domain, "/index.php", &[]).await.0,
        502
    );
    let (_, text) = metrics(&agent, Some(&admin)).await;
    let down = format!("lodge_proxy_fastcgi_errors_total{{tenant=\"{tenant}\",kind=\"down\"}}");
    assert!(sample(&text, &down) >= 1.0, "{text}");
    assert_eq!(
        sample(
            &text,
            &format!("lodge_proxy_requests_total{{vhost=\"{domain}\",status=\"502\"}}")
        ),
        1.0
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&site.base);
}
