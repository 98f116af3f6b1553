//! The proxy's counters, kept in atomics and a few small maps, and written out in the
//! Prometheus text format. Every label value comes from the route table (a vhost's primary
//! domain, a tenant's name) or from a fixed list, so the number of series is bounded by the
//! sites configured; series of vhosts and tenants that leave the table are dropped.
//!
//! The text is served on a unix socket in the run directory that only the panel's group may
//! connect to; the panel's `/metrics` fetches it for admins and adds its own.

use super::php::PhpError;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Upper bounds (seconds) of the request duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// The label of requests for a host no vhost answers to (not a valid domain, so it cannot
/// collide with one).
pub const UNKNOWN_VHOST: &str = "_unknown";

/// Why PHP did not answer, as the `kind` label says it.
/// The kind of a FastCGI failure; `None` for a spooled body that could not be read back,
/// which is no failure of the pool.
pub fn fastcgi_kind(e: &PhpError) -> Option<&'static str> {
    match e {
        PhpError::Down(_) => Some("down"),
        PhpError::Timeout => Some("timeout"),
        PhpError::Bad(_) => Some("bad"),
        PhpError::Saturated => Some("saturated"),
        PhpError::Spool(_) => None,
    }
}

const FASTCGI_KINDS: [&str; 4] = ["down", "timeout", "bad", "saturated"];

/// Why an access log line was not written.
#[derive(Debug, Clone, Copy)]
pub enum Dropped {
    /// The logger's queue was full: the request did not wait for it.
    QueueFull,
    /// The file could not be opened or written.
    WriteError,
}

/// The statuses counted without a lock (every request of a busy site is one of these).
const COMMON_STATUSES: [u16; 16] = [
    200, 204, 206, 301, 302, 304, 400, 403, 404, 413, 416, 499, 500, 502, 503, 504,
];

/// One event loop's share of a vhost's counts, on cache lines of its own: the loops count
/// without taking turns at one line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    /// Counts of [`COMMON_STATUSES`], in that order.
    common: [AtomicU64; COMMON_STATUSES.len()],
    /// Per bucket (not cumulative); the last one is above every bound.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// One vhost's requests: counts by status and the duration histogram, in a shard per event
/// loop (summed when rendered).
#[derive(Debug)]
pub struct VhostStats {
    shards: Box<[Shard]>,
    /// (status, count) of the others; a handful of entries, so a vector beats a map.
    statuses: Mutex<Vec<(u16, u64)>>,
}

impl VhostStats {
    fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards).map(|_| Shard::default()).collect(),
            statuses: Mutex::default(),
        }
    }

    /// Counts one answered request, in the shard of this thread's event loop.
    pub fn request(&self, status: u16, elapsed: Duration) {
        let shard = &self.shards[super::current_loop() % self.shards.len()];
        if let Some(i) = COMMON_STATUSES.iter().position(|&s| s == status) {
            shard.common[i].fetch_add(1, Ordering::Relaxed);
        } else {
            let mut statuses = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
            match statuses.iter_mut().find(|(s, _)| *s == status) {
                Some((_, n)) => *n += 1,
                None => statuses.push((status, 1)),
            }
        }
        let secs = elapsed.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(DURATION_BUCKETS.len());
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        shard.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn sum(&self, field: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| field(s).load(Ordering::Relaxed))
            .sum()
    }
}

pub struct Metrics {
    vhosts: RwLock<HashMap<String, Arc<VhostStats>>>,
    fastcgi_errors: Mutex<HashMap<(String, &'static str), u64>>,
    dropped_queue_full: AtomicU64,
    dropped_write_error: AtomicU64,
    /// Shards per vhost: one per event loop, at most 16 (loops beyond share them), which
    /// bounds a vhost's counts to 4 KiB.
    shards: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            vhosts: RwLock::default(),
            fastcgi_errors: Mutex::default(),
            dropped_queue_full: AtomicU64::default(),
            dropped_write_error: AtomicU64::default(),
            shards: super::event_loops().min(16),
        }
    }
}

impl Metrics {
    /// The counts of a vhost (by primary domain), to be kept with its route.
    pub fn vhost(&self, vhost: &str) -> Arc<VhostStats> {
        if let Some(s) = self
            .vhosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(vhost)
        {
            return s.clone();
        }
        self.vhosts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(vhost.to_owned())
            .or_insert_with(|| Arc::new(VhostStats::new(self.shards)))
            .clone()
    }

    /// Counts one answered request.
    pub fn request(&self, vhost: &str, status: u16, elapsed: Duration) {
        self.vhost(vhost).request(status, elapsed);
    }

    /// Counts a FastCGI failure of the tenant's pool, if `result` is one.
    pub fn php_result<T>(&self, tenant: &str, result: &Result<T, PhpError>) {
        if let Some(kind) = result.as_ref().err().and_then(fastcgi_kind) {
            let mut errors = self
                .fastcgi_errors
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *errors.entry((tenant.to_owned(), kind)).or_insert(0) += 1;
        }
    }

    pub fn log_dropped(&self, why: Dropped) {
        match why {
            Dropped::QueueFull => &self.dropped_queue_full,
            Dropped::WriteError => &self.dropped_write_error,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets vhosts and tenants that are no longer routed (after a new routes snapshot).
    pub fn retain(&self, vhosts: &BTreeSet<String>, tenants: &BTreeSet<String>) {
        self.vhosts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|v, _| v == UNKNOWN_VHOST || vhosts.contains(v));
        self.fastcgi_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(t, _), _| tenants.contains(t));
    }

    /// The Prometheus text. `queues` holds, for each tenant with PHP, the requests waiting
    /// for one of its workers.
    pub fn render(&self, queues: &BTreeMap<String, usize>) -> String {
        let mut out = String::with_capacity(4096);
        let vhosts: BTreeMap<String, Arc<VhostStats>> = self
            .vhosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();

        header(
            &mut out,
            "lodge_proxy_requests_total",
            "counter",
            "Requests answered, by vhost (its primary domain) and status code.",
        );
        for (vhost, stats) in &vhosts {
            let mut statuses = stats
                .statuses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for (i, &status) in COMMON_STATUSES.iter().enumerate() {
                let n = stats.sum(|s| &s.common[i]);
                if n > 0 {
                    statuses.push((status, n));
                }
            }
            statuses.sort_unstable();
            for (status, n) in statuses {
                let _ = writeln!(
                    out,
                    "lodge_proxy_requests_total{{vhost=\"{}\",status=\"{status}\"}} {n}",
                    label(vhost)
                );
            }
        }

        header(
            &mut out,
            "lodge_proxy_request_duration_seconds",
            "histogram",
            "Time from a request's arrival to its response headers, by vhost.",
        );
        for (vhost, stats) in &vhosts {
            let vhost = label(vhost);
            let mut cumulative = 0;
            for i in 0..=DURATION_BUCKETS.len() {
                cumulative += stats.sum(|s| &s.buckets[i]);
                let le = DURATION_BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
                let _ = writeln!(
                    out,
                    "lodge_proxy_request_duration_seconds_bucket{{vhost=\"{vhost}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let sum = stats.sum(|s| &s.sum_micros) as f64 / 1e6;
            let _ = writeln!(
                out,
                "lodge_proxy_request_duration_seconds_sum{{vhost=\"{vhost}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "lodge_proxy_request_duration_seconds_count{{vhost=\"{vhost}\"}} {cumulative}"
            );
        }

        header(
            &mut out,
            "lodge_proxy_fastcgi_errors_total",
            "counter",
            "PHP requests that failed at the tenant's pool: down (no connection), timeout, \
             bad (broken or oversized answer), saturated (every worker busy and the queue full).",
        );
        let errors = self
            .fastcgi_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let tenants: BTreeSet<&str> = queues
            .keys()
            .map(String::as_str)
            .chain(errors.keys().map(|(t, _)| t.as_str()))
            .collect();
        for tenant in &tenants {
            for kind in FASTCGI_KINDS {
                let n = errors
                    .get(&((*tenant).to_owned(), kind))
                    .copied()
                    .unwrap_or(0);
                let _ = writeln!(
                    out,
                    "lodge_proxy_fastcgi_errors_total{{tenant=\"{}\",kind=\"{kind}\"}} {n}",
                    label(tenant)
                );
            }
        }

        header(
            &mut out,
            "lodge_proxy_pool_queue",
            "gauge",
            "Requests waiting for a free PHP worker of the tenant's pool.",
        );
        for (tenant, waiting) in queues {
            let _ = writeln!(
                out,
                "lodge_proxy_pool_queue{{tenant=\"{}\"}} {waiting}",
                label(tenant)
            );
        }

        header(
            &mut out,
            "lodge_proxy_log_lines_dropped_total",
            "counter",
            "Access log lines not written: queue_full (the logger fell behind) or write_error.",
        );
        for (reason, n) in [
            ("queue_full", &self.dropped_queue_full),
            ("write_error", &self.dropped_write_error),
        ] {
            let _ = writeln!(
                out,
                "lodge_proxy_log_lines_dropped_total{{reason=\"{reason}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
pub fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn counters_histogram_and_gauges_in_the_text_format() {
        let m = Metrics::default();
        m.request("a.example", 200, Duration::from_millis(3));
        // Counted by another event loop, in its own shard: the text sums them.
        let stats = m.vhost("a.example");
        std::thread::spawn(move || {
            crate::proxy::set_loop(1);
            stats.request(200, Duration::from_millis(30));
        })
        .join()
        .unwrap();
        m.request("a.example", 404, Duration::from_secs(90));
        m.request(UNKNOWN_VHOST, 404, Duration::from_millis(1));
        m.php_result::<()>("acme", &Err(PhpError::Timeout));
        m.php_result::<()>("acme", &Err(PhpError::Down("gone".into())));
        m.php_result::<()>("acme", &Err(PhpError::Down("gone".into())));
        m.php_result("acme", &Ok(()));
        m.log_dropped(Dropped::QueueFull);
        let queues = BTreeMap::from([("acme".to_owned(), 3), ("zed".to_owned(), 0)]);
        let text = m.render(&queues);

        let v = |s: &str| value(&text, s);
        assert_eq!(
            v("lodge_proxy_requests_total{vhost=\"a.example\",status=\"200\"}"),
            Some(2.0)
        );
        assert_eq!(
            v("lodge_proxy_requests_total{vhost=\"a.example\",status=\"404\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("lodge_proxy_requests_total{vhost=\"_unknown\",status=\"404\"}"),
            Some(1.0)
        );
        // Buckets are cumulative; the 90 s request is only in +Inf.
        let bucket = |le: &str| {
            v(&format!(
                "lodge_proxy_request_duration_seconds_bucket{{vhost=\"a.example\",le=\"{le}\"}}"
            ))
        };
        assert_eq!(bucket("0.005"), Some(1.0));
        assert_eq!(bucket("0.05"), Some(2.0));
        assert_eq!(bucket("60"), Some(2.0));
        assert_eq!(bucket("+Inf"), Some(3.0));
        assert_eq!(
            v("lodge_proxy_request_duration_seconds_count{vhost=\"a.example\"}"),
            Some(3.0)
        );
        let sum = v("lodge_proxy_request_duration_seconds_sum{vhost=\"a.example\"}").unwrap();
        assert!((sum - 90.033).abs() < 1e-6, "{sum}");
        assert_eq!(
            v("lodge_proxy_fastcgi_errors_total{tenant=\"acme\",kind=\"down\"}"),
            Some(2.0)
        );
        assert_eq!(
            v("lodge_proxy_fastcgi_errors_total{tenant=\"acme\",kind=\"timeout\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("lodge_proxy_fastcgi_errors_total{tenant=\"zed\",kind=\"saturated\"}"),
            Some(0.0),
            "every routed tenant has its series from the start"
        );
        assert_eq!(v("lodge_proxy_pool_queue{tenant=\"acme\"}"), Some(3.0));
        assert_eq!(
            v("lodge_proxy_log_lines_dropped_total{reason=\"queue_full\"}"),
            Some(1.0)
        );
        // Each family is declared once, before its samples.
        for family in [
            "lodge_proxy_requests_total counter",
            "lodge_proxy_request_duration_seconds histogram",
            "lodge_proxy_fastcgi_errors_total counter",
            "lodge_proxy_pool_queue gauge",
            "lodge_proxy_log_lines_dropped_total counter",
        ] {
            assert_eq!(text.matches(&format!("# TYPE {family}\n")).count(), 1);
        }
        // Every line is a comment or `name{labels} number`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, number) = line.rsplit_once(' ').unwrap();
            assert!(number.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn vhosts_that_leave_the_routes_are_forgotten() {
        let m = Metrics::default();
        m.request("a.example", 200, Duration::ZERO);
        m.request("b.example", 200, Duration::ZERO);
        m.request(UNKNOWN_VHOST, 404, Duration::ZERO);
        m.php_result::<()>("gone", &Err(PhpError::Saturated));
        m.retain(
            &BTreeSet::from(["a.example".to_owned()]),
            &BTreeSet::from(["acme".to_owned()]),
        );
        let text = m.render(&BTreeMap::new());
        assert!(text.contains("vhost=\"a.example\""));
        assert!(!text.contains("b.example"));
        assert!(text.contains("vhost=\"_unknown\""));
        assert!(!text.contains("gone"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
