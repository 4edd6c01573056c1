//! What a session looks like for one application: its cookies, login and logout paths, and how
//! it says "your session was lost".

use std::time::Duration;

use http::{HeaderName, StatusCode};

use crate::paths::{location_path, path_matches};

/// The frameworks with a built-in profile (see FRAMEWORKS.md for what each does on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    /// ASP.NET Core: `.AspNetCore.Session` and the sliding auth ticket `.AspNetCore.Cookies`.
    AspNetCore,
    /// PHP native sessions: `PHPSESSID`.
    Php,
    /// Django: `sessionid`.
    Django,
    /// Express with express-session: `connect.sid`.
    Express,
    /// Java servlet containers: `JSESSIONID`.
    Java,
}

impl Framework {
    /// Every preset, for documentation and tests.
    pub const ALL: [Framework; 5] = [
        Framework::AspNetCore,
        Framework::Php,
        Framework::Django,
        Framework::Express,
        Framework::Java,
    ];

    /// The name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Framework::AspNetCore => "aspnetcore",
            Framework::Php => "php",
            Framework::Django => "django",
            Framework::Express => "express",
            Framework::Java => "java",
        }
    }

    /// The preset named `name` in a configuration file.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// One session cookie to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSpec {
    name: String,
    rotates: bool,
}

impl CookieSpec {
    /// A session cookie whose value changes only when the session changes.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            rotates: false,
        }
    }

    /// Mark the cookie as re-issued with a new value in normal operation (a sliding auth ticket):
    /// a new value on an ordinary response is a renewal, not a reset.
    pub fn rotating(mut self, rotates: bool) -> Self {
        self.rotates = rotates;
        self
    }

    /// The cookie name, matched exactly (cookie names are case-sensitive).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the value is re-issued in normal operation.
    pub fn rotates(&self) -> bool {
        self.rotates
    }
}

/// How an application says "your session was lost" besides cookies, redirects and 401.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marker {
    /// A response header whose presence means the session was lost.
    pub header: Option<HeaderName>,
    /// Response statuses that mean the session was lost (e.g. 419 in Laravel, 440).
    pub statuses: Vec<StatusCode>,
}

/// A profile that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileError {
    /// No session cookie is configured.
    NoCookies,
    /// More cookies than a request can be classified against.
    TooManyCookies(usize),
    /// Two cookies share a name.
    DuplicateCookie(String),
    /// A path does not start with `/`.
    RelativePath(String),
    /// The idle timeout is zero.
    ZeroIdleTimeout,
}

impl std::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProfileError::NoCookies => f.write_str("no session cookie is configured"),
            ProfileError::TooManyCookies(n) => {
                write!(
                    f,
                    "{n} session cookies configured; at most {MAX_COOKIES} are supported"
                )
            }
            ProfileError::DuplicateCookie(name) => write!(f, "cookie {name:?} is listed twice"),
            ProfileError::RelativePath(p) => write!(f, "path {p:?} must start with '/'"),
            ProfileError::ZeroIdleTimeout => f.write_str("the idle timeout must be above zero"),
        }
    }
}

impl std::error::Error for ProfileError {}

/// At most this many session cookies per profile: the classifier keeps per-cookie state in fixed
/// arrays so it never allocates per request.
pub const MAX_COOKIES: usize = 8;

/// Everything the classifier needs to know about one application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionProfile {
    cookies: Vec<CookieSpec>,
    login_paths: Vec<String>,
    logout_paths: Vec<String>,
    marker: Marker,
    idle_timeout: Duration,
}

impl SessionProfile {
    /// The built-in profile of a framework.
    pub fn preset(framework: Framework) -> Self {
        let (cookies, login, logout, idle_minutes): (Vec<CookieSpec>, &str, &str, u64) =
            match framework {
                Framework::AspNetCore => (
                    vec![
                        CookieSpec::new(".AspNetCore.Session"),
                        CookieSpec::new(".AspNetCore.Cookies").rotating(true),
                    ],
                    "/Account/Login",
                    "/Account/Logout",
                    20,
                ),
                Framework::Php => (vec![CookieSpec::new("PHPSESSID")], "/login", "/logout", 24),
                Framework::Django => (
                    vec![CookieSpec::new("sessionid")],
                    "/accounts/login/",
                    "/accounts/logout/",
                    20160,
                ),
                Framework::Express => (
                    vec![CookieSpec::new("connect.sid")],
                    "/login",
                    "/logout",
                    30,
                ),
                Framework::Java => (vec![CookieSpec::new("JSESSIONID")], "/login", "/logout", 30),
            };
        Self {
            cookies,
            login_paths: vec![login.to_owned()],
            logout_paths: vec![logout.to_owned()],
            marker: Marker::default(),
            idle_timeout: Duration::from_secs(idle_minutes * 60),
        }
    }

    /// A custom profile; check it with [`SessionProfile::validate`].
    pub fn custom(cookies: Vec<CookieSpec>) -> Self {
        Self {
            cookies,
            login_paths: vec!["/login".to_owned()],
            logout_paths: vec!["/logout".to_owned()],
            marker: Marker::default(),
            idle_timeout: Duration::from_secs(30 * 60),
        }
    }

    /// Replace the login paths (where a new session id is a renewal, and where a redirect to
    /// means the user must sign in again).
    pub fn with_login_paths(mut self, paths: Vec<String>) -> Self {
        self.login_paths = paths;
        self
    }

    /// Replace the logout paths (where an ended session is on purpose).
    pub fn with_logout_paths(mut self, paths: Vec<String>) -> Self {
        self.logout_paths = paths;
        self
    }

    /// Set the application's own "session lost" marker.
    pub fn with_marker(mut self, marker: Marker) -> Self {
        self.marker = marker;
        self
    }

    /// The application's idle timeout: a session unused for longer ends normally.
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// Check the profile is usable.
    pub fn validate(&self) -> Result<(), ProfileError> {
        if self.cookies.is_empty() {
            return Err(ProfileError::NoCookies);
        }
        if self.cookies.len() > MAX_COOKIES {
            return Err(ProfileError::TooManyCookies(self.cookies.len()));
        }
        for (i, c) in self.cookies.iter().enumerate() {
            if self.cookies[..i].iter().any(|o| o.name == c.name) {
                return Err(ProfileError::DuplicateCookie(c.name.clone()));
            }
        }
        if let Some(p) = self
            .login_paths
            .iter()
            .chain(&self.logout_paths)
            .find(|p| !p.starts_with('/'))
        {
            return Err(ProfileError::RelativePath(p.clone()));
        }
        if self.idle_timeout.is_zero() {
            return Err(ProfileError::ZeroIdleTimeout);
        }
        Ok(())
    }

    /// The watched cookies, in configured order.
    pub fn cookies(&self) -> &[CookieSpec] {
        &self.cookies
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The marker.
    pub fn marker(&self) -> &Marker {
        &self.marker
    }

    /// Login paths.
    pub fn login_paths(&self) -> &[String] {
        &self.login_paths
    }

    /// Logout paths.
    pub fn logout_paths(&self) -> &[String] {
        &self.logout_paths
    }

    /// Whether a request path is a login path.
    pub fn is_login_path(&self, path: &str) -> bool {
        self.login_paths.iter().any(|p| path_matches(path, p))
    }

    /// Whether a request path is a logout path.
    pub fn is_logout_path(&self, path: &str) -> bool {
        self.logout_paths.iter().any(|p| path_matches(path, p))
    }

    /// Whether a `Location` header points at a login path.
    pub fn is_login_location(&self, location: &str) -> bool {
        self.is_login_path(location_path(location))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_named() {
        for f in Framework::ALL {
            SessionProfile::preset(f).validate().unwrap();
            assert_eq!(Framework::from_name(f.name()), Some(f));
        }
        let asp = SessionProfile::preset(Framework::AspNetCore);
        assert_eq!(asp.cookies()[0].name(), ".AspNetCore.Session");
        assert!(!asp.cookies()[0].rotates());
        assert!(asp.cookies()[1].rotates());
        assert!(asp.is_login_location("/Account/Login?ReturnUrl=%2F"));
    }

    #[test]
    fn bad_profiles_are_refused() {
        assert_eq!(
            SessionProfile::custom(vec![]).validate(),
            Err(ProfileError::NoCookies)
        );
        let dup = SessionProfile::custom(vec![CookieSpec::new("a"), CookieSpec::new("a")]);
        assert!(matches!(
            dup.validate(),
            Err(ProfileError::DuplicateCookie(_))
        ));
        let rel = SessionProfile::custom(vec![CookieSpec::new("a")])
            .with_login_paths(vec!["login".into()]);
        assert!(matches!(rel.validate(), Err(ProfileError::RelativePath(_))));
        let zero =
            SessionProfile::custom(vec![CookieSpec::new("a")]).with_idle_timeout(Duration::ZERO);
        assert_eq!(zero.validate(), Err(ProfileError::ZeroIdleTimeout));
    }
}
