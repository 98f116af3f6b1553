//! The API against its own document: schemathesis, a property-based fuzzer, reads
//! `/api/v1/openapi.json` and sends what it allows and what it refuses, with every check on
//! (statuses, content types, headers and bodies as documented; valid requests accepted and
//! invalid ones refused; authentication; deleted objects gone). Any finding fails the test.
//!
//! `scripts/test` installs the pinned schemathesis (`scripts/schemathesis-requirements.txt`)
//! and names it in `LODGE_SCHEMATHESIS`; without it this test fails rather than skips. It
//! keeps a core busy for a minute or more, so `scripts/test` runs it after the others, alone.

use crate::harness::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// Fixed, so a run makes the same requests every time (a finding can be replayed).
const SEED: &str = "20261202";
/// Test cases per operation and phase: bounds the run to about a minute on two cores.
const EXAMPLES: &str = "40";

fn schemathesis() -> PathBuf {
    let path = std::env::var_os("LODGE_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("schemathesis"));
    let pinned = include_str!("../../scripts/schemathesis-requirements.txt")
        .lines()
        .find_map(|l| l.strip_prefix("schemathesis=="))
        .expect("schemathesis pinned in scripts/schemathesis-requirements.txt");
    let version = Command::new(&path).arg("--version").output();
    match version {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout).trim()
                == format!("schemathesis, version {pinned}") =>
        {
            path
        }
        Ok(out) => panic!(
            "{} is not schemathesis {pinned}: {}; run scripts/test, which installs it",
            path.display(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        Err(e) => panic!(
            "schemathesis {pinned} is not installed ({}: {e}); run scripts/test, which installs it \
             and sets LODGE_SCHEMATHESIS",
            path.display()
        ),
    }
}

/// Objects for path parameters to name, beside the names the fuzzer makes up: two tenants
/// with a vhost each (one with access-log lines), a reseller, and a token it may revoke.
async fn seed(app: &App, admin: &Api) -> i64 {
    create_plan(admin, "basic", json!({})).await;
    for (tenant, domain) in [("acme", "acme.example.com"), ("beta", "beta.example.org")] {
        create_tenant(admin, tenant, "basic", json!({})).await;
        create_vhost(admin, tenant, domain).await;
    }
    create_reseller(app, admin, "resa", json!({})).await;
    let log = app.data_dir.join("log/access/acme/acme.example.com.log");
    std::fs::create_dir_all(log.parent().expect("a log directory")).expect("the log directory");
    std::fs::write(
        &log,
        "127.0.0.1 - - [02/Dec/2026:10:00:00 +0000] \"GET / HTTP/1.1\" 200 12 \"-\" \"curl/8\"\n\
         127.0.0.1 - - [02/Dec/2026:10:00:01 +0000] \"GET /x HTTP/1.1\" 404 9 \"-\" \"curl/8\"\n",
    )
    .expect("writing an access log");
    let r = app
        .anon()
        .send(
            reqwest::Method::POST,
            "/tokens",
            Some(&json!({"username": ADMIN, "password": ADMIN_PASSWORD, "name": "decoy"})),
        )
        .await;
    assert_eq!(r.status, 201, "the decoy token: {}", r.text);
    r.json["id"].as_i64().expect("a token id")
}

/// Path parameters drawn half the time from the seeded objects. `DELETE /tokens/{id}` always
/// names the decoy: revoking the fuzzer's own token would leave it nothing but 401s.
fn config(decoy: i64) -> String {
    format!(
        r#"[dictionaries.tenants]
values = ["acme", "beta"]
[dictionaries.plans]
values = ["basic"]
[dictionaries.domains]
values = ["acme.example.com", "beta.example.org"]
[dictionaries.users]
values = ["admin", "resa"]

[parameters]
"path.domain" = {{ dictionary = "domains", probability = 0.5 }}
"path.username" = {{ dictionary = "users", probability = 0.5 }}

[[operations]]
include-path-regex = "^/tenants/"
parameters = {{ "path.name" = {{ dictionary = "tenants", probability = 0.5 }} }}

[[operations]]
include-path-regex = "^/plans/"
parameters = {{ "path.name" = {{ dictionary = "plans", probability = 0.5 }} }}

[[operations]]
include-name = "DELETE /tokens/{{id}}"
parameters = {{ "path.id" = {decoy} }}

# A certificate's content (its DER, the key it belongs to, the names it covers) is checked
# beyond what a schema can state: a well-formed PEM that is no such certificate is 422 on
# tls_certificate or tls_key, as the document says.
[[operations]]
include-name = "POST /tenants/{{name}}/vhosts"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]

[[operations]]
include-name = "PATCH /vhosts/{{domain}}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
"#
    )
}

#[tokio::test]
async fn the_api_does_what_its_document_says() {
    let fuzzer = schemathesis();
    let app = spawn_app().await;
    let admin = app.admin().await;
    let decoy = seed(&app, &admin).await;
    let token = app.token(ADMIN, ADMIN_PASSWORD).await;
    let config_file = app.data_dir.join("schemathesis.toml");
    std::fs::write(&config_file, config(decoy)).expect("writing the schemathesis config");
    let api = format!("{}/api/v1", app.base);
    let args: Vec<String> = vec![
        "--config-file".into(),
        config_file.display().to_string(),
        "--no-color".into(),
        "run".into(),
        format!("{api}/openapi.json"),
        "--url".into(),
        api.clone(),
        "-H".into(),
        format!("Authorization: Bearer {token}"),
        "--checks".into(),
        "all".into(),
        "--max-examples".into(),
        EXAMPLES.into(),
        "--seed".into(),
        SEED.into(),
        "--generation-database".into(),
        "none".into(),
        // One worker: the requests, and what they change, come in the same order every time.
        "--workers".into(),
        "1".into(),
    ];
    // Whatever it leaves behind (a `.hypothesis` directory) goes with the test's directory.
    let workdir = app.data_dir.clone();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(fuzzer)
            .args(&args)
            .current_dir(workdir)
            .output()
            .expect("running schemathesis")
    })
    .await
    .expect("waiting for schemathesis");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary = report
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("schemathesis ran for {:.0?}:\n{summary}", started.elapsed());
    assert!(
        out.status.success(),
        "the API breaks its documented contract:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A run that reached little proves little: every operation was tested, with many cases.
    let operations = documented_operations(&app).await.len() - 1; // less openapi.json itself
    assert!(
        report.contains(&format!("Tested: {operations}")),
        "not every operation was tested:\n{summary}"
    );
    let cases: usize = summary
        .lines()
        .find_map(|l| l.trim().split_once(" generated, ").map(|(n, _)| n))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(cases >= 2000, "only {cases} test cases:\n{summary}");
    // The fuzzer's session lasted to the end.
    let (status, me): (u16, Value) = app.api(&token).get("/me").await;
    assert_eq!(status, 200, "the fuzzer's token no longer works: {me}");
}
