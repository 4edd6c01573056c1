//! The HTTP/1.1 exchange for a request whose body is already in hand (no body, or a small one
//! read whole first): most of the traffic a session farm sees.
//!
//! The request goes out in one write and the answer is read by the request's own task, on a
//! connection it holds alone: no connection task, no channel between the two, no second wake-up
//! per request. The answer's body is framed as RFC 9112 section 6.3 says (no body, a length,
//! chunked, or until the backend closes) and handed on as it arrives; once it has been read to
//! its end, the connection goes back to its pool.
//!
//! Requests that stream their body, and protocol switches, go through hyper's client instead
//! (see the parent module).

use std::future::Future as _;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode};
use http_body::{Frame, SizeHint};
use sessionwatch_h1::{
    self as h1, AnswerHead, BodyDecoder, Decoded, Framing, INITIAL_BUF, READ_GROW, make_room,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::pool::Home;
use super::stream::{IdleRead, Stream};

/// What went wrong in an exchange with a backend.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The request could not be written; `partly` when some of it had gone out.
    #[error("writing the request failed")]
    Write {
        /// Whether the backend may have received part of the request.
        partly: bool,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The connection failed while the answer was read.
    #[error("reading the answer failed")]
    Read(#[source] io::Error),
    /// The backend closed the connection before sending a byte of its answer.
    #[error("the backend closed the connection without answering")]
    ClosedBeforeAnswer,
    /// The backend closed the connection before its answer was complete.
    #[error("the backend closed the connection in the middle of its answer")]
    ClosedEarly,
    /// The answer is not valid HTTP/1.1.
    #[error("invalid answer: {0}")]
    Invalid(#[from] h1::Error),
    /// The answer switches protocols, which a request sent this way never asks for.
    #[error("invalid answer: a protocol switch nobody asked for")]
    UnaskedSwitch,
}

impl Error {
    /// Whether the request may be sent again on another connection: none of it went out, or
    /// it is idempotent and the connection failed before a byte of the answer arrived. (A
    /// backend can act on a request whose head it has while its body is still arriving, so a
    /// request written in part counts as sent.)
    pub(crate) fn may_retry(&self, idempotent: bool) -> bool {
        match self {
            Error::Write { partly: false, .. } => true,
            Error::Write { partly: true, .. } => idempotent,
            Error::ClosedBeforeAnswer => idempotent,
            Error::Read(e) => idempotent && e.kind() == io::ErrorKind::ConnectionReset,
            _ => false,
        }
    }
}

/// Methods a client may send twice with the effect of once (RFC 9110 section 9.2.2).
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A keep-alive connection to a backend and the bytes read from it but not yet used.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: Stream,
    buf: BytesMut,
    /// In the backend's gauge of open connections while the connection lives.
    _counted: super::pool::Counted,
}

/// What an idle connection is fit for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdleState {
    /// Open, and silent since its last answer: it can take a request.
    Usable,
    /// The backend closed it (or it failed).
    Closed,
    /// The backend sent bytes nobody asked for: the next request would read them as its
    /// answer. It must be closed, never reused.
    Stray,
}

impl From<IdleRead> for IdleState {
    fn from(read: IdleRead) -> Self {
        match read {
            IdleRead::Nothing => IdleState::Usable,
            IdleRead::Closed => IdleState::Closed,
            IdleRead::Data => IdleState::Stray,
        }
    }
}

/// What becomes of a connection once an answer's body has been read to its end.
#[derive(Debug)]
pub(crate) enum AfterAnswer {
    /// Back to the pool.
    Reuse(Conn),
    /// Closed: the answer or the backend said so.
    Close,
    /// Closed because bytes followed the answer's framed end.
    Poisoned,
}

/// A request encoded for the wire. Its buffer is the thread's, lent for the request and given
/// back when done, so encoding allocates nothing once a thread has served a request.
#[derive(Debug)]
pub(crate) struct Encoded(Vec<u8>);

thread_local! {
    static SPARE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Encoded {
    pub(crate) fn new(parts: &http::request::Parts, body: &[u8]) -> Self {
        let mut out = SPARE.with_borrow_mut(std::mem::take);
        h1::encode_request(parts, body, &mut out);
        Encoded(out)
    }
}

impl Drop for Encoded {
    fn drop(&mut self) {
        // A large body's buffer is not worth keeping around.
        if self.0.capacity() <= READ_GROW {
            let out = std::mem::take(&mut self.0);
            let _ = SPARE.try_with(|spare| {
                if let Ok(mut spare) = spare.try_borrow_mut()
                    && spare.capacity() < out.capacity()
                {
                    *spare = out;
                }
            });
        }
    }
}

impl Conn {
    pub(super) fn new(stream: Stream, counted: super::pool::Counted) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(INITIAL_BUF),
            _counted: counted,
        }
    }

    /// What became of an idle connection while it waited in the pool, as far as the event loop
    /// has seen. Costs no system call unless the socket became readable while idle; bytes the
    /// event loop has not noticed yet (a busy worker polls for events every so many tasks) are
    /// missed: see [`Conn::idle_state_now`].
    pub(crate) fn idle_state(&mut self) -> IdleState {
        if !self.buf.is_empty() {
            return IdleState::Stray;
        }
        match self.stream.buffered() {
            IdleRead::Nothing => {}
            read => return read.into(),
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.tcp().poll_read_ready(&mut cx) {
            Poll::Pending => IdleState::Usable,
            Poll::Ready(Err(_)) => IdleState::Closed,
            Poll::Ready(Ok(())) => self.idle_state_now(),
        }
    }

    /// What became of an idle connection, asked of the socket itself: one system call (a
    /// non-blocking peek, or for TLS a non-blocking read), whatever the event loop has seen.
    pub(crate) fn idle_state_now(&mut self) -> IdleState {
        if !self.buf.is_empty() {
            return IdleState::Stray;
        }
        self.stream.idle_read().into()
    }

    /// Send `request` and read the answer's head, skipping interim (1xx) answers.
    pub(crate) async fn exchange(
        &mut self,
        request: &Encoded,
        head_request: bool,
    ) -> Result<AnswerHead, Error> {
        let mut sent = 0;
        while sent < request.0.len() {
            match self.stream.write(&request.0[sent..]).await {
                Ok(0) => {
                    return Err(Error::Write {
                        partly: sent > 0,
                        source: io::ErrorKind::WriteZero.into(),
                    });
                }
                Ok(n) => sent += n,
                Err(source) => {
                    return Err(Error::Write {
                        partly: sent > 0,
                        source,
                    });
                }
            }
        }
        // TLS may hold the last records back until flushed; a TCP socket holds nothing.
        if self.stream.is_tls() {
            self.stream.flush().await.map_err(|source| Error::Write {
                partly: true,
                source,
            })?;
        }
        let mut received = false;
        loop {
            if !self.buf.is_empty() {
                received = true;
                // A head still partial past the codec's limit is an error there.
                if let Some(head) = h1::parse_answer(&mut self.buf, head_request)? {
                    if head.status.is_informational() {
                        if head.status == StatusCode::SWITCHING_PROTOCOLS {
                            return Err(Error::UnaskedSwitch);
                        }
                        continue;
                    }
                    return Ok(head);
                }
            }
            make_room(&mut self.buf);
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(Error::Read)?;
            if n == 0 {
                return Err(if received {
                    Error::ClosedEarly
                } else {
                    Error::ClosedBeforeAnswer
                });
            }
        }
    }

    /// Read more bytes into the buffer; `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        make_room(&mut self.buf);
        // The future only borrows the stream and the buffer: a fresh one per poll loses nothing.
        pin!(self.stream.read_buf(&mut self.buf)).poll(cx)
    }
}

/// An answer's body read from its connection as it arrives. When it has been read to its end
/// the connection goes back to its pool; a body dropped before its end, or failing, closes the
/// connection.
pub(crate) struct Body {
    conn: Option<Conn>,
    left: BodyDecoder,
    reuse: bool,
    home: Option<Home>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

/// What becomes of an answer's body once the head has been read.
pub(crate) enum Answer {
    /// The whole body is in hand (possibly empty), and what becomes of the connection.
    Whole(Bytes, AfterAnswer),
    /// The body is still arriving.
    Streaming(Body),
}

/// The fate of `conn` after an answer read to its framed end: any byte beyond that end is
/// something the backend sent unasked, and poisons the connection.
fn after_answer(conn: Conn, reuse: bool) -> AfterAnswer {
    if !conn.buf.is_empty() {
        AfterAnswer::Poisoned
    } else if reuse {
        AfterAnswer::Reuse(conn)
    } else {
        AfterAnswer::Close
    }
}

impl Body {
    /// The body of an answer with `framing`, whose first bytes (if any) are in `conn`'s buffer.
    /// `reuse` is whether the connection may serve another request after it, going back to the
    /// pool through `home` once a body still arriving has been read (`home` also hears of a
    /// connection poisoned by bytes past the body's end).
    pub(crate) fn start(
        mut conn: Conn,
        framing: Framing,
        reuse: bool,
        home: impl FnOnce() -> Home,
    ) -> Answer {
        if let Some(data) = framing.take_whole(&mut conn.buf) {
            return Answer::Whole(data, after_answer(conn, reuse));
        }
        Answer::Streaming(Body {
            conn: Some(conn),
            left: BodyDecoder::new(framing),
            reuse,
            home: Some(home()),
        })
    }

    fn finish(&mut self) {
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take()) {
            home.settle(after_answer(conn, self.reuse));
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.conn, self.left.remaining()) {
            (None, _) => SizeHint::with_exact(0),
            (Some(_), Some(n)) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let step = match this.left.decode(&mut conn.buf) {
                Ok(step) => step,
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            };
            match step {
                Decoded::Data(data) => {
                    if this.left.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoded::End => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Decoded::NeedMore => match ready!(conn.poll_fill(cx)) {
                    Ok(0) => {
                        this.conn = None;
                        return Poll::Ready(if this.left.ends_at_close() {
                            None
                        } else {
                            Some(Err(Error::ClosedEarly))
                        });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(Error::Read(e))));
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_the_backend_cannot_have_acted_on_are_sent_again() {
        let write = |partly| Error::Write {
            partly,
            source: io::ErrorKind::BrokenPipe.into(),
        };
        assert!(write(false).may_retry(false));
        assert!(!write(true).may_retry(false));
        assert!(write(true).may_retry(true));
        assert!(Error::ClosedBeforeAnswer.may_retry(true));
        assert!(!Error::ClosedBeforeAnswer.may_retry(false));
        assert!(!Error::ClosedEarly.may_retry(true));
    }
}
