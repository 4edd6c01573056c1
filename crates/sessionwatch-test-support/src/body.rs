//! Response bodies for the fake application.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Errors inside a response body (only `/echo` can fail, when the client's upload does).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one body type every route answers with.
pub(crate) type Body = BoxBody<Bytes, BoxError>;

pub(crate) fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Size of each frame `/big` sends.
const CHUNK: usize = 16 * 1024;

/// `len` bytes of `x`, produced one 16 KiB frame at a time so a large download never sits in
/// memory at once and the proxy sees a real stream.
#[derive(Debug)]
pub(crate) struct RepeatBody {
    remaining: u64,
    chunk: Bytes,
}

impl RepeatBody {
    pub(crate) fn new(len: u64) -> Self {
        Self {
            remaining: len,
            chunk: Bytes::from(vec![b'x'; CHUNK]),
        }
    }
}

impl http_body::Body for RepeatBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        // Bounded by CHUNK, so the conversion back to usize cannot truncate.
        let n = self.remaining.min(CHUNK as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn repeat_body_yields_exact_length_in_chunks() {
        let mut body = RepeatBody::new(40_000);
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().await {
            sizes.push(frame.unwrap().into_data().unwrap().len());
        }
        assert_eq!(sizes, [CHUNK, CHUNK, 40_000 - 2 * CHUNK]);
    }
}
