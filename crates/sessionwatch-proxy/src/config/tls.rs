//! `[listen.tls]`: TLS termination on the listener. Each `[[listen.tls.certificates]]` names a PEM
//! chain and its key; the first is served to clients that send no SNI or a name no certificate
//! is for. The files are read and checked here (readable, the key the certificate's, not
//! expired), so `check-config` and the start refuse what a handshake could not use, each error
//! in the place of the file it is about.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::Issues;
use super::fields::{duration, p};
use super::file::FileConfig;
use crate::certs::{self, CertError, CertificateFiles};

/// A client gets this long to finish its handshake.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificates' files are read for changes.
const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// The section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsFile {
    #[serde(default)]
    pub(crate) certificates: Vec<CertificateFile>,
    pub(crate) min_version: Option<String>,
    pub(crate) handshake_timeout: Option<String>,
    pub(crate) reload_interval: Option<String>,
}

/// One `[[listen.tls.certificates]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertificateFile {
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
}

/// The oldest TLS version a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// TLS on the listener, validated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TlsConfig {
    /// The certificates, the default first.
    pub certificates: Vec<CertificateFiles>,
    /// The oldest version accepted.
    pub min_version: TlsVersion,
    /// Time from accept to the end of the handshake; past it the connection is closed.
    pub handshake_timeout: Duration,
    /// How often the files are read again for a rotated certificate.
    pub reload_interval: Duration,
}

/// `[listen.tls]`, if there is one.
pub(super) fn tls(issues: &mut Issues, raw: &FileConfig) -> Option<TlsConfig> {
    let t = raw.listen.as_ref()?.tls.as_ref()?;
    let path = p("listen").key("tls");
    if t.certificates.is_empty() {
        issues.push(
            path.clone().key("certificates"),
            "TLS needs at least one certificate: [[listen.tls.certificates]] cert = \"tls.crt\" key = \"tls.key\"",
        );
    }
    let provider = certs::provider();
    let now = SystemTime::now();
    let mut certificates = Vec::new();
    for (i, c) in t.certificates.iter().enumerate() {
        let at = path.clone().key("certificates").index(i);
        let (Some(cert), Some(key)) = (c.cert.as_deref(), c.key.as_deref()) else {
            for (name, value) in [("cert", &c.cert), ("key", &c.key)] {
                if value.is_none() {
                    issues.push(at.clone().key(name), "missing: the PEM file's path");
                }
            }
            continue;
        };
        let files = CertificateFiles {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        };
        if let Err(e) = certs::load(&files, &provider, now) {
            let field = match &e {
                CertError::Read { path, .. } if *path == files.key => "key",
                CertError::Key { .. } | CertError::Mismatch { .. } => "key",
                _ => "cert",
            };
            issues.push(at.key(field), e.to_string());
        }
        certificates.push(files);
    }
    let min_version = match t.min_version.as_deref() {
        None | Some("1.2") => TlsVersion::Tls12,
        Some("1.3") => TlsVersion::Tls13,
        Some(other) => {
            issues.push(
                path.clone().key("min_version"),
                format!("{other:?}: write \"1.2\" or \"1.3\""),
            );
            TlsVersion::Tls12
        }
    };
    Some(TlsConfig {
        certificates,
        min_version,
        handshake_timeout: duration(
            issues,
            path.clone().key("handshake_timeout"),
            t.handshake_timeout.as_deref(),
            DEFAULT_HANDSHAKE_TIMEOUT,
        ),
        reload_interval: duration(
            issues,
            path.key("reload_interval"),
            t.reload_interval.as_deref(),
            DEFAULT_RELOAD_INTERVAL,
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Config;

    const BACKEND: &str = "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:8081\"\n";

    /// A directory of PEM files for one test, removed at the end.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "sessionwatch-tls-config-{name}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        /// A certificate for `name` and its key, written as `<file>.crt` and `<file>.key`;
        /// expired when `expired`.
        fn cert(&self, file: &str, name: &str, expired: bool) -> (String, String) {
            let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
            if expired {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let cert = params.self_signed(&key).unwrap();
            let (c, k) = (
                self.0.join(format!("{file}.crt")),
                self.0.join(format!("{file}.key")),
            );
            std::fs::write(&c, cert.pem()).unwrap();
            std::fs::write(&k, key.serialize_pem()).unwrap();
            (c.display().to_string(), k.display().to_string())
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn section(certs: &[(&str, &str)], more: &str) -> String {
        let mut s = format!("{BACKEND}[listen.tls]\n{more}");
        for (cert, key) in certs {
            s.push_str(&format!(
                "[[listen.tls.certificates]]\ncert = {cert:?}\nkey = {key:?}\n"
            ));
        }
        s
    }

    fn parse(toml: &str) -> Result<Config, String> {
        Config::parse(toml, Path::new("farm.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn certificates_in_order_and_the_defaults() {
        let dir = Dir::new("order");
        let (c1, k1) = dir.cert("a", "a.example", false);
        let (c2, k2) = dir.cert("b", "b.example", false);
        let config = parse(&section(&[(&c1, &k1), (&c2, &k2)], "")).unwrap();
        let tls = config.tls.unwrap();
        assert_eq!(tls.certificates.len(), 2);
        assert_eq!(tls.certificates[0].cert, PathBuf::from(&c1));
        assert_eq!(tls.certificates[1].key, PathBuf::from(&k2));
        assert_eq!(tls.min_version, TlsVersion::Tls12);
        assert_eq!(tls.handshake_timeout, Duration::from_secs(10));
        assert_eq!(tls.reload_interval, Duration::from_secs(2));
        let more =
            "min_version = \"1.3\"\nhandshake_timeout = \"3s\"\nreload_interval = \"100ms\"\n";
        let tls = parse(&section(&[(&c1, &k1)], more)).unwrap().tls.unwrap();
        assert_eq!(tls.min_version, TlsVersion::Tls13);
        assert_eq!(tls.handshake_timeout, Duration::from_secs(3));
        assert_eq!(tls.reload_interval, Duration::from_millis(100));
        assert!(parse(BACKEND).unwrap().tls.is_none());
    }

    #[test]
    fn a_missing_expired_or_mismatched_certificate_is_an_error_in_its_place() {
        let dir = Dir::new("errors");
        let (c1, k1) = dir.cert("good", "a.example", false);
        let (c2, k2) = dir.cert("other", "b.example", false);
        let (old, old_key) = dir.cert("old", "a.example", true);
        let missing = dir.0.join("nope.crt").display().to_string();

        let err = parse(&section(&[(&missing, &k1)], "")).unwrap_err();
        assert!(
            err.contains("listen.tls.certificates[0].cert: cannot read")
                && err.contains("nope.crt"),
            "{err}"
        );
        let err = parse(&section(&[(&c1, &missing)], "")).unwrap_err();
        assert!(
            err.contains("listen.tls.certificates[0].key: cannot read"),
            "{err}"
        );
        // Unreadable whoever runs it (a test as root reads a file of mode 000): a directory.
        let unreadable = dir.0.display().to_string();
        let err = parse(&section(&[(&unreadable, &k1)], "")).unwrap_err();
        assert!(
            err.contains("listen.tls.certificates[0].cert: cannot read"),
            "{err}"
        );
        let err = parse(&section(&[(&old, &old_key)], "")).unwrap_err();
        assert!(
            err.contains("listen.tls.certificates[0].cert: the certificate in")
                && err.contains("expired on 2021-01-01"),
            "{err}"
        );
        // The second entry's key is the first's certificate's: refused, in the second's place.
        let err = parse(&section(&[(&c1, &k1), (&c2, &k1)], "")).unwrap_err();
        assert!(
            err.contains("listen.tls.certificates[1].key: the key in")
                && err.contains("does not match the certificate in"),
            "{err}"
        );
        assert!(!err.contains("certificates[0]"), "{err}");
        // A key file where the certificate should be, and the other way round.
        let err = parse(&section(&[(&k1, &c1)], "")).unwrap_err();
        assert!(
            err.contains("certificates[0].cert: ") && err.contains("holds no PEM certificate"),
            "{err}"
        );
        // Both halves of a good pair, swapped between two entries.
        let err = parse(&section(&[(&c2, &k2), (&c1, &k2)], "")).unwrap_err();
        assert!(err.contains("certificates[1].key: "), "{err}");
    }

    #[test]
    fn a_section_without_certificates_or_with_an_unknown_version_is_refused() {
        let err = parse(&section(&[], "")).unwrap_err();
        assert!(
            err.contains("listen.tls.certificates: TLS needs at least one certificate"),
            "{err}"
        );
        let dir = Dir::new("version");
        let (c, k) = dir.cert("a", "a.example", false);
        let err = parse(&section(&[(&c, &k)], "min_version = \"1.1\"\n")).unwrap_err();
        assert!(err.contains("listen.tls.min_version: \"1.1\""), "{err}");
        let err = parse(&format!(
            "{BACKEND}[listen.tls]\n[[listen.tls.certificates]]\ncert = {c:?}\n"
        ))
        .unwrap_err();
        assert!(
            err.contains("listen.tls.certificates[0].key: missing"),
            "{err}"
        );
    }

    #[test]
    fn the_affinity_cookie_is_secure_behind_tls_unless_the_file_says_otherwise() {
        let dir = Dir::new("secure");
        let (c, k) = dir.cert("a", "a.example", false);
        let session = "[session]\ncookies = [{ name = \"sid\" }]\nfingerprint_key = \"0123456789abcdef0123456789abcdef\"\naffinity_cookie = true\n";
        let secure = |toml: String| parse(&toml).unwrap().session.affinity.unwrap().secure;
        assert!(secure(format!("{}{session}", section(&[(&c, &k)], ""))));
        assert!(!secure(format!("{BACKEND}{session}")));
        assert!(!secure(format!(
            "{}{session}affinity_cookie_secure = false\n",
            section(&[(&c, &k)], "")
        )));
    }
}
