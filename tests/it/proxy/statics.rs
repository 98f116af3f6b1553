//! Static files from a docroot, with PHP off: the file with its type and validators, a
//! range, lodge's own page for what is not there, and nothing hidden or outside.

use super::*;

const SITE: &str = "static.example";

/// A proxy serving `SITE` from its docroot with PHP off.
async fn static_site(sandbox: &Sandbox) -> Proxy {
    let mut vhost = sandbox.vhost(SITE);
    vhost["php"] = json!(false);
    sandbox.publish(1, &[vhost]);
    Proxy::start(sandbox).await
}

#[tokio::test]
async fn a_file_is_served_with_its_type_and_its_etag_answers_304() {
    let sandbox = Sandbox::new();
    sandbox.write(SITE, "style.css", "body { color: teal }");
    let proxy = static_site(&sandbox).await;
    let r = proxy.get(SITE, "/style.css").await;
    assert_eq!((r.status, r.body.as_str()), (200, "body { color: teal }"));
    assert!(
        r.header("content-type").starts_with("text/css"),
        "{:?}",
        r.headers
    );
    let etag = r.header("etag").to_owned();
    assert!(!etag.is_empty(), "no ETag: {:?}", r.headers);
    let again = proxy
        .get_with(SITE, "/style.css", &[("if-none-match", &etag)])
        .await;
    assert_eq!((again.status, again.body.as_str()), (304, ""));
    assert_eq!(again.header("etag"), etag);
}

#[tokio::test]
async fn a_range_is_answered_with_206_and_exactly_those_bytes() {
    let sandbox = Sandbox::new();
    sandbox.write(SITE, "data.txt", "0123456789abcdef");
    let proxy = static_site(&sandbox).await;
    let r = proxy
        .get_with(SITE, "/data.txt", &[("range", "bytes=2-5")])
        .await;
    assert_eq!((r.status, r.body.as_str()), (206, "2345"));
    assert_eq!(r.header("content-range"), "bytes 2-5/16");
    let tail = proxy
        .get_with(SITE, "/data.txt", &[("range", "bytes=-3")])
        .await;
    assert_eq!((tail.status, tail.body.as_str()), (206, "def"));
}

#[tokio::test]
async fn a_missing_file_gets_lodges_not_found_page() {
    let sandbox = Sandbox::new();
    let proxy = static_site(&sandbox).await;
    let r = proxy.get(SITE, "/nothing-here.html").await;
    assert_eq!(r.status, 404);
    assert!(r.header("content-type").starts_with("text/html"));
    assert!(r.body.contains("Not found"), "{}", r.body);
}

#[tokio::test]
async fn dotfiles_are_refused() {
    let sandbox = Sandbox::new();
    sandbox.write(SITE, ".env", "DB_PASSWORD=hunter2");
    sandbox.write(SITE, ".git/config", "[core] hunter2");
    let proxy = static_site(&sandbox).await;
    for path in ["/.env", "/.git/config"] {
        let r = proxy.get(SITE, path).await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert!(!r.body.contains("hunter2"), "{path} was served");
    }
}

#[tokio::test]
async fn a_symlink_out_of_the_docroot_is_not_followed() {
    let sandbox = Sandbox::new();
    let secret = sandbox.dir.join("secret.txt");
    std::fs::write(&secret, "top secret").unwrap();
    let docroot = sandbox.docroot(SITE);
    std::os::unix::fs::symlink(&secret, docroot.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink("../../../../secret.txt", docroot.join("relative.txt")).unwrap();
    std::os::unix::fs::symlink(&sandbox.dir, docroot.join("up")).unwrap();
    // A link that stays inside is served: the refusals are about where links lead.
    sandbox.write(SITE, "real.txt", "inside");
    std::os::unix::fs::symlink("real.txt", docroot.join("inside.txt")).unwrap();
    let proxy = static_site(&sandbox).await;
    for path in ["/leak.txt", "/relative.txt", "/up/secret.txt"] {
        let r = proxy.get(SITE, path).await;
        assert!(
            r.status == 403 || r.status == 404,
            "{path}: {} {}",
            r.status,
            r.body
        );
        assert!(!r.body.contains("top secret"), "{path} was followed");
    }
    let r = proxy.get(SITE, "/inside.txt").await;
    assert_eq!((r.status, r.body.as_str()), (200, "inside"));
}
