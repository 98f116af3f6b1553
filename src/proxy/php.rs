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
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::oneshot;

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
    max: usize,
    gate: Mutex<Gate>,
}

impl Pool {
    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A pool's permits (one per php-fpm worker), the requests waiting for one and the kept
/// connections, the last two by event loop: a socket wakes the loop it is registered with,
/// so a loop that leases its own connections and hands permits to its own waiters never has
/// to wake another thread.
#[derive(Default)]
struct Gate {
    /// Permits no request holds.
    free: usize,
    /// Requests waiting for a permit, by event loop, oldest first.
    waiters: Vec<VecDeque<Waiter>>,
    /// Kept connections, by the event loop they are registered with.
    idle: Vec<Vec<(UnixStream, Instant)>>,
    next_id: u64,
}

struct Waiter {
    id: u64,
    since: Instant,
    grant: oneshot::Sender<()>,
}

/// A permit goes to a waiter of the loop that released it, unless another loop's oldest
/// waiter has waited this much longer: loops with more requests draw permits to them.
const LOCAL_SLACK: Duration = Duration::from_millis(5);

fn slot<T: Default>(list: &mut Vec<T>, i: usize) -> &mut T {
    if list.len() <= i {
        list.resize_with(i + 1, T::default);
    }
    &mut list[i]
}

impl Gate {
    /// Requests waiting for a permit, on every loop.
    fn waiting(&self) -> usize {
        self.waiters.iter().map(VecDeque::len).sum()
    }

    /// Hands a permit given back on loop `here` to the next waiter, or keeps it free.
    fn release(&mut self, here: usize) {
        loop {
            let oldest = |q: &VecDeque<Waiter>| q.front().map(|w| w.since);
            let local = self.waiters.get(here).and_then(oldest);
            let remote = (0..self.waiters.len())
                .filter(|&i| i != here)
                .filter_map(|i| Some((i, oldest(&self.waiters[i])?)))
                .min_by_key(|&(_, since)| since);
            let pick = match (local, remote) {
                (Some(l), Some((i, r))) if r + LOCAL_SLACK < l => i,
                (Some(_), _) => here,
                (None, Some((i, _))) => i,
                (None, None) => {
                    self.free += 1;
                    return;
                }
            };
            let Some(w) = self.waiters[pick].pop_front() else {
                return;
            };
            if w.grant.send(()).is_ok() {
                return;
            }
        }
    }

    /// A kept connection: one of loop `here`, else one of the loop that keeps the most
    /// (`true`: it must be moved to this loop).
    fn take_idle(&mut self, here: usize) -> Option<(UnixStream, bool)> {
        if let Some((s, _)) = self.idle.get_mut(here).and_then(Vec::pop) {
            return Some((s, false));
        }
        let most = self
            .idle
            .iter_mut()
            .filter(|l| !l.is_empty())
            .max_by_key(|l| l.len())?;
        most.pop().map(|(s, _)| (s, true))
    }
}

/// A request's place in a pool: a permit (one of `pm.max_children`) and, given back at a
/// clean end, the connection it used.
pub struct Lease {
    pool: Arc<Pool>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.gate().release(super::current_loop());
    }
}

/// A request in a pool's queue; dropped before it was granted a permit (the wait ran out,
/// or the client went away) it leaves the queue, and a permit granted meanwhile goes on.
struct Queued {
    pool: Arc<Pool>,
    here: usize,
    id: u64,
    grant: oneshot::Receiver<()>,
    granted: bool,
}

impl Drop for Queued {
    fn drop(&mut self) {
        if self.granted {
            return;
        }
        // `grant` lives until this returns: a permit sent before the lock was taken arrived.
        let mut gate = self.pool.gate();
        let queue = slot(&mut gate.waiters, self.here);
        match queue.iter().position(|w| w.id == self.id) {
            Some(at) => {
                queue.remove(at);
            }
            None => gate.release(self.here),
        }
    }
}

impl Lease {
    pub fn socket(&self) -> &Path {
        &self.pool.socket
    }

    /// Keeps `stream` for the next request of this event loop.
    pub fn give_back(self, stream: UnixStream) {
        let mut gate = self.pool.gate();
        slot(&mut gate.idle, super::current_loop()).push((stream, Instant::now()));
    }

    /// A kept connection that is still open, or a new one.
    async fn connection(&self) -> Result<(UnixStream, bool), PhpError> {
        let here = super::current_loop();
        loop {
            let kept = self.pool.gate().take_idle(here);
            let stream = match kept {
                None => return Ok((connect(&self.pool.socket).await?, false)),
                Some((stream, false)) => stream,
                // Kept by another loop: registered here instead, so that its answers
                // wake this loop.
                Some((stream, true)) => match stream.into_std().and_then(UnixStream::from_std) {
                    Ok(s) => s,
                    Err(_) => continue,
                },
            };
            if still_open(&stream) {
                return Ok((stream, true));
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
                    max: max as usize,
                    gate: Mutex::new(Gate {
                        free: max as usize,
                        ..Gate::default()
                    }),
                });
                pools.insert(socket.to_owned(), p.clone());
                p
            }
        }
    }

    fn all(&self) -> Vec<Arc<Pool>> {
        self.pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Requests waiting for a worker, by pool socket.
    pub fn queues(&self) -> Vec<(PathBuf, usize)> {
        self.all()
            .into_iter()
            .map(|p| {
                let waiting = p.gate().waiting();
                (p.socket.clone(), waiting)
            })
            .collect()
    }

    /// Closes kept connections idle for longer than `IDLE_KEEP`; run every second or so.
    pub fn sweep(&self) {
        for pool in self.all() {
            for idle in &mut pool.gate().idle {
                idle.retain(|(_, since)| since.elapsed() < IDLE_KEEP);
            }
        }
    }

    /// Waits for a free worker of the pool (bounded queue, bounded wait).
    async fn lease(&self, socket: &Path, max_children: u32) -> Result<Lease, PhpError> {
        let pool = self.pool(socket, max_children.max(1));
        let here = super::current_loop();
        let mut queued = {
            let mut gate = pool.gate();
            if gate.free > 0 {
                gate.free -= 1;
                drop(gate);
                return Ok(Lease { pool });
            }
            if gate.waiting() >= pool.max * QUEUE_PER_WORKER {
                return Err(PhpError::Saturated);
            }
            let (tx, rx) = oneshot::channel();
            let id = gate.next_id;
            gate.next_id += 1;
            slot(&mut gate.waiters, here).push_back(Waiter {
                id,
                since: Instant::now(),
                grant: tx,
            });
            Queued {
                pool: pool.clone(),
                here,
                id,
                grant: rx,
                granted: false,
            }
        };
        match tokio::time::timeout(QUEUE_WAIT, &mut queued.grant).await {
            Ok(Ok(())) => {
                queued.granted = true;
                Ok(Lease { pool })
            }
            _ => Err(PhpError::Saturated),
        }
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

    /// Queues a waiter on loop `on` that has waited `ago`; its grant's receiver.
    fn wait(gate: &mut Gate, on: usize, ago: Duration) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        gate.next_id += 1;
        slot(&mut gate.waiters, on).push_back(Waiter {
            id: gate.next_id,
            since: Instant::now() - ago,
            grant: tx,
        });
        rx
    }

    #[test]
    fn a_permit_goes_to_its_own_loop_unless_another_waited_much_longer() {
        let mut gate = Gate::default();
        let mut a = wait(&mut gate, 0, Duration::from_millis(1));
        let mut b = wait(&mut gate, 1, Duration::from_millis(3));
        // Loop 1's waiter is older, but not by LOCAL_SLACK: loop 0 keeps its permit.
        gate.release(0);
        assert!(a.try_recv().is_ok());
        assert!(b.try_recv().is_err());
        // A waiter far older than the local one is served first.
        let mut c = wait(&mut gate, 0, Duration::ZERO);
        let mut d = wait(&mut gate, 2, LOCAL_SLACK * 4);
        gate.release(0);
        assert!(d.try_recv().is_ok() && c.try_recv().is_err());
        // With no waiter of its own, a loop hands its permit to another loop's: the oldest.
        gate.release(3);
        assert!(b.try_recv().is_ok() && c.try_recv().is_err());
        gate.release(1);
        assert!(c.try_recv().is_ok());
        assert_eq!((gate.waiting(), gate.free), (0, 0));
        // A waiter that gave up is skipped; with nobody waiting the permit is free.
        drop(wait(&mut gate, 1, Duration::ZERO));
        gate.release(0);
        assert_eq!((gate.waiting(), gate.free), (0, 1));
    }

    #[tokio::test]
    async fn a_waiter_that_leaves_gives_up_its_place_and_any_slot_it_was_given() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let pools = Pools::default();
        let path = Path::new("/nonexistent/lodge-gate.sock");
        let gate = || {
            let pool = pools.pool(path, 1);
            let g = pool.gate();
            (g.free, g.waiting())
        };
        let mut cx = Context::from_waker(Waker::noop());
        let first = pools.lease(path, 1).await.ok().unwrap();
        assert_eq!(gate(), (0, 0));

        // Queued, then gone before a slot came: it leaves the queue.
        let mut left = Box::pin(pools.lease(path, 1));
        assert!(left.as_mut().poll(&mut cx).is_pending());
        assert_eq!(gate(), (0, 1));
        drop(left);
        assert_eq!(gate(), (0, 0));

        // Queued, handed the slot, gone before it looked: the slot goes on (here: free).
        let mut handed = Box::pin(pools.lease(path, 1));
        assert!(handed.as_mut().poll(&mut cx).is_pending());
        drop(first);
        assert_eq!(gate(), (0, 0));
        drop(handed);
        assert_eq!(gate(), (1, 0));

        // A waiter that stays gets the slot when it is given back.
        let held = pools.lease(path, 1).await.ok().unwrap();
        let mut next = Box::pin(pools.lease(path, 1));
        assert!(next.as_mut().poll(&mut cx).is_pending());
        drop(held);
        let Poll::Ready(Ok(lease)) = next.as_mut().poll(&mut cx) else {
            panic!("the waiter did not get the slot");
        };
        drop(lease);
        assert_eq!(gate(), (1, 0));
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
        assert_eq!(pools.pool(&path, 1).gate().free, 1);
    }
}
