//! Opening a `dynamodb://` URL: parsing it into [`Settings`] (every
//! parameter checked, an unknown one rejected) and preparing the table —
//! checking its key schema, or with `create=true` creating it, waiting until
//! it is `ACTIVE` and turning TTL on.
//!
//! What it guarantees: a store is only opened on a table whose partition key
//! is `k` of type S (a `DescribeTable` that is denied is tolerated, see
//! [`IAM_ACTIONS`](super::IAM_ACTIONS)); a missing table is a clear error
//! unless `create=true` asks for it.

use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TableDescription, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};

use super::item::{A_EXPIRES, A_KEY};
use super::{DynamoStore, Op};
use crate::error::{Error, Result};

/// How long `create=true` waits for a new table to become `ACTIVE`.
const CREATE_WAIT: Duration = Duration::from_secs(300);

/// What a `dynamodb://` URL asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::store) struct Settings {
    pub(super) table: String,
    pub(super) create: bool,
    pub(super) endpoint: Option<String>,
    pub(super) region: Option<String>,
}

/// Parses `dynamodb://TABLE[?create=true&endpoint=URL&region=R]`.
pub(in crate::store) fn parse_url(url: &str) -> Result<Settings> {
    let rest = url
        .strip_prefix("dynamodb://")
        .ok_or_else(|| Error::InvalidInput(format!("not a dynamodb:// URL: {url:?}")))?;
    let (table, query) = match rest.split_once('?') {
        Some((t, q)) => (t, Some(q)),
        None => (rest, None),
    };
    validate_table_name(table, url)?;
    let mut settings = Settings {
        table: table.to_string(),
        create: false,
        endpoint: None,
        region: None,
    };
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if seen.iter().any(|s| *s == name) {
            return Err(Error::InvalidInput(format!(
                "parameter {name:?} given twice in {url:?}"
            )));
        }
        seen.push(name.to_string());
        match &*name {
            "create" => {
                settings.create = match &*value {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(Error::InvalidInput(format!(
                            "create must be true or false, got {other:?} in {url:?}"
                        )));
                    }
                }
            }
            "endpoint" => {
                let parsed = url::Url::parse(&value).map_err(|e| {
                    Error::InvalidInput(format!("invalid endpoint {value:?} in {url:?}: {e}"))
                })?;
                if !matches!(parsed.scheme(), "http" | "https") || !parsed.has_host() {
                    return Err(Error::InvalidInput(format!(
                        "endpoint must be an http:// or https:// URL, got {value:?} in {url:?}"
                    )));
                }
                settings.endpoint = Some(value.into_owned());
            }
            "region" => {
                if value.is_empty()
                    || !value
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                {
                    return Err(Error::InvalidInput(format!(
                        "invalid region {value:?} in {url:?}"
                    )));
                }
                settings.region = Some(value.into_owned());
            }
            other => {
                return Err(Error::InvalidInput(format!(
                    "unknown parameter {other:?} in {url:?}: dynamodb:// takes create, endpoint and region"
                )));
            }
        }
    }
    Ok(settings)
}

/// DynamoDB's table-name rules: 3 to 255 characters of `A-Z a-z 0-9 _ - .`.
fn validate_table_name(table: &str, url: &str) -> Result<()> {
    let ok = (3..=255).contains(&table.len())
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "invalid DynamoDB table name {table:?} in {url:?}: use 3-255 characters of A-Z, a-z, 0-9, '_', '-' and '.'"
        )))
    }
}

impl DynamoStore {
    pub(super) fn missing_table(&self) -> Error {
        Error::InvalidInput(format!(
            "DynamoDB table '{t}' does not exist: create it (partition key 'k', type S) or open dynamodb://{t}?create=true",
            t = self.table
        ))
    }

    /// Checks the table (or creates it), and with `create` makes sure TTL is on.
    pub(super) async fn prepare_table(&self, create: bool) -> Result<()> {
        let described = self
            .reads
            .describe_table()
            .table_name(&self.table)
            .send()
            .await;
        match described {
            Ok(out) => {
                if let Some(desc) = out.table() {
                    self.check_schema(desc)?;
                    if desc.table_status() != Some(&TableStatus::Active) {
                        self.wait_active().await?;
                    }
                }
            }
            Err(err) => match err.as_service_error() {
                Some(DescribeTableError::ResourceNotFoundException(_)) => {
                    if !create {
                        return Err(self.missing_table());
                    }
                    self.create_table().await?;
                    self.wait_active().await?;
                }
                Some(e) if !create && e.code() == Some("AccessDeniedException") => {
                    // Least-privilege roles often may read and write items but not
                    // describe the table; the first data request will tell.
                    tracing::debug!(table = %self.table, "no permission to describe the table; not checking it");
                    return Ok(());
                }
                _ => return Err(self.map_err(err, Op::Read, "DescribeTable")),
            },
        }
        if create {
            self.ensure_ttl().await;
        }
        Ok(())
    }

    /// Rejects a table whose key schema is not `k` (S) alone.
    pub(super) fn check_schema(&self, desc: &TableDescription) -> Result<()> {
        let keys = desc.key_schema();
        let hash_ok = keys.len() == 1
            && keys[0].attribute_name() == A_KEY
            && *keys[0].key_type() == KeyType::Hash;
        let type_ok = desc
            .attribute_definitions()
            .iter()
            .any(|d| d.attribute_name() == A_KEY && *d.attribute_type() == ScalarAttributeType::S);
        if hash_ok && type_ok {
            Ok(())
        } else {
            let schema: Vec<String> = keys
                .iter()
                .map(|k| format!("{} ({})", k.attribute_name(), k.key_type().as_str()))
                .collect();
            Err(Error::InvalidInput(format!(
                "DynamoDB table '{}' has key schema [{}]; ifmatch needs a partition key 'k' of type S and no sort key",
                self.table,
                schema.join(", ")
            )))
        }
    }

    pub(super) async fn create_table(&self) -> Result<()> {
        let build = |e: aws_sdk_dynamodb::error::BuildError| {
            Error::other("building a CreateTable request", e)
        };
        let created = self
            .reads
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(A_KEY)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(build)?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(A_KEY)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(build)?,
            )
            .send()
            .await;
        match created {
            Ok(_) => {
                tracing::info!(table = %self.table, "created DynamoDB table");
                Ok(())
            }
            // Another process created it first: fine.
            Err(err) if err.code() == Some("ResourceInUseException") => Ok(()),
            Err(err) => Err(self.map_err(err, Op::Read, "CreateTable")),
        }
    }

    /// Polls `DescribeTable` until the table is `ACTIVE` (the SDK's waiter
    /// starts at 20 seconds between polls, far too slow for a new table).
    pub(super) async fn wait_active(&self) -> Result<()> {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let out = self
                .reads
                .describe_table()
                .table_name(&self.table)
                .send()
                .await;
            match out {
                Ok(out) => {
                    if let Some(desc) = out.table() {
                        match desc.table_status() {
                            Some(TableStatus::Active) => return self.check_schema(desc),
                            Some(TableStatus::Deleting) => {
                                return Err(Error::msg(format!(
                                    "DynamoDB table '{}' is being deleted",
                                    self.table
                                )));
                            }
                            _ => {}
                        }
                    }
                }
                Err(err)
                    if matches!(
                        err.as_service_error(),
                        Some(DescribeTableError::ResourceNotFoundException(_))
                    ) => {}
                Err(err) => return Err(self.map_err(err, Op::Read, "DescribeTable")),
            }
            if started.elapsed() > CREATE_WAIT {
                return Err(Error::Unavailable {
                    message: format!(
                        "DynamoDB table '{}' did not become ACTIVE within {CREATE_WAIT:?}",
                        self.table
                    ),
                    source: None,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Enables TTL on `exp`; a server without TTL support only gets a warning.
    pub(super) async fn ensure_ttl(&self) {
        let current = self
            .reads
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await;
        if let Ok(out) = &current
            && let Some(desc) = out.time_to_live_description()
        {
            let status = desc.time_to_live_status();
            let on = matches!(
                status,
                Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
            );
            if on && desc.attribute_name() == Some(A_EXPIRES) {
                return;
            }
            if on {
                tracing::warn!(
                    table = %self.table,
                    attribute = ?desc.attribute_name(),
                    "DynamoDB TTL is enabled on another attribute; expiring records (attribute 'exp') will not be removed by TTL"
                );
                return;
            }
        }
        let spec = match TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(A_EXPIRES)
            .build()
        {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(error = %e, "could not build a TTL specification");
                return;
            }
        };
        let updated = self
            .reads
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(spec)
            .send()
            .await;
        match updated {
            Ok(_) => tracing::info!(table = %self.table, "enabled DynamoDB TTL on attribute 'exp'"),
            Err(err) => tracing::warn!(
                table = %self.table,
                error = %DisplayErrorContext(&err),
                "could not enable DynamoDB TTL on attribute 'exp' (expired records will stay until deleted)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let s = parse_url("dynamodb://my_table.v-1").unwrap();
        assert_eq!(
            s,
            Settings {
                table: "my_table.v-1".into(),
                create: false,
                endpoint: None,
                region: None
            }
        );
        let s = parse_url(
            "dynamodb://Tbl?create=true&endpoint=http%3A%2F%2F127.0.0.1%3A4567&region=eu-west-1",
        )
        .unwrap();
        assert!(s.create);
        assert_eq!(s.table, "Tbl");
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:4567"));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        let s = parse_url("dynamodb://tbl?endpoint=http://localhost:8000&create=false").unwrap();
        assert!(!s.create);
        assert_eq!(s.endpoint.as_deref(), Some("http://localhost:8000"));
    }

    #[test]
    fn rejects_bad_urls() {
        for (url, needle) in [
            ("dynamodb://tbl?creat=true", "\"creat\""),
            ("dynamodb://tbl?create=yes", "create must be"),
            ("dynamodb://tbl?create=true&create=true", "twice"),
            ("dynamodb://tbl?endpoint=localhost", "endpoint"),
            ("dynamodb://tbl?endpoint=ftp://x", "endpoint"),
            ("dynamodb://tbl?region=", "region"),
            ("dynamodb://tbl?region=EU%20WEST", "region"),
            ("dynamodb://", "table name"),
            ("dynamodb://ab", "table name"),
            ("dynamodb://a/b", "table name"),
            ("dynamodb://t%20b", "table name"),
            ("dynamodb://tbl/", "table name"),
            ("s3://tbl", "not a dynamodb"),
        ] {
            let err = parse_url(url).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{url}: {err:?}");
            assert!(err.to_string().contains(needle), "{url}: {err}");
        }
        assert!(parse_url(&format!("dynamodb://{}", "t".repeat(255))).is_ok());
        assert!(parse_url(&format!("dynamodb://{}", "t".repeat(256))).is_err());
    }
}
