//! The confined open: request paths checked against the rules, then opened beneath the
//! docroot (`nofollow::open_beneath`: `openat2(RESOLVE_BENEATH)`, or a walk with
//! `O_NOFOLLOW` on each component where `openat2` is missing); what was opened is
//! classified by `fstat`.

use super::kept::OpenedFile;
use crate::nofollow::{open_beneath, Symlinks};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

/// The one directory whose name starts with a dot that is served (RFC 8615): ACME HTTP-01
/// challenges live in `/.well-known/acme-challenge/`. Only as the first path segment, and
/// dotfiles inside it are still refused.
const WELL_KNOWN: &str = ".well-known";

/// The outcome of a confined open.
#[derive(Debug)]
pub enum Lookup {
    /// A regular file.
    File(OpenedFile),
    /// A directory (the caller decides about index files and trailing slashes).
    Directory,
    /// Nothing there, or a symlink that leads out of the docroot (which is never
    /// followed), or one that is refused because `openat2` is missing.
    NotFound,
    /// A refused path (dotfile, `..`, control characters, backslash), something that is
    /// neither a file nor a directory, or a permission error.
    Forbidden,
    /// The system failed (out of descriptors, I/O error, the docroot itself missing).
    Error(io::Error),
}

/// Opens the docroot directory itself: `O_PATH | O_DIRECTORY | O_CLOEXEC`. The path is
/// trusted configuration and symlinks in it are followed; see [`open_docroot_in_home`]
/// for docroots inside a tenant's home.
pub(super) fn open_docroot(docroot: &Path) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::open(
        docroot,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok(owned(fd))
}

/// Opens the docroot `docroot` (relative, like `sites/example.com/public`) inside the
/// tenant home `home`, refusing every symlink below `home` (`RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS`, or an `O_NOFOLLOW` walk without `openat2`), so a tenant who
/// replaces `sites/example.com` with a symlink to another tenant's home gets an error
/// (`ELOOP` / `ENOTDIR`), not that home. `home` itself is opened normally: its parent is
/// root's.
pub fn open_docroot_in_home(home: &Path, docroot: &str) -> io::Result<OwnedFd> {
    let home = open_docroot(home)?;
    let segments: Vec<&str> = docroot.split('/').filter(|s| !s.is_empty()).collect();
    if segments
        .iter()
        .any(|s| *s == "." || *s == ".." || s.contains('\0'))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "docroot must be a plain relative path",
        ));
    }
    if segments.is_empty() {
        return Ok(home);
    }
    let rel = segments.join("/");
    Ok(open_beneath(
        home.as_fd(),
        &rel,
        OFlag::O_PATH | OFlag::O_DIRECTORY,
        Symlinks::Refused,
    )?)
}

/// A path refused by [`check_path`].
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refused;

/// Splits a request path into its segments, refusing what must never reach the file
/// system: control characters (NUL, CR, LF, ...), backslashes, `.` and `..` segments, and
/// dotfiles, except `.well-known` as the first segment.
pub(super) fn check_path(path: &str) -> Result<Vec<&str>, Refused> {
    if path.bytes().any(|b| b.is_ascii_control() || b == b'\\') {
        return Err(Refused);
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for (i, segment) in segments.iter().enumerate() {
        if *segment == ".." || *segment == "." {
            return Err(Refused);
        }
        if segment.starts_with('.') && !(i == 0 && *segment == WELL_KNOWN) {
            return Err(Refused);
        }
    }
    Ok(segments)
}

/// The relative path for `openat2`: the segments joined, or `.` for the docroot itself.
pub(super) fn join(segments: &[&str]) -> String {
    if segments.is_empty() {
        ".".to_owned()
    } else {
        segments.join("/")
    }
}

/// The flags of every file open: read-only, and non-blocking so a FIFO planted in a
/// docroot does not hang the open (it is refused after `fstat`).
fn file_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK
}

/// Opens the checked relative path `rel` beneath `root`: symlinks inside the docroot are
/// followed while they stay in it (none at all without `openat2`).
pub(super) fn open_confined(root: BorrowedFd<'_>, rel: &str) -> Lookup {
    if rel.split('/').any(|s| s.is_empty() || s == "..") && rel != "." {
        return Lookup::Forbidden;
    }
    match open_beneath(root, rel, file_flags(), Symlinks::StayBeneath) {
        Ok(fd) => classify(fd),
        Err(Errno::EXDEV) => {
            tracing::debug!(path = rel, "refused a path that leads out of the docroot");
            Lookup::NotFound
        }
        Err(e) => from_errno(e),
    }
}

fn from_errno(e: Errno) -> Lookup {
    match e {
        // Missing; a file used as a directory; a symlink refused (O_NOFOLLOW, magic links,
        // loops); a symlink out of the docroot; a name too long.
        Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::EXDEV | Errno::ENAMETOOLONG => {
            Lookup::NotFound
        }
        // Not readable by lodge-www; a socket (ENXIO); a device we may not open.
        Errno::EACCES | Errno::EPERM | Errno::ENXIO | Errno::ENODEV => Lookup::Forbidden,
        e => Lookup::Error(e.into()),
    }
}

/// Takes ownership of a descriptor a system call just returned.
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller passes a descriptor that open just returned and that nothing else
    // owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `fstat`s the opened descriptor: regular files are kept, directories reported, anything
/// else refused.
fn classify(fd: OwnedFd) -> Lookup {
    let file = File::from(fd);
    let meta = match file.metadata() {
        Ok(meta) => meta,
        Err(e) => return Lookup::Error(e),
    };
    if meta.is_dir() {
        return Lookup::Directory;
    }
    if !meta.is_file() {
        return Lookup::Forbidden;
    }
    // O_NONBLOCK was only for the open; reads of a regular file should block normally.
    if let Err(e) = nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&file),
        nix::fcntl::FcntlArg::F_SETFL(OFlag::O_RDONLY),
    ) {
        return Lookup::Error(e.into());
    }
    Lookup::File(OpenedFile::new(Arc::new(file), &meta))
}

#[cfg(test)]
mod tests {
    /// The walk used without `openat2`, classified as a confined open is.
    fn open_walking(root: BorrowedFd<'_>, rel: &str) -> Lookup {
        match crate::nofollow::beneath::open_walking(root, rel, file_flags()) {
            Ok(fd) => classify(fd),
            Err(e) => from_errno(e),
        }
    }

    use super::super::testing::{assert_no_secret, get, open, request, Tree, SECRET};
    use super::super::{serve, StaticRequest, DEFAULT_INDEX};
    use super::*;
    use http_body_util::BodyExt;
    use hyper::header::HeaderMap;
    use hyper::{Method, StatusCode};
    use std::os::fd::AsFd;
    use std::os::unix::fs::symlink;

    #[tokio::test]
    async fn dotfiles_are_refused_but_well_known_is_served() {
        let tree = Tree::new("dot");
        tree.write(".env", "DB_PASSWORD=hunter2");
        tree.write(".git/config", "[core]");
        tree.write("a/.htaccess", "Deny from all");
        tree.write(".user.ini", "x");
        tree.write(".well-known/acme-challenge/x", "token.thumbprint");
        tree.write(".well-known/.secret", "no");
        tree.write("sub/.well-known/y", "no");

        for path in [
            "/.env",
            "/.git/config",
            "/.git/",
            "/.git",
            "/a/.htaccess",
            "/.user.ini",
            "/.well-known/.secret",
            "/sub/.well-known/y",
            "/./.env",
            "/a/./.htaccess",
        ] {
            let r = get(&tree, path).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
            assert!(!r.body.windows(7).any(|w| w == b"hunter2"), "{path}");
        }
        let r = get(&tree, "/.well-known/acme-challenge/x").await;
        assert_eq!(
            (r.status, &r.body[..]),
            (StatusCode::OK, &b"token.thumbprint"[..])
        );
    }

    #[tokio::test]
    async fn symlinks_out_of_the_docroot_are_never_followed() {
        let tree = Tree::new("escape");
        tree.link("passwd", "/etc/passwd");
        tree.link("etc", "/etc");
        tree.link("abs_secret", tree.base.join("other/secret"));
        tree.link("rel_secret", "../other/secret");
        tree.link("sub/deep_secret", "../../other/secret");
        tree.link("other_dir", "../other");
        tree.link("proc_root", "/proc/self/root");
        tree.link("sub/chain", "../rel_secret");
        tree.link("loop", "loop");

        for path in [
            "/passwd",
            "/etc/passwd",
            "/abs_secret",
            "/rel_secret",
            "/sub/deep_secret",
            "/other_dir/secret",
            "/proc_root/etc/passwd",
            "/sub/chain",
            "/loop",
        ] {
            let r = get(&tree, path).await;
            assert_no_secret(&r, path);
            let r = request(&tree, Method::GET, path, &[("range", "bytes=0-3")]).await;
            assert_no_secret(&r, path);
        }
        // The directory-level API says the same.
        assert!(matches!(open(&tree, "/passwd"), Lookup::NotFound));
        assert!(matches!(open(&tree, "sub/deep_secret"), Lookup::NotFound));
        // And so does the fallback walk used without openat2.
        let root = open_docroot(&tree.root()).unwrap();
        for rel in [
            "passwd",
            "etc/passwd",
            "abs_secret",
            "rel_secret",
            "sub/deep_secret",
        ] {
            assert!(
                matches!(open_walking(root.as_fd(), rel), Lookup::NotFound),
                "{rel}"
            );
        }
    }

    #[tokio::test]
    async fn symlinks_inside_the_docroot_are_served() {
        let tree = Tree::new("inside");
        tree.write("real.txt", "real content");
        tree.write("assets/app.css", "a{}");
        tree.link("alias.txt", "real.txt");
        tree.link("sub/up.txt", "../real.txt");
        tree.link("static", "assets");

        for path in ["/alias.txt", "/sub/up.txt"] {
            let r = get(&tree, path).await;
            assert_eq!(
                (r.status, &r.body[..]),
                (StatusCode::OK, &b"real content"[..]),
                "{path}"
            );
        }
        let r = get(&tree, "/static/app.css").await;
        assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"a{}"[..]));

        // The fallback refuses every symlink, even these; real files still open.
        let root = open_docroot(&tree.root()).unwrap();
        assert!(matches!(
            open_walking(root.as_fd(), "alias.txt"),
            Lookup::NotFound
        ));
        assert!(matches!(
            open_walking(root.as_fd(), "static/app.css"),
            Lookup::NotFound
        ));
        assert!(matches!(
            open_walking(root.as_fd(), "assets/app.css"),
            Lookup::File(_)
        ));
        assert!(matches!(
            open_walking(root.as_fd(), "assets"),
            Lookup::Directory
        ));
    }

    #[tokio::test]
    async fn dot_dot_and_control_characters_are_refused() {
        let tree = Tree::new("dotdot");
        tree.write("sub/file.txt", "ok");
        for path in [
            "/../other/secret",
            "/sub/../../other/secret",
            "/sub/../sub/file.txt",
            "/..",
            "/sub/..",
            "/file\0.txt",
            "/sub/file.txt\0",
            "/sub/file.txt\r\nX-Injected: 1",
            "/sub/file.txt\n",
            "/sub\\file.txt",
            "/..\\other\\secret",
        ] {
            let r = get(&tree, path).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{path:?}");
            assert!(!String::from_utf8_lossy(&r.body).contains(SECRET));
        }
        assert!(matches!(open(&tree, "../other/secret"), Lookup::Forbidden));
        assert!(matches!(open(&tree, "sub/file.txt"), Lookup::File(_)));
        assert_eq!(get(&tree, "/sub//file.txt").await.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn docroot_in_home_refuses_a_swapped_symlink() {
        let tree = Tree::new("home");
        let home = tree.base.clone();
        std::fs::create_dir_all(home.join("sites/a.example/public")).unwrap();
        std::fs::write(home.join("sites/a.example/public/index.html"), "A").unwrap();
        // The tenant replaced a docroot component with a symlink to someone else.
        symlink(home.join("other"), home.join("sites/b.example")).unwrap();

        let root = open_docroot_in_home(&home, "sites/a.example/public").unwrap();
        let map = HeaderMap::new();
        let req = StaticRequest {
            method: &Method::GET,
            path: "/",
            query: None,
            headers: &map,
        };
        let response = serve(root.as_fd(), tree.key, &req, DEFAULT_INDEX, None);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"A");

        assert!(open_docroot_in_home(&home, "sites/b.example").is_err());
        assert!(open_docroot_in_home(&home, "../other").is_err());
    }

    #[test]
    fn path_rules() {
        assert_eq!(check_path("/"), Ok(vec![]));
        assert_eq!(check_path("/a//b/"), Ok(vec!["a", "b"]));
        assert_eq!(check_path("/.well-known/x"), Ok(vec![".well-known", "x"]));
        assert_eq!(check_path("/a/.well-known"), Err(Refused));
        assert_eq!(check_path("/a\u{7f}"), Err(Refused));
    }
}
