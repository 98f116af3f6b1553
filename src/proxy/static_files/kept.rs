//! Files kept open per thread: a file served again within [`FILE_REOPEN`] is not opened
//! again, and while `fstat` (at most once per [`FILE_RECHECK`]) says it is unchanged, what
//! its responses derive from it (entity tag, date, type, and up to 16 KiB of content) is
//! not derived again.

use super::body::read_small;
use super::confine::{open_confined, Lookup};
use bytes::Bytes;
use hyper::header::HeaderValue;
use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    pub(super) fn new(file: Arc<File>, meta: &std::fs::Metadata) -> Self {
        Self {
            file,
            facts: Facts::new(Stamp::of(meta)),
        }
    }

    /// The open file (read-only). Reads through it see the file that was checked, whatever
    /// has happened to the path since.
    pub(super) fn file(&self) -> &File {
        &self.file
    }

    pub(super) fn into_file(self) -> Arc<File> {
        self.file
    }

    /// The size at the time it was opened.
    pub(super) fn len(&self) -> u64 {
        self.facts.stamp.len
    }

    /// The strong entity tag, quotes included: `"<mtime-secs>-<mtime-nsec>-<size>"` in
    /// lowercase hex, with `suffix` before the closing quote for a precompressed variant.
    pub(super) fn etag_with(&self, suffix: &str) -> HeaderValue {
        if suffix.is_empty() {
            return self.facts.etag.clone();
        }
        HeaderValue::from_str(&etag_of(&self.facts.stamp, suffix)).expect("hex and quotes")
    }

    /// `Content-Type` for the path the file was opened at, and whether it compresses:
    /// `of_path` works it out the first time.
    pub(super) fn content_type(
        &self,
        of_path: impl FnOnce() -> (HeaderValue, bool),
    ) -> (HeaderValue, bool) {
        self.facts.content_type.get_or_init(of_path).clone()
    }

    pub(super) fn last_modified(&self) -> &HeaderValue {
        &self.facts.last_modified
    }

    /// Whole seconds since the epoch, as `Last-Modified` and `If-Modified-Since` see it.
    pub(super) fn mtime_secs(&self) -> i64 {
        self.facts.stamp.mtime.0
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
pub(super) fn open_file(root: BorrowedFd<'_>, key: u64, rel: &str) -> Lookup {
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

/// `len` bytes at `offset`: from the content kept for a small file, else read (and kept if
/// that was the whole of a small file).
pub(super) fn read_kept(file: &OpenedFile, offset: u64, len: usize) -> io::Result<Bytes> {
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

#[cfg(test)]
mod tests {
    use super::super::testing::Tree;
    use super::super::{serve, StaticRequest, DEFAULT_INDEX};
    use super::*;
    use http_body_util::BodyExt;
    use hyper::header::HeaderMap;
    use hyper::{Method, StatusCode};
    use std::os::fd::AsFd;

    #[tokio::test]
    async fn kept_files_see_changes_in_place_within_the_recheck_and_replacements_within_a_second() {
        let tree = Tree::new("kept");
        let path = tree.write("page.txt", "first");
        let root = tree.open_root();
        let map = HeaderMap::new();
        let get = || async {
            let req = StaticRequest {
                method: &Method::GET,
                path: "/page.txt",
                query: None,
                headers: &map,
            };
            let r = serve(root.as_fd(), tree.key, &req, DEFAULT_INDEX, None);
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
            serve(root.as_fd(), tree.key, &req, DEFAULT_INDEX, None).status(),
            StatusCode::NOT_FOUND
        );
    }
}
