//! The [`Store`] trait: versioned keys with conditional writes, and its backends.
//!
//! A key holds bytes, a small string [`Metadata`] map and an opaque
//! [`Version`]. Every write names a [`Condition`]: [`Condition::Any`],
//! [`Condition::Absent`] (`If-None-Match: *`) or [`Condition::Matches`]
//! (`If-Match: V`). A write whose condition does not hold fails with
//! [`Error::Conflict`]; nothing is ever silently overwritten.
//!
//! Backends are opened by URL with [`open`]:
//!
//! | URL | backend |
//! |---|---|
//! | `file://DIR` (or a bare path) | [`file::FileStore`], the embedded default |
//! | `memory://` | [`memory::MemoryStore`] |
//! | `s3://BUCKET[/PREFIX]` | [`s3::S3Store`] (S3, MinIO, R2, ...) |
//! | `dynamodb://TABLE[?create=true]` | [`dynamodb::DynamoStore`] |
//!
//! [`fault::FaultStore`] wraps any of them to inject errors, latency and lost
//! responses; [`prefix::PrefixStore`] shows one of them under a key prefix.
//! [`intercept::Intercept`] makes a wrapper that changes only the calls it
//! names and passes the rest on.
//!
//! ```
//! # tokio_test_block_on(async {
//! use ifmatch::store::{self, Condition, PutOptions};
//! let store = store::open("memory://").await?;
//! let v1 = store.put("greeting", "hello".into(), PutOptions::if_absent()).await?;
//! // A second create loses: the key exists.
//! assert!(store.put("greeting", "again".into(), PutOptions::if_absent()).await.is_err());
//! // An update against the version we read lands.
//! store.put("greeting", "hi".into(), PutOptions::if_matches(v1.clone())).await?;
//! // The same stale version now conflicts.
//! let err = store.put("greeting", "lost".into(), PutOptions::if_matches(v1)).await.unwrap_err();
//! assert_eq!(err.kind(), ifmatch::ErrorKind::Conflict);
//! # Ok::<(), ifmatch::Error>(()) });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub mod dynamodb;
pub mod fault;
pub mod file;
pub mod intercept;
pub mod memory;
pub mod prefix;
pub mod s3;

/// A small map of string metadata stored with a value (see [`crate::key`] for the rules).
pub type Metadata = BTreeMap<String, String>;

/// An opaque version of a key's value: an S3 ETag, a DynamoDB version
/// attribute, a generation on local disk. Compare versions only for equality.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(String);

impl Version {
    /// Wraps a backend's version string.
    pub fn new(v: impl Into<String>) -> Self {
        Version(v.into())
    }
    /// The version as a string (what HTTP would send as an ETag's content).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({})", self.0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The condition under which a write or delete may land.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Condition {
    /// Unconditional.
    #[default]
    Any,
    /// Only if the key does not exist (`If-None-Match: *`).
    Absent,
    /// Only if the key exists at exactly this version (`If-Match: V`).
    Matches(Version),
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Any => f.write_str("any state"),
            Condition::Absent => f.write_str("no object"),
            Condition::Matches(v) => write!(f, "version {v}"),
        }
    }
}

/// Options of a [`Store::put`].
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    /// When the write may land; see [`Condition`].
    pub condition: Condition,
    /// Metadata stored with the value (replaces the old metadata).
    pub metadata: Metadata,
    /// Seconds since the Unix epoch after which the record may be removed by the
    /// backend (DynamoDB TTL). Advisory: readers must still check expiry themselves,
    /// since no backend removes a record at the exact second.
    pub expires_at: Option<u64>,
}

impl PutOptions {
    /// An unconditional put.
    pub fn any() -> Self {
        Self::default()
    }
    /// A create-if-absent put.
    pub fn if_absent() -> Self {
        Self {
            condition: Condition::Absent,
            ..Self::default()
        }
    }
    /// A put that lands only over `version`.
    pub fn if_matches(version: Version) -> Self {
        Self {
            condition: Condition::Matches(version),
            ..Self::default()
        }
    }
    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
    /// Sets the expiry (seconds since the Unix epoch).
    pub fn with_expiry(mut self, expires_at: Option<u64>) -> Self {
        self.expires_at = expires_at;
        self
    }
}

/// What a store knows about a key without its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key.
    pub key: String,
    /// The current version.
    pub version: Version,
    /// The value's size in bytes.
    pub size: u64,
    /// The metadata stored with the value.
    pub metadata: Metadata,
    /// The expiry given at write time, if any (seconds since the Unix epoch).
    pub expires_at: Option<u64>,
}

/// A key's value with its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// Version, size, metadata.
    pub meta: ObjectMeta,
    /// The value.
    pub body: Bytes,
}

impl Object {
    /// The version of this value.
    pub fn version(&self) -> &Version {
        &self.meta.version
    }
}

/// The answer of [`Store::get_if_changed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// The key is still at the known version; no body was transferred.
    Unchanged,
    /// The key has a different version; here it is.
    Changed(Object),
}

/// Which page of a listing to return.
#[derive(Clone, Debug)]
pub struct ListPage {
    /// The continuation token of the previous page (`None` for the first page).
    pub token: Option<String>,
    /// The most entries to return (at least 1).
    pub limit: usize,
}

impl Default for ListPage {
    fn default() -> Self {
        ListPage {
            token: None,
            limit: 1000,
        }
    }
}

/// One entry of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// The key.
    pub key: String,
    /// Its version when listed.
    pub version: Version,
    /// Its size in bytes.
    pub size: u64,
}

/// A page of a listing.
#[derive(Clone, Debug, Default)]
pub struct ListResult {
    /// The entries, in key order on every backend except DynamoDB (whose scan order is its own).
    pub entries: Vec<ListEntry>,
    /// The token of the next page, `None` when this is the last one.
    pub next: Option<String>,
}

/// Versioned key-value storage with conditional writes.
///
/// All methods validate the key first ([`crate::key::validate_key`]).
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// A short description of the store for messages, like its URL.
    fn describe(&self) -> String;

    /// The largest value this store accepts, if it has a limit.
    fn max_value_size(&self) -> Option<u64> {
        None
    }

    /// Reads a key's value, version and metadata. [`Error::NotFound`] if absent.
    async fn get(&self, key: &str) -> Result<Object>;

    /// A conditional GET: [`Fetch::Unchanged`] without transferring the body if
    /// the key is still at `known`, else the current value. [`Error::NotFound`] if absent.
    async fn get_if_changed(&self, key: &str, known: &Version) -> Result<Fetch>;

    /// Reads a key's version and metadata without the body. [`Error::NotFound`] if absent.
    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    /// Writes a value if `opts.condition` holds and returns the new version;
    /// [`Error::Conflict`] if it does not.
    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<Version>;

    /// Deletes a key if `condition` holds.
    ///
    /// `Any` on an absent key succeeds (deleting is idempotent). `Matches(v)`
    /// deletes only at version `v` ([`Error::Conflict`] otherwise, also when
    /// absent). `Absent` succeeds, deleting nothing, only when the key is absent.
    async fn delete(&self, key: &str, condition: Condition) -> Result<()>;

    /// Lists keys that start with `prefix` (`""` for all), a page at a time.
    async fn list(&self, prefix: &str, page: ListPage) -> Result<ListResult>;
}

/// A shared handle to any store.
pub type DynStore = Arc<dyn Store>;

/// Opens a store by URL; see the module docs for the schemes.
///
/// A string without a scheme is taken as a local directory (`file://`).
/// AWS settings (region, endpoint, credentials) come from the standard AWS
/// environment (`AWS_REGION`, `AWS_ENDPOINT_URL`, the credentials chain).
pub async fn open(url: &str) -> Result<DynStore> {
    let (scheme, rest) = split_scheme(url);
    match scheme {
        "file" => Ok(Arc::new(file::FileStore::open(rest)?)),
        "memory" => {
            check_memory_url(url, rest)?;
            Ok(Arc::new(memory::MemoryStore::new()))
        }
        "s3" => Ok(Arc::new(s3::S3Store::open(url).await?)),
        "dynamodb" => Ok(Arc::new(dynamodb::DynamoStore::open(url).await?)),
        other => Err(unknown_scheme(other, url)),
    }
}

/// Checks a store URL without opening anything (no I/O): the scheme, and for
/// `s3://` and `dynamodb://` the bucket or table name, the prefix and the
/// query parameters, as [`open`] would. A `file://` URL is only checked for
/// naming a directory; whether that directory can be used shows at [`open`].
///
/// ```
/// use ifmatch::store::validate_url;
/// assert!(validate_url("s3://my-bucket/app?region=eu-west-1").is_ok());
/// assert!(validate_url("s3://My_Bucket").is_err());
/// assert!(validate_url("dynamodb://table?create=maybe").is_err());
/// ```
pub fn validate_url(url: &str) -> Result<()> {
    let (scheme, rest) = split_scheme(url);
    match scheme {
        "file" if rest.is_empty() => Err(Error::InvalidInput(
            "file:// needs a directory, e.g. file://./data".into(),
        )),
        "file" => Ok(()),
        "memory" => check_memory_url(url, rest),
        "s3" => s3::parse_url(url).map(drop),
        "dynamodb" => dynamodb::parse_url(url).map(drop),
        other => Err(unknown_scheme(other, url)),
    }
}

/// The scheme of a store URL and the rest; no scheme means a local directory.
fn split_scheme(url: &str) -> (&str, &str) {
    url.split_once("://").unwrap_or(("file", url))
}

fn check_memory_url(url: &str, rest: &str) -> Result<()> {
    if !rest.is_empty() && rest != "/" {
        return Err(Error::InvalidInput(format!(
            "memory:// takes no path, got {url:?}"
        )));
    }
    Ok(())
}

fn unknown_scheme(scheme: &str, url: &str) -> Error {
    Error::InvalidInput(format!(
        "unknown store scheme {scheme:?} in {url:?}: use file://DIR, memory://, s3://BUCKET[/PREFIX] or dynamodb://TABLE"
    ))
}

/// Reads a whole listing by following continuation tokens (convenience for small prefixes).
pub async fn list_all(store: &dyn Store, prefix: &str) -> Result<Vec<ListEntry>> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = store
            .list(
                prefix,
                ListPage {
                    token: token.take(),
                    limit: 1000,
                },
            )
            .await?;
        out.extend(page.entries);
        match page.next {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}

/// Checks a put's condition against the current state (shared by the local backends).
pub(crate) fn check_condition(
    key: &str,
    condition: &Condition,
    current: Option<&Version>,
) -> Result<()> {
    let ok = match (condition, current) {
        (Condition::Any, _) => true,
        (Condition::Absent, None) => true,
        (Condition::Absent, Some(_)) => false,
        (Condition::Matches(_), None) => false,
        (Condition::Matches(v), Some(c)) => v == c,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::conflict(key, condition.clone(), current.cloned()))
    }
}

/// Local backends page by key order: the token is the last key returned.
pub(crate) fn page_sorted(mut all: Vec<ListEntry>, page: &ListPage) -> Result<ListResult> {
    if page.limit == 0 {
        return Err(Error::InvalidInput(
            "list page limit must be at least 1".into(),
        ));
    }
    all.sort_by(|a, b| a.key.cmp(&b.key));
    let start = match &page.token {
        Some(t) => all.partition_point(|e| e.key.as_str() <= t.as_str()),
        None => 0,
    };
    let rest = &all[start..];
    let entries: Vec<ListEntry> = rest.iter().take(page.limit).cloned().collect();
    let next = if rest.len() > page.limit {
        entries.last().map(|e| e.key.clone())
    } else {
        None
    };
    Ok(ListResult { entries, next })
}
