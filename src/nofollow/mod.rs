//! File operations that never follow a symlink: what root (the agent) and the proxy use on
//! paths a less trusted user could have touched.
//!
//! Directories are reached with `openat(O_NOFOLLOW | O_DIRECTORY)` from their parent's
//! descriptor and changed through their own descriptor (`fchown`, `fchmod`); files are
//! opened with `O_NOFOLLOW`; a file is replaced by writing a temporary file beside it and
//! renaming it over the old one, so a reader sees the old or the new content, never half.

pub(crate) mod beneath;

pub use beneath::{open_beneath, Symlinks};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, Mode};
use nix::unistd::{fchown, Gid, Uid};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Opens the directory `name` (under `parent`, or an absolute path) without following a
/// symlink in its last component.
pub fn open_dir(parent: Option<&OwnedFd>, name: &Path) -> nix::Result<OwnedFd> {
    let fd = openat(
        parent.map(|p| p.as_raw_fd()),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens (making it when missing, mode 0700) the directory `name` under `parent` without
/// following a symlink. What stands there and is not a directory is renamed aside first.
/// Returns whether the directory was made.
pub fn ensure_dir(parent: &OwnedFd, name: &str) -> anyhow::Result<(OwnedFd, bool)> {
    let mut created = false;
    match mkdirat(
        Some(parent.as_raw_fd()),
        name,
        Mode::from_bits_truncate(0o700),
    ) {
        Ok(()) => created = true,
        Err(Errno::EEXIST) => {}
        Err(e) => return Err(e).with_context(|| format!("creating {name}")),
    }
    let fd = match open_dir(Some(parent), Path::new(name)) {
        Ok(fd) => fd,
        Err(Errno::ELOOP | Errno::ENOTDIR) => {
            // A symlink or a file where a directory belongs: move it out of the way.
            let aside = format!("{name}.replaced-{}", crate::store::now());
            nix::fcntl::renameat(
                Some(parent.as_raw_fd()),
                name,
                Some(parent.as_raw_fd()),
                aside.as_str(),
            )
            .with_context(|| format!("moving the non-directory {name} aside"))?;
            tracing::warn!(entry = name, moved_to = %aside, "replaced a non-directory");
            mkdirat(
                Some(parent.as_raw_fd()),
                name,
                Mode::from_bits_truncate(0o700),
            )
            .with_context(|| format!("creating {name}"))?;
            created = true;
            open_dir(Some(parent), Path::new(name)).with_context(|| format!("opening {name}"))?
        }
        Err(e) => return Err(e).with_context(|| format!("opening {name}")),
    };
    Ok((fd, created))
}

/// Sets owner (when given) and mode through the descriptor itself, only where they differ.
pub fn set_owner_mode(fd: &OwnedFd, owner: Option<(Uid, Gid)>, mode: u32) -> anyhow::Result<()> {
    let st = fstat(fd.as_raw_fd())?;
    if let Some((uid, gid)) = owner {
        if st.st_uid != uid.as_raw() || st.st_gid != gid.as_raw() {
            fchown(fd.as_raw_fd(), Some(uid), Some(gid)).context("fchown")?;
        }
    }
    if st.st_mode & 0o7777 != mode {
        fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode)).context("fchmod")?;
    }
    Ok(())
}

/// Runs `f` on a thread of its own whose file-system identity is `uid` and `gid`
/// (`setfsuid`/`setfsgid`, which are per thread): what it creates is theirs, and every
/// access is checked as theirs, root's file capabilities dropped. What the agent does in a
/// directory a tenant owns, it does this way.
pub fn as_user<T: Send + 'static>(
    uid: Uid,
    gid: Gid,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    std::thread::spawn(move || {
        nix::unistd::setfsgid(gid);
        nix::unistd::setfsuid(uid);
        // Each call returns the value before it: asking again says whether it took.
        if nix::unistd::setfsuid(uid) != uid || nix::unistd::setfsgid(gid) != gid {
            anyhow::bail!("could not act as {uid}:{gid}");
        }
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("acting as {uid}:{gid} panicked"))?
}

/// Opens a file for reading, or for writing without creating it, never through a symlink.
pub fn open_file(path: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(path)
}

/// Reads a whole file as text, never through a symlink.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    open_file(path, false)?.read_to_string(&mut text)?;
    Ok(text)
}

/// Whether only root can change what `path` names: every directory from `/` down to it is
/// root's and writable by nobody else (a sticky directory such as /tmp is allowed: others
/// may not rename or remove what root made in it). Root keeps its own files only there.
pub fn root_only_path(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let real =
        std::fs::canonicalize(path).with_context(|| format!("finding {}", path.display()))?;
    for dir in real.ancestors() {
        let meta =
            std::fs::metadata(dir).with_context(|| format!("looking at {}", dir.display()))?;
        let sticky = meta.mode() & 0o1000 != 0;
        let others_write = meta.mode() & 0o022 != 0;
        if meta.uid() != 0 || (others_write && (dir == real || !sticky)) {
            anyhow::bail!(
                "{} is not root's alone (owner {}, mode {:o}): root keeps its files only where nobody else can change them",
                dir.display(),
                meta.uid(),
                meta.mode() & 0o7777
            );
        }
    }
    Ok(())
}

/// Who owns a file written by [`replace_file`], and its mode.
#[derive(Debug, Clone, Copy)]
pub struct FileMode {
    pub mode: u32,
    /// Set when writing as root; `None` keeps the writer's own.
    pub owner: Option<(Uid, Gid)>,
}

impl FileMode {
    pub fn private() -> Self {
        Self {
            mode: 0o600,
            owner: None,
        }
    }
}

/// A file written beside its final name, not yet in place. Dropped without
/// [`Pending::commit`], it is removed.
pub struct Pending {
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Pending {
    /// Where the new content is now, for a check before it goes into place.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// Renames the new file over the old one.
    pub fn commit(mut self) -> io::Result<()> {
        std::fs::rename(&self.temp, &self.target)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes `content` to a new file beside `path` (`.<name>.new`), synced, with the given mode
/// and owner, never following a symlink; [`Pending::commit`] puts it in place.
pub fn write_beside(path: &Path, content: &[u8], mode: FileMode) -> io::Result<Pending> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("no file name"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(".new");
    let temp = path.with_file_name(temp_name);
    // A leftover of an interrupted write is removed (never followed): the new file is then
    // made with O_EXCL, so nothing else can stand in its place.
    match std::fs::remove_file(&temp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let pending = Pending {
        temp,
        target: path.to_owned(),
        committed: false,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode.mode)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(&pending.temp)?;
    f.write_all(content)?;
    if let Some((uid, gid)) = mode.owner {
        fchown(f.as_raw_fd(), Some(uid), Some(gid))?;
    }
    // The umask may have taken bits off the mode asked for.
    fchmod(f.as_raw_fd(), Mode::from_bits_truncate(mode.mode))?;
    f.sync_all()?;
    Ok(pending)
}

/// Replaces `path` with `content` (write beside, then rename), unless it already holds
/// exactly that. Returns whether it wrote.
pub fn replace_file(path: &Path, content: &[u8], mode: FileMode) -> io::Result<bool> {
    if let Ok(mut f) = open_file(path, false) {
        let mut old = Vec::new();
        if f.read_to_end(&mut old).is_ok() && old == content {
            let st = fstat(f.as_raw_fd())?;
            let owner_ok = mode
                .owner
                .is_none_or(|(u, g)| st.st_uid == u.as_raw() && st.st_gid == g.as_raw());
            if owner_ok && st.st_mode & 0o7777 == mode.mode {
                return Ok(false);
            }
        }
    }
    write_beside(path, content, mode)?.commit()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("lodge-nofollow-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replace_writes_once_and_never_follows_a_planted_link() {
        let dir = scratch("replace");
        let target = dir.join("routes.json");
        assert!(replace_file(&target, b"one", FileMode::private()).unwrap());
        assert!(!replace_file(&target, b"one", FileMode::private()).unwrap());
        assert_eq!(std::fs::read(&target).unwrap(), b"one");
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
            0o600
        );

        // A link planted where the temporary file goes is removed, not written through.
        let victim = dir.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(".routes.json.new")).unwrap();
        assert!(replace_file(&target, b"two", FileMode::private()).unwrap());
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");

        // Reading never goes through a link.
        let link = dir.join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(read_to_string(&link).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_pending_file_not_committed_is_removed() {
        let dir = scratch("pending");
        let target = dir.join("pool.conf");
        let pending = write_beside(&target, b"x", FileMode::private()).unwrap();
        let temp = pending.path().to_owned();
        assert!(temp.exists());
        drop(pending);
        assert!(!temp.exists() && !target.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
