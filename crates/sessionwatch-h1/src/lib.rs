//! sessionwatch's HTTP/1.1 codec: bytes in, `http` types out, and back, with no I/O.
//!
//! It owns what both sides of the proxy need to speak HTTP/1.1: reading and writing request
//! heads and answer heads, the one [`Framing`] type that says how a body is delimited (RFC 9112
//! section 6.3, read from a head or chosen for one), chunked bodies both ways, the limits every
//! message is held to, and the cached `Date`. Sockets, timeouts and pools stay with the caller,
//! which hands in a buffer and gets back what it holds; so every rule here can be unit-tested,
//! fuzzed (`fuzz/` beside this crate) and benchmarked (`benches/codec.rs`) on its own.
//!
//! Split by role, as the two ends of an exchange see it:
//!
//! - [`server`]: the side that takes requests from clients: [`parse_request`] and
//!   [`encode_answer`].
//! - [`client`]: the side that sends requests to backends: [`encode_request`] and
//!   [`parse_answer`].
//! - [`Framing`] and [`BodyDecoder`] for bodies, [`ChunkedDecoder`] and [`encode_chunk`] for the
//!   chunked coding.
//!
//! Parsing is zero-copy: header values share the bytes of the head they came in (one `Bytes`
//! per head), and httparse's slots are left uninitialised. Encoding appends to a buffer the
//! caller keeps, so a connection that has served one message allocates nothing for the next.
//!
//! ```
//! use bytes::BytesMut;
//! use sessionwatch_h1::{MAX_HEAD, Parsed, parse_request};
//!
//! let mut buf = BytesMut::from(&b"GET /cart HTTP/1.1\r\nHost: shop\r\n\r\n"[..]);
//! let Parsed::Plain(head) = parse_request(&mut buf, MAX_HEAD) else {
//!     panic!("a plain GET");
//! };
//! assert_eq!(head.parts.uri, "/cart");
//! assert_eq!(head.parts.headers["host"], "shop");
//! assert!(head.keep_alive && buf.is_empty());
//! ```

pub mod client;
pub mod server;

mod body;
mod date;
mod error;
mod fields;
mod framing;
mod head;
mod limits;
mod number;

#[cfg(test)]
mod round_trip_tests;
#[cfg(test)]
mod testing;

pub use body::chunked::{ChunkedDecoder, LAST_CHUNK, encode_chunk};
pub use body::{BodyDecoder, Decoded};
pub use client::{AnswerHead, encode_request, parse_answer};
pub use error::Error;
pub use fields::{connection_lists, lists_token};
pub use framing::Framing;
pub use limits::{BUFFER_BODY_LIMIT, INITIAL_BUF, MAX_HEAD, MAX_HEADERS, READ_GROW, make_room};
pub use server::{AnswerSent, AnswerTo, Parsed, RequestHead, encode_answer, parse_request};
