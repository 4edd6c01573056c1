//! The `sessionwatch` command: parses arguments, loads and checks configuration, runs the proxy
//! or the demo, and maps failures to exit codes (64, EX_USAGE, for a bad configuration).
//!
//! `serve` drains on SIGTERM and SIGINT (see `RunningProxy::drain`) and exits 0; SIGHUP
//! reloads the configuration file (see `RunningProxy::reload`), as does a change of its
//! content, which `serve` looks for every [`WATCH_CONFIG_EVERY`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use sessionwatch_core::PinPolicy;
use sessionwatch_proxy::{Config, RunningProxy, StartOptions};
use tokio::signal::unix::{Signal, SignalKind, signal};

use demo::DemoOptions;

mod alerts;
mod demo;
mod probe;

/// EX_USAGE from sysexits.h: the configuration is wrong.
const EX_USAGE: u8 = 64;

/// `--version`: the release and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SESSIONWATCH_COMMIT"),
    ")"
);

/// How often `serve` reads its configuration file for a change. Polling, not inotify: a
/// Kubernetes ConfigMap is updated by swapping the `..data` symlink the file is reached
/// through, which a watch on the file itself never sees; reading the path again does.
const WATCH_CONFIG_EVERY: Duration = Duration::from_secs(2);

#[derive(Parser)]
#[command(
    name = "sessionwatch",
    version = VERSION,
    about = "Reverse proxy that detects lost sessions in a web farm"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// The configuration file.
        #[arg(long, short, default_value = "sessionwatch.toml")]
        config: PathBuf,
        /// How log lines on stderr are written (their level and targets: `RUST_LOG`).
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Check a configuration file and explain every problem.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
    /// Start a broken two-node farm, put the proxy in front, and show what it sees.
    Demo {
        /// Backends in the farm.
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Simulated users.
        #[arg(long, default_value_t = 20)]
        users: usize,
        /// Requests per user.
        #[arg(long, default_value_t = 20)]
        requests: usize,
        /// Pin policy, as `[pin] policy` in the configuration.
        #[arg(long, default_value = PinPolicy::default().as_str(), help = pin_help())]
        pin: String,
        /// Use a shared session store (the fixed farm).
        #[arg(long)]
        shared_store: bool,
    },
    /// Read the alert log: show, follow, sum up, or draft an incident's postmortem.
    Alerts(alerts::AlertsArgs),
    /// The deploy gate: check that a session minted on each backend is kept by every other.
    ///
    /// Exit 0 when every session is kept, 1 when one is lost (the matrix and the hint say where
    /// and why), 2 when the probe could not run, 64 on a bad configuration.
    Probe(probe::ProbeArgs),
}

/// The `--pin` help, with the accepted names from the one table of them.
fn pin_help() -> String {
    let names: Vec<&str> = PinPolicy::ALL.iter().map(|p| p.as_str()).collect();
    format!("Pin policy: {}", names.join(", "))
}

/// The shape of the log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// `timestamp LEVEL target: message key=value`, for people.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message` and the event's
    /// fields), for log collectors and `jq`.
    Json,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            // Colour codes only for a person at a terminal: in a file or a container log they
            // are noise.
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder.json().flatten_event(true).with_ansi(false).init(),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// The runtime of `serve`'s own chores (admin, health checks, incidents, sinks): client traffic
/// runs on the proxy's worker threads, so one thread is plenty here.
fn chores_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The signals `serve` answers, listened to before the proxy starts so that none arriving
/// after it listens meets the default action (SIGHUP's kills).
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Serve until SIGTERM or SIGINT, then drain; reload on SIGHUP.
    async fn serve_until_stopped(mut self, proxy: RunningProxy) {
        let name = loop {
            tokio::select! {
                _ = self.terminate.recv() => break "SIGTERM",
                _ = self.interrupt.recv() => break "SIGINT",
                _ = self.hangup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    // The outcome is logged and counted by the reload itself.
                    let _ = proxy.reload().await;
                }
            }
        };
        tracing::info!(signal = name, "shutting down");
        proxy.drain().await;
        tracing::info!("drained; exiting");
    }
}

/// The command line, with `help --help` (or `-h`) read as `--help`: clap's own `help`
/// subcommand takes only subcommand names, and a user asking for help must not get an error.
fn args() -> Vec<std::ffi::OsString> {
    let mut args: Vec<_> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "help")
        && args.iter().skip(2).any(|a| a == "--help" || a == "-h")
    {
        args.truncate(1);
        args.push("--help".into());
    }
    args
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(args());
    match cli.command {
        Command::Alerts(args) => alerts::run(args),
        Command::Probe(args) => probe::run(args),
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                // Valid, so the exit status stays 0; the warnings go where errors go.
                for w in config.warnings() {
                    eprintln!("{}: warning: {w}", file.display());
                }
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EX_USAGE)
            }
        },
        Command::Serve { config, log_format } => {
            let file = config;
            // Validate everything before binding a port.
            let config = match Config::load(&file) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            init_tracing(log_format);
            let rt = match chores_runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(async {
                let signals = match Signals::install() {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("sessionwatch: cannot listen for signals: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                let options = StartOptions {
                    config_file: Some(file),
                    watch_config: Some(WATCH_CONFIG_EVERY),
                    commit: Some(env!("SESSIONWATCH_COMMIT").to_owned()),
                    ..StartOptions::default()
                };
                let proxy = match sessionwatch_proxy::start(config, options).await {
                    Ok(p) => p,
                    Err(e) if e.is_config() => {
                        eprintln!("sessionwatch: {e}");
                        return ExitCode::from(EX_USAGE);
                    }
                    Err(e) => {
                        eprintln!("sessionwatch: {e}: {}", e.source_text());
                        return ExitCode::FAILURE;
                    }
                };
                signals.serve_until_stopped(proxy).await;
                ExitCode::SUCCESS
            })
        }
        Command::Demo {
            nodes,
            users,
            requests,
            pin,
            shared_store,
        } => {
            let pin = match pin.parse::<PinPolicy>() {
                Ok(pin) => pin,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            if !(2..=16).contains(&nodes) || users == 0 || requests == 0 {
                eprintln!("--nodes must be 2 to 16, --users and --requests at least 1");
                return ExitCode::from(EX_USAGE);
            }
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let opts = DemoOptions {
                nodes,
                users,
                requests_per_user: requests,
                pin,
                shared_store,
                ..DemoOptions::default()
            };
            match rt.block_on(demo::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("demo failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
