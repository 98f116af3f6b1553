//! Archives of deleted tenants' homes: `<agent-dir>/archives/<tenant>-<removal>.tar.zst`,
//! root's alone (never in the data directory, which the panel's user could point elsewhere).
//!
//! tar stores symlinks as symlinks (it never follows them without -h) and holes as holes
//! (`--sparse`): a tenant that leaves an 8 TiB sparse file costs its archive nothing. An
//! archive is made once per removal (named by it, written beside its name and renamed when
//! whole), and bounded in size and time: past either, the home is removed without one and
//! a note says why, so no home can hold up its removal for ever.

use crate::domain::TenantName;
use anyhow::{bail, Context};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest archive made; a home that compresses to more is removed without one.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024 * 1024;
/// The longest an archive may take.
pub const MAX_TIME: Duration = Duration::from_secs(2 * 3600);

/// What became of a home's archive.
#[derive(Debug)]
pub enum Archived {
    /// Here, whole.
    Done(PathBuf),
    /// Not made: the note next to where it would be says why.
    Skipped(String),
}

impl std::fmt::Display for Archived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Archived::Done(path) => write!(f, "{}", path.display()),
            Archived::Skipped(why) => f.write_str(why),
        }
    }
}

/// The archive of removal `removal` of `name`, made once: an archive already made for this
/// removal (an earlier try that failed later, at `userdel`) is kept as it is.
pub async fn home(
    agent_dir: &Path,
    name: &TenantName,
    removal: i64,
    home: &Path,
) -> anyhow::Result<Archived> {
    let dir = agent_dir.join("archives");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let zstd = which("zstd");
    let extension = if zstd { "tar.zst" } else { "tar.gz" };
    let archive = dir.join(format!("{name}-{removal}.{extension}"));
    if archive.exists() {
        return Ok(Archived::Done(archive));
    }
    let partial = dir.join(format!(".{name}-{removal}.{extension}.partial"));
    let _ = std::fs::remove_file(&partial);
    let parent = home.parent().context("home has no parent")?;
    let mut tar = tokio::process::Command::new("tar")
        .arg(if zstd { "--zstd" } else { "--gzip" })
        .arg("--create")
        .arg("--sparse")
        .arg("--file")
        .arg(&partial)
        .arg("--directory")
        .arg(parent)
        .arg("--")
        .arg(name.as_str())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running tar")?;
    let started = std::time::Instant::now();
    let outcome = loop {
        tokio::select! {
            status = tar.wait() => break Ok(status?),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let size = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
                if size > MAX_BYTES {
                    break Err(format!("its archive passed {} GiB", MAX_BYTES >> 30));
                }
                if started.elapsed() > MAX_TIME {
                    break Err(format!("its archive took longer than {} minutes", MAX_TIME.as_secs() / 60));
                }
            }
        }
    };
    match outcome {
        Ok(status) if status.success() => {
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&partial, &archive)?;
            Ok(Archived::Done(archive))
        }
        Ok(status) => {
            let _ = std::fs::remove_file(&partial);
            let mut stderr = String::new();
            if let Some(mut e) = tar.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = (&mut e).take(4096).read_to_string(&mut stderr).await;
            }
            bail!("tar failed ({status}): {}", stderr.trim())
        }
        Err(why) => {
            let _ = tar.kill().await;
            let _ = std::fs::remove_file(&partial);
            let note = dir.join(format!("{name}-{removal}.not-archived.txt"));
            let text = format!("The home of {name} was removed without an archive: {why}.\n");
            std::fs::write(&note, &text)?;
            Ok(Archived::Skipped(text.trim().to_owned()))
        }
    }
}

fn which(program: &str) -> bool {
    ["/usr/bin", "/bin", "/usr/local/bin"]
        .iter()
        .any(|d| Path::new(d).join(program).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_huge_sparse_file_archives_at_once_and_only_once() {
        let base = std::env::temp_dir().join(format!("lodge-archive-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let home = base.join("tenants").join("acme");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("index.php"), "<?php echo 1;").unwrap();
        // 8 TiB of nothing, as a tenant could leave by truncating a file.
        let f = std::fs::File::create(home.join("huge")).unwrap();
        if f.set_len(8 << 40).is_err() {
            // A filesystem that cannot hold it: a smaller hole makes the same point.
            f.set_len(64 << 30).unwrap();
        }
        let name = TenantName::parse("acme").unwrap();
        let agent = base.join("agent");
        let started = std::time::Instant::now();
        let Archived::Done(path) = home_archive(&agent, &name, 7, &home).await else {
            panic!("not archived");
        };
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}",
            started.elapsed()
        );
        assert!(
            std::fs::metadata(&path).unwrap().len() < 1 << 20,
            "holes stay holes"
        );
        // A second try for the same removal keeps the archive made.
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let Archived::Done(again) = home_archive(&agent, &name, 7, &home).await else {
            panic!("not archived");
        };
        assert_eq!(again, path);
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            modified
        );
        let _ = std::fs::remove_dir_all(&base);
    }

    async fn home_archive(agent: &Path, name: &TenantName, id: i64, home: &Path) -> Archived {
        super::home(agent, name, id, home).await.unwrap()
    }
}
