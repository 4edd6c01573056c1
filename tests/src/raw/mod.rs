//! HTTP/1.1 at the byte level, for tests that must control or see every byte: a client that
//! writes exact bytes and reads answers by their framing, and a scripted backend that records the
//! exact bytes of each request it receives (and of each connection, to the end) and answers
//! with scripted bytes.
//!
//! Both sides parse only as much as they need to find where a message ends, leniently, so that a
//! test can see what the proxy really sent rather than what a strict parser would accept.

use std::time::Duration;

mod backend;
mod client;

pub use backend::{ConnRecord, RawBackend, Received, Reply, Script};
pub use client::{Answer, Outcome, RawClient, exchange, parse_answer};

/// The longest a test waits for any one read.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection must stay silent, after the last byte, to count as left open.
pub const QUIET: Duration = Duration::from_secs(3);

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A head's lines after the first, as (lowercased name, value) pairs; a line without a colon
/// has an empty value.
pub(crate) fn header_pairs(head: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(':') {
            Some((n, v)) => (n.to_ascii_lowercase(), v.trim().to_owned()),
            None => (l.to_ascii_lowercase(), String::new()),
        })
        .collect()
}

/// How a message's body is delimited, as the reader found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body by definition (HEAD, 1xx, 204, 304) or a length of 0.
    None,
    /// `Content-Length` bytes.
    Length(usize),
    /// Chunked.
    Chunked,
    /// Until the connection closed.
    Close,
}

pub(crate) fn framing_of(headers: &[(String, String)]) -> Framing {
    let chunked = headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .any(|(_, v)| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return Framing::Chunked;
    }
    match headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    }
}

/// Where a chunked body that starts at `buf[0]` ends (past the trailers' empty line), and its
/// decoded data; `Err(())` if it is not valid chunked coding, `Ok(None)` if incomplete.
#[allow(clippy::result_unit_err)]
pub fn dechunk(buf: &[u8]) -> Result<Option<(usize, Vec<u8>)>, ()> {
    let mut at = 0;
    let mut data = Vec::new();
    loop {
        let Some(eol) = find(&buf[at..], b"\r\n") else {
            return Ok(None);
        };
        let line = &buf[at..at + eol];
        let digits = line.split(|&b| b == b';').next().unwrap_or_default();
        let digits = std::str::from_utf8(digits).map_err(|_| ())?.trim();
        let size = usize::from_str_radix(digits, 16).map_err(|_| ())?;
        at += eol + 2;
        if size == 0 {
            // Trailer lines, then an empty line.
            loop {
                let Some(eol) = find(&buf[at..], b"\r\n") else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some((at, data)));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        data.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(());
        }
        at += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_delimited_and_decoded() {
        let wire = b"4\r\nabcd\r\n3;x=1\r\nefg\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        assert_eq!(
            dechunk(wire),
            Ok(Some((wire.len() - 4, b"abcdefg".to_vec())))
        );
        assert_eq!(dechunk(b"4\r\nabcd\r\n"), Ok(None));
        assert_eq!(dechunk(b"zz\r\n"), Err(()));
        assert_eq!(dechunk(b"2\r\nabcd\r\n"), Err(()));
    }
}
