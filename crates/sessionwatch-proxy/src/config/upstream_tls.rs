//! TLS from the proxy to the farm and to the alert sinks: `https://` backend URLs with
//! `[upstream.tls]`, and the `ca_file` of `[alertmanager]` and `[webhook]`.
//!
//! ```toml
//! [upstream.tls]
//! ca_file = "/etc/sessionwatch/farm-ca.pem"   # required once a backend is https://
//! server_name = "app.shop.internal"           # optional: the name every https backend is asked
//!                                             # for (SNI) and verified against
//! [[backends]]
//! name = "node-a"
//! url = "https://10.0.0.7:8443"
//! server_name = "node-a.shop.internal"        # optional, this backend only (wins over the above)
//!
//! [[backends]]
//! dns = "app-headless.shop.svc.cluster.local:8443"
//! tls = true                                  # every discovered backend over TLS, asked for
//!                                             # server_name, else the dns host
//!
//! [alertmanager]
//! url = "https://alertmanager.monitoring:9093"
//! ca_file = "/etc/ssl/certs/ca-certificates.crt"
//! ```
//!
//! Without a `server_name` a backend is asked for, and verified against, its URL's host (an IP
//! address is matched against the certificate's IP addresses, and sends no SNI); a `dns` entry's
//! backends, against the name it resolves; an `srv` entry needs a `server_name`.
//!
//! Nothing is trusted by default: no roots are built in and the system's store is not read (an
//! image `FROM scratch` has none). A farm's backends carry certificates from the farm's own CA
//! far more often than from a public one, and trusting every public CA for them would accept a
//! certificate anyone can get for the name. A public receiver's `ca_file` is the system's bundle.
//!
//! There is no switch that skips verification (HAProxy's `verify none`): the reason to encrypt
//! this hop is that session cookies cross it, and a connection that believes any certificate
//! gives them to whoever sits in between. A backend with a self-made certificate is trusted by
//! naming its CA.

use std::sync::Arc;

use http::uri::Authority;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Deserialize;

use super::Issues;
use super::fields::p;
use super::file::{BackendFile, FileConfig};
use super::locate::FieldPath;

/// `[upstream.tls]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamTlsFile {
    pub(crate) ca_file: Option<String>,
    pub(crate) server_name: Option<String>,
}

/// A TLS client: the roots it trusts, and the rustls configuration made from them (ring, TLS
/// 1.2 and 1.3, ALPN `http/1.1`, a session cache shared by every connection made with it).
#[derive(Clone)]
pub(crate) struct TlsClient {
    roots: Arc<[CertificateDer<'static>]>,
    config: Arc<rustls::ClientConfig>,
}

impl PartialEq for TlsClient {
    /// The same roots make the same client (the rest of the configuration is fixed).
    fn eq(&self, other: &Self) -> bool {
        self.roots == other.roots
    }
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// The rustls configuration, shared.
    pub(crate) fn config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    /// A client trusting the certificates of the PEM text `pem` (read from `file`, named in
    /// the error).
    pub(crate) fn from_pem(pem: &[u8], file: &str) -> Result<Self, String> {
        let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{file} is not a PEM file of certificates: {e}"))?;
        if roots.is_empty() {
            return Err(format!(
                "{file} holds no certificate (no -----BEGIN CERTIFICATE----- section)"
            ));
        }
        let mut store = RootCertStore::empty();
        let (_, unusable) = store.add_parsable_certificates(roots.iter().cloned());
        if unusable > 0 {
            return Err(format!(
                "{unusable} of the {} certificates in {file} cannot be used as a root (not valid X.509)",
                roots.len()
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS client: {e}"))?
            .with_root_certificates(store)
            .with_no_client_auth();
        // The upstream client and the sinks speak HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            roots: roots.into(),
            config: Arc::new(config),
        })
    }
}

/// How the proxy speaks TLS to one backend (an `https://` URL, or a `dns`/`srv` entry with
/// `tls = true`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BackendTls {
    /// The roots of `[upstream.tls] ca_file`.
    pub client: TlsClient,
    /// The name sent (SNI) and verified.
    pub server_name: ServerName<'static>,
}

/// The TLS of the `[[backends]]` entries, `[upstream.tls]` read once for them all.
pub(super) struct BackendsTls<'a> {
    file: Option<&'a UpstreamTlsFile>,
    /// `ca_file` read: `None` until a backend needs it.
    client: Option<Option<TlsClient>>,
}

impl<'a> BackendsTls<'a> {
    pub(super) fn new(raw: &'a FileConfig) -> Self {
        Self {
            file: raw.upstream.as_ref().and_then(|u| u.tls.as_ref()),
            client: None,
        }
    }

    /// The TLS of the `https://` backend at `path` (`backends[i]`), written as `b`, at
    /// `authority`.
    pub(super) fn https(
        &mut self,
        issues: &mut Issues,
        path: &FieldPath,
        b: &BackendFile,
        authority: &Authority,
    ) -> Option<BackendTls> {
        let server_name = self.server_name(issues, path, b, authority);
        let client = self.client(issues, path, "url")?;
        Some(BackendTls {
            client,
            server_name: server_name?,
        })
    }

    /// The TLS of the `dns`/`srv` entry at `path`, written as `b`, when it says `tls = true`.
    /// Its backends are named by their addresses, which their certificates seldom are for: the
    /// name asked for is `server_name` (the entry's, else `[upstream.tls]`'s), else the `dns`
    /// host; an `srv` entry's record name is no certificate's, so it needs a `server_name`.
    pub(super) fn discovered(
        &mut self,
        issues: &mut Issues,
        path: &FieldPath,
        b: &BackendFile,
    ) -> Option<BackendTls> {
        if b.tls != Some(true) {
            if b.server_name.is_some() {
                issues.push(path.clone().key("server_name"), "only with tls = true");
            }
            return None;
        }
        let text = match (
            &b.server_name,
            self.file.and_then(|f| f.server_name.as_ref()),
        ) {
            (Some(own), _) => Some((own.as_str(), path.clone().key("server_name"))),
            (None, Some(all)) => Some((all.as_str(), p("upstream").key("tls").key("server_name"))),
            (None, None) => b
                .dns
                .as_deref()
                .and_then(|d| d.rsplit_once(':'))
                .map(|(host, _)| (host, path.clone().key("dns"))),
        };
        let Some((text, at)) = text else {
            issues.push(
                path.clone().key("server_name"),
                "an srv entry with tls = true needs server_name: the name its backends' \
                 certificates are for",
            );
            return None;
        };
        let server_name = parse_server_name(issues, at, text);
        let client = self.client(issues, path, "tls")?;
        Some(BackendTls {
            client,
            server_name: server_name?,
        })
    }

    /// An `http://` backend at `path`: it has no TLS to name.
    pub(super) fn plain(&self, issues: &mut Issues, path: &FieldPath, b: &BackendFile) {
        if b.server_name.is_some() {
            issues.push(
                path.clone().key("server_name"),
                "only for an https:// backend",
            );
        }
    }

    fn server_name(
        &self,
        issues: &mut Issues,
        path: &FieldPath,
        b: &BackendFile,
        authority: &Authority,
    ) -> Option<ServerName<'static>> {
        let (text, at) = match (
            &b.server_name,
            self.file.and_then(|f| f.server_name.as_ref()),
        ) {
            (Some(own), _) => (own.as_str(), path.clone().key("server_name")),
            (None, Some(all)) => (all.as_str(), p("upstream").key("tls").key("server_name")),
            (None, None) => {
                let host = authority.host();
                let host = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                (host, path.clone().key("url"))
            }
        };
        parse_server_name(issues, at, text)
    }

    /// The client of `[upstream.tls] ca_file`; its absence is reported once, at the `key` of
    /// the first backend entry (`path`) that needs it.
    fn client(&mut self, issues: &mut Issues, path: &FieldPath, key: &str) -> Option<TlsClient> {
        if let Some(client) = &self.client {
            return client.clone();
        }
        let at = p("upstream").key("tls").key("ca_file");
        let client = match self.file.and_then(|f| f.ca_file.as_deref()) {
            Some(file) => ca_file(issues, at, file),
            None => {
                issues.push(
                    path.clone().key(key),
                    "a backend over TLS needs [upstream.tls] ca_file: the PEM file of the CA \
                     that signed the backends' certificates (no roots are built in)",
                );
                None
            }
        };
        self.client = Some(client.clone());
        client
    }
}

/// `text` as the name to verify a backend's certificate against, given at `at`.
fn parse_server_name(
    issues: &mut Issues,
    at: FieldPath,
    text: &str,
) -> Option<ServerName<'static>> {
    match ServerName::try_from(text.to_owned()) {
        Ok(name) => Some(name),
        Err(_) => {
            issues.push(
                at,
                format!("{text:?} is not a DNS name or an IP address to verify the backend's certificate against"),
            );
            None
        }
    }
}

/// The TLS of a sink (`[alertmanager]`, `[webhook]` at `path`) whose URL is `https://` when
/// `https`, with the `ca_file` written.
pub(super) fn sink(
    issues: &mut Issues,
    path: &FieldPath,
    https: bool,
    file: Option<&str>,
) -> Option<TlsClient> {
    match (https, file) {
        (true, Some(file)) => ca_file(issues, path.clone().key("ca_file"), file),
        (true, None) => {
            issues.push(
                path.clone().key("ca_file"),
                "an https:// URL needs ca_file: the PEM file of the CA that signed the receiver's \
                 certificate (no roots are built in; for a public one, the system's bundle, \
                 e.g. /etc/ssl/certs/ca-certificates.crt)",
            );
            None
        }
        (false, Some(_)) => {
            issues.push(path.clone().key("ca_file"), "only for an https:// URL");
            None
        }
        (false, None) => None,
    }
}

/// The client trusting the certificates of the PEM file `file`, given at `at`.
fn ca_file(issues: &mut Issues, at: FieldPath, file: &str) -> Option<TlsClient> {
    let pem = match std::fs::read(file) {
        Ok(pem) => pem,
        Err(e) => {
            issues.push(at, format!("cannot read {file}: {e}"));
            return None;
        }
    };
    TlsClient::from_pem(&pem, file)
        .map_err(|e| issues.push(at, e))
        .ok()
}
