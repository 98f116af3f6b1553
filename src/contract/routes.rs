//! The routes snapshot: what the agent publishes for the proxy (`<run-dir>/routes.json`,
//! replaced atomically). The proxy builds its lookup table from it, parsing every name and
//! path again: a snapshot is input.

use super::RunDir;
use crate::nofollow::{self, FileMode};
use nix::unistd::{Gid, Uid};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One vhost as the agent describes it to the proxy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteEntry {
    pub domain: String,
    /// The domain and its aliases.
    pub names: Vec<String>,
    pub tenant: String,
    /// Absolute path of the tenant's home.
    pub home: PathBuf,
    /// Absolute path of the docroot (inside the home).
    pub docroot: PathBuf,
    pub php: bool,
    pub front_controller: Option<String>,
    pub socket: PathBuf,
    /// The pool's pm.max_children: the proxy never holds more connections to it.
    pub max_children: u32,
    pub suspended: bool,
    pub redirect_https: bool,
    pub redirect_www: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Largest request body, from the plan's upload limit.
    pub body_limit_mb: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    pub generation: i64,
    pub vhosts: Vec<RouteEntry>,
}

impl Snapshot {
    /// Writes the snapshot beside its final name and renames it into place, so the proxy
    /// reads either the old or the new one, never a half-written file. Root's, readable by
    /// the proxy's group (`group`, when root) alone: it names every tenant, domain and
    /// suspension. Returns whether it changed.
    pub fn publish(&self, run_dir: &RunDir, group: Option<Gid>) -> std::io::Result<bool> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let mode = FileMode {
            mode: 0o640,
            owner: group.map(|g| (Uid::from_raw(0), g)),
        };
        nofollow::replace_file(&run_dir.routes(), text.as_bytes(), mode)
    }

    pub fn load(run_dir: &RunDir) -> std::io::Result<Self> {
        let text = nofollow::read_to_string(&run_dir.routes())?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }
}
