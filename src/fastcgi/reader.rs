//! Records read from a stream: parsed out of one growing buffer, each record's content
//! handed out as a slice of it, without a copy. A record split across socket reads (the
//! normal case for large responses) needs no special path: the buffer grows until it holds
//! the whole record.

use super::record::{EndRequest, Header, RecordType, EOF_MESSAGE, HEADER_LEN, REQUEST_ID};
use super::FcgiError;
use bytes::{Buf, Bytes, BytesMut};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncRead;

/// The most bytes read from the stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// One record: its header and content (padding dropped).
#[derive(Debug)]
pub struct Record {
    pub header: Header,
    pub content: Bytes,
}

/// What a response is made of, record by record.
#[derive(Debug)]
pub enum Event {
    Stdout(Bytes),
    Stderr(Bytes),
    End(EndRequest),
}

/// A reader of records.
pub struct Records<R> {
    io: R,
    buf: BytesMut,
    /// Whether any byte came (a kept connection closed before answering is not an error of
    /// the request: it can be retried).
    any: bool,
}

impl<R: AsyncRead + Unpin> Records<R> {
    pub fn new(io: R) -> Self {
        Self {
            io,
            // Most answers are small; a long one grows the buffer to READ_CHUNK.
            buf: BytesMut::with_capacity(8 * 1024),
            any: false,
        }
    }

    /// A whole record already in the buffer, if one is there, without reading.
    fn buffered(&mut self) -> Result<Option<Record>, FcgiError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = Header::decode(self.buf[..HEADER_LEN].try_into().expect("8 bytes"))?;
        let content = usize::from(header.content_length);
        let whole = HEADER_LEN + content + usize::from(header.padding_length);
        if self.buf.len() < whole {
            self.buf.reserve(whole - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let content = self.buf.split_to(content).freeze();
        self.buf.advance(usize::from(header.padding_length));
        Ok(Some(Record { header, content }))
    }

    /// The next record, reading as needed. The stream ending before it is
    /// [`FcgiError::Closed`] if nothing at all came, else a protocol error.
    fn poll_record(&mut self, cx: &mut Context<'_>) -> Poll<Result<Record, FcgiError>> {
        loop {
            if let Some(record) = self.buffered()? {
                return Poll::Ready(Ok(record));
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
                    FcgiError::Protocol(EOF_MESSAGE.into())
                } else {
                    FcgiError::Closed
                }));
            }
            self.any = true;
        }
    }

    /// The next record of any kind (tests read requests with it, as a server would).
    #[cfg(test)]
    pub(crate) async fn record(&mut self) -> Result<Record, FcgiError> {
        std::future::poll_fn(|cx| self.poll_record(cx)).await
    }

    /// A whole response record already in the buffer, if one is there, without reading.
    pub fn buffered_event(&mut self) -> Result<Option<Event>, FcgiError> {
        self.buffered()?.map(event).transpose()
    }

    /// The next response record, reading as needed.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<Event, FcgiError>> {
        Poll::Ready(event(ready!(self.poll_record(cx))?))
    }

    pub async fn event(&mut self) -> Result<Event, FcgiError> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Whether nothing was read past the last record handed out: a connection is only used
    /// again when the server sent nothing after its answer.
    pub fn is_drained(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn get_ref(&self) -> &R {
        &self.io
    }

    pub fn into_inner(self) -> R {
        self.io
    }
}

/// A record of the response to our request ([`REQUEST_ID`]), as an event.
fn event(record: Record) -> Result<Event, FcgiError> {
    let Record { header, content } = record;
    if header.request_id != REQUEST_ID {
        return Err(FcgiError::Protocol(format!(
            "{:?} record for request {}, expected {REQUEST_ID}",
            header.record_type, header.request_id
        )));
    }
    Ok(match header.record_type {
        RecordType::Stdout => Event::Stdout(content),
        RecordType::Stderr => Event::Stderr(content),
        RecordType::EndRequest => Event::End(EndRequest::decode(&content)?),
        other => {
            return Err(FcgiError::Protocol(format!(
                "unexpected {other:?} record from the server"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::record::{write_record, ProtocolStatus};
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;

    /// A reader that hands out at most `step` bytes per read, like a slow socket.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = self.step.min(self.data.len()).min(buf.remaining());
            buf.put_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn reads_records_with_padding_split_across_reads() {
        let mut wire = Vec::new();
        write_record(&mut wire, RecordType::Stdout, 1, b"abc");
        write_record(&mut wire, RecordType::Stderr, 1, b"0123456789");
        write_record(&mut wire, RecordType::Stdout, 1, &[]);
        for step in [1, 3, 7, 1000] {
            let mut r = Records::new(Trickle { data: &wire, step });
            let x = r.record().await.unwrap();
            assert_eq!(
                (
                    x.header.record_type,
                    x.header.padding_length,
                    &x.content[..]
                ),
                (RecordType::Stdout, 5, &b"abc"[..])
            );
            let x = r.record().await.unwrap();
            assert_eq!(
                (
                    x.header.record_type,
                    x.header.padding_length,
                    &x.content[..]
                ),
                (RecordType::Stderr, 6, &b"0123456789"[..])
            );
            let x = r.record().await.unwrap();
            assert_eq!(
                (x.header.record_type, x.content.len()),
                (RecordType::Stdout, 0)
            );
            assert!(r.is_drained(), "padding consumed");
            assert!(matches!(r.record().await, Err(FcgiError::Protocol(_))));
        }
    }

    #[tokio::test]
    async fn honours_padding_it_would_not_have_chosen() {
        // The spec lets a sender pad as it likes; 255 bytes is the most it can.
        let header = Header {
            record_type: RecordType::Stdout,
            request_id: 1,
            content_length: 2,
            padding_length: 255,
        };
        let mut wire = header.encode().to_vec();
        wire.extend_from_slice(b"ok");
        wire.extend_from_slice(&[0xaa; 255]);
        write_record(&mut wire, RecordType::Stdout, 1, b"next");
        let mut r = Records::new(&wire[..]);
        assert_eq!(&r.record().await.unwrap().content[..], b"ok");
        assert_eq!(&r.record().await.unwrap().content[..], b"next");
    }

    #[tokio::test]
    async fn the_end_of_the_stream_is_closed_before_any_byte_and_broken_after() {
        let mut r = Records::new(&[][..]);
        assert!(matches!(r.record().await, Err(FcgiError::Closed)));

        let mut wire = Vec::new();
        write_record(&mut wire, RecordType::Stdout, 1, b"abcdef");
        for cut in [3, 10] {
            let mut r = Records::new(&wire[..cut]);
            let err = r.record().await.unwrap_err();
            assert!(matches!(err, FcgiError::Protocol(_)), "{err}");
        }
    }

    #[tokio::test]
    async fn events_are_the_records_of_our_request() {
        let mut wire = Vec::new();
        write_record(&mut wire, RecordType::Stdout, 1, b"\r\nhi");
        write_record(&mut wire, RecordType::Stderr, 1, b"warn");
        let end = EndRequest {
            app_status: 7,
            protocol_status: ProtocolStatus::RequestComplete,
        };
        write_record(&mut wire, RecordType::EndRequest, 1, &end.encode());
        let mut r = Records::new(&wire[..]);
        assert!(matches!(r.event().await.unwrap(), Event::Stdout(b) if &b[..] == b"\r\nhi"));
        assert!(matches!(r.event().await.unwrap(), Event::Stderr(b) if &b[..] == b"warn"));
        assert!(matches!(r.event().await.unwrap(), Event::End(e) if e == end));

        for (record_type, id) in [(RecordType::Stdout, 2), (RecordType::GetValuesResult, 1)] {
            let mut wire = Vec::new();
            write_record(&mut wire, record_type, id, b"x");
            let mut r = Records::new(&wire[..]);
            let err = r.event().await.unwrap_err();
            assert!(matches!(err, FcgiError::Protocol(_)), "{err}");
        }
    }
}
