//! Where request bodies too large to hold in memory wait until PHP reads them (nginx's
//! `client_body_temp_path`): files without a name (`O_TMPFILE`, mode 0600), in a directory
//! of the proxy's own. No other user can open one, and none is left behind when the proxy
//! stops or dies: a file goes when its last descriptor closes.

use nix::unistd::geteuid;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The parent of the proxy's spool directory: on disk (`/tmp` may be memory), kept by
/// every Linux system.
pub const PARENT: &str = "/var/tmp";

/// The directory spooled bodies go in.
pub struct Spool {
    parent: PathBuf,
    dir: PathBuf,
}

impl Spool {
    /// The spool in `<parent>/lodge-proxy-<uid>`, made 0700 if missing. A directory of that
    /// name that is not the proxy's own and private (someone made it first) is not used:
    /// the files go in `parent` itself, where they have no name either.
    pub fn open(parent: &Path) -> Spool {
        let uid = geteuid();
        let dir = parent.join(format!("lodge-proxy-{uid}"));
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "no spool directory of the proxy's own");
                return Spool::unowned(parent);
            }
        }
        // `parent` is sticky (as /var/tmp is) or the proxy's: once checked, the directory
        // cannot be swapped for another by anyone but its owner.
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() && m.uid() == uid.as_raw() && m.mode() & 0o077 == 0 => Spool {
                parent: parent.to_owned(),
                dir,
            },
            _ => {
                tracing::warn!(dir = %dir.display(), "the spool directory is not the proxy's own, 0700: not used");
                Spool::unowned(parent)
            }
        }
    }

    fn unowned(parent: &Path) -> Spool {
        Spool {
            parent: parent.to_owned(),
            dir: parent.to_owned(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new file without a name, for reading and writing. `O_EXCL`: it can never be given
    /// one (`linkat`) either.
    pub fn file(&self) -> io::Result<File> {
        match tmpfile(&self.dir) {
            // Gone: an unnamed file leaves the directory looking unused, and a cleaner of
            // old files in /var/tmp may have taken it. Made again, if it is still ours.
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.dir != self.parent => {
                let again = Spool::open(&self.parent);
                if again.dir != self.dir {
                    return Err(e);
                }
                tmpfile(&self.dir)
            }
            made => made,
        }
    }
}

fn tmpfile(dir: &Path) -> io::Result<File> {
    use nix::fcntl::OFlag;
    OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags((OFlag::O_TMPFILE | OFlag::O_EXCL).bits())
        .open(dir)
}

/// Spool reads and writes under way at once, across the proxy. They run off the event
/// loops (a disk may make them wait), on threads of the runtime's blocking pool; a thread
/// costs memory for as long as it lives, and a few keep up with any disk.
const IO_AT_ONCE: usize = 4;

static IO: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(IO_AT_ONCE);

/// Runs `op` (a read or write of a spooled file) off the event loop, at most
/// [`IO_AT_ONCE`] at a time.
pub async fn io<T: Send + 'static>(
    op: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let _turn = IO.acquire().await.map_err(io::Error::other)?;
    tokio::task::spawn_blocking(op)
        .await
        .map_err(io::Error::other)?
}

/// Bytes an unprivileged user may still write on the filesystem of `file`.
pub fn free_space(file: &File) -> io::Result<u64> {
    let s = nix::sys::statvfs::fstatvfs(file)?;
    Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn spooled_files_have_no_name_and_are_the_proxys_alone() {
        let parent = std::env::temp_dir().join(format!("lodge-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&parent);
        std::fs::create_dir_all(&parent).unwrap();
        let spool = Spool::open(&parent);
        assert_eq!(
            spool.dir(),
            parent.join(format!("lodge-proxy-{}", geteuid()))
        );
        let meta = std::fs::metadata(spool.dir()).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);

        let mut file = spool.file().unwrap();
        file.write_all(b"a body").unwrap();
        file.rewind().unwrap();
        let mut back = String::new();
        file.read_to_string(&mut back).unwrap();
        assert_eq!(back, "a body");
        assert_eq!(file.metadata().unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_dir(spool.dir()).unwrap().count(),
            0,
            "no name"
        );
        assert!(free_space(&file).unwrap() > 0);

        // Opened again, the same directory; one that is not private is not used.
        assert_eq!(Spool::open(&parent).dir(), spool.dir());
        std::fs::set_permissions(
            spool.dir(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        assert_eq!(Spool::open(&parent).dir(), parent);
        assert!(Spool::open(&parent).file().is_ok());

        // A directory removed meanwhile is made again.
        std::fs::set_permissions(
            spool.dir(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        std::fs::remove_dir(spool.dir()).unwrap();
        assert!(spool.file().is_ok());
        assert!(spool.dir().is_dir());
        std::fs::remove_dir_all(&parent).unwrap();
    }
}
