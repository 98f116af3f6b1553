//! What the client gets from PHP: the script's CGI header block as an HTTP response, or a
//! page saying why there is none.

use super::body::Refused;
use super::exchange::Answer;
use super::PhpError;
use crate::domain::TenantName;
use crate::proxy::pages::{self, page};
use crate::proxy::Body;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Response, StatusCode};

/// The script's answer. Headers that are hop-by-hop, or that a header value cannot carry,
/// are dropped.
pub fn from_answer(method: &Method, answer: Answer) -> Response<Body> {
    let streamed = hyper::body::Body::size_hint(&answer.body).exact().is_none();
    let mut r = Response::new(if method == Method::HEAD {
        crate::proxy::empty()
    } else {
        answer.body
    });
    *r.status_mut() = StatusCode::from_u16(answer.head.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in answer.head.headers {
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            continue;
        };
        // A whole body gets its length from hyper; a streamed one keeps the script's, if it
        // is a number (a download's progress bar needs it).
        let keep_length =
            n == header::CONTENT_LENGTH && streamed && value.bytes().all(|b| b.is_ascii_digit());
        if keep_length
            || !matches!(
                n.as_str(),
                "connection" | "transfer-encoding" | "keep-alive" | "content-length"
            )
        {
            r.headers_mut().append(n, v);
        }
    }
    r
}

/// The page for a request PHP did not answer.
pub fn error_page(e: &PhpError, tenant: &TenantName) -> Response<Body> {
    match e {
        PhpError::Saturated => pages::retry_after(
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                "Every PHP worker of this site is busy. Try again in a moment.",
            ),
            "5",
        ),
        PhpError::Down(e) => {
            tracing::warn!(%tenant, error = %e, "PHP pool unreachable");
            page(
                StatusCode::BAD_GATEWAY,
                "PHP is not running",
                "This site's PHP service does not answer.",
            )
        }
        PhpError::Timeout => page(
            StatusCode::GATEWAY_TIMEOUT,
            "Timed out",
            "This site's PHP took too long to answer.",
        ),
        PhpError::Spool(e) => {
            tracing::warn!(%tenant, error = %e, "reading back a spooled request body");
            page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Server error",
                "The request could not be passed on to this site's PHP.",
            )
        }
        PhpError::Bad(e) => {
            tracing::warn!(%tenant, error = %e, "PHP answered badly");
            page(
                StatusCode::BAD_GATEWAY,
                "Bad answer",
                "This site's PHP gave an answer that could not be used.",
            )
        }
    }
}

/// The page for a request body that is not passed on.
pub fn refused_body(refused: Refused) -> Response<Body> {
    match refused {
        Refused::TooLarge => pages::too_large(),
        Refused::Busy => pages::retry_after(
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                "The server cannot take this request's body now. Try again in a moment.",
            ),
            "5",
        ),
        Refused::TimedOut => page(
            StatusCode::REQUEST_TIMEOUT,
            "Request timeout",
            "The request's body stopped arriving.",
        ),
        Refused::Unreadable => pages::unreadable_body(),
    }
}
