//! Regression tests of the panel's own defences, through the real binary: the sign-in
//! throttle under parallel guesses and against a stranger, the second factor, and what a
//! password change ends.

use crate::harness::*;
use reqwest::Method;
use serde_json::json;

/// POST /tokens as `username` from the given client.
async fn sign_in_with(client: &reqwest::Client, app: &App, username: &str, password: &str) -> u16 {
    client
        .post(format!("{}/api/v1/tokens", app.base))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("sending the sign-in")
        .status()
        .as_u16()
}

fn client_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from(address))
        .build()
        .unwrap()
}

#[tokio::test]
async fn parallel_guesses_meet_the_throttle_before_their_hashes_run() {
    let app = spawn_app().await;
    let client = client_from([127, 0, 0, 1]);
    let guesses = (0..60).map(|i| {
        let (client, app) = (client.clone(), &app);
        async move { sign_in_with(&client, app, ADMIN, &format!("wrong-password-{i}")).await }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let rejected = statuses.iter().filter(|s| **s == 401).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(rejected + throttled, 60, "{statuses:?}");
    assert!(
        rejected <= 5,
        "at most the allowance is checked: {rejected} guesses reached a hash"
    );
    // And the admin from this address waits, even with the right password.
    assert_eq!(
        sign_in_with(&client, &app, ADMIN, ADMIN_PASSWORD).await,
        429
    );
}

#[tokio::test]
async fn a_stranger_guessing_from_one_address_does_not_lock_the_owner_out() {
    let app = spawn_app().await;
    let stranger = client_from([127, 0, 0, 2]);
    for _ in 0..5 {
        assert_eq!(
            sign_in_with(&stranger, &app, ADMIN, "guess-guess-guess").await,
            401
        );
    }
    assert_eq!(
        sign_in_with(&stranger, &app, ADMIN, ADMIN_PASSWORD).await,
        429
    );
    // The admin, from its own address, signs in as always.
    let owner = client_from([127, 0, 0, 1]);
    assert_eq!(sign_in_with(&owner, &app, ADMIN, ADMIN_PASSWORD).await, 201);
    let me = app.admin().await.send(Method::GET, "/me", None).await;
    assert_eq!(me.status, 200);
}

#[tokio::test]
async fn a_password_changed_through_the_api_ends_dashboard_sessions_and_tokens() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    create_reseller(&app, &admin, "resa", json!({})).await;
    let dash = crate::dashboard::Dashboard::sign_in(&app.base, "resa", PASSWORD).await;
    assert_eq!(dash.get("/account").await.0, 200, "signed in");
    let old_token = app.token("resa", PASSWORD).await;
    let own = app.sign_in("resa", PASSWORD).await;
    let r = own
        .send(
            Method::PATCH,
            "/users/resa",
            Some(&json!({"password": "another-long-password", "current_password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_ne!(
        dash.get("/account").await.0,
        200,
        "the dashboard session made with the old password is over"
    );
    assert_eq!(
        app.api(&old_token)
            .send(Method::GET, "/me", None)
            .await
            .status,
        401
    );
    // An admin resetting the password ends them too.
    let dash =
        crate::dashboard::Dashboard::sign_in(&app.base, "resa", "another-long-password").await;
    let r = admin
        .send(
            Method::PATCH,
            "/users/resa",
            Some(&json!({"password": "a-third-long-password"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_ne!(dash.get("/account").await.0, 200);
}

#[tokio::test]
async fn racing_plan_changes_and_creates_never_pass_the_resellers_worker_limit() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    for (name, workers) in [("small", 1), ("medium", 5), ("big", 8)] {
        let (status, plan) = admin
            .post(
                "/plans",
                json!({"name": name, "php": {"max_children": workers}}),
            )
            .await;
        assert_eq!(status, 201, "{plan}");
    }
    let reseller = create_reseller(&app, &admin, "resa", json!({"max_php_workers": 10})).await;
    let workers = |plan: &str| match plan {
        "small" => 1,
        "medium" => 5,
        _ => 8,
    };
    for round in 0..12 {
        create_tenant(&reseller, &format!("t{round}"), "big", json!({})).await;
        // Down to small, then medium (read while still big), and a new big tenant, at once.
        let name = format!("t{round}");
        let extra = format!("n{round}");
        let path = format!("/tenants/{name}");
        let (a, b, c) = tokio::join!(
            reseller.patch(&path, json!({"plan": "small"})),
            reseller.patch(&path, json!({"plan": "medium"})),
            reseller.post("/tenants", json!({"name": extra, "plan": "big"})),
        );
        for (status, body) in [&a, &b, &c] {
            assert!(
                [200, 201, 403].contains(status),
                "round {round}: {status} {body}"
            );
        }
        let (_, list) = reseller.get("/tenants?limit=500").await;
        let total: i64 = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| workers(t["plan"].as_str().unwrap()))
            .sum();
        assert!(
            total <= 10,
            "round {round}: {total} workers, limit 10: {list}"
        );
        // Clean up, so each round starts from nothing.
        for t in list["items"].as_array().unwrap() {
            let name = t["name"].as_str().unwrap();
            assert_eq!(reseller.delete(&format!("/tenants/{name}")).await.0, 204);
        }
    }
}

#[tokio::test]
async fn a_new_tenant_never_sees_a_deleted_tenants_audit_history() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (status, _) = admin.post("/plans", json!({"name": "basic"})).await;
    assert_eq!(status, 201);
    create_tenant(&admin, "first", "basic", json!({"password": PASSWORD})).await;
    let (status, _) = admin
        .post("/tenants/first/vhosts", json!({"domain": "first.example"}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(admin.delete("/tenants/first").await.0, 204);
    // The next tenant must not get the deleted one's id, which scopes a tenant's audit view.
    create_tenant(&admin, "second", "basic", json!({"password": PASSWORD})).await;
    let second = app.sign_in("second", PASSWORD).await;
    let (status, audit) = second.get("/audit?limit=500").await;
    assert_eq!(status, 200, "{audit}");
    let entries = audit["items"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .all(|e| !e["target"].as_str().unwrap_or("").contains("first")),
        "the new tenant sees the old one's history: {audit}"
    );
    assert!(
        entries.iter().any(|e| e["target"] == "tenant:second"),
        "its own history is there: {audit}"
    );
}

#[tokio::test]
async fn an_uploaded_certificate_must_match_its_key_and_cover_its_vhost() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (status, _) = admin.post("/plans", json!({"name": "basic"})).await;
    assert_eq!(status, 201);
    create_tenant(&admin, "attacker", "basic", json!({})).await;
    // A certificate for another tenant's name, on a vhost whose name only ends like it.
    let (victims, victims_key) = test_certificate(&["shop.example.test"]);
    let (own, own_key) = test_certificate(&["shop.example.test.self"]);
    let upload = |cert: &str, key: &str| {
        json!({"domain": "shop.example.test.self", "tls_mode": "custom",
               "tls_certificate": cert, "tls_key": key})
    };
    let (status, body) = admin
        .post("/tenants/attacker/vhosts", upload(&victims, &victims_key))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "tls_certificate", "{body}");
    let (status, body) = admin
        .post("/tenants/attacker/vhosts", upload(&own, &victims_key))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "tls_key", "{body}");
    let (status, body) = admin
        .post("/tenants/attacker/vhosts", upload(&own, &own_key))
        .await;
    assert_eq!(status, 201, "{body}");
    // An alias the certificate does not cover is refused too.
    let (status, body) = admin
        .patch(
            "/vhosts/shop.example.test.self",
            json!({"aliases": ["www.shop.example.test.self"]}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["errors"][0]["field"], "tls_certificate", "{body}");
}

#[tokio::test]
async fn names_that_packages_create_are_refused_before_the_package_comes() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (status, _) = admin.post("/plans", json!({"name": "basic"})).await;
    assert_eq!(status, 201);
    for name in ["lxd", "libvirt", "mariadb", "netdata", "clamav"] {
        let (status, body) = admin
            .post("/tenants", json!({"name": name, "plan": "basic"}))
            .await;
        assert_eq!(status, 422, "{name}: {body}");
        assert_eq!(body["errors"][0]["field"], "name", "{body}");
    }
    assert_eq!(
        admin.get("/tenants").await.1["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}
