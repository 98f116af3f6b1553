//! A tenant's life through the API: made and serving PHP as its own UID, suspended and
//! unsuspended, checked for health, deleted without leaving anything behind.

use super::*;

/// The plan these tests use: two static workers per pool.
fn two_workers() -> Value {
    json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})
}

#[tokio::test]
async fn a_new_tenant_serves_php_as_its_own_uid_within_2_s() {
    require_root!("a_new_tenant_serves_php_as_its_own_uid_within_2_s");
    let (site, agent) = with_plan(two_workers()).await;
    let started = Instant::now();
    let (a, a_domain) = make_tenant(&agent, &site, "a").await;
    let t = agent.applied(&a, "ok", Duration::from_secs(2)).await;
    let id_script = id_script(&site, &a, &a_domain);
    wait_for(
        "PHP answers on the new socket",
        Duration::from_secs(2),
        || php(&site.socket(&a), &id_script).is_some(),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "first PHP response after {:?}",
        started.elapsed()
    );
    let out = php(&site.socket(&a), &id_script).unwrap();
    assert!(out.contains(&format!("euid={}", t["uid"])), "{out}");
    assert_eq!(ids(&a).0 as i64, t["uid"].as_i64().unwrap());
    drop(agent);
}

#[tokio::test]
async fn suspend_stops_the_pool_and_unsuspend_brings_it_back() {
    require_root!("suspend_stops_the_pool_and_unsuspend_brings_it_back");
    let (site, agent) = with_plan(two_workers()).await;
    let (a, a_domain, id_script) = serving_tenant(&agent, &site, "a").await;
    let (status, _) = agent
        .post(&format!("/tenants/{a}/suspend"), json!({}))
        .await;
    assert_eq!(status, 200);
    agent.applied(&a, "ok", Duration::from_secs(5)).await;
    wait_for(
        "no process of the suspended tenant",
        Duration::from_secs(10),
        || processes_of(ids(&a).0) == 0,
    )
    .await;
    assert!(!site.socket(&a).exists(), "the socket is gone");
    let (_, vhost) = agent
        .call(Method::GET, &format!("/vhosts/{a_domain}"), None)
        .await;
    assert_eq!(vhost["state"], "suspended");
    let (status, _) = agent
        .post(&format!("/tenants/{a}/unsuspend"), json!({}))
        .await;
    assert_eq!(status, 200);
    agent.applied(&a, "ok", Duration::from_secs(5)).await;
    wait_for("PHP again after unsuspend", Duration::from_secs(3), || {
        php(&site.socket(&a), &id_script).is_some()
    })
    .await;
    drop(agent);
}

/// The agent pings the pool and reads its status page (lodge's FastCGI client) and the
/// tenant's cgroup, whose limits come from the plan.
#[tokio::test]
async fn health_reports_the_pool_and_the_cgroup_limits_of_the_plan() {
    require_root!("health_reports_the_pool_and_the_cgroup_limits_of_the_plan");
    let (site, agent) = with_plan(two_workers()).await;
    let (a, _, _) = serving_tenant(&agent, &site, "a").await;
    let deadline = Instant::now() + Duration::from_secs(25);
    let health = loop {
        let (status, h) = agent
            .call(Method::GET, &format!("/tenants/{a}/health"), None)
            .await;
        assert_eq!(status, 200);
        if h["health"]["ok"] == true && h["health"]["total_processes"].as_i64().unwrap_or(0) >= 1 {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "no healthy check within 25 s: {h}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(health["health"]["ping_ms"].as_f64().unwrap() > 0.0);
    let pids_max = ["/sys/fs/cgroup/pids/lodge", "/sys/fs/cgroup/lodge"]
        .iter()
        .map(|root| Path::new(root).join(&a).join("pids.max"))
        .find(|p| p.exists());
    if let Some(pids_max) = pids_max {
        assert_eq!(
            std::fs::read_to_string(pids_max).unwrap().trim(),
            "64",
            "the plan's process limit"
        );
        assert!(
            health["health"]["usage"]["processes"].as_i64().unwrap_or(0) >= 1,
            "{health}"
        );
    } else {
        eprintln!("no pids cgroup controller here: the cgroup part is not checked");
    }
    let (_, t) = agent
        .call(Method::GET, &format!("/tenants/{a}"), None)
        .await;
    assert_eq!(t["fpm_socket"], site.socket(&a).to_str().unwrap());
    drop(agent);
}

#[tokio::test]
async fn delete_stops_the_pool_archives_the_home_and_keeps_the_uid_reserved() {
    require_root!("delete_stops_the_pool_archives_the_home_and_keeps_the_uid_reserved");
    let (site, agent) = with_plan(two_workers()).await;
    let (b, _, _) = serving_tenant(&agent, &site, "b").await;
    let uid = ids(&b).0;
    let (status, _) = agent
        .call(Method::DELETE, &format!("/tenants/{b}"), None)
        .await;
    assert_eq!(status, 204);
    wait_for(
        "the user and group removed",
        Duration::from_secs(10),
        || {
            nix::unistd::User::from_name(&b).unwrap().is_none()
                && nix::unistd::Group::from_name(&b).unwrap().is_none()
        },
    )
    .await;
    assert_eq!(processes_of(uid), 0, "no process left");
    assert!(!site.socket(&b).exists(), "no socket left");
    assert!(!site.tenants().join(&b).exists(), "no home left");
    let archives: Vec<String> = std::fs::read_dir(site.base.join("data-agent").join("archives"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        archives.iter().any(|n| n.starts_with(&format!("{b}-"))),
        "archived: {archives:?}"
    );
    let (status, again) = agent
        .post("/tenants", json!({"name": b, "plan": "basic"}))
        .await;
    assert_eq!(status, 201, "{again}");
    assert_ne!(
        again["uid"].as_u64().unwrap() as u32,
        uid,
        "a new tenant never gets the old UID"
    );
    drop(agent);
}
