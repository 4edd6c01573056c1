//! The chunked transfer coding (RFC 9112 section 7.1) both ways: decoded from a connection's
//! buffer as it fills (the data passed on, chunk extensions ignored, trailers read and dropped,
//! every line bounded), and encoded a chunk at a time.

use bytes::{Buf, Bytes, BytesMut};

use super::Decoded;
use crate::error::{Error, Kind};
use crate::number::{parse_hex, push_hex};

/// A chunk-size line or a trailer section longer than this is refused.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;

/// The end of a chunked body: the last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Append `data` as one chunk. Nothing for empty data: an empty chunk is the last one.
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    push_hex(out, data.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Where a chunked body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
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

/// A chunked body's decoder, from the start of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder(State);

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub const fn new() -> Self {
        Self(State::Size)
    }

    /// Whether the body has been read to its end.
    pub fn is_done(&self) -> bool {
        self.0 == State::Done
    }

    /// Decode what `buf` holds, consuming it, until data, the end, or a need for more input.
    /// Never yields an empty data frame; once the end is reached, yields the end again.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Error> {
        loop {
            match self.0 {
                State::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    // Extensions (after ';') are ignored.
                    let digits = line
                        .split(|&b| b == b';')
                        .next()
                        .unwrap_or(&[])
                        .trim_ascii();
                    let size = parse_hex(digits).ok_or(Error::new(Kind::BadChunkSize))?;
                    self.0 = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.0 = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Error::new(Kind::ChunkDataEnd));
                    }
                    buf.advance(2);
                    self.0 = State::Size;
                }
                State::Trailers(seen) => {
                    // What is left of the trailer allowance, each line's CRLF counted.
                    let room = MAX_TRAILERS
                        .checked_sub(seen + 2)
                        .ok_or(Error::new(Kind::TrailersTooLong))?;
                    let Some(line) = take_line(buf, room)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        self.0 = State::Done;
                        return Ok(Decoded::End);
                    }
                    self.0 = State::Trailers(seen + line.len() + 2);
                }
                State::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// Take one line (without its CRLF) from the front of `buf`; `Ok(None)` when no line end has
/// arrived yet, an error when the line is longer than `limit`.
fn take_line(buf: &mut BytesMut, limit: usize) -> Result<Option<Bytes>, Error> {
    let Some(end) = buf.iter().take(limit + 2).position(|&b| b == b'\n') else {
        return if buf.len() > limit + 1 {
            Err(Error::new(Kind::ChunkLineTooLong))
        } else {
            Ok(None)
        };
    };
    if end == 0 || buf[end - 1] != b'\r' {
        return Err(Error::new(Kind::BareLf));
    }
    let line = buf.split_to(end + 1).freeze();
    Ok(Some(line.slice(..end - 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[&[u8]]) -> Result<(Vec<u8>, bool), Error> {
        let mut state = ChunkedDecoder::new();
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
            let err = decode_all(&[wire]).unwrap_err();
            assert!(err.is_chunked(), "{wire:?}: {err}");
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert!(decode_all(&[&long]).is_err());
    }

    #[test]
    fn encoded_chunks_decode_to_their_data() {
        let mut wire = Vec::new();
        let pieces: [&[u8]; 4] = [b"hello", b"", &[b'x'; 300], b"\r\n0\r\n"];
        for p in pieces {
            encode_chunk(p, &mut wire);
        }
        assert!(wire.starts_with(b"5\r\nhello\r\n12c\r\n"), "{wire:?}");
        wire.extend_from_slice(LAST_CHUNK);
        let (body, exact) = decode_all(&[&wire]).unwrap();
        assert_eq!(body, pieces.concat());
        assert!(exact);
    }
}
