//! A backend that sends bytes nobody asked for must never hand them to another client, and the
//! proxy's own limits (client connections) hold: black-box tests over raw sockets.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sessionwatch_tests::raw::{Answer, RawClient};
use sessionwatch_tests::{Scratch, config_toml, http_get, metric_sum, start_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Read one request head from `s`; `None` if the connection ended first.
async fn request_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            buf.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What the scripted backend saw: per connection, in order of accept, its requests' first
/// lines, then "closed" once the proxy closed it.
type Seen = Arc<Mutex<Vec<Vec<String>>>>;

/// A backend whose first connection answers its first request with `first` and then, 300 ms
/// later and unasked, writes `stray`; every other request, on any connection, is answered
/// `own:<path>`.
async fn stray_backend(first: &'static str, stray: &'static str) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        let mut conn_no = 0;
        while let Ok((mut s, _)) = listener.accept().await {
            let this = conn_no;
            conn_no += 1;
            log.lock().unwrap().push(Vec::new());
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut req_no = 0;
                while let Some(head) = request_head(&mut s, &mut buf).await {
                    let line = head.lines().next().unwrap_or("").to_owned();
                    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                    log.lock().unwrap()[this].push(line);
                    if this == 0 && req_no == 0 {
                        let _ = s.write_all(first.as_bytes()).await;
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        let _ = s.write_all(stray.as_bytes()).await;
                    } else {
                        let body = format!("own:{path}");
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = s.write_all(answer.as_bytes()).await;
                    }
                    req_no += 1;
                }
                log.lock().unwrap()[this].push("closed".to_owned());
            });
        }
    });
    (addr, seen)
}

/// Send `request` on a new connection and read one answer (for a HEAD, its head alone).
async fn one_answer(addr: SocketAddr, request: &str, head_only: bool) -> Answer {
    let mut c = RawClient::connect(addr).await;
    c.send(request.as_bytes()).await;
    c.final_answer(head_only).await
}

async fn proxy_for(
    backend: SocketAddr,
    scratch: &Scratch,
    extra: &str,
) -> sessionwatch_proxy::RunningProxy {
    proxy_with(backend, scratch, "", extra).await
}

/// One worker (every request meets the same upstream pool), `listen` added to `[listen]`.
async fn proxy_with(
    backend: SocketAddr,
    scratch: &Scratch,
    listen: &str,
    extra: &str,
) -> sessionwatch_proxy::RunningProxy {
    let toml = config_toml(
        &[("app".to_owned(), backend)],
        "sid",
        &scratch.alert_log(),
        &format!("{extra}\n[health]\nactive = false\n"),
    )
    .replace("[listen]\n", &format!("[listen]\nworkers = 1\n{listen}"));
    start_proxy(&toml).await
}

/// A client that connects past the cap: the kernel takes the connection, the proxy does not
/// serve it (yet).
async fn waiting_client(addr: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /third HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), c.read(&mut byte)).await;
    assert!(early.is_err(), "served past the cap: {early:?}");
    c
}

async fn metrics(admin: SocketAddr) -> String {
    let (status, body) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    body
}

/// The stray answer sits on the idle connection; another client's request must neither read
/// it nor go on that connection, and the connection must be closed and counted.
async fn a_stray_answer_never_reaches_another_client(first_request: &str, first: &'static str) {
    let scratch = Scratch::new("stray");
    let stray = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nPWND";
    let (backend, seen) = stray_backend(first, stray).await;
    let proxy = proxy_for(backend, &scratch, "").await;
    let head_only = first_request.starts_with("HEAD");
    let answer = one_answer(proxy.addr(), first_request, head_only).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    // Another client, its own connection and cookie, while the stray answer is on its way.
    let victim = one_answer(
        proxy.addr(),
        "GET /victim HTTP/1.1\r\nHost: shop\r\nCookie: sid=victims-own\r\n\r\n",
        false,
    )
    .await;
    assert_eq!(
        victim.text(),
        "own:/victim",
        "another client's answer: {victim:?}"
    );
    // The poisoned connection is closed once its stray bytes are seen (at its next checkout
    // or the pool's sweep), and counted.
    let admin = proxy.admin_addr().unwrap();
    let closed = async {
        loop {
            let first_conn_closed = seen.lock().unwrap()[0]
                .last()
                .is_some_and(|l| l == "closed");
            if first_conn_closed {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            // A request of its own keeps the pool busy, as traffic would.
            let _ = one_answer(
                proxy.addr(),
                "GET /poke HTTP/1.1\r\nHost: shop\r\n\r\n",
                false,
            )
            .await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the poisoned connection is still open: {:?}",
                seen.lock().unwrap()
            )
        });
    let text = metrics(admin).await;
    assert_eq!(
        metric_sum(
            &text,
            "sessionwatch_upstream_poisoned_total",
            &["backend=\"app\""]
        ),
        1.0,
        "{text}"
    );
    // Nothing after the first request ever went on the poisoned connection.
    assert_eq!(
        seen.lock().unwrap()[0].len(),
        2,
        "{:?}",
        seen.lock().unwrap()
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_second_answer_to_a_head_request_never_reaches_another_client() {
    a_stray_answer_never_reaches_another_client(
        "HEAD /x HTTP/1.1\r\nHost: shop\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 40\r\n\r\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_arriving_late_after_a_body_never_reach_another_client() {
    a_stray_answer_never_reaches_another_client(
        "GET /x HTTP/1.1\r\nHost: shop\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    )
    .await;
}

/// A backend answering `own:<path>` that counts the connections it accepts.
async fn counting_backend() -> (SocketAddr, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            *count.lock().unwrap() += 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = request_head(&mut s, &mut buf).await {
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let body = format!("own:{path}");
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

async fn keep_alive_requests(addr: SocketAddr, n: usize) {
    let mut c = RawClient::connect(addr).await;
    for i in 0..n {
        c.send(format!("GET /r{i} HTTP/1.1\r\nHost: shop\r\n\r\n").as_bytes())
            .await;
        assert_eq!(c.final_answer(false).await.text(), format!("own:/r{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_reuse_gives_each_client_connection_its_own_first_upstream_connection() {
    let scratch = Scratch::new("reuse");
    let (backend, accepted) = counting_backend().await;
    let proxy = proxy_for(backend, &scratch, "").await;
    // Two clients, one after the other, three requests each: each client's first request
    // opens a connection; its later ones reuse.
    keep_alive_requests(proxy.addr(), 3).await;
    keep_alive_requests(proxy.addr(), 3).await;
    assert_eq!(*accepted.lock().unwrap(), 2);
    proxy.shutdown().await;

    let (backend, accepted) = counting_backend().await;
    let proxy = proxy_for(backend, &scratch, "[upstream]\nreuse = \"always\"").await;
    keep_alive_requests(proxy.addr(), 3).await;
    keep_alive_requests(proxy.addr(), 3).await;
    assert_eq!(
        *accepted.lock().unwrap(),
        1,
        "always: one connection serves both clients"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_new_clients_wait_until_one_leaves() {
    let scratch = Scratch::new("cap");
    let (backend, _) = counting_backend().await;
    let proxy = proxy_with(backend, &scratch, "max_connections = 2\n", "").await;
    let mut held = Vec::new();
    for i in 0..2 {
        let mut c = RawClient::connect(proxy.addr()).await;
        c.send(format!("GET /held{i} HTTP/1.1\r\nHost: shop\r\n\r\n").as_bytes())
            .await;
        c.final_answer(false).await;
        held.push(c);
    }
    // The third connection is made (the kernel's backlog takes it) but not served...
    let third = waiting_client(proxy.addr()).await;
    let text = metrics(proxy.admin_addr().unwrap()).await;
    assert_eq!(
        metric_sum(&text, "sessionwatch_client_connections", &[]),
        2.0,
        "{text}"
    );
    assert!(
        metric_sum(&text, "sessionwatch_connection_limit_reached_total", &[]) >= 1.0,
        "{text}"
    );
    // ...until a held one closes.
    drop(held.pop());
    let mut third = RawClient::from_stream(third);
    assert_eq!(third.final_answer(false).await.text(), "own:/third");
    proxy.shutdown().await;
}

/// Reads a request head one byte at a time; `None` if the connection ended first.
async fn head_bytewise(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    while !buf.ends_with(b"\r\n\r\n") {
        let mut c = [0u8; 1];
        match s.read(&mut c).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => buf.push(c[0]),
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Upgrade requests are answered 101 and the tunnel held open; others `own`.
async fn websocket_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                while let Some(h) = head_bytewise(&mut s).await {
                    if h.to_ascii_lowercase().contains("upgrade: websocket") {
                        let _ = s
                            .write_all(
                                b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\
                                  Upgrade: websocket\r\n\r\n",
                            )
                            .await;
                        let mut sink = [0u8; 1024];
                        while let Ok(1..) = s.read(&mut sink).await {}
                        return;
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nown")
                        .await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_tunnel_counts_under_the_connection_cap_while_it_lasts() {
    let scratch = Scratch::new("cap-ws");
    let backend = websocket_backend().await;
    let proxy = proxy_with(backend, &scratch, "max_connections = 2\n", "").await;
    let mut tunnels = Vec::new();
    for i in 0..2 {
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(
            format!(
                "GET /ws{i} HTTP/1.1\r\nHost: shop\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let head = tokio::time::timeout(Duration::from_secs(10), head_bytewise(&mut c))
            .await
            .expect("a 101 within 10 s");
        assert!(head.is_some_and(|h| h.starts_with("HTTP/1.1 101")));
        tunnels.push(c);
    }
    let text = metrics(proxy.admin_addr().unwrap()).await;
    assert_eq!(
        metric_sum(&text, "sessionwatch_client_connections", &[]),
        2.0,
        "{text}"
    );
    // Two tunnels fill the cap: a third client waits...
    let third = waiting_client(proxy.addr()).await;
    // ...until a tunnel closes.
    drop(tunnels.pop());
    let mut third = RawClient::from_stream(third);
    assert_eq!(third.final_answer(false).await.text(), "own");
    proxy.shutdown().await;
}

/// Reads a request head, then neither reads the body nor answers.
async fn deaf_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = head_bytewise(&mut s).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(s);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_stops_reading_an_upload_gets_504() {
    let scratch = Scratch::new("deaf");
    let backend = deaf_backend().await;
    let proxy = proxy_for(
        backend,
        &scratch,
        "[upstream]\nresponse_timeout = \"1s\"\nrequest_body_timeout = \"1s\"",
    )
    .await;
    let c = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut r, mut w) = c.into_split();
    // The client keeps sending as fast as the proxy takes it: it never stalls.
    let writer = tokio::spawn(async move {
        let _ = w
            .write_all(b"POST /up HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        let mut chunk = format!("{:x}\r\n", 65536).into_bytes();
        chunk.extend(std::iter::repeat_n(b'x', 65536));
        chunk.extend_from_slice(b"\r\n");
        for _ in 0..4096 {
            if w.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), r.read(&mut buf))
        .await
        .expect("an answer within 20 s (response timeout 1 s)")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    writer.abort();
    // The exchange given up on lets go of the client's body: the client's connection is closed,
    // not held for as long as the backend holds its own (60 s).
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the client's connection was still open 20 s after its 504"
    );
    let text = metrics(proxy.admin_addr().unwrap()).await;
    assert_eq!(
        metric_sum(
            &text,
            "sessionwatch_upstream_errors_total",
            &["kind=\"timeout\""]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric_sum(&text, "sessionwatch_client_body_errors_total", &[]),
        0.0,
        "{text}"
    );
    proxy.shutdown().await;
}
