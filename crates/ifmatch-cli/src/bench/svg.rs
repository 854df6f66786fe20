//! A small, dependency-free SVG line chart of a contention sweep: throughput
//! against workers for the three modes, drawn from the measured report (so a
//! chart in the docs is always the output of a real run).

use std::fmt::Write as _;

use super::contention::SweepReport;

const W: f64 = 760.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

/// The modes drawn, with their colours and dash patterns.
const SERIES: [(&str, &str, &str); 3] = [
    ("ifmatch", "#1f77b4", ""),
    ("no-jitter", "#ff7f0e", "6,3"),
    ("naive", "#d62728", "2,3"),
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound for the y axis, and its tick step.
fn nice_max(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.2);
    }
    let raw_step = max / 5.0;
    let mag = 10f64.powf(raw_step.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw_step)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

/// One point of the chart: the medians over a worker count's repetitions.
struct Point {
    workers: usize,
    serial: f64,
    /// ifmatch, no-jitter, naive (as in [`SERIES`]).
    ops: [f64; 3],
    /// Share of the naive mode's acknowledged increments that were lost, all repetitions.
    naive_lost: f64,
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn points(r: &SweepReport) -> Vec<Point> {
    let mut workers: Vec<usize> = Vec::new();
    for run in &r.runs {
        if !workers.contains(&run.workers) {
            workers.push(run.workers);
        }
    }
    workers
        .into_iter()
        .map(|w| {
            let runs: Vec<_> = r.runs.iter().filter(|x| x.workers == w).collect();
            let ops = SERIES.map(|(name, _, _)| {
                median(
                    runs.iter()
                        .filter_map(|x| x.modes.get(name).map(|m| m.ops_per_sec))
                        .collect(),
                )
            });
            let (lost, acked) = runs
                .iter()
                .filter_map(|x| x.modes.get("naive"))
                .fold((0u64, 0u64), |(l, a), m| {
                    (l + m.lost_updates, a + m.acknowledged)
                });
            Point {
                workers: w,
                serial: median(runs.iter().map(|x| x.serial_limit_ops_per_sec).collect()),
                ops,
                naive_lost: if acked == 0 {
                    0.0
                } else {
                    lost as f64 / acked as f64
                },
            }
        })
        .collect()
}

/// Throughput (acknowledged increments per second) against workers, one line
/// per mode, plus the serial limit measured in the same runs (medians over
/// `--repeat`); naive points are labelled with the share of acknowledged
/// increments they lost.
pub fn contention_chart(r: &SweepReport) -> String {
    let pts = points(r);
    let n = pts.len();
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x = |i: usize| {
        if n <= 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i as f64 / (n - 1) as f64
        }
    };
    let max = pts
        .iter()
        .flat_map(|p| p.ops.into_iter().chain([p.serial]))
        .fold(0.0f64, f64::max);
    let (ymax, step) = nice_max(max * 1.05);
    let y = |v: f64| TOP + plot_h * (1.0 - v / ymax);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">Contention on one key: {} increments per worker, {}</text>"#,
        LEFT + plot_w / 2.0,
        r.ops,
        esc(&r.store)
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="38" font-size="11" fill="#555" text-anchor="middle">median of {} run(s) per point; every point measured by ifmatch bench contention --sweep</text>"##,
        LEFT + plot_w / 2.0,
        r.repeat
    );
    // Grid and y ticks.
    let mut v = 0.0;
    while v <= ymax + step / 2.0 {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0,
            v.round() as i64
        );
        v += step;
    }
    // X ticks.
    for (i, p) in pts.iter().enumerate() {
        let xx = x(i);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#eee"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0,
            p.workers
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">workers</text>"#,
        LEFT + plot_w / 2.0,
        H - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">acknowledged increments / s</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    // Serial limit.
    let serial: Vec<String> = pts
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.serial)))
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#999" stroke-width="1.5" stroke-dasharray="1,4"/>"##,
        serial.join(" ")
    );
    // The modes.
    for (k, (_, colour, dash)) in SERIES.iter().enumerate() {
        let xy: Vec<(f64, f64)> = pts
            .iter()
            .enumerate()
            .map(|(i, p)| (x(i), y(p.ops[k])))
            .collect();
        let line: Vec<String> = xy.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2.2" stroke-dasharray="{dash}"/>"#,
            line.join(" ")
        );
        for (a, b) in &xy {
            let _ = writeln!(
                s,
                r#"<circle cx="{a:.1}" cy="{b:.1}" r="3.5" fill="{colour}"/>"#
            );
        }
    }
    // Naive losses, labelled at each point.
    for (i, p) in pts.iter().enumerate() {
        if p.naive_lost > 0.0 {
            let pct = 100.0 * p.naive_lost;
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" fill="#d62728" font-size="10" text-anchor="middle">{pct:.0}% lost</text>"##,
                x(i),
                y(p.ops[2]) - 8.0
            );
        }
    }
    // Legend.
    let lx = LEFT + plot_w + 16.0;
    let legend = [
        ("ifmatch (full jitter)", "#1f77b4", ""),
        ("no-jitter (seed 000)", "#ff7f0e", "6,3"),
        ("naive (seed 003)", "#d62728", "2,3"),
        ("serial limit", "#999", "1,4"),
    ];
    for (k, (label, colour, dash)) in legend.iter().enumerate() {
        let ly = TOP + 14.0 + 20.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2.2" stroke-dasharray="{dash}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            esc(label)
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{lx:.1}" y="{:.1}" font-size="10" fill="#555">naive counts lost</text><text x="{lx:.1}" y="{:.1}" font-size="10" fill="#555">increments as done</text>"##,
        TOP + 110.0,
        TOP + 123.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_bounds() {
        assert_eq!(nice_max(0.0), (1.0, 0.2));
        let (m, s) = nice_max(473.0);
        assert!((473.0..=600.0).contains(&m), "{m}");
        assert!(s > 0.0);
    }
}
