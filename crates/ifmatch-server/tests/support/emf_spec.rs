//! A checker for CloudWatch Embedded Metric Format documents, written from the
//! specification ("Specification: Embedded metric format", Amazon CloudWatch
//! User Guide): shared by the EMF tests.

use serde_json::Value;

/// The units CloudWatch accepts (`MetricDatum.Unit`).
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Checks one EMF document; the error says which rule it breaks.
pub fn check(doc: &Value) -> Result<(), String> {
    let root = doc.as_object().ok_or("the root is not an object")?;
    let aws = root
        .get("_aws")
        .and_then(Value::as_object)
        .ok_or("no _aws object")?;
    for k in aws.keys() {
        if k != "Timestamp" && k != "CloudWatchMetrics" {
            return Err(format!("_aws has an unknown member {k}"));
        }
    }
    aws.get("Timestamp")
        .and_then(Value::as_u64)
        .ok_or("_aws.Timestamp is not a non-negative integer (milliseconds)")?;
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .ok_or("_aws.CloudWatchMetrics is not an array")?;
    if directives.is_empty() {
        return Err("_aws.CloudWatchMetrics is empty".into());
    }
    for d in directives {
        let d = d.as_object().ok_or("a MetricDirective is not an object")?;
        for k in d.keys() {
            if !["Namespace", "Dimensions", "Metrics"].contains(&k.as_str()) {
                return Err(format!("a MetricDirective has an unknown member {k}"));
            }
        }
        let ns = d
            .get("Namespace")
            .and_then(Value::as_str)
            .ok_or("Namespace is not a string")?;
        if ns.is_empty() || ns.len() > 255 {
            return Err("Namespace must have 1 to 255 characters".into());
        }
        let sets = d
            .get("Dimensions")
            .and_then(Value::as_array)
            .ok_or("Dimensions is not an array")?;
        for set in sets {
            let set = set.as_array().ok_or("a DimensionSet is not an array")?;
            if set.len() > 30 {
                return Err("a DimensionSet has more than 30 keys".into());
            }
            for key in set {
                let key = key.as_str().ok_or("a dimension key is not a string")?;
                match root.get(key) {
                    Some(Value::String(v)) if !v.is_empty() => {}
                    _ => return Err(format!("dimension {key} is not a non-empty string member")),
                }
            }
        }
        let metrics = d
            .get("Metrics")
            .and_then(Value::as_array)
            .ok_or("Metrics is not an array")?;
        if metrics.len() > 100 {
            return Err("more than 100 MetricDefinitions".into());
        }
        for m in metrics {
            let m = m.as_object().ok_or("a MetricDefinition is not an object")?;
            for k in m.keys() {
                if !["Name", "Unit", "StorageResolution"].contains(&k.as_str()) {
                    return Err(format!("a MetricDefinition has an unknown member {k}"));
                }
            }
            let name = m
                .get("Name")
                .and_then(Value::as_str)
                .ok_or("a MetricDefinition has no Name")?;
            if name.is_empty() || name.len() > 255 {
                return Err(format!(
                    "metric name {name:?} must have 1 to 255 characters"
                ));
            }
            if let Some(unit) = m.get("Unit") {
                let unit = unit.as_str().ok_or("Unit is not a string")?;
                if !UNITS.contains(&unit) {
                    return Err(format!("{name}: {unit} is not a CloudWatch unit"));
                }
            }
            if let Some(r) = m.get("StorageResolution")
                && r != 1
                && r != 60
            {
                return Err(format!("{name}: StorageResolution must be 1 or 60"));
            }
            match root.get(name) {
                Some(Value::Number(_)) => {}
                Some(Value::Array(vs)) if vs.len() <= 100 && vs.iter().all(Value::is_number) => {}
                _ => {
                    return Err(format!(
                        "metric {name} is not a number or an array of at most 100 numbers"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Parses EMF output (one document per line) and checks every document.
pub fn parse(out: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(out).expect("EMF output is UTF-8");
    text.lines()
        .map(|line| {
            let doc: Value = serde_json::from_str(line).expect("each line is one JSON document");
            if let Err(e) = check(&doc) {
                panic!("not an EMF document ({e}): {line}");
            }
            doc
        })
        .collect()
}

/// The value of metric `name` in the document whose dimensions include `dims`, if any.
pub fn value<'a>(docs: &'a [Value], name: &str, dims: &[(&str, &str)]) -> Option<&'a Value> {
    docs.iter()
        .filter(|d| {
            dims.iter()
                .all(|(k, v)| d.get(*k).and_then(Value::as_str) == Some(*v))
        })
        .find_map(|d| d.get(name))
}
