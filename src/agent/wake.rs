//! The wake-up: the panel sends a datagram to `<run-dir>/agent.sock` after each change, and
//! the agent runs a pass at once instead of waiting for the periodic one. The datagram
//! carries nothing; the store says what changed.

use anyhow::Context;
use nix::unistd::{Gid, Uid};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("agent.sock")
}

/// Binds the agent's end; only the panel's user (and root) may write to it.
pub fn bind(run_dir: &Path, panel: Option<(Uid, Gid)>) -> anyhow::Result<tokio::net::UnixDatagram> {
    let path = socket_path(run_dir);
    let _ = std::fs::remove_file(&path);
    let socket = tokio::net::UnixDatagram::bind(&path)
        .with_context(|| format!("binding {}", path.display()))?;
    if let Some((uid, gid)) = panel {
        nix::unistd::chown(&path, Some(uid), Some(gid)).context("chown agent.sock")?;
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(socket)
}

/// The panel's end.
#[derive(Debug, Clone)]
pub struct Waker {
    path: PathBuf,
}

impl Waker {
    pub fn new(run_dir: &Path) -> Self {
        Self {
            path: socket_path(run_dir),
        }
    }

    /// Nudges the agent; without an agent (panel alone) nothing happens.
    pub fn wake(&self) {
        if let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() {
            let _ = socket.set_nonblocking(true);
            let _ = socket.send_to(b"w", &self.path);
        }
    }
}
