//! The proxy as a proxy: forwarding headers, hop-by-hop removal, streaming both ways, HTTP/2,
//! WebSocket pass-through, and the 502/503/504 answers.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sessionwatch_test_support::{FarmConfig, StoreMode};
use sessionwatch_tests::{Harness, Scratch, config_toml, http_get, start_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn setup(extra: &str) -> Harness {
    Harness::start(FarmConfig::new(2, StoreMode::Shared), extra).await
}

/// Send raw bytes, read until EOF (the request says `Connection: close`), bounded.
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("response within 10 s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_request_id_is_kept_and_a_request_without_host_never_gets_the_backends() {
    let h = setup("").await;
    let resp = raw(
        h.proxy.addr(),
        "GET /headers HTTP/1.1\r\nHost: shop.example\r\nx-request-id: ticket-42\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-request-id: ticket-42"),
        "{head}"
    );
    assert!(body.contains("x-request-id: ticket-42"), "{body}");

    // HTTP/1.0 allows a request without Host; the backend gets the proxy's own address,
    // never its own (an internal address the application must not learn).
    let resp = raw(h.proxy.addr(), "GET /headers HTTP/1.0\r\n\r\n").await;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1."), "{head}");
    assert!(
        body.contains(&format!("host: {}", h.proxy.addr())),
        "expected the listener's address in {body}"
    );
    for (_, addr) in sessionwatch_tests::farm_backends(&h.farm) {
        assert!(!body.contains(&addr.to_string()), "{body}");
    }
    // HTTP/1.1 requires Host (RFC 9112 3.2): refused, not forwarded.
    let resp = raw(
        h.proxy.addr(),
        "GET /headers HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_added_and_hop_by_hop_headers_removed() {
    let h = setup("").await;
    let proxy = &h.proxy;
    let resp = raw(
        proxy.addr(),
        "GET /headers HTTP/1.1\r\nHost: shop.example\r\nConnection: close, x-hop\r\nx-hop: secret\r\n\
         Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n\
         X-Forwarded-For: 203.0.113.9\r\nx-app: kept\r\n\r\n",
    )
    .await;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("x-request-id: "),
        "the client gets the request id"
    );
    // No trusted proxies configured: the client's own X-Forwarded-For is replaced.
    assert!(body.contains("x-forwarded-for: 127.0.0.1\n"), "{body}");
    assert!(body.contains("x-forwarded-proto: http"), "{body}");
    assert!(body.contains("x-forwarded-host: shop.example"), "{body}");
    assert!(
        body.contains("host: shop.example"),
        "the Host header is kept: {body}"
    );
    assert!(body.contains("x-app: kept"), "{body}");
    assert!(
        body.contains("x-request-id: "),
        "the backend sees the request id: {body}"
    );
    for gone in [
        "x-hop",
        "keep-alive:",
        "proxy-authorization",
        "te: trailers",
    ] {
        assert!(!body.contains(gone), "{gone} reached the backend: {body}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways_without_being_buffered_whole() {
    let h = setup("").await;
    let proxy = &h.proxy;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nfirst\r\n")
        .await
        .unwrap();
    // The first chunk comes back before the request body is finished: nothing waits for the
    // whole body, in either direction.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let got_first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed early");
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("first") {
                break;
            }
        }
    })
    .await;
    assert!(
        got_first.is_ok(),
        "the echo of the first chunk never arrived: {}",
        String::from_utf8_lossy(&seen)
    );
    s.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    seen.extend_from_slice(&rest);
    assert!(String::from_utf8_lossy(&seen).contains("second"));

    // A large download passes through whole.
    let (status, body) = http_get(proxy.addr(), "/big?bytes=5000000").await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), 5_000_000);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_served() {
    let h = setup("").await;
    let proxy = &h.proxy;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let login = http::Request::post(format!("http://{}/login", proxy.addr()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(login).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 302);
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    // HTTP/2 may split cookies over several headers; send it that way.
    let me = http::Request::get(format!("http://{}/me", proxy.addr()))
        .header("cookie", "theme=dark")
        .header("cookie", cookie)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(me).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"user");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_through() {
    let h = setup("").await;
    let proxy = &h.proxy;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    s.write_all(b"ping over the upgraded connection")
        .await
        .unwrap();
    let mut echo = vec![0u8; 33];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo[..], b"ping over the upgraded connection");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_gives_502_then_503_once_ejected() {
    let scratch = Scratch::new("dead");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start_proxy(&config_toml(
        &[("dead".to_owned(), dead)],
        "SID",
        &scratch.alert_log(),
        "[health]\nactive = false\npassive_fall = 2\neject_for = \"60s\"\n",
    ))
    .await;
    let (status, body) = http_get(proxy.addr(), "/me").await;
    assert_eq!(status, 502);
    assert_eq!(body, "bad gateway\n");
    let (status, _) = http_get(proxy.addr(), "/me").await;
    assert_eq!(status, 502);
    // Two connect errors in a row eject it; with no backend left the answer is 503.
    let (status, body) = http_get(proxy.addr(), "/me").await;
    assert_eq!(status, 503);
    assert_eq!(body, "no healthy backend\n");
    let (ready, _) = http_get(proxy.admin_addr().unwrap(), "/readyz").await;
    assert_eq!(ready, 503);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_body_is_read_whole_before_it_is_forwarded() {
    let h = setup(
        "[upstream]\nrequest_body_timeout = \"300ms\"\n[health]\nactive = false\npassive_fall = 100\n",
    )
    .await;
    let proxy = &h.proxy;
    // Sent whole: it reaches the backend and comes back.
    let resp = raw(
        proxy.addr(),
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("hello world"), "{resp}");
    // A client that stops part-way gets 408 once the body timeout has passed; no backend
    // was held meanwhile, and none is blamed.
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly a part")
        .await
        .unwrap();
    let mut out = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut out))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&out[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.ends_with("request timeout\n"), "{answer}");
    let (ready, _) = http_get(proxy.admin_addr().unwrap(), "/readyz").await;
    assert_eq!(ready, 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_gives_504() {
    let h = setup(
        "[upstream]\nresponse_timeout = \"200ms\"\n[health]\nactive = false\npassive_fall = 100\n",
    )
    .await;
    let (farm, proxy) = (&h.farm, &h.proxy);
    farm.set_delay(0, Duration::from_secs(3));
    farm.set_delay(1, Duration::from_secs(3));
    let (status, body) = http_get(proxy.addr(), "/me").await;
    assert_eq!(status, 504);
    assert_eq!(body, "gateway timeout\n");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_header_naming_the_cookie_is_refused() {
    let h = Harness::start(FarmConfig::new(2, StoreMode::PerNode), "").await;
    let mut user = h.user();
    user.login().await.unwrap();
    let cookie = user.cookie().unwrap().to_owned();
    // `Connection: cookie` would make the cookie hop-by-hop: a proxy that drops it lets a
    // client strip what the application depends on. The request is refused instead, before
    // the detector or a backend sees it.
    let before = h.farm.served_total();
    for _ in 0..4 {
        let resp = raw(
            h.proxy.addr(),
            &format!("GET /me HTTP/1.1\r\nHost: x\r\nConnection: close, Cookie\r\nCookie: SID={cookie}\r\n\r\n"),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    }
    assert_eq!(
        h.farm.served_total(),
        before,
        "refused requests reached the farm"
    );
    assert!(h.lines("session_reset").is_empty());
    h.stop().await;
}

/// The request id is the same on hyper's path (HTTP/2, and HTTP/1.1 that is not plain) as on
/// the plain one: a client's acceptable id is kept, else one is made; the backend and the client
/// both see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_is_kept_or_made_on_hyper_s_path_too() {
    let h = setup("").await;
    let addr = h.proxy.addr();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for sent in [Some("ticket-43"), None] {
        let mut req = http::Request::get(format!("http://{addr}/headers"));
        if let Some(id) = sent {
            req = req.header("x-request-id", id);
        }
        let resp = client
            .request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        if let Some(sent) = sent {
            assert_eq!(id, sent);
        } else {
            assert!(id.len() > 8, "{id}");
        }
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains(&format!("x-request-id: {id}")), "{body}");
    }
    // HTTP/1.1 that goes to hyper (it expects 100-continue).
    let resp = raw(
        addr,
        "GET /headers HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nx-request-id: ticket-44\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-request-id: ticket-44"),
        "{head}"
    );
    assert!(body.contains("x-request-id: ticket-44"), "{body}");
    h.stop().await;
}
