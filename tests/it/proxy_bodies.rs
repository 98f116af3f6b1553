//! The real `lodge proxy`, run alone on a routes snapshot written here by hand: request
//! bodies held open by one client do not grow its memory.

use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const DOMAIN: &str = "a.example";

/// A `lodge proxy` serving one PHP site, killed (and its directory removed) on drop.
struct Proxy {
    child: Child,
    base: PathBuf,
    addr: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn mkdir(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl Proxy {
    /// Starts the proxy on a free port, with a site taking bodies up to `body_limit_mb`
    /// whose `sink.php` goes to a php-fpm socket nobody listens on.
    fn start(name: &str, body_limit_mb: u32) -> Proxy {
        let base =
            std::env::temp_dir().join(format!("lodge-proxy-it-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let home = base.join("home");
        let docroot = home.join("sites").join(DOMAIN).join("public");
        for dir in [
            &base,
            &home,
            &home.join("sites"),
            &home.join("sites").join(DOMAIN),
            &docroot,
        ] {
            mkdir(dir);
        }
        std::fs::write(docroot.join("sink.php"), "<?php echo 'never run';").unwrap();
        let run = base.join("run");
        mkdir(&run);
        let snapshot = json!({"generation": 1, "vhosts": [{
            "domain": DOMAIN, "names": [DOMAIN], "tenant": "acme",
            "home": home, "docroot": docroot, "php": true, "front_controller": null,
            "socket": base.join("fpm.sock"), "max_children": 2, "suspended": false,
            "redirect_https": false, "redirect_www": "none", "tls_cert": null, "tls_key": null,
            "body_limit_mb": body_limit_mb,
        }]});
        std::fs::write(run.join("routes.json"), snapshot.to_string()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_lodge"))
            .arg("proxy")
            .env_remove("LODGE_CONFIG")
            .env_remove("LODGE_PROXY_THREADS")
            .env("LODGE_LOG", "warn")
            .env("LODGE_DATA_DIR", base.join("data"))
            .env("LODGE_RUN_DIR", &run)
            .env("LODGE_LOG_DIR", base.join("log"))
            .env("LODGE_HTTP_LISTEN", "127.0.0.1:0")
            .env("LODGE_HTTPS_LISTEN", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("lodge proxy starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("lodge proxy listening on http://")
            .and_then(|a| a.strip_suffix('/'))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Proxy { child, base, addr }
    }

    /// The proxy's resident memory now and at its peak (`VmRSS`, `VmHWM`), in KiB.
    fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/<pid>/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

#[tokio::test]
async fn chunked_uploads_held_open_by_one_client_do_not_grow_the_proxy() {
    let proxy = Proxy::start("held-open", 32);
    // Warm: the site answers (502: no php-fpm behind it) before memory is measured.
    let mut first = tokio::net::TcpStream::connect(&proxy.addr).await.unwrap();
    let request = format!("POST /sink.php HTTP/1.1\r\nHost: {DOMAIN}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi");
    first.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut first, &mut answer)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    let (before, _) = proxy.rss_kib();

    // 40 chunked uploads of 16 MiB from one address, none of them finished.
    const UPLOADS: usize = 40;
    const SIZE: usize = 16 << 20;
    let started = Instant::now();
    let mut uploads = Vec::new();
    for _ in 0..UPLOADS {
        let addr = proxy.addr.clone();
        uploads.push(tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let head = format!(
                "POST /sink.php HTTP/1.1\r\nHost: {DOMAIN}\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            c.write_all(head.as_bytes()).await.unwrap();
            let part = vec![b'x'; 64 << 10];
            let mut chunk = format!("{:x}\r\n", part.len()).into_bytes();
            chunk.extend_from_slice(&part);
            chunk.extend_from_slice(b"\r\n");
            for _ in 0..SIZE / part.len() {
                c.write_all(&chunk).await.unwrap();
            }
            c
        }));
    }
    let mut held = Vec::new();
    for u in uploads {
        held.push(u.await.unwrap());
    }
    // What the sockets still buffer is read by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (now, peak) = proxy.rss_kib();
    eprintln!(
        "proxy RSS {before} KiB before, {now} KiB with {UPLOADS} chunked uploads of 16 MiB held \
         open (peak {peak} KiB), sent in {:?}",
        started.elapsed()
    );
    // The bodies wait on disk, not in memory (holding them would take 640 MiB).
    assert!(
        peak.saturating_sub(before) < 64 * 1024,
        "the proxy grew from {before} KiB to {peak} KiB"
    );
    drop(held);
}
