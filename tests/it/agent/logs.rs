//! What the agent's proxy records: the admin's metrics, an access log per vhost in the
//! combined format (shown through the API, reopened after rotation), and FastCGI errors
//! counted per tenant.

use super::*;

/// `/metrics` of the panel with this `Authorization` header: (status, text).
async fn metrics(agent: &Agent, authorization: Option<&str>) -> (u16, String) {
    let mut req = agent.http.get(format!("{}/metrics", agent.base_url));
    if let Some(auth) = authorization {
        req = req.header("authorization", auth);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of one series in a Prometheus text, 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Checks a combined-format line field by field: address, identity, user, time, request,
/// status, bytes, referer, user agent, and nothing after.
fn well_formed(line: &str) -> bool {
    let Some((addr, rest)) = line.split_once(" - - [") else {
        return false;
    };
    let Some((time, rest)) = rest.split_once("] \"") else {
        return false;
    };
    // The quoted fields hold no quote of their own: the rest splits into exactly
    // `request`, ` status bytes `, `referer`, ` `, `agent` and nothing.
    let parts: Vec<&str> = rest.split('"').collect();
    let numbers: Vec<&str> = parts
        .get(1)
        .map_or(vec![], |p| p.trim().split(' ').collect());
    addr.parse::<std::net::IpAddr>().is_ok()
        && time.len() == 26
        && time.ends_with(" +0000")
        && parts.len() == 6
        && parts[0].split(' ').count() == 3
        && numbers.len() == 2
        && numbers[0].parse::<u16>().is_ok()
        && (numbers[1] == "-" || numbers[1].parse::<u64>().is_ok())
        && parts[3] == " "
        && parts[5].is_empty()
}

/// A tenant whose vhost serves `hello.txt` and `index.php`, and a second tenant with a
/// login of its own, which must see none of it. The agent is dropped before the site.
struct Logged {
    agent: Agent,
    site: Site,
    tenant: String,
    domain: String,
    /// The second tenant, whose login is `other-password-1`.
    other: String,
    http: String,
    /// `Bearer <the admin's token>`.
    admin: String,
}

async fn logged() -> Logged {
    let (site, agent) =
        with_plan(json!({"name": "basic", "php": {"pm": "static", "max_children": 2}})).await;
    let (tenant, domain) = make_tenant(&agent, &site, "a").await;
    let other = site.tenant("b");
    let (status, body) = agent
        .post(
            "/tenants",
            json!({"name": other, "plan": "basic", "password": "other-password-1"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    agent.applied(&tenant, "ok", Duration::from_secs(5)).await;
    script(&site, &tenant, &domain, "hello.txt", "hello");
    script(&site, &tenant, &domain, "index.php", "<?php echo 'php';");
    until_php_serves(&site, &tenant, &domain).await;
    let http = agent.proxy("http").await;
    until_served(&http, &domain, "/hello.txt").await;
    let admin = format!("Bearer {}", agent.token);
    Logged {
        agent,
        site,
        tenant,
        domain,
        other,
        http,
        admin,
    }
}

impl Logged {
    /// Five static requests with a referer and a user agent that try to end their fields,
    /// one through PHP, one not found.
    async fn traffic(&self) {
        let (http, domain) = (&self.http, &self.domain);
        let hostile = [
            ("referer", "https://ref.example/\" 200 0 \"x"),
            ("user-agent", "evil\"\tagent\\"),
        ];
        for i in 0..5 {
            let (status, _, body) =
                through_proxy(http, domain, &format!("/hello.txt?n={i}"), &hostile).await;
            assert_eq!((status, body.as_str()), (200, "hello"));
        }
        let (status, _, body) = through_proxy(http, domain, "/index.php", &[]).await;
        assert_eq!((status, body.as_str()), (200, "php"));
        assert_eq!(
            through_proxy(http, domain, "/missing.txt", &[]).await.0,
            404
        );
    }

    fn log_file(&self) -> PathBuf {
        self.site
            .log()
            .join("access")
            .join(&self.tenant)
            .join(format!("{}.log", self.domain))
    }

    /// The vhost's log once the traffic's last line is in it: the lines reach the file
    /// within about a second.
    async fn logged_traffic(&self) -> String {
        let file = self.log_file();
        let mut text = String::new();
        wait_for(
            "the lines in the access log",
            Duration::from_secs(5),
            || {
                text = std::fs::read_to_string(&file).unwrap_or_default();
                text.contains("/missing.txt")
            },
        )
        .await;
        text
    }

    /// `Bearer <token>` of the second tenant's login.
    async fn other_login(&self) -> String {
        let theirs: Value = self
            .agent
            .http
            .post(format!("{}/api/v1/tokens", self.agent.base_url))
            .json(&json!({"username": self.other, "password": "other-password-1"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        format!("Bearer {}", theirs["token"].as_str().unwrap())
    }
}

/// The uid of lodge-www and the gid of lodge: the proxy writes, the panel's group reads.
fn log_owners() -> (u32, u32) {
    let panel_gid = nix::unistd::Group::from_name("lodge")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    (ids("lodge-www").0, panel_gid)
}

async fn requests_are_counted_in_metrics_only_admins_may_read(l: &Logged) {
    let domain = &l.domain;
    let ok_series = format!("lodge_proxy_requests_total{{vhost=\"{domain}\",status=\"200\"}}");
    let (status, text) = metrics(&l.agent, Some(&l.admin)).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\nlodge_proxy_up 1\n"), "{text}");
    let before = sample(&text, &ok_series);
    assert!(before >= 1.0, "{text}");
    l.traffic().await;
    let (_, text) = metrics(&l.agent, Some(&l.admin)).await;
    assert_eq!(sample(&text, &ok_series), before + 6.0, "{text}");
    assert_eq!(
        sample(
            &text,
            &format!("lodge_proxy_requests_total{{vhost=\"{domain}\",status=\"404\"}}")
        ),
        1.0
    );
    assert!(
        sample(
            &text,
            &format!("lodge_proxy_request_duration_seconds_count{{vhost=\"{domain}\"}}")
        ) >= before + 7.0
    );
    assert!(text.contains(&format!(
        "lodge_proxy_pool_queue{{tenant=\"{}\"}} 0\n",
        l.tenant
    )));
    assert!(text.contains("lodge_proxy_log_lines_dropped_total{reason=\"queue_full\"} 0\n"));
    assert!(
        text.contains("lodge_tenants{state=\"active\"} 2\n"),
        "{text}"
    );
    // They are the admins'.
    let theirs = l.other_login().await;
    assert_eq!(metrics(&l.agent, Some(&theirs)).await.0, 403);
    assert_eq!(metrics(&l.agent, None).await.0, 401);
}

async fn each_vhost_logs_to_its_own_file_in_the_combined_format_with_fields_escaped(
    l: &Logged,
    text: &str,
) {
    assert_eq!(text.matches("GET /hello.txt?n=").count(), 5, "{text}");
    for line in text.lines() {
        assert!(well_formed(line), "{line}");
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    }
    let line = text.lines().find(|l| l.contains("?n=3 ")).unwrap();
    assert!(
        line.ends_with(
            "\"GET /hello.txt?n=3 HTTP/1.1\" 200 5 \"https://ref.example/\\x22 200 0 \\x22x\" \"evil\\x22\\x09agent\\x5C\""
        ),
        "{line}"
    );
    assert!(
        text.contains("\"GET /index.php HTTP/1.1\" 200 3 \"-\" "),
        "{text}"
    );
    assert!(
        text.contains("\"GET /missing.txt HTTP/1.1\" 404 "),
        "{text}"
    );
    // The proxy writes, the panel's group reads, nobody else.
    let (www, panel_gid) = log_owners();
    let file = l.log_file();
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (www, panel_gid, 0o640)
    );
    let dir = std::fs::metadata(file.parent().unwrap()).unwrap();
    assert_eq!(
        (dir.uid(), dir.gid(), dir.mode() & 0o7777),
        (www, panel_gid, 0o2750)
    );
    let socket = std::fs::metadata(l.site.run().join("proxy-metrics.sock")).unwrap();
    assert_eq!(
        (socket.uid(), socket.gid(), socket.mode() & 0o777),
        (0, panel_gid, 0o660)
    );
}

/// The API shows the log to the admin, searched, and not to another tenant.
async fn the_api_shows_a_vhosts_log_to_the_admin_searched_and_not_to_another_tenant(
    l: &Logged,
    text: &str,
) {
    let line = text.lines().find(|l| l.contains("?n=3 ")).unwrap();
    let agent = &l.agent;
    let log = format!("/tenants/{}/vhosts/{}/access-log", l.tenant, l.domain);
    let (status, body) = agent
        .call(Method::GET, &format!("{log}?lines=2"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let lines = body["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].as_str().unwrap().contains("GET /index.php "));
    assert!(lines[1].as_str().unwrap().contains("GET /missing.txt "));
    let (_, body) = agent
        .call(Method::GET, &format!("{log}?q=n%3D3"), None)
        .await;
    assert_eq!(body["lines"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["lines"][0], line);
    let (status, body) = agent
        .call(Method::GET, &format!("{log}?lines=0"), None)
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "lines");
    let theirs = l.other_login().await;
    let r = agent
        .http
        .get(format!("{}/api/v1{log}", agent.base_url))
        .header("authorization", &theirs)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

/// Rotation: the file moved away, SIGUSR1 to the agent, and the proxy starts a new one.
#[tokio::test]
async fn sigusr1_after_rotation_starts_a_new_log_file_and_the_proxy_goes_on() {
    require_root!("sigusr1_after_rotation_starts_a_new_log_file_and_the_proxy_goes_on");
    let l = logged().await;
    let (http, domain) = (&l.http, &l.domain);
    l.traffic().await;
    l.logged_traffic().await;
    let file = l.log_file();
    let moved = file.with_extension("log.1");
    std::fs::rename(&file, &moved).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(l.agent.child.id() as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let fresh = loop {
        assert_eq!(
            through_proxy(http, domain, "/hello.txt?after=rotation", &[])
                .await
                .0,
            200
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let fresh = std::fs::read_to_string(&file).unwrap_or_default();
        if fresh.contains("?after=rotation") {
            break fresh;
        }
        assert!(Instant::now() < deadline, "no new log file after SIGUSR1");
    };
    assert!(!fresh.contains("?n="), "the new file starts empty: {fresh}");
    assert!(fresh.lines().all(well_formed), "{fresh}");
    assert!(std::fs::read_to_string(&moved)
        .unwrap()
        .contains("/missing.txt"));
    let (www, panel_gid) = log_owners();
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (www, panel_gid, 0o640)
    );
    // The proxy survived the signal (and so did the masters).
    assert_eq!(through_proxy(http, domain, "/index.php", &[]).await.0, 200);
}

/// A pool that is down counts as a FastCGI error of its tenant.
async fn a_pool_that_is_down_counts_as_a_fastcgi_error_of_its_tenant(l: &Logged) {
    let (tenant, domain) = (&l.tenant, &l.domain);
    std::fs::remove_file(l.site.socket(tenant)).unwrap();
    let _ = Command::new("pkill")
        .args(["-9", "-u", &ids(tenant).0.to_string()])
        .status();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        through_proxy(&l.http, domain, "/index.php", &[]).await.0,
        502
    );
    let (_, text) = metrics(&l.agent, Some(&l.admin)).await;
    let down = format!("lodge_proxy_fastcgi_errors_total{{tenant=\"{tenant}\",kind=\"down\"}}");
    assert!(sample(&text, &down) >= 1.0, "{text}");
    assert_eq!(
        sample(
            &text,
            &format!("lodge_proxy_requests_total{{vhost=\"{domain}\",status=\"502\"}}")
        ),
        1.0
    );
}

// Checks that share one site, run one after the other: making the tenants is most of what
// each would cost alone.

#[tokio::test]
async fn requests_and_fastcgi_errors_are_counted_in_metrics_only_admins_may_read() {
    require_root!("requests_and_fastcgi_errors_are_counted_in_metrics_only_admins_may_read");
    let l = logged().await;
    requests_are_counted_in_metrics_only_admins_may_read(&l).await;
    // Last: it takes the pool down.
    a_pool_that_is_down_counts_as_a_fastcgi_error_of_its_tenant(&l).await;
}

#[tokio::test]
async fn each_vhosts_log_is_in_the_combined_format_and_shown_to_the_admin_only() {
    require_root!("each_vhosts_log_is_in_the_combined_format_and_shown_to_the_admin_only");
    let l = logged().await;
    l.traffic().await;
    let text = l.logged_traffic().await;
    each_vhost_logs_to_its_own_file_in_the_combined_format_with_fields_escaped(&l, &text).await;
    the_api_shows_a_vhosts_log_to_the_admin_searched_and_not_to_another_tenant(&l, &text).await;
}
