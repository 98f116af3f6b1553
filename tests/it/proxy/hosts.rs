//! Which vhost a request reaches, by its Host header: unknown hosts, aliases, a port in the
//! header, the redirects to HTTPS and between the apex and `www.`, and suspended vhosts.

use super::*;

/// A proxy serving each of `vhosts` (PHP off), with `hello.txt` in each docroot saying
/// the vhost's domain.
async fn serving(sandbox: &Sandbox, vhosts: Vec<Value>) -> Proxy {
    let vhosts: Vec<Value> = vhosts
        .into_iter()
        .map(|mut v| {
            let domain = v["domain"].as_str().unwrap().to_owned();
            sandbox.write(&domain, "hello.txt", &domain);
            v["php"] = json!(false);
            v
        })
        .collect();
    sandbox.publish(1, &vhosts);
    Proxy::start(sandbox).await
}

#[tokio::test]
async fn an_unknown_host_gets_lodges_no_site_page() {
    let sandbox = Sandbox::new();
    let proxy = serving(&sandbox, vec![sandbox.vhost("known.example")]).await;
    for host in ["unknown.example", "127.0.0.1", "known.example.evil.example"] {
        let r = proxy.get(host, "/hello.txt").await;
        assert_eq!(r.status, 404, "{host}");
        assert!(r.body.contains("No site here"), "{host}: {}", r.body);
    }
}

#[tokio::test]
async fn an_alias_and_a_host_with_a_port_or_in_capitals_reach_the_vhost() {
    let sandbox = Sandbox::new();
    let mut vhost = sandbox.vhost("site.example");
    vhost["names"] = json!(["site.example", "alias.example"]);
    let proxy = serving(&sandbox, vec![vhost]).await;
    for host in [
        "site.example",
        "alias.example",
        "site.example:8080",
        "Alias.EXAMPLE",
        "site.example.",
    ] {
        let r = proxy.get(host, "/hello.txt").await;
        assert_eq!((r.status, r.body.as_str()), (200, "site.example"), "{host}");
    }
}

#[tokio::test]
async fn redirect_https_sends_plain_http_to_https_with_path_and_query() {
    let sandbox = Sandbox::new();
    let mut vhost = sandbox.vhost("secure.example");
    vhost["redirect_https"] = json!(true);
    let proxy = serving(&sandbox, vec![vhost]).await;
    let r = proxy.get("secure.example:8080", "/a/b.txt?x=1&y=2").await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        "https://secure.example/a/b.txt?x=1&y=2"
    );
}

#[tokio::test]
async fn redirect_www_sends_the_apex_to_www_or_www_to_the_apex() {
    let sandbox = Sandbox::new();
    let mut to_www = sandbox.vhost("towww.example");
    to_www["names"] = json!(["towww.example", "www.towww.example"]);
    to_www["redirect_www"] = json!("to-www");
    let mut to_apex = sandbox.vhost("toapex.example");
    to_apex["names"] = json!(["toapex.example", "www.toapex.example"]);
    to_apex["redirect_www"] = json!("to-apex");
    let proxy = serving(&sandbox, vec![to_www, to_apex]).await;

    let r = proxy.get("towww.example", "/hello.txt?q=1").await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        "http://www.towww.example/hello.txt?q=1"
    );
    let r = proxy.get("www.towww.example", "/hello.txt").await;
    assert_eq!((r.status, r.body.as_str()), (200, "towww.example"));

    let r = proxy.get("www.toapex.example", "/hello.txt?q=1").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), "http://toapex.example/hello.txt?q=1");
    let r = proxy.get("toapex.example", "/hello.txt").await;
    assert_eq!((r.status, r.body.as_str()), (200, "toapex.example"));
}

#[tokio::test]
async fn a_suspended_vhost_answers_503_and_serves_nothing() {
    let sandbox = Sandbox::new();
    let mut vhost = sandbox.vhost("paused.example");
    vhost["suspended"] = json!(true);
    let proxy = serving(&sandbox, vec![vhost]).await;
    let r = proxy.get("paused.example", "/hello.txt").await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("Site suspended"), "{}", r.body);
    assert!(!r.body.contains("paused.example"), "the file was served");
    assert_eq!(r.header("retry-after"), "3600");
}
