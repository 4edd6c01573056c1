//! The per-core workers: each has its own listening socket (`SO_REUSEPORT`), its own
//! single-threaded runtime and its own upstream pool, so that a request is read, forwarded and
//! answered on one thread without waking another.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sessionwatch_tower::SessionLayer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::stack;
use crate::backends::Backends;
use crate::backends::health::Health;
use crate::config::{ForwardedConfig, PinConfig, UpstreamConfig};
use crate::listen::tls::TlsListener;
use crate::listen::{self, ClientLimits, ConnectionCap};
use crate::metrics::Metrics;
use crate::prepare::RequestIds;
use crate::route::balancer::Balancer;
use crate::shutdown::DrainWatch;
use crate::upstream::{Pool, Upstream};

/// A slow client gets this long to send its request head (slowloris defence).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One listening socket per worker on the same address, with `SO_REUSEPORT` so the kernel
/// spreads new connections across them. With port 0, the first socket picks the port and the
/// others join it.
pub(super) fn bind_workers(
    addr: SocketAddr,
    workers: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(workers);
    let mut target = addr;
    for _ in 0..workers.max(1) {
        let socket = match target {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(target)?;
        let listener = socket.listen(1024)?.into_std()?;
        target = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// What one worker thread needs to build its request stack: shared state by `Arc`, and its
/// own listener and (built on its thread) its own upstream connection pool, so that a request
/// is read, forwarded and answered on one thread without waking another.
pub(super) struct Worker {
    pub(super) listener: std::net::TcpListener,
    pub(super) session: SessionLayer,
    pub(super) request_ids: RequestIds,
    pub(super) backends: Arc<Backends>,
    pub(super) balancer: Arc<Balancer>,
    pub(super) upstream: UpstreamConfig,
    pub(super) send_timeout: Duration,
    pub(super) max_header_bytes: usize,
    pub(super) max_connections: usize,
    pub(super) forwarded: ForwardedConfig,
    /// The handshake, with `[listen.tls]`.
    pub(super) tls: Option<TlsListener>,
    pub(super) pin: Arc<ArcSwap<PinConfig>>,
    pub(super) health: Arc<Health>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) drain: DrainWatch,
    pub(super) access_log: bool,
}

impl Worker {
    /// Run the worker on its own thread with a single-threaded runtime; the returned task ends
    /// when the thread has drained its connections (what is left then is dropped with the
    /// runtime).
    pub(super) fn spawn(self, index: usize) -> std::io::Result<JoinHandle<()>> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("sessionwatch-worker-{index}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start a worker runtime");
                        return;
                    }
                };
                runtime.block_on(self.run());
                drop(done_tx);
            })?;
        Ok(tokio::spawn(async move {
            let _ = done_rx.await;
        }))
    }

    async fn run(self) {
        let listener = match TcpListener::from_std(self.listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot register a worker's listener");
                return;
            }
        };
        let pool = Pool::new(
            &self.upstream,
            self.metrics.poisoned_counters(),
            self.metrics.connection_gauges(),
        );
        tokio::spawn(sweep_idle(pool.clone(), self.shutdown.clone()));
        let limits = ClientLimits {
            head: HEADER_READ_TIMEOUT,
            body: self.upstream.request_body_timeout,
            max_head: self.max_header_bytes,
            stalled_bodies: self.metrics.client_body_timeout.clone(),
            plain_requests: self
                .metrics
                .counter("sessionwatch_plain_path_requests_total", &[]),
            request_duration: self.metrics.client_request_duration.clone(),
            send: self.send_timeout,
        };
        let connections = ConnectionCap {
            max: self.max_connections,
            open: self.metrics.client_connections.clone(),
            reached: self.metrics.connection_limit_reached.clone(),
        };
        let for_connection = stack::build(stack::Parts {
            session: self.session,
            backends: self.backends,
            balancer: self.balancer,
            pin: self.pin,
            health: self.health,
            metrics: self.metrics,
            upstream: Upstream::new(pool, self.upstream),
            request_ids: self.request_ids,
            access_log: self.access_log,
        });
        listen::serve(
            listener,
            for_connection,
            limits,
            connections,
            &self.forwarded,
            self.tls,
            self.drain,
        )
        .await;
    }
}

/// Drop a worker's idle upstream connections once they are closed or idle too long.
pub(super) async fn sweep_idle(pool: Pool, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => pool.sweep(),
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }
    }
}
