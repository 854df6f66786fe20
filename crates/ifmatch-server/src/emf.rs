//! CloudWatch Embedded Metric Format (EMF) for the `metrics` facade: the
//! Lambda function's metrics, as AWS Lambda Powertools emits them.
//!
//! On Lambda there is no one to scrape `/metrics`, but everything a function
//! writes to stdout reaches CloudWatch Logs, which turns JSON lines in the
//! [EMF specification]'s shape into CloudWatch metrics. [`EmfRecorder`] is a
//! `metrics` recorder that keeps the same counters, gauges and histograms the
//! Prometheus recorder keeps in `ifmatch serve` (the library's
//! `ifmatch_update_*`, `ifmatch_retries_total` and `ifmatch_tenantdb_*`, the
//! server's `ifmatch_http_*`), and [`EmfHandle::flush`] writes what was
//! recorded since the last flush as EMF documents, one JSON object per line:
//!
//! ```json
//! {"_aws":{"Timestamp":1767225600000,"CloudWatchMetrics":[{"Namespace":"ifmatch",
//!   "Dimensions":[["FunctionName","reason"]],
//!   "Metrics":[{"Name":"ifmatch_update_failures_total","Unit":"Count"}]}]},
//!  "FunctionName":"ifmatch","reason":"conflict","ifmatch_update_failures_total":1}
//! ```
//!
//! (on one line). The Lambda adapter flushes after every invocation.
//!
//! # What it guarantees
//!
//! - Counters are reported as the increase since the previous flush (a
//!   flush resets them), so CloudWatch's `Sum` over a period is the count in
//!   that period; counters that did not move are left out. Gauges report
//!   their current value. Histograms report every value recorded since the
//!   previous flush, as an array of at most 100 values per document (more
//!   values continue in further documents).
//! - Every document follows the specification: `_aws.Timestamp` in
//!   milliseconds, one metric directive with one dimension set of at most 30
//!   keys, at most 100 metric definitions, each with its `Name` and a valid
//!   CloudWatch `Unit` (counters `Count`, other metrics as described through
//!   `metrics::describe_*`, else `None`), and every dimension and metric
//!   named in the directive present as a root member.
//! - Each distinct combination of dimension values is a billed custom metric
//!   in CloudWatch, so only the labels listed in
//!   [`EmfConfig::label_dimensions`] become dimensions (default: `reason`
//!   and `kind`, a handful of values each); other labels (the HTTP metrics'
//!   `method`, `route` and `status`) are summed away.
//!
//! [EMF specification]: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SetRecorderError, SharedString,
    Unit,
};
use metrics_util::registry::{AtomicStorage, Registry};
use serde_json::{Map, Value, json};

/// The namespace of ifmatch's metrics in CloudWatch, unless configured otherwise.
pub const DEFAULT_NAMESPACE: &str = "ifmatch";

/// The labels that become CloudWatch dimensions by default.
pub const DEFAULT_LABEL_DIMENSIONS: &[&str] = &["reason", "kind"];

/// The most metric definitions, and the most values of one metric, in one document.
pub const MAX_PER_DOCUMENT: usize = 100;

/// The most dimension keys in one dimension set.
pub const MAX_DIMENSIONS: usize = 30;

/// Where the metrics go and which dimensions they carry.
#[derive(Debug, Clone)]
pub struct EmfConfig {
    /// The CloudWatch namespace.
    pub namespace: String,
    /// Dimensions on every metric, e.g. `FunctionName`.
    pub dimensions: Vec<(String, String)>,
    /// The metric labels that become dimensions; other labels are summed away.
    pub label_dimensions: Vec<String>,
}

impl Default for EmfConfig {
    fn default() -> Self {
        EmfConfig {
            namespace: DEFAULT_NAMESPACE.to_string(),
            dimensions: Vec::new(),
            label_dimensions: DEFAULT_LABEL_DIMENSIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

impl EmfConfig {
    /// Adds a dimension carried by every metric.
    pub fn with_dimension(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.dimensions.push((name.into(), value.into()));
        self
    }
}

#[derive(Debug)]
struct Shared {
    registry: Registry<Key, AtomicStorage>,
    units: Mutex<HashMap<String, Unit>>,
    config: EmfConfig,
}

/// The `metrics` recorder (see the module docs). Install it with
/// [`EmfRecorder::install`], or use it locally with `metrics::with_local_recorder`.
#[derive(Debug, Clone)]
pub struct EmfRecorder {
    shared: Arc<Shared>,
}

/// Flushes what an [`EmfRecorder`] recorded.
#[derive(Debug, Clone)]
pub struct EmfHandle {
    shared: Arc<Shared>,
}

impl EmfRecorder {
    /// A recorder with `config`.
    pub fn new(config: EmfConfig) -> Self {
        EmfRecorder {
            shared: Arc::new(Shared {
                registry: Registry::atomic(),
                units: Mutex::new(HashMap::new()),
                config,
            }),
        }
    }

    /// The handle that flushes this recorder.
    pub fn handle(&self) -> EmfHandle {
        EmfHandle {
            shared: self.shared.clone(),
        }
    }

    /// Installs the recorder as the process's `metrics` recorder, describes
    /// the server's metrics with their units, and returns the flush handle.
    /// Fails if a recorder is installed already.
    pub fn install(config: EmfConfig) -> Result<EmfHandle, SetRecorderError<EmfRecorder>> {
        let recorder = EmfRecorder::new(config);
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder)?;
        crate::telemetry::describe();
        Ok(handle)
    }

    fn set_unit(&self, key: KeyName, unit: Option<Unit>) {
        if let Some(unit) = unit
            && let Ok(mut units) = self.shared.units.lock()
        {
            units.insert(key.as_str().to_string(), unit);
        }
    }
}

impl Recorder for EmfRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.set_unit(key, unit);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.set_unit(key, unit);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.set_unit(key, unit);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let c = self
            .shared
            .registry
            .get_or_create_counter(key, |c| c.clone());
        Counter::from_arc(c)
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let g = self.shared.registry.get_or_create_gauge(key, |g| g.clone());
        Gauge::from_arc(g)
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let h = self
            .shared
            .registry
            .get_or_create_histogram(key, |h| h.clone());
        Histogram::from_arc(h)
    }
}

/// One metric's value in one flush.
enum Sample {
    Count(u64),
    Gauge(f64),
    Values(Vec<f64>),
}

/// The dimension values of one group of metrics, in dimension-set order.
type Dimensions = Vec<(String, String)>;

impl EmfHandle {
    /// Writes the metrics recorded since the last flush as EMF documents, one
    /// per line, stamped `timestamp_ms` (milliseconds since the Unix epoch).
    /// Nothing is written when nothing was recorded.
    pub fn flush(&self, timestamp_ms: u64, out: &mut impl Write) -> std::io::Result<()> {
        for doc in self.documents(timestamp_ms) {
            // One write per line, so that concurrent writers never interleave a document.
            let mut line = serde_json::to_vec(&doc).map_err(std::io::Error::other)?;
            line.push(b'\n');
            out.write_all(&line)?;
        }
        out.flush()
    }

    /// The EMF documents for what was recorded since the last flush (and resets the counters).
    pub fn documents(&self, timestamp_ms: u64) -> Vec<Value> {
        let mut groups: BTreeMap<Dimensions, BTreeMap<String, Sample>> = BTreeMap::new();
        let reg = &self.shared.registry;
        reg.visit_counters(|key, c| {
            let n = c.swap(0, Ordering::Relaxed);
            if n > 0 {
                let slot = groups.entry(self.dimensions(key)).or_default();
                match slot
                    .entry(key.name().to_string())
                    .or_insert(Sample::Count(0))
                {
                    Sample::Count(total) => *total += n,
                    _ => tracing::debug!(metric = key.name(), "metric registered as two kinds"),
                }
            }
        });
        reg.visit_gauges(|key, g| {
            let v = f64::from_bits(g.load(Ordering::Relaxed));
            let slot = groups.entry(self.dimensions(key)).or_default();
            slot.insert(key.name().to_string(), Sample::Gauge(v));
        });
        reg.visit_histograms(|key, h| {
            let mut values = Vec::new();
            h.clear_with(|chunk| values.extend_from_slice(chunk));
            values.retain(|v| v.is_finite());
            if !values.is_empty() {
                let slot = groups.entry(self.dimensions(key)).or_default();
                match slot
                    .entry(key.name().to_string())
                    .or_insert(Sample::Values(Vec::new()))
                {
                    Sample::Values(all) => all.extend(values),
                    _ => tracing::debug!(metric = key.name(), "metric registered as two kinds"),
                }
            }
        });
        let units = self
            .shared
            .units
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default();
        let mut docs = Vec::new();
        for (dims, samples) in groups {
            self.group_documents(timestamp_ms, &dims, samples, &units, &mut docs);
        }
        docs
    }

    /// The configured dimensions, then the key's labels that are dimensions.
    fn dimensions(&self, key: &Key) -> Dimensions {
        let config = &self.shared.config;
        let mut dims = config.dimensions.clone();
        for label in key.labels() {
            if config.label_dimensions.iter().any(|d| d == label.key())
                && !dims.iter().any(|(k, _)| k == label.key())
            {
                dims.push((label.key().to_string(), label.value().to_string()));
            }
        }
        dims.truncate(MAX_DIMENSIONS);
        dims
    }

    /// Splits one group into documents of at most 100 metrics and 100 values each.
    fn group_documents(
        &self,
        timestamp_ms: u64,
        dims: &Dimensions,
        samples: BTreeMap<String, Sample>,
        units: &HashMap<String, Unit>,
        docs: &mut Vec<Value>,
    ) {
        // Round r carries each metric's r-th chunk of values (counters and gauges: round 0).
        let mut rounds: Vec<Vec<(String, Value, &'static str)>> = Vec::new();
        for (name, sample) in samples {
            let unit = match (&sample, units.get(&name)) {
                (_, Some(u)) => cloudwatch_unit(*u),
                (Sample::Count(_), None) => "Count",
                (_, None) => "None",
            };
            let chunks: Vec<Value> = match sample {
                Sample::Count(n) => vec![json!(n)],
                Sample::Gauge(v) => vec![json!(v)],
                Sample::Values(vs) => vs.chunks(MAX_PER_DOCUMENT).map(|c| json!(c)).collect(),
            };
            for (r, value) in chunks.into_iter().enumerate() {
                if rounds.len() <= r {
                    rounds.push(Vec::new());
                }
                rounds[r].push((name.clone(), value, unit));
            }
        }
        for round in rounds {
            for part in round.chunks(MAX_PER_DOCUMENT) {
                let mut root = Map::new();
                let definitions: Vec<Value> = part
                    .iter()
                    .map(|(name, _, unit)| json!({"Name": name, "Unit": unit}))
                    .collect();
                root.insert(
                    "_aws".into(),
                    json!({
                        "Timestamp": timestamp_ms,
                        "CloudWatchMetrics": [{
                            "Namespace": self.shared.config.namespace,
                            "Dimensions": [dims.iter().map(|(k, _)| k).collect::<Vec<_>>()],
                            "Metrics": definitions,
                        }],
                    }),
                );
                for (k, v) in dims {
                    root.insert(k.clone(), json!(v));
                }
                for (name, value, _) in part {
                    root.insert(name.clone(), value.clone());
                }
                docs.push(Value::Object(root));
            }
        }
    }
}

/// The CloudWatch name of a `metrics` unit (CloudWatch `MetricDatum` units).
pub fn cloudwatch_unit(unit: Unit) -> &'static str {
    match unit {
        Unit::Count => "Count",
        Unit::Percent => "Percent",
        Unit::Seconds => "Seconds",
        Unit::Milliseconds => "Milliseconds",
        Unit::Microseconds => "Microseconds",
        Unit::Nanoseconds => "None",
        Unit::Tebibytes => "Terabytes",
        Unit::Gibibytes => "Gigabytes",
        Unit::Mebibytes => "Megabytes",
        Unit::Kibibytes => "Kilobytes",
        Unit::Bytes => "Bytes",
        Unit::TerabitsPerSecond => "Terabits/Second",
        Unit::GigabitsPerSecond => "Gigabits/Second",
        Unit::MegabitsPerSecond => "Megabits/Second",
        Unit::KilobitsPerSecond => "Kilobits/Second",
        Unit::BitsPerSecond => "Bits/Second",
        Unit::CountPerSecond => "Count/Second",
    }
}
