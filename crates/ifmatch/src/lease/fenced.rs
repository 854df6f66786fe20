//! Fenced writes: [`fenced_put`] stores a value on behalf of a lease holder
//! unless it was last written with a newer fencing token, and [`fenced_get`]
//! / [`FencedValue::decode`] read such a value back without its header.
//!
//! The format (a one-line header `ifmatch-fence/1 TOKEN WRITE-ID\n` in front
//! of the caller's bytes, the token and write id also in metadata) is
//! described under "Fenced values" in the [module docs](super); the HTTP
//! server's fenced PUT, DELETE and PATCH ([`crate::fence`]) use the same one.
//!
//! What it guarantees: the token check and the write are one conditional
//! write on the version read, so two fenced writers can never both pass the
//! check; a lost response is settled by this write's id, never by writing twice.

use bytes::Bytes;

use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::store::{Condition, Metadata, Object, ObjectMeta, PutOptions, Store, Version};

/// Metadata name holding the fencing token of a value written by [`fenced_put`]
/// (the same token as in the value's header).
pub const META_FENCE: &str = "ifmatch-fence";

/// Metadata name of the write id of a fenced write (to resolve lost responses).
pub const META_FENCE_WID: &str = "ifmatch-fence-wid";

/// Why a [`fenced_put`] was refused or failed, or a fenced value could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FenceError {
    /// The value was last written with a newer token: our holder's lease is gone.
    #[error(
        "fenced write to '{key}' refused: token {token} is older than the stored token {stored}"
    )]
    Stale {
        /// The key.
        key: String,
        /// The token the write carried.
        token: u64,
        /// The token stored with the value.
        stored: u64,
    },
    /// Writers with the same or older tokens kept winning the race until the budget ran out.
    #[error("fenced write to '{key}' gave up after {attempts} attempts lost to other writers")]
    Conflict {
        /// The key.
        key: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The stored fencing token (in the metadata or the value's header) is not
    /// a number, or the header is malformed.
    #[error("fenced value '{key}': bad fencing header or token: {found:?}")]
    Corrupt {
        /// The key.
        key: String,
        /// What was found (the metadata value or the start of the header).
        found: String,
    },
    /// The store failed (non-retryable, or retryable beyond the budget).
    #[error(transparent)]
    Store(#[from] Error),
}

/// The first bytes of every value written by [`fenced_put`]: the stored bytes
/// are `ifmatch-fence/1 TOKEN WRITE-ID\n` followed by the caller's bytes
/// (`TOKEN` in decimal, `WRITE-ID` 16 lowercase hex digits).
pub const FENCE_HEADER_MAGIC: &[u8] = b"ifmatch-fence/1 ";

/// The longest header [`fenced_put`] puts in front of a value (the magic, a
/// 20-digit token, a space, a 16-digit write id and a newline): a fenced value
/// may be this much smaller than the store's [`Store::max_value_size`].
pub const FENCE_HEADER_MAX_LEN: usize = FENCE_HEADER_MAGIC.len() + 20 + 1 + 16 + 1;

/// The stored bytes of a fenced value: the header, then `body`.
fn encode_fenced(token: u64, wid: &str, body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(FENCE_HEADER_MAX_LEN + body.len());
    out.extend_from_slice(FENCE_HEADER_MAGIC);
    out.extend_from_slice(format!("{token} {wid}\n").as_bytes());
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// Splits stored bytes into (token, write id, body) if they carry a fencing
/// header; `Ok(None)` if they do not start with [`FENCE_HEADER_MAGIC`].
fn decode_fenced(key: &str, stored: &Bytes) -> Result<Option<(u64, String, Bytes)>, FenceError> {
    let Some(rest) = stored.strip_prefix(FENCE_HEADER_MAGIC) else {
        return Ok(None);
    };
    let corrupt = || FenceError::Corrupt {
        key: key.to_string(),
        found: String::from_utf8_lossy(&stored[..stored.len().min(FENCE_HEADER_MAX_LEN)])
            .into_owned(),
    };
    let line_len = rest
        .iter()
        .take(FENCE_HEADER_MAX_LEN)
        .position(|&b| b == b'\n')
        .ok_or_else(corrupt)?;
    let line = std::str::from_utf8(&rest[..line_len]).map_err(|_| corrupt())?;
    let (token, wid) = line.split_once(' ').ok_or_else(corrupt)?;
    let token: u64 = token.parse().map_err(|_| corrupt())?;
    if wid.is_empty() || !wid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(corrupt());
    }
    let start = FENCE_HEADER_MAGIC.len() + line_len + 1;
    Ok(Some((token, wid.to_string(), stored.slice(start..))))
}

/// A value written by [`fenced_put`], with its fencing header taken off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FencedValue {
    /// The caller's bytes, as given to [`fenced_put`].
    pub body: Bytes,
    /// The token it was written with; `None` for a value that was not written
    /// by [`fenced_put`] (no header and no [`META_FENCE`] metadata).
    pub token: Option<u64>,
    /// Version, metadata and expiry of the stored value. Its `size` is that of
    /// the stored bytes, header included.
    pub meta: ObjectMeta,
}

impl FencedValue {
    /// Takes the fencing header off an object read from the store by other
    /// means than [`fenced_get`] (e.g. [`Store::get_if_changed`]).
    ///
    /// An object without the header is returned whole, with the token from
    /// its [`META_FENCE`] metadata if any (values written before the header
    /// existed, or written by a plain `put`).
    pub fn decode(object: Object) -> Result<Self, FenceError> {
        let Object { meta, body } = object;
        match decode_fenced(&meta.key, &body)? {
            Some((token, _wid, body)) => Ok(FencedValue {
                body,
                token: Some(token),
                meta,
            }),
            None => Ok(FencedValue {
                token: stored_token(&meta)?,
                body,
                meta,
            }),
        }
    }
}

/// Reads a value written by [`fenced_put`]: the caller's bytes without the
/// fencing header, the token and the version. A missing key is
/// `FenceError::Store(Error::NotFound { .. })`.
pub async fn fenced_get(store: &dyn Store, key: &str) -> Result<FencedValue, FenceError> {
    FencedValue::decode(store.get(key).await?)
}

/// The fencing token stored with a value (`None` if it was written without
/// one), from its metadata: a HEAD is enough. [`fenced_put`] writes the token
/// in the metadata and in the value's header in the same put, so the two agree.
pub fn stored_token(meta: &ObjectMeta) -> Result<Option<u64>, FenceError> {
    match meta.metadata.get(META_FENCE) {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| FenceError::Corrupt {
            key: meta.key.clone(),
            found: s.clone(),
        }),
    }
}

/// Writes `body` to `key` on behalf of the holder of fencing `token`, unless
/// the value was last written with a newer token.
///
/// The check and the write are one conditional write on the version read, so
/// two fenced writers can never both pass the check: the loser re-reads and
/// checks again. An equal token passes (the same holder writing again). A
/// lost response is settled by re-reading for this write's id. `metadata` is
/// stored alongside (names starting `ifmatch-` are reserved).
///
/// **The stored bytes are not `body`**: they start with a one-line header
/// carrying the token and a fresh write id ([`FENCE_HEADER_MAGIC`]), so that
/// every fenced write changes the version on every backend. On S3 a version
/// is the ETag, a hash of the bytes alone: were the token only in metadata, a
/// newer holder rewriting the same bytes would leave the version unchanged
/// and an older holder's write conditional on it would still land. Read the
/// value back with [`fenced_get`] (or [`FencedValue::decode`]), which strips
/// the header. The token is also put in the metadata ([`META_FENCE`]), so
/// the check needs only a HEAD. The header takes up to
/// [`FENCE_HEADER_MAX_LEN`] bytes of the store's size limit.
pub async fn fenced_put(
    store: &dyn Store,
    key: &str,
    body: Bytes,
    token: u64,
    metadata: Metadata,
    policy: &RetryPolicy,
) -> Result<Version, FenceError> {
    let wid = format!("{:016x}", policy.rng.next_u64());
    let stored = encode_fenced(token, &wid, &body);
    let mut attempts = policy.start();
    let head = |key: &str| {
        let key = key.to_string();
        async move {
            policy
                .run(|| async {
                    match store.head(&key).await {
                        Ok(m) => Ok(Some(m)),
                        Err(Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                })
                .await
        }
    };
    loop {
        attempts.begin();
        let current = head(key).await?;
        let condition = match &current {
            None => Condition::Absent,
            Some(meta) => {
                if let Some(stored) = stored_token(meta)?
                    && stored > token
                {
                    return Err(FenceError::Stale {
                        key: key.to_string(),
                        token,
                        stored,
                    });
                }
                Condition::Matches(meta.version.clone())
            }
        };
        let mut md = metadata.clone();
        md.insert(META_FENCE.into(), token.to_string());
        md.insert(META_FENCE_WID.into(), wid.clone());
        let opts = PutOptions {
            condition,
            metadata: md,
            expires_at: None,
        };
        let transient = match store.put(key, stored.clone(), opts).await {
            Ok(v) => return Ok(v),
            Err(Error::Conflict { .. } | Error::NotFound { .. }) => None,
            Err(Error::Ambiguous { .. }) => {
                if let Some(meta) = head(key).await?
                    && meta.metadata.get(META_FENCE_WID) == Some(&wid)
                {
                    return Ok(meta.version);
                }
                None
            }
            Err(e) if e.is_retryable() => Some(e),
            Err(e) => return Err(FenceError::Store(e)),
        };
        if !attempts.backoff().await {
            return Err(match transient {
                Some(e) => FenceError::Store(crate::retry::exhausted(e, attempts.made())),
                None => FenceError::Conflict {
                    key: key.to_string(),
                    attempts: attempts.made(),
                },
            });
        }
    }
}
