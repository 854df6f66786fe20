//! `dynamodb://TABLE`: small versioned records in an Amazon DynamoDB table.
//!
//! Every key is one item; compare-and-swap is a DynamoDB condition expression,
//! so a conditional write is one request and atomic on the server.
//!
//! # URL
//!
//! `dynamodb://TABLE[?create=true&endpoint=URL&region=R]`
//!
//! - `create=true` creates the table when it is missing (on-demand billing,
//!   partition key only), waits until it is `ACTIVE` and enables TTL on the
//!   `exp` attribute. Without it a missing table is an error.
//! - `endpoint` and `region` override the standard AWS environment, which is
//!   otherwise used as is: `AWS_REGION`, `AWS_ENDPOINT_URL` /
//!   `AWS_ENDPOINT_URL_DYNAMODB`, profiles and the credentials chain.
//!
//! Any other parameter is rejected, so a typo never goes unnoticed.
//!
//! # Item schema
//!
//! | attribute | type | content |
//! |---|---|---|
//! | `k` | S | the key; the table's partition key (no sort key) |
//! | `v` | B | the value (left out when the value is empty) |
//! | `ver` | S | the version: 128 random bits in hex, fresh on every write |
//! | `sz` | N | the value's size in bytes, so [`Store::head`] and listings need not read `v` |
//! | `m` | M of S | the metadata (left out when there is none) |
//! | `exp` | N | the expiry in seconds since the Unix epoch: the table's TTL attribute, written only when [`PutOptions::expires_at`] is set |
//!
//! Versions are random, not counters, so a key deleted and created again
//! never gets a version it had before (no ABA).
//!
//! # Conditions
//!
//! [`Condition::Any`] sends no condition, [`Condition::Absent`] sends
//! `attribute_not_exists(k)` and [`Condition::Matches`] sends `ver = :v`, on
//! `PutItem` and `DeleteItem` alike. A failed condition becomes
//! [`Error::Conflict`]; its `actual` version comes from the item DynamoDB
//! returns with `ReturnValuesOnConditionCheckFailure=ALL_OLD`, or, on servers
//! that do not return it, from a best-effort follow-up read.
//!
//! # Sizes
//!
//! DynamoDB limits an item to 400 KB, counting attribute names, the key, the
//! metadata and the value. The item size is computed before sending and an
//! oversized item fails with [`Error::TooLarge`] (limit [`ITEM_SIZE_LIMIT`]);
//! [`Store::max_value_size`] reports [`MAX_VALUE_SIZE`], a value size that
//! fits whatever the key and metadata.
//!
//! # Costs and consistency
//!
//! All reads are strongly consistent. [`Store::get_if_changed`] has no
//! server-side equivalent: it reads only `ver` first (one small request) and
//! only when the version differs reads the whole item (a second request), so
//! an unchanged key costs one request without the value and a changed key
//! costs two. [`Store::list`] is a `Scan` with a `begins_with(k, :p)` filter:
//! it reads (and is billed for) the whole table, not just the prefix, and
//! returns keys in the scan's own order, not sorted.
//!
//! # Retries and ambiguous outcomes
//!
//! Reads use the SDK's standard retries (idempotent, so harmless). Writes are
//! sent with the SDK's retries **disabled**: if a conditional write landed but
//! its response was lost, an SDK-internal retry would fail its own condition
//! and come back as a false [`Error::Conflict`], and the caller would re-apply
//! a change that already landed. Instead a write whose outcome is unknown
//! (timeout or connection failure after the request may have been sent, a
//! garbled response, an HTTP 500) is reported as [`Error::Ambiguous`], which
//! the update loop resolves by re-reading; a write that certainly did not
//! land (throttled, refused before sending, HTTP 503) is
//! [`Error::Unavailable`], which the update loop's own backoff retries.
//! Unless the AWS environment sets its own, each attempt times out after 10
//! seconds (connecting after 3.1), so a hung server cannot stall a worker.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::Region;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{
    ConnectorError, DisplayErrorContext, ProvideErrorMetadata, SdkError,
};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableDescription, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use bytes::Bytes;

use super::{
    Condition, Fetch, ListEntry, ListPage, ListResult, Metadata, Object, ObjectMeta, PutOptions,
    Store, Version,
};
use crate::error::{Error, Result};
use crate::key::{validate_key, validate_metadata, validate_prefix};

/// The IAM actions the [`Store`] calls of this backend need on its table
/// (resource `arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE`): `DescribeTable`
/// when opened (to check the schema; a denial is tolerated), `GetItem`,
/// `PutItem`, `DeleteItem`, and `Scan` for [`Store::list`].
/// `deploy/aws/template.yaml` grants exactly these, and the server crate's
/// `aws_template` test records the requests every `Store` call sends and
/// fails on one that needs an action not listed here.
pub const IAM_ACTIONS: &[&str] = &[
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:DeleteItem",
    "dynamodb:Scan",
];

/// The further IAM actions `?create=true` needs (creating the table and
/// turning TTL on); a deployment that creates the table itself grants none.
pub const IAM_CREATE_ACTIONS: &[&str] = &["dynamodb:CreateTable", "dynamodb:UpdateTimeToLive"];

/// DynamoDB's maximum item size in bytes (400 KB), attribute names and key included.
pub const ITEM_SIZE_LIMIT: u64 = 400 * 1024;

/// The largest value [`DynamoStore`] reports through [`Store::max_value_size`]:
/// the item limit less 5 KB, room enough for the longest key (1 KB), the most
/// metadata (2 KB of names and values plus per-entry overhead) and the other
/// attributes. Larger values may still fit with a short key and little metadata.
pub const MAX_VALUE_SIZE: u64 = ITEM_SIZE_LIMIT - 5 * 1024;

/// Attribute: the key (partition key).
const A_KEY: &str = "k";
/// Attribute: the value.
const A_VALUE: &str = "v";
/// Attribute: the version.
const A_VERSION: &str = "ver";
/// Attribute: the value's size.
const A_SIZE: &str = "sz";
/// Attribute: the metadata map.
const A_META: &str = "m";
/// Attribute: the expiry (TTL).
const A_EXPIRES: &str = "exp";

/// How long `create=true` waits for a new table to become `ACTIVE`.
const CREATE_WAIT: Duration = Duration::from_secs(300);
/// The per-attempt timeout used when the AWS environment sets none.
const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The connect timeout used when the AWS environment sets none.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);
/// The fewest items one `Scan` request of a filtered listing evaluates.
const MIN_SCAN_BATCH: usize = 100;

/// A store in one DynamoDB table; see the module docs for the item schema.
#[derive(Clone)]
pub struct DynamoStore {
    table: String,
    /// Client for reads and table management: the SDK's standard retries.
    reads: Client,
    /// Client for conditional writes: SDK retries disabled (see the module docs).
    writes: Client,
}

impl fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// What a `dynamodb://` URL asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Settings {
    table: String,
    create: bool,
    endpoint: Option<String>,
    region: Option<String>,
}

/// Parses `dynamodb://TABLE[?create=true&endpoint=URL&region=R]`.
pub(super) fn parse_url(url: &str) -> Result<Settings> {
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

/// Whether a request is a read (safe to repeat) or a write of `key`.
#[derive(Clone, Copy)]
enum Op<'a> {
    Read,
    Write(&'a str),
}

impl DynamoStore {
    /// Opens the table named by a `dynamodb://TABLE[?create=true&endpoint=URL&region=R]`
    /// URL (see the module docs), checking that it exists and has the right key
    /// schema, and creating it when `create=true`.
    pub async fn open(url: &str) -> Result<DynamoStore> {
        let settings = parse_url(url)?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(Error::InvalidInput(format!(
                "no AWS region for {url:?}: set AWS_REGION or add ?region=R to the URL"
            )));
        }
        let timeouts = sdk
            .timeout_config()
            .cloned()
            .unwrap_or_else(TimeoutConfig::disabled);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(
                timeouts
                    .connect_timeout()
                    .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            )
            .operation_attempt_timeout(
                timeouts
                    .operation_attempt_timeout()
                    .unwrap_or(DEFAULT_ATTEMPT_TIMEOUT),
            )
            .build();
        let mut builder = aws_sdk_dynamodb::config::Builder::from(&sdk).timeout_config(timeouts);
        if let Some(endpoint) = &settings.endpoint {
            // Set on the service config so it also beats AWS_ENDPOINT_URL_DYNAMODB.
            builder = builder.endpoint_url(endpoint.clone());
        }
        let reads = Client::from_conf(builder.clone().build());
        let writes = Client::from_conf(builder.retry_config(RetryConfig::disabled()).build());
        let store = DynamoStore {
            table: settings.table,
            reads,
            writes,
        };
        store.prepare_table(settings.create).await?;
        Ok(store)
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn missing_table(&self) -> Error {
        Error::InvalidInput(format!(
            "DynamoDB table '{t}' does not exist: create it (partition key 'k', type S) or open dynamodb://{t}?create=true",
            t = self.table
        ))
    }

    /// Checks the table (or creates it), and with `create` makes sure TTL is on.
    async fn prepare_table(&self, create: bool) -> Result<()> {
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
    fn check_schema(&self, desc: &TableDescription) -> Result<()> {
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

    async fn create_table(&self) -> Result<()> {
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
    async fn wait_active(&self) -> Result<()> {
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
    async fn ensure_ttl(&self) {
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

    /// Maps an SDK error to ours; see the module docs for the policy.
    fn map_err<E>(&self, err: SdkError<E>, op: Op<'_>, action: &str) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let message = format!(
            "DynamoDB {action} on table '{}': {}",
            self.table,
            DisplayErrorContext(&err)
        );
        let ambiguous = |key: &str, message: String| Error::Ambiguous {
            key: key.to_string(),
            message,
        };
        match &err {
            SdkError::ConstructionFailure(_) => Error::other(message, err),
            SdkError::TimeoutError(_) => match op {
                Op::Write(key) => ambiguous(key, message),
                Op::Read => Error::unavailable(message, err),
            },
            SdkError::DispatchFailure(failure) => {
                if let Some(creds) = find_source::<CredentialsError>(&err) {
                    return match creds {
                        CredentialsError::ProviderTimedOut(_)
                        | CredentialsError::ProviderError(_) => Error::unavailable(message, err),
                        _ => Error::other(message, err),
                    };
                }
                if failure.is_user() {
                    return Error::other(message, err);
                }
                match (op, failure.as_connector_error()) {
                    (Op::Write(key), Some(c)) if !never_sent(c) => ambiguous(key, message),
                    (Op::Write(key), None) => ambiguous(key, message),
                    _ => Error::unavailable(message, err),
                }
            }
            SdkError::ResponseError(_) => match op {
                Op::Write(key) => ambiguous(key, message),
                Op::Read => Error::unavailable(message, err),
            },
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                match err.code().unwrap_or("") {
                    "ResourceNotFoundException" => self.missing_table(),
                    "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "LimitExceededException"
                    | "TransactionConflictException"
                    | "ReplicatedWriteConflictException"
                    | "ServiceUnavailable" => Error::unavailable(message, err),
                    "ValidationException" | "SerializationException" => {
                        Error::InvalidInput(message)
                    }
                    _ if status == 503 => Error::unavailable(message, err),
                    _ if status >= 500 => match op {
                        // A 500 from DynamoDB may follow a write that landed.
                        Op::Write(key) => ambiguous(key, message),
                        Op::Read => Error::unavailable(message, err),
                    },
                    _ => Error::other(message, err),
                }
            }
            _ => match op {
                Op::Write(key) => ambiguous(key, message),
                Op::Read => Error::unavailable(message, err),
            },
        }
    }

    /// One consistent GetItem of `key` projecting only the version attribute.
    async fn get_version_item(&self, key: &str) -> Result<Option<HashMap<String, AttributeValue>>> {
        let out = self
            .reads
            .get_item()
            .table_name(&self.table)
            .key(A_KEY, AttributeValue::S(key.to_string()))
            .consistent_read(true)
            .projection_expression("#ver")
            .expression_attribute_names("#ver", A_VERSION)
            .send()
            .await
            .map_err(|e| self.map_err(e, Op::Read, "GetItem"))?;
        Ok(out.item)
    }

    /// The current version of `key`, best effort (`None` if absent or unreadable).
    async fn current_version(&self, key: &str) -> Option<Version> {
        self.get_version_item(key)
            .await
            .ok()?
            .as_ref()
            .and_then(version_of)
    }

    /// The actual version for a conflict: from the returned old item, else read.
    async fn conflict_actual(
        &self,
        key: &str,
        item: Option<&HashMap<String, AttributeValue>>,
    ) -> Option<Version> {
        match item.and_then(version_of) {
            Some(v) => Some(v),
            None => self.current_version(key).await,
        }
    }

    /// A whole item, or `None` if absent.
    async fn get_item(&self, key: &str) -> Result<Option<HashMap<String, AttributeValue>>> {
        let out = self
            .reads
            .get_item()
            .table_name(&self.table)
            .key(A_KEY, AttributeValue::S(key.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.map_err(e, Op::Read, "GetItem"))?;
        Ok(out.item)
    }
}

/// Whether a connection error certainly happened before the request was sent
/// (refused connection, DNS failure, connect timeout). Best effort: anything
/// not recognised counts as possibly sent.
fn never_sent(err: &ConnectorError) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
            )
        {
            return true;
        }
        let text = e.to_string();
        // hyper-util's connect-phase error, and the SDK's connect timeout.
        if text == "client error (Connect)" || text.starts_with("HTTP connect timeout") {
            return true;
        }
        next = e.source();
    }
    false
}

fn find_source<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

fn version_of(item: &HashMap<String, AttributeValue>) -> Option<Version> {
    item.get(A_VERSION)
        .and_then(|v| v.as_s().ok())
        .map(|s| Version::new(s.clone()))
}

/// A fresh version: 128 random bits in hex.
fn new_version() -> Version {
    Version::new(uuid::Uuid::new_v4().simple().to_string())
}

fn corrupt(key: &str, what: &str) -> Error {
    Error::msg(format!(
        "DynamoDB item for key '{key}' is not an ifmatch record: {what}"
    ))
}

fn number_attr(
    item: &HashMap<String, AttributeValue>,
    name: &str,
    key: &str,
) -> Result<Option<u64>> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(n)) => n.parse::<u64>().map(Some).map_err(|_| {
            corrupt(
                key,
                &format!("attribute '{name}' is {n:?}, not a size or time"),
            )
        }),
        Some(_) => Err(corrupt(key, &format!("attribute '{name}' is not a number"))),
    }
}

/// Reads everything but the value from an item.
fn meta_of(item: &HashMap<String, AttributeValue>, key: &str) -> Result<ObjectMeta> {
    let version = version_of(item).ok_or_else(|| corrupt(key, "no string attribute 'ver'"))?;
    let size = match number_attr(item, A_SIZE, key)? {
        Some(s) => s,
        None => match item.get(A_VALUE) {
            Some(AttributeValue::B(b)) => b.as_ref().len() as u64,
            _ => 0,
        },
    };
    let mut metadata = Metadata::new();
    match item.get(A_META) {
        None => {}
        Some(AttributeValue::M(m)) => {
            for (name, value) in m {
                let value = value
                    .as_s()
                    .map_err(|_| corrupt(key, &format!("metadata '{name}' is not a string")))?;
                metadata.insert(name.clone(), value.clone());
            }
        }
        Some(_) => return Err(corrupt(key, "attribute 'm' is not a map")),
    }
    Ok(ObjectMeta {
        key: key.to_string(),
        version,
        size,
        metadata,
        expires_at: number_attr(item, A_EXPIRES, key)?,
    })
}

/// Reads a whole record from an item (taking the value without copying it).
fn object_of(mut item: HashMap<String, AttributeValue>, key: &str) -> Result<Object> {
    let body = match item.remove(A_VALUE) {
        None => Bytes::new(),
        Some(AttributeValue::B(b)) => Bytes::from(b.into_inner()),
        Some(_) => return Err(corrupt(key, "attribute 'v' is not binary")),
    };
    let mut meta = meta_of(&item, key)?;
    meta.size = body.len() as u64;
    Ok(Object { meta, body })
}

/// The size DynamoDB counts for an item: attribute-name lengths plus value sizes.
fn item_size(item: &HashMap<String, AttributeValue>) -> u64 {
    item.iter()
        .map(|(name, value)| name.len() as u64 + attribute_size(value))
        .sum()
}

/// The size of one attribute value by DynamoDB's rules (rounded up where they are approximate).
fn attribute_size(value: &AttributeValue) -> u64 {
    match value {
        AttributeValue::S(s) => s.len() as u64,
        AttributeValue::B(b) => b.as_ref().len() as u64,
        AttributeValue::N(n) => number_size(n),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(|s| s.len() as u64).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len() as u64).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|a| attribute_size(a) + 1).sum::<u64>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, a)| k.len() as u64 + attribute_size(a) + 1)
                .sum::<u64>()
        }
        // Unknown future types: count the maximum of a number, to stay conservative.
        _ => 21,
    }
}

/// A number takes one byte per two significant digits plus one (at most 21).
fn number_size(n: &str) -> u64 {
    let digits = n.bytes().filter(|b| b.is_ascii_digit()).count() as u64;
    (digits.div_ceil(2) + 1).min(21)
}

/// Builds the expression parts of a condition.
struct Expr {
    condition: Option<&'static str>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

fn condition_expr(condition: &Condition) -> Expr {
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let condition = match condition {
        Condition::Any => None,
        Condition::Absent => {
            names.insert("#k".to_string(), A_KEY.to_string());
            Some("attribute_not_exists(#k)")
        }
        Condition::Matches(v) => {
            names.insert("#ver".to_string(), A_VERSION.to_string());
            values.insert(":v".to_string(), AttributeValue::S(v.as_str().to_string()));
            Some("#ver = :v")
        }
    };
    Expr {
        condition,
        names,
        values,
    }
}

fn non_empty<K, V>(m: HashMap<K, V>) -> Option<HashMap<K, V>> {
    if m.is_empty() { None } else { Some(m) }
}

#[async_trait]
impl Store for DynamoStore {
    fn describe(&self) -> String {
        format!("dynamodb://{}", self.table)
    }

    fn max_value_size(&self) -> Option<u64> {
        Some(MAX_VALUE_SIZE)
    }

    async fn get(&self, key: &str) -> Result<Object> {
        validate_key(key)?;
        match self.get_item(key).await? {
            Some(item) => object_of(item, key),
            None => Err(Error::not_found(key)),
        }
    }

    /// One request projecting `ver` when unchanged; a second, full read when changed.
    async fn get_if_changed(&self, key: &str, known: &Version) -> Result<Fetch> {
        validate_key(key)?;
        let item = self
            .get_version_item(key)
            .await?
            .ok_or_else(|| Error::not_found(key))?;
        if version_of(&item).as_ref() == Some(known) {
            return Ok(Fetch::Unchanged);
        }
        match self.get_item(key).await? {
            None => Err(Error::not_found(key)),
            Some(item) => {
                let object = object_of(item, key)?;
                if object.version() == known {
                    Ok(Fetch::Unchanged)
                } else {
                    Ok(Fetch::Changed(object))
                }
            }
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        validate_key(key)?;
        let out = self
            .reads
            .get_item()
            .table_name(&self.table)
            .key(A_KEY, AttributeValue::S(key.to_string()))
            .consistent_read(true)
            .projection_expression("#k, #ver, #sz, #m, #exp")
            .expression_attribute_names("#k", A_KEY)
            .expression_attribute_names("#ver", A_VERSION)
            .expression_attribute_names("#sz", A_SIZE)
            .expression_attribute_names("#m", A_META)
            .expression_attribute_names("#exp", A_EXPIRES)
            .send()
            .await
            .map_err(|e| self.map_err(e, Op::Read, "GetItem"))?;
        match out.item() {
            Some(item) => meta_of(item, key),
            None => Err(Error::not_found(key)),
        }
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<Version> {
        validate_key(key)?;
        validate_metadata(&opts.metadata)?;
        let version = new_version();
        let mut item = HashMap::new();
        item.insert(A_KEY.to_string(), AttributeValue::S(key.to_string()));
        item.insert(
            A_VERSION.to_string(),
            AttributeValue::S(version.as_str().to_string()),
        );
        item.insert(
            A_SIZE.to_string(),
            AttributeValue::N(body.len().to_string()),
        );
        if !body.is_empty() {
            item.insert(
                A_VALUE.to_string(),
                AttributeValue::B(Blob::new(body.to_vec())),
            );
        }
        if !opts.metadata.is_empty() {
            let m = opts
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), AttributeValue::S(v.clone())))
                .collect();
            item.insert(A_META.to_string(), AttributeValue::M(m));
        }
        if let Some(exp) = opts.expires_at {
            item.insert(A_EXPIRES.to_string(), AttributeValue::N(exp.to_string()));
        }
        let size = item_size(&item);
        if size > ITEM_SIZE_LIMIT {
            return Err(Error::TooLarge {
                key: key.to_string(),
                size,
                limit: ITEM_SIZE_LIMIT,
            });
        }
        let expr = condition_expr(&opts.condition);
        let sent = self
            .writes
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(expr.condition.map(str::to_string))
            .set_expression_attribute_names(non_empty(expr.names))
            .set_expression_attribute_values(non_empty(expr.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(version),
            Err(err) => {
                if let Some(PutItemError::ConditionalCheckFailedException(e)) =
                    err.as_service_error()
                {
                    let actual = self.conflict_actual(key, e.item()).await;
                    return Err(Error::conflict(key, opts.condition, actual));
                }
                if err.code() == Some("ValidationException")
                    && err
                        .message()
                        .is_some_and(|m| m.contains("Item size has exceeded"))
                {
                    return Err(Error::TooLarge {
                        key: key.to_string(),
                        size,
                        limit: ITEM_SIZE_LIMIT,
                    });
                }
                Err(self.map_err(err, Op::Write(key), "PutItem"))
            }
        }
    }

    async fn delete(&self, key: &str, condition: Condition) -> Result<()> {
        validate_key(key)?;
        let expr = condition_expr(&condition);
        let sent = self
            .writes
            .delete_item()
            .table_name(&self.table)
            .key(A_KEY, AttributeValue::S(key.to_string()))
            .set_condition_expression(expr.condition.map(str::to_string))
            .set_expression_attribute_names(non_empty(expr.names))
            .set_expression_attribute_values(non_empty(expr.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(err) => {
                if let Some(DeleteItemError::ConditionalCheckFailedException(e)) =
                    err.as_service_error()
                {
                    let actual = self.conflict_actual(key, e.item()).await;
                    return Err(Error::conflict(key, condition, actual));
                }
                Err(self.map_err(err, Op::Write(key), "DeleteItem"))
            }
        }
    }

    /// A `Scan` filtered by `begins_with(k, prefix)`, in the scan's order.
    ///
    /// A scan page with a filter may hold fewer matches than asked for and
    /// still not be the last, so this keeps scanning until it has `limit + 1`
    /// matches (the extra one only proves there is a next page) or the scan
    /// ends. The token is the last key returned, used as the next scan's
    /// `ExclusiveStartKey`, so the next page resumes exactly after it: no
    /// duplicates and no gaps among keys that exist for the whole listing
    /// (keys written or deleted meanwhile may or may not appear, as with any
    /// paginated scan).
    async fn list(&self, prefix: &str, page: ListPage) -> Result<ListResult> {
        validate_prefix(prefix)?;
        if page.limit == 0 {
            return Err(Error::InvalidInput(
                "list page limit must be at least 1".into(),
            ));
        }
        let mut start = match page.token {
            Some(token) => {
                validate_key(&token).map_err(|_| {
                    Error::InvalidInput(format!(
                        "invalid continuation token {token:?} for {}",
                        self.describe()
                    ))
                })?;
                Some(HashMap::from([(
                    A_KEY.to_string(),
                    AttributeValue::S(token),
                )]))
            }
            None => None,
        };
        let mut entries: Vec<ListEntry> = Vec::new();
        let want = page.limit.saturating_add(1);
        loop {
            let need = want - entries.len();
            let batch = if prefix.is_empty() {
                need
            } else {
                need.max(MIN_SCAN_BATCH)
            };
            let mut scan = self
                .reads
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .limit(i32::try_from(batch).unwrap_or(i32::MAX))
                .projection_expression("#k, #ver, #sz")
                .expression_attribute_names("#k", A_KEY)
                .expression_attribute_names("#ver", A_VERSION)
                .expression_attribute_names("#sz", A_SIZE)
                .set_exclusive_start_key(start.take());
            if !prefix.is_empty() {
                scan = scan
                    .filter_expression("begins_with(#k, :p)")
                    .expression_attribute_values(":p", AttributeValue::S(prefix.to_string()));
            }
            let out = scan
                .send()
                .await
                .map_err(|e| self.map_err(e, Op::Read, "Scan"))?;
            for item in out.items() {
                let key = match item.get(A_KEY) {
                    Some(AttributeValue::S(k)) => k.clone(),
                    _ => return Err(Error::msg("DynamoDB Scan returned an item without a key")),
                };
                // A filter is applied server-side; check again in case a server
                // ignores it, so a listing never leaks keys outside the prefix.
                if !key.starts_with(prefix) {
                    continue;
                }
                let meta = meta_of(item, &key)?;
                entries.push(ListEntry {
                    key,
                    version: meta.version,
                    size: meta.size,
                });
            }
            if entries.len() >= want {
                entries.truncate(page.limit);
                let next = entries.last().map(|e| e.key.clone());
                return Ok(ListResult { entries, next });
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => {
                    return Ok(ListResult {
                        entries,
                        next: None,
                    });
                }
            }
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

    #[test]
    fn sizes_follow_dynamodb_rules() {
        assert_eq!(number_size("0"), 2);
        assert_eq!(number_size("12"), 2);
        assert_eq!(number_size("123"), 3);
        assert_eq!(number_size("1700000000"), 6);
        let mut item = HashMap::new();
        item.insert("k".to_string(), AttributeValue::S("abc".into()));
        item.insert("v".to_string(), AttributeValue::B(Blob::new(vec![0u8; 10])));
        item.insert(
            "m".to_string(),
            AttributeValue::M(HashMap::from([(
                "ab".to_string(),
                AttributeValue::S("xyz".into()),
            )])),
        );
        // k: 1+3, v: 1+10, m: 1 + 3 + (2+3+1)
        assert_eq!(item_size(&item), 4 + 11 + 10);
    }

    #[test]
    fn max_value_always_fits() {
        // Worst case: the longest key, the most metadata, an expiry.
        let key = "k".repeat(crate::key::MAX_KEY_BYTES);
        let mut item = HashMap::new();
        item.insert(A_KEY.to_string(), AttributeValue::S(key));
        item.insert(
            A_VERSION.to_string(),
            AttributeValue::S(new_version().as_str().into()),
        );
        item.insert(
            A_SIZE.to_string(),
            AttributeValue::N(MAX_VALUE_SIZE.to_string()),
        );
        item.insert(
            A_VALUE.to_string(),
            AttributeValue::B(Blob::new(vec![0u8; MAX_VALUE_SIZE as usize])),
        );
        // The most entries (each costs a byte of overhead) within 2000 bytes of
        // names: every 1-character name, then 2-character names, empty values.
        let alphabet: Vec<char> = ('a'..='z').chain('0'..='9').chain(['-', '_']).collect();
        let mut names: Vec<String> = alphabet.iter().map(|c| c.to_string()).collect();
        'outer: for a in &alphabet {
            for b in &alphabet {
                if names.iter().map(String::len).sum::<usize>() + 2 > crate::key::MAX_METADATA_BYTES
                {
                    break 'outer;
                }
                names.push(format!("{a}{b}"));
            }
        }
        let m: HashMap<String, AttributeValue> = names
            .into_iter()
            .map(|n| (n, AttributeValue::S(String::new())))
            .collect();
        item.insert(A_META.to_string(), AttributeValue::M(m));
        item.insert(
            A_EXPIRES.to_string(),
            AttributeValue::N(u64::MAX.to_string()),
        );
        assert!(item_size(&item) <= ITEM_SIZE_LIMIT, "{}", item_size(&item));
    }

    #[test]
    fn versions_are_fresh() {
        let a = new_version();
        let b = new_version();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
    }
}
