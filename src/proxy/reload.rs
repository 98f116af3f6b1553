//! Loading the routes snapshot: at start, when the agent asks over the control socket (it
//! then hears which generation is served), and when the file changes (a poll every second,
//! the backstop when no agent runs). A new snapshot becomes a new route table and
//! certificate store, swapped in whole: no connection is dropped.

use super::routes::Table;
use super::server::Shared;
use super::tls;
use crate::contract::proxy_control::{self, Request};
use crate::contract::routes::Snapshot;
use crate::contract::RunDir;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;

/// How often the snapshot file is looked at when nobody says it changed.
const WATCH: Duration = Duration::from_secs(1);
/// How long the agent may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What identifies one version of the file: it is replaced by a rename, so a new one has
/// another inode.
pub type Stamp = (u64, Option<SystemTime>, u64);

/// Builds the route table and the certificate store from the snapshot at start: with none
/// yet (or one that does not read), every host is unknown until the agent publishes one.
pub fn load(run_dir: &RunDir) -> (Table, tls::CertStore) {
    match try_load(run_dir) {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::warn!(error = %e, "no routes snapshot yet; every host is unknown");
            build(&Snapshot::default())
        }
    }
}

fn try_load(run_dir: &RunDir) -> std::io::Result<(Table, tls::CertStore)> {
    Ok(build(&Snapshot::load(run_dir)?))
}

/// The route table and the certificate store of a snapshot.
fn build(snapshot: &Snapshot) -> (Table, tls::CertStore) {
    let (table, problems) = Table::build(snapshot);
    for p in problems {
        tracing::warn!(problem = %p, "route left out");
    }
    let entries: Vec<(Vec<String>, PathBuf, PathBuf)> = snapshot
        .vhosts
        .iter()
        .filter_map(|v| Some((v.names.clone(), v.tls_cert.clone()?, v.tls_key.clone()?)))
        .collect();
    let (certs, errors) = tls::CertStore::load(&entries);
    for e in errors {
        tracing::warn!(problem = %e, "certificate left out");
    }
    (table, certs)
}

/// Swaps in a new snapshot when the file changed.
pub struct Reloader {
    run_dir: RunDir,
    shared: Arc<Shared>,
    resolver: Arc<tls::SniResolver>,
    /// The version now served.
    seen: Mutex<Option<Stamp>>,
}

impl Reloader {
    /// `loaded` is the version the caller loaded at start, stamped before it was read: a
    /// file replaced since is then loaded at the next look, never taken for the one served.
    pub fn new(
        run_dir: RunDir,
        shared: Arc<Shared>,
        resolver: Arc<tls::SniResolver>,
        loaded: Option<Stamp>,
    ) -> Self {
        Self {
            run_dir,
            shared,
            resolver,
            seen: Mutex::new(loaded),
        }
    }

    /// Loads the snapshot if the file is not the one served; returns the generation served.
    pub fn reload_if_changed(&self) -> i64 {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = stamp(&self.run_dir);
        if now != *seen {
            *seen = now;
            let (table, certs) = match try_load(&self.run_dir) {
                Ok(loaded) => loaded,
                Err(e) => {
                    // A file that does not read (not one the agent wrote) changes nothing:
                    // the table served stays.
                    tracing::error!(error = %e, "the new routes snapshot does not read; the last one is served");
                    return self.shared.table().generation;
                }
            };
            tracing::info!(
                generation = table.generation,
                names = table.len(),
                "routes reloaded"
            );
            self.shared.replace(table);
            self.resolver.replace(certs);
        }
        self.shared.table().generation
    }

    /// The backstop: looks at the file every [`WATCH`].
    pub async fn watch(self: Arc<Self>) {
        loop {
            tokio::time::sleep(WATCH).await;
            self.reload_if_changed();
        }
    }

    /// Answers the agent on the control socket.
    pub async fn serve_control(self: Arc<Self>, listener: tokio::net::UnixListener) {
        loop {
            let mut stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept on the control socket");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let this = self.clone();
            tokio::spawn(async move {
                match proxy_control::read_request(&mut stream, REQUEST_TIMEOUT).await {
                    Ok(Some(Request::Load)) => {
                        // Reading the file and building the table may take a while with
                        // thousands of vhosts: off the event loop.
                        let reloader = this.clone();
                        let Ok(generation) =
                            tokio::task::spawn_blocking(move || reloader.reload_if_changed()).await
                        else {
                            return;
                        };
                        let answer = proxy_control::serving(generation);
                        let _ = stream.write_all(answer.as_bytes()).await;
                    }
                    Ok(None) => tracing::warn!("an unknown request on the control socket"),
                    Err(e) => tracing::debug!(error = %e, "control socket"),
                }
            });
        }
    }
}

pub fn stamp(run_dir: &RunDir) -> Option<Stamp> {
    let meta = std::fs::metadata(run_dir.routes()).ok()?;
    Some((meta.ino(), meta.modified().ok(), meta.len()))
}
