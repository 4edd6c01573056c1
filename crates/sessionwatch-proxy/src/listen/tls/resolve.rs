//! Which certificate a handshake gets, and how a certificate rewritten on disk reaches new
//! handshakes.
//!
//! The served set sits in an [`ArcSwap`]: a handshake loads it without a lock, and the watch
//! swaps in a new set when a certificate's files change. cert-manager rewrites a Secret's files
//! in place (the kubelet swaps the mounted directory's `..data` symlink), and nothing tells the
//! process, so the watch reads every certificate's files at an interval and compares their
//! contents with what it last read: a symlink swap, a `mv` over the file and a rewrite in place
//! all show. Connections already open keep the certificate their handshake got; only new
//! handshakes see the new one. Files that do not check out (a half-written file, a key that
//! is not the new certificate's, an expired certificate) leave the old certificate served, with
//! an error line and `sessionwatch_tls_certificate_reloads_total{result="failed"}`; the same bad
//! contents are reported once, not at every look.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use metrics::Counter;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::certs::{self, CertificateFiles, Loaded};

/// The certificates served, the first for clients that send no SNI or a name none is for.
#[derive(Debug)]
pub(crate) struct Certificates {
    served: ArcSwap<Vec<Arc<Loaded>>>,
}

impl Certificates {
    /// Serve `loaded` (not empty: the configuration has at least one certificate).
    pub(crate) fn new(loaded: Vec<Loaded>) -> Self {
        Self {
            served: ArcSwap::from_pointee(loaded.into_iter().map(Arc::new).collect()),
        }
    }

    /// The certificate for a client that asked for `sni`.
    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let served = self.served.load();
        let chosen = match (sni, served.len()) {
            (Some(name), 2..) => served
                .iter()
                .find(|c| certs::matches(&c.names, name))
                .or(served.first()),
            _ => served.first(),
        };
        chosen.map(|c| c.key.clone())
    }

    /// Serve `loaded` in place of certificate `index` from the next handshake on.
    fn replace(&self, index: usize, loaded: Loaded) {
        let loaded = Arc::new(loaded);
        self.served.rcu(|served| {
            let mut next = Vec::clone(served);
            if let Some(slot) = next.get_mut(index) {
                *slot = loaded.clone();
            }
            next
        });
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// The counters of the watch: certificates reloaded, and changed files refused.
#[derive(Debug, Clone)]
pub(crate) struct ReloadCounters {
    /// A changed certificate now served.
    pub reloaded: Counter,
    /// Changed files that did not check out (the old certificate stays).
    pub failed: Counter,
}

/// What the watch last read for one certificate.
#[derive(Debug)]
struct Seen {
    files: CertificateFiles,
    /// The certificate's and key's contents; `None` when they could not be read.
    contents: Option<(Vec<u8>, Vec<u8>)>,
}

/// Looks at every certificate's files and swaps in those that changed and check out.
#[derive(Debug)]
pub(crate) struct Watch {
    certificates: Arc<Certificates>,
    seen: Vec<Seen>,
    provider: Arc<CryptoProvider>,
    counters: ReloadCounters,
}

impl Watch {
    /// A watch of `files` (in the order of the served set), starting from what they hold now.
    pub(crate) fn new(
        certificates: Arc<Certificates>,
        files: &[CertificateFiles],
        provider: Arc<CryptoProvider>,
        counters: ReloadCounters,
    ) -> Self {
        let seen = files
            .iter()
            .map(|f| Seen {
                files: f.clone(),
                contents: certs::read_both(f).ok(),
            })
            .collect();
        Self {
            certificates,
            seen,
            provider,
            counters,
        }
    }

    /// Read every certificate's files once; serve those that changed and check out. How many
    /// were swapped in.
    pub(crate) fn look(&mut self, now: SystemTime) -> usize {
        let mut swapped = 0;
        for (index, seen) in self.seen.iter_mut().enumerate() {
            let read = certs::read_both(&seen.files);
            let contents = read.as_ref().ok();
            if contents == seen.contents.as_ref() {
                continue;
            }
            let checked = read.and_then(|(cert, key)| {
                let loaded = certs::from_pem(&seen.files, &cert, &key, &self.provider, now);
                seen.contents = Some((cert, key));
                loaded
            });
            match checked {
                Ok(loaded) => {
                    tracing::info!(
                        cert = %seen.files.cert.display(),
                        not_after = %humantime::format_rfc3339_seconds(loaded.not_after),
                        "TLS certificate reloaded"
                    );
                    self.certificates.replace(index, loaded);
                    self.counters.reloaded.increment(1);
                    swapped += 1;
                }
                Err(e) => {
                    if matches!(e, certs::CertError::Read { .. }) {
                        // Unreadable until further notice: said once.
                        seen.contents = None;
                    }
                    tracing::error!(error = %e, "TLS certificate not reloaded; the previous one is still served");
                    self.counters.failed.increment(1);
                }
            }
        }
        swapped
    }

    /// Look every `interval` until `shutdown`.
    pub(crate) async fn run(mut self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is now: the files were read at the start.
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    // File reads block; a few small files every couple of seconds, off the
                    // workers' threads.
                    let (watch, _) = match tokio::task::spawn_blocking(move || {
                        let swapped = self.look(SystemTime::now());
                        (self, swapped)
                    })
                    .await
                    {
                        Ok(done) => done,
                        Err(_) => return,
                    };
                    self = watch;
                }
                _ = crate::shutdown::stopped(&mut shutdown) => return,
            }
        }
    }
}
