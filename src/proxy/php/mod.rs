//! PHP over FastCGI: a request routed to a script goes to the tenant's pool as nginx would
//! send it, and its answer comes back streamed.
//!
//! - [`params`]: the request as CGI variables, nginx-style;
//! - [`body`]: the request body, read ahead or streamed;
//! - [`pool`]: a pool per tenant socket, capped at its `pm.max_children`, with a bounded
//!   wait queue and kept-alive connections;
//! - [`exchange`]: one request on a leased connection, streamed both ways;
//! - [`response`]: the script's answer as an HTTP response, or a page saying why not
//!   (502 down or broken, 503 busy, 504 too slow).

mod body;
mod exchange;
mod params;
mod pool;
mod response;

pub use params::{split_script, CgiAddrs};
pub use pool::Pools;

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
    /// The client's body was larger than the site accepts: 413.
    TooLarge,
    /// The client's body broke off: the client is gone or sent bad framing (400).
    Client(String),
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
    // Bodies are bounded by the plan's upload limit.
    let (body, length) = match body::read(body, route.body_limit).await {
        Ok(b) => b,
        Err(refused) => return response::refused_body(refused),
    };
    let params = params::build(&parts, conn, &call, length);
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
