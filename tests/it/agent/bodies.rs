//! Request and response bodies between the proxy and PHP: hundreds of megabytes each way
//! in bounded memory, and a client that goes away stops the script it was waiting for.

use super::*;

/// A tenant whose plan takes 300 MB uploads, with `sink.php` (counts and checksums what it
/// reads, without keeping it) answering through the proxy: (site, agent, tenant, domain,
/// the proxy's address).
async fn streaming_site() -> (Site, Agent, String, String, String) {
    let (site, agent) = with_plan(json!({"name": "basic",
        "php": {"pm": "static", "max_children": 2, "upload_max_mb": 300, "max_execution_time": 120}}))
    .await;
    let (tenant, domain) = make_tenant(&agent, &site, "s").await;
    agent.applied(&tenant, "ok", Duration::from_secs(5)).await;
    script(
        &site,
        &tenant,
        &domain,
        "sink.php",
        "<?php $in = fopen('php://input', 'r'); $n = 0; $h = hash_init('sha256');
         while (!feof($in)) { $d = fread($in, 65536); $n += strlen($d); hash_update($h, $d); }
         echo $n, ' ', hash_final($h);",
    );
    let http = agent.proxy("http").await;
    until_served(&http, &domain, "/sink.php").await;
    (site, agent, tenant, domain, http)
}

#[tokio::test]
async fn a_200_mb_upload_and_a_1_gib_download_pass_in_bounded_memory() {
    require_root!("a_200_mb_upload_and_a_1_gib_download_pass_in_bounded_memory");
    let (site, agent, tenant, domain, http) = streaming_site().await;
    // 1 GiB, written a MiB at a time.
    script(
        &site,
        &tenant,
        &domain,
        "big.php",
        "<?php header('Content-Type: application/octet-stream'); $m = str_repeat('0123456789abcdef', 65536);
         for ($i = 0; $i < 1024; $i++) { echo $m; flush(); }",
    );
    let port = port_of(&http);
    let resolve = format!("{domain}:{port}:127.0.0.1");
    let url = |path: &str| format!("http://{domain}:{port}{path}");
    let proxy = child_pid(agent.child.id() as i32, "proxy").expect("the proxy runs");
    let before = peak_rss_kib(proxy);

    // 200 MB up: PHP sees every byte, the proxy never holds it.
    let upload = site.base.join("upload.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&upload).unwrap());
        let block: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        for _ in 0..200 {
            f.write_all(&block).unwrap();
        }
    }
    let expected_sum = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(std::fs::read(&upload).unwrap());
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let upload_arg = upload.display().to_string();
    let (out, err) = curl_long(
        120,
        &[
            "--resolve",
            &resolve,
            "-T",
            &upload_arg,
            "-H",
            "content-type: application/octet-stream",
            &url("/sink.php"),
        ],
    );
    assert_eq!(out, format!("209715200 {expected_sum}"), "{err}");

    // A script that answers without reading its body: the answer comes back, the body's
    // pump is stopped, and the pool serves the next request.
    script(&site, &tenant, &domain, "early.php", "<?php echo 'early';");
    let (out, err) = curl_long(
        60,
        &[
            "--resolve",
            &resolve,
            "-T",
            &upload_arg,
            "-H",
            "content-type: application/octet-stream",
            &url("/early.php"),
        ],
    );
    assert_eq!(out, "early", "{err}");
    let (status, _, body) = through_proxy(&http, &domain, "/early.php", &[]).await;
    assert_eq!((status, body.as_str()), (200, "early"));

    // 1 GiB down.
    let (out, err) = curl_long(
        120,
        &[
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            &url("/big.php"),
        ],
    );
    assert_eq!(out, "200 1073741824", "{err}");
    let grown = peak_rss_kib(proxy).saturating_sub(before);
    eprintln!("proxy peak RSS grew by {grown} KiB over a 200 MB upload and a 1 GiB download");
    assert!(
        grown < 48 * 1024,
        "the proxy's peak RSS grew by {grown} KiB"
    );
    drop(agent);
}

#[tokio::test]
async fn a_client_that_goes_away_stops_its_script_and_frees_the_worker() {
    require_root!("a_client_that_goes_away_stops_its_script_and_frees_the_worker");
    let (site, agent, tenant, domain, http) = streaming_site().await;
    // Writes forever, noting each round in the tenant's tmp/.
    let home = site.tenants().join(&tenant);
    script(
        &site,
        &tenant,
        &domain,
        "forever.php",
        &format!(
            "<?php ignore_user_abort(false); for ($i = 0; ; $i++) {{ echo str_repeat('x', 65536); flush();
             file_put_contents('{}/tmp/rounds-' . $_GET['n'], $i); usleep(10000); }}",
            home.display()
        ),
    );
    let port = port_of(&http);
    let resolve = format!("{domain}:{port}:127.0.0.1");
    let url = |path: &str| format!("http://{domain}:{port}{path}");
    for n in 0..2 {
        let (resolve, target) = (resolve.clone(), url(&format!("/forever.php?n={n}")));
        std::thread::spawn(move || {
            curl_long(1, &["--resolve", &resolve, "-o", "/dev/null", &target]);
        });
    }
    let rounds = |n: u32| {
        std::fs::read_to_string(home.join(format!("tmp/rounds-{n}")))
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let first = (rounds(0), rounds(1));
    assert!(
        first.0.is_some() && first.1.is_some(),
        "the scripts ran: {first:?}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        (rounds(0), rounds(1)),
        first,
        "the scripts went on after their clients left"
    );
    let asked = Instant::now();
    let (status, _, body) = through_proxy(&http, &domain, "/sink.php", &[]).await;
    assert!(
        status == 200 && body.starts_with("0 e3b0c442"),
        "{status} {body}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "the workers are free"
    );
    drop(agent);
}
