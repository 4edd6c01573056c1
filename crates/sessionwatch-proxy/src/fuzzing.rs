//! The fuzz targets' entry points (see `fuzz/` at the top of the repository). Not an API: hidden
//! from the docs, and free to change whenever the parsers do.
//!
//! The HTTP/1.1 parsers are crate-private, and their results carry crate-private types. Each
//! function here is a thin wrapper that calls the parser as the proxy does and hands back its
//! result in a public mirror type, so that the fuzz crate can feed the parsers arbitrary bytes
//! without the parsers' own modules opening up. Keep them thin: a wrapper that decides anything
//! would be fuzzed instead of the parser.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode, Version};

use crate::listen::plain::{self as front, Parsed};
use crate::upstream::plain;
use crate::wire;

pub use crate::upstream::BUFFER_BODY_LIMIT;
pub use crate::upstream::Http1Error;

/// Most headers a message head may carry.
pub const MAX_HEADERS: usize = wire::MAX_HEADERS;
/// Largest message head the parsers take.
pub const MAX_HEAD: usize = wire::MAX_HEAD;

/// What the front made of the bytes at the start of its buffer.
// Mirrors the front's own result, which is not boxed either (see there).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum RequestHead {
    /// A plain request; its head has been consumed.
    Plain {
        /// The request line and headers.
        parts: http::request::Parts,
        /// Bytes of body that follow the head.
        body_len: usize,
        /// Whether the client wants the connection kept after the answer.
        keep_alive: bool,
    },
    /// Not a whole head yet.
    Partial,
    /// Something for hyper: nothing has been consumed.
    NotPlain,
    /// A head that looked plain but would not convert (consumed).
    Bad,
    /// A head longer than the limit, whole or not (nothing consumed: the answer is 431).
    TooLarge,
}

/// The front's request-head parser, as the accept loop calls it, with heads of at most
/// `max_head` bytes.
pub fn parse_request(buf: &mut BytesMut, max_head: usize) -> RequestHead {
    match front::parse_request(buf, max_head) {
        Parsed::Plain(head) => RequestHead::Plain {
            parts: head.request.into_parts().0,
            body_len: head.body_len,
            keep_alive: head.keep_alive,
        },
        Parsed::Partial => RequestHead::Partial,
        Parsed::NotPlain => RequestHead::NotPlain,
        Parsed::Bad => RequestHead::Bad,
        Parsed::TooLarge => RequestHead::TooLarge,
    }
}

/// The request as the upstream side writes it to a backend, with `body` in hand.
pub fn encode_request(parts: &http::request::Parts, body: &[u8], out: &mut Vec<u8>) {
    plain::encode_request(parts, body, out);
}

/// How an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the backend closes the connection.
    UntilClose,
}

/// An answer's head.
#[derive(Debug)]
pub struct AnswerHead {
    /// The status code.
    pub status: StatusCode,
    /// The HTTP version of the status line.
    pub version: Version,
    /// The headers, framing headers that were dropped left out.
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection can take another request once the body has been read.
    pub keep_alive: bool,
}

/// The upstream side's answer-head parser (framing included): `Ok(None)` when the head is not
/// complete yet.
pub fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<AnswerHead>, Http1Error> {
    Ok(plain::parse_head(buf, head_request)?.map(|h| AnswerHead {
        status: h.status,
        version: h.version,
        headers: h.headers,
        framing: match h.framing {
            plain::Framing::Empty => Framing::Empty,
            plain::Framing::Length(n) => Framing::Length(n),
            plain::Framing::Chunked => Framing::Chunked,
            plain::Framing::UntilClose => Framing::UntilClose,
        },
        keep_alive: h.keep_alive,
    }))
}

/// One step of decoding a chunked body.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// More input is needed.
    NeedMore,
    /// The body is complete.
    End,
}

/// The upstream side's chunked-body decoder, from the start of a body.
#[derive(Debug)]
pub struct ChunkedDecoder(plain::Chunked);

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self(plain::Chunked::Size)
    }
}

impl ChunkedDecoder {
    /// Decode what `buf` holds, consuming it, until data, the end, or a need for more input.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Http1Error> {
        Ok(match self.0.decode(buf)? {
            plain::Decoded::Data(data) => Decoded::Data(data),
            plain::Decoded::NeedMore => Decoded::NeedMore,
            plain::Decoded::End => Decoded::End,
        })
    }
}
