//! `ifmatch gc`: remove expired leases, idempotency records and sessions
//! ([`ifmatch::gc`]), on stores without TTL (`file://`, `memory://`,
//! `s3://`; DynamoDB removes them itself), once or from cron.

use std::time::Duration;

use clap::Args;
use ifmatch::DynStore;
use ifmatch::gc::{Collector, SweepReport};

use crate::commands::{spinner, write_stdout};
use crate::exit::Failure;

/// Arguments of `gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Collect under this prefix (repeatable); default: leases/, idempotency/ and sessions/.
    #[arg(long = "prefix", value_name = "PREFIX")]
    pub prefixes: Vec<String>,

    /// Examine at most N records, then stop (default: one whole pass).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// Remove a record only this long after its expiry (allowance for clock skew).
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub grace: Duration,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `gc`.
pub async fn run(store: &DynStore, a: &GcArgs) -> Result<(), Failure> {
    let prefixes = if a.prefixes.is_empty() {
        vec![
            ifmatch::lease::DEFAULT_PREFIX.to_string(),
            ifmatch::idempotency::DEFAULT_PREFIX.to_string(),
            ifmatch_server::sessions::KEY_PREFIX.to_string(),
        ]
    } else {
        a.prefixes.clone()
    };
    let collector = Collector::new(store.clone())
        .with_prefixes(prefixes.clone())
        .with_grace(a.grace);
    let bar = spinner(&format!(
        "collecting expired records under {}",
        prefixes.join(", ")
    ));
    let report = match a.limit {
        Some(n) => collector.sweep(n as usize).await,
        None => collector.collect_all().await,
    };
    bar.finish_and_clear();
    let report = report?;
    let text = if a.json {
        format!("{}\n", json(&report))
    } else {
        format!(
            "examined {}, deleted {}, live {}, renewed meanwhile {}, gone {}, errors {}\n",
            report.examined,
            report.deleted,
            report.live,
            report.renewed,
            report.gone,
            report.errors
        )
    };
    write_stdout(text.as_bytes())?;
    if report.errors > 0 {
        return Err(Failure::Reported(crate::exit::ERROR));
    }
    Ok(())
}

fn json(r: &SweepReport) -> serde_json::Value {
    serde_json::json!({
        "examined": r.examined,
        "deleted": r.deleted,
        "live": r.live,
        "renewed": r.renewed,
        "gone": r.gone,
        "errors": r.errors,
        "complete": r.passes > 0,
    })
}
