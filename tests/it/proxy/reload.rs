//! The routes snapshot swapped while the proxy runs, as the agent does on every change: a
//! vhost added, one removed, one changed, a certificate added; and an entry that does not
//! check out left out without costing the others. Each waits for the new behaviour by
//! asking again, never for a fixed time.

use super::*;

/// A static vhost (PHP off) whose `hello.txt` says its domain.
fn static_vhost(sandbox: &Sandbox, domain: &str) -> Value {
    sandbox.write(domain, "hello.txt", domain);
    let mut vhost = sandbox.vhost(domain);
    vhost["php"] = json!(false);
    vhost
}

/// Publishes `vhosts` and asks with `ask` until it says the new behaviour is there (an
/// `Err` says what it saw instead), for at most 5 s. Run alone, the proxy finds a new
/// file by looking at it every second (no agent tells it over the control socket).
async fn publish_until<F, Fut>(
    sandbox: &Sandbox,
    generation: i64,
    vhosts: &[Value],
    what: &str,
    mut ask: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    sandbox.publish(generation, vhosts);
    loop {
        let seen = match ask().await {
            Ok(()) => return,
            Err(seen) => seen,
        };
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what} within 5 s; last seen: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `Ok` when `host` answers `path` with `status`, else what it answered.
async fn answers(proxy: &Proxy, host: &str, path: &str, status: u16) -> Result<(), String> {
    let r = proxy.get(host, path).await;
    if r.status == status {
        Ok(())
    } else {
        Err(format!("{} {}", r.status, r.body))
    }
}

#[tokio::test]
async fn a_vhost_added_to_the_snapshot_is_served_without_a_restart() {
    let sandbox = Sandbox::new();
    let one = static_vhost(&sandbox, "one.example");
    sandbox.publish(1, std::slice::from_ref(&one));
    let proxy = Proxy::start(&sandbox).await;
    assert_eq!(proxy.get("two.example", "/hello.txt").await.status, 404);
    let two = static_vhost(&sandbox, "two.example");
    publish_until(&sandbox, 2, &[one, two], "the new vhost served", || {
        answers(&proxy, "two.example", "/hello.txt", 200)
    })
    .await;
    let r = proxy.get("two.example", "/hello.txt").await;
    assert_eq!(r.body, "two.example");
    let r = proxy.get("one.example", "/hello.txt").await;
    assert_eq!((r.status, r.body.as_str()), (200, "one.example"));
}

#[tokio::test]
async fn a_vhost_removed_from_the_snapshot_becomes_an_unknown_host() {
    let sandbox = Sandbox::new();
    let one = static_vhost(&sandbox, "one.example");
    let two = static_vhost(&sandbox, "two.example");
    sandbox.publish(1, &[one.clone(), two]);
    let proxy = Proxy::start(&sandbox).await;
    assert_eq!(proxy.get("two.example", "/hello.txt").await.status, 200);
    publish_until(&sandbox, 2, &[one], "the vhost gone", || {
        answers(&proxy, "two.example", "/hello.txt", 404)
    })
    .await;
    let r = proxy.get("two.example", "/hello.txt").await;
    assert!(r.body.contains("No site here"), "{}", r.body);
    assert_eq!(proxy.get("one.example", "/hello.txt").await.status, 200);
}

#[tokio::test]
async fn a_changed_entry_takes_effect_without_a_restart() {
    let sandbox = Sandbox::new();
    let mut one = static_vhost(&sandbox, "one.example");
    sandbox.publish(1, std::slice::from_ref(&one));
    let proxy = Proxy::start(&sandbox).await;
    assert_eq!(proxy.get("one.example", "/hello.txt").await.status, 200);
    one["suspended"] = json!(true);
    publish_until(&sandbox, 2, std::slice::from_ref(&one), "suspended", || {
        answers(&proxy, "one.example", "/hello.txt", 503)
    })
    .await;
    one["suspended"] = json!(false);
    one["names"] = json!(["one.example", "alias.example"]);
    publish_until(
        &sandbox,
        3,
        std::slice::from_ref(&one),
        "the new alias",
        || answers(&proxy, "alias.example", "/hello.txt", 200),
    )
    .await;
    let r = proxy.get("alias.example", "/hello.txt").await;
    assert_eq!(r.body, "one.example");
    assert_eq!(proxy.get("one.example", "/hello.txt").await.status, 200);
}

#[tokio::test]
async fn a_certificate_added_to_the_snapshot_is_served_without_a_restart() {
    let sandbox = Sandbox::new();
    let mut one = static_vhost(&sandbox, "one.example");
    sandbox.publish(1, std::slice::from_ref(&one));
    let proxy = Proxy::start(&sandbox).await;
    let ask = |cert: &str| {
        https(
            &proxy,
            "one.example",
            "/hello.txt",
            &["--cacert", cert, "-w", " %{http_code}"],
        )
    };
    let (cert, key) = sandbox.certificate("one.example");
    let cert_arg = cert.display().to_string();
    assert!(
        ask(&cert_arg).0.ends_with("000"),
        "HTTPS before a certificate"
    );
    one["tls_cert"] = json!(cert);
    one["tls_key"] = json!(key);
    publish_until(
        &sandbox,
        2,
        std::slice::from_ref(&one),
        "the certificate served",
        || {
            let (out, err) = ask(&cert_arg);
            std::future::ready(if out == "one.example 200" {
                Ok(())
            } else {
                Err(format!("{out} {err}"))
            })
        },
    )
    .await;
}

/// Every name and path of a snapshot is checked again by the proxy: an entry that fails
/// (here a docroot outside the tenant's home, or a name that is no domain) is left out,
/// and the rest are served.
#[tokio::test]
async fn an_entry_that_does_not_check_out_is_left_out_and_the_rest_served() {
    let sandbox = Sandbox::new();
    let good = static_vhost(&sandbox, "good.example");
    let mut outside = static_vhost(&sandbox, "outside.example");
    outside["docroot"] = json!(sandbox.dir);
    let mut bad_name = static_vhost(&sandbox, "badname.example");
    bad_name["domain"] = json!("bad_name.example");
    bad_name["names"] = json!(["bad_name.example", "badname.example"]);
    sandbox.publish(1, &[outside, good, bad_name]);
    let proxy = Proxy::start(&sandbox).await;
    let r = proxy.get("good.example", "/hello.txt").await;
    assert_eq!((r.status, r.body.as_str()), (200, "good.example"));
    for host in ["outside.example", "badname.example", "bad_name.example"] {
        let r = proxy.get(host, "/hello.txt").await;
        assert_eq!(r.status, 404, "{host}: {}", r.body);
        assert!(r.body.contains("No site here"), "{host}: {}", r.body);
    }
}

#[tokio::test]
async fn a_snapshot_that_does_not_read_leaves_the_last_one_served() {
    let sandbox = Sandbox::new();
    let one = static_vhost(&sandbox, "one.example");
    sandbox.publish(1, std::slice::from_ref(&one));
    let proxy = Proxy::start(&sandbox).await;
    assert_eq!(proxy.get("one.example", "/hello.txt").await.status, 200);
    // Not JSON at all: a file nothing but a broken writer would leave.
    let tmp = sandbox.run().join(".routes.json.new");
    std::fs::write(&tmp, "{ not a snapshot").unwrap();
    std::fs::rename(&tmp, sandbox.run().join("routes.json")).unwrap();
    // The proxy looks at the file every second: after two looks, the site is still served.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = proxy.get("one.example", "/hello.txt").await;
    assert_eq!((r.status, r.body.as_str()), (200, "one.example"));
    // A good snapshot after it is taken as usual.
    let two = static_vhost(&sandbox, "two.example");
    publish_until(&sandbox, 2, &[one, two], "the next good snapshot", || {
        answers(&proxy, "two.example", "/hello.txt", 200)
    })
    .await;
}
