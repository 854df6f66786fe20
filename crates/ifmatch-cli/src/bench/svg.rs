//! Small, dependency-free SVG line charts drawn from measured reports (so a
//! chart in the docs is always the output of a real run): a contention sweep
//! (throughput against workers for the three modes) and a tenant-database
//! size sweep (warm-write latency against database size, ifmatch beside the
//! seed's design).

use std::fmt::Write as _;

use super::contention::SweepReport;
use super::tenantdb::TenantDbSweep;

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

/// One line of a [`LineChart`].
struct Line {
    label: String,
    colour: &'static str,
    dash: &'static str,
    width: f64,
    dots: bool,
    values: Vec<f64>,
    /// A label above some points (index, text).
    notes: Vec<(usize, String)>,
}

/// A line chart over evenly spaced x ticks.
struct LineChart {
    title: String,
    subtitle: String,
    x_label: String,
    y_label: String,
    x_ticks: Vec<String>,
    lines: Vec<Line>,
    /// Small print under the legend.
    legend_notes: Vec<String>,
}

impl LineChart {
    fn draw(&self) -> String {
        let n = self.x_ticks.len();
        let plot_w = W - LEFT - RIGHT;
        let plot_h = H - TOP - BOTTOM;
        let x = |i: usize| {
            if n <= 1 {
                LEFT + plot_w / 2.0
            } else {
                LEFT + plot_w * i as f64 / (n - 1) as f64
            }
        };
        let max = self
            .lines
            .iter()
            .flat_map(|l| l.values.iter().copied())
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
            r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            esc(&self.title)
        );
        let _ = writeln!(
            s,
            r##"<text x="{}" y="38" font-size="11" fill="#555" text-anchor="middle">{}</text>"##,
            LEFT + plot_w / 2.0,
            esc(&self.subtitle)
        );
        // Grid and y ticks.
        let decimals = if step < 1.0 { 1 } else { 0 };
        let mut v = 0.0;
        while v <= ymax + step / 2.0 {
            let yy = y(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.decimals$}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                yy + 4.0,
            );
            v += step;
        }
        // X ticks.
        for (i, t) in self.x_ticks.iter().enumerate() {
            let xx = x(i);
            let _ = writeln!(
                s,
                r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#eee"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + plot_h,
                TOP + plot_h + 18.0,
                esc(t)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            H - 18.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
            TOP + plot_h / 2.0,
            TOP + plot_h / 2.0,
            esc(&self.y_label)
        );
        for l in &self.lines {
            let xy: Vec<(f64, f64)> = l
                .values
                .iter()
                .enumerate()
                .map(|(i, v)| (x(i), y(*v)))
                .collect();
            let pts: Vec<String> = xy.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{}" stroke-dasharray="{}"/>"#,
                pts.join(" "),
                l.colour,
                l.width,
                l.dash
            );
            if l.dots {
                for (a, b) in &xy {
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{a:.1}" cy="{b:.1}" r="3.5" fill="{}"/>"#,
                        l.colour
                    );
                }
            }
            for (i, text) in &l.notes {
                if let Some((a, b)) = xy.get(*i) {
                    let _ = writeln!(
                        s,
                        r#"<text x="{a:.1}" y="{:.1}" fill="{}" font-size="10" text-anchor="middle">{}</text>"#,
                        b - 8.0,
                        l.colour,
                        esc(text)
                    );
                }
            }
        }
        // Legend.
        let lx = LEFT + plot_w + 16.0;
        for (k, l) in self.lines.iter().enumerate() {
            let ly = TOP + 14.0 + 20.0 * k as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2.2" stroke-dasharray="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                lx + 24.0,
                l.colour,
                l.dash,
                lx + 30.0,
                ly + 4.0,
                esc(&l.label)
            );
        }
        for (k, note) in self.legend_notes.iter().enumerate() {
            let _ = writeln!(
                s,
                r##"<text x="{lx:.1}" y="{:.1}" font-size="10" fill="#555">{}</text>"##,
                TOP + 30.0 + 20.0 * self.lines.len() as f64 + 13.0 * k as f64,
                esc(note)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

/// Throughput (acknowledged increments per second) against workers, one line
/// per mode, plus the serial limit measured in the same runs (medians over
/// `--repeat`); naive points are labelled with the share of acknowledged
/// increments they lost.
pub fn contention_chart(r: &SweepReport) -> String {
    let pts = points(r);
    let legend = [
        "ifmatch (full jitter)",
        "no-jitter (seed 000)",
        "naive (seed 003)",
    ];
    let mut lines: Vec<Line> = SERIES
        .iter()
        .enumerate()
        .map(|(k, (_, colour, dash))| Line {
            label: legend[k].into(),
            colour,
            dash,
            width: 2.2,
            dots: true,
            values: pts.iter().map(|p| p.ops[k]).collect(),
            notes: Vec::new(),
        })
        .collect();
    lines[2].notes = pts
        .iter()
        .enumerate()
        .filter(|(_, p)| p.naive_lost > 0.0)
        .map(|(i, p)| (i, format!("{:.0}% lost", 100.0 * p.naive_lost)))
        .collect();
    lines.push(Line {
        label: "serial limit".into(),
        colour: "#999",
        dash: "1,4",
        width: 1.5,
        dots: false,
        values: pts.iter().map(|p| p.serial).collect(),
        notes: Vec::new(),
    });
    LineChart {
        title: format!(
            "Contention on one key: {} increments per worker, {}",
            r.ops,
            store_kind(&r.store)
        ),
        subtitle: format!(
            "median of {} run(s) per point; every point measured by ifmatch bench contention --sweep",
            r.repeat
        ),
        x_label: "workers".into(),
        y_label: "acknowledged increments / s".into(),
        x_ticks: pts.iter().map(|p| p.workers.to_string()).collect(),
        lines,
        legend_notes: vec![
            "naive counts lost".into(),
            "increments as done".into(),
        ],
    }
    .draw()
}

/// Warm-write latency against database size: ifmatch beside the seed's
/// design (seed 003), from one `ifmatch bench tenantdb --sizes` run; each
/// ifmatch point is labelled with the speedup.
pub fn tenantdb_chart(s: &TenantDbSweep) -> String {
    let size = |mb: u64| {
        if mb == 0 {
            "10 notes".to_string()
        } else {
            format!("{mb} MiB")
        }
    };
    let requests = s.runs.first().map(|r| r.requests).unwrap_or(0);
    LineChart {
        title: format!(
            "Tenant databases: warm write latency, {}",
            store_kind(&s.store)
        ),
        subtitle: format!(
            "median of {requests} warm writes per point; measured by ifmatch bench tenantdb --sizes"
        ),
        x_label: "database size".into(),
        y_label: "warm write, ms (median)".into(),
        x_ticks: s.runs.iter().map(|r| size(r.db_mb)).collect(),
        lines: vec![
            Line {
                label: "ifmatch".into(),
                colour: "#1f77b4",
                dash: "",
                width: 2.2,
                dots: true,
                values: s.runs.iter().map(|r| r.warm_write_ms).collect(),
                notes: s
                    .runs
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (i, format!("{:.1}x faster", r.warm_write_speedup)))
                    .collect(),
            },
            Line {
                label: "seed 003's design".into(),
                colour: "#d62728",
                dash: "2,3",
                width: 2.2,
                dots: true,
                values: s.runs.iter().map(|r| r.naive_warm_write_ms).collect(),
                notes: Vec::new(),
            },
        ],
        legend_notes: vec![
            "seed: HEAD, then PUT of".into(),
            "the whole file".into(),
            "ifmatch: one conditional".into(),
            "PUT of the changed pages".into(),
        ],
    }
    .draw()
}

/// The store's kind for a chart title (`file://`, `s3://`, ...): a chart is
/// committed and shared, and the rest of a URL names the measuring machine's
/// directories, buckets and endpoints.
fn store_kind(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, _)) => format!("{scheme}://"),
        None => "a store".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_name_the_store_kind_not_its_location() {
        assert_eq!(store_kind("file:///tmp/bench-1"), "file://");
        assert_eq!(
            store_kind("s3://bucket/p?endpoint=http://127.0.0.1:4566"),
            "s3://"
        );
        assert_eq!(store_kind("odd"), "a store");
    }

    #[test]
    fn nice_bounds() {
        assert_eq!(nice_max(0.0), (1.0, 0.2));
        let (m, s) = nice_max(473.0);
        assert!((473.0..=600.0).contains(&m), "{m}");
        assert!(s > 0.0);
    }
}
