//! A connection to a FastCGI server that runs one request at a time.
//!
//! One request at a time because php-fpm does not multiplex (a worker serves one request
//! per connection); so every request uses [`REQUEST_ID`]. The connection remembers whether
//! it can carry another request, which is what a pool will need.

use std::io;
use std::path::Path;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use super::reader::{Event, Records};
use super::record::{self, ProtocolStatus, RecordType, REQUEST_ID};
use super::{FcgiError, Params, Request, Response};

/// How much of a response is held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A larger `FCGI_STDOUT` fails the request with [`FcgiError::TooLarge`].
    pub max_stdout: usize,
    /// `FCGI_STDERR` beyond this is read and dropped: diagnostics must not fail a request
    /// that otherwise succeeded (a script can log a warning per loop iteration).
    pub max_stderr: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_stdout: 16 << 20,
            max_stderr: 64 << 10,
        }
    }
}

/// A FastCGI connection. Generic over the stream so tests can use in-memory pipes;
/// the real thing is a unix socket to php-fpm.
#[derive(Debug)]
pub struct Connection<S = UnixStream> {
    stream: S,
    keep_conn: bool,
    limits: Limits,
    /// True while the stream sits between requests with the server listening for the next
    /// one. Cleared when a request starts and set again only when it ends cleanly with
    /// `FCGI_KEEP_CONN`, so a request abandoned half-way (timeout, error, future dropped)
    /// can never be followed by another on a stream in an unknown state.
    reusable: bool,
}

impl Connection<UnixStream> {
    /// Connects to a server's unix socket.
    pub async fn connect(socket: &Path) -> Result<Self, FcgiError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| FcgiError::Connect {
                path: socket.to_owned(),
                source,
            })?;
        Ok(Self::new(stream))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a connected stream. By default the server is asked to close the connection
    /// after each request and responses are bounded by [`Limits::default`].
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            keep_conn: false,
            limits: Limits::default(),
            reusable: true,
        }
    }

    /// Asks the server to keep the connection open after each request (`FCGI_KEEP_CONN`).
    /// With php-fpm this ties up a worker process for as long as the connection stays open.
    pub fn keep_conn(mut self, keep: bool) -> Self {
        self.keep_conn = keep;
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether another request may be sent: the last one ended cleanly and the server was
    /// asked to keep the connection. (It may still have closed it since, e.g. a worker
    /// that reached `pm.max_requests`; a pool must be ready to retry on a fresh one.)
    pub fn is_reusable(&self) -> bool {
        self.reusable
    }

    /// The stream, e.g. to see that the server closed it.
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// Runs one request to completion. It has no timeout of its own: wrap it in one.
    pub async fn run(&mut self, req: &Request) -> Result<Response, FcgiError> {
        if !self.reusable {
            return Err(FcgiError::Closed);
        }
        self.reusable = false;

        let flags = if self.keep_conn {
            record::FLAG_KEEP_CONN
        } else {
            0
        };
        let mut params =
            Params::with_capacity(req.params.iter().map(|(n, v)| n.len() + v.len() + 8).sum());
        for (name, value) in &req.params {
            params.add(name, value);
        }
        // Stdin costs at most 16 bytes of header and padding per record.
        let records = req.stdin.len() / record::MAX_RECORD_CONTENT + 2;
        let mut out = Vec::with_capacity(4096 + req.stdin.len() + records * 16);
        record::write_begin_request(&mut out, REQUEST_ID, record::ROLE_RESPONDER, flags);
        params.write(&mut out)?;
        record::write_stream(&mut out, RecordType::Stdin, REQUEST_ID, &req.stdin);

        // Write and read at once: a script may answer before it reads its whole body, and
        // if both sides wait for the other to drain a full socket buffer, neither does.
        let (rd, mut wr) = tokio::io::split(&mut self.stream);
        let mut records = Records::new(rd);
        let mut written: Option<io::Result<()>> = None;
        let raw = {
            let write = async move {
                wr.write_all(&out).await?;
                wr.flush().await
            };
            let read = read_response(&mut records, self.limits);
            tokio::pin!(write, read);
            loop {
                tokio::select! {
                    // Write first, so a write that finished by the time the response did is
                    // counted as finished.
                    biased;
                    res = &mut write, if written.is_none() => written = Some(res),
                    res = &mut read => break res?,
                }
            }
        };

        // A server may end a request without reading all of stdin (the spec allows it);
        // the response stands, but unread stdin would be taken for the next request, as
        // would anything the server sent after its answer.
        self.reusable = self.keep_conn && matches!(written, Some(Ok(()))) && records.is_drained();
        Response::from_cgi(raw.stdout, raw.stderr, raw.app_status)
    }
}

struct RawResponse {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    app_status: u32,
}

/// Reads records until `FCGI_END_REQUEST`, gathering stdout and stderr. A connection closed
/// before any record came is [`FcgiError::Closed`]: the server (a kept connection it had
/// finished with, at pm.max_requests) did not take the request.
async fn read_response<R: AsyncRead + Unpin>(
    r: &mut Records<R>,
    limits: Limits,
) -> Result<RawResponse, FcgiError> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    loop {
        match r.event().await? {
            Event::Stdout(data) => {
                // Memory stays bounded by the limit and one record.
                if stdout.len() + data.len() > limits.max_stdout {
                    return Err(FcgiError::TooLarge {
                        limit: limits.max_stdout,
                    });
                }
                stdout.extend_from_slice(&data);
            }
            Event::Stderr(data) => {
                let room = limits.max_stderr.saturating_sub(stderr.len());
                stderr.extend_from_slice(&data[..data.len().min(room)]);
            }
            Event::End(end) => {
                if end.protocol_status != ProtocolStatus::RequestComplete {
                    return Err(FcgiError::Refused(end.protocol_status));
                }
                return Ok(RawResponse {
                    stdout,
                    stderr,
                    app_status: end.app_status,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::record::{write_record, Header};
    use crate::fastcgi::testing::{self, Seen};
    use tokio::io::{duplex, AsyncReadExt, DuplexStream};

    /// Reads one request the way a FastCGI server would. The client sends nothing past its
    /// request before it has the answer, so nothing read ahead is lost.
    async fn read_request(s: &mut DuplexStream) -> Seen {
        testing::read_request(&mut Records::new(s)).await.unwrap()
    }

    fn end_request(buf: &mut Vec<u8>, status: ProtocolStatus) {
        testing::end_request(buf, 3, status);
    }

    /// Sends `wire` in small pieces so the client sees records split across reads.
    async fn send_in_pieces(s: &mut DuplexStream, wire: &[u8]) {
        for piece in wire.chunks(5) {
            s.write_all(piece).await.unwrap();
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn full_exchange() {
        let (client, mut server) = duplex(1 << 10);
        let server = tokio::spawn(async move {
            let seen = read_request(&mut server).await;
            let mut wire = Vec::new();
            write_record(
                &mut wire,
                RecordType::Stdout,
                1,
                b"Status: 201 Created\r\nX-A: b",
            );
            write_record(&mut wire, RecordType::Stderr, 1, b"warn");
            write_record(&mut wire, RecordType::Stdout, 1, b"\r\n\r\nhello ");
            for chunk in seen.stdin.chunks(30_000) {
                write_record(&mut wire, RecordType::Stdout, 1, chunk);
            }
            write_record(&mut wire, RecordType::Stdout, 1, &[]);
            write_record(&mut wire, RecordType::Stderr, 1, &[]);
            end_request(&mut wire, ProtocolStatus::RequestComplete);
            send_in_pieces(&mut server, &wire).await;
            seen
        });

        // A body bigger than the pipe's buffer: the server reads it while we write.
        let body: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let req = Request::post("/s.php", "/s.php", "application/octet-stream", body.clone());
        let mut conn = Connection::new(client);
        let resp = conn.run(&req).await.unwrap();
        let seen = server.await.unwrap();

        assert_eq!(seen.flags, 0);
        assert_eq!(seen.params, req.params);
        assert_eq!(seen.stdin, body);
        assert_eq!(resp.status, 201);
        assert_eq!(resp.header("x-a"), Some("b"));
        assert_eq!(&resp.body[..6], b"hello ");
        assert_eq!(&resp.body[6..], &body[..]);
        assert_eq!(resp.stderr, b"warn");
        assert_eq!(resp.app_status, 3);
        assert!(
            !conn.is_reusable(),
            "no FCGI_KEEP_CONN, so the server closes"
        );
        assert!(matches!(conn.run(&req).await, Err(FcgiError::Closed)));
    }

    #[tokio::test]
    async fn a_connection_closed_before_any_record_is_closed_not_broken() {
        // The server takes the bytes and hangs up without a record (a kept connection it
        // had finished with at pm.max_requests).
        let (client, mut server) = duplex(1 << 16);
        let server = tokio::spawn(async move {
            read_request(&mut server).await;
            drop(server);
        });
        let mut conn = Connection::new(client).keep_conn(true);
        let req = Request::get("/s.php", "/s.php", "");
        let result = conn.run(&req).await;
        server.await.unwrap();
        assert!(matches!(result, Err(FcgiError::Closed)), "{result:?}");
    }

    #[tokio::test]
    async fn keep_conn_allows_a_second_request() {
        let (client, mut server) = duplex(1 << 16);
        let server = tokio::spawn(async move {
            for i in 0..2 {
                let seen = read_request(&mut server).await;
                assert_eq!(seen.flags, record::FLAG_KEEP_CONN);
                let mut wire = Vec::new();
                write_record(
                    &mut wire,
                    RecordType::Stdout,
                    1,
                    format!("\r\n{i}").as_bytes(),
                );
                end_request(&mut wire, ProtocolStatus::RequestComplete);
                server.write_all(&wire).await.unwrap();
            }
        });
        let mut conn = Connection::new(client).keep_conn(true);
        let req = Request::get("/a", "/a", "");
        assert_eq!(conn.run(&req).await.unwrap().body, b"0");
        assert!(conn.is_reusable());
        assert_eq!(conn.run(&req).await.unwrap().body, b"1");
        server.await.unwrap();
    }

    /// Runs a request against a server that answers with `wire` after reading the request.
    async fn answer_with(wire: Vec<u8>, limits: Limits) -> (Result<Response, FcgiError>, bool) {
        let (client, mut server) = duplex(1 << 16);
        tokio::spawn(async move {
            read_request(&mut server).await;
            let _ = server.write_all(&wire).await;
            // Then hang up, as php-fpm does.
        });
        let mut conn = Connection::new(client).keep_conn(true).limits(limits);
        let res = conn.run(&Request::get("/a", "/a", "")).await;
        (res, conn.is_reusable())
    }

    #[tokio::test]
    async fn refused_request() {
        let mut wire = Vec::new();
        end_request(&mut wire, ProtocolStatus::Overloaded);
        let (res, reusable) = answer_with(wire, Limits::default()).await;
        assert!(
            matches!(res, Err(FcgiError::Refused(ProtocolStatus::Overloaded))),
            "{res:?}"
        );
        assert!(!reusable);
    }

    #[tokio::test]
    async fn stdout_over_the_limit() {
        let mut wire = Vec::new();
        write_record(&mut wire, RecordType::Stdout, 1, b"\r\n0123456789");
        write_record(&mut wire, RecordType::Stdout, 1, b"0123456789");
        end_request(&mut wire, ProtocolStatus::RequestComplete);
        let limits = Limits {
            max_stdout: 15,
            ..Limits::default()
        };
        let (res, reusable) = answer_with(wire, limits).await;
        assert!(
            matches!(res, Err(FcgiError::TooLarge { limit: 15 })),
            "{res:?}"
        );
        assert!(!reusable);
    }

    #[tokio::test]
    async fn stderr_over_the_limit_is_cut() {
        let mut wire = Vec::new();
        write_record(&mut wire, RecordType::Stderr, 1, b"0123456789");
        write_record(&mut wire, RecordType::Stderr, 1, b"abcdef");
        write_record(&mut wire, RecordType::Stdout, 1, b"\r\nok");
        end_request(&mut wire, ProtocolStatus::RequestComplete);
        let limits = Limits {
            max_stderr: 12,
            ..Limits::default()
        };
        let (res, reusable) = answer_with(wire, limits).await;
        let resp = res.unwrap();
        assert_eq!(resp.stderr, b"0123456789ab");
        assert_eq!(resp.body, b"ok");
        assert!(reusable);
    }

    #[tokio::test]
    async fn hang_up_before_end_request() {
        let mut wire = Vec::new();
        write_record(&mut wire, RecordType::Stdout, 1, b"\r\npartial");
        let (res, _) = answer_with(wire, Limits::default()).await;
        assert!(matches!(res, Err(FcgiError::Protocol(_))), "{res:?}");
    }

    #[tokio::test]
    async fn record_for_another_request() {
        let mut wire = Vec::new();
        write_record(&mut wire, RecordType::Stdout, 2, b"\r\nx");
        let (res, _) = answer_with(wire, Limits::default()).await;
        assert!(matches!(res, Err(FcgiError::Protocol(_))), "{res:?}");
    }

    #[tokio::test]
    async fn unexpected_record_type() {
        let mut wire = Vec::new();
        write_record(&mut wire, RecordType::GetValuesResult, 1, &[]);
        let (res, _) = answer_with(wire, Limits::default()).await;
        assert!(matches!(res, Err(FcgiError::Protocol(_))), "{res:?}");
    }

    #[tokio::test]
    async fn answer_before_reading_stdin() {
        // The server answers and hangs up without reading the (large) body.
        let (client, mut server) = duplex(1 << 10);
        tokio::spawn(async move {
            let mut h = [0u8; 8];
            server.read_exact(&mut h).await.unwrap();
            assert_eq!(
                Header::decode(&h).unwrap().record_type,
                RecordType::BeginRequest
            );
            let mut wire = Vec::new();
            write_record(&mut wire, RecordType::Stdout, 1, b"Status: 413\r\n\r\n");
            end_request(&mut wire, ProtocolStatus::RequestComplete);
            server.write_all(&wire).await.unwrap();
        });
        let req = Request::post("/a", "/a", "text/plain", vec![0; 1 << 20]);
        let mut conn = Connection::new(client).keep_conn(true);
        let resp = conn.run(&req).await.unwrap();
        assert_eq!(resp.status, 413);
        assert!(!conn.is_reusable(), "unread stdin poisons the connection");
    }

    #[tokio::test]
    async fn abandoned_request_poisons_the_connection() {
        let (client, _server) = duplex(1 << 16);
        let mut conn = Connection::new(client).keep_conn(true);
        let req = Request::get("/a", "/a", "");
        let res = tokio::time::timeout(std::time::Duration::from_millis(20), conn.run(&req)).await;
        assert!(res.is_err(), "the server never answers");
        assert!(!conn.is_reusable());
    }
}
