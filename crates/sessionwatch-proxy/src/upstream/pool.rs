//! Upstream HTTP/1.1 connections.
//!
//! Forwarded requests go through a [`Pool`]: each worker thread owns one, with keep-alive
//! connections kept per backend. A connection goes back to the pool when the backend's answer has
//! been read to its end, so a request never waits behind another one's body.
//!
//! A request whose body is in hand (none, or a small one read whole first) is sent by the
//! request's own task on a connection it holds alone ([`h1`]). A request that streams its body,
//! or switches protocols, goes through hyper's client, each connection driven by a task on the
//! worker (see [`Lease`]). Both run over plain TCP or, for an `https://` backend, TLS
//! ([`Stream`]); a TLS connection is pooled and reused like a plain one.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use std::future::Future;

use futures_util::future::Either;
use http::header::UPGRADE;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use metrics::{Counter, Gauge};
use tokio::task::AbortHandle;

use super::Endpoint;
use crate::config::{ReusePolicy, UpstreamConfig};
use crate::extensions::FirstOnConnection;
use crate::slots::Slots;
use crate::upstream::body::{RequestBody, ResponseBody};

use super::plain::{self, Error as Http1Error};
use super::stream::{self, ConnectError, Stream};

/// An idle connection taken from the pool after this long asks its socket (one system call)
/// whether the backend sent anything meanwhile, rather than trusting the event loop's view,
/// which a busy worker refreshes only every so many tasks. Under load connections come back into
/// use well within it, so the keep-alive path makes no extra system call; the window it leaves
/// is the one no check can close: bytes that arrive just before or after the next request goes
/// out (see [`ReusePolicy`]).
const ASK_THE_SOCKET_AFTER: Duration = Duration::from_millis(5);

/// Why a request did not get an answer from the backend.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// The TCP connection could not be made.
    #[error("connect failed")]
    Connect(#[source] std::io::Error),
    /// The TCP connection was made, but the TLS handshake failed (a certificate the configured
    /// roots do not trust, or not for the expected name; no protocol in common).
    #[error("the TLS handshake failed")]
    Handshake(#[source] std::io::Error),
    /// The connection (TCP and, for an `https://` backend, the TLS handshake) was not made
    /// within the connect timeout.
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The request was sent (or being sent) and the exchange failed.
    #[error("exchange failed")]
    Exchange(#[source] hyper::Error),
    /// The request was sent (or being sent) and the exchange failed.
    #[error("exchange failed")]
    Http1(#[source] Http1Error),
}

impl UpstreamError {
    /// Whether the connection could not be made for want of the proxy's own resources (file
    /// descriptors, local ports, memory): the proxy's trouble, not the backend's.
    pub(crate) fn is_local_exhaustion(&self) -> bool {
        use rustix::io::Errno;
        let UpstreamError::Connect(e) = self else {
            return false;
        };
        [
            Errno::MFILE,
            Errno::NFILE,
            Errno::ADDRNOTAVAIL,
            Errno::NOBUFS,
            Errno::NOMEM,
        ]
        .iter()
        .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
    }

    /// Whether no connection to the backend could be made (the backend looks down).
    pub(crate) fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_)
                | UpstreamError::Handshake(_)
                | UpstreamError::ConnectTimeout(_)
        )
    }
}

/// Each backend's counter of connections closed because it sent bytes nobody asked for, by the
/// backend's slot (`None` for a slot without one).
pub(crate) type PoisonedCounters = Arc<dyn Fn(usize) -> Option<Counter> + Send + Sync>;

/// Each backend's gauge of open connections, by the backend's slot (`None` for a slot without
/// one).
pub(super) type ConnectionGauges = Arc<dyn Fn(usize) -> Option<Gauge> + Send + Sync>;

/// One open upstream connection in its backend's gauge, for as long as the connection lives:
/// kept beside our own connection's stream, or in the task that drives one of hyper's.
#[derive(Debug)]
pub(super) struct Counted(Option<Gauge>);

impl Counted {
    fn new(gauge: Option<Gauge>) -> Self {
        if let Some(g) = &gauge {
            g.increment(1.0);
        }
        Self(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            g.decrement(1.0);
        }
    }
}

/// Keep-alive connections to every backend, for the tasks of one worker thread.
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    /// Idle connections per backend index, the most recently used last: hyper's, and ours.
    /// A backend's lists are made the first time a connection to it goes back, so backends that
    /// join at run time need nothing from the pool beforehand.
    idle: Slots<Mutex<Vec<Idle>>>,
    plain: Slots<Mutex<Vec<PlainIdle>>>,
    reuse: ReusePolicy,
    /// Per backend: connections closed because the backend sent bytes nobody asked for.
    poisoned: PoisonedCounters,
    /// Per backend: connections open now.
    open: ConnectionGauges,
}

struct Idle {
    conn: Streaming,
    since: Instant,
}

/// One of hyper's client connections: the handle requests are sent through, and the task that
/// drives the connection. Dropped, it closes the connection at once, whatever the exchange on it
/// was doing: an exchange given up on (a response timeout, an error, an answer's body abandoned)
/// must not leave the task writing a client's body to a backend that no longer reads it, holding
/// the client's connection open with it.
struct Streaming {
    sender: SendRequest<RequestBody>,
    task: Option<AbortHandle>,
}

impl Streaming {
    /// Let the task run on its own: a protocol switch hands it the connection's stream.
    fn detach(mut self) {
        self.task = None;
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct PlainIdle {
    conn: plain::Conn,
    since: Instant,
}

/// Where a connection goes back to once the answer it carries has been read.
pub(crate) struct Home {
    pool: Arc<PoolInner>,
    slot: usize,
}

impl Home {
    pub(super) fn settle(self, after: plain::AfterAnswer) {
        self.pool.settle(self.slot, after);
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle_count())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// An empty pool with the configured limits; `poisoned` gives each backend's counter of
    /// connections closed for bytes sent unasked, `open` its gauge of connections open.
    pub(crate) fn new(
        cfg: &UpstreamConfig,
        poisoned: PoisonedCounters,
        open: ConnectionGauges,
    ) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                connect_timeout: cfg.connect_timeout,
                idle_timeout: cfg.pool_idle_timeout,
                max_idle: cfg.pool_max_idle_per_host,
                idle: Slots::default(),
                plain: Slots::default(),
                reuse: cfg.reuse,
                poisoned,
                open,
            }),
        }
    }

    /// Send `req` (origin-form target, `Host` set) to `backend` on an idle connection, or a new
    /// one. A request that a pooled connection closed before taking is sent again on the next.
    pub(crate) fn send<'a>(
        &'a self,
        backend: &'a Endpoint,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, UpstreamError>> + Send + 'a {
        let (parts, body) = req.into_parts();
        let may_reuse = self.inner.reuse == ReusePolicy::Always
            || parts.extensions.get::<FirstOnConnection>().is_none();
        match body
            .in_hand()
            .filter(|_| !parts.headers.contains_key(UPGRADE))
        {
            Some(bytes) => Either::Left(self.send_in_hand(backend, &parts, bytes, may_reuse)),
            // Boxed: the rare path's state would otherwise make every request's future larger
            // (and futures are moved, byte for byte, as they are awaited).
            None => Either::Right(Box::pin(self.send_streaming(
                backend,
                Request::from_parts(parts, body),
                may_reuse,
            ))),
        }
    }

    /// Send a request whose body is `body` on a connection this task holds alone. A request a
    /// reused connection failed to take (see [`Http1Error::may_retry`]) goes on the next one.
    /// The request is encoded before anything waits, so it is not part of the future.
    fn send_in_hand<'a>(
        &'a self,
        backend: &'a Endpoint,
        parts: &http::request::Parts,
        body: &[u8],
        may_reuse: bool,
    ) -> impl Future<Output = Result<Response<ResponseBody>, UpstreamError>> + Send + use<'a> {
        let slot = backend.slot;
        let idempotent = plain::is_idempotent(&parts.method);
        let head_request = parts.method == Method::HEAD;
        let request = plain::Encoded::new(parts, body);
        async move {
            // New connections are the rare case: their futures are boxed, as in `send`.
            let idle = if may_reuse {
                self.inner.checkout_plain(slot)
            } else {
                None
            };
            let (mut conn, mut reused) = match idle {
                Some(c) => (c, true),
                None => (Box::pin(self.connect_plain(backend)).await?, false),
            };
            loop {
                match conn.exchange(&request, head_request).await {
                    Ok(head) => return Ok(self.answer(slot, conn, head)),
                    Err(e) if reused && e.may_retry(idempotent) => {
                        tracing::debug!(error = %e, "pooled connection failed; sending again");
                        conn = match self.inner.checkout_plain(slot) {
                            Some(c) => c,
                            None => {
                                reused = false;
                                Box::pin(self.connect_plain(backend)).await?
                            }
                        };
                    }
                    Err(e) => return Err(UpstreamError::Http1(e)),
                }
            }
        }
    }

    /// The answer whose head has been read on `conn`: a body already whole frees the connection
    /// at once; one still arriving holds it until read.
    fn answer(
        &self,
        slot: usize,
        conn: plain::Conn,
        head: sessionwatch_h1::AnswerHead,
    ) -> Response<ResponseBody> {
        let home = || Home {
            pool: self.inner.clone(),
            slot,
        };
        let body = match plain::Body::start(conn, head.framing, head.keep_alive, home) {
            plain::Answer::Whole(data, after) => {
                self.inner.settle(slot, after);
                ResponseBody::full(data)
            }
            plain::Answer::Streaming(body) => ResponseBody::Upstream { body },
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        resp
    }

    /// Send `req` through hyper's client, on an idle connection or a new one.
    async fn send_streaming(
        &self,
        backend: &Endpoint,
        mut req: Request<RequestBody>,
        may_reuse: bool,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        let slot = backend.slot;
        while let Some(mut conn) = may_reuse.then(|| self.inner.checkout(slot)).flatten() {
            match conn.sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.lease(slot, conn, resp)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(UpstreamError::Exchange(e.into_error())),
                },
            }
        }
        let mut conn = self.connect(backend).await?;
        let resp = conn
            .sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Exchange)?;
        Ok(self.lease(slot, conn, resp))
    }

    /// Drop idle connections that are closed or idle past the idle timeout.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        for (_, slot) in self.inner.idle.iter() {
            let mut idle = slot.lock().unwrap_or_else(PoisonError::into_inner);
            idle.retain(|c| !c.conn.sender.is_closed() && !self.inner.expired(c.since, now));
        }
        for (i, slot) in self.inner.plain.iter() {
            let mut idle = slot.lock().unwrap_or_else(PoisonError::into_inner);
            // Once a second: each idle connection asks its socket.
            idle.retain_mut(|c| {
                !self.inner.expired(c.since, now)
                    && self.inner.still_usable(i, c.conn.idle_state_now())
            });
        }
    }

    /// Idle connections held, over all backends.
    pub(crate) fn idle_count(&self) -> usize {
        self.inner
            .idle
            .iter()
            .map(|(_, s)| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum::<usize>()
            + self
                .inner
                .plain
                .iter()
                .map(|(_, s)| s.lock().unwrap_or_else(PoisonError::into_inner).len())
                .sum::<usize>()
    }

    async fn connect_plain(&self, backend: &Endpoint) -> Result<plain::Conn, UpstreamError> {
        let stream = self.connect_stream(backend).await?;
        let counted = Counted::new((self.inner.open)(backend.slot));
        Ok(plain::Conn::new(stream, counted))
    }

    /// A new connection to `backend`: TCP, and TLS for an `https://` one, both within the
    /// connect timeout.
    async fn connect_stream(&self, backend: &Endpoint) -> Result<Stream, UpstreamError> {
        let host = backend.authority.host();
        // An IPv6 literal comes with its brackets.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = backend.authority.port_u16().unwrap_or(80);
        let connect = stream::connect(host, port, backend.tls.as_ref());
        match tokio::time::timeout(self.inner.connect_timeout, connect).await {
            Err(_) => Err(UpstreamError::ConnectTimeout(self.inner.connect_timeout)),
            Ok(Err(ConnectError::Tcp(e))) => Err(UpstreamError::Connect(e)),
            Ok(Err(ConnectError::Tls(e))) => Err(UpstreamError::Handshake(e)),
            Ok(Ok(stream)) => Ok(stream),
        }
    }

    async fn connect(&self, backend: &Endpoint) -> Result<Streaming, UpstreamError> {
        let stream = self.connect_stream(backend).await?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Exchange)?;
        let counted = Counted::new((self.inner.open)(backend.slot));
        let task = tokio::spawn(async move {
            // Counted while the task drives the connection (until it ends or is aborted).
            let _counted = counted;
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Streaming {
            sender,
            task: Some(task.abort_handle()),
        })
    }

    /// The answer with its body holding the connection until it has been read; a protocol
    /// switch keeps the connection for the upgraded stream.
    fn lease(
        &self,
        slot: usize,
        conn: Streaming,
        resp: Response<Incoming>,
    ) -> Response<ResponseBody> {
        let reusable = resp.status() != StatusCode::SWITCHING_PROTOCOLS;
        resp.map(|body| {
            let lease = if reusable {
                Some(Lease {
                    pool: self.inner.clone(),
                    slot,
                    conn,
                })
            } else {
                conn.detach();
                None
            };
            ResponseBody::upstream(body, lease)
        })
    }
}

impl PoolInner {
    /// The most recently used idle connection that can take a request now.
    fn checkout(&self, slot: usize) -> Option<Streaming> {
        let mut idle = self
            .idle
            .get(slot)?
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let mut busy = Vec::new();
        let mut found = None;
        while let Some(c) = idle.pop() {
            if c.conn.sender.is_closed() || self.expired(c.since, now) {
                continue;
            }
            if c.conn.sender.is_ready() {
                found = Some(c.conn);
                break;
            }
            // Still finishing its last exchange: try it again later.
            busy.push(c);
        }
        if !busy.is_empty() {
            idle.splice(0..0, busy);
        }
        found
    }

    /// The most recently used plain connection still open.
    fn checkout_plain(&self, slot: usize) -> Option<plain::Conn> {
        let mut idle = self
            .plain
            .get(slot)?
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        while let Some(mut c) = idle.pop() {
            let idle_for = now.saturating_duration_since(c.since);
            if idle_for >= self.idle_timeout {
                continue;
            }
            // A connection idle for a while asks its socket; one back in the pool a moment ago
            // (the usual case under load) trusts what the event loop has seen, at no cost.
            let state = if idle_for >= ASK_THE_SOCKET_AFTER {
                c.conn.idle_state_now()
            } else {
                c.conn.idle_state()
            };
            if self.still_usable(slot, state) {
                return Some(c.conn);
            }
        }
        None
    }

    /// Whether an idle connection in `state` can take a request; one the backend wrote to while
    /// idle is counted as poisoned (and, like a closed one, dropped by the caller).
    fn still_usable(&self, slot: usize, state: plain::IdleState) -> bool {
        match state {
            plain::IdleState::Usable => true,
            plain::IdleState::Closed => false,
            plain::IdleState::Stray => {
                self.count_poisoned(slot);
                false
            }
        }
    }

    fn count_poisoned(&self, slot: usize) {
        if let Some(c) = (self.poisoned)(slot) {
            c.increment(1);
        }
        tracing::debug!(
            slot,
            "closing an upstream connection: bytes past the end of an answer"
        );
    }

    /// A connection whose answer has been read: back to the pool, or closed.
    fn settle(&self, slot: usize, after: plain::AfterAnswer) {
        match after {
            plain::AfterAnswer::Reuse(conn) => self.put_back_plain(slot, conn),
            plain::AfterAnswer::Close => {}
            plain::AfterAnswer::Poisoned => self.count_poisoned(slot),
        }
    }

    fn put_back_plain(&self, slot: usize, conn: plain::Conn) {
        let Some(idle) = self.plain.get_or_init(slot, Mutex::default) else {
            return;
        };
        let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(PlainIdle {
                conn,
                since: Instant::now(),
            });
        }
    }

    fn expired(&self, since: Instant, now: Instant) -> bool {
        now.saturating_duration_since(since) >= self.idle_timeout
    }

    fn put_back(&self, slot: usize, conn: Streaming) {
        if conn.sender.is_closed() {
            return;
        }
        let Some(idle) = self.idle.get_or_init(slot, Mutex::default) else {
            return;
        };
        let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

/// A connection lent to one answer: back to the pool once the answer's body has been read to its
/// end; dropped (and so closed) if the body is abandoned or fails.
pub(crate) struct Lease {
    pool: Arc<PoolInner>,
    slot: usize,
    conn: Streaming,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("slot", &self.slot).finish()
    }
}

impl Lease {
    /// The body was read whole: the connection can take the next request.
    pub(crate) fn release(self) {
        self.pool.put_back(self.slot, self.conn);
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    /// A backend on 127.0.0.1 that counts the connections it accepts and answers `body` to every
    /// request (`/close` answers with `Connection: close`).
    async fn counting_backend(body: &'static str) -> (Endpoint, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| async move {
                        let mut resp =
                            Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                        if req.uri().path() == "/close" {
                            resp.headers_mut()
                                .insert(http::header::CONNECTION, "close".parse().unwrap());
                        }
                        Ok::<_, Infallible>(resp)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (endpoint_at(addr), accepted)
    }

    fn endpoint_at(addr: std::net::SocketAddr) -> Endpoint {
        Endpoint {
            slot: 0,
            authority: addr.to_string().parse().unwrap(),
            tls: None,
        }
    }

    fn config(idle_timeout: Duration, reuse: ReusePolicy) -> UpstreamConfig {
        UpstreamConfig {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            pool_idle_timeout: idle_timeout,
            pool_max_idle_per_host: 4,
            reuse,
            request_body_timeout: Duration::from_secs(5),
        }
    }

    fn pool(idle_timeout: Duration) -> Pool {
        Pool::new(
            &config(idle_timeout, ReusePolicy::Always),
            Arc::new(|_| None),
            Arc::new(|_| None),
        )
    }

    /// A pool under `reuse`, and its count of poisoned connections.
    fn counted_pool(reuse: ReusePolicy) -> (Pool, Arc<std::sync::atomic::AtomicU64>) {
        let poisoned = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let pool = Pool::new(
            &config(Duration::from_secs(60), reuse),
            Arc::new({
                let poisoned = poisoned.clone();
                move |_| Some(Counter::from_arc(poisoned.clone()))
            }),
            Arc::new(|_| None),
        );
        (pool, poisoned)
    }

    fn get(path: &str) -> Request<RequestBody> {
        Request::builder()
            .uri(path)
            .header(http::header::HOST, "farm.test")
            .body(RequestBody::Empty)
            .unwrap()
    }

    async fn read_whole(resp: Response<ResponseBody>) -> Bytes {
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_connection_read_to_its_end_serves_the_next_request() {
        let (endpoint, accepted) = counting_backend("hello").await;
        let backend = &endpoint;
        let pool = pool(Duration::from_secs(60));
        for _ in 0..5 {
            let resp = pool.send(backend, get("/")).await.unwrap();
            assert_eq!(read_whole(resp).await, "hello");
            // The connection task finishes its exchange on its own turn.
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_body_that_came_with_the_head_frees_its_connection_at_once() {
        let (endpoint, accepted) = counting_backend("short").await;
        let backend = &endpoint;
        let pool = pool(Duration::from_secs(60));
        let first = pool.send(backend, get("/")).await.unwrap();
        // Back in the pool before anyone reads the body: the next request takes it.
        assert_eq!(pool.idle_count(), 1);
        let second = pool.send(backend, get("/")).await.unwrap();
        assert_eq!(read_whole(first).await, "short");
        assert_eq!(read_whole(second).await, "short");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_abandoned_body_is_not_reused() {
        let big = "x".repeat(4 << 20);
        let (endpoint, accepted) = counting_backend(big.leak()).await;
        let backend = &endpoint;
        let pool = pool(Duration::from_secs(60));
        let resp = pool.send(backend, get("/")).await.unwrap();
        assert!(matches!(resp.body(), ResponseBody::Upstream { .. }));
        drop(resp);
        assert_eq!(pool.idle_count(), 0);
        let resp = pool.send(backend, get("/")).await.unwrap();
        assert_eq!(read_whole(resp).await.len(), 4 << 20);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // Read to its end, the big body's connection is kept.
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_backend_closes_is_replaced_without_an_error() {
        let (endpoint, accepted) = counting_backend("ok").await;
        let backend = &endpoint;
        let pool = pool(Duration::from_secs(60));
        for _ in 0..3 {
            let resp = pool.send(backend, get("/close")).await.unwrap();
            assert_eq!(read_whole(resp).await, "ok");
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn idle_connections_past_the_timeout_are_swept() {
        let (endpoint, accepted) = counting_backend("ok").await;
        let backend = &endpoint;
        let pool = pool(Duration::from_millis(20));
        let resp = pool.send(backend, get("/")).await.unwrap();
        read_whole(resp).await;
        tokio::task::yield_now().await;
        assert_eq!(pool.idle_count(), 1);
        tokio::time::sleep(Duration::from_millis(40)).await;
        pool.sweep();
        assert_eq!(pool.idle_count(), 0);
        let resp = pool.send(backend, get("/")).await.unwrap();
        read_whole(resp).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn open_connections_are_counted_on_both_clients_until_they_close() {
        use std::sync::atomic::AtomicU64;
        let open = Arc::new(AtomicU64::new(0));
        let value = || f64::from_bits(open.load(Ordering::SeqCst));
        let pool = Pool::new(
            &config(Duration::from_millis(20), ReusePolicy::Always),
            Arc::new(|_| None),
            Arc::new({
                let open = open.clone();
                move |_| Some(Gauge::from_arc(open.clone()))
            }),
        );
        let (endpoint, accepted) = counting_backend("ok").await;
        // Our own client's connection, then one of hyper's (a request that may switch
        // protocols goes through hyper; this backend answers it 200, so it is pooled too).
        read_whole(pool.send(&endpoint, get("/")).await.unwrap()).await;
        assert_eq!(value(), 1.0, "the idle connection is open");
        let mut upgrade = get("/");
        upgrade
            .headers_mut()
            .insert(UPGRADE, http::HeaderValue::from_static("websocket"));
        read_whole(pool.send(&endpoint, upgrade).await.unwrap()).await;
        tokio::task::yield_now().await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(value(), 2.0, "both connections are open, idle in the pool");
        tokio::time::sleep(Duration::from_millis(40)).await;
        pool.sweep();
        // hyper's connection closes when its task, aborted, is dropped.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(value(), 0.0, "swept connections are no longer counted");
    }

    #[test]
    fn running_out_of_local_resources_is_not_the_backends_fault() {
        let connect = |code| UpstreamError::Connect(std::io::Error::from_raw_os_error(code));
        for errno in [rustix::io::Errno::MFILE, rustix::io::Errno::ADDRNOTAVAIL] {
            let e = connect(errno.raw_os_error());
            assert!(e.is_local_exhaustion() && e.is_connect(), "{e:?}");
        }
        let refused = connect(rustix::io::Errno::CONNREFUSED.raw_os_error());
        assert!(!refused.is_local_exhaustion() && refused.is_connect());
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let endpoint = endpoint_at(addr);
        let err = pool(Duration::from_secs(60))
            .send(&endpoint, get("/"))
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err:?}");
    }

    /// What a scripted backend does with one request.
    enum Act {
        /// Send these bytes and wait for the next request.
        Reply(&'static str),
        /// Send these bytes and close.
        ReplyClose(&'static str),
        /// Close without answering.
        Close,
        /// Send the first bytes, then, after a pause and unasked, the second.
        ReplyThenStray(&'static str, &'static str),
    }

    /// A backend on 127.0.0.1 speaking raw bytes: `script(connection, request)` (both counted
    /// from 0) says what to do. It returns the backends and the request heads it saw.
    async fn scripted(
        script: impl Fn(usize, usize) -> Act + Send + Sync + 'static,
    ) -> (Endpoint, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let script = Arc::new(script);
        tokio::spawn(async move {
            let mut conn_no = 0;
            while let Ok((mut stream, _)) = listener.accept().await {
                let (script, log) = (script.clone(), log.clone());
                let this = conn_no;
                conn_no += 1;
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for req_no in 0.. {
                        let end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        let body_len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        while buf.len() < end + body_len {
                            let mut chunk = [0u8; 4096];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..end + body_len);
                        log.lock().unwrap().push(head);
                        match script(this, req_no) {
                            Act::Reply(bytes) => {
                                let _ = stream.write_all(bytes.as_bytes()).await;
                            }
                            Act::ReplyClose(bytes) => {
                                let _ = stream.write_all(bytes.as_bytes()).await;
                                break;
                            }
                            Act::Close => break,
                            Act::ReplyThenStray(answer, stray) => {
                                let _ = stream.write_all(answer.as_bytes()).await;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                let _ = stream.write_all(stray.as_bytes()).await;
                            }
                        }
                    }
                    drop(stream);
                    log.lock().unwrap().push("closed".to_owned());
                });
            }
        });
        (endpoint_at(addr), seen)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    fn request(method: Method, path: &str, body: &'static str) -> Request<RequestBody> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "farm.test")
            .body(RequestBody::Buffered {
                data: Some(Bytes::from_static(body.as_bytes())),
            })
            .unwrap()
    }

    #[tokio::test]
    async fn chunked_answers_pass_through_and_keep_their_connection() {
        let (endpoint, seen) = scripted(|_, _| {
            Act::Reply(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
            )
        })
        .await;
        let backend = &endpoint;
        let pool = pool(Duration::from_secs(60));
        for _ in 0..3 {
            let resp = pool.send(backend, get("/")).await.unwrap();
            assert!(!resp.headers().contains_key(http::header::CONTENT_LENGTH));
            assert_eq!(read_whole(resp).await, "hello, world");
        }
        assert_eq!(seen.lock().unwrap().len(), 3);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn an_answer_delimited_by_close_is_read_to_the_end_and_not_reused() {
        let (endpoint, _) =
            scripted(|_, _| Act::ReplyClose("HTTP/1.1 200 OK\r\n\r\nuntil the end")).await;
        let backend = &endpoint;
        let pool = pool(Duration::from_secs(60));
        for _ in 0..2 {
            let resp = pool.send(backend, get("/")).await.unwrap();
            assert_eq!(read_whole(resp).await, "until the end");
            assert_eq!(pool.idle_count(), 0);
        }
    }

    #[tokio::test]
    async fn interim_answers_are_skipped() {
        let (endpoint, _) = scripted(|_, _| {
            Act::Reply(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
                 HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\ndone",
            )
        })
        .await;
        let resp = pool(Duration::from_secs(60))
            .send(&endpoint, request(Method::POST, "/", "x=1"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(read_whole(resp).await, "done");
    }

    #[tokio::test]
    async fn a_pooled_connection_the_backend_closed_while_idle_is_not_used() {
        // The first connection's second request finds it closed: it never gets there.
        let (endpoint, seen) = scripted(|conn, _| {
            if conn == 0 {
                Act::ReplyClose(OK)
            } else {
                Act::Reply(OK)
            }
        })
        .await;
        let backend = &endpoint;
        let pool = pool(Duration::from_secs(60));
        // `OK` does not say `Connection: close`, so the pool keeps the connection...
        read_whole(pool.send(backend, get("/1")).await.unwrap()).await;
        assert_eq!(pool.idle_count(), 1);
        // ...and finds it closed before sending the next request on it. A POST is not sent
        // twice, so only that check can save it.
        while !seen.lock().unwrap().iter().any(|h| h == "closed") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let resp = pool
            .send(backend, request(Method::POST, "/2", "x=1"))
            .await
            .unwrap();
        assert_eq!(read_whole(resp).await, "ok");
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.iter().filter(|h| h.contains("HTTP/1.1")).count(),
            2,
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn an_idempotent_request_a_reused_connection_dropped_is_sent_again() {
        // The first connection answers once, then closes on the next request unanswered.
        let (endpoint, seen) = scripted(|conn, req| match (conn, req) {
            (0, 0) => Act::Reply(OK),
            (0, _) => Act::Close,
            _ => Act::Reply(OK),
        })
        .await;
        let backend = &endpoint;
        let pool = pool(Duration::from_secs(60));
        read_whole(pool.send(backend, get("/first")).await.unwrap()).await;
        let resp = pool.send(backend, get("/again")).await.unwrap();
        assert_eq!(read_whole(resp).await, "ok");
        let seen = seen.lock().unwrap();
        let again: Vec<_> = seen
            .iter()
            .filter(|h| h.starts_with("GET /again"))
            .collect();
        assert_eq!(again.len(), 2, "{seen:?}");
    }

    #[tokio::test]
    async fn a_post_a_reused_connection_dropped_is_not_sent_again() {
        let (endpoint, seen) = scripted(|conn, req| match (conn, req) {
            (0, 0) => Act::Reply(OK),
            (0, _) => Act::Close,
            _ => Act::Reply(OK),
        })
        .await;
        let backend = &endpoint;
        let pool = pool(Duration::from_secs(60));
        read_whole(pool.send(backend, get("/first")).await.unwrap()).await;
        let err = pool
            .send(backend, request(Method::POST, "/pay", "amount=1"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, UpstreamError::Http1(Http1Error::ClosedBeforeAnswer)),
            "{err:?}"
        );
        let requests = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.contains("HTTP/1.1"))
            .count();
        assert_eq!(requests, 2);
    }

    #[tokio::test]
    async fn broken_answers_are_errors_and_their_connections_are_dropped() {
        let (endpoint, _) = scripted(|conn, _| match conn {
            0 => Act::Reply("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"),
            1 => Act::Reply("this is not http\r\n\r\n"),
            2 => Act::ReplyClose("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort"),
            3 => Act::ReplyClose("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"),
            _ => Act::Reply(OK),
        })
        .await;
        let backend = &endpoint;
        let pool = pool(Duration::from_secs(60));
        for _ in 0..2 {
            let err = pool.send(backend, get("/")).await.unwrap_err();
            assert!(
                matches!(err, UpstreamError::Http1(Http1Error::Invalid(_))),
                "{err:?}"
            );
        }
        for _ in 0..2 {
            let resp = pool.send(backend, get("/")).await.unwrap();
            assert!(resp.into_body().collect().await.is_err());
        }
        assert_eq!(pool.idle_count(), 0);
        let resp = pool.send(backend, get("/")).await.unwrap();
        assert_eq!(read_whole(resp).await, "ok");
    }

    #[tokio::test]
    async fn the_request_is_written_with_its_framing() {
        let (endpoint, seen) = scripted(|_, _| Act::Reply(OK)).await;
        let backend = &endpoint;
        let pool = pool(Duration::from_secs(60));
        let mut post = request(Method::POST, "/login?next=%2F", "user=a");
        post.headers_mut()
            .insert(http::header::CONTENT_LENGTH, "99".parse().unwrap());
        read_whole(pool.send(backend, post).await.unwrap()).await;
        let head = seen.lock().unwrap()[0].clone();
        assert!(
            head.starts_with("POST /login?next=%2F HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\ncontent-length: 6\r\n"), "{head}");
        assert!(!head.contains("99"), "{head}");
    }

    #[tokio::test]
    async fn bytes_past_the_end_of_an_answer_poison_its_connection() {
        let (endpoint, seen) = scripted(|conn, _| match conn {
            0 => Act::Reply("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"),
            _ => Act::Reply(OK),
        })
        .await;
        let backend = &endpoint;
        let (pool, poisoned) = counted_pool(ReusePolicy::Always);
        let resp = pool.send(backend, get("/")).await.unwrap();
        assert_eq!(read_whole(resp).await, "ok");
        assert_eq!(pool.idle_count(), 0, "the connection was kept");
        assert_eq!(poisoned.load(Ordering::SeqCst), 1);
        let resp = pool.send(backend, get("/")).await.unwrap();
        assert_eq!(read_whole(resp).await, "ok");
        assert_eq!(
            seen.lock()
                .unwrap()
                .iter()
                .filter(|h| h.contains("HTTP/1.1"))
                .count(),
            2
        );
    }

    #[tokio::test]
    async fn bytes_sent_to_an_idle_connection_poison_it() {
        let (endpoint, _) = scripted(|conn, _| match conn {
            0 => Act::ReplyThenStray(OK, "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nPWND"),
            _ => Act::Reply(OK),
        })
        .await;
        let backend = &endpoint;
        let (pool, poisoned) = counted_pool(ReusePolicy::Always);
        read_whole(pool.send(backend, get("/")).await.unwrap()).await;
        assert_eq!(pool.idle_count(), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Taken from the pool, the connection shows what arrived: closed, not used.
        let resp = pool.send(backend, get("/")).await.unwrap();
        assert_eq!(read_whole(resp).await, "ok");
        assert_eq!(poisoned.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_sweep_closes_a_poisoned_idle_connection() {
        let (endpoint, _) = scripted(|_, _| {
            Act::ReplyThenStray(OK, "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nPWND")
        })
        .await;
        let backend = &endpoint;
        let (pool, poisoned) = counted_pool(ReusePolicy::Always);
        read_whole(pool.send(backend, get("/")).await.unwrap()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Dropped from the pool, the connection is closed.
        pool.sweep();
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(poisoned.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn under_safe_reuse_a_first_request_never_takes_an_idle_connection() {
        let (endpoint, accepted) = counting_backend("ok").await;
        let backend = &endpoint;
        let (pool, _) = counted_pool(ReusePolicy::Safe);
        let first = || {
            let mut req = get("/");
            req.extensions_mut().insert(FirstOnConnection);
            req
        };
        read_whole(pool.send(backend, first()).await.unwrap()).await;
        tokio::task::yield_now().await;
        assert_eq!(pool.idle_count(), 1);
        read_whole(pool.send(backend, first()).await.unwrap()).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // A later request of a client connection may reuse.
        read_whole(pool.send(backend, get("/")).await.unwrap()).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A backend on its own OS thread, one connection at a time: the first request is answered
    /// `ok`, then 20 ms later, unasked, `PWND`; later requests are answered `own`.
    fn thread_backend() -> std::net::SocketAddr {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            // Counted over every connection: only the very first request is answered twice.
            let mut n = 0;
            while let Ok((mut s, _)) = l.accept() {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let r = match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(r) => r,
                    };
                    buf.extend_from_slice(&chunk[..r]);
                    while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..i + 4);
                        let _ = if n == 0 {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                            std::thread::sleep(Duration::from_millis(20));
                            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nPWND")
                        } else {
                            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nown")
                        };
                        n += 1;
                    }
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn stray_bytes_the_event_loop_has_not_seen_yet_are_still_caught() {
        let endpoint = endpoint_at(thread_backend());
        let backend = &endpoint;
        let (pool, poisoned) = counted_pool(ReusePolicy::Always);
        read_whole(pool.send(backend, get("/a")).await.unwrap()).await;
        // The worker is busy for 100 ms with no turn of its event loop: the stray answer sits
        // in the kernel's buffer before the next request takes the connection.
        std::thread::sleep(Duration::from_millis(100));
        let answer = read_whole(pool.send(backend, get("/b")).await.unwrap()).await;
        assert_eq!(answer, "own", "another exchange's bytes were handed to /b");
        assert_eq!(poisoned.load(Ordering::SeqCst), 1);
    }
}
