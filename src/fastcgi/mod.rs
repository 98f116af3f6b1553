//! A small async FastCGI 1.0 client, for talking to php-fpm over a unix socket.
//!
//! The agent uses it to health-check each tenant's pool ([`ping`], [`status`]) and tests use
//! it to run PHP as a tenant ([`request`]). It is built in layers; the proxy's pooled,
//! streaming client (`proxy::php`) is built on the same pieces, so the protocol is written
//! once:
//! - [`record`]: the wire format of records, as plain encode/decode functions;
//! - [`Params`]: the `FCGI_PARAMS` stream, encoded as variables are added;
//! - [`Records`]: records read from a stream out of one buffer, without a copy;
//! - [`Request`] / [`Response`]: CGI variables in, a parsed CGI response out;
//! - [`request`], [`ping`], [`status`]: one connection per request, all under one timeout.
//!
//! Only the Responder role is spoken, with one request per connection (php-fpm does not
//! multiplex). This client buffers responses whole (bounded: 16 MiB of stdout, 64 KiB of
//! stderr kept) and asks the server to close the connection after each; the proxy's pool
//! keeps connections alive and streams.

mod cgi;
mod client;
mod health;
mod params;
mod reader;
pub mod record;
#[cfg(test)]
pub(crate) mod testing;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cgi::{Param, Request, Response};
use client::Connection;
pub use health::{ping, status, PoolStatus};
pub use params::Params;
pub use reader::{Event, Records};
pub use record::ProtocolStatus;

#[derive(Debug, thiserror::Error)]
pub enum FcgiError {
    /// Nobody listens on the socket (pool down, wrong path, no permission).
    #[error("cannot connect to FastCGI socket {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The connection failed after it was made.
    #[error("FastCGI I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("FastCGI request did not finish within {0:?}")]
    Timeout(Duration),
    /// The server broke the protocol (or closed the connection before ending the request).
    #[error("FastCGI protocol error: {0}")]
    Protocol(String),
    #[error("FastCGI response is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// `FCGI_END_REQUEST` with a protocol status other than `FCGI_REQUEST_COMPLETE`.
    #[error("FastCGI server refused the request: {0}")]
    Refused(ProtocolStatus),
    /// The server closed the connection before it answered at all (a kept connection it had
    /// finished with, at `pm.max_requests`): the request was not run.
    #[error("FastCGI connection is closed")]
    Closed,
    /// A health page answered with an HTTP status other than 200.
    #[error("FastCGI application answered HTTP {status}: {detail}")]
    Status { status: u16, detail: String },
    /// A health page answered 200 with something other than what it should say.
    #[error("unexpected FastCGI answer: {0}")]
    Unexpected(String),
    #[error("bad php-fpm status JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Connects to `socket`, runs `req` and returns the whole response, all within `timeout`.
/// The server is asked to close the connection afterwards (no `FCGI_KEEP_CONN`).
pub async fn request(
    socket: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<Response, FcgiError> {
    let exchange = async { Connection::connect(socket).await?.run(req).await };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| FcgiError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_socket_is_a_connect_error() {
        let path = Path::new("/nonexistent/lodge-fastcgi-test.sock");
        let err = request(path, &Request::get("/a", "/a", ""), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, FcgiError::Connect { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("/nonexistent/lodge-fastcgi-test.sock"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let dir = std::env::temp_dir().join(format!("lodge-fcgi-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("silent.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let accept = tokio::spawn(async move {
            // Accept and hold the connection without ever answering.
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(s);
        });
        let timeout = Duration::from_millis(100);
        let err = request(&path, &Request::get("/a", "/a", ""), timeout)
            .await
            .unwrap_err();
        assert!(
            matches!(err, FcgiError::Timeout(t) if t == timeout),
            "{err}"
        );
        accept.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
