//! The rules for names that travel between nodes: user ids, group ids and
//! file names.
//!
//! A name is 1 to [`MAX_NAME_LEN`] bytes of printable ASCII or UTF-8 with no
//! whitespace, no control characters and no path separators, and is not `.`
//! or `..`. The client and the tracker both enforce them, so a name that came
//! over the network can be used as a file name without further checks.

use thiserror::Error;

/// Longest name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Longest password, in bytes.
pub const MAX_PASSWORD_LEN: usize = 256;

/// What kind of name is being checked, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A user id.
    User,
    /// A group id.
    Group,
    /// A file name within a group.
    File,
}

impl NameKind {
    fn as_str(self) -> &'static str {
        match self {
            NameKind::User => "user id",
            NameKind::Group => "group id",
            NameKind::File => "file name",
        }
    }
}

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{} must not be empty", .0.as_str())]
    Empty(NameKind),
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("{} is longer than {MAX_NAME_LEN} bytes", .0.as_str())]
    TooLong(NameKind),
    /// The name holds whitespace, a control character or a path separator,
    /// or is `.` or `..`.
    #[error("{kind} {name:?} may not contain whitespace, control characters or '/' '\\', nor be '.' or '..'", kind = .0.as_str(), name = .1)]
    BadChar(NameKind, String),
}

/// Checks `name` against the rules for `kind`.
pub fn validate(kind: NameKind, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty(kind));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(kind));
    }
    let bad = |c: char| c.is_whitespace() || c.is_control() || c == '/' || c == '\\';
    if name.chars().any(bad) || name == "." || name == ".." {
        return Err(NameError::BadChar(kind, name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["alice", "g-1", "report_v2.pdf", "ünïcode", ".hidden", "a".repeat(64).as_str()]
        {
            validate(NameKind::File, n).unwrap();
        }
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(validate(NameKind::User, ""), Err(NameError::Empty(NameKind::User)));
        assert_eq!(
            validate(NameKind::Group, &"a".repeat(65)),
            Err(NameError::TooLong(NameKind::Group))
        );
        for n in ["a b", "a/b", "a\\b", "..", ".", "tab\there", "nl\n", "\u{7f}"] {
            assert!(matches!(validate(NameKind::File, n), Err(NameError::BadChar(..))), "{n:?}");
        }
    }
}
