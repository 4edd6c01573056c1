//! The body types that flow through the proxy. Enums rather than boxed bodies: no allocation per
//! request, and bodies stream frame by frame, never buffered whole.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::upstream::{Http1Body, Http1Error, Lease};

pin_project! {
    /// A request body: the client's, streamed or read whole first, or none (a rescue replay).
    #[project = RequestBodyProj]
    // Variant fields cannot carry docs inside pin_project_lite; the variants say what they hold.
    #[allow(missing_docs)]
    #[derive(Debug)]
    pub(crate) enum RequestBody {
        /// Streamed from the client.
        Incoming {
            #[pin] body: Incoming,
        },
        /// Streamed from the client to a backend, each frame due within `timeout` of the last;
        /// `watch` tells the upstream exchange whether the body ended, broke or stalled.
        Watched {
            #[pin] body: Incoming,
            idle: Pin<Box<tokio::time::Sleep>>,
            timeout: Duration,
            watch: Arc<BodyWatch>,
        },
        /// Read whole from the client before forwarding.
        Buffered {
            data: Option<Bytes>,
        },
        /// No body.
        Empty,
    }
}

impl RequestBody {
    /// The whole body when it is in hand (none, or read whole), `None` while it streams.
    pub(crate) fn in_hand(&self) -> Option<&[u8]> {
        match self {
            RequestBody::Incoming { .. } | RequestBody::Watched { .. } => None,
            RequestBody::Buffered { data } => Some(data.as_deref().unwrap_or_default()),
            RequestBody::Empty => Some(&[]),
        }
    }
}

// pin_project_lite does not pass `#[default]` through to a derive.
#[allow(clippy::derivable_impls)]
impl Default for RequestBody {
    fn default() -> Self {
        RequestBody::Empty
    }
}

impl From<Incoming> for RequestBody {
    /// A body that is already over (a GET's) is no body at all.
    fn from(body: Incoming) -> Self {
        if body.is_end_stream() {
            RequestBody::Empty
        } else {
            RequestBody::Incoming { body }
        }
    }
}

/// How a client's streamed body stands, for the upstream exchange (see [`RequestBody::watched`]).
#[derive(Debug)]
pub(crate) struct BodyWatch {
    state: AtomicU8,
    ended: tokio::sync::Notify,
    started: tokio::time::Instant,
    /// When the sender last asked for more of the body, in milliseconds since `started`: a
    /// backend that stops reading stops asking.
    last_asked: AtomicU64,
}

impl Default for BodyWatch {
    fn default() -> Self {
        Self {
            state: AtomicU8::new(0),
            ended: tokio::sync::Notify::new(),
            started: tokio::time::Instant::now(),
            last_asked: AtomicU64::new(0),
        }
    }
}

/// Where a watched body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyState {
    /// Still arriving.
    Streaming,
    /// Read to its end.
    Ended,
    /// The client sent it malformed, or went away in the middle of it.
    Broken,
    /// The client stopped sending it.
    Stalled,
}

impl BodyWatch {
    /// Where the body stands.
    pub(crate) fn state(&self) -> BodyState {
        match self.state.load(Ordering::Acquire) {
            0 => BodyState::Streaming,
            1 => BodyState::Ended,
            2 => BodyState::Broken,
            _ => BodyState::Stalled,
        }
    }

    pub(super) fn set(&self, state: BodyState) {
        let code = match state {
            BodyState::Streaming => 0,
            BodyState::Ended => 1,
            BodyState::Broken => 2,
            BodyState::Stalled => 3,
        };
        // The first outcome is the one that counts.
        if self
            .state
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.ended.notify_one();
        }
    }

    pub(super) fn asked(&self) {
        let ms = self.started.elapsed().as_millis();
        self.last_asked
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// How long since the sender last asked for more of the body.
    pub(crate) fn since_asked(&self) -> Duration {
        let at = self.started + Duration::from_millis(self.last_asked.load(Ordering::Relaxed));
        tokio::time::Instant::now().saturating_duration_since(at)
    }

    /// Resolves once the body is no longer streaming. (One waiter: `notify_one` keeps a
    /// permit for a waiter that comes late.)
    pub(crate) async fn settled(&self) {
        while self.state() == BodyState::Streaming {
            self.ended.notified().await;
        }
    }
}

/// Why a client's streamed body could not be passed on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestBodyError {
    /// What hyper found wrong with it (bad chunk framing, the client gone).
    #[error(transparent)]
    Client(#[from] hyper::Error),
    /// The client sent nothing for `upstream.request_body_timeout`.
    #[error("the client stopped sending the request body")]
    Stalled,
}

impl RequestBody {
    /// `body` streamed under a watch: each frame due within `timeout` of the last.
    pub(crate) fn watched(body: Incoming, timeout: Duration) -> (Self, Arc<BodyWatch>) {
        let watch = Arc::new(BodyWatch::default());
        let body = RequestBody::Watched {
            body,
            idle: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            watch: watch.clone(),
        };
        (body, watch)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        match self.project() {
            RequestBodyProj::Incoming { body } => body
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(RequestBodyError::from))),
            RequestBodyProj::Watched {
                mut body,
                idle,
                timeout,
                watch,
            } => {
                watch.asked();
                let polled = body.as_mut().poll_frame(cx);
                match polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        // A sender may stop polling once the body says it has ended.
                        if body.is_end_stream() {
                            watch.set(BodyState::Ended);
                        } else {
                            idle.as_mut().reset(tokio::time::Instant::now() + *timeout);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        watch.set(BodyState::Broken);
                        Poll::Ready(Some(Err(e.into())))
                    }
                    Poll::Ready(None) => {
                        watch.set(BodyState::Ended);
                        Poll::Ready(None)
                    }
                    Poll::Pending => match idle.as_mut().poll(cx) {
                        Poll::Ready(()) => {
                            watch.set(BodyState::Stalled);
                            Poll::Ready(Some(Err(RequestBodyError::Stalled)))
                        }
                        Poll::Pending => Poll::Pending,
                    },
                }
            }
            RequestBodyProj::Buffered { data } => {
                Poll::Ready(data.take().map(|d| Ok(Frame::data(d))))
            }
            RequestBodyProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Incoming { body } | RequestBody::Watched { body, .. } => {
                body.is_end_stream()
            }
            RequestBody::Buffered { data } => data.is_none(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Incoming { body } | RequestBody::Watched { body, .. } => body.size_hint(),
            RequestBody::Buffered { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

pin_project! {
    /// A response body: the backend's, streamed, or whole (a short one that came with the head,
    /// or one the proxy wrote itself).
    #[project = ResponseBodyProj]
    #[allow(missing_docs)]
    #[derive(Debug)]
    pub(crate) enum ResponseBody {
        /// Streamed from the backend through hyper's client, with the pooled connection it
        /// arrives on (if it can be reused) until it has been read whole.
        Incoming {
            #[pin] body: Incoming,
            lease: Option<Lease>,
        },
        /// Streamed from the backend on a connection the request's task holds.
        Upstream {
            body: Http1Body,
        },
        /// Written by the proxy (error pages, admin answers).
        Full {
            data: Option<Bytes>,
        },
    }
}

impl ResponseBody {
    /// A body of these bytes.
    pub(crate) fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        ResponseBody::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }

    /// A backend's body, holding `lease` until it has been read whole; a body that is already
    /// complete (empty) gives the connection back at once.
    pub(crate) fn upstream(body: Incoming, lease: Option<Lease>) -> Self {
        let lease = match lease {
            Some(l) if body.is_end_stream() => {
                l.release();
                None
            }
            other => other,
        };
        ResponseBody::Incoming { body, lease }
    }
}

/// Why a backend's body stopped short.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// Through hyper's client.
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// On a connection the request's task held.
    #[error(transparent)]
    Http1(#[from] Http1Error),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            ResponseBodyProj::Upstream { body } => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::from))),
            ResponseBodyProj::Incoming { mut body, lease } => {
                let polled = body.as_mut().poll_frame(cx);
                // A server stops polling once the body reports its end. A failed body keeps its
                // lease, and dropping the body drops (closes) the connection.
                let done = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
                    Poll::Ready(Some(Err(_))) | Poll::Pending => false,
                };
                if done && let Some(l) = lease.take() {
                    l.release();
                }
                polled.map(|f| f.map(|r| r.map_err(BodyError::from)))
            }
            ResponseBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Incoming { body, .. } => body.is_end_stream(),
            ResponseBody::Upstream { body } => body.is_end_stream(),
            ResponseBody::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Incoming { body, .. } => body.size_hint(),
            ResponseBody::Upstream { body } => body.size_hint(),
            ResponseBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
