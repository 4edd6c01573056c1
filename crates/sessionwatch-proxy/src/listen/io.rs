//! Socket helpers for the connection loops: writing with a timeout, closing without losing the
//! last answer, and the adapter that hands a connection to hyper part-way. All of them take any
//! [`ClientIo`]: a TCP stream, or a TLS stream over one.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::tls::ClientTls;

/// How long a closing connection waits for the client to stop sending.
const LINGER: Duration = Duration::from_secs(1);

/// A client connection the connection loops can serve.
///
/// [`send`] first tries to write without waiting, so an answer that fits the socket's buffer
/// goes out with no timer armed; only a client that is slow to read costs a timer.
pub(crate) trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Write what can go now, without waiting; `WouldBlock` when nothing can.
    fn try_write_now(&mut self, buf: &[u8]) -> std::io::Result<usize>;

    /// Whether written bytes can stay in a buffer of the stream's own (then [`send`] flushes).
    const BUFFERED: bool;

    /// Whether the connection's end is a message of its own (TLS's close_notify), which
    /// [`close`] sends; a TCP connection just closes when dropped.
    const SAYS_GOODBYE: bool;
}

impl ClientIo for TcpStream {
    fn try_write_now(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.try_write(buf)
    }

    const BUFFERED: bool = false;
    const SAYS_GOODBYE: bool = false;
}

impl ClientIo for ClientTls {
    fn try_write_now(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Encrypts into rustls's buffer and writes what the socket takes; a noop waker, since
        // nobody waits here: `send` waits, with a real waker and a timeout, only if nothing
        // went.
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(self).poll_write(&mut cx, buf) {
            Poll::Ready(written) => written,
            Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }

    const BUFFERED: bool = true;
    const SAYS_GOODBYE: bool = true;
}

/// End a connection the loop is done with. Over TLS, a close_notify first (for a second at
/// most): without it a client cannot tell the end from a cut, and OpenSSL drops the session from
/// its cache, so the next connection cannot resume.
pub(super) async fn close<S: ClientIo>(stream: &mut S) {
    if S::SAYS_GOODBYE {
        let _ = tokio::time::timeout(LINGER, stream.shutdown()).await;
    }
}

/// Close `stream` after a last answer without losing it: a close with unread input makes the
/// kernel send a reset, and a reset can destroy the answer before the client has read it. So the
/// write side is shut first (over TLS, after a close_notify) and the client's input read and
/// dropped, for a second at most.
pub(super) async fn linger_close<S: ClientIo>(stream: &mut S) {
    let _ = tokio::time::timeout(LINGER, stream.shutdown()).await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(1..) = stream.read(&mut sink).await {}
    })
    .await;
}

/// Write `buf` to the client, failing if it takes no part of it for `timeout`. Most answers fit
/// the socket's buffer and go out at once, with no timer armed.
pub(super) async fn send<S: ClientIo>(
    stream: &mut S,
    mut buf: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    while !buf.is_empty() {
        match stream.try_write_now(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let write = stream.write(buf);
                match tokio::time::timeout(timeout, write).await {
                    Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(Ok(n)) => buf = &buf[n..],
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
                }
            }
            Err(e) => return Err(e),
        }
    }
    if S::BUFFERED {
        flush(stream, timeout).await?;
    }
    Ok(())
}

/// Push out what the stream holds; most of the time it is gone already, and no timer is armed.
async fn flush<S: ClientIo>(stream: &mut S, timeout: Duration) -> std::io::Result<()> {
    // The context goes before the wait: it is not `Send`, the connection's future must be.
    let now = Pin::new(&mut *stream).poll_flush(&mut Context::from_waker(Waker::noop()));
    match now {
        Poll::Ready(flushed) => flushed,
        Poll::Pending => match tokio::time::timeout(timeout, stream.flush()).await {
            Ok(flushed) => flushed,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        },
    }
}

/// `stream`, with `prefix` (bytes already read from it) read first: how a connection is handed to
/// hyper part-way, and to the TLS handshake after its PROXY header.
#[derive(Debug)]
pub(crate) struct Prefixed<S> {
    prefix: Bytes,
    stream: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: Bytes, stream: S) -> Self {
        Self { prefix, stream }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;
    use tokio::time::Instant;

    use super::*;

    /// A connection to a client that never reads: the proxy's side, and the client's (kept
    /// open so the connection stays up).
    async fn deaf_client() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (proxy_side, _) = l.accept().await.unwrap();
        (proxy_side, client)
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_takes_nothing_for_the_send_timeout_is_given_up_on() {
        let (mut s, _client) = deaf_client().await;
        let timeout = Duration::from_millis(300);
        // Far more than the socket buffers on both sides hold.
        let answer = vec![b'x'; 64 << 20];
        let start = Instant::now();
        let err = send(&mut s, &answer, timeout).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(
            start.elapsed() >= timeout,
            "gave up after {:?}",
            start.elapsed()
        );
    }
}
