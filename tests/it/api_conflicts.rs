//! Uniqueness under concurrency: one owner per domain (aliases included) across all
//! tenants, unique tenant, plan and user names, limits that hold under racing requests, and
//! UIDs that are never handed out twice.

use crate::harness::*;
use serde_json::json;

/// Plan `roomy` (100 vhosts), resellers `resa` and `resb` with tenants `acme` and `bolt`.
async fn fixture() -> (App, Api, Api, Api) {
    let app = spawn_app().await;
    let admin = app.admin().await;
    create_plan(&admin, "roomy", json!({"max_vhosts": 100})).await;
    let resa = create_reseller(&app, &admin, "resa", json!({})).await;
    let resb = create_reseller(&app, &admin, "resb", json!({})).await;
    create_tenant(&resa, "acme", "roomy", json!({})).await;
    create_tenant(&resb, "bolt", "roomy", json!({})).await;
    (app, admin, resa, resb)
}

/// Every vhost of every tenant, as (domain, tenant).
async fn all_vhosts(admin: &Api) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for tenant in admin.names("/tenants", "name").await {
        for v in admin.all(&format!("/tenants/{tenant}/vhosts")).await {
            out.push((
                v["domain"].as_str().unwrap().to_owned(),
                v["tenant"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn racing_creates_of_one_domain_give_one_201_and_one_409() {
    let (app, admin, resa, resb) = fixture().await;
    for round in 0..10 {
        let domain = format!("race{round}.example.com");
        let body = json!({"domain": domain});
        // Even rounds race two tenants of different resellers, odd rounds the same tenant.
        let (a, b) = if round % 2 == 0 {
            tokio::join!(
                resa.post("/tenants/acme/vhosts", body.clone()),
                resb.post("/tenants/bolt/vhosts", body.clone())
            )
        } else {
            tokio::join!(
                resa.post("/tenants/acme/vhosts", body.clone()),
                resa.post("/tenants/acme/vhosts", body.clone())
            )
        };
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "round {round}: {} / {}", a.1, b.1);
        let loser = if a.0 == 409 { &a.1 } else { &b.1 };
        assert_conflict(409, loser, "domain", &format!("round {round}"));
        let winner = if a.0 == 201 { &a.1 } else { &b.1 };
        let owners: Vec<_> = all_vhosts(&admin)
            .await
            .into_iter()
            .filter(|(d, _)| *d == domain)
            .collect();
        assert_eq!(owners.len(), 1, "round {round}: {owners:?}");
        assert_eq!(owners[0].1, winner["tenant"].as_str().unwrap());
    }

    // Eight at once, all for one name: one wins.
    let body = json!({"domain": "crowd.example.com"});
    let tries: Vec<_> = (0..8)
        .map(|i| {
            let (api, tenant) = if i % 2 == 0 {
                (&resa, "acme")
            } else {
                (&resb, "bolt")
            };
            let path = format!("/tenants/{tenant}/vhosts");
            let body = body.clone();
            async move { api.post(&path, body).await }
        })
        .collect();
    let mut statuses: Vec<u16> = futures_join_all(tries)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);

    let vhosts = all_vhosts(&admin).await;
    assert_eq!(vhosts.len(), 11, "{vhosts:?}");
    // One name row per vhost, in the store itself.
    if let Some(n) = app.sqlite_count("vhost_names") {
        assert_eq!(n, 11);
    }
    if let Some(n) = app.sqlite_count("vhosts") {
        assert_eq!(n, 11);
    }
}

/// Awaits all futures concurrently (no extra crates: each becomes a task of this runtime).
async fn futures_join_all<F, T>(futures: Vec<F>) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    // `tokio::join!` needs a fixed count; polling them together through a JoinSet would need
    // 'static futures, so drive them with a small hand-made join over pinned boxes.
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<T>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results
        .into_iter()
        .map(|r| r.expect("every future finished"))
        .collect()
}

/// Limits are checked in the same transaction as the insert: racing requests cannot
/// overshoot them.
#[tokio::test]
async fn racing_creates_cannot_overshoot_limits() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    create_plan(&admin, "three", json!({"max_vhosts": 3})).await;
    let res = create_reseller(&app, &admin, "resa", json!({"max_tenants": 2})).await;
    let tries: Vec<_> = (0..6)
        .map(|i| {
            res.post(
                "/tenants",
                json!({"name": format!("t{i}x"), "plan": "three"}),
            )
        })
        .collect();
    let results = futures_join_all(tries).await;
    let created = results.iter().filter(|r| r.0 == 201).count();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 403).collect();
    assert_eq!((created, refused.len()), (2, 4), "{results:?}");
    assert!(refused.iter().all(|r| r.1["limit"] == "max_tenants"));
    assert_eq!(res.all("/tenants").await.len(), 2);

    let tenant = res.names("/tenants", "name").await.remove(0);
    let tries: Vec<_> = (0..10)
        .map(|i| {
            let path = format!("/tenants/{tenant}/vhosts");
            let res = &res;
            async move {
                res.post(&path, json!({"domain": format!("v{i}.example.com")}))
                    .await
            }
        })
        .collect();
    let results = futures_join_all(tries).await;
    let created = results.iter().filter(|r| r.0 == 201).count();
    let refused = results
        .iter()
        .filter(|r| r.0 == 403 && r.1["limit"] == "max_vhosts")
        .count();
    assert_eq!((created, refused), (3, 7), "{results:?}");
    assert_eq!(res.all(&format!("/tenants/{tenant}/vhosts")).await.len(), 3);
}

/// A host name has one owner across all tenants, whether it is a domain or an alias, however
/// it is spelled.
#[tokio::test]
async fn domains_and_aliases_are_unique_across_tenants() {
    let (app, admin, resa, resb) = fixture().await;
    let (status, v) = resa
        .post(
            "/tenants/acme/vhosts",
            json!({"domain": "acme.example.com", "aliases": ["www.acme.example.com", "b\u{fc}cher.example"]}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        v["aliases"],
        json!(["www.acme.example.com", "xn--bcher-kva.example"])
    );
    let before = snapshot(&app, &admin).await;

    // B may not take A's domain or aliases, as a domain...
    for taken in [
        "acme.example.com",
        "ACME.Example.COM",
        "www.acme.example.com",
        "xn--bcher-kva.example",
        "B\u{dc}CHER.example",
    ] {
        let (status, body) = resb
            .post("/tenants/bolt/vhosts", json!({"domain": taken}))
            .await;
        assert_conflict(status, &body, "domain", taken);
        assert!(
            !body.to_string().contains("acme\""),
            "the conflict does not name the other tenant: {body}"
        );
    }
    // ...or as an alias of a new vhost.
    let (status, body) = resb
        .post(
            "/tenants/bolt/vhosts",
            json!({"domain": "bolt.example.com", "aliases": ["www.bolt.example.com", "www.acme.example.com"]}),
        )
        .await;
    assert_conflict(status, &body, "aliases", "alias of a new vhost");
    assert_unchanged(&before, &snapshot(&app, &admin).await, "taken names");

    // Nor by changing an existing vhost's aliases.
    create_vhost(&resb, "bolt", "bolt.example.com").await;
    let before = snapshot(&app, &admin).await;
    let (status, body) = resb
        .patch(
            "/vhosts/bolt.example.com",
            json!({"aliases": ["acme.example.com"]}),
        )
        .await;
    assert_conflict(status, &body, "aliases", "alias equal to another's domain");
    // The other way round: A may not alias B's domain.
    let (status, body) = resa
        .patch(
            "/vhosts/acme.example.com",
            json!({"aliases": ["www.acme.example.com", "bolt.example.com"]}),
        )
        .await;
    assert_conflict(status, &body, "aliases", "alias equal to another's domain");
    assert_unchanged(&before, &snapshot(&app, &admin).await, "taken aliases");

    // A vhost may keep (and reorder) its own aliases.
    let (status, v) = resa
        .patch(
            "/vhosts/acme.example.com",
            json!({"aliases": ["xn--bcher-kva.example", "www.acme.example.com", "shop.acme.example.com"]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["aliases"],
        json!([
            "shop.acme.example.com",
            "www.acme.example.com",
            "xn--bcher-kva.example"
        ])
    );
    // Names an alias no longer uses are free again.
    let (status, v) = resa
        .patch("/vhosts/acme.example.com", json!({"aliases": []}))
        .await;
    assert_eq!(status, 200, "{v}");
    create_vhost(&resb, "bolt", "www.acme.example.com").await;
    // And the names of a deleted vhost.
    assert_eq!(resa.delete("/vhosts/acme.example.com").await.0, 204);
    create_vhost(&resb, "bolt", "acme.example.com").await;
}

#[tokio::test]
async fn duplicate_tenant_plan_and_user_names_conflict() {
    let (app, admin, resa, resb) = fixture().await;
    let before = snapshot(&app, &admin).await;

    // Tenants: by the same reseller, by another one, by the admin.
    for (who, api) in [("resa", &resa), ("resb", &resb), ("admin", &admin)] {
        let (status, body) = api
            .post("/tenants", json!({"name": "acme", "plan": "roomy"}))
            .await;
        assert_conflict(
            status,
            &body,
            "name",
            &format!("tenant acme again, by {who}"),
        );
    }
    // Plans and users.
    let (status, body) = admin.post("/plans", json!({"name": "roomy"})).await;
    assert_conflict(status, &body, "name", "plan again");
    for role in ["reseller", "admin"] {
        let (status, body) = admin
            .post(
                "/users",
                json!({"username": "resa", "password": PASSWORD, "role": role}),
            )
            .await;
        assert_conflict(status, &body, "username", "user again");
    }
    let (status, body) = admin
        .post(
            "/users",
            json!({"username": ADMIN, "password": PASSWORD, "role": "admin"}),
        )
        .await;
    assert_conflict(status, &body, "username", "the admin again");
    // A tenant login is a user: its name cannot be another account's.
    let (status, body) = admin
        .post(
            "/tenants",
            json!({"name": "resb", "plan": "roomy", "password": PASSWORD}),
        )
        .await;
    assert_conflict(status, &body, "name", "tenant whose login would be resb");
    assert_unchanged(&before, &snapshot(&app, &admin).await, "duplicates");

    // Racing pairs: one wins, the other gets 409.
    let body = json!({"name": "twin", "plan": "roomy"});
    let (a, b) = tokio::join!(
        resa.post("/tenants", body.clone()),
        resb.post("/tenants", body.clone())
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{} / {}", a.1, b.1);
    let (a, b) = tokio::join!(
        admin.post("/plans", json!({"name": "twin"})),
        admin.post("/plans", json!({"name": "twin"}))
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{} / {}", a.1, b.1);
    let user = json!({"username": "twin", "password": PASSWORD, "role": "reseller"});
    let (a, b) = tokio::join!(
        admin.post("/users", user.clone()),
        admin.post("/users", user.clone())
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{} / {}", a.1, b.1);
    let conflict = if a.0 == 409 { &a.1 } else { &b.1 };
    assert_conflict(409, conflict, "username", "racing users");
    assert_eq!(
        admin
            .names("/users", "username")
            .await
            .iter()
            .filter(|u| *u == "twin")
            .count(),
        1
    );
}

/// Deletes that would leave something dangling are refused with 409.
#[tokio::test]
async fn deletes_that_would_orphan_are_refused() {
    let (app, admin, _resa, _resb) = fixture().await;
    let before = snapshot(&app, &admin).await;
    let (status, body) = admin.delete("/plans/roomy").await;
    assert_conflict(status, &body, "name", "plan in use");
    let (status, body) = admin.delete("/users/resa").await;
    assert_conflict(status, &body, "username", "reseller owning tenants");
    let (status, body) = admin.delete(&format!("/users/{ADMIN}")).await;
    assert_conflict(status, &body, "username", "deleting oneself");
    assert_unchanged(&before, &snapshot(&app, &admin).await, "refused deletes");
    // Once empty, they go.
    assert_eq!(admin.delete("/tenants/acme").await.0, 204);
    assert_eq!(admin.delete("/users/resa").await.0, 204);
    assert_eq!(admin.delete("/tenants/bolt").await.0, 204);
    assert_eq!(admin.delete("/plans/roomy").await.0, 204);
    assert_eq!(admin.get("/plans/roomy").await.0, 404);
}

/// A deleted tenant's UID stays reserved: a new tenant of the same name gets a new UID, and
/// the old one's login, tokens and domains are gone.
#[tokio::test]
async fn a_recreated_tenant_gets_a_new_uid() {
    let (app, admin, resa, _resb) = fixture().await;
    let first = create_tenant(&resa, "reborn", "roomy", json!({"password": PASSWORD})).await;
    let uid1 = first["uid"].as_i64().expect("uid");
    assert_eq!(first["gid"], uid1);
    create_vhost(&resa, "reborn", "reborn.example.com").await;
    let login = app.sign_in("reborn", PASSWORD).await;
    assert_eq!(login.get("/me").await.0, 200);

    assert_eq!(resa.delete("/tenants/reborn").await.0, 204);
    assert_eq!(resa.get("/tenants/reborn").await.0, 404);
    assert_eq!(admin.get("/vhosts/reborn.example.com").await.0, 404);
    // The login and its tokens went with the tenant.
    assert_eq!(login.get("/me").await.0, 401);
    let (status, _) = app
        .anon()
        .post(
            "/tokens",
            json!({"username": "reborn", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 401);

    let second = create_tenant(&resa, "reborn", "roomy", json!({})).await;
    let uid2 = second["uid"].as_i64().expect("uid");
    assert_ne!(uid1, uid2, "a deleted tenant's UID was handed out again");
    assert!(uid2 > uid1);
    assert_eq!(second["gid"], uid2);
    assert_eq!(second["login"], false);
    assert_eq!(second["vhost_count"], 0);
    // Its old domain is free for anyone.
    create_vhost(&resa, "reborn", "reborn.example.com").await;

    // Every tenant has its own UID, never one of the live tenants'.
    let uids: Vec<i64> = admin
        .all("/tenants")
        .await
        .iter()
        .map(|t| t["uid"].as_i64().expect("uid"))
        .collect();
    let mut unique = uids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(uids.len(), unique.len(), "{uids:?}");
    if let Some(reserved) = app.sqlite(&format!(
        "SELECT COUNT(*) FROM uid_reservations WHERE uid IN ({uid1}, {uid2})"
    )) {
        assert_eq!(reserved, "2");
    }
}
