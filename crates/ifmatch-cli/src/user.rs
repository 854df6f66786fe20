//! `ifmatch user ...`: user accounts ([`ifmatch::accounts`]).
//!
//! Passwords come from standard input: typed without echo on a terminal
//! (twice, to catch a typo), or one line from a pipe. The rules (username,
//! display name, password length) are the library's; hashes never leave it,
//! so nothing here can print one. `user migrate` moves the account records
//! of stores written before account ids ([`Accounts::migrate_legacy`]).

use std::io::{BufRead, IsTerminal};

use clap::{Args, Subcommand};
use ifmatch::DynStore;
use ifmatch::accounts::{self, Accounts, AccountsConfig, AccountsError, MAX_PAGE_LIMIT};

use crate::commands::{render_time, write_stdout};
use crate::exit::Failure;

/// The `user` subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user (the password is read from standard input).
    #[command(long_about = "\
Create the user USERNAME with display name --name, only if the username is
free (exit 3 if it exists). The password is read from standard input: typed
twice without echo on a terminal, or one line from a pipe. Usernames are 3-32
characters of a-z, 0-9, '_', '.', '-' (letters fold to lowercase); passwords
have at least 8 characters. A broken rule exits 2. Prints the username.

Example:
  printf '%s\\n' \"$PASSWORD\" | ifmatch user add alice --name 'Alice Smith'")]
    Add(UserAddArgs),

    /// Change a user's password (read from standard input).
    #[command(long_about = "\
Set a new password for USERNAME, read from standard input like 'user add'
(typed twice without echo on a terminal, one line from a pipe). Exits 4 if
there is no such user.

Example:
  ifmatch user passwd alice")]
    Passwd(UserPasswdArgs),

    /// Delete a user.
    #[command(long_about = "\
Delete the user USERNAME (a conditional delete of the record as read). Exits 4
if there is no such user.

Example:
  ifmatch user rm alice")]
    Rm(UserRmArgs),

    /// List users, one per line: USERNAME, NAME, CREATED, ID (tab-separated).
    #[command(long_about = "\
List users in username order, one per line:
USERNAME<TAB>NAME<TAB>CREATED_AT<TAB>ACCOUNT_ID (RFC 3339 time). Follows page
tokens to the end, or stops after --limit users. Never prints a password hash.

Example:
  ifmatch user ls --limit 20")]
    Ls(UserLsArgs),

    /// Show a user: account id, data prefix, revision, times.
    #[command(long_about = "\
Show the user USERNAME as 'name: value' lines: 'id' (the immutable account
id: the user's tenant database is named by it), 'prefix' (users/ID/, where
the user's own objects, leases and idempotency keys live), 'name',
'revision' (every change to the account moves it, and ends its sessions),
'created_at' and 'updated_at'. Exits 4 if there is no such user.

Example:
  ifmatch user show alice")]
    Show(UserShowArgs),

    /// Move account records written before account ids to accounts/.
    #[command(long_about = "\
Move every account record of the format written before account ids
(users/USERNAME, format 1; also seed 003's items copied there) to
accounts/USERNAME, with the username as its account id, so the account keeps
its objects, leases, idempotency keys and tenant database. Each record moves
with two conditional writes (create the new one, then delete the old one at
the version copied). Safe to run again: it finishes an interrupted run and
changes nothing once done. A name whose accounts/ record belongs to another
account is left alone and reported. Stop servers of the previous version
first. Sessions from before the migration end (users log in again).

Prints one line per account: 'migrated NAME', 'finished NAME' (moved by an
earlier run that was interrupted) or 'skipped NAME: REASON', then a summary.
With --dry-run nothing is written. Exits 1 if any record was skipped.

Example:
  ifmatch user migrate --dry-run && ifmatch user migrate")]
    Migrate(UserMigrateArgs),
}

/// Arguments of `user show`.
#[derive(Debug, Args)]
pub struct UserShowArgs {
    /// The username.
    pub username: String,
}

/// Arguments of `user migrate`.
#[derive(Debug, Args)]
pub struct UserMigrateArgs {
    /// Report what would move, write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `user add`.
#[derive(Debug, Args)]
pub struct UserAddArgs {
    /// The username (folded to lowercase).
    pub username: String,
    /// The display name.
    #[arg(long, value_name = "NAME")]
    pub name: String,
}

/// Arguments of `user passwd`.
#[derive(Debug, Args)]
pub struct UserPasswdArgs {
    /// The username.
    pub username: String,
}

/// Arguments of `user rm`.
#[derive(Debug, Args)]
pub struct UserRmArgs {
    /// The username.
    pub username: String,
}

/// Arguments of `user ls`.
#[derive(Debug, Args)]
pub struct UserLsArgs {
    /// Stop after N users.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Users asked for per page (hidden: for tests of page tokens).
    #[arg(long, hide = true, default_value_t = MAX_PAGE_LIMIT as u64, value_parser = clap::value_parser!(u64).range(1..=MAX_PAGE_LIMIT as u64))]
    pub page_size: u64,
}

/// Runs a `user` subcommand.
pub async fn run(store: &DynStore, cmd: &UserCommand) -> Result<(), Failure> {
    let accounts = Accounts::new(store.clone(), AccountsConfig::default())?;
    match cmd {
        UserCommand::Add(a) => {
            // Refuse a bad username or name before asking for a password.
            accounts::normalize_username(&a.username)?;
            accounts::validate_name(&a.name)?;
            let password = read_password()?;
            let user = accounts.create(&a.username, &a.name, &password).await?;
            write_stdout(format!("{}\n", user.username).as_bytes())
        }
        UserCommand::Passwd(a) => {
            let username = accounts::normalize_username(&a.username)?;
            if accounts.get(&username).await?.is_none() {
                return Err(AccountsError::UserNotFound { username }.into());
            }
            let password = read_password()?;
            accounts.set_password(&username, &password).await?;
            Ok(())
        }
        UserCommand::Rm(a) => {
            let username = accounts::normalize_username(&a.username)?;
            if accounts.delete(&username).await? {
                Ok(())
            } else {
                Err(AccountsError::UserNotFound { username }.into())
            }
        }
        UserCommand::Ls(a) => {
            let mut remaining = a.limit.unwrap_or(u64::MAX);
            let mut token: Option<String> = None;
            let mut out = String::new();
            while remaining > 0 {
                let limit = remaining.min(a.page_size) as usize;
                let page = accounts.list(token.as_deref(), limit).await?;
                for user in page.users.iter().take(remaining as usize) {
                    out.push_str(&format!(
                        "{}\t{}\t{}\t{}\n",
                        user.username,
                        user.name,
                        render_time(user.created_at),
                        user.id
                    ));
                    remaining -= 1;
                }
                match page.next {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
            write_stdout(out.as_bytes())
        }
        UserCommand::Show(a) => {
            let username = accounts::normalize_username(&a.username)?;
            let user = accounts
                .get(&username)
                .await?
                .ok_or(AccountsError::UserNotFound { username })?;
            let out = format!(
                "id: {}\nprefix: {}\nname: {}\nrevision: {}\ncreated_at: {}\nupdated_at: {}\n",
                user.id,
                user.data_prefix(),
                user.name,
                user.revision,
                render_time(user.created_at),
                render_time(user.updated_at),
            );
            write_stdout(out.as_bytes())
        }
        UserCommand::Migrate(a) => {
            let spinner = crate::commands::spinner(if a.dry_run {
                "looking for account records to migrate (dry run)"
            } else {
                "migrating account records"
            });
            let report = accounts.migrate_legacy(a.dry_run).await;
            spinner.finish_and_clear();
            let report = report?;
            let mut out = String::new();
            for name in &report.migrated {
                out.push_str(&format!("migrated {name}\n"));
            }
            for name in &report.finished {
                out.push_str(&format!("finished {name}\n"));
            }
            for (name, why) in &report.skipped {
                out.push_str(&format!("skipped {name}: {why}\n"));
            }
            out.push_str(&format!(
                "{}{} migrated, {} finished, {} skipped ({} keys under users/ examined)\n",
                if a.dry_run { "dry run: " } else { "" },
                report.migrated.len(),
                report.finished.len(),
                report.skipped.len(),
                report.keys_examined
            ));
            write_stdout(out.as_bytes())?;
            if report.skipped.is_empty() {
                Ok(())
            } else {
                Err(Failure::Reported(crate::exit::ERROR))
            }
        }
    }
}

/// The password from standard input: without echo (twice) on a terminal, else one line.
fn read_password() -> Result<String, Failure> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = rpassword::prompt_password("Password: ")
            .map_err(|e| Failure::io("cannot read the password", e))?;
        let again = rpassword::prompt_password("Password again: ")
            .map_err(|e| Failure::io("cannot read the password", e))?;
        if first != again {
            return Err(Failure::Usage("the passwords do not match".into()));
        }
        return Ok(first);
    }
    let mut line = String::new();
    let n = stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::io("cannot read the password from standard input", e))?;
    if n == 0 {
        return Err(Failure::Usage(
            "no password on standard input (give it as one line)".into(),
        ));
    }
    // Only the line ending goes: passwords are used byte for byte.
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(line)
}
