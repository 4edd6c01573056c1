//! The codec's chunked-body decoder (`ChunkedDecoder`), fed its input whole and split into
//! pieces as a socket might deliver it, and its encoder (`encode_chunk`).
//!
//! The first byte is the mode. Bit 0 clear: the rest is wire bytes, decoded as they are. Bit 0
//! set: the rest is a plan for a valid body (chunk lengths and data, extensions, size digits in
//! either case with leading zeros, trailers, bytes of a next message after it), encoded here,
//! so the decoder must give back exactly the data and stop exactly at its end. The other seven
//! bits are the size of the pieces for the split run (0: one byte at a time). The seeds use
//! `\0` (raw, byte by byte), `\x01` (encoded, byte by byte), `0` (raw, 24-byte pieces) and `1`
//! (encoded, 24-byte pieces).
//!
//! Checks: the decoder never yields more bytes than it was given, never an empty data frame; the
//! data, the outcome (end, error or more needed) and the bytes left after the end are the same
//! whatever the split; an encoded body decodes to its data and ends where it ends, and so does
//! the same body as the codec's own encoder writes it, chunk for chunk.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sessionwatch_h1::{ChunkedDecoder, Decoded, LAST_CHUNK, encode_chunk};
use sessionwatch_h1_fuzz::Knobs;

/// How a decoding ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The body ended; these bytes were left after it.
    End(Vec<u8>),
    /// The decoder failed.
    Failed,
    /// All input was taken and more is wanted.
    NeedMore,
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(mode >> 1).max(1);
    let (wire, expect) = if mode & 1 == 0 {
        (rest.to_vec(), None)
    } else {
        let (wire, chunks, after) = encode(rest);
        let mut plain = Vec::new();
        for chunk in &chunks {
            encode_chunk(chunk, &mut plain);
        }
        plain.extend_from_slice(LAST_CHUNK);
        plain.extend_from_slice(&after);
        let body = chunks.concat();
        let pieces: Vec<&[u8]> = plain.chunks(piece).collect();
        assert_eq!(
            decode(&pieces),
            (body.clone(), Outcome::End(after.clone())),
            "the codec's own encoding: {plain:?}"
        );
        (wire, Some((body, after)))
    };
    let whole = decode(&[&wire]);
    let pieces: Vec<&[u8]> = wire.chunks(piece).collect();
    let split = decode(&pieces);
    assert_eq!(whole, split, "the split changed the outcome");
    if let Some((body, after)) = expect {
        assert_eq!(whole, (body, Outcome::End(after)), "{wire:?}");
    }
});

/// Decode `pieces`, given one at a time as they arrive.
fn decode(pieces: &[&[u8]]) -> (Vec<u8>, Outcome) {
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    for (i, piece) in pieces.iter().enumerate() {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Decoded::Data(d)) => {
                    assert!(!d.is_empty(), "an empty data frame");
                    body.extend_from_slice(&d);
                    assert!(body.len() + buf.len() <= fed, "more out than in");
                }
                Ok(Decoded::NeedMore) => break,
                Ok(Decoded::End) => {
                    assert_eq!(
                        decoder.decode(&mut BytesMut::new()).ok(),
                        Some(Decoded::End),
                        "a finished body is still finished"
                    );
                    let mut left = buf.to_vec();
                    for p in &pieces[i + 1..] {
                        left.extend_from_slice(p);
                    }
                    return (body, Outcome::End(left));
                }
                Err(_) => return (body, Outcome::Failed),
            }
        }
    }
    (body, Outcome::NeedMore)
}

/// A valid chunked body from a plan: the wire bytes, the data of each chunk they carry, and the
/// bytes that follow the body.
fn encode(plan: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>, Vec<u8>) {
    let mut k = Knobs::new(plan);
    let mut wire = Vec::new();
    let mut chunks = Vec::new();
    let mut filler = 0u8;
    loop {
        let len = usize::from(k.u16() % 2048);
        let style = k.byte();
        if len == 0 {
            size_line(&mut wire, 0, style);
            break;
        }
        size_line(&mut wire, len, style);
        let mut body = Vec::with_capacity(len);
        for _ in 0..len {
            // Data bytes from the plan where it has them, so CR, LF and digits turn up inside
            // chunks; made up once it runs out.
            let b = match k.byte() {
                0 => {
                    filler = filler.wrapping_add(1);
                    filler
                }
                b => b,
            };
            wire.push(b);
            body.push(b);
        }
        chunks.push(body);
        wire.extend_from_slice(b"\r\n");
    }
    for _ in 0..k.byte() % 4 {
        wire.extend_from_slice(b"x-trailer: ");
        for _ in 0..k.byte() % 32 {
            wire.push(b'a' + k.byte() % 26);
        }
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    let after = b"HTTP/1.1 200 OK\r\n"[..usize::from(k.byte() % 18)].to_vec();
    wire.extend_from_slice(&after);
    (wire, chunks, after)
}

/// A chunk-size line: `style` picks upper or lower case, leading zeros, an extension and blanks
/// before it.
fn size_line(wire: &mut Vec<u8>, len: usize, style: u8) {
    let digits = if style & 1 == 0 {
        format!("{len:x}")
    } else {
        format!("{len:X}")
    };
    let zeros = usize::from((style >> 1) & 7).min(15 - digits.len());
    wire.extend(std::iter::repeat_n(b'0', zeros));
    wire.extend_from_slice(digits.as_bytes());
    if style & 0x10 != 0 {
        wire.extend_from_slice(b" ");
    }
    if style & 0x20 != 0 {
        wire.extend_from_slice(b";name=\"v;x\"");
    }
    wire.extend_from_slice(b"\r\n");
}
