//! A file's response: its representation chosen (the file or a precompressed sibling), the
//! preconditions and the range applied, the fields every answer about it carries.

use super::body::{stream_file, CHUNK};
use super::conditional::{evaluate_preconditions, if_range_allows, Precondition};
use super::confine::Lookup;
use super::encoding::{parse_accept_encoding, Encoding};
use super::kept::{open_file, read_kept, OpenedFile};
use super::range::{parse_range, RangeRequest};
use super::{error_response, StaticRequest};
use crate::proxy::sendfile::Sendfile;
use crate::proxy::{empty, full, Body};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use std::os::fd::BorrowedFd;

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

/// One representation of the resource: the file itself or a precompressed sibling.
struct Chosen {
    file: OpenedFile,
    encoding: Option<Encoding>,
    etag: HeaderValue,
}

/// The response for `file`, opened at `rel` beneath `root` (known by `key`).
pub(super) fn serve_file(
    root: BorrowedFd<'_>,
    key: u64,
    req: &StaticRequest<'_>,
    rel: &str,
    file: OpenedFile,
    sendfile: Option<&Sendfile>,
) -> Response<Body> {
    let headers = req.headers;
    let (content_type, compressible) = file.content_type(|| content_type(rel));

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
    let last_modified = chosen.file.last_modified().clone();
    // The fields every answer about the representation carries.
    let mut fields = HeaderMap::with_capacity(10);
    fields.insert(header::ETAG, etag.clone());
    fields.insert(header::LAST_MODIFIED, last_modified.clone());
    if vary {
        fields.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }

    // Preconditions, in the order of RFC 9110 §13.2.2.
    match evaluate_preconditions(headers, &chosen.etag, chosen.file.mtime_secs()) {
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
        && if_range_allows(headers, &chosen.etag, chosen.file.mtime_secs())
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

#[cfg(test)]
mod tests {
    use super::super::testing::{expected_etag, get, Tree};
    use super::*;

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
}
