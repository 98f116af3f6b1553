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
//! [`serve`] / [`open_beneath`].
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
//!
//! The parts: [`confine`] (the path rules and the confined open), [`kept`] (files kept open
//! per thread, with what their responses derive from them), [`file`] (a file's response),
//! [`encoding`] (precompressed siblings), [`conditional`] (preconditions), [`range`] (byte
//! ranges) and [`body`] (reading or streaming the bytes).

mod body;
mod conditional;
mod confine;
mod encoding;
mod file;
mod kept;
mod range;
#[cfg(test)]
mod testing;

pub use confine::{open_docroot_in_home, Lookup};

use super::sendfile::Sendfile;
use super::{full, Body};
use confine::{check_path, join, Refused};
use file::serve_file;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use kept::open_file;
use std::os::fd::BorrowedFd;

/// The names tried, in order, when a directory is requested, for callers with no
/// configuration of their own.
pub const DEFAULT_INDEX: &[&str] = &["index.html", "index.htm"];

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

/// Opens `rel` (a request path, with or without its leading `/`) beneath the docroot
/// `root`, known by `key` (see [`serve`]), applying every rule of this module: the
/// path checks, then a confined open that never follows a symlink out of the docroot. Does
/// not serve index files or care about trailing slashes.
pub fn open_beneath(root: BorrowedFd<'_>, key: u64, rel: &str) -> Lookup {
    match check_path(rel) {
        Ok(segments) => open_file(root, key, &join(&segments)),
        Err(Refused) => Lookup::Forbidden,
    }
}

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
pub(super) fn error_response(status: StatusCode) -> Response<Body> {
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

/// Serves `req` from the files beneath the docroot `root`; `index` names the files tried,
/// in order, for a directory (like [`DEFAULT_INDEX`]). Never fails: errors are small
/// plain-text responses (403 "Forbidden", 404 "Not Found", 405, 416, 500) that the caller
/// may replace with branded pages. `key` is unique to the docroot for the process's life:
/// files opened beneath it are used again for [`kept::FILE_REOPEN`].
/// With `sendfile`, files over [`body::CHUNK`] go out with sendfile(2) (see
/// [`super::sendfile`]; only for a plain HTTP/1 connection's current request).
pub fn serve(
    root: BorrowedFd<'_>,
    key: u64,
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

#[cfg(test)]
mod tests {
    use super::testing::{get, open, request, request_q, Tree};
    use super::*;

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

        assert!(matches!(open(&tree, "/docs"), Lookup::Directory));
    }
}
