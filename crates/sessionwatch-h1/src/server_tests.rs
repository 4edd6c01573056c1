use super::*;
use crate::testing::answer;

fn parse(raw: &[u8]) -> (Parsed, BytesMut) {
    let mut buf = BytesMut::from(raw);
    (parse_request(&mut buf, MAX_HEAD), buf)
}

fn plain(raw: &[u8]) -> RequestHead {
    match parse(raw).0 {
        Parsed::Plain(head) => head,
        other => panic!("{raw:?}: {other:?}"),
    }
}

#[test]
fn a_plain_request_is_parsed_and_its_head_consumed() {
    let (parsed, rest) = parse(
        b"POST /login?next=%2F HTTP/1.1\r\nHost: shop\r\nCookie: a=1\r\nCookie: b=2\r\n\
          Content-Length: 5\r\n\r\nuser=GET / HTTP/1.1\r\n",
    );
    let Parsed::Plain(head) = parsed else {
        panic!("{parsed:?}");
    };
    assert_eq!(head.parts.method, Method::POST);
    assert_eq!(head.parts.uri, "/login?next=%2F");
    assert_eq!(head.parts.version, Version::HTTP_11);
    let cookies: Vec<_> = head.parts.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(head.body_len, 5);
    assert!(head.keep_alive);
    assert_eq!(&rest[..], b"user=GET / HTTP/1.1\r\n");
}

#[test]
fn keep_alive_follows_the_version_and_connection_header() {
    let keep = |raw: &[u8]| plain(raw).keep_alive;
    assert!(keep(b"GET / HTTP/1.1\r\n\r\n"));
    assert!(!keep(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
    assert!(!keep(b"GET / HTTP/1.0\r\n\r\n"));
    assert!(keep(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    // RFC 9112 9.3: both listed, close wins.
    assert!(!keep(
        b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"
    ));
}

#[test]
fn anything_but_a_plain_request_is_left_whole_for_hyper() {
    for raw in [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n",
        b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
        b"GET http://elsewhere/ HTTP/1.1\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let (parsed, rest) = parse(raw);
        assert!(matches!(parsed, Parsed::NotPlain), "{raw:?}: {parsed:?}");
        assert_eq!(&rest[..], raw, "bytes were consumed");
    }
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert!(matches!(parse(raw.as_bytes()).0, Parsed::NotPlain));
    assert!(matches!(
        parse(b"GET / HTTP/1.1\r\nHost: x\r\n").0,
        Parsed::Partial
    ));
}

#[test]
fn request_framing_follows_rfc_9112() {
    // Rule 6: neither a length nor a coding, no body, whatever the method.
    assert_eq!(
        plain(b"POST / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n").body_len,
        0
    );
    assert_eq!(
        plain(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").body_len,
        0
    );
    // The buffering limit is the largest plain body.
    let at_limit = format!("POST / HTTP/1.1\r\nContent-Length: {BUFFER_BODY_LIMIT}\r\n\r\n");
    assert_eq!(
        plain(at_limit.as_bytes()).body_len as u64,
        BUFFER_BODY_LIMIT
    );
    // A list of lengths, a coding that is not chunked, or the two framings together (the
    // smuggling shapes, rules 3 to 5) all go to the full server, which refuses or reads them.
    for raw in [
        &b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nContent-Length: 3,\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
    ] {
        let (parsed, rest) = parse(raw);
        assert!(matches!(parsed, Parsed::NotPlain), "{raw:?}: {parsed:?}");
        assert_eq!(rest.len(), raw.len());
    }
}

#[test]
fn heads_over_the_limit_are_refused_whole() {
    let raw = b"GET / HTTP/1.1\r\nHost: shop\r\nX-Long: 0123456789\r\n\r\n";
    for limit in [raw.len() - 1, 20] {
        let mut buf = BytesMut::from(&raw[..]);
        assert!(matches!(parse_request(&mut buf, limit), Parsed::TooLarge));
        assert_eq!(buf.len(), raw.len(), "a head over the limit taken in part");
    }
    let mut buf = BytesMut::from(&raw[..]);
    assert!(matches!(
        parse_request(&mut buf, raw.len()),
        Parsed::Plain(_)
    ));
    // A head still arriving is too large once it has outgrown the limit.
    let mut buf = BytesMut::from(&raw[..30]);
    assert!(matches!(parse_request(&mut buf, 30), Parsed::Partial));
    let mut buf = BytesMut::from(&raw[..31]);
    assert!(matches!(parse_request(&mut buf, 30), Parsed::TooLarge));
}

#[test]
fn a_head_that_does_not_convert_is_consumed_and_bad() {
    // httparse takes these targets; `http` does not.
    for raw in [
        &b"GET /<x> HTTP/1.1\r\nHost: a\r\n\r\nnext"[..],
        b"GET /a`b HTTP/1.1\r\n\r\nnext",
    ] {
        let (parsed, rest) = parse(raw);
        assert!(matches!(parsed, Parsed::Bad), "{raw:?}: {parsed:?}");
        assert_eq!(&rest[..], b"next");
    }
}

#[test]
fn header_values_share_the_bytes_of_the_head() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nCookie: sid=1\r\n\r\n"[..]);
    let start = buf.as_ptr() as usize;
    let Parsed::Plain(head) = parse_request(&mut buf, MAX_HEAD) else {
        panic!("plain");
    };
    let value = head.parts.headers["cookie"].as_bytes().as_ptr() as usize;
    assert_eq!(value - start, 24);
}

fn encode(
    status: u16,
    headers: &HeaderMap,
    len: Option<u64>,
    to: AnswerTo,
    close: bool,
) -> (String, AnswerSent) {
    let mut out = b"stale".to_vec();
    let status = StatusCode::from_u16(status).unwrap();
    let sent = encode_answer(status, headers, len, to, close, &mut out);
    (String::from_utf8(out).unwrap(), sent)
}

const DATED: (&str, &str) = ("date", "Tue, 24 Nov 2026 10:00:00 GMT");

#[test]
fn answer_heads_carry_their_framing() {
    let headers = answer(&[("content-length", "99"), DATED]);
    let (text, _) = encode(200, &headers, Some(2), AnswerTo::default(), true);
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\ndate: Tue, 24 Nov 2026 10:00:00 GMT\r\ncontent-length: 2\r\n\
         connection: close\r\n\r\n"
    );
    let to = AnswerTo {
        head_request: true,
        http10: true,
    };
    let (text, _) = encode(200, &headers, Some(2), to, false);
    assert!(text.contains("content-length: 99\r\n"), "{text}");
    assert!(text.ends_with("connection: keep-alive\r\n\r\n"), "{text}");
    let (text, _) = encode(200, &HeaderMap::new(), None, AnswerTo::default(), false);
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(text.contains("date: "), "{text}");
}

#[test]
fn answers_without_a_body_keep_or_drop_their_framing_as_rfc_9112_says() {
    let framed = answer(&[
        ("content-length", "10"),
        ("transfer-encoding", "chunked"),
        DATED,
    ]);
    // 1xx and 204 never carry framing.
    for status in [103, 204] {
        let (text, sent) = encode(status, &framed, Some(0), AnswerTo::default(), false);
        assert_eq!(sent.framing, Framing::Empty);
        assert!(
            !text.contains("content-length") && !text.contains("transfer-encoding"),
            "{text}"
        );
    }
    // A 304 and an answer to HEAD keep the length of the body they stand for.
    let length = answer(&[("content-length", "10"), DATED]);
    let (text, sent) = encode(304, &length, Some(0), AnswerTo::default(), false);
    assert_eq!(
        sent,
        AnswerSent {
            framing: Framing::Empty,
            close: false
        }
    );
    assert!(text.contains("content-length: 10\r\n"), "{text}");
    let (text, _) = encode(200, &length, Some(0), AnswerTo::HEAD, false);
    assert!(
        text.contains("content-length: 10\r\n") && !text.contains(": 0\r\n"),
        "{text}"
    );
    // An answer to HEAD with no length of its own says the one its body has.
    let (text, _) = encode(200, &answer(&[DATED]), Some(42), AnswerTo::HEAD, false);
    assert!(text.ends_with("content-length: 42\r\n\r\n"), "{text}");
    let (text, _) = encode(200, &answer(&[DATED]), None, AnswerTo::HEAD, false);
    assert!(
        !text.contains("content-length") && !text.contains("chunked"),
        "{text}"
    );
}

#[test]
fn an_answer_s_own_framing_fields_give_way_to_the_framing_written() {
    let lying = answer(&[
        ("content-length", "10"),
        ("transfer-encoding", "gzip"),
        DATED,
    ]);
    let (text, sent) = encode(200, &lying, Some(3), AnswerTo::default(), false);
    assert_eq!(sent.framing, Framing::Length(3));
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\ndate: Tue, 24 Nov 2026 10:00:00 GMT\r\ncontent-length: 3\r\n\r\n"
    );
    let (text, sent) = encode(200, &lying, None, AnswerTo::default(), false);
    assert_eq!(sent.framing, Framing::Chunked);
    assert!(
        text.contains("transfer-encoding: chunked\r\n") && !text.contains("gzip"),
        "{text}"
    );
    // An empty body is announced, so the client does not read until the close.
    let (text, sent) = encode(200, &answer(&[DATED]), Some(0), AnswerTo::default(), false);
    assert_eq!(sent.framing, Framing::Length(0));
    assert!(text.contains("content-length: 0\r\n"), "{text}");
}

#[test]
fn the_connection_s_fate_is_written_and_returned() {
    let dated = answer(&[DATED]);
    // An HTTP/1.0 client with no length to go by: until the close, said so.
    let (text, sent) = encode(200, &dated, None, AnswerTo::HTTP10, false);
    assert_eq!(
        sent,
        AnswerSent {
            framing: Framing::UntilClose,
            close: true
        }
    );
    assert!(text.ends_with("connection: close\r\n\r\n"), "{text}");
    // An HTTP/1.0 client kept alive is told so; an HTTP/1.1 one need not be.
    let (text, sent) = encode(200, &dated, Some(1), AnswerTo::HTTP10, false);
    assert!(
        !sent.close && text.ends_with("connection: keep-alive\r\n\r\n"),
        "{text}"
    );
    let (text, sent) = encode(200, &dated, Some(1), AnswerTo::default(), false);
    assert!(!sent.close && !text.contains("connection"), "{text}");
    // A `Connection` field of the answer's own closes, and is written once.
    let own = answer(&[DATED, ("connection", "close")]);
    let (text, sent) = encode(400, &own, Some(0), AnswerTo::HTTP10, false);
    assert!(sent.close, "{text}");
    assert_eq!(text.matches("connection").count(), 1, "{text}");
}

#[test]
fn a_date_is_added_only_when_the_answer_has_none() {
    let (text, _) = encode(200, &answer(&[DATED]), Some(0), AnswerTo::default(), false);
    assert_eq!(text.matches("date: ").count(), 1);
    let (text, _) = encode(200, &HeaderMap::new(), Some(0), AnswerTo::default(), false);
    let line = text.lines().find_map(|l| l.strip_prefix("date: ")).unwrap();
    assert!(httpdate::parse_http_date(line).is_ok(), "{line}");
}
