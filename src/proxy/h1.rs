//! A lean HTTP/1.1 path for plain connections.
//!
//! Most requests a site gets are a GET or a HEAD without a body. Those are parsed here
//! (with `httparse`, the parser hyper uses), answered by the same handler as every other
//! request, and written here: the response head and a small body in one write, a file body
//! as sendfile(2) tokens (see [`super::sendfile`]), a body of unknown length chunked.
//! Pipelined requests are answered in order without another read.
//!
//! Anything else hands the connection, with the bytes already read, to hyper for the rest
//! of its life: a request with a body or with `Expect` or `Upgrade`, another method,
//! HTTP/1.0, HTTP/2 with prior knowledge, a head that does not parse or is too large. hyper
//! answers those as it always did (400, 431, ...), so the lean path never has to: it never
//! reads a body, and so never has to frame one.

use super::sendfile::is_token;
use super::Body;
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::Body as _;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice, Write as _};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

/// The largest request head; a longer one goes to hyper, which refuses it (431). The same
/// as hyper's `max_buf_size` in `super::run`.
pub const HEAD_LIMIT: usize = 64 * 1024;
/// How long a client may take to send a request head, counted from the end of the previous
/// response (slowloris; an idle kept-alive connection is closed after this too).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Header fields a request may carry here; one with more goes to hyper.
const MAX_HEADERS: usize = 32;
/// Body bytes that go out in the same write as the response head.
const COALESCE: usize = 16 * 1024;

/// The body of a request passed to the handler: none (the lean path), or hyper's.
pub enum ReqBody {
    Empty,
    Incoming(hyper::body::Incoming),
}

/// Serves requests on `io` until it closes, or until a request needs hyper: then the
/// connection comes back as a [`Rewind`] that replays what was read.
pub async fn serve<I, H, F>(io: I, handler: H) -> Option<Rewind<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
    H: Fn(Request<ReqBody>) -> F,
    F: Future<Output = Response<Body>>,
{
    serve_timed(io, handler, HEAD_TIMEOUT).await
}

/// [`serve`] with `head_timeout` instead of [`HEAD_TIMEOUT`].
async fn serve_timed<I, H, F>(mut io: I, handler: H, head_timeout: Duration) -> Option<Rewind<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
    H: Fn(Request<ReqBody>) -> F,
    F: Future<Output = Response<Body>>,
{
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(1024);
    let mut answered = 0u64;
    loop {
        let mut deadline = None;
        let (req, close) = loop {
            match parse(&mut buf) {
                Parsed::Request(req, close) => break (req, close),
                Parsed::Other => return Some(Rewind::new(buf.freeze(), io)),
                Parsed::Partial if buf.len() >= HEAD_LIMIT => {
                    return Some(Rewind::new(buf.freeze(), io))
                }
                Parsed::Partial => {
                    // Between requests a draining proxy closes the connection; a request
                    // that has begun is read and answered, and so is a new connection's
                    // first.
                    let idle = buf.is_empty() && answered > 0;
                    let read = read_head(&mut io, &mut buf, &mut deadline, head_timeout);
                    let read = if idle {
                        tokio::select! {
                            r = read => r,
                            _ = super::drain::idle_closed() => return None,
                        }
                    } else {
                        read.await
                    };
                    match read {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    }
                }
            }
        };
        let head_only = req.method() == Method::HEAD;
        let mut answer = pin!(handler(req));
        // A static file is answered at once. Otherwise the client is watched while the
        // answer is prepared: if it goes away, the handler is dropped (and a PHP script
        // with it).
        let response = match poll_once(answer.as_mut()).await {
            Some(r) => r,
            None => {
                tokio::select! {
                    biased;
                    r = answer => r,
                    _ = watch_for_close(&mut io, &mut buf) => return None,
                }
            }
        };
        match write_response(&mut io, &mut out, head_only, close, response).await {
            Ok(true) => answered += 1,
            Ok(false) | Err(_) => {
                let _ = io.shutdown().await;
                return None;
            }
        }
    }
}

/// A request head parsed from the front of the buffer, or why not. Only ever returned, never
/// kept: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// A GET or HEAD without a body, and whether the client asked to close after it.
    Request(Request<ReqBody>, bool),
    /// The head is not complete yet.
    Partial,
    /// Anything else: hyper's to answer.
    Other,
}

fn parse(buf: &mut BytesMut) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if req.version != Some(1) || len > HEAD_LIMIT {
        return Parsed::Other;
    }
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parsed::Other,
    };
    // Where each part lies in the buffer, so that the values can share its bytes.
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let target = span(req.path.unwrap_or("").as_bytes());
    let mut close = false;
    let mut spans = [((0, 0), (0, 0)); MAX_HEADERS];
    let count = req.headers.len();
    for (field, slot) in req.headers.iter().zip(spans.iter_mut()) {
        let name = field.name;
        // Framing and protocol changes are hyper's business.
        if ["content-length", "transfer-encoding", "upgrade", "expect"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            return Parsed::Other;
        }
        if name.eq_ignore_ascii_case("connection") {
            for token in field.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Other;
                }
            }
        }
        *slot = (span(name.as_bytes()), span(field.value));
    }
    let head = buf.split_to(len).freeze();
    match build(&head, method, target, &spans[..count]) {
        Some(req) => Parsed::Request(req, close),
        None => {
            // Put the head back in front of the rest: hyper answers it.
            let mut all = BytesMut::with_capacity(head.len() + buf.len());
            all.extend_from_slice(&head);
            all.extend_from_slice(buf);
            *buf = all;
            Parsed::Other
        }
    }
}

type Span = (usize, usize);

fn build(
    head: &Bytes,
    method: Method,
    target: Span,
    fields: &[(Span, Span)],
) -> Option<Request<ReqBody>> {
    let slice = |(at, len): Span| head.slice(at..at + len);
    let uri = Uri::from_maybe_shared(slice(target)).ok()?;
    let mut headers = HeaderMap::with_capacity(fields.len());
    for &(name, value) in fields {
        let name = HeaderName::from_bytes(&head[name.0..name.0 + name.1]).ok()?;
        let value = HeaderValue::from_maybe_shared(slice(value)).ok()?;
        headers.append(name, value);
    }
    let mut req = Request::new(ReqBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Some(req)
}

/// Polls `fut` once: its output if it is ready now.
async fn poll_once<F: Future + Unpin>(mut fut: F) -> Option<F::Output> {
    poll_fn(|cx| match Pin::new(&mut fut).poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// Reads more of a request head: at once if bytes are waiting, else before `deadline`
/// (set on the first wait for this head). `Ok(0)`: the client closed.
async fn read_head<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    deadline: &mut Option<Instant>,
    timeout: Duration,
) -> io::Result<usize> {
    reserve(buf);
    // Most often the bytes are there: no timer is needed for them.
    if let Some(read) = poll_once(poll_fn(|cx| {
        tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf)
    }))
    .await
    {
        return read;
    }
    let at = *deadline.get_or_insert_with(|| Instant::now() + timeout);
    match tokio::time::timeout_at(
        at,
        poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf)),
    )
    .await
    {
        Ok(read) => read,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Room for the next read. The heads already split off share the allocation; most often
/// the room left after them is enough.
fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(8192);
    }
}

/// Resolves when the client closes the connection (or it fails). What it sends meanwhile
/// (a pipelined request) is kept in `buf`, up to [`HEAD_LIMIT`].
async fn watch_for_close<I: AsyncRead + Unpin>(io: &mut I, buf: &mut BytesMut) {
    loop {
        if buf.len() >= HEAD_LIMIT {
            return std::future::pending().await;
        }
        reserve(buf);
        match poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// How the body is delimited on the wire.
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Writes the response; `Ok(true)` when the connection can carry another request.
async fn write_response<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    head_only: bool,
    close: bool,
    response: Response<Body>,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let no_length = status.is_informational() || status == StatusCode::NO_CONTENT;
    let bodiless = head_only || no_length || status == StatusCode::NOT_MODIFIED;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut declared = None;
    for (name, value) in &parts.headers {
        if name == header::TRANSFER_ENCODING || name == header::CONNECTION || name == header::DATE {
            continue;
        }
        if name == header::CONTENT_LENGTH {
            if no_length {
                continue;
            }
            match value.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
                Some(n) => declared = Some(n),
                None => continue,
            }
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    date(out);
    let framing = if bodiless {
        // HEAD: the length GET would get, when the handler left the body in.
        match body.size_hint().exact() {
            Some(n) if head_only && declared.is_none() && n > 0 && !no_length => {
                let _ = write!(out, "content-length: {n}\r\n");
            }
            _ => {}
        }
        Framing::None
    } else if let Some(n) = declared {
        Framing::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        let _ = write!(out, "content-length: {n}\r\n");
        Framing::Length(n)
    } else {
        field(out, b"transfer-encoding", b"chunked");
        Framing::Chunked
    };
    if close {
        field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");

    let mut sent = 0u64;
    // The last frame of a sized body, not yet copied into `out`: a body of one frame (a
    // small file, a short PHP answer) goes out with the head in one writev, uncopied.
    let mut pending: Option<Bytes> = None;
    if !matches!(framing, Framing::None) {
        loop {
            // Whatever is waiting goes out before waiting for more of the body.
            let frame = match poll_once(poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))).await {
                Some(frame) => frame,
                None => {
                    flush(io, out, pending.take()).await?;
                    poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                }
            };
            let data = match frame {
                None => break,
                Some(Err(e)) => {
                    flush(io, out, pending.take()).await?;
                    return Err(e);
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    _ => continue,
                },
            };
            sent += data.len() as u64;
            match framing {
                Framing::Length(n) if sent > n => {
                    return Err(io::Error::other("the body is longer than its length"))
                }
                Framing::Length(_) => {
                    if let Some(before) = pending.take() {
                        out.extend_from_slice(&before);
                    }
                    // A token must reach the stream as it is (it stands for a file part).
                    if !is_token(&data) && out.len() + data.len() <= COALESCE {
                        pending = Some(data);
                    } else {
                        flush(io, out, Some(data)).await?;
                    }
                }
                Framing::Chunked => {
                    if is_token(&data) {
                        return Err(io::Error::other("a file part in a chunked body"));
                    }
                    let _ = write!(out, "{:x}\r\n", data.len());
                    if out.len() + data.len() <= COALESCE {
                        out.extend_from_slice(&data);
                        out.extend_from_slice(b"\r\n");
                    } else {
                        let end = b"\r\n";
                        write_all(
                            io,
                            &mut [IoSlice::new(out), IoSlice::new(&data), IoSlice::new(end)],
                        )
                        .await?;
                        out.clear();
                    }
                }
                Framing::None => unreachable!("no body is read"),
            }
        }
    }
    if let Some(last) = pending.take() {
        flush(io, out, Some(last)).await?;
    }
    if matches!(framing, Framing::Chunked) {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    write_all(io, &mut [IoSlice::new(out)]).await?;
    out.clear();
    // A body shorter than its length leaves the client waiting: the connection must close.
    let whole = !matches!(framing, Framing::Length(n) if sent != n);
    Ok(whole && !close)
}

/// Writes `out` and then `data`, in one call where the stream takes both; `out` is left empty.
async fn flush<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    data: Option<Bytes>,
) -> io::Result<()> {
    match data {
        Some(data) => write_all(io, &mut [IoSlice::new(out), IoSlice::new(&data)]).await?,
        None => write_all(io, &mut [IoSlice::new(out)]).await?,
    }
    out.clear();
    Ok(())
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The `Date` field, formatted once a second per thread.
    static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

fn date(out: &mut Vec<u8>) {
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_empty() {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        field(out, b"date", d.1.as_bytes());
    });
}

/// Writes every byte of `bufs`, in as few calls as the stream allows.
async fn write_all<I: AsyncWrite + Unpin>(
    io: &mut I,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *io).poll_write_vectored(cx, bufs)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

/// A stream that first gives back bytes already read from it.
pub struct Rewind<I> {
    pre: Bytes,
    io: I,
}

impl<I> Rewind<I> {
    pub fn new(pre: Bytes, io: I) -> Self {
        Self { pre, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pre.is_empty() {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre[..n]);
            this.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// Answers `/stream` with a body of unknown length, `/short` with a body shorter than its
    /// Content-Length, anything else with `<method> <target>`.
    async fn answer(req: Request<ReqBody>) -> Response<Body> {
        let target = req.uri().to_string();
        match target.as_str() {
            "/stream" => {
                let chunks = ["first ", "second"].map(|c| {
                    Ok::<_, io::Error>(hyper::body::Frame::data(Bytes::from_static(c.as_bytes())))
                });
                let stream = futures_util::stream::iter(chunks);
                Response::new(http_body_util::StreamBody::new(stream).boxed())
            }
            "/short" => {
                let mut r = Response::new(super::super::full("abc"));
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
                r
            }
            _ => Response::new(super::super::full(format!("{} {target}", req.method()))),
        }
    }

    /// A server on a fresh port: the lean path, then hyper (echoing the body) for the rest.
    async fn server() -> std::net::SocketAddr {
        server_timed(HEAD_TIMEOUT).await
    }

    async fn server_timed(head_timeout: Duration) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let Some(rest) = serve_timed(stream, answer, head_timeout).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        |req: Request<hyper::body::Incoming>| async move {
                            let method = req.method().clone();
                            let body = req.into_body().collect().await?.to_bytes();
                            Ok::<_, hyper::Error>(Response::new(super::super::full(format!(
                                "hyper {method} {}",
                                String::from_utf8_lossy(&body)
                            ))))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .max_buf_size(HEAD_LIMIT)
                        .serve_connection(hyper_util::rt::TokioIo::new(rest), service)
                        .await;
                });
            }
        });
        addr
    }

    /// Sends `request` and reads until the server closes.
    async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
        assert!(
            matches!(read, Ok(Ok(_))),
            "the server closes: {read:?} after {:?} for {:.60}",
            String::from_utf8_lossy(&got),
            request
        );
        String::from_utf8(got).unwrap()
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_and_close_closes() {
        let addr = server().await;
        let got = exchange(
            addr,
            "GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\nHEAD /b HTTP/1.1\r\nHost: h\r\n\r\n\
             GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n",
        )
        .await;
        let responses: Vec<&str> = got.split("HTTP/1.1 ").skip(1).collect();
        assert_eq!(responses.len(), 3, "{got}");
        assert!(responses[0].starts_with("200 OK\r\n"), "{got}");
        assert!(responses[0].contains("content-length: 10\r\n"), "{got}");
        assert!(responses[0].contains("\r\ndate: "), "{got}");
        assert!(responses[0].ends_with("\r\n\r\nGET /a?x=1"), "{got}");
        // HEAD: the length of the body GET would get, and no body.
        assert!(responses[1].contains("content-length: 7\r\n"), "{got}");
        assert!(responses[1].ends_with("\r\n\r\n"), "{got}");
        assert!(responses[2].contains("connection: close\r\n"), "{got}");
        assert!(responses[2].ends_with("GET /c"), "{got}");
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_is_chunked() {
        let addr = server().await;
        let got = exchange(addr, "GET /stream HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(got.contains("transfer-encoding: chunked\r\n"), "{got}");
        assert!(
            got.ends_with("\r\n\r\n6\r\nfirst \r\n6\r\nsecond\r\n0\r\n\r\n"),
            "{got}"
        );
    }

    #[tokio::test]
    async fn requests_with_a_body_or_another_version_go_to_hyper_with_what_was_read() {
        let addr = server().await;
        // A GET first (lean), then a POST: hyper gets the POST's bytes, body included.
        let got = exchange(
            addr,
            "GET /one HTTP/1.1\r\n\r\nPOST /two HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
             GET /three HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(got.contains("GET /one"), "{got}");
        assert!(got.contains("hyper POST hello"), "{got}");
        assert!(
            got.ends_with("hyper GET "),
            "after hyper takes over, it keeps the connection: {got}"
        );
        // A GET that carries a body is not the lean path's either (no smuggling past it).
        let got = exchange(
            addr,
            "GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .await;
        assert!(got.ends_with("hyper GET abc"), "{got}");
        let got = exchange(addr, "GET /old HTTP/1.0\r\n\r\n").await;
        assert!(got.ends_with("hyper GET "), "{got}");
        // A malformed head is hyper's to refuse.
        let got = exchange(addr, "GET /a b c HTTP/1.1\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 400"), "{got}");
        // So is one too large.
        let huge = format!(
            "GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(2 * HEAD_LIMIT)
        );
        let got = exchange(addr, &huge).await;
        assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    }

    #[tokio::test]
    async fn a_body_shorter_than_its_length_closes_the_connection() {
        let addr = server().await;
        let got = exchange(
            addr,
            "GET /short HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n",
        )
        .await;
        assert!(got.ends_with("\r\n\r\nabc"), "{got}");
        assert!(!got.contains("/after"), "{got}");
    }

    #[tokio::test]
    async fn a_client_that_sends_half_a_head_is_cut_off() {
        let addr = server_timed(Duration::from_millis(300)).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n").await.unwrap();
        let mut got = Vec::new();
        let started = std::time::Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
        assert!(matches!(read, Ok(Ok(0))), "{read:?}");
        assert!(started.elapsed() >= Duration::from_millis(250));
        // A kept-alive connection that stays idle is closed the same way.
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
        assert!(matches!(read, Ok(Ok(n)) if n > 0), "{read:?}");
    }
}
