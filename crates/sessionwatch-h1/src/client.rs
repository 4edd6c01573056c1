//! The side of an exchange that sends requests to backends: it writes request heads and reads
//! answer heads, with the framing of the body that follows.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode, Version};

use crate::error::{Error, Kind};
use crate::fields::{self, Span};
use crate::head::HeadWriter;
use crate::{Framing, MAX_HEAD, MAX_HEADERS};

/// Write a request into `out` (cleared first): the request line, the fields, the framing and
/// `body`. The target is the URI's path and query; `Content-Length` and `Transfer-Encoding` are
/// written from the body in hand, whatever the fields said.
pub fn encode_request(parts: &http::request::Parts, body: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(256 + body.len());
    let target = match parts.uri.path_and_query().map_or("/", |p| p.as_str()) {
        "" => "/",
        target => target,
    };
    let mut announced = false;
    let mut head = HeadWriter::request(out, &parts.method, target.as_bytes());
    head.fields(&parts.headers, |name| {
        let framing = name == CONTENT_LENGTH || name == TRANSFER_ENCODING;
        announced |= framing;
        !framing
    });
    head.framing(Framing::for_request(&parts.method, body.len(), announced));
    head.finish();
    out.extend_from_slice(body);
}

/// An answer's head, parsed.
#[derive(Debug)]
pub struct AnswerHead {
    /// The status code.
    pub status: StatusCode,
    /// The HTTP version of the status line.
    pub version: Version,
    /// The fields, values sharing the head's bytes; a length next to a transfer coding dropped.
    pub headers: HeaderMap,
    /// How the body that follows is delimited.
    pub framing: Framing,
    /// Whether the connection can take another request once the body has been read.
    pub keep_alive: bool,
}

/// Parse an answer head from the front of `buf`, consuming it: `Ok(None)` when it is not
/// complete yet (nothing consumed), an error when it is not valid or runs past [`MAX_HEAD`].
/// `head_request` is whether it answers a HEAD (then no body follows, whatever it says).
pub fn parse_answer(buf: &mut BytesMut, head_request: bool) -> Result<Option<AnswerHead>, Error> {
    // Left uninitialised: httparse fills what it uses, and zeroing 3 KiB per answer is not free.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(Error::new(Kind::HeadTooLarge));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::new(Kind::TooManyHeaders)),
        Err(_) => return Err(Error::new(Kind::MalformedHead)),
    };
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(Error::new(Kind::BadStatus))?;
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    if len > MAX_HEAD {
        return Err(Error::new(Kind::HeadTooLarge));
    }
    let mut spans: [Span; MAX_HEADERS] = [(0, 0, 0, 0); MAX_HEADERS];
    let count = resp.headers.len();
    let fields = fields::read(buf, resp.headers, &mut spans);
    let head = buf.split_to(len).freeze();
    let mut headers =
        fields::header_map(&head, &spans[..count], 2).ok_or(Error::new(Kind::BadHeader))?;
    let (framing, reusable) = Framing::of_answer(status, head_request, &fields)?;
    if fields.transfer_coding && fields.length_values > 0 && framing != Framing::Empty {
        headers.remove(CONTENT_LENGTH);
    }
    // A transfer coding in an HTTP/1.0 answer is faulty framing (RFC 9112 6.1): read it, then
    // close the connection.
    let http10_coded = version == Version::HTTP_10 && fields.transfer_coding;
    Ok(Some(AnswerHead {
        status,
        version,
        headers,
        framing,
        keep_alive: reusable && !http10_coded && fields.persistent(version),
    }))
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
