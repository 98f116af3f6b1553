//! A file's bytes: read whole when small, otherwise streamed as the connection takes them
//! (or handed to sendfile(2) on a plain HTTP/1 connection).

use crate::proxy::sendfile::{self, Sendfile};
use crate::proxy::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Frame;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Files up to this size are read into memory in one read.
pub const CHUNK: usize = 64 * 1024;

/// Larger files are streamed in reads of this size.
pub const STREAM_CHUNK: usize = 256 * 1024;

/// Reads `len` bytes at `offset` with `pread` (usually a single call).
pub(super) fn read_small(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    // A short read means the file shrank since fstat: an error, not a truncated body
    // under the Content-Length promised.
    file.read_exact_at(&mut buf, offset)?;
    Ok(Bytes::from(buf))
}

/// Streams `len` bytes from `offset` of the opened file in chunks of [`STREAM_CHUNK`], each
/// read when the connection asks for the next one. If the file shrinks meanwhile, the
/// stream ends with an error (the connection is aborted rather than left waiting for
/// bytes); if it grows, only `len` bytes are sent.
pub(super) fn stream_file(
    file: Arc<File>,
    offset: u64,
    len: u64,
    sendfile: Option<Sendfile>,
) -> Body {
    FileBody {
        file,
        offset,
        remaining: len,
        sendfile,
    }
    .boxed()
}

struct FileBody {
    file: Arc<File>,
    offset: u64,
    remaining: u64,
    /// Tokens for sendfile(2) instead of the bytes.
    sendfile: Option<Sendfile>,
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        use std::task::Poll;
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        if let Some(sendfile) = &self.sendfile {
            let want = self.remaining.min(sendfile::TOKEN_LEN as u64) as usize;
            let token = sendfile.token(self.file.clone(), self.offset, want);
            self.offset += token.len() as u64;
            self.remaining -= token.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(token))));
        }
        let want = self.remaining.min(STREAM_CHUNK as u64) as usize;
        let mut buf = BytesMut::zeroed(want);
        let read = loop {
            match self.file.read_at(&mut buf, self.offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = match read {
            Ok(0) => {
                self.remaining = 0;
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while being sent",
                ))));
            }
            Ok(n) => n,
            Err(e) => {
                self.remaining = 0;
                return Poll::Ready(Some(Err(e)));
            }
        };
        buf.truncate(n);
        self.offset += n as u64;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(buf.freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{get, request, respond, Tree};
    use super::super::StaticRequest;
    use super::*;
    use hyper::header::HeaderMap;
    use hyper::{Method, StatusCode};

    #[tokio::test]
    async fn large_files_stream_with_the_right_bytes() {
        let tree = Tree::new("large");
        let content: Vec<u8> = (0..3 * 1024 * 1024u32)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        tree.write("big.bin", &content);

        let r = get(&tree, "/big.bin").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-length"), Some("3145728"));
        assert_eq!(r.body.len(), content.len());
        assert!(r.body[..] == content[..]);

        let r = request(
            &tree,
            Method::GET,
            "/big.bin",
            &[("range", "bytes=100000-2999999")],
        )
        .await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.header("content-length"), Some("2900000"));
        assert!(r.body[..] == content[100000..3000000]);

        let r = request(&tree, Method::GET, "/big.bin", &[("range", "bytes=-70000")]).await;
        assert!(r.body[..] == content[content.len() - 70000..]);

        let r = request(&tree, Method::HEAD, "/big.bin", &[]).await;
        assert!(r.body.is_empty());
        assert_eq!(r.header("content-length"), Some("3145728"));

        // The body comes in bounded chunks, not as one 3 MB buffer.
        let map = HeaderMap::new();
        let req = StaticRequest {
            method: &Method::GET,
            path: "/big.bin",
            query: None,
            headers: &map,
        };
        let mut body = respond(&tree, &req).into_body();
        let (mut frames, mut total) = (0, 0);
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() <= STREAM_CHUNK);
            frames += 1;
            total += data.len();
        }
        assert_eq!(total, content.len());
        assert!(frames >= content.len() / STREAM_CHUNK, "{frames} frames");

        // Exactly one chunk and one byte more.
        tree.write("edge.bin", &content[..CHUNK + 1]);
        let r = get(&tree, "/edge.bin").await;
        assert!(r.body[..] == content[..CHUNK + 1]);
    }
}
