//! The request body on its way to php-fpm, read whole before a worker is asked for (as
//! nginx does): a worker is held only while PHP runs, never while a slow client sends.
//!
//! A body up to [`BodyLimits::in_memory`] is kept in memory and goes out in the same write
//! as the parameters; a larger one, or any once the memory budget is spent, waits in an
//! unnamed file of the [`Spool`]. Both are counted in budgets of the whole proxy with a share
//! per tenant ([`Budget`]): past the memory budget a body is spooled, past the spool's it is
//! refused with 503, never held. Every body reaches PHP with its `CONTENT_LENGTH`, a chunked
//! one too. One that sends nothing for [`BodyLimits::idle`] is given up (408).

use super::budget::{Budget, Held};
use super::spool::{self, Spool};
use crate::domain::TenantName;
use crate::proxy::h1::ReqBody;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

/// How the proxy holds request bodies.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// The largest body kept in memory; a larger one is spooled.
    pub in_memory: u64,
    /// Body bytes held in memory by the whole proxy.
    pub memory_total: u64,
    /// Body bytes held in memory for one tenant's sites.
    pub memory_per_tenant: u64,
    /// Body bytes spooled by the whole proxy.
    pub spool_total: u64,
    /// Body bytes spooled for one tenant's sites, or the site's body limit if that is
    /// larger (the largest upload a plan allows always fits).
    pub spool_per_tenant: u64,
    /// Spooled bodies at once (each holds a descriptor), in all and for one tenant.
    pub spool_files_total: u64,
    pub spool_files_per_tenant: u64,
    /// Spooling stops (503) where it would leave less free on the spool's filesystem.
    pub spool_free_floor: u64,
    /// How long a body may send nothing before it is given up (nginx's
    /// `client_body_timeout`, with its default: a slow uplink still sends within a minute).
    pub idle: Duration,
}

const MIB: u64 = 1 << 20;

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            in_memory: 64 * 1024,
            memory_total: 64 * MIB,
            memory_per_tenant: 16 * MIB,
            spool_total: 16 * 1024 * MIB,
            spool_per_tenant: 2 * 1024 * MIB,
            spool_files_total: 2048,
            spool_files_per_tenant: 512,
            spool_free_floor: 1024 * MIB,
            idle: Duration::from_secs(60),
        }
    }
}

/// The free space of the spool's filesystem is looked at again each time a body has
/// grown by this much.
const FREE_CHECK: u64 = 64 * MIB;

/// The budgets and the spool every request body is read into.
pub struct Bodies {
    limits: BodyLimits,
    memory: Arc<Budget>,
    spooled: Arc<Budget>,
    files: Arc<Budget>,
    spool: Spool,
}

/// A request's body, as it goes to php-fpm.
pub enum RequestBody {
    /// No body.
    Empty,
    /// A body held in memory, and its place in the memory budget.
    Whole(Bytes, Held),
    /// A body in a spooled file.
    Spooled(Spooled),
}

impl RequestBody {
    /// Its length (`None`: there is none).
    pub fn len(&self) -> Option<u64> {
        match self {
            RequestBody::Empty => None,
            RequestBody::Whole(b, _) => Some(b.len() as u64),
            RequestBody::Spooled(s) => Some(s.len),
        }
    }
}

/// A body in an unnamed file, with its place in the spool's budgets.
pub struct Spooled {
    pub file: Arc<File>,
    pub len: u64,
    _bytes: Held,
    _file: Held,
}

/// Why a body is not passed on.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Larger than the site accepts: 413.
    TooLarge,
    /// No room for it now (the budgets are spent, or the spool failed): 503.
    Busy,
    /// It stopped arriving: 408.
    TimedOut,
    /// It broke off or broke HTTP framing: 400.
    Unreadable,
}

impl Bodies {
    pub fn new(limits: BodyLimits, spool: Spool) -> Self {
        Self {
            memory: Budget::new(limits.memory_total),
            spooled: Budget::new(limits.spool_total),
            files: Budget::new(limits.spool_files_total),
            limits,
            spool,
        }
    }

    /// Reads the body of a request to a site of `tenant` that accepts `limit` bytes.
    pub async fn read(
        &self,
        body: ReqBody,
        tenant: &TenantName,
        limit: u64,
    ) -> Result<RequestBody, Refused> {
        use hyper::body::Body as _;
        let mut body: Incoming = match body {
            ReqBody::Empty => return Ok(RequestBody::Empty),
            ReqBody::Incoming(body) => body,
        };
        if body.is_end_stream() {
            return Ok(RequestBody::Empty);
        }
        let exact = body.size_hint().exact();
        if exact.is_some_and(|n| n > limit) {
            return Err(Refused::TooLarge);
        }
        let in_memory = self.limits.in_memory;
        let mut memory = self.memory.hold(tenant, self.limits.memory_per_tenant);
        let mut kept: Vec<u8> = Vec::new();
        let mut spooled = None;
        match exact {
            Some(n) if n <= in_memory && memory.grow(n).is_ok() => kept.reserve_exact(n as usize),
            Some(_) => spooled = Some(self.spool(tenant, limit)?),
            None => {}
        }
        let mut total = 0u64;
        loop {
            let frame = match tokio::time::timeout(self.limits.idle, body.frame()).await {
                Err(_) => return Err(Refused::TimedOut),
                Ok(None) => break,
                Ok(Some(Err(_))) => return Err(Refused::Unreadable),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers carry nothing for CGI
            };
            total += data.len() as u64;
            if total > limit {
                return Err(Refused::TooLarge);
            }
            if let Some(w) = &mut spooled {
                w.write(data).await?;
            } else if total <= in_memory && room(&mut kept, data.len(), &mut memory) {
                kept.extend_from_slice(&data);
            } else {
                // Too large for memory, or no memory left for it: on to the spool.
                let mut w = self.spool(tenant, limit)?;
                w.write(Bytes::from(std::mem::take(&mut kept))).await?;
                memory.release();
                w.write(data).await?;
                spooled = Some(w);
            }
        }
        Ok(match spooled {
            Some(w) => RequestBody::Spooled(w.done()),
            None if kept.is_empty() => RequestBody::Empty,
            None => RequestBody::Whole(Bytes::from(kept), memory),
        })
    }

    /// A new spooled file for a body of `tenant`, if the budgets have room for one.
    fn spool(&self, tenant: &TenantName, limit: u64) -> Result<Writer, Refused> {
        let mut file_held = self.files.hold(tenant, self.limits.spool_files_per_tenant);
        file_held.grow(1).map_err(|_| Refused::Busy)?;
        let file = self.spool.file().map_err(|e| {
            tracing::warn!(dir = %self.spool.dir().display(), error = %e, "no spool file");
            Refused::Busy
        })?;
        let share = self.limits.spool_per_tenant.max(limit);
        Ok(Writer {
            file: Arc::new(file),
            len: 0,
            bytes: self.spooled.hold(tenant, share),
            _file: file_held,
            floor: self.limits.spool_free_floor,
        })
    }

    /// What the bodies of `tenant` hold now: memory bytes, spooled bytes, spooled files.
    #[cfg(test)]
    pub fn held(&self, tenant: &TenantName) -> (u64, u64, u64) {
        (
            self.memory.used(tenant).1,
            self.spooled.used(tenant).1,
            self.files.used(tenant).1,
        )
    }
}

/// Makes room in `kept` for `more` bytes, counted in `memory`; `false` when the budget has
/// none. Exactly as much as is needed: a body kept in memory is at most a few frames, so
/// growing it is a few copies of a few KiB, and what is counted is what is held.
fn room(kept: &mut Vec<u8>, more: usize, memory: &mut Held) -> bool {
    let short = (kept.len() + more).saturating_sub(kept.capacity());
    if short == 0 {
        return true;
    }
    if memory.grow(short as u64).is_err() {
        return false;
    }
    kept.reserve_exact(more);
    true
}

/// A spooled file being written.
struct Writer {
    file: Arc<File>,
    len: u64,
    bytes: Held,
    _file: Held,
    floor: u64,
}

impl Writer {
    /// Appends `data`.
    async fn write(&mut self, data: Bytes) -> Result<(), Refused> {
        let n = data.len() as u64;
        if n == 0 {
            return Ok(());
        }
        self.bytes.grow(n).map_err(|_| Refused::Busy)?;
        let check = self.len == 0 || self.len / FREE_CHECK != (self.len + n) / FREE_CHECK;
        let (file, at, floor) = (self.file.clone(), self.len, self.floor);
        let written = spool::io(move || {
            if check && spool::free_space(&file)? < floor.saturating_add(n) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "the spool's filesystem is nearly full",
                ));
            }
            file.write_all_at(&data, at)
        })
        .await;
        match written {
            Ok(()) => {
                self.len += n;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "spooling a request body");
                Err(Refused::Busy)
            }
        }
    }

    fn done(self) -> Spooled {
        Spooled {
            file: self.file,
            len: self.len,
            _bytes: self.bytes,
            _file: self._file,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::{chunk, conn, connect, get, reply, send, Fpm, Site, DOMAIN};
    use std::time::Instant;
    use tokio::io::AsyncWriteExt;

    /// Counts and hashes what it reads of its body, without keeping it, and says what
    /// `CONTENT_LENGTH` it was given.
    const SINK_PHP: &str =
        "<?php $in = fopen('php://input', 'r'); $n = 0; $h = hash_init('sha256');
while (!feof($in)) { $d = fread($in, 65536); $n += strlen($d); hash_update($h, $d); }
echo $_SERVER['CONTENT_LENGTH'], ' ', $n, ' ', hash_final($h);";

    /// What the sink answers for `body`.
    fn sunk(body: &[u8]) -> String {
        use sha2::Digest;
        let sum: String = sha2::Sha256::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{n} {n} {sum}", n = body.len())
    }

    fn post(headers: &str) -> Vec<u8> {
        format!("POST /sink.php HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n{headers}\r\n")
            .into_bytes()
    }

    fn acme() -> TenantName {
        TenantName::parse("acme").unwrap()
    }

    /// Waits (at most 5 s) until `done` holds.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_chunked_body_larger_than_memory_reaches_php_whole_with_its_length() {
        let site = Site::new("chunked-spool");
        site.write("sink.php", SINK_PHP);
        let test = "a_chunked_body_larger_than_memory_reaches_php_whole_with_its_length";
        let Some(_fpm) = Fpm::start(&site, test) else {
            return;
        };
        let mut entry = site.entry();
        entry.body_limit_mb = 32;
        let shared = Site::shared(entry);
        // Past the 16 MiB that chunked bodies were once read into memory up to (else 411).
        let body: Vec<u8> = (0..17u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut request = post("Transfer-Encoding: chunked\r\n");
        for part in body.chunks(1 << 20) {
            request.extend(chunk(part));
        }
        request.extend(chunk(b""));
        let r = send(shared.clone(), conn(false, None), &request).await;
        assert_eq!((r.status, r.text()), (200, sunk(&body)));
        assert_eq!(shared.bodies.held(&acme()), (0, 0, 0), "all given back");
    }

    #[tokio::test]
    async fn bodies_are_held_within_the_budgets_and_refused_past_them() {
        let site = Site::new("budgets");
        site.write("sink.php", SINK_PHP);
        let test = "bodies_are_held_within_the_budgets_and_refused_past_them";
        let Some(_fpm) = Fpm::start(&site, test) else {
            return;
        };
        let limits = BodyLimits {
            memory_total: 128 << 10,
            memory_per_tenant: 128 << 10,
            spool_total: 512 << 10,
            ..BodyLimits::default()
        };
        // The site takes bodies up to 1 MiB.
        let shared = Site::shared_with(site.entry(), limits);
        let held = || shared.bodies.held(&acme());
        let part = vec![b'a'; 48 << 10];

        // Three chunked bodies, not finished: two fit in memory, the third no longer does
        // and is spooled.
        let mut open = Vec::new();
        for expected in [(48 << 10, 0, 0), (96 << 10, 0, 0), (96 << 10, 48 << 10, 1)] {
            let mut client = connect(shared.clone(), conn(false, None));
            client
                .write_all(&post("Transfer-Encoding: chunked\r\n"))
                .await
                .unwrap();
            client.write_all(&chunk(&part)).await.unwrap();
            open.push(client);
            until(&format!("held {expected:?}, not {:?}", held()), || {
                held() == expected
            })
            .await;
        }

        // A fourth, within the site's limit but past what is left of the spool, is refused
        // at once; the others wait on.
        let mut fourth = connect(shared.clone(), conn(false, None));
        fourth
            .write_all(&post("Transfer-Encoding: chunked\r\n"))
            .await
            .unwrap();
        let (mut rd, mut wr) = tokio::io::split(fourth);
        tokio::spawn(async move {
            for _ in 0..20 {
                // The proxy may close the connection before all of it went.
                if wr.write_all(&chunk(&part)).await.is_err() {
                    break;
                }
            }
        });
        let r = reply(&mut rd).await;
        assert_eq!((r.status, r.header("retry-after")), (503, Some("5")));
        until("the refused body gave back what it held", || {
            held() == (96 << 10, 48 << 10, 1)
        })
        .await;

        // The three reach PHP whole once they end, and hold nothing after.
        for mut client in open {
            client.write_all(&chunk(b"")).await.unwrap();
            let r = reply(&mut client).await;
            assert_eq!((r.status, r.text()), (200, sunk(&[b'a'; 48 << 10])));
        }
        assert_eq!(held(), (0, 0, 0));
    }

    #[tokio::test]
    async fn a_slow_body_holds_no_worker_and_one_that_stops_is_given_up() {
        let site = Site::new("slow-body");
        site.write("sink.php", SINK_PHP);
        site.write("hello.php", "<?php echo 'hello';");
        let test = "a_slow_body_holds_no_worker_and_one_that_stops_is_given_up";
        let Some(_fpm) = Fpm::start(&site, test) else {
            return;
        };
        let limits = BodyLimits {
            idle: Duration::from_secs(1),
            ..BodyLimits::default()
        };
        let shared = Site::shared_with(site.entry(), limits);
        // Larger than is kept in memory: spooled (it was once streamed to a leased worker).
        let body: Vec<u8> = (0..100u32 << 10).map(|i| (i % 251) as u8).collect();
        let head = post(&format!("Content-Length: {}\r\n", body.len()));
        // As many uploads as the pool has workers: one sends a byte every 250 ms, the
        // other stops after its first bytes.
        let mut trickle = connect(shared.clone(), conn(false, None));
        let mut stopped = connect(shared.clone(), conn(false, None));
        for client in [&mut trickle, &mut stopped] {
            client.write_all(&head).await.unwrap();
            client.write_all(&body[..1000]).await.unwrap();
        }
        let started = Instant::now();
        let mut sent = 1000;
        while started.elapsed() < Duration::from_millis(2500) {
            // Every worker is free meanwhile: others are answered at once.
            let r = get(shared.clone(), conn(false, None), DOMAIN, "/hello.php").await;
            assert_eq!((r.status, r.text().as_str()), (200, "hello"));
            trickle.write_all(&body[sent..sent + 1]).await.unwrap();
            sent += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(shared.pools.free_permits(&site.socket(), 2), 2);
        // The one that stopped was given up after a second without a byte; the trickle,
        // never silent that long, goes through.
        let r = reply(&mut stopped).await;
        assert_eq!(r.status, 408, "{}", r.text());
        trickle.write_all(&body[sent..]).await.unwrap();
        let r = reply(&mut trickle).await;
        assert_eq!((r.status, r.text()), (200, sunk(&body)));
    }
}
