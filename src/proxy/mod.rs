//! The bundled front proxy: routes by Host and SNI to a tenant's vhost, serves static files
//! from the docroot without ever leaving it, and passes PHP to the tenant's pool over FastCGI.
//! Runs as `lodge-www` with listening sockets handed over by the agent. Bodies to and from PHP
//! are streamed in bounded memory. Each request is counted in the metrics (served to the
//! panel on a unix socket) and logged per vhost off the request path.

pub mod access_log;
pub mod deadline;
mod drain;
pub mod h1;
mod host;
pub mod metrics;
mod observe;
mod pages;
pub mod php;
mod reload;
pub mod routes;
pub mod run;
pub mod sendfile;
pub mod server;
pub mod static_files;
#[cfg(test)]
mod testing;
pub mod tls;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// The body type of every response the proxy builds.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A whole body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// How many event loops the proxy runs: `LODGE_PROXY_THREADS`, else one per core. The
/// metrics and the access log keep a shard per loop.
pub fn event_loops() -> usize {
    std::env::var("LODGE_PROXY_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 256)
}

thread_local! {
    static EVENT_LOOP: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as the proxy's event loop `i` (see [`run`]); unmarked threads are 0.
pub fn set_loop(i: usize) {
    EVENT_LOOP.with(|l| l.set(i));
}

/// The event loop this thread runs. What wakes a loop (a socket's readiness, a task handed
/// a permit) is cheapest from that loop itself, so the FastCGI pools keep their connections
/// and waiters per loop.
pub fn current_loop() -> usize {
    EVENT_LOOP.with(|l| l.get())
}
