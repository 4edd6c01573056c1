//! Minting a session: the configured steps sent in order to one target, each with the cookies
//! the earlier answers set, a CSRF token taken from the previous answer (a hidden form field or
//! a cookie) where the step says, and credentials from the environment. A step follows
//! redirects only when it says how many; the session is whatever session cookie the jar holds at
//! the end.

use http::header::LOCATION;
use http::{HeaderValue, Method, StatusCode};
use sessionwatch_core::SessionProfile;

use super::client::{Answer, Jar, Outgoing, SendError, Target, send};
use crate::config::probe::{CsrfConfig, CsrfSource, StepConfig, Value};

/// Reads an environment variable (the process's, or a test's).
pub type Env<'a> = &'a (dyn Fn(&str) -> Option<String> + Send + Sync);

/// Why the sign-in minted no session.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignInError {
    /// A step got no answer.
    #[error("sign-in step {step} ({method} {path}): {source}")]
    Send {
        /// 1-based.
        step: usize,
        /// Its method.
        method: Method,
        /// Its path.
        path: String,
        /// Why.
        source: SendError,
    },
    /// A step was refused.
    #[error("sign-in step {step} ({method} {path}) was answered {status}")]
    Refused {
        /// 1-based.
        step: usize,
        /// Its method.
        method: Method,
        /// Its path.
        path: String,
        /// The answer's status.
        status: StatusCode,
    },
    /// A variable the step needs is not set.
    #[error("sign-in step {step}: the environment variable {var} is not set")]
    MissingEnv {
        /// 1-based.
        step: usize,
        /// Its name.
        var: String,
    },
    /// A variable's value cannot go in a header.
    #[error("sign-in step {step}: the value of {what} cannot be sent in a header")]
    BadHeader {
        /// 1-based.
        step: usize,
        /// The header, or the variable that gave it.
        what: String,
    },
    /// The previous answer carried no CSRF token where the step looks.
    #[error("sign-in step {step}: the previous answer has no CSRF token in {place}")]
    NoToken {
        /// 1-based.
        step: usize,
        /// Where it was looked for.
        place: String,
    },
    /// After every step, no session cookie.
    #[error(
        "the sign-in issued no session cookie (watched: {cookies}); the last answer was {status}"
    )]
    NoSession {
        /// The profile's cookie names.
        cookies: String,
        /// The last answer's status.
        status: StatusCode,
    },
}

/// Runs `steps` on `target`; the jar they leave, which holds a session cookie of `profile`.
pub(crate) async fn sign_in(
    target: &Target,
    steps: &[StepConfig],
    profile: &SessionProfile,
    env: Env<'_>,
    mut at: impl FnMut(String),
) -> Result<Jar, SignInError> {
    let mut jar = Jar::default();
    let mut previous: Option<Answer> = None;
    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        let out = outgoing(n, step, previous.as_ref(), &jar, env)?;
        let mut method = out.method.clone();
        let mut path = out.path.clone();
        at(format!(
            "sign-in step {n} ({method} {path}) on {}",
            target.name
        ));
        let send_error = |method: &Method, path: &str, source| SignInError::Send {
            step: n,
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let mut answer = send(target, &out, &jar)
            .await
            .map_err(|e| send_error(&method, &path, e))?;
        jar.take(&answer.headers);
        for _ in 0..step.follow_redirects {
            let Some(next) = redirect_path(&answer, &target.prefix) else {
                break;
            };
            (method, path) = (Method::GET, next);
            at(format!(
                "sign-in step {n} (redirect to {path}) on {}",
                target.name
            ));
            let hop = Outgoing {
                method: Method::GET,
                path: path.clone(),
                headers: Vec::new(),
                form: None,
            };
            answer = send(target, &hop, &jar)
                .await
                .map_err(|e| send_error(&method, &path, e))?;
            jar.take(&answer.headers);
        }
        if answer.status.is_client_error() || answer.status.is_server_error() {
            return Err(SignInError::Refused {
                step: n,
                method,
                path,
                status: answer.status,
            });
        }
        previous = Some(answer);
    }
    let has_session = profile
        .cookies()
        .iter()
        .any(|c| jar.get(c.name()).is_some());
    if !has_session {
        let names: Vec<&str> = profile.cookies().iter().map(|c| c.name()).collect();
        return Err(SignInError::NoSession {
            cookies: names.join(", "),
            status: previous.map_or(StatusCode::OK, |a| a.status),
        });
    }
    Ok(jar)
}

/// The request of step `n`: its form and headers with the variables read and the token put in.
fn outgoing(
    n: usize,
    step: &StepConfig,
    previous: Option<&Answer>,
    jar: &Jar,
    env: Env<'_>,
) -> Result<Outgoing, SignInError> {
    let value = |v: &Value| match v {
        Value::Literal(text) => Ok(text.clone()),
        Value::Env(var) => env(var).ok_or_else(|| SignInError::MissingEnv {
            step: n,
            var: var.clone(),
        }),
    };
    let mut form: Vec<(String, String)> = Vec::new();
    for (name, v) in &step.form {
        form.push((name.clone(), value(v)?));
    }
    let mut headers = Vec::new();
    for (name, v) in &step.headers {
        let text = value(v)?;
        let header = HeaderValue::from_str(&text).map_err(|_| SignInError::BadHeader {
            step: n,
            what: match v {
                Value::Env(var) => var.clone(),
                Value::Literal(_) => name.to_string(),
            },
        })?;
        headers.push((name.clone(), header));
    }
    if let Some(csrf) = &step.csrf {
        let token = token(n, csrf, previous, jar)?;
        if let Some(field) = &csrf.to_field {
            form.push((field.clone(), token.clone()));
        }
        if let Some(header) = &csrf.to_header {
            let value = HeaderValue::from_str(&token).map_err(|_| SignInError::BadHeader {
                step: n,
                what: header.to_string(),
            })?;
            headers.push((header.clone(), value));
        }
    }
    let has_form = !form.is_empty() || step.method != Method::GET;
    Ok(Outgoing {
        method: step.method.clone(),
        path: step.path.clone(),
        headers,
        form: has_form.then(|| urlencode(&form)),
    })
}

fn token(
    n: usize,
    csrf: &CsrfConfig,
    previous: Option<&Answer>,
    jar: &Jar,
) -> Result<String, SignInError> {
    let found = match &csrf.from {
        CsrfSource::Field(name) => previous.and_then(|a| hidden_field(&a.body, name)),
        CsrfSource::Cookie(name) => jar.get(name).map(str::to_owned),
    };
    found.ok_or_else(|| SignInError::NoToken {
        step: n,
        place: match &csrf.from {
            CsrfSource::Field(name) => format!("a form field named {name:?}"),
            CsrfSource::Cookie(name) => format!("a cookie named {name:?}"),
        },
    })
}

/// The path a redirect answer points to, on the same target; `None` when it is no redirect or
/// leaves for another origin (the probe speaks to one target at a time).
fn redirect_path(answer: &Answer, prefix: &str) -> Option<String> {
    if !answer.status.is_redirection() {
        return None;
    }
    let location = answer.headers.get(LOCATION)?.to_str().ok()?;
    let path = if location.starts_with('/') && !location.starts_with("//") {
        location.to_owned()
    } else {
        let uri: http::Uri = location.parse().ok()?;
        uri.path_and_query()?.as_str().to_owned()
    };
    // A front door under a prefix names its own paths with it; requests add it again.
    Some(match path.strip_prefix(prefix) {
        Some(rest) if !prefix.is_empty() && rest.starts_with('/') => rest.to_owned(),
        _ => path,
    })
}

/// `application/x-www-form-urlencoded`, as a browser writes it.
fn urlencode(fields: &[(String, String)]) -> String {
    let enc = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                    out.push(char::from(b))
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The `value` of the first `<input>` named `name` in an HTML body (as a Django form carries
/// `csrfmiddlewaretoken`). Attribute values may be quoted either way or bare, in any order.
pub(crate) fn hidden_field(body: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(start) = lower.get(from..)?.find("<input") {
        let start = from + start;
        let end = start + lower.get(start..)?.find('>')?;
        let tag = text.get(start + "<input".len()..end)?;
        let attrs = attributes(tag);
        let named = attrs
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("name") && v == name);
        if named {
            return attrs
                .into_iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("value"))
                .map(|(_, v)| html_unescape(&v));
        }
        from = end;
    }
    None
}

/// The attributes of a tag's inside: `key="v"`, `key='v'`, `key=v`, `key`.
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = tag.trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace() || c == '/')
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        rest = rest[key_end..].trim_start();
        let mut value = String::new();
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (v, tail) = match after.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let inner = &after[1..];
                    match inner.find(q) {
                        Some(close) => (&inner[..close], &inner[close + 1..]),
                        None => (inner, ""),
                    }
                }
                _ => {
                    let stop = after.find(char::is_whitespace).unwrap_or(after.len());
                    (&after[..stop], &after[stop..])
                }
            };
            value = v.to_owned();
            rest = tail.trim_start();
        } else if key.is_empty() {
            // A stray '/' or other byte: skip it.
            let mut chars = rest.chars();
            chars.next();
            rest = chars.as_str().trim_start();
            continue;
        }
        if !key.is_empty() {
            out.push((key.to_owned(), value));
        }
    }
    out
}

fn html_unescape(v: &str) -> String {
    v.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hidden_field_is_found_in_any_attribute_order_and_quoting() {
        let django = br#"<form method="post"><input type="hidden" name="csrfmiddlewaretoken" value="t0k&amp;en">
            <input type="text" name="username"></form>"#;
        assert_eq!(
            hidden_field(django, "csrfmiddlewaretoken").as_deref(),
            Some("t0k&en")
        );
        let odd = b"<INPUT value='v1' NAME=tok type=hidden/><input name=\"tok\" value=\"v2\">";
        assert_eq!(hidden_field(odd, "tok").as_deref(), Some("v1"));
        assert_eq!(
            hidden_field(b"<input name=\"other\" value=\"x\">", "tok"),
            None
        );
        assert_eq!(hidden_field(b"no form at all", "tok"), None);
        // Broken markup gives no token, never a panic.
        for broken in [
            &b"<input name=\"tok\" value=\"unclosed"[..],
            b"<input",
            b"<input name=tok value=",
            b"<input =\"x\" / name='tok' value=ok>",
            b"\xff\xfe<input name=tok value=\xe9>",
        ] {
            let _ = hidden_field(broken, "tok");
        }
        assert_eq!(
            hidden_field(b"<input =\"x\" / name='tok' value=ok>", "tok").as_deref(),
            Some("ok")
        );
    }

    #[test]
    fn no_cut_of_a_form_makes_the_search_panic() {
        // Multi-byte characters next to every delimiter the attribute reader splits on.
        let page = "<p>é</p><input é name=\"tok\" value='ü\"é' /é><INPUT name=tok value=é€>\
                    <input name='tok'value=\"x\"/>"
            .as_bytes();
        for end in 0..=page.len() {
            for start in 0..end.min(40) {
                let _ = hidden_field(&page[start..end], "tok");
            }
        }
        assert_eq!(hidden_field(page, "tok").as_deref(), Some("ü\"é"));
    }

    #[test]
    fn forms_are_encoded_as_a_browser_does() {
        let form = [
            ("user".to_owned(), "a b&c=d".to_owned()),
            ("next".to_owned(), "/me".to_owned()),
        ];
        assert_eq!(urlencode(&form), "user=a+b%26c%3Dd&next=%2Fme");
    }
}
