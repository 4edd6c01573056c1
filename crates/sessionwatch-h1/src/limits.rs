//! The sizes every message is held to, in one place: how long a head may be, how many fields it
//! may carry, how much request body is read whole, and how the read buffers grow.

use bytes::BytesMut;

/// Most fields a head may carry (hyper's limit too): the parsers' slots are an array this long.
pub const MAX_HEADERS: usize = 100;

/// Largest head handled, whatever a caller's own limit says: offsets into a head fit a `u16`.
pub const MAX_HEAD: usize = u16::MAX as usize;

/// A request body of at most this many bytes, its length announced, is read whole before the
/// request goes on (as NGINX buffers request bodies): the backend never waits on a slow client,
/// and the request can be sent again if a pooled connection fails. A longer one is streamed.
pub const BUFFER_BODY_LIMIT: u64 = 64 * 1024;

/// A read buffer's first size.
pub const INITIAL_BUF: usize = 8 * 1024;

/// How much a read buffer grows by when it runs short; also the largest buffer worth keeping
/// for the next message.
pub const READ_GROW: usize = 16 * 1024;

/// Less room than this left for a read, and the buffer grows.
const READ_ROOM: usize = 4 * 1024;

/// Make sure a read into `buf` has room: a read into a full buffer reads nothing, which a
/// caller would take for the end of the stream.
pub fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_ROOM {
        buf.reserve(READ_GROW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_always_has_room_for_a_read() {
        let mut buf = BytesMut::new();
        make_room(&mut buf);
        assert!(buf.capacity() - buf.len() >= READ_ROOM);
        buf.resize(buf.capacity() - 1, b'x');
        make_room(&mut buf);
        assert!(buf.capacity() - buf.len() >= READ_ROOM);
    }
}
