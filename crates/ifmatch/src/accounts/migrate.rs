//! Migrating format-1 account records from `users/<username>` to
//! `accounts/<username>` ([`Accounts::migrate_legacy`]; see the module docs,
//! "Format 1, and migrating it").
//!
//! Each record moves in two conditional writes through the update loop: a
//! create-if-absent of `accounts/<username>` (with the username as account
//! id), then a delete of `users/<username>` at the version that was copied.
//! An interruption between the two leaves both; the next run sees an
//! `accounts/` record with the same id, leaves it alone and deletes the old
//! one. A record changed between the copy and the delete (by an old-version
//! server still running) is read again; the copy already made wins, so stop
//! old-version servers before migrating.

use crate::error::BoxError;
use crate::store::ListPage;
use crate::update::{Decision, update};

use super::record::{LEGACY_KEY_PREFIX, Record, key_of, legacy_key_of};
use super::{Accounts, AccountsError, normalize_username};

/// What [`Accounts::migrate_legacy`] did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Accounts moved to `accounts/` by this run.
    pub migrated: Vec<String>,
    /// Accounts an earlier, interrupted run had moved: only their old record
    /// was removed.
    pub finished: Vec<String>,
    /// Format-1 records left where they are, with the reason: an `accounts/`
    /// record of another account by that name, or a record that cannot be read.
    pub skipped: Vec<(String, String)>,
    /// Keys listed under `users/` (records and user data alike).
    pub keys_examined: u64,
}

/// How many times one record is re-read when it changes under the migration.
const MAX_ROUNDS: usize = 8;

/// What happened to one record.
enum Moved {
    Migrated,
    Finished,
    Gone,
    Skipped(String),
}

impl Accounts {
    /// Moves every format-1 record at `users/<username>` to
    /// `accounts/<username>`, keeping the username as the account id (see
    /// the module docs). With `dry_run`, only reads and reports. Safe to run
    /// again, and to run from several processes at once.
    ///
    /// It lists all of `users/` (which also holds the users' data), once.
    pub async fn migrate_legacy(&self, dry_run: bool) -> Result<MigrationReport, AccountsError> {
        let mut report = MigrationReport::default();
        let mut token = None;
        loop {
            let page = self
                .config
                .retry
                .run(|| {
                    self.store.list(
                        LEGACY_KEY_PREFIX,
                        ListPage {
                            token: token.clone(),
                            limit: 1000,
                        },
                    )
                })
                .await?;
            for entry in &page.entries {
                report.keys_examined += 1;
                let Some(name) = entry.key.strip_prefix(LEGACY_KEY_PREFIX) else {
                    continue;
                };
                // Records are one segment that is a username; the rest is user data.
                if normalize_username(name).ok().as_deref() != Some(name) {
                    continue;
                }
                match self.migrate_one(name, dry_run).await? {
                    Moved::Migrated => report.migrated.push(name.to_string()),
                    Moved::Finished => report.finished.push(name.to_string()),
                    Moved::Gone => {}
                    Moved::Skipped(why) => report.skipped.push((name.to_string(), why)),
                }
            }
            match page.next {
                Some(t) => token = Some(t),
                None => return Ok(report),
            }
        }
    }

    async fn migrate_one(&self, username: &str, dry_run: bool) -> Result<Moved, AccountsError> {
        let (legacy_key, key) = (legacy_key_of(username), key_of(username));
        let mut outcome = Moved::Gone;
        for _ in 0..MAX_ROUNDS {
            let Some(old) = self.fetch(&legacy_key).await? else {
                return Ok(outcome);
            };
            let record = match Record::parse_legacy(&legacy_key, username, &old.body) {
                Ok(r) => r,
                Err(e) => return Ok(Moved::Skipped(e.to_string())),
            };
            let body = record.to_bytes()?;
            let other_account = |existing: &Record| {
                format!(
                    "'{key}' holds another account (id {}), registered before the migration",
                    existing.id
                )
            };
            if dry_run {
                return Ok(match self.fetch(&key).await? {
                    None => Moved::Migrated,
                    Some(o) => match Record::parse(&key, username, &o.body) {
                        Ok(existing) if existing.id == username => Moved::Finished,
                        Ok(existing) => Moved::Skipped(other_account(&existing)),
                        Err(e) => Moved::Skipped(e.to_string()),
                    },
                });
            }
            let copied = update(&*self.store, &key, &self.config.retry, |current| {
                let Some(current) = current else {
                    return Ok(Decision::write(body.clone()));
                };
                let existing = Record::parse(&key, username, &current.body)?;
                if existing.id == username {
                    Ok(Decision::Keep)
                } else {
                    Err(BoxError::from(SkipReason(other_account(&existing))))
                }
            })
            .await;
            match copied {
                Ok(u) if u.changed => outcome = Moved::Migrated,
                Ok(_) => {
                    if !matches!(outcome, Moved::Migrated) {
                        outcome = Moved::Finished;
                    }
                }
                Err(crate::update::UpdateError::Aborted { source, .. })
                    if source.is::<SkipReason>() =>
                {
                    return Ok(Moved::Skipped(source.to_string()));
                }
                Err(e) => return Err(e.into()),
            }
            let copied_version = old.meta.version;
            let removed = update(&*self.store, &legacy_key, &self.config.retry, |current| {
                Ok(match current {
                    Some(o) if o.meta.version == copied_version => Decision::Delete,
                    _ => Decision::Keep,
                })
            })
            .await?;
            if removed.changed {
                return Ok(outcome);
            }
            // Gone (another migration removed it) or changed: look again.
        }
        Ok(Moved::Skipped(format!(
            "'{legacy_key}' kept changing during the migration ({MAX_ROUNDS} rounds)"
        )))
    }
}

/// Why a record is left alone (carried through the update loop's error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SkipReason(String);
