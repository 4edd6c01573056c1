//! The codec's request-head parser (`parse_request`) on raw client bytes, and its request
//! encoder (`encode_request`) on what it parsed.
//!
//! Checks, on every input: only a plain request is consumed, and exactly its head; a plain
//! request carries none of what must go to a full server (a transfer coding, `Expect`,
//! `Upgrade`, an authority target, two lengths) and a body of at most the buffering limit; a
//! head one byte short is still partial (how the bytes arrive does not change what they mean);
//! the request as the codec writes it to a backend reads back as the same request, its body
//! framed the same; and a head over the limit is refused whole, never taken in part. The limit
//! is the largest for most inputs and 512 bytes for every third (by length), so both sides of
//! it are reached.

#![no_main]

use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;
use sessionwatch_h1::{
    BUFFER_BODY_LIMIT, MAX_HEAD, MAX_HEADERS, Parsed, RequestHead, encode_request, parse_request,
};

fuzz_target!(|data: &[u8]| {
    let limit = if data.len() % 3 == 0 { 512 } else { MAX_HEAD };
    let mut buf = BytesMut::from(data);
    let parsed = parse_request(&mut buf, limit);
    let consumed = data.len() - buf.len();
    assert_eq!(&buf[..], &data[consumed..], "only a prefix may be consumed");
    match parsed {
        Parsed::Plain(RequestHead {
            parts,
            body_len,
            keep_alive,
        }) => {
            assert!(consumed > 0 && consumed <= limit);
            let head = &data[..consumed];
            assert!(
                head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"),
                "a head ends with its empty line"
            );
            for cut in [consumed - 1, consumed / 2] {
                let mut short = BytesMut::from(&data[..cut]);
                let again = parse_request(&mut short, limit);
                assert!(
                    matches!(again, Parsed::Partial),
                    "{cut} of a {consumed}-byte head: {again:?}"
                );
                assert_eq!(short.len(), cut);
            }
            check_plain(&parts, body_len, keep_alive);
            round_trip(&parts, body_len, &buf);
        }
        Parsed::Partial | Parsed::NotPlain => {
            assert_eq!(
                consumed, 0,
                "nothing is consumed unless the request is plain"
            );
        }
        Parsed::Bad => assert!(consumed > 0, "a bad head is consumed"),
        Parsed::TooLarge => {
            assert_eq!(consumed, 0, "a head over the limit is not taken in part");
            assert!(
                data.len() > limit,
                "a head within the limit refused as too large"
            );
        }
    }
});

fn check_plain(parts: &http::request::Parts, body_len: usize, keep_alive: bool) {
    assert_ne!(parts.method, Method::CONNECT);
    assert!(parts.uri.scheme().is_none() && parts.uri.authority().is_none());
    assert!(parts.uri.path().starts_with('/'));
    let h = &parts.headers;
    assert!(h.len() <= MAX_HEADERS);
    for name in [TRANSFER_ENCODING, EXPECT, UPGRADE] {
        assert!(!h.contains_key(&name), "{name} in a plain request");
    }
    let lengths: Vec<_> = h.get_all(CONTENT_LENGTH).iter().collect();
    assert!(lengths.len() <= 1, "two lengths in a plain request");
    assert!(body_len as u64 <= BUFFER_BODY_LIMIT);
    match lengths.first() {
        Some(v) => assert_eq!(v.to_str().ok().and_then(|v| v.parse().ok()), Some(body_len)),
        None => assert_eq!(body_len, 0),
    }
    let lists = |token: &str| {
        h.get_all(CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    assert!(!lists("upgrade"));
    if lists("close") {
        assert!(!keep_alive, "kept alive after Connection: close");
    }
}

/// The request the backend receives must be the request the codec parsed: same method, target
/// and headers, the body framed by one length and nothing after it.
fn round_trip(parts: &http::request::Parts, body_len: usize, rest: &[u8]) {
    // A head at the field limit grows past it when the framing is written out (and the proxy
    // adds its forwarding headers besides): the backend's own limit judges that one.
    if parts.headers.len() >= MAX_HEADERS {
        return;
    }
    let mut body = rest[..body_len.min(rest.len())].to_vec();
    body.resize(body_len, b'x');
    let mut wire = Vec::new();
    encode_request(parts, &body, &mut wire);
    let mut buf = BytesMut::from(&wire[..]);
    let Parsed::Plain(RequestHead {
        parts: sent,
        body_len: sent_len,
        ..
    }) = parse_request(&mut buf, MAX_HEAD)
    else {
        panic!("the request as sent to a backend is not plain: {wire:?}");
    };
    assert_eq!(sent.method, parts.method);
    assert_eq!(sent.uri, parts.uri);
    assert_eq!(
        without_length(&sent.headers),
        without_length(&parts.headers)
    );
    assert_eq!(sent_len, body_len);
    assert_eq!(&buf[..], &body[..], "exactly the body follows the head");
}

fn without_length(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    h.iter()
        .filter(|(n, _)| **n != CONTENT_LENGTH)
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}
