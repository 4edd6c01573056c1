//! The postmortem's chart: the share of requests with a session that were lost, over the
//! incident, as a small self-contained SVG (no scripts, no external assets).

use std::fmt::Write as _;
use std::time::SystemTime;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 36.0;

/// One point: when, and the share (0..1) then.
pub(crate) type Point = (SystemTime, f64);

/// The SVG for `points` (in time order), titled `title`.
pub(crate) fn share_over_time(title: &str, points: &[Point]) -> String {
    let start = points.first().map_or(SystemTime::UNIX_EPOCH, |p| p.0);
    let end = points.last().map_or(start, |p| p.0);
    let span = end
        .duration_since(start)
        .map_or(0.0, |d| d.as_secs_f64())
        .max(1.0);
    let peak = points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
    // The axis goes to the next 10% above the peak, so the line never touches the top.
    let top = ((peak * 10.0).floor() + 1.0).min(10.0) / 10.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: SystemTime| {
        LEFT + t.duration_since(start).map_or(0.0, |d| d.as_secs_f64()) / span * plot_w
    };
    let y = |share: f64| TOP + plot_h - share.clamp(0.0, 1.0) / top * plot_h;

    let mut svg = String::with_capacity(2048);
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, "<title>{}</title>", escape(title));
    let _ = writeln!(
        svg,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="16" font-size="12">{}</text>"#,
        escape(title)
    );
    for step in 0..=4 {
        let share = top * f64::from(step) / 4.0;
        let gy = y(share);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{:.0}%</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            gy + 4.0,
            share * 100.0
        );
    }
    let base = TOP + plot_h;
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="{:.1}">{}</text><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
        base + 20.0,
        clock(start),
        WIDTH - RIGHT,
        base + 20.0,
        clock(end)
    );
    let path: Vec<String> = points
        .iter()
        .map(|(t, s)| format!("{:.1},{:.1}", x(*t), y(*s)))
        .collect();
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#c0392b" stroke-width="2" points="{}"/>"##,
        path.join(" ")
    );
    for (t, s) in points {
        let _ = writeln!(
            svg,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#c0392b"><title>{} {:.1}%</title></circle>"##,
            x(*t),
            y(*s),
            clock(*t),
            s * 100.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// `09:21:07` (UTC).
fn clock(t: SystemTime) -> String {
    let full = humantime::format_rfc3339_seconds(t).to_string();
    full.get(11..19).unwrap_or(&full).to_owned()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
