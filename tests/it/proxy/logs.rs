//! What the proxy records when it runs alone: a line per request in the vhost's access log
//! under `<log-dir>/access/<tenant>/`, and the counts on its metrics socket in the run
//! directory.

use super::*;

const SITE: &str = "logged.example";

async fn logged_site(sandbox: &Sandbox) -> Proxy {
    sandbox.write(SITE, "hello.txt", "hello");
    let mut vhost = sandbox.vhost(SITE);
    vhost["php"] = json!(false);
    sandbox.publish(1, &[vhost]);
    Proxy::start(sandbox).await
}

#[tokio::test]
async fn each_request_is_a_line_in_the_vhosts_access_log() {
    let sandbox = Sandbox::new();
    let proxy = logged_site(&sandbox).await;
    assert_eq!(proxy.get(SITE, "/hello.txt?n=1").await.status, 200);
    assert_eq!(proxy.get(SITE, "/missing.txt").await.status, 404);
    let file = sandbox
        .log()
        .join("access")
        .join(TENANT)
        .join(format!("{SITE}.log"));
    // The lines are written off the request path, within about a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.contains("/missing.txt") {
            break text;
        }
        assert!(Instant::now() < deadline, "no access log lines: {text:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("127.0.0.1 - - ["), "{text}");
    assert!(
        lines[0].contains("\"GET /hello.txt?n=1 HTTP/1.1\" 200 5 "),
        "{text}"
    );
    assert!(
        lines[1].contains("\"GET /missing.txt HTTP/1.1\" 404 "),
        "{text}"
    );
}

#[tokio::test]
async fn the_metrics_socket_counts_requests_by_vhost_and_status() {
    use std::io::Read;
    let sandbox = Sandbox::new();
    let proxy = logged_site(&sandbox).await;
    for _ in 0..3 {
        assert_eq!(proxy.get(SITE, "/hello.txt").await.status, 200);
    }
    assert_eq!(proxy.get(SITE, "/missing.txt").await.status, 404);
    let mut text = String::new();
    std::os::unix::net::UnixStream::connect(sandbox.run().join("proxy-metrics.sock"))
        .expect("the metrics socket in the run directory")
        .read_to_string(&mut text)
        .unwrap();
    for line in [
        format!("lodge_proxy_requests_total{{vhost=\"{SITE}\",status=\"200\"}} 3"),
        format!("lodge_proxy_requests_total{{vhost=\"{SITE}\",status=\"404\"}} 1"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in {text}");
    }
}
