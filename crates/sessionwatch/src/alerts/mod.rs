//! `sessionwatch alerts`: read the alert log (a file, or standard input as `-`) and show it to a
//! person (one line per event), pass it on (`--json`), follow it as it grows and rotates
//! (`--follow`, like `tail -F`), sum it up (`--summary`, over `--since`), or draft the postmortem
//! of an incident (`--report`).
//!
//! A line that is not an alert line never stops the reading: shown as such on a terminal, or,
//! with `--json`, left out and counted on standard error.

mod chart;
mod line;
mod read;
mod render;
mod report;
mod summary;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;

use line::Line;
use read::{FollowOptions, Notice};

/// EX_USAGE from sysexits.h: the arguments are wrong.
const EX_USAGE: u8 = 64;

/// `sessionwatch alerts`' arguments.
#[derive(Debug, Args)]
pub(crate) struct AlertsArgs {
    /// The alert log (`alerts.log_file`), or `-` for standard input
    /// (`kubectl logs -f ... | sessionwatch alerts -`).
    #[arg(required_unless_present = "report")]
    file: Option<PathBuf>,
    /// Pass the lines through unchanged (for `jq`); lines that are not JSON are left out and
    /// counted on standard error.
    #[arg(long)]
    json: bool,
    /// Keep reading as the file grows, across rotation (renamed and recreated, or truncated),
    /// like `tail -F`, until SIGINT or SIGTERM. Starts at the file's first line.
    #[arg(long, conflicts_with_all = ["summary", "report"])]
    follow: bool,
    /// Sum the log up: resets by signal and by issuer -> server, rescues, incidents with their
    /// hints and durations.
    #[arg(long, conflicts_with = "report")]
    summary: bool,
    /// With --summary: only events from this long ago (`15m`, `2h`) or since this UTC time
    /// (`2026-01-14T09:00:00Z`).
    #[arg(long, requires = "summary")]
    since: Option<String>,
    /// Write a Markdown postmortem draft of the incident with this id (the last incident in the
    /// log when none is given).
    #[arg(long, value_name = "INCIDENT_ID", num_args = 0..=1, default_missing_value = "")]
    report: Option<String>,
    /// With --report: write `DIR/postmortem-ID.md` and its chart `DIR/postmortem-ID.svg`
    /// instead of the Markdown on standard output (which then has no chart).
    #[arg(long, value_name = "DIR", requires = "report")]
    out: Option<PathBuf>,
    /// With --follow: how often to look at the file once it has been read to its end.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration, hide = true)]
    poll: Duration,
    /// With --follow: end after this long without a new byte (for scripts and tests).
    #[arg(long, value_parser = humantime::parse_duration, hide = true)]
    exit_after_idle: Option<Duration>,
}

/// Run the command.
pub(crate) fn run(mut args: AlertsArgs) -> ExitCode {
    // `--report FILE`: the optional id took the file; it is the file, and the report is of the
    // last incident.
    if args.file.is_none() {
        args.file = args.report.replace(String::new()).map(PathBuf::from);
    }
    let Some(file) = args.file.clone().filter(|f| !f.as_os_str().is_empty()) else {
        eprintln!("sessionwatch alerts: which alert log? Give a file, or - for standard input");
        return ExitCode::from(EX_USAGE);
    };
    match dispatch(&args, &file) {
        Ok(code) => code,
        Err(Failure::Usage(text)) => {
            eprintln!("sessionwatch alerts: {text}");
            ExitCode::from(EX_USAGE)
        }
        Err(Failure::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Io(e)) => {
            eprintln!("sessionwatch alerts: {}: {e}", file.display());
            ExitCode::FAILURE
        }
        Err(Failure::Other(text)) => {
            eprintln!("sessionwatch alerts: {text}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Usage(String),
    Io(io::Error),
    Other(String),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

fn dispatch(args: &AlertsArgs, file: &Path) -> Result<ExitCode, Failure> {
    if args.follow && is_stdin(file) {
        return Err(Failure::Usage(
            "--follow needs a file; standard input is read as it arrives anyway".into(),
        ));
    }
    if args.summary {
        let since = args
            .since
            .as_deref()
            .map(|s| summary::parse_since(s, SystemTime::now()))
            .transpose()
            .map_err(Failure::Usage)?;
        let mut totals = summary::Summary::new(since);
        let bad = each_event(file, |e| totals.add(&e))?;
        let mut stdout = io::stdout().lock();
        stdout.write_all(totals.render().as_bytes())?;
        report_skipped(bad);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(id) = &args.report {
        let mut gathered = report::Gathered::default();
        let bad = each_event(file, |e| gathered.add(e))?;
        report_skipped(bad);
        let id = (!id.is_empty()).then_some(id.as_str());
        let draft = gathered
            .draft(id, args.out.is_some())
            .map_err(Failure::Other)?;
        match &args.out {
            Some(dir) => {
                let md = dir.join(format!("postmortem-{}.md", draft.file_stem));
                let svg = dir.join(format!("postmortem-{}.svg", draft.file_stem));
                std::fs::write(&md, &draft.markdown)
                    .map_err(|e| Failure::Other(format!("{}: {e}", md.display())))?;
                std::fs::write(&svg, &draft.svg)
                    .map_err(|e| Failure::Other(format!("{}: {e}", svg.display())))?;
                println!("{}\n{}", md.display(), svg.display());
            }
            None => io::stdout().lock().write_all(draft.markdown.as_bytes())?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = Output::new(args.json);
    let result = if args.follow {
        follow(args, file, &mut out)
    } else if is_stdin(file) {
        // A pipe such as `kubectl logs -f` may never end: each line is shown when it comes.
        read::all(io::stdin().lock(), &mut |l| {
            out.line(l)?;
            out.writer.flush()
        })
    } else {
        read::all(std::fs::File::open(file)?, &mut |l| out.line(l))
    };
    let flushed = out.writer.flush();
    result?;
    flushed?;
    report_skipped(out.skipped);
    Ok(ExitCode::SUCCESS)
}

fn follow(args: &AlertsArgs, file: &Path, out: &mut Output) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let opts = FollowOptions {
        poll: args.poll,
        exit_after_idle: args.exit_after_idle,
    };
    let path = file.display().to_string();
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        // Listened to before reading starts, so that a signal at any point ends the reading
        // cleanly (with standard output flushed) rather than by the default action.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        let mut notice = |n: Notice| eprintln!("sessionwatch alerts: {path} {}", n.text());
        read::follow(
            file,
            opts,
            stop,
            &mut |l| {
                out.line(l)?;
                // A follower shows each line as it comes, not when a buffer fills.
                out.writer.flush()
            },
            &mut notice,
        )
        .await
    })
}

/// Every event of the log in order; returns how many lines were not alert lines.
fn each_event(path: &Path, mut f: impl FnMut(line::Event)) -> io::Result<u64> {
    let mut bad = 0;
    let mut sink = |l: Line| {
        match l {
            Line::Event { event, .. } => f(event),
            Line::Unknown { .. } | Line::Bad(_) => bad += 1,
        }
        Ok(())
    };
    if is_stdin(path) {
        read::all(io::stdin().lock(), &mut sink)?;
    } else {
        read::all(std::fs::File::open(path)?, &mut sink)?;
    }
    Ok(bad)
}

fn report_skipped(n: u64) {
    if n > 0 {
        eprintln!("sessionwatch alerts: skipped {n} lines that are not alert lines");
    }
}

/// Where read lines are shown.
struct Output {
    writer: io::BufWriter<io::Stdout>,
    json: bool,
    /// Lines read so far, for naming a bad one.
    number: u64,
    /// Lines left out (`--json` only; a person sees them in place).
    skipped: u64,
}

impl Output {
    fn new(json: bool) -> Self {
        Self {
            writer: io::BufWriter::new(io::stdout()),
            json,
            number: 0,
            skipped: 0,
        }
    }

    fn line(&mut self, line: Line) -> io::Result<()> {
        self.number += 1;
        match (line, self.json) {
            (Line::Event { raw, .. } | Line::Unknown { raw, .. }, true) => {
                self.writer.write_all(&raw)?;
                self.writer.write_all(b"\n")
            }
            (Line::Bad(_), true) => {
                self.skipped += 1;
                Ok(())
            }
            (Line::Event { event, .. }, false) => {
                writeln!(self.writer, "{}", render::event(&event))
            }
            (Line::Unknown { why, .. } | Line::Bad(why), false) => {
                writeln!(self.writer, "{}", render::bad(self.number, &why))
            }
        }
    }
}
