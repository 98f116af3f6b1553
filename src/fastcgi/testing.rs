//! The server's side of the protocol, for tests that play php-fpm: a request read as php-fpm
//! reads it (each `FCGI_PARAMS` record decoded on its own), answers written as it writes them.

use super::cgi::Param;
use super::reader::Records;
use super::record::{
    self, EndRequest, Header, ProtocolStatus, RecordType, HEADER_LEN, MAX_RECORD_CONTENT,
    REQUEST_ID,
};
use super::FcgiError;
use tokio::io::AsyncRead;

/// What a server saw of one request.
#[derive(Debug)]
pub struct Seen {
    /// The flags of `FCGI_BEGIN_REQUEST`.
    pub flags: u8,
    pub params: Vec<Param>,
    pub stdin: Vec<u8>,
}

fn unexpected(what: &str, header: &Header) -> FcgiError {
    FcgiError::Protocol(format!(
        "{:?} record for request {} where {what} was due",
        header.record_type, header.request_id
    ))
}

/// Reads one request: `FCGI_BEGIN_REQUEST` for the responder role, the parameters, stdin.
pub async fn read_request<R: AsyncRead + Unpin>(r: &mut Records<R>) -> Result<Seen, FcgiError> {
    let begin = r.record().await?;
    if begin.header.record_type != RecordType::BeginRequest || begin.header.request_id != REQUEST_ID
    {
        return Err(unexpected("FCGI_BEGIN_REQUEST", &begin.header));
    }
    assert_eq!(&begin.content[..2], &record::ROLE_RESPONDER.to_be_bytes());
    let mut seen = Seen {
        flags: begin.content[2],
        params: Vec::new(),
        stdin: Vec::new(),
    };
    loop {
        let x = r.record().await?;
        if x.header.record_type != RecordType::Params {
            return Err(unexpected("FCGI_PARAMS", &x.header));
        }
        if x.content.is_empty() {
            break;
        }
        seen.params.extend(decode_name_values(&x.content)?);
    }
    loop {
        let x = r.record().await?;
        if x.header.record_type != RecordType::Stdin {
            return Err(unexpected("FCGI_STDIN", &x.header));
        }
        if x.content.is_empty() {
            return Ok(seen);
        }
        seen.stdin.extend_from_slice(&x.content);
    }
}

/// Decodes the pairs of one `FCGI_PARAMS` record.
pub fn decode_name_values(mut data: &[u8]) -> Result<Vec<Param>, FcgiError> {
    fn length(data: &mut &[u8]) -> Result<usize, FcgiError> {
        let truncated = || FcgiError::Protocol("truncated name-value length".into());
        let first = *data.first().ok_or_else(truncated)?;
        if first < 0x80 {
            *data = &data[1..];
            return Ok(usize::from(first));
        }
        let bytes: [u8; 4] = data.get(..4).ok_or_else(truncated)?.try_into().unwrap();
        *data = &data[4..];
        Ok((u32::from_be_bytes(bytes) & 0x7fff_ffff) as usize)
    }
    let mut pairs = Vec::new();
    while !data.is_empty() {
        let name_len = length(&mut data)?;
        let value_len = length(&mut data)?;
        if data.len() < name_len + value_len {
            return Err(FcgiError::Protocol("truncated name-value pair".into()));
        }
        let (name, rest) = data.split_at(name_len);
        let (value, rest) = rest.split_at(value_len);
        pairs.push((name.to_vec(), value.to_vec()));
        data = rest;
    }
    Ok(pairs)
}

/// The pairs of a whole `FCGI_PARAMS` stream (as [`super::Params::write`] writes it).
pub fn params_of(mut wire: &[u8]) -> Result<Vec<Param>, FcgiError> {
    let mut pairs = Vec::new();
    loop {
        let header = Header::decode(wire[..HEADER_LEN].try_into().unwrap())?;
        assert_eq!(header.record_type, RecordType::Params);
        let len = usize::from(header.content_length);
        if len == 0 {
            assert_eq!(wire.len(), HEADER_LEN, "bytes after the end of the stream");
            return Ok(pairs);
        }
        pairs.extend(decode_name_values(&wire[HEADER_LEN..HEADER_LEN + len])?);
        wire = &wire[HEADER_LEN + len + usize::from(header.padding_length)..];
    }
}

/// Appends `FCGI_END_REQUEST` with `status`.
pub fn end_request(wire: &mut Vec<u8>, app_status: u32, status: ProtocolStatus) {
    let end = EndRequest {
        app_status,
        protocol_status: status,
    };
    record::write_record(wire, RecordType::EndRequest, REQUEST_ID, &end.encode());
}

/// Appends a whole answer: `head` (the CGI header block, blank line included) and `body` on
/// stdout, the end of stdout, and a clean `FCGI_END_REQUEST`.
pub fn answer(wire: &mut Vec<u8>, head: &[u8], body: &[u8]) {
    record::write_record(wire, RecordType::Stdout, REQUEST_ID, head);
    for chunk in body.chunks(MAX_RECORD_CONTENT) {
        record::write_record(wire, RecordType::Stdout, REQUEST_ID, chunk);
    }
    record::write_record(wire, RecordType::Stdout, REQUEST_ID, &[]);
    end_request(wire, 0, ProtocolStatus::RequestComplete);
}
