//! How answers are framed on their way back (RFC 9110 6.4.1, 8.6, 9.3.2, 10.1.1; RFC 9112 6.3,
//! 7.1, 9.3), and what a connection can carry after them.

use std::sync::Arc;

use sessionwatch_tests::raw::{Framing, RawBackend, RawClient, Received, Reply, exchange};

use super::{OK, Setup, routes};

/// The second request on a connection after an answer: it must be answered as itself, which
/// shows the first answer was framed right.
const NEXT: &[u8] = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n";
const NEXT_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnext";

/// On one connection: `request`, then [`NEXT`]; the answer to the first, after asserting the
/// second came whole and as itself.
async fn then_next(
    s: &Setup,
    request: &[u8],
    head_request: bool,
) -> sessionwatch_tests::raw::Answer {
    let mut c = RawClient::connect(s.addr()).await;
    c.send(request).await;
    let first = c.final_answer(head_request).await;
    c.send(NEXT).await;
    let next = c.final_answer(false).await;
    assert_eq!(
        (next.status, next.text().as_str()),
        (200, "next"),
        "the answer after {}{} was {}{}",
        first.head,
        first.text(),
        next.head,
        next.text()
    );
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9110_8_6_a_204_answer_carries_no_content_length() {
    let s = Setup::new(
        RawBackend::start(routes(&[
            (
                "/204",
                b"HTTP/1.1 204 No Content\r\nContent-Length: 40\r\nX-A: 1\r\n\r\n",
            ),
            ("/next", NEXT_ANSWER),
        ]))
        .await,
    )
    .await;
    for request in [
        &b"GET /204 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        // Chunked: the path hyper serves, on both sides.
        b"POST /204 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ] {
        let answer = then_next(&s, request, false).await;
        assert_eq!(answer.status, 204);
        assert!(
            !answer.has("content-length") && !answer.has("transfer-encoding"),
            "{}",
            answer.head
        );
        assert_eq!(answer.values("x-a"), ["1"]);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9110_15_4_5_a_304_answer_has_no_body_and_may_keep_its_content_length() {
    let s = Setup::new(
        RawBackend::start(routes(&[
            (
                "/304",
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 40\r\nETag: \"v1\"\r\n\r\n",
            ),
            ("/next", NEXT_ANSWER),
        ]))
        .await,
    )
    .await;
    let answer = then_next(
        &s,
        b"GET /304 HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"v1\"\r\n\r\n",
        false,
    )
    .await;
    assert_eq!(answer.status, 304);
    assert!(
        answer.values("content-length").iter().all(|v| v == "40"),
        "{}",
        answer.head
    );
    assert!(!answer.has("transfer-encoding"), "{}", answer.head);
    assert_eq!(answer.values("etag"), ["\"v1\""]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9110_9_3_2_a_head_answer_keeps_the_backends_length_and_has_no_body() {
    let s = Setup::new(
        RawBackend::start(routes(&[
            ("/len", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
            (
                "/chunked",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            ("/next", NEXT_ANSWER),
        ]))
        .await,
    )
    .await;
    let answer = then_next(&s, b"HEAD /len HTTP/1.1\r\nHost: x\r\n\r\n", true).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.values("content-length"), ["1000"], "{}", answer.head);
    let answer = then_next(&s, b"HEAD /chunked HTTP/1.1\r\nHost: x\r\n\r\n", true).await;
    assert_eq!(answer.status, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9110_15_2_interim_answers_then_the_final_one_are_framed() {
    let s = Setup::new(
        RawBackend::start(routes(&[
            (
                "/interim",
                b"HTTP/1.1 100 Continue\r\nContent-Length: 40\r\n\r\n\
                  HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n\
                  HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal",
            ),
            ("/next", NEXT_ANSWER),
        ]))
        .await,
    )
    .await;
    for request in [
        &b"GET /interim HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"POST /interim HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ] {
        let mut c = RawClient::connect(s.addr()).await;
        c.send(request).await;
        // Interim answers may be passed on or not; none may carry a length.
        let last = loop {
            let answer = c.answer(false).await.expect("an answer");
            if answer.status >= 200 {
                break answer;
            }
            assert!(!answer.has("content-length"), "{}", answer.head);
        };
        assert_eq!((last.status, last.text().as_str()), (200, "final"));
        c.send(NEXT).await;
        assert_eq!(c.final_answer(false).await.text(), "next");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9112_6_3_an_answer_delimited_by_close_is_chunked_for_http_1_1_and_closed_for_http_1_0()
{
    let s = Setup::new(
        RawBackend::start(Arc::new(|_: &Received| {
            Reply::SendAndClose(b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec())
        }))
        .await,
    )
    .await;
    let mut c = RawClient::connect(s.addr()).await;
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = c.final_answer(false).await;
    assert_eq!(answer.framing, Framing::Chunked, "{}", answer.head);
    assert_eq!(answer.text(), "until the end");
    // RFC 9112 6.1: no transfer coding for an HTTP/1.0 client; the close is the only end.
    for request in [
        &b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"[..],
        b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
    ] {
        let out = exchange(s.addr(), request).await;
        assert_eq!(out.statuses(), [200], "{out}");
        let answer = &out.answers[0];
        assert_eq!(answer.framing, Framing::Close, "{out}");
        assert!(!answer.has("transfer-encoding"), "{out}");
        assert_eq!(answer.text(), "until the end");
        assert!(out.closed, "{out}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9112_7_1_2_a_chunked_answer_with_trailers_keeps_its_body_and_framing() {
    let s = Setup::new(
        RawBackend::start(routes(&[
            (
                "/trailers",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n\
                  4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\nx-checksum: 7\r\n\r\n",
            ),
            ("/next", NEXT_ANSWER),
        ]))
        .await,
    )
    .await;
    let answer = then_next(&s, b"GET /trailers HTTP/1.1\r\nHost: x\r\n\r\n", false).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "abcdefg", "{}", answer.head);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9110_10_1_1_an_upload_expecting_100_continue_is_forwarded_once() {
    let s = Setup::new(RawBackend::fixed(OK).await).await;
    let mut c = RawClient::connect(s.addr()).await;
    c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let first = c
        .answer(false)
        .await
        .expect("100 Continue or the final answer");
    let last = if first.status == 100 {
        c.send(b"hello").await;
        c.final_answer(false).await
    } else {
        first
    };
    assert_eq!(
        (last.status, last.text().as_str()),
        (200, "ok"),
        "{}",
        last.head
    );
    let got = s.backend.settled().await;
    assert_eq!(got.len(), 1, "{}", s.backend_bytes());
    assert_eq!(got[0].data(), b"hello", "{}", s.backend_bytes());
    assert_eq!(
        s.backend
            .all_bytes()
            .windows(5)
            .filter(|w| w == b"hello")
            .count(),
        1,
        "the body went once: {}",
        s.backend_bytes()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9112_9_3_an_http_1_0_client_asking_for_keep_alive_keeps_its_connection() {
    let s = Setup::new(RawBackend::echo_line().await).await;
    let mut c = RawClient::connect(s.addr()).await;
    for path in ["/one", "/two"] {
        c.send(
            format!("GET {path} HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
        )
        .await;
        let answer = c.final_answer(false).await;
        assert_eq!(answer.text(), format!("GET {path} HTTP/1.1"));
        assert_eq!(
            answer.values("connection"),
            ["keep-alive"],
            "{}",
            answer.head
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9112_9_3_2_pipelined_requests_are_answered_in_order() {
    let s = Setup::new(RawBackend::echo_line().await).await;
    let out = exchange(
        s.addr(),
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
          GET /3 HTTP/1.1\r\nHost: x\r\n\r\nPOST /4 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          1\r\nd\r\n0\r\n\r\nGET /5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let bodies: Vec<String> = out.answers.iter().map(|a| a.text()).collect();
    assert_eq!(
        bodies,
        [
            "GET /1 HTTP/1.1",
            "POST /2 HTTP/1.1",
            "GET /3 HTTP/1.1",
            "POST /4 HTTP/1.1",
            "GET /5 HTTP/1.1"
        ],
        "{out}"
    );
    assert!(out.closed && out.rest.is_empty(), "{out}");
    let got = s.backend.settled().await;
    assert_eq!(got[1].data(), b"abc");
    assert_eq!(got[3].data(), b"d");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9110_7_6_1_hop_by_hop_fields_of_an_answer_are_removed() {
    let s = Setup::new(
        RawBackend::start(routes(&[
            ("/next", NEXT_ANSWER),
            (
                "/",
                b"HTTP/1.1 200 OK\r\nConnection: x-backend-hop\r\nX-Backend-Hop: 1\r\n\
                  Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n\
                  X-Kept: 2\r\ncontent-length: 2\r\n\r\nok",
            ),
        ]))
        .await,
    )
    .await;
    let answer = then_next(&s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false).await;
    for gone in ["x-backend-hop", "keep-alive", "proxy-connection", "upgrade"] {
        assert!(
            !answer.has(gone),
            "{gone} reached the client: {}",
            answer.head
        );
    }
    assert_eq!(answer.values("x-kept"), ["2"]);
    s.stop().await;
}
