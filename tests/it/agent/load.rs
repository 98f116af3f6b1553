//! The agent's proxy under load: a vhost added while another is busy is routed at once
//! and the busy one fails no request; a saturated pool sheds the excess instead of
//! queueing it.

use super::*;

/// A tenant whose vhost serves `hello.txt` and has a `slow.php` and a pool that answers,
/// and the proxy's address.
async fn loaded_site() -> (Site, Agent, String, String, String) {
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
    until_php_serves(&site, &tenant, &domain).await;
    let http = agent.proxy("http").await;
    until_served(&http, &domain, "/hello.txt").await;
    (site, agent, tenant, domain, http)
}

/// Load on one vhost while another is added: the new one answers, the loaded one never fails.
#[tokio::test]
async fn a_vhost_added_under_load_is_routed_within_2_s_and_the_load_fails_no_request() {
    require_root!("a_vhost_added_under_load_is_routed_within_2_s_and_the_load_fails_no_request");
    let (_site, agent, tenant, domain, http) = loaded_site().await;
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
    drop(agent);
}

/// Two workers and far more slow requests than the queue holds: the excess gets 503 with
/// Retry-After at once instead of an ever-growing queue; the admitted ones complete.
#[tokio::test]
async fn a_saturated_pool_sheds_the_excess_with_503_and_completes_the_admitted() {
    require_root!("a_saturated_pool_sheds_the_excess_with_503_and_completes_the_admitted");
    let (_site, agent, _, domain, http) = loaded_site().await;
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
}
