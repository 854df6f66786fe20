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
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use bytes::Bytes;

use super::{
    Condition, Fetch, ListEntry, ListPage, ListResult, Object, ObjectMeta, PutOptions, Store,
    Version,
};
use crate::error::{Error, Result};
use crate::key::{validate_key, validate_metadata, validate_prefix};

mod item;
mod setup;

use item::{
    A_EXPIRES, A_KEY, A_META, A_SIZE, A_VALUE, A_VERSION, condition_expr, item_size, meta_of,
    new_version, non_empty, object_of, version_of,
};
pub(super) use setup::parse_url;

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
