//! `s3://`: keys as objects in an S3 bucket (AWS S3, MinIO, R2, or any store
//! that speaks S3 with conditional writes), through the `object_store` crate.
//!
//! # URL
//!
//! `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&allow_http=true]`. Keys live
//! under `PREFIX/` and the prefix is stripped again when listing. The query
//! parameters override the standard AWS environment: `AWS_REGION` /
//! `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, and the
//! credentials that `object_store`'s `AmazonS3Builder::from_env` finds. With an
//! endpoint from the URL, requests are path-style (`ENDPOINT/BUCKET/KEY`).
//! Plain `http://` endpoints are accepted on loopback (`127.0.0.0/8`,
//! `localhost`, `[::1]`) and elsewhere only with `allow_http=true` (or
//! `AWS_ALLOW_HTTP=true`).
//!
//! # Versions and conditions
//!
//! A version is the object's ETag (without its surrounding quotes). Puts use
//! `If-None-Match: *` for [`Condition::Absent`] and `If-Match: "ETAG"` for
//! [`Condition::Matches`], so the check and the write are one atomic request
//! on the server. Reads use `If-None-Match` for [`Store::get_if_changed`].
//!
//! S3 ETags of single-part uploads are content hashes (MD5, unless the bucket
//! encrypts with KMS): writing the same bytes again yields the same version,
//! and a metadata-only change does not change it. A compare-and-swap on S3
//! therefore compares *bodies*: anything that must be guarded by the version
//! belongs in the body, not only in the metadata.
//!
//! # Deletes
//!
//! `object_store` has no conditional delete, but S3 (and moto) accept
//! `If-Match` on `DeleteObject`. So this backend signs every `DELETE` itself
//! with `object_store`'s public [`AwsAuthorizer`], using an [`AwsCredential`]
//! from the very credential provider the `AmazonS3` client uses
//! ([`AmazonS3::credentials`]), and sends it once with `reqwest`: 204 is
//! success; for [`Condition::Matches`] 412 (another version) and 404 (no
//! object) are [`Error::Conflict`], for [`Condition::Any`] 404 is success.
//! This keeps the check and the delete one atomic request instead of a racy
//! HEAD-then-DELETE. [`Condition::Absent`] deletes nothing: it succeeds only
//! when a HEAD finds no object. A server that silently ignores `If-Match` on
//! `DELETE` would make the delete unconditional; a server that answers 501
//! gets [`Error::Unsupported`].
//!
//! # Retries
//!
//! Reads (GET, HEAD, LIST) are safe to repeat: `object_store` retries them
//! itself, with a small budget (3 retries, 50 ms to 1 s backoff) so that
//! ifmatch's own retry layer, with its deadline and full jitter, stays in
//! charge. **Writes and deletes are sent exactly once**, conditional or not:
//! a re-send after a lost answer can land after another write that landed in
//! between (a blind PUT then overwrites a compare-and-swap write, a blind
//! DELETE removes a value created meanwhile), and a conditional re-send
//! comes back 412 for our own write. A lost answer is [`Error::Ambiguous`]
//! instead, which the primitives settle (see [`crate::update`]).
//!
//! # Errors
//!
//! 404 → [`Error::NotFound`]; 412, 304 and "no object" under `If-Match` →
//! [`Error::Conflict`] (with a best-effort HEAD filling in the current
//! version); **409 ConditionalRequestConflict** (S3's answer to a
//! conditional write racing another on the same key: nothing was written) →
//! [`Error::Unavailable`], retryable, never a conflict; connection failures,
//! timeouts on reads, 5xx, 429 → [`Error::Unavailable`]; a write whose
//! request may have reached S3 but whose answer was lost (timeout, reset
//! connection, 500/502/504) → [`Error::Ambiguous`]; 401/403 and other client
//! errors → [`Error::Other`].

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use http::header::{HeaderMap, IF_MATCH};
use object_store::aws::{
    AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer, AwsCredential, S3ConditionalPut,
};
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path;
use object_store::{
    Attributes, BackoffConfig, ClientConfigKey, GetOptions, ObjectStore, PutMode, PutPayload,
    RetryConfig, UpdateVersion,
};

use super::{
    Condition, Fetch, ListEntry, ListPage, ListResult, Object, ObjectMeta, PutOptions, Store,
    Version,
};
use crate::error::{Error, Result};
use crate::key::{MAX_KEY_BYTES, validate_key, validate_metadata, validate_prefix};

mod encoding;
mod errors;
mod urls;

use encoding::{
    EXPIRES_METADATA, attributes_from_metadata, encode_key, header_etag, metadata_from_attributes,
    version_from_etag,
};
use errors::{Op, chain_text, conflict_409, status_error, status_in};
pub(super) use urls::parse_url;
use urls::{is_loopback, parse_bool};

/// The IAM actions the [`Store`] calls of this backend need on objects
/// (resource `arn:aws:s3:::BUCKET/PREFIX/*`): GET and HEAD are `s3:GetObject`,
/// the conditional PUT `s3:PutObject`, the signed conditional DELETE
/// `s3:DeleteObject`. `deploy/aws/template.yaml` grants exactly these, and the
/// server crate's `aws_template` test records the requests every `Store` call
/// sends and fails on one that needs an action not listed here.
pub const IAM_OBJECT_ACTIONS: &[&str] = &["s3:GetObject", "s3:PutObject", "s3:DeleteObject"];

/// The IAM actions the [`Store`] calls of this backend need on the bucket
/// (resource `arn:aws:s3:::BUCKET`, condition `s3:prefix` = `PREFIX/*`):
/// `ListObjectsV2` for [`Store::list`]. [`S3Store::create_bucket`] is not a
/// `Store` call (tests and first-time setup only) and is not listed.
pub const IAM_BUCKET_ACTIONS: &[&str] = &["s3:ListBucket"];

/// The largest value a single S3 `PutObject` accepts: 5 GiB.
pub const MAX_VALUE_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// The most keys S3 returns in one `ListObjectsV2` page.
const S3_MAX_KEYS: usize = 1000;

/// Requests that need the response to decide must finish within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connecting must succeed within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A store on an S3 bucket (or an S3-compatible service); see the module docs.
#[derive(Debug)]
pub struct S3Store {
    /// The URL it was opened with, for [`Store::describe`].
    url: String,
    /// The bucket name.
    bucket: String,
    /// `PREFIX/`, or empty for the bucket root.
    prefix: String,
    /// Reads and listings (with a small retry budget).
    store: AmazonS3,
    /// Puts: the same settings and credentials, but no retries (each is sent once).
    cas: AmazonS3,
    /// Requests `object_store` cannot make (conditional delete, bucket creation).
    http: reqwest::Client,
    /// `https://host/BUCKET` (path-style) or `https://BUCKET.host` (virtual-hosted).
    bucket_endpoint: String,
    /// The signing region.
    region: String,
    /// Whether requests carry `x-amz-request-payer: requester`.
    request_payer: bool,
    /// Whether requests go unsigned (`AWS_SKIP_SIGNATURE`, public buckets).
    skip_signature: bool,
}

impl S3Store {
    /// Opens `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&allow_http=true]`.
    ///
    /// Nothing is sent yet: a missing bucket or bad credentials show up on the
    /// first request. Unknown query parameters, a bad bucket name or prefix,
    /// and an `http://` endpoint off loopback without `allow_http=true` are
    /// [`Error::InvalidInput`].
    pub async fn open(url: &str) -> Result<S3Store> {
        let parsed = parse_url(url)?;
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&parsed.bucket)
            .with_conditional_put(S3ConditionalPut::ETagMatch);
        if let Some(region) = &parsed.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &parsed.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_config(AmazonS3ConfigKey::S3Endpoint, endpoint)
                .with_virtual_hosted_style_request(false);
        }
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint))
            .map(|e| e.trim_end_matches('/').to_string());
        let config_bool = |key: AmazonS3ConfigKey| {
            builder
                .get_config_value(&key)
                .is_some_and(|v| parse_bool(&v).unwrap_or(v.eq_ignore_ascii_case("requester")))
        };
        let env_allow_http = config_bool(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp));
        let virtual_hosted = config_bool(AmazonS3ConfigKey::VirtualHostedStyleRequest);
        let request_payer = config_bool(AmazonS3ConfigKey::RequestPayer);
        let skip_signature = config_bool(AmazonS3ConfigKey::SkipSignature);
        let region = builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .unwrap_or_else(|| "us-east-1".to_string());

        let mut allow_http = match parsed.allow_http {
            Some(v) => v,
            None => env_allow_http,
        };
        if let Some(endpoint) = &endpoint {
            let parsed_endpoint = url::Url::parse(endpoint).map_err(|e| {
                Error::InvalidInput(format!("S3 endpoint {endpoint:?} is not a URL: {e}"))
            })?;
            allow_http |= is_loopback(&parsed_endpoint);
            if parsed_endpoint.scheme() == "http" && !allow_http {
                return Err(Error::InvalidInput(format!(
                    "S3 endpoint {endpoint} uses plain http off loopback: add allow_http=true to the store URL if that is intended"
                )));
            }
        }
        builder = builder.with_allow_http(allow_http);

        // Same computation as object_store's builder, which keeps it private.
        let bucket = &parsed.bucket;
        let bucket_endpoint = match (&endpoint, virtual_hosted) {
            (Some(e), true) => e.clone(),
            (Some(e), false) => format!("{e}/{bucket}"),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };

        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: Duration::from_secs(15),
        };
        let store = builder
            .clone()
            .with_retry(retry.clone())
            .build()
            .map_err(|e| Error::InvalidInput(format!("cannot configure S3 for {url:?}: {e}")))?;
        let cas = builder
            .with_retry(RetryConfig {
                max_retries: 0,
                ..retry
            })
            .with_credentials(store.credentials().clone())
            .build()
            .map_err(|e| Error::InvalidInput(format!("cannot configure S3 for {url:?}: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .https_only(!allow_http)
            .build()
            .map_err(|e| Error::other("cannot build an HTTP client for S3", e))?;
        let prefix = if parsed.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", parsed.prefix)
        };
        Ok(S3Store {
            url: url.to_string(),
            bucket: parsed.bucket,
            prefix,
            store,
            cas,
            http,
            bucket_endpoint,
            region,
            request_payer,
            skip_signature,
        })
    }

    /// Creates the bucket (a signed `PUT /BUCKET`); succeeds if it exists and is ours.
    ///
    /// Meant for tests against emulators and for first-time setup: ifmatch never
    /// creates buckets on its own.
    pub async fn create_bucket(&self) -> Result<()> {
        let body = if self.region == "us-east-1" {
            Bytes::new()
        } else {
            Bytes::from(format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.region
            ))
        };
        let response = self
            .send_signed(Method::PUT, &self.bucket_endpoint, HeaderMap::new(), body)
            .await?
            .map_err(|e| Error::unavailable(format!("creating bucket {}", self.bucket), e))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        match status {
            200..=299 => Ok(()),
            409 if text.contains("BucketAlreadyOwnedByYou") => Ok(()),
            _ => Err(status_error(
                Op::Read,
                "",
                status,
                &format!("creating bucket {}: HTTP {status}: {text}", self.bucket),
            )),
        }
    }

    /// The object key of `key` (validated) in the bucket.
    fn object_key(&self, key: &str) -> Result<String> {
        validate_key(key)?;
        let full = format!("{}{key}", self.prefix);
        if full.len() > MAX_KEY_BYTES {
            return Err(Error::InvalidKey {
                key: key.chars().take(80).collect(),
                reason: format!(
                    "with this store's prefix {:?} the object key would be {} bytes, more than S3's {MAX_KEY_BYTES}",
                    self.prefix,
                    full.len()
                ),
            });
        }
        Ok(full)
    }

    /// The `object_store` path of `key` (validated). `Path::parse` keeps the
    /// key byte for byte (no percent-encoding), so S3 sees exactly our key.
    fn path(&self, key: &str) -> Result<Path> {
        let full = self.object_key(key)?;
        Path::parse(&full).map_err(|e| Error::InvalidKey {
            key: key.chars().take(80).collect(),
            reason: e.to_string(),
        })
    }

    /// Turns `object_store`'s metadata and attributes into ours.
    fn meta(
        &self,
        key: &str,
        meta: &object_store::ObjectMeta,
        attrs: &Attributes,
    ) -> Result<ObjectMeta> {
        let etag = meta
            .e_tag
            .as_deref()
            .ok_or_else(|| Error::msg(format!("S3 returned no ETag for key '{key}'")))?;
        let (metadata, expires_at) = metadata_from_attributes(attrs);
        Ok(ObjectMeta {
            key: key.to_string(),
            version: version_from_etag(etag),
            size: meta.size,
            metadata,
            expires_at,
        })
    }

    /// The current version of `key`, if a HEAD can tell (for [`Error::Conflict`]'s `actual`).
    async fn current_version(&self, key: &str) -> Option<Version> {
        self.head(key).await.ok().map(|m| m.version)
    }

    /// A conflict on `key`, with the current version filled in by a best-effort HEAD.
    async fn conflict(&self, key: &str, expected: Condition) -> Error {
        let actual = self.current_version(key).await;
        Error::conflict(key, expected, actual)
    }

    /// Signs a request to `url` with the store's credentials and sends it.
    ///
    /// The outer error means nothing was sent (credentials, signing); the inner
    /// one is reqwest's transport error.
    async fn send_signed(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<std::result::Result<reqwest::Response, reqwest::Error>> {
        let mut request: HttpRequest = http::Request::builder()
            .method(method.clone())
            .uri(url)
            .body(HttpRequestBody::from(body.clone()))
            .map_err(|e| Error::other(format!("cannot build a request for {url}"), e))?;
        request.headers_mut().extend(headers);
        if !self.skip_signature {
            let credential: std::sync::Arc<AwsCredential> = self
                .store
                .credentials()
                .get_credential()
                .await
                .map_err(|e| self.map_err(Op::Read, "", e))?;
            AwsAuthorizer::new(&credential, "s3", &self.region)
                .with_request_payer(self.request_payer)
                .try_authorize(&mut request, None)
                .map_err(|e| Error::other("cannot sign an S3 request", e))?;
        }
        let (parts, _) = request.into_parts();
        Ok(self
            .http
            .request(method, url)
            .headers(parts.headers)
            .body(body)
            .send()
            .await)
    }

    /// `DELETE`, with `If-Match` when `version` is given, signed by hand and
    /// sent once; see the module docs.
    async fn delete_signed(&self, key: &str, version: Option<&Version>) -> Result<()> {
        let expected = version.map_or(Condition::Any, |v| Condition::Matches(v.clone()));
        let object_key = self.object_key(key)?;
        let mut headers = HeaderMap::new();
        if let Some(v) = version {
            let Some(if_match) = header_etag(v) else {
                // Not a well-formed ETag, so it cannot be the current one.
                return Err(self.conflict(key, expected).await);
            };
            headers.insert(IF_MATCH, if_match);
        }
        let url = format!("{}/{}", self.bucket_endpoint, encode_key(&object_key));
        let response = match self
            .send_signed(Method::DELETE, &url, headers, Bytes::new())
            .await?
        {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Err(Error::unavailable("cannot connect to S3", e)),
            Err(e) => {
                return Err(Error::Ambiguous {
                    key: key.to_string(),
                    message: format!("the delete may have reached S3 but its answer was lost: {e}"),
                });
            }
        };
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        match status {
            404 if text.contains("NoSuchBucket") => Err(Error::msg(format!(
                "bucket {} does not exist (create it first)",
                self.bucket
            ))),
            // Deleting an absent key unconditionally is done already.
            404 if version.is_none() => Ok(()),
            404 => Err(Error::conflict(key, expected, None)),
            412 => Err(self.conflict(key, expected).await),
            409 => Err(conflict_409(key, format!("HTTP 409: {text}"))),
            501 => Err(Error::Unsupported(format!(
                "this S3 endpoint does not support If-Match on DELETE: {text}"
            ))),
            _ => Err(status_error(
                Op::Write,
                key,
                status,
                &format!("delete: HTTP {status}: {text}"),
            )),
        }
    }
}

#[async_trait]
impl Store for S3Store {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn max_value_size(&self) -> Option<u64> {
        Some(MAX_VALUE_SIZE)
    }

    async fn get(&self, key: &str) -> Result<Object> {
        let path = self.path(key)?;
        let result = self
            .store
            .get_opts(&path, GetOptions::default())
            .await
            .map_err(|e| self.map_err(Op::Read, key, e))?;
        let meta = self.meta(key, &result.meta, &result.attributes)?;
        let body = result
            .bytes()
            .await
            .map_err(|e| self.map_err(Op::Read, key, e))?;
        Ok(Object { meta, body })
    }

    async fn get_if_changed(&self, key: &str, known: &Version) -> Result<Fetch> {
        let path = self.path(key)?;
        let Some(if_none_match) = header_etag(known) else {
            // Not a well-formed ETag, so it cannot be the current one.
            return self.get(key).await.map(Fetch::Changed);
        };
        let options = GetOptions {
            if_none_match: Some(if_none_match.to_str().unwrap_or_default().to_string()),
            ..GetOptions::default()
        };
        let result = match self.store.get_opts(&path, options).await {
            Ok(r) => r,
            Err(object_store::Error::NotModified { .. }) => return Ok(Fetch::Unchanged),
            Err(e) => return Err(self.map_err(Op::Read, key, e)),
        };
        let meta = self.meta(key, &result.meta, &result.attributes)?;
        let body = result
            .bytes()
            .await
            .map_err(|e| self.map_err(Op::Read, key, e))?;
        Ok(Fetch::Changed(Object { meta, body }))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let path = self.path(key)?;
        let options = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&path, options)
            .await
            .map_err(|e| self.map_err(Op::Read, key, e))?;
        self.meta(key, &result.meta, &result.attributes)
    }

    /// Writes with `If-None-Match: *` / `If-Match` as the condition asks.
    ///
    /// Conditional puts go through a client with `object_store`'s internal
    /// retries switched off. A retry cannot be made safe after the fact: if
    /// the first attempt landed and only its answer was lost (a timeout, a
    /// reset, a 500 from a proxy), the retry finds the key no longer absent or
    /// no longer at the old ETag and gets 412 — our own write reported as a
    /// [`Error::Conflict`], and the caller would re-read and apply its change
    /// a second time. `object_store` does not expose whether it retried, so
    /// instead of guessing from its error text, the conditional client sends
    /// each request once: a lost answer becomes [`Error::Ambiguous`], which
    /// the update loop resolves by reading back its write id, and a request
    /// that never left (connection refused, 503 SlowDown, 409
    /// ConditionalRequestConflict) becomes [`Error::Unavailable`] for
    /// ifmatch's own retry layer. Unconditional puts are sent once too: a
    /// blind re-send after a lost answer could land after a compare-and-swap
    /// write that landed in between, and overwrite it.
    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<Version> {
        let path = self.path(key)?;
        validate_metadata(&opts.metadata)?;
        if opts.metadata.contains_key(EXPIRES_METADATA) {
            return Err(Error::InvalidInput(format!(
                "metadata name {EXPIRES_METADATA:?} is reserved for the expiry; use PutOptions::with_expiry"
            )));
        }
        let size = body.len() as u64;
        if size > MAX_VALUE_SIZE {
            return Err(Error::TooLarge {
                key: key.to_string(),
                size,
                limit: MAX_VALUE_SIZE,
            });
        }
        let (mode, client) = match &opts.condition {
            Condition::Any => (PutMode::Overwrite, &self.cas),
            Condition::Absent => (PutMode::Create, &self.cas),
            Condition::Matches(v) => {
                let Some(etag) = header_etag(v) else {
                    // Not a well-formed ETag, so it cannot be the current one.
                    return Err(self.conflict(key, opts.condition.clone()).await);
                };
                let update = UpdateVersion {
                    e_tag: Some(etag.to_str().unwrap_or_default().to_string()),
                    version: None,
                };
                (PutMode::Update(update), &self.cas)
            }
        };
        let options = object_store::PutOptions {
            mode,
            attributes: attributes_from_metadata(&opts.metadata, opts.expires_at),
            ..Default::default()
        };
        match client
            .put_opts(&path, PutPayload::from_bytes(body), options)
            .await
        {
            Ok(result) => match result.e_tag {
                Some(etag) => Ok(version_from_etag(&etag)),
                None => Err(Error::msg(format!(
                    "S3 accepted the write of key '{key}' but returned no ETag"
                ))),
            },
            Err(e) => {
                use object_store::Error as E;
                let text = chain_text(&e);
                if status_in(&text) == Some(409) {
                    // S3's 409 ConditionalRequestConflict: this write raced
                    // another one on the key and was not applied. Retryable.
                    return Err(conflict_409(key, e));
                }
                let conditional = opts.condition != Condition::Any;
                let lost_condition = matches!(
                    e,
                    E::Precondition { .. } | E::AlreadyExists { .. } | E::NotModified { .. }
                ) || (matches!(e, E::NotFound { .. })
                    && matches!(opts.condition, Condition::Matches(_)));
                if conditional && lost_condition && !text.contains("NoSuchBucket") {
                    Err(self.conflict(key, opts.condition).await)
                } else {
                    Err(self.map_err(Op::Write, key, e))
                }
            }
        }
    }

    async fn delete(&self, key: &str, condition: Condition) -> Result<()> {
        self.path(key)?;
        match &condition {
            Condition::Any => self.delete_signed(key, None).await,
            Condition::Absent => match self.head(key).await {
                Ok(meta) => Err(Error::conflict(key, condition, Some(meta.version))),
                Err(Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            },
            Condition::Matches(v) => self.delete_signed(key, Some(v)).await,
        }
    }

    async fn list(&self, prefix: &str, page: ListPage) -> Result<ListResult> {
        validate_prefix(prefix)?;
        if page.limit == 0 {
            return Err(Error::InvalidInput(
                "list page limit must be at least 1".into(),
            ));
        }
        let full_prefix = format!("{}{prefix}", self.prefix);
        // The token is the last key returned; S3's start-after takes it from there.
        let mut offset = page.token.as_ref().map(|t| format!("{}{t}", self.prefix));
        let mut entries = Vec::new();
        let mut last_seen: Option<String> = None;
        let more = loop {
            let want = (page.limit - entries.len()).min(S3_MAX_KEYS);
            let options = PaginatedListOptions {
                offset: offset.clone(),
                max_keys: Some(want),
                ..Default::default()
            };
            let result = self
                .store
                .list_paginated(
                    (!full_prefix.is_empty()).then_some(full_prefix.as_str()),
                    options,
                )
                .await
                .map_err(|e| self.map_err(Op::Read, "", e))?;
            let truncated = result.page_token.is_some();
            for object in result.result.objects {
                let full = object.location.as_ref();
                let Some(key) = full.strip_prefix(&self.prefix) else {
                    continue;
                };
                last_seen = Some(key.to_string());
                if validate_key(key).is_err() {
                    // An object written by another tool under a name ifmatch cannot use.
                    continue;
                }
                let version = match object.e_tag.as_deref() {
                    Some(etag) => version_from_etag(etag),
                    None => continue,
                };
                entries.push(ListEntry {
                    key: key.to_string(),
                    version,
                    size: object.size,
                });
            }
            if !truncated {
                break false;
            }
            if entries.len() >= page.limit {
                break true;
            }
            match &last_seen {
                Some(k) => offset = Some(format!("{}{k}", self.prefix)),
                // Truncated yet empty: nothing to continue from.
                None => break false,
            }
        };
        let next = if more { last_seen } else { None };
        Ok(ListResult { entries, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn http_only_on_loopback_unless_allowed() {
        for url in [
            "s3://bucket?endpoint=http://127.0.0.1:4566",
            "s3://bucket?endpoint=http://127.1.2.3:4566",
            "s3://bucket?endpoint=http://localhost:4566",
            "s3://bucket?endpoint=http://[::1]:4566",
            "s3://bucket?endpoint=http://minio.internal:9000&allow_http=true",
            "s3://bucket?endpoint=https://minio.internal:9000",
        ] {
            let store = S3Store::open(url).await;
            assert!(store.is_ok(), "{url}: {:?}", store.err());
        }
        let err = S3Store::open("s3://bucket?endpoint=http://minio.internal:9000")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput(m) if m.contains("allow_http")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn path_style_with_endpoint_and_prefix() {
        let s = S3Store::open("s3://bucket/some/prefix/?endpoint=http://127.0.0.1:9/")
            .await
            .unwrap();
        assert_eq!(s.bucket_endpoint, "http://127.0.0.1:9/bucket");
        assert_eq!(s.prefix, "some/prefix/");
        assert_eq!(s.object_key("k").unwrap(), "some/prefix/k");
        assert_eq!(s.max_value_size(), Some(5 << 30));
        // The prefix counts against S3's key length limit.
        let long = "k".repeat(MAX_KEY_BYTES);
        assert!(matches!(s.object_key(&long), Err(Error::InvalidKey { .. })));
    }
}
