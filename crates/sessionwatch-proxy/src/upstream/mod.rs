//! Talking to one backend: the request goes out in origin form on a pooled connection, and the
//! answer (or why there is none) comes back. Nothing here knows which backend it is or why it
//! was chosen: the caller names an [`Endpoint`], and gets an [`Error`] it can judge.
//!
//! - [`pool`]: each worker's keep-alive connections, per endpoint;
//! - [`plain`]: the exchange for a request whose body is in hand, on a connection the request's
//!   own task holds;
//! - [`body`]: the request and answer bodies that flow through the proxy;
//! - [`stream`]: plain TCP or TLS under a connection;
//! - this file: the exchange as a whole (origin form, the request body read or watched, the
//!   response timeout, the answer's hop-by-hop fields, a WebSocket tunnel).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use crate::config::UpstreamConfig;
use crate::extensions::ClientConnection;
use crate::hop_by_hop::{is_upgrade, strip_hop_by_hop};
use body::{BodyState, BodyWatch, RequestBody, ResponseBody};

pub(crate) mod body;
pub(crate) mod plain;
mod pool;
mod stream;

pub(crate) use plain::Body as Http1Body;
pub(crate) use plain::Error as Http1Error;
pub(crate) use pool::{Lease, PoisonedCounters, Pool, UpstreamError};
pub(crate) use stream::{ConnectError, TlsTarget, connect};

pub(crate) use sessionwatch_h1::BUFFER_BODY_LIMIT;

/// Where a backend is, as the upstream client needs it.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// Its slot in each worker's pool (the backend's index).
    pub slot: usize,
    /// `host:port`.
    pub authority: Authority,
    /// TLS settings of an `https://` backend; `None` for plain HTTP.
    pub tls: Option<Arc<TlsTarget>>,
}

/// Why an exchange gave no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The client's body, streamed or read whole first, broke off (`stalled`: the client
    /// stopped sending for `upstream.request_body_timeout`): the client's fault, not the
    /// backend's.
    #[error("the request body could not be read")]
    ClientBody {
        /// Whether the client stopped sending (rather than sending something broken).
        stalled: bool,
    },
    /// No answer head within `upstream.response_timeout`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// No connection, or the exchange on it failed.
    #[error(transparent)]
    Exchange(#[from] UpstreamError),
}

/// The response timeout ran out.
#[derive(Debug)]
struct Elapsed;

/// One worker's way to the farm: its pool and the upstream settings.
#[derive(Clone)]
pub(crate) struct Upstream {
    pool: Pool,
    config: UpstreamConfig,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").finish_non_exhaustive()
    }
}

impl Upstream {
    /// An upstream over `pool`.
    pub(crate) fn new(pool: Pool, config: UpstreamConfig) -> Self {
        Self { pool, config }
    }

    /// Send `req` (prepared: hop-by-hop fields gone, forwarding fields set) to `endpoint` and
    /// hand back its answer, with the answer's own hop-by-hop fields removed. A WebSocket
    /// switch the backend accepts is tunnelled from here on.
    pub(crate) async fn send(
        &self,
        endpoint: &Endpoint,
        mut req: Request<RequestBody>,
    ) -> Result<Response<ResponseBody>, Error> {
        let upgrade = req.version() == Version::HTTP_11 && is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let client_connection = upgrade
            .then(|| req.extensions().get::<ClientConnection>().cloned())
            .flatten();

        // The upstream request carries its target in origin form; the authority goes in `Host`.
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let (mut parts, body) = req.into_parts();
        parts.uri = Uri::from(path_and_query);
        parts.version = Version::HTTP_11;
        // Only a body hyper streams needs reading here; the plain path reads plain requests'
        // bodies itself. Boxed, so that this rarer path does not enlarge every request's future.
        let body = match body {
            RequestBody::Incoming { .. } if !upgrade => {
                Box::pin(self.read_small_body(body)).await?
            }
            other => other,
        };
        // A body still streaming from the client is watched: if it breaks or stalls, the
        // exchange's failure is the client's, not the backend's.
        let (body, watch) = match body {
            RequestBody::Incoming { body } if !upgrade => {
                let (body, watch) = RequestBody::watched(body, self.config.request_body_timeout);
                (body, Some(watch))
            }
            other => (other, None),
        };
        let upstream_req = Request::from_parts(parts, body);

        let send = self.pool.send(endpoint, upstream_req);
        let sent = match &watch {
            None => tokio::time::timeout(self.config.response_timeout, send)
                .await
                .map_err(|_| Elapsed),
            // The response timeout runs from the end of the client's body: a long upload is
            // not the backend's slowness, and a stalled one is cut by the body's own timer.
            Some(watch) => Box::pin(self.send_streamed(send, watch)).await,
        };
        if let Some(watch) = &watch {
            match (watch.state(), &sent) {
                (_, Ok(Ok(_))) | (BodyState::Streaming | BodyState::Ended, _) => {}
                (state, _) => {
                    return Err(Error::ClientBody {
                        stalled: state == BodyState::Stalled,
                    });
                }
            }
        }
        let mut resp = match sent {
            Ok(answer) => answer?,
            Err(Elapsed) => return Err(Error::Timeout(self.config.response_timeout)),
        };

        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let _counted = client_connection;
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client_io, upstream_io)) => {
                        let mut c = TokioIo::new(client_io);
                        let mut u = TokioIo::new(upstream_io);
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
        }
        strip_hop_by_hop(resp.headers_mut(), switching);
        Ok(resp)
    }

    /// A streamed body short enough (see [`BUFFER_BODY_LIMIT`]) read whole, each frame due
    /// within `upstream.request_body_timeout` of the last; any other body as it is.
    async fn read_small_body(&self, body: RequestBody) -> Result<RequestBody, Error> {
        let RequestBody::Incoming { mut body } = body else {
            return Ok(body);
        };
        let short = http_body::Body::size_hint(&body)
            .exact()
            .is_some_and(|n| n <= BUFFER_BODY_LIMIT);
        if !short {
            return Ok(RequestBody::Incoming { body });
        }
        let mut whole = bytes::BytesMut::new();
        loop {
            match tokio::time::timeout(self.config.request_body_timeout, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        whole.extend_from_slice(&data);
                    }
                }
                Ok(None) => break,
                Ok(Some(Err(_))) => return Err(Error::ClientBody { stalled: false }),
                Err(_) => return Err(Error::ClientBody { stalled: true }),
            }
        }
        Ok(RequestBody::Buffered {
            data: Some(whole.freeze()),
        })
    }

    /// `send` for a request whose body streams from the client: the response timeout starts
    /// once the body has been read to its end, or runs out while the backend takes none of it
    /// (hyper asks for more of the body only as the backend reads it).
    async fn send_streamed<F, T>(&self, send: F, watch: &BodyWatch) -> Result<T, Elapsed>
    where
        F: Future<Output = T>,
    {
        let limit = self.config.response_timeout;
        let deadline = async {
            while watch.state() == BodyState::Streaming {
                let quiet = watch.since_asked();
                if quiet >= limit {
                    return;
                }
                tokio::select! {
                    () = watch.settled() => break,
                    () = tokio::time::sleep(limit - quiet) => {}
                }
            }
            tokio::time::sleep(limit).await;
        };
        tokio::select! {
            sent = send => Ok(sent),
            () = deadline => Err(Elapsed),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The response timeout of a streamed upload, on paused time: the body's watch is moved by
    //! hand as a backend reading it (or not) would move it.

    use std::sync::Arc;

    use tokio::time::{Instant, sleep};

    use super::*;
    use crate::config::ReusePolicy;

    const LIMIT: Duration = Duration::from_secs(1);
    const READ_EVERY: Duration = Duration::from_millis(200);

    fn upstream() -> Upstream {
        let config = UpstreamConfig {
            connect_timeout: LIMIT,
            response_timeout: LIMIT,
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 4,
            reuse: ReusePolicy::Safe,
            request_body_timeout: LIMIT,
        };
        Upstream::new(
            Pool::new(&config, Arc::new(|_| None), Arc::new(|_| None)),
            config,
        )
    }

    /// A backend that reads the body every [`READ_EVERY`] for `reading`, then, if `ends`, comes
    /// to its end (else it stops reading).
    fn backend_reads(watch: &Arc<BodyWatch>, reading: Duration, ends: bool) {
        let watch = watch.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            while start.elapsed() < reading {
                sleep(READ_EVERY).await;
                watch.asked();
            }
            if ends {
                watch.set(BodyState::Ended);
            }
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_that_stops_reading_the_body_times_out_a_limit_after_its_last_read() {
        let (up, watch) = (upstream(), Arc::new(BodyWatch::default()));
        let start = Instant::now();
        // Reading for three limits in a row does not time out; stopping does.
        backend_reads(&watch, 3 * LIMIT, false);
        let sent = up.send_streamed(std::future::pending::<()>(), &watch).await;
        assert!(sent.is_err());
        assert_eq!(start.elapsed(), 3 * LIMIT + LIMIT);
        assert_eq!(watch.state(), BodyState::Streaming);
    }

    #[tokio::test(start_paused = true)]
    async fn the_response_timeout_runs_from_the_end_of_the_body() {
        let (up, watch) = (upstream(), Arc::new(BodyWatch::default()));
        let start = Instant::now();
        backend_reads(&watch, 2 * LIMIT, true);
        let sent = up.send_streamed(std::future::pending::<()>(), &watch).await;
        assert!(sent.is_err());
        assert_eq!(start.elapsed(), 2 * LIMIT + LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_upload_read_all_along_gets_its_answer() {
        let (up, watch) = (upstream(), Arc::new(BodyWatch::default()));
        // Ten limits of upload, then the answer half a limit after its end.
        backend_reads(&watch, 10 * LIMIT, true);
        let answer = async {
            sleep(10 * LIMIT + LIMIT / 2).await;
            "answer"
        };
        let sent = up.send_streamed(answer, &watch).await;
        assert!(matches!(sent, Ok("answer")));
    }
}
