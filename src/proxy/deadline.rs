//! A send timeout for client connections: a write that makes no progress for
//! [`SEND_TIMEOUT`] fails, and the connection closes (nginx's `send_timeout`). Without it a
//! client that stops reading (or vanishes without a word) holds its connection, and with a
//! streamed PHP answer that client's php-fpm worker, until the kernel gives up on the
//! socket, a quarter of an hour later.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a write may wait for the client to take bytes.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// `io` whose writes fail after `timeout` without progress.
pub struct Deadline<I> {
    io: I,
    timeout: Duration,
    /// Running while a write waits; dropped when one goes through.
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<I> Deadline<I> {
    pub fn new(io: I, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            waiting: None,
        }
    }

    /// After a write returned `result`: a pending one starts or checks the clock.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client took no bytes for too long",
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.waiting = None;
                ready
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Deadline<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Deadline<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        this.watch(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.watch(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_flush(cx);
        this.watch(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_client_that_stops_reading_is_given_up() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Connected, never reading.
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut io = Deadline::new(stream, Duration::from_millis(300));
        let chunk = vec![0u8; 1 << 20];
        let started = std::time::Instant::now();
        let mut written = 0usize;
        let err = loop {
            match io.write(&chunk).await {
                Ok(n) => written += n,
                Err(e) => break e,
            }
            assert!(written < 1 << 30, "the socket never filled");
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_reading_client_is_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut c, &mut sink)
                .await
                .unwrap();
            sink.len()
        });
        let (stream, _) = listener.accept().await.unwrap();
        let mut io = Deadline::new(stream, Duration::from_millis(300));
        for _ in 0..64 {
            io.write_all(&vec![1u8; 1 << 20]).await.unwrap();
        }
        io.shutdown().await.unwrap();
        drop(io);
        assert_eq!(reader.await.unwrap(), 64 << 20);
    }
}
