//! Conditional requests (RFC 9110 §13): `If-Match`, `If-Unmodified-Since`,
//! `If-None-Match`, `If-Modified-Since`, and `If-Range` for ranges.

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::time::UNIX_EPOCH;

pub(super) enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

/// What the preconditions of a GET or HEAD say about the representation with `etag` and
/// `Last-Modified` at `mtime_secs`.
pub(super) fn evaluate_preconditions(
    headers: &HeaderMap,
    etag: &HeaderValue,
    mtime_secs: i64,
) -> Precondition {
    let etag = etag.to_str().unwrap_or_default();
    // 1. If-Match (strong comparison), else 2. If-Unmodified-Since.
    if headers.contains_key(header::IF_MATCH) {
        if !etag_list_matches(headers, header::IF_MATCH, etag, true) {
            return Precondition::Failed;
        }
    } else if let Some(since) = header_date(headers, header::IF_UNMODIFIED_SINCE) {
        if mtime_secs > since {
            return Precondition::Failed;
        }
    }
    // 3. If-None-Match (weak comparison), else 4. If-Modified-Since. Only GET and HEAD
    // reach here, so a match is 304.
    if headers.contains_key(header::IF_NONE_MATCH) {
        if etag_list_matches(headers, header::IF_NONE_MATCH, etag, false) {
            return Precondition::NotModified;
        }
    } else if let Some(since) = header_date(headers, header::IF_MODIFIED_SINCE) {
        if mtime_secs <= since {
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
pub(super) fn if_range_allows(headers: &HeaderMap, etag: &HeaderValue, mtime_secs: i64) -> bool {
    let Some(value) = headers.get(header::IF_RANGE) else {
        return true;
    };
    let bytes = value.as_bytes();
    if bytes.starts_with(b"\"") {
        return bytes == etag.as_bytes();
    }
    if bytes.starts_with(b"W/") {
        return false; // weak tags never match for If-Range
    }
    match header_date(headers, header::IF_RANGE) {
        Some(date) => date == mtime_secs,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{expected_etag, request, Tree};
    use hyper::{Method, StatusCode};
    use std::time::Duration;

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
}
