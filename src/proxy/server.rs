//! The proxy's request handling: Host (and SNI) to vhost, redirects, suspended and unknown
//! hosts, static files from the docroot, PHP through the tenant's pool.

use super::access_log::AccessLog;
use super::exchange::Params;
use super::h1::ReqBody;
use super::metrics::Metrics;
use super::observe::Observed;
use super::php::{split_script, PhpError, Pools, RequestBody};
use super::routes::{Route, Table};
use super::static_files::{self, Lookup, StaticRequest};
use super::{full, Body};
use crate::domain::RedirectWww;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

/// What every connection shares: the current routes, the FastCGI pools, the metrics and
/// the access log.
pub struct Shared {
    pub table: RwLock<Arc<Table>>,
    pub pools: Pools,
    pub metrics: Arc<Metrics>,
    /// `None`: no access log is written.
    pub access_log: Option<AccessLog>,
}

impl Shared {
    pub fn new(table: Table, metrics: Arc<Metrics>, access_log: Option<AccessLog>) -> Self {
        Self {
            table: RwLock::new(Arc::new(table)),
            pools: Pools::default(),
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

/// REMOTE_ADDR, REMOTE_PORT, SERVER_ADDR and SERVER_PORT of a connection.
#[derive(Debug)]
pub struct CgiAddrs {
    pub remote_addr: String,
    pub remote_port: String,
    pub server_addr: String,
    pub server_port: String,
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
        self.cgi.get_or_init(|| CgiAddrs {
            remote_addr: self.peer.ip().to_string(),
            remote_port: self.peer.port().to_string(),
            server_addr: self.local.ip().to_string(),
            server_port: self.local.port().to_string(),
        })
    }
}

fn page(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>body{{font:16px system-ui,sans-serif;color:#1f2933;background:#f6f7f9;display:grid;place-items:center;min-height:90vh;margin:0}}\
         main{{text-align:center;padding:2rem}}h1{{font-size:1.4rem;margin:.2rem 0}}p{{color:#5f6b7a}}b{{font-size:3rem;color:#0f766e}}</style></head>\
         <body><main><b>{code}</b><h1>{title}</h1><p>{text}</p></main></body></html>",
        code = status.as_u16()
    );
    let mut r = Response::new(full(html));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn redirect(location: &str) -> Response<Body> {
    let mut r = Response::new(super::empty());
    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
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
fn request_host<B>(req: &Request<B>) -> String {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_default()
}

/// Handles one request.
pub async fn handle(shared: Arc<Shared>, conn: Conn, req: Request<ReqBody>) -> Response<Body> {
    let tls = conn.tls;
    // One look at the routes per request: the answer and the HSTS decision share it.
    let host = request_host(&req);
    let found = shared.table().lookup(&host).cloned();
    let hsts = found.as_ref().is_some_and(|r| r.redirect_https);
    let observed = Observed::start(shared.clone(), found.clone(), &conn, &req);
    let mut response = route(shared, conn, req, host, found).await;
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

async fn route(
    shared: Arc<Shared>,
    conn: Conn,
    req: Request<ReqBody>,
    host: String,
    found: Option<Arc<Route>>,
) -> Response<Body> {
    let bare_host = host
        .rsplit_once(':')
        .map_or(host.as_str(), |(h, _)| h)
        .to_ascii_lowercase();
    if let Some(sni) = &conn.sni {
        if !sni.eq_ignore_ascii_case(&bare_host) {
            return page(
                StatusCode::MISDIRECTED_REQUEST,
                "Misdirected request",
                "This connection was opened for another site.",
            );
        }
    }
    let Some(route) = found else {
        return page(
            StatusCode::NOT_FOUND,
            "No site here",
            "No site is configured for this address.",
        );
    };
    if route.suspended {
        let mut r = page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Site suspended",
            "This site is suspended. Its owner can contact their provider.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("3600"));
        return r;
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if route.redirect_https && !conn.tls {
        return redirect(&format!("https://{bare_host}{path_and_query}"));
    }
    match route.redirect_www {
        RedirectWww::ToWww if !bare_host.starts_with("www.") => {
            let scheme = if conn.tls { "https" } else { "http" };
            return redirect(&format!("{scheme}://www.{bare_host}{path_and_query}"));
        }
        RedirectWww::ToApex if bare_host.starts_with("www.") => {
            let scheme = if conn.tls { "https" } else { "http" };
            return redirect(&format!("{scheme}://{}{path_and_query}", &bare_host[4..]));
        }
        _ => {}
    }
    let Some(path) = decode_path(req.uri().path()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The address contains characters that are not allowed.",
        );
    };
    let query = req.uri().query().unwrap_or("").to_owned();
    // The docroot, opened from the tenant's home without following any symlink on the way:
    // the tenant owns those directories and could point one at another tenant's site.
    let root = match route.open_docroot() {
        Ok(fd) => fd,
        Err(_) => {
            return page(
                StatusCode::NOT_FOUND,
                "Not found",
                "This site has no content yet.",
            )
        }
    };
    use std::os::fd::AsFd;

    if route.php {
        if let Some((script, path_info)) = split_script(&path) {
            return match static_files::open_beneath_cached(root.as_fd(), route.id, script) {
                Lookup::File(_) => {
                    php(
                        &shared, &route, &conn, req, &bare_host, script, path_info, &query,
                    )
                    .await
                }
                Lookup::Forbidden => page(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "This file is not served.",
                ),
                _ => match &route.front_controller {
                    Some(fc) => {
                        let fc = fc.clone();
                        php(&shared, &route, &conn, req, &bare_host, &fc, "", &query).await
                    }
                    None => page(
                        StatusCode::NOT_FOUND,
                        "Not found",
                        "There is nothing at this address.",
                    ),
                },
            };
        }
        if path.ends_with('/')
            && matches!(
                static_files::open_beneath_cached(
                    root.as_fd(),
                    route.id,
                    &format!("{path}index.php")
                ),
                Lookup::File(_)
            )
        {
            let script = format!("{path}index.php");
            return php(&shared, &route, &conn, req, &bare_host, &script, "", &query).await;
        }
    }
    let version = req.version();
    let request = StaticRequest {
        method: req.method(),
        path: &path,
        query: Some(&query).filter(|q| !q.is_empty()).map(|q| q.as_str()),
        headers: req.headers(),
    };
    // sendfile(2) under HTTP/1 only: HTTP/2 interleaves the frames of several responses.
    let sendfile = conn
        .sendfile
        .as_ref()
        .filter(|_| version <= hyper::Version::HTTP_11);
    let response = static_files::serve_cached(
        root.as_fd(),
        route.id,
        &request,
        static_files::DEFAULT_INDEX,
        sendfile,
    );
    if response.status() == StatusCode::NOT_FOUND && route.php {
        if let Some(fc) = route.front_controller.clone() {
            return php(&shared, &route, &conn, req, &bare_host, &fc, "", &query).await;
        }
    }
    match response.status() {
        StatusCode::NOT_FOUND => page(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is nothing at this address.",
        ),
        StatusCode::FORBIDDEN => page(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "This file is not served.",
        ),
        _ => response,
    }
}

/// Request bodies up to this size are read before php-fpm is asked, and go out with the
/// parameters in one write.
const SMALL_BODY: u64 = 64 * 1024;
/// A body of unknown length (chunked, or HTTP/2 without `content-length`) is read whole
/// first, since PHP needs `CONTENT_LENGTH`; up to this size, or the site's limit if lower.
const UNSIZED_BODY: u64 = 16 << 20;

fn too_large() -> Response<Body> {
    page(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Too large",
        "The request is larger than this site accepts.",
    )
}

/// The request body, as it will go to php-fpm, and its length; or the answer that refuses
/// it.
async fn request_body(
    body: ReqBody,
    limit: u64,
) -> Result<(RequestBody, Option<u64>), Response<Body>> {
    use hyper::body::Body as _;
    let body: Incoming = match body {
        ReqBody::Empty => return Ok((RequestBody::Empty, None)),
        ReqBody::Incoming(body) => body,
    };
    if body.is_end_stream() {
        return Ok((RequestBody::Empty, None));
    }
    match body.size_hint().exact() {
        Some(n) if n > limit => Err(too_large()),
        Some(n) if n > SMALL_BODY => Ok((RequestBody::Stream(body, limit), Some(n))),
        known => {
            let cap = if known.is_some() {
                SMALL_BODY
            } else {
                limit.min(UNSIZED_BODY)
            };
            match Limited::new(body, cap as usize).collect().await {
                Ok(b) => {
                    let b = b.to_bytes();
                    let n = b.len() as u64;
                    Ok((RequestBody::Whole(b), Some(n)))
                }
                Err(e)
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some() =>
                {
                    if cap < limit {
                        Err(page(
                            StatusCode::LENGTH_REQUIRED,
                            "Length required",
                            "Send a body this large with a Content-Length.",
                        ))
                    } else {
                        Err(too_large())
                    }
                }
                Err(_) => Err(page(
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    "The request body could not be read.",
                )),
            }
        }
    }
}

/// Runs `script` (a path inside the docroot) through the tenant's pool.
#[allow(clippy::too_many_arguments)]
async fn php(
    shared: &Shared,
    route: &Route,
    conn: &Conn,
    req: Request<ReqBody>,
    host: &str,
    script: &str,
    path_info: &str,
    query: &str,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    // Bodies are bounded by the plan's upload limit.
    let (body, length) = match request_body(body, route.body_limit).await {
        Ok(b) => b,
        Err(refusal) => return refusal,
    };
    let docroot = route.docroot.to_string_lossy();
    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    // As nginx's fastcgi_params, with SCRIPT_FILENAME and PATH_INFO split off.
    let mut p = Params::with_capacity(1024);
    let mut filename = String::with_capacity(docroot.len() + script.len());
    filename.push_str(&docroot);
    filename.push_str(script);
    p.add("SCRIPT_FILENAME", &filename);
    p.add("QUERY_STRING", query);
    p.add("REQUEST_METHOD", parts.method.as_str());
    p.add("SCRIPT_NAME", script);
    p.add("REQUEST_URI", uri);
    p.add("DOCUMENT_URI", script);
    p.add("DOCUMENT_ROOT", docroot.as_bytes());
    p.add(
        "SERVER_PROTOCOL",
        if parts.version == hyper::Version::HTTP_2 {
            "HTTP/2.0"
        } else {
            "HTTP/1.1"
        },
    );
    p.add("REQUEST_SCHEME", if conn.tls { "https" } else { "http" });
    if conn.tls {
        p.add("HTTPS", "on");
    }
    p.add("GATEWAY_INTERFACE", "CGI/1.1");
    p.add("SERVER_SOFTWARE", "lodge");
    let addrs = conn.cgi();
    p.add("REMOTE_ADDR", &addrs.remote_addr);
    p.add("REMOTE_PORT", &addrs.remote_port);
    p.add("SERVER_ADDR", &addrs.server_addr);
    p.add("SERVER_PORT", &addrs.server_port);
    p.add("SERVER_NAME", host);
    p.add("REDIRECT_STATUS", "200");
    if !path_info.is_empty() {
        p.add("PATH_INFO", path_info);
        p.add("PATH_TRANSLATED", format!("{docroot}{path_info}"));
    }
    if length.is_some() || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        p.add("CONTENT_TYPE", content_type);
        p.add("CONTENT_LENGTH", length.unwrap_or(0).to_string());
    }
    p.add("HTTP_HOST", host);
    for name in parts.headers.keys() {
        // httpoxy: a client's Proxy header must never become HTTP_PROXY. A name with an
        // underscore is dropped (as nginx does): `x_real_ip` must not pass for `X-Real-IP`.
        if name == header::HOST
            || name == header::CONTENT_TYPE
            || name == header::CONTENT_LENGTH
            || name == "proxy"
            || name.as_str().contains('_')
        {
            continue;
        }
        // Repeated fields are joined, as one CGI variable holds them all (HTTP/2 sends
        // every cookie as a field of its own).
        let sep: &[u8] = if name == header::COOKIE { b"; " } else { b", " };
        let mut values = parts.headers.get_all(name).iter();
        let first = values.next().map_or(&b""[..], HeaderValue::as_bytes);
        match values.next() {
            None => p.add_header(name.as_str(), &[first], sep),
            Some(second) => {
                let mut all = vec![first, second.as_bytes()];
                all.extend(values.map(HeaderValue::as_bytes));
                p.add_header(name.as_str(), &all, sep);
            }
        }
    }
    let retry = matches!(parts.method, Method::GET | Method::HEAD);
    let result = shared
        .pools
        .run(&route.socket, route.max_children, &p, body, retry)
        .await;
    shared.metrics.php_result(route.tenant.as_str(), &result);
    match result {
        Ok(answer) => {
            let streamed = hyper::body::Body::size_hint(&answer.body).exact().is_none();
            let mut r = Response::new(if parts.method == Method::HEAD {
                super::empty()
            } else {
                answer.body
            });
            *r.status_mut() =
                StatusCode::from_u16(answer.head.status).unwrap_or(StatusCode::BAD_GATEWAY);
            for (name, value) in answer.head.headers {
                if let (Ok(n), Ok(v)) = (
                    header::HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    // A whole body gets its length from hyper; a streamed one keeps the
                    // script's, if it is a number (a download's progress bar needs it).
                    let keep_length = n == header::CONTENT_LENGTH
                        && streamed
                        && value.bytes().all(|b| b.is_ascii_digit());
                    if keep_length
                        || !matches!(
                            n.as_str(),
                            "connection" | "transfer-encoding" | "keep-alive" | "content-length"
                        )
                    {
                        r.headers_mut().append(n, v);
                    }
                }
            }
            r
        }
        Err(PhpError::Saturated) => {
            let mut r = page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                "Every PHP worker of this site is busy. Try again in a moment.",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
        Err(PhpError::Down(e)) => {
            tracing::warn!(tenant = %route.tenant, error = %e, "PHP pool unreachable");
            page(
                StatusCode::BAD_GATEWAY,
                "PHP is not running",
                "This site's PHP service does not answer.",
            )
        }
        Err(PhpError::Timeout) => page(
            StatusCode::GATEWAY_TIMEOUT,
            "Timed out",
            "This site's PHP took too long to answer.",
        ),
        Err(PhpError::TooLarge) => too_large(),
        Err(PhpError::Client(e)) => {
            tracing::debug!(tenant = %route.tenant, error = %e, "request body broke off");
            page(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "The request body could not be read.",
            )
        }
        Err(PhpError::Bad(e)) => {
            tracing::warn!(tenant = %route.tenant, error = %e, "PHP answered badly");
            page(
                StatusCode::BAD_GATEWAY,
                "Bad answer",
                "This site's PHP gave an answer that could not be used.",
            )
        }
    }
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
}
