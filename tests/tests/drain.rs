//! The drain a Kubernetes rollout needs (`RunningProxy::drain`, what SIGTERM starts): with
//! requests in flight on every path (plain HTTP/1.1, hyper's HTTP/1.1, HTTP/2) and new
//! connections arriving, no connection is refused during `drain.delay`, `/readyz` answers 503
//! throughout, new connections are refused after the delay, and every answer in flight arrives
//! whole, the HTTP/1.1 ones with `Connection: close`. And a plain shutdown, with no delay, still
//! lets the answers in flight finish.
//!
//! The backend holds every answer until the test opens its gate, so "in flight" is a fact, not
//! a race; the test asserts counts and outcomes, never how long anything took.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sessionwatch_tests::raw_http::{ClientConn, Reply, ok_answer, read_request};
use sessionwatch_tests::{Scratch, config_toml, start_proxy};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A bound for every wait, generous for a debug build on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// A backend that holds every answer until its gate opens (but those to `/early/...`, answered
/// at once), with a body long enough to take several writes, naming the request's target.
struct GatedBackend {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
    gate: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn body_for(target: &str) -> Vec<u8> {
    format!("answer to {target};").repeat(4096).into_bytes()
}

impl GatedBackend {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let (gate, open) = watch::channel(false);
        let counted = received.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut s, _)) = listener.accept().await {
                let counted = counted.clone();
                let mut open = open.clone();
                conns.spawn(async move {
                    let mut buf = Vec::new();
                    while let Some(req) = read_request(&mut s, &mut buf).await {
                        if !req.target.starts_with("/early/") {
                            counted.fetch_add(1, Ordering::SeqCst);
                            let _ = open.wait_for(|o| *o).await;
                        }
                        let answer = ok_answer("", &body_for(&req.target));
                        if s.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            received,
            gate,
            task,
        }
    }

    /// Wait until `n` requests have arrived and are held.
    async fn await_received(&self, n: usize) {
        let start = Instant::now();
        while self.received.load(Ordering::SeqCst) < n {
            assert!(
                start.elapsed() < PATIENCE,
                "the backend has {} of {n} requests",
                self.received.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn open(&self) {
        self.gate.send_replace(true);
    }
}

impl Drop for GatedBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `/readyz`'s status, or `None` when the admin listener refuses the connection.
async fn readyz(admin: SocketAddr) -> Option<u16> {
    let mut c = ClientConn::connect(admin).await.ok()?;
    c.send(b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    match c.read_answer(false).await {
        Reply::Complete { head, .. } => Some(head.status),
        other => panic!("/readyz: {other:?}"),
    }
}

/// A keep-alive request on a new connection: a plain GET, or a chunked POST (which the plain
/// path hands to hyper).
async fn send_keep_alive(proxy: SocketAddr, target: &str, chunked: bool) -> ClientConn {
    let mut c = ClientConn::connect(proxy).await.unwrap();
    let req = if chunked {
        format!(
            "POST {target} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
    } else {
        format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n")
    };
    c.send(req.as_bytes()).await.unwrap();
    c
}

/// The answer on `c` is whole, for `target`, marked as the connection's last, and the proxy then
/// closes the connection.
async fn assert_whole_and_closing(mut c: ClientConn, target: &str) {
    let reply = tokio::time::timeout(PATIENCE, c.read_answer(false))
        .await
        .unwrap_or_else(|_| panic!("{target}: no answer"));
    let Reply::Complete { head, body } = reply else {
        panic!("{target}: {reply:?}");
    };
    assert_eq!(head.status, 200, "{target}");
    assert!(body == body_for(target), "{target}: the body is not whole");
    assert!(head.closes(), "{target}: no Connection: close in {head:?}");
    assert!(
        c.read_to_close(PATIENCE).await.is_some(),
        "{target}: the proxy kept the connection open"
    );
}

/// An HTTP/2 connection to the proxy with `n` GETs in flight on it; the requests' tasks, and the
/// connection's (which ends when the proxy ends the connection).
async fn h2_requests(
    proxy: SocketAddr,
    n: usize,
) -> (
    Vec<tokio::task::JoinHandle<(u16, Bytes)>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let requests = (0..n)
        .map(|i| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let req = http::Request::get(format!("http://t/h2/{i}"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let resp = sender.send_request(req).await.unwrap();
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                (status, body)
            })
        })
        .collect();
    (requests, conn)
}

fn drain_config(backend: SocketAddr, scratch: &Scratch, drain: &str) -> String {
    // No active checks: they would be held at the gate like everything else.
    config_toml(
        &[("a".into(), backend)],
        "sid",
        &scratch.alert_log(),
        &format!("[health]\nactive = false\n{drain}"),
    )
}

#[tokio::test]
async fn a_drain_accepts_for_its_delay_then_refuses_and_finishes_every_answer_in_flight() {
    let scratch = Scratch::new("drain");
    let backend = GatedBackend::start().await;
    // The delay is long enough that connections made in its first half are surely inside it.
    let delay = Duration::from_secs(2);
    let proxy = start_proxy(&drain_config(
        backend.addr,
        &scratch,
        "[drain]\ndelay = \"2s\"\ntimeout = \"120s\"\n",
    ))
    .await;
    let (addr, admin) = (proxy.addr(), proxy.admin_addr().unwrap());
    assert_eq!(readyz(admin).await, Some(200));

    let mut in_flight = Vec::new();
    for i in 0..4 {
        let plain = format!("/plain/{i}");
        in_flight.push((send_keep_alive(addr, &plain, false).await, plain));
        let chunked = format!("/chunked/{i}");
        in_flight.push((send_keep_alive(addr, &chunked, true).await, chunked));
    }
    let (h2, h2_conn) = h2_requests(addr, 4).await;
    backend.await_received(12).await;

    let started = Instant::now();
    let drained = tokio::spawn(proxy.drain());

    // Inside the delay: every new connection is taken and its request forwarded; not ready;
    // answers given now, on either HTTP/1.1 path, close their keep-alive connections.
    let (mut refused_in_delay, mut readyz_seen) = (0, Vec::new());
    let mut arrived = Vec::new();
    let mut n = 0;
    while started.elapsed() < delay / 2 {
        readyz_seen.push(readyz(admin).await);
        let target = format!("/new/{n}");
        n += 1;
        match ClientConn::connect(addr).await {
            Ok(mut c) => {
                let req = format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n");
                c.send(req.as_bytes()).await.unwrap();
                arrived.push((c, target));
            }
            Err(_) => refused_in_delay += 1,
        }
        for chunked in [false, true] {
            let early = format!("/early/{n}/{chunked}");
            assert_whole_and_closing(send_keep_alive(addr, &early, chunked).await, &early).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refused_in_delay, 0, "connections refused during the delay");
    assert!(!arrived.is_empty());
    backend.await_received(12 + arrived.len()).await;

    // After the delay: new connections are refused, and the proxy is still not ready.
    let refused_at = loop {
        assert!(
            started.elapsed() < PATIENCE,
            "still accepting long after the delay"
        );
        readyz_seen.push(readyz(admin).await);
        if TcpStream::connect(addr).await.is_err() {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refused_at >= delay, "refused before the delay was over");
    readyz_seen.push(readyz(admin).await);
    assert!(
        readyz_seen.iter().all(|s| *s == Some(503)),
        "/readyz during the drain: {readyz_seen:?}"
    );
    assert!(
        !drained.is_finished(),
        "the drain ended with answers in flight"
    );

    // Every answer in flight arrives whole.
    backend.open();
    for (c, target) in in_flight.into_iter().chain(arrived) {
        assert_whole_and_closing(c, &target).await;
    }
    for (i, request) in h2.into_iter().enumerate() {
        let (status, body) = tokio::time::timeout(PATIENCE, request)
            .await
            .expect("an HTTP/2 answer")
            .unwrap();
        assert_eq!(status, 200);
        assert!(body == body_for(&format!("/h2/{i}")), "/h2/{i}: not whole");
    }
    // The proxy ended the HTTP/2 connection cleanly (GOAWAY), not by dropping it.
    let ended = tokio::time::timeout(PATIENCE, h2_conn)
        .await
        .expect("h2 connection ends");
    assert!(ended.unwrap().is_ok(), "the HTTP/2 connection broke off");
    tokio::time::timeout(PATIENCE, drained)
        .await
        .expect("the drain ends once the answers are out")
        .unwrap();
    assert_eq!(
        readyz(admin).await,
        None,
        "the admin listener outlived the drain"
    );
}

#[tokio::test]
async fn a_shutdown_stops_accepting_at_once_and_still_finishes_the_answers_in_flight() {
    let scratch = Scratch::new("drain-shutdown");
    let backend = GatedBackend::start().await;
    // One worker, and only plain connections, none of them handed to hyper: nothing but the
    // worker's own count of its connections makes it wait for them.
    let toml =
        drain_config(backend.addr, &scratch, "").replace("[listen]\n", "[listen]\nworkers = 1\n");
    let proxy = start_proxy(&toml).await;
    let addr = proxy.addr();
    let mut in_flight = Vec::new();
    for i in 0..3 {
        let target = format!("/plain/{i}");
        in_flight.push((send_keep_alive(addr, &target, false).await, target));
    }
    backend.await_received(3).await;

    let stopped = tokio::spawn(proxy.shutdown());
    let started = Instant::now();
    while TcpStream::connect(addr).await.is_ok() {
        assert!(started.elapsed() < PATIENCE, "still accepting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    backend.open();
    for (c, target) in in_flight {
        assert_whole_and_closing(c, &target).await;
    }
    tokio::time::timeout(PATIENCE, stopped)
        .await
        .expect("the shutdown ends once the answers are out")
        .unwrap();
}
