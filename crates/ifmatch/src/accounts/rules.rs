//! The rules for usernames, passwords and display names (see the
//! [module docs](super) for the rules themselves). Each broken rule is its
//! own [`AccountsError`] variant naming the rule.

use super::AccountsError;

/// The shortest username, in characters.
pub const USERNAME_MIN_LEN: usize = 3;
/// The longest username, in characters.
pub const USERNAME_MAX_LEN: usize = 32;
/// The shortest password accepted when one is set, in characters.
pub const PASSWORD_MIN_CHARS: usize = 8;
/// The longest password accepted anywhere, in bytes of UTF-8.
pub const PASSWORD_MAX_BYTES: usize = 1024;
/// The longest display name, in characters.
pub const NAME_MAX_CHARS: usize = 256;

/// At most 64 characters of a rejected input, for error messages.
pub(crate) fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Folds `username` to lowercase and checks the username rules (see the module docs).
///
/// ```
/// use ifmatch::accounts::{normalize_username, AccountsError};
/// assert_eq!(normalize_username("Alice.Smith").unwrap(), "alice.smith");
/// assert!(matches!(normalize_username("al"), Err(AccountsError::UsernameLength { .. })));
/// assert!(matches!(normalize_username("al ice"), Err(AccountsError::UsernameCharacter { ch: ' ', .. })));
/// assert!(matches!(normalize_username("_alice"), Err(AccountsError::UsernameStart { .. })));
/// ```
pub fn normalize_username(username: &str) -> Result<String, AccountsError> {
    let folded = username.to_ascii_lowercase();
    let len = folded.chars().count();
    if !(USERNAME_MIN_LEN..=USERNAME_MAX_LEN).contains(&len) {
        return Err(AccountsError::UsernameLength {
            username: shown(username),
            len,
            min: USERNAME_MIN_LEN,
            max: USERNAME_MAX_LEN,
        });
    }
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.' || c == '-';
    if let Some(ch) = folded.chars().find(|c| !allowed(*c)) {
        return Err(AccountsError::UsernameCharacter {
            username: shown(&folded),
            ch,
        });
    }
    match folded.chars().next() {
        Some(ch) if !(ch.is_ascii_lowercase() || ch.is_ascii_digit()) => {
            Err(AccountsError::UsernameStart {
                username: folded.clone(),
                ch,
            })
        }
        _ => Ok(folded),
    }
}

/// Checks the password rules for a new password: 8 characters to 1024 bytes.
pub fn validate_password(password: &str) -> Result<(), AccountsError> {
    check_password_max(password)?;
    let len = password.chars().count();
    if len < PASSWORD_MIN_CHARS {
        return Err(AccountsError::PasswordTooShort {
            len,
            min: PASSWORD_MIN_CHARS,
        });
    }
    Ok(())
}

pub(crate) fn check_password_max(password: &str) -> Result<(), AccountsError> {
    if password.len() > PASSWORD_MAX_BYTES {
        return Err(AccountsError::PasswordTooLong {
            len: password.len(),
            max: PASSWORD_MAX_BYTES,
        });
    }
    Ok(())
}

/// Checks the display-name rules: at most 256 characters, no control characters.
pub fn validate_name(name: &str) -> Result<(), AccountsError> {
    let len = name.chars().count();
    if len > NAME_MAX_CHARS {
        return Err(AccountsError::NameTooLong {
            len,
            max: NAME_MAX_CHARS,
        });
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(AccountsError::NameControlCharacter { code: c as u32 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_boundaries() {
        assert_eq!(normalize_username("abc").unwrap(), "abc");
        assert_eq!(normalize_username(&"a".repeat(32)).unwrap(), "a".repeat(32));
        assert_eq!(normalize_username("9lives").unwrap(), "9lives");
        assert!(normalize_username(&"a".repeat(33)).is_err());
        assert!(matches!(
            normalize_username("ab\u{e9}c"),
            Err(AccountsError::UsernameCharacter { ch: '\u{e9}', .. })
        ));
        assert!(matches!(
            normalize_username(".ab"),
            Err(AccountsError::UsernameStart { ch: '.', .. })
        ));
    }
}
