//! Pieces of HTTP/1.1 framing shared by the front (clients) and the upstream side (backends).

use bytes::{Bytes, BytesMut};
use http::header::CONNECTION;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Most headers a message may carry (hyper's limit too).
pub(crate) const MAX_HEADERS: usize = 100;
/// Largest message head handled (offsets into it fit a `u16`).
pub(crate) const MAX_HEAD: usize = u16::MAX as usize;
/// Read buffer: its first size, and the room a read is given.
pub(crate) const INITIAL_BUF: usize = 8 * 1024;
const READ_ROOM: usize = 4 * 1024;
pub(crate) const READ_GROW: usize = 16 * 1024;

/// Where one header's name and value sit in a head.
pub(crate) type Span = (u16, u16, u16, u16);

/// Make sure a read into `buf` has room.
pub(crate) fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_ROOM {
        buf.reserve(READ_GROW);
    }
}

/// The spans of httparse's headers in `buf`, so that once the head is frozen the values can
/// share its bytes. `buf` must start with the head, at most [`MAX_HEAD`] bytes long.
pub(crate) fn spans(buf: &[u8], headers: &[httparse::Header<'_>], out: &mut [Span; MAX_HEADERS]) {
    let base = buf.as_ptr() as usize;
    // An empty slice need not point into `buf`: it gets an empty span at 0.
    let offset = |s: &[u8]| {
        if s.is_empty() {
            0
        } else {
            (s.as_ptr() as usize - base) as u16
        }
    };
    for (span, h) in out.iter_mut().zip(headers) {
        let (name, value) = (offset(h.name.as_bytes()), offset(h.value));
        *span = (
            name,
            name + h.name.len() as u16,
            value,
            value + h.value.len() as u16,
        );
    }
}

/// The header map of a frozen `head`, values sharing its bytes, with room for `extra` more
/// headers (growing a map rehashes it); `None` if a name or value is not valid.
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

/// Append `n` in decimal.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Append `n` in hexadecimal (a chunk size).
pub(crate) fn push_hex(out: &mut Vec<u8>, n: u64) {
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(b"0123456789abcdef"[((n >> (4 * i)) & 0xf) as usize]);
    }
}

/// A `Content-Length` value: digits only, no sign, no overflow.
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// Whether the `Connection` headers list `token`.
pub(crate) fn has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .any(|v| lists(v.as_bytes(), token))
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
pub(crate) fn lists(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_formatted_and_read() {
        for n in [0u64, 7, 10, 15, 16, 255, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
            out.clear();
            push_hex(&mut out, n);
            assert_eq!(out, format!("{n:x}").as_bytes());
        }
        assert_eq!(parse_decimal(b"0042"), Some(42));
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"1 ",
            b"12345678901234567890",
            b"0x1",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
        assert!(lists(b"keep-alive, Upgrade", "upgrade"));
        assert!(!lists(b"upgrader", "upgrade"));
    }
}
