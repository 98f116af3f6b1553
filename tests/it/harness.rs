//! Test harness: runs the real `lodge` binary on a free port with a fresh data directory,
//! and talks to its REST API.
//!
//! Every test spawns its own instance (`spawn_app`), so tests run in parallel without sharing
//! state, sign-in throttles or ports. The instance is killed and its directory removed when
//! the `App` is dropped.

#![allow(dead_code)] // Not every test file uses every helper.

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-password-1";
/// A password the rules accept, for every account the tests make.
pub const PASSWORD: &str = "a-long-password-1";

/// The `lodge` binary for the instance in `data_dir`, with none of the developer's
/// `LODGE_*` settings leaking in.
///
/// The panel runs alone (`LODGE_AGENT=false`): as root, `serve` would otherwise also start
/// the agent, which creates real Linux users and PHP-FPM pools on this machine and would
/// make parallel tests collide on tenant names. Runtime and tenant directories stay inside
/// the test's own directory all the same.
fn lodge(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lodge"));
    for var in [
        "LODGE_CONFIG",
        "LODGE_PANEL_LISTEN",
        "LODGE_PUBLIC_URL",
        "LODGE_UID_RANGE",
        "LODGE_PHP_FPM",
        "LODGE_FAULT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("LODGE_LOG", "warn")
        .env("LODGE_AGENT", "false")
        .env("LODGE_DATA_DIR", data_dir)
        .env("LODGE_RUN_DIR", data_dir.join("run"))
        .env("LODGE_LOG_DIR", data_dir.join("log"))
        .env("LODGE_TENANTS_ROOT", data_dir.join("tenants"));
    cmd
}

/// A new, empty directory under the system's temporary directory.
fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "lodge-it-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("creating the test data directory");
    dir
}

/// A running `lodge serve`.
pub struct App {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    pub data_dir: PathBuf,
    client: reqwest::Client,
    child: Child,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Creates the first admin with the command line, then starts the panel on port 0 and waits
/// for the line that says where it listens.
pub async fn spawn_app() -> App {
    spawn_app_with(&[]).await
}

/// `spawn_app` with extra environment for `lodge serve` (e.g. the agent's settings).
pub async fn spawn_app_with(env: &[(&str, &str)]) -> App {
    let data_dir = fresh_dir();

    let mut add = lodge(&data_dir)
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["user", "add", ADMIN, "--role", "admin", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running `lodge user add`");
    add.stdin
        .take()
        .expect("stdin of `lodge user add`")
        .write_all(format!("{ADMIN_PASSWORD}\n").as_bytes())
        .expect("writing the admin password");
    let out = add
        .wait_with_output()
        .expect("waiting for `lodge user add`");
    assert!(
        out.status.success(),
        "`lodge user add` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("created admin 'admin'"),
        "unexpected output of `lodge user add`: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    let mut child = lodge(&data_dir)
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--panel-listen", "127.0.0.1:0", "serve"])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("running `lodge serve`");

    // A thread reads stdout for the whole life of the child, so the child never blocks (or
    // fails) writing to a full or closed pipe.
    let stdout = child.stdout.take().expect("stdout of `lodge serve`");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix("lodge panel listening on ") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(url.trim().trim_end_matches('/').to_owned());
                }
            }
        }
    });
    let base = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
        .await
        .expect("waiting for the listening line");
    let base = match base {
        Ok(base) => base,
        Err(e) => {
            let status = child.try_wait();
            let _ = child.kill();
            panic!("`lodge serve` did not say where it listens ({e}); exit status: {status:?}");
        }
    };
    assert!(
        base.starts_with("http://127.0.0.1:"),
        "unexpected listen URL {base}"
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("building the HTTP client");
    App {
        base,
        data_dir,
        client,
        child,
    }
}

impl App {
    /// An API client without credentials.
    pub fn anon(&self) -> Api {
        Api {
            client: self.client.clone(),
            base: format!("{}/api/v1", self.base),
            auth: None,
        }
    }

    /// An API client sending `Authorization: Bearer <token>`.
    pub fn api(&self, token: &str) -> Api {
        self.with_header(&format!("Bearer {token}"))
    }

    /// An API client sending this exact `Authorization` header.
    pub fn with_header(&self, authorization: &str) -> Api {
        Api {
            auth: Some(authorization.to_owned()),
            ..self.anon()
        }
    }

    /// Signs in (POST /tokens) and returns the new token; panics unless it is 201.
    pub async fn token(&self, username: &str, password: &str) -> String {
        let r = self
            .anon()
            .send(
                Method::POST,
                "/tokens",
                Some(&json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(r.status, 201, "signing in as {username}: {}", r.text);
        assert_eq!(r.json["username"], username);
        r.json["token"]
            .as_str()
            .expect("a token in the answer")
            .to_owned()
    }

    /// Signs in and returns a client with the new token.
    pub async fn sign_in(&self, username: &str, password: &str) -> Api {
        let token = self.token(username, password).await;
        self.api(&token)
    }

    /// The admin the harness created, signed in.
    pub async fn admin(&self) -> Api {
        self.sign_in(ADMIN, ADMIN_PASSWORD).await
    }

    /// Runs one query on the store with the `sqlite3` command line, read-only; `None` when
    /// `sqlite3` is not installed (the check is then skipped: the API checks still run).
    pub fn sqlite(&self, sql: &str) -> Option<String> {
        let db = self.data_dir.join("lodge.db");
        match Command::new("sqlite3")
            .arg("-readonly")
            .arg(&db)
            .arg(sql)
            .output()
        {
            Ok(out) => {
                assert!(
                    out.status.success(),
                    "sqlite3 {sql:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
            }
            Err(e) => {
                eprintln!("sqlite3 is not available ({e}); skipping the direct store check");
                None
            }
        }
    }

    /// Rows in `table`, counted in the store itself (`None` without `sqlite3`).
    pub fn sqlite_count(&self, table: &str) -> Option<i64> {
        self.sqlite(&format!("SELECT COUNT(*) FROM {table}"))
            .map(|s| s.parse().expect("a count"))
    }
}

/// One answer, whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The raw body.
    pub text: String,
    /// The body as JSON; `Null` when empty, a JSON string of the text when it is not JSON.
    pub json: Value,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A client of `/api/v1`, with or without a credential.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    auth: Option<String>,
}

impl Api {
    /// Sends `method path` (relative to `/api/v1`, query included) with an optional JSON body.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(auth) = &self.auth {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        self.finish(req).await
    }

    /// Sends a raw body with the given content type (or none).
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .body(body);
        if let Some(auth) = &self.auth {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        self.finish(req).await
    }

    async fn finish(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("sending the request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("reading the body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()))
        };
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.send(Method::GET, path, None).await;
        (r.status, r.json)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.send(Method::POST, path, Some(&body)).await;
        (r.status, r.json)
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.send(Method::PATCH, path, Some(&body)).await;
        (r.status, r.json)
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self.send(Method::DELETE, path, None).await;
        (r.status, r.json)
    }

    /// Every item of a collection, following `next` page by page (500 at a time).
    pub async fn all(&self, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let url = match &after {
                Some(a) => format!("{path}{sep}limit=500&after={}", enc(a)),
                None => format!("{path}{sep}limit=500"),
            };
            let (status, body) = self.get(&url).await;
            assert_eq!(status, 200, "GET {url}: {body}");
            items.extend(body["items"].as_array().expect("items").iter().cloned());
            match body["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return items,
            }
        }
    }

    /// The values of `key` in every item of a collection, in order.
    pub async fn names(&self, path: &str, key: &str) -> Vec<String> {
        self.all(path)
            .await
            .iter()
            .map(|i| i[key].as_str().expect("a string key").to_owned())
            .collect()
    }
}

/// Percent-encodes a query-string value.
pub fn enc(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `field` of every entry of a problem document's `errors`.
pub fn error_fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts a 422 whose `errors` name `field`, in a problem document.
#[track_caller]
pub fn assert_invalid(status: u16, body: &Value, field: &str, what: &str) {
    assert_eq!(
        status, 422,
        "{what}: expected 422 naming {field}, got {body}"
    );
    assert_eq!(body["status"], 422, "{what}: problem status in {body}");
    let fields = error_fields(body);
    assert!(
        fields.iter().any(|f| f == field),
        "{what}: expected an error on {field:?}, got {fields:?} in {body}"
    );
}

/// Asserts a 409 whose `errors` name `field`: well-formed input the current state refuses.
#[track_caller]
pub fn assert_refused(status: u16, body: &Value, field: &str, what: &str) {
    assert_eq!(
        status, 409,
        "{what}: expected 409 naming {field}, got {body}"
    );
    let fields = error_fields(body);
    assert!(
        fields.iter().any(|f| f == field),
        "{what}: expected a refusal of {field:?}, got {fields:?} in {body}"
    );
}

/// Asserts a 409 naming `field`.
#[track_caller]
pub fn assert_conflict(status: u16, body: &Value, field: &str, what: &str) {
    assert_eq!(status, 409, "{what}: expected 409, got {body}");
    assert_eq!(
        error_fields(body),
        vec![field.to_owned()],
        "{what}: conflict field in {body}"
    );
}

// ---- fixtures ----

/// Creates a plan (admin only); `extra` is merged into the body.
pub async fn create_plan(admin: &Api, name: &str, extra: Value) -> Value {
    let mut body = json!({"name": name});
    merge(&mut body, extra);
    let (status, plan) = admin.post("/plans", body).await;
    assert_eq!(status, 201, "creating plan {name}: {plan}");
    plan
}

/// Creates a reseller with these limits and signs it in.
pub async fn create_reseller(app: &App, admin: &Api, name: &str, limits: Value) -> Api {
    let (status, user) = admin
        .post(
            "/users",
            json!({"username": name, "password": PASSWORD, "role": "reseller", "limits": limits}),
        )
        .await;
    assert_eq!(status, 201, "creating reseller {name}: {user}");
    app.sign_in(name, PASSWORD).await
}

/// Creates a tenant as `api`; `extra` is merged into `{"name", "plan"}`.
pub async fn create_tenant(api: &Api, name: &str, plan: &str, extra: Value) -> Value {
    let mut body = json!({"name": name, "plan": plan});
    merge(&mut body, extra);
    let (status, tenant) = api.post("/tenants", body).await;
    assert_eq!(status, 201, "creating tenant {name}: {tenant}");
    assert_eq!(tenant["name"], name);
    tenant
}

/// Creates a vhost of `tenant` as `api`, with default settings.
pub async fn create_vhost(api: &Api, tenant: &str, domain: &str) -> Value {
    let (status, vhost) = api
        .post(
            &format!("/tenants/{tenant}/vhosts"),
            json!({"domain": domain}),
        )
        .await;
    assert_eq!(status, 201, "creating vhost {domain}: {vhost}");
    assert_eq!(vhost["domain"], domain);
    vhost
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}

/// How many audit entries the admin sees.
pub async fn audit_count(admin: &Api) -> usize {
    admin.all("/audit").await.len()
}

/// Everything the admin can see, plus row counts and the generation read from the store: two
/// equal snapshots mean nothing was stored in between.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    users: Vec<Value>,
    plans: Vec<Value>,
    tenants: Vec<Value>,
    vhosts: Vec<Value>,
    audit: Vec<Value>,
    /// `table=count` lines and the generation, when `sqlite3` is there.
    store: Option<String>,
}

pub async fn snapshot(app: &App, admin: &Api) -> Snapshot {
    let tenants = admin.all("/tenants").await;
    let mut vhosts = Vec::new();
    for t in &tenants {
        let name = t["name"].as_str().expect("tenant name");
        vhosts.extend(admin.all(&format!("/tenants/{name}/vhosts")).await);
    }
    let store = app.sqlite(
        "SELECT 'users=' || (SELECT COUNT(*) FROM users)
             || ' plans=' || (SELECT COUNT(*) FROM plans)
             || ' tenants=' || (SELECT COUNT(*) FROM tenants)
             || ' logins=' || (SELECT COUNT(*) FROM tenant_logins)
             || ' uids=' || (SELECT COUNT(*) FROM uid_reservations)
             || ' removals=' || (SELECT COUNT(*) FROM tenant_removals)
             || ' vhosts=' || (SELECT COUNT(*) FROM vhosts)
             || ' names=' || (SELECT COUNT(*) FROM vhost_names)
             || ' audit=' || (SELECT COUNT(*) FROM audit_log)
             || ' generation=' || (SELECT generation FROM state)",
    );
    Snapshot {
        users: admin.all("/users").await,
        plans: admin.all("/plans").await,
        tenants,
        vhosts,
        audit: admin.all("/audit").await,
        store,
    }
}

/// Asserts two snapshots are equal, naming the first part that differs.
#[track_caller]
pub fn assert_unchanged(before: &Snapshot, after: &Snapshot, what: &str) {
    assert_eq!(before.users, after.users, "{what}: users changed");
    assert_eq!(before.plans, after.plans, "{what}: plans changed");
    assert_eq!(before.tenants, after.tenants, "{what}: tenants changed");
    assert_eq!(before.vhosts, after.vhosts, "{what}: vhosts changed");
    assert_eq!(
        before.audit.len(),
        after.audit.len(),
        "{what}: audit log changed; newest entries: {:?}",
        &after.audit[..after.audit.len().saturating_sub(before.audit.len())]
    );
    assert_eq!(before.store, after.store, "{what}: store rows changed");
}

/// The documented operations, as (METHOD, path template), from GET /api/v1/openapi.json.
pub async fn documented_operations(app: &App) -> BTreeSet<(String, String)> {
    let (status, doc) = app.anon().get("/openapi.json").await;
    assert_eq!(status, 200, "openapi.json: {doc}");
    let paths = doc["paths"].as_object().expect("paths in openapi.json");
    let mut ops = BTreeSet::new();
    for (path, item) in paths {
        for method in item.as_object().expect("a path item").keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    assert!(ops.len() >= 20, "suspiciously few operations: {ops:?}");
    ops
}

/// Whether the document marks the operation as needing no credential (`security: []`).
pub fn is_public(doc: &Value, method: &str, path: &str) -> bool {
    doc["paths"][path][method.to_lowercase()]["security"]
        .as_array()
        .is_some_and(|s| s.is_empty())
}

/// A path template with its parameters filled by harmless dummies.
pub fn fill_path(template: &str) -> String {
    template
        .split('/')
        .map(|seg| match seg {
            "{domain}" => "dummy.example.com".to_owned(),
            "{id}" => "1".to_owned(),
            s if s.starts_with('{') && s.ends_with('}') => "dummy".to_owned(),
            s => s.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The reqwest method for an upper-case method name.
pub fn method(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("an HTTP method")
}

/// Sends a raw HTTP/1.1 request (`head` without the blank line; `Host` and
/// `Connection: close` are added) and returns the whole answer as text. Writes and reads at
/// once, because the server may answer, and stop reading, before the body is sent.
pub async fn raw_http(app: &App, head: &str, body: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connecting to the panel");
    let (mut rd, mut wr) = stream.into_split();
    let head = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for chunk in body.chunks(16 * 1024) {
            if wr.write_all(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut answer)).await;
    let _ = writer.await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code of a raw answer (0 when there is none).
pub fn raw_status(answer: &str) -> u16 {
    answer
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A real certificate and key (PEM) for `names`, as a tenant would upload them.
pub fn test_certificate(names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a key");
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("certificate names");
    let cert = params.self_signed(&key).expect("a certificate");
    (cert.pem(), key.serialize_pem())
}
