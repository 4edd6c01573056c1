//! Many simulated users at once: log in, keep asking `GET /me`, count every time the answer says
//! the session is gone.

use std::net::SocketAddr;

use tokio::task::JoinSet;

use crate::user::{MeOutcome, SharedClient, UserClient, shared_client};

/// How many users, how hard, and what they do after losing their session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriveConfig {
    /// Number of simulated users.
    pub users: usize,
    /// `GET /me` requests each user makes after logging in.
    pub requests_per_user: usize,
    /// Users in flight at once (0 is treated as 1).
    pub concurrency: usize,
    /// Log in again after a loss, as a real user would (default `true`).
    pub relogin_on_loss: bool,
}

impl DriveConfig {
    /// `users` users making `requests_per_user` requests each, all at once, logging in again
    /// after a loss.
    pub fn new(users: usize, requests_per_user: usize) -> Self {
        Self {
            users,
            requests_per_user,
            concurrency: users,
            relogin_on_loss: true,
        }
    }

    /// Sets how many users run at once.
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets whether users log in again after a loss.
    pub fn with_relogin_on_loss(mut self, relogin: bool) -> Self {
        self.relogin_on_loss = relogin;
        self
    }
}

impl Default for DriveConfig {
    fn default() -> Self {
        Self::new(10, 10)
    }
}

/// What the users saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriveReport {
    /// `GET /me` requests attempted.
    pub requests: u64,
    /// `GET /me` answers that said "not logged in", whatever the reason.
    pub logged_out: u64,
    /// Per user (by index): logged-out answers while the user held a session cookie, i.e. the
    /// session was lost rather than never obtained.
    pub losses_per_user: Vec<u64>,
    /// Every raw session value any user held, for scanning logs and metrics for leaks.
    pub cookie_values: Vec<String>,
    /// Requests (logins included) that failed: transport errors, timeouts, `5xx`, a login that
    /// set no cookie, or a user task that panicked.
    pub errors: u64,
}

impl DriveReport {
    /// Losses across all users.
    pub fn total_losses(&self) -> u64 {
        self.losses_per_user.iter().sum()
    }

    /// Users that lost their session at least once.
    pub fn users_with_losses(&self) -> usize {
        self.losses_per_user.iter().filter(|&&n| n > 0).count()
    }
}

/// Runs `cfg.users` simulated users against `target` with one shared client and reports what
/// they saw. Always ends: every user makes a fixed number of requests, each with a timeout.
pub async fn drive_users(target: SocketAddr, cookie_name: &str, cfg: DriveConfig) -> DriveReport {
    drive_users_with_client(shared_client(), target, cookie_name, cfg).await
}

/// [`drive_users`] with a caller-provided client.
pub async fn drive_users_with_client(
    client: SharedClient,
    target: SocketAddr,
    cookie_name: &str,
    cfg: DriveConfig,
) -> DriveReport {
    let mut report = DriveReport {
        losses_per_user: vec![0; cfg.users],
        ..DriveReport::default()
    };
    let mut running = JoinSet::new();
    for index in 0..cfg.users {
        if running.len() >= cfg.concurrency.max(1) {
            collect(&mut report, running.join_next().await);
        }
        let user = UserClient::with_client(client.clone(), target, cookie_name)
            .with_user(format!("user{index}"));
        running.spawn(run_user(index, user, cfg));
    }
    while let Some(joined) = running.join_next().await {
        collect(&mut report, Some(joined));
    }
    report
}

#[derive(Debug, Default)]
struct UserTally {
    index: usize,
    requests: u64,
    logged_out: u64,
    losses: u64,
    errors: u64,
    cookie_values: Vec<String>,
}

async fn run_user(index: usize, mut user: UserClient, cfg: DriveConfig) -> UserTally {
    let mut tally = UserTally {
        index,
        ..UserTally::default()
    };
    if user.login().await.is_err() {
        tally.errors += 1;
    }
    for _ in 0..cfg.requests_per_user {
        let had_session = user.cookie().is_some();
        tally.requests += 1;
        match user.me().await {
            Ok(MeOutcome::LoggedIn) => {}
            Ok(MeOutcome::LoggedOut { .. }) => {
                tally.logged_out += 1;
                if had_session {
                    tally.losses += 1;
                }
                if cfg.relogin_on_loss && user.login().await.is_err() {
                    tally.errors += 1;
                }
            }
            Err(_) => tally.errors += 1,
        }
    }
    tally.cookie_values = user.all_cookie_values().to_vec();
    tally
}

fn collect(report: &mut DriveReport, joined: Option<Result<UserTally, tokio::task::JoinError>>) {
    match joined {
        Some(Ok(tally)) => {
            report.requests += tally.requests;
            report.logged_out += tally.logged_out;
            report.errors += tally.errors;
            if let Some(slot) = report.losses_per_user.get_mut(tally.index) {
                *slot = tally.losses;
            }
            report.cookie_values.extend(tally.cookie_values);
        }
        Some(Err(_)) => report.errors += 1,
        None => {}
    }
}
