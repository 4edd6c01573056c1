//! How a request's body is delimited (RFC 9112 sections 5, 6 and 7, RFC 9110 5.5), and the
//! smuggling that comes of two parties disagreeing about it.

use sessionwatch_tests::raw::{RawBackend, RawClient, exchange};

use super::{Setup, each, one_request_or_refused, refused};

/// A request that a party reading the framing differently would take as a second one.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// `Content-Length` covering a chunked body and the smuggled request behind it: CL.TE.
fn cl_te(te_line: &str) -> Vec<u8> {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n{te_line}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A chunk holding the smuggled request, with a `Content-Length` covering only its size line:
/// TE.CL.
fn te_cl(te_line: &str) -> Vec<u8> {
    let size = format!("{:x}\r\n", SMUGGLED.len());
    format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n{te_line}\r\n\r\n{size}{SMUGGLED}\r\n0\r\n\r\n",
        size.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9112_6_1_content_length_with_transfer_encoding_is_refused_or_framed_by_chunked_and_closed()
 {
    // Transfer-Encoding overrides Content-Length, and the connection closes after the answer
    // either way; a field value's surrounding whitespace and its case do not matter.
    let te_lines = [
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: CHUNKED",
        "Transfer-Encoding:  chunked",
        "Transfer-Encoding:\tchunked",
        "Transfer-Encoding: chunked\t",
    ];
    let requests = te_lines.iter().flat_map(|l| [cl_te(l), te_cl(l)]);
    each(requests, |r| async move {
        one_request_or_refused(&r, true).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9112_6_3_transfer_encoding_not_ending_in_chunked_is_refused_with_400() {
    let te_lines = [
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
        "Transfer-Encoding: gzip",
        "Transfer-Encoding: chunked;q=1",
    ];
    let mut requests: Vec<Vec<u8>> = te_lines.iter().flat_map(|l| [cl_te(l), te_cl(l)]).collect();
    // Without a Content-Length beside it, too.
    requests.push(
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
        )
        .into_bytes(),
    );
    each(requests, |r| async move {
        let out = refused(&r, 400).await;
        assert!(out.closed, "the connection must close:\n{out}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9112_6_3_an_invalid_or_conflicting_content_length_is_refused_with_400() {
    let cl_lines = [
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: 5, 6",
        "Content-Length: 6\r\nContent-Length: 5",
        "Content-Length: -5",
        "Content-Length: +5",
        "Content-Length: 5 5",
        "Content-Length: 0x5",
    ];
    let requests = cl_lines
        .map(|l| format!("POST / HTTP/1.1\r\nHost: x\r\n{l}\r\n\r\nhello!{SMUGGLED}").into_bytes());
    each(requests, |r| async move {
        let out = refused(&r, 400).await;
        assert!(out.closed, "the connection must close:\n{out}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9112_5_1_whitespace_between_a_field_name_and_its_colon_is_refused_with_400() {
    let mut requests: Vec<Vec<u8>> = [
        "Transfer-Encoding : chunked",
        "Transfer-Encoding\t: chunked",
        "Content-Length : 5",
    ]
    .iter()
    .map(|l| cl_te(l))
    .collect();
    requests.push(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n".to_vec());
    each(requests, |r| async move {
        refused(&r, 400).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9112_5_2_obs_fold_is_refused_or_replaced_with_space() {
    // A folded ordinary field: refused, or forwarded with the fold made one space.
    let s = Setup::new(RawBackend::echo_line().await).await;
    let out = exchange(
        s.addr(),
        b"GET /fold HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\nConnection: close\r\n\r\n",
    )
    .await;
    let got = s.backend.settled().await;
    match out.statuses()[..] {
        [400] => assert!(
            got.is_empty(),
            "refused, yet forwarded: {}",
            s.backend_bytes()
        ),
        [200] => {
            assert_eq!(got.len(), 1, "{}", s.backend_bytes());
            assert_eq!(got[0].values("x-a"), ["one two"], "{}", s.backend_bytes());
            assert!(
                !got[0].head_text().contains("\r\n "),
                "a folded line reached the backend: {}",
                s.backend_bytes()
            );
        }
        _ => panic!("{out}"),
    }
    s.stop().await;
    // A fold that hides Transfer-Encoding in the line above it: whichever reading the proxy
    // takes, the backend gets one request and no smuggled one.
    let folds = [
        "X-A: x\r\n Transfer-Encoding: chunked",
        "Transfer-Encoding:\r\n chunked",
    ];
    let requests = folds.iter().flat_map(|l| [cl_te(l), te_cl(l)]);
    each(requests, |r| async move {
        one_request_or_refused(&r, false).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9110_5_5_nul_or_bare_cr_in_a_field_value_is_refused_or_replaced_with_space() {
    let values: [&[u8]; 3] = [b"a\0b", b"a\rb", b"a\rTransfer-Encoding: chunked"];
    let requests = values.map(|value| {
        let mut request = b"POST / HTTP/1.1\r\nHost: x\r\nX-A: ".to_vec();
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
        request
    });
    each(requests, |request| async move {
        let s = Setup::new(RawBackend::echo_line().await).await;
        let out = exchange(s.addr(), &request).await;
        let got = s.backend.settled().await;
        let ctx = format!("{out}\nbackend got {}", s.backend_bytes());
        match out.statuses()[..] {
            [400] => assert!(got.is_empty() && s.backend.all_bytes().is_empty(), "{ctx}"),
            [200] => {
                assert_eq!(got.len(), 1, "{ctx}");
                let head = &got[0].head;
                assert!(!head.contains(&0), "a NUL reached the backend: {ctx}");
                let bare_cr = head.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n');
                assert!(!bare_cr, "a bare CR reached the backend: {ctx}");
                assert!(got[0].values("transfer-encoding").is_empty(), "{ctx}");
                assert_eq!(got[0].data(), b"hello", "{ctx}");
            }
            _ => panic!("{ctx}"),
        }
        s.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9112_9_3_2_a_request_pipelined_behind_both_framings_is_not_served() {
    // The first request is chunked with a Content-Length beside it; the connection must close
    // after its answer, so the one pipelined behind it is never read as a request.
    let s = Setup::new(RawBackend::echo_line().await).await;
    let request =
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
        5\r\nhello\r\n0\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n";
    let out = exchange(s.addr(), request).await;
    let got = s.backend.settled().await;
    let ctx = format!("{out}\nbackend got {}", s.backend_bytes());
    assert_eq!(out.answers.len(), 1, "exactly one answer: {ctx}");
    assert!(out.closed, "{ctx}");
    assert!(
        got.iter().all(|r| !r.request_line().contains("/second")),
        "the request behind reached the backend: {ctx}"
    );
    if out.statuses() == [200] {
        assert_eq!(got.len(), 1, "{ctx}");
        assert_eq!(got[0].data(), b"hello", "{ctx}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9112_7_1_an_invalid_chunk_size_is_refused_with_400_not_counted_against_the_backend() {
    let s = Setup::new(RawBackend::fixed(super::OK).await).await;
    let errors_before = s.upstream_errors();
    let mut c = RawClient::connect(s.addr()).await;
    c.send(
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    let out = c.outcome().await;
    let ctx = format!("{out}\nbackend got {}", s.backend_bytes());
    assert_eq!(out.statuses(), [400], "the client's fault: {ctx}");
    assert!(
        out.closed,
        "the framing is lost: the connection must close: {ctx}"
    );
    assert!(
        s.backend.requests().is_empty(),
        "no whole request may reach the backend: {ctx}"
    );
    assert_eq!(
        s.upstream_errors(),
        errors_before,
        "a client's broken body is not the backend's error"
    );
    s.stop().await;
}
