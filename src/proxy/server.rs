//! The proxy's request handling: guards first (the Host agrees with the connection's SNI and
//! names a site that is not suspended and needs no redirect), then the site's static files
//! or its PHP.

use super::access_log::AccessLog;
use super::h1::ReqBody;
use super::metrics::Metrics;
use super::observe::Observed;
use super::pages;
use super::php::{self, split_script, Bodies, CgiAddrs, Pools};
use super::routes::{Route, Table};
use super::static_files::{self, Lookup, StaticRequest};
use super::{host, tls, Body};
use crate::domain::RedirectWww;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, RwLock};

/// What every connection shares: the current routes, the FastCGI pools, the budgets of
/// request bodies, the metrics and the access log.
pub struct Shared {
    pub table: RwLock<Arc<Table>>,
    pub pools: Pools,
    pub bodies: Bodies,
    pub metrics: Arc<Metrics>,
    /// `None`: no access log is written.
    pub access_log: Option<AccessLog>,
}

impl Shared {
    pub fn new(
        table: Table,
        bodies: Bodies,
        metrics: Arc<Metrics>,
        access_log: Option<AccessLog>,
    ) -> Self {
        Self {
            table: RwLock::new(Arc::new(table)),
            pools: Pools::default(),
            bodies,
            metrics,
            access_log,
        }
    }

    pub fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swaps in a new table; requests in flight keep the one they started with. Metrics of
    /// vhosts and tenants no longer routed are dropped.
    pub fn replace(&self, table: Table) {
        let vhosts = table.vhosts();
        self.metrics.retain(
            &vhosts.keys().map(|d| (*d).to_owned()).collect(),
            &vhosts
                .values()
                .map(|r| r.tenant.as_str().to_owned())
                .collect(),
        );
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }
}

/// Facts about the connection a request came on.
#[derive(Debug, Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    pub sni: Option<String>,
    /// On a plain connection: where static file parts wait to be sent with sendfile(2).
    pub sendfile: Option<super::sendfile::Sendfile>,
    /// The addresses as PHP gets them: written at the connection's first PHP request.
    cgi: Arc<std::sync::OnceLock<CgiAddrs>>,
}

impl Conn {
    pub fn new(
        peer: SocketAddr,
        local: SocketAddr,
        tls: bool,
        sni: Option<String>,
        sendfile: Option<super::sendfile::Sendfile>,
    ) -> Self {
        Self {
            peer,
            local,
            tls,
            sni,
            sendfile,
            cgi: Arc::default(),
        }
    }

    /// The addresses as PHP gets them, formatted once per connection.
    pub fn cgi(&self) -> &CgiAddrs {
        self.cgi
            .get_or_init(|| CgiAddrs::new(self.peer, self.local))
    }
}

/// Decodes `%xx` escapes; `None` for a malformed escape or a byte no path may carry
/// (NUL, CR, LF: the CVE-2019-11043 class), or a result that is not UTF-8.
pub fn decode_path(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            i += 3;
            u8::from_str_radix(hex, 16).ok()?
        } else {
            i += 1;
            bytes[i - 1]
        };
        if matches!(b, 0 | b'\r' | b'\n') {
            return None;
        }
        out.push(b);
    }
    String::from_utf8(out).ok()
}

/// The host a request names: its Host header, or on HTTP/2 its `:authority`.
fn request_host<B>(req: &Request<B>) -> &str {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default()
}

/// Handles one request.
pub async fn handle(shared: Arc<Shared>, conn: Conn, req: Request<ReqBody>) -> Response<Body> {
    let tls = conn.tls;
    // One look at the routes per request: the answer and the HSTS decision share it.
    let host = host::name_of(request_host(&req)).into_owned();
    let found = shared.table().lookup(&host).cloned();
    let hsts = found.as_ref().is_some_and(|r| r.redirect_https);
    let observed = Observed::start(shared.clone(), found.clone(), &conn, &req);
    let mut response = serve(shared, conn, req, host, found).await;
    // A site that sends HTTP to HTTPS also tells browsers to stay there (HSTS).
    if tls && hsts {
        response.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    observed.finish(&response);
    response
}

/// The guards, then the site's static files or its PHP. `host` is the name the request
/// gives (normalized), `found` its site.
async fn serve(
    shared: Arc<Shared>,
    conn: Conn,
    req: Request<ReqBody>,
    host: String,
    found: Option<Arc<Route>>,
) -> Response<Body> {
    // The guards: the name agrees with the connection's, names a site, and the site does
    // not refuse or redirect the request.
    if !tls::sni_matches_host(conn.sni.as_deref(), &host) {
        return pages::misdirected();
    }
    let Some(route) = found else {
        return pages::no_site();
    };
    if let Some(answer) = site_rules(&route, &conn, &req, &host) {
        return answer;
    }
    let Some(path) = decode_path(req.uri().path()) else {
        return pages::bad_address();
    };
    // The docroot, opened from the tenant's home without following any symlink on the way:
    // the tenant owns those directories and could point one at another tenant's site.
    let Ok(root) = route.open_docroot() else {
        return pages::no_content();
    };
    let php = |script, path_info| php::Call {
        route: &route,
        host: &host,
        script,
        path_info,
    };
    match choose(root.as_fd(), &route, &path) {
        Handler::Php(script, path_info) => {
            php::serve(&shared, &conn, req, php(&script, path_info)).await
        }
        Handler::Forbidden => pages::forbidden(),
        Handler::NotFound => pages::not_found(),
        Handler::Static => {
            let response = serve_static(root.as_fd(), &route, &conn, &req, &path);
            match response.status() {
                StatusCode::NOT_FOUND => match route.front_controller.as_deref() {
                    Some(fc) if route.php => php::serve(&shared, &conn, req, php(fc, "")).await,
                    _ => pages::not_found(),
                },
                StatusCode::FORBIDDEN => pages::forbidden(),
                _ => response,
            }
        }
    }
}

/// What a site answers before looking at its files: that it is suspended, or a redirect
/// to HTTPS or to its `www.` or apex name.
fn site_rules<B>(
    route: &Route,
    conn: &Conn,
    req: &Request<B>,
    host: &str,
) -> Option<Response<Body>> {
    if route.suspended {
        return Some(pages::suspended());
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if route.redirect_https && !conn.tls {
        return Some(pages::redirect(&format!("https://{host}{path_and_query}")));
    }
    let scheme = if conn.tls { "https" } else { "http" };
    match route.redirect_www {
        RedirectWww::ToWww if !host.starts_with("www.") => Some(pages::redirect(&format!(
            "{scheme}://www.{host}{path_and_query}"
        ))),
        RedirectWww::ToApex if host.starts_with("www.") => Some(pages::redirect(&format!(
            "{scheme}://{}{path_and_query}",
            &host[4..]
        ))),
        _ => None,
    }
}

/// Who answers a request inside a site.
enum Handler<'a> {
    /// A PHP script (a path inside the docroot) and the path after it (PATH_INFO).
    Php(Cow<'a, str>, &'a str),
    /// The static files (and for what is not there, the front controller if there is one).
    Static,
    /// A script that is there but is not served.
    Forbidden,
    /// A script that is not there, and no front controller.
    NotFound,
}

/// For a PHP site: a path with a `.php` segment goes to that script (or the front controller
/// if it is missing), a directory to its `index.php` if it has one; everything else is
/// static.
fn choose<'a>(root: BorrowedFd<'_>, route: &'a Route, path: &'a str) -> Handler<'a> {
    if !route.php {
        return Handler::Static;
    }
    let lookup = |script: &str| static_files::open_beneath(root, route.id, script);
    if let Some((script, path_info)) = split_script(path) {
        return match lookup(script) {
            Lookup::File(_) => Handler::Php(script.into(), path_info),
            Lookup::Forbidden => Handler::Forbidden,
            _ => match route.front_controller.as_deref() {
                Some(fc) => Handler::Php(fc.into(), ""),
                None => Handler::NotFound,
            },
        };
    }
    if path.ends_with('/') {
        let index = format!("{path}index.php");
        if matches!(lookup(&index), Lookup::File(_)) {
            return Handler::Php(index.into(), "");
        }
    }
    Handler::Static
}

/// The static file (or directory index) at `path`.
fn serve_static(
    root: BorrowedFd<'_>,
    route: &Route,
    conn: &Conn,
    req: &Request<ReqBody>,
    path: &str,
) -> Response<Body> {
    let request = StaticRequest {
        method: req.method(),
        path,
        query: req.uri().query().filter(|q| !q.is_empty()),
        headers: req.headers(),
    };
    // sendfile(2) under HTTP/1 only: HTTP/2 interleaves the frames of several responses.
    let sendfile = conn
        .sendfile
        .as_ref()
        .filter(|_| req.version() <= hyper::Version::HTTP_11);
    static_files::serve(
        root,
        route.id,
        &request,
        static_files::DEFAULT_INDEX,
        sendfile,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_refuses_control_bytes() {
        assert_eq!(decode_path("/a%20b").as_deref(), Some("/a b"));
        assert_eq!(decode_path("/x.php%0a"), None);
        assert_eq!(decode_path("/x%00.php"), None);
        assert_eq!(decode_path("/x%0d"), None);
        assert_eq!(decode_path("/bad%zz"), None);
        assert_eq!(decode_path("/%2e%2e/etc").as_deref(), Some("/../etc"));
    }

    use crate::proxy::testing::{conn, get, Site, DOMAIN};

    #[tokio::test]
    async fn a_host_with_a_trailing_dot_is_the_site_over_tls_too() {
        let site = Site::new("trailing-dot");
        site.write("index.html", "the site");
        let shared = Site::shared(site.entry());
        for (tls, host) in [
            (false, "a.example."),
            (true, "a.example."),
            (true, "A.Example.:443"),
            (true, "www.a.example"),
        ] {
            let sni = tls.then_some(if host.starts_with("www.") {
                "www.a.example"
            } else {
                DOMAIN
            });
            let r = get(shared.clone(), conn(tls, sni), host, "/").await;
            assert_eq!((r.status, r.text().as_str()), (200, "the site"), "{host}");
        }
        // A name the connection was not opened for is refused.
        let r = get(
            shared.clone(),
            conn(true, Some(DOMAIN)),
            "www.a.example",
            "/",
        )
        .await;
        assert_eq!(r.status, 421);
        let r = get(shared.clone(), conn(true, Some(DOMAIN)), "a.example:x", "/").await;
        assert_eq!(r.status, 421);
    }

    #[tokio::test]
    async fn guards_come_before_the_site() {
        let site = Site::new("guards");
        site.write("index.html", "the site");
        let plain = || conn(false, None);

        let r = get(Site::shared(site.entry()), plain(), "b.example", "/").await;
        assert_eq!(r.status, 404);
        assert!(r.text().contains("No site here"), "{}", r.text());

        let mut entry = site.entry();
        entry.suspended = true;
        let r = get(Site::shared(entry), plain(), DOMAIN, "/").await;
        assert_eq!((r.status, r.header("retry-after")), (503, Some("3600")));

        let mut entry = site.entry();
        entry.redirect_https = true;
        let shared = Site::shared(entry);
        let r = get(shared.clone(), plain(), "A.example.:8080", "/x?y=1").await;
        assert_eq!(
            (r.status, r.header("location")),
            (301, Some("https://a.example/x?y=1"))
        );
        let r = get(shared, conn(true, Some(DOMAIN)), DOMAIN, "/").await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("strict-transport-security"),
            Some("max-age=31536000")
        );

        let mut entry = site.entry();
        entry.redirect_www = "to-www".into();
        let r = get(Site::shared(entry), plain(), DOMAIN, "/x").await;
        assert_eq!(
            (r.status, r.header("location")),
            (301, Some("http://www.a.example/x"))
        );

        let r = get(Site::shared(site.entry()), plain(), DOMAIN, "/a%0a.php").await;
        assert_eq!(r.status, 400);
        let r = get(Site::shared(site.entry()), plain(), DOMAIN, "/missing.php").await;
        assert_eq!(r.status, 404);
        let r = get(Site::shared(site.entry()), plain(), DOMAIN, "/.env").await;
        assert_eq!(r.status, 403);
    }
}
