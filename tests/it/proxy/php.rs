//! PHP through the proxy and a php-fpm pool of this test's own: a query, a posted form,
//! pretty URLs through the front controller, PATH_INFO, a pool that is down, and a client
//! that goes away while its script runs.

use super::*;

const SITE: &str = "php.example";

/// `SITE` with the front controller `/index.php` and its scripts, a pool of `workers`
/// workers for them, and the proxy; `None` when php-fpm is not installed.
async fn php_site(sandbox: &Sandbox, workers: u32) -> Option<(Fpm, Proxy)> {
    sandbox.write(
        SITE,
        "echo.php",
        "<?php echo $_SERVER['REQUEST_METHOD'], ' q=', $_SERVER['QUERY_STRING'], ' a=', $_GET['a'] ?? '-';",
    );
    sandbox.write(
        SITE,
        "post.php",
        "<?php echo $_SERVER['CONTENT_TYPE'] ?? '-', ' name=', $_POST['name'] ?? '-',
         ' length=', $_SERVER['CONTENT_LENGTH'] ?? '-';",
    );
    sandbox.write(
        SITE,
        "index.php",
        "<?php echo 'front uri=', $_SERVER['REQUEST_URI'], ' script=', $_SERVER['SCRIPT_NAME'];",
    );
    sandbox.write(
        SITE,
        "info.php",
        "<?php echo 'pi=', $_SERVER['PATH_INFO'] ?? '-', ' script=', $_SERVER['SCRIPT_NAME'];",
    );
    let fpm = Fpm::start(sandbox, workers).await?;
    let mut vhost = sandbox.vhost(SITE);
    vhost["front_controller"] = json!("/index.php");
    vhost["max_children"] = json!(workers);
    sandbox.publish(1, &[vhost]);
    Some((fpm, Proxy::start(sandbox).await))
}

#[tokio::test]
async fn a_get_reaches_php_with_its_query() {
    let sandbox = Sandbox::new();
    let Some((_fpm, proxy)) = php_site(&sandbox, 2).await else {
        return skipped("a_get_reaches_php_with_its_query");
    };
    let r = proxy.get(SITE, "/echo.php?a=1&b=two").await;
    assert_eq!((r.status, r.body.as_str()), (200, "GET q=a=1&b=two a=1"));
}

#[tokio::test]
async fn a_posted_form_reaches_php() {
    let sandbox = Sandbox::new();
    let Some((_fpm, proxy)) = php_site(&sandbox, 2).await else {
        return skipped("a_posted_form_reaches_php");
    };
    let r = proxy
        .send(
            reqwest::Method::POST,
            SITE,
            "/post.php",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(b"name=lodge&x=1".to_vec()),
        )
        .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            200,
            "application/x-www-form-urlencoded name=lodge length=14"
        )
    );
}

#[tokio::test]
async fn pretty_urls_go_to_the_front_controller() {
    let sandbox = Sandbox::new();
    let Some((_fpm, proxy)) = php_site(&sandbox, 2).await else {
        return skipped("pretty_urls_go_to_the_front_controller");
    };
    let r = proxy.get(SITE, "/blog/2026/hello?page=2").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "front uri=/blog/2026/hello?page=2 script=/index.php")
    );
    let r = proxy.get(SITE, "/").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "front uri=/ script=/index.php")
    );
}

#[tokio::test]
async fn path_info_is_split_from_the_script() {
    let sandbox = Sandbox::new();
    let Some((_fpm, proxy)) = php_site(&sandbox, 2).await else {
        return skipped("path_info_is_split_from_the_script");
    };
    let r = proxy.get(SITE, "/info.php/users/7").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "pi=/users/7 script=/info.php")
    );
}

#[tokio::test]
async fn a_pool_that_is_down_is_502() {
    let sandbox = Sandbox::new();
    let Some((fpm, proxy)) = php_site(&sandbox, 2).await else {
        return skipped("a_pool_that_is_down_is_502");
    };
    assert_eq!(proxy.get(SITE, "/echo.php").await.status, 200);
    drop(fpm);
    let r = proxy
        .until(SITE, "/echo.php", "502 once the pool is gone", |r| {
            r.status != 200
        })
        .await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("PHP is not running"), "{}", r.body);
}

/// With one worker: a script that writes forever stops when its client leaves, and the
/// worker then serves the next request.
#[tokio::test]
async fn a_client_that_goes_away_stops_its_script_and_frees_the_worker() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sandbox = Sandbox::new();
    let rounds = sandbox.dir.join("rounds");
    sandbox.write(
        SITE,
        "forever.php",
        format!(
            "<?php ignore_user_abort(false);
             for ($i = 0; ; $i++) {{ file_put_contents('{}', $i);
             echo str_repeat('x', 65536); flush(); usleep(10000); }}",
            rounds.display()
        ),
    );
    let Some((_fpm, proxy)) = php_site(&sandbox, 1).await else {
        return skipped("a_client_that_goes_away_stops_its_script_and_frees_the_worker");
    };
    let addr = proxy.http.trim_start_matches("http://");
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client
        .write_all(format!("GET /forever.php HTTP/1.1\r\nHost: {SITE}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut first = vec![0; 4096];
    let n = client.read(&mut first).await.unwrap();
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first[..n])
    );
    drop(client);
    let count = || {
        std::fs::read_to_string(&rounds)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    // Stopped: no new round for 300 ms, where a running script writes one every 10 ms.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = count();
        tokio::time::sleep(Duration::from_millis(300)).await;
        if before.is_some() && count() == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the script went on after its client left: round {:?}",
            count()
        );
    }
    let asked = Instant::now();
    let r = proxy.get(SITE, "/echo.php?a=next").await;
    assert_eq!((r.status, r.body.as_str()), (200, "GET q=a=next a=next"));
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "the worker was not free: {:?}",
        asked.elapsed()
    );
}

#[tokio::test]
async fn an_interim_status_from_php_is_a_bad_gateway_and_the_connection_stays_in_step() {
    let sandbox = Sandbox::new();
    sandbox.write(
        SITE,
        "early.php",
        "<?php header('Status: 103 Early Hints'); echo 'x';",
    );
    sandbox.write(
        SITE,
        "switch.php",
        "<?php http_response_code(101); echo 'x';",
    );
    let Some((_fpm, proxy)) = php_site(&sandbox, 2).await else {
        return skipped(
            "an_interim_status_from_php_is_a_bad_gateway_and_the_connection_stays_in_step",
        );
    };
    for path in ["/early.php", "/switch.php"] {
        let r = proxy.get(SITE, path).await;
        assert_eq!(r.status, 502, "{path}: {}", r.body);
    }
    // Two requests on one kept-alive connection (curl reuses it): the second one's answer
    // is its own, not one out of step.
    let url = format!("{}/early.php", proxy.http);
    let url2 = format!("{}/echo.php?a=1", proxy.http);
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code} ", "-H"])
        .arg(format!("Host: {SITE}"))
        .arg(&url)
        .args(["-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Host: {SITE}"))
        .arg(&url2)
        .output()
        .expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "502200");
}
