//! The upstream side's answer-head parser and body framing (`h1::parse_head`, which calls
//! `framing`), then the body read from what follows the head as `Body::start` and
//! `Body::poll_frame` read it.
//!
//! The first byte picks the mode: bit 0, the answer is to a HEAD request; bit 1, the rest is
//! rebuilt into a head whose headers all convert (the first line is the status line, `HTTP/1.1 `
//! put before it when it lacks one; the other lines up to an empty one are headers, those `http`
//! refuses left out), so that nearly every input reaches the framing rules; otherwise the rest
//! goes to the parser as it is. The seeds use `0`-`3`.
//!
//! Checks: a head is consumed exactly, and nothing is consumed while it is partial; a head one
//! byte short is still partial; the framing follows RFC 9112 section 6.3 (no body for HEAD, 1xx,
//! 204 and 304; a transfer coding wins over a length, which is then dropped; chunked only as the
//! last coding; a connection delimited by its close is not reused; `Connection: close` is
//! honoured); the body never yields more bytes than follow the head.

#![no_main]

use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode, Version};
use libfuzzer_sys::fuzz_target;
use sessionwatch_fuzz::{header_map, lines, split_block};
use sessionwatch_proxy::fuzzing::{
    AnswerHead, ChunkedDecoder, Decoded, Framing, MAX_HEAD, MAX_HEADERS, parse_head,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let head_request = mode & 1 != 0;
    let input = if mode & 2 != 0 {
        rebuild(rest)
    } else {
        rest.to_vec()
    };
    let mut buf = BytesMut::from(&input[..]);
    let parsed = parse_head(&mut buf, head_request);
    let consumed = input.len() - buf.len();
    assert_eq!(
        &buf[..],
        &input[consumed..],
        "only a prefix may be consumed"
    );
    match parsed {
        Ok(Some(head)) => {
            assert!(consumed > 0 && consumed <= MAX_HEAD);
            let mut short = BytesMut::from(&input[..consumed - 1]);
            assert!(
                matches!(parse_head(&mut short, head_request), Ok(None)),
                "a head one byte short is complete"
            );
            check_framing(&head, head_request);
            read_body(head.framing, buf);
        }
        Ok(None) => assert_eq!(consumed, 0, "a partial head is consumed"),
        Err(_) => {}
    }
});

/// A head from lines: every header valid, so that the framing rules are what decides.
fn rebuild(data: &[u8]) -> Vec<u8> {
    let (block, body) = split_block(data);
    let mut block = lines(block);
    let status_line = block.next().unwrap_or_default();
    let mut out = Vec::with_capacity(data.len() + 16);
    if !status_line.starts_with(b"HTTP/") {
        out.extend_from_slice(b"HTTP/1.1 ");
    }
    out.extend_from_slice(status_line);
    out.extend_from_slice(b"\r\n");
    for (name, value) in &header_map(block, "x-line") {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn lists(headers: &HeaderMap, name: http::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

fn check_framing(head: &AnswerHead, head_request: bool) {
    let h = &head.headers;
    assert!(h.len() <= MAX_HEADERS);
    let bodiless = head_request
        || head.status.is_informational()
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED;
    let coded = h.contains_key(TRANSFER_ENCODING);
    match head.framing {
        Framing::Empty => assert!(
            bodiless || (!coded && h.get(CONTENT_LENGTH).is_some()),
            "no body without a reason"
        ),
        Framing::Length(n) => {
            assert!(!bodiless && !coded && n > 0);
            for v in h.get_all(CONTENT_LENGTH) {
                for part in v.as_bytes().split(|&b| b == b',') {
                    let part = std::str::from_utf8(part.trim_ascii()).ok();
                    assert_eq!(part.and_then(|p| p.parse::<u64>().ok()), Some(n));
                }
            }
        }
        Framing::Chunked => {
            assert!(!bodiless && coded);
            let last = h
                .get_all(TRANSFER_ENCODING)
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                .map(|t| t.trim_ascii())
                .rfind(|t| !t.is_empty());
            assert!(last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")));
        }
        Framing::UntilClose => {
            assert!(!bodiless);
            assert!(
                !head.keep_alive,
                "a body delimited by the close, then reused"
            );
        }
    }
    if coded && !bodiless {
        assert!(
            !h.contains_key(CONTENT_LENGTH),
            "a length kept next to a transfer coding"
        );
    }
    if head.keep_alive {
        assert!(
            !lists(h, CONNECTION, "close"),
            "reused after Connection: close"
        );
        if head.version == Version::HTTP_10 {
            assert!(lists(h, CONNECTION, "keep-alive"));
            assert!(!coded, "an HTTP/1.0 answer with a transfer coding reused");
        }
    }
}

/// The body as the upstream side reads it from the bytes after the head.
fn read_body(framing: Framing, mut rest: BytesMut) {
    let available = rest.len();
    let yielded = match framing {
        Framing::Empty => 0,
        Framing::Length(n) => usize::try_from(n).unwrap_or(usize::MAX).min(available),
        Framing::UntilClose => available,
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            let mut total = 0;
            while let Ok(Decoded::Data(d)) = decoder.decode(&mut rest) {
                assert!(!d.is_empty(), "an empty data frame");
                total += d.len();
            }
            assert!(total + rest.len() <= available);
            total
        }
    };
    assert!(yielded <= available, "more body than bytes");
}
