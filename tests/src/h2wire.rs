//! HTTP/2 frames written by hand, for requests no conforming client library will send (a
//! pseudo-header out of place, an uppercase name, a body longer than its `content-length`) and
//! for floods that must go out as fast as the socket takes them.
//!
//! Header blocks are HPACK literals without indexing and without Huffman coding, which every
//! decoder takes. Reading decodes only what the tests look at: frame types, stream ids, error
//! codes, and the `:status` of an answer's first header block.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame types.
pub const DATA: u8 = 0x0;
/// HEADERS.
pub const HEADERS: u8 = 0x1;
/// RST_STREAM.
pub const RST_STREAM: u8 = 0x3;
/// SETTINGS.
pub const SETTINGS: u8 = 0x4;
/// PING.
pub const PING: u8 = 0x6;
/// GOAWAY.
pub const GOAWAY: u8 = 0x7;
/// Flags.
pub const END_STREAM: u8 = 0x1;
/// END_HEADERS.
pub const END_HEADERS: u8 = 0x4;
/// ACK (SETTINGS, PING).
pub const ACK: u8 = 0x1;
/// The CANCEL error code.
pub const CANCEL: u32 = 0x8;

/// A frame: its 9-byte header and payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = Vec::with_capacity(9 + len);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn hpack_int(out: &mut Vec<u8>, first: u8, prefix_bits: u32, mut n: usize) {
    let max = (1usize << prefix_bits) - 1;
    if n < max {
        out.push(first | n as u8);
        return;
    }
    out.push(first | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// A header block of literal fields, in the order given, exactly as given (any case, any byte).
pub fn header_block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        // Literal without indexing, new name.
        out.push(0);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name);
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

/// A HEADERS frame carrying `fields` whole.
pub fn headers(stream: u32, fields: &[(&[u8], &[u8])], end_stream: bool) -> Vec<u8> {
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, &header_block(fields))
}

/// A DATA frame.
pub fn data(stream: u32, bytes: &[u8], end_stream: bool) -> Vec<u8> {
    frame(DATA, if end_stream { END_STREAM } else { 0 }, stream, bytes)
}

/// RST_STREAM with `code`.
pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// A frame as read.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Its type.
    pub kind: u8,
    /// Its flags.
    pub flags: u8,
    /// Its stream.
    pub stream: u32,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// What the server made of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// An answer; its `:status` when the header block shows it plainly (`None` otherwise).
    Answered(Option<u16>),
    /// RST_STREAM with this error code.
    Reset(u32),
    /// GOAWAY with this error code (the stream was not answered).
    GoAway(u32),
    /// The connection ended, or stayed silent for the timeout.
    Nothing,
}

/// Huffman codes of the digits (RFC 7541 appendix B): what a `:status` value is made of.
const DIGIT_CODES: [(u32, u32); 10] = [
    (0b00000, 5),
    (0b00001, 5),
    (0b00010, 5),
    (0b011001, 6),
    (0b011010, 6),
    (0b011011, 6),
    (0b011100, 6),
    (0b011101, 6),
    (0b011110, 6),
    (0b011111, 6),
];

fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let bits: Vec<u32> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| u32::from((b >> i) & 1)))
        .collect();
    let mut out = String::new();
    let mut at = 0;
    'outer: while at < bits.len() {
        for (digit, (code, len)) in DIGIT_CODES.iter().enumerate() {
            let len = *len as usize;
            if at + len <= bits.len() {
                let v = bits[at..at + len].iter().fold(0, |acc, b| acc << 1 | b);
                if v == *code {
                    out.push(char::from(b'0' + digit as u8));
                    at += len;
                    continue 'outer;
                }
            }
        }
        // Padding: the most significant bits of EOS, all ones, fewer than 8.
        return (bits.len() - at < 8 && bits[at..].iter().all(|b| *b == 1)).then_some(out);
    }
    Some(out)
}

/// The `:status` in the first field of an answer's header block, if it is plain to see: an
/// indexed status of the static table, or a literal with the `:status` name.
pub fn status_of(block: &[u8]) -> Option<u16> {
    let first = *block.first()?;
    const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    if first & 0x80 != 0 {
        let index = usize::from(first & 0x7f);
        return (8..=14).contains(&index).then(|| STATIC[index - 8]);
    }
    // Literal with a static name index 8..=14 (`:status`): with incremental indexing (6-bit
    // prefix), without indexing or never indexed (4-bit prefix).
    let name_index = if first & 0x40 != 0 {
        first & 0x3f
    } else {
        first & 0x0f
    };
    if !(8..=14).contains(&name_index) {
        return None;
    }
    let len_byte = *block.get(1)?;
    let len = usize::from(len_byte & 0x7f);
    let value = block.get(2..2 + len)?;
    let text = if len_byte & 0x80 != 0 {
        huffman_digits(value)?
    } else {
        String::from_utf8(value.to_vec()).ok()?
    };
    text.parse().ok()
}

/// Take one whole frame from the front of `buf`.
pub fn take_frame(buf: &mut Vec<u8>) -> Option<Frame> {
    if buf.len() < 9 {
        return None;
    }
    let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
    if buf.len() < 9 + len {
        return None;
    }
    let f = Frame {
        kind: buf[3],
        flags: buf[4],
        stream: u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff,
        payload: buf[9..9 + len].to_vec(),
    };
    buf.drain(..9 + len);
    Some(f)
}

/// The next frame from `r` (bytes read but not yet taken are kept in `buf`), or `None` at the
/// end of the stream or after `within` without one.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    within: Duration,
) -> Option<Frame> {
    let deadline = tokio::time::Instant::now() + within;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if let Some(f) = take_frame(buf) {
            return Some(f);
        }
        match tokio::time::timeout_at(deadline, r.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// A client connection speaking HTTP/2 frame by frame.
#[derive(Debug)]
pub struct H2Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl H2Conn {
    /// Connect to `addr` and send the preface and an empty SETTINGS.
    pub async fn connect(addr: SocketAddr) -> Self {
        let mut stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .expect("connect within 10 s")
            .expect("connect");
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        stream.write_all(&hello).await.expect("write the preface");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Write raw bytes (frames); false if the connection refused them.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// The next frame, or `None` at the end of the stream or after `within` without one.
    pub async fn read_frame(&mut self, within: Duration) -> Option<Frame> {
        read_frame(&mut self.stream, &mut self.buf, within).await
    }

    /// Wait for the server's SETTINGS and acknowledge them: after this, frames can be written
    /// blind without one being taken for a protocol error.
    pub async fn handshake(&mut self) {
        loop {
            let f = self
                .read_frame(Duration::from_secs(10))
                .await
                .expect("the server's SETTINGS within 10 s");
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                assert!(self.send(&frame(SETTINGS, ACK, 0, &[])).await);
                return;
            }
        }
    }

    /// The socket, and any bytes read from it but not taken as frames yet.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf)
    }

    /// Read frames (acknowledging SETTINGS and PING) until `stream` is answered, reset, or the
    /// connection goes away.
    pub async fn stream_end(&mut self, stream: u32, within: Duration) -> StreamEnd {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(f) = self.read_frame(left).await else {
                return StreamEnd::Nothing;
            };
            match f.kind {
                SETTINGS if f.flags & ACK == 0 => {
                    let _ = self.send(&frame(SETTINGS, ACK, 0, &[])).await;
                }
                PING if f.flags & ACK == 0 => {
                    let _ = self.send(&frame(PING, ACK, 0, &f.payload)).await;
                }
                HEADERS if f.stream == stream => {
                    return StreamEnd::Answered(status_of(&f.payload));
                }
                RST_STREAM if f.stream == stream => {
                    let code = f
                        .payload
                        .get(..4)
                        .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                    return StreamEnd::Reset(code);
                }
                GOAWAY => {
                    let code = f
                        .payload
                        .get(4..8)
                        .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                    return StreamEnd::GoAway(code);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_read_indexed_literal_or_huffman_coded() {
        assert_eq!(status_of(&[0x88]), Some(200));
        assert_eq!(status_of(&[0x8c]), Some(400));
        assert_eq!(status_of(&[0x48, 3, b'4', b'0', b'5']), Some(405));
        // "405" in Huffman code: 011010 00000 011011, then seven bits of padding.
        assert_eq!(huffman_digits(&[0x68, 0x0d, 0xff]), Some("405".to_owned()));
        assert_eq!(status_of(&[0x48, 0x83, 0x68, 0x0d, 0xff]), Some(405));
        assert_eq!(status_of(&[0x08, 0x83, 0x68, 0x0d, 0xff]), Some(405));
        // Eight bits of padding or more is not a valid end.
        assert_eq!(huffman_digits(&[0x68, 0x0d, 0xff, 0xff]), None);
        // An index into the dynamic table says nothing here.
        assert_eq!(status_of(&[0xbe]), None);
    }

    #[test]
    fn long_literals_use_continuation_bytes() {
        let block = header_block(&[(b"x", &[b'v'; 200])]);
        assert_eq!(&block[..5], &[0, 1, b'x', 127, 73]);
        assert_eq!(block.len(), 3 + 2 + 200);
    }
}
