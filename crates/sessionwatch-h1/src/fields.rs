//! A head's fields as httparse found them, read in one pass: where each sits in the head (so
//! that, once the head is frozen, every value shares its bytes instead of being copied), and what
//! the fields that frame the message and decide the connection's fate say.

use bytes::Bytes;
use http::header::CONNECTION;
use http::{HeaderMap, HeaderName, HeaderValue, Version};

use crate::MAX_HEADERS;
use crate::error::Kind;
use crate::number::parse_decimal;

/// Where one field's name and value sit in a head: name start and end, value start and end.
pub(crate) type Span = (u16, u16, u16, u16);

/// What a head's framing and connection fields say (RFC 9112 sections 6 and 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FramingFields {
    /// The `Content-Length`, when every value given reads and agrees; the first fault if not.
    pub(crate) length: Result<Option<u64>, Kind>,
    /// How many `Content-Length` values there were (each value of a list counts).
    pub(crate) length_values: usize,
    /// A `Transfer-Encoding` field is present.
    pub(crate) transfer_coding: bool,
    /// The last transfer coding listed is `chunked`.
    pub(crate) chunked: bool,
    /// `Connection` lists `close`.
    pub(crate) close: bool,
    /// `Connection` lists `keep-alive`.
    pub(crate) keep_alive: bool,
    /// `Connection` lists `upgrade`.
    pub(crate) upgrade_token: bool,
    /// An `Expect` field is present.
    pub(crate) expect: bool,
    /// An `Upgrade` field is present.
    pub(crate) upgrade: bool,
}

impl FramingFields {
    pub(crate) const NONE: Self = Self {
        length: Ok(None),
        length_values: 0,
        transfer_coding: false,
        chunked: false,
        close: false,
        keep_alive: false,
        upgrade_token: false,
        expect: false,
        upgrade: false,
    };

    /// Whether the sender means to keep the connection after this message (RFC 9112 9.3):
    /// HTTP/1.1 unless it says `close`; HTTP/1.0 only if it says `keep-alive`, and `close` wins
    /// when it says both.
    pub(crate) fn persistent(&self, version: Version) -> bool {
        match version {
            Version::HTTP_11 => !self.close,
            _ => self.keep_alive && !self.close,
        }
    }

    fn content_length(&mut self, value: &[u8]) {
        for part in value.split(|&b| b == b',') {
            self.length_values += 1;
            let Ok(known) = self.length else {
                continue;
            };
            self.length = match parse_decimal(part.trim_ascii()) {
                None => Err(Kind::BadLength),
                Some(n) if known.is_some_and(|l| l != n) => Err(Kind::ConflictingLength),
                Some(n) => Ok(Some(n)),
            };
        }
    }

    fn transfer_encoding(&mut self, value: &[u8]) {
        self.transfer_coding = true;
        // The codings of every field make one list: the last one named decides.
        if let Some(last) = value
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .rfind(|t| !t.is_empty())
        {
            self.chunked = last.eq_ignore_ascii_case(b"chunked");
        }
    }

    fn connection(&mut self, value: &[u8]) {
        self.close |= lists_token(value, "close");
        self.keep_alive |= lists_token(value, "keep-alive");
        self.upgrade_token |= lists_token(value, "upgrade");
    }

    fn note(&mut self, name: &[u8], value: &[u8]) {
        // The length first: most names are ruled out by it without a comparison.
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => self.content_length(value),
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                self.transfer_encoding(value);
            }
            10 if name.eq_ignore_ascii_case(b"connection") => self.connection(value),
            6 if name.eq_ignore_ascii_case(b"expect") => self.expect = true,
            7 if name.eq_ignore_ascii_case(b"upgrade") => self.upgrade = true,
            _ => {}
        }
    }
}

/// Read httparse's `headers`, found in `buf`, in one pass: their spans into `spans` and what
/// the framing and connection fields say. `buf` must start with the head, at most
/// [`MAX_HEAD`](crate::MAX_HEAD) bytes long, for the spans to fit.
pub(crate) fn read(
    buf: &[u8],
    headers: &[httparse::Header<'_>],
    spans: &mut [Span; MAX_HEADERS],
) -> FramingFields {
    let base = buf.as_ptr() as usize;
    // An empty slice need not point into `buf`: it gets an empty span at 0.
    let offset = |s: &[u8]| {
        if s.is_empty() {
            0
        } else {
            (s.as_ptr() as usize - base) as u16
        }
    };
    let mut fields = FramingFields::NONE;
    for (span, h) in spans.iter_mut().zip(headers) {
        let name = h.name.as_bytes();
        fields.note(name, h.value);
        let (n, v) = (offset(name), offset(h.value));
        *span = (n, n + name.len() as u16, v, v + h.value.len() as u16);
    }
    fields
}

/// The header map of a frozen `head`, values sharing its bytes, with room for `extra` more
/// fields (growing a map rehashes it); `None` if a name or a value is not valid.
pub(crate) fn header_map(head: &Bytes, spans: &[Span], extra: usize) -> Option<HeaderMap> {
    let mut headers = HeaderMap::with_capacity(spans.len() + extra);
    for &(ns, ne, vs, ve) in spans {
        let (ns, ne) = (usize::from(ns), usize::from(ne));
        let (vs, ve) = (usize::from(vs), usize::from(ve));
        let name = HeaderName::from_bytes(&head[ns..ne]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve)).ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

/// Whether a comma-separated field value lists `token` (compared without regard to case).
pub fn lists_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether the `Connection` fields of `headers` list `token`.
pub fn connection_lists(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .any(|v| lists_token(v.as_bytes(), token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(raw: &[u8]) -> FramingFields {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut slots);
        assert!(req.parse(raw).unwrap().is_complete());
        read(raw, req.headers, &mut [(0, 0, 0, 0); MAX_HEADERS])
    }

    #[test]
    fn tokens_are_found_in_lists() {
        assert!(lists_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(!lists_token(b"upgrader", "upgrade"));
        let mut headers = HeaderMap::new();
        headers.append(CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.append(CONNECTION, HeaderValue::from_static("x, CLOSE"));
        assert!(connection_lists(&headers, "close"));
        assert!(!connection_lists(&headers, "upgrade"));
    }

    #[test]
    fn spans_point_at_names_and_values_and_values_share_the_head() {
        let raw = b"GET / HTTP/1.1\r\nHost: shop\r\nX-Empty:\r\nCookie: a=1\r\n\r\n";
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut slots);
        req.parse(raw).unwrap();
        let mut spans = [(0, 0, 0, 0); MAX_HEADERS];
        read(raw, req.headers, &mut spans);
        let head = Bytes::from_static(raw);
        let map = header_map(&head, &spans[..3], 0).unwrap();
        assert_eq!(map["host"], "shop");
        assert_eq!(map["x-empty"], "");
        assert_eq!(map["cookie"].as_bytes().as_ptr(), raw[46..].as_ptr());
    }

    #[test]
    fn the_framing_fields_are_read_as_one_list_each() {
        let f = fields_of(b"GET / HTTP/1.1\r\nContent-Length: 7, 7\r\ncontent-length: 7\r\n\r\n");
        assert_eq!((f.length, f.length_values), (Ok(Some(7)), 3));
        let f = fields_of(b"GET / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n");
        assert_eq!(f.length, Err(Kind::ConflictingLength));
        // The first fault is the one reported, whatever follows it.
        let f = fields_of(b"GET / HTTP/1.1\r\nContent-Length: x\r\nContent-Length: 8, 9\r\n\r\n");
        assert_eq!(f.length, Err(Kind::BadLength));
        let f = fields_of(
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip,\r\n\r\n",
        );
        assert!(f.transfer_coding && !f.chunked);
        let f =
            fields_of(b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: ,\r\n\r\n");
        assert!(f.transfer_coding && !f.chunked);
        let f = fields_of(b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n");
        assert!(f.chunked);
        let f = fields_of(
            b"GET / HTTP/1.1\r\nConnection: Keep-Alive, Upgrade\r\nUpgrade: h2c\r\nExpect: 100-continue\r\n\r\n",
        );
        assert!(f.keep_alive && f.upgrade_token && f.upgrade && f.expect && !f.close);
    }

    #[test]
    fn persistence_follows_the_version_and_close_wins() {
        let f = |raw: &[u8]| fields_of(raw);
        assert!(f(b"GET / HTTP/1.1\r\n\r\n").persistent(Version::HTTP_11));
        assert!(!f(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").persistent(Version::HTTP_11));
        assert!(!f(b"GET / HTTP/1.1\r\n\r\n").persistent(Version::HTTP_10));
        let both = f(b"GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n");
        assert!(!both.persistent(Version::HTTP_10));
        let keep = f(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n");
        assert!(keep.persistent(Version::HTTP_10));
    }
}
