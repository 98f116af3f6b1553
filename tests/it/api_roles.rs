//! The role matrix: what an admin, a reseller and a tenant login may see and do on every
//! route, the resellers' and plans' limits, and API tokens.

use crate::harness::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Two resellers with a tenant each, a tenant of the admin, and the tenant login of a
/// tenant of reseller A:
///
/// - plans `basic` (defaults: 10 vhosts, 5 PHP workers) and `small` (2 vhosts);
/// - `resa` owns `alpha` (plan small, with a login and `alpha.example.com`) and `alpha2`;
/// - `resb` owns `bravo` (with a login and `bravo.example.com`);
/// - the admin owns `charlie` (with `charlie.example.com`).
struct World {
    app: App,
    admin: Api,
    admin_token_id: i64,
    resa: Api,
    resb: Api,
    /// The tenant login of `alpha`.
    alpha: Api,
}

async fn world() -> World {
    let app = spawn_app().await;
    let (status, signed_in) = app
        .anon()
        .post(
            "/tokens",
            json!({"username": ADMIN, "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(status, 201, "{signed_in}");
    let admin = app.api(signed_in["token"].as_str().unwrap());
    let admin_token_id = signed_in["id"].as_i64().expect("token id");

    create_plan(&admin, "basic", json!({})).await;
    create_plan(&admin, "small", json!({"max_vhosts": 2})).await;
    let limits = json!({"max_tenants": 10, "max_vhosts": 20, "max_php_workers": 100});
    let resa = create_reseller(&app, &admin, "resa", limits.clone()).await;
    let resb = create_reseller(&app, &admin, "resb", limits).await;

    let alpha = create_tenant(&resa, "alpha", "small", json!({"password": PASSWORD})).await;
    assert_eq!(alpha["owner"], "resa");
    assert_eq!(alpha["login"], true);
    create_tenant(&resa, "alpha2", "basic", json!({})).await;
    create_vhost(&resa, "alpha", "alpha.example.com").await;
    let bravo = create_tenant(&resb, "bravo", "basic", json!({"password": PASSWORD})).await;
    assert_eq!(bravo["owner"], "resb");
    create_vhost(&resb, "bravo", "bravo.example.com").await;
    let charlie = create_tenant(&admin, "charlie", "basic", json!({})).await;
    assert_eq!(charlie["owner"], ADMIN);
    create_vhost(&admin, "charlie", "charlie.example.com").await;

    let alpha = app.sign_in("alpha", PASSWORD).await;
    World {
        app,
        admin,
        admin_token_id,
        resa,
        resb,
        alpha,
    }
}

/// One request of the matrix and the status each actor must get (`None`: not tried).
struct Case {
    method: &'static str,
    /// The documented path template the request exercises.
    template: &'static str,
    path: String,
    body: Option<Value>,
    /// Statuses for [admin, resa, alpha].
    expect: [Option<u16>; 3],
}

fn case(
    method: &'static str,
    template: &'static str,
    path: impl Into<String>,
    body: Option<Value>,
    expect: [Option<u16>; 3],
) -> Case {
    Case {
        method,
        template,
        path: path.into(),
        body,
        expect,
    }
}

const OK: Option<u16> = Some(200);
const NF: Option<u16> = Some(404);
const FB: Option<u16> = Some(403);
const NO: Option<u16> = None;

/// The matrix: reads by everyone; writes by those who may not make them. Columns: method,
/// documented template, concrete path, body, and the status for [admin, resa, alpha].
#[rustfmt::skip]
fn matrix(admin_token_id: i64) -> Vec<Case> {
    let reseller = json!({"username": "sneaky", "password": PASSWORD, "role": "reseller"});
    let admin = json!({"username": "sneaky", "password": PASSWORD, "role": "admin"});
    let tenant = json!({"name": "sneaky", "plan": "basic"});
    let tenant_of_b = json!({"name": "sneaky", "plan": "basic", "owner": "resb"});
    let limits = json!({"limits": {"max_tenants": 99}});
    let vhost = json!({"domain": "sneaky.example.com"});
    vec![
        // Reads.
        case("GET", "/me", "/me", None, [OK, OK, OK]),
        case("GET", "/tokens", "/tokens", None, [OK, OK, OK]),
        case("GET", "/users", "/users", None, [OK, OK, OK]),
        case("GET", "/users/{username}", "/users/resb", None, [OK, NF, NF]),
        case("GET", "/users/{username}", "/users/resa", None, [OK, OK, NF]),
        case("GET", "/users/{username}", "/users/alpha", None, [OK, NF, OK]),
        case("GET", "/plans", "/plans", None, [OK, OK, OK]),
        case("GET", "/plans/{name}", "/plans/basic", None, [OK, OK, NF]),
        case("GET", "/plans/{name}", "/plans/small", None, [OK, OK, OK]),
        case("GET", "/tenants", "/tenants", None, [OK, OK, OK]),
        case("GET", "/tenants/{name}", "/tenants/bravo", None, [OK, NF, NF]),
        case("GET", "/tenants/{name}", "/tenants/charlie", None, [OK, NF, NF]),
        case("GET", "/tenants/{name}", "/tenants/alpha", None, [OK, OK, OK]),
        case("GET", "/tenants/{name}", "/tenants/alpha2", None, [OK, OK, NF]),
        case("GET", "/tenants/{name}/health", "/tenants/bravo/health", None, [OK, NF, NF]),
        case("GET", "/tenants/{name}/health", "/tenants/alpha/health", None, [OK, OK, OK]),
        case("GET", "/tenants/{name}/health", "/tenants/alpha2/health", None, [OK, OK, NF]),
        case("GET", "/tenants/{name}/vhosts", "/tenants/bravo/vhosts", None, [OK, NF, NF]),
        case("GET", "/tenants/{name}/vhosts", "/tenants/alpha/vhosts", None, [OK, OK, OK]),
        case("GET", "/tenants/{name}/vhosts", "/tenants/alpha2/vhosts", None, [OK, OK, NF]),
        case("GET", "/vhosts/{domain}", "/vhosts/bravo.example.com", None, [OK, NF, NF]),
        case("GET", "/vhosts/{domain}", "/vhosts/charlie.example.com", None, [OK, NF, NF]),
        case("GET", "/vhosts/{domain}", "/vhosts/alpha.example.com", None, [OK, OK, OK]),
        case("GET", "/tenants/{name}/vhosts/{domain}/access-log", "/tenants/bravo/vhosts/bravo.example.com/access-log", None, [OK, NF, NF]),
        case("GET", "/tenants/{name}/vhosts/{domain}/access-log", "/tenants/alpha/vhosts/alpha.example.com/access-log", None, [OK, OK, OK]),
        case("GET", "/tenants/{name}/vhosts/{domain}/access-log", "/tenants/alpha/vhosts/bravo.example.com/access-log", None, [NF, NF, NF]),
        case("GET", "/tenants/{name}/vhosts/{domain}/access-log", "/tenants/alpha2/vhosts/alpha.example.com/access-log", None, [NF, NF, NF]),
        case("GET", "/audit", "/audit", None, [OK, OK, OK]),
        // Accounts and plans are the admin's.
        case("POST", "/users", "/users", Some(reseller), [NO, FB, FB]),
        case("POST", "/users", "/users", Some(admin), [NO, FB, FB]),
        case("PATCH", "/users/{username}", "/users/resb", Some(limits.clone()), [NO, NF, NF]),
        case("PATCH", "/users/{username}", "/users/resa", Some(limits), [NO, FB, NF]),
        case("PATCH", "/users/{username}", "/users/admin", Some(json!({"password": "taken-over-12"})), [NO, NF, NF]),
        case("DELETE", "/users/{username}", "/users/resb", None, [NO, FB, FB]),
        case("DELETE", "/users/{username}", "/users/alpha", None, [NO, FB, FB]),
        case("POST", "/plans", "/plans", Some(json!({"name": "sneaky"})), [NO, FB, FB]),
        case("PATCH", "/plans/{name}", "/plans/basic", Some(json!({"max_vhosts": 99})), [NO, FB, FB]),
        case("PATCH", "/plans/{name}", "/plans/small", Some(json!({"max_vhosts": 99})), [NO, FB, FB]),
        case("DELETE", "/plans/{name}", "/plans/small", None, [NO, FB, FB]),
        // Tenants: a reseller manages its own, a tenant login none (reach is checked first).
        case("POST", "/tenants", "/tenants", Some(tenant), [NO, NO, FB]),
        case("POST", "/tenants", "/tenants", Some(tenant_of_b), [NO, FB, FB]),
        case("PATCH", "/tenants/{name}", "/tenants/bravo", Some(json!({"php": {"memory_limit": "128M"}})), [NO, NF, NF]),
        case("PATCH", "/tenants/{name}", "/tenants/bravo", Some(json!({"plan": "small"})), [NO, NF, NF]),
        case("PATCH", "/tenants/{name}", "/tenants/alpha", Some(json!({"plan": "basic"})), [NO, NO, FB]),
        case("PATCH", "/tenants/{name}", "/tenants/alpha", Some(json!({"owner": "resb"})), [NO, FB, FB]),
        case("DELETE", "/tenants/{name}", "/tenants/bravo", None, [NO, NF, FB]),
        case("DELETE", "/tenants/{name}", "/tenants/charlie", None, [NO, NF, FB]),
        case("DELETE", "/tenants/{name}", "/tenants/alpha", None, [NO, NO, FB]),
        case("POST", "/tenants/{name}/suspend", "/tenants/bravo/suspend", None, [NO, NF, FB]),
        case("POST", "/tenants/{name}/suspend", "/tenants/alpha/suspend", None, [NO, NO, FB]),
        case("POST", "/tenants/{name}/unsuspend", "/tenants/bravo/unsuspend", None, [NO, NF, FB]),
        case("POST", "/tenants/{name}/unsuspend", "/tenants/alpha/unsuspend", None, [NO, NO, FB]),
        // Vhosts: only within reach.
        case("POST", "/tenants/{name}/vhosts", "/tenants/bravo/vhosts", Some(vhost.clone()), [NO, NF, NF]),
        case("POST", "/tenants/{name}/vhosts", "/tenants/alpha2/vhosts", Some(vhost), [NO, NO, NF]),
        case("PATCH", "/vhosts/{domain}", "/vhosts/bravo.example.com", Some(json!({"php": false})), [NO, NF, NF]),
        case("PATCH", "/vhosts/{domain}", "/vhosts/charlie.example.com", Some(json!({"aliases": ["sneaky.example.com"]})), [NO, NF, NF]),
        case("DELETE", "/vhosts/{domain}", "/vhosts/bravo.example.com", None, [NO, NF, NF]),
        case("DELETE", "/vhosts/{domain}", "/vhosts/charlie.example.com", None, [NO, NF, NF]),
        // Someone else's token.
        case("DELETE", "/tokens/{id}", format!("/tokens/{admin_token_id}"), None, [NO, NF, NF]),
    ]
}

/// Every authenticated route, as each role: reads are tried by everyone, writes by those who
/// may not make them. Refused requests change nothing, and no answer to reseller A or to
/// alpha's login carries a name outside their reach.
#[tokio::test]
async fn every_route_answers_each_role_as_the_policy_says() {
    let w = world().await;
    let before = snapshot(&w.app, &w.admin).await;
    let cases = matrix(w.admin_token_id);

    // A new documented route must get its row here.
    let covered: BTreeSet<(String, String)> = cases
        .iter()
        .map(|c| (c.method.to_owned(), c.template.to_owned()))
        .collect();
    let (_, doc) = w.app.anon().get("/openapi.json").await;
    for (m, path) in documented_operations(&w.app).await {
        if is_public(&doc, &m, &path) {
            continue;
        }
        assert!(
            covered.contains(&(m.clone(), path.clone())),
            "{m} {path} is documented but has no row in the role matrix"
        );
    }

    // Names each actor must never be shown.
    let hidden: [&[&str]; 3] = [
        &[],
        &["bravo", "charlie", "resb"],
        &["bravo", "charlie", "resb", "alpha2", "basic"],
    ];
    let actors = [&w.admin, &w.resa, &w.alpha];
    let mut failures = Vec::new();
    for c in &cases {
        for (i, expected) in c.expect.iter().enumerate() {
            let Some(expected) = *expected else { continue };
            let r = actors[i]
                .send(method(c.method), &c.path, c.body.as_ref())
                .await;
            let who = ["admin", "resa", "alpha"][i];
            if r.status != expected {
                failures.push(format!(
                    "{who}: {} {} -> {} (expected {expected}): {}",
                    c.method, c.path, r.status, r.text
                ));
                continue;
            }
            if r.status >= 400 {
                assert_eq!(
                    r.content_type(),
                    "application/problem+json",
                    "{who} {} {}",
                    c.method,
                    c.path
                );
                assert_eq!(r.json["status"], r.status, "{who} {} {}", c.method, c.path);
            }
            for name in hidden[i] {
                assert!(
                    !r.text.contains(name),
                    "{who}: {} {} reveals '{name}': {}",
                    c.method,
                    c.path,
                    r.text
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "role matrix mismatches:\n{}",
        failures.join("\n")
    );

    // The refused writes changed nothing (reads never do).
    let after = snapshot(&w.app, &w.admin).await;
    assert_unchanged(&before, &after, "refused writes");
}

/// Each role's listings hold exactly what it reaches.
#[tokio::test]
async fn listings_hold_only_what_each_role_reaches() {
    let w = world().await;
    assert_eq!(
        w.admin.names("/tenants", "name").await,
        ["alpha", "alpha2", "bravo", "charlie"]
    );
    assert_eq!(w.resa.names("/tenants", "name").await, ["alpha", "alpha2"]);
    assert_eq!(w.resb.names("/tenants", "name").await, ["bravo"]);
    assert_eq!(w.alpha.names("/tenants", "name").await, ["alpha"]);

    // Filters cannot widen a reseller's reach.
    assert!(w.resa.all("/tenants?owner=resb").await.is_empty());
    assert!(w.resa.all("/tenants?q=bravo").await.is_empty());
    assert!(w.alpha.all("/tenants?owner=resa&q=alpha2").await.is_empty());
    assert_eq!(
        w.admin.names("/tenants?owner=resb", "name").await,
        ["bravo"]
    );
    assert_eq!(
        w.admin.names("/tenants?q=charlie.ex", "name").await,
        ["charlie"]
    );

    assert_eq!(
        w.admin.names("/users", "username").await,
        ["admin", "alpha", "bravo", "resa", "resb"]
    );
    assert_eq!(w.resa.names("/users", "username").await, ["resa"]);
    assert_eq!(w.alpha.names("/users", "username").await, ["alpha"]);

    assert_eq!(w.resa.names("/plans", "name").await, ["basic", "small"]);
    assert_eq!(w.alpha.names("/plans", "name").await, ["small"]);

    assert_eq!(
        w.alpha.names("/tenants/alpha/vhosts", "domain").await,
        ["alpha.example.com"]
    );

    let (status, me) = w.alpha.get("/me").await;
    assert_eq!(status, 200);
    assert_eq!(me["username"], "alpha");
    assert_eq!(me["role"], "tenant");
    assert_eq!(me["tenant"], "alpha");
    let (_, me) = w.resa.get("/me").await;
    assert_eq!(me["role"], "reseller");
    assert_eq!(me["limits"]["max_tenants"], 10);
}

/// A reseller creates tenants owned by itself and manages them; the other reseller's tenant
/// is untouched by anything it tries.
#[tokio::test]
async fn reseller_manages_its_own_tenants_only() {
    let w = world().await;
    let bravo_before = w.admin.get("/tenants/bravo").await;

    let t = create_tenant(&w.resa, "delta", "basic", json!({})).await;
    assert_eq!(t["owner"], "resa");
    assert_eq!(t["state"], "active");
    // Naming itself as owner is allowed.
    let t = create_tenant(&w.resa, "echo", "basic", json!({"owner": "resa"})).await;
    assert_eq!(t["owner"], "resa");

    let (status, t) = w.resa.post("/tenants/delta/suspend", json!({})).await;
    assert_eq!((status, t["state"].as_str()), (200, Some("suspended")));
    let (_, v) = w.resa.get("/vhosts/alpha.example.com").await;
    assert_eq!(v["state"], "active");
    let (status, t) = w.resa.post("/tenants/alpha/suspend", json!({})).await;
    assert_eq!((status, t["state"].as_str()), (200, Some("suspended")));
    let (_, v) = w.resa.get("/vhosts/alpha.example.com").await;
    assert_eq!(
        v["state"], "suspended",
        "a suspended tenant's vhosts show it"
    );
    let (status, t) = w.resa.post("/tenants/alpha/unsuspend", json!({})).await;
    assert_eq!((status, t["state"].as_str()), (200, Some("active")));

    let (status, t) = w
        .resa
        .patch(
            "/tenants/delta",
            json!({"plan": "small", "php": {"memory_limit": "128M"}}),
        )
        .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["plan"], "small");
    assert_eq!(t["php"]["memory_limit"], "128M");

    let v = create_vhost(&w.resa, "delta", "delta.example.com").await;
    assert_eq!(v["tenant"], "delta");
    let (status, v) = w
        .resa
        .patch(
            "/vhosts/delta.example.com",
            json!({"aliases": ["www.delta.example.com"]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["aliases"], json!(["www.delta.example.com"]));
    assert_eq!(w.resa.delete("/vhosts/delta.example.com").await.0, 204);
    assert_eq!(w.resa.delete("/tenants/echo").await.0, 204);
    assert_eq!(w.resa.get("/tenants/echo").await.0, 404);

    assert_eq!(
        w.resa.names("/tenants", "name").await,
        ["alpha", "alpha2", "delta"]
    );
    // Nothing of reseller B moved.
    assert_eq!(w.admin.get("/tenants/bravo").await, bravo_before);
    assert_eq!(w.resb.names("/tenants", "name").await, ["bravo"]);

    // An admin may create a tenant on behalf of a reseller; it then counts as the reseller's.
    let t = create_tenant(&w.admin, "foxtrot", "basic", json!({"owner": "resb"})).await;
    assert_eq!(t["owner"], "resb");
    assert_eq!(w.resb.names("/tenants", "name").await, ["bravo", "foxtrot"]);
    // ...but never on behalf of a tenant login.
    let (status, body) = w
        .admin
        .post(
            "/tenants",
            json!({"name": "golf", "plan": "basic", "owner": "alpha"}),
        )
        .await;
    assert_refused(status, &body, "owner", "owner naming a tenant login");
}

/// A tenant login sees its own tenant, changes its PHP settings and its vhosts within its
/// plan, and does nothing else.
#[tokio::test]
async fn tenant_login_works_within_its_tenant_and_plan() {
    let w = world().await;
    let (status, t) = w
        .alpha
        .patch(
            "/tenants/alpha",
            json!({"php": {"memory_limit": "128M", "display_errors": true, "date.timezone": "Europe/Berlin"}}),
        )
        .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(
        t["php"],
        json!({"memory_limit": "128M", "display_errors": true, "date.timezone": "Europe/Berlin"})
    );
    // `null` removes one setting and keeps the others.
    let (status, t) = w
        .alpha
        .patch("/tenants/alpha", json!({"php": {"display_errors": null}}))
        .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(
        t["php"],
        json!({"memory_limit": "128M", "date.timezone": "Europe/Berlin"})
    );
    // The plan (256M by default) bounds what a tenant may set.
    let (status, body) = w
        .alpha
        .patch("/tenants/alpha", json!({"php": {"memory_limit": "512M"}}))
        .await;
    assert_refused(
        status,
        &body,
        "php.memory_limit",
        "memory_limit above the plan",
    );
    let (status, body) = w
        .alpha
        .patch("/tenants/alpha", json!({"php": {"max_execution_time": 61}}))
        .await;
    assert_refused(status, &body, "php.max_execution_time", "above the plan");

    // Plan `small` allows two vhosts; alpha has one.
    let v = create_vhost(&w.alpha, "alpha", "shop.alpha.example.com").await;
    assert_eq!(v["tenant"], "alpha");
    let (status, body) = w
        .alpha
        .post(
            "/tenants/alpha/vhosts",
            json!({"domain": "blog.alpha.example.com"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["limit"], "max_vhosts");
    let (status, v) = w
        .alpha
        .patch(
            "/vhosts/shop.alpha.example.com",
            json!({"docroot": "shop/public", "front_controller": "/index.php"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["docroot"], "shop/public");
    assert_eq!(v["front_controller"], "/index.php");
    assert_eq!(
        w.alpha.delete("/vhosts/shop.alpha.example.com").await.0,
        204
    );
    assert_eq!(
        w.alpha.names("/tenants/alpha/vhosts", "domain").await,
        ["alpha.example.com"]
    );
    // After the delete there is room again.
    create_vhost(&w.alpha, "alpha", "blog.alpha.example.com").await;

    // Its own account: it may change its password with the current one.
    let (status, body) = w
        .alpha
        .patch(
            "/users/alpha",
            json!({"password": "alpha-new-password", "current_password": "wrong-password-1"}),
        )
        .await;
    assert_refused(status, &body, "current_password", "wrong current password");
    let (status, me) = w
        .alpha
        .patch(
            "/users/alpha",
            json!({"password": "alpha-new-password", "current_password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 200, "{me}");
    // A new password ends the tokens made with the old one.
    assert_eq!(w.alpha.get("/me").await.0, 401);
    w.app.token("alpha", "alpha-new-password").await;
}

/// A tenant login must not take over its account by resetting the login password through the
/// tenant resource without knowing the current password (PATCH /users/{self} asks for it).
#[tokio::test]
async fn tenant_login_cannot_reset_its_password_without_the_current_one() {
    let w = world().await;
    let (status, body) = w
        .alpha
        .patch("/tenants/alpha", json!({"password": "taken-over-password"}))
        .await;
    assert!(
        status == 403 || status == 422,
        "a tenant login reset its own password without the current one: {status} {body}"
    );
    // The password is unchanged and the token still works.
    w.app.token("alpha", PASSWORD).await;
    assert_eq!(w.alpha.get("/me").await.0, 200);
}

/// Reseller limits (tenants, vhosts, PHP workers) and a plan's vhost limit: past each, 403
/// naming the limit, and nothing stored.
#[tokio::test]
async fn reseller_and_plan_limits_are_enforced() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    create_plan(&admin, "basic", json!({})).await; // 5 PHP workers
    create_plan(&admin, "tiny", json!({"php": {"max_children": 2}})).await;
    create_plan(&admin, "big", json!({"php": {"max_children": 10}})).await;
    create_plan(&admin, "one", json!({"max_vhosts": 1})).await;

    // max_tenants
    let r1 = create_reseller(&app, &admin, "rone", json!({"max_tenants": 2})).await;
    create_tenant(&r1, "aone", "basic", json!({})).await;
    create_tenant(&r1, "atwo", "basic", json!({})).await;
    let before = snapshot(&app, &admin).await;
    let (status, body) = r1
        .post("/tenants", json!({"name": "athree", "plan": "basic"}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["limit"], "max_tenants");
    // The limit holds for tenants an admin creates on the reseller's behalf too.
    let (status, body) = admin
        .post(
            "/tenants",
            json!({"name": "athree", "plan": "basic", "owner": "rone"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["limit"], "max_tenants");
    assert_unchanged(&before, &snapshot(&app, &admin).await, "max_tenants");
    assert_eq!(r1.names("/tenants", "name").await, ["aone", "atwo"]);

    // max_php_workers: basic has 5 workers per tenant.
    let r2 = create_reseller(&app, &admin, "rtwo", json!({"max_php_workers": 7})).await;
    create_tenant(&r2, "bone", "basic", json!({})).await;
    let before = snapshot(&app, &admin).await;
    let (status, body) = r2
        .post("/tenants", json!({"name": "btwo", "plan": "basic"}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["limit"], "max_php_workers");
    // Moving the tenant to a bigger plan counts too.
    let (status, body) = r2.patch("/tenants/bone", json!({"plan": "big"})).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["limit"], "max_php_workers");
    assert_unchanged(&before, &snapshot(&app, &admin).await, "max_php_workers");
    // 5 + 2 = 7 fits exactly.
    create_tenant(&r2, "btwo", "tiny", json!({})).await;

    // max_vhosts of a reseller, across its tenants.
    let r3 = create_reseller(&app, &admin, "rthree", json!({"max_vhosts": 2})).await;
    create_tenant(&r3, "cone", "basic", json!({})).await;
    create_tenant(&r3, "ctwo", "basic", json!({})).await;
    create_vhost(&r3, "cone", "one.cone.example.com").await;
    create_vhost(&r3, "ctwo", "one.ctwo.example.com").await;
    let before = snapshot(&app, &admin).await;
    let (status, body) = r3
        .post(
            "/tenants/cone/vhosts",
            json!({"domain": "two.cone.example.com"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // The reseller's vhost limit is reported as `limits.max_vhosts` (the plan's as `max_vhosts`).
    assert!(
        body["limit"]
            .as_str()
            .is_some_and(|l| l.ends_with("max_vhosts")),
        "{body}"
    );
    assert_unchanged(
        &before,
        &snapshot(&app, &admin).await,
        "reseller max_vhosts",
    );

    // A plan's max_vhosts, for an admin's tenant (no reseller limit applies).
    create_tenant(&admin, "done", "one", json!({})).await;
    create_vhost(&admin, "done", "one.done.example.com").await;
    let before = snapshot(&app, &admin).await;
    let (status, body) = admin
        .post(
            "/tenants/done/vhosts",
            json!({"domain": "two.done.example.com"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["limit"], "max_vhosts");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("'one'"),
        "{body}"
    );
    assert_unchanged(&before, &snapshot(&app, &admin).await, "plan max_vhosts");

    // Raising a limit lets the reseller go on.
    let (status, user) = admin
        .patch("/users/rone", json!({"limits": {"max_tenants": 3}}))
        .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["limits"]["max_tenants"], 3);
    create_tenant(&r1, "athree", "basic", json!({})).await;
}

/// Only an admin creates accounts and plans; nobody else can make an admin.
#[tokio::test]
async fn only_an_admin_creates_users_and_plans() {
    let w = world().await;
    let before = snapshot(&w.app, &w.admin).await;
    for (who, api) in [("reseller", &w.resa), ("tenant login", &w.alpha)] {
        for role in ["admin", "reseller", "tenant"] {
            let (status, body) = api
                .post(
                    "/users",
                    json!({"username": "newbie", "password": PASSWORD, "role": role}),
                )
                .await;
            assert_eq!(status, 403, "{who} creating a {role}: {body}");
        }
        let (status, body) = api.post("/plans", json!({"name": "free"})).await;
        assert_eq!(status, 403, "{who} creating a plan: {body}");
    }
    assert_unchanged(
        &before,
        &snapshot(&w.app, &w.admin).await,
        "refused creations",
    );

    let (status, user) = w
        .admin
        .post(
            "/users",
            json!({"username": "newbie", "password": PASSWORD, "role": "reseller"}),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    assert_eq!(user["role"], "reseller");
    assert_eq!(user["limits"]["max_tenants"], Value::Null);
    let plan = create_plan(&w.admin, "free", json!({})).await;
    assert_eq!(plan["max_vhosts"], 10);
    assert_eq!(plan["php"]["max_children"], 5);
    assert_eq!(plan["php"]["memory_limit_mb"], 256);
    assert_eq!(plan["php"]["upload_max_mb"], 64);
    assert_eq!(plan["php"]["max_execution_time"], 60);
}

/// Without a valid credential every authenticated route is 401 with a Bearer challenge; the
/// routes come from the OpenAPI document, so a new route is covered without editing this test.
#[tokio::test]
async fn every_authenticated_route_refuses_missing_or_dead_credentials() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    // A revoked token, and the token of an account that was deleted.
    let (_, signed_in) = app
        .anon()
        .post(
            "/tokens",
            json!({"username": ADMIN, "password": ADMIN_PASSWORD}),
        )
        .await;
    let revoked = signed_in["token"].as_str().unwrap().to_owned();
    let id = signed_in["id"].as_i64().unwrap();
    assert_eq!(admin.delete(&format!("/tokens/{id}")).await.0, 204);
    create_reseller(&app, &admin, "gone", json!({})).await;
    let orphan = app.token("gone", PASSWORD).await;
    assert_eq!(admin.delete("/users/gone").await.0, 204);

    let credentials: Vec<(&str, Api)> = vec![
        ("no header", app.anon()),
        ("empty bearer", app.with_header("Bearer ")),
        ("garbage", app.api("not-a-token")),
        (
            "made-up token",
            app.api(&format!("lodge_{}", "0".repeat(40))),
        ),
        (
            "basic auth",
            app.with_header("Basic YWRtaW46YWRtaW4tcGFzc3dvcmQtMQ=="),
        ),
        (
            "lowercase scheme",
            app.with_header(&format!("bearer {revoked}")),
        ),
        ("revoked token", app.api(&revoked)),
        ("deleted account", app.api(&orphan)),
    ];
    let (_, doc) = app.anon().get("/openapi.json").await;
    let mut checked = 0;
    for (m, template) in documented_operations(&app).await {
        if is_public(&doc, &m, &template) {
            continue;
        }
        let path = fill_path(&template);
        let body = matches!(m.as_str(), "POST" | "PATCH").then(|| json!({}));
        for (what, api) in &credentials {
            let r = api.send(method(&m), &path, body.as_ref()).await;
            assert_eq!(r.status, 401, "{what}: {m} {path}: {}", r.text);
            assert_eq!(r.content_type(), "application/problem+json", "{m} {path}");
            assert_eq!(
                r.headers
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some("Bearer realm=\"lodge\""),
                "{what}: {m} {path}"
            );
            assert!(!r.text.contains("argon2"), "{m} {path}: {}", r.text);
        }
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} authenticated operations");
    // The admin's own token still works.
    assert_eq!(admin.get("/me").await.0, 200);
}

/// Tokens: listed by their owner without secrets, revoked by their owner only; a revoked
/// token is dead at once.
#[tokio::test]
async fn tokens_are_listed_and_revoked_by_their_owner_only() {
    let w = world().await;
    let (status, second) = w
        .app
        .anon()
        .post(
            "/tokens",
            json!({"username": "resa", "password": PASSWORD, "name": "ci deploy"}),
        )
        .await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["name"], "ci deploy");
    let second_token = second["token"].as_str().unwrap().to_owned();
    let second_id = second["id"].as_i64().unwrap();
    assert!(second_token.starts_with("lodge_") && second_token.len() == 46);

    let r = w.resa.send(Method::GET, "/tokens", None).await;
    assert_eq!(r.status, 200);
    let items = r.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{}", r.text);
    assert_eq!(r.json["next"], Value::Null);
    assert_eq!(items[1]["id"], second_id);
    assert_eq!(items[1]["name"], "ci deploy");
    assert_eq!(items[1]["prefix"], &second_token[..14]);
    assert!(
        !r.text.contains(&second_token),
        "the token list shows a whole token"
    );
    assert!(!r.text.contains("hash"), "{}", r.text);
    // Another account's list does not show them.
    let theirs = w.resb.all("/tokens").await;
    assert_eq!(theirs.len(), 1);
    assert_ne!(theirs[0]["id"], second_id);

    // Someone else's token id is not found, and that token keeps working.
    let (status, body) = w.resb.delete(&format!("/tokens/{second_id}")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(w.alpha.delete(&format!("/tokens/{second_id}")).await.0, 404);
    assert_eq!(w.resa.delete("/tokens/not-a-number").await.0, 404);
    let second = w.app.api(&second_token);
    assert_eq!(second.get("/me").await.0, 200);

    // Its owner revokes it: 204, then it is refused everywhere and gone from the list.
    assert_eq!(w.resa.delete(&format!("/tokens/{second_id}")).await.0, 204);
    assert_eq!(second.get("/me").await.0, 401);
    assert_eq!(second.get("/tenants").await.0, 401);
    assert_eq!(w.resa.all("/tokens").await.len(), 1);
    assert_eq!(w.resa.delete(&format!("/tokens/{second_id}")).await.0, 404);
    // A token can revoke itself.
    let (_, me) = w.resa.get("/tokens").await;
    let own_id = me["items"][0]["id"].as_i64().unwrap();
    assert_eq!(w.resa.delete(&format!("/tokens/{own_id}")).await.0, 204);
    assert_eq!(w.resa.get("/me").await.0, 401);
}
