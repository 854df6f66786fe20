//! How a failed S3 request becomes an [`Error`]: the classification of
//! `object_store` failures, HTTP statuses and S3 error codes (the table in
//! the [module docs](super)).
//!
//! What it guarantees: a write whose request may have reached S3 but whose
//! answer was lost is [`Error::Ambiguous`], never retried as if it had not
//! landed; a failure that certainly wrote nothing (no connection, 503, S3's
//! 409 `ConditionalRequestConflict`) is retryable; reads are safe to repeat,
//! so any transport failure of a read is retryable.

use std::error::Error as StdError;

use object_store::client::{HttpError, HttpErrorKind};

use super::S3Store;
use crate::error::Error;

/// What an operation was, for classifying its failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    /// A read (GET, HEAD, LIST): safe to repeat, so any transport failure is retryable.
    Read,
    /// A write (PUT, DELETE): a request that may have been sent makes the outcome unknown.
    Write,
}

/// S3's 409 ConditionalRequestConflict: a conditional write raced another
/// one in flight on the same key and was not applied. Retryable, never a
/// `Conflict` (which would mean "the key is not in the state you expected").
pub(super) fn conflict_409(key: &str, source: impl Into<crate::error::BoxError>) -> Error {
    Error::unavailable(
        format!(
            "S3 answered 409 (ConditionalRequestConflict) to a write of '{key}': it raced another conditional write and was not applied; retry"
        ),
        source,
    )
}

impl S3Store {
    /// Maps an `object_store` failure; see the module docs for the table.
    pub(super) fn map_err(&self, op: Op, key: &str, e: object_store::Error) -> Error {
        use object_store::Error as E;
        let text = chain_text(&e);
        if text.contains("NoSuchBucket") {
            return Error::other(
                format!(
                    "bucket {} does not exist (create it first; S3Store::create_bucket does for tests)",
                    self.bucket
                ),
                e,
            );
        }
        match &e {
            E::NotFound { .. } if op == Op::Read && !key.is_empty() => {
                return Error::not_found(key);
            }
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                return Error::other(format!("S3 refused access to bucket {}", self.bucket), e);
            }
            E::NotImplemented { .. } | E::NotSupported { .. } => {
                return Error::Unsupported(e.to_string());
            }
            _ => {}
        }
        match transport_kind(&e) {
            Some(HttpErrorKind::Connect) => {
                return Error::unavailable("cannot connect to S3", e);
            }
            Some(_) if op == Op::Write => {
                return Error::Ambiguous {
                    key: key.to_string(),
                    message: format!(
                        "the request may have reached S3 but its answer was lost: {e}"
                    ),
                };
            }
            Some(_) => return Error::unavailable("S3 request failed", e),
            None => {}
        }
        match status_in(&text) {
            Some(status) => status_error(op, key, status, &text),
            None => Error::other("S3 request failed", e),
        }
    }
}

/// The error and all its sources, joined (status codes and S3 error codes are only in the text).
pub(super) fn chain_text(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(" | ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The transport failure in an `object_store` error's sources, if it is one.
pub(super) fn transport_kind(e: &(dyn StdError + 'static)) -> Option<HttpErrorKind> {
    let mut current = Some(e);
    while let Some(c) = current {
        if let Some(h) = c.downcast_ref::<HttpError>() {
            return Some(h.kind());
        }
        current = c.source();
    }
    None
}

/// The HTTP status in an `object_store` error text ("... status code: 503 ...").
///
/// `object_store` keeps its `RetryError` (which knows the status) private, so
/// statuses it does not map to a variant of its own are only in the message.
pub(super) fn status_in(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// Maps an HTTP status that is not a condition outcome.
pub(super) fn status_error(op: Op, key: &str, status: u16, text: &str) -> Error {
    let unavailable = || Error::Unavailable {
        message: format!("S3 answered {status}: {text}"),
        source: None,
    };
    match status {
        408 | 429 | 503 => unavailable(),
        // S3's "RequestTimeout": the request body was not received in time, nothing was written.
        400 if text.contains("RequestTimeout") => unavailable(),
        501 => Error::Unsupported(format!("S3 answered 501: {text}")),
        500..=599 if op == Op::Write => Error::Ambiguous {
            key: key.to_string(),
            message: format!("S3 answered {status}; the write may or may not have landed: {text}"),
        },
        500..=599 => unavailable(),
        _ => Error::msg(format!("S3 answered {status}: {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            status_in(
                "Error performing PUT x - Server returned non-2xx status code: 503 Service Unavailable: "
            ),
            Some(503)
        );
        assert_eq!(status_in("no status here"), None);
        assert!(status_error(Op::Read, "k", 503, "").is_retryable());
        assert!(status_error(Op::Read, "k", 500, "").is_retryable());
        assert!(matches!(
            status_error(Op::Write, "k", 500, ""),
            Error::Ambiguous { .. }
        ));
        assert!(status_error(Op::Write, "k", 503, "").is_retryable());
        assert!(status_error(Op::Write, "k", 400, "<Code>RequestTimeout</Code>").is_retryable());
        assert!(matches!(
            status_error(Op::Read, "k", 400, ""),
            Error::Other { .. }
        ));
        assert!(matches!(
            status_error(Op::Write, "k", 501, ""),
            Error::Unsupported(_)
        ));
    }
}
