//! The process's own figures, under the names every Prometheus client library gives them
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`,
//! `process_max_fds`, `process_start_time_seconds`), so the dashboards and alerts written for
//! any other exporter work on this one.
//!
//! Read from `/proc/self` when a scrape asks, so they cost the request path nothing. Written as
//! text after the registry's families rather than recorded in it: the `metrics` crate's
//! counters hold whole numbers, and CPU time is a fraction of a second per scrape interval.
//! (The `metrics-process` crate records through the process-wide recorder, which this crate
//! does not install, and brings `procfs` and three other crates for five numbers.) Linux only;
//! elsewhere the families are left out, and a figure that cannot be read is left out alone.

use std::fmt::Write;

/// Append the process families to `out`, a Prometheus text exposition.
pub(super) fn render(out: &mut String) {
    #[cfg(target_os = "linux")]
    linux::render(out);
    #[cfg(not(target_os = "linux"))]
    let _ = out;
}

/// One family: its help, type and single sample.
fn family(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// What `/proc/self/stat` says, past the command name (which may hold spaces and brackets).
#[derive(Debug, PartialEq)]
struct Stat {
    /// User and system CPU time, in clock ticks.
    cpu_ticks: u64,
    /// When the process started, in clock ticks after boot.
    start_ticks: u64,
    /// Resident set, in pages.
    rss_pages: u64,
}

fn parse_stat(text: &str) -> Option<Stat> {
    // Fields from the third on (the state), split after the command's closing bracket.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // Field n (1-based, as proc(5) numbers them) is fields[n - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_ticks: field(22)?,
        rss_pages: field(24)?,
    })
}

/// The boot time, in seconds since the epoch, from `/proc/stat`'s `btime` line.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{family, parse_boot_time, parse_stat};

    pub(super) fn render(out: &mut String) {
        // Both from the auxiliary vector the kernel gave the process: no system call.
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let page = rustix::param::page_size() as f64;
        if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| parse_stat(&t))
        {
            family(
                out,
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                stat.cpu_ticks as f64 / ticks,
            );
            family(
                out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                stat.rss_pages as f64 * page,
            );
            if let Some(boot) = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|t| parse_boot_time(&t))
            {
                family(
                    out,
                    "process_start_time_seconds",
                    "gauge",
                    "Start time of the process since unix epoch in seconds.",
                    boot as f64 + stat.start_ticks as f64 / ticks,
                );
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The listing holds the descriptor it is read through: not the process's own.
            let open = dir.count().saturating_sub(1);
            family(
                out,
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                open as f64,
            );
        }
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        // `None` is unlimited: no figure to give.
        if let Some(max) = limit.current {
            family(
                out,
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                max as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_are_counted_from_after_the_command_name() {
        // A command name with a space and a closing bracket of its own, as proc(5) warns.
        let line = "4242 (sw worker) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 75 0 0 20 0 5 0 123456 104857600 3000 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                cpu_ticks: 325,
                start_ticks: 123456,
                rss_pages: 3000,
            })
        );
        assert_eq!(parse_stat("4242 (truncated) S 1 2"), None);
        assert_eq!(parse_stat("no bracket at all"), None);
    }

    #[test]
    fn the_boot_time_is_the_btime_line() {
        let text = "cpu  1 2 3 4\nintr 5\nbtime 1764547200\nprocesses 99\n";
        assert_eq!(parse_boot_time(text), Some(1_764_547_200));
        assert_eq!(parse_boot_time("cpu 1 2 3\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_described_in_the_families_every_client_library_uses() {
        fn value(text: &str, name: &str) -> f64 {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
            line[name.len() + 1..].parse().unwrap()
        }
        let mut text = String::new();
        render(&mut text);
        assert!(value(&text, "process_resident_memory_bytes") > 1e6);
        // This test's own descriptors: at least stdin, stdout and stderr.
        assert!(value(&text, "process_open_fds") >= 3.0);
        assert!(value(&text, "process_max_fds") >= value(&text, "process_open_fds"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value(&text, "process_start_time_seconds");
        // Boot time is given in whole seconds.
        assert!(
            started <= now + 1.0 && started > now - 3_600.0,
            "{started} vs {now}"
        );
        // CPU time moves in clock ticks: spin until it does, within a bound.
        let before = value(&text, "process_cpu_seconds_total");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            for _ in 0..100_000 {
                std::hint::black_box(0u64);
            }
            text.clear();
            render(&mut text);
            if value(&text, "process_cpu_seconds_total") > before {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "CPU time did not move"
            );
        }
    }
}
