//! Access logs, one file per vhost in the combined format, written off the request path.
//!
//! A request only puts a small record in its event loop's bounded queue (a full queue drops
//! the line and counts it, a request never waits for the disk; no loop shares a queue with
//! another). One thread takes the queues' records every 50 ms, formats them and appends
//! them through buffered writers, flushed about once a second. On SIGUSR1 the
//! files are flushed and closed, and opened again (by name) at their next line: move a file
//! away, send the signal, and the proxy starts a new one.
//!
//! Layout: `<log-dir>/access/<tenant>/<domain>.log`, the domain being the vhost's primary
//! one. The agent makes each tenant's directory (owned by the proxy's user, group of the
//! panel, setgid, 2750), so the proxy writes, the panel reads, and tenants reach none of it.
//! Requests for hosts no vhost answers to are not logged (they are counted in the metrics).
//!
//! ```text
//! 192.0.2.7 - - [22/Nov/2026:10:04:31 +0000] "GET /index.php?p=1 HTTP/1.1" 200 5120 "https://ref.example/" "Mozilla/5.0 ..."
//! ```
//!
//! Times are UTC. The byte count is the response body's length as known when the response
//! starts: its Content-Length, or the size of a body built whole; `-` for a streamed body of
//! unknown length, 0 for HEAD, 204 and 304. Double quotes, backslashes, control characters
//! and bytes outside printable ASCII in the request line, the referer and the user agent are
//! written as `\xHH`, so no value can end a field or start a line of its own.

use super::metrics::{Dropped, Metrics};
use super::routes::Route;
use crate::contract::LogDir;
use hyper::header::HeaderValue;
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Version};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Records an event loop's queue holds before lines are dropped.
pub const QUEUE: usize = 8192;
/// How often the logger thread takes the queues' records: [`QUEUE`] lines per this and loop
/// is the most it takes without dropping any (160,000 a second per loop).
const BATCH: Duration = Duration::from_millis(50);
/// How often buffered lines reach the files.
const FLUSH: Duration = Duration::from_secs(1);
/// A file without a line for this long is closed (it is opened again at its next line).
const IDLE_CLOSE: Duration = Duration::from_secs(300);
/// After a file could not be opened, lines for it are dropped for this long before the
/// next try.
const RETRY_OPEN: Duration = Duration::from_secs(5);
/// At most this many bytes of the request target, referer and user agent are written.
const MAX_TARGET: usize = 4096;
const MAX_HEADER: usize = 1024;

/// One answered request, as the log needs it. Cheap to make: the route is shared and the
/// header values and target are reference-counted.
pub struct Record {
    pub route: Arc<Route>,
    pub time: SystemTime,
    pub remote: IpAddr,
    pub method: Method,
    pub target: Option<PathAndQuery>,
    pub version: Version,
    pub status: u16,
    pub bytes: Option<u64>,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
}

/// One event loop's records, on cache lines of its own.
#[repr(align(128))]
struct Lane(Mutex<Vec<Record>>);

/// The queues between the event loops and the logger thread.
struct Lanes {
    lanes: Box<[Lane]>,
    stop: AtomicBool,
}

impl Lanes {
    /// Moves every queued record to `batch`, in the order their requests ended. Each
    /// lane's queue is swapped with its emptied one in `spare`.
    fn take(&self, spare: &mut [Vec<Record>], batch: &mut Vec<Record>) {
        for (lane, spare) in self.lanes.iter().zip(spare) {
            std::mem::swap(
                &mut *lane.0.lock().unwrap_or_else(|e| e.into_inner()),
                spare,
            );
            batch.append(spare);
        }
        batch.sort_by_key(|r| r.time);
    }
}

/// The request side of the access log: a queue per event loop to the logger thread.
pub struct AccessLog {
    lanes: Arc<Lanes>,
    reopen: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AccessLog {
    /// Starts the logger thread writing under `log_dir`.
    pub fn start(log_dir: LogDir, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let lanes = Arc::new(Lanes {
            lanes: (0..super::event_loops())
                .map(|_| Lane(Mutex::new(Vec::new())))
                .collect(),
            stop: AtomicBool::new(false),
        });
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            log_dir,
            files: HashMap::new(),
            metrics: metrics.clone(),
            reopen: reopen.clone(),
            clock: Clock::default(),
            line: Vec::with_capacity(512),
        };
        let thread = {
            let lanes = lanes.clone();
            std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || writer.run(&lanes))?
        };
        Ok(Self {
            lanes,
            reopen,
            metrics,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a line; never waits. A full queue drops the line and counts it.
    pub fn push(&self, record: Record) {
        let lanes = &self.lanes.lanes;
        let lane = &lanes[super::current_loop() % lanes.len()];
        let mut queue = lane.0.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() >= QUEUE {
            drop(queue);
            self.metrics.log_dropped(Dropped::QueueFull);
            return;
        }
        queue.push(record);
    }

    /// Flushes and closes every file; each is opened again, by name, at its next line.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Writes out what is queued and stops the thread (at shutdown).
    pub fn stop(&self) {
        self.lanes.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

/// An open log file, or the time a failed open may be tried again.
enum Slot {
    Open {
        /// The tenant whose directory the file is in: a domain that moves to another tenant
        /// gets a new file there.
        tenant: String,
        out: BufWriter<File>,
        last_line: Instant,
    },
    Failed {
        tenant: String,
        retry_at: Instant,
    },
}

struct Writer {
    log_dir: LogDir,
    /// By primary domain.
    files: HashMap<String, Slot>,
    metrics: Arc<Metrics>,
    reopen: Arc<AtomicBool>,
    clock: Clock,
    line: Vec<u8>,
}

impl Writer {
    /// Wakes every [`BATCH`] and writes what has queued up meanwhile: the request path never
    /// wakes this thread (a wake-up per line cost more than the line).
    fn run(mut self, lanes: &Arc<Lanes>) {
        let mut next_flush = Instant::now() + FLUSH;
        // Each lane's queue is swapped with an emptied one of last time: no allocation once
        // warm.
        let mut spare: Vec<Vec<Record>> = lanes.lanes.iter().map(|_| Vec::new()).collect();
        let mut batch = Vec::new();
        loop {
            std::thread::sleep(BATCH);
            // Read before the queues are taken: what was queued before `stop` is written.
            let stopping = lanes.stop.load(Ordering::Acquire) || Arc::strong_count(lanes) == 1;
            lanes.take(&mut spare, &mut batch);
            for record in batch.drain(..) {
                self.write(&record);
            }
            if stopping {
                self.flush_all();
                return;
            }
            if self.reopen.swap(false, Ordering::Relaxed) {
                self.flush_all();
                self.files.clear();
                tracing::info!("access logs reopened");
            }
            let now = Instant::now();
            if now >= next_flush {
                self.flush_all();
                self.files.retain(|_, slot| match slot {
                    Slot::Open { last_line, .. } => now.duration_since(*last_line) < IDLE_CLOSE,
                    Slot::Failed { retry_at, .. } => now < *retry_at,
                });
                next_flush = now + FLUSH;
            }
        }
    }

    fn flush_all(&mut self) {
        for (domain, slot) in &mut self.files {
            if let Slot::Open { out, .. } = slot {
                if let Err(e) = out.flush() {
                    tracing::warn!(vhost = %domain, error = %e, "writing the access log");
                }
            }
        }
    }

    fn write(&mut self, r: &Record) {
        let time = self.clock.format(r.time);
        self.line.clear();
        format_line(&mut self.line, r, time);
        let tenant = r.route.tenant.as_str();
        let domain = r.route.domain.as_str();
        let now = Instant::now();
        let usable = match self.files.get(domain) {
            Some(Slot::Open { tenant: t, .. }) => t == tenant,
            Some(Slot::Failed {
                tenant: t,
                retry_at,
            }) if t == tenant && now < *retry_at => {
                self.metrics.log_dropped(Dropped::WriteError);
                return;
            }
            _ => false,
        };
        if !usable {
            let path = self.log_dir.access_log(&r.route.tenant, &r.route.domain);
            let slot = match open(&path) {
                Ok(file) => Slot::Open {
                    tenant: tenant.to_owned(),
                    out: BufWriter::with_capacity(16 * 1024, file),
                    last_line: now,
                },
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open an access log; its lines are dropped for a while");
                    Slot::Failed {
                        tenant: tenant.to_owned(),
                        retry_at: now + RETRY_OPEN,
                    }
                }
            };
            self.files.insert(domain.to_owned(), slot);
        }
        match self.files.get_mut(domain) {
            Some(Slot::Open { out, last_line, .. }) => {
                *last_line = now;
                if let Err(e) = out.write_all(&self.line) {
                    tracing::warn!(vhost = %domain, error = %e, "writing the access log");
                    self.metrics.log_dropped(Dropped::WriteError);
                    self.files.remove(domain);
                }
            }
            _ => self.metrics.log_dropped(Dropped::WriteError),
        }
    }
}

/// Opens a log file for appending, never through a symlink. A file the proxy creates gets
/// mode 0640 (its group, from the setgid directory, is the panel's, which reads it).
fn open(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC).bits())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    // A restrictive umask must not hide the file from the panel.
    if meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o040 == 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o640))?;
    }
    Ok(file)
}

/// The time as `[day/Mon/year:hh:mm:ss +0000]` shows it, formatted once per second.
#[derive(Default)]
struct Clock {
    second: i64,
    text: String,
}

impl Clock {
    fn format(&mut self, at: SystemTime) -> &str {
        let second = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if self.text.is_empty() || second != self.second {
            self.second = second;
            self.text = clf_time(second);
        }
        &self.text
    }
}

/// Unix seconds as the common log format's time, in UTC.
pub fn clf_time(unix: i64) -> String {
    let format = time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
    );
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "01/Jan/1970:00:00:00 +0000".into())
}

/// Appends one combined-format line, newline included.
pub fn format_line(out: &mut Vec<u8>, r: &Record, time: &str) {
    let _ = write!(out, "{} - - [{time}] \"", r.remote.to_canonical());
    escape_into(out, r.method.as_str().as_bytes(), 32);
    out.push(b' ');
    escape_into(
        out,
        r.target.as_ref().map_or("-", |t| t.as_str()).as_bytes(),
        MAX_TARGET,
    );
    let version = match r.version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    };
    let _ = write!(out, " {version}\" {} ", r.status);
    match r.bytes {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push(b'-'),
    }
    for value in [&r.referer, &r.user_agent] {
        out.extend_from_slice(b" \"");
        match value {
            Some(v) => escape_into(out, v.as_bytes(), MAX_HEADER),
            None => out.push(b'-'),
        }
        out.push(b'"');
    }
    out.push(b'\n');
}

/// Writes at most `max` bytes of `raw` with `"`, `\`, control characters and bytes outside
/// printable ASCII as `\xHH`; a cut value ends in `...`.
pub fn escape_into(out: &mut Vec<u8>, raw: &[u8], max: usize) {
    for &b in raw.iter().take(max) {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
    if raw.len() > max {
        out.extend_from_slice(b"...");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::routes::{RouteEntry, Snapshot};
    use crate::proxy::routes::Table;

    fn route(tenant: &str, domain: &str) -> Arc<Route> {
        let entry = RouteEntry {
            domain: domain.into(),
            names: vec![domain.into()],
            tenant: tenant.into(),
            home: format!("/srv/{tenant}").into(),
            docroot: format!("/srv/{tenant}/sites/x/public").into(),
            php: false,
            front_controller: None,
            socket: "/run/lodge/fpm/x.sock".into(),
            max_children: 1,
            suspended: false,
            redirect_https: false,
            redirect_www: "none".into(),
            tls_cert: None,
            tls_key: None,
            body_limit_mb: 1,
        };
        let (table, problems) = Table::build(&Snapshot {
            generation: 1,
            vhosts: vec![entry],
        });
        assert!(problems.is_empty(), "{problems:?}");
        table.lookup(domain).unwrap().clone()
    }

    fn record(target: &str, referer: Option<&[u8]>, ua: Option<&[u8]>) -> Record {
        Record {
            route: route("acme", "acme.example"),
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            remote: "192.0.2.7".parse().unwrap(),
            method: Method::GET,
            target: Some(target.parse().unwrap()),
            version: Version::HTTP_11,
            status: 200,
            bytes: Some(5120),
            referer: referer.map(|r| HeaderValue::from_bytes(r).unwrap()),
            user_agent: ua.map(|u| HeaderValue::from_bytes(u).unwrap()),
        }
    }

    fn line(r: &Record) -> String {
        let mut out = Vec::new();
        format_line(&mut out, r, &clf_time(1_700_000_000));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_of_several_loops_come_in_the_order_their_requests_ended() {
        let lanes = Lanes {
            lanes: (0..2).map(|_| Lane(Mutex::new(Vec::new()))).collect(),
            stop: AtomicBool::new(false),
        };
        for (at, target, on) in [(3, "/late", 0), (1, "/early", 1), (2, "/middle", 0)] {
            let mut r = record(target, None, None);
            r.time += Duration::from_secs(at);
            lanes.lanes[on].0.lock().unwrap().push(r);
        }
        let (mut spare, mut batch) = (vec![Vec::new(), Vec::new()], Vec::new());
        lanes.take(&mut spare, &mut batch);
        let targets: Vec<String> = batch
            .iter()
            .map(|r| r.target.as_ref().unwrap().to_string())
            .collect();
        assert_eq!(targets, ["/early", "/middle", "/late"]);
        assert!(lanes.lanes.iter().all(|l| l.0.lock().unwrap().is_empty()));
    }

    #[test]
    fn combined_format() {
        let r = record(
            "/index.php?p=1",
            Some(b"https://ref.example/"),
            Some(b"Mozilla/5.0 (X11)"),
        );
        assert_eq!(
            line(&r),
            "192.0.2.7 - - [14/Nov/2023:22:13:20 +0000] \"GET /index.php?p=1 HTTP/1.1\" 200 5120 \"https://ref.example/\" \"Mozilla/5.0 (X11)\"\n"
        );
        let mut r = record("/", None, None);
        r.bytes = None;
        r.version = Version::HTTP_2;
        r.remote = "::ffff:192.0.2.9".parse().unwrap();
        assert_eq!(
            line(&r),
            "192.0.2.9 - - [14/Nov/2023:22:13:20 +0000] \"GET / HTTP/2.0\" 200 - \"-\" \"-\"\n"
        );
    }

    #[test]
    fn no_value_can_forge_a_line_or_end_a_field() {
        let r = record(
            "/x",
            Some(b"a\" 200 1 \"b"),
            Some(b"ua\" 10.0.0.1 - - [x] \"GET /admin HTTP/1.1\" 200 0 \"-\" \"-\\"),
        );
        let text = line(&r);
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        // Exactly the six field quotes remain; every quote of a value is escaped.
        assert_eq!(text.matches('"').count(), 6, "{text}");
        assert!(text.contains("\"a\\x22 200 1 \\x22b\""), "{text}");
        assert!(
            text.contains("\\x5C\"\n"),
            "a trailing backslash is escaped: {text}"
        );
        // Tabs and bytes outside ASCII are escaped too.
        let r = record("/", None, Some("t\tü".as_bytes()));
        assert!(line(&r).contains("\"t\\x09\\xC3\\xBC\""));
        // hyper refuses CR and LF in header values and targets; were one to get through, it
        // could still not start a line.
        let mut out = Vec::new();
        escape_into(&mut out, b"ua\r\n10.0.0.1 - - \x00\x7f", 100);
        assert_eq!(out, b"ua\\x0D\\x0A10.0.0.1 - - \\x00\\x7F");
    }

    #[test]
    fn long_values_are_cut() {
        let long = format!("/{}", "a".repeat(10_000));
        let r = record(&long, Some("r".repeat(5000).as_bytes()), None);
        let text = line(&r);
        assert!(text.len() < MAX_TARGET + MAX_HEADER + 200, "{}", text.len());
        assert!(text.contains("aaa... HTTP/1.1"));
        assert!(text.contains("rrr...\""));
    }

    #[test]
    fn lines_reach_their_vhost_file_and_a_moved_file_is_replaced_on_reopen() {
        let dir = std::env::temp_dir().join(format!("lodge-access-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let logs = LogDir::new(&dir);
        let acme = crate::domain::TenantName::parse("acme").unwrap();
        std::fs::create_dir_all(logs.tenant_access_dir(&acme)).unwrap();
        let metrics = Arc::new(Metrics::default());
        let log = AccessLog::start(logs.clone(), metrics.clone()).unwrap();
        let file = logs.access_log(
            &acme,
            &crate::domain::DomainName::parse("acme.example").unwrap(),
        );
        log.push(record("/one", None, None));
        let wait_for = |path: &Path, text: &str| {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let content = std::fs::read_to_string(path).unwrap_or_default();
                if content.contains(text) {
                    return content;
                }
                assert!(Instant::now() < deadline, "{text} in {}", path.display());
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_for(&file, "GET /one ");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let moved = file.with_extension("log.1");
        std::fs::rename(&file, &moved).unwrap();
        log.reopen();
        std::thread::sleep(Duration::from_millis(1200));
        log.push(record("/two", None, None));
        let fresh = wait_for(&file, "GET /two ");
        assert!(!fresh.contains("/one"));
        assert!(!std::fs::read_to_string(&moved).unwrap().contains("/two"));

        // A vhost whose tenant has no directory: its lines are dropped and counted.
        let mut lost = record("/lost", None, None);
        lost.route = route("other", "other.example");
        log.push(lost);
        log.push(record("/three", None, None));
        log.stop();
        assert!(std::fs::read_to_string(&file).unwrap().contains("/three"));
        assert!(metrics
            .render(&Default::default())
            .contains("lodge_proxy_log_lines_dropped_total{reason=\"write_error\"} 1"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
