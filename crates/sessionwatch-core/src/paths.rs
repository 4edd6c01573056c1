//! Path matching for login and logout paths, reading the path out of a `Location` header, and
//! the form of a path that is safe to log.

/// Whether request or redirect path `path` falls under configured `prefix`: equal to it, or below
/// it, ignoring ASCII case (ASP.NET Core routes are case-insensitive) and a trailing slash
/// (Django writes `/accounts/login/`).
pub(crate) fn path_matches(path: &str, prefix: &str) -> bool {
    let path = trim_slash(path);
    let prefix = trim_slash(prefix);
    if path.len() < prefix.len() {
        return false;
    }
    let (head, rest) = path.split_at_checked(prefix.len()).unwrap_or((path, ""));
    head.eq_ignore_ascii_case(prefix) && (rest.is_empty() || rest.starts_with('/'))
}

/// A request path safe to log or report: without `;` path parameters, where servlet containers
/// put `jsessionid` when cookies are off (a raw session id must never reach a log). The query is
/// not part of a path.
pub fn loggable_path(path: &str) -> &str {
    path.split(';').next().unwrap_or("/")
}

fn trim_slash(p: &str) -> &str {
    if p.len() > 1 {
        p.strip_suffix('/').unwrap_or(p)
    } else {
        p
    }
}

/// The path part of a `Location` value, which may be absolute (`https://host/login?x`),
/// scheme-relative (`//host/login`) or relative (`/login?ReturnUrl=...`).
pub(crate) fn location_path(location: &str) -> &str {
    let scheme_len = ["https://", "http://", "//"]
        .iter()
        .find(|p| {
            location
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p))
        })
        .map(|p| p.len());
    let rest = if let Some(after_scheme) = scheme_len.and_then(|n| location.get(n..)) {
        match after_scheme.find('/') {
            Some(i) => &after_scheme[i..],
            None => "/",
        }
    } else {
        location
    };
    // `;` starts path parameters (`/login;jsessionid=...` from servlet containers).
    let end = rest.find(['?', '#', ';']).unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_exact_below_case_and_slash() {
        assert!(path_matches("/login", "/login"));
        assert!(path_matches("/login/", "/login"));
        assert!(path_matches("/Account/Login", "/account/login"));
        assert!(path_matches("/accounts/login", "/accounts/login/"));
        assert!(path_matches("/login/step2", "/login"));
        assert!(!path_matches("/loginx", "/login"));
        assert!(!path_matches("/log", "/login"));
        assert!(!path_matches("/", "/login"));
    }

    #[test]
    fn location_forms() {
        assert_eq!(location_path("/login?return=%2Fme"), "/login");
        assert_eq!(
            location_path("https://shop.example/Account/Login?ReturnUrl=x"),
            "/Account/Login"
        );
        assert_eq!(
            location_path("//h/accounts/login/?next=/me"),
            "/accounts/login/"
        );
        assert_eq!(location_path("http://h"), "/");
        assert_eq!(location_path("/me#frag"), "/me");
        assert_eq!(location_path("HTTPS://h/Login"), "/Login");
        assert_eq!(location_path("/login;jsessionid=x?return=/"), "/login");
    }
}
