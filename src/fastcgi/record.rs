//! The FastCGI 1.0 wire format: record headers, streams cut into records, name-value pairs
//! and the fixed bodies of `FCGI_BEGIN_REQUEST` and `FCGI_END_REQUEST`.
//!
//! Encoding appends to a caller's buffer, so a whole request can go out in one write.
//! Decoding reads one record at a time from any async reader with `read_exact`, so a record
//! split across socket reads (the normal case for large responses) needs no special path.
//!
//! Two limits here are stricter than the spec, because php-fpm (PHP's `main/fastcgi.c`)
//! is stricter than the spec:
//! - it refuses a `FCGI_PARAMS` record whose content plus padding exceeds 65535 bytes, so we
//!   never put more than [`MAX_RECORD_CONTENT`] (65528, a multiple of 8) bytes in a record;
//! - it parses each `FCGI_PARAMS` record on its own, so a name-value pair must not span two
//!   records, and one pair can be at most [`MAX_RECORD_CONTENT`] bytes once encoded.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::FcgiError;

/// The only protocol version there is.
pub const VERSION_1: u8 = 1;
/// Every record starts with this many header bytes.
pub const HEADER_LEN: usize = 8;
/// The largest content a record header can describe.
pub const MAX_CONTENT_LEN: usize = 0xffff;
/// The most content we put in one record: the largest multiple of 8 that fits, so a full
/// record needs no padding and content plus padding never exceeds 65535 (see module docs).
pub const MAX_RECORD_CONTENT: usize = MAX_CONTENT_LEN - MAX_CONTENT_LEN % 8;

/// Role in `FCGI_BEGIN_REQUEST`: the application produces an HTTP response.
pub const ROLE_RESPONDER: u16 = 1;
/// Flag in `FCGI_BEGIN_REQUEST`: keep the connection open after `FCGI_END_REQUEST`.
pub const FLAG_KEEP_CONN: u8 = 1;

/// The kind of a record (`type` in the spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    BeginRequest,
    AbortRequest,
    EndRequest,
    Params,
    Stdin,
    Stdout,
    Stderr,
    Data,
    GetValues,
    GetValuesResult,
    UnknownType,
    /// A type this version of the spec does not define; kept so it can be reported.
    Other(u8),
}

impl RecordType {
    pub fn from_u8(b: u8) -> Self {
        match b {
            1 => Self::BeginRequest,
            2 => Self::AbortRequest,
            3 => Self::EndRequest,
            4 => Self::Params,
            5 => Self::Stdin,
            6 => Self::Stdout,
            7 => Self::Stderr,
            8 => Self::Data,
            9 => Self::GetValues,
            10 => Self::GetValuesResult,
            11 => Self::UnknownType,
            other => Self::Other(other),
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Self::BeginRequest => 1,
            Self::AbortRequest => 2,
            Self::EndRequest => 3,
            Self::Params => 4,
            Self::Stdin => 5,
            Self::Stdout => 6,
            Self::Stderr => 7,
            Self::Data => 8,
            Self::GetValues => 9,
            Self::GetValuesResult => 10,
            Self::UnknownType => 11,
            Self::Other(b) => b,
        }
    }
}

/// A record header. The version byte is implied: we only speak [`VERSION_1`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub record_type: RecordType,
    /// 0 for management records, otherwise the request the record belongs to.
    pub request_id: u16,
    pub content_length: u16,
    pub padding_length: u8,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let id = self.request_id.to_be_bytes();
        let len = self.content_length.to_be_bytes();
        [
            VERSION_1,
            self.record_type.as_u8(),
            id[0],
            id[1],
            len[0],
            len[1],
            self.padding_length,
            0,
        ]
    }

    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, FcgiError> {
        if b[0] != VERSION_1 {
            return Err(FcgiError::Protocol(format!(
                "unsupported FastCGI version {} in record header",
                b[0]
            )));
        }
        Ok(Self {
            record_type: RecordType::from_u8(b[1]),
            request_id: u16::from_be_bytes([b[2], b[3]]),
            content_length: u16::from_be_bytes([b[4], b[5]]),
            padding_length: b[6],
        })
    }
}

/// Padding that brings `content_len` to a multiple of 8, as the spec recommends.
pub fn padding_for(content_len: usize) -> u8 {
    ((8 - content_len % 8) % 8) as u8
}

/// Appends one record with `content` and its padding.
///
/// # Panics
/// If `content` is longer than [`MAX_RECORD_CONTENT`]: callers cut streams first
/// ([`write_stream`], [`write_params`]).
pub fn write_record(buf: &mut Vec<u8>, record_type: RecordType, request_id: u16, content: &[u8]) {
    assert!(
        content.len() <= MAX_RECORD_CONTENT,
        "FastCGI record content of {} bytes",
        content.len()
    );
    let padding = padding_for(content.len());
    let header = Header {
        record_type,
        request_id,
        content_length: content.len() as u16,
        padding_length: padding,
    };
    buf.extend_from_slice(&header.encode());
    buf.extend_from_slice(content);
    buf.resize(buf.len() + usize::from(padding), 0);
}

/// Appends a whole stream (`FCGI_STDIN`, `FCGI_DATA`, ...): `data` cut into records,
/// then the empty record that ends the stream.
pub fn write_stream(buf: &mut Vec<u8>, record_type: RecordType, request_id: u16, data: &[u8]) {
    for chunk in data.chunks(MAX_RECORD_CONTENT) {
        write_record(buf, record_type, request_id, chunk);
    }
    write_record(buf, record_type, request_id, &[]);
}

/// Appends `FCGI_BEGIN_REQUEST`.
pub fn write_begin_request(buf: &mut Vec<u8>, request_id: u16, role: u16, flags: u8) {
    let role = role.to_be_bytes();
    let body = [role[0], role[1], flags, 0, 0, 0, 0, 0];
    write_record(buf, RecordType::BeginRequest, request_id, &body);
}

/// Appends the whole `FCGI_PARAMS` stream, ending with its empty record. Pairs are packed
/// into records without ever splitting one across two (php-fpm cannot reassemble them).
pub fn write_params(buf: &mut Vec<u8>, request_id: u16, params: &[Param]) -> Result<(), FcgiError> {
    let mut record = Vec::new();
    let mut pair = Vec::new();
    for (name, value) in params {
        pair.clear();
        write_name_value(&mut pair, name, value)?;
        if pair.len() > MAX_RECORD_CONTENT {
            return Err(FcgiError::Protocol(format!(
                "parameter {} is too long for one FastCGI record ({} bytes encoded)",
                String::from_utf8_lossy(name),
                pair.len()
            )));
        }
        if record.len() + pair.len() > MAX_RECORD_CONTENT {
            write_record(buf, RecordType::Params, request_id, &record);
            record.clear();
        }
        record.extend_from_slice(&pair);
    }
    if !record.is_empty() {
        write_record(buf, RecordType::Params, request_id, &record);
    }
    write_record(buf, RecordType::Params, request_id, &[]);
    Ok(())
}

/// A name-value pair, e.g. a CGI variable. Bytes, not strings: CGI variables carry raw
/// HTTP bytes.
pub type Param = (Vec<u8>, Vec<u8>);

/// The longest name or value the 4-byte length form can carry (its top bit is the marker).
pub const MAX_NAME_VALUE_LEN: usize = 0x7fff_ffff;

/// Appends one name-value pair: each length in 1 byte when below 128, otherwise in 4 bytes
/// big-endian with the top bit set.
pub fn write_name_value(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) -> Result<(), FcgiError> {
    write_length(buf, name.len())?;
    write_length(buf, value.len())?;
    buf.extend_from_slice(name);
    buf.extend_from_slice(value);
    Ok(())
}

fn write_length(buf: &mut Vec<u8>, len: usize) -> Result<(), FcgiError> {
    if len < 0x80 {
        buf.push(len as u8);
    } else if len <= MAX_NAME_VALUE_LEN {
        buf.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
    } else {
        return Err(FcgiError::Protocol(format!(
            "name or value of {len} bytes cannot be encoded"
        )));
    }
    Ok(())
}

/// Decodes the content of a name-value stream (`FCGI_PARAMS`, `FCGI_GET_VALUES_RESULT`).
pub fn decode_name_values(mut data: &[u8]) -> Result<Vec<Param>, FcgiError> {
    let mut pairs = Vec::new();
    while !data.is_empty() {
        let name_len = read_length(&mut data)?;
        let value_len = read_length(&mut data)?;
        if data.len() < name_len.saturating_add(value_len) {
            return Err(FcgiError::Protocol("truncated name-value pair".into()));
        }
        let (name, rest) = data.split_at(name_len);
        let (value, rest) = rest.split_at(value_len);
        pairs.push((name.to_vec(), value.to_vec()));
        data = rest;
    }
    Ok(pairs)
}

fn read_length(data: &mut &[u8]) -> Result<usize, FcgiError> {
    let truncated = || FcgiError::Protocol("truncated name-value length".into());
    let first = *data.first().ok_or_else(truncated)?;
    if first < 0x80 {
        *data = &data[1..];
        return Ok(usize::from(first));
    }
    let bytes: [u8; 4] = data
        .get(..4)
        .ok_or_else(truncated)?
        .try_into()
        .expect("4 bytes");
    *data = &data[4..];
    Ok((u32::from_be_bytes(bytes) & 0x7fff_ffff) as usize)
}

/// `protocolStatus` of `FCGI_END_REQUEST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolStatus {
    RequestComplete,
    /// The server cannot run several requests on one connection.
    CantMpxConn,
    /// The server is out of some resource (php-fpm does not send this; it queues instead).
    Overloaded,
    /// The server does not implement the role we asked for.
    UnknownRole,
    Other(u8),
}

impl ProtocolStatus {
    pub fn from_u8(b: u8) -> Self {
        match b {
            0 => Self::RequestComplete,
            1 => Self::CantMpxConn,
            2 => Self::Overloaded,
            3 => Self::UnknownRole,
            other => Self::Other(other),
        }
    }
}

impl std::fmt::Display for ProtocolStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RequestComplete => f.write_str("FCGI_REQUEST_COMPLETE"),
            Self::CantMpxConn => f.write_str("FCGI_CANT_MPX_CONN"),
            Self::Overloaded => f.write_str("FCGI_OVERLOADED"),
            Self::UnknownRole => f.write_str("FCGI_UNKNOWN_ROLE"),
            Self::Other(b) => write!(f, "unknown protocol status {b}"),
        }
    }
}

/// The body of `FCGI_END_REQUEST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndRequest {
    /// The application's exit status (php-fpm: always 0 so far).
    pub app_status: u32,
    pub protocol_status: ProtocolStatus,
}

impl EndRequest {
    pub fn encode(&self) -> [u8; 8] {
        let a = self.app_status.to_be_bytes();
        let p = match self.protocol_status {
            ProtocolStatus::RequestComplete => 0,
            ProtocolStatus::CantMpxConn => 1,
            ProtocolStatus::Overloaded => 2,
            ProtocolStatus::UnknownRole => 3,
            ProtocolStatus::Other(b) => b,
        };
        [a[0], a[1], a[2], a[3], p, 0, 0, 0]
    }

    pub fn decode(content: &[u8]) -> Result<Self, FcgiError> {
        if content.len() < 8 {
            return Err(FcgiError::Protocol(format!(
                "FCGI_END_REQUEST body of {} bytes, expected 8",
                content.len()
            )));
        }
        Ok(Self {
            app_status: u32::from_be_bytes([content[0], content[1], content[2], content[3]]),
            protocol_status: ProtocolStatus::from_u8(content[4]),
        })
    }
}

/// Reads one record header. A peer that closes between or inside records is a protocol
/// error here: every caller is waiting for a record the peer still owes it.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<Header, FcgiError> {
    let mut b = [0u8; HEADER_LEN];
    r.read_exact(&mut b).await.map_err(eof_is_protocol)?;
    Header::decode(&b)
}

/// Reads the content of the record `header` introduced, appending it to `out`, and skips
/// its padding. Callers check their size limits against `header` before calling.
pub async fn read_content<R: AsyncRead + Unpin>(
    r: &mut R,
    header: &Header,
    out: &mut Vec<u8>,
) -> Result<(), FcgiError> {
    let start = out.len();
    out.resize(start + usize::from(header.content_length), 0);
    r.read_exact(&mut out[start..])
        .await
        .map_err(eof_is_protocol)?;
    let mut padding = [0u8; 255];
    r.read_exact(&mut padding[..usize::from(header.padding_length)])
        .await
        .map_err(eof_is_protocol)?;
    Ok(())
}

/// Reads a whole record: its header and content (at most 64 KiB, so always safe to buffer).
pub async fn read_record<R: AsyncRead + Unpin>(r: &mut R) -> Result<(Header, Vec<u8>), FcgiError> {
    let header = read_header(r).await?;
    let mut content = Vec::with_capacity(usize::from(header.content_length));
    read_content(r, &header, &mut content).await?;
    Ok((header, content))
}

/// The message of the protocol error for a connection that ended before a whole record.
pub const EOF_MESSAGE: &str = "connection closed in the middle of a FastCGI response";

fn eof_is_protocol(e: std::io::Error) -> FcgiError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        FcgiError::Protocol(EOF_MESSAGE.into())
    } else {
        FcgiError::Io(e)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;

    /// A reader that hands out at most `step` bytes per read, like a slow socket.
    pub(crate) struct Trickle<'a> {
        pub data: &'a [u8],
        pub step: usize,
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

    #[test]
    fn header_round_trip() {
        let h = Header {
            record_type: RecordType::Stdout,
            request_id: 0x0102,
            content_length: 0xfff8,
            padding_length: 7,
        };
        let b = h.encode();
        assert_eq!(b, [1, 6, 1, 2, 0xff, 0xf8, 7, 0]);
        assert_eq!(Header::decode(&b).unwrap(), h);
    }

    #[test]
    fn header_rejects_other_versions() {
        let err = Header::decode(&[2, 6, 0, 1, 0, 0, 0, 0]).unwrap_err();
        assert!(matches!(err, FcgiError::Protocol(_)), "{err}");
    }

    #[test]
    fn unknown_record_type_is_kept() {
        assert_eq!(RecordType::from_u8(42), RecordType::Other(42));
        assert_eq!(RecordType::Other(42).as_u8(), 42);
        for b in 1..=11 {
            assert_eq!(RecordType::from_u8(b).as_u8(), b);
        }
    }

    #[test]
    fn records_are_padded_to_eight() {
        let mut buf = Vec::new();
        write_record(&mut buf, RecordType::Stdin, 1, b"hello");
        assert_eq!(&buf[..8], &[1, 5, 0, 1, 0, 5, 3, 0]);
        assert_eq!(&buf[8..13], b"hello");
        assert_eq!(&buf[13..], &[0, 0, 0]);

        buf.clear();
        write_record(&mut buf, RecordType::Stdin, 1, b"12345678");
        assert_eq!(buf.len(), 16, "no padding for a multiple of 8");
    }

    #[test]
    fn streams_are_cut_and_terminated() {
        let data: Vec<u8> = (0..MAX_RECORD_CONTENT * 2 + 10).map(|i| i as u8).collect();
        let mut buf = Vec::new();
        write_stream(&mut buf, RecordType::Stdin, 7, &data);

        let mut rest = &buf[..];
        let mut lens = Vec::new();
        let mut joined = Vec::new();
        while !rest.is_empty() {
            let h = Header::decode(rest[..8].try_into().unwrap()).unwrap();
            assert_eq!(h.record_type, RecordType::Stdin);
            assert_eq!(h.request_id, 7);
            let len = usize::from(h.content_length);
            assert!(len + usize::from(h.padding_length) <= MAX_CONTENT_LEN);
            joined.extend_from_slice(&rest[8..8 + len]);
            lens.push(len);
            rest = &rest[8 + len + usize::from(h.padding_length)..];
        }
        assert_eq!(lens, [MAX_RECORD_CONTENT, MAX_RECORD_CONTENT, 10, 0]);
        assert_eq!(joined, data);
    }

    #[test]
    fn empty_stream_is_one_empty_record() {
        let mut buf = Vec::new();
        write_stream(&mut buf, RecordType::Stdin, 1, &[]);
        assert_eq!(buf, [1, 5, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn begin_request_body() {
        let mut buf = Vec::new();
        write_begin_request(&mut buf, 1, ROLE_RESPONDER, FLAG_KEEP_CONN);
        assert_eq!(buf, [1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn name_value_lengths() {
        let mut buf = Vec::new();
        write_name_value(&mut buf, b"A", &[b'x'; 127]).unwrap();
        assert_eq!(&buf[..2], &[1, 127], "below 128: one byte each");
        assert_eq!(buf.len(), 2 + 1 + 127);

        buf.clear();
        write_name_value(&mut buf, &[b'n'; 128], &[b'v'; 300]).unwrap();
        assert_eq!(
            &buf[..4],
            &[0x80, 0, 0, 128],
            "128 and up: four bytes, top bit set"
        );
        assert_eq!(&buf[4..8], &[0x80, 0, 0x01, 0x2c]);
        assert_eq!(buf.len(), 8 + 128 + 300);

        let pairs = decode_name_values(&buf).unwrap();
        assert_eq!(pairs, vec![(vec![b'n'; 128], vec![b'v'; 300])]);
    }

    #[test]
    fn name_values_round_trip() {
        let pairs = vec![
            (b"SCRIPT_FILENAME".to_vec(), b"/srv/index.php".to_vec()),
            (b"EMPTY".to_vec(), Vec::new()),
            (b"BIG".to_vec(), vec![0xff; 70_000]),
        ];
        let mut buf = Vec::new();
        for (n, v) in &pairs {
            write_name_value(&mut buf, n, v).unwrap();
        }
        assert_eq!(decode_name_values(&buf).unwrap(), pairs);
    }

    #[test]
    fn truncated_name_values_are_errors() {
        assert!(decode_name_values(&[5, 1, b'a']).is_err());
        assert!(decode_name_values(&[0x80, 0]).is_err());
        assert!(decode_name_values(&[1]).is_err());
        assert_eq!(decode_name_values(&[]).unwrap(), vec![]);
    }

    #[test]
    fn params_never_split_a_pair() {
        // Three pairs of ~30 KB: two fit in the first record, the third starts a new one.
        let value = vec![b'v'; 30_000];
        let params: Vec<Param> = ["A", "B", "C"]
            .iter()
            .map(|n| (n.as_bytes().to_vec(), value.clone()))
            .collect();
        let mut buf = Vec::new();
        write_params(&mut buf, 1, &params).unwrap();

        let mut rest = &buf[..];
        let mut decoded = Vec::new();
        let mut records = 0;
        while !rest.is_empty() {
            let h = Header::decode(rest[..8].try_into().unwrap()).unwrap();
            assert_eq!(h.record_type, RecordType::Params);
            let len = usize::from(h.content_length);
            // Each record decodes on its own, as php-fpm decodes it.
            decoded.extend(decode_name_values(&rest[8..8 + len]).unwrap());
            rest = &rest[8 + len + usize::from(h.padding_length)..];
            records += 1;
        }
        assert_eq!(records, 3, "two data records and the terminator");
        assert_eq!(decoded, params);
    }

    #[test]
    fn params_refuse_a_pair_too_big_for_php_fpm() {
        let params = vec![(b"HUGE".to_vec(), vec![0; MAX_RECORD_CONTENT])];
        let err = write_params(&mut Vec::new(), 1, &params).unwrap_err();
        assert!(err.to_string().contains("HUGE"), "{err}");
    }

    #[test]
    fn end_request_round_trip() {
        let e = EndRequest {
            app_status: 0x01020304,
            protocol_status: ProtocolStatus::Overloaded,
        };
        assert_eq!(e.encode(), [1, 2, 3, 4, 2, 0, 0, 0]);
        assert_eq!(EndRequest::decode(&e.encode()).unwrap(), e);
        assert!(EndRequest::decode(&[0; 5]).is_err());
    }

    #[tokio::test]
    async fn reads_records_with_padding_split_across_reads() {
        let mut wire = Vec::new();
        write_record(&mut wire, RecordType::Stdout, 1, b"abc");
        write_record(&mut wire, RecordType::Stderr, 1, b"0123456789");
        write_record(&mut wire, RecordType::Stdout, 1, &[]);
        for step in [1, 3, 7, 1000] {
            let mut r = Trickle { data: &wire, step };
            let (h, c) = read_record(&mut r).await.unwrap();
            assert_eq!(
                (h.record_type, h.padding_length, &c[..]),
                (RecordType::Stdout, 5, &b"abc"[..])
            );
            let (h, c) = read_record(&mut r).await.unwrap();
            assert_eq!(
                (h.record_type, h.padding_length, &c[..]),
                (RecordType::Stderr, 6, &b"0123456789"[..])
            );
            let (h, c) = read_record(&mut r).await.unwrap();
            assert_eq!((h.record_type, c.len()), (RecordType::Stdout, 0));
            assert!(r.data.is_empty(), "padding consumed");
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
        let mut r = &wire[..];
        assert_eq!(read_record(&mut r).await.unwrap().1, b"ok");
        assert_eq!(read_record(&mut r).await.unwrap().1, b"next");
    }

    #[tokio::test]
    async fn eof_inside_a_record_is_a_protocol_error() {
        let mut wire = Vec::new();
        write_record(&mut wire, RecordType::Stdout, 1, b"abcdef");
        let mut r = &wire[..10];
        let err = read_record(&mut r).await.unwrap_err();
        assert!(matches!(err, FcgiError::Protocol(_)), "{err}");
    }
}
