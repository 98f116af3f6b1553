//! The audit log: one entry per change, with actor, action, target, before/after, source
//! and time; filters; each role's view of it; and no secrets in it.

use crate::harness::*;
use serde_json::{json, Value};

/// Seconds since the Unix epoch.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The newest audit entries, newest first, as the admin sees them.
async fn newest(admin: &Api, n: usize) -> Vec<Value> {
    let (status, body) = admin.get(&format!("/audit?limit={n}")).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

/// Checks one entry's fields: action, target, actor, source and a time in `[since, now]`.
#[track_caller]
fn check_entry(entry: &Value, action: &str, target: &str, actor: &str, since: i64) {
    let what = format!("{action} {target}: {entry}");
    assert_eq!(entry["action"], action, "{what}");
    assert_eq!(entry["target"], target, "{what}");
    assert_eq!(entry["actor"], actor, "{what}");
    assert_eq!(entry["source"], "127.0.0.1", "{what}");
    assert!(entry["id"].as_i64().is_some(), "{what}");
    let at = entry["at"]
        .as_str()
        .and_then(lodge::store::parse_time)
        .unwrap_or_else(|| panic!("{what}: `at` is not an RFC 3339 time"));
    assert!(
        at >= since && at <= now() + 1,
        "{what}: at {at} outside [{since}, now]"
    );
}

/// Every change adds exactly one entry describing it; reads add none.
#[tokio::test]
async fn every_change_is_audited_once() {
    let start = now();
    let app = spawn_app().await;
    let admin = app.admin().await;
    // The first admin, made on the command line, and its sign-in.
    let mut count = 2;
    let entries = newest(&admin, 5).await;
    assert_eq!(entries.len(), 2, "{entries:#?}");
    let made = &entries[1];
    assert_eq!(
        (
            &made["action"],
            &made["target"],
            &made["actor"],
            &made["source"]
        ),
        (
            &json!("user.create"),
            &json!("user:admin"),
            &json!("cli"),
            &json!("cli")
        )
    );
    assert_eq!(made["after"]["role"], "admin");
    let e = &entries[0];
    check_entry(e, "token.create", "user:admin", ADMIN, start);
    assert_eq!(e["before"], Value::Null);
    assert_eq!(e["after"]["name"], "api");
    assert!(e["after"]["prefix"].as_str().unwrap().starts_with("lodge_"));

    // Performs one change and checks the entry it adds.
    macro_rules! change {
        ($api:expr, $m:ident $path:expr, $body:expr, $status:expr =>
         $action:expr, $target:expr, $actor:expr) => {{
            let body: Option<Value> = $body;
            let r = $api.send(reqwest::Method::$m, $path, body.as_ref()).await;
            let (status, reply) = (r.status, r.json);
            assert_eq!(status, $status, "{} {}: {reply}", stringify!($m), $path);
            count += 1;
            let entries = newest(&admin, 2).await;
            check_entry(&entries[0], $action, $target, $actor, start);
            assert!(entries[0]["id"].as_i64() > entries[1]["id"].as_i64());
            assert_eq!(audit_count(&admin).await, count, "{} entries", $action);
            entries[0].clone()
        }};
    }

    let e = change!(admin, POST "/users",
        Some(json!({"username": "resa", "password": PASSWORD, "role": "reseller"})), 201
        => "user.create", "user:resa", ADMIN);
    assert_eq!(e["before"], Value::Null);
    assert_eq!(e["after"]["username"], "resa");
    assert_eq!(e["after"]["role"], "reseller");

    let e = change!(admin, PATCH "/users/resa",
        Some(json!({"limits": {"max_tenants": 5}})), 200
        => "user.update", "user:resa", ADMIN);
    assert_eq!(e["before"]["limits"]["max_tenants"], Value::Null);
    assert_eq!(e["after"]["limits"]["max_tenants"], 5);

    let e = change!(admin, PATCH "/users/resa",
        Some(json!({"password": "resa-password-2"})), 200
        => "user.update", "user:resa", ADMIN);
    assert_eq!(e["after"]["password"], "changed");

    let e = change!(admin, POST "/plans", Some(json!({"name": "basic"})), 201
        => "plan.create", "plan:basic", ADMIN);
    assert_eq!(e["before"], Value::Null);
    assert_eq!(e["after"]["max_vhosts"], 10);

    let e = change!(admin, PATCH "/plans/basic", Some(json!({"max_vhosts": 20})), 200
        => "plan.update", "plan:basic", ADMIN);
    assert_eq!(e["before"]["max_vhosts"], 10);
    assert_eq!(e["after"]["max_vhosts"], 20);

    let e = change!(admin, POST "/tenants",
        Some(json!({"name": "acme", "plan": "basic", "owner": "resa", "password": PASSWORD})), 201
        => "tenant.create", "tenant:acme", ADMIN);
    assert_eq!(e["before"], Value::Null);
    assert_eq!(e["after"]["owner"], "resa");
    assert_eq!(e["after"]["login"], true);

    let e = change!(admin, PATCH "/tenants/acme",
        Some(json!({"php": {"memory_limit": "128M"}})), 200
        => "tenant.update", "tenant:acme", ADMIN);
    assert_eq!(e["before"]["php"], json!({}));
    assert_eq!(e["after"]["php"], json!({"memory_limit": "128M"}));

    let e = change!(admin, POST "/tenants/acme/suspend", Some(json!({})), 200
        => "tenant.suspend", "tenant:acme", ADMIN);
    assert_eq!(e["before"], json!({"state": "active"}));
    assert_eq!(e["after"], json!({"state": "suspended"}));

    let e = change!(admin, POST "/tenants/acme/unsuspend", Some(json!({})), 200
        => "tenant.unsuspend", "tenant:acme", ADMIN);
    assert_eq!(e["before"], json!({"state": "suspended"}));
    assert_eq!(e["after"], json!({"state": "active"}));

    let e = change!(admin, POST "/tenants/acme/vhosts",
        Some(json!({"domain": "acme.example.com"})), 201
        => "vhost.create", "vhost:acme.example.com", ADMIN);
    assert_eq!(e["before"], Value::Null);
    assert_eq!(e["after"]["tenant"], "acme");

    let e = change!(admin, PATCH "/vhosts/acme.example.com",
        Some(json!({"aliases": ["www.acme.example.com"]})), 200
        => "vhost.update", "vhost:acme.example.com", ADMIN);
    assert_eq!(e["before"]["aliases"], json!([]));
    assert_eq!(e["after"]["aliases"], json!(["www.acme.example.com"]));

    // The reseller acts under its own name.
    let (_, signed_in) = app
        .anon()
        .post(
            "/tokens",
            json!({"username": "resa", "password": "resa-password-2", "name": "ci"}),
        )
        .await;
    count += 1;
    let e = &newest(&admin, 1).await[0];
    check_entry(e, "token.create", "user:resa", "resa", start);
    assert_eq!(e["after"]["name"], "ci");
    let resa = app.api(signed_in["token"].as_str().unwrap());
    let token_id = signed_in["id"].as_i64().unwrap();

    let e = change!(resa, DELETE "/vhosts/acme.example.com", None, 204
        => "vhost.delete", "vhost:acme.example.com", "resa");
    assert_eq!(e["before"]["domain"], "acme.example.com");
    assert_eq!(e["after"], Value::Null);

    let e = change!(resa, DELETE &format!("/tokens/{token_id}"), None, 204
        => "token.revoke", "user:resa", "resa");
    assert_eq!(e["before"]["id"], token_id);
    assert_eq!(e["after"], Value::Null);

    let e = change!(admin, DELETE "/tenants/acme", None, 204
        => "tenant.delete", "tenant:acme", ADMIN);
    assert_eq!(e["before"]["name"], "acme");
    assert_eq!(e["after"], Value::Null);

    let e = change!(admin, DELETE "/plans/basic", None, 204
        => "plan.delete", "plan:basic", ADMIN);
    assert_eq!(e["before"]["name"], "basic");

    let e = change!(admin, DELETE "/users/resa", None, 204
        => "user.delete", "user:resa", ADMIN);
    assert_eq!(e["before"]["username"], "resa");
    assert_eq!(e["after"], Value::Null);

    // Reads, refusals and failed sign-ins add nothing.
    for path in ["/me", "/users", "/plans", "/tenants", "/audit", "/tokens"] {
        assert_eq!(admin.get(path).await.0, 200);
    }
    assert_eq!(
        admin.post("/plans", json!({"name": "Bad Name"})).await.0,
        422
    );
    assert_eq!(admin.delete("/tenants/nosuch").await.0, 404);
    let (status, _) = app
        .anon()
        .post(
            "/tokens",
            json!({"username": ADMIN, "password": "wrong-password"}),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(audit_count(&admin).await, count);
    if let Some(n) = app.sqlite_count("audit_log") {
        assert_eq!(n as usize, count);
    }
}

#[tokio::test]
async fn audit_filters_select_by_actor_target_and_time() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    create_plan(&admin, "basic", json!({})).await;
    let resa = create_reseller(&app, &admin, "resa", json!({})).await;
    create_tenant(&resa, "acme", "basic", json!({})).await;
    create_vhost(&resa, "acme", "acme.example.com").await;
    // The next entries fall in a later second, so the time filters have a boundary to find.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let boundary = now();
    create_tenant(&admin, "bolt", "basic", json!({})).await;
    create_vhost(&admin, "bolt", "bolt.example.com").await;
    assert_eq!(
        admin
            .patch("/tenants/acme", json!({"php": {"max_input_vars": 2000}}))
            .await
            .0,
        200
    );

    let all = admin.all("/audit").await;
    // The command line's user.create of the admin, then 9 changes through the API.
    assert_eq!(all.len(), 10, "{all:#?}");
    let pick = |f: &dyn Fn(&Value) -> bool| -> Vec<Value> {
        all.iter().filter(|e| f(e)).cloned().collect()
    };

    let by_resa = admin.all("/audit?actor=resa").await;
    assert_eq!(by_resa, pick(&|e| e["actor"] == "resa"));
    assert_eq!(by_resa.len(), 3, "sign-in, tenant, vhost: {by_resa:#?}");

    let acme = admin.all("/audit?target=tenant:acme").await;
    assert_eq!(acme, pick(&|e| e["target"] == "tenant:acme"));
    let actions: Vec<_> = acme.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["tenant.update", "tenant.create"], "newest first");

    // A target ending in ':' is a prefix.
    let vhosts = admin.all(&format!("/audit?target={}", enc("vhost:"))).await;
    assert_eq!(vhosts.len(), 2);
    assert!(vhosts
        .iter()
        .all(|e| e["target"].as_str().unwrap().starts_with("vhost:")));
    assert!(
        admin.all("/audit?target=tenant").await.is_empty(),
        "no prefix match without ':'"
    );

    let both = admin.all("/audit?actor=admin&target=tenant:acme").await;
    assert_eq!(both.len(), 1);
    assert_eq!(both[0]["action"], "tenant.update");

    let at = |e: &Value| lodge::store::parse_time(e["at"].as_str().unwrap()).unwrap();
    let since = admin.all(&format!("/audit?since={boundary}")).await;
    assert_eq!(since, pick(&|e| at(e) >= boundary));
    assert_eq!(since.len(), 3, "{since:#?}");
    let until = admin.all(&format!("/audit?until={}", boundary - 1)).await;
    assert_eq!(until, pick(&|e| at(e) < boundary));
    assert_eq!(until.len(), 7);
    // RFC 3339 works as well as Unix seconds.
    let rfc = lodge::store::rfc3339(boundary);
    assert_eq!(
        admin.all(&format!("/audit?since={}", enc(&rfc))).await,
        since
    );
    let window = admin
        .all(&format!("/audit?since={}&until={}", boundary, now() + 5))
        .await;
    assert_eq!(window, since);
    assert!(admin
        .all(&format!("/audit?since={}", now() + 3600))
        .await
        .is_empty());
    assert!(admin.all("/audit?until=0").await.is_empty());

    // Paging through the log: newest first, no entry twice, none missed.
    let mut seen = Vec::new();
    let mut url = "/audit?limit=2".to_owned();
    loop {
        let (status, page) = admin.get(&url).await;
        assert_eq!(status, 200);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().cloned());
        match page["next"].as_str() {
            Some(next) => url = format!("/audit?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, all);
    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
}

/// A reseller reads what concerns its tenants and its own account; a tenant login what
/// concerns its tenant. Filters cannot widen either view.
#[tokio::test]
async fn each_role_reads_only_its_part_of_the_log() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    create_plan(&admin, "basic", json!({})).await;
    let resa = create_reseller(&app, &admin, "resa", json!({})).await;
    let resb = create_reseller(&app, &admin, "resb", json!({})).await;
    create_tenant(&resa, "alpha", "basic", json!({"password": PASSWORD})).await;
    create_tenant(&resa, "alpha2", "basic", json!({})).await;
    create_vhost(&resa, "alpha", "alpha.example.com").await;
    create_vhost(&resa, "alpha2", "alpha2.example.com").await;
    create_tenant(&resb, "bravo", "basic", json!({})).await;
    create_vhost(&resb, "bravo", "bravo.example.com").await;
    create_tenant(&admin, "charlie", "basic", json!({})).await;
    // The admin acts on a tenant of resa: resa and alpha see it.
    assert_eq!(admin.post("/tenants/alpha/suspend", json!({})).await.0, 200);
    let alpha = app.sign_in("alpha", PASSWORD).await;
    assert_eq!(
        alpha
            .patch("/tenants/alpha", json!({"php": {"display_errors": true}}))
            .await
            .0,
        200
    );

    let targets = |entries: &[Value]| -> Vec<String> {
        entries
            .iter()
            .map(|e| e["target"].as_str().unwrap().to_owned())
            .collect()
    };

    let seen = resa.all("/audit").await;
    for t in targets(&seen) {
        assert!(
            [
                "tenant:alpha",
                "tenant:alpha2",
                "vhost:alpha.example.com",
                "vhost:alpha2.example.com",
                "user:resa"
            ]
            .contains(&t.as_str()),
            "resa sees {t}"
        );
    }
    let text = serde_json::to_string(&seen).unwrap();
    for hidden in ["bravo", "charlie", "resb", "plan:"] {
        assert!(
            !text.contains(hidden),
            "resa's log mentions {hidden}: {text}"
        );
    }
    let actions: Vec<_> = seen
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    for expected in [
        ("tenant.create", "tenant:alpha"),
        ("vhost.create", "vhost:alpha2.example.com"),
        ("tenant.suspend", "tenant:alpha"),
        ("tenant.update", "tenant:alpha"),
        ("token.create", "user:resa"),
    ] {
        assert!(
            actions.contains(&expected),
            "resa misses {expected:?} in {actions:?}"
        );
    }

    let seen = alpha.all("/audit").await;
    for t in targets(&seen) {
        assert!(
            ["tenant:alpha", "vhost:alpha.example.com", "user:alpha"].contains(&t.as_str()),
            "alpha sees {t}"
        );
    }
    let text = serde_json::to_string(&seen).unwrap();
    for hidden in ["alpha2", "bravo", "charlie", "resb"] {
        assert!(
            !text.contains(hidden),
            "alpha's log mentions {hidden}: {text}"
        );
    }
    let actions: Vec<_> = seen.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for expected in [
        "tenant.create",
        "vhost.create",
        "tenant.suspend",
        "tenant.update",
        "token.create",
    ] {
        assert!(
            actions.contains(&expected),
            "alpha misses {expected} in {actions:?}"
        );
    }

    let seen = resb.all("/audit").await;
    let text = serde_json::to_string(&seen).unwrap();
    assert!(text.contains("tenant:bravo"));
    for hidden in ["alpha", "charlie", "resa"] {
        assert!(
            !text.contains(hidden),
            "resb's log mentions {hidden}: {text}"
        );
    }

    // Filters only narrow.
    assert!(resa.all("/audit?actor=resb").await.is_empty());
    assert!(resa.all("/audit?target=tenant:bravo").await.is_empty());
    assert!(resa
        .all("/audit?actor=admin&target=tenant:charlie")
        .await
        .is_empty());
    assert!(alpha.all("/audit?target=tenant:alpha2").await.is_empty());
    assert_eq!(
        resa.all("/audit?actor=admin").await.len(),
        1,
        "the admin's suspend of alpha"
    );

    // The admin sees everything.
    let all = admin.all("/audit").await;
    let text = serde_json::to_string(&all).unwrap();
    for name in ["alpha2", "bravo", "charlie", "resb", "plan:basic"] {
        assert!(text.contains(name), "the admin's log misses {name}");
    }
}

/// Password hashes, passwords, tokens and private keys never appear in the audit log (nor
/// in any other answer), though the store holds the hashes and the key.
#[tokio::test]
async fn secrets_never_reach_the_audit_log() {
    // Two real pairs for the vhost: the second replaces the first.
    let (cert, key) = test_certificate(&["acme.example.com"]);
    let (cert2, key2) = test_certificate(&["acme.example.com"]);
    // A line of each key's body, to look for wherever the key must not be.
    let body_of = |pem: &str| pem.lines().nth(1).expect("a key body").to_owned();
    let (key_body, key2_body) = (body_of(&key), body_of(&key2));

    let app = spawn_app().await;
    let admin = app.admin().await;
    create_plan(&admin, "basic", json!({})).await;
    let resa = create_reseller(&app, &admin, "resa", json!({})).await;
    let resa_token = app.token("resa", PASSWORD).await;
    create_tenant(
        &resa,
        "acme",
        "basic",
        json!({"password": "acme-login-pass-1"}),
    )
    .await;
    assert_eq!(
        admin
            .patch("/tenants/acme", json!({"password": "acme-login-pass-2"}))
            .await
            .0,
        200
    );
    assert_eq!(
        admin
            .patch("/users/resa", json!({"password": "resa-password-22"}))
            .await
            .0,
        200
    );
    let (status, _) = admin
        .post(
            "/users",
            json!({"username": "second", "password": "second-admin-pass", "role": "admin"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, v) = admin
        .post(
            "/tenants/acme/vhosts",
            json!({"domain": "acme.example.com", "tls_mode": "custom", "tls_certificate": cert, "tls_key": key}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["tls_has_key"], true);
    // An update that keeps the key, then one that replaces it.
    assert_eq!(
        admin
            .patch("/vhosts/acme.example.com", json!({"php": false}))
            .await
            .0,
        200
    );
    if let Some(n) = app.sqlite(&format!(
        "SELECT COUNT(*) FROM vhosts WHERE instr(tls_key_pem, '{key_body}') > 0"
    )) {
        assert_eq!(n, "1", "an update without a key keeps the stored one");
    }
    assert_eq!(
        admin
            .patch(
                "/vhosts/acme.example.com",
                json!({"tls_certificate": cert2, "tls_key": key2}),
            )
            .await
            .0,
        200
    );
    if let Some(n) = app.sqlite(&format!(
        "SELECT COUNT(*) FROM vhosts WHERE instr(tls_key_pem, '{key2_body}') > 0"
    )) {
        assert_eq!(n, "1");
    }

    let (status, _) = admin.get("/audit?limit=500").await;
    assert_eq!(status, 200);
    let mut bodies = Vec::new();
    for path in [
        "/audit?limit=500",
        "/users",
        "/users/resa",
        "/me",
        "/tokens",
        "/tenants",
        "/tenants/acme",
        "/tenants/acme/vhosts",
        "/vhosts/acme.example.com",
    ] {
        let r = admin.send(reqwest::Method::GET, path, None).await;
        assert_eq!(r.status, 200, "{path}");
        bodies.push((path, r.text));
    }
    let signed = resa.send(reqwest::Method::GET, "/me", None).await;
    bodies.push(("/me as resa", signed.text));
    assert_eq!(admin.delete("/vhosts/acme.example.com").await.0, 204);
    let r = admin
        .send(reqwest::Method::GET, "/audit?limit=500", None)
        .await;
    bodies.push(("/audit after the delete", r.text));

    let secrets = [
        "argon2",
        "PRIVATE KEY",
        &key_body,
        &key2_body,
        "password_hash",
        "token_hash",
        "totp_secret",
        ADMIN_PASSWORD,
        PASSWORD,
        "acme-login-pass-1",
        "acme-login-pass-2",
        "resa-password-22",
        "second-admin-pass",
        &resa_token,
    ];
    for (path, body) in &bodies {
        for secret in secrets {
            assert!(!body.contains(secret), "GET {path} contains {secret:?}");
        }
    }
    // The audit log records that passwords changed, not what to.
    let audit = admin.all("/audit").await;
    let changed = audit
        .iter()
        .filter(|e| e["after"]["password"] == "changed")
        .count();
    assert_eq!(changed, 2, "tenant and reseller password changes");

    // In the store: the hashes are there, the log holds none of it.
    if let Some(n) = app.sqlite("SELECT COUNT(*) FROM users WHERE password_hash LIKE '$argon2%'") {
        assert_eq!(n, "4", "admin, second, resa and acme's login");
    }
    if let Some(n) = app.sqlite(
        "SELECT COUNT(*) FROM audit_log WHERE coalesce(before, '') || coalesce(after, '') \
         LIKE '%argon2%' OR coalesce(before, '') || coalesce(after, '') LIKE '%PRIVATE KEY%'",
    ) {
        assert_eq!(n, "0");
    }
}
