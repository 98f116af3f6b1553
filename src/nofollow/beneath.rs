//! Opening a relative path beneath a directory descriptor and never outside it: with
//! `openat2(RESOLVE_BENEATH)` where the kernel has it, else one component at a time with
//! `O_NOFOLLOW` on each (then no symlink at all is followed). The proxy serves docroots this
//! way; what acts on a tenant's files from a descriptor of its home does too.

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// What symlinks beneath the directory may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// Followed while they stay beneath it (a docroot's own links); magic links never.
    StayBeneath,
    /// Never followed: any symlink on the way is an error (`ELOOP`, `ENOTDIR`).
    Refused,
}

/// Set once `openat2` has answered `ENOSYS`.
static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);

/// Whether the kernel has `openat2` (as far as has been seen).
fn openat2_available() -> bool {
    !OPENAT2_MISSING.load(Ordering::Relaxed)
}

/// Opens `rel` (relative, components separated by `/`, none empty, `.` or `..`; `.` for
/// the directory itself) beneath `root` with `flags` (`O_CLOEXEC` is added). A path that
/// would lead out is `EXDEV` with `openat2`, `ELOOP`/`ENOTDIR` without it.
pub fn open_beneath(
    root: BorrowedFd<'_>,
    rel: &str,
    flags: OFlag,
    symlinks: Symlinks,
) -> nix::Result<OwnedFd> {
    let flags = flags | OFlag::O_CLOEXEC;
    if openat2_available() {
        let resolve = match symlinks {
            Symlinks::StayBeneath => {
                ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS
            }
            Symlinks::Refused => ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS,
        };
        let how = OpenHow::new().flags(flags).resolve(resolve);
        match openat2_retrying(root.as_raw_fd(), rel, how) {
            Err(Errno::ENOSYS) => {
                OPENAT2_MISSING.store(true, Ordering::Relaxed);
                tracing::info!(
                    "openat2 is missing: no symlink beneath a confined directory is followed"
                );
            }
            other => return other.map(owned),
        }
    }
    open_walking(root, rel, flags)
}

/// The fallback without `openat2`: one component at a time, `O_NOFOLLOW` on each, so no
/// symlink at all is followed.
pub fn open_walking(root: BorrowedFd<'_>, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    if rel == "." {
        return openat_retrying(root.as_raw_fd(), ".", flags).map(owned);
    }
    let segments: Vec<&str> = rel.split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == ".." || *s == ".")
    {
        return Err(Errno::EINVAL);
    }
    let (last, dirs) = segments
        .split_last()
        .expect("split yields at least one segment");
    let mut dir: Option<OwnedFd> = None;
    for segment in dirs {
        let at = dir.as_ref().map_or(root.as_raw_fd(), |d| d.as_raw_fd());
        let fd = openat_retrying(
            at,
            segment,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        )?;
        dir = Some(owned(fd));
    }
    let at = dir.as_ref().map_or(root.as_raw_fd(), |d| d.as_raw_fd());
    openat_retrying(at, last, flags | OFlag::O_NOFOLLOW).map(owned)
}

/// `openat2`, retried on `EINTR` and on the `EAGAIN` the kernel returns when a concurrent
/// rename made it unsure that a `..` stayed beneath the root.
fn openat2_retrying(dirfd: RawFd, rel: &str, how: OpenHow) -> nix::Result<RawFd> {
    let mut tries = 0;
    loop {
        match nix::fcntl::openat2(dirfd, rel, how) {
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}

fn openat_retrying(dirfd: RawFd, name: &str, flags: OFlag) -> nix::Result<RawFd> {
    loop {
        match nix::fcntl::openat(Some(dirfd), name, flags, Mode::empty()) {
            Err(Errno::EINTR) => {}
            other => return other,
        }
    }
}

/// Takes ownership of a descriptor a system call just returned.
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: open/openat/openat2 just returned this descriptor and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
