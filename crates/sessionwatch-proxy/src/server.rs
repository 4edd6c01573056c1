//! The accept loop: HTTP/1.1 and HTTP/2 on one port (hyper-util's auto builder), upgrades
//! allowed, graceful shutdown through a watch channel.

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::{Service, ServiceExt};

use crate::body::{RequestBody, ResponseBody};
use crate::forward::ClientInfo;
use crate::headers::{is_upgrade, strip_hop_by_hop};

/// A slow client gets this long to send its request head (slowloris defence).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// On shutdown, open connections get this long to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `svc` on `listener` until `shutdown` turns true, then drain open connections.
pub async fn serve<S>(listener: TcpListener, svc: S, mut shutdown: watch::Receiver<bool>)
where
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
        .header_read_timeout(HEADER_READ_TIMEOUT)
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
        let svc = svc.clone();
        let client = ClientInfo::new(addr);
        let hyper_svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let mut req = req.map(RequestBody::from);
            // Hop-by-hop headers go before anything reads the request, so the session layer sees
            // exactly the cookies the backend will see (a `Connection: cookie` must not hide
            // them from the backend alone).
            let upgrade = req.version() == http::Version::HTTP_11 && is_upgrade(req.headers());
            strip_hop_by_hop(req.headers_mut(), upgrade);
            req.extensions_mut().insert(client.clone());
            svc.clone().oneshot(req)
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), hyper_svc);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
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

/// Resolves once `shutdown` turns true (or its sender is gone). The guard `wait_for` returns is
/// not `Send`, so it is dropped here rather than held across a `select!`.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
