//! The byte stream under an upstream connection: plain TCP, or TLS over it for an `https://`
//! backend. An enum rather than a boxed trait object, so the plain path pays one branch per
//! read or write and no indirect call.
//!
//! A backend's TLS settings ([`TlsTarget`]) come from `[upstream.tls]`: the roots to trust, the
//! name to send (SNI) and verify, and ALPN `http/1.1` only, since the upstream client speaks the
//! project's own HTTP/1.1 codec (and hyper's HTTP/1 client for streamed bodies and upgrades).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::BackendTls;

/// How to speak TLS to one backend.
pub(crate) struct TlsTarget {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTarget")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsTarget {
    /// The target `tls` describes. Cheap: the client configuration (and with it the session
    /// cache that lets later connections resume) is shared, not copied.
    pub(crate) fn new(tls: &BackendTls) -> Self {
        Self {
            connector: TlsConnector::from(tls.client.config()),
            server_name: tls.server_name.clone(),
        }
    }

    /// The TLS handshake over `tcp`.
    pub(crate) async fn handshake(&self, tcp: TcpStream) -> io::Result<Stream> {
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// An upstream connection's stream.
#[derive(Debug)]
pub(crate) enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP. Boxed: the TLS state is large, and idle connections wait in the pool.
    Tls(Box<TlsStream<TcpStream>>),
}

/// What an idle stream's socket shows (see [`Stream::idle_read`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdleRead {
    /// Nothing to read.
    Nothing,
    /// The backend closed it, or it failed.
    Closed,
    /// Data the backend sent unasked.
    Data,
}

impl Stream {
    /// The TCP socket under it.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Whether this is a TLS stream, whose writes must be flushed to reach the socket.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// What an idle stream holds that no socket event shows: for TLS, data already decrypted
    /// (it came in the same records as the end of the last answer), or a close already read.
    /// Plain TCP keeps nothing outside the socket.
    pub(crate) fn buffered(&mut self) -> IdleRead {
        match self {
            Stream::Tcp(_) => IdleRead::Nothing,
            Stream::Tls(tls) => tls_idle_read(tls, false),
        }
    }

    /// What an idle stream holds now, asked of the socket itself (one system call), whatever
    /// the event loop has seen. For TLS, records that carry no data (a session ticket, a key
    /// update) are read and used, and do not count as data.
    pub(crate) fn idle_read(&mut self) -> IdleRead {
        use rustix::net::{RecvFlags, recv};
        match self {
            Stream::Tcp(tcp) => {
                let mut probe = [0u8; 1];
                match recv(&*tcp, &mut probe, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
                    Err(e) if e == rustix::io::Errno::AGAIN => IdleRead::Nothing,
                    Ok((0, _)) | Err(_) => IdleRead::Closed,
                    Ok(_) => IdleRead::Data,
                }
            }
            Stream::Tls(tls) => tls_idle_read(tls, true),
        }
    }
}

/// What an idle TLS stream holds: decrypted data first; then, if `from_socket`, the records
/// waiting in the socket, read past the event loop (a non-blocking read) and decrypted.
fn tls_idle_read(tls: &mut TlsStream<TcpStream>, from_socket: bool) -> IdleRead {
    use std::io::Read as _;
    let (tcp, session) = tls.get_mut();
    let mut probe = [0u8; 1];
    loop {
        match session.reader().read(&mut probe) {
            Ok(0) => return IdleRead::Closed,
            Ok(_) => return IdleRead::Data,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return IdleRead::Closed,
        }
        if !from_socket {
            return IdleRead::Nothing;
        }
        match session.read_tls(&mut RawSocket(tcp)) {
            Ok(0) => return IdleRead::Closed,
            Ok(_) => {
                if session.process_new_packets().is_err() {
                    return IdleRead::Closed;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return IdleRead::Nothing,
            Err(_) => return IdleRead::Closed,
        }
    }
}

/// A non-blocking read of a socket the event loop also watches: a read that finds nothing
/// leaves the event loop's readiness as it was, and the next poll of the stream finds out.
struct RawSocket<'a>(&'a TcpStream);

impl io::Read for RawSocket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        rustix::io::read(self.0, buf).map_err(io::Error::from)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// Connect to `host:port`, with TLS when `tls` says so: the connection the caller gets is ready
/// for HTTP/1.1. The caller bounds the whole with its connect timeout.
pub(crate) async fn connect(
    host: &str,
    port: u16,
    tls: Option<&Arc<TlsTarget>>,
) -> Result<Stream, ConnectError> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(ConnectError::Tcp)?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Stream::Tcp(tcp)),
        Some(tls) => tls.handshake(tcp).await.map_err(ConnectError::Tls),
    }
}

/// Why [`connect`] gave no stream.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The TCP connection failed.
    Tcp(io::Error),
    /// The TLS handshake failed.
    Tls(io::Error),
}
