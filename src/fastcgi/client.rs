//! A connection to a FastCGI server that runs one request, with the id [`REQUEST_ID`]
//! (php-fpm does not multiplex). The proxy keeps connections alive in its own pool
//! (`proxy::php`); this client is for one-off requests: health checks and tests.

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

/// A connection to a FastCGI server for one request. Generic over the stream so tests can
/// use in-memory pipes; the real thing is a unix socket to php-fpm.
#[derive(Debug)]
pub(super) struct Connection<S = UnixStream> {
    stream: S,
    limits: Limits,
}

impl Connection<UnixStream> {
    /// Connects to a server's unix socket.
    pub(super) async fn connect(socket: &Path) -> Result<Self, FcgiError> {
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
    /// Wraps a connected stream; responses are bounded by [`Limits::default`].
    pub(super) fn new(stream: S) -> Self {
        Self {
            stream,
            limits: Limits::default(),
        }
    }

    #[cfg(test)]
    fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Runs the request to completion, asking the server to close the connection after it
    /// (no `FCGI_KEEP_CONN`). It has no timeout of its own: wrap it in one.
    pub(super) async fn run(mut self, req: &Request) -> Result<Response, FcgiError> {
        let mut params =
            Params::with_capacity(req.params.iter().map(|(n, v)| n.len() + v.len() + 8).sum());
        for (name, value) in &req.params {
            params.add(name, value);
        }
        // Stdin costs at most 16 bytes of header and padding per record.
        let records = req.stdin.len() / record::MAX_RECORD_CONTENT + 2;
        let mut out = Vec::with_capacity(4096 + req.stdin.len() + records * 16);
        record::write_begin_request(&mut out, REQUEST_ID, record::ROLE_RESPONDER, 0);
        params.write(&mut out)?;
        record::write_stream(&mut out, RecordType::Stdin, REQUEST_ID, &req.stdin);

        // Write and read at once: a script may answer before it reads its whole body, and
        // if both sides wait for the other to drain a full socket buffer, neither does.
        let (rd, mut wr) = tokio::io::split(&mut self.stream);
        let write = async move {
            wr.write_all(&out).await?;
            wr.flush().await
        };
        let read = read_response(Records::new(rd), self.limits);
        tokio::pin!(write, read);
        let mut writing = true;
        let raw = loop {
            tokio::select! {
                // A failed write shows in the read. A server may answer without reading all
                // of stdin (the spec allows it): the answer stands.
                _ = &mut write, if writing => writing = false,
                res = &mut read => break res?,
            }
        };
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
    mut r: Records<R>,
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
        let resp = Connection::new(client).run(&req).await.unwrap();
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
        let req = Request::get("/s.php", "/s.php", "");
        let result = Connection::new(client).run(&req).await;
        server.await.unwrap();
        assert!(matches!(result, Err(FcgiError::Closed)), "{result:?}");
    }

    /// Runs a request against a server that answers with `wire` after reading the request.
    async fn answer_with(wire: Vec<u8>, limits: Limits) -> Result<Response, FcgiError> {
        let (client, mut server) = duplex(1 << 16);
        tokio::spawn(async move {
            read_request(&mut server).await;
            let _ = server.write_all(&wire).await;
            // Then hang up, as php-fpm does.
        });
        Connection::new(client)
            .limits(limits)
            .run(&Request::get("/a", "/a", ""))
            .await
    }

    #[tokio::test]
    async fn refused_request() {
        let mut wire = Vec::new();
        end_request(&mut wire, ProtocolStatus::Overloaded);
        let res = answer_with(wire, Limits::default()).await;
        assert!(
            matches!(res, Err(FcgiError::Refused(ProtocolStatus::Overloaded))),
            "{res:?}"
        );
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
        let res = answer_with(wire, limits).await;
        assert!(
            matches!(res, Err(FcgiError::TooLarge { limit: 15 })),
            "{res:?}"
        );
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
        let res = answer_with(wire, limits).await;
        let resp = res.unwrap();
        assert_eq!(resp.stderr, b"0123456789ab");
        assert_eq!(resp.body, b"ok");
    }

    #[tokio::test]
    async fn hang_up_before_end_request() {
        let mut wire = Vec::new();
        write_record(&mut wire, RecordType::Stdout, 1, b"\r\npartial");
        let res = answer_with(wire, Limits::default()).await;
        assert!(matches!(res, Err(FcgiError::Protocol(_))), "{res:?}");
    }

    #[tokio::test]
    async fn record_for_another_request() {
        let mut wire = Vec::new();
        write_record(&mut wire, RecordType::Stdout, 2, b"\r\nx");
        let res = answer_with(wire, Limits::default()).await;
        assert!(matches!(res, Err(FcgiError::Protocol(_))), "{res:?}");
    }

    #[tokio::test]
    async fn unexpected_record_type() {
        let mut wire = Vec::new();
        write_record(&mut wire, RecordType::GetValuesResult, 1, &[]);
        let res = answer_with(wire, Limits::default()).await;
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
        let resp = Connection::new(client).run(&req).await.unwrap();
        assert_eq!(resp.status, 413);
    }
}
