//! Static files from a docroot, without ever leaving it.
//!
//! The proxy runs as `lodge-www`, which can read every tenant's docroot, and a tenant may
//! plant symlinks in its own docroot pointing at another tenant's home or at `/etc`. So no
//! path is ever resolved by the kernel from `/`:
//!
//! 1. The request path is checked first ([`check_path`] rules): no NUL, CR, LF or other
//!    control character, no backslash, no `..` segment, and no segment starting with `.`
//!    (`.env`, `.git/`, `.htaccess`, `.user.ini` → 403) except a first segment equal to
//!    `.well-known` (ACME HTTP-01 challenges, `security.txt`). Empty segments (`//`) are
//!    dropped.
//! 2. The docroot directory is opened once (`O_PATH | O_DIRECTORY | O_CLOEXEC`), and every
//!    file of the request (the path, the directory index, the `.br` / `.gz` siblings) is
//!    opened relative to that descriptor with `openat2(RESOLVE_BENEATH |
//!    RESOLVE_NO_MAGICLINKS)`: symlinks that stay inside the docroot work, any that
//!    escape it (absolute targets, `..` above the root, `/proc/self/...` magic links) fail
//!    in the kernel with `EXDEV` / `ELOOP`, which is answered 404. The check and the open
//!    are the same system call, so there is no window for a tenant to swap a directory
//!    for a symlink between them.
//! 3. Where `openat2` does not exist (`ENOSYS`: Linux before 5.6, or a seccomp filter that
//!    does not know it), the path is walked one component at a time with
//!    `openat(O_NOFOLLOW)` from the docroot descriptor, which refuses *every* symlink
//!    (even the harmless ones inside the docroot): stricter, never looser.
//! 4. What was opened is `fstat`ed through its own descriptor: only regular files are
//!    served; a directory is answered with its index file (or 403, never a listing), and
//!    a FIFO or socket with 403. The open uses `O_NONBLOCK` so a planted FIFO cannot hang
//!    a worker thread.
//!
//! The docroot path itself is opened normally, following symlinks, because it comes from
//! lodge's own configuration. But the components of it that lie inside a tenant's home
//! (`sites/<domain>/public`) belong to the tenant, who could rename one and put a symlink
//! in its place. Callers that know the home should open the docroot with
//! [`open_docroot_in_home`] (which refuses every symlink below the home) and serve with
//! [`serve_in`] / [`open_beneath_fd`].
//!
//! Responses carry `Content-Type` (from the extension; text types with
//! `; charset=utf-8`), `Content-Length`, a strong `ETag`
//! (`"<mtime-secs-hex>-<mtime-nsec-hex>-<size-hex>"`), `Last-Modified`, `Accept-Ranges`,
//! and `X-Content-Type-Options: nosniff`; no `Cache-Control` (the caller may add one).
//! Conditional requests (`If-Match`, `If-Unmodified-Since`, `If-None-Match`,
//! `If-Modified-Since`), single byte ranges (with `If-Range`), and precompressed `.br` /
//! `.gz` siblings are handled (looked for only beside compressible types: text, scripts,
//! JSON, XML, SVG, WebAssembly). Files up to 64 KiB are read in one `pread`; larger ones
//! are streamed from the opened descriptor in 256 KiB chunks, read as the connection
//! takes them, so memory stays bounded by one chunk per response.
//!
//! The file system work runs on the connection's own task, as nginx does in its event
//! loop: tenants' sites live on local disks, where an open, an `fstat` or a `pread` that
//! hits the page cache takes microseconds, and handing each to a thread pool cost more
//! than the work itself (a third of nginx's rate on small files).

use super::sendfile::Sendfile;
use super::{empty, full, Body};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Response, StatusCode};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Files up to this size are read into memory in one read.
pub const CHUNK: usize = 64 * 1024;
/// Larger files are streamed in reads of this size.
pub const STREAM_CHUNK: usize = 256 * 1024;

/// The names tried, in order, when a directory is requested, for callers with no
/// configuration of their own.
pub const DEFAULT_INDEX: &[&str] = &["index.html", "index.htm"];

/// The one directory whose name starts with a dot that is served (RFC 8615): ACME HTTP-01
/// challenges live in `/.well-known/acme-challenge/`. Only as the first path segment, and
/// dotfiles inside it are still refused.
const WELL_KNOWN: &str = ".well-known";

/// What the static half of the proxy needs from a request.
#[derive(Debug, Clone, Copy)]
pub struct StaticRequest<'a> {
    pub method: &'a Method,
    /// The request path, already percent-decoded, starting with `/`, without the query.
    pub path: &'a str,
    /// The raw query string as received (still percent-encoded, without the `?`), kept on
    /// the trailing-slash redirect. `None` when the request had none.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// A regular file opened beneath a docroot, with what `fstat` said about it then.
#[derive(Debug)]
pub struct OpenedFile {
    file: Arc<File>,
    facts: Arc<Facts>,
}

/// What `fstat` tells of a file that the responses depend on. Two equal stamps are taken as
/// the same content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            len: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
        }
    }
}

/// A file's stamp and what the responses derive from it. Kept with the open file in the
/// thread's cache for as long as `fstat` gives the same stamp, so that a file served again
/// costs at most one `fstat`: no formatting, and for a small file no read.
#[derive(Debug)]
struct Facts {
    stamp: Stamp,
    /// The strong entity tag, quotes included.
    etag: HeaderValue,
    last_modified: HeaderValue,
    /// The whole content of a file up to [`KEPT_CONTENT`] bytes, once read.
    content: std::sync::OnceLock<Bytes>,
    /// `Content-Type` for the path the file was opened at, and whether it compresses.
    content_type: std::sync::OnceLock<(HeaderValue, bool)>,
}

/// Files up to this size keep their content in the thread's cache while unchanged.
const KEPT_CONTENT: u64 = 16 * 1024;
/// The most content one thread keeps, counted since its cache last started over.
const KEPT_BUDGET: usize = 8 << 20;

thread_local! {
    static KEPT_BYTES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Facts {
    fn new(stamp: Stamp) -> Arc<Self> {
        Arc::new(Self {
            stamp,
            etag: HeaderValue::from_str(&etag_of(&stamp, "")).expect("hex and quotes"),
            last_modified: HeaderValue::from_str(&httpdate::fmt_http_date(modified(&stamp)))
                .expect("an HTTP date is a valid header"),
            content: std::sync::OnceLock::new(),
            content_type: std::sync::OnceLock::new(),
        })
    }
}

fn etag_of(stamp: &Stamp, suffix: &str) -> String {
    format!(
        "\"{:x}-{:x}-{:x}{suffix}\"",
        stamp.mtime.0, stamp.mtime.1, stamp.len
    )
}

fn modified(stamp: &Stamp) -> SystemTime {
    if stamp.mtime.0 >= 0 {
        UNIX_EPOCH + Duration::new(stamp.mtime.0 as u64, stamp.mtime.1 as u32)
    } else {
        UNIX_EPOCH
    }
}

impl OpenedFile {
    fn new(file: Arc<File>, meta: &std::fs::Metadata) -> Self {
        Self {
            file,
            facts: Facts::new(Stamp::of(meta)),
        }
    }

    /// The open file (read-only). Reads through it see the file that was checked, whatever
    /// has happened to the path since.
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn into_file(self) -> Arc<File> {
        self.file
    }

    /// The size at the time it was opened.
    pub fn len(&self) -> u64 {
        self.facts.stamp.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The modification time at the time it was opened.
    pub fn modified(&self) -> SystemTime {
        modified(&self.facts.stamp)
    }

    /// The strong entity tag, quotes included: `"<mtime-secs>-<mtime-nsec>-<size>"`, in
    /// lowercase hex.
    pub fn etag(&self) -> String {
        self.facts.etag.to_str().unwrap_or_default().to_owned()
    }

    fn etag_with(&self, suffix: &str) -> HeaderValue {
        if suffix.is_empty() {
            return self.facts.etag.clone();
        }
        HeaderValue::from_str(&etag_of(&self.facts.stamp, suffix)).expect("hex and quotes")
    }

    /// Whole seconds since the epoch, as `Last-Modified` and `If-Modified-Since` see it.
    fn mtime_secs(&self) -> i64 {
        self.facts.stamp.mtime.0
    }
}

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
pub fn open_docroot(docroot: &Path) -> io::Result<OwnedFd> {
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
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    if openat2_available() {
        let how = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        match openat2_retrying(home.as_raw_fd(), &segments.join("/"), how) {
            Err(Errno::ENOSYS) => OPENAT2_MISSING.store(true, Ordering::Relaxed),
            other => return Ok(owned(other?)),
        }
    }
    let mut dir = home;
    for segment in segments {
        let fd = nix::fcntl::openat(
            Some(dir.as_raw_fd()),
            segment,
            flags | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )?;
        dir = owned(fd);
    }
    Ok(dir)
}

/// Opens `rel` (a request path, with or without its leading `/`) beneath `docroot`,
/// applying every rule of this module: the path checks, then a confined open that never
/// follows a symlink out of the docroot. Does not serve index files or care about
/// trailing slashes.
pub fn open_beneath(docroot: &Path, rel: &str) -> Lookup {
    match open_docroot(docroot) {
        Ok(root) => open_beneath_fd(root.as_fd(), rel),
        Err(e) => Lookup::Error(e),
    }
}

/// [`open_beneath`] with the docroot already open (from [`open_docroot`] or
/// [`open_docroot_in_home`]).
pub fn open_beneath_fd(root: BorrowedFd<'_>, rel: &str) -> Lookup {
    match check_path(rel) {
        Ok(segments) => open_confined(root, &join(&segments)),
        Err(Refused) => Lookup::Forbidden,
    }
}

/// [`open_beneath_fd`] for a docroot known by `key`, as [`serve_cached`] does.
pub fn open_beneath_cached(root: BorrowedFd<'_>, key: u64, rel: &str) -> Lookup {
    match check_path(rel) {
        Ok(segments) => open_file(root, Some(key), &join(&segments)),
        Err(Refused) => Lookup::Forbidden,
    }
}

/// Serves `req` from the files beneath `docroot`; `index` names the files tried, in order,
/// for a directory (like [`DEFAULT_INDEX`]). Never fails: errors are small plain-text
/// responses (403 "Forbidden", 404 "Not Found", 405, 416, 500) that the caller may
/// replace with branded pages.
pub async fn serve(docroot: &Path, req: &StaticRequest<'_>, index: &[&str]) -> Response<Body> {
    if let Some(refusal) = refuse_method(req.method) {
        return refusal;
    }
    match open_docroot(docroot) {
        Ok(root) => respond(root.as_fd(), None, req, index, None),
        Err(e) => {
            tracing::warn!(docroot = %docroot.display(), error = %e, "cannot open docroot");
            error_response(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// [`serve`] with the docroot already open (from [`open_docroot`] or
/// [`open_docroot_in_home`]).
pub async fn serve_in(
    root: BorrowedFd<'_>,
    req: &StaticRequest<'_>,
    index: &[&str],
) -> Response<Body> {
    respond(root, None, req, index, None)
}

/// [`serve_in`] for a docroot known by `key` (unique to it for the process's life): files
/// opened beneath it are used again for [`FILE_REOPEN`].
/// With `sendfile`, files over [`CHUNK`] go out with sendfile(2) (see
/// [`super::sendfile`]; only for a plain HTTP/1 connection's current request).
pub fn serve_cached(
    root: BorrowedFd<'_>,
    key: u64,
    req: &StaticRequest<'_>,
    index: &[&str],
    sendfile: Option<&Sendfile>,
) -> Response<Body> {
    respond(root, Some(key), req, index, sendfile)
}

// ---------------------------------------------------------------------------------------
// Path checks and the confined open.

/// A path refused by [`check_path`].
#[derive(Debug, PartialEq, Eq)]
struct Refused;

/// Splits a request path into its segments, refusing what must never reach the file
/// system: control characters (NUL, CR, LF, ...), backslashes, `.` and `..` segments, and
/// dotfiles, except `.well-known` as the first segment.
fn check_path(path: &str) -> Result<Vec<&str>, Refused> {
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
fn join(segments: &[&str]) -> String {
    if segments.is_empty() {
        ".".to_owned()
    } else {
        segments.join("/")
    }
}

/// Set once `openat2` has answered `ENOSYS`.
static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);

fn openat2_available() -> bool {
    !OPENAT2_MISSING.load(Ordering::Relaxed)
}

/// The flags of every file open: read-only, and non-blocking so a FIFO planted in a
/// docroot does not hang the open (it is refused after `fstat`).
fn file_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK
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

/// How long an opened file is used again for the same path before it is opened anew: a
/// file replaced by a rename is seen within this time.
pub const FILE_REOPEN: Duration = Duration::from_secs(1);
/// How long what `fstat` said of a kept file is taken as still true: a file changed in
/// place is seen within this time (nginx's `open_file_cache_valid` is a minute). A busy
/// file then costs one `fstat` per this time and thread instead of one per request.
pub const FILE_RECHECK: Duration = Duration::from_millis(50);
/// Files kept open per thread; past this the cache starts over.
const FILE_CACHE: usize = 4096;

/// A file kept open: when it was opened and when `fstat`ed last, and its facts.
struct Kept {
    file: Arc<File>,
    opened: Instant,
    checked: Instant,
    facts: Arc<Facts>,
}

/// Per docroot key, per path: the file kept open.
type FileCache = std::collections::HashMap<u64, std::collections::HashMap<String, Kept>>;

thread_local! {
    /// Files opened beneath docroots, by docroot key and path. Per thread: each proxy thread
    /// serves its own connections, so no lock is taken.
    static FILES: std::cell::RefCell<FileCache> = std::cell::RefCell::new(FileCache::new());
}

/// [`open_confined`], reusing a file this thread opened at the same path of the same docroot
/// (`key`) within [`FILE_REOPEN`], and what was derived from it while its stamp is the same.
/// Only regular files are kept; what was refused or missing is looked up every time.
fn open_file(root: BorrowedFd<'_>, key: Option<u64>, rel: &str) -> Lookup {
    let Some(key) = key else {
        return open_confined(root, rel);
    };
    let now = Instant::now();
    let cached = FILES.with(|files| {
        let files = files.borrow();
        let kept = files
            .get(&key)
            .and_then(|paths| paths.get(rel))
            .filter(|k| now.duration_since(k.opened) < FILE_REOPEN)?;
        let fresh = now.duration_since(kept.checked) < FILE_RECHECK;
        Some((kept.file.clone(), kept.facts.clone(), fresh))
    });
    if let Some((file, facts, fresh)) = cached {
        if fresh {
            return Lookup::File(OpenedFile { file, facts });
        }
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(e) => return Lookup::Error(e),
        };
        let opened = if Stamp::of(&meta) == facts.stamp {
            OpenedFile { file, facts }
        } else {
            OpenedFile::new(file, &meta)
        };
        FILES.with(|files| {
            let mut files = files.borrow_mut();
            if let Some(kept) = files.get_mut(&key).and_then(|paths| paths.get_mut(rel)) {
                kept.checked = now;
                kept.facts = opened.facts.clone();
            }
        });
        return Lookup::File(opened);
    }
    let found = open_confined(root, rel);
    if let Lookup::File(opened) = &found {
        FILES.with(|files| {
            let mut files = files.borrow_mut();
            if files.values().map(|paths| paths.len()).sum::<usize>() >= FILE_CACHE {
                files.clear();
                KEPT_BYTES.with(|kept| kept.set(0));
            }
            let kept = Kept {
                file: opened.file.clone(),
                opened: now,
                checked: now,
                facts: opened.facts.clone(),
            };
            files.entry(key).or_default().insert(rel.to_owned(), kept);
        });
    }
    found
}

/// Opens the checked relative path `rel` beneath `root`.
fn open_confined(root: BorrowedFd<'_>, rel: &str) -> Lookup {
    if openat2_available() {
        let how = OpenHow::new()
            .flags(file_flags())
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        match openat2_retrying(root.as_raw_fd(), rel, how) {
            Ok(fd) => return classify(owned(fd)),
            Err(Errno::ENOSYS) => {
                OPENAT2_MISSING.store(true, Ordering::Relaxed);
                tracing::info!("openat2 is missing: symlinks in docroots will not be followed");
            }
            Err(Errno::EXDEV) => {
                tracing::debug!(path = rel, "refused a path that leads out of the docroot");
                return Lookup::NotFound;
            }
            Err(e) => return from_errno(e),
        }
    }
    open_walking(root, rel)
}

/// The fallback without `openat2`: one component at a time, `O_NOFOLLOW` on each, so any
/// symlink at all is refused (`ELOOP` / `ENOTDIR`).
fn open_walking(root: BorrowedFd<'_>, rel: &str) -> Lookup {
    let segments: Vec<&str> = rel.split('/').collect();
    if segments.iter().any(|s| s.is_empty() || *s == "..") {
        return Lookup::Forbidden;
    }
    let (last, dirs) = segments
        .split_last()
        .expect("split yields at least one segment");
    let mut dir: Option<OwnedFd> = None;
    for segment in dirs {
        let at = dir.as_ref().map_or(root.as_raw_fd(), |d| d.as_raw_fd());
        match openat_retrying(
            at,
            segment,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        ) {
            Ok(fd) => dir = Some(owned(fd)),
            Err(e) => return from_errno(e),
        }
    }
    let at = dir.as_ref().map_or(root.as_raw_fd(), |d| d.as_raw_fd());
    match openat_retrying(at, last, file_flags() | OFlag::O_NOFOLLOW) {
        Ok(fd) => classify(owned(fd)),
        Err(e) => from_errno(e),
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
    // SAFETY: the caller passes a descriptor that open/openat/openat2 just returned and
    // that nothing else owns.
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
        file.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(OFlag::O_RDONLY),
    ) {
        return Lookup::Error(e.into());
    }
    Lookup::File(OpenedFile::new(Arc::new(file), &meta))
}

// ---------------------------------------------------------------------------------------
// Responses.

fn refuse_method(method: &Method) -> Option<Response<Body>> {
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    let mut response = error_response(StatusCode::METHOD_NOT_ALLOWED);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    Some(response)
}

/// A small plain-text error: the reason phrase and a newline.
fn error_response(status: StatusCode) -> Response<Body> {
    let text = format!("{}\n", status.canonical_reason().unwrap_or("Error"));
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn lookup_failure(lookup: Lookup) -> Response<Body> {
    match lookup {
        Lookup::NotFound => error_response(StatusCode::NOT_FOUND),
        Lookup::Forbidden | Lookup::Directory => error_response(StatusCode::FORBIDDEN),
        Lookup::Error(e) => {
            tracing::warn!(error = %e, "static file lookup failed");
            error_response(StatusCode::INTERNAL_SERVER_ERROR)
        }
        Lookup::File(_) => unreachable!("a file is not a failure"),
    }
}

/// Everything after the method check.
fn respond(
    root: BorrowedFd<'_>,
    key: Option<u64>,
    req: &StaticRequest<'_>,
    index: &[&str],
    sendfile: Option<&Sendfile>,
) -> Response<Body> {
    if let Some(refusal) = refuse_method(req.method) {
        return refusal;
    }
    let Ok(segments) = check_path(req.path) else {
        return error_response(StatusCode::FORBIDDEN);
    };
    let rel = join(&segments);
    match open_file(root, key, &rel) {
        Lookup::File(file) => {
            if req.path.ends_with('/') {
                // `/file.txt/` is not a directory.
                return error_response(StatusCode::NOT_FOUND);
            }
            serve_file(root, key, req, &rel, file, sendfile)
        }
        Lookup::Directory => {
            if !req.path.ends_with('/') {
                return redirect_to_slash(&segments, req.query);
            }
            for name in index {
                if name.is_empty() || name.starts_with('.') || name.contains(['/', '\0', '\\']) {
                    continue;
                }
                let rel = if segments.is_empty() {
                    (*name).to_owned()
                } else {
                    format!("{rel}/{name}")
                };
                match open_file(root, key, &rel) {
                    Lookup::File(file) => return serve_file(root, key, req, &rel, file, sendfile),
                    Lookup::Error(e) => return lookup_failure(Lookup::Error(e)),
                    _ => continue,
                }
            }
            // No index: no listings.
            error_response(StatusCode::FORBIDDEN)
        }
        other => lookup_failure(other),
    }
}

/// 301 to the directory with a trailing slash, built from the checked segments (so `//`
/// cannot turn it into a redirect to another host) and percent-encoded.
fn redirect_to_slash(segments: &[&str], query: Option<&str>) -> Response<Body> {
    let mut location = String::from("/");
    for segment in segments {
        percent_encode_into(&mut location, segment);
        location.push('/');
    }
    if let Some(query) = query {
        location.push('?');
        location.push_str(query);
    }
    let value = HeaderValue::from_str(&location).or_else(|_| {
        // A query with bytes a header cannot carry: drop it rather than fail.
        let without = location.split('?').next().unwrap_or("/");
        HeaderValue::from_str(without)
    });
    let Ok(value) = value else {
        return error_response(StatusCode::NOT_FOUND);
    };
    let mut response = error_response(StatusCode::MOVED_PERMANENTLY);
    response.headers_mut().insert(header::LOCATION, value);
    response
}

/// Percent-encodes a path segment: everything but RFC 3986 `pchar` minus `%`.
fn percent_encode_into(out: &mut String, segment: &str) {
    use std::fmt::Write;
    for &b in segment.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The `Content-Type` for a path: from its extension, with `charset=utf-8` on text; and
/// whether the type compresses (and so may have `.br` / `.gz` siblings).
fn content_type(rel: &str) -> (HeaderValue, bool) {
    let mime = mime_guess::from_path(rel)
        .first_raw()
        .unwrap_or("application/octet-stream");
    let texty = mime.starts_with("text/")
        || matches!(
            mime,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/manifest+json"
                | "image/svg+xml"
        );
    if texty {
        let value = HeaderValue::from_str(&format!("{mime}; charset=utf-8"))
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        (value, true)
    } else {
        (HeaderValue::from_static(mime), mime == "application/wasm")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Br,
    Gzip,
}

impl Encoding {
    fn extension(self) -> &'static str {
        match self {
            Encoding::Br => ".br",
            Encoding::Gzip => ".gz",
        }
    }

    fn token(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
        }
    }

    fn etag_suffix(self) -> &'static str {
        match self {
            Encoding::Br => "-br",
            Encoding::Gzip => "-gz",
        }
    }
}

/// Which codings the client takes (`q` > 0), `*` counting for those not named.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Accepts {
    br: bool,
    gzip: bool,
}

impl Accepts {
    fn allows(self, encoding: Encoding) -> bool {
        match encoding {
            Encoding::Br => self.br,
            Encoding::Gzip => self.gzip,
        }
    }
}

fn parse_accept_encoding(headers: &HeaderMap) -> Accepts {
    let (mut br, mut gzip, mut star) = (None, None, None);
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            if coding.is_empty() {
                continue;
            }
            let mut q = 1.0f32;
            for param in parts {
                if let Some((k, v)) = param.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("q") {
                        // An unreadable weight is taken as a refusal.
                        q = v.trim().parse().unwrap_or(0.0);
                    }
                }
            }
            let ok = Some(q > 0.0);
            if coding.eq_ignore_ascii_case("br") {
                br = ok;
            } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                gzip = ok;
            } else if coding == "*" {
                star = ok;
            }
        }
    }
    Accepts {
        br: br.or(star).unwrap_or(false),
        gzip: gzip.or(star).unwrap_or(false),
    }
}

/// One representation of the resource: the file itself or a precompressed sibling.
struct Chosen {
    file: OpenedFile,
    encoding: Option<Encoding>,
    etag: HeaderValue,
}

fn serve_file(
    root: BorrowedFd<'_>,
    key: Option<u64>,
    req: &StaticRequest<'_>,
    rel: &str,
    file: OpenedFile,
    sendfile: Option<&Sendfile>,
) -> Response<Body> {
    let headers = req.headers;
    let (content_type, compressible) = file
        .facts
        .content_type
        .get_or_init(|| content_type(rel))
        .clone();

    // Precompressed siblings: `<file>.br`, then `<file>.gz`, regular files beneath the
    // docroot like anything else. Probing stops once one is chosen (which already means
    // the response varies); otherwise both are looked at, for `Vary`.
    let accepts = parse_accept_encoding(headers);
    let mut vary = false;
    let mut sibling: Option<(Encoding, OpenedFile)> = None;
    for encoding in [Encoding::Br, Encoding::Gzip] {
        if sibling.is_some() || !compressible {
            break;
        }
        if let Lookup::File(f) = open_file(root, key, &format!("{rel}{}", encoding.extension())) {
            vary = true;
            if accepts.allows(encoding) {
                sibling = Some((encoding, f));
            }
        }
    }
    let chosen = match sibling {
        Some((encoding, f)) => Chosen {
            etag: f.etag_with(encoding.etag_suffix()),
            file: f,
            encoding: Some(encoding),
        },
        None => Chosen {
            etag: file.etag_with(""),
            file,
            encoding: None,
        },
    };

    let etag = chosen.etag.clone();
    let last_modified = chosen.file.facts.last_modified.clone();
    // The fields every answer about the representation carries.
    let mut fields = HeaderMap::with_capacity(10);
    fields.insert(header::ETAG, etag.clone());
    fields.insert(header::LAST_MODIFIED, last_modified.clone());
    if vary {
        fields.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }

    // Preconditions, in the order of RFC 9110 §13.2.2.
    match evaluate_preconditions(headers, &chosen) {
        Precondition::Proceed => {}
        Precondition::Failed => {
            let mut response = error_response(StatusCode::PRECONDITION_FAILED);
            if vary {
                response
                    .headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            }
            return response;
        }
        Precondition::NotModified => {
            return with_fields(StatusCode::NOT_MODIFIED, fields, empty());
        }
    }

    let size = chosen.file.len();
    // Ranges only on GET of the identity representation, and only when If-Range agrees.
    let range = if *req.method == Method::GET
        && chosen.encoding.is_none()
        && if_range_allows(headers, &chosen)
    {
        parse_range(headers, size)
    } else {
        RangeRequest::Whole
    };

    fields.insert(header::CONTENT_TYPE, content_type);
    fields.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    fields.insert(
        header::ACCEPT_RANGES,
        HeaderValue::from_static(if chosen.encoding.is_some() {
            "none"
        } else {
            "bytes"
        }),
    );
    if let Some(encoding) = chosen.encoding {
        fields.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(encoding.token()),
        );
    }

    let (status, start, len) = match range {
        RangeRequest::Whole => (StatusCode::OK, 0, size),
        RangeRequest::Part { first, last } => {
            fields.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {first}-{last}/{size}")).expect("digits"),
            );
            (StatusCode::PARTIAL_CONTENT, first, last - first + 1)
        }
        RangeRequest::Unsatisfiable => {
            let mut response = error_response(StatusCode::RANGE_NOT_SATISFIABLE);
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("digits"),
            );
            h.insert(header::ETAG, etag);
            h.insert(header::LAST_MODIFIED, last_modified);
            if vary {
                h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            }
            return response;
        }
    };
    fields.insert(header::CONTENT_LENGTH, HeaderValue::from(len));

    let body = if *req.method == Method::HEAD || len == 0 {
        empty()
    } else if len <= CHUNK as u64 {
        match read_kept(&chosen.file, start, len as usize) {
            Ok(bytes) => full(bytes),
            Err(e) => {
                tracing::warn!(path = rel, error = %e, "reading a static file failed");
                return error_response(StatusCode::INTERNAL_SERVER_ERROR);
            }
        }
    } else {
        stream_file(chosen.file.into_file(), start, len, sendfile.cloned())
    };
    with_fields(status, fields, body)
}

fn with_fields(status: StatusCode, fields: HeaderMap, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = fields;
    response
}

/// `len` bytes at `offset`: from the content kept for a small file, else read (and kept if
/// that was the whole of a small file).
fn read_kept(file: &OpenedFile, offset: u64, len: usize) -> io::Result<Bytes> {
    let whole = offset == 0 && len as u64 == file.len();
    if let Some(content) = file.facts.content.get() {
        return Ok(content.slice(offset as usize..offset as usize + len));
    }
    let bytes = read_small(file.file(), offset, len)?;
    if whole && file.len() <= KEPT_CONTENT && file.facts.content.set(bytes.clone()).is_ok() {
        // Past the budget, the thread's cache starts over (and its content goes with it).
        let over = KEPT_BYTES.with(|kept| {
            kept.set(kept.get() + len);
            kept.get() > KEPT_BUDGET
        });
        if over {
            FILES.with(|files| files.borrow_mut().clear());
            KEPT_BYTES.with(|kept| kept.set(0));
        }
    }
    Ok(bytes)
}

/// Reads `len` bytes at `offset` with `pread` (usually a single call).
fn read_small(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    // A short read means the file shrank since fstat: an error, not a truncated body
    // under the Content-Length promised.
    file.read_exact_at(&mut buf, offset)?;
    Ok(Bytes::from(buf))
}

/// Streams `len` bytes from `offset` of the opened file in chunks of [`STREAM_CHUNK`], each
/// read when the connection asks for the next one. If the file shrinks meanwhile, the
/// stream ends with an error (the connection is aborted rather than left waiting for
/// bytes); if it grows, only `len` bytes are sent.
fn stream_file(file: Arc<File>, offset: u64, len: u64, sendfile: Option<Sendfile>) -> Body {
    FileBody {
        file,
        offset,
        remaining: len,
        sendfile,
    }
    .boxed()
}

struct FileBody {
    file: Arc<File>,
    offset: u64,
    remaining: u64,
    /// Tokens for sendfile(2) instead of the bytes.
    sendfile: Option<Sendfile>,
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        use std::task::Poll;
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        if let Some(sendfile) = &self.sendfile {
            let want = self.remaining.min(super::sendfile::TOKEN_LEN as u64) as usize;
            let token = sendfile.token(self.file.clone(), self.offset, want);
            self.offset += token.len() as u64;
            self.remaining -= token.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(token))));
        }
        let want = self.remaining.min(STREAM_CHUNK as u64) as usize;
        let mut buf = BytesMut::zeroed(want);
        let read = loop {
            match self.file.read_at(&mut buf, self.offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = match read {
            Ok(0) => {
                self.remaining = 0;
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while being sent",
                ))));
            }
            Ok(n) => n,
            Err(e) => {
                self.remaining = 0;
                return Poll::Ready(Some(Err(e)));
            }
        };
        buf.truncate(n);
        self.offset += n as u64;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(buf.freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

// ---------------------------------------------------------------------------------------
// Conditional requests and ranges.

fn etag_str(chosen: &Chosen) -> &str {
    chosen.etag.to_str().unwrap_or_default()
}

enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

fn evaluate_preconditions(headers: &HeaderMap, chosen: &Chosen) -> Precondition {
    // 1. If-Match (strong comparison), else 2. If-Unmodified-Since.
    if headers.contains_key(header::IF_MATCH) {
        if !etag_list_matches(headers, header::IF_MATCH, etag_str(chosen), true) {
            return Precondition::Failed;
        }
    } else if let Some(since) = header_date(headers, header::IF_UNMODIFIED_SINCE) {
        if chosen.file.mtime_secs() > since {
            return Precondition::Failed;
        }
    }
    // 3. If-None-Match (weak comparison), else 4. If-Modified-Since. Only GET and HEAD
    // reach here, so a match is 304.
    if headers.contains_key(header::IF_NONE_MATCH) {
        if etag_list_matches(headers, header::IF_NONE_MATCH, etag_str(chosen), false) {
            return Precondition::NotModified;
        }
    } else if let Some(since) = header_date(headers, header::IF_MODIFIED_SINCE) {
        if chosen.file.mtime_secs() <= since {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// An HTTP date header as whole seconds since the epoch; `None` when absent or invalid
/// (an invalid date is ignored, RFC 9110).
fn header_date(headers: &HeaderMap, name: HeaderName) -> Option<i64> {
    let value = headers.get(name)?.to_str().ok()?;
    let time = httpdate::parse_http_date(value.trim()).ok()?;
    Some(match time.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    })
}

/// Whether any entity tag in the (possibly repeated) list header matches `etag` (ours,
/// strong, quoted); `*` matches any current representation. `strong` demands that the
/// listed tag not be weak; otherwise `W/` is ignored.
fn etag_list_matches(headers: &HeaderMap, name: HeaderName, etag: &str, strong: bool) -> bool {
    for value in headers.get_all(name) {
        let mut rest = value.as_bytes();
        loop {
            while let [b' ' | b'\t' | b',', tail @ ..] = rest {
                rest = tail;
            }
            if rest.is_empty() {
                break;
            }
            if rest[0] == b'*' {
                return true;
            }
            let weak = rest.starts_with(b"W/");
            if weak {
                rest = &rest[2..];
            }
            if rest.first() != Some(&b'"') {
                break; // malformed: ignore the rest of this line
            }
            let Some(close) = rest[1..].iter().position(|&b| b == b'"') else {
                break;
            };
            let tag = &rest[..close + 2];
            if tag == etag.as_bytes() && !(strong && weak) {
                return true;
            }
            rest = &rest[close + 2..];
        }
    }
    false
}

/// If-Range: absent, or an entity tag matching strongly, or a date equal to
/// Last-Modified. Otherwise the Range is ignored and the whole file sent.
fn if_range_allows(headers: &HeaderMap, chosen: &Chosen) -> bool {
    let Some(value) = headers.get(header::IF_RANGE) else {
        return true;
    };
    let bytes = value.as_bytes();
    if bytes.starts_with(b"\"") {
        return bytes == chosen.etag.as_bytes();
    }
    if bytes.starts_with(b"W/") {
        return false; // weak tags never match for If-Range
    }
    match header_date(headers, header::IF_RANGE) {
        Some(date) => date == chosen.file.mtime_secs(),
        None => false,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// No usable Range: send everything (also for multiple ranges and bad syntax).
    Whole,
    /// One satisfiable range, both ends inclusive and within the file.
    Part {
        first: u64,
        last: u64,
    },
    Unsatisfiable,
}

fn parse_range(headers: &HeaderMap, size: u64) -> RangeRequest {
    let mut values = headers.get_all(header::RANGE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return RangeRequest::Whole;
    };
    let Ok(value) = value.to_str() else {
        return RangeRequest::Whole;
    };
    parse_range_value(value, size)
}

fn parse_range_value(value: &str, size: u64) -> RangeRequest {
    let Some((unit, set)) = value.trim().split_once('=') else {
        return RangeRequest::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeRequest::Whole;
    }
    if set.contains(',') {
        // Several ranges: the whole file is a valid answer (RFC 9110 §14.2).
        return RangeRequest::Whole;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // bytes=-n: the last n bytes.
        let Some(n) = digits(last) else {
            return RangeRequest::Whole;
        };
        if n == 0 || size == 0 {
            return RangeRequest::Unsatisfiable;
        }
        return RangeRequest::Part {
            first: size.saturating_sub(n),
            last: size - 1,
        };
    }
    let Some(first) = digits(first) else {
        return RangeRequest::Whole;
    };
    let last = if last.is_empty() {
        None
    } else {
        match digits(last) {
            Some(l) if l >= first => Some(l),
            _ => return RangeRequest::Whole, // invalid: ignored
        }
    };
    if first >= size {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Part {
        first,
        last: last.map_or(size - 1, |l| l.min(size - 1)),
    }
}

/// A non-empty run of ASCII digits; too large a number saturates (and so is beyond any
/// file).
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;

    /// A temporary tree: `<base>/docroot` is served, `<base>/other/secret` is another
    /// tenant's file. Removed on drop.
    struct Tree {
        base: PathBuf,
    }

    const SECRET: &str = "TOP-SECRET-OF-ANOTHER-TENANT";

    impl Tree {
        fn new(name: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let base = std::env::temp_dir().join(format!(
                "lodge-static-{}-{}-{name}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&base);
            std::fs::create_dir_all(base.join("docroot")).unwrap();
            std::fs::create_dir_all(base.join("other")).unwrap();
            std::fs::write(base.join("other/secret"), SECRET).unwrap();
            Tree { base }
        }

        fn root(&self) -> PathBuf {
            self.base.join("docroot")
        }

        fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
            let path = self.root().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, content).unwrap();
            path
        }

        fn link(&self, rel: &str, target: impl AsRef<Path>) {
            let path = self.root().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            symlink(target, path).unwrap();
        }

        fn mkdir(&self, rel: &str) {
            std::fs::create_dir_all(self.root().join(rel)).unwrap();
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    struct Reply {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).map(|v| v.to_str().unwrap())
        }
    }

    async fn request(tree: &Tree, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        request_q(tree, method, path, None, headers).await
    }

    async fn request_q(
        tree: &Tree,
        method: Method,
        path: &str,
        query: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let req = StaticRequest {
            method: &method,
            path,
            query,
            headers: &map,
        };
        let response = serve(&tree.root(), &req, DEFAULT_INDEX).await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn get(tree: &Tree, path: &str) -> Reply {
        request(tree, Method::GET, path, &[]).await
    }

    fn expected_etag(path: &Path) -> String {
        let meta = std::fs::metadata(path).unwrap();
        format!(
            "\"{:x}-{:x}-{:x}\"",
            meta.mtime(),
            meta.mtime_nsec(),
            meta.size()
        )
    }

    #[tokio::test]
    async fn serves_a_file_with_type_length_and_validators() {
        let tree = Tree::new("basic");
        let path = tree.write("hello.txt", "hello, world\n");
        tree.write("app.js", "console.log(1)");
        tree.write("logo.png", [0x89, b'P', b'N', b'G']);
        tree.write("blob.unknownext", "x");

        let r = get(&tree, "/hello.txt").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], b"hello, world\n");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(r.header("content-length"), Some("13"));
        assert_eq!(r.header("etag"), Some(expected_etag(&path).as_str()));
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(
            r.header("last-modified"),
            Some(httpdate::fmt_http_date(modified).as_str())
        );
        assert_eq!(r.header("accept-ranges"), Some("bytes"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert!(r.header("cache-control").is_none());
        assert!(r.header("vary").is_none());

        let r = get(&tree, "/app.js").await;
        assert_eq!(
            r.header("content-type"),
            Some("text/javascript; charset=utf-8")
        );
        let r = get(&tree, "/logo.png").await;
        assert_eq!(r.header("content-type"), Some("image/png"));
        let r = get(&tree, "/blob.unknownext").await;
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));

        assert_eq!(
            get(&tree, "/missing.txt").await.status,
            StatusCode::NOT_FOUND
        );
        let r = get(&tree, "/hello.txt/").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(&r.body[..], b"Not Found\n");
    }

    #[tokio::test]
    async fn conditional_requests() {
        let tree = Tree::new("cond");
        let path = tree.write("a.css", "body{}");
        let etag = expected_etag(&path);
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();

        let r = request(&tree, Method::GET, "/a.css", &[("if-none-match", &etag)]).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED);
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));

        let list = format!("\"nope\", W/{etag}");
        let r = request(&tree, Method::GET, "/a.css", &[("if-none-match", &list)]).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_MODIFIED,
            "weak comparison in a list"
        );
        let r = request(&tree, Method::GET, "/a.css", &[("if-none-match", "*")]).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED);
        let r = request(
            &tree,
            Method::GET,
            "/a.css",
            &[("if-none-match", "\"other\"")],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);

        let date = httpdate::fmt_http_date(modified);
        let r = request(
            &tree,
            Method::GET,
            "/a.css",
            &[("if-modified-since", &date)],
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED);
        let later = httpdate::fmt_http_date(modified + Duration::from_secs(3600));
        let r = request(
            &tree,
            Method::HEAD,
            "/a.css",
            &[("if-modified-since", &later)],
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED);
        let earlier = httpdate::fmt_http_date(modified - Duration::from_secs(3600));
        let r = request(
            &tree,
            Method::GET,
            "/a.css",
            &[("if-modified-since", &earlier)],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], b"body{}");
        // If-None-Match takes precedence over If-Modified-Since.
        let r = request(
            &tree,
            Method::GET,
            "/a.css",
            &[("if-none-match", "\"other\""), ("if-modified-since", &date)],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        // Garbage dates are ignored.
        let r = request(
            &tree,
            Method::GET,
            "/a.css",
            &[("if-modified-since", "yesterday")],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);

        // If-Match / If-Unmodified-Since.
        let r = request(&tree, Method::GET, "/a.css", &[("if-match", "\"other\"")]).await;
        assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
        let r = request(&tree, Method::GET, "/a.css", &[("if-match", &etag)]).await;
        assert_eq!(r.status, StatusCode::OK);
        let r = request(
            &tree,
            Method::GET,
            "/a.css",
            &[("if-unmodified-since", &earlier)],
        )
        .await;
        assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    }

    #[tokio::test]
    async fn head_has_length_but_no_body_and_other_methods_are_refused() {
        let tree = Tree::new("head");
        tree.write("index.html", "<h1>hi</h1>");
        let r = request(&tree, Method::HEAD, "/index.html", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body.is_empty());
        assert_eq!(r.header("content-length"), Some("11"));
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        // Range is only for GET.
        let r = request(
            &tree,
            Method::HEAD,
            "/index.html",
            &[("range", "bytes=0-1")],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);

        for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
            let r = request(&tree, method, "/index.html", &[]).await;
            assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(r.header("allow"), Some("GET, HEAD"));
        }
    }

    #[tokio::test]
    async fn ranges() {
        let tree = Tree::new("range");
        let path = tree.write("digits.txt", "0123456789");
        let etag = expected_etag(&path);
        let r = |range: &'static str| {
            let tree = &tree;
            async move { request(tree, Method::GET, "/digits.txt", &[("range", range)]).await }
        };

        let x = r("bytes=2-5").await;
        assert_eq!(x.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(&x.body[..], b"2345");
        assert_eq!(x.header("content-range"), Some("bytes 2-5/10"));
        assert_eq!(x.header("content-length"), Some("4"));

        let x = r("bytes=7-").await;
        assert_eq!(
            (x.status, &x.body[..]),
            (StatusCode::PARTIAL_CONTENT, &b"789"[..])
        );
        assert_eq!(x.header("content-range"), Some("bytes 7-9/10"));

        let x = r("bytes=-3").await;
        assert_eq!(
            (x.status, &x.body[..]),
            (StatusCode::PARTIAL_CONTENT, &b"789"[..])
        );
        assert_eq!(x.header("content-range"), Some("bytes 7-9/10"));
        let x = r("bytes=-100").await;
        assert_eq!(&x.body[..], b"0123456789");
        assert_eq!(x.header("content-range"), Some("bytes 0-9/10"));
        let x = r("bytes=5-1000").await;
        assert_eq!(x.header("content-range"), Some("bytes 5-9/10"));

        for bad in [
            "bytes=10-",
            "bytes=10-20",
            "bytes=-0",
            "bytes=99999999999999999999999-",
        ] {
            let x = r(bad).await;
            assert_eq!(x.status, StatusCode::RANGE_NOT_SATISFIABLE, "{bad}");
            assert_eq!(x.header("content-range"), Some("bytes */10"), "{bad}");
        }
        // Multiple ranges, bad syntax, other units: the whole file.
        for whole in [
            "bytes=0-1,3-4",
            "bytes=5-2",
            "items=0-1",
            "bytes=a-b",
            "bytes",
        ] {
            let x = r(whole).await;
            assert_eq!(x.status, StatusCode::OK, "{whole}");
            assert_eq!(&x.body[..], b"0123456789");
        }

        // If-Range.
        let x = request(
            &tree,
            Method::GET,
            "/digits.txt",
            &[("range", "bytes=0-0"), ("if-range", &etag)],
        )
        .await;
        assert_eq!(
            (x.status, &x.body[..]),
            (StatusCode::PARTIAL_CONTENT, &b"0"[..])
        );
        let x = request(
            &tree,
            Method::GET,
            "/digits.txt",
            &[("range", "bytes=0-0"), ("if-range", "\"stale\"")],
        )
        .await;
        assert_eq!(x.status, StatusCode::OK);
        assert_eq!(&x.body[..], b"0123456789");
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let date = httpdate::fmt_http_date(modified);
        let x = request(
            &tree,
            Method::GET,
            "/digits.txt",
            &[("range", "bytes=1-1"), ("if-range", &date)],
        )
        .await;
        assert_eq!(
            (x.status, &x.body[..]),
            (StatusCode::PARTIAL_CONTENT, &b"1"[..])
        );
        let old = httpdate::fmt_http_date(modified - Duration::from_secs(60));
        let x = request(
            &tree,
            Method::GET,
            "/digits.txt",
            &[("range", "bytes=1-1"), ("if-range", &old)],
        )
        .await;
        assert_eq!(x.status, StatusCode::OK);

        // An empty file has no satisfiable range.
        tree.write("empty.txt", "");
        let x = request(&tree, Method::GET, "/empty.txt", &[("range", "bytes=0-")]).await;
        assert_eq!(x.status, StatusCode::RANGE_NOT_SATISFIABLE);
        let x = get(&tree, "/empty.txt").await;
        assert_eq!(
            (x.status, x.header("content-length")),
            (StatusCode::OK, Some("0"))
        );
    }

    #[tokio::test]
    async fn directories_index_and_redirect() {
        let tree = Tree::new("dirs");
        tree.write("index.html", "root index");
        tree.write("docs/index.htm", "docs index");
        tree.write("both/index.html", "html first");
        tree.write("both/index.htm", "htm second");
        tree.mkdir("empty");
        tree.mkdir("weird name");

        let r = get(&tree, "/").await;
        assert_eq!(
            (r.status, &r.body[..]),
            (StatusCode::OK, &b"root index"[..])
        );
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        let r = get(&tree, "/docs/").await;
        assert_eq!(
            (r.status, &r.body[..]),
            (StatusCode::OK, &b"docs index"[..])
        );
        let r = get(&tree, "/both/").await;
        assert_eq!(&r.body[..], b"html first");

        let r = request_q(&tree, Method::GET, "/docs", Some("a=1&b=%20"), &[]).await;
        assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(r.header("location"), Some("/docs/?a=1&b=%20"));
        let r = get(&tree, "/docs").await;
        assert_eq!(r.header("location"), Some("/docs/"));
        // `//docs` must not become a protocol-relative redirect to the host "docs".
        let r = get(&tree, "//docs").await;
        assert_eq!(r.header("location"), Some("/docs/"));
        let r = get(&tree, "/weird name").await;
        assert_eq!(r.header("location"), Some("/weird%20name/"));

        let r = get(&tree, "/empty/").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(&r.body[..], b"Forbidden\n");
        let r = get(&tree, "/empty").await;
        assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);

        assert!(matches!(
            open_beneath(&tree.root(), "/docs"),
            Lookup::Directory
        ));
    }

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

    fn assert_no_secret(r: &Reply, what: &str) {
        assert!(
            r.status == StatusCode::NOT_FOUND || r.status == StatusCode::FORBIDDEN,
            "{what}: {}",
            r.status
        );
        let body = String::from_utf8_lossy(&r.body);
        assert!(!body.contains(SECRET), "{what} leaked the secret");
        assert!(!body.contains("root:"), "{what} leaked /etc/passwd");
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
        assert!(matches!(
            open_beneath(&tree.root(), "/passwd"),
            Lookup::NotFound
        ));
        assert!(matches!(
            open_beneath(&tree.root(), "sub/deep_secret"),
            Lookup::NotFound
        ));
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
        assert!(matches!(
            open_beneath(&tree.root(), "../other/secret"),
            Lookup::Forbidden
        ));
        assert!(matches!(
            open_beneath(&tree.root(), "sub/file.txt"),
            Lookup::File(_)
        ));
        assert_eq!(get(&tree, "/sub//file.txt").await.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn precompressed_siblings_follow_accept_encoding() {
        let tree = Tree::new("precomp");
        tree.write("app.js", "plain javascript");
        tree.write("app.js.br", "BROTLI");
        tree.write("app.js.gz", "GZIP!");
        tree.write("only-gz.css", "plain css");
        tree.write("only-gz.css.gz", "GZCSS");
        tree.write("none.txt", "plain");

        let r = request(
            &tree,
            Method::GET,
            "/app.js",
            &[("accept-encoding", "gzip, deflate, br")],
        )
        .await;
        assert_eq!(&r.body[..], b"BROTLI");
        assert_eq!(r.header("content-encoding"), Some("br"));
        assert_eq!(
            r.header("content-type"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(r.header("content-length"), Some("6"));
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        let br_etag = r.header("etag").unwrap().to_owned();
        assert!(br_etag.ends_with("-br\""), "{br_etag}");

        let r = request(
            &tree,
            Method::GET,
            "/app.js",
            &[("accept-encoding", "gzip, br;q=0")],
        )
        .await;
        assert_eq!(&r.body[..], b"GZIP!");
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        let gz_etag = r.header("etag").unwrap().to_owned();
        assert!(gz_etag.ends_with("-gz\""));

        let r = request(&tree, Method::GET, "/app.js", &[]).await;
        assert_eq!(&r.body[..], b"plain javascript");
        assert!(r.header("content-encoding").is_none());
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        let plain_etag = r.header("etag").unwrap().to_owned();
        assert!(plain_etag != br_etag && plain_etag != gz_etag);

        let r = request(&tree, Method::GET, "/app.js", &[("accept-encoding", "*")]).await;
        assert_eq!(&r.body[..], b"BROTLI");
        let r = request(
            &tree,
            Method::GET,
            "/app.js",
            &[("accept-encoding", "identity")],
        )
        .await;
        assert_eq!(&r.body[..], b"plain javascript");

        // 304 on the variant's own tag, with Vary.
        let r = request(
            &tree,
            Method::GET,
            "/app.js",
            &[("accept-encoding", "br"), ("if-none-match", &br_etag)],
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED);
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        // ...but not on the plain tag.
        let r = request(
            &tree,
            Method::GET,
            "/app.js",
            &[("accept-encoding", "br"), ("if-none-match", &plain_etag)],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);

        // No ranges on a compressed variant: the whole of it.
        let r = request(
            &tree,
            Method::GET,
            "/app.js",
            &[("accept-encoding", "br"), ("range", "bytes=0-1")],
        )
        .await;
        assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"BROTLI"[..]));

        let r = request(
            &tree,
            Method::GET,
            "/only-gz.css",
            &[("accept-encoding", "br, gzip")],
        )
        .await;
        assert_eq!(&r.body[..], b"GZCSS");
        assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
        let r = request(
            &tree,
            Method::GET,
            "/only-gz.css",
            &[("accept-encoding", "br")],
        )
        .await;
        assert_eq!(&r.body[..], b"plain css");
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));

        let r = request(
            &tree,
            Method::GET,
            "/none.txt",
            &[("accept-encoding", "br, gzip")],
        )
        .await;
        assert_eq!(&r.body[..], b"plain");
        assert!(r.header("vary").is_none());

        // A sibling that escapes is ignored like any other escaping symlink.
        tree.write("leak.txt", "plain leak");
        tree.link("leak.txt.br", tree.base.join("other/secret"));
        let r = request(
            &tree,
            Method::GET,
            "/leak.txt",
            &[("accept-encoding", "br")],
        )
        .await;
        assert_eq!(&r.body[..], b"plain leak");
        assert!(r.header("vary").is_none());
    }

    #[tokio::test]
    async fn large_files_stream_with_the_right_bytes() {
        let tree = Tree::new("large");
        let content: Vec<u8> = (0..3 * 1024 * 1024u32)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        tree.write("big.bin", &content);

        let r = get(&tree, "/big.bin").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-length"), Some("3145728"));
        assert_eq!(r.body.len(), content.len());
        assert!(r.body[..] == content[..]);

        let r = request(
            &tree,
            Method::GET,
            "/big.bin",
            &[("range", "bytes=100000-2999999")],
        )
        .await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.header("content-length"), Some("2900000"));
        assert!(r.body[..] == content[100000..3000000]);

        let r = request(&tree, Method::GET, "/big.bin", &[("range", "bytes=-70000")]).await;
        assert!(r.body[..] == content[content.len() - 70000..]);

        let r = request(&tree, Method::HEAD, "/big.bin", &[]).await;
        assert!(r.body.is_empty());
        assert_eq!(r.header("content-length"), Some("3145728"));

        // The body comes in bounded chunks, not as one 3 MB buffer.
        let map = HeaderMap::new();
        let req = StaticRequest {
            method: &Method::GET,
            path: "/big.bin",
            query: None,
            headers: &map,
        };
        let mut body = serve(&tree.root(), &req, DEFAULT_INDEX).await.into_body();
        let (mut frames, mut total) = (0, 0);
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() <= STREAM_CHUNK);
            frames += 1;
            total += data.len();
        }
        assert_eq!(total, content.len());
        assert!(frames >= content.len() / STREAM_CHUNK, "{frames} frames");

        // Exactly one chunk and one byte more.
        tree.write("edge.bin", &content[..CHUNK + 1]);
        let r = get(&tree, "/edge.bin").await;
        assert!(r.body[..] == content[..CHUNK + 1]);
    }

    #[tokio::test]
    async fn kept_files_see_changes_in_place_within_the_recheck_and_replacements_within_a_second() {
        let tree = Tree::new("kept");
        let path = tree.write("page.txt", "first");
        let root = open_docroot(&tree.root()).unwrap();
        let map = HeaderMap::new();
        let get = || async {
            let req = StaticRequest {
                method: &Method::GET,
                path: "/page.txt",
                query: None,
                headers: &map,
            };
            let r = serve_cached(root.as_fd(), 7, &req, DEFAULT_INDEX, None);
            r.into_body().collect().await.unwrap().to_bytes()
        };
        assert_eq!(&get().await[..], b"first");
        // Rewritten in place (same inode): until the facts are checked again the old
        // content may still be served, whole; after FILE_RECHECK the new size and bytes.
        std::fs::write(&path, "second, longer").unwrap();
        let meanwhile = get().await;
        assert!(
            meanwhile[..] == b"first"[..] || meanwhile[..] == b"second, longer"[..],
            "neither the old nor the new content: {meanwhile:?}"
        );
        std::thread::sleep(FILE_RECHECK + Duration::from_millis(10));
        assert_eq!(&get().await[..], b"second, longer");
        // Replaced by a rename (a new inode): the kept one may serve for up to a second.
        let new = tree.write("page.txt.new", "third");
        std::fs::rename(&new, &path).unwrap();
        std::thread::sleep(FILE_REOPEN + Duration::from_millis(50));
        assert_eq!(&get().await[..], b"third");
        // Gone: not served once the kept file has expired.
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(FILE_REOPEN + Duration::from_millis(50));
        let req = StaticRequest {
            method: &Method::GET,
            path: "/page.txt",
            query: None,
            headers: &map,
        };
        assert_eq!(
            serve_cached(root.as_fd(), 7, &req, DEFAULT_INDEX, None).status(),
            StatusCode::NOT_FOUND
        );
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
        let response = serve_in(root.as_fd(), &req, DEFAULT_INDEX).await;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"A");

        assert!(open_docroot_in_home(&home, "sites/b.example").is_err());
        assert!(open_docroot_in_home(&home, "../other").is_err());
    }

    #[test]
    fn parsers() {
        assert_eq!(check_path("/"), Ok(vec![]));
        assert_eq!(check_path("/a//b/"), Ok(vec!["a", "b"]));
        assert_eq!(check_path("/.well-known/x"), Ok(vec![".well-known", "x"]));
        assert_eq!(check_path("/a/.well-known"), Err(Refused));
        assert_eq!(check_path("/a\u{7f}"), Err(Refused));

        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0.5, BR;q=0"),
        );
        assert_eq!(
            parse_accept_encoding(&h),
            Accepts {
                br: false,
                gzip: true
            }
        );
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("*;q=0.1, gzip;q=0"),
        );
        assert_eq!(
            parse_accept_encoding(&h),
            Accepts {
                br: true,
                gzip: false
            }
        );
        assert_eq!(parse_accept_encoding(&HeaderMap::new()), Accepts::default());

        assert_eq!(
            parse_range_value("bytes=0-0", 1),
            RangeRequest::Part { first: 0, last: 0 }
        );
        assert_eq!(
            parse_range_value(" bytes = 1 - 2 ", 5),
            RangeRequest::Part { first: 1, last: 2 }
        );
        assert_eq!(parse_range_value("bytes=-", 5), RangeRequest::Whole);
    }
}
