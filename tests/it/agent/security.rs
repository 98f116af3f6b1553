//! The holes an outside review found, each closed and probed through the real agent as
//! root: a tenant taking another's certificate, a tenant widening its own open_basedir
//! through its pool's socket or raising what its plan caps, root writing where the panel's
//! user points it, the routes snapshot readable by all, worker stderr filling the run
//! directory.

use super::*;

/// A PHP FastCGI client in the tenant's own PHP: it asks `socket` to run `target` with
/// `open_basedir=/` set by `PHP_ADMIN_VALUE`, and prints what came back (or why not).
fn fastcgi_probe(socket: &Path, target: &Path) -> String {
    format!(
        r#"<?php
function nv($n, $v) {{ return chr(strlen($n)) . chr(strlen($v)) . $n . $v; }}
function rec($type, $body) {{
    $len = strlen($body);
    return chr(1) . chr($type) . "\x00\x01" . chr($len >> 8) . chr($len & 255) . "\x00\x00" . $body;
}}
$s = @stream_socket_client('unix://{socket}', $errno, $errstr, 2);
if ($s === false) {{ echo "probe=refused ($errstr)\n"; exit; }}
$p = nv('SCRIPT_FILENAME', '{target}') . nv('REQUEST_METHOD', 'GET')
   . nv('PHP_ADMIN_VALUE', "open_basedir=/") . nv('PHP_VALUE', "open_basedir=/");
fwrite($s, rec(1, "\x00\x01\x00\x00\x00\x00\x00\x00") . rec(4, $p) . rec(4, '') . rec(5, ''));
$out = stream_get_contents($s);
echo "probe=", strpos($out, 'root:') !== false ? "read /etc/passwd" : "nothing", "\n";
"#,
        socket = socket.display(),
        target = target.display(),
    )
}

#[tokio::test]
async fn a_tenant_cannot_reach_its_own_pool_socket_to_widen_open_basedir() {
    require_root!("a_tenant_cannot_reach_its_own_pool_socket_to_widen_open_basedir");
    let (site, agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;
    let (a, a_domain, _) = serving_tenant(&agent, &site, "a").await;
    let target = script(
        &site,
        &a,
        &a_domain,
        "passwd.php",
        "<?php echo @file_get_contents('/etc/passwd');",
    );
    let probe = script(
        &site,
        &a,
        &a_domain,
        "probe.php",
        &fastcgi_probe(&site.socket(&a), &target),
    );
    let out = php(&site.socket(&a), &probe).unwrap();
    assert!(out.contains("probe=refused"), "{out}");
    assert!(!out.contains("root:"), "{out}");
    drop(agent);
}

#[tokio::test]
async fn what_the_plan_caps_php_cannot_raise() {
    require_root!("what_the_plan_caps_php_cannot_raise");
    let (site, agent) = with_plan(json!({"name": "basic", "php": {
        "pm": "static", "max_children": 2, "memory_limit_mb": 128, "max_execution_time": 30}}))
    .await;
    let (a, a_domain, _) = serving_tenant(&agent, &site, "a").await;
    // A .user.ini asking for more, beside the script.
    std::fs::write(
        site.docroot(&a, &a_domain).join(".user.ini"),
        "memory_limit = 8G\nmax_execution_time = 9999\n",
    )
    .unwrap();
    let raise = script(
        &site,
        &a,
        &a_domain,
        "raise.php",
        r#"<?php
$set = ini_set('memory_limit', '8G');
echo "set=", var_export($set, true), "\n";
echo "memory=", ini_get('memory_limit'), "\n";
set_time_limit(9999);
echo "time=", ini_get('max_execution_time'), "\n";
"#,
    );
    let out = php(&site.socket(&a), &raise).unwrap();
    assert!(out.contains("set=false"), "{out}");
    assert!(out.contains("memory=128M"), "{out}");
    assert!(out.contains("time=30"), "{out}");
    drop(agent);
}

#[tokio::test]
async fn a_lookalike_domain_takes_no_other_vhosts_certificate() {
    require_root!("a_lookalike_domain_takes_no_other_vhosts_certificate");
    let (site, agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;
    let https = agent.proxy("https").await;
    let port = port_of(&https);
    let a = site.tenant("a");
    let b = site.tenant("b");
    for t in [&a, &b] {
        let (status, body) = agent
            .post("/tenants", json!({"name": t, "plan": "basic"}))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let victim = format!("shop.{a}.test");
    let (status, body) = agent
        .post(
            &format!("/tenants/{a}/vhosts"),
            json!({"domain": victim, "tls_mode": "self-signed"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // B's vhost ends in `.self`, and uploads a pair of its own for it: once, this wrote
    // the files A's self-signed certificate is served from.
    let lookalike = format!("{victim}.self");
    let (cert, key) = test_certificate(&[&lookalike]);
    let (status, body) = agent
        .post(
            &format!("/tenants/{b}/vhosts"),
            json!({"domain": lookalike, "tls_mode": "custom", "tls_certificate": cert, "tls_key": key}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    agent.applied(&b, "ok", Duration::from_secs(5)).await;
    agent.applied(&a, "ok", Duration::from_secs(5)).await;
    let resolve = format!("{victim}:{port}:127.0.0.1");
    let url = format!("https://{victim}:{port}/");
    let (_, err) = curl(&["-kv", "--resolve", &resolve, &url]);
    let subject = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("*  subject:").map(str::trim))
        .unwrap_or_else(|| panic!("no certificate subject in {err}"));
    assert!(subject.contains(&victim), "{subject}");
    assert!(
        !subject.contains(".self"),
        "B's certificate served for A: {subject}"
    );
    // Files by vhost id only, and B's key gone with its vhost.
    let tls = site.run().join("tls");
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert!(
        names(&tls)
            .iter()
            .all(|n| n.starts_with(|c: char| c.is_ascii_digit())),
        "{:?}",
        names(&tls)
    );
    let before = names(&tls).iter().filter(|n| n.ends_with(".key")).count();
    let (status, _) = agent
        .call(Method::DELETE, &format!("/vhosts/{lookalike}"), None)
        .await;
    assert_eq!(status, 204);
    agent.applied(&b, "ok", Duration::from_secs(5)).await;
    wait_for(
        "the deleted vhost's key removed",
        Duration::from_secs(5),
        || names(&tls).iter().filter(|n| n.ends_with(".key")).count() == before - 1,
    )
    .await;
    drop(agent);
}

#[tokio::test]
async fn root_writes_nothing_where_the_panels_user_points_it() {
    require_root!("root_writes_nothing_where_the_panels_user_points_it");
    let (site, agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;
    let (a, _) = make_tenant(&agent, &site, "a").await;
    agent.applied(&a, "ok", Duration::from_secs(5)).await;
    // As the panel's user would: `archives` in the data directory pointing at a directory
    // root cares about.
    let victim = site.base.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    let planted = site.data().join("archives");
    let _ = std::fs::remove_dir_all(&planted);
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let (status, _) = agent
        .call(Method::DELETE, &format!("/tenants/{a}"), None)
        .await;
    assert_eq!(status, 204);
    let archives = site.base.join("data-agent").join("archives");
    wait_for(
        "the archive in the agent's own directory",
        Duration::from_secs(15),
        || {
            std::fs::read_dir(&archives)
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with(&a))
                })
                .unwrap_or(false)
        },
    )
    .await;
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "root wrote where the link pointed"
    );
    let meta = std::fs::metadata(&victim).unwrap();
    assert_eq!(
        meta.mode() & 0o7777,
        0o755,
        "root changed the link's target"
    );
    // The agent directory is root's alone.
    let agent_dir = std::fs::metadata(site.base.join("data-agent")).unwrap();
    assert_eq!((agent_dir.uid(), agent_dir.mode() & 0o777), (0, 0o700));
    drop(agent);
}

#[tokio::test]
async fn the_routes_snapshot_is_the_proxys_alone_and_stderr_is_not_kept() {
    require_root!("the_routes_snapshot_is_the_proxys_alone_and_stderr_is_not_kept");
    let (site, agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;
    let (a, a_domain, _) = serving_tenant(&agent, &site, "a").await;
    let routes = std::fs::metadata(site.run().join("routes.json")).unwrap();
    assert_eq!(
        (routes.uid(), routes.gid(), routes.mode() & 0o777),
        (0, ids("lodge-www").1, 0o640)
    );
    // A script writing a megabyte to stderr: nothing of it in the run directory.
    let master_log = site.run().join("pools").join(format!("{a}.log"));
    let before = std::fs::metadata(&master_log).map(|m| m.len()).unwrap_or(0);
    let noisy = script(
        &site,
        &a,
        &a_domain,
        "noisy.php",
        "<?php $e = fopen('php://stderr', 'w'); for ($i = 0; $i < 1024; $i++) fwrite($e, str_repeat('x', 1023) . \"\\n\"); echo 'done';",
    );
    assert!(php(&site.socket(&a), &noisy).is_some_and(|o| o.contains("done")));
    let after = std::fs::metadata(&master_log).map(|m| m.len()).unwrap_or(0);
    assert!(
        after - before < 64 * 1024,
        "the master's log grew by {}",
        after - before
    );
    drop(agent);
}

#[tokio::test]
async fn removing_a_tenant_with_a_huge_sparse_file_holds_up_no_other_tenant() {
    require_root!("removing_a_tenant_with_a_huge_sparse_file_holds_up_no_other_tenant");
    let (site, agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;
    let (a, a_domain) = make_tenant(&agent, &site, "a").await;
    let (b, _) = make_tenant(&agent, &site, "b").await;
    agent.applied(&a, "ok", Duration::from_secs(5)).await;
    agent.applied(&b, "ok", Duration::from_secs(5)).await;
    // What a tenant can leave with one ftruncate: 8 TiB of nothing.
    let huge = site.docroot(&a, &a_domain).join("huge.bin");
    let f = std::fs::File::create(&huge).unwrap();
    f.set_len(8 << 40).unwrap();
    drop(f);
    let (status, _) = agent
        .call(Method::DELETE, &format!("/tenants/{a}"), None)
        .await;
    assert_eq!(status, 204);
    // Another tenant's change is applied while the removal runs.
    let (status, _) = agent
        .call(
            Method::PATCH,
            &format!("/tenants/{b}"),
            Some(json!({"php": {"memory_limit": "64M"}})),
        )
        .await;
    assert_eq!(status, 200);
    agent.applied(&b, "ok", Duration::from_secs(5)).await;
    let archives = site.base.join("data-agent").join("archives");
    wait_for(
        "the removal done, its archive made",
        Duration::from_secs(30),
        || {
            nix::unistd::User::from_name(&a).unwrap().is_none()
                && std::fs::read_dir(&archives)
                    .map(|d| {
                        d.flatten()
                            .any(|e| e.file_name().to_string_lossy().starts_with(&a))
                    })
                    .unwrap_or(false)
        },
    )
    .await;
    let archive = std::fs::read_dir(&archives)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&a))
        .unwrap();
    assert!(
        archive.metadata().unwrap().len() < 1 << 20,
        "the hole was archived as a hole"
    );
    drop(agent);
}

#[tokio::test]
async fn the_home_is_roots_and_what_lies_in_the_tenants_own_directories_is_the_tenants() {
    require_root!("the_home_is_roots_and_what_lies_in_the_tenants_own_directories_is_the_tenants");
    let (site, agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;
    let (a, a_domain) = make_tenant(&agent, &site, "a").await;
    agent.applied(&a, "ok", Duration::from_secs(5)).await;
    let (uid, gid) = ids(&a);
    let www = ids("lodge-www").1;
    let home = std::fs::metadata(site.tenants().join(&a)).unwrap();
    assert_eq!(
        (home.uid(), home.gid(), home.mode() & 0o7777),
        (0, gid, 0o751)
    );
    for dir in [
        site.tenants().join(&a).join("sites").join(&a_domain),
        site.docroot(&a, &a_domain),
    ] {
        let m = std::fs::metadata(&dir).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (uid, www, 0o2750),
            "{}",
            dir.display()
        );
    }
    // The tenant cannot add anything to its home's top, nor rename what lodge keeps there.
    let probe = script(
        &site,
        &a,
        &a_domain,
        "top.php",
        &format!(
            "<?php echo @file_put_contents('{home}/mine.txt', 'x') === false ? 'refused' : 'wrote', ' ', @rename('{home}/logs', '{home}/moved') ? 'renamed' : 'kept';",
            home = site.tenants().join(&a).display()
        ),
    );
    let out = php(&site.socket(&a), &probe).unwrap();
    assert!(out.ends_with("refused kept"), "{out}");
    drop(agent);
}
