//! `[drain]`: how a stopping proxy drains (see `shutdown.rs`). The defaults fit Kubernetes: its
//! endpoints take a few seconds to drop a terminating pod, and the pod's
//! `terminationGracePeriodSeconds` must exceed `delay + timeout` (the shipped manifest's 35 s
//! does; Kubernetes' default of 30 s leaves no room).

use std::time::Duration;

use serde::Deserialize;

use super::Issues;
use super::fields::{duration, p};
use super::file::FileConfig;
use crate::shutdown::DrainTimes;

const DEFAULT_DELAY: Duration = Duration::from_secs(5);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(25);

/// The section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DrainFile {
    pub(crate) delay: Option<String>,
    pub(crate) timeout: Option<String>,
}

/// The drain's times; a `delay` of zero is allowed (nothing in front of the proxy needs
/// time to stop sending), a zero `timeout` is not (it would cut every answer in flight).
pub(super) fn drain(issues: &mut Issues, raw: &FileConfig) -> DrainTimes {
    let d = raw.drain.as_ref();
    let delay_text = d.and_then(|d| d.delay.as_deref());
    let delay = match delay_text.map(humantime::parse_duration) {
        Some(Ok(zero)) if zero.is_zero() => Duration::ZERO,
        _ => duration(issues, p("drain").key("delay"), delay_text, DEFAULT_DELAY),
    };
    DrainTimes {
        delay,
        timeout: duration(
            issues,
            p("drain").key("timeout"),
            d.and_then(|d| d.timeout.as_deref()),
            DEFAULT_TIMEOUT,
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Config;

    const BACKEND: &str = "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:8081\"\n";

    fn times(section: &str) -> Result<DrainTimes, String> {
        Config::parse(&format!("{BACKEND}{section}"), Path::new("farm.toml"))
            .map(|c| c.drain)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_defaults_fit_a_kubernetes_grace_period() {
        let t = times("").unwrap();
        assert_eq!(t.delay, Duration::from_secs(5));
        assert_eq!(t.timeout, Duration::from_secs(25));
        assert!(t.delay + t.timeout < Duration::from_secs(35));
    }

    #[test]
    fn both_times_are_read_and_a_delay_may_be_zero() {
        let t = times("[drain]\ndelay = \"1s\"\ntimeout = \"500ms\"\n").unwrap();
        assert_eq!(
            t,
            DrainTimes {
                delay: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
            }
        );
        assert_eq!(
            times("[drain]\ndelay = \"0s\"\n").unwrap().delay,
            Duration::ZERO
        );
    }

    #[test]
    fn a_zero_timeout_or_a_bad_duration_is_an_error_in_its_place() {
        let err = times("[drain]\ntimeout = \"0s\"\n").unwrap_err();
        assert_eq!(err, "farm.toml:5:11: drain.timeout: must be above zero");
        let err = times("[drain]\ndelay = \"soon\"\n").unwrap_err();
        assert!(err.starts_with("farm.toml:5:9: drain.delay: "), "{err}");
        let err = times("[drain]\ngrace = \"1s\"\n").unwrap_err();
        assert!(err.contains("drain.grace: unknown field"), "{err}");
    }
}
