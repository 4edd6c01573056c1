use super::*;
use crate::testing::request;
use crate::{ChunkedDecoder, Decoded};
use http::Method;

fn head(raw: &str, head_request: bool) -> Result<Option<AnswerHead>, Error> {
    let mut buf = BytesMut::from(raw);
    parse_answer(&mut buf, head_request)
}

fn complete(raw: &str) -> AnswerHead {
    head(raw, false).unwrap().unwrap()
}

#[test]
fn an_answer_head_is_parsed_and_consumed() {
    let mut buf = BytesMut::from(
        "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Empty:\r\nset-cookie: b=2\r\nContent-Length: 5\r\n\r\nhello",
    );
    let h = parse_answer(&mut buf, false).unwrap().unwrap();
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.version, Version::HTTP_11);
    let cookies: Vec<_> = h.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(h.headers["x-empty"], "");
    assert_eq!(h.framing, Framing::Length(5));
    assert!(h.keep_alive);
    assert_eq!(&buf[..], b"hello");
}

#[test]
fn a_partial_head_asks_for_more() {
    assert!(
        head("HTTP/1.1 200 OK\r\nContent-Len", false)
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_partial_head_is_refused_once_it_has_outgrown_the_limit() {
    let mut raw = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
    raw.resize(MAX_HEAD - 1, b'a');
    let mut buf = BytesMut::from(&raw[..]);
    assert!(matches!(parse_answer(&mut buf, false), Ok(None)));
    raw.push(b'a');
    let mut buf = BytesMut::from(&raw[..]);
    assert!(
        parse_answer(&mut buf, false)
            .unwrap_err()
            .is_head_too_large()
    );
}

#[test]
fn framing_follows_rfc_9112() {
    let chunked = complete("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    assert_eq!(
        (chunked.framing, chunked.keep_alive),
        (Framing::Chunked, true)
    );
    // A length next to a transfer coding is dropped, and so is the connection afterwards.
    let both =
        complete("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
    assert_eq!((both.framing, both.keep_alive), (Framing::Chunked, false));
    assert!(!both.headers.contains_key(CONTENT_LENGTH));
    let not_chunked = complete("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert_eq!(
        (not_chunked.framing, not_chunked.keep_alive),
        (Framing::UntilClose, false)
    );
    let no_length = complete("HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(
        (no_length.framing, no_length.keep_alive),
        (Framing::UntilClose, false)
    );
    assert_eq!(
        complete("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n").framing,
        Framing::Empty
    );
    assert_eq!(
        complete("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n").framing,
        Framing::Empty
    );
    let to_head = head("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", true)
        .unwrap()
        .unwrap();
    assert_eq!(to_head.framing, Framing::Empty);
    assert_eq!(to_head.headers[CONTENT_LENGTH], "1000");
    assert_eq!(
        complete("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n").framing,
        Framing::Length(7)
    );
}

#[test]
fn more_framing_cases_of_rfc_9112() {
    // Rule 1: interim answers, 204 and 304 have no body, and their fields stand as they are.
    for raw in [
        "HTTP/1.1 100 Continue\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let h = complete(raw);
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true), "{raw}");
    }
    let kept = complete(
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert!(kept.headers.contains_key(CONTENT_LENGTH));
    // Rule 3: the codings of every field make one list, and chunked must end it.
    let split = complete(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(split.framing, Framing::Chunked);
    let not_last = complete(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
    );
    assert_eq!(
        (not_last.framing, not_last.keep_alive),
        (Framing::UntilClose, false)
    );
    // Rule 5: lengths that agree are one length; a length of 0 is no body.
    let same = complete("HTTP/1.1 200 OK\r\nContent-Length: 4\r\ncontent-length: 4\r\n\r\n");
    assert_eq!(same.framing, Framing::Length(4));
    let zero = complete("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!((zero.framing, zero.keep_alive), (Framing::Empty, true));
}

#[test]
fn connection_reuse_follows_the_version_and_connection_header() {
    assert!(
        !complete("HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n").keep_alive
    );
    assert!(!complete("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
    assert!(
        complete("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
            .keep_alive
    );
    assert!(
        !complete("HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n")
            .keep_alive
    );
}

#[test]
fn bad_heads_are_errors_not_panics() {
    for raw in [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTX/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        "\0\0\0\0\r\n\r\n",
    ] {
        assert!(head(raw, false).is_err(), "{raw:?} was accepted");
    }
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    let raw = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
    assert!(head(&raw, false).unwrap_err().is_too_many_headers());
}

#[test]
fn an_http_1_0_answer_with_a_transfer_coding_closes_its_connection() {
    let h =
        complete("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
}

#[test]
fn requests_are_encoded_with_a_length_from_the_body_in_hand() {
    let mut out = Vec::new();
    let get = request(
        Method::GET,
        "/a?b=1",
        &[("host", "farm"), ("cookie", "s=1")],
    );
    encode_request(&get, b"", &mut out);
    assert_eq!(
        out,
        b"GET /a?b=1 HTTP/1.1\r\nhost: farm\r\ncookie: s=1\r\n\r\n"
    );
    let post = request(
        Method::POST,
        "/login",
        &[
            ("host", "farm"),
            ("content-length", "999"),
            ("transfer-encoding", "chunked"),
        ],
    );
    encode_request(&post, b"user=a", &mut out);
    assert_eq!(
        out,
        b"POST /login HTTP/1.1\r\nhost: farm\r\ncontent-length: 6\r\n\r\nuser=a"
    );
    let empty_post = request(Method::POST, "/", &[]);
    encode_request(&empty_post, b"", &mut out);
    assert_eq!(out, b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
}

#[test]
fn arbitrary_bytes_never_panic_the_parsers() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let pieces: [&[u8]; 12] = [
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.0 204 \r\n",
        b"Content-Length: 12\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: close\r\n",
        b"X-Empty:\r\n",
        b"\r\n",
        b"5\r\nhello\r\n",
        b"0\r\n\r\n",
        b"ffffffffffffffff\r\n",
        b"\n\r:;,=\0\xff",
        b"HTTP/1.1 1",
    ];
    for _ in 0..20_000 {
        let mut input = Vec::new();
        for _ in 0..rng.random_range(0..8) {
            if rng.random_bool(0.8) {
                input.extend_from_slice(pieces[rng.random_range(0..pieces.len())]);
            } else {
                input.push(rng.random());
            }
        }
        let mut buf = BytesMut::from(&input[..]);
        if let Ok(Some(h)) = parse_answer(&mut buf, rng.random_bool(0.1)) {
            assert!(h.headers.len() <= MAX_HEADERS);
        }
        let mut state = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&input[..]);
        for _ in 0..64 {
            match state.decode(&mut buf) {
                Ok(Decoded::Data(_)) => {}
                _ => break,
            }
        }
    }
}
