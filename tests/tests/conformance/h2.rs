//! HTTP/2 requests turned into HTTP/1.1 ones for the backend (RFC 9113 section 8), and the
//! rapid reset flood (CVE-2023-44487). Well-formed requests go through the `h2` crate's client;
//! malformed ones, and the flood, are written frame by frame.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Method, Request};
use sessionwatch_tests::h2wire::{self, H2Conn, StreamEnd};
use sessionwatch_tests::raw::{RawBackend, Received};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{OK, Setup, each_named};

const WAIT: Duration = Duration::from_secs(10);

async fn client(addr: std::net::SocketAddr) -> SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = tokio::time::timeout(WAIT, h2::client::handshake(tcp))
        .await
        .expect("an HTTP/2 handshake within 10 s")
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Send `req` (with `body`, if any) and read the answer whole: its status and body.
async fn request(
    client: &SendRequest<Bytes>,
    req: Request<()>,
    body: Option<&'static [u8]>,
) -> Result<(u16, Vec<u8>), h2::Error> {
    let mut ready = tokio::time::timeout(WAIT, client.clone().ready())
        .await
        .expect("room for a stream within 10 s")?;
    let (answer, mut send) = ready.send_request(req, body.is_none())?;
    if let Some(body) = body {
        send.send_data(Bytes::from_static(body), true)?;
    }
    let answer = tokio::time::timeout(WAIT, answer)
        .await
        .expect("an answer within 10 s")?;
    let status = answer.status().as_u16();
    let mut body = answer.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, body.data())
        .await
        .expect("the body within 10 s")
    {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    Ok((status, data))
}

/// Send `req` over HTTP/2; the one request the backend received. Panics unless answered 200.
async fn forwarded(s: &Setup, req: Request<()>) -> Received {
    let c = client(s.addr()).await;
    let answer = request(&c, req, None).await;
    let mut got = s.backend.settled().await;
    assert!(
        matches!(answer, Ok((200, _))),
        "{answer:?}; backend got {}",
        s.backend_bytes()
    );
    assert_eq!(got.len(), 1, "{}", s.backend_bytes());
    got.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9113_8_2_3_cookie_fields_are_joined_into_one_for_http_1_1() {
    let s = Setup::new(RawBackend::fixed(OK).await).await;
    let req = Request::get("http://a.example/c")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("cookie", "c=3")
        .body(())
        .expect("request");
    let r = forwarded(&s, req).await;
    assert_eq!(r.values("cookie"), ["a=1; b=2; c=3"], "{}", r.head_text());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9113_8_3_1_the_authority_becomes_the_host_and_wins_over_a_host_field() {
    let s = Setup::new(RawBackend::fixed(OK).await).await;
    let r = forwarded(
        &s,
        Request::get("http://a.example/p")
            .body(())
            .expect("request"),
    )
    .await;
    assert_eq!(r.values("host"), ["a.example"], "{}", r.head_text());
    s.backend.clear();
    let req = Request::get("http://a.example/p")
        .header("host", "b.example")
        .body(())
        .expect("request");
    let r = forwarded(&s, req).await;
    assert_eq!(r.values("host"), ["a.example"], "{}", r.head_text());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9113_8_5_connect_is_refused_and_never_forwarded() {
    let s = Setup::new(RawBackend::fixed(OK).await).await;
    let c = client(s.addr()).await;
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri("backend.example:443")
        .body(())
        .expect("request");
    let answer = request(&c, req, Some(b"SSH-2.0-x\r\n")).await;
    s.backend.settled().await;
    assert!(
        s.backend.all_bytes().is_empty(),
        "{answer:?}; the backend got {}",
        s.backend_bytes()
    );
    match answer {
        Ok((status, _)) => assert_eq!(status, 405),
        Err(e) => assert!(e.is_reset() || e.is_go_away(), "{e}"),
    }
    drop(c);
    s.stop().await;
}

/// A header field, name and value, as bytes.
type Field = (&'static [u8], &'static [u8]);
/// Header fields, in order.
type Fields = Vec<Field>;

/// The fields of a well-formed GET, in order.
const GET: [(&[u8], &[u8]); 4] = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"a.example"),
    (b":path", b"/"),
];

/// Send a request of `fields` (and `body` in DATA frames, the last ending the stream) frame by
/// frame; assert the proxy refuses it (a reset, a GOAWAY or a 4xx) and forwards nothing whole:
/// any bytes the backend got ended with the proxy closing that connection.
async fn refused_h2(fields: &[(&[u8], &[u8])], body: &[&[u8]]) {
    let s = Setup::new(RawBackend::fixed(OK).await).await;
    let mut c = H2Conn::connect(s.addr()).await;
    let mut frames = h2wire::headers(1, fields, body.is_empty());
    for (i, part) in body.iter().enumerate() {
        frames.extend(h2wire::data(1, part, i + 1 == body.len()));
    }
    assert!(c.send(&frames).await);
    let end = c.stream_end(1, WAIT).await;
    drop(c);
    let ctx = format!("{end:?}; backend got {}", s.backend_bytes());
    match end {
        StreamEnd::Reset(_) | StreamEnd::GoAway(_) => {}
        StreamEnd::Answered(Some(status)) if (400..500).contains(&status) => {}
        _ => panic!("not refused: {ctx}"),
    }
    s.backend.settled().await;
    assert!(s.backend.requests().is_empty(), "forwarded: {ctx}");
    assert!(
        s.backend.conns().iter().all(|c| c.bytes.is_empty())
            || s.backend.wait_all_ended(WAIT).await,
        "a part of it reached the backend and was left open: {ctx}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9113_8_3_a_pseudo_header_after_a_regular_field_is_refused() {
    refused_h2(
        &[
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"a.example"),
            (b"x-a", b"1"),
            (b":path", b"/"),
        ],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9113_8_3_1_a_missing_repeated_or_unknown_pseudo_header_is_refused() {
    let cases: [(&str, Fields); 6] = [
        ("no :path", GET[..3].to_vec()),
        ("no :method", GET[1..].to_vec()),
        ("two :path", [&GET[..], &[(b":path", b"/again")]].concat()),
        ("an empty :path", [&GET[..3], &[(b":path", b"")]].concat()),
        (
            "an unknown pseudo-header",
            [&GET[..], &[(b":foo", b"x")]].concat(),
        ),
        (
            "a response's :status",
            [&GET[..], &[(b":status", b"200")]].concat(),
        ),
    ];
    let cases = cases.map(|(what, fields)| (what.to_owned(), fields));
    each_named(
        cases,
        |fields| async move { refused_h2(&fields, &[]).await },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9113_8_2_1_an_uppercase_field_name_is_refused() {
    refused_h2(&[&GET[..], &[(b"X-Upper", b"1")]].concat(), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9113_8_2_1_cr_lf_or_nul_in_a_field_is_refused() {
    let cases: [(&str, Field); 5] = [
        ("CRLF in a value", (b"x-a", b"1\r\nx-injected: yes")),
        ("LF in a value", (b"x-a", b"1\nx-injected: yes")),
        ("NUL in a value", (b"x-a", b"1\0")),
        ("a space in a name", (b"x a", b"1")),
        ("a colon in a name", (b"x-a:b", b"1")),
    ];
    let cases = cases.map(|(what, field)| (what.to_owned(), [&GET[..], &[field]].concat()));
    each_named(
        cases,
        |fields| async move { refused_h2(&fields, &[]).await },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9113_8_2_2_connection_specific_fields_are_refused() {
    let cases: [(&[u8], &[u8]); 6] = [
        (b"connection", b"keep-alive"),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-connection", b"keep-alive"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"h2c"),
        (b"te", b"gzip"),
    ];
    let cases = cases.map(|field| {
        let what = String::from_utf8_lossy(field.0).into_owned();
        (what, [&GET[..], &[field]].concat())
    });
    each_named(
        cases,
        |fields| async move { refused_h2(&fields, &[]).await },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9113_8_1_1_a_body_differing_from_its_content_length_is_never_forwarded() {
    /// DATA frames' payloads.
    type Body = Vec<&'static [u8]>;
    const POST: [Field; 4] = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"a.example"),
        (b":path", b"/up"),
    ];
    let smuggled: &'static [u8] = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases: [(&str, &'static [u8], Body); 4] = [
        ("shorter", b"10", vec![b"hello"]),
        ("longer, a request inside", b"0", vec![smuggled]),
        ("longer, over two frames", b"3", vec![b"hello", b"world"]),
        ("shorter, streamed", b"100000", vec![b"hello"]),
    ];
    let cases = cases.map(|(what, length, body)| {
        let fields: Fields = [&POST[..], &[(&b"content-length"[..], length)]].concat();
        (what.to_owned(), (fields, body))
    });
    each_named(cases, |(fields, body)| async move {
        refused_h2(&fields, &body).await
    })
    .await;
}

/// One attacking connection: open and cancel streams as fast as the socket takes them until
/// the server sends GOAWAY or closes, or `until`. How many streams it opened and the GOAWAY's
/// error code, if one came.
async fn rapid_reset(
    addr: std::net::SocketAddr,
    until: tokio::time::Instant,
) -> (usize, Option<u32>) {
    let mut attacker = H2Conn::connect(addr).await;
    attacker.handshake().await;
    let (stream, mut buf) = attacker.into_parts();
    let (mut read, mut write) = stream.into_split();
    let goaway: Arc<Mutex<Option<u32>>> = Arc::new(Mutex::new(None));
    let reader = {
        let goaway = goaway.clone();
        tokio::spawn(async move {
            while let Some(f) = h2wire::read_frame(&mut read, &mut buf, WAIT).await {
                if f.kind == h2wire::GOAWAY {
                    let code = f
                        .payload
                        .get(4..8)
                        .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                    *goaway.lock().unwrap_or_else(PoisonError::into_inner) = Some(code);
                }
            }
        })
    };
    let got_goaway = || {
        goaway
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    };
    let (mut id, mut opened) = (1u32, 0usize);
    while tokio::time::Instant::now() < until && !got_goaway() {
        let mut batch = Vec::with_capacity(100 * 64);
        for _ in 0..100 {
            batch.extend(h2wire::headers(id, &GET, true));
            batch.extend(h2wire::rst_stream(id, h2wire::CANCEL));
            id += 2;
        }
        let written = tokio::time::timeout(WAIT, write.write_all(&batch)).await;
        if !matches!(written, Ok(Ok(()))) {
            break;
        }
        opened += 100;
    }
    // The GOAWAY may still be on its way when the writes stop.
    if !got_goaway() {
        let _ = tokio::time::timeout(WAIT, reader).await;
    }
    let code = *goaway.lock().unwrap_or_else(PoisonError::into_inner);
    (opened, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2023_44487_a_rapid_reset_flood_gets_goaway_while_other_clients_are_served() {
    let s = Setup::new(RawBackend::fixed(OK).await).await;
    let addr = s.addr();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);

    // Another client, on its own connection, asking at a steady pace all through the flood.
    let stop = Arc::new(AtomicBool::new(false));
    let polite = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let c = client(addr).await;
            let (mut statuses, mut failures) = (Vec::new(), 0usize);
            while !stop.load(Ordering::Relaxed) {
                let req = Request::get("http://a.example/polite")
                    .body(())
                    .expect("request");
                match tokio::time::timeout(Duration::from_secs(5), request(&c, req, None)).await {
                    Ok(Ok((status, _))) => statuses.push(status),
                    _ => failures += 1,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (statuses, failures)
        })
    };

    // The attacker comes back on a new connection each time it is sent away, for 10 s.
    let (mut connections, mut opened, mut goaways) = (0usize, 0usize, Vec::new());
    while tokio::time::Instant::now() < until {
        let (n, goaway) = rapid_reset(addr, until).await;
        connections += 1;
        opened += n;
        match goaway {
            Some(code) => goaways.push(code),
            // Cut short by the end of the 10 s, not by the server.
            None if tokio::time::Instant::now() >= until => {}
            None => panic!("connection {connections} ended without a GOAWAY after {n} resets"),
        }
        // Each connection floods as fast as it can; the pause between them only bounds the
        // sockets left behind (TIME_WAIT) on a machine that runs other tests too.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (statuses, failures) = polite.await.expect("the other client's task");
    eprintln!(
        "rapid reset: {opened} streams opened and reset on {connections} connections; \
         GOAWAY codes {:?}; the other client: {} answered, {failures} failed",
        {
            let mut codes = goaways.clone();
            codes.dedup();
            codes
        },
        statuses.len()
    );
    assert!(
        !goaways.is_empty(),
        "no GOAWAY after {opened} streams opened and reset"
    );
    assert!(!statuses.is_empty(), "the other client got no answer");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(failures, 0, "the other client's requests failed");
    s.stop().await;
}
