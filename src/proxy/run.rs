//! Running the proxy: listeners (handed over by the agent, or bound here when run alone),
//! HTTP/1.1 and HTTP/2 through hyper, TLS with a certificate per vhost chosen by SNI, the
//! routes snapshot watched and swapped in without dropping a connection, the metrics socket,
//! and the access logs reopened on SIGUSR1.

use super::access_log::AccessLog;
use super::deadline::{Deadline, SEND_TIMEOUT};
use super::h1::{self, ReqBody};
use super::metrics::Metrics;
use super::php;
use super::reload::{self, Reloader};
use super::sendfile::{Sendfile, SendfileIo};
use super::server::{handle, Conn, Shared};
use super::tls;
use crate::contract::handover::Sockets;
use crate::contract::{LogDir, RunDir};
use anyhow::Context;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The sockets of a proxy run on its own (no agent to hand them over): the listeners from
/// the settings, and the metrics socket in the run directory.
pub fn bind_alone(
    http: Option<SocketAddr>,
    https: Option<SocketAddr>,
    run_dir: &RunDir,
) -> anyhow::Result<Sockets> {
    let bind = |addr: SocketAddr| {
        std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))
    };
    let path = run_dir.proxy_metrics();
    let _ = std::fs::remove_file(&path);
    let metrics = match std::os::unix::net::UnixListener::bind(&path) {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!("lodge: no metrics socket at {}: {e}", path.display());
            None
        }
    };
    Ok(Sockets {
        http: http.map(bind).transpose()?,
        https: https.map(bind).transpose()?,
        metrics,
        ..Sockets::default()
    })
}

/// Serves until SIGTERM or Ctrl-C; access logs go under `log_dir`.
pub async fn serve(run_dir: RunDir, log_dir: LogDir, listeners: Sockets) -> anyhow::Result<()> {
    // Before anything else: SIGUSR1's default action would end the process.
    let mut reopen = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    // Stamped before it is read: a snapshot the agent publishes meanwhile is not mistaken
    // for the one loaded.
    let loaded = reload::stamp(&run_dir);
    let (table, certs) = reload::load(&run_dir);
    let metrics = Arc::new(Metrics::default());
    let access_log = AccessLog::start(log_dir, metrics.clone())?;
    // Request bodies too large for memory wait on disk, in files of the proxy's alone.
    let spool = php::Spool::open(std::path::Path::new(php::SPOOL_PARENT));
    let bodies = php::Bodies::new(php::BodyLimits::default(), spool);
    let shared = Arc::new(Shared::new(table, bodies, metrics, Some(access_log)));
    let resolver = Arc::new(tls::SniResolver::new(certs));

    {
        let shared = shared.clone();
        tokio::spawn(async move {
            while reopen.recv().await.is_some() {
                if let Some(log) = &shared.access_log {
                    log.reopen();
                }
            }
        });
    }
    if let Some(listener) = listeners.metrics {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(listener)?;
        tokio::spawn(serve_metrics(listener, shared.clone()));
    }

    // The snapshot: loaded when the agent says so, and when the file changes.
    let reloader = Arc::new(Reloader::new(
        run_dir,
        shared.clone(),
        resolver.clone(),
        loaded,
    ));
    if let Some(listener) = listeners.control {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(listener)?;
        tokio::spawn(reloader.clone().serve_control(listener));
    }
    tokio::spawn(reloader.watch());

    // Kept FastCGI connections do not pin php-fpm workers for long.
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                shared.pools.sweep();
            }
        });
    }

    // One event loop per core, as nginx has one worker per core: each thread runs its own
    // single-threaded runtime and accepts on the same listening sockets, so a request is
    // served start to end on one thread, without waking another.
    let threads = super::event_loops();
    let acceptor = listeners
        .https
        .as_ref()
        .map(|_| tokio_rustls::TlsAcceptor::from(tls::server_config(resolver.clone())));
    let caps = (
        Arc::new(PerClient::default()),
        Arc::new(PerClient::default()),
    );
    for (listener, scheme) in [(&listeners.http, "http"), (&listeners.https, "https")] {
        if let Some(l) = listener {
            l.set_nonblocking(true)?;
            println!("lodge proxy listening on {scheme}://{}/", l.local_addr()?);
        }
    }
    if listeners.http.is_none() && listeners.https.is_none() {
        anyhow::bail!("both the HTTP and the HTTPS listener are off");
    }
    let (loops, inboxes) = Loops::new(threads);
    let mut inboxes = inboxes.into_iter();
    let first_inbox = inboxes.next().expect("one loop at least");
    for (i, inbox) in (1..).zip(inboxes) {
        let http = listeners.http.as_ref().map(|l| l.try_clone()).transpose()?;
        let https = listeners
            .https
            .as_ref()
            .map(|l| l.try_clone())
            .transpose()?;
        let (acceptor, shared, caps, loops) = (
            acceptor.clone(),
            shared.clone(),
            caps.clone(),
            loops.clone(),
        );
        std::thread::Builder::new()
            .name(format!("proxy-{i}"))
            .spawn(move || {
                super::set_loop(i);
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "starting a proxy thread's runtime");
                        return;
                    }
                };
                let listeners = (http, https);
                let run = accept_all(listeners, acceptor, shared, caps, (loops, i, inbox));
                if let Err(e) = runtime.block_on(run) {
                    tracing::error!(error = %e, "a proxy thread stopped");
                }
            })?;
    }
    let tasks = vec![tokio::spawn(accept_all(
        (listeners.http, listeners.https),
        acceptor,
        shared.clone(),
        caps,
        (loops.clone(), 0, first_inbox),
    ))];
    tokio::select! {
        _ = futures_util::future::join_all(tasks) => {}
        _ = crate::contract::signals::shutdown() => {}
    }
    // Stopping is draining: no more accepts, kept-alive connections closed between
    // requests, the requests in flight answered, within a bound.
    super::drain::start();
    let deadline = std::time::Instant::now() + DRAIN_BOUND;
    while loops.open() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if loops.open() > 0 {
        tracing::warn!(
            open = loops.open(),
            "drain bound reached; closing what is left"
        );
    }
    // The lines still buffered reach their files before the process ends.
    tokio::task::spawn_blocking(move || {
        if let Some(log) = &shared.access_log {
            log.stop();
        }
    })
    .await?;
    Ok(())
}

/// Answers each connection to the metrics socket with the current metrics, then closes it.
async fn serve_metrics(listener: tokio::net::UnixListener, shared: Arc<Shared>) {
    use tokio::io::AsyncWriteExt;
    loop {
        let mut stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept on the metrics socket");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let text = shared.metrics_text();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                stream.write_all(text.as_bytes()).await?;
                stream.shutdown().await
            })
            .await;
        });
    }
}

/// How long a stopping proxy finishes its open requests (the agent's own bound for a
/// replaced proxy is longer, so the proxy ends on its own).
const DRAIN_BOUND: Duration = Duration::from_secs(25);

/// Open connections one client address may hold; more are closed at once (a single
/// address cannot take every connection slot).
const MAX_PER_CLIENT: usize = 256;

/// Counts open connections per client address.
#[derive(Default)]
struct PerClient(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One open connection of an address, counted until dropped.
struct Slot(Arc<PerClient>, std::net::IpAddr);

impl PerClient {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<Slot> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= MAX_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(Slot(self.clone(), ip))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

/// A connection accepted, with what it is counted in; handed to another event loop as a
/// `std` stream (registered with none), served as a tokio one.
struct Accepted<S> {
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    slot: Slot,
    open: Open,
}

impl<S> Accepted<S> {
    /// The same connection as another kind of stream.
    fn map_stream<T>(
        self,
        f: impl FnOnce(S) -> std::io::Result<T>,
    ) -> std::io::Result<Accepted<T>> {
        Ok(Accepted {
            stream: f(self.stream)?,
            peer: self.peer,
            local: self.local,
            tls: self.tls,
            slot: self.slot,
            open: self.open,
        })
    }
}

/// The event loops, each with its count of open connections and the way to hand it one.
/// Every loop accepts, but a connection is served by the loop with the fewest open: which
/// loop wakes first for a burst of new connections is chance, and with keep-alive an uneven
/// share lasts (one core busy, the other half idle).
struct Loops(Vec<(Outbox, Arc<AtomicUsize>)>);

type Outbox = tokio::sync::mpsc::UnboundedSender<Accepted<std::net::TcpStream>>;
type Inbox = tokio::sync::mpsc::UnboundedReceiver<Accepted<std::net::TcpStream>>;

impl Loops {
    fn new(n: usize) -> (Arc<Self>, Vec<Inbox>) {
        let (loops, inboxes) = (0..n)
            .map(|_| {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                ((tx, Arc::new(AtomicUsize::new(0))), rx)
            })
            .unzip();
        (Arc::new(Self(loops)), inboxes)
    }

    /// The loop a new connection goes to: the one with the fewest open, `here` on a tie.
    /// The connection is counted on it until the returned [`Open`] is dropped.
    fn pick(&self, here: usize) -> (usize, Open) {
        let count = |i: usize| self.0[i].1.load(Ordering::Relaxed);
        let mut best = here;
        for i in 0..self.0.len() {
            if count(i) < count(best) {
                best = i;
            }
        }
        (best, self.count(best))
    }

    /// Connections open on every loop.
    fn open(&self) -> usize {
        self.0.iter().map(|(_, n)| n.load(Ordering::Relaxed)).sum()
    }

    /// Counts one more open connection on loop `i`.
    fn count(&self, i: usize) -> Open {
        let counter = self.0[i].1.clone();
        counter.fetch_add(1, Ordering::Relaxed);
        Open(counter)
    }
}

/// A connection counted as open on its loop.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The accept loops of one thread, on its runtime, and the connections other loops hand it.
async fn accept_all(
    (http, https): (Option<std::net::TcpListener>, Option<std::net::TcpListener>),
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    caps: (Arc<PerClient>, Arc<PerClient>),
    (loops, here, mut inbox): (Arc<Loops>, usize, Inbox),
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    if let Some(l) = http {
        let l = tokio::net::TcpListener::from_std(l)?;
        let to = (loops.clone(), here);
        tasks.push(tokio::spawn(accept(l, None, shared.clone(), caps.0, to)));
    }
    if let (Some(l), Some(acceptor)) = (https, acceptor) {
        let l = tokio::net::TcpListener::from_std(l)?;
        let to = (loops.clone(), here);
        tasks.push(tokio::spawn(accept(
            l,
            Some(acceptor),
            shared.clone(),
            caps.1,
            to,
        )));
    }
    tasks.push(tokio::spawn(async move {
        while let Some(a) = inbox.recv().await {
            if let Ok(a) = a.map_stream(tokio::net::TcpStream::from_std) {
                tokio::spawn(serve_accepted(a, shared.clone()));
            }
        }
    }));
    futures_util::future::join_all(tasks).await;
    Ok(())
}

/// Accepts connections for ever; each is served on a task of its own, on the loop
/// [`Loops::pick`] chooses. With `tls`, connections are TLS (handshake on the connection's
/// task); without, plain. `per_client` counts connections per address across every thread.
async fn accept(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    per_client: Arc<PerClient>,
    (loops, here): (Arc<Loops>, usize),
) {
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            // A draining proxy accepts no more: the next proxy, on the same socket, does.
            _ = super::drain::wait() => return,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = per_client.take(peer.ip()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (to, open) = loops.pick(here);
        let a = Accepted {
            stream,
            peer,
            local,
            tls: tls.clone(),
            slot,
            open,
        };
        let a = if to == here {
            a
        } else {
            let Ok(a) = a.map_stream(|s| s.into_std()) else {
                continue;
            };
            match loops.0[to].0.send(a) {
                Ok(()) => continue,
                // That loop's thread is gone: this one serves it.
                Err(tokio::sync::mpsc::error::SendError(mut a)) => {
                    a.open = loops.count(here);
                    let Ok(a) = a.map_stream(tokio::net::TcpStream::from_std) else {
                        continue;
                    };
                    a
                }
            }
        };
        tokio::spawn(serve_accepted(a, shared.clone()));
    }
}

/// Serves one accepted connection until it closes.
async fn serve_accepted(a: Accepted<tokio::net::TcpStream>, shared: Arc<Shared>) {
    let Accepted {
        stream,
        peer,
        local,
        tls,
        slot: _slot,
        open: _open,
    } = a;
    match tls {
        None => {
            let parts = Sendfile::default();
            let conn = Conn::new(peer, local, false, None, Some(parts.clone()));
            let io = Deadline::new(SendfileIo::new(stream, parts), SEND_TIMEOUT);
            // Bodiless GET and HEAD on the lean path; the rest of the connection goes to
            // hyper from the first request that is not.
            let rest = h1::serve(io, |req| handle(shared.clone(), conn.clone(), req)).await;
            if let Some(rest) = rest {
                serve_connection(rest, conn, shared).await
            }
        }
        Some(acceptor) => {
            // A handshake that stalls must not hold the connection for ever.
            let stream = Deadline::new(stream, SEND_TIMEOUT);
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
            else {
                return;
            };
            let sni = stream.get_ref().1.server_name().map(str::to_owned);
            let conn = Conn::new(peer, local, true, sni, None);
            serve_connection(stream, conn, shared).await
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 on one connection until it closes.
async fn serve_connection<I>(io: I, conn: Conn, shared: Arc<Shared>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let (shared, conn) = (shared.clone(), conn.clone());
        async move {
            let req = req.map(ReqBody::Incoming);
            Ok::<_, std::convert::Infallible>(handle(shared, conn, req).await)
        }
    });
    let builder = builder();
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = super::drain::idle_closed() => {
            // Requests in flight are answered; then the connection closes (HTTP/2 with a
            // GOAWAY).
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// HTTP/1.1 and HTTP/2 on one listener; slow headers are cut off (slowloris).
fn builder() -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // writev: body buffers are handed to the stream as they are, never copied, which the
    // sendfile tokens rely on (see `super::sendfile`).
    b.http1()
        .writev(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(64 * 1024);
    b.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(128);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_to_the_loop_with_the_fewest_open() {
        let (loops, _inboxes) = Loops::new(3);
        let count = |i: usize| loops.0[i].1.load(Ordering::Relaxed);
        // A burst accepted on loop 1 is spread evenly, loop 1 first on a tie.
        let open: Vec<(usize, Open)> = (0..6).map(|_| loops.pick(1)).collect();
        let to: Vec<usize> = open.iter().map(|(i, _)| *i).collect();
        assert_eq!(to, [1, 0, 2, 1, 0, 2]);
        assert_eq!((count(0), count(1), count(2)), (2, 2, 2));
        // A closed connection makes room on its loop.
        let mut open = open;
        open.remove(4);
        assert_eq!((count(0), count(1), count(2)), (1, 2, 2));
        assert_eq!(loops.pick(2).0, 0);
    }

    #[test]
    fn one_address_cannot_take_every_connection() {
        let per_client = Arc::new(PerClient::default());
        let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let mut slots: Vec<Slot> = (0..MAX_PER_CLIENT)
            .map(|_| per_client.take(ip).expect("a slot"))
            .collect();
        assert!(per_client.take(ip).is_none(), "over the cap");
        assert!(
            per_client.take("192.0.2.8".parse().unwrap()).is_some(),
            "other addresses are not affected"
        );
        slots.pop();
        assert!(
            per_client.take(ip).is_some(),
            "a closed connection frees its slot"
        );
        drop(slots);
        assert!(per_client.0.lock().unwrap().len() <= 1);
    }
}
