//! The dashboard's forms: CSRF on every state-changing form, hostile values with inline
//! errors and nothing stored, sign-in throttling, TOTP, and roles on the pages.

use crate::dashboard::{csrf_of, login_form, Dashboard};
use crate::harness::{assert_unchanged, snapshot, spawn_app, App};
use serde_json::json;

/// Values no name, domain, path or setting may accept.
pub const HOSTILE: &[&str] = &[
    "",
    " ",
    "a;id",
    "a|id",
    "a&&id",
    "$(id)",
    "`id`",
    "a>b",
    "a<b",
    "a\nb",
    "a\r\nb",
    "a\0b",
    "..",
    "../../etc/passwd",
    "%2e%2e/x",
    "%2e%2e",
    "/etc",
    "~root",
    "a\\b",
    "a'b",
    "a\"b",
    "{{7*7}}",
    "${jndi:ldap://x}",
    "exаmple.com",
    "ｅｘａｍｐｌｅ.com",
    "exa\u{200b}mple.com",
    "\u{202e}moc.elpmaxe",
    "example.com.",
    "-example.com",
    "a b",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com",
    "<script>alert(1)</script>",
];

/// A form post: path, fields, and the field whose error is expected.
type FormCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

/// An app with a plan, a tenant `acme` with a vhost, a reseller, and a signed-in admin.
async fn seeded() -> (App, Dashboard, String) {
    let app = spawn_app().await;
    let token = app.token("admin", "admin-password-1").await;
    let api = app.api(&token);
    assert_eq!(api.post("/plans", json!({"name": "basic"})).await.0, 201);
    assert_eq!(
        api.post("/tenants", json!({"name": "acme", "plan": "basic"}))
            .await
            .0,
        201
    );
    assert_eq!(
        api.post("/tenants/acme/vhosts", json!({"domain": "acme.example"}))
            .await
            .0,
        201
    );
    let r = api
        .post(
            "/users",
            json!({"username": "resellerone", "password": "reseller-password", "role": "reseller"}),
        )
        .await;
    assert_eq!(r.0, 201);
    let dash = Dashboard::sign_in(&app.base, "admin", "admin-password-1").await;
    (app, dash, token)
}

#[tokio::test]
async fn every_state_changing_form_requires_the_csrf_token() {
    let (app, dash, token) = seeded().await;
    let admin = app.api(&token);
    let before = snapshot(&app, &admin).await;
    let forms: &[(&str, &[(&str, &str)])] = &[
        ("/tenants", &[("name", "newtenant"), ("plan", "basic")]),
        ("/tenants/acme/php", &[("php.memory_limit", "128M")]),
        ("/tenants/acme/plan", &[("plan", "basic")]),
        ("/tenants/acme/suspend", &[]),
        ("/tenants/acme/unsuspend", &[]),
        ("/tenants/acme/delete", &[("confirm", "acme")]),
        ("/tenants/acme/vhosts", &[("domain", "new.example")]),
        ("/vhosts/acme.example", &[("docroot", "public_html")]),
        ("/vhosts/acme.example/delete", &[]),
        (
            "/resellers",
            &[
                ("username", "resellertwo"),
                ("password", "reseller-password"),
            ],
        ),
        ("/resellers/resellerone", &[("max_tenants", "3")]),
        ("/resellers/resellerone/delete", &[]),
        ("/plans", &[("name", "gold")]),
        ("/plans/basic", &[("max_vhosts", "3")]),
        ("/plans/basic/delete", &[]),
        (
            "/account/password",
            &[
                ("current_password", "admin-password-1"),
                ("new_password", "another-password"),
                ("confirm_password", "another-password"),
            ],
        ),
        (
            "/account/totp",
            &[
                ("secret", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                ("code", "000000"),
            ],
        ),
        ("/account/totp/disable", &[("code", "000000")]),
        ("/tokens", &[("name", "x")]),
        ("/tokens/1/revoke", &[]),
        ("/logout", &[]),
    ];
    for (path, fields) in forms {
        let (status, body) = dash.post_raw(path, fields).await;
        assert_eq!(status, 403, "POST {path} without a CSRF token: {body}");
        let mut wrong = vec![("csrf", "0123456789abcdef0123456789abcdef0123456789abcdef")];
        wrong.extend_from_slice(fields);
        let (status, _) = dash.post_raw(path, &wrong).await;
        assert_eq!(status, 403, "POST {path} with a wrong CSRF token");
    }
    assert_unchanged(&before, &snapshot(&app, &admin).await, "refused forms");
    // The session survived: the logout without a token did not sign out.
    assert_eq!(dash.get("/tenants").await.0, 200);

    // The sign-in form has its own token, bound to a cookie.
    let (http, csrf) = login_form(&app.base).await;
    let no_token = http
        .post(format!("{}/login", app.base))
        .form(&[("username", "admin"), ("password", "admin-password-1")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status().as_u16(), 403);
    let fresh = crate::dashboard::client();
    let foreign = fresh
        .post(format!("{}/login", app.base))
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", "admin"),
            ("password", "admin-password-1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        foreign.status().as_u16(),
        403,
        "a token without its cookie is refused"
    );
}

#[tokio::test]
async fn hostile_values_through_the_forms_are_refused_inline_and_store_nothing() {
    let (app, dash, token) = seeded().await;
    let admin = app.api(&token);
    let before = snapshot(&app, &admin).await;
    assert!(HOSTILE.len() >= 30);
    for value in HOSTILE {
        let cases: Vec<FormCase> = vec![
            ("/tenants", vec![("name", value), ("plan", "basic")], "name"),
            (
                "/tenants",
                vec![("name", "okname"), ("plan", "basic"), ("password", value)],
                "password",
            ),
            ("/tenants/acme/vhosts", vec![("domain", value)], "domain"),
            (
                "/tenants/acme/vhosts",
                vec![("domain", "fine.example"), ("aliases", value)],
                "aliases",
            ),
            (
                "/tenants/acme/vhosts",
                vec![("domain", "fine.example"), ("docroot", value)],
                "docroot",
            ),
            (
                "/tenants/acme/vhosts",
                vec![("domain", "fine.example"), ("front_controller", value)],
                "front_controller",
            ),
            (
                "/tenants/acme/vhosts",
                vec![("domain", "fine.example"), ("tls_mode", value)],
                "tls_mode",
            ),
            (
                "/tenants/acme/vhosts",
                vec![("domain", "fine.example"), ("redirect_www", value)],
                "redirect_www",
            ),
            ("/vhosts/acme.example", vec![("docroot", value)], "docroot"),
            (
                "/tenants/acme/php",
                vec![("php.memory_limit", value)],
                "memory_limit",
            ),
            (
                "/tenants/acme/php",
                vec![("php.date.timezone", value)],
                "date.timezone",
            ),
            (
                "/tenants/acme/php",
                vec![("php.max_execution_time", value)],
                "max_execution_time",
            ),
            ("/plans", vec![("name", value)], "name"),
            (
                "/plans",
                vec![("name", "okplan"), ("max_vhosts", value)],
                "max_vhosts",
            ),
            (
                "/resellers",
                vec![("username", value), ("password", "reseller-password")],
                "username",
            ),
            (
                "/resellers",
                vec![
                    ("username", "okreseller"),
                    ("password", "reseller-password"),
                    ("max_tenants", value),
                ],
                "max_tenants",
            ),
        ];
        for (path, fields, field) in cases {
            // Values that are harmless for a field (an empty optional field, a space in an
            // alias list that splits on spaces) are skipped; the others must be refused.
            if harmless(path, field, value) {
                continue;
            }
            let (status, body) = dash.post(path, &fields).await;
            assert!(
                status == 422 || status == 409,
                "POST {path} {field}={value:?}: expected 422, got {status}"
            );
            assert!(
                body.contains("field-error") || body.contains("alert-error"),
                "POST {path} {field}={value:?}: no inline error shown"
            );
            assert!(
                !body.contains("<script>alert(1)</script>"),
                "POST {path} echoed markup unescaped"
            );
        }
    }
    assert_unchanged(&before, &snapshot(&app, &admin).await, "refused forms");
}

/// Whether `value` is legitimately accepted (or ignored) for this form field.
fn harmless(path: &str, field: &str, value: &str) -> bool {
    let blank = value.trim().is_empty();
    match field {
        // Any 10 to 256 printable characters make a password.
        "password" => blank || lodge::domain::Password::parse(value).is_ok(),
        // Optional fields: empty means "not given" / "default".
        "docroot" => blank || lodge::domain::DocRoot::parse(value).is_ok(),
        "front_controller" => blank || lodge::domain::FrontController::parse(value).is_ok(),
        "memory_limit" | "date.timezone" | "max_execution_time" | "max_vhosts" | "max_tenants"
        | "tls_mode" | "redirect_www" => blank,
        // The alias box splits on spaces, commas and newlines: blank or "a b" parts are names checked one by one.
        "aliases" => blank,
        _ => path == "/vhosts/acme.example" && blank,
    }
}

#[tokio::test]
async fn inline_errors_name_the_field_and_keep_the_input() {
    let (app, dash, _) = seeded().await;
    let (status, body) = dash
        .post(
            "/tenants/acme/vhosts",
            &[("domain", "bad_domain.example"), ("docroot", "../up")],
        )
        .await;
    assert_eq!(status, 422);
    assert!(body.contains("id=\"domain\""));
    assert!(
        body.contains("input invalid\" id=\"domain\""),
        "the domain input is marked invalid"
    );
    assert!(
        body.contains("input invalid\" id=\"docroot\""),
        "the docroot input is marked invalid"
    );
    assert!(
        body.contains("contains &#39;_&#39;")
            || body.contains("contains '_'")
            || body.contains("contains &#x27;_&#x27;"),
        "the message says what is wrong"
    );
    assert!(
        body.contains("value=\"bad_domain.example\""),
        "the submitted value is kept"
    );
    // A taken domain is a 409 on the domain field.
    let (status, body) = dash
        .post("/tenants/acme/vhosts", &[("domain", "acme.example")])
        .await;
    assert_eq!(status, 409);
    assert!(body.contains("already served"));
    // And a good one goes through to the tenant page.
    let (status, _) = dash
        .post(
            "/tenants/acme/vhosts",
            &[("domain", "shop.acme.example"), ("php", "on")],
        )
        .await;
    assert_eq!(status, 303);
    let (_, page) = dash.get("/tenants/acme").await;
    assert!(page.contains("shop.acme.example"));
    drop(app);
}

#[tokio::test]
async fn dashboard_sign_in_is_throttled() {
    let app = spawn_app().await;
    for _ in 0..5 {
        let err = Dashboard::try_sign_in(&app.base, "admin", "wrong-password", None)
            .await
            .err()
            .expect("refused");
        assert_eq!(err.0, 401);
    }
    let (http, csrf) = login_form(&app.base).await;
    let r = http
        .post(format!("{}/login", app.base))
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", "admin"),
            ("password", "admin-password-1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        429,
        "the right password is refused while throttled"
    );
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 0 && wait <= 15 * 60);
}

#[tokio::test]
async fn totp_second_factor_for_the_dashboard_and_the_api() {
    let app = spawn_app().await;
    let dash = Dashboard::sign_in(&app.base, "admin", "admin-password-1").await;
    let (_, account) = dash.get("/account").await;
    let secret = account
        .split("class=\"qr-secret\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("a secret to enrol")
        .to_owned();
    // Each code is accepted once, and the server allows one step of drift either way: the
    // steps before, at and after now make three codes, each used once below. Far enough from
    // a step's end that the server's clock stays within the same step meanwhile.
    let mut now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now % 30 > 22 {
        tokio::time::sleep(std::time::Duration::from_secs(31 - now % 30)).await;
        now += 31 - now % 30;
    }
    let code_at = |t: u64| lodge::panel::auth::totp::code_at(&secret, t).unwrap();
    let (code, sign_in_code, api_code) = (code_at(now - 30), code_at(now), code_at(now + 30));
    let wrong = if [&code, &sign_in_code, &api_code].contains(&&"000000".to_owned()) {
        "111111"
    } else {
        "000000"
    };
    let (status, _) = dash
        .post("/account/totp", &[("secret", &secret), ("code", wrong)])
        .await;
    assert_eq!(status, 422, "a wrong code does not enable TOTP");
    let (status, _) = dash
        .post("/account/totp", &[("secret", &secret), ("code", &code)])
        .await;
    assert_eq!(status, 303);

    let (status, body) = Dashboard::try_sign_in(&app.base, "admin", "admin-password-1", None)
        .await
        .err()
        .expect("a code is needed");
    assert_eq!(status, 401);
    assert!(body.contains("authenticator"), "the page asks for the code");
    assert_eq!(
        Dashboard::try_sign_in(&app.base, "admin", "admin-password-1", Some(wrong))
            .await
            .err()
            .unwrap()
            .0,
        401
    );
    // The code that turned TOTP on was used up there.
    assert_eq!(
        Dashboard::try_sign_in(&app.base, "admin", "admin-password-1", Some(&code))
            .await
            .err()
            .unwrap()
            .0,
        401,
        "a code used once is refused"
    );
    assert!(
        Dashboard::try_sign_in(&app.base, "admin", "admin-password-1", Some(&sign_in_code))
            .await
            .is_ok()
    );
    assert_eq!(
        Dashboard::try_sign_in(&app.base, "admin", "admin-password-1", Some(&sign_in_code))
            .await
            .err()
            .unwrap()
            .0,
        401,
        "a code used to sign in is not accepted again"
    );
    // A signed-in session cannot replace the second factor without a current code.
    let (status, _) = dash
        .post("/account/totp", &[("secret", &secret), ("code", &api_code)])
        .await;
    assert_eq!(status, 409, "TOTP already on is not replaced");

    // The API's sign-in needs the code too.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/v1/tokens", app.base))
        .json(&json!({"username": "admin", "password": "admin-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .post(format!("{}/api/v1/tokens", app.base))
        .json(&json!({"username": "admin", "password": "admin-password-1", "totp": api_code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
}

#[tokio::test]
async fn pages_follow_the_role_matrix() {
    let (app, _admin, token) = seeded().await;
    let api = app.api(&token);
    assert_eq!(api.post("/tenants", json!({"name": "tenanta", "plan": "basic", "password": "tenant-password", "owner": "resellerone"})).await.0, 201);
    assert_eq!(
        api.post(
            "/tenants/tenanta/vhosts",
            json!({"domain": "tenanta.example"})
        )
        .await
        .0,
        201
    );

    let reseller = Dashboard::sign_in(&app.base, "resellerone", "reseller-password").await;
    let (_, list) = reseller.get("/tenants").await;
    assert!(
        list.contains("tenanta") && !list.contains(">acme<"),
        "a reseller lists only its own tenants"
    );
    assert_eq!(
        reseller.get("/tenants/acme").await.0,
        404,
        "another owner's tenant is not found"
    );
    assert_eq!(reseller.get("/vhosts/acme.example").await.0, 404);
    assert_eq!(reseller.post("/tenants/acme/suspend", &[]).await.0, 404);
    assert_eq!(reseller.get("/resellers").await.0, 403);
    assert_eq!(reseller.get("/plans/new").await.0, 403);
    assert_eq!(reseller.post("/plans", &[("name", "sneaky")]).await.0, 403);

    let tenant = Dashboard::sign_in(&app.base, "tenanta", "tenant-password").await;
    let (_, own) = tenant.get("/tenants/tenanta").await;
    assert!(own.contains("tenanta.example"));
    assert!(
        !own.contains("action=\"/tenants/tenanta/suspend\""),
        "a tenant cannot suspend itself"
    );
    assert_eq!(tenant.get("/tenants/acme").await.0, 404);
    assert_eq!(tenant.get("/vhosts/acme.example").await.0, 404);
    assert_eq!(tenant.get("/tenants/new").await.0, 403);
    assert_eq!(
        tenant
            .post("/tenants", &[("name", "another"), ("plan", "basic")])
            .await
            .0,
        403
    );
    assert_eq!(tenant.post("/tenants/tenanta/suspend", &[]).await.0, 403);
    assert_eq!(tenant.get("/resellers").await.0, 403);
    // What a tenant may do: its PHP settings and its vhosts.
    assert_eq!(
        tenant
            .post("/tenants/tenanta/php", &[("php.memory_limit", "128M")])
            .await
            .0,
        303
    );
    assert_eq!(
        tenant
            .post(
                "/tenants/tenanta/vhosts",
                &[("domain", "blog.tenanta.example")]
            )
            .await
            .0,
        303
    );
    let (_, t) = api.get("/tenants/tenanta").await;
    assert_eq!(t["php"]["memory_limit"], "128M");
    assert_eq!(t["vhost_count"], 2);
    // The token forms exist for everyone, and show a new token once.
    let (status, page) = tenant.post("/tokens", &[("name", "deploy")]).await;
    assert_eq!(status, 200);
    assert!(page.contains("token-reveal"));
    let (_, again) = tenant.get("/tokens").await;
    assert!(
        !again.contains("token-reveal"),
        "the token is shown only once"
    );
    assert!(csrf_of(&again).is_some());
}
