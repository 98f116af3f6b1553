//! The CGI variables of a request, as nginx's `fastcgi_params` (with the `fastcgi-php.conf`
//! snippet's `fastcgi_split_path_info` and `PATH_INFO`) gives them to a script, so code
//! written for nginx finds what it expects: `PATH_INFO`, `CONTENT_TYPE` and
//! `CONTENT_LENGTH` are always set, empty when there is nothing to say.

use super::Call;
use crate::fastcgi::Params;
use crate::proxy::server::Conn;
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Version};
use std::net::SocketAddr;

/// REMOTE_ADDR, REMOTE_PORT, SERVER_ADDR and SERVER_PORT of a connection, formatted once.
#[derive(Debug)]
pub struct CgiAddrs {
    pub remote_addr: String,
    pub remote_port: String,
    pub server_addr: String,
    pub server_port: String,
}

impl CgiAddrs {
    pub fn new(peer: SocketAddr, local: SocketAddr) -> Self {
        Self {
            remote_addr: peer.ip().to_string(),
            remote_port: peer.port().to_string(),
            server_addr: local.ip().to_string(),
            server_port: local.port().to_string(),
        }
    }
}

/// Splits a request path into the script and PATH_INFO after the first `.php` that ends a
/// segment (`/app.php/x/y` → `/app.php`, `/x/y`), as nginx's `^(.+?\.php)(/.*)$`; `None`
/// when no segment ends in `.php`.
pub fn split_script(path: &str) -> Option<(&str, &str)> {
    let mut from = 0;
    while let Some(i) = path[from..].find(".php") {
        let end = from + i + 4;
        if end == path.len() || path.as_bytes()[end] == b'/' {
            return Some((&path[..end], &path[end..]));
        }
        from = end;
    }
    None
}

/// A number as decimal text, without allocating.
struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    fn new(mut n: u64) -> Self {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return Self { digits, start };
            }
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

/// The variables for running `call` on `parts`, whose body is `content_length` bytes long
/// (`None`: it has none).
pub fn build(parts: &Parts, conn: &Conn, call: &Call<'_>, content_length: Option<u64>) -> Params {
    let docroot = call.route.docroot.to_string_lossy();
    let docroot = docroot.as_bytes();
    let script = call.script.as_bytes();
    let path_info = call.path_info.as_bytes();
    let uri = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut p = Params::with_capacity(1024);
    p.add_joined("SCRIPT_FILENAME", &[docroot, script], b"");
    p.add("QUERY_STRING", parts.uri.query().unwrap_or(""));
    p.add("REQUEST_METHOD", parts.method.as_str());
    p.add("SCRIPT_NAME", script);
    p.add("REQUEST_URI", uri);
    p.add("DOCUMENT_URI", script);
    p.add("DOCUMENT_ROOT", docroot);
    p.add(
        "SERVER_PROTOCOL",
        if parts.version == Version::HTTP_2 {
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
    p.add("SERVER_NAME", call.host);
    p.add("REDIRECT_STATUS", "200");
    p.add("PATH_INFO", path_info);
    if !path_info.is_empty() {
        p.add_joined("PATH_TRANSLATED", &[docroot, path_info], b"");
    }
    let content_type = parts.headers.get(header::CONTENT_TYPE);
    p.add(
        "CONTENT_TYPE",
        content_type.map_or(&b""[..], HeaderValue::as_bytes),
    );
    // A method that carries a body says 0 when it came without one, as it always has here.
    let carries_body = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
    match content_length.or(carries_body.then_some(0)) {
        Some(n) => p.add("CONTENT_LENGTH", Decimal::new(n).as_bytes()),
        None => p.add("CONTENT_LENGTH", ""),
    }
    p.add("HTTP_HOST", call.host);
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
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::testing::params_of;
    use crate::proxy::testing::{conn, Site};
    use std::collections::BTreeMap;

    #[test]
    fn path_info_split() {
        assert_eq!(split_script("/index.php"), Some(("/index.php", "")));
        assert_eq!(
            split_script("/app.php/users/1"),
            Some(("/app.php", "/users/1"))
        );
        assert_eq!(split_script("/a.phpx/b.php"), Some(("/a.phpx/b.php", "")));
        assert_eq!(
            split_script("/upload.jpg/x.php"),
            Some(("/upload.jpg/x.php", ""))
        );
        assert_eq!(split_script("/style.css"), None);
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 65536, u64::MAX] {
            assert_eq!(Decimal::new(n).as_bytes(), n.to_string().as_bytes());
        }
    }

    /// The variables PHP gets, by name (each name once).
    fn variables(
        req: hyper::Request<()>,
        tls: bool,
        call: &Call<'_>,
        length: Option<u64>,
    ) -> BTreeMap<String, String> {
        let (parts, ()) = req.into_parts();
        let p = build(&parts, &conn(tls, None), call, length);
        let mut wire = Vec::new();
        p.write(&mut wire).unwrap();
        let pairs = params_of(&wire).unwrap();
        let mut map = BTreeMap::new();
        for (n, v) in pairs {
            let n = String::from_utf8(n).unwrap();
            let v = String::from_utf8(v).unwrap();
            assert!(map.insert(n.clone(), v).is_none(), "{n} twice");
        }
        map
    }

    #[test]
    fn a_get_has_the_set_of_nginx_fastcgi_params() {
        let site = Site::new("params-get");
        let route = site.route();
        let call = Call {
            route: &route,
            host: "a.example",
            script: "/index.php",
            path_info: "",
        };
        let req = hyper::Request::get("/index.php?x=1&y=%20")
            .header("host", "A.example:8080")
            .header("accept-language", "en")
            .header("accept-language", "fr")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("proxy", "http://evil")
            .header("x_real_ip", "1.2.3.4")
            .body(())
            .unwrap();
        let vars = variables(req, false, &call, None);
        let docroot = site.docroot().to_str().unwrap().to_owned();
        let expected: BTreeMap<String, String> = [
            ("SCRIPT_FILENAME", format!("{docroot}/index.php")),
            ("QUERY_STRING", "x=1&y=%20".into()),
            ("REQUEST_METHOD", "GET".into()),
            ("SCRIPT_NAME", "/index.php".into()),
            ("REQUEST_URI", "/index.php?x=1&y=%20".into()),
            ("DOCUMENT_URI", "/index.php".into()),
            ("DOCUMENT_ROOT", docroot.clone()),
            ("SERVER_PROTOCOL", "HTTP/1.1".into()),
            ("REQUEST_SCHEME", "http".into()),
            ("GATEWAY_INTERFACE", "CGI/1.1".into()),
            ("SERVER_SOFTWARE", "lodge".into()),
            ("REMOTE_ADDR", "192.0.2.7".into()),
            ("REMOTE_PORT", "50123".into()),
            ("SERVER_ADDR", "198.51.100.1".into()),
            ("SERVER_PORT", "80".into()),
            ("SERVER_NAME", "a.example".into()),
            ("REDIRECT_STATUS", "200".into()),
            ("PATH_INFO", "".into()),
            ("CONTENT_TYPE", "".into()),
            ("CONTENT_LENGTH", "".into()),
            ("HTTP_HOST", "a.example".into()),
            ("HTTP_ACCEPT_LANGUAGE", "en, fr".into()),
            ("HTTP_COOKIE", "a=1; b=2".into()),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
        assert_eq!(vars, expected);
    }

    #[test]
    fn a_post_over_tls_describes_its_body_and_path_info() {
        let site = Site::new("params-post");
        let route = site.route();
        let call = Call {
            route: &route,
            host: "a.example",
            script: "/app.php",
            path_info: "/users/1",
        };
        let docroot = site.docroot().to_str().unwrap().to_owned();
        let req = hyper::Request::post("/app.php/users/1")
            .version(Version::HTTP_2)
            .header("content-type", "application/json")
            .header("content-length", "2")
            .body(())
            .unwrap();
        let vars = variables(req, true, &call, Some(2));
        let v = |n: &str| vars.get(n).map(String::as_str);
        assert_eq!(v("CONTENT_TYPE"), Some("application/json"));
        assert_eq!(v("CONTENT_LENGTH"), Some("2"));
        assert_eq!(v("HTTP_CONTENT_TYPE"), None);
        assert_eq!(v("HTTP_CONTENT_LENGTH"), None);
        assert_eq!(v("PATH_INFO"), Some("/users/1"));
        assert_eq!(
            v("PATH_TRANSLATED"),
            Some(format!("{docroot}/users/1").as_str())
        );
        assert_eq!(v("SCRIPT_NAME"), Some("/app.php"));
        assert_eq!(v("HTTPS"), Some("on"));
        assert_eq!(v("REQUEST_SCHEME"), Some("https"));
        assert_eq!(v("SERVER_PROTOCOL"), Some("HTTP/2.0"));

        // A POST without a body says so with a length of 0.
        let req = hyper::Request::post("/app.php").body(()).unwrap();
        let vars = variables(req, false, &call, None);
        assert_eq!(vars.get("CONTENT_LENGTH").map(String::as_str), Some("0"));
        assert_eq!(vars.get("CONTENT_TYPE").map(String::as_str), Some(""));
    }
}
