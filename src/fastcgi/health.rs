//! Health checks of a php-fpm pool through its own ping and status pages.
//!
//! Both pages are answered by the php-fpm worker itself (no script runs), so a good answer
//! means the pool accepts connections and has a worker free to take a request.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{request, FcgiError, Request, Response};

/// Asks for the pool's `ping.path` and returns the round trip, connection included.
/// Only `200` with the body `pong` (php-fpm's default `ping.response`) counts as healthy.
pub async fn ping(
    socket: &Path,
    ping_path: &str,
    timeout: Duration,
) -> Result<Duration, FcgiError> {
    let started = Instant::now();
    let resp = request(socket, &Request::get(ping_path, ping_path, ""), timeout).await?;
    let elapsed = started.elapsed();
    expect_200(&resp)?;
    if resp.body.trim_ascii() != b"pong" {
        return Err(FcgiError::Unexpected(format!(
            "ping answered {:?}, expected \"pong\"",
            excerpt(&resp.body)
        )));
    }
    Ok(elapsed)
}

/// Reads the pool's `pm.status_path` in its JSON form.
pub async fn status(
    socket: &Path,
    status_path: &str,
    timeout: Duration,
) -> Result<PoolStatus, FcgiError> {
    let resp = request(
        socket,
        &Request::get(status_path, status_path, "json"),
        timeout,
    )
    .await?;
    expect_200(&resp)?;
    PoolStatus::from_php_fpm_json(&resp.body)
}

/// The pool summary of php-fpm's status page. Counters are since the master started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub pool: String,
    /// `static`, `dynamic` or `ondemand`.
    pub process_manager: String,
    /// Unix time the master started.
    pub start_time: u64,
    /// Seconds since then.
    pub start_since: u64,
    pub accepted_conn: u64,
    /// Connections waiting for a free worker right now.
    pub listen_queue: u64,
    pub max_listen_queue: u64,
    /// The socket's backlog size.
    pub listen_queue_len: u64,
    pub idle_processes: u64,
    pub active_processes: u64,
    pub total_processes: u64,
    pub max_active_processes: u64,
    /// Times the pool wanted more workers than `pm.max_children` allows.
    pub max_children_reached: u64,
    pub slow_requests: u64,
}

impl PoolStatus {
    /// Parses the page php-fpm serves for `?json` (its keys contain spaces). Keys this
    /// struct does not know, such as newer versions' `memory peak`, are ignored.
    pub fn from_php_fpm_json(body: &[u8]) -> Result<Self, FcgiError> {
        let w: Wire = serde_json::from_slice(body)?;
        Ok(Self {
            pool: w.pool,
            process_manager: w.process_manager,
            start_time: w.start_time,
            start_since: w.start_since,
            accepted_conn: w.accepted_conn,
            listen_queue: w.listen_queue,
            max_listen_queue: w.max_listen_queue,
            listen_queue_len: w.listen_queue_len,
            idle_processes: w.idle_processes,
            active_processes: w.active_processes,
            total_processes: w.total_processes,
            max_active_processes: w.max_active_processes,
            max_children_reached: w.max_children_reached,
            slow_requests: w.slow_requests,
        })
    }
}

/// php-fpm's spelling, kept apart so `PoolStatus` serializes with plain snake_case names.
#[derive(Deserialize)]
struct Wire {
    pool: String,
    #[serde(rename = "process manager")]
    process_manager: String,
    #[serde(rename = "start time")]
    start_time: u64,
    #[serde(rename = "start since")]
    start_since: u64,
    #[serde(rename = "accepted conn")]
    accepted_conn: u64,
    #[serde(rename = "listen queue")]
    listen_queue: u64,
    #[serde(rename = "max listen queue")]
    max_listen_queue: u64,
    #[serde(rename = "listen queue len")]
    listen_queue_len: u64,
    #[serde(rename = "idle processes")]
    idle_processes: u64,
    #[serde(rename = "active processes")]
    active_processes: u64,
    #[serde(rename = "total processes")]
    total_processes: u64,
    #[serde(rename = "max active processes")]
    max_active_processes: u64,
    #[serde(rename = "max children reached")]
    max_children_reached: u64,
    #[serde(rename = "slow requests")]
    slow_requests: u64,
}

fn expect_200(resp: &Response) -> Result<(), FcgiError> {
    if resp.status == 200 {
        return Ok(());
    }
    // php-fpm explains most failures on stderr ("Primary script unknown"), not in the body.
    let detail = if resp.stderr.is_empty() {
        &resp.body
    } else {
        &resp.stderr
    };
    Err(FcgiError::Status {
        status: resp.status,
        detail: excerpt(detail),
    })
}

/// The start of a body or log, enough to recognise it in an error message.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    text.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    // As php-fpm 8.2 answers `GET /fpm-status?json`.
    const SAMPLE: &str = r#"{"pool":"www","process manager":"static","start time":1714000000,"start since":5,"accepted conn":3,"listen queue":0,"max listen queue":0,"listen queue len":4096,"idle processes":1,"active processes":1,"total processes":2,"max active processes":1,"max children reached":0,"slow requests":0,"memory peak":2097152}"#;

    #[test]
    fn parses_php_fpm_json() {
        let s = PoolStatus::from_php_fpm_json(SAMPLE.as_bytes()).unwrap();
        assert_eq!(s.pool, "www");
        assert_eq!(s.process_manager, "static");
        assert_eq!(s.start_time, 1714000000);
        assert_eq!(s.start_since, 5);
        assert_eq!(s.accepted_conn, 3);
        assert_eq!(s.listen_queue_len, 4096);
        assert_eq!(
            (s.idle_processes, s.active_processes, s.total_processes),
            (1, 1, 2)
        );
        assert_eq!(s.max_active_processes, 1);
    }

    #[test]
    fn serializes_in_snake_case() {
        let s = PoolStatus::from_php_fpm_json(SAMPLE.as_bytes()).unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["total_processes"], 2);
        assert_eq!(v["process_manager"], "static");
        let back: PoolStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn rejects_other_pages() {
        let err =
            PoolStatus::from_php_fpm_json(b"pool: www\nprocess manager: static\n").unwrap_err();
        assert!(matches!(err, FcgiError::Json(_)), "{err}");
        let err = PoolStatus::from_php_fpm_json(br#"{"pool":"www"}"#).unwrap_err();
        assert!(matches!(err, FcgiError::Json(_)), "{err}");
    }

    #[test]
    fn errors_prefer_stderr() {
        let resp = Response {
            status: 404,
            headers: Vec::new(),
            body: b"File not found.\n".to_vec(),
            stderr: b"Primary script unknown".to_vec(),
            app_status: 0,
        };
        match expect_200(&resp).unwrap_err() {
            FcgiError::Status { status, detail } => {
                assert_eq!(status, 404);
                assert_eq!(detail, "Primary script unknown");
            }
            other => panic!("{other}"),
        }
    }
}
