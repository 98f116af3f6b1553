//! The signals lodge's processes understand:
//!
//! - SIGTERM (or Ctrl-C): stop. The agent stops its children in order; the proxy finishes.
//! - SIGUSR1: reopen log files. Sent to the agent, it is passed on to the proxy and to every
//!   php-fpm master.

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
