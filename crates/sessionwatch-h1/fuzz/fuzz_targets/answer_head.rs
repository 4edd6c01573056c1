//! The codec's answer-head parser and body framing (`parse_answer`), then the body read from
//! what follows the head (`BodyDecoder`), then the answer as the codec writes it on to a client
//! (`encode_answer`) read back.
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
//! honoured); the body never yields more bytes than follow the head, and exactly those its
//! framing delimits; and the answer written on for a client reads back with the same status and
//! fields, the framing that was written for it (and no other framing field) and the
//! connection's fate it was given.

#![no_main]

use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode, Version};
use libfuzzer_sys::fuzz_target;
use sessionwatch_h1::{
    AnswerHead, AnswerTo, BodyDecoder, Decoded, Framing, MAX_HEAD, MAX_HEADERS, encode_answer,
    parse_answer,
};
use sessionwatch_h1_fuzz::{header_map, lines, split_block};

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
    let parsed = parse_answer(&mut buf, head_request);
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
                matches!(parse_answer(&mut short, head_request), Ok(None)),
                "a head one byte short is complete"
            );
            check_framing(&head, head_request);
            read_body(head.framing, buf);
            write_on(&head, head_request);
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
    let mut body = BodyDecoder::new(framing);
    let mut yielded = 0;
    let ended = loop {
        match body.decode(&mut rest) {
            Ok(Decoded::Data(d)) => {
                assert!(!d.is_empty(), "an empty data frame");
                yielded += d.len();
            }
            Ok(Decoded::End) => break true,
            Ok(Decoded::NeedMore) | Err(_) => break false,
        }
    };
    assert!(yielded + rest.len() <= available, "more body than bytes");
    assert_eq!(ended, body.is_done());
    match framing {
        Framing::Empty => assert!(ended && yielded == 0),
        Framing::Length(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            assert_eq!(yielded, n.min(available));
            assert_eq!(ended, n <= available);
        }
        Framing::UntilClose => assert!(!ended && yielded == available && body.ends_at_close()),
        Framing::Chunked => assert!(!body.ends_at_close()),
    }
}

/// The answer as the proxy writes it on to an HTTP/1.1 client, its body of the length it read
/// (unknown unless framed by a length), read back as that client reads it.
fn write_on(head: &AnswerHead, head_request: bool) {
    // The proxy adds a date, the framing and the connection's fate: a head near either limit
    // grows past it, and the client's own limits judge that one.
    if head.headers.len() + 3 > MAX_HEADERS {
        return;
    }
    let len = match head.framing {
        Framing::Empty => Some(0),
        Framing::Length(n) => Some(n),
        Framing::Chunked | Framing::UntilClose => None,
    };
    let to = AnswerTo {
        head_request,
        http10: false,
    };
    let mut wire = Vec::new();
    let sent = encode_answer(head.status, &head.headers, len, to, false, &mut wire);
    if wire.len() > MAX_HEAD {
        return;
    }
    assert_eq!(
        sent.close,
        head.headers.contains_key(CONNECTION),
        "only a Connection field of its own closes an answer"
    );
    let mut buf = BytesMut::from(&wire[..]);
    let back = match parse_answer(&mut buf, head_request) {
        Ok(Some(back)) => back,
        other => panic!("the answer as written does not read back: {other:?}: {wire:?}"),
    };
    assert!(buf.is_empty(), "the head written is not one head");
    assert_eq!(back.status, head.status);
    assert_eq!(back.keep_alive, !sent.close);
    let expected = match sent.framing {
        _ if back.status.is_informational()
            || back.status == StatusCode::NO_CONTENT
            || back.status == StatusCode::NOT_MODIFIED
            || head_request =>
        {
            Framing::Empty
        }
        Framing::Length(0) => Framing::Empty,
        written => written,
    };
    assert_eq!(back.framing, expected, "{wire:?}");
    // Where a body goes out, the framing written is the only framing there is.
    let count = |name| back.headers.get_all(name).iter().count();
    match sent.framing {
        Framing::Length(_) => assert_eq!((count(CONTENT_LENGTH), count(TRANSFER_ENCODING)), (1, 0)),
        Framing::Chunked => assert_eq!((count(CONTENT_LENGTH), count(TRANSFER_ENCODING)), (0, 1)),
        Framing::Empty | Framing::UntilClose => {}
    }
    let added_date = !head.headers.contains_key(DATE);
    let fields = |h: &HeaderMap, skip_date: bool| -> Vec<(String, Vec<u8>)> {
        h.iter()
            .filter(|(n, _)| {
                ![CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION].contains(n)
                    && !(skip_date && **n == DATE)
            })
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect()
    };
    assert_eq!(
        fields(&back.headers, added_date),
        fields(&head.headers, false)
    );
}
