//! The request body on its way to php-fpm: small ones read first (they go out in the same
//! write as the parameters), large ones streamed, and ones of unknown length read whole,
//! since PHP needs `CONTENT_LENGTH`.

use crate::proxy::h1::ReqBody;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

/// Request bodies up to this size are read before php-fpm is asked, and go out with the
/// parameters in one write.
const SMALL_BODY: u64 = 64 * 1024;
/// A body of unknown length (chunked, or HTTP/2 without `content-length`) is read whole
/// first, since PHP needs `CONTENT_LENGTH`; up to this size, or the site's limit if lower.
const UNSIZED_BODY: u64 = 16 << 20;

/// A request's body, as it goes to php-fpm.
pub enum RequestBody {
    /// No body.
    Empty,
    /// A small body already read (it goes out in the same write as the parameters).
    Whole(Bytes),
    /// A body streamed from the client, at most `limit` bytes.
    Stream(Incoming, u64),
}

/// Why a body is not passed on.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Larger than the site accepts: 413.
    TooLarge,
    /// Of unknown length and larger than is read ahead: 411.
    LengthRequired,
    /// It broke off or broke HTTP framing: 400.
    Unreadable,
}

/// The body as it will go to php-fpm, and its length (`None`: there is none).
pub async fn read(body: ReqBody, limit: u64) -> Result<(RequestBody, Option<u64>), Refused> {
    use hyper::body::Body as _;
    let body: Incoming = match body {
        ReqBody::Empty => return Ok((RequestBody::Empty, None)),
        ReqBody::Incoming(body) => body,
    };
    if body.is_end_stream() {
        return Ok((RequestBody::Empty, None));
    }
    match body.size_hint().exact() {
        Some(n) if n > limit => Err(Refused::TooLarge),
        Some(n) if n > SMALL_BODY => Ok((RequestBody::Stream(body, limit), Some(n))),
        known => {
            let cap = if known.is_some() {
                SMALL_BODY
            } else {
                limit.min(UNSIZED_BODY)
            };
            match Limited::new(body, cap as usize).collect().await {
                Ok(b) => {
                    let b = b.to_bytes();
                    let n = b.len() as u64;
                    Ok((RequestBody::Whole(b), Some(n)))
                }
                Err(e)
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some() =>
                {
                    if cap < limit {
                        Err(Refused::LengthRequired)
                    } else {
                        Err(Refused::TooLarge)
                    }
                }
                Err(_) => Err(Refused::Unreadable),
            }
        }
    }
}
