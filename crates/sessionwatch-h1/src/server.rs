//! The side of an exchange that takes requests from clients: it reads request heads and writes
//! answer heads.
//!
//! What it reads itself is narrow on purpose, a *plain* request: an origin-form target, HTTP/1.0
//! or 1.1, no body or one whose length is announced once and is at most [`BUFFER_BODY_LIMIT`],
//! and no `Transfer-Encoding`, `Expect` or `Upgrade`. Anything else (HTTP/2's preface, a chunked
//! or long body, a protocol switch, a head httparse will not take) is left whole in the buffer
//! for a full HTTP server, so that the cases that need care (smuggling attempts, streamed
//! uploads, `100-continue`, WebSockets, HTTP/2) all meet that server's code.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};

use crate::fields::{self, FramingFields, Span};
use crate::head::HeadWriter;
use crate::{BUFFER_BODY_LIMIT, Framing, MAX_HEAD, MAX_HEADERS, date};

/// A plain request's head, parsed.
#[derive(Debug)]
pub struct RequestHead {
    /// The request line and the fields, values sharing the head's bytes.
    pub parts: http::request::Parts,
    /// Bytes of body that follow the head.
    pub body_len: usize,
    /// Whether the client wants the connection kept after the answer (RFC 9112 9.3).
    pub keep_alive: bool,
}

/// What [`parse_request`] made of the bytes at the start of its buffer.
// Returned once per request and taken apart at once: boxing the head would only add an
// allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed {
    /// A plain request; its head has been consumed.
    Plain(RequestHead),
    /// Not a whole head yet; nothing has been consumed.
    Partial,
    /// Something for a full HTTP server; nothing has been consumed.
    NotPlain,
    /// A head that looked plain but whose target or a field would not convert (consumed): the
    /// answer is 400 and the connection closes.
    Bad,
    /// A head longer than the limit, whole or not (nothing consumed): the answer is 431 and the
    /// connection closes.
    TooLarge,
}

/// Parse a plain request head of at most `max_head` bytes (and never more than [`MAX_HEAD`])
/// from the front of `buf`.
///
/// The limit holds for every request, plain or not: a head for a full server is measured here
/// first, and that server, given the same limit, measures the heads it reads itself.
pub fn parse_request(buf: &mut BytesMut, max_head: usize) -> Parsed {
    let max_head = max_head.min(MAX_HEAD);
    // Left uninitialised: httparse fills what it uses, and zeroing 3 KiB per request is not free.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= max_head => return Parsed::Partial,
        Ok(httparse::Status::Partial) => return Parsed::TooLarge,
        _ => return Parsed::NotPlain,
    };
    if len > max_head {
        return Parsed::TooLarge;
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::NotPlain;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::NotPlain;
    };
    if method == Method::CONNECT || !target.starts_with('/') {
        return Parsed::NotPlain;
    }
    let version = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut spans: [Span; MAX_HEADERS] = [(0, 0, 0, 0); MAX_HEADERS];
    let count = req.headers.len();
    let fields = fields::read(buf, req.headers, &mut spans);
    let Some(body_len) = plain_body(&fields) else {
        return Parsed::NotPlain;
    };
    let target_span = {
        let start = target.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + target.len()
    };
    let head = buf.split_to(len).freeze();
    let (Ok(uri), Some(headers)) = (
        Uri::from_maybe_shared(head.slice(target_span)),
        // Room for the forwarding fields and the request id a proxy adds.
        fields::header_map(&head, &spans[..count], 6),
    ) else {
        return Parsed::Bad;
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Parsed::Plain(RequestHead {
        parts,
        body_len,
        keep_alive: fields.persistent(version),
    })
}

/// The length of a plain request's body, or `None` when the request is not plain: it expects
/// an interim answer, asks for a protocol switch, says its length more than once (even the
/// same), or is framed other than by a length within the buffering limit.
fn plain_body(fields: &FramingFields) -> Option<usize> {
    if fields.expect || fields.upgrade || fields.upgrade_token || fields.length_values > 1 {
        return None;
    }
    match Framing::of_request(fields).ok()? {
        Framing::Empty => Some(0),
        Framing::Length(n) if n <= BUFFER_BODY_LIMIT => usize::try_from(n).ok(),
        _ => None,
    }
}

/// What an answer's head depends on in the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AnswerTo {
    /// The request was a HEAD: no body goes out, whatever the answer has.
    pub head_request: bool,
    /// The client speaks HTTP/1.0: no chunked coding, and keep-alive only when said.
    pub http10: bool,
}

impl AnswerTo {
    /// What the answer to a request with this `method` and `version` depends on.
    pub fn request(method: &Method, version: Version) -> Self {
        Self {
            head_request: *method == Method::HEAD,
            http10: version == Version::HTTP_10,
        }
    }
}

#[cfg(test)]
impl AnswerTo {
    /// The answer to a HEAD request from an HTTP/1.1 client.
    pub(crate) const HEAD: Self = Self {
        head_request: true,
        http10: false,
    };
    /// The answer to a GET from an HTTP/1.0 client.
    pub(crate) const HTTP10: Self = Self {
        head_request: false,
        http10: true,
    };
}

/// How an answer encoded by [`encode_answer`] goes on: how its body is to be written, and
/// whether the connection closes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerSent {
    /// How the body after the head is to be written.
    pub framing: Framing,
    /// The head says `connection: close`: nothing more goes on this connection.
    pub close: bool,
}

/// Write an answer's head into `out` (cleared first): the status line, the answer's fields, the
/// framing its body of `body_len` bytes (when known) needs for the client `to`, a `Date` when it
/// has none, and the connection's fate.
///
/// The connection closes after it when `close` asks, when the body runs until the close, or
/// when the answer has a `Connection` field (a backend's was removed already, so it is one of
/// the caller's own refusals, which say `Connection: close`). The answer's own framing fields
/// are replaced by the framing written, except where no body goes out: an answer to HEAD and a
/// 304 keep the length of the body they stand for, and a 1xx or 204 never carries one (RFC 9110
/// 8.6, RFC 9112 6.1).
pub fn encode_answer(
    status: StatusCode,
    headers: &HeaderMap,
    body_len: Option<u64>,
    to: AnswerTo,
    mut close: bool,
    out: &mut Vec<u8>,
) -> AnswerSent {
    out.clear();
    let framing = Framing::for_answer(status, to.head_request, to.http10, body_len);
    close |= framing == Framing::UntilClose;
    let http10_keep_alive = to.http10 && !close;
    let never_framed = status.is_informational() || status == StatusCode::NO_CONTENT;
    let keep_framing = framing == Framing::Empty && !never_framed;
    let mut head = HeadWriter::answer(out, status);
    head.fields(headers, |name| {
        if *name == CONNECTION {
            close = true;
            return false;
        }
        keep_framing || (*name != CONTENT_LENGTH && *name != TRANSFER_ENCODING)
    });
    head.framing(framing);
    if !headers.contains_key(DATE) {
        head.field(b"date", &date::now());
    }
    if close {
        head.field(b"connection", b"close");
    } else if http10_keep_alive {
        head.field(b"connection", b"keep-alive");
    }
    // An answer to HEAD the caller made itself still says how long its body would be.
    if to.head_request
        && !headers.contains_key(CONTENT_LENGTH)
        && let Some(n) = body_len.filter(|n| *n > 0)
    {
        head.length(n);
    }
    head.finish();
    AnswerSent { framing, close }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
