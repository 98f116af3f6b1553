//! One FastCGI request on a leased connection, streamed both ways in bounded memory.
//!
//! Going in, a body held in memory goes out with the parameters; a spooled one is read
//! back and cut into `FCGI_STDIN` records by a task of its own, so a script that answers
//! before it has read its body is never deadlocked against us. Coming out, records are
//! parsed from one buffer: the CGI header block is gathered (bounded), and the body is
//! handed to the client as `FCGI_STDOUT` records arrive, read only as fast as the client
//! takes them. A short answer that is already whole when its headers are parsed is returned
//! as one buffer and its connection goes straight back to the pool.
//!
//! A client that goes away mid-answer drops the body: the request is aborted
//! (`FCGI_ABORT_REQUEST`, then the connection is closed, which php-fpm notices on its next
//! write and stops the script unless it asked to ignore user aborts). A connection goes back
//! to the pool only after a clean `FCGI_END_REQUEST` with the whole body sent.

use super::body::{RequestBody, Spooled};
use super::pool::{Lease, Pools};
use super::spool;
use super::PhpError;
use crate::fastcgi::record::{self, ProtocolStatus, RecordType, REQUEST_ID};
use crate::fastcgi::{Event, FcgiError, Params, Records, Response as CgiHead};
use crate::proxy::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

/// How long a script may take to send its headers.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);
/// The most response header bytes a script may send (nginx's default buffers hold 4-8 KiB;
/// this is generous but bounded).
pub const MAX_HEAD: usize = 64 * 1024;
/// How long a streamed answer may stay silent before the request is given up.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// An `FCGI_ABORT_REQUEST` record for [`REQUEST_ID`].
fn abort_record() -> Vec<u8> {
    let mut out = Vec::with_capacity(record::HEADER_LEN);
    record::write_record(&mut out, RecordType::AbortRequest, REQUEST_ID, &[]);
    out
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

/// Why pumping the request body stopped short.
#[derive(Debug)]
pub enum PumpError {
    /// Reading the spooled body back failed.
    Spool(io::Error),
    /// Writing to php-fpm failed.
    Upstream(io::Error),
}

/// How much of a spooled body is read back at once: four records.
const PUMP_READ: usize = 4 * record::MAX_RECORD_CONTENT;

/// Writes the spooled `body` as `FCGI_STDIN` records, then the empty record that ends the
/// stream; gives the write half back when the whole body went through.
pub fn spawn_pump(
    mut wr: OwnedWriteHalf,
    body: Spooled,
) -> JoinHandle<Result<OwnedWriteHalf, PumpError>> {
    tokio::spawn(async move {
        let mut at = 0u64;
        let mut buf = vec![0u8; PUMP_READ];
        let mut out = Vec::with_capacity(PUMP_READ + 4 * 16);
        while at < body.len {
            let want = PUMP_READ.min((body.len - at) as usize);
            let file = body.file.clone();
            let (back, read) = spool::io(move || {
                let read = file.read_exact_at(&mut buf[..want], at);
                Ok((buf, read))
            })
            .await
            .map_err(PumpError::Spool)?;
            buf = back;
            read.map_err(PumpError::Spool)?;
            out.clear();
            for chunk in buf[..want].chunks(record::MAX_RECORD_CONTENT) {
                record::write_record(&mut out, RecordType::Stdin, REQUEST_ID, chunk);
            }
            wr.write_all(&out).await.map_err(PumpError::Upstream)?;
            at += want as u64;
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
    records: Option<Records<ReadSide>>,
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

    fn records(&mut self) -> &mut Records<ReadSide> {
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
                        event = records.event() => event?,
                        joined = handle => {
                            self.pump = match joined {
                                Ok(Ok(wr)) => Pump::Done(wr),
                                Ok(Err(e)) => return Err(HeadError::Pump(e)),
                                Err(e) => return Err(HeadError::Pump(PumpError::Upstream(io::Error::other(e)))),
                            };
                            continue;
                        }
                    }
                }
                _ => self.records().event().await?,
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
            0 => crate::proxy::empty(),
            1 => crate::proxy::full(parts.pop_front().expect("one part")),
            _ => {
                let mut all = BytesMut::new();
                for p in parts {
                    all.extend_from_slice(&p);
                }
                crate::proxy::full(all.freeze())
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
        if !records.is_drained() {
            return;
        }
        let stream = match (
            records.into_inner(),
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
        match (self.records.as_ref().map(Records::get_ref), &self.pump) {
            (Some(ReadSide::Whole(s)), _) => {
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

impl Pools {
    /// Runs one request on the tenant's pool: `params` are the CGI variables, `body` the
    /// request body. A GET or HEAD (`retry`) that meets a kept connection php-fpm closed
    /// meanwhile is sent once more on a fresh one; anything else is not, since running a
    /// POST twice would be worse than a 502.
    pub(super) async fn run(
        &self,
        socket: &Path,
        max_children: u32,
        params: &Params,
        body: RequestBody,
        retry: bool,
    ) -> Result<Answer, PhpError> {
        let mut wire = Vec::with_capacity(2048);
        record::write_begin_request(
            &mut wire,
            REQUEST_ID,
            record::ROLE_RESPONDER,
            record::FLAG_KEEP_CONN,
        );
        params
            .write(&mut wire)
            .map_err(|e| PhpError::Bad(e.to_string()))?;
        // A body held in memory keeps its place in the budget until it is sent.
        let (streamed, _memory) = match body {
            RequestBody::Empty => {
                record::write_stream(&mut wire, RecordType::Stdin, REQUEST_ID, &[]);
                (None, None)
            }
            RequestBody::Whole(data, held) => {
                record::write_stream(&mut wire, RecordType::Stdin, REQUEST_ID, &data);
                (None, Some(held))
            }
            RequestBody::Spooled(body) => (Some(body), None),
        };
        let mut lease = self.lease(socket, max_children).await?;
        let mut retry = retry && streamed.is_none();
        let mut streamed = streamed;
        loop {
            let (mut stream, reused) = lease.connection().await?;
            let sent = stream.write_all(&wire).await;
            if let Err(e) = sent {
                if reused && retry {
                    retry = false;
                    continue;
                }
                return Err(PhpError::Down(e.to_string()));
            }
            let mut upstream = match streamed.take() {
                None => Upstream::new(ReadSide::Whole(stream), Pump::None, lease),
                Some(body) => {
                    let (rd, wr) = stream.into_split();
                    let pump = spawn_pump(wr, body);
                    Upstream::new(ReadSide::Half(rd), Pump::Running(pump), lease)
                }
            };
            let head =
                match tokio::time::timeout(RESPONSE_TIMEOUT, upstream.read_head(MAX_HEAD)).await {
                    Err(_) => return Err(PhpError::Timeout),
                    Ok(head) => head,
                };
            return match head {
                // An interim answer (or 101, switching protocols) is not one the client
                // can be given in place of the final one.
                Ok((head, _)) if head.status < 200 => Err(PhpError::Bad(format!(
                    "the script answered with status {}, not a final one",
                    head.status
                ))),
                Ok((head, rest)) => {
                    let body = upstream.into_body(rest).map_err(head_error)?;
                    Ok(Answer { head, body })
                }
                Err(HeadError::Fcgi(FcgiError::Closed)) if reused && retry => {
                    retry = false;
                    lease = upstream.take_lease().expect("not finished");
                    continue;
                }
                Err(e) => Err(head_error(e)),
            };
        }
    }
}

fn head_error(e: HeadError) -> PhpError {
    match e {
        HeadError::TooLarge => PhpError::Bad("response headers are too large".into()),
        HeadError::Fcgi(e) => PhpError::Bad(e.to_string()),
        HeadError::Pump(PumpError::Spool(e)) => PhpError::Spool(e.to_string()),
        HeadError::Pump(PumpError::Upstream(e)) => PhpError::Bad(e.to_string()),
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
    use crate::fastcgi::testing::{answer, read_request};
    use tokio::net::UnixListener;

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

    fn socket_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lodge-php-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    fn params() -> Params {
        let mut p = Params::default();
        p.add("REQUEST_METHOD", "GET");
        p
    }

    const HEAD: &[u8] = b"Content-Type: text/plain\r\n\r\n";

    #[tokio::test]
    async fn short_answers_reuse_the_connection_and_a_closed_one_is_replaced() {
        let path = socket_path("reuse.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // Serves two requests on its first connection and hangs up (pm.max_requests = 2),
        // then one more on a second connection.
        let server = tokio::spawn(async move {
            let mut accepted = 0;
            for per_conn in [2, 1] {
                let (s, _) = listener.accept().await.unwrap();
                accepted += 1;
                let (rd, mut wr) = s.into_split();
                let mut records = Records::new(rd);
                for _ in 0..per_conn {
                    let seen = read_request(&mut records).await.unwrap();
                    assert_eq!(seen.flags, record::FLAG_KEEP_CONN);
                    let mut wire = Vec::new();
                    answer(&mut wire, HEAD, format!("conn {accepted}").as_bytes());
                    wr.write_all(&wire).await.unwrap();
                }
            }
            accepted
        });
        let pools = Pools::default();
        let mut bodies = Vec::new();
        for _ in 0..3 {
            let a = pools
                .run(&path, 4, &params(), RequestBody::Empty, true)
                .await
                .unwrap();
            assert_eq!(a.head.status, 200);
            // A short answer comes back whole, its length known.
            assert!(hyper::body::Body::size_hint(&a.body).exact().is_some());
            bodies.push(a.body.collect().await.unwrap().to_bytes());
            // Let the server hang up before the next request looks at the kept connection.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(bodies, ["conn 1", "conn 1", "conn 2"]);
        assert_eq!(server.await.unwrap(), 2);
    }

    #[tokio::test]
    async fn long_answers_stream_and_a_dropped_body_aborts_the_request() {
        let path = socket_path("stream.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        let expected = big.clone();
        let server = tokio::spawn(async move {
            // First: a 3 MB answer, written while the client reads.
            let (s, _) = listener.accept().await.unwrap();
            let (rd, mut wr) = s.into_split();
            let mut records = Records::new(rd);
            read_request(&mut records).await.unwrap();
            let mut wire = Vec::new();
            answer(&mut wire, HEAD, &big);
            wr.write_all(&wire).await.unwrap();
            // Second: an endless answer; the client goes away.
            read_request(&mut records).await.unwrap();
            let mut wire = Vec::new();
            record::write_record(&mut wire, RecordType::Stdout, REQUEST_ID, b"\r\n");
            wr.write_all(&wire).await.unwrap();
            let chunk = vec![b'x'; 60_000];
            let mut wire = Vec::new();
            record::write_record(&mut wire, RecordType::Stdout, REQUEST_ID, &chunk);
            let mut sent = 0usize;
            while wr.write_all(&wire).await.is_ok() {
                sent += 1;
                if sent > 10_000 {
                    panic!("the client never let go");
                }
            }
            // What came after the request: the abort record, then the end of the stream.
            let abort = records.record().await.unwrap();
            let after = records.record().await;
            (abort.header, after.is_err())
        });
        let pools = Pools::default();
        let a = pools
            .run(&path, 1, &params(), RequestBody::Empty, true)
            .await
            .unwrap();
        let mut body = a.body;
        let (mut frames, mut got) = (0, Vec::new());
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() <= 64 * 1024 + 16, "{} bytes at once", data.len());
            frames += 1;
            got.extend_from_slice(&data);
        }
        assert!(got == expected, "the streamed body differs");
        assert!(frames > 10, "{frames} frames");

        let a = pools
            .run(&path, 1, &params(), RequestBody::Empty, true)
            .await
            .unwrap();
        let mut body = a.body;
        body.frame().await.unwrap().unwrap();
        drop(body);
        let (abort, closed) = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the connection is closed")
            .unwrap();
        assert_eq!(
            (abort.record_type, abort.request_id, abort.content_length),
            (RecordType::AbortRequest, REQUEST_ID, 0)
        );
        assert!(closed, "nothing after the abort but the end of the stream");
        // The permit came back: another request may start at once.
        assert_eq!(pools.free_permits(&path, 1), 1);
    }
}
