//! Precompressed siblings: `<file>.br` and `<file>.gz`, served to clients that take them.

use hyper::header::{self, HeaderMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Br,
    Gzip,
}

impl Encoding {
    pub(super) fn extension(self) -> &'static str {
        match self {
            Encoding::Br => ".br",
            Encoding::Gzip => ".gz",
        }
    }

    pub(super) fn token(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
        }
    }

    pub(super) fn etag_suffix(self) -> &'static str {
        match self {
            Encoding::Br => "-br",
            Encoding::Gzip => "-gz",
        }
    }
}

/// Which codings the client takes (`q` > 0), `*` counting for those not named.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Accepts {
    br: bool,
    gzip: bool,
}

impl Accepts {
    pub(super) fn allows(self, encoding: Encoding) -> bool {
        match encoding {
            Encoding::Br => self.br,
            Encoding::Gzip => self.gzip,
        }
    }
}

pub(super) fn parse_accept_encoding(headers: &HeaderMap) -> Accepts {
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

#[cfg(test)]
mod tests {
    use super::super::testing::{request, Tree};
    use super::*;
    use hyper::header::HeaderValue;
    use hyper::{Method, StatusCode};

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

    #[test]
    fn accept_encoding_weights() {
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
    }
}
