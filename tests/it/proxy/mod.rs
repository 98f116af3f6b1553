//! `lodge proxy` on its own, as whoever runs the tests: no root needed. Each test writes a
//! routes snapshot by hand (`<run-dir>/routes.json`, as the agent publishes it), starts the
//! proxy on ports it binds itself (`--http-listen 127.0.0.1:0`, no listeners handed over)
//! and, where PHP is asked for, a php-fpm master of its own running as the same user. The
//! proxy behind the agent, as root with real tenants, is tested in `tests/it/agent/`.

mod hosts;
mod logs;
mod php;
mod reload;
mod statics;
mod tls;

use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The tenant every snapshot here names.
const TENANT: &str = "acme";

/// A fresh directory for one test: the proxy's run and log directories, the tenant's home
/// with a docroot per domain, and php-fpm's socket.
struct Sandbox {
    dir: PathBuf,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Sandbox {
    fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lodge-proxy-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        // The access log directory of the tenant is the agent's to make.
        for sub in ["run", "home", &format!("log/access/{TENANT}")] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        Sandbox { dir }
    }

    fn run(&self) -> PathBuf {
        self.dir.join("run")
    }

    fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("log")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("php.sock")
    }

    /// The docroot of `domain` (made if missing), as the agent lays it out.
    fn docroot(&self, domain: &str) -> PathBuf {
        let dir = self.home().join("sites").join(domain).join("public");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Writes a file beneath the docroot of `domain`.
    fn write(&self, domain: &str, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.docroot(domain).join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    /// A routes entry for `domain` with every field at the value the agent gives a new
    /// vhost: PHP on, no front controller, no TLS, no redirect. Tests change fields in it.
    fn vhost(&self, domain: &str) -> Value {
        json!({
            "domain": domain,
            "names": [domain],
            "tenant": TENANT,
            "home": self.home(),
            "docroot": self.docroot(domain),
            "php": true,
            "front_controller": null,
            "socket": self.socket(),
            "max_children": 2,
            "suspended": false,
            "redirect_https": false,
            "redirect_www": "none",
            "tls_cert": null,
            "tls_key": null,
            "body_limit_mb": 64,
        })
    }

    /// A self-signed certificate for `name`, as PEM files in the sandbox: (certificate,
    /// key). A client that trusts the certificate file verifies the proxy's handshake.
    fn certificate(&self, name: &str) -> (PathBuf, PathBuf) {
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let dir = self.dir.join("tls");
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    /// Publishes a snapshot as the agent does: written beside its name, then renamed over
    /// it, so the proxy reads the old one or the new one, never half of one.
    fn publish(&self, generation: i64, vhosts: &[Value]) {
        let text = serde_json::to_string_pretty(&json!({
            "generation": generation,
            "vhosts": vhosts,
        }))
        .unwrap();
        let tmp = self.run().join(".routes.json.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.run().join("routes.json")).unwrap();
    }
}

/// One answer: status, header fields, body as text.
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A running `lodge proxy`, stopped when dropped.
struct Proxy {
    child: Child,
    /// `http://127.0.0.1:PORT`, as the proxy printed it.
    http: String,
    /// `https://127.0.0.1:PORT`.
    https: String,
    client: reqwest::Client,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// Starts `lodge proxy` on the sandbox's run and log directories with both listeners
    /// on free ports, and waits for the lines that say where they are. The snapshot already
    /// published is loaded before those lines are printed.
    async fn start(sandbox: &Sandbox) -> Proxy {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lodge"));
        for var in ["LODGE_CONFIG", "LODGE_PROXY_FDS", "LODGE_FAULT"] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .arg("proxy")
            .env("LODGE_LOG", "warn")
            .env("LODGE_DATA_DIR", sandbox.dir.join("data"))
            .env("LODGE_TENANTS_ROOT", sandbox.dir.join("tenants"))
            .env("LODGE_RUN_DIR", sandbox.run())
            .env("LODGE_LOG_DIR", sandbox.log())
            .env("LODGE_HTTP_LISTEN", "127.0.0.1:0")
            .env("LODGE_HTTPS_LISTEN", "127.0.0.1:0")
            // Two event loops: connections still land on either, and the suite's many
            // proxies do not start a thread per core each.
            .env("LODGE_PROXY_THREADS", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("running `lodge proxy`");
        // Read for the proxy's whole life, so it never blocks writing to a full pipe.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("lodge proxy listening on ") {
                    let _ = tx.send(url.trim().trim_end_matches('/').to_owned());
                }
            }
        });
        let urls = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut urls = Vec::new();
            while urls.len() < 2 {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(url) => urls.push(url),
                    Err(_) => break,
                }
            }
            urls
        })
        .await
        .unwrap();
        let find = |scheme: &str| {
            urls.iter()
                .find(|u| u.starts_with(&format!("{scheme}://")))
                .cloned()
                .unwrap_or_else(|| panic!("`lodge proxy` did not say where {scheme} is: {urls:?}"))
        };
        let (http, https) = (find("http"), find("https"));
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Proxy {
            child,
            http,
            https,
            client,
        }
    }

    fn https_port(&self) -> &str {
        self.https.rsplit(':').next().unwrap()
    }

    /// `method path` on the HTTP listener with this Host header.
    async fn send(
        &self,
        method: reqwest::Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.http))
            .header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let r = req.send().await.expect("the proxy answers");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap_or_default();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, host: &str, path: &str) -> Reply {
        self.send(reqwest::Method::GET, host, path, &[], None).await
    }

    async fn get_with(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(reqwest::Method::GET, host, path, headers, None)
            .await
    }

    /// Asks until `check` holds for the answer, for at most 5 s; returns that answer.
    async fn until(
        &self,
        host: &str,
        path: &str,
        what: &str,
        check: impl Fn(&Reply) -> bool,
    ) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = self.get(host, path).await;
            if check(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{what} within 5 s; last answer {} {}",
                r.status,
                r.body
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A php-fpm master running as this user, with its own pool file, serving on the
/// sandbox's socket; stopped (with its workers) when dropped.
struct Fpm {
    child: Child,
    log: PathBuf,
}

impl Drop for Fpm {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers before it exits.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// php-fpm, if installed: the version `scripts/test` installs, else the newest 8.x.
fn php_fpm_binary() -> Option<PathBuf> {
    let usual = Path::new("/usr/sbin/php-fpm8.2");
    if usual.exists() {
        return Some(usual.to_owned());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/sbin")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("php-fpm8."))
        })
        .collect();
    found.sort();
    found.pop()
}

impl Fpm {
    /// Starts a master with `workers` static workers and waits until its socket accepts;
    /// `None` (the test then says it is skipped) when php-fpm is not installed.
    async fn start(sandbox: &Sandbox, workers: u32) -> Option<Fpm> {
        let binary = php_fpm_binary()?;
        let root = nix::unistd::geteuid().is_root();
        let dir = &sandbox.dir;
        let log = dir.join("fpm.log");
        // The error log is a file: as another user than the one who owns the test's
        // stderr, php-fpm cannot open /proc/self/fd/2.
        let mut conf = format!(
            "[global]\npid = {}\nerror_log = {}\ndaemonize = no\n\n\
             [site]\nlisten = {}\npm = static\npm.max_children = {workers}\n",
            dir.join("fpm.pid").display(),
            log.display(),
            sandbox.socket().display(),
        );
        // As root php-fpm wants a user for its workers, and runs them as root only with
        // -R; as anyone else it runs them as itself and would ignore the setting.
        if root {
            conf.push_str("user = root\n");
        }
        let conf_path = dir.join("fpm.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut cmd = Command::new(binary);
        cmd.arg("-F").arg("-y").arg(&conf_path);
        if root {
            cmd.arg("-R");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running php-fpm");
        let mut fpm = Fpm { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(sandbox.socket()).is_err() {
            let exited = fpm.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "php-fpm does not listen ({exited:?}): {}",
                std::fs::read_to_string(&fpm.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(fpm)
    }
}

/// Says loudly that a test did not run.
fn skipped(test: &str) {
    eprintln!("SKIPPED {test}: php-fpm is not installed (scripts/test installs php8.2-fpm)");
}

/// `curl https://NAME:PORT/PATH` through the proxy's HTTPS listener, NAME resolved to
/// it (so SNI carries NAME), with `args` before the URL: (stdout, stderr).
fn https(proxy: &Proxy, name: &str, path: &str, args: &[&str]) -> (String, String) {
    let port = proxy.https_port();
    let resolve = format!("{name}:{port}:127.0.0.1");
    let url = format!("https://{name}:{port}{path}");
    let mut all = vec!["--resolve", &resolve];
    all.extend_from_slice(args);
    all.push(&url);
    curl(&all)
}

/// curl, for what reqwest here cannot do (TLS): (stdout, stderr).
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
