//! Store-scale benchmark: how the tenants listing (dashboard and API) and tenant creation
//! hold up with 10,000 tenants and 30,000 vhosts in the store.
//!
//! Run with `cargo bench --bench store` (see bench/README.md). It is a plain program
//! (`harness = false`), not a timed test: it starts the real release binary on a fresh data
//! directory, seeds the store through the REST API, then times sequential requests from one
//! client over loopback and prints a markdown table of percentiles.
//!
//! Only the panel runs (`serve --agent false`): the agent, which as root would create a system
//! user, a home and a PHP-FPM master for every tenant, is neither measured nor allowed to touch
//! the machine.
//!
//! Environment:
//! - `BENCH_TENANTS` (default 10000) and `BENCH_VHOSTS` (default 30000): the store's size.
//! - `BENCH_SAMPLES` (default 200): timed requests per scenario.
//! - `BENCH_KEEP_DATA=1`: keep the data directory afterwards (its path is printed), e.g. to
//!   run `sqlite3 DIR/lodge.db 'EXPLAIN QUERY PLAN ...'` on the seeded store.

use reqwest::redirect::Policy;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEFAULT_TENANTS: usize = 10_000;
const DEFAULT_VHOSTS: usize = 30_000;
const DEFAULT_SAMPLES: usize = 200;
/// Untimed requests before each scenario (connection set up, caches warm).
const WARMUP: usize = 20;
/// Concurrent clients while seeding. Writes queue on lodge's single writer connection, so
/// more would not help much; a few keep the HTTP and JSON work overlapped.
const SEED_TASKS: usize = 4;
/// The benchmark plan's vhost limit (lodge's default plan value).
const PLAN_MAX_VHOSTS: usize = 10;
const ADMIN: &str = "admin";
const PASSWORD: &str = "bench-password-not-secret";
/// The sparse search of scenario (c): at full size it matches t09990..t09999 only, so the
/// query has to look at every tenant (and its domains) to fill a page.
const SEARCH: &str = "t0999";

fn main() {
    let tenants = env_usize("BENCH_TENANTS", DEFAULT_TENANTS);
    let vhosts = env_usize("BENCH_VHOSTS", DEFAULT_VHOSTS);
    let samples = env_usize("BENCH_SAMPLES", DEFAULT_SAMPLES);
    assert!(tenants >= 2, "BENCH_TENANTS must be at least 2");
    assert!(
        vhosts <= tenants * PLAN_MAX_VHOSTS,
        "BENCH_VHOSTS must be at most {PLAN_MAX_VHOSTS} per tenant"
    );
    assert!(samples >= 1, "BENCH_SAMPLES must be at least 1");

    // Declared before the server so it is dropped after it: the server is killed first,
    // then its directory removed.
    let data = DataDir::new();
    create_admin(&data.path);
    let server = Server::start(&data.path);
    eprintln!(
        "bench: lodge at {} with data in {}",
        server.base,
        data.path.display()
    );

    // One thread: the client side stays light, leaving the other core to the server.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let base = server.base.clone();
    let report = runtime.block_on(run(&base, tenants, vhosts, samples));

    let (db, wal) = store_size(&data.path);
    println!();
    println!("## lodge store benchmark");
    println!();
    println!("{}", machine());
    println!();
    println!(
        "Store: {tenants} tenants, {vhosts} vhosts (each with one alias), plus the {} tenants of the \
         creation row; at the end lodge.db {:.1} MiB + WAL {:.1} MiB.",
        WARMUP + samples,
        mib(db),
        mib(wal)
    );
    println!(
        "Seeding through the API ({SEED_TASKS} concurrent clients): {:.1} s ({:.0} requests/s).",
        report.seed_time.as_secs_f64(),
        (tenants + vhosts) as f64 / report.seed_time.as_secs_f64()
    );
    println!(
        "Timing: {samples} sequential requests per row from one client after {WARMUP} warm-up requests; \
         round trip over loopback, body read in full. Load average as timing began: {}.",
        report.load
    );
    println!();
    println!("| request | target p50 | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---|---:|---:|---:|---:|");
    for row in &report.rows {
        println!("{}", row.markdown());
    }
    drop(server);
    drop(data);
}

/// An environment variable as a count, or the default.
fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, not {v:?}")),
        Err(_) => default,
    }
}

// ---- the server and its data directory ----

/// A fresh data directory under the system temp dir, removed on drop unless
/// `BENCH_KEEP_DATA` is set or the bench failed (its serve.log tells why).
struct DataDir {
    path: PathBuf,
}

impl DataDir {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("lodge-bench-{}-{nanos:09}", std::process::id()));
        std::fs::create_dir_all(&path).expect("creating the data directory");
        Self { path }
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if std::env::var_os("BENCH_KEEP_DATA").is_some() || std::thread::panicking() {
            eprintln!("bench: kept the data in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The lodge binary as cargo built it for this bench (release, in `cargo bench`).
fn lodge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lodge"))
}

/// `lodge user add admin --role admin --password-stdin`.
fn create_admin(dir: &Path) {
    let mut child = lodge()
        .arg("--data-dir")
        .arg(dir)
        .args(["user", "add", ADMIN, "--role", "admin", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("running lodge user add");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .expect("writing the password");
    let status = child.wait().expect("waiting for lodge user add");
    assert!(status.success(), "lodge user add failed: {status}");
}

/// A running `lodge serve`, killed on drop (also when the bench panics).
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(dir: &Path) -> Self {
        let log = std::fs::File::create(dir.join("serve.log")).expect("creating serve.log");
        let mut child = lodge()
            .arg("--data-dir")
            .arg(dir)
            .args(["--panel-listen", "127.0.0.1:0"])
            // The default range (20000-29999) holds 10,000 UIDs only if the system uses none
            // of them; the bench makes more than 10,000 tenants anyway.
            .args(["--uid-range", "20000-60000"])
            // The panel alone: the agent (which, as root, would add system users, homes and
            // PHP-FPM masters for every tenant) is not what is measured, and must not touch
            // the machine. Its paths point into the data directory all the same.
            .args(["--agent", "false"])
            .arg("--run-dir")
            .arg(dir.join("run"))
            .arg("--tenants-root")
            .arg(dir.join("tenants"))
            .arg("serve")
            .env("LODGE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting lodge serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        // Guard from here on, so a failed start still kills the process.
        let mut server = Server {
            child,
            base: String::new(),
        };
        let mut lines = BufReader::new(stdout);
        let mut line = String::new();
        lines.read_line(&mut line).expect("reading lodge's stdout");
        let url = line
            .trim()
            .strip_prefix("lodge panel listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "lodge serve did not start (said {line:?}); see {}",
                    dir.join("serve.log").display()
                )
            });
        server.base = url.trim_end_matches('/').to_owned();
        // Keep draining stdout so a later write never meets a closed pipe.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut lines, &mut std::io::sink());
        });
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the benchmark ----

struct Report {
    seed_time: Duration,
    /// /proc/loadavg's 1, 5 and 15 minute figures as the timing began: other work on the
    /// machine shows up in the tail percentiles.
    load: String,
    rows: Vec<Row>,
}

/// One scenario's timings.
struct Row {
    label: String,
    target_ms: Option<f64>,
    /// Sorted, in milliseconds.
    ms: Vec<f64>,
}

impl Row {
    fn new(label: impl Into<String>, target_ms: Option<f64>, times: Vec<Duration>) -> Self {
        let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        Self {
            label: label.into(),
            target_ms,
            ms,
        }
    }

    /// Nearest-rank percentile of the sorted samples.
    fn percentile(&self, p: f64) -> f64 {
        let rank = ((p / 100.0) * self.ms.len() as f64).ceil() as usize;
        self.ms[rank.clamp(1, self.ms.len()) - 1]
    }

    fn markdown(&self) -> String {
        let p50 = self.percentile(50.0);
        let target = match self.target_ms {
            Some(t) if p50 < t => format!("< {t} ms: met"),
            Some(t) => format!("< {t} ms: **missed**"),
            None => "-".to_owned(),
        };
        format!(
            "| {} | {target} | {p50:.2} | {:.2} | {:.2} | {:.2} |",
            self.label,
            self.percentile(90.0),
            self.percentile(99.0),
            self.ms[self.ms.len() - 1]
        )
    }
}

/// Tenant `n` (1-based): t00001, t00002, ...
fn tenant_name(n: usize) -> String {
    format!("t{n:05}")
}

async fn run(base: &str, tenants: usize, vhosts: usize, samples: usize) -> Report {
    let api = ApiClient::sign_in(base).await;
    api.post(
        "/plans",
        json!({"name": "bench", "max_vhosts": PLAN_MAX_VHOSTS}),
    )
    .await;

    let started = Instant::now();
    seed(&api, tenants, vhosts).await;
    let seed_time = started.elapsed();
    eprintln!(
        "bench: seeded {tenants} tenants and {vhosts} vhosts in {:.1} s",
        seed_time.as_secs_f64()
    );

    let web = web_client(base).await;
    let load = load_average();
    // The tenant in the middle: t05000 at full size.
    let middle = tenant_name(tenants / 2);
    let mut rows = Vec::new();

    // (a)-(c) the dashboard's tenants page: 25 rows, each with its plan's vhost usage. Each
    // page must show the tenant named beside it (a sanity check that sign-in worked and the
    // page is the one meant); the search finds t09990.. only in a store of 9,990 or more.
    let page_target = Some(20.0);
    let search_hit = (tenants >= 9990).then(|| tenant_name(9990));
    for (label, path, shows) in [
        (
            "GET /tenants (dashboard, first page)",
            "/tenants".to_owned(),
            Some(tenant_name(1)),
        ),
        (
            "GET /tenants?after=MID (dashboard)",
            format!("/tenants?after={middle}"),
            Some(tenant_name(tenants / 2 + 1)),
        ),
        (
            "GET /tenants?q=t0999 (dashboard search)",
            format!("/tenants?q={SEARCH}"),
            search_hit,
        ),
    ] {
        let (url, path, web) = (&format!("{base}{path}"), &path, &web);
        let shows = &shows;
        let times = time_requests(samples, || async move {
            let response = web.get(url).send().await.expect("GET the tenants page");
            let status = response.status();
            let body = response.text().await.expect("reading the tenants page");
            assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
            if let Some(name) = shows {
                assert!(
                    body.contains(&format!(">{name}</a>")),
                    "GET {path}: no {name}"
                );
            }
            body
        })
        .await;
        rows.push(Row::new(label.replace("MID", &middle), page_target, times));
    }

    // (d)-(e) the API listing, 100 tenants a page.
    let after_middle = tenants - tenants / 2;
    for (label, path, expected) in [
        (
            "GET /api/v1/tenants?limit=100",
            "/tenants?limit=100".to_owned(),
            100.min(tenants),
        ),
        (
            "GET /api/v1/tenants?limit=100&after=MID",
            format!("/tenants?limit=100&after={middle}"),
            100.min(after_middle),
        ),
    ] {
        let (url, path, api) = (&format!("{}{path}", api.base), &path, &api);
        let times = time_requests(samples, || async move {
            let body = api.get_url(url).await;
            let items = body["items"].as_array().map_or(0, Vec::len);
            assert_eq!(items, expected, "GET {path}: {items} items");
            body
        })
        .await;
        rows.push(Row::new(label.replace("MID", &middle), page_target, times));
    }

    // (f) tenant creation without a password: no argon2, so this is the store's part (the
    // checks, the UID reservation, the insert and the audit entry in one transaction).
    let warmup_names = (1..=WARMUP).map(|i| format!("w{i:05}"));
    for name in warmup_names {
        api.post("/tenants", json!({"name": name, "plan": "bench"}))
            .await;
    }
    let mut times = Vec::with_capacity(samples);
    for i in 1..=samples {
        let body = json!({"name": format!("b{i:05}"), "plan": "bench"});
        let started = Instant::now();
        api.post("/tenants", body).await;
        times.push(started.elapsed());
    }
    rows.push(Row::new(
        "POST /api/v1/tenants (no password)",
        Some(5.0),
        times,
    ));

    Report {
        seed_time,
        load,
        rows,
    }
}

/// Runs `request` WARMUP times untimed, then `samples` times timed, one after another.
async fn time_requests<F, Fut, T>(samples: usize, request: F) -> Vec<Duration>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for _ in 0..WARMUP {
        request().await;
    }
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        // Dropped after the clock stops: only the request and reading the body are timed.
        let _response = request().await;
        times.push(started.elapsed());
    }
    times
}

/// Creates tenants t00001.. and their vhosts with SEED_TASKS concurrent clients. Vhost `j`
/// goes to tenant `j % tenants + 1`, so they spread evenly (3 each at full size).
async fn seed(api: &ApiClient, tenants: usize, vhosts: usize) {
    let next = Arc::new(AtomicUsize::new(1));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..SEED_TASKS {
        let api = api.clone();
        let next = next.clone();
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n > tenants {
                    break;
                }
                let name = tenant_name(n);
                api.post("/tenants", json!({"name": name, "plan": "bench"}))
                    .await;
                let count = vhosts / tenants + usize::from(n - 1 < vhosts % tenants);
                for i in 1..=count {
                    let domain = format!("site{n}-{i}.example.com");
                    api.post(
                        &format!("/tenants/{name}/vhosts"),
                        json!({"domain": domain, "aliases": [format!("www.{domain}")]}),
                    )
                    .await;
                }
                if n % 1000 == 0 {
                    eprintln!("bench: seeded {n} tenants");
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a seeding task failed");
    }
}

// ---- clients ----

/// A REST API client holding an admin's bearer token.
#[derive(Clone)]
struct ApiClient {
    http: Client,
    /// `http://127.0.0.1:PORT/api/v1`
    base: String,
    auth: String,
}

impl ApiClient {
    async fn sign_in(base: &str) -> Self {
        let http = Client::builder()
            .redirect(Policy::none())
            .build()
            .expect("building the HTTP client");
        let base = format!("{base}/api/v1");
        let response = http
            .post(format!("{base}/tokens"))
            .json(&json!({"username": ADMIN, "password": PASSWORD, "name": "bench"}))
            .send()
            .await
            .expect("POST /tokens");
        assert_eq!(response.status(), StatusCode::CREATED, "POST /tokens");
        let body: Value = response.json().await.expect("reading the token");
        let token = body["token"].as_str().expect("a token").to_owned();
        Self {
            http,
            base,
            auth: format!("Bearer {token}"),
        }
    }

    /// POST `path` (under /api/v1) and expect 201 Created.
    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("authorization", &self.auth)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status();
        let text = response.text().await.expect("reading the response");
        assert_eq!(status, StatusCode::CREATED, "POST {path} {body}: {text}");
        serde_json::from_str(&text).expect("a JSON answer")
    }

    /// GET a full URL and expect 200 OK with JSON.
    async fn get_url(&self, url: &str) -> Value {
        let response = self
            .http
            .get(url)
            .header("authorization", &self.auth)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status();
        let text = response.text().await.expect("reading the response");
        assert_eq!(status, StatusCode::OK, "GET {url}: {text}");
        serde_json::from_str(&text).expect("a JSON answer")
    }
}

/// A dashboard client signed in as the admin: its cookie jar holds `lodge_session`.
async fn web_client(base: &str) -> Client {
    let web = Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .build()
        .expect("building the HTTP client");
    let page = web
        .get(format!("{base}/login"))
        .send()
        .await
        .expect("GET /login")
        .text()
        .await
        .expect("reading /login");
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a CSRF field on /login") + marker.len();
    let csrf = &page[start..start + page[start..].find('"').expect("a closing quote")];
    let response = web
        .post(format!("{base}/login"))
        .form(&[("csrf", csrf), ("username", ADMIN), ("password", PASSWORD)])
        .send()
        .await
        .expect("POST /login");
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "signing in to the dashboard"
    );
    web
}

// ---- the machine and the store ----

/// Sizes in bytes of lodge.db and its WAL.
fn store_size(dir: &Path) -> (u64, u64) {
    let size = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
    (size("lodge.db"), size("lodge.db-wal"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The 1, 5 and 15 minute load averages, as "1.02 0.80 0.55".
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// "Machine: 2 CPUs (model), 23.4 GiB memory, Linux 6.x" from /proc.
fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let meminfo = read("/proc/meminfo");
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = read("/proc/sys/kernel/osrelease");
    format!(
        "Machine: {cpus} CPUs ({model}), {:.1} GiB memory, Linux {}.",
        mem_kib / (1024.0 * 1024.0),
        kernel.trim()
    )
}
