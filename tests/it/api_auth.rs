//! Signing in and its throttle, passwords that end tokens, pagination, and the OpenAPI
//! document against the routes really served.

use crate::harness::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// POST /tokens with these credentials.
async fn sign_in(app: &App, username: &str, password: &str) -> Reply {
    app.anon()
        .send(
            Method::POST,
            "/tokens",
            Some(&json!({"username": username, "password": password})),
        )
        .await
}

/// Asserts a refused sign-in: 401, a Bearer challenge, and the same words whatever was wrong.
#[track_caller]
fn assert_rejected(r: &Reply, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text);
    assert_eq!(r.content_type(), "application/problem+json", "{what}");
    assert_eq!(
        r.json["detail"], "wrong user name, password or code",
        "{what}"
    );
    assert!(r.headers.get("www-authenticate").is_some(), "{what}");
    assert!(r.json.get("token").is_none(), "{what}");
}

/// Asserts a throttled sign-in: 429 with a Retry-After of 1 to 900 seconds.
#[track_caller]
fn assert_throttled(r: &Reply, what: &str) -> u64 {
    assert_eq!(r.status, 429, "{what}: {}", r.text);
    assert_eq!(r.json["status"], 429, "{what}");
    let retry: u64 = r
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no numeric Retry-After in {:?}", r.headers));
    assert!((1..=900).contains(&retry), "{what}: Retry-After {retry}");
    retry
}

#[tokio::test]
async fn five_failures_lock_the_account_and_only_it() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    create_reseller(&app, &admin, "resa", json!({})).await;
    create_reseller(&app, &admin, "resb", json!({})).await;
    let audit_before = audit_count(&admin).await;

    for i in 1..=5 {
        assert_rejected(
            &sign_in(&app, ADMIN, "wrong-password").await,
            &format!("failure {i}"),
        );
    }
    // The sixth attempt is refused before the password is looked at, even the right one.
    let r = sign_in(&app, ADMIN, ADMIN_PASSWORD).await;
    assert_throttled(&r, "right password after 5 failures");
    assert!(
        r.json["detail"].as_str().unwrap().contains("seconds"),
        "{}",
        r.text
    );
    assert_throttled(
        &sign_in(&app, ADMIN, "wrong-password").await,
        "seventh attempt",
    );
    // Tokens made before keep working: the throttle guards sign-in only.
    assert_eq!(admin.get("/me").await.0, 200);
    // Other accounts sign in from the same address.
    app.token("resa", PASSWORD).await;

    // Unknown accounts are throttled the same way (no telling them apart).
    for _ in 0..5 {
        assert_rejected(
            &sign_in(&app, "ghost", "whatever-password").await,
            "unknown user",
        );
    }
    assert_throttled(
        &sign_in(&app, "ghost", "whatever-password").await,
        "unknown user",
    );

    // A success clears an account's count.
    for _ in 0..4 {
        assert_rejected(
            &sign_in(&app, "resb", "wrong-password").await,
            "resb failure",
        );
    }
    app.token("resb", PASSWORD).await;
    for _ in 0..4 {
        assert_rejected(
            &sign_in(&app, "resb", "wrong-password").await,
            "resb after a success",
        );
    }
    app.token("resb", PASSWORD).await;

    // Failed sign-ins write nothing; the three successes each made a token.
    assert_eq!(audit_count(&admin).await, audit_before + 3);
}

#[tokio::test]
async fn twenty_failures_lock_the_address() {
    let app = spawn_app().await;
    // Four failures each for five names: no account reaches its own allowance of five.
    for name in ["ann", "bob", "cid", "dee", "eve"] {
        for _ in 0..4 {
            assert_rejected(&sign_in(&app, name, "wrong-password").await, name);
        }
    }
    let r = sign_in(&app, ADMIN, ADMIN_PASSWORD).await;
    assert_throttled(&r, "the 21st attempt from one address");
}

#[tokio::test]
async fn sign_in_refuses_without_saying_why() {
    let app = spawn_app().await;
    assert_rejected(
        &sign_in(&app, ADMIN, "wrong-password").await,
        "wrong password",
    );
    assert_rejected(
        &sign_in(&app, "nobody-here", ADMIN_PASSWORD).await,
        "unknown user",
    );
    assert_rejected(&sign_in(&app, "", "").await, "empty");
    assert_rejected(
        &sign_in(&app, &"a".repeat(200), ADMIN_PASSWORD).await,
        "overlong name",
    );
    assert_rejected(
        &sign_in(&app, "ADMIN", ADMIN_PASSWORD).await,
        "user names are exact",
    );
    let r = app
        .anon()
        .send(Method::POST, "/tokens", Some(&json!({"username": ADMIN})))
        .await;
    assert_rejected(&r, "no password");

    let r = sign_in(&app, ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["name"], "api", "the default token name");
    assert_eq!(r.json["username"], ADMIN);
    let token = r.json["token"].as_str().unwrap();
    assert!(token.starts_with("lodge_") && token.len() == 46, "{token}");
    // Every sign-in makes a distinct token.
    let other = app.token(ADMIN, ADMIN_PASSWORD).await;
    assert_ne!(token, other);
}

/// A new password ends every token made with the old one.
#[tokio::test]
async fn a_new_password_ends_old_tokens() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let resa = create_reseller(&app, &admin, "resa", json!({})).await;
    let second = app.sign_in("resa", PASSWORD).await;

    // Changing one's own password takes the current one.
    let (status, body) = resa
        .patch("/users/resa", json!({"password": "resa-password-2"}))
        .await;
    assert_refused(status, &body, "current_password", "no current password");
    assert_eq!(
        resa.get("/me").await.0,
        200,
        "a refused change ends nothing"
    );
    let (status, body) = resa
        .patch(
            "/users/resa",
            json!({"password": "resa-password-2", "current_password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(resa.get("/me").await.0, 401);
    assert_eq!(second.get("/me").await.0, 401);
    assert_rejected(&sign_in(&app, "resa", PASSWORD).await, "the old password");
    let resa = app.sign_in("resa", "resa-password-2").await;

    // An admin may reset it without the current one; that too ends the tokens.
    let (status, body) = admin
        .patch("/users/resa", json!({"password": "resa-password-3"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(resa.get("/me").await.0, 401);
    app.token("resa", "resa-password-3").await;
    assert_eq!(
        admin.get("/me").await.0,
        200,
        "the admin's own token is untouched"
    );
}

/// Pages of `limit` items follow `next` to the end: right sizes, in order, no repeats, none
/// missed.
async fn page_through(api: &Api, path: &str, key: &str, limit: usize) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut url = format!("{path}?limit={limit}");
    loop {
        let (status, page) = api.get(&url).await;
        assert_eq!(status, 200, "{url}: {page}");
        let names: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i[key].as_str().unwrap().to_owned())
            .collect();
        let next = page["next"].clone();
        pages.push(names.clone());
        match next {
            Value::String(cursor) => {
                assert_eq!(
                    names.last(),
                    Some(&cursor),
                    "the cursor is the last key of the page"
                );
                url = format!("{path}?limit={limit}&after={}", enc(&cursor));
            }
            Value::Null => return pages,
            other => panic!("{url}: next is {other}"),
        }
        assert!(pages.len() < 100, "{path}: paging does not end");
    }
}

#[tokio::test]
async fn collections_page_with_limit_and_after() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let names = ["gamma", "alpha", "eta", "beta", "zeta", "delta", "epsilon"];
    for name in names {
        create_plan(&admin, name, json!({})).await;
    }
    let mut sorted: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    sorted.sort();

    let pages = page_through(&admin, "/plans", "name", 3).await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 3, 1], "{pages:?}");
    let flat: Vec<String> = pages.concat();
    assert_eq!(flat, sorted, "in name order, each once");
    let unique: BTreeSet<&String> = flat.iter().collect();
    assert_eq!(unique.len(), 7);

    // Exactly a page's worth: the last full page says there is no more.
    let pages = page_through(&admin, "/plans", "name", 7).await;
    assert_eq!(pages, [sorted.clone()]);
    let pages = page_through(&admin, "/plans", "name", 1).await;
    assert_eq!(pages.len(), 7);
    assert_eq!(pages.concat(), sorted);
    // `after` is a position, not necessarily an existing name.
    let (_, page) = admin.get("/plans?after=d").await;
    let after_d: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(after_d, ["delta", "epsilon", "eta", "gamma", "zeta"]);
    let (_, page) = admin.get("/plans?after=zzz").await;
    assert_eq!(page, json!({"items": [], "next": null}));

    // The same for tenants and a tenant's vhosts.
    for (i, t) in ["tone", "ttwo", "tthree", "tfour", "tfive", "tsix", "tseven"]
        .iter()
        .enumerate()
    {
        create_tenant(&admin, t, names[i], json!({})).await;
    }
    let pages = page_through(&admin, "/tenants", "name", 3).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    assert_eq!(pages.concat(), admin.names("/tenants", "name").await);
    for i in 0..7 {
        create_vhost(&admin, "tone", &format!("site{i}.example.com")).await;
    }
    let pages = page_through(&admin, "/tenants/tone/vhosts", "domain", 3).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    assert_eq!(
        pages.concat(),
        (0..7)
            .map(|i| format!("site{i}.example.com"))
            .collect::<Vec<_>>()
    );
    // The default page is 50.
    let (_, page) = admin.get("/plans").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 7);
    assert_eq!(page["next"], Value::Null);
}

/// The OpenAPI document is valid 3.1 JSON, its references resolve, and each documented
/// operation is really served: without a credential it answers 401 (or works, for the two
/// public ones), never 404 or 405.
#[tokio::test]
async fn openapi_document_describes_the_served_routes() {
    let app = spawn_app().await;
    let r = app.anon().send(Method::GET, "/openapi.json", None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.content_type().starts_with("application/json"),
        "{}",
        r.content_type()
    );
    let doc = &r.json;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "lodge");
    assert!(doc["info"]["version"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    assert_eq!(doc["servers"][0]["url"], "/api/v1");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    // Every $ref points at a schema that exists.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let mut refs = Vec::new();
    collect_refs(doc, &mut refs);
    assert!(refs.len() > 20);
    for r in &refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(schemas.contains_key(name), "$ref {r} has no schema");
    }

    let ops = documented_operations(&app).await;
    let mut operation_ids = BTreeSet::new();
    let admin = app.admin().await;
    for (m, template) in &ops {
        let op = &doc["paths"][template][m.to_lowercase()];
        assert!(
            operation_ids.insert(op["operationId"].as_str().expect("operationId").to_owned()),
            "duplicate operationId for {m} {template}"
        );
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|k| k.starts_with('2')),
            "{m} {template} documents no success"
        );
        for param in template.split('/').filter(|s| s.starts_with('{')) {
            let name = param.trim_matches(|c| c == '{' || c == '}');
            assert!(
                op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == name && p["in"] == "path"),
                "{m} {template}: parameter {name} undocumented"
            );
        }

        let path = fill_path(template);
        let body = op.get("requestBody").map(|_| json!({}));
        let r = app.anon().send(method(m), &path, body.as_ref()).await;
        let public = is_public(doc, m, template);
        match (public, m.as_str(), template.as_str()) {
            (true, "GET", "/openapi.json") => assert_eq!(r.status, 200),
            (true, "POST", "/tokens") => {
                assert!(
                    (400..500).contains(&r.status) && r.status != 404 && r.status != 405,
                    "POST /tokens with an empty body: {}",
                    r.status
                );
            }
            (true, _, _) => panic!("{m} {template} is public: add it to this test"),
            (false, _, _) => {
                assert_eq!(r.status, 401, "{m} {path} without a token: {}", r.text);
                assert!(
                    responses.contains_key("401"),
                    "{m} {template} does not document 401"
                );
            }
        }
        // With a credential it is still routed: dummies are not found, never unrouted.
        let r = admin.send(method(m), &path, body.as_ref()).await;
        assert!(
            r.status != 405 && !(r.status == 404 && r.json["detail"] == "no such API route"),
            "{m} {path} as admin: {} {}",
            r.status,
            r.text
        );
        if r.status >= 400 {
            assert!(
                responses.contains_key(&r.status.to_string()),
                "{m} {template} answered {} which it does not document: {}",
                r.status,
                r.text
            );
        }
    }

    // The checks above can fail: an undocumented method or path is 405 or 404.
    assert_eq!(
        admin
            .send(Method::PUT, "/tenants", Some(&json!({})))
            .await
            .status,
        405
    );
    let r = admin.send(Method::GET, "/nonexistent", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.content_type(), "application/problem+json");
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().unwrap_or("").to_owned());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, out)),
        _ => {}
    }
}
