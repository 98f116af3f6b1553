//! PHP over FastCGI: a request routed to a script goes to the tenant's pool as nginx would
//! send it, and its answer comes back streamed.
//!
//! - [`params`]: the request as CGI variables, nginx-style;
//! - [`body`]: the request body, read whole before a worker is asked for: in memory, or
//!   spooled ([`spool`]) past a size, both within budgets of the whole proxy and of each
//!   tenant ([`budget`]);
//! - [`pool`]: a pool per tenant socket, capped at its `pm.max_children`, with a bounded
//!   wait queue and kept-alive connections;
//! - [`exchange`]: one request on a leased connection, streamed both ways;
//! - [`response`]: the script's answer as an HTTP response, or a page saying why not
//!   (502 down or broken, 503 busy, 504 too slow).

mod body;
mod budget;
mod exchange;
mod params;
mod pool;
mod response;
mod spool;

pub use body::{Bodies, BodyLimits};
pub use params::{split_script, CgiAddrs};
pub use pool::Pools;
pub use spool::{Spool, PARENT as SPOOL_PARENT};

use super::h1::ReqBody;
use super::routes::Route;
use super::server::{Conn, Shared};
use super::Body;
use hyper::{Method, Request, Response};

/// Why PHP could not answer.
#[derive(Debug)]
pub enum PhpError {
    /// Every worker is busy and the queue is full (or the wait ran out): 503.
    Saturated,
    /// The pool does not accept connections: 502.
    Down(String),
    /// The script did not answer in time: 504.
    Timeout,
    /// php-fpm broke the protocol or sent headers that are too large: 502.
    Bad(String),
    /// The spooled request body could not be read back: 500.
    Spool(String),
}

/// A request routed to PHP: the site, the host it was reached by (normalized), and the
/// script (a path inside the docroot) with the rest of the path after it.
pub struct Call<'a> {
    pub route: &'a Route,
    pub host: &'a str,
    pub script: &'a str,
    pub path_info: &'a str,
}

/// Runs the script of `call` for `req` through the tenant's pool.
pub async fn serve(
    shared: &Shared,
    conn: &Conn,
    req: Request<ReqBody>,
    call: Call<'_>,
) -> Response<Body> {
    let route = call.route;
    let (parts, body) = req.into_parts();
    // The whole body first, bounded by the plan's upload limit: only then is a worker
    // leased.
    let body = match shared
        .bodies
        .read(body, &route.tenant, route.body_limit)
        .await
    {
        Ok(b) => b,
        Err(refused) => return response::refused_body(refused),
    };
    let params = params::build(&parts, conn, &call, body.len());
    let retry = matches!(parts.method, Method::GET | Method::HEAD);
    let result = shared
        .pools
        .run(&route.socket, route.max_children, &params, body, retry)
        .await;
    shared.metrics.php_result(route.tenant.as_str(), &result);
    match result {
        Ok(answer) => response::from_answer(&parts.method, answer),
        Err(e) => response::error_page(&e, &route.tenant),
    }
}

#[cfg(test)]
mod tests {
    use crate::proxy::testing::{conn, get, send, Fpm, Site, DOMAIN};
    use serde_json::Value;

    /// Prints what PHP finds in `$_SERVER` of the variables nginx always sets, `null` for
    /// one that is not there at all.
    const ENV_PHP: &str = r#"<?php
header('Content-Type: application/json');
$out = [];
foreach (['PATH_INFO', 'CONTENT_TYPE', 'CONTENT_LENGTH', 'SCRIPT_NAME', 'REQUEST_METHOD',
          'QUERY_STRING', 'SERVER_NAME', 'HTTP_HOST', 'HTTPS', 'REQUEST_SCHEME'] as $k) {
    $out[$k] = array_key_exists($k, $_SERVER) ? $_SERVER[$k] : null;
}
$out['input'] = file_get_contents('php://input');
echo json_encode($out);
"#;

    #[tokio::test]
    async fn php_fpm_sees_the_variables_of_nginx_fastcgi_params() {
        let site = Site::new("php-env");
        site.write("env.php", ENV_PHP);
        let Some(_fpm) = Fpm::start(&site, "php_fpm_sees_the_variables_of_nginx_fastcgi_params")
        else {
            return;
        };
        let shared = Site::shared(site.entry());
        let json = |body: &[u8]| -> Value { serde_json::from_slice(body).unwrap() };

        let r = get(
            shared.clone(),
            conn(false, None),
            "A.Example:80",
            "/env.php?q=1",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = json(&r.body);
        assert_eq!(v["PATH_INFO"], "", "{v}");
        assert_eq!(v["CONTENT_TYPE"], "", "{v}");
        assert_eq!(v["CONTENT_LENGTH"], "", "{v}");
        assert_eq!(v["REQUEST_METHOD"], "GET");
        assert_eq!(v["QUERY_STRING"], "q=1");
        assert_eq!(v["SCRIPT_NAME"], "/env.php");
        assert_eq!(v["SERVER_NAME"], DOMAIN);
        assert_eq!(v["HTTP_HOST"], DOMAIN);
        assert_eq!(
            v["HTTPS"],
            Value::Null,
            "set only over TLS, as nginx's if_not_empty"
        );
        assert_eq!(v["REQUEST_SCHEME"], "http");

        let r = get(
            shared.clone(),
            conn(false, None),
            DOMAIN,
            "/env.php/users/1",
        )
        .await;
        assert_eq!(json(&r.body)["PATH_INFO"], "/users/1");

        let post = format!(
            "POST /env.php HTTP/1.1\r\nHost: {DOMAIN}\r\nContent-Type: text/plain\r\n\
             Content-Length: 5\r\nConnection: close\r\n\r\nhello"
        );
        let r = send(shared.clone(), conn(true, Some(DOMAIN)), post.as_bytes()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = json(&r.body);
        assert_eq!(
            (&v["CONTENT_TYPE"], &v["CONTENT_LENGTH"], &v["input"]),
            (
                &Value::from("text/plain"),
                &Value::from("5"),
                &Value::from("hello")
            )
        );
        assert_eq!(
            (&v["HTTPS"], &v["REQUEST_SCHEME"]),
            (&Value::from("on"), &Value::from("https"))
        );
    }

    #[tokio::test]
    async fn a_kept_connection_reaches_the_same_worker_again() {
        let site = Site::new("php-keep");
        site.write("pid.php", "<?php echo getmypid();");
        let Some(_fpm) = Fpm::start(&site, "a_kept_connection_reaches_the_same_worker_again")
        else {
            return;
        };
        let shared = Site::shared(site.entry());
        let mut pids = Vec::new();
        for _ in 0..3 {
            let r = get(shared.clone(), conn(false, None), DOMAIN, "/pid.php").await;
            assert_eq!(r.status, 200, "{}", r.text());
            pids.push(r.text());
        }
        // php-fpm kept the connection (FCGI_KEEP_CONN), and the pool used it again: one of
        // the two workers served every request.
        assert!(pids.iter().all(|p| *p == pids[0]), "{pids:?}");
    }

    #[tokio::test]
    async fn an_interim_status_from_php_is_a_bad_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let site = Site::new("php-1xx");
        site.write(
            "status.php",
            "<?php http_response_code((int) $_GET['s']); echo 'body';",
        );
        let Some(_fpm) = Fpm::start(&site, "an_interim_status_from_php_is_a_bad_answer") else {
            return;
        };
        let shared = Site::shared(site.entry());
        for s in [100, 101, 103] {
            let path = format!("/status.php?s={s}");
            let r = get(shared.clone(), conn(false, None), DOMAIN, &path).await;
            assert_eq!(r.status, 502, "{s}: {}", r.text());
        }
        // On the lean HTTP/1.1 path, the connection stays in step: the request after it
        // gets its own answer.
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let c = conn(false, None);
        tokio::spawn(async move {
            crate::proxy::h1::serve(server, |req| {
                crate::proxy::server::handle(shared.clone(), c.clone(), req)
            })
            .await
        });
        let request = format!(
            "GET /status.php?s=103 HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n\
             GET /status.php?s=200 HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n"
        );
        client.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        client.read_to_string(&mut raw).await.unwrap();
        let statuses: Vec<&str> = raw
            .split("HTTP/1.1 ")
            .skip(1)
            .map(|r| r.split("\r\n").next().unwrap_or(""))
            .collect();
        assert_eq!(statuses, ["502 Bad Gateway", "200 OK"], "{raw}");
        assert!(raw.ends_with("body"), "{raw}");
    }
}
