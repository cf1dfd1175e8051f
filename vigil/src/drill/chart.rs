//! The drill report's chart, as plain SVG: acknowledged writes per second
//! as bars, p99 latency as a line, and the disaster, promotion and rejoin
//! as vertical markers.

use std::fmt::Write;

use crate::drill::Report;

const W: f64 = 900.0;
const H: f64 = 360.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;

/// The chart for `r`.
pub fn svg(r: &Report) -> String {
    let n = r.seconds.len().max(1) as f64;
    let max_ok = r.seconds.iter().map(|s| s.ok).max().unwrap_or(1).max(1) as f64;
    let max_lat = r.seconds.iter().map(|s| s.p99_ms).fold(1.0f64, f64::max);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |t: f64| LEFT + t / n * pw;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{LEFT}" y="18" font-size="13">DR drill ({:?}): acknowledged writes/s (bars) and p99 latency (line)</text>
<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="black"/>
"##,
        r.scenario,
        TOP + ph,
        LEFT + pw,
        TOP + ph
    );
    for sec in &r.seconds {
        let h = sec.ok as f64 / max_ok * ph;
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#9ecae1"/>"##,
            x(sec.t as f64) + 0.5,
            TOP + ph - h,
            (pw / n - 1.0).max(0.5),
            h
        );
        if sec.failed > 0 {
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="3" fill="#e6550d"/>"##,
                x(sec.t as f64) + 0.5,
                TOP + ph + 2.0,
                (pw / n - 1.0).max(0.5)
            );
        }
    }
    let points: Vec<String> = r
        .seconds
        .iter()
        .filter(|sec| sec.ok > 0)
        .map(|sec| {
            format!(
                "{:.1},{:.1}",
                x(sec.t as f64 + 0.5),
                TOP + ph - sec.p99_ms / max_lat * ph
            )
        })
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#31a354" stroke-width="2"/>"##,
        points.join(" ")
    );
    let mut marker = |t: Option<f64>, color: &str, label: &str| {
        if let Some(t) = t {
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="{color}" stroke-dasharray="4 3"/><text x="{3:.1}" y="{4}" fill="{color}">{label}</text>"##,
                x(t),
                TOP,
                TOP + ph,
                x(t) + 3.0,
                TOP + 12.0
            );
        }
    };
    marker(Some(r.failure_at), "#de2d26", "failure");
    marker(r.promoted_at, "#756bb1", "promotion");
    marker(r.rejoined_at, "#3182bd", "rejoin");
    let _ = write!(
        s,
        r##"<text x="4" y="{0}">{1:.0}/s</text><text x="{2}" y="{0}">{3:.0} ms</text>
<text x="{LEFT}" y="{4}">0 s</text><text x="{5}" y="{4}">{6} s</text>
</svg>
"##,
        TOP + 10.0,
        max_ok,
        W - RIGHT + 4.0,
        max_lat,
        H - 12.0,
        W - RIGHT - 20.0,
        r.seconds.len()
    );
    s
}
