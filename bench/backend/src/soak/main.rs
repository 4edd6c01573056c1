//! `sessionwatch-soak`: the two ends of the soak test (`bench/soak.sh`).
//!
//! - `sessionwatch-soak backend PORT` listens on 127.0.0.1:PORT (0 picks one), prints
//!   `listening on 127.0.0.1:N`, and answers every request with its token (see `backend.rs`).
//! - `sessionwatch-soak client --target ADDR [--duration SECS] [--connections N]
//!   [--slow-every K]` drives mixed traffic through the proxy at ADDR until the duration is up,
//!   checks every answer against its request, prints a summary, and exits 1 if any answer was
//!   not its request's own (2 if no request could be made at all).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

mod backend;
mod client;
mod summary;
mod wire;

const USAGE: &str = "usage: sessionwatch-soak backend PORT\n       \
                     sessionwatch-soak client --target ADDR [--duration SECS] [--connections N] [--slow-every K]";

fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("sessionwatch-soak: {problem}\n{USAGE}");
    ExitCode::from(64)
}

fn run_backend(port: &str) -> ExitCode {
    let Ok(port) = port.parse::<u16>() else {
        return usage("PORT must be a number");
    };
    let rt = match runtime(1) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match listener.local_addr() {
            Ok(bound) => println!("listening on {bound}"),
            Err(e) => {
                eprintln!("cannot read the bound address: {e}");
                return ExitCode::FAILURE;
            }
        }
        backend::serve(listener).await;
        ExitCode::SUCCESS
    })
}

fn run_client(args: &[String]) -> ExitCode {
    let mut target = None;
    let mut duration = Duration::from_secs(600);
    let mut connections = 64;
    let mut slow_every = 8;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else {
            return usage(&format!("{flag} needs a value"));
        };
        match flag.as_str() {
            "--target" => match value.parse::<SocketAddr>() {
                Ok(a) => target = Some(a),
                Err(_) => return usage("--target must be HOST:PORT"),
            },
            "--duration" => match value.parse::<u64>() {
                Ok(s) if s > 0 => duration = Duration::from_secs(s),
                _ => return usage("--duration must be a number of seconds above 0"),
            },
            "--connections" => match value.parse::<usize>() {
                Ok(n) if (1..=10_000).contains(&n) => connections = n,
                _ => return usage("--connections must be from 1 to 10000"),
            },
            "--slow-every" => match value.parse::<usize>() {
                Ok(n) => slow_every = n,
                _ => return usage("--slow-every must be a number (0: no slow readers)"),
            },
            other => return usage(&format!("unknown option {other}")),
        }
    }
    let Some(target) = target else {
        return usage("--target is required");
    };
    let cfg = client::Config {
        target,
        duration,
        connections,
        slow_every,
    };
    let rt = match runtime(2) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let summary = rt.block_on(client::run(cfg.clone()));
    print!("{}", summary.render(cfg.connections, started.elapsed()));
    if summary.mismatches > 0 {
        ExitCode::from(1)
    } else if summary.requests() == 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("backend") => match args.get(1) {
            Some(port) if args.len() == 2 => run_backend(port),
            _ => usage("backend takes one argument, PORT"),
        },
        Some("client") => run_client(&args[1..]),
        _ => usage("say backend or client"),
    }
}
