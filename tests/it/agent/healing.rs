//! What dies comes back: a killed php-fpm master, a killed panel, and the agent itself,
//! killed outright (its next start adopts the masters it left) or aborted in the middle of
//! an apply, which converges on its next start without orphans or duplicates.

use super::*;

#[tokio::test]
async fn a_master_killed_with_sigkill_is_replaced_within_3_s() {
    require_root!("a_master_killed_with_sigkill_is_replaced_within_3_s");
    let (site, agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;
    let (a, _, id_script) = serving_tenant(&agent, &site, "a").await;
    let old = master_pid(&site, &a).expect("a pid file");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    wait_for("a new master serving", Duration::from_secs(3), || {
        master_pid(&site, &a).is_some_and(|p| p != old)
            && php(&site.socket(&a), &id_script).is_some()
    })
    .await;
    eprintln!("master of {a} healed in {:?}", killed.elapsed());
    drop(agent);
}

#[tokio::test]
async fn the_supervisor_restarts_a_killed_panel_as_lodge() {
    require_root!("the_supervisor_restarts_a_killed_panel_as_lodge");
    let site = Site::new();
    let agent = Agent::start(&site, None).await;
    let agent_pid = agent.child.id() as i32;
    let panel = panel_pid(agent_pid).expect("the panel runs as a child of the agent");
    assert_eq!(
        std::fs::metadata(format!("/proc/{panel}")).unwrap().uid(),
        ids("lodge").0,
        "the panel runs as lodge"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(panel),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("a new panel", Duration::from_secs(3), || {
        panel_pid(agent_pid).is_some_and(|p| p != panel)
    })
    .await;
    drop(agent);
}

#[tokio::test]
async fn a_killed_agent_leaves_its_master_and_the_next_start_adopts_it() {
    require_root!("a_killed_agent_leaves_its_master_and_the_next_start_adopts_it");
    let (site, mut agent) = with_plan(json!({"name": "basic"})).await;
    let (tenant, _) = make_tenant(&agent, &site, "a").await;
    agent.applied(&tenant, "ok", Duration::from_secs(5)).await;
    wait_for("one master", Duration::from_secs(5), || {
        masters_of(&site, &tenant).len() == 1
    })
    .await;
    let old = masters_of(&site, &tenant)[0];

    // The agent dies without cleaning up: its master is left running.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = agent.child.wait();
    assert_eq!(
        masters_of(&site, &tenant),
        vec![old],
        "the master outlives the agent"
    );
    drop(agent);

    // The next agent adopts the master it finds (same process, no duplicate) ...
    let agent = Agent::start(&site, None).await;
    agent.applied(&tenant, "ok", Duration::from_secs(5)).await;
    assert_eq!(
        masters_of(&site, &tenant),
        vec![old],
        "the master is adopted"
    );
    // ... and supervises it as its own: killed, it is started again.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(
        "a new master for the adopted one",
        Duration::from_secs(5),
        || {
            let now = masters_of(&site, &tenant);
            now.len() == 1 && now[0] != old
        },
    )
    .await;
    let (status, _) = agent
        .call(Method::DELETE, &format!("/tenants/{tenant}"), None)
        .await;
    assert_eq!(status, 204);
    wait_for("cleanup", Duration::from_secs(10), || {
        masters_of(&site, &tenant).is_empty()
            && nix::unistd::User::from_name(&tenant).unwrap().is_none()
    })
    .await;
    drop(agent);
}

#[tokio::test]
async fn an_agent_killed_mid_apply_converges_on_its_next_start() {
    require_root!("an_agent_killed_mid_apply_converges_on_its_next_start");
    let site = Site::new();
    let tenant = site.tenant("a");
    let mut agent = Agent::start(&site, Some(&format!("after-home:{tenant}"))).await;
    assert_eq!(agent.post("/plans", json!({"name": "basic"})).await.0, 201);
    let (status, _) = agent
        .post("/tenants", json!({"name": tenant, "plan": "basic"}))
        .await;
    assert_eq!(status, 201);
    // The agent aborts after the user and the home, before the pool.
    wait_for(
        "the agent to abort at the fault point",
        Duration::from_secs(10),
        || matches!(agent.child.try_wait(), Ok(Some(_))),
    )
    .await;
    assert!(
        nix::unistd::User::from_name(&tenant).unwrap().is_some(),
        "the user was made before the fault"
    );
    assert!(!site.socket(&tenant).exists(), "no pool yet");
    drop(agent);

    let agent = Agent::start(&site, None).await;
    agent.applied(&tenant, "ok", Duration::from_secs(5)).await;
    wait_for("the pool after the restart", Duration::from_secs(3), || {
        site.socket(&tenant).exists()
    })
    .await;
    let (status, _) = agent
        .call(Method::DELETE, &format!("/tenants/{tenant}"), None)
        .await;
    assert_eq!(status, 204);
    wait_for("cleanup", Duration::from_secs(10), || {
        nix::unistd::User::from_name(&tenant).unwrap().is_none()
    })
    .await;
    drop(agent);
}
