//! HTTPS: a certificate per vhost chosen by SNI (checked by a client that trusts only that
//! certificate), over HTTP/2; a Host that names another vhost than the SNI; a name with no
//! certificate; HSTS on a vhost that redirects to HTTPS.

use super::*;

/// A proxy serving each domain (PHP off) over HTTPS with a self-signed certificate of its
/// own, `hello.txt` saying the domain. Returns the proxy and each domain's certificate.
async fn tls_sites(
    sandbox: &Sandbox,
    domains: &[&str],
    redirect_https: bool,
) -> (Proxy, Vec<String>) {
    let mut vhosts = Vec::new();
    let mut certs = Vec::new();
    for domain in domains {
        let (cert, key) = sandbox.certificate(domain);
        let mut vhost = sandbox.vhost(domain);
        vhost["php"] = json!(false);
        vhost["tls_cert"] = json!(cert);
        vhost["tls_key"] = json!(key);
        vhost["redirect_https"] = json!(redirect_https);
        sandbox.write(domain, "hello.txt", domain);
        vhosts.push(vhost);
        certs.push(cert.display().to_string());
    }
    sandbox.publish(1, &vhosts);
    (Proxy::start(sandbox).await, certs)
}

#[tokio::test]
async fn sni_chooses_each_vhosts_own_certificate_over_http2() {
    let sandbox = Sandbox::new();
    let domains = ["one.example", "two.example"];
    let (proxy, certs) = tls_sites(&sandbox, &domains, false).await;
    for (domain, cert) in domains.iter().zip(&certs) {
        let (out, err) = https(
            &proxy,
            domain,
            "/hello.txt",
            &[
                "--cacert",
                cert,
                "--http2",
                "-w",
                " %{http_version} %{http_code}",
            ],
        );
        assert_eq!(out, format!("{domain} 2 200"), "{err}");
    }
    // The other vhost's certificate does not verify for this name: each has its own.
    let (out, err) = https(
        &proxy,
        "one.example",
        "/hello.txt",
        &[
            "--cacert",
            &certs[1],
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ],
    );
    assert_eq!(
        out, "000",
        "one.example verified with two's certificate: {err}"
    );
}

#[tokio::test]
async fn a_host_that_names_another_vhost_than_the_sni_is_421() {
    let sandbox = Sandbox::new();
    let (proxy, certs) = tls_sites(&sandbox, &["one.example", "two.example"], false).await;
    let (out, err) = https(
        &proxy,
        "one.example",
        "/hello.txt",
        &[
            "--cacert",
            &certs[0],
            "-H",
            "Host: two.example",
            "-w",
            " %{http_code}",
        ],
    );
    assert!(out.ends_with(" 421"), "{out} {err}");
    assert!(!out.contains("two.example 200"), "{out}");
}

#[tokio::test]
async fn a_name_without_a_certificate_gets_no_handshake() {
    let sandbox = Sandbox::new();
    let (proxy, _) = tls_sites(&sandbox, &["one.example"], false).await;
    let (out, err) = https(
        &proxy,
        "unknown.example",
        "/",
        &["-k", "-o", "/dev/null", "-w", "%{http_code}"],
    );
    assert_eq!(out, "000", "an unknown name was answered: {err}");
}

#[tokio::test]
async fn https_answers_of_a_vhost_that_redirects_to_https_carry_hsts() {
    let sandbox = Sandbox::new();
    let (proxy, certs) = tls_sites(&sandbox, &["secure.example"], true).await;
    let (out, err) = https(
        &proxy,
        "secure.example",
        "/hello.txt",
        &["--cacert", &certs[0], "-D", "-"],
    );
    let head = out.to_ascii_lowercase();
    let status_line = head.lines().next().unwrap_or("");
    assert!(
        status_line.starts_with("http/") && status_line.trim_end().ends_with(" 200"),
        "{out} {err}"
    );
    assert!(
        head.contains("strict-transport-security: max-age=31536000"),
        "{out}"
    );
    assert!(out.ends_with("secure.example"), "{out}");
}
