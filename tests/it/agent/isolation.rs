//! What one tenant's PHP can reach: not the system's files, not another tenant's files or
//! socket; and what the agent does with symlinks a tenant plants in its home.

use super::*;

#[tokio::test]
async fn a_tenant_cannot_read_system_files_other_tenants_or_their_sockets() {
    require_root!("a_tenant_cannot_read_system_files_other_tenants_or_their_sockets");
    let (site, agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;
    let (a, a_domain, _) = serving_tenant(&agent, &site, "a").await;
    let (b, b_domain) = make_tenant(&agent, &site, "b").await;
    agent.applied(&b, "ok", Duration::from_secs(3)).await;
    let secret = script(&site, &b, &b_domain, "secret.php", "<?php // b's secret");
    let spy_body = format!(
        r#"<?php
echo "passwd=", @file_get_contents('/etc/passwd') === false ? "denied" : "read", "\n";
echo "other=", @file_get_contents('{}') === false ? "denied" : "read", "\n";
echo "listing=", @scandir('{}') === false ? "denied" : "read", "\n";
$s = @stream_socket_client('unix://{}', $errno, $errstr, 1);
echo "socket=", $s === false ? "denied" : "connected", "\n";
"#,
        secret.display(),
        site.tenants().join(&b).display(),
        site.socket(&b).display()
    );
    let spy = script(&site, &a, &a_domain, "spy.php", &spy_body);
    let out = php(&site.socket(&a), &spy).unwrap();
    for line in [
        "passwd=denied",
        "other=denied",
        "listing=denied",
        "socket=denied",
    ] {
        assert!(out.contains(line), "{line} expected in {out}");
    }
    // The sockets: 0660, lodge-www's alone (not even the tenant may connect to its own).
    let meta = std::fs::metadata(site.socket(&a)).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!(meta.uid(), ids("lodge-www").0);
    assert_eq!(
        meta.gid(),
        nix::unistd::Group::from_name("lodge-www")
            .unwrap()
            .unwrap()
            .gid
            .as_raw()
    );
    drop(agent);
}

/// A symlink planted where the agent chowns and chmods leaves its target untouched.
#[tokio::test]
async fn symlinks_planted_in_a_home_leave_their_targets_untouched() {
    require_root!("symlinks_planted_in_a_home_leave_their_targets_untouched");
    let (site, agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;
    let (a, _) = make_tenant(&agent, &site, "a").await;
    agent.applied(&a, "ok", Duration::from_secs(3)).await;
    let shadow = std::fs::metadata("/etc/shadow").unwrap();
    let logs = site.tenants().join(&a).join("logs");
    std::fs::remove_dir_all(&logs).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", &logs).unwrap();
    let tmp = site.tenants().join(&a).join("tmp");
    std::fs::remove_dir_all(&tmp).unwrap();
    std::os::unix::fs::symlink("/etc", &tmp).unwrap();
    let (status, _) = agent
        .call(
            Method::PATCH,
            &format!("/tenants/{a}"),
            Some(json!({"php": {"memory_limit": "64M"}})),
        )
        .await;
    assert_eq!(status, 200);
    agent.applied(&a, "ok", Duration::from_secs(5)).await;
    let after = std::fs::metadata("/etc/shadow").unwrap();
    assert_eq!(
        (after.uid(), after.gid(), after.mode()),
        (shadow.uid(), shadow.gid(), shadow.mode()),
        "/etc/shadow changed"
    );
    let etc = std::fs::metadata("/etc").unwrap();
    assert_eq!((etc.uid(), etc.mode() & 0o7777), (0, 0o755), "/etc changed");
    assert!(
        std::fs::symlink_metadata(&logs).unwrap().is_dir(),
        "logs is a real directory again"
    );
    drop(agent);
}
