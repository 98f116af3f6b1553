//! `sendfile(2)` for static files on plain HTTP/1.x connections, under hyper.
//!
//! hyper takes a response body as buffers and writes them itself, so the kernel's file to
//! socket copy is reached from below: the connection's stream is wrapped in [`SendfileIo`],
//! and a file's body yields *tokens* instead of its bytes: slices of one static buffer,
//! [`TOKEN`], each as long as the part of the file it stands for, while the file, offset and
//! length wait in the connection's [`Sendfile`] queue, in order. When hyper writes a token,
//! the wrapper sends that part of the file with `sendfile(2)` instead.
//!
//! This holds because of how hyper writes HTTP/1: with `writev(true)` (set in
//! `proxy::run`) it queues body buffers and hands them to `poll_write_vectored` as they are,
//! never copying them; and HTTP/1 sends one response's bytes at a time, in order. Neither
//! holds for HTTP/2 (frames of several streams interleave) or TLS (the stream is encrypted
//! above this layer): those get the file's bytes. A token the wrapper cannot match to its
//! queue fails the connection; it is never sent as bytes.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The longest token, and so the most one `sendfile(2)` call is asked for (the kernel sends
/// what the socket takes and the rest follows). The buffer is never touched, so it takes no
/// memory.
pub const TOKEN_LEN: usize = 2 << 20;

/// The buffer tokens are cut from. Its bytes are never sent.
static TOKEN: [u8; TOKEN_LEN] = [0; TOKEN_LEN];

/// Whether `buf` lies within [`TOKEN`].
pub fn is_token(buf: &[u8]) -> bool {
    let base = TOKEN.as_ptr() as usize;
    let at = buf.as_ptr() as usize;
    !buf.is_empty() && at >= base && at + buf.len() <= base + TOKEN_LEN
}

struct Part {
    file: Arc<File>,
    offset: u64,
    len: usize,
}

/// The parts of files waiting to be sent on one connection, in the order their tokens were
/// handed to hyper.
#[derive(Clone, Default)]
pub struct Sendfile(Arc<Mutex<VecDeque<Part>>>);

impl std::fmt::Debug for Sendfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queued = self.0.lock().map_or(0, |q| q.len());
        f.debug_struct("Sendfile").field("queued", &queued).finish()
    }
}

impl Sendfile {
    /// A token for `len` bytes (at most [`TOKEN_LEN`]) of `file` from `offset`.
    pub fn token(&self, file: Arc<File>, offset: u64, len: usize) -> bytes::Bytes {
        let len = len.min(TOKEN_LEN);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Part { file, offset, len });
        bytes::Bytes::from_static(&TOKEN[..len])
    }
}

/// A plain TCP stream that sends tokens as the file parts they stand for.
pub struct SendfileIo {
    stream: TcpStream,
    parts: Sendfile,
}

impl SendfileIo {
    pub fn new(stream: TcpStream, parts: Sendfile) -> Self {
        Self { stream, parts }
    }

    /// Sends what `token` (the rest of the first queued part) stands for.
    fn poll_send_part(&mut self, cx: &mut Context<'_>, token: &[u8]) -> Poll<io::Result<usize>> {
        let done = token.as_ptr() as usize - TOKEN.as_ptr() as usize;
        let (file, mut offset, len) = {
            let parts = self.parts.0.lock().unwrap_or_else(|e| e.into_inner());
            match parts.front() {
                // hyper hands the unsent rest of a token: it ends where its part ends.
                Some(p) if done + token.len() == p.len => {
                    (p.file.clone(), (p.offset + done as u64) as i64, p.len)
                }
                _ => {
                    return Poll::Ready(Err(io::Error::other(
                        "a file token does not match the file parts queued",
                    )))
                }
            }
        };
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                nix::sys::sendfile::sendfile64(
                    self.stream.as_fd(),
                    file.as_fd(),
                    Some(&mut offset),
                    token.len(),
                )
                .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while being sent",
                    )))
                }
                Ok(n) => {
                    if done + n == len {
                        self.parts
                            .0
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl SendfileIo {
    fn poll_send_more(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        use std::os::fd::AsRawFd;
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                nix::sys::socket::sendmsg::<()>(
                    self.stream.as_raw_fd(),
                    bufs,
                    &[],
                    nix::sys::socket::MsgFlags::from_bits_retain(nix::libc::MSG_MORE)
                        | nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(io::Error::from)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return Poll::Ready(other),
            }
        }
    }
}

impl AsyncRead for SendfileIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if is_token(buf) {
            return this.poll_send_part(cx, buf);
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What comes before the first token goes out as bytes; a token at the front is sent
        // from its file. A short count is fine: hyper calls again with the rest.
        match bufs.iter().position(|b| is_token(b)) {
            Some(0) => this.poll_send_part(cx, &bufs[0]),
            // The bytes before a file part (the response head) are sent with MSG_MORE, so the
            // kernel puts them in one segment with the file's first bytes, as nginx's
            // `tcp_nopush` does.
            Some(first) => this.poll_send_more(cx, &bufs[..first]),
            None => Pin::new(&mut this.stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn tokens_go_out_as_the_file_and_bytes_as_bytes() {
        let dir = std::env::temp_dir().join(format!("lodge-sendfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.bin");
        let content: Vec<u8> = (0..600_000u32).map(|i| (i * 13 % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let file = Arc::new(File::open(&path).unwrap());

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let (stream, _) = listener.accept().await.unwrap();
        let parts = Sendfile::default();
        let mut io = SendfileIo::new(stream, parts.clone());
        // Head, then the file from 1000 in two parts, then a tail: as hyper would write them.
        let a = parts.token(file.clone(), 1000, 300_000);
        let b = parts.token(file.clone(), 301_000, 50_000);
        let mut queue: Vec<bytes::Bytes> = vec![
            bytes::Bytes::from_static(b"HEAD\r\n"),
            a,
            b,
            bytes::Bytes::from_static(b"\r\nTAIL"),
        ];
        while !queue.is_empty() {
            let slices: Vec<IoSlice<'_>> = queue.iter().map(|b| IoSlice::new(b)).collect();
            let mut n = io.write_vectored(&slices).await.unwrap();
            while n > 0 {
                let first = &mut queue[0];
                let take = n.min(first.len());
                let _ = first.split_to(take);
                n -= take;
                if first.is_empty() {
                    queue.remove(0);
                }
            }
        }
        io.shutdown().await.unwrap();
        drop(io);
        let got = reader.await.unwrap();
        let mut expected = b"HEAD\r\n".to_vec();
        expected.extend_from_slice(&content[1000..351_000]);
        expected.extend_from_slice(b"\r\nTAIL");
        assert!(
            got == expected,
            "{} bytes, {} expected",
            got.len(),
            expected.len()
        );
        assert!(parts.0.lock().unwrap().is_empty());

        // A token nothing was queued for fails; its zeros are never sent.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut io = SendfileIo::new(stream, Sendfile::default());
        assert!(io.write(&TOKEN[..100]).await.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
