//! What one side of the codec writes, the other reads back as written: requests from the
//! client side to the server side, answers from the server side to the client side.

use bytes::BytesMut;
use http::header::TRANSFER_ENCODING;
use http::{Method, StatusCode};

use crate::testing::{answer, request};
use crate::{
    AnswerHead, AnswerTo, BodyDecoder, Decoded, Framing, MAX_HEAD, Parsed, encode_answer,
    encode_request, parse_answer, parse_request,
};

#[test]
fn a_request_as_written_reads_back_as_the_same_request() {
    let sent = request(
        Method::PUT,
        "http://farm/cart/1?x=%20",
        &[
            ("host", "farm"),
            ("cookie", "s=1"),
            ("transfer-encoding", "chunked"),
        ],
    );
    let mut out = Vec::new();
    encode_request(&sent, b"{}", &mut out);
    let mut buf = BytesMut::from(&out[..]);
    let Parsed::Plain(read) = parse_request(&mut buf, MAX_HEAD) else {
        panic!("not plain: {out:?}");
    };
    assert_eq!(read.parts.method, Method::PUT);
    assert_eq!(read.parts.uri, "/cart/1?x=%20");
    assert_eq!(read.parts.headers["cookie"], "s=1");
    assert!(!read.parts.headers.contains_key(TRANSFER_ENCODING));
    assert_eq!((read.body_len, &buf[..]), (2, &b"{}"[..]));
}

/// What a client reads from the answer head and body written for it.
fn read_back(wire: &[u8], head_request: bool) -> (AnswerHead, Vec<u8>, bool) {
    let mut buf = BytesMut::from(wire);
    let head = parse_answer(&mut buf, head_request).unwrap().unwrap();
    let mut body = BodyDecoder::new(head.framing);
    let mut data = Vec::new();
    let ended = loop {
        match body.decode(&mut buf).unwrap() {
            Decoded::Data(d) => data.extend_from_slice(&d),
            Decoded::End => break true,
            Decoded::NeedMore => break false,
        }
    };
    (head, data, ended)
}

#[test]
fn answers_read_back_with_the_framing_they_were_written_with() {
    let headers = answer(&[("x-a", "1"), ("content-length", "99")]);
    for (len, to) in [
        (Some(5), AnswerTo::default()),
        (None, AnswerTo::default()),
        (Some(0), AnswerTo::default()),
        (Some(5), AnswerTo::HEAD),
        (None, AnswerTo::HTTP10),
    ] {
        let mut wire = Vec::new();
        let sent = encode_answer(StatusCode::OK, &headers, len, to, false, &mut wire);
        match sent.framing {
            Framing::Length(5) | Framing::UntilClose => wire.extend_from_slice(b"hello"),
            Framing::Chunked => {
                crate::encode_chunk(b"hello", &mut wire);
                wire.extend_from_slice(crate::LAST_CHUNK);
            }
            Framing::Empty | Framing::Length(_) => {}
        }
        let (head, data, ended) = read_back(&wire, to.head_request);
        assert_eq!(head.headers["x-a"], "1");
        assert_eq!(head.keep_alive, !sent.close, "{len:?} {to:?}");
        let expect: &[u8] = match (to.head_request, len) {
            (true, _) | (_, Some(0)) => b"",
            _ => b"hello",
        };
        assert_eq!(data, expect, "{len:?} {to:?}");
        // Only a body delimited by the close is left open: it ends when the connection does.
        assert_eq!(ended, sent.framing != Framing::UntilClose, "{len:?} {to:?}");
    }
}
