//! The chunked transfer coding of an answer's body (RFC 9112 section 7.1), decoded from the
//! connection's buffer as it fills: the data passed on, chunk extensions ignored, trailers read
//! and dropped, every line bounded.

use bytes::{Buf, Bytes, BytesMut};

use super::plain::Error;

/// A chunk-size line or a trailer section longer than this is refused.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;

/// Where a chunked body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data to go.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines (dropped) until an empty line; bytes seen so far.
    Trailers(usize),
    /// The body is complete.
    Done,
}

/// One step of decoding a chunked body from `buf`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// More input is needed.
    NeedMore,
    /// The body is complete (trailers, if any, were dropped).
    End,
}

impl Chunked {
    /// Decode what `buf` holds, consuming it, until data, the end, or a need for more input.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Error> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    // Extensions (after ';') are ignored.
                    let digits = line
                        .split(|&b| b == b';')
                        .next()
                        .unwrap_or(&[])
                        .trim_ascii();
                    let size = parse_hex(digits).ok_or(Error::Invalid("bad chunk size"))?;
                    *self = if size == 0 {
                        Chunked::Trailers(0)
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Error::Invalid("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers(seen) => {
                    // What is left of the trailer allowance, each line's CRLF counted.
                    let room = MAX_TRAILERS
                        .checked_sub(seen + 2)
                        .ok_or(Error::Invalid("trailers too long"))?;
                    let Some(line) = take_line(buf, room)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        *self = Chunked::Done;
                        return Ok(Decoded::End);
                    }
                    *self = Chunked::Trailers(seen + line.len() + 2);
                }
                Chunked::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// Take one line (without its CRLF) from the front of `buf`; `Ok(None)` when no line end has
/// arrived yet, an error when the line is longer than `limit`.
fn take_line(buf: &mut BytesMut, limit: usize) -> Result<Option<Bytes>, Error> {
    let Some(end) = buf.iter().take(limit + 2).position(|&b| b == b'\n') else {
        return if buf.len() > limit + 1 {
            Err(Error::Invalid("line too long in a chunked body"))
        } else {
            Ok(None)
        };
    };
    if end == 0 || buf[end - 1] != b'\r' {
        return Err(Error::Invalid("bare LF in a chunked body"));
    }
    let line = buf.split_to(end + 1).freeze();
    Ok(Some(line.slice(..end - 1)))
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 15 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some(n * 16 + u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[&[u8]]) -> Result<(Vec<u8>, bool), Error> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for piece in input {
            buf.extend_from_slice(piece);
            loop {
                match state.decode(&mut buf)? {
                    Decoded::Data(d) => body.extend_from_slice(&d),
                    Decoded::NeedMore => break,
                    Decoded::End => return Ok((body, buf.is_empty())),
                }
            }
        }
        Ok((body, false))
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_split() {
        let wire: &[u8] = b"5;ext=1\r\nhello\r\nA\r\n, chunked!\r\n0\r\nx-trailer: dropped\r\n\r\n";
        let (whole, exact) = decode_all(&[wire]).unwrap();
        assert_eq!(whole, b"hello, chunked!");
        assert!(exact);
        // Byte by byte: every state waits for its input.
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode_all(&bytes).unwrap(), (whole, true));
        // Stopping short is not the end.
        assert_eq!(
            decode_all(&[b"5\r\nhel"]).unwrap(),
            (b"hel".to_vec(), false)
        );
    }

    #[test]
    fn trailers_are_bounded_whatever_their_lines() {
        // One trailer line filling the allowance exactly, then the end: refused, not a panic
        // and not a wait for ever.
        let mut wire = b"0\r\nx:".to_vec();
        wire.extend(std::iter::repeat_n(b'a', MAX_TRAILERS - 2));
        wire.extend_from_slice(b"\r\n\r\n");
        assert!(decode_all(&[&wire]).is_err());
        // Trailers within the allowance are read and dropped.
        let mut wire = b"0\r\n".to_vec();
        for _ in 0..100 {
            wire.extend_from_slice(b"x-t: 1234567890\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        assert_eq!(decode_all(&[&wire]).unwrap(), (Vec::new(), true));
    }

    #[test]
    fn bad_chunked_bodies_are_errors() {
        for wire in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"5\nhello\r\n",
            b"1234567890abcdef0\r\n",
            b"\r\n",
        ] {
            assert!(decode_all(&[wire]).is_err(), "{wire:?} was accepted");
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert!(decode_all(&[&long]).is_err());
    }
}
