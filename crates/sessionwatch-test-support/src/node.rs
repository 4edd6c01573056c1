//! One backend node: its counters and switches, and the accept loop that can be stopped and
//! started again on the same port.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Mutex, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::state::NodeState;

/// How long `start` keeps retrying a port the kernel still reports in use.
const REBIND_ATTEMPTS: u32 = 100;
const REBIND_STEP: Duration = Duration::from_millis(20);

/// The tasks of a running node. Dropping the stop sender ends the accept loop, every connection
/// and every upgraded (WebSocket) stream, so a dropped `Farm` leaves nothing behind.
#[derive(Debug)]
struct Running {
    stop: watch::Sender<()>,
    accept: JoinHandle<()>,
}

/// One backend node of a [`Farm`](crate::Farm).
#[derive(Debug)]
pub struct Node {
    state: Arc<NodeState>,
    addr: SocketAddr,
    running: Mutex<Option<Running>>,
}

impl Node {
    /// Binds `addr` (port 0 picks one) and starts serving.
    pub(crate) async fn bind(state: Arc<NodeState>, addr: SocketAddr) -> io::Result<Self> {
        let listener = bind_listener(addr)?;
        let addr = listener.local_addr()?;
        let running = spawn_accept_loop(listener, Arc::clone(&state));
        Ok(Self {
            state,
            addr,
            running: Mutex::new(Some(running)),
        })
    }

    /// The node's address; the same across restarts.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's name, as sent in `x-served-by`.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Requests served, not counting `GET /health`.
    pub fn served(&self) -> u64 {
        self.state.served()
    }

    /// `GET /health` requests served.
    pub fn health_checks(&self) -> u64 {
        self.state.health_checks()
    }

    /// Sessions in this node's store (the whole shared store in a shared farm).
    pub fn sessions(&self) -> usize {
        self.state.store.len()
    }

    /// Whether the session id `id` is in this node's store.
    pub fn knows_session(&self, id: &str) -> bool {
        self.state.store.user(id).is_some()
    }

    /// Makes `GET /health` answer `200` (healthy) or `503`.
    pub fn set_healthy(&self, healthy: bool) {
        self.state.set_healthy(healthy);
    }

    /// Delays every response by `d`; zero turns it off.
    pub fn set_delay(&self, d: Duration) {
        self.state.set_delay(d);
    }

    /// Whether the node is accepting connections.
    pub async fn is_running(&self) -> bool {
        self.running.lock().await.is_some()
    }

    /// Closes the listener and drops open connections; returns once the listener is closed and
    /// every connection task has ended, so a connect made afterwards is refused.
    pub async fn stop(&self) {
        let Some(running) = self.running.lock().await.take() else {
            return;
        };
        drop(running.stop);
        // The accept task only ends by itself, so a join error means it panicked; the listener is
        // gone either way, which is all a stop promises.
        let _ = running.accept.await;
    }

    /// Listens on the same port again. Retries for up to two seconds while the kernel still holds
    /// the port.
    pub async fn start(&self) -> io::Result<()> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return Ok(());
        }
        let listener = rebind(self.addr).await?;
        *running = Some(spawn_accept_loop(listener, Arc::clone(&self.state)));
        Ok(())
    }

    pub(crate) fn clear_sessions(&self) {
        self.state.store.clear();
    }
}

fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // Lets a restarted node take its port back while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn rebind(addr: SocketAddr) -> io::Result<TcpListener> {
    let mut attempts = 0;
    loop {
        match bind_listener(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && attempts < REBIND_ATTEMPTS => {
                attempts += 1;
                tokio::time::sleep(REBIND_STEP).await;
            }
            other => return other,
        }
    }
}

fn spawn_accept_loop(listener: TcpListener, state: Arc<NodeState>) -> Running {
    let (stop, stopped) = watch::channel(());
    let accept = tokio::spawn(accept_loop(listener, state, stopped));
    Running { stop, accept }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<NodeState>,
    mut stopped: watch::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&state), stopped.clone()));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap finished connections so the set stays as large as the open connections.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(
    stream: TcpStream,
    state: Arc<NodeState>,
    mut stopped: watch::Receiver<()>,
) {
    // Small test responses should not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let service = {
        let stopped = stopped.clone();
        service_fn(move |req| crate::app::handle(Arc::clone(&state), stopped.clone(), req))
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::select! {
        // Connection errors are clients going away; a fake backend has nobody to tell.
        _ = conn => {}
        _ = stopped.changed() => {}
    }
}
