//! Byte ranges: one range per request (several are answered with the whole file, as RFC
//! 9110 allows).

use hyper::header::{self, HeaderMap};

#[derive(Debug, PartialEq, Eq)]
pub(super) enum RangeRequest {
    /// No usable Range: send everything (also for multiple ranges and bad syntax).
    Whole,
    /// One satisfiable range, both ends inclusive and within the file.
    Part {
        first: u64,
        last: u64,
    },
    Unsatisfiable,
}

pub(super) fn parse_range(headers: &HeaderMap, size: u64) -> RangeRequest {
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
    use super::super::testing::{expected_etag, get, request, Tree};
    use super::*;
    use hyper::{Method, StatusCode};
    use std::time::Duration;

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

    #[test]
    fn range_values() {
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
