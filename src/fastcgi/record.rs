//! The FastCGI 1.0 wire format: record headers, streams cut into records and the fixed
//! bodies of `FCGI_BEGIN_REQUEST` and `FCGI_END_REQUEST`. Name-value pairs are in
//! [`super::params`], reading records from a stream in [`super::reader`].
//!
//! Encoding appends to a caller's buffer, so a whole request can go out in one write.
//!
//! Two limits are stricter than the spec, because php-fpm (PHP's `main/fastcgi.c`) is
//! stricter than the spec:
//! - it refuses a `FCGI_PARAMS` record whose content plus padding exceeds 65535 bytes, so we
//!   never put more than [`MAX_RECORD_CONTENT`] (65528, a multiple of 8) bytes in a record;
//! - it parses each `FCGI_PARAMS` record on its own, so a name-value pair must not span two
//!   records, and one pair can be at most [`MAX_RECORD_CONTENT`] bytes once encoded.

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

/// The id of every request: php-fpm does not multiplex (a worker serves one request per
/// connection), so any non-zero id would do.
pub const REQUEST_ID: u16 = 1;

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
    /// The body as a server sends it (tests play the server).
    #[cfg(test)]
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

/// The message of the protocol error for a connection that ended inside a response.
pub const EOF_MESSAGE: &str = "connection closed in the middle of a FastCGI response";

#[cfg(test)]
mod tests {
    use super::*;

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
    fn end_request_round_trip() {
        let e = EndRequest {
            app_status: 0x01020304,
            protocol_status: ProtocolStatus::Overloaded,
        };
        assert_eq!(e.encode(), [1, 2, 3, 4, 2, 0, 0, 0]);
        assert_eq!(EndRequest::decode(&e.encode()).unwrap(), e);
        assert!(EndRequest::decode(&[0; 5]).is_err());
    }
}
