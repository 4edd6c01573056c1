//! `[admin]`'s token: the secret every admin path but `/healthz`, `/readyz` and the ones
//! `open_paths` lists asks for, and the warning for an admin listener that anyone on the network
//! can reach without one.

use std::net::SocketAddr;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::Issues;
use super::fields::p;
use super::file::AdminFile;

/// The shortest token accepted: a guessable one is no protection.
const MIN_LEN: usize = 16;

/// Admin paths `open_paths` may list: the probes' two are open always, and a path the listener
/// does not serve is a typo.
const OPENABLE: [&str; 4] = ["/", "/status", "/metrics", "/probe"];

/// The admin token, from `token` or the environment variable `token_env` names, and the paths
/// that need none.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AdminAuth {
    token: Arc<[u8]>,
    open: Vec<&'static str>,
}

impl AdminAuth {
    /// Whether `candidate` is the token, in time that does not depend on where they differ.
    pub(crate) fn matches(&self, candidate: &[u8]) -> bool {
        bool::from(self.token.ct_eq(candidate))
    }

    /// Whether `path` is one `open_paths` lists.
    pub(crate) fn is_open(&self, path: &str) -> bool {
        self.open.contains(&path)
    }
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &"<redacted>")
            .field("open", &self.open)
            .finish()
    }
}

/// `open_paths`, each one of [`OPENABLE`].
fn open_paths(issues: &mut Issues, a: &AdminFile) -> Vec<&'static str> {
    let mut open = Vec::new();
    for (i, path) in a.open_paths.iter().flatten().enumerate() {
        match OPENABLE.iter().find(|p| **p == path.as_str()) {
            Some(p) => open.push(*p),
            None => issues.push(
                p("admin").key("open_paths").index(i),
                format!(
                    "{path:?} is not an admin path that can be opened: one of {}",
                    OPENABLE.map(|p| format!("\"{p}\"")).join(", ")
                ),
            ),
        }
    }
    open
}

/// Read `[admin] token` / `token_env`.
pub(super) fn token(issues: &mut Issues, admin: Option<&AdminFile>) -> Option<AdminAuth> {
    let a = admin?;
    let open = open_paths(issues, a);
    let (value, field) = match (a.token.as_deref(), a.token_env.as_deref()) {
        (None, None) => return None,
        (Some(_), Some(_)) => {
            issues.push(
                p("admin").key("token_env"),
                "give token or token_env, not both",
            );
            return None;
        }
        (Some(t), None) => (t.to_owned(), "token"),
        (None, Some(var)) => match std::env::var(var) {
            Ok(t) => (t, "token_env"),
            Err(std::env::VarError::NotPresent) => {
                issues.push(
                    p("admin").key("token_env"),
                    format!("environment variable {var} is not set"),
                );
                return None;
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                issues.push(
                    p("admin").key("token_env"),
                    format!("environment variable {var} is not valid UTF-8"),
                );
                return None;
            }
        },
    };
    // The token travels in an HTTP header, as a Bearer token or a Basic password.
    let value = value.trim();
    let whose = if field == "token" {
        "the token".to_owned()
    } else {
        format!(
            "environment variable {}",
            a.token_env.as_deref().unwrap_or_default()
        )
    };
    if value.chars().count() < MIN_LEN {
        issues.push(
            p("admin").key(field),
            format!("{whose} must hold at least {MIN_LEN} characters"),
        );
        return None;
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        issues.push(
            p("admin").key(field),
            format!("{whose} must be printable ASCII with no spaces (it is sent in a header)"),
        );
        return None;
    }
    Some(AdminAuth {
        token: Arc::from(value.as_bytes()),
        open,
    })
}

/// What `check-config` and `serve` warn about: valid, but likely a mistake.
pub(super) fn warnings(admin: Option<SocketAddr>, token: Option<&AdminAuth>) -> Vec<String> {
    match admin {
        Some(a) if token.is_none() && !a.ip().is_loopback() => vec![format!(
            "admin.address: {a} is reachable from other hosts and no token is set: \
             anyone who reaches it can read /status and /metrics; set [admin] token_env \
             (or token), or listen on 127.0.0.1"
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const BACKEND: &str = "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:8081\"\n";

    fn parse(admin: &str) -> Result<Config, String> {
        Config::parse(
            &format!("{BACKEND}[admin]\n{admin}"),
            Path::new("farm.toml"),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_token_comes_from_the_file_or_the_environment_and_never_shows() {
        let c = parse("token = \"0123456789abcdef\"\n").unwrap();
        let t = c.admin_auth.clone().unwrap();
        assert!(t.matches(b"0123456789abcdef"));
        assert!(!t.matches(b"0123456789abcdeF"));
        assert_eq!(
            format!("{t:?}"),
            "AdminAuth { token: \"<redacted>\", open: [] }"
        );
        assert!(!format!("{c:?}").contains("0123456789abcdef"));

        // Cargo sets CARGO_PKG_NAME for the test process; tests cannot set variables (that needs
        // `unsafe` in this edition, which the workspace forbids).
        let expected = std::env::var("CARGO_PKG_NAME").unwrap();
        let c = parse("token_env = \"CARGO_PKG_NAME\"\n").unwrap();
        assert!(c.admin_auth.unwrap().matches(expected.as_bytes()));

        assert!(parse("").unwrap().admin_auth.is_none());
    }

    #[test]
    fn a_token_that_protects_nothing_is_refused_with_its_field() {
        for (admin, fragment) in [
            (
                "token = \"short\"\n",
                "admin.token: the token must hold at least 16 characters",
            ),
            (
                "token = \"0123456789 abcdef\"\n",
                "admin.token: the token must be printable ASCII with no spaces",
            ),
            (
                "token_env = \"SESSIONWATCH_TEST_TOKEN_THAT_IS_NEVER_SET\"\n",
                "admin.token_env: environment variable SESSIONWATCH_TEST_TOKEN_THAT_IS_NEVER_SET is not set",
            ),
            (
                "token_env = \"CARGO_PKG_VERSION_MAJOR\"\n",
                "admin.token_env: environment variable CARGO_PKG_VERSION_MAJOR must hold at least 16",
            ),
            (
                "token = \"0123456789abcdef\"\ntoken_env = \"CARGO_PKG_NAME\"\n",
                "admin.token_env: give token or token_env, not both",
            ),
        ] {
            let e = parse(admin).unwrap_err();
            assert!(e.contains(fragment), "{admin}: {e}");
            assert!(!e.contains("0123456789"), "the error shows the token: {e}");
        }
    }

    #[test]
    fn open_paths_name_admin_paths_the_listener_serves() {
        let c = parse("token = \"0123456789abcdef\"\nopen_paths = [\"/probe\", \"/metrics\"]\n")
            .unwrap();
        let auth = c.admin_auth.unwrap();
        assert!(auth.is_open("/probe") && auth.is_open("/metrics"));
        assert!(!auth.is_open("/status") && !auth.is_open("/"));
        let e = parse("token = \"0123456789abcdef\"\nopen_paths = [\"/probe\", \"/prob\"]\n")
            .unwrap_err();
        assert!(
            e.contains("admin.open_paths[1]: \"/prob\" is not an admin path that can be opened: one of \"/\", \"/status\", \"/metrics\", \"/probe\""),
            "{e}"
        );
    }

    #[test]
    fn an_admin_listener_others_can_reach_without_a_token_is_warned_about() {
        let warned = |admin: &str| parse(admin).unwrap().warnings();
        let w = warned("address = \"0.0.0.0:9090\"\n");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("admin.address: 0.0.0.0:9090 is reachable"),
            "{w:?}"
        );
        assert_eq!(warned("address = \"10.1.2.3:9090\"\n").len(), 1);
        assert_eq!(warned("address = \"[::]:9090\"\n").len(), 1);
        for quiet in [
            "address = \"127.0.0.1:9090\"\n",
            "address = \"[::1]:9090\"\n",
            "",
            "address = \"0.0.0.0:9090\"\ntoken = \"0123456789abcdef\"\n",
        ] {
            assert!(warned(quiet).is_empty(), "{quiet}");
        }
    }
}
