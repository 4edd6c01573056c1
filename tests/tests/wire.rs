//! HTTP/1.1 on the wire, both sides of the proxy: keep-alive, pipelining, HTTP/1.0, HEAD, the
//! framing of answers whose length is unknown, and a connection that turns to hyper part-way.

use std::net::SocketAddr;
use std::time::Duration;

use sessionwatch_test_support::{FarmConfig, StoreMode};
use sessionwatch_tests::{Harness, Scratch, config_toml, start_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn setup() -> Harness {
    Harness::start(FarmConfig::new(2, StoreMode::Shared), "").await
}

/// Send `request` and read until the proxy closes the connection (bounded).
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the proxy closed the connection within 10 s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Read one answer with a `content-length` from `s`, bounded.
async fn read_answer(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if got.len() >= end + 4 + len {
                    return;
                }
            }
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed mid-answer: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("an answer within 10 s");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let h = setup().await;
    let out = exchange(
        h.proxy.addr(),
        b"GET /login HTTP/1.1\r\nHost: x\r\n\r\nHEAD /nowhere HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let answers: Vec<&str> = out.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 3, "{out}");
    assert!(answers[0].starts_with("200 OK\r\n"), "{out}");
    assert!(answers[0].ends_with("login form"), "{out}");
    // HEAD: the length of the body it would have ("not found"), and no body.
    assert!(answers[1].starts_with("404 Not Found\r\n"), "{out}");
    assert!(answers[1].contains("content-length: 9\r\n"), "{out}");
    assert!(answers[1].ends_with("\r\n\r\n"), "{out}");
    assert!(answers[2].starts_with("200 OK\r\n"), "{out}");
    assert!(answers[2].contains("connection: close"), "{out}");
    assert!(answers[2].contains("host: x"), "{out}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_clients_get_keep_alive_only_when_they_ask() {
    let h = setup().await;
    let out = exchange(h.proxy.addr(), b"GET /login HTTP/1.0\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("connection: close\r\n"), "{out}");
    assert!(out.ends_with("login form"), "{out}");

    let mut s = TcpStream::connect(h.proxy.addr()).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /login HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let answer = read_answer(&mut s).await;
        assert!(answer.contains("connection: keep-alive\r\n"), "{answer}");
        assert!(answer.ends_with("login form"), "{answer}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_can_turn_to_hyper_after_plain_requests() {
    let h = setup().await;
    // A plain request, then a chunked upload on the same connection, sent in one go.
    let out = exchange(
        h.proxy.addr(),
        b"GET /login HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{out}");
    let (first, second) = out.split_once("login form").expect(&out);
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(
        second.contains("hello") && second.contains(" world"),
        "{out}"
    );
    // A request line hyper will not take either: 400, and the connection closes.
    let out = exchange(h.proxy.addr(), b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    h.stop().await;
}

/// Read a request head from `s` (its body, if any, is left unread); false if the connection
/// ended first.
async fn read_request_head(s: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A backend on 127.0.0.1 that answers every request with `answer` and closes.
async fn raw_backend(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if !read_request_head(&mut s).await {
                    return;
                }
                let _ = s.write_all(answer).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_of_unknown_length_are_chunked_or_closed() {
    let scratch = Scratch::new("wire");
    // Chunked from the backend, then until it closes: the proxy knows neither length up front.
    let chunked = raw_backend(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n",
    )
    .await;
    let until_close = raw_backend(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
    for (backend, body) in [(chunked, "abcdefg"), (until_close, "until the end")] {
        let proxy = start_proxy(&config_toml(
            &[("raw".to_owned(), backend)],
            "SID",
            &scratch.alert_log(),
            "[health]\nactive = false\n",
        ))
        .await;
        // An HTTP/1.1 client gets chunks, and keeps its connection.
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !got.ends_with(b"0\r\n\r\n") {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("the last chunk within 10 s");
        let text = String::from_utf8_lossy(&got).into_owned();
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        let decoded: String = text
            .split_once("\r\n\r\n")
            .unwrap()
            .1
            .split("\r\n")
            .skip(1)
            .step_by(2)
            .collect();
        assert_eq!(decoded, body, "{text}");
        // An HTTP/1.0 client gets the body until the proxy closes, even one that asked for
        // keep-alive (the close is the only end such a body has).
        for request in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        ] {
            let out = exchange(proxy.addr(), request).await;
            assert!(out.contains("connection: close\r\n"), "{out}");
            assert!(!out.contains("transfer-encoding"), "{out}");
            assert!(out.ends_with(body), "{out}");
        }
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_answer_in_progress_and_closes_idle_connections() {
    let Harness {
        scratch: _scratch,
        farm,
        proxy,
    } = setup().await;
    let addr = proxy.addr();
    // An idle keep-alive connection, after one answer.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_answer(&mut idle).await.ends_with("login form"));
    // A request the backends take their time over, under way when the shutdown starts.
    farm.set_delay(0, Duration::from_millis(500));
    farm.set_delay(1, Duration::from_millis(500));
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = tokio::spawn(proxy.shutdown());
    // The idle connection is closed at once.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest))
        .await
        .expect("the idle connection closed within 5 s")
        .unwrap();
    assert_eq!(n, 0);
    // The busy one gets its whole answer, marked as the last, then the connection closes.
    let answer = read_answer(&mut busy).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.ends_with("login form"), "{answer}");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), busy.read_to_end(&mut rest))
        .await
        .expect("the busy connection closed after its answer")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the proxy stopped within 10 s")
        .unwrap();
    farm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_hyper_that_arrives_during_shutdown_is_still_answered() {
    let Harness {
        scratch: _scratch,
        farm,
        proxy,
    } = setup().await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    // Part of a head: the connection is not idle when the shutdown starts.
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = tokio::spawn(proxy.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The rest makes it a chunked upload, which hyper serves.
    s.write_all(b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answered and closed within 10 s")
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("hello"), "{out}");
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the proxy stopped within 10 s")
        .unwrap();
    farm.shutdown().await;
}

/// A backend on 127.0.0.1 that answers every request with a `content-length` of `len` and then
/// sends `sent` bytes of body (as fast as it can take them), keeping the connection open after.
async fn streaming_backend(len: usize, sent: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if !read_request_head(&mut s).await {
                    return;
                }
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = sent;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
                // Stalled: neither more body nor a close, until the test ends.
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    addr
}

/// Read until the connection ends (EOF or an error), bounded; the bytes read.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> usize {
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("the proxy closed the connection in time");
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_stops_moving_is_cut_after_the_send_timeout() {
    let scratch = Scratch::new("send-timeout");
    for (backend, client_reads) in [
        // The client stops reading a 256 MiB answer.
        (streaming_backend(256 << 20, 256 << 20).await, false),
        // The backend stops sending after 10 bytes of 100.
        (streaming_backend(100, 10).await, true),
    ] {
        let toml = config_toml(
            &[("slow".to_owned(), backend)],
            "SID",
            &scratch.alert_log(),
            "[health]\nactive = false\n",
        )
        .replace("[listen]\n", "[listen]\nsend_timeout = \"300ms\"\n");
        let proxy = start_proxy(&toml).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        if client_reads {
            let got = read_until_closed(&mut s, Duration::from_secs(10)).await;
            assert!(got > 0 && got < 200, "{got} bytes");
        } else {
            // Long enough for the buffers to fill and the timeout to pass.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let got = read_until_closed(&mut s, Duration::from_secs(30)).await;
            assert!(got < 256 << 20, "the whole answer arrived: {got} bytes");
        }
        // The proxy still serves.
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        again
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(10), again.read_exact(&mut head))
            .await
            .expect("a second answer starts")
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        proxy.shutdown().await;
    }
}
