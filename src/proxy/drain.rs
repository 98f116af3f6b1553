//! Draining: a proxy told to stop (SIGTERM, when the agent replaces it) stops accepting,
//! closes kept-alive connections between requests, finishes the requests it has, and ends
//! once none is left or the bound is reached. Every event loop watches the same flag.

use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

static DRAINING: AtomicBool = AtomicBool::new(false);
static STARTED: Notify = Notify::const_new();

/// Starts draining, on every event loop.
pub fn start() {
    DRAINING.store(true, Ordering::SeqCst);
    STARTED.notify_waiters();
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
