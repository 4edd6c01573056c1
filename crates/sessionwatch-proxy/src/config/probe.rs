//! `[probe]`: the deploy gate's settings (the probe module runs them): the check request, the sign-in
//! steps that mint a session, the front door and the whole run's timeout.
//!
//! ```toml
//! [probe]
//! check = "/me"
//! [[probe.sign_in]]
//! path = "/accounts/login/"
//! [[probe.sign_in]]
//! method = "POST"
//! path = "/accounts/login/"
//! form_env = { username = "PROBE_USER", password = "PROBE_PASSWORD" }
//! csrf = { from_field = "csrfmiddlewaretoken", to_field = "csrfmiddlewaretoken" }
//! ```
//!
//! Credentials are named by environment variable (`form_env`, `header_env`), read when the
//! probe runs, so they are never in the file or on a command line.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderName, Method, Uri};
use serde::Deserialize;
use sessionwatch_core::SessionProfile;

use super::fields::{duration, p, positive, required};
use super::file::FileConfig;
use super::locate::FieldPath;
use super::{Issues, TlsClient};

/// The whole run's time unless the file or `--timeout` says.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests through the front door unless the file or `--requests` says.
pub(crate) const DEFAULT_REQUESTS: u32 = 20;
/// The most redirects one step may follow, and front-door requests one run may make.
const MAX_REDIRECTS: u32 = 10;
const MAX_REQUESTS: u32 = 10_000;

/// The section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProbeFile {
    pub(crate) check: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) front_door: Option<String>,
    pub(crate) ca_file: Option<String>,
    pub(crate) requests: Option<u32>,
    #[serde(default)]
    pub(crate) sign_in: Vec<StepFile>,
}

/// One `[[probe.sign_in]]` step as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepFile {
    pub(crate) method: Option<String>,
    pub(crate) path: Option<String>,
    #[serde(default)]
    pub(crate) form: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) form_env: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) header_env: BTreeMap<String, String>,
    pub(crate) csrf: Option<CsrfFile>,
    pub(crate) follow_redirects: Option<u32>,
}

/// `csrf = { ... }` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CsrfFile {
    pub(crate) from_field: Option<String>,
    pub(crate) from_cookie: Option<String>,
    pub(crate) to_field: Option<String>,
    pub(crate) to_header: Option<String>,
}

/// Where a step's CSRF token comes from, in the previous step's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CsrfSource {
    /// The `value` of the hidden form field of this name in the answer's body.
    Field(String),
    /// The value of the cookie of this name the answer set (or the jar holds).
    Cookie(String),
}

/// A step's CSRF token: where it is read and where it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CsrfConfig {
    /// Where it is read.
    pub(crate) from: CsrfSource,
    /// The form field it is sent in.
    pub(crate) to_field: Option<String>,
    /// The header it is sent in.
    pub(crate) to_header: Option<HeaderName>,
}

/// A value given in the file, or the name of the environment variable that holds it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// As written.
    Literal(String),
    /// Read from this environment variable when the probe runs.
    Env(String),
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // A literal may be a password someone wrote in after all: never shown.
            Value::Literal(_) => f.write_str("Literal(<redacted>)"),
            Value::Env(name) => write!(f, "Env({name})"),
        }
    }
}

/// One request of the sign-in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepConfig {
    /// Its method.
    pub(crate) method: Method,
    /// Its path (and query), from the root of the backend or front door.
    pub(crate) path: String,
    /// Form fields (sent urlencoded when any is given), in file order of names.
    pub(crate) form: Vec<(String, Value)>,
    /// Extra request headers.
    pub(crate) headers: Vec<(HeaderName, Value)>,
    /// The CSRF token it carries.
    pub(crate) csrf: Option<CsrfConfig>,
    /// How many redirects it follows (0: none; the answer to the step is the redirect).
    pub(crate) follow_redirects: u32,
}

/// The validated `[probe]` section.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProbeConfig {
    /// The request that needs a session (`GET` of this path).
    pub(crate) check: String,
    /// The whole run's time.
    pub(crate) timeout: Duration,
    /// The ingress or proxy to sign in through, for the front-door run.
    pub(crate) front_door: Option<Uri>,
    /// The roots for an `https://` front door.
    pub(crate) front_door_tls: Option<TlsClient>,
    /// Requests made through the front door with the one session.
    pub(crate) requests: u32,
    /// The sign-in.
    pub(crate) sign_in: Vec<StepConfig>,
}

impl ProbeConfig {
    /// The sign-in when the file gives none: a `POST` with an empty form to the profile's first
    /// login path, which is what issues a session in most applications.
    pub(crate) fn default_sign_in(profile: &SessionProfile) -> Vec<StepConfig> {
        let path = profile
            .login_paths()
            .first()
            .cloned()
            .unwrap_or_else(|| "/login".to_owned());
        vec![StepConfig {
            method: Method::POST,
            path,
            form: Vec::new(),
            headers: Vec::new(),
            csrf: None,
            follow_redirects: 0,
        }]
    }
}

/// Why a check path cannot be used with `profile`, if it cannot: shared by the file's `check`
/// and `--check`.
pub(crate) fn check_path_problem(path: &str, profile: &SessionProfile) -> Option<String> {
    if !path.starts_with('/') {
        return Some("must start with '/'".into());
    }
    let bare = path.split('?').next().unwrap_or(path);
    if profile.is_logout_path(bare) {
        return Some(format!(
            "{path:?} is a logout path: a request there ends the session on purpose, so it can \
             never show the session kept"
        ));
    }
    if profile.is_login_path(bare) {
        return Some(format!(
            "{path:?} is a login path: a new session there is a sign-in, not a loss, so it can \
             never show the session lost; give a page that needs a session, such as \"/me\""
        ));
    }
    None
}

/// `[probe]`, checked against the session profile; `None` when the file has no such section.
pub(super) fn probe(
    issues: &mut Issues,
    raw: &FileConfig,
    profile: Option<&SessionProfile>,
) -> Option<ProbeConfig> {
    let f = raw.probe.as_ref()?;
    let path = p("probe");
    let check = required(issues, path.clone().key("check"), f.check.as_deref())
        .unwrap_or("/")
        .to_owned();
    if f.check.is_some()
        && let Some(profile) = profile
        && let Some(why) = check_path_problem(&check, profile)
    {
        issues.push(path.clone().key("check"), why);
    }
    let timeout = duration(
        issues,
        path.clone().key("timeout"),
        f.timeout.as_deref(),
        DEFAULT_TIMEOUT,
    );
    let requests = positive(
        issues,
        path.clone().key("requests"),
        f.requests,
        DEFAULT_REQUESTS,
    );
    if requests > MAX_REQUESTS {
        issues.push(
            path.clone().key("requests"),
            format!("must be at most {MAX_REQUESTS}"),
        );
    }
    let front_door = f.front_door.as_deref().and_then(|url| {
        front_door_url(url)
            .map_err(|why| issues.push(path.clone().key("front_door"), why))
            .ok()
    });
    // Without a front door in the file, ca_file serves one given with `--front-door`.
    let https = match &front_door {
        Some(u) => u.scheme_str() == Some("https"),
        None => f.ca_file.is_some(),
    };
    let front_door_tls = super::upstream_tls::sink(issues, &path, https, f.ca_file.as_deref());
    let mut sign_in = Vec::new();
    for (i, s) in f.sign_in.iter().enumerate() {
        if let Some(step) = step(issues, path.clone().key("sign_in").index(i), s, i) {
            sign_in.push(step);
        }
    }
    if f.sign_in.is_empty()
        && let Some(profile) = profile
    {
        sign_in = ProbeConfig::default_sign_in(profile);
    }
    Some(ProbeConfig {
        check,
        timeout,
        front_door,
        front_door_tls,
        requests,
        sign_in,
    })
}

/// A front door's URL: `http://` or `https://`, a host, and a path prefix at most (no query).
pub(crate) fn front_door_url(url: &str) -> Result<Uri, String> {
    let bad = || format!("{url:?} is not an http://host[:port][/prefix] or https:// URL");
    let uri: Uri = url.parse().map_err(|_| bad())?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(a)) if !a.host().is_empty() && uri.query().is_none() => {
            Ok(uri)
        }
        _ => Err(bad()),
    }
}

fn step(issues: &mut Issues, path: FieldPath, s: &StepFile, index: usize) -> Option<StepConfig> {
    let method = match s.method.as_deref().unwrap_or("GET") {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        other => {
            issues.push(
                path.clone().key("method"),
                format!("unknown value {other:?}; expected one of: GET, POST, PUT, PATCH"),
            );
            Method::GET
        }
    };
    let target = required(issues, path.clone().key("path"), s.path.as_deref())?;
    if !target.starts_with('/') || target.parse::<http::uri::PathAndQuery>().is_err() {
        issues.push(
            path.clone().key("path"),
            "must be a path that starts with '/'",
        );
    }
    let mut form = Vec::new();
    for (name, value) in &s.form {
        form.push((name.clone(), Value::Literal(value.clone())));
    }
    for (name, var) in &s.form_env {
        if s.form.contains_key(name) {
            issues.push(
                path.clone().key("form_env").key(name),
                "the field is in `form` too: give it one way",
            );
        }
        env_name(issues, path.clone().key("form_env").key(name), var);
        form.push((name.clone(), Value::Env(var.clone())));
    }
    let mut headers = Vec::new();
    let literal = s
        .headers
        .iter()
        .map(|(n, v)| (n, Value::Literal(v.clone()), "headers"));
    let from_env = s
        .header_env
        .iter()
        .map(|(n, v)| (n, Value::Env(v.clone()), "header_env"));
    for (name, value, key) in literal.chain(from_env) {
        let at = path.clone().key(key).key(name);
        if let Value::Env(var) = &value {
            env_name(issues, at.clone(), var);
        }
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => headers.push((h, value)),
            Err(_) => issues.push(at, format!("{name:?} is not a header name")),
        }
    }
    let csrf = s.csrf.as_ref().and_then(|c| {
        let at = path.clone().key("csrf");
        if index == 0 {
            issues.push(
                at.clone(),
                "the first step has no answer before it to take a token from",
            );
        }
        csrf(issues, at, c)
    });
    let follow_redirects = s.follow_redirects.unwrap_or(0);
    if follow_redirects > MAX_REDIRECTS {
        issues.push(
            path.clone().key("follow_redirects"),
            format!("must be at most {MAX_REDIRECTS}"),
        );
    }
    Some(StepConfig {
        method,
        path: target.to_owned(),
        form,
        headers,
        csrf,
        follow_redirects: follow_redirects.min(MAX_REDIRECTS),
    })
}

fn env_name(issues: &mut Issues, at: FieldPath, var: &str) {
    if var.is_empty() || var.contains('=') || var.contains('\0') {
        issues.push(at, format!("{var:?} is not an environment variable name"));
    }
}

fn csrf(issues: &mut Issues, at: FieldPath, c: &CsrfFile) -> Option<CsrfConfig> {
    let from = match (&c.from_field, &c.from_cookie) {
        (Some(field), None) => CsrfSource::Field(field.clone()),
        (None, Some(cookie)) => CsrfSource::Cookie(cookie.clone()),
        _ => {
            issues.push(
                at,
                "give exactly one of from_field (a hidden form field of the previous answer) and \
                 from_cookie (a cookie it set)",
            );
            return None;
        }
    };
    let to_header = c.to_header.as_deref().and_then(|h| {
        HeaderName::from_bytes(h.as_bytes())
            .map_err(|_| {
                issues.push(
                    at.clone().key("to_header"),
                    format!("{h:?} is not a header name"),
                )
            })
            .ok()
    });
    if c.to_field.is_none() && c.to_header.is_none() {
        issues.push(
            at,
            "give to_field (a form field) or to_header (a header), or both: where the token is sent",
        );
        return None;
    }
    Some(CsrfConfig {
        from,
        to_field: c.to_field.clone(),
        to_header,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Config;

    const BASE: &str = "[session]\npreset = \"django\"\n\
        [[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:8081\"\n";

    fn probe(section: &str) -> Result<Option<ProbeConfig>, String> {
        Config::parse(&format!("{BASE}{section}"), Path::new("farm.toml"))
            .map(|c| c.probe)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn no_section_no_probe_settings() {
        assert_eq!(probe("").unwrap(), None);
    }

    #[test]
    fn a_django_sign_in_reads_with_its_csrf_token_and_credentials_by_name() {
        let p = probe(
            "[probe]\ncheck = \"/me\"\ntimeout = \"5s\"\n\
             [[probe.sign_in]]\npath = \"/accounts/login/\"\n\
             [[probe.sign_in]]\nmethod = \"POST\"\npath = \"/accounts/login/\"\n\
             form = { next = \"/me\" }\n\
             form_env = { username = \"PROBE_USER\", password = \"PROBE_PASSWORD\" }\n\
             csrf = { from_field = \"csrfmiddlewaretoken\", to_field = \"csrfmiddlewaretoken\" }\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.check, "/me");
        assert_eq!(p.timeout, Duration::from_secs(5));
        assert_eq!(p.requests, DEFAULT_REQUESTS);
        assert_eq!(p.sign_in.len(), 2);
        let post = &p.sign_in[1];
        assert_eq!(post.method, Method::POST);
        assert_eq!(
            post.form,
            [
                ("next".to_owned(), Value::Literal("/me".into())),
                ("password".to_owned(), Value::Env("PROBE_PASSWORD".into())),
                ("username".to_owned(), Value::Env("PROBE_USER".into())),
            ]
        );
        assert_eq!(
            post.csrf,
            Some(CsrfConfig {
                from: CsrfSource::Field("csrfmiddlewaretoken".into()),
                to_field: Some("csrfmiddlewaretoken".into()),
                to_header: None,
            })
        );
        assert!(
            !format!("{post:?}").contains("/me\""),
            "literals are redacted"
        );
    }

    #[test]
    fn without_steps_the_sign_in_posts_to_the_login_path() {
        let p = probe("[probe]\ncheck = \"/me\"\n").unwrap().unwrap();
        assert_eq!(p.sign_in.len(), 1);
        assert_eq!(p.sign_in[0].method, Method::POST);
        assert_eq!(p.sign_in[0].path, "/accounts/login/");
        assert_eq!(p.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn every_problem_is_named_in_its_place() {
        let err = probe(
            "[probe]\ncheck = \"/accounts/logout/\"\nfront_door = \"ftp://x\"\nrequests = 0\n\
             [[probe.sign_in]]\nmethod = \"BREW\"\npath = \"login\"\n\
             csrf = { from_field = \"a\", from_cookie = \"b\", to_field = \"c\" }\n\
             [[probe.sign_in]]\npath = \"/x\"\nform_env = { password = \"\" }\n\
             csrf = { from_cookie = \"csrftoken\" }\n",
        )
        .unwrap_err();
        for want in [
            "probe.check: \"/accounts/logout/\" is a logout path",
            "probe.front_door: \"ftp://x\" is not",
            "probe.requests: must be at least 1",
            "probe.sign_in[0].method: unknown value \"BREW\"",
            "probe.sign_in[0].path: must be a path",
            "probe.sign_in[0].csrf: the first step has no answer",
            "probe.sign_in[0].csrf: give exactly one of from_field",
            "probe.sign_in[1].form_env.password: \"\" is not an environment variable name",
            "probe.sign_in[1].csrf: give to_field",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
        let err = probe("[probe]\ncheck = \"/accounts/login/\"\n").unwrap_err();
        assert!(err.contains("is a login path"), "{err}");
        let err = probe("[probe]\ntimeout = \"5s\"\n").unwrap_err();
        assert!(err.contains("probe.check: required, but missing"), "{err}");
        let err =
            probe("[probe]\ncheck = \"/me\"\nfront_door = \"https://ingress\"\n").unwrap_err();
        assert!(
            err.contains("probe.ca_file: an https:// URL needs ca_file"),
            "{err}"
        );
        // Without a front door in the file, ca_file is read for one given on the command line.
        let err =
            probe("[probe]\ncheck = \"/me\"\nca_file = \"/nonexistent/ca.pem\"\n").unwrap_err();
        assert!(
            err.contains("probe.ca_file: cannot read /nonexistent/ca.pem"),
            "{err}"
        );
    }
}
