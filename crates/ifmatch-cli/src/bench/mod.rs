//! `ifmatch bench`: measure ifmatch side by side with the seeds' own designs,
//! on any store, in one run.
//!
//! Each scenario runs our implementation **and** the seed's design against the
//! same store in the same process, so the figures that matter are ratios that
//! survive a noisy, shared machine. `--json` prints exactly one JSON object on
//! standard output; a progress bar goes to standard error.

pub mod contention;

use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

/// `ifmatch bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Print exactly one JSON object on standard output instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seed of the random generators (jitter), for repeatable schedules.
    #[arg(long, global = true, default_value_t = 1)]
    pub seed: u64,
    /// The scenario.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The benchmark scenarios.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// W workers x N increments of one key: the update loop against the seed's
    /// HEAD-then-PUT (seed 003) and plain exponential backoff (seed 000).
    Contention(contention::ContentionArgs),
}

/// A progress bar on standard error (hidden when it is not a terminal or with `--json`).
pub(crate) fn progress(total: u64, json: bool, what: &str) -> ProgressBar {
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    if let Ok(style) = ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// The median of some durations (zero for none).
pub(crate) fn median(mut xs: Vec<Duration>) -> Duration {
    if xs.is_empty() {
        return Duration::ZERO;
    }
    xs.sort_unstable();
    xs[xs.len() / 2]
}

/// Milliseconds as a float with microsecond precision.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// Rounds to two decimals for readable JSON.
pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
