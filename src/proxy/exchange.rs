//! One FastCGI request on a leased connection, streamed both ways in bounded memory.
//!
//! Going in, the request body is cut into `FCGI_STDIN` records as the client sends it (a
//! task of its own pumps it, so a script that answers before it has read its body is never
//! deadlocked against us). Coming out, records are parsed from one buffer: the CGI header
//! block is gathered (bounded), and the body is handed to the client as `FCGI_STDOUT`
//! records arrive, read only as fast as the client takes them. A short answer that is
//! already whole when its headers are parsed is returned as one buffer and its connection
//! goes straight back to the pool.
//!
//! A client that goes away mid-answer drops the body: the request is aborted
//! (`FCGI_ABORT_REQUEST`, then the connection is closed, which php-fpm notices on its next
//! write and stops the script unless it asked to ignore user aborts). A connection goes back
//! to the pool only after a clean `FCGI_END_REQUEST` with the whole body sent.

use super::php::Lease;
use super::Body;
use crate::fastcgi::record::{self, EndRequest, Header, ProtocolStatus, RecordType};
use crate::fastcgi::{FcgiError, Response as CgiHead};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

/// The request id: php-fpm serves one request per connection.
pub const REQUEST_ID: u16 = 1;
/// How long a streamed answer may stay silent before the request is given up.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The most bytes read from php-fpm at once.
const READ_CHUNK: usize = 64 * 1024;

/// An `FCGI_ABORT_REQUEST` record for [`REQUEST_ID`].
fn abort_record() -> Vec<u8> {
    let mut out = Vec::with_capacity(record::HEADER_LEN);
    record::write_record(&mut out, RecordType::AbortRequest, REQUEST_ID, &[]);
    out
}

/// CGI variables, encoded as FastCGI name-value pairs as they are added (no map, no copy
/// per variable): the request's `FCGI_PARAMS` stream in the making.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<u8>,
    /// Where each pair ends, to cut the stream into records between pairs.
    ends: Vec<usize>,
}

impl Params {
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            pairs: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(48),
        }
    }

    fn length(&mut self, len: usize) {
        if len < 0x80 {
            self.pairs.push(len as u8);
        } else {
            // Header values are bounded far below 2 GiB by the HTTP parser.
            let len = len.min(record::MAX_NAME_VALUE_LEN) as u32;
            self.pairs
                .extend_from_slice(&(len | 0x8000_0000).to_be_bytes());
        }
    }

    pub fn add(&mut self, name: &str, value: impl AsRef<[u8]>) {
        let value = value.as_ref();
        self.length(name.len());
        self.length(value.len());
        self.pairs.extend_from_slice(name.as_bytes());
        self.pairs.extend_from_slice(value);
        self.ends.push(self.pairs.len());
    }

    /// `HTTP_<NAME>` for a request header (`-` becomes `_`, letters upper case) with its
    /// values joined by `sep`.
    pub fn add_header(&mut self, name: &str, values: &[&[u8]], sep: &[u8]) {
        let len = values.iter().map(|v| v.len()).sum::<usize>()
            + sep.len() * values.len().saturating_sub(1);
        self.length(5 + name.len());
        self.length(len);
        self.pairs.extend_from_slice(b"HTTP_");
        self.pairs.extend(name.bytes().map(|b| {
            if b == b'-' {
                b'_'
            } else {
                b.to_ascii_uppercase()
            }
        }));
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.pairs.extend_from_slice(sep);
            }
            self.pairs.extend_from_slice(v);
        }
        self.ends.push(self.pairs.len());
    }

    /// Appends the `FCGI_PARAMS` records (pairs never split across two, as php-fpm needs)
    /// and the empty one that ends the stream.
    pub fn write(&self, wire: &mut Vec<u8>) -> Result<(), FcgiError> {
        let mut start = 0;
        let mut last_end = 0;
        for &end in &self.ends {
            if end - last_end > record::MAX_RECORD_CONTENT {
                return Err(FcgiError::Protocol(format!(
                    "a parameter of {} bytes does not fit in a FastCGI record",
                    end - last_end
                )));
            }
            if end - start > record::MAX_RECORD_CONTENT {
                record::write_record(
                    wire,
                    RecordType::Params,
                    REQUEST_ID,
                    &self.pairs[start..last_end],
                );
                start = last_end;
            }
            last_end = end;
        }
        if start < self.pairs.len() {
            record::write_record(wire, RecordType::Params, REQUEST_ID, &self.pairs[start..]);
        }
        record::write_record(wire, RecordType::Params, REQUEST_ID, &[]);
        Ok(())
    }
}

/// What comes out of a response, record by record.
#[derive(Debug)]
pub enum Event {
    Stdout(Bytes),
    Stderr(Bytes),
    End(EndRequest),
}

/// The reading side: the whole stream while nothing else writes to it, or the read half
/// while a pump task writes the body.
pub enum ReadSide {
    Whole(UnixStream),
    Half(OwnedReadHalf),
}

impl AsyncRead for ReadSide {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadSide::Whole(s) => Pin::new(s).poll_read(cx, buf),
            ReadSide::Half(h) => Pin::new(h).poll_read(cx, buf),
        }
    }
}

/// Records parsed out of one growing buffer: a record's content is handed out as a slice of
/// it, without a copy.
pub struct Records {
    io: ReadSide,
    buf: BytesMut,
    /// Whether any byte came back (a kept connection closed before answering is not an error
    /// of the request: it can be retried).
    any: bool,
}

impl Records {
    pub fn new(io: ReadSide) -> Self {
        Self {
            io,
            // Most answers are small; a long one grows the buffer to READ_CHUNK.
            buf: BytesMut::with_capacity(8 * 1024),
            any: false,
        }
    }

    /// A whole record already in the buffer, if one is there, without reading.
    pub fn buffered_event(&mut self) -> Result<Option<Event>, FcgiError> {
        if self.buf.len() < record::HEADER_LEN {
            return Ok(None);
        }
        let header = Header::decode(self.buf[..record::HEADER_LEN].try_into().expect("8 bytes"))?;
        let content = usize::from(header.content_length);
        let whole = record::HEADER_LEN + content + usize::from(header.padding_length);
        if self.buf.len() < whole {
            self.buf.reserve(whole - self.buf.len());
            return Ok(None);
        }
        if header.request_id != REQUEST_ID {
            return Err(FcgiError::Protocol(format!(
                "{:?} record for request {}, expected {REQUEST_ID}",
                header.record_type, header.request_id
            )));
        }
        self.buf.advance(record::HEADER_LEN);
        let data = self.buf.split_to(content).freeze();
        self.buf.advance(usize::from(header.padding_length));
        Ok(Some(match header.record_type {
            RecordType::Stdout => Event::Stdout(data),
            RecordType::Stderr => Event::Stderr(data),
            RecordType::EndRequest => Event::End(EndRequest::decode(&data)?),
            other => {
                return Err(FcgiError::Protocol(format!(
                    "unexpected {other:?} record from the server"
                )))
            }
        }))
    }

    /// The next record, reading as needed.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<Event, FcgiError>> {
        loop {
            if let Some(event) = self.buffered_event()? {
                return Poll::Ready(Ok(event));
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(READ_CHUNK);
            }
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut self.io),
                cx,
                &mut self.buf
            ))?;
            if n == 0 {
                return Poll::Ready(Err(if self.any {
                    FcgiError::Protocol(record::EOF_MESSAGE.into())
                } else {
                    FcgiError::Closed
                }));
            }
            self.any = true;
        }
    }

    pub async fn next(&mut self) -> Result<Event, FcgiError> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    pub fn into_io(self) -> ReadSide {
        self.io
    }
}

/// Why pumping the request body stopped short.
#[derive(Debug)]
pub enum PumpError {
    /// The client sent more than the site accepts.
    TooLarge,
    /// The client's body failed (it went away, or broke HTTP framing).
    Client(String),
    /// Writing to php-fpm failed.
    Upstream(io::Error),
}

/// Writes `body` as `FCGI_STDIN` records, then the empty record that ends the stream; gives
/// the write half back when the whole body went through. Stops with [`PumpError::TooLarge`]
/// past `limit` bytes, sending `FCGI_ABORT_REQUEST` instead of the end of the stream.
pub fn spawn_pump(
    mut wr: OwnedWriteHalf,
    mut body: Incoming,
    limit: u64,
) -> JoinHandle<Result<OwnedWriteHalf, PumpError>> {
    tokio::spawn(async move {
        let mut sent = 0u64;
        let mut out = Vec::with_capacity(record::MAX_RECORD_CONTENT + 16);
        loop {
            let frame = match body.frame().await {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    let _ = wr.write_all(&abort_record()).await;
                    return Err(PumpError::Client(e.to_string()));
                }
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers carry nothing for CGI
            };
            sent += data.len() as u64;
            if sent > limit {
                let _ = wr.write_all(&abort_record()).await;
                return Err(PumpError::TooLarge);
            }
            for chunk in data.chunks(record::MAX_RECORD_CONTENT) {
                out.clear();
                record::write_record(&mut out, RecordType::Stdin, REQUEST_ID, chunk);
                wr.write_all(&out).await.map_err(PumpError::Upstream)?;
            }
        }
        out.clear();
        record::write_record(&mut out, RecordType::Stdin, REQUEST_ID, &[]);
        wr.write_all(&out).await.map_err(PumpError::Upstream)?;
        Ok(wr)
    })
}

/// The body pump of a request, if it has a body to stream.
pub enum Pump {
    None,
    Running(JoinHandle<Result<OwnedWriteHalf, PumpError>>),
    /// The whole body went through; the write half waits to be joined again.
    Done(OwnedWriteHalf),
}

/// A request in progress: the records coming back, the body pump, and the lease that holds
/// the connection's place in the pool. Dropped before its end (client gone, timeout), it
/// aborts the request and closes the connection.
pub struct Upstream {
    records: Option<Records>,
    pump: Pump,
    lease: Option<Lease>,
}

/// How the wait for the header block ended.
#[derive(Debug)]
pub enum HeadError {
    Fcgi(FcgiError),
    /// The header block grew past the limit.
    TooLarge,
    Pump(PumpError),
}

impl From<FcgiError> for HeadError {
    fn from(e: FcgiError) -> Self {
        HeadError::Fcgi(e)
    }
}

/// A parsed answer: its status and headers, and the body (whole, or streamed).
pub struct Answer {
    pub head: CgiHead,
    pub body: Body,
}

impl Upstream {
    pub fn new(io: ReadSide, pump: Pump, lease: Lease) -> Self {
        Self {
            records: Some(Records::new(io)),
            pump,
            lease: Some(lease),
        }
    }

    /// The lease back, e.g. to retry on a fresh connection; the request is dropped.
    pub fn take_lease(&mut self) -> Option<Lease> {
        self.lease.take()
    }

    fn records(&mut self) -> &mut Records {
        self.records.as_mut().expect("records until finished")
    }

    /// Reads until the CGI header block is whole (at most `max_head` bytes), watching the
    /// body pump so that a body refused half-way ends the wait. Returns the parsed block and
    /// the body bytes that came with it.
    pub async fn read_head(&mut self, max_head: usize) -> Result<(CgiHead, Vec<u8>), HeadError> {
        let mut head = Vec::new();
        loop {
            let event = match &mut self.pump {
                Pump::Running(handle) => {
                    let records = self.records.as_mut().expect("records until finished");
                    tokio::select! {
                        biased;
                        event = records.next() => event?,
                        joined = handle => {
                            self.pump = match joined {
                                Ok(Ok(wr)) => Pump::Done(wr),
                                Ok(Err(e)) => return Err(HeadError::Pump(e)),
                                Err(e) => return Err(HeadError::Pump(PumpError::Client(e.to_string()))),
                            };
                            continue;
                        }
                    }
                }
                _ => self.records().next().await?,
            };
            match event {
                Event::Stdout(data) => {
                    head.extend_from_slice(&data);
                    if let Some(end) = head_end(&head) {
                        let rest = head.split_off(end);
                        return Ok((CgiHead::from_cgi(head, Vec::new(), 0)?, rest));
                    }
                    if head.len() > max_head {
                        return Err(HeadError::TooLarge);
                    }
                }
                Event::Stderr(data) => self.log_stderr(&data),
                Event::End(end) => {
                    if end.protocol_status != ProtocolStatus::RequestComplete {
                        return Err(FcgiError::Refused(end.protocol_status).into());
                    }
                    // Output without a blank line: from_cgi says what is wrong with it.
                    let mut parsed = CgiHead::from_cgi(head, Vec::new(), end.app_status)?;
                    let rest = std::mem::take(&mut parsed.body);
                    self.finish();
                    return Ok((parsed, rest));
                }
            }
        }
    }

    /// With the header block parsed: the records already buffered may finish the answer
    /// (then it is one buffer and the connection is free at once); otherwise the body is
    /// streamed as the client reads it.
    pub fn into_body(mut self, rest: Vec<u8>) -> Result<Body, HeadError> {
        let mut parts: VecDeque<Bytes> = VecDeque::new();
        if !rest.is_empty() {
            parts.push_back(Bytes::from(rest));
        }
        while self.records.is_some() {
            match self.records().buffered_event()? {
                Some(Event::Stdout(data)) => {
                    if !data.is_empty() {
                        parts.push_back(data);
                    }
                }
                Some(Event::Stderr(data)) => self.log_stderr(&data),
                Some(Event::End(end)) => {
                    if end.protocol_status != ProtocolStatus::RequestComplete {
                        return Err(FcgiError::Refused(end.protocol_status).into());
                    }
                    self.finish();
                }
                None => {
                    let body = StreamedBody {
                        upstream: Some(self),
                        parts,
                        idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
                    };
                    return Ok(body.boxed());
                }
            }
        }
        Ok(match parts.len() {
            0 => super::empty(),
            1 => super::full(parts.pop_front().expect("one part")),
            _ => {
                let mut all = BytesMut::new();
                for p in parts {
                    all.extend_from_slice(&p);
                }
                super::full(all.freeze())
            }
        })
    }

    fn log_stderr(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&data[..data.len().min(2048)]);
        let socket = self
            .lease
            .as_ref()
            .map(|l| l.socket().display().to_string());
        tracing::debug!(socket, stderr = %text.trim_end(), "PHP wrote to stderr");
    }

    /// The request ended cleanly with `FCGI_END_REQUEST`: the connection goes back to the
    /// pool if nothing of it is left unread and the whole body went through.
    fn finish(&mut self) {
        let (Some(records), Some(lease)) = (self.records.take(), self.lease.take()) else {
            return;
        };
        if !records.buf.is_empty() {
            return;
        }
        let stream = match (
            records.into_io(),
            std::mem::replace(&mut self.pump, Pump::None),
        ) {
            (ReadSide::Whole(stream), _) => stream,
            (ReadSide::Half(rd), Pump::Done(wr)) => match rd.reunite(wr) {
                Ok(stream) => stream,
                Err(_) => return,
            },
            (ReadSide::Half(rd), Pump::Running(handle)) => {
                // php-fpm answered before the pump saw its last write complete; only a
                // pump that has finished by now leaves the connection usable. One still
                // running is stopped: the body it is still sending has no reader.
                use futures_util::FutureExt;
                if !handle.is_finished() {
                    handle.abort();
                    return;
                }
                match handle.now_or_never() {
                    Some(Ok(Ok(wr))) => match rd.reunite(wr) {
                        Ok(stream) => stream,
                        Err(_) => return,
                    },
                    _ => return,
                }
            }
            (ReadSide::Half(_), Pump::None) => return,
        };
        lease.give_back(stream);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if self.records.is_none() {
            return; // finished
        }
        // Not finished: the client went away or a timeout struck. Tell php-fpm (best
        // effort: a full socket buffer drops it), then close the connection.
        let abort = abort_record();
        match (&self.records, &self.pump) {
            (
                Some(Records {
                    io: ReadSide::Whole(s),
                    ..
                }),
                _,
            ) => {
                let _ = s.try_write(&abort);
            }
            (_, Pump::Done(wr)) => {
                let _ = wr.try_write(&abort);
            }
            _ => {}
        }
        if let Pump::Running(handle) = &self.pump {
            handle.abort();
        }
    }
}

/// The end of a CGI header block (`\r\n\r\n` or `\n\n`): the index of the body's first byte.
fn head_end(buf: &[u8]) -> Option<usize> {
    // No header at all: the block is the blank line alone.
    if buf.starts_with(b"\n") {
        return Some(1);
    }
    if buf.starts_with(b"\r\n") {
        return Some(2);
    }
    let mut i = 0;
    while let Some(nl) = buf[i..].iter().position(|&b| b == b'\n') {
        let at = i + nl + 1;
        match buf.get(at) {
            Some(b'\n') => return Some(at + 1),
            Some(b'\r') if buf.get(at + 1) == Some(&b'\n') => return Some(at + 2),
            _ => {}
        }
        i = at;
    }
    None
}

/// An answer's body read from php-fpm as the client takes it.
struct StreamedBody {
    upstream: Option<Upstream>,
    parts: VecDeque<Bytes>,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for StreamedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if let Some(part) = this.parts.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(part))));
        }
        let Some(upstream) = this.upstream.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match upstream.records().poll_event(cx) {
                Poll::Ready(Ok(Event::Stdout(data))) => {
                    if data.is_empty() {
                        continue;
                    }
                    this.idle
                        .as_mut()
                        .reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Ok(Event::Stderr(data))) => upstream.log_stderr(&data),
                Poll::Ready(Ok(Event::End(end))) => {
                    let clean = end.protocol_status == ProtocolStatus::RequestComplete;
                    let mut upstream = this.upstream.take().expect("checked");
                    if clean {
                        upstream.finish();
                    }
                    return Poll::Ready(if clean {
                        None
                    } else {
                        Some(Err(io::Error::other(format!(
                            "the FastCGI server ended the request: {}",
                            end.protocol_status
                        ))))
                    });
                }
                Poll::Ready(Err(e)) => {
                    this.upstream = None;
                    return Poll::Ready(Some(Err(io::Error::other(e.to_string()))));
                }
                Poll::Pending => {
                    if this.idle.as_mut().poll(cx).is_ready() {
                        this.upstream = None;
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the FastCGI server stayed silent too long",
                        ))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.upstream.is_none() && self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_encode_as_the_generic_writer_does_and_split_between_pairs() {
        let mut p = Params::default();
        p.add("SCRIPT_FILENAME", "/srv/a/index.php");
        p.add("LONG", vec![b'v'; 300]);
        p.add_header("accept-language", &[b"en", b"fr"], b", ");
        let mut ours = Vec::new();
        p.write(&mut ours).unwrap();
        let expected: Vec<record::Param> = vec![
            (b"SCRIPT_FILENAME".to_vec(), b"/srv/a/index.php".to_vec()),
            (b"LONG".to_vec(), vec![b'v'; 300]),
            (b"HTTP_ACCEPT_LANGUAGE".to_vec(), b"en, fr".to_vec()),
        ];
        let mut theirs = Vec::new();
        record::write_params(&mut theirs, REQUEST_ID, &expected).unwrap();
        assert_eq!(ours, theirs);

        // Many pairs: several records, each ending on a pair boundary.
        let mut p = Params::default();
        let mut pairs = Vec::new();
        for i in 0..40 {
            let value = vec![b'a' + (i % 26) as u8; 3000];
            p.add(&format!("V{i}"), &value);
            pairs.push((format!("V{i}").into_bytes(), value));
        }
        let mut ours = Vec::new();
        p.write(&mut ours).unwrap();
        let mut theirs = Vec::new();
        record::write_params(&mut theirs, REQUEST_ID, &pairs).unwrap();
        assert_eq!(ours, theirs);

        let mut p = Params::default();
        p.add("HUGE", vec![0u8; 70_000]);
        assert!(p.write(&mut Vec::new()).is_err());
    }

    #[test]
    fn the_end_of_a_header_block() {
        assert_eq!(head_end(b"\r\nbody"), Some(2));
        assert_eq!(head_end(b"\nbody"), Some(1));
        assert_eq!(head_end(b"A: b\r\n\r\nbody"), Some(8));
        assert_eq!(head_end(b"A: b\n\nbody"), Some(6));
        assert_eq!(head_end(b"A: b\r\nC: d\r\n"), None);
        assert_eq!(head_end(b"A: b\r\n\r"), None);
        assert_eq!(head_end(b""), None);
    }
}
