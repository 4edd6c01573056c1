//! `sessionwatch probe`: the deploy gate. Mints a session directly on every backend, replays it
//! on every other, and says which pairs keep it (see `sessionwatch_proxy::probe`); with a front
//! door, signs in through it and counts the requests that lose the one session.
//!
//! Exit codes: 0 every session kept, 1 a session lost (the matrix and the hint say where and
//! why), 2 the probe could not run (a backend unreachable, the sign-in refused, the time limit),
//! 64 a bad configuration or command line, as for `serve`. A table on standard output for
//! people, or `--json` for machines; why it could not run also goes to standard error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use sessionwatch_proxy::Config;
use sessionwatch_proxy::probe::{Probe, ProbeMode, ProbeOptions, ProbeOutcome};

/// EX_USAGE from sysexits.h: the configuration or the arguments are wrong.
const EX_USAGE: u8 = 64;
/// The probe ran and a session was lost.
const EXIT_LOST: u8 = 1;
/// The probe could not run to the end.
const EXIT_FAILED: u8 = 2;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The issuer x server matrix, on the backends directly.
    Matrix,
    /// Through the front door only.
    FrontDoor,
    /// Both.
    Both,
}

/// `sessionwatch probe`'s arguments. Credentials are never arguments: the sign-in steps name
/// the environment variables that hold them (`[probe.sign_in] form_env`).
#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    /// The configuration file (its backends, `[session]` and `[probe]`).
    #[arg(long, short, default_value = "sessionwatch.toml")]
    config: PathBuf,
    /// The check request: GET of a path that needs a session (`/me`); over `[probe] check`.
    #[arg(long, value_name = "PATH")]
    check: Option<String>,
    /// A backend to probe instead of the file's, `NAME=http://host:port` or
    /// `http://host:port`; repeat for each.
    #[arg(long = "backend", value_name = "NAME=URL")]
    backends: Vec<String>,
    /// Sign in through this URL (the ingress, the proxy) and count the losses of
    /// `--requests` requests with the one session; over `[probe] front_door`.
    #[arg(long, value_name = "URL")]
    front_door: Option<String>,
    /// Requests through the front door.
    #[arg(long, value_name = "N")]
    requests: Option<u32>,
    /// What to run (default: the matrix, and the front door too when one is given).
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// The whole run's time limit (`30s`, `2m`); over `[probe] timeout`, 30 s by default.
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Write the report as one JSON object (the shape is in the README).
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: ProbeArgs) -> ExitCode {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let timeout = match args.timeout.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) if d > Duration::ZERO => Some(d),
        Some(Ok(_)) => {
            eprintln!("--timeout must be above zero");
            return ExitCode::from(EX_USAGE);
        }
        Some(Err(e)) => {
            eprintln!("--timeout: {e} (write e.g. \"30s\", \"2m\")");
            return ExitCode::from(EX_USAGE);
        }
    };
    let options = ProbeOptions {
        check: args.check,
        backends: args.backends,
        front_door: args.front_door,
        requests: args.requests,
        timeout,
        mode: args.mode.map(|m| match m {
            Mode::Matrix => ProbeMode::Matrix,
            Mode::FrontDoor => ProbeMode::FrontDoor,
            Mode::Both => ProbeMode::Both,
        }),
    };
    let probe = match Probe::from_config(&config, options) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sessionwatch probe: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    let report = rt.block_on(probe.run(&env));
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    if let Some(why) = &report.error {
        eprintln!("sessionwatch probe: could not run: {why}");
    }
    match report.outcome() {
        ProbeOutcome::Kept => ExitCode::SUCCESS,
        ProbeOutcome::Lost => ExitCode::from(EXIT_LOST),
        ProbeOutcome::Failed => ExitCode::from(EXIT_FAILED),
    }
}
