//! TLS termination on the listener, with rustls and its ring provider.
//!
//! [`TlsListener`] runs each accepted connection's handshake (after its PROXY header, when those
//! are on) within `listen.tls.handshake_timeout`. ALPN offers `h2` and `http/1.1`: a client that
//! picks `h2` goes straight to hyper's HTTP/2; every other one meets the plain HTTP/1.1 loop, as
//! a plain-TCP client does. The certificate comes from [`resolve::Certificates`], which SNI picks
//! from and the certificate watch refreshes. Resumption is on: TLS 1.3 tickets and TLS 1.2
//! tickets (stateless, so every worker resumes every other's), and a session cache for TLS 1.2
//! clients that send no ticket extension. Certificate files are read by [`crate::certs`], which
//! `check-config` shares.

pub(crate) mod resolve;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use metrics::Counter;
use rustls::ServerConfig;
use rustls::server::ServerSessionMemoryCache;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::io::Prefixed;
use crate::certs;
use crate::config::{TlsConfig, TlsVersion};
use crate::metrics::Metrics;
use resolve::{Certificates, ReloadCounters, Watch};

/// Make the listener's TLS from `config`, counted in `metrics`, and start the certificate
/// watch (it ends at `shutdown`).
pub(crate) fn start(
    config: &TlsConfig,
    metrics: &Metrics,
    shutdown: watch::Receiver<bool>,
) -> Result<(TlsListener, JoinHandle<()>), SetupError> {
    let handshake =
        |result| metrics.counter("sessionwatch_tls_handshakes_total", &[("result", result)]);
    let reload = |result| {
        metrics.counter(
            "sessionwatch_tls_certificate_reloads_total",
            &[("result", result)],
        )
    };
    let handshakes = HandshakeCounters {
        ok: handshake("ok"),
        failed: handshake("failed"),
        timed_out: handshake("timeout"),
    };
    let reloads = ReloadCounters {
        reloaded: reload("reloaded"),
        failed: reload("failed"),
    };
    let (listener, watch) = TlsListener::new(config, handshakes, reloads)?;
    let watching = tokio::spawn(watch.run(config.reload_interval, shutdown));
    Ok((listener, watching))
}

/// A client connection after its handshake.
pub(crate) type ClientTls = TlsStream<Prefixed<TcpStream>>;

/// TLS 1.2 sessions remembered for resumption by id (about 200 bytes each).
const SESSION_CACHE: usize = 16 * 1024;

/// Handshakes by how they ended, for `sessionwatch_tls_handshakes_total{result}`.
#[derive(Debug, Clone)]
pub(crate) struct HandshakeCounters {
    /// Completed.
    pub ok: Counter,
    /// Refused by either side (no common version or cipher, not TLS at all, a closed socket).
    pub failed: Counter,
    /// Not finished within the handshake timeout.
    pub timed_out: Counter,
}

/// What each worker needs to run handshakes: the shared server configuration.
#[derive(Clone)]
pub(crate) struct TlsListener {
    acceptor: TlsAcceptor,
    timeout: Duration,
    counters: HandshakeCounters,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why TLS cannot be set up at the start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    /// A certificate does not check out (changed since the configuration was read).
    #[error(transparent)]
    Certificate(#[from] certs::CertError),
    /// rustls refused the settings.
    #[error("TLS cannot be set up: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsListener {
    /// Load every certificate and make the server configuration; the watch that keeps the
    /// certificates fresh, to be run beside the workers.
    pub(crate) fn new(
        config: &TlsConfig,
        handshakes: HandshakeCounters,
        reloads: ReloadCounters,
    ) -> Result<(Self, Watch), SetupError> {
        let provider = certs::provider();
        let now = SystemTime::now();
        let loaded = config
            .certificates
            .iter()
            .map(|files| certs::load(files, &provider, now))
            .collect::<Result<Vec<_>, _>>()?;
        let certificates = Arc::new(Certificates::new(loaded));
        let watch = Watch::new(
            certificates.clone(),
            &config.certificates,
            provider.clone(),
            reloads,
        );
        let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_cert_resolver(certificates);
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        server.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        server.ticketer = rustls::crypto::ring::Ticketer::new()?;
        let listener = Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            timeout: config.handshake_timeout,
            counters: handshakes,
        };
        Ok((listener, watch))
    }

    /// Run the handshake on `io`; the stream, and whether the client chose HTTP/2. `None`
    /// when the handshake failed or took too long (counted, and logged at debug: scanners and
    /// health probes fail handshakes all day).
    pub(crate) async fn handshake(&self, io: Prefixed<TcpStream>) -> Option<(ClientTls, bool)> {
        match tokio::time::timeout(self.timeout, self.acceptor.accept(io)).await {
            Ok(Ok(stream)) => {
                self.counters.ok.increment(1);
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                Some((stream, h2))
            }
            Ok(Err(e)) => {
                self.counters.failed.increment(1);
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.counters.timed_out.increment(1);
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
    }
}
