//! Reading a body as it arrives, delimited as its [`Framing`] says: the one reader for bodies of
//! every framing, so that a caller's connection code only moves bytes.

use bytes::{Bytes, BytesMut};

use crate::{Error, Framing};
use chunked::ChunkedDecoder;

pub(crate) mod chunked;

/// One step of reading a body from a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes (never empty).
    Data(Bytes),
    /// More input is needed.
    NeedMore,
    /// The body is complete (a chunked body's trailers, if any, were dropped).
    End,
}

/// How a body still on the wire is delimited, and how much of it is left.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Left {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// A body being read from the front of a buffer as the buffer fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyDecoder(Left);

impl BodyDecoder {
    /// A reader for a body framed by `framing`, from its start.
    pub fn new(framing: Framing) -> Self {
        Self(match framing {
            Framing::Empty => Left::Length(0),
            Framing::Length(n) => Left::Length(n),
            Framing::Chunked => Left::Chunked(ChunkedDecoder::new()),
            Framing::UntilClose => Left::UntilClose,
        })
    }

    /// Take what `buf` holds of the body, up to its end and no further: bytes after the end
    /// stay in `buf` (they are the next message, or something the sender had no business
    /// sending).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Error> {
        match &mut self.0 {
            Left::Length(0) => Ok(Decoded::End),
            Left::Length(_) | Left::UntilClose if buf.is_empty() => Ok(Decoded::NeedMore),
            Left::Length(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= n as u64;
                Ok(Decoded::Data(buf.split_to(n).freeze()))
            }
            Left::Chunked(chunked) => chunked.decode(buf),
            Left::UntilClose => Ok(Decoded::Data(buf.split().freeze())),
        }
    }

    /// Whether the body has been read to its end: once it has, the connection is free for the
    /// next message without another call.
    pub fn is_done(&self) -> bool {
        match &self.0 {
            Left::Length(left) => *left == 0,
            Left::Chunked(chunked) => chunked.is_done(),
            Left::UntilClose => false,
        }
    }

    /// Whether the connection's close ends the body, rather than cutting it short.
    pub fn ends_at_close(&self) -> bool {
        matches!(self.0, Left::UntilClose)
    }

    /// How many bytes of the body are still to come, when that is known.
    pub fn remaining(&self) -> Option<u64> {
        match self.0 {
            Left::Length(left) => Some(left),
            _ => None,
        }
    }
}

impl Framing {
    /// The whole body, split from the front of `buf`, when all of it is there already (an
    /// empty body always is); `None` when some of it is still to come.
    pub fn take_whole(self, buf: &mut BytesMut) -> Option<Bytes> {
        match self {
            Framing::Empty => Some(Bytes::new()),
            Framing::Length(n) if buf.len() as u64 >= n => Some(buf.split_to(n as usize).freeze()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `pieces` one at a time: the body read, how it ended, and what was left after it.
    fn read(framing: Framing, pieces: &[&[u8]]) -> (Vec<u8>, Result<Decoded, Error>, Vec<u8>) {
        let mut decoder = BodyDecoder::new(framing);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Decoded::Data(d)) => {
                        assert!(!d.is_empty());
                        body.extend_from_slice(&d);
                    }
                    Ok(Decoded::NeedMore) => break,
                    end => return (body, end, buf.to_vec()),
                }
            }
        }
        (body, Ok(Decoded::NeedMore), buf.to_vec())
    }

    #[test]
    fn a_length_is_read_to_its_end_and_no_further() {
        let (body, end, left) = read(Framing::Length(5), &[b"he", b"lloHTTP/1.1"]);
        assert_eq!(
            (&body[..], end, &left[..]),
            (&b"hello"[..], Ok(Decoded::End), &b"HTTP/1.1"[..])
        );
        let mut d = BodyDecoder::new(Framing::Length(3));
        assert_eq!(d.remaining(), Some(3));
        let mut buf = BytesMut::from(&b"abc"[..]);
        assert_eq!(
            d.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from_static(b"abc")))
        );
        assert!(d.is_done() && !d.ends_at_close());
        assert_eq!(d.remaining(), Some(0));
    }

    #[test]
    fn an_empty_body_ends_at_once() {
        let (body, end, left) = read(Framing::Empty, &[b"next"]);
        assert_eq!(
            (body.len(), end, &left[..]),
            (0, Ok(Decoded::End), &b"next"[..])
        );
        assert!(BodyDecoder::new(Framing::Empty).is_done());
    }

    #[test]
    fn a_body_until_the_close_takes_everything_and_only_the_close_ends_it() {
        let (body, end, _) = read(Framing::UntilClose, &[b"a", b"bc"]);
        assert_eq!((&body[..], end), (&b"abc"[..], Ok(Decoded::NeedMore)));
        let d = BodyDecoder::new(Framing::UntilClose);
        assert!(d.ends_at_close() && !d.is_done() && d.remaining().is_none());
    }

    #[test]
    fn a_chunked_body_is_read_through_the_chunked_decoder() {
        let (body, end, left) = read(Framing::Chunked, &[b"3\r\nab", b"c\r\n0\r\n\r\nX"]);
        assert_eq!(
            (&body[..], end, &left[..]),
            (&b"abc"[..], Ok(Decoded::End), &b"X"[..])
        );
        let (_, end, _) = read(Framing::Chunked, &[b"3\r\nabcXY"]);
        assert!(end.unwrap_err().is_chunked());
        assert!(!BodyDecoder::new(Framing::Chunked).ends_at_close());
    }

    #[test]
    fn a_whole_body_is_taken_only_when_all_of_it_is_there() {
        let mut buf = BytesMut::from(&b"hello!"[..]);
        assert_eq!(Framing::Length(7).take_whole(&mut buf), None);
        assert_eq!(Framing::Chunked.take_whole(&mut buf), None);
        assert_eq!(Framing::UntilClose.take_whole(&mut buf), None);
        assert_eq!(Framing::Empty.take_whole(&mut buf), Some(Bytes::new()));
        assert_eq!(
            Framing::Length(5).take_whole(&mut buf),
            Some(Bytes::from_static(b"hello"))
        );
        assert_eq!(&buf[..], b"!");
    }
}
