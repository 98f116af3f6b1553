//! The pages the proxy answers with itself: a small branded HTML page per refusal or
//! failure, and redirects.

use super::{empty, full, Body};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

/// A page saying `title` and `text` under the status code, never cached.
pub fn page(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>body{{font:16px system-ui,sans-serif;color:#1f2933;background:#f6f7f9;display:grid;place-items:center;min-height:90vh;margin:0}}\
         main{{text-align:center;padding:2rem}}h1{{font-size:1.4rem;margin:.2rem 0}}p{{color:#5f6b7a}}b{{font-size:3rem;color:#0f766e}}</style></head>\
         <body><main><b>{code}</b><h1>{title}</h1><p>{text}</p></main></body></html>",
        code = status.as_u16()
    );
    let mut r = Response::new(full(html));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `page` with a `Retry-After` of `seconds`.
pub fn retry_after(mut r: Response<Body>, seconds: &'static str) -> Response<Body> {
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
    r
}

/// The connection's SNI names another site than the request (421).
pub fn misdirected() -> Response<Body> {
    page(
        StatusCode::MISDIRECTED_REQUEST,
        "Misdirected request",
        "This connection was opened for another site.",
    )
}

pub fn no_site() -> Response<Body> {
    page(
        StatusCode::NOT_FOUND,
        "No site here",
        "No site is configured for this address.",
    )
}

pub fn suspended() -> Response<Body> {
    retry_after(
        page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Site suspended",
            "This site is suspended. Its owner can contact their provider.",
        ),
        "3600",
    )
}

/// A path with an escape that is malformed or decodes to a control byte.
pub fn bad_address() -> Response<Body> {
    page(
        StatusCode::BAD_REQUEST,
        "Bad request",
        "The address contains characters that are not allowed.",
    )
}

/// The site's docroot is not there (yet).
pub fn no_content() -> Response<Body> {
    page(
        StatusCode::NOT_FOUND,
        "Not found",
        "This site has no content yet.",
    )
}

pub fn not_found() -> Response<Body> {
    page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is nothing at this address.",
    )
}

pub fn forbidden() -> Response<Body> {
    page(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "This file is not served.",
    )
}

pub fn too_large() -> Response<Body> {
    page(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Too large",
        "The request is larger than this site accepts.",
    )
}

pub fn unreadable_body() -> Response<Body> {
    page(
        StatusCode::BAD_REQUEST,
        "Bad request",
        "The request body could not be read.",
    )
}

/// 301 to `location`.
pub fn redirect(location: &str) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}
