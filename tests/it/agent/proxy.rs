//! The agent's proxy (`lodge proxy` as lodge-www, listeners handed over) serving a site
//! made through the API: PHP as the tenant, static files, what is never served, a dead
//! pool, a suspended site, HTTPS by SNI and the redirect to it. The same proxy run alone,
//! without root, is in `tests/it/proxy/`.

use super::*;

/// A site the agent's proxy serves. The agent is dropped before the site (fields drop in
/// order): the site's cleanup removes the users the agent made.
struct Served {
    agent: Agent,
    site: Site,
    tenant: String,
    domain: String,
    /// The proxy's HTTP address.
    http: String,
    /// The first answer of `/`, through the front controller.
    front: String,
}

/// A tenant with one vhost (alias `www.`, front controller `/index.php`) and the files
/// the tests ask for, answering through the proxy.
async fn served() -> Served {
    let (site, agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;
    let tenant = site.tenant("a");
    let domain = format!("{tenant}.example");
    assert_eq!(
        agent
            .post("/tenants", json!({"name": tenant, "plan": "basic"}))
            .await
            .0,
        201
    );
    let vhost = json!({"domain": domain, "aliases": [format!("www.{domain}")], "front_controller": "/index.php"});
    assert_eq!(
        agent
            .post(&format!("/tenants/{tenant}/vhosts"), vhost)
            .await
            .0,
        201
    );
    agent.applied(&tenant, "ok", Duration::from_secs(5)).await;
    script(
        &site,
        &tenant,
        &domain,
        "index.php",
        "<?php echo 'front euid=', posix_geteuid(), ' uri=', $_SERVER['REQUEST_URI'];",
    );
    script(
        &site,
        &tenant,
        &domain,
        "info.php",
        "<?php echo 'pi=', $_SERVER['PATH_INFO'] ?? '', ' https=', $_SERVER['HTTPS'] ?? 'off';",
    );
    script(&site, &tenant, &domain, "upload.jpg", "<?php echo 'ran';");
    script(&site, &tenant, &domain, "style.css", "body { color: teal }");
    script(&site, &tenant, &domain, ".env", "SECRET=1");
    std::os::unix::fs::symlink(
        "/etc/passwd",
        site.docroot(&tenant, &domain).join("escape.txt"),
    )
    .unwrap();
    let http = agent.proxy("http").await;
    let deadline = Instant::now() + Duration::from_secs(3);
    let front = loop {
        let (status, _, body) = through_proxy(&http, &domain, "/", &[]).await;
        if status == 200 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the vhost does not answer within 3 s: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Served {
        agent,
        site,
        tenant,
        domain,
        http,
        front,
    }
}

/// PHP as the tenant, through the front controller for pretty URLs; PATH_INFO split.
async fn names_and_aliases_reach_php_as_the_tenant_and_unknown_hosts_get_no_site(s: &Served) {
    let (http, domain) = (&s.http, &s.domain);
    let uid = ids(&s.tenant).0;
    assert!(
        s.front.contains(&format!("front euid={uid}")),
        "{}",
        s.front
    );
    let (status, _, body) =
        through_proxy(http, &format!("www.{domain}"), "/blog/2026/hello", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("uri=/blog/2026/hello"), "{body}");
    let (_, _, body) = through_proxy(http, domain, "/info.php/x/y", &[]).await;
    assert!(body.contains("pi=/x/y https=off"), "{body}");
    let (status, _, body) = through_proxy(http, "unknown.example", "/", &[]).await;
    assert_eq!(status, 404);
    assert!(body.contains("No site"), "{body}");
}

async fn static_files_carry_validators_and_pipelined_requests_answer_in_order(s: &Served) {
    let (http, domain) = (&s.http, &s.domain);
    let (status, headers, body) = through_proxy(http, domain, "/style.css", &[]).await;
    assert_eq!((status, body.as_str()), (200, "body { color: teal }"));
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let (status, _, _) =
        through_proxy(http, domain, "/style.css", &[("if-none-match", &etag)]).await;
    assert_eq!(status, 304);
    // Pipelined on one connection: GET and HEAD on the lean path, then a POST (hyper takes
    // the connection from there, with the bytes already read), then a GET hyper answers.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = http.trim_start_matches("http://");
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let requests = format!(
        "GET /style.css HTTP/1.1\r\nHost: {domain}\r\n\r\n\
         HEAD /style.css HTTP/1.1\r\nHost: {domain}\r\n\r\n\
         POST /info.php/p HTTP/1.1\r\nHost: {domain}\r\nContent-Length: 3\r\n\r\nabc\
         GET /style.css HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n"
    );
    c.write_all(requests.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got))
        .await
        .expect("the proxy closes after Connection: close")
        .unwrap();
    let got = String::from_utf8_lossy(&got);
    assert_eq!(got.matches("HTTP/1.1 200 OK\r\n").count(), 4, "{got}");
    assert_eq!(got.matches("body { color: teal }").count(), 2, "{got}");
    assert!(got.contains("pi=/p https=off"), "{got}");
    assert!(got.ends_with("body { color: teal }"), "{got}");
}

/// A large file goes out with sendfile(2) on plain HTTP/1.1: every byte right, whole and
/// in a range.
async fn a_large_file_arrives_unchanged_whole_and_in_a_range(s: &Served) {
    let (site, tenant, domain) = (&s.site, &s.tenant, &s.domain);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let big_path = site.docroot(tenant, domain).join("big.bin");
    std::fs::write(&big_path, &big).unwrap();
    std::os::unix::fs::chown(&big_path, Some(ids(tenant).0), None).unwrap();
    let port = port_of(&s.http);
    let resolve = format!("{domain}:{port}:127.0.0.1");
    let out = site.base.join("big.out");
    let out_arg = out.display().to_string();
    let url = format!("http://{domain}:{port}/big.bin");
    curl_long(30, &["--resolve", &resolve, "-o", &out_arg, &url]);
    assert!(
        std::fs::read(&out).unwrap() == big,
        "the large file arrived changed"
    );
    curl_long(
        30,
        &[
            "--resolve",
            &resolve,
            "-r",
            "1000-2600000",
            "-o",
            &out_arg,
            &url,
        ],
    );
    assert!(
        std::fs::read(&out).unwrap() == big[1000..=2_600_000],
        "the range arrived changed"
    );
}

/// What must never be served or run.
#[tokio::test]
async fn dotfiles_links_out_of_the_docroot_and_uploads_named_php_are_never_served() {
    require_root!("dotfiles_links_out_of_the_docroot_and_uploads_named_php_are_never_served");
    let s = served().await;
    let (http, domain) = (&s.http, &s.domain);
    let (status, _, body) = through_proxy(http, domain, "/.env", &[]).await;
    assert_eq!(status, 403, "{body}");
    // Not found beneath the docroot: the front controller answers, never the link's target.
    let (status, _, body) = through_proxy(http, domain, "/escape.txt", &[]).await;
    assert!(
        status == 404 || status == 403 || body.contains("front euid"),
        "{status} {body}"
    );
    assert!(
        !body.contains("root:x:0"),
        "a symlink out of the docroot was followed"
    );
    // The tenant swaps its docroot for a symlink to /etc: the proxy does not follow it.
    let public = s.site.docroot(&s.tenant, domain);
    let real = public.with_file_name("public.real");
    std::fs::rename(&public, &real).unwrap();
    std::os::unix::fs::symlink("/etc", &public).unwrap();
    let (status, _, body) = through_proxy(http, domain, "/passwd", &[]).await;
    assert!(
        !body.contains("root:x:0"),
        "the docroot symlink was followed: {status}"
    );
    std::fs::remove_file(&public).unwrap();
    std::fs::rename(&real, &public).unwrap();
    let (status, _, body) = through_proxy(http, domain, "/upload.jpg/x.php", &[]).await;
    assert!(!body.contains("ran"), "a .jpg ran as PHP: {status} {body}");
    let (status, _, _) = through_proxy(http, domain, "/a%0ab.php", &[]).await;
    assert_eq!(status, 400);
}

/// Repeated cookies reach PHP together; `Proxy` (httpoxy) and a name with an underscore
/// (which would pass for a dashed one) do not reach it at all.
async fn php_gets_repeated_fields_joined_and_never_proxy_or_underscored_names(s: &Served) {
    script(
        &s.site,
        &s.tenant,
        &s.domain,
        "headers.php",
        "<?php echo $_SERVER['HTTP_COOKIE'] ?? '-', '|', $_SERVER['HTTP_X_REAL_IP'] ?? '-', '|',
         $_SERVER['HTTP_PROXY'] ?? '-', '|', $_SERVER['HTTP_X_A'] ?? '-';",
    );
    let (status, _, body) = through_proxy(
        &s.http,
        &s.domain,
        "/headers.php",
        &[
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("x_real_ip", "192.0.2.1"),
            ("proxy", "http://192.0.2.2:3128"),
            ("x-a", "1"),
            ("x-a", "2"),
        ],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "a=1; b=2|-|-|1, 2"));
}

/// A dead pool is 502 (its socket gone and its workers, with the kept connections,
/// killed); the supervisor brings it back when the master is restarted.
#[tokio::test]
async fn a_dead_pool_is_502_until_its_master_is_restarted() {
    require_root!("a_dead_pool_is_502_until_its_master_is_restarted");
    let s = served().await;
    let (http, domain, tenant) = (&s.http, &s.domain, &s.tenant);
    std::fs::remove_file(s.site.socket(tenant)).unwrap();
    let _ = Command::new("pkill")
        .args(["-9", "-u", &ids(tenant).0.to_string()])
        .status();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, _) = through_proxy(http, domain, "/info.php", &[]).await;
    assert_eq!(status, 502);
    let pid = master_pid(&s.site, tenant).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while through_proxy(http, domain, "/info.php", &[]).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "PHP back after the master's restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Suspended: 503 with the suspended page, within a second or two of the API call.
#[tokio::test]
async fn a_suspended_site_answers_503_with_the_suspended_page() {
    require_root!("a_suspended_site_answers_503_with_the_suspended_page");
    let s = served().await;
    let (agent, tenant) = (&s.agent, &s.tenant);
    assert_eq!(
        agent
            .post(&format!("/tenants/{tenant}/suspend"), json!({}))
            .await
            .0,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (status, _, body) = through_proxy(&s.http, &s.domain, "/style.css", &[]).await;
        if status == 503 {
            assert!(body.contains("suspended"));
            break;
        }
        assert!(Instant::now() < deadline, "not suspended within 2 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        agent
            .post(&format!("/tenants/{tenant}/unsuspend"), json!({}))
            .await
            .0,
        200
    );
    agent.applied(tenant, "ok", Duration::from_secs(5)).await;
}

/// Turns on a self-signed certificate for the site's vhost and returns the proxy's HTTPS
/// port.
async fn self_signed(s: &Served) -> String {
    let (status, _) = s
        .agent
        .call(
            Method::PATCH,
            &format!("/vhosts/{}", s.domain),
            Some(json!({"tls_mode": "self-signed"})),
        )
        .await;
    assert_eq!(status, 200);
    port_of(&s.agent.proxy("https").await)
}

/// HTTPS with a self-signed certificate per vhost, chosen by SNI, over HTTP/2.
async fn https_serves_each_vhosts_certificate_by_sni_and_refuses_a_host_of_another(s: &Served) {
    let (domain, tenant) = (&s.domain, &s.tenant);
    let port = self_signed(s).await;
    let other = format!("{tenant}b.example");
    let (status, _) = s
        .agent
        .post(
            &format!("/tenants/{tenant}/vhosts"),
            json!({"domain": other, "tls_mode": "self-signed"}),
        )
        .await;
    assert_eq!(status, 201);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resolve = format!("{domain}:{port}:127.0.0.1");
        let (out, err) = curl(&[
            "-k",
            "-v",
            "--http2",
            "--resolve",
            &resolve,
            "-w",
            "\n%{http_version} %{http_code}",
            &format!("https://{domain}:{port}/info.php"),
        ]);
        if out.ends_with("2 200") {
            assert!(out.contains("https=on"), "{out}");
            assert!(
                err.contains(&format!("CN={domain}")),
                "the certificate is the vhost's: {err}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HTTPS did not answer: {out} {err}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resolve = format!("{other}:{port}:127.0.0.1");
        let (out, err) = curl(&[
            "-k",
            "-v",
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("https://{other}:{port}/"),
        ]);
        if err.contains(&format!("CN={other}")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second vhost's certificate: {out} {err}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A Host that names another vhost than the SNI is refused.
    let resolve = format!("{domain}:{port}:127.0.0.1");
    let (out, _) = curl(&[
        "-k",
        "--resolve",
        &resolve,
        "-H",
        &format!("Host: {other}"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("https://{domain}:{port}/"),
    ]);
    assert_eq!(out, "421");
    let (out, _) = curl(&[
        "-k",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--resolve",
        &format!("unknown.example:{port}:127.0.0.1"),
        &format!("https://unknown.example:{port}/"),
    ]);
    assert_eq!(out, "000", "an unknown name gets no certificate at all");
}

/// HTTP to HTTPS: a redirect, and HSTS on the HTTPS answers.
async fn redirect_https_sends_plain_http_to_https_whose_answers_carry_hsts(s: &Served) {
    let domain = &s.domain;
    let port = self_signed(s).await;
    let resolve = format!("{domain}:{port}:127.0.0.1");
    let url = format!("https://{domain}:{port}/style.css");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (out, err) = curl(&[
            "-k",
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ]);
        if out == "200" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HTTPS did not answer: {out} {err}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = s
        .agent
        .call(
            Method::PATCH,
            &format!("/vhosts/{domain}"),
            Some(json!({"redirect_https": true})),
        )
        .await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, headers, _) = through_proxy(&s.http, domain, "/style.css?x=1", &[]).await;
        if status == 301 {
            assert_eq!(
                headers["location"],
                format!("https://{domain}/style.css?x=1")
            );
            break;
        }
        assert!(Instant::now() < deadline, "no redirect to HTTPS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (out, _) = curl(&[
        "-k",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "--resolve",
        &resolve,
        &url,
    ]);
    assert!(
        out.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "{out}"
    );
}

// Checks that share one site: each is a function of its own, run one after the other on
// the site one test made, since making a tenant is most of what each would cost alone.

#[tokio::test]
async fn php_through_the_proxy_runs_as_the_tenant_and_gets_what_the_client_sent() {
    require_root!("php_through_the_proxy_runs_as_the_tenant_and_gets_what_the_client_sent");
    let s = served().await;
    names_and_aliases_reach_php_as_the_tenant_and_unknown_hosts_get_no_site(&s).await;
    php_gets_repeated_fields_joined_and_never_proxy_or_underscored_names(&s).await;
}

#[tokio::test]
async fn static_files_are_served_with_validators_pipelined_and_large() {
    require_root!("static_files_are_served_with_validators_pipelined_and_large");
    let s = served().await;
    static_files_carry_validators_and_pipelined_requests_answer_in_order(&s).await;
    a_large_file_arrives_unchanged_whole_and_in_a_range(&s).await;
}

#[tokio::test]
async fn https_serves_certificates_by_sni_and_the_redirect_to_it_carries_hsts() {
    require_root!("https_serves_certificates_by_sni_and_the_redirect_to_it_carries_hsts");
    let s = served().await;
    https_serves_each_vhosts_certificate_by_sni_and_refuses_a_host_of_another(&s).await;
    redirect_https_sends_plain_http_to_https_whose_answers_carry_hsts(&s).await;
}
