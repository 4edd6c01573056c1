//! One run: the farm's backends found, a session minted on each, each replayed on every
//! backend and judged by the core rules; then the front door. Whatever stops the run (no
//! answer, a refused sign-in, the time limit) ends it with what was found so far and why.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use http::Method;
use http::header::SET_COOKIE;
use sessionwatch_core::{
    BackendId, Carried, CookieId, Exchange, Outcome, ResetSignal, SessionRecord, SetCookieEvent,
    ShortFingerprint, Timestamp, classify, read_set_cookie,
};

use super::client::{Answer, Jar, Outgoing, Target, send};
use super::report::{FrontDoorResult, PairResult, ProbeReport};
use super::sign_in::{Env, sign_in};
use super::{Farm, Probe, ProbeMode, Settings};
use crate::backends::discovery::{backend_name, resolve_once};
use crate::upstream::TlsTarget;

/// Each issuer x server pair is asked this many times: the hint rules judge a pair only on
/// three requests or more, as they would judge live traffic.
pub(super) const ROUNDS: u32 = 3;

/// Servers asked at once for one issuer's session.
const CONCURRENT_PAIRS: usize = 16;

/// What a run has found so far, and what it is doing.
struct Progress {
    report: ProbeReport,
    at: String,
    /// The servers whose answers the matrix waits for now.
    waiting: Waiting,
}

/// The backends a run is waiting on, for the time limit's message.
#[derive(Default)]
struct Waiting(Mutex<Vec<String>>);

impl Waiting {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        // A list of names: a panic elsewhere cannot leave it inconsistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, name: &str) {
        self.lock().push(name.to_owned());
    }

    fn remove(&self, name: &str) {
        let mut names = self.lock();
        if let Some(i) = names.iter().position(|n| n == name) {
            names.remove(i);
        }
    }

    fn names(&self) -> String {
        self.lock().join(", ")
    }
}

pub(super) async fn run(probe: &Probe, env: Env<'_>) -> ProbeReport {
    let started = Instant::now();
    let mut progress = Progress {
        report: ProbeReport::new(&probe.settings.check, probe.timeout),
        at: "starting".into(),
        waiting: Waiting::default(),
    };
    let done = tokio::time::timeout(probe.timeout, steps(probe, env, &mut progress)).await;
    let Progress {
        mut report,
        mut at,
        waiting,
    } = progress;
    let pending = waiting.names();
    if !pending.is_empty() {
        at = format!("{at} {pending}");
    }
    match done {
        Ok(Ok(())) => {}
        Ok(Err(why)) => report.error = Some(why),
        Err(_) => {
            report.error = Some(format!(
                "the probe did not finish within {} (it was at: {at})",
                humantime::format_duration(probe.timeout)
            ))
        }
    }
    report.finish(started.elapsed());
    report
}

async fn steps(probe: &Probe, env: Env<'_>, p: &mut Progress) -> Result<(), String> {
    let s = &*probe.settings;
    if probe.mode != ProbeMode::FrontDoor {
        p.at = "finding the backends".into();
        let targets = targets(&probe.farm).await?;
        if targets.is_empty() {
            return Err("no backend to probe".into());
        }
        p.report.backends = targets.iter().map(|t| t.name.clone()).collect();
        matrix(s, &targets, env, p).await?;
    }
    if probe.mode != ProbeMode::Matrix
        && let Some(door) = &probe.front_door
    {
        front_door(s, door, env, p).await?;
    }
    Ok(())
}

/// The backends: as given, or with every entry resolved now.
async fn targets(farm: &Farm) -> Result<Vec<Target>, String> {
    let (fixed, entries) = match farm {
        Farm::Fixed(t) => return Ok(t.clone()),
        Farm::Discover { fixed, entries } => (fixed, entries),
    };
    let mut out = fixed.clone();
    for entry in entries {
        let mut addrs: Vec<SocketAddr> = resolve_once(entry)
            .await
            .map_err(|e| format!("{} could not be resolved: {e}", entry.text))?;
        addrs.sort_unstable();
        addrs.dedup();
        let tls = entry.tls.as_ref().map(|t| Arc::new(TlsTarget::new(t)));
        for addr in addrs {
            let name = backend_name(addr);
            if out.iter().any(|t| t.name == name) {
                continue;
            }
            let Ok(authority) = name.parse() else {
                continue;
            };
            out.push(Target {
                id: super::id(out.len()),
                name,
                authority,
                prefix: String::new(),
                tls: tls.clone(),
            });
        }
    }
    Ok(out)
}

async fn matrix(
    s: &Settings,
    targets: &[Target],
    env: Env<'_>,
    p: &mut Progress,
) -> Result<(), String> {
    for issuer in targets {
        let jar = sign_in(issuer, &s.sign_in, &s.profile, env, |at| p.at = at)
            .await
            .map_err(|e| format!("{}: {e}", issuer.name))?;
        let session = session_of(s, &jar);
        p.report.sessions.push((issuer.name.clone(), session));
        p.at = format!(
            "GET {} with the session {} issued, waiting on",
            s.check, issuer.name
        );
        // The servers are asked at once, a few at a time, so that a large farm fits in the
        // time limit; the answers come back in the servers' order.
        let mut answers = Vec::with_capacity(targets.len());
        for servers in targets.chunks(CONCURRENT_PAIRS) {
            let asking: Vec<_> = servers
                .iter()
                .map(|server| pair(s, issuer, server, &jar, session, &p.waiting))
                .collect();
            answers.extend(futures_util::future::join_all(asking).await);
        }
        for answer in answers {
            let pair = answer?;
            let baseline_lost = pair.issuer == pair.server && pair.lost > 0;
            let signal = pair.signal.map_or("", ResetSignal::as_str);
            let why = format!(
                "the session {0} issued is lost on {0} itself ({signal}): the sign-in did not \
                 sign in, or {1} is not a page that needs a session",
                issuer.name, s.check
            );
            p.report.pairs.push(pair);
            if baseline_lost {
                return Err(why);
            }
        }
    }
    Ok(())
}

/// One pair: the session `issuer` minted, sent [`ROUNDS`] times to `server`; `server` is in
/// `waiting` while it has not answered.
async fn pair(
    s: &Settings,
    issuer: &Target,
    server: &Target,
    jar: &Jar,
    session: Option<ShortFingerprint>,
    waiting: &Waiting,
) -> Result<PairResult, String> {
    let mut pair = PairResult {
        issuer: issuer.name.clone(),
        server: server.name.clone(),
        session,
        requests: 0,
        lost: 0,
        signal: None,
        status: 0,
    };
    waiting.add(&server.name);
    for _ in 0..ROUNDS {
        let answer = check(s, server, jar).await;
        let answer = match answer {
            Ok(a) => a,
            Err(why) => {
                waiting.remove(&server.name);
                return Err(why);
            }
        };
        pair.requests += 1;
        pair.status = answer.status.as_u16();
        if let Outcome::Reset { signal, .. } = judge(s, jar, issuer.id, server.id, &answer) {
            pair.lost += 1;
            pair.signal.get_or_insert(signal);
        }
    }
    waiting.remove(&server.name);
    Ok(pair)
}

/// `GET` of the check path on `server` with `jar`; an answer the farm could not give (none, or
/// a 5xx) stops the run.
async fn check(s: &Settings, server: &Target, jar: &Jar) -> Result<Answer, String> {
    let out = Outgoing {
        method: Method::GET,
        path: s.check.clone(),
        headers: Vec::new(),
        form: None,
    };
    let answer = send(server, &out, jar)
        .await
        .map_err(|e| format!("{} is unreachable: {e}", server.name))?;
    if answer.status.is_server_error() {
        return Err(format!(
            "{} answered {} to GET {}",
            server.name, answer.status, s.check
        ));
    }
    Ok(answer)
}

/// The session cookies of `jar`, in the profile's order, as the classifier takes them: each a
/// session `issuer` has just issued.
fn carried(s: &Settings, jar: &Jar, issuer: BackendId, now: Timestamp) -> Vec<Carried> {
    s.profile
        .cookies()
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let value = jar.get(c.name())?;
            Some(Carried {
                cookie: CookieId(u8::try_from(i).ok()?),
                fingerprint: s.fingerprinter.fingerprint(c.name(), value.as_bytes()),
                record: Some(SessionRecord::issued(issuer, now)),
            })
        })
        .collect()
}

/// The short fingerprint of the jar's first session cookie (the one reports name).
fn session_of(s: &Settings, jar: &Jar) -> Option<ShortFingerprint> {
    carried(s, jar, BackendId::UNKNOWN, Timestamp::now())
        .first()
        .map(|c| c.fingerprint.short())
}

/// The core rules' verdict on `answer` to the check request carrying `jar`'s session, issued by
/// `issuer` and served by `server`.
fn judge(
    s: &Settings,
    jar: &Jar,
    issuer: BackendId,
    server: BackendId,
    answer: &Answer,
) -> Outcome {
    let now = Timestamp::now();
    let carried = carried(s, jar, issuer, now);
    let set_cookies: Vec<SetCookieEvent> = answer
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| read_set_cookie(v, &s.profile, &s.fingerprinter, now))
        .collect();
    let path = s.check.split('?').next().unwrap_or(&s.check);
    let exchange = Exchange {
        method: &Method::GET,
        path,
        carried: &carried,
        status: answer.status,
        location: answer.location(),
        marker_header: s
            .profile
            .marker()
            .header
            .as_ref()
            .is_some_and(|h| answer.headers.contains_key(h)),
        set_cookies: &set_cookies,
        server,
        now,
    };
    classify(&exchange, &s.profile).outcome
}

async fn front_door(
    s: &Settings,
    door: &Target,
    env: Env<'_>,
    p: &mut Progress,
) -> Result<(), String> {
    let mut jar = sign_in(door, &s.sign_in, &s.profile, env, |at| p.at = at)
        .await
        .map_err(|e| format!("through the front door {}: {e}", door.name))?;
    let mut result = FrontDoorResult {
        url: door.name.clone(),
        session: session_of(s, &jar),
        requests: 0,
        lost: 0,
        signals: BTreeMap::new(),
        statuses: BTreeMap::new(),
    };
    for n in 1..=s.requests {
        p.at = format!("GET {} through {} (request {n})", s.check, door.name);
        let answer = match check(s, door, &jar).await {
            Ok(a) => a,
            Err(why) => {
                p.report.front_door = Some(result);
                return Err(why);
            }
        };
        result.requests += 1;
        *result.statuses.entry(answer.status.as_u16()).or_default() += 1;
        let outcome = judge(s, &jar, BackendId::UNKNOWN, BackendId::UNKNOWN, &answer);
        let kept: Vec<(String, String)> = session_values(s, &jar);
        // Non-session cookies (an ingress' affinity cookie) are kept as a browser keeps them;
        // the session is the one signed in, renewed only where the rules call it a renewal.
        jar.take(&answer.headers);
        if let Outcome::Reset { signal, .. } = outcome {
            result.lost += 1;
            *result.signals.entry(signal.as_str()).or_default() += 1;
            for (name, value) in &kept {
                jar.set(name, value);
            }
        }
        if session_values(s, &jar).is_empty() {
            p.report.front_door = Some(result);
            return Err(format!(
                "through the front door {}: the session cookie was deleted ({} answered {})",
                door.name, s.check, answer.status
            ));
        }
    }
    p.report.front_door = Some(result);
    Ok(())
}

fn session_values(s: &Settings, jar: &Jar) -> Vec<(String, String)> {
    s.profile
        .cookies()
        .iter()
        .filter_map(|c| Some((c.name().to_owned(), jar.get(c.name())?.to_owned())))
        .collect()
}
