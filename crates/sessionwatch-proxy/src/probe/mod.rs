//! The deploy gate: does a session minted on one backend survive on every other?
//!
//! A [`Probe`] signs in directly on each backend of the farm (the configured ones, the `dns` and
//! `srv` entries resolved as discovery resolves them, or the ones given on the command line),
//! then replays each session with the check request on every backend, and judges each answer
//! with the proxy's own rules ([`sessionwatch_core::classify`]): the issuer x server matrix of
//! kept and lost pairs, with the signal that showed each loss and, when any is lost, the hint an
//! incident would give ([`sessionwatch_core::Hint::of_matrix`], the same words). In front-door
//! mode it signs in through one URL (the ingress, the proxy) and makes a number of requests with
//! the one session, counting the losses. The whole run has one time limit.
//!
//! The binary's `sessionwatch probe` and the admin listener's `POST /probe` both run it; a
//! [`ProbeReport`] says what it found, as JSON for machines or as a table for people, and its
//! [`ProbeOutcome`] is the gate's answer. No raw session value leaves this module: sessions are
//! named by their short keyed fingerprints, as everywhere else.
//!
//! ```no_run
//! # async fn gate() -> Result<(), Box<dyn std::error::Error>> {
//! use sessionwatch_proxy::Config;
//! use sessionwatch_proxy::probe::{Probe, ProbeOptions, ProbeOutcome};
//! let config = Config::load(std::path::Path::new("sessionwatch.toml"))?;
//! let probe = Probe::from_config(&config, ProbeOptions::default())?;
//! let env = |name: &str| std::env::var(name).ok();
//! let report = probe.run(&env).await;
//! println!("{}", report.to_table());
//! assert_eq!(report.outcome(), ProbeOutcome::Kept);
//! # Ok(())
//! # }
//! ```

mod client;
mod report;
mod run;
mod sign_in;

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use sessionwatch_core::{BackendId, Fingerprinter, SessionProfile};

use crate::backends::Backends;
use crate::config::probe::{
    DEFAULT_REQUESTS, DEFAULT_TIMEOUT, ProbeConfig, StepConfig, check_path_problem, front_door_url,
};
use crate::config::{BackendTls, Config, DiscoveryConfig, KeySource};
use crate::upstream::TlsTarget;
use client::Target;

pub use report::{FrontDoorResult, PairResult, ProbeOutcome, ProbeReport};
pub use sign_in::Env;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMode {
    /// The issuer x server matrix, on the backends directly.
    Matrix,
    /// Through the front door only.
    FrontDoor,
    /// Both.
    Both,
}

/// What the command line may set over the file's `[probe]`.
#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    /// The check path (`--check`).
    pub check: Option<String>,
    /// Backends to probe instead of the file's (`--backend`): `NAME=http://host:port` or
    /// `http://host:port`.
    pub backends: Vec<String>,
    /// The front door (`--front-door`).
    pub front_door: Option<String>,
    /// Requests through the front door (`--requests`).
    pub requests: Option<u32>,
    /// The whole run's time (`--timeout`).
    pub timeout: Option<Duration>,
    /// What to run; by default the matrix, and the front door too when one is given.
    pub mode: Option<ProbeMode>,
}

/// The probe cannot be set up as asked: the command line or the file is wrong (exit 64).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProbeSetupError(String);

/// Where the backends come from.
#[derive(Debug, Clone)]
enum Farm {
    /// Known already.
    Fixed(Vec<Target>),
    /// The configured ones, then every address the entries resolve to when the probe runs.
    Discover {
        fixed: Vec<Target>,
        entries: Vec<DiscoveryConfig>,
    },
}

/// What every run shares.
struct Settings {
    profile: SessionProfile,
    fingerprinter: Fingerprinter,
    check: String,
    sign_in: Vec<StepConfig>,
    requests: u32,
}

/// A probe, ready to run (any number of times).
#[derive(Clone)]
pub struct Probe {
    settings: Arc<Settings>,
    farm: Farm,
    front_door: Option<Target>,
    mode: ProbeMode,
    timeout: Duration,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("check", &self.settings.check)
            .field("mode", &self.mode)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// The probe `config` describes (its `[probe]`, its backends, its session profile and
    /// fingerprint key), with `options` over it.
    pub fn from_config(config: &Config, options: ProbeOptions) -> Result<Probe, ProbeSetupError> {
        let file = config.probe.as_ref();
        let profile = &config.session.profile;
        let check = match (&options.check, file) {
            (Some(check), _) => check.clone(),
            (None, Some(f)) => f.check.clone(),
            (None, None) => {
                return Err(ProbeSetupError(
                    "no check path: give --check PATH (a page that needs a session, such as /me) \
                     or [probe] check in the configuration"
                        .into(),
                ));
            }
        };
        if let Some(why) = check_path_problem(&check, profile) {
            return Err(ProbeSetupError(format!("--check: {why}")));
        }
        let farm = if options.backends.is_empty() {
            let fixed = config
                .backends
                .iter()
                .enumerate()
                .map(|(i, b)| Target {
                    name: b.name.clone(),
                    id: id(i),
                    authority: b.authority.clone(),
                    prefix: String::new(),
                    tls: b.tls.as_ref().map(|t| Arc::new(TlsTarget::new(t))),
                })
                .collect();
            match config.discovery.is_empty() {
                true => Farm::Fixed(fixed),
                false => Farm::Discover {
                    fixed,
                    entries: config.discovery.clone(),
                },
            }
        } else {
            Farm::Fixed(flag_backends(&options.backends)?)
        };
        let front_door = match options.front_door.as_deref() {
            Some(url) => Some(front_door(url, file)?),
            None => match file.and_then(|f| f.front_door.as_ref()) {
                Some(url) => Some(front_door(&url.to_string(), file)?),
                None => None,
            },
        };
        let mode = match options.mode {
            Some(mode) => mode,
            None if front_door.is_some() => ProbeMode::Both,
            None => ProbeMode::Matrix,
        };
        if mode != ProbeMode::Matrix && front_door.is_none() {
            return Err(ProbeSetupError(
                "the front-door run needs --front-door URL or [probe] front_door".into(),
            ));
        }
        let requests = options
            .requests
            .or(file.map(|f| f.requests))
            .unwrap_or(DEFAULT_REQUESTS);
        if requests == 0 {
            return Err(ProbeSetupError("--requests must be at least 1".into()));
        }
        Ok(Probe {
            settings: Arc::new(Settings {
                profile: profile.clone(),
                fingerprinter: fingerprinter(&config.session.key),
                check,
                sign_in: file.map_or_else(
                    || ProbeConfig::default_sign_in(profile),
                    |f| f.sign_in.clone(),
                ),
                requests,
            }),
            farm,
            front_door,
            mode,
            timeout: options
                .timeout
                .or(file.map(|f| f.timeout))
                .unwrap_or(DEFAULT_TIMEOUT),
        })
    }

    /// The probe of a running proxy's admin listener: the file's `[probe]` on the farm the proxy
    /// has now (discovery's backends included); why not, when the file has no `[probe]`.
    pub(crate) fn for_running(config: &Config, backends: &Backends) -> Result<Probe, String> {
        if config.probe.is_none() {
            return Err("the configuration has no [probe] section (set [probe] check)".into());
        }
        let mut probe =
            Probe::from_config(config, ProbeOptions::default()).map_err(|e| e.to_string())?;
        let live = backends.live();
        let targets = live
            .members
            .iter()
            .filter_map(|id| backends.get(*id))
            .enumerate()
            .map(|(i, b)| Target {
                name: b.name.to_string(),
                id: self::id(i),
                authority: b.endpoint.authority.clone(),
                prefix: String::new(),
                tls: b.endpoint.tls.clone(),
            })
            .collect();
        probe.farm = Farm::Fixed(targets);
        Ok(probe)
    }

    /// The whole run's time limit.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs the probe once, within its timeout; `env` reads the variables the sign-in names.
    pub async fn run(&self, env: Env<'_>) -> ProbeReport {
        run::run(self, env).await
    }
}

fn id(index: usize) -> BackendId {
    BackendId(u16::try_from(index).unwrap_or(u16::MAX - 1))
}

/// The probe's fingerprints, made with the proxy's key so that they match its alert lines; a
/// key of its own when none is configured.
fn fingerprinter(key: &KeySource) -> Fingerprinter {
    match key {
        KeySource::Configured(secret) => Fingerprinter::from_secret(secret),
        KeySource::Random => {
            let mut key = [0u8; 32];
            if getrandom::fill(&mut key).is_err() {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos();
                key[..16].copy_from_slice(&nanos.to_le_bytes());
            }
            Fingerprinter::from_key(key)
        }
    }
}

/// `--backend` flags: `NAME=http://host:port` or `http://host:port` (named by its address).
fn flag_backends(flags: &[String]) -> Result<Vec<Target>, ProbeSetupError> {
    let mut out: Vec<Target> = Vec::new();
    for (i, flag) in flags.iter().enumerate() {
        let (name, url) = match flag.split_once('=') {
            Some((name, url)) if !name.contains("://") => (Some(name), url),
            _ => (None, flag.as_str()),
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|_| ProbeSetupError(format!("--backend {flag:?}: not a URL")))?;
        let authority = match (uri.scheme_str(), uri.authority(), uri.path()) {
            (Some("http"), Some(a), "" | "/") if a.port_u16().is_some() => a.clone(),
            _ => {
                return Err(ProbeSetupError(format!(
                    "--backend {flag:?}: give NAME=http://host:port (https backends: list them \
                     in the file with [upstream.tls])"
                )));
            }
        };
        let name = name.map_or_else(|| authority.to_string(), str::to_owned);
        if name.is_empty() || out.iter().any(|t| t.name == name) {
            return Err(ProbeSetupError(format!(
                "--backend {flag:?}: the name must be given once and not be empty"
            )));
        }
        out.push(Target {
            name,
            id: id(i),
            authority,
            prefix: String::new(),
            tls: None,
        });
    }
    Ok(out)
}

/// The front door at `url`, with the file's `[probe] ca_file` for an `https://` one.
fn front_door(url: &str, file: Option<&ProbeConfig>) -> Result<Target, ProbeSetupError> {
    let uri = front_door_url(url).map_err(|why| ProbeSetupError(format!("--front-door: {why}")))?;
    let Some(authority) = uri.authority().cloned() else {
        return Err(ProbeSetupError(format!("--front-door {url:?}: no host")));
    };
    let tls = match uri.scheme_str() {
        Some("https") => {
            let Some(client) = file.and_then(|f| f.front_door_tls.clone()) else {
                return Err(ProbeSetupError(
                    "an https:// front door needs [probe] ca_file (the CA that signed its \
                     certificate)"
                        .into(),
                ));
            };
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let server_name = ServerName::try_from(host.to_owned()).map_err(|_| {
                ProbeSetupError(format!("{host:?} is not a name a certificate can be for"))
            })?;
            Some(Arc::new(TlsTarget::new(&BackendTls {
                client,
                server_name,
            })))
        }
        _ => None,
    };
    Ok(Target {
        name: url.trim_end_matches('/').to_owned(),
        id: BackendId::UNKNOWN,
        authority,
        prefix: uri.path().trim_end_matches('/').to_owned(),
        tls,
    })
}
