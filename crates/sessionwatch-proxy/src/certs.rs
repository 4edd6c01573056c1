//! One certificate as the listener serves it: its chain and key read from their PEM files, checked
//! (the key is the certificate's, the certificate has not expired), and the DNS names it is valid
//! for, by which SNI picks it. `check-config`, the start and every reload go through [`load`], so
//! all three refuse the same files with the same words.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The one crypto provider: ring, as every TLS in the proxy uses (no process-wide default to
/// install).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where one certificate is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertificateFiles {
    /// The PEM chain: the server's certificate first, then the intermediates.
    pub cert: PathBuf,
    /// The PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

/// A certificate ready to serve.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The chain and its signing key, as rustls takes them.
    pub key: Arc<CertifiedKey>,
    /// The DNS names of the leaf (subjectAltName, or the subject's CN when it has none),
    /// lowercase; a wildcard keeps its `*.`.
    pub names: Vec<String>,
    /// When the leaf expires (its notAfter).
    pub not_after: SystemTime,
}

/// Why a certificate cannot be served. Each says which file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertError {
    /// A file is missing or cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate, or one that is not X.509.
    #[error("{}: {why}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The key file holds no usable private key.
    #[error("{}: {why}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The key is not the certificate's.
    #[error("the key in {} does not match the certificate in {}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate's notAfter has passed.
    #[error("the certificate in {} expired on {}", path.display(), humantime::format_rfc3339_seconds(*not_after))]
    Expired {
        /// The file.
        path: PathBuf,
        /// When it expired.
        not_after: SystemTime,
    },
}

/// Read both files and check them.
pub(crate) fn load(
    files: &CertificateFiles,
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<Loaded, CertError> {
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    from_pem(files, &cert_pem, &key_pem, provider, now)
}

/// Both files' contents, to tell whether they changed since the last look.
pub(crate) fn read_both(files: &CertificateFiles) -> Result<(Vec<u8>, Vec<u8>), CertError> {
    Ok((read(&files.cert)?, read(&files.key)?))
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Check and assemble a certificate from its files' contents (`files` only names them).
pub(crate) fn from_pem(
    files: &CertificateFiles,
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<Loaded, CertError> {
    let cert_error = |why: String| CertError::Certificate {
        path: files.cert.clone(),
        why,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(format!("not a PEM certificate chain ({e})")))?;
    let Some(leaf) = chain.first() else {
        return Err(cert_error("holds no PEM certificate".into()));
    };
    let (_, parsed) = X509Certificate::from_der(leaf)
        .map_err(|e| cert_error(format!("the first certificate is not X.509 ({e})")))?;
    // Before 1970: long expired, as the check below finds.
    let not_after = SystemTime::UNIX_EPOCH
        + std::time::Duration::from_secs(
            u64::try_from(parsed.validity().not_after.timestamp()).unwrap_or(0),
        );
    if not_after <= now {
        return Err(CertError::Expired {
            path: files.cert.clone(),
            not_after,
        });
    }
    let names = dns_names(&parsed);
    let key_error = |why: String| CertError::Key {
        path: files.key.clone(),
        why,
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| key_error(format!("holds no PEM private key ({e})")))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_error(format!("the key cannot sign ({e})")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(CertError::Mismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            });
        }
        // ring knows the public half of every key type it loads; a provider that does not
        // cannot be checked here, and the first handshake would show the mismatch.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => return Err(cert_error(format!("cannot be read ({e})"))),
    }
    Ok(Loaded {
        key: Arc::new(certified),
        names,
        not_after,
    })
}

/// The leaf's DNS names, as SNI is matched against them (RFC 6125: the subjectAltName's names
/// when it has any, the subject's CN only when it has none).
fn dns_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
        return names;
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(cn) = cn.as_str() {
            names.push(cn.to_ascii_lowercase());
        }
    }
    names
}

/// Whether `sni` (lowercase, as rustls hands it over) is one of `names`, or under one of their
/// wildcards (which stand for exactly one leftmost label).
pub(crate) fn matches(names: &[String], sni: &str) -> bool {
    names.iter().any(|name| match name.strip_prefix("*.") {
        Some(parent) => sni
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => name == sni,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_wildcard_stands_for_one_label_only() {
        let n = names(&["shop.example", "*.api.example"]);
        assert!(matches(&n, "shop.example"));
        assert!(matches(&n, "eu.api.example"));
        assert!(!matches(&n, "api.example"));
        assert!(!matches(&n, "a.eu.api.example"));
        assert!(!matches(&n, "www.shop.example"));
        assert!(!matches(&n, ".api.example"));
    }
}
