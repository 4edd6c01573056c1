//! Client connections: the accept loop (HTTP/1.1 and HTTP/2 on one port, upgrades allowed, the
//! connection cap, the drain of `shutdown.rs`), the [`plain`] keep-alive loop that
//! serves most HTTP/1.1 requests, and the hand-over to hyper-util's auto builder for the first
//! request of a connection that is anything else.
//!
//! With `listen.proxy_protocol`, a connection from a trusted proxy must start with a PROXY
//! protocol header ([`proxy_protocol`]), read here before any HTTP byte; any other connection is
//! closed unanswered. With `[listen.tls]`, the [`tls`] handshake comes next, and the connection
//! is then served as a plain-TCP one is, by the same loops (generic over [`io::ClientIo`]).
//!
//! What a request goes through once read is not decided here: the accept loop is given a way to
//! make each connection's [`Handler`] (see `app/stack.rs`), and tells it the [`Peer`].

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::header::CONNECTION;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use metrics::{Counter, Gauge};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, Service};

use crate::config::{ForwardedConfig, TrustedProxies};
use crate::extensions::ClientConnection;
use crate::metrics::DurationHistogram;
use crate::sensitive;
use crate::shutdown::{DrainWatch, Phase};
use crate::upstream::body::{RequestBody, ResponseBody};
use io::Prefixed;
use timed::Timed;

mod io;
pub(crate) mod plain;
pub(crate) mod proxy_protocol;
mod timed;
pub(crate) mod tls;

/// The connection a request came in on, as the request's steps need it.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// Whom the connection is from: the TCP peer, or the source its PROXY header gives.
    pub addr: IpAddr,
    /// `addr` as a header value, for `X-Forwarded-For` (formatted once per connection).
    pub addr_value: Option<HeaderValue>,
    /// Whether `addr` is a trusted proxy, whose `X-Forwarded-*` are believed.
    pub trusted: bool,
    /// The trusted proxies, to find the client in a trusted peer's `X-Forwarded-For`.
    pub trust: Arc<TrustedProxies>,
    /// The listener's own address: the `Host` of an HTTP/1.0 request that names none.
    pub local: SocketAddr,
    /// Whether the connection is TLS: its requests are `https`.
    pub tls: bool,
    /// The connection's place under the cap, for a tunnel to hold (see [`ClientConnection`]).
    pub held: ClientConnection,
}

impl Peer {
    /// The scheme the client used, for `X-Forwarded-Proto`.
    pub(crate) fn proto(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// What a connection's requests go through, made once per connection: the connection loops call
/// it for every request, on either path.
pub(crate) trait Handler: Send + 'static {
    /// Answer one request (as read: nothing stripped or added yet).
    fn handle(
        &self,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'static + use<Self>;
}

/// Streams one HTTP/2 connection may have open at once.
const H2_MAX_STREAMS: u32 = 256;
/// Reset streams an HTTP/2 connection may have waiting to be accepted (h2's default, set
/// explicitly so it cannot change under us).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams the server may reset for a client's errors before it ends the connection.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// How long a client gets to send a request, and how large its head may be.
#[derive(Debug, Clone)]
pub(crate) struct ClientLimits {
    /// For a request's head (and, idle, for the next one to start).
    pub head: Duration,
    /// Between two reads of a request's body (`upstream.request_body_timeout`).
    pub body: Duration,
    /// For an answer's next bytes to go out (`listen.send_timeout`).
    pub send: Duration,
    /// The largest request head (`listen.max_header_bytes`); larger ones are answered 431.
    pub max_head: usize,
    /// Counts bodies the client stopped sending (each answered 408).
    pub stalled_bodies: Counter,
    /// Counts requests the plain HTTP/1.1 loop answered (the rest went to hyper).
    pub plain_requests: Counter,
    /// Each request's time from its head read to its answer's end (see [`plain`] and
    /// [`Timed`]).
    pub request_duration: Arc<DurationHistogram>,
}

/// A worker's share of `listen.max_connections`, and the metrics that show it.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionCap {
    /// Connections this worker holds open at most; at the cap it stops accepting, and new
    /// connections wait in the kernel's backlog.
    pub max: usize,
    /// Client connections open now (all workers).
    pub open: Gauge,
    /// Times a worker reached its cap.
    pub reached: Counter,
}

/// One open client connection: its place under the cap, and in the gauge.
struct Held {
    _permit: tokio::sync::OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

/// Serve on `listener` until the drain reaches [`Phase::Closing`], then let open connections
/// finish until they have or the drain is [`Phase::Abandoned`]. While draining, every HTTP/1.1
/// answer carries `Connection: close`; at `Closing`, HTTP/2 connections are sent GOAWAY and idle
/// HTTP/1.1 ones are closed. Each connection's requests go through the handler `make` makes for
/// it.
/// Whom a connection is from is told as `forwarded` says to believe. With `tls`, every
/// connection's handshake comes first (after its PROXY header).
pub(crate) async fn serve<M, H>(
    listener: TcpListener,
    make: M,
    limits: ClientLimits,
    cap: ConnectionCap,
    forwarded: &ForwardedConfig,
    tls: Option<tls::TlsListener>,
    mut drain: DrainWatch,
) where
    M: Fn(Peer) -> H + Send + Sync + 'static,
    H: Handler,
{
    // Made in each connection's task, once its PROXY header (if any) says whom it is from.
    let make = Arc::new(make);
    let trust = Arc::new(forwarded.trusted.clone());
    let proxy_protocol = forwarded.proxy_protocol;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head)
        // The same head limit as the proxy's own HTTP/1.1 code (validated to be at least
        // hyper's minimum), answered 431 by hyper.
        .max_buf_size(limits.max_head)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_head).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_STREAMS)
        // Rapid reset (CVE-2023-44487): a client that opens and resets streams faster than
        // they are served is sent GOAWAY once this many resets wait to be accepted, or once
        // it has made the server reset this many streams for its errors.
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS);
    let graceful = GracefulShutdown::new();
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let permits = Arc::new(tokio::sync::Semaphore::new(cap.max));
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                cap.reached.increment(1);
                tracing::debug!(max = cap.max, "at the connection cap; accepting paused");
                tokio::select! {
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        // Never closed: the semaphore lives as long as this loop.
                        Err(_) => break,
                    },
                    () = drain.reached(Phase::Closing) => break,
                }
            }
        };
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = drain.reached(Phase::Closing) => break,
        };
        // A dual-stack listener sees IPv4 peers as IPv4-mapped IPv6 addresses.
        let peer = addr.ip().to_canonical();
        if proxy_protocol && !trust.contains(peer) {
            // Only the load balancers may say whom a connection is from.
            tracing::debug!(%peer, "closed: not a trusted proxy, and PROXY headers are required");
            continue;
        }
        let _ = stream.set_nodelay(true);
        cap.open.increment(1.0);
        let held = Arc::new(Held {
            _permit: permit,
            open: cap.open.clone(),
        });
        // A wildcard listener's connections each have their own address; a specific one's are
        // all the listener's (no system call).
        let local = if local.ip().is_unspecified() {
            stream.local_addr().unwrap_or(local)
        } else {
            local
        };
        let make = make.clone();
        let trust = trust.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let mut drain = drain.clone();
        let limits = limits.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            let mut buf = BytesMut::with_capacity(sessionwatch_h1::INITIAL_BUF);
            let from = if proxy_protocol {
                let header = tokio::select! {
                    header = read_proxy_header(&mut stream, &mut buf, limits.head) => header,
                    // Nothing read yet that needs an answer.
                    () = drain.reached(Phase::Closing) => return,
                };
                match header {
                    // LOCAL and the like: the balancer speaks for itself.
                    Ok(source) => source.map_or(peer, |s| s.ip().to_canonical()),
                    Err(why) => {
                        tracing::debug!(%peer, why, "closed: no valid PROXY header");
                        return;
                    }
                }
            } else {
                peer
            };
            let peer = Peer {
                addr: from,
                // Formatted once per connection, for `X-Forwarded-For`.
                addr_value: HeaderValue::from_str(&from.to_string()).ok(),
                trusted: trust.contains(from),
                trust,
                local,
                tls: tls.is_some(),
                // The tunnel outlives this connection's task: it holds the connection's place
                // under the cap (and in the gauge) until it closes.
                held: ClientConnection(held.clone()),
            };
            let _held = held;
            let connection = Connection {
                builder,
                watcher,
                limits,
                drain,
            };
            let Some(tls) = tls else {
                let client = (*make)(peer);
                connection.serve(stream, buf, false, client).await;
                return;
            };
            // Bytes after the PROXY header are the handshake's.
            let io = Prefixed::new(buf.split().freeze(), stream);
            let mut drain = connection.drain.clone();
            let handshake = tokio::select! {
                handshake = tls.handshake(io) => handshake,
                // Nothing asked yet that needs an answer.
                () = drain.reached(Phase::Closing) => return,
            };
            let Some((stream, h2)) = handshake else {
                return;
            };
            let client = (*make)(peer);
            connection.serve(stream, buf, h2, client).await;
        });
    }
    drop(listener);
    // Every connection's task holds a watcher from its accept on, on the plain path too, so
    // this waits for them all; hyper's connections are also told to finish (GOAWAY, or close
    // once idle).
    tokio::select! {
        () = graceful.shutdown() => {}
        // The drain logs it once for every worker.
        () = drain.reached(Phase::Abandoned) => {}
    }
}

/// What serving one accepted connection takes, past its PROXY header and handshake.
struct Connection {
    builder: auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    limits: ClientLimits,
    drain: DrainWatch,
}

impl Connection {
    /// Serve `stream`, whose first bytes are in `buf`, with `client`: plain HTTP/1.1 requests in
    /// the connection's own loop, and from the first other request on, hyper (at once for a
    /// client that chose `h2` by ALPN).
    async fn serve<S: io::ClientIo, H: Handler>(
        self,
        mut stream: S,
        buf: BytesMut,
        h2: bool,
        mut client: H,
    ) {
        let Self {
            mut builder,
            watcher,
            limits,
            mut drain,
        } = self;
        let prefix = if h2 {
            buf.freeze()
        } else {
            let ended =
                plain::serve_plain(&mut stream, buf, &mut client, &limits, &mut drain).await;
            let plain::Ended::NotPlain(prefix) = ended else {
                return;
            };
            prefix
        };
        let marks = sensitive::layer();
        let draining = drain.clone();
        let duration = limits.request_duration.clone();
        let hyper_svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            // hyper calls the service once it has read the request's head.
            let started = tokio::time::Instant::now();
            // The marks go on before the request's steps see it, and on the answer before
            // hyper writes it.
            let mut svc = marks.layer(tower::service_fn(|req: Request<Incoming>| {
                let version = req.version();
                let answer = client.handle(req.map(RequestBody::from));
                let draining = draining.clone();
                let duration = duration.clone();
                async move {
                    let mut answer = answer.await;
                    if draining.is_draining() {
                        ask_to_close(&mut answer, version);
                    }
                    Ok::<_, Infallible>(answer.map(|body| Timed::new(body, started, duration)))
                }
            }));
            svc.call(req)
        });
        if h2 {
            // ALPN settled it: no HTTP/1.1 on this connection.
            builder = builder.http2_only();
        }
        let io = TokioIo::new(Prefixed::new(prefix, stream));
        let served = if drain.is_closing() {
            // Closing already: a graceful watch would drop the connection before its
            // request is read. Serve that request without keep-alive instead; the watcher is
            // held until then, so the drain waits for it.
            builder.http1().keep_alive(false);
            let served = builder.serve_connection_with_upgrades(io, hyper_svc).await;
            drop(watcher);
            served
        } else {
            let conn = builder.serve_connection_with_upgrades(io, hyper_svc);
            watcher.watch(conn.into_owned()).await
        };
        if let Err(e) = served {
            tracing::debug!(error = %e, "client connection ended with an error");
        }
    }
}

/// Mark an HTTP/1.x answer as the connection's last (hyper closes after it). HTTP/2 has no such
/// field (GOAWAY does it), and a protocol switch keeps its own `Connection`.
fn ask_to_close(answer: &mut Response<ResponseBody>, version: Version) {
    let http1 = matches!(version, Version::HTTP_10 | Version::HTTP_11);
    if http1 && answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        answer
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
}

#[cfg(test)]
mod close_tests {
    use super::*;

    fn answer(status: StatusCode) -> Response<ResponseBody> {
        let mut r = Response::new(ResponseBody::full(bytes::Bytes::new()));
        *r.status_mut() = status;
        r
    }

    #[test]
    fn only_http1_answers_are_marked_as_the_connections_last() {
        for version in [Version::HTTP_10, Version::HTTP_11] {
            let mut r = answer(StatusCode::OK);
            ask_to_close(&mut r, version);
            assert_eq!(r.headers()[CONNECTION], "close");
        }
        // HTTP/2 forbids the field (GOAWAY ends its connections), and a protocol switch keeps
        // its `Connection: upgrade`.
        let mut h2 = answer(StatusCode::OK);
        ask_to_close(&mut h2, Version::HTTP_2);
        assert!(h2.headers().get(CONNECTION).is_none());
        let mut switch = answer(StatusCode::SWITCHING_PROTOCOLS);
        switch
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        ask_to_close(&mut switch, Version::HTTP_11);
        assert_eq!(switch.headers()[CONNECTION], "upgrade");
    }
}

/// Read a PROXY protocol header into `buf`, within `timeout`, leaving in `buf` the bytes after
/// it; the header's source, if it gives one, or why the connection is to be closed.
async fn read_proxy_header(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<Option<SocketAddr>, &'static str> {
    let read = async {
        loop {
            match proxy_protocol::parse(buf) {
                proxy_protocol::Parsed::Header(h) => {
                    buf.advance(h.len);
                    return Ok(h.source);
                }
                proxy_protocol::Parsed::Invalid(why) => return Err(why),
                // Bounded: the parser says `Partial` only below a header's largest size.
                proxy_protocol::Parsed::Partial => {}
            }
            match stream.read_buf(buf).await {
                Ok(0) => return Err("closed before a whole PROXY header"),
                Ok(_) => {}
                Err(_) => return Err("read failed before a whole PROXY header"),
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err("no PROXY header in time"))
}

#[cfg(test)]
mod proxy_header_tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// The proxy's side of a loopback connection, and the client's.
    async fn connection() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (proxy_side, _) = l.accept().await.unwrap();
        (proxy_side, client)
    }

    #[tokio::test]
    async fn the_bytes_after_a_header_are_left_for_the_request() {
        let (mut s, mut client) = connection().await;
        // In pieces, as a slow balancer might send it.
        let whole = b"PROXY TCP4 203.0.113.9 10.0.0.1 51000 443\r\nGET / HTTP/1.1\r\n";
        let sender = tokio::spawn(async move {
            for piece in whole.chunks(7) {
                client.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            client
        });
        let mut buf = BytesMut::new();
        let got = read_proxy_header(&mut s, &mut buf, Duration::from_secs(10)).await;
        assert_eq!(got, Ok(Some("203.0.113.9:51000".parse().unwrap())));
        let _client = sender.await.unwrap();
        while buf.len() < 16 {
            s.read_buf(&mut buf).await.unwrap();
        }
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_header_that_does_not_come_in_time_closes_the_connection() {
        for sent in [&b""[..], b"PROXY TCP4 203.0.113.9"] {
            let (mut s, mut client) = connection().await;
            client.write_all(sent).await.unwrap();
            let start = tokio::time::Instant::now();
            let mut buf = BytesMut::new();
            let got = read_proxy_header(&mut s, &mut buf, Duration::from_secs(5)).await;
            assert_eq!(got, Err("no PROXY header in time"), "{sent:?}");
            assert!(start.elapsed() >= Duration::from_secs(5));
        }
    }
}
