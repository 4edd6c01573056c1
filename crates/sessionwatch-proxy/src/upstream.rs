//! Upstream HTTP/1.1 connections.
//!
//! Forwarded requests go through a [`Pool`]: each worker thread owns one, with keep-alive
//! connections kept per backend, each driven by a task on that worker. A connection goes back to
//! the pool when the backend's answer has been read to its end (see [`Lease`]), so a request never
//! waits behind another one's body. Health probes use hyper-util's pooled client ([`client`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::backends::Backend;
use crate::body::{RequestBody, ResponseBody};
use crate::config::UpstreamConfig;

/// The client health probes go through.
pub type UpstreamClient = Client<HttpConnector, RequestBody>;

/// A client with the configured timeouts and pool limits, for health probes.
pub fn client(cfg: &UpstreamConfig) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(cfg.connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(cfg.pool_idle_timeout)
        .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// Why a request did not get an answer from the backend.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connection could not be made.
    #[error("connect failed")]
    Connect(#[source] std::io::Error),
    /// The TCP connection was not made within the connect timeout.
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The request was sent (or being sent) and the exchange failed.
    #[error("exchange failed")]
    Exchange(#[source] hyper::Error),
}

impl UpstreamError {
    /// Whether no connection to the backend could be made (the backend looks down).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_) | UpstreamError::ConnectTimeout(_)
        )
    }
}

/// Keep-alive connections to every backend, for the tasks of one worker thread.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    /// Idle connections per backend index, the most recently used last.
    idle: Box<[Mutex<Vec<Idle>>]>,
}

struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle_count())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// An empty pool for `backends` backends with the configured limits.
    pub fn new(cfg: &UpstreamConfig, backends: usize) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                connect_timeout: cfg.connect_timeout,
                idle_timeout: cfg.pool_idle_timeout,
                max_idle: cfg.pool_max_idle_per_host,
                idle: (0..backends).map(|_| Mutex::new(Vec::new())).collect(),
            }),
        }
    }

    /// Send `req` (origin-form target, `Host` set) to `backend` on an idle connection, or a new
    /// one. A request that a pooled connection closed before taking is sent again on the next.
    pub async fn send(
        &self,
        backend: &Backend,
        mut req: Request<RequestBody>,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        let slot = backend.id.index();
        while let Some(mut sender) = self.inner.checkout(slot) {
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.lease(slot, sender, resp)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(UpstreamError::Exchange(e.into_error())),
                },
            }
        }
        let mut sender = self.connect(backend).await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Exchange)?;
        Ok(self.lease(slot, sender, resp))
    }

    /// Drop idle connections that are closed or idle past the idle timeout.
    pub fn sweep(&self) {
        let now = Instant::now();
        for slot in self.inner.idle.iter() {
            let mut idle = slot.lock().unwrap_or_else(PoisonError::into_inner);
            idle.retain(|c| !c.sender.is_closed() && !self.inner.expired(c, now));
        }
    }

    /// Idle connections held, over all backends.
    pub fn idle_count(&self) -> usize {
        self.inner
            .idle
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    async fn connect(&self, backend: &Backend) -> Result<SendRequest<RequestBody>, UpstreamError> {
        let host = backend.authority.host();
        // An IPv6 literal comes with its brackets.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = backend.authority.port_u16().unwrap_or(80);
        let stream =
            tokio::time::timeout(self.inner.connect_timeout, TcpStream::connect((host, port)))
                .await
                .map_err(|_| UpstreamError::ConnectTimeout(self.inner.connect_timeout))?
                .map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Exchange)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// The answer with its body holding the connection until it has been read; a protocol
    /// switch keeps the connection for the upgraded stream.
    fn lease(
        &self,
        slot: usize,
        sender: SendRequest<RequestBody>,
        resp: Response<Incoming>,
    ) -> Response<ResponseBody> {
        let reusable = resp.status() != StatusCode::SWITCHING_PROTOCOLS;
        resp.map(|body| {
            let lease = reusable.then(|| Lease {
                pool: self.inner.clone(),
                slot,
                sender,
            });
            ResponseBody::upstream(body, lease)
        })
    }
}

impl PoolInner {
    /// The most recently used idle connection that can take a request now.
    fn checkout(&self, slot: usize) -> Option<SendRequest<RequestBody>> {
        let mut idle = self
            .idle
            .get(slot)?
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let mut busy = Vec::new();
        let mut found = None;
        while let Some(c) = idle.pop() {
            if c.sender.is_closed() || self.expired(&c, now) {
                continue;
            }
            if c.sender.is_ready() {
                found = Some(c.sender);
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

    fn expired(&self, c: &Idle, now: Instant) -> bool {
        now.saturating_duration_since(c.since) >= self.idle_timeout
    }

    fn put_back(&self, slot: usize, sender: SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let Some(idle) = self.idle.get(slot) else {
            return;
        };
        let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// A connection lent to one answer: back to the pool once the answer's body has been read to its
/// end; dropped (and so closed) if the body is abandoned or fails.
pub struct Lease {
    pool: Arc<PoolInner>,
    slot: usize,
    sender: SendRequest<RequestBody>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("slot", &self.slot).finish()
    }
}

impl Lease {
    /// The body was read whole: the connection can take the next request.
    pub fn release(self) {
        self.pool.put_back(self.slot, self.sender);
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;
    use crate::backends::Backends;
    use crate::config::BackendConfig;

    /// A backend on 127.0.0.1 that counts the connections it accepts and answers `body` to every
    /// request (`/close` answers with `Connection: close`).
    async fn counting_backend(body: &'static str) -> (Backends, Arc<AtomicUsize>) {
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
        (backends_at(addr), accepted)
    }

    fn backends_at(addr: std::net::SocketAddr) -> Backends {
        Backends::new(&[BackendConfig {
            name: "a".into(),
            authority: addr.to_string().parse().unwrap(),
            weight: 1,
        }])
    }

    fn pool(idle_timeout: Duration) -> Pool {
        Pool::new(
            &UpstreamConfig {
                connect_timeout: Duration::from_secs(2),
                response_timeout: Duration::from_secs(5),
                pool_idle_timeout: idle_timeout,
                pool_max_idle_per_host: 4,
            },
            1,
        )
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
        let (backends, accepted) = counting_backend("hello").await;
        let backend = &backends.all()[0];
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
    async fn an_abandoned_body_is_not_reused() {
        let (backends, accepted) = counting_backend("a body nobody reads").await;
        let backend = &backends.all()[0];
        let pool = pool(Duration::from_secs(60));
        let resp = pool.send(backend, get("/")).await.unwrap();
        drop(resp);
        assert_eq!(pool.idle_count(), 0);
        let resp = pool.send(backend, get("/")).await.unwrap();
        assert_eq!(read_whole(resp).await, "a body nobody reads");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_backend_closes_is_replaced_without_an_error() {
        let (backends, accepted) = counting_backend("ok").await;
        let backend = &backends.all()[0];
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
        let (backends, accepted) = counting_backend("ok").await;
        let backend = &backends.all()[0];
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
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let backends = backends_at(addr);
        let err = pool(Duration::from_secs(60))
            .send(&backends.all()[0], get("/"))
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err:?}");
    }
}
