//! A vhost's access log through the API and the dashboard (read from a file laid out as the
//! proxy writes it), and `/metrics` for admins only. The proxy writing the files for real is
//! in `agent`.

use crate::dashboard::Dashboard;
use crate::harness::*;
use reqwest::Method;
use serde_json::json;

/// An app with tenants `acme` (vhost `acme.example`, 30 logged requests) and `other`
/// (vhost `other.example`, no log yet), each with its own login.
async fn logged() -> (App, Api) {
    let app = spawn_app().await;
    let admin = app.admin().await;
    create_plan(&admin, "basic", json!({})).await;
    for t in ["acme", "other"] {
        create_tenant(&admin, t, "basic", json!({"password": PASSWORD})).await;
        create_vhost(&admin, t, &format!("{t}.example")).await;
    }
    let dir = app.data_dir.join("log/access/acme");
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = String::new();
    for i in 1..=30 {
        let status = if i % 10 == 0 { 404 } else { 200 };
        text.push_str(&format!(
            "192.0.2.{i} - - [22/Nov/2026:10:00:{i:02} +0000] \"GET /page/{i} HTTP/1.1\" {status} 12 \"-\" \"Agent <script>alert({i})</script>\"\n"
        ));
    }
    std::fs::write(dir.join("acme.example.log"), text).unwrap();
    (app, admin)
}

const LOG: &str = "/tenants/acme/vhosts/acme.example/access-log";

#[tokio::test]
async fn the_api_shows_the_end_of_a_log_and_searches_it() {
    let (app, admin) = logged().await;
    let (status, body) = admin.get(LOG).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["vhost"], "acme.example");
    let lines = body["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 30);
    assert!(lines[0].as_str().unwrap().contains("GET /page/1 "));
    assert_eq!(body["complete"], true);

    let (_, body) = admin.get(&format!("{LOG}?lines=2")).await;
    let lines: Vec<&str> = body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].contains("/page/29 ") && lines[1].contains("/page/30 "));
    assert_eq!(body["complete"], false);

    // A plain substring, ASCII case ignored.
    let (_, body) = admin.get(&format!("{LOG}?q={}", enc("\" 404 "))).await;
    assert_eq!(body["lines"].as_array().unwrap().len(), 3, "{body}");
    let (_, body) = admin
        .get(&format!("{LOG}?q={}&lines=1", enc("get /PAGE/2")))
        .await;
    assert_eq!(body["lines"].as_array().unwrap().len(), 1);
    assert!(body["lines"][0].as_str().unwrap().contains("/page/29 "));

    // A vhost without a log yet has no lines.
    let (status, body) = admin
        .get("/tenants/other/vhosts/other.example/access-log")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["lines"], json!([]));

    // Bad parameters: 422 naming the field.
    for (query, field) in [
        ("lines=0", "lines"),
        ("lines=1001", "lines"),
        ("lines=many", "lines"),
        ("q=a%0Ab", "q"),
        ("q=%1B%5B31m", "q"),
    ] {
        let r = admin
            .send(Method::GET, &format!("{LOG}?{query}"), None)
            .await;
        assert_eq!(r.content_type(), "application/problem+json", "{query}");
        assert_invalid(r.status, &r.json, field, query);
    }
    let long = "x".repeat(201);
    let (status, body) = admin.get(&format!("{LOG}?q={long}")).await;
    assert_invalid(status, &body, "q", "a long search");

    // Tenants see their own logs only; a vhost under another tenant's name is not found.
    let acme = app.sign_in("acme", PASSWORD).await;
    let other = app.sign_in("other", PASSWORD).await;
    assert_eq!(acme.get(LOG).await.0, 200);
    let (status, body) = other.get(LOG).await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.to_string().contains("page/"), "{body}");
    assert_eq!(
        other
            .get("/tenants/other/vhosts/acme.example/access-log")
            .await
            .0,
        404
    );
    assert_eq!(
        admin
            .get("/tenants/other/vhosts/acme.example/access-log")
            .await
            .0,
        404
    );
    assert_eq!(app.anon().get(LOG).await.0, 401);
}

#[tokio::test]
async fn the_dashboard_shows_a_log_with_a_search_box_to_its_tenant_only() {
    let (app, _admin) = logged().await;
    let acme = Dashboard::sign_in(&app.base, "acme", PASSWORD).await;
    let (status, page) = acme.get(LOG).await;
    assert_eq!(status, 200);
    assert!(page.contains("GET /page/30 HTTP/1.1"), "{page}");
    assert!(page.contains("<form class=\"searchbar\" method=\"get\""));
    // Log text is escaped like everything else.
    assert!(!page.contains("<script>alert"), "unescaped log text");
    let at = page.find("GET /page/30 ").unwrap();
    assert!(
        page[at..].contains("&#60;script&#62;alert(30)"),
        "{}",
        &page[at..at + 200]
    );
    assert!(page.contains("30 lines."));

    let (_, page) = acme.get(&format!("{LOG}?q=%22+404+&lines=50")).await;
    assert_eq!(page.matches("&#34; 404 12").count(), 3, "{page}");
    assert!(!page.contains("/page/29 "));
    assert!(
        page.contains("value=\"&#34; 404 \""),
        "the search is shown again"
    );

    let (status, page) = acme.get(&format!("{LOG}?q=%07bell")).await;
    assert_eq!(status, 422);
    assert!(
        page.contains("q: must not contain control characters"),
        "{page}"
    );
    let (status, _) = acme.get(&format!("{LOG}?lines=99999")).await;
    assert_eq!(status, 422);

    // The tenant page and the vhost page link to it.
    let (_, page) = acme.get("/tenants/acme").await;
    assert!(page.contains(&format!("href=\"{LOG}\"")));
    let (_, page) = acme.get("/vhosts/acme.example").await;
    assert!(page.contains(&format!("href=\"{LOG}\"")));

    // Another tenant gets not found, bad input or not.
    let other = Dashboard::sign_in(&app.base, "other", PASSWORD).await;
    for path in [
        LOG.to_owned(),
        format!("{LOG}?q=%07"),
        "/tenants/other/vhosts/acme.example/access-log".into(),
    ] {
        let (status, page) = other.get(&path).await;
        assert_eq!(status, 404, "{path}");
        assert!(!page.contains("page/"), "{path}");
    }
}

#[tokio::test]
async fn metrics_are_for_admins_only() {
    let (app, admin) = logged().await;
    let get = |auth: Option<String>| {
        let base = app.base.clone();
        async move {
            let mut req = reqwest::Client::new().get(format!("{base}/metrics"));
            if let Some(auth) = auth {
                req = req.header("authorization", auth);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, ct, r.text().await.unwrap())
        }
    };
    let token = app.token(ADMIN, ADMIN_PASSWORD).await;
    let (status, ct, text) = get(Some(format!("Bearer {token}"))).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        ct.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    // The panel runs without an agent here: no proxy answers.
    assert!(text.contains("\nlodge_proxy_up 0\n"), "{text}");
    assert!(
        text.contains("lodge_tenants{state=\"active\"} 2\n"),
        "{text}"
    );
    assert!(text.contains("lodge_vhosts 2\n"), "{text}");

    let tenant = app.token("acme", PASSWORD).await;
    assert_eq!(get(Some(format!("Bearer {tenant}"))).await.0, 403);
    let (status, _, _) = get(None).await;
    assert_eq!(status, 401);
    assert_eq!(get(Some("Bearer lodge_nonsense".into())).await.0, 401);
    assert_eq!(get(Some("Basic YWRtaW46eA==".into())).await.0, 401);

    // A dashboard session works the same way.
    let dash = Dashboard::sign_in(&app.base, ADMIN, ADMIN_PASSWORD).await;
    let (status, text) = dash.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE lodge_tenants gauge"));
    let dash = Dashboard::sign_in(&app.base, "acme", PASSWORD).await;
    assert_eq!(dash.get("/metrics").await.0, 403);
    drop(admin);
}
