//! `sessionwatch demo`: the seed incident on a laptop. A farm whose session store is per node
//! (the classic misconfiguration), the proxy in front of it, simulated users signing in and
//! browsing, every reset shown as it happens, and a summary at the end.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use sessionwatch_core::{Outcome, PinPolicy};
use sessionwatch_test_support::{DriveConfig, Farm, FarmConfig, StoreMode, drive_users};
use sessionwatch_tower::{Observed, SessionEvents};

use sessionwatch_proxy::{Config, StartOptions, start};

/// What the demo runs.
#[derive(Debug, Clone)]
pub(crate) struct DemoOptions {
    /// Backends in the farm.
    pub nodes: usize,
    /// Simulated users.
    pub users: usize,
    /// Requests per user after signing in.
    pub requests_per_user: usize,
    /// Pin policy of the proxy.
    pub pin: PinPolicy,
    /// Whether the farm's store is shared (the fixed farm) instead of per node.
    pub shared_store: bool,
    /// Where the alert log goes.
    pub alert_log: PathBuf,
    /// Reset lines printed before the rest are only counted.
    pub max_printed: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            nodes: 2,
            users: 20,
            requests_per_user: 20,
            pin: PinPolicy::Off,
            shared_store: false,
            alert_log: std::env::temp_dir().join("sessionwatch-demo-alerts.jsonl"),
            max_printed: 12,
        }
    }
}

/// Known-session requests, resets, and resets per (issuer, server).
type Tally = (u64, u64, BTreeMap<(String, String), u64>);

struct Watch {
    names: Vec<String>,
    state: Mutex<Tally>,
    max_printed: usize,
}

impl SessionEvents for Watch {
    fn observed(&self, e: &Observed<'_>) {
        // The same requests as the incident's share counts, so the two agree.
        if !e.outcome.counts_in_share() {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0 += 1;
        let Outcome::Reset {
            signal,
            attribution,
        } = e.outcome
        else {
            return;
        };
        st.1 += 1;
        let name = |i: usize| {
            self.names
                .get(i)
                .cloned()
                .unwrap_or_else(|| "unknown".into())
        };
        let (issuer, server) = (name(e.record.issuer.index()), name(e.server.index()));
        *st.2.entry((issuer.clone(), server.clone())).or_default() += 1;
        if st.1 as usize <= self.max_printed {
            println!(
                "  reset  {:<14} {:<13} issued by {issuer} -> lost on {server}   session {}   {} {} -> {}",
                signal.as_str(),
                attribution.as_str(),
                e.fingerprint.short(),
                e.method,
                sessionwatch_core::loggable_path(e.uri.path()),
                e.status.as_u16()
            );
        } else if st.1 as usize == self.max_printed + 1 {
            println!("  ... more resets: counted below, every one is in the alert log");
        }
    }
}

/// Run the demo, printing as it goes and a summary at the end.
pub(crate) async fn run(opts: DemoOptions) -> std::io::Result<()> {
    let store = if opts.shared_store {
        StoreMode::Shared
    } else {
        StoreMode::PerNode
    };
    let farm = Farm::start(FarmConfig::new(opts.nodes, store)).await?;
    let names = farm.names();
    let mut toml = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[session]\ncookies = [{{ name = \"{}\" }}]\nfingerprint_key = \"demo-key-not-for-production\"\n[pin]\npolicy = \"{}\"\n[alerts]\nlog_file = {:?}\n[health]\ninterval = \"500ms\"\n",
        farm.cookie_name(),
        opts.pin.as_str(),
        opts.alert_log.display().to_string(),
    );
    for (name, addr) in names.iter().zip(farm.addrs()) {
        toml.push_str(&format!(
            "[[backends]]\nname = \"{name}\"\nurl = \"http://{addr}\"\n"
        ));
    }
    let config = Config::parse(&toml, std::path::Path::new("<demo>"))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let watch = Arc::new(Watch {
        names: names.clone(),
        state: Mutex::new((0, 0, BTreeMap::new())),
        max_printed: opts.max_printed,
    });
    let proxy = start(
        config,
        StartOptions {
            extra_events: Some(watch.clone()),
            incident_tick: Some(Duration::from_millis(200)),
            ..StartOptions::default()
        },
    )
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))?;

    println!(
        "sessionwatch demo: {} backends ({}) with a {} session store, proxy on {}",
        opts.nodes,
        names.join(", "),
        if opts.shared_store {
            "shared"
        } else {
            "per-node"
        },
        proxy.addr()
    );
    println!(
        "alert log: {}   (follow it with: tail -F {} | jq .)",
        opts.alert_log.display(),
        opts.alert_log.display()
    );
    println!(
        "{} users sign in and make {} requests each...\n",
        opts.users, opts.requests_per_user
    );
    let report = drive_users(
        proxy.addr(),
        farm.cookie_name(),
        DriveConfig::new(opts.users, opts.requests_per_user).with_concurrency(8),
    )
    .await;
    // Let the incident watch take one more look before summarising.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let incident = proxy.incident_summary();

    let (session_requests, resets, pairs) = {
        let st = watch.state.lock().unwrap_or_else(|p| p.into_inner());
        (st.0, st.1, st.2.clone())
    };
    let mut out = std::io::stdout().lock();
    writeln!(out)?;
    writeln!(out, "summary")?;
    writeln!(
        out,
        "  as the users saw it: {} requests to their account page, logged out: {} ",
        report.requests, report.logged_out
    )?;
    let share = if session_requests == 0 {
        0.0
    } else {
        100.0 * resets as f64 / session_requests as f64
    };
    writeln!(
        out,
        "  as the proxy saw it: {session_requests} requests with a known session (sign-ins and \
         sign-outs aside), resets detected: {resets} ({share:.0}%)"
    )?;
    for ((issuer, server), n) in &pairs {
        writeln!(out, "  issued by {issuer} -> lost on {server}: {n}")?;
    }
    match &incident {
        Some(s) => writeln!(out, "  {s}")?,
        None => writeln!(out, "  no incident open")?,
    }
    drop(out);
    proxy.shutdown().await;
    farm.shutdown().await;
    Ok(())
}
