//! Archives of deleted tenants' homes: `<agent-dir>/archives/<tenant>-<time>.tar.zst`, root's
//! alone (never in the data directory, which the panel's user could point elsewhere). tar
//! stores symlinks as symlinks (it never follows them without -h).

use crate::config::Config;
use crate::domain::TenantName;
use anyhow::{bail, Context};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub async fn home(config: &Config, name: &TenantName, home: &Path) -> anyhow::Result<PathBuf> {
    let dir = config.agent_dir.join("archives");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let zstd = which("zstd");
    let extension = if zstd { "tar.zst" } else { "tar.gz" };
    let archive = dir.join(format!("{name}-{}.{extension}", crate::store::now()));
    let parent = home.parent().context("home has no parent")?;
    let out = tokio::process::Command::new("tar")
        .arg(if zstd { "--zstd" } else { "--gzip" })
        .arg("--create")
        .arg("--file")
        .arg(&archive)
        .arg("--directory")
        .arg(parent)
        .arg("--")
        .arg(name.as_str())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .await
        .context("running tar")?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&archive);
        bail!(
            "tar failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o600))?;
    Ok(archive)
}

fn which(program: &str) -> bool {
    ["/usr/bin", "/bin", "/usr/local/bin"]
        .iter()
        .any(|d| Path::new(d).join(program).is_file())
}
