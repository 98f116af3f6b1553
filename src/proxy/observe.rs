//! What the proxy records of each request: the metrics and the access log line, taken around
//! `handle` so that routing and PHP stay free of it.

use super::access_log::Record;
use super::metrics::UNKNOWN_VHOST;
use super::routes::Route;
use super::server::{Conn, Shared};
use super::Body;
use hyper::body::Body as _;
use hyper::header::{self, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, Response, StatusCode, Version};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The status recorded for a request whose client went away before the answer was ready
/// (nginx's "client closed request").
pub const CLIENT_CLOSED: u16 = 499;

/// A request being handled. `finish` records it with its response; dropped unfinished (the
/// connection closed first, and hyper dropped the handler) it is recorded as 499.
pub struct Observed {
    shared: Arc<Shared>,
    route: Option<Arc<Route>>,
    started: Instant,
    remote: IpAddr,
    method: Method,
    target: Option<PathAndQuery>,
    version: Version,
    referer: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    done: bool,
}

impl Observed {
    /// Takes what the record needs before the request is consumed.
    pub fn start<B>(
        shared: Arc<Shared>,
        route: Option<Arc<Route>>,
        conn: &Conn,
        req: &Request<B>,
    ) -> Self {
        Self {
            shared,
            route,
            started: Instant::now(),
            remote: conn.peer.ip(),
            method: req.method().clone(),
            target: req.uri().path_and_query().cloned(),
            version: req.version(),
            referer: req.headers().get(header::REFERER).cloned(),
            user_agent: req.headers().get(header::USER_AGENT).cloned(),
            done: false,
        }
    }

    /// Records the request with the response about to be sent.
    pub fn finish(mut self, response: &Response<Body>) {
        let bytes = body_bytes(&self.method, response);
        self.record(response.status().as_u16(), bytes);
    }

    fn record(&mut self, status: u16, bytes: Option<u64>) {
        self.done = true;
        let metrics = &self.shared.metrics;
        let elapsed = self.started.elapsed();
        match &self.route {
            Some(r) => r
                .stats
                .get_or_init(|| metrics.vhost(r.domain.as_str()))
                .request(status, elapsed),
            None => metrics.request(UNKNOWN_VHOST, status, elapsed),
        }
        let (Some(log), Some(route)) = (&self.shared.access_log, self.route.take()) else {
            return;
        };
        log.push(Record {
            route,
            time: SystemTime::now(),
            remote: self.remote,
            method: std::mem::replace(&mut self.method, Method::GET),
            target: self.target.take(),
            version: self.version,
            status,
            bytes,
            referer: self.referer.take(),
            user_agent: self.user_agent.take(),
        });
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if !self.done {
            self.record(CLIENT_CLOSED, Some(0));
        }
    }
}

/// The body's length as known when the response starts: none for HEAD, 204 and 304; else
/// its Content-Length, or the exact size of a body built whole; `None` when streamed.
fn body_bytes(method: &Method, response: &Response<Body>) -> Option<u64> {
    let status = response.status();
    if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational()
    {
        return Some(0);
    }
    response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or_else(|| response.body().size_hint().exact())
}

impl Shared {
    /// The metrics in the Prometheus text format, with each routed tenant's PHP queue.
    pub fn metrics_text(&self) -> String {
        let by_socket: HashMap<PathBuf, usize> = self.pools.queues().into_iter().collect();
        let table = self.table();
        let queues: BTreeMap<String, usize> = table
            .vhosts()
            .values()
            .filter(|r| r.php)
            .map(|r| {
                let waiting = by_socket.get(&r.socket).copied().unwrap_or(0);
                (r.tenant.as_str().to_owned(), waiting)
            })
            .collect();
        self.metrics.render(&queues)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_bytes_from_length_or_whole_body() {
        let mut r = Response::new(super::super::full("hello"));
        assert_eq!(body_bytes(&Method::GET, &r), Some(5));
        assert_eq!(body_bytes(&Method::HEAD, &r), Some(0));
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("4096"));
        assert_eq!(body_bytes(&Method::GET, &r), Some(4096));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        assert_eq!(body_bytes(&Method::GET, &r), Some(0));
    }
}
