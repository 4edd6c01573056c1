//! What the codec's fuzz targets share: lenient builders that turn any bytes into the inputs
//! the targets need (an input that does not parse as a header block still yields the headers
//! that do), so that every fuzz input reaches the code under test. The core's fuzz targets use
//! them too.
//!
//! The inputs are text where that is natural (header blocks, one header a line), so that the
//! committed seeds read like the traffic they stand for.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The lines of `data`, split at LF, a CR before the LF dropped.
pub fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// `data` cut at its first empty line: the block before it and what follows it (empty when
/// there is no empty line).
pub fn split_block(data: &[u8]) -> (&[u8], &[u8]) {
    let mut start = 0;
    for line in data.split_inclusive(|&b| b == b'\n') {
        let end = start + line.len();
        if start > 0 && matches!(line, b"\n" | b"\r\n") {
            return (&data[..start], &data[end..]);
        }
        start = end;
    }
    (data, &[])
}

/// A header line: the name before the first `:`, the value after it with the blanks around it
/// trimmed (as httparse does). A line without `:` is a value of `default`.
pub fn header_line<'a>(line: &'a [u8], default: &'a [u8]) -> (&'a [u8], &'a [u8]) {
    match line.iter().position(|&b| b == b':') {
        Some(colon) => (line[..colon].trim_ascii(), trim_blanks(&line[colon + 1..])),
        None => (default, trim_blanks(line)),
    }
}

fn trim_blanks(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The headers of a block of lines; empty lines, and names or values `http` would refuse, are
/// skipped. A line without `:` is a value of the header named `default`.
pub fn header_map<'a>(lines: impl Iterator<Item = &'a [u8]>, default: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = header_line(line, default.as_bytes());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    headers
}

/// Bytes read one at a time, zeros once they run out, so that a short input is still a whole
/// input.
#[derive(Debug)]
pub struct Knobs<'a>(&'a [u8]);

impl<'a> Knobs<'a> {
    /// Knobs read from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self(data)
    }

    /// The next byte, or zero.
    pub fn byte(&mut self) -> u8 {
        match self.0 {
            [b, rest @ ..] => {
                self.0 = rest;
                *b
            }
            [] => 0,
        }
    }

    /// The next two bytes, big-endian, or zeros.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_headers_are_read_leniently() {
        let (head, rest) = split_block(b"GET / HTTP/1.1\r\nCookie: a=1\r\n\r\nbody\n\nmore");
        assert_eq!(head, b"GET / HTTP/1.1\r\nCookie: a=1\r\n");
        assert_eq!(rest, b"body\n\nmore");
        assert_eq!(
            split_block(b"no blank line"),
            (&b"no blank line"[..], &b""[..])
        );
        let headers = header_map(
            lines(b"Cookie:  a=1 \r\nbad name: x\r\nb=2\r\nX-Nul: \0\r\n"),
            "cookie",
        );
        let cookies: Vec<_> = headers.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(headers.len(), 2);
    }

    #[test]
    fn knobs_read_zeros_past_the_end() {
        let mut k = Knobs::new(&[1, 2, 3]);
        assert_eq!((k.byte(), k.u16(), k.byte()), (1, 0x0203, 0));
    }
}
