//! A request's fields on the way through: Host and the target (RFC 9112 3.2), CONNECT (RFC 9110
//! 9.3.6), the Connection header (RFC 9110 7.6.1), and the request id the proxy adds.

use sessionwatch_tests::raw::{RawBackend, Received, exchange};

use super::{OK, Setup, each, plain_id, refused};

/// Send `request` (it ends with `Connection: close`) to a proxy in front of a backend answering
/// [`OK`]; the one request the backend received. Panics unless the client got 200.
async fn forwarded(s: &Setup, request: &[u8]) -> Received {
    let out = exchange(s.addr(), request).await;
    let mut got = s.backend.settled().await;
    let ctx = format!(
        "{:?}\ngot:\n{out}\nbackend got {}",
        String::from_utf8_lossy(request),
        s.backend_bytes()
    );
    assert_eq!(out.statuses(), [200], "{ctx}");
    assert_eq!(got.len(), 1, "{ctx}");
    got.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9112_3_2_a_request_with_two_host_fields_is_refused_with_400() {
    let requests: &[&'static [u8]] = &[
        &b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a.example\r\nhost: a.example\r\n\r\n",
        // The same on the path hyper serves.
        b"POST / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    each(requests.iter().copied(), |r| async move {
        refused(r, 400).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9112_3_2_an_http_1_1_request_without_host_is_refused_with_400() {
    let requests: &[&'static [u8]] = &[
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    each(requests.iter().copied(), |r| async move {
        refused(r, 400).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9112_3_2_an_http_1_0_request_without_host_gets_the_proxys_own_address() {
    let s = Setup::new(RawBackend::fixed(OK).await).await;
    let r = forwarded(&s, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(
        r.values("host"),
        [s.addr().to_string()],
        "the listener's address, never the backend's ({}): {}",
        s.backend.addr,
        r.head_text()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9112_3_2_2_an_absolute_form_target_is_sent_in_origin_form_with_its_authority_as_host() {
    let s = Setup::new(RawBackend::fixed(OK).await).await;
    let r = forwarded(
        &s,
        b"GET http://evil.example/abs?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        r.request_line(),
        "GET /abs?q=1 HTTP/1.1",
        "{}",
        r.head_text()
    );
    assert_eq!(r.values("host"), ["evil.example"], "{}", r.head_text());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9110_9_3_6_connect_is_refused_with_405_and_never_forwarded() {
    let requests: &[&'static [u8]] = &[
        &b"CONNECT backend.example:443 HTTP/1.1\r\nHost: backend.example:443\r\n\r\n"[..],
        // Tunnel bytes sent without waiting: whatever the proxy makes of them after its 405,
        // they open no tunnel and reach no backend.
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\nSSH-2.0-x\r\n",
    ];
    each(requests.iter().copied(), |r| async move {
        let s = Setup::new(RawBackend::fixed(OK).await).await;
        let out = exchange(s.addr(), r).await;
        s.backend.settled().await;
        let ctx = format!("{out}\nbackend got {}", s.backend_bytes());
        assert_eq!(out.statuses().first(), Some(&405), "{ctx}");
        assert!(
            out.statuses().iter().all(|s| *s >= 400),
            "nothing after the 405 may succeed: {ctx}"
        );
        assert!(s.backend.all_bytes().is_empty(), "forwarded: {ctx}");
        s.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9110_7_6_1_fields_named_in_connection_are_removed() {
    let s = Setup::new(RawBackend::fixed(OK).await).await;
    let r = forwarded(
        &s,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: x-custom, close\r\nX-Custom: 1\r\n\
          X-Kept: 2\r\n\r\n",
    )
    .await;
    assert!(r.values("x-custom").is_empty(), "{}", r.head_text());
    assert!(
        r.values("connection")
            .iter()
            .all(|v| !v.contains("x-custom"))
    );
    assert_eq!(r.values("x-kept"), ["2"], "{}", r.head_text());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9110_7_6_1_connection_naming_an_end_to_end_field_is_refused_with_400() {
    // Removing these would change what the request means (or how it is framed) for the
    // backend alone: the request is refused instead.
    let requests: &[&'static [u8]] = &[
        &b"GET / HTTP/1.1\r\nHost: x\r\nConnection: host\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Host\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nCookie: SID=1\r\nConnection: cookie\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic eA==\r\nConnection: AUTHORIZATION\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: Transfer-Encoding\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    ];
    each(requests.iter().copied(), |r| async move {
        refused(r, 400).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9110_7_6_1_connection_cannot_remove_the_proxys_own_fields() {
    let s = Setup::new(RawBackend::fixed(OK).await).await;
    let r = forwarded(
        &s,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: x-forwarded-for, x-request-id, close\r\n\
          X-Forwarded-For: 203.0.113.9\r\nX-Request-Id: ticket-1\r\n\r\n",
    )
    .await;
    let xff = r.values("x-forwarded-for");
    assert_eq!(xff.len(), 1, "{}", r.head_text());
    assert!(xff[0].contains("127.0.0.1"), "{}", r.head_text());
    assert_eq!(r.values("x-request-id").len(), 1, "{}", r.head_text());
    s.stop().await;
}

/// The request id the backend and the client saw for a request carrying `id`.
async fn request_ids(s: &Setup, id: &str) -> (Vec<String>, Vec<String>) {
    let request =
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n");
    s.backend.clear();
    let out = exchange(s.addr(), request.as_bytes()).await;
    let got = s.backend.settled().await;
    assert_eq!(out.statuses(), [200], "{out}");
    assert_eq!(got.len(), 1);
    (
        got[0].values("x-request-id"),
        out.answers[0].values("x-request-id"),
    )
}

/// Assert that a request carrying `id` had it replaced by a generated id, the same at the
/// backend and on the answer.
async fn replaced(s: &Setup, id: &str) {
    let (upstream, answer) = request_ids(s, id).await;
    let shown = &id[..id.len().min(40)];
    assert_eq!(upstream.len(), 1, "{shown:?}: {upstream:?}");
    assert_ne!(upstream[0], id, "{shown:?} reached the backend");
    assert!(plain_id(&upstream[0]), "{:?}", upstream[0]);
    assert_eq!(
        answer, upstream,
        "{shown:?}: the client gets the id the backend got"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_from_the_client_are_kept_only_when_short_and_plain() {
    let long = "a".repeat(128);
    each(
        [&b"ticket-42"[..], b"Ab9.x:y-z", b"a_b", long.as_bytes()].map(<[u8]>::to_vec),
        |id| async move {
            let id = String::from_utf8(id).unwrap_or_default();
            let s = Setup::new(RawBackend::fixed(OK).await).await;
            let (upstream, answer) = request_ids(&s, &id).await;
            assert_eq!(upstream, [id.as_str()], "kept for the backend");
            assert_eq!(answer, [id.as_str()], "echoed to the client");
            s.stop().await;
        },
    )
    .await;
    let too_long = "a".repeat(129);
    let ids = [too_long.as_bytes(), b"a b", b"a/b", b"a\"b", b"<script>"];
    each(ids.map(<[u8]>::to_vec), |id| async move {
        let id = String::from_utf8(id).unwrap_or_default();
        let s = Setup::new(RawBackend::fixed(OK).await).await;
        replaced(&s, &id).await;
        s.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_from_the_client_that_are_huge_are_replaced() {
    // Room for the head, so that the id is what is judged, not the head's size.
    let s = Setup::with(
        RawBackend::fixed(OK).await,
        "max_header_bytes = 65535\n",
        "",
    )
    .await;
    replaced(&s, &"a".repeat(60_000)).await;
    s.stop().await;
}
