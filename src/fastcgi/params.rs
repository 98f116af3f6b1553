//! The `FCGI_PARAMS` stream: CGI variables encoded as name-value pairs as they are added (no
//! map, no copy per variable), then cut into records between pairs.
//!
//! Each length takes 1 byte when below 128, otherwise 4 bytes big-endian with the top bit
//! set. php-fpm parses each `FCGI_PARAMS` record on its own, so a pair never spans two
//! records, and a pair larger than one record ([`MAX_RECORD_CONTENT`] bytes once encoded)
//! cannot be sent at all: it is refused, and [`Params::write`] says which one it was.

use super::record::{self, RecordType, MAX_RECORD_CONTENT, REQUEST_ID};
use super::FcgiError;

/// CGI variables as the `FCGI_PARAMS` stream of a request in the making.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<u8>,
    /// Where each pair ends, to cut the stream into records between pairs.
    ends: Vec<usize>,
    /// The first pair that could not be sent: its name and encoded size.
    refused: Option<(String, usize)>,
}

/// The bytes a length takes on the wire.
fn length_len(len: usize) -> usize {
    if len < 0x80 {
        1
    } else {
        4
    }
}

/// The length of `values` joined by `sep`.
fn joined_len(values: &[&[u8]], sep: &[u8]) -> usize {
    values.iter().map(|v| v.len()).sum::<usize>() + sep.len() * values.len().saturating_sub(1)
}

impl Params {
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            pairs: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(48),
            refused: None,
        }
    }

    /// Starts a pair of `name_len` and `value_len` bytes: its lengths are written, and the
    /// caller writes the name and the value. `false` (nothing written) for a pair too large
    /// for a record.
    fn start(&mut self, name: impl FnOnce() -> String, name_len: usize, value_len: usize) -> bool {
        let size = length_len(name_len) + length_len(value_len) + name_len + value_len;
        if size > MAX_RECORD_CONTENT {
            self.refused.get_or_insert_with(|| (name(), size));
            return false;
        }
        self.pairs.reserve(size);
        for len in [name_len, value_len] {
            if len < 0x80 {
                self.pairs.push(len as u8);
            } else {
                // Below MAX_RECORD_CONTENT, so the top bit is free for the marker.
                self.pairs
                    .extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
            }
        }
        true
    }

    /// Adds a variable. Bytes, not strings: CGI variables carry raw HTTP bytes.
    pub fn add(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let (name, value) = (name.as_ref(), value.as_ref());
        let lossy = || String::from_utf8_lossy(name).into_owned();
        if self.start(lossy, name.len(), value.len()) {
            self.pairs.extend_from_slice(name);
            self.pairs.extend_from_slice(value);
            self.ends.push(self.pairs.len());
        }
    }

    /// Adds a variable whose value is `values` joined by `sep`, without building the
    /// joined value first.
    pub fn add_joined(&mut self, name: &str, values: &[&[u8]], sep: &[u8]) {
        if self.start(|| name.to_owned(), name.len(), joined_len(values, sep)) {
            self.pairs.extend_from_slice(name.as_bytes());
            self.push_joined(values, sep);
        }
    }

    /// `HTTP_<NAME>` for a request header (`-` becomes `_`, letters upper case) with its
    /// values joined by `sep`.
    pub fn add_header(&mut self, name: &str, values: &[&[u8]], sep: &[u8]) {
        let len = joined_len(values, sep);
        if !self.start(|| format!("HTTP_{name}"), 5 + name.len(), len) {
            return;
        }
        self.pairs.extend_from_slice(b"HTTP_");
        self.pairs.extend(name.bytes().map(|b| {
            if b == b'-' {
                b'_'
            } else {
                b.to_ascii_uppercase()
            }
        }));
        self.push_joined(values, sep);
    }

    /// Writes a value made of `values` joined by `sep`, and ends the pair.
    fn push_joined(&mut self, values: &[&[u8]], sep: &[u8]) {
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.pairs.extend_from_slice(sep);
            }
            self.pairs.extend_from_slice(v);
        }
        self.ends.push(self.pairs.len());
    }

    /// Appends the `FCGI_PARAMS` records, cut between pairs, and the empty one that ends
    /// the stream; or fails, writing nothing, if a pair was refused.
    pub fn write(&self, wire: &mut Vec<u8>) -> Result<(), FcgiError> {
        if let Some((name, size)) = &self.refused {
            return Err(FcgiError::Protocol(format!(
                "parameter {name} is too long for one FastCGI record ({size} bytes encoded)"
            )));
        }
        let mut start = 0;
        let mut last_end = 0;
        for &end in &self.ends {
            if end - start > MAX_RECORD_CONTENT {
                let pairs = &self.pairs[start..last_end];
                record::write_record(wire, RecordType::Params, REQUEST_ID, pairs);
                start = last_end;
            }
            last_end = end;
        }
        if start < self.pairs.len() {
            let pairs = &self.pairs[start..];
            record::write_record(wire, RecordType::Params, REQUEST_ID, pairs);
        }
        record::write_record(wire, RecordType::Params, REQUEST_ID, &[]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{decode_name_values, params_of};
    use super::*;
    use crate::fastcgi::record::Header;

    fn written(p: &Params) -> Vec<u8> {
        let mut wire = Vec::new();
        p.write(&mut wire).unwrap();
        wire
    }

    #[test]
    fn lengths_take_one_byte_below_128_and_four_from_there() {
        let mut p = Params::default();
        p.add("A", [b'x'; 127]);
        let wire = written(&p);
        assert_eq!(&wire[8..10], &[1, 127], "below 128: one byte each");
        assert_eq!(
            Header::decode(wire[..8].try_into().unwrap())
                .unwrap()
                .content_length,
            130
        );

        let mut p = Params::default();
        p.add([b'n'; 128], [b'v'; 300]);
        let wire = written(&p);
        assert_eq!(&wire[8..12], &[0x80, 0, 0, 128], "128 and up: top bit set");
        assert_eq!(&wire[12..16], &[0x80, 0, 0x01, 0x2c]);
        assert_eq!(
            params_of(&wire).unwrap(),
            vec![(vec![b'n'; 128], vec![b'v'; 300])]
        );
    }

    #[test]
    fn variables_and_headers_round_trip() {
        let mut p = Params::default();
        p.add("SCRIPT_FILENAME", "/srv/a/index.php");
        p.add("EMPTY", "");
        p.add("LONG", vec![b'v'; 300]);
        p.add_header("accept-language", &[b"en", b"fr"], b", ");
        p.add_header("x-a", &[b"1"], b", ");
        p.add_joined("SCRIPT_NAME", &[b"/srv", b"/a.php"], b"");
        let expected: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"SCRIPT_FILENAME".to_vec(), b"/srv/a/index.php".to_vec()),
            (b"EMPTY".to_vec(), Vec::new()),
            (b"LONG".to_vec(), vec![b'v'; 300]),
            (b"HTTP_ACCEPT_LANGUAGE".to_vec(), b"en, fr".to_vec()),
            (b"HTTP_X_A".to_vec(), b"1".to_vec()),
            (b"SCRIPT_NAME".to_vec(), b"/srv/a.php".to_vec()),
        ];
        assert_eq!(params_of(&written(&p)).unwrap(), expected);
        assert_eq!(decode_name_values(&[]).unwrap(), vec![]);
    }

    #[test]
    fn records_end_between_pairs() {
        // Three pairs of ~30 KB: two fit in the first record, the third starts a new one;
        // then many small ones.
        let mut p = Params::default();
        let mut expected = Vec::new();
        for name in ["A", "B", "C"] {
            p.add(name, vec![b'v'; 30_000]);
            expected.push((name.as_bytes().to_vec(), vec![b'v'; 30_000]));
        }
        for i in 0..40 {
            let value = vec![b'a' + (i % 26) as u8; 3000];
            p.add(format!("V{i}"), &value);
            expected.push((format!("V{i}").into_bytes(), value));
        }
        let wire = written(&p);
        // params_of decodes each record on its own, as php-fpm does.
        assert_eq!(params_of(&wire).unwrap(), expected);
        let mut rest = &wire[..];
        let mut records = 0;
        while !rest.is_empty() {
            let h = Header::decode(rest[..8].try_into().unwrap()).unwrap();
            assert_eq!(
                (h.record_type, h.request_id),
                (RecordType::Params, REQUEST_ID)
            );
            assert!(usize::from(h.content_length) <= MAX_RECORD_CONTENT);
            rest = &rest[8 + usize::from(h.content_length) + usize::from(h.padding_length)..];
            records += 1;
        }
        assert!(records > 3, "{records} records");
    }

    #[test]
    fn a_pair_too_large_for_a_record_is_an_error() {
        let mut p = Params::default();
        p.add("SMALL", "ok");
        p.add("HUGE", vec![0u8; MAX_RECORD_CONTENT]);
        p.add_header("cookie", &[&[b'c'; 70_000][..]], b"; ");
        let mut wire = Vec::new();
        let err = p.write(&mut wire).unwrap_err();
        assert!(matches!(err, FcgiError::Protocol(_)), "{err}");
        assert!(err.to_string().contains("HUGE"), "the first refused: {err}");
        assert!(wire.is_empty());

        // The largest pair that fits is sent whole, in a record of its own.
        let mut p = Params::default();
        p.add("A", "b");
        p.add("BIG", vec![b'x'; MAX_RECORD_CONTENT - 3 - 4 - 1]);
        let wire = written(&p);
        assert_eq!(params_of(&wire).unwrap().len(), 2);
    }
}
