//! The one writer of heads, requests and answers alike: a start line, the fields, the framing
//! fields, the empty line. It appends to a buffer the caller keeps, with no formatting machinery,
//! so writing a head allocates nothing once the buffer has grown to fit one.

use http::{HeaderMap, HeaderName, Method, StatusCode};

use crate::Framing;
use crate::number::push_decimal;

/// A head being written into `out`.
pub(crate) struct HeadWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> HeadWriter<'a> {
    /// Start a request head: `METHOD target HTTP/1.1` (every request goes out as HTTP/1.1).
    pub(crate) fn request(out: &'a mut Vec<u8>, method: &Method, target: &[u8]) -> Self {
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(target);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        Self { out }
    }

    /// Start an answer head: `HTTP/1.1 code reason`, the reason the code's own (a backend's
    /// reason phrase is not kept: nothing may depend on it, RFC 9112 4).
    pub(crate) fn answer(out: &'a mut Vec<u8>, status: StatusCode) -> Self {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        Self { out }
    }

    /// Write the fields of `headers` that `keep` keeps, in order.
    pub(crate) fn fields(
        &mut self,
        headers: &HeaderMap,
        mut keep: impl FnMut(&HeaderName) -> bool,
    ) {
        for (name, value) in headers {
            if keep(name) {
                self.field(name.as_str().as_bytes(), value.as_bytes());
            }
        }
    }

    /// Write one field.
    pub(crate) fn field(&mut self, name: &[u8], value: &[u8]) {
        self.out.extend_from_slice(name);
        self.out.extend_from_slice(b": ");
        self.out.extend_from_slice(value);
        self.out.extend_from_slice(b"\r\n");
    }

    /// Write the field that announces `framing` (none for [`Framing::Empty`] and
    /// [`Framing::UntilClose`], which the head's other fields or the close convey).
    pub(crate) fn framing(&mut self, framing: Framing) {
        match framing {
            Framing::Length(n) => self.length(n),
            Framing::Chunked => self
                .out
                .extend_from_slice(b"transfer-encoding: chunked\r\n"),
            Framing::Empty | Framing::UntilClose => {}
        }
    }

    /// Write `content-length: n`.
    pub(crate) fn length(&mut self, n: u64) {
        self.out.extend_from_slice(b"content-length: ");
        push_decimal(self.out, n);
        self.out.extend_from_slice(b"\r\n");
    }

    /// End the head with its empty line.
    pub(crate) fn finish(self) {
        self.out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::{CONTENT_LENGTH, COOKIE};

    #[test]
    fn heads_are_a_start_line_fields_framing_and_an_empty_line() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=1"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("99"));
        let mut out = Vec::new();
        let mut head = HeadWriter::request(&mut out, &Method::PUT, b"/x?y");
        head.fields(&headers, |n| *n != CONTENT_LENGTH);
        head.framing(Framing::Length(0));
        head.finish();
        assert_eq!(
            out,
            b"PUT /x?y HTTP/1.1\r\ncookie: a=1\r\ncontent-length: 0\r\n\r\n"
        );

        out.clear();
        let mut head = HeadWriter::answer(&mut out, StatusCode::from_u16(599).unwrap());
        head.framing(Framing::Chunked);
        head.framing(Framing::UntilClose);
        head.framing(Framing::Empty);
        head.finish();
        assert_eq!(out, b"HTTP/1.1 599 \r\ntransfer-encoding: chunked\r\n\r\n");
    }
}
