//! Changing a tenant's settings reloads its pool gracefully, and a pool file php-fpm
//! rejects never replaces the one that serves.

use super::*;

#[tokio::test]
async fn reloads_cost_another_tenant_no_request_and_let_running_ones_finish() {
    require_root!("reloads_cost_another_tenant_no_request_and_let_running_ones_finish");
    let (site, agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 4}})).await;
    let (a, a_domain) = make_tenant(&agent, &site, "a").await;
    let (b, b_domain) = make_tenant(&agent, &site, "b").await;
    agent.applied(&a, "ok", Duration::from_secs(3)).await;
    agent.applied(&b, "ok", Duration::from_secs(3)).await;
    let slow = script(
        &site,
        &a,
        &a_domain,
        "slow.php",
        "<?php sleep(2); echo 'slow-done';",
    );
    let hello = script(&site, &b, &b_domain, "hello.php", "<?php echo 'hello';");
    wait_for("B serves", Duration::from_secs(3), || {
        php(&site.socket(&b), &hello).is_some()
    })
    .await;

    // B under load while A's settings change twice; one of A's requests runs across a reload.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loaders = Vec::new();
    for _ in 0..3 {
        let (socket, hello, stop) = (site.socket(&b), hello.clone(), stop.clone());
        loaders.push(std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                match php(&socket, &hello) {
                    Some(out) if out.contains("hello") => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    let (socket_a, slow_a) = (site.socket(&a), slow.clone());
    let in_flight = std::thread::spawn(move || php(&socket_a, &slow_a));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b_pid = master_pid(&site, &b);
    for limit in ["96M", "112M"] {
        let (status, _) = agent
            .call(
                Method::PATCH,
                &format!("/tenants/{a}"),
                Some(json!({"php": {"memory_limit": limit}})),
            )
            .await;
        assert_eq!(status, 200);
        agent.applied(&a, "ok", Duration::from_secs(5)).await;
    }
    let slow_out = tokio::task::spawn_blocking(move || in_flight.join().unwrap())
        .await
        .unwrap();
    assert!(
        slow_out.is_some_and(|o| o.contains("slow-done")),
        "A's request running during the reload completed"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for l in loaders {
        let (o, f) = l.join().unwrap();
        ok += o;
        failed += f;
    }
    eprintln!("B under load during A's reloads: {ok} ok, {failed} failed");
    assert!(ok > 50, "the load ran ({ok} requests)");
    assert_eq!(failed, 0, "B lost requests while A reloaded");
    assert_eq!(master_pid(&site, &b), b_pid, "B's master was not touched");
    let conf = std::fs::read_to_string(site.run().join("pools").join(format!("{a}.conf"))).unwrap();
    assert!(conf.contains("php_admin_value[memory_limit] = 112M"));
    drop(agent);
}

/// A pool file php-fpm rejects (injected: lodge's own checks never produce one) leaves the
/// old pool serving and the error in the applied state.
#[tokio::test]
async fn a_pool_file_php_fpm_rejects_leaves_the_old_pool_serving() {
    require_root!("a_pool_file_php_fpm_rejects_leaves_the_old_pool_serving");
    let (site, mut agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 4}})).await;
    let (a, a_domain) = make_tenant(&agent, &site, "a").await;
    agent.applied(&a, "ok", Duration::from_secs(3)).await;
    let (status, _) = agent
        .call(
            Method::PATCH,
            &format!("/tenants/{a}"),
            Some(json!({"php": {"memory_limit": "112M"}})),
        )
        .await;
    assert_eq!(status, 200);
    agent.applied(&a, "ok", Duration::from_secs(5)).await;

    agent.stop();
    drop(agent);
    let mut agent = Agent::start(&site, Some(&format!("bad-pool:{a}"))).await;
    let (status, _) = agent
        .call(
            Method::PATCH,
            &format!("/tenants/{a}"),
            Some(json!({"php": {"memory_limit": "80M"}})),
        )
        .await;
    assert_eq!(status, 200);
    let t = agent.applied(&a, "error", Duration::from_secs(10)).await;
    assert!(
        t["applied"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("php-fpm rejected"),
        "{t}"
    );
    let still =
        std::fs::read_to_string(site.run().join("pools").join(format!("{a}.conf"))).unwrap();
    assert!(
        still.contains("php_admin_value[memory_limit] = 112M"),
        "the live file is the old one"
    );
    let hello_a = script(&site, &a, &a_domain, "hello.php", "<?php echo 'still';");
    wait_for("the old pool still serves", Duration::from_secs(5), || {
        php(&site.socket(&a), &hello_a).is_some_and(|o| o.contains("still"))
    })
    .await;
    agent.stop();
    drop(agent);
}
