//! Bounds on what a client may make the proxy hold: the request head's size (RFC 6585 section 5,
//! 431) and a request body that stops arriving (RFC 9110 15.5.9, 408).

use std::time::Duration;

use sessionwatch_tests::raw::{RawBackend, RawClient, exchange};

use super::{OK, Setup, each, refused};

/// A request whose head is about `size` bytes, in one header line or in lines of 5,000 bytes;
/// chunked (so hyper serves it) or not.
fn big_head(size: usize, one_line: bool, chunked: bool) -> Vec<u8> {
    // The framing first, so that a failure message shows it.
    let mut head = String::from("POST /big HTTP/1.1\r\nHost: x\r\n");
    let (framing, body) = if chunked {
        ("Transfer-Encoding: chunked\r\n", "0\r\n\r\n")
    } else {
        ("Content-Length: 0\r\n", "")
    };
    head.push_str(framing);
    if one_line {
        head.push_str(&format!("X-Big: {}\r\n", "a".repeat(size)));
    } else {
        for i in 0..size / 5_000 {
            head.push_str(&format!("X-Big-{i}: {}\r\n", "a".repeat(5_000 - 12)));
        }
    }
    head.push_str("\r\n");
    head.push_str(body);
    head.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc6585_5_a_request_head_over_the_limit_is_refused_with_431() {
    // Over the default `listen.max_header_bytes` (32768), on both paths.
    let requests = [false, true].into_iter().flat_map(|chunked| {
        [
            big_head(102_400, true, chunked),
            big_head(420_000, false, chunked),
            big_head(40_000, true, chunked),
        ]
    });
    each(requests, |r| async move {
        refused(&r, 431).await;
    })
    .await;
}

/// Send a request with a head of about `size` bytes; assert it was answered 200 and reached the
/// backend whole.
async fn passes(s: &Setup, size: usize, chunked: bool) {
    s.backend.clear();
    let request = big_head(size, true, chunked);
    let out = exchange(s.addr(), &request).await;
    let got = s.backend.settled().await;
    assert_eq!(
        out.statuses(),
        [200],
        "a {size}-byte header, chunked: {chunked}: {out}"
    );
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].values("x-big"), ["a".repeat(size)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc6585_5_a_request_head_just_under_the_limit_passes() {
    let s = Setup::new(RawBackend::fixed(OK).await).await;
    for chunked in [false, true] {
        passes(&s, 30_000, chunked).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_max_header_bytes_sets_the_limit() {
    // The smallest limit allowed (hyper reads with no smaller buffer).
    let s = Setup::with(RawBackend::fixed(OK).await, "max_header_bytes = 8192\n", "").await;
    for chunked in [false, true] {
        passes(&s, 7_500, chunked).await;
        s.backend.clear();
        let out = exchange(s.addr(), &big_head(9_000, true, chunked)).await;
        assert_eq!(out.statuses(), [431], "chunked: {chunked}: {out}");
        assert!(s.backend.settled().await.is_empty());
    }
    s.stop().await;
}

/// Send `head` and the start of its body, then nothing: the proxy must answer 408 once
/// `upstream.request_body_timeout` has passed, close its connection to the backend, and count
/// nothing against the backend.
async fn stalled_upload(head: &str, sent: &[u8]) {
    let s = Setup::with(
        RawBackend::fixed(OK).await,
        "",
        "[upstream]\nrequest_body_timeout = \"1s\"\n",
    )
    .await;
    let errors_before = s.upstream_errors();
    let mut c = RawClient::connect(s.addr()).await;
    c.send(head.as_bytes()).await;
    c.send(sent).await;
    let answer = c.final_answer(false).await;
    assert_eq!(answer.status, 408, "{}{}", answer.head, answer.text());
    assert!(
        !s.backend.conns().is_empty(),
        "the upload was streamed: the backend had a connection"
    );
    assert!(
        s.backend.wait_all_ended(Duration::from_secs(10)).await,
        "the proxy must close the backend's connection (the request cannot be finished)"
    );
    assert!(
        s.backend.requests().is_empty(),
        "no whole request reached the backend"
    );
    let metrics = s.proxy.metrics_text();
    assert_eq!(
        s.upstream_errors(),
        errors_before,
        "a slow client is not the backend's error"
    );
    assert_eq!(
        sessionwatch_tests::metric_sum(&metrics, "sessionwatch_backend_up", &[]),
        1.0,
        "the backend stays up"
    );
    drop(c);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9110_15_5_9_a_chunked_upload_that_stalls_is_answered_408() {
    stalled_upload(
        "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5\r\nhello\r\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9110_15_5_9_a_long_upload_that_stalls_is_answered_408() {
    // Longer than the part read whole before forwarding (64 KiB): it is streamed.
    stalled_upload(
        "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
        &vec![b'x'; 70_000],
    )
    .await;
}
