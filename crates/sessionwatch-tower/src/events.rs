//! The hook through which the layer reports what it saw.

use http::{HeaderValue, Method, StatusCode, Uri};
use sessionwatch_core::{
    AffinityRejection, BackendId, Fingerprint, Outcome, SessionRecord, Timestamp,
};

/// One exchange whose request carried a known session.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// When the response was seen.
    pub at: Timestamp,
    /// The classification.
    pub outcome: Outcome,
    /// The session it is about.
    pub fingerprint: Fingerprint,
    /// Its record as it was before this exchange.
    pub record: SessionRecord,
    /// The backend that served the request.
    pub server: BackendId,
    /// Request method.
    pub method: &'a Method,
    /// Request URI (report only its path: the query may hold anything).
    pub uri: &'a Uri,
    /// Response status.
    pub status: StatusCode,
    /// The request id header, if the request had one.
    pub request_id: Option<&'a HeaderValue>,
    /// Whether the layer will replay the request on the issuer.
    pub rescuing: bool,
}

/// A lost request replayed on the issuing backend.
#[derive(Debug, Clone, Copy)]
pub struct Rescued<'a> {
    /// When the rescue answer was seen.
    pub at: Timestamp,
    /// The session.
    pub fingerprint: Fingerprint,
    /// The backend that lost the session.
    pub from: BackendId,
    /// The backend the request was replayed on.
    pub to: BackendId,
    /// The rescue answer's status.
    pub status: StatusCode,
    /// Whether the rescue answer still shows the session lost (true too when the replay could
    /// not reach the issuer and the client got the original answer).
    pub still_lost: bool,
    /// Whether the issuer answered the replay; false when it could not be reached and the
    /// client got the original, lost answer.
    pub reached_issuer: bool,
    /// Request method.
    pub method: &'a Method,
    /// Request URI.
    pub uri: &'a Uri,
    /// The request id header, if any.
    pub request_id: Option<&'a HeaderValue>,
}

/// What became of an affinity cookie a request carried next to a session this table missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffinityUse {
    /// Valid: the session's record was taken from it.
    Adopted,
    /// Ignored, and why.
    Rejected(AffinityRejection),
    /// Authentic, but its issuer's tag names no backend this replica knows (yet): ignored, and
    /// the directory was told (see [`crate::BackendDirectory::resolve`]).
    Unresolved,
}

/// Receives what the layer saw. Called on the request path: implementations must be quick and
/// must not block (hand slow work such as file or network writes to a task or thread).
pub trait SessionEvents: Send + Sync + 'static {
    /// An exchange with a known session was classified.
    fn observed(&self, event: &Observed<'_>);
    /// A lost request was replayed on its issuer.
    fn rescued(&self, event: &Rescued<'_>) {
        let _ = event;
    }
    /// An affinity cookie was used or ignored.
    fn affinity(&self, event: AffinityUse) {
        let _ = event;
    }
    /// An answer of `server` that reached the client issued `sessions` new sessions (session
    /// cookies set, a sign-in's included, less a rotation of the carried session's value).
    fn issued(&self, server: BackendId, sessions: u32) {
        let _ = (server, sessions);
    }
}

/// No reporting.
impl SessionEvents for () {
    fn observed(&self, _: &Observed<'_>) {}
}

/// A closure receives every observation.
impl<F> SessionEvents for F
where
    F: Fn(&Observed<'_>) + Send + Sync + 'static,
{
    fn observed(&self, event: &Observed<'_>) {
        self(event)
    }
}
