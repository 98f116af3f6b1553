//! Sites outlive the agent: `kill -9` of the agent under load costs no request and the
//! next agent adopts the masters and the proxy (same processes); a plan change right after
//! reloads that tenant's master alone; a changed proxy setting brings a new proxy on the
//! same sockets while the old one drains, without a failed request; a record that names
//! another process is left alone. And applied means served: a vhost whose tenant is `ok`
//! answers the very next request.

use super::*;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// One GET through the proxy on a fresh connection: `Some(status, body)`, or `None` when
/// the connection failed.
async fn get(base: &str, host: &str, path: &str) -> Result<(u16, String), String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let r = client
        .get(format!("{base}{path}"))
        .header("host", host)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = r.status().as_u16();
    Ok((status, r.text().await.map_err(|e| e.to_string())?))
}

/// Requests `path` of each site over and over until `stop`: (answered as expected, failed).
fn load(
    http: &str,
    sites: &[(String, String)],
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(u32, Vec<String>)>> {
    sites
        .iter()
        .map(|(domain, expect)| {
            let (http, domain, expect, stop) = (
                http.to_owned(),
                domain.clone(),
                expect.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match get(&http, &domain, "/who.php").await {
                        Ok((200, body)) if body == expect => ok += 1,
                        other => failed.push(format!("{other:?}")),
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

async fn finish(loaders: Vec<tokio::task::JoinHandle<(u32, Vec<String>)>>) -> (u32, Vec<String>) {
    let (mut ok, mut failed) = (0, Vec::new());
    for l in loaders {
        let (o, f) = l.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    (ok, failed)
}

/// Two tenants whose `who.php` says who they are, served through the proxy.
async fn two_sites(agent: &Agent, site: &Site) -> (Vec<(String, String)>, Vec<String>, String) {
    let http = agent.proxy("http").await;
    let mut sites = Vec::new();
    let mut tenants = Vec::new();
    for short in ["a", "b"] {
        let (tenant, domain, _) = serving_tenant(agent, site, short).await;
        script(
            site,
            &tenant,
            &domain,
            "who.php",
            &format!("<?php echo '{tenant}';"),
        );
        until_served(&http, &domain, "/who.php").await;
        sites.push((domain, tenant.clone()));
        tenants.push(tenant);
    }
    (sites, tenants, http)
}

fn proxy_pid(site: &Site) -> i32 {
    let record = std::fs::read_to_string(site.run().join("pids").join("proxy.json")).unwrap();
    serde_json::from_str::<Value>(&record).unwrap()["pid"]
        .as_i64()
        .unwrap() as i32
}

fn kill9(agent: &mut Agent) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = agent.child.wait();
}

#[tokio::test]
async fn a_killed_agent_costs_no_request_and_the_next_one_adopts_everything() {
    require_root!("a_killed_agent_costs_no_request_and_the_next_one_adopts_everything");
    let (site, mut agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;
    let (sites, tenants, http) = two_sites(&agent, &site).await;
    let masters: Vec<Vec<i32>> = tenants.iter().map(|t| masters_of(&site, t)).collect();
    let proxy = proxy_pid(&site);
    let stop = Arc::new(AtomicBool::new(false));
    let loaders = load(&http, &sites, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    kill9(&mut agent);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let agent = Agent::start(&site, None).await;
    for t in &tenants {
        agent.applied(t, "ok", Duration::from_secs(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = finish(loaders).await;
    assert!(ok > 20, "the load ran ({ok} requests)");
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let after: Vec<Vec<i32>> = tenants.iter().map(|t| masters_of(&site, t)).collect();
    assert_eq!(after, masters, "the same masters, adopted");
    assert_eq!(proxy_pid(&site), proxy, "the same proxy, adopted");

    // A plan change right after the restart reloads that tenant's master alone.
    let conf = |t: &str| site.run().join("pools").join(format!("{t}.conf"));
    let b_conf = std::fs::read_to_string(conf(&tenants[1])).unwrap();
    let (status, _) = agent
        .call(
            Method::PATCH,
            &format!("/tenants/{}", tenants[0]),
            Some(json!({"php": {"memory_limit": "96M"}})),
        )
        .await;
    assert_eq!(status, 200);
    agent
        .applied(&tenants[0], "ok", Duration::from_secs(5))
        .await;
    let limit = script(
        &site,
        &tenants[0],
        &sites[0].0,
        "limit.php",
        "<?php echo ini_get('memory_limit');",
    );
    wait_for(
        "A's master serves the new value",
        Duration::from_secs(5),
        || php(&site.socket(&tenants[0]), &limit).is_some_and(|o| o.contains("96M")),
    )
    .await;
    assert_eq!(std::fs::read_to_string(conf(&tenants[1])).unwrap(), b_conf);
    assert_eq!(
        masters_of(&site, &tenants[1]),
        masters[1],
        "B's master untouched"
    );
    drop(agent);
}

#[tokio::test]
async fn a_changed_proxy_setting_brings_a_new_proxy_while_the_old_one_drains() {
    require_root!("a_changed_proxy_setting_brings_a_new_proxy_while_the_old_one_drains");
    let (site, mut agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;
    let (sites, tenants, http) = two_sites(&agent, &site).await;
    let old = proxy_pid(&site);
    let stop = Arc::new(AtomicBool::new(false));
    let loaders = load(&http, &sites, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    kill9(&mut agent);
    // The proxy's number of event loops is a setting it gets from the agent.
    let agent = Agent::start_with(&site, None, &[("LODGE_PROXY_THREADS", "1")]).await;
    for t in &tenants {
        agent.applied(t, "ok", Duration::from_secs(5)).await;
    }
    let new = proxy_pid(&site);
    assert_ne!(new, old, "a new proxy");
    wait_for(
        "the old proxy drained and ended",
        Duration::from_secs(30),
        || !Path::new(&format!("/proc/{old}")).exists(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = finish(loaders).await;
    assert!(ok > 20, "the load ran ({ok} requests)");
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let environ = std::fs::read(format!("/proc/{new}/environ")).unwrap();
    assert!(String::from_utf8_lossy(&environ).contains("LODGE_PROXY_THREADS=1"));
    drop(agent);
}

#[tokio::test]
async fn a_record_naming_another_process_is_left_alone() {
    require_root!("a_record_naming_another_process_is_left_alone");
    let (site, mut agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;
    let (tenant, _) = make_tenant(&agent, &site, "a").await;
    agent.applied(&tenant, "ok", Duration::from_secs(5)).await;
    agent.stop();
    drop(agent);
    // An unrelated process, and records that name it: one with another start time (a pid
    // the kernel handed out again), one with its start time but another program.
    let mut decoy = Command::new("/bin/sleep").arg("60").spawn().unwrap();
    let pid = decoy.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start: u64 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let pids = site.run().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let record =
        |start: u64, exe: &str| json!({"pid": pid, "start": start, "exe": exe}).to_string();
    std::fs::write(
        pids.join(format!("fpm-{tenant}.json")),
        record(start + 1, "/usr/sbin/php-fpm8.2"),
    )
    .unwrap();
    std::fs::write(
        pids.join("proxy.json"),
        record(start, "/usr/sbin/php-fpm8.2"),
    )
    .unwrap();
    let agent = Agent::start(&site, None).await;
    agent.applied(&tenant, "ok", Duration::from_secs(5)).await;
    wait_for("the tenant's own master", Duration::from_secs(5), || {
        masters_of(&site, &tenant).len() == 1
    })
    .await;
    assert!(
        decoy.try_wait().unwrap().is_none(),
        "the unrelated process was signalled"
    );
    let _ = decoy.kill();
    let _ = decoy.wait();
    drop(agent);
}

#[tokio::test]
async fn a_vhost_is_served_by_the_time_its_tenant_is_ok() {
    require_root!("a_vhost_is_served_by_the_time_its_tenant_is_ok");
    let (site, agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;
    let http = agent.proxy("http").await;
    let (tenant, domain) = make_tenant(&agent, &site, "a").await;
    agent.applied(&tenant, "ok", Duration::from_secs(5)).await;
    // Not a poll: the first request after `ok` finds the site (a 404 would be lodge's
    // page for a host the proxy does not know yet).
    let (status, _) = get(&http, &domain, "/").await.unwrap();
    assert_ne!(status, 404, "the vhost was not routed yet");
    for n in 0..3 {
        let extra = format!("{tenant}n{n}.example");
        let (status, body) = agent
            .post(
                &format!("/tenants/{tenant}/vhosts"),
                json!({"domain": extra}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        agent.applied(&tenant, "ok", Duration::from_secs(5)).await;
        std::fs::write(site.docroot(&tenant, &extra).join("here.txt"), "here").unwrap();
        let (status, body) = get(&http, &extra, "/here.txt").await.unwrap();
        assert_eq!((status, body.as_str()), (200, "here"), "vhost {n}");
    }
    drop(agent);
}

#[tokio::test]
async fn an_upgraded_binary_replaces_the_proxy_without_a_failed_request() {
    require_root!("an_upgraded_binary_replaces_the_proxy_without_a_failed_request");
    // The binary lodge runs from, replaced by a new file as a package upgrade does.
    let site = Site::new();
    let bin = site.base.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let lodge = bin.join("lodge");
    std::fs::copy(env!("CARGO_BIN_EXE_lodge"), &lodge).unwrap();
    let mut agent = Agent::start_binary(&site, None, &[], &lodge).await;
    let (status, body) = agent
        .post(
            "/plans",
            json!({"name": "basic", "php": {"pm": "static", "max_children": 2}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (sites, tenants, http) = two_sites(&agent, &site).await;
    let masters: Vec<Vec<i32>> = tenants.iter().map(|t| masters_of(&site, t)).collect();
    let old = proxy_pid(&site);
    let stop = Arc::new(AtomicBool::new(false));
    let loaders = load(&http, &sites, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The upgrade: a new file in the binary's place, then the service restarted (SIGQUIT:
    // the agent leaves the sites serving).
    let fresh = bin.join("lodge.new");
    std::fs::copy(env!("CARGO_BIN_EXE_lodge"), &fresh).unwrap();
    std::fs::rename(&fresh, &lodge).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGQUIT,
    )
    .unwrap();
    let _ = agent.child.wait();
    let agent = Agent::start_binary(&site, None, &[], &lodge).await;
    for t in &tenants {
        agent.applied(t, "ok", Duration::from_secs(5)).await;
    }
    assert_ne!(proxy_pid(&site), old, "the new binary's proxy");
    wait_for(
        "the old proxy drained and ended",
        Duration::from_secs(30),
        || !Path::new(&format!("/proc/{old}")).exists(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = finish(loaders).await;
    assert!(ok > 20, "the load ran ({ok} requests)");
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let after: Vec<Vec<i32>> = tenants.iter().map(|t| masters_of(&site, t)).collect();
    assert_eq!(after, masters, "the masters were adopted, not restarted");
    drop(agent);
}
