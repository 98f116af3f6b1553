//! The wake-up: the panel sends a datagram to `<run-dir>/agent.sock` after each change, and
//! the agent runs a pass at once instead of waiting for the periodic one. The datagram
//! carries nothing; the store says what changed.

use super::RunDir;
use anyhow::Context;
use nix::unistd::{Gid, Uid};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// Binds the agent's end; only the panel's user (and root) may write to it.
pub fn bind(
    run_dir: &RunDir,
    panel: Option<(Uid, Gid)>,
) -> anyhow::Result<tokio::net::UnixDatagram> {
    let path = run_dir.agent_socket();
    let _ = std::fs::remove_file(&path);
    let socket = tokio::net::UnixDatagram::bind(&path)
        .with_context(|| format!("binding {}", path.display()))?;
    if let Some((uid, gid)) = panel {
        nix::unistd::fchownat(
            None,
            &path,
            Some(uid),
            Some(gid),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .context("chown agent.sock")?;
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
    pub fn new(run_dir: &RunDir) -> Self {
        Self {
            path: run_dir.agent_socket(),
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
