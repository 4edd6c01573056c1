//! The client request duration on hyper's path: an answer's body that records, when hyper is
//! done with it, how long it has been since the request's head was read.
//!
//! hyper drops an answer's body once its last frame has been taken (or the exchange was given
//! up: the client left, the stream was reset), in the task that serves the connection or the
//! HTTP/2 stream, so the figure means what the plain loop's does (see [`super::plain`]): from the
//! request's head to its answer's end. A protocol switch's answer has no body: its figure is the
//! time to the switch, not the tunnel's life.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::metrics::DurationHistogram;
use crate::upstream::body::{BodyError, ResponseBody};

pin_project_lite::pin_project! {
    /// `body`, timed from `started` until it is dropped.
    pub(super) struct Timed {
        #[pin]
        body: ResponseBody,
        started: Instant,
        duration: Arc<DurationHistogram>,
    }

    impl PinnedDrop for Timed {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            this.duration.record(this.started.elapsed());
        }
    }
}

impl Timed {
    pub(super) fn new(
        body: ResponseBody,
        started: Instant,
        duration: Arc<DurationHistogram>,
    ) -> Self {
        Self {
            body,
            started,
            duration,
        }
    }
}

impl Body for Timed {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;

    use super::*;

    fn rendered(h: &DurationHistogram) -> String {
        let mut text = String::new();
        h.render(&mut text);
        text
    }

    #[tokio::test(start_paused = true)]
    async fn the_time_runs_until_the_body_is_done_with() {
        let h = Arc::new(DurationHistogram::new("took", "Took.", &[1.0, 2.0, 4.0]));
        let started = Instant::now();
        tokio::time::advance(Duration::from_millis(1500)).await;
        let body = Timed::new(ResponseBody::full("page"), started, h.clone());
        // Nothing counted while the answer is still being sent.
        assert!(rendered(&h).contains("took_count 0"), "{}", rendered(&h));
        tokio::time::advance(Duration::from_secs(1)).await;
        let sent = body.collect().await.unwrap().to_bytes();
        assert_eq!(sent, "page");
        let text = rendered(&h);
        assert!(text.contains("took_bucket{le=\"2\"} 0"), "{text}");
        assert!(text.contains("took_bucket{le=\"4\"} 1"), "{text}");
        assert!(text.contains("took_sum 2.5\n"), "{text}");
    }
}
