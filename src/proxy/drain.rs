//! Draining: a proxy told to stop (SIGTERM, when the agent replaces it) stops accepting,
//! closes kept-alive connections between requests, finishes the requests it has, and ends
//! once none is left or the bound is reached. Every event loop watches the same flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

static DRAINING: AtomicBool = AtomicBool::new(false);
static STARTED: Notify = Notify::const_new();
static STARTED_AT: OnceLock<Instant> = OnceLock::new();

/// How long after draining starts a kept-alive connection is still let send its next
/// request: one accepted just before, or a client already sending, is answered, not reset.
const IDLE_GRACE: Duration = Duration::from_secs(1);

/// Starts draining, on every event loop.
pub fn start() {
    let _ = STARTED_AT.set(Instant::now());
    DRAINING.store(true, Ordering::SeqCst);
    STARTED.notify_waiters();
}

/// Resolves once an idle connection should be closed: [`IDLE_GRACE`] after draining started.
pub async fn idle_closed() {
    wait().await;
    let since = STARTED_AT.get().map_or(IDLE_GRACE, |t| t.elapsed());
    tokio::time::sleep(IDLE_GRACE.saturating_sub(since)).await;
}

/// Whether draining has started.
pub fn started() -> bool {
    DRAINING.load(Ordering::SeqCst)
}

/// Resolves once draining has started (at once if it has).
pub async fn wait() {
    loop {
        let notified = STARTED.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if started() {
            return;
        }
        notified.await;
    }
}
