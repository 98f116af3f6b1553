//! PHP over FastCGI: one connection pool per tenant socket, capped at the pool's
//! `pm.max_children` (the proxy knows it; nginx and Apache don't), kept-alive connections
//! reused and transparently re-opened when php-fpm closes one (at `pm.max_requests`), a
//! bounded wait queue (503 with Retry-After when it is full), and 502/504 with clear pages.

use crate::fastcgi::{Connection, FcgiError, Request, Response};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// How long a request may wait for a free worker before it is refused.
pub const QUEUE_WAIT: Duration = Duration::from_secs(10);
/// Waiting requests allowed per worker before new ones are refused at once.
pub const QUEUE_PER_WORKER: usize = 16;
/// How long a script may take to answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);
/// A kept connection holds a php-fpm worker; one idle longer than this is closed, so that
/// workers are free for a graceful reload or stop (and for ondemand pools to shrink).
pub const IDLE_KEEP: Duration = Duration::from_secs(2);

/// Why PHP could not answer.
#[derive(Debug)]
pub enum PhpError {
    /// Every worker is busy and the queue is full (or the wait ran out): 503.
    Saturated,
    /// The pool does not accept connections: 502.
    Down(String),
    /// The script did not answer in time: 504.
    Timeout,
    /// php-fpm broke the protocol or the answer was too large: 502.
    Bad(String),
}

struct Pool {
    socket: PathBuf,
    permits: Arc<Semaphore>,
    max: usize,
    waiting: std::sync::atomic::AtomicUsize,
    idle: Mutex<Vec<(Connection, std::time::Instant)>>,
}

/// All pools, by socket path. A pool whose size changed is replaced.
#[derive(Default)]
pub struct Pools {
    pools: Mutex<HashMap<PathBuf, Arc<Pool>>>,
}

impl Pools {
    fn pool(&self, socket: &Path, max: u32) -> Arc<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        match pools.get(socket) {
            Some(p) if p.max == max as usize => p.clone(),
            _ => {
                let p = Arc::new(Pool {
                    socket: socket.to_owned(),
                    permits: Arc::new(Semaphore::new(max as usize)),
                    max: max as usize,
                    waiting: Default::default(),
                    idle: Mutex::new(Vec::new()),
                });
                pools.insert(socket.to_owned(), p.clone());
                p
            }
        }
    }

    /// Requests waiting for a worker, by pool socket.
    pub fn queues(&self) -> Vec<(PathBuf, usize)> {
        self.pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|p| {
                let waiting = p.waiting.load(std::sync::atomic::Ordering::Relaxed);
                (p.socket.clone(), waiting)
            })
            .collect()
    }

    /// Closes kept connections idle for longer than `IDLE_KEEP`; run every second or so.
    pub fn sweep(&self) {
        let pools: Vec<Arc<Pool>> = self
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for pool in pools {
            let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|(_, since)| since.elapsed() < IDLE_KEEP);
        }
    }

    /// Runs one request on the tenant's pool.
    pub async fn run(
        &self,
        socket: &Path,
        max_children: u32,
        request: &Request,
    ) -> Result<Response, PhpError> {
        let pool = self.pool(socket, max_children.max(1));
        use std::sync::atomic::Ordering;
        if pool.waiting.load(Ordering::Relaxed) >= pool.max * QUEUE_PER_WORKER {
            return Err(PhpError::Saturated);
        }
        pool.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = tokio::time::timeout(QUEUE_WAIT, pool.permits.clone().acquire_owned()).await;
        pool.waiting.fetch_sub(1, Ordering::Relaxed);
        let _permit = match permit {
            Ok(Ok(p)) => p,
            _ => return Err(PhpError::Saturated),
        };
        let reused = pool
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .map(|(c, _)| c);
        let (mut conn, was_reused) = match reused {
            Some(c) => (c, true),
            None => (connect(&pool.socket).await?, false),
        };
        let result = match tokio::time::timeout(RESPONSE_TIMEOUT, conn.run(request)).await {
            Err(_) => return Err(PhpError::Timeout),
            Ok(r) => r,
        };
        let response = match result {
            Ok(r) => r,
            // A kept connection php-fpm has closed meanwhile (max_requests, a reload): once
            // more on a fresh one. Only for GET and HEAD: had a worker taken the request and
            // died without a word, running a POST twice would be worse than a 502.
            Err(FcgiError::Closed | FcgiError::Io(_)) if was_reused && idempotent(request) => {
                conn = connect(&pool.socket).await?;
                match tokio::time::timeout(RESPONSE_TIMEOUT, conn.run(request)).await {
                    Err(_) => return Err(PhpError::Timeout),
                    Ok(r) => r.map_err(|e| PhpError::Bad(e.to_string()))?,
                }
            }
            Err(e) => return Err(PhpError::Bad(e.to_string())),
        };
        if conn.is_reusable() {
            pool.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((conn, std::time::Instant::now()));
        }
        Ok(response)
    }
}

fn idempotent(request: &Request) -> bool {
    matches!(
        request.param_value("REQUEST_METHOD"),
        Some(b"GET" | b"HEAD")
    )
}

async fn connect(socket: &Path) -> Result<Connection, PhpError> {
    Connection::connect(socket)
        .await
        .map(|c| c.keep_conn(true))
        .map_err(|e| PhpError::Down(e.to_string()))
}

/// Splits a request path into the script and PATH_INFO after the first `.php` that ends a
/// segment (`/app.php/x/y` → `/app.php`, `/x/y`); `None` when no segment ends in `.php`.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
