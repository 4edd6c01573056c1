//! The accept loop: HTTP/1.1 and HTTP/2 on one port, upgrades allowed, graceful shutdown through
//! a watch channel. Plain HTTP/1.1 requests are served by [`front`]; the first request of a
//! connection that is anything else hands it to hyper-util's auto builder.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::Entry;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use sessionwatch_tower::X_REQUEST_ID;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::{Service, ServiceExt};

use crate::body::{RequestBody, ResponseBody};
use crate::front::{self, Handler as _, Prefixed};
use crate::headers::{is_upgrade, set_forwarding, strip_hop_by_hop};

/// A slow client gets this long to send its request head (slowloris defence).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// On shutdown, open connections get this long to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client gets to send a request.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For a request's head (and, idle, for the next one to start).
    pub head: Duration,
    /// For a short body, read whole before forwarding (the upstream response timeout).
    pub body: Duration,
    /// For an answer's next bytes to go out (`listen.send_timeout`).
    pub send: Duration,
}

/// Request ids for one worker: its prefix and a counter, formatted without allocating a
/// `String`; cheap enough for every request, unique across workers and, in practice, restarts.
#[derive(Clone)]
pub struct RequestIds {
    prefix: u32,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    /// Ids `<prefix>-<counter>`, in hex, the counter from 1.
    pub fn new(prefix: u32) -> Self {
        Self {
            prefix,
            next: Arc::new(AtomicU64::new(1)),
        }
    }

    fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 25];
        let hex = b"0123456789abcdef";
        for (i, slot) in buf[..8].iter_mut().enumerate() {
            *slot = hex[((self.prefix >> (28 - 4 * i)) & 0xf) as usize];
        }
        buf[8] = b'-';
        for (i, slot) in buf[9..].iter_mut().enumerate() {
            *slot = hex[((n >> (60 - 4 * i)) & 0xf) as usize];
        }
        // Hex digits and '-' always make a valid value; the fallback is never taken.
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }
}

/// Serve `svc` on `listener` until `shutdown` turns true, then drain open connections.
pub async fn serve<S>(
    listener: TcpListener,
    svc: S,
    ids: RequestIds,
    timeouts: Timeouts,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.head)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    loop {
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
            _ = crate::server::stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let mut client = Client {
            svc: svc.clone(),
            ids: ids.clone(),
            // Formatted once per connection, for `X-Forwarded-For`.
            client_ip: HeaderValue::from_str(&addr.ip().to_string()).ok(),
        };
        let mut builder = builder.clone();
        let watcher = graceful.watcher();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            let ended = front::serve_plain(&mut stream, &mut client, timeouts, &mut shutdown).await;
            let front::Ended::NotPlain(prefix) = ended else {
                return;
            };
            let hyper_svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let answer = client.handle(req.map(RequestBody::from));
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let io = TokioIo::new(Prefixed::new(prefix, stream));
            let served = if *shutdown.borrow() {
                // Shutting down already: a graceful watch would drop the connection before its
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
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// One client connection's side of the proxy: the services, and what the accept loop does to
/// every request before they see it and to every answer.
#[derive(Clone)]
struct Client<S> {
    svc: S,
    ids: RequestIds,
    client_ip: Option<HeaderValue>,
}

impl<S> front::Handler for Client<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    fn handle(
        &self,
        mut req: Request<RequestBody>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'static + use<S> {
        // Hop-by-hop headers go before anything reads the request, so the session layer sees
        // exactly the cookies the backend will see (a `Connection: cookie` must not hide them
        // from the backend alone).
        let upgrade = req.version() == http::Version::HTTP_11 && is_upgrade(req.headers());
        strip_hop_by_hop(req.headers_mut(), upgrade);
        set_forwarding(&mut req, self.client_ip.clone());
        let id = match req.headers().get(X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = self.ids.next();
                req.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        let answer = self.svc.clone().oneshot(req);
        async move {
            let mut resp = match answer.await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            if let Entry::Vacant(e) = resp.headers_mut().entry(X_REQUEST_ID) {
                e.insert(id);
            }
            resp
        }
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone). The guard `wait_for` returns is
/// not `Send`, so it is dropped here rather than held across a `select!`.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
