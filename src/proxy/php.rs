//! PHP over FastCGI: one connection pool per tenant socket, capped at the pool's
//! `pm.max_children` (the proxy knows it; nginx and Apache don't), kept-alive connections
//! reused (checked to be still open first) and transparently re-opened when php-fpm has
//! closed one (at `pm.max_requests`), a bounded wait queue (503 with Retry-After when it is
//! full), and 502/504 with clear pages. Bodies both ways are streamed: see
//! [`super::exchange`].

use super::exchange::{Answer, HeadError, Params, Pump, PumpError, ReadSide, Upstream};
use crate::fastcgi::record::{self, RecordType};
use crate::fastcgi::FcgiError;
use bytes::Bytes;
use hyper::body::Incoming;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a request may wait for a free worker before it is refused.
pub const QUEUE_WAIT: Duration = Duration::from_secs(10);
/// Waiting requests allowed per worker before new ones are refused at once.
pub const QUEUE_PER_WORKER: usize = 16;
/// How long a script may take to send its headers.
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
    /// php-fpm broke the protocol or sent headers that are too large: 502.
    Bad(String),
    /// The client's body was larger than the site accepts: 413.
    TooLarge,
    /// The client's body broke off: the client is gone or sent bad framing (400).
    Client(String),
}

struct Pool {
    socket: PathBuf,
    permits: Arc<Semaphore>,
    max: usize,
    waiting: AtomicUsize,
    idle: Mutex<Vec<(UnixStream, Instant)>>,
}

/// A request's place in a pool: a permit (one of `pm.max_children`) and, given back at a
/// clean end, the connection it used.
pub struct Lease {
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    pub fn socket(&self) -> &Path {
        &self.pool.socket
    }

    /// Keeps `stream` for the next request.
    pub fn give_back(self, stream: UnixStream) {
        self.pool
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((stream, Instant::now()));
    }

    /// A kept connection that is still open, or a new one.
    async fn connection(&self) -> Result<(UnixStream, bool), PhpError> {
        loop {
            let kept = self
                .pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            match kept {
                Some((stream, _)) if still_open(&stream) => return Ok((stream, true)),
                Some(_) => continue,
                None => return Ok((connect(&self.pool.socket).await?, false)),
            }
        }
    }
}

/// Whether php-fpm has not closed a kept connection: nothing to read and no end of file
/// (a worker that reached `pm.max_requests` hangs up right after its last answer).
fn still_open(stream: &UnixStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A request's body, as it goes to php-fpm.
pub enum RequestBody {
    /// No body.
    Empty,
    /// A small body already read (it goes out in the same write as the parameters).
    Whole(Bytes),
    /// A body streamed from the client, at most `limit` bytes.
    Stream(Incoming, u64),
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

    /// Waits for a free worker of the pool (bounded queue, bounded wait).
    async fn lease(&self, socket: &Path, max_children: u32) -> Result<Lease, PhpError> {
        let pool = self.pool(socket, max_children.max(1));
        if pool.waiting.load(Ordering::Relaxed) >= pool.max * QUEUE_PER_WORKER {
            return Err(PhpError::Saturated);
        }
        let permit = match pool.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                pool.waiting.fetch_add(1, Ordering::Relaxed);
                let permit =
                    tokio::time::timeout(QUEUE_WAIT, pool.permits.clone().acquire_owned()).await;
                pool.waiting.fetch_sub(1, Ordering::Relaxed);
                match permit {
                    Ok(Ok(p)) => p,
                    _ => return Err(PhpError::Saturated),
                }
            }
        };
        Ok(Lease {
            pool,
            _permit: permit,
        })
    }

    /// Runs one request on the tenant's pool: `params` are the CGI variables, `body` the
    /// request body. A GET or HEAD (`retry`) that meets a kept connection php-fpm closed
    /// meanwhile is sent once more on a fresh one; anything else is not, since running a
    /// POST twice would be worse than a 502.
    pub async fn run(
        &self,
        socket: &Path,
        max_children: u32,
        params: &Params,
        body: RequestBody,
        retry: bool,
    ) -> Result<Answer, PhpError> {
        let mut wire = Vec::with_capacity(2048);
        record::write_begin_request(
            &mut wire,
            super::exchange::REQUEST_ID,
            record::ROLE_RESPONDER,
            record::FLAG_KEEP_CONN,
        );
        params
            .write(&mut wire)
            .map_err(|e| PhpError::Bad(e.to_string()))?;
        let streamed = match body {
            RequestBody::Empty => {
                record::write_stream(
                    &mut wire,
                    RecordType::Stdin,
                    super::exchange::REQUEST_ID,
                    &[],
                );
                None
            }
            RequestBody::Whole(data) => {
                record::write_stream(
                    &mut wire,
                    RecordType::Stdin,
                    super::exchange::REQUEST_ID,
                    &data,
                );
                None
            }
            RequestBody::Stream(body, limit) => Some((body, limit)),
        };
        let mut lease = self.lease(socket, max_children).await?;
        let mut retry = retry && streamed.is_none();
        let mut streamed = streamed;
        loop {
            let (mut stream, reused) = lease.connection().await?;
            let sent = stream.write_all(&wire).await;
            if let Err(e) = sent {
                if reused && retry {
                    retry = false;
                    continue;
                }
                return Err(PhpError::Down(e.to_string()));
            }
            let mut upstream = match streamed.take() {
                None => Upstream::new(ReadSide::Whole(stream), Pump::None, lease),
                Some((body, limit)) => {
                    let (rd, wr) = stream.into_split();
                    let pump = super::exchange::spawn_pump(wr, body, limit);
                    Upstream::new(ReadSide::Half(rd), Pump::Running(pump), lease)
                }
            };
            let head =
                match tokio::time::timeout(RESPONSE_TIMEOUT, upstream.read_head(MAX_HEAD)).await {
                    Err(_) => return Err(PhpError::Timeout),
                    Ok(head) => head,
                };
            return match head {
                Ok((head, rest)) => {
                    let body = upstream.into_body(rest).map_err(head_error)?;
                    Ok(Answer { head, body })
                }
                Err(HeadError::Fcgi(FcgiError::Closed)) if reused && retry => {
                    retry = false;
                    lease = upstream.take_lease().expect("not finished");
                    continue;
                }
                Err(e) => Err(head_error(e)),
            };
        }
    }
}

/// The most response header bytes a script may send (nginx's default buffers hold 4-8 KiB;
/// this is generous but bounded).
pub const MAX_HEAD: usize = 64 * 1024;

fn head_error(e: HeadError) -> PhpError {
    match e {
        HeadError::TooLarge => PhpError::Bad("response headers are too large".into()),
        HeadError::Fcgi(e) => PhpError::Bad(e.to_string()),
        HeadError::Pump(PumpError::TooLarge) => PhpError::TooLarge,
        HeadError::Pump(PumpError::Client(e)) => PhpError::Client(e),
        HeadError::Pump(PumpError::Upstream(e)) => PhpError::Bad(e.to_string()),
    }
}

async fn connect(socket: &Path) -> Result<UnixStream, PhpError> {
    UnixStream::connect(socket)
        .await
        .map_err(|e| PhpError::Down(format!("{}: {e}", socket.display())))
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

    use crate::fastcgi::record::{read_record, write_record, EndRequest, ProtocolStatus};
    use http_body_util::BodyExt;
    use tokio::net::UnixListener;

    /// Reads one request as php-fpm would: (begin flags, params seen, stdin length).
    async fn read_request(s: &mut UnixStream) -> Option<(u8, usize)> {
        let (h, body) = read_record(s).await.ok()?;
        assert_eq!(h.record_type, RecordType::BeginRequest);
        let flags = body[2];
        loop {
            let (h, c) = read_record(s).await.ok()?;
            assert_eq!(h.record_type, RecordType::Params);
            if c.is_empty() {
                break;
            }
        }
        let mut stdin = 0;
        loop {
            let (h, c) = read_record(s).await.ok()?;
            assert_eq!(h.record_type, RecordType::Stdin);
            if c.is_empty() {
                break;
            }
            stdin += c.len();
        }
        Some((flags, stdin))
    }

    fn answer(wire: &mut Vec<u8>, body: &[u8]) {
        write_record(
            wire,
            RecordType::Stdout,
            1,
            b"Content-Type: text/plain\r\n\r\n",
        );
        for chunk in body.chunks(record::MAX_RECORD_CONTENT) {
            write_record(wire, RecordType::Stdout, 1, chunk);
        }
        write_record(wire, RecordType::Stdout, 1, &[]);
        let end = EndRequest {
            app_status: 0,
            protocol_status: ProtocolStatus::RequestComplete,
        };
        write_record(wire, RecordType::EndRequest, 1, &end.encode());
    }

    fn socket_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lodge-php-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    fn params() -> Params {
        let mut p = Params::default();
        p.add("REQUEST_METHOD", "GET");
        p
    }

    #[tokio::test]
    async fn short_answers_reuse_the_connection_and_a_closed_one_is_replaced() {
        let path = socket_path("reuse.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // Serves two requests on its first connection and hangs up (pm.max_requests = 2),
        // then one more on a second connection.
        let server = tokio::spawn(async move {
            let mut accepted = 0;
            for per_conn in [2, 1] {
                let (mut s, _) = listener.accept().await.unwrap();
                accepted += 1;
                for _ in 0..per_conn {
                    let (flags, _) = read_request(&mut s).await.unwrap();
                    assert_eq!(flags, record::FLAG_KEEP_CONN);
                    let mut wire = Vec::new();
                    answer(&mut wire, format!("conn {accepted}").as_bytes());
                    s.write_all(&wire).await.unwrap();
                }
            }
            accepted
        });
        let pools = Pools::default();
        let mut bodies = Vec::new();
        for _ in 0..3 {
            let a = pools
                .run(&path, 4, &params(), RequestBody::Empty, true)
                .await
                .unwrap();
            assert_eq!(a.head.status, 200);
            // A short answer comes back whole, its length known.
            assert!(hyper::body::Body::size_hint(&a.body).exact().is_some());
            bodies.push(a.body.collect().await.unwrap().to_bytes());
            // Let the server hang up before the next request looks at the kept connection.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(bodies, ["conn 1", "conn 1", "conn 2"]);
        assert_eq!(server.await.unwrap(), 2);
    }

    #[tokio::test]
    async fn long_answers_stream_and_a_dropped_body_aborts_the_request() {
        let path = socket_path("stream.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        let expected = big.clone();
        let server = tokio::spawn(async move {
            // First: a 3 MB answer, written while the client reads.
            let (mut s, _) = listener.accept().await.unwrap();
            read_request(&mut s).await.unwrap();
            let mut wire = Vec::new();
            answer(&mut wire, &big);
            s.write_all(&wire).await.unwrap();
            // Second: an endless answer; the client goes away.
            read_request(&mut s).await.unwrap();
            let mut wire = Vec::new();
            write_record(&mut wire, RecordType::Stdout, 1, b"\r\n");
            s.write_all(&wire).await.unwrap();
            let chunk = vec![b'x'; 60_000];
            let mut wire = Vec::new();
            write_record(&mut wire, RecordType::Stdout, 1, &chunk);
            let mut sent = 0usize;
            while s.write_all(&wire).await.is_ok() {
                sent += 1;
                if sent > 10_000 {
                    panic!("the client never let go");
                }
            }
            // What came after the request: the abort record, then the end of the stream.
            let mut rest = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut rest).await;
            rest
        });
        let pools = Pools::default();
        let a = pools
            .run(&path, 1, &params(), RequestBody::Empty, true)
            .await
            .unwrap();
        let mut body = a.body;
        let (mut frames, mut got) = (0, Vec::new());
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() <= 64 * 1024 + 16, "{} bytes at once", data.len());
            frames += 1;
            got.extend_from_slice(&data);
        }
        assert!(got == expected, "the streamed body differs");
        assert!(frames > 10, "{frames} frames");

        let a = pools
            .run(&path, 1, &params(), RequestBody::Empty, true)
            .await
            .unwrap();
        let mut body = a.body;
        body.frame().await.unwrap().unwrap();
        drop(body);
        let rest = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the connection is closed")
            .unwrap();
        let mut abort = Vec::new();
        write_record(&mut abort, RecordType::AbortRequest, 1, &[]);
        assert_eq!(rest, abort);
        // The permit came back: another request may start at once.
        assert_eq!(pools.pool(&path, 1).permits.available_permits(), 1);
    }
}
