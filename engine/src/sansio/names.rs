//! The rules for names that travel between nodes: user ids, group ids and
//! file names.
//!
//! A user or group id is 1 to [`MAX_NAME_LEN`] bytes of printable ASCII or
//! UTF-8 with no whitespace, no control characters and no path separators,
//! and is not `.` or `..`.
//!
//! A file name is a relative path (`photos/2026/a.jpg`): 1 to
//! [`MAX_FILE_NAME_LEN`] bytes of components joined by single `/`, each
//! component 1 to [`MAX_COMPONENT_LEN`] bytes obeying the rules above (so no
//! empty component, no leading or trailing `/`, no `.` or `..`, no `\\`).
//! The client and the tracker both enforce them, so a name that came over the
//! network can be joined under a destination directory without escaping it.

use thiserror::Error;

/// Longest name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Longest file name (a relative path), in bytes.
pub const MAX_FILE_NAME_LEN: usize = 1024;

/// Longest component of a file name, in bytes (what Linux file systems take).
pub const MAX_COMPONENT_LEN: usize = 255;

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
    fn max_len(self) -> usize {
        match self {
            NameKind::File => MAX_FILE_NAME_LEN,
            _ => MAX_NAME_LEN,
        }
    }

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
    /// The name is longer than its kind allows ([`MAX_NAME_LEN`] bytes,
    /// [`MAX_FILE_NAME_LEN`] for a file name).
    #[error("{} is longer than {} bytes", .0.as_str(), .0.max_len())]
    TooLong(NameKind),
    /// A component of a file name is longer than [`MAX_COMPONENT_LEN`] bytes.
    #[error("file name {0:?}: a component is longer than {MAX_COMPONENT_LEN} bytes")]
    ComponentTooLong(String),
    /// A file name has an empty, `.` or `..` component, or starts or ends
    /// with `/`.
    #[error("file name {0:?} must be a relative path without empty, '.' or '..' components")]
    BadPath(String),
    /// The name holds whitespace, a control character or a path separator,
    /// or is `.` or `..`.
    #[error("{kind} {name:?} may not contain whitespace, control or invisible characters or {seps}, nor be '.' or '..'", kind = .0.as_str(), name = .1, seps = if *.0 == NameKind::File { "'\\'" } else { "'/' '\\'" })]
    BadChar(NameKind, String),
    /// A new name is not in Unicode normalization form C: `cafe\u{301}`
    /// (an `e` and a combining accent) looks like `caf\u{e9}` (one
    /// character) and is another name.
    #[error("{kind} {name:?} is not in Unicode normal form C (NFC); write it as {nfc:?}", kind = .0.as_str(), name = .1, nfc = nfc(.1))]
    NotNfc(NameKind, String),
    /// A new name holds a character that reads as `/`, `\\` or `.`
    /// (`a\u{FF0F}b`, a fullwidth solidus, reads as the path `a/b`).
    #[error("{kind} {name:?} holds a character that reads as '/', '\\' or '.'", kind = .0.as_str(), name = .1)]
    LooksLikePath(NameKind, String),
}

/// Checks `name` against the rules for `kind`.
pub fn validate(kind: NameKind, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty(kind));
    }
    if name.len() > kind.max_len() {
        return Err(NameError::TooLong(kind));
    }
    let bad = |c: char| c.is_whitespace() || c.is_control() || c == '\\' || invisible(c);
    if name.chars().any(bad) || (kind != NameKind::File && name.contains('/')) {
        return Err(NameError::BadChar(kind, name.to_owned()));
    }
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(if name.contains('/') {
                NameError::BadPath(name.to_owned())
            } else {
                NameError::BadChar(kind, name.to_owned())
            });
        }
        if part.len() > MAX_COMPONENT_LEN {
            return Err(NameError::ComponentTooLong(name.to_owned()));
        }
    }
    Ok(())
}

/// Checks a name that is to be created — a user, a group, a file added to
/// a group — against the rules for `kind` and for look-alikes: it must also
/// be in Unicode normalization form C, so that two names that look the
/// same are the same bytes. ([`validate`] alone is for names that exist:
/// a file shared under another form before this rule is still fetched.)
pub fn validate_new(kind: NameKind, name: &str) -> Result<(), NameError> {
    validate(kind, name)?;
    if !unicode_normalization::is_nfc(name) {
        return Err(NameError::NotNfc(kind, name.to_owned()));
    }
    if reads_as_another_path(name) {
        return Err(NameError::LooksLikePath(kind, name.to_owned()));
    }
    Ok(())
}

/// `name` in Unicode normalization form C (composed): how a name taken
/// from a file system that decomposes (`cafe\u{301}`) is shared.
pub fn nfc(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization as _;
    if unicode_normalization::is_nfc(name) {
        name.to_owned()
    } else {
        name.nfc().collect()
    }
}

/// `text` with its combining marks written as escapes (`cafe\u{301}`): two
/// spellings of one name, shown side by side, otherwise look the same.
pub fn escaped_marks(text: &str) -> std::borrow::Cow<'_, str> {
    use unicode_normalization::char::is_combining_mark;
    if !text.chars().any(is_combining_mark) {
        return text.into();
    }
    text.chars()
        .map(|c| if is_combining_mark(c) { c.escape_unicode().collect() } else { c.to_string() })
        .collect::<String>()
        .into()
}

/// Characters that show nothing, or turn the text around them, where a
/// name is displayed: Unicode's default-ignorable code points (format
/// characters such as bidirectional controls, zero-width ones and the
/// byte-order mark; soft hyphen; variation selectors; tags; the Hangul
/// fillers) and the blank braille pattern. `report\u{202E}fdp.exe` would
/// list as `reportexe.pdf`, `a\u{200B}b` and `a\u{E0041}` as `ab` and
/// `a`, and `g\u{3164}` as `g`. A name shown by `ls` is the name that is
/// fetched.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Whether `name` reads as another path: its compatibility form (NFKC)
/// has a `/` or `\\` it does not, or a `.` or `..` component —
/// `a\u{FF0F}b` (a fullwidth solidus) reads as `a/b`, `\u{FF0E}\u{FF0E}/x`
/// as `../x`, `\u{2025}` (two dot leader) as `..` — or it holds one of the
/// slashes NFKC keeps (`a\u{2044}b`, a fraction slash), or a character
/// that reads as one or two dots anywhere (`x\u{FF0E}y` reads as `x.y`). Letters of other
/// scripts that look like Latin ones (a Cyrillic `а`) are not caught.
fn reads_as_another_path(name: &str) -> bool {
    use unicode_normalization::UnicodeNormalization as _;
    if name.is_ascii() {
        return false;
    }
    // Slashes that compatibility forms keep as they are.
    let slash_like = |c: char| {
        matches!(
            c,
            '\u{2044}' // fraction slash
                | '\u{2215}' // division slash
                | '\u{2216}' // set minus
                | '\u{2571}'..='\u{2572}' // box drawing diagonals
                | '\u{27CB}' // mathematical rising diagonal
                | '\u{27CD}' // mathematical falling diagonal
                | '\u{29F5}' // reverse solidus operator
                | '\u{29F8}'..='\u{29F9}' // big solidus, big reverse solidus
                | '\u{3033}'..='\u{3035}' // vertical kana repeat marks
                | '\u{0337}'..='\u{0338}' // combining solidus overlays
                | '\u{1735}' // Philippine single punctuation
                | '\u{2041}' // caret insertion point
                | '\u{20E5}' // combining reverse solidus overlay
                | '\u{2CC6}' // Coptic capital old Coptic esh
                | '\u{2E0D}' // right raised omission bracket
                | '\u{2E4A}' // dotted solidus
                | '\u{2E53}' // medieval exclamation mark
                | '\u{2F03}' // Kangxi radical slash
                | '\u{31D3}' // CJK stroke sp
                | '\u{4E3F}' // CJK ideograph, a slash stroke
                | '\u{1D23A}' // Greek instrumental notation symbol-47
        )
    };
    // A dot that is not one (`x\u{FF0E}y` beside `x.y`, `a\u{2025}b`): a
    // character whose compatibility form is one or two full stops. An
    // ellipsis (three) is common in titles and is let through.
    let dot_like = |c: char| {
        c != '.' && {
            let k: String = std::iter::once(c).nfkc().collect();
            matches!(k.as_str(), "." | "..")
        }
    };
    if name.chars().any(|c| slash_like(c) || dot_like(c)) {
        return true;
    }
    let k: String = name.nfkc().collect();
    k.matches('/').count() != name.matches('/').count()
        || k.contains('\\')
        || k.split('/').any(|c| c == "." || c == "..")
}

/// Whether `name` is a file name's prefix that names a directory of it
/// (`photos/` or `photos`) — what `list_files GROUP PREFIX` and `ringshare
/// get GROUP PREFIX DEST` match on whole components.
pub fn under_dir(name: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    dir.is_empty() || name.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_names_are_in_normal_form_c() {
        let composed = "caf\u{e9}/r\u{e9}sum\u{e9}.pdf";
        let decomposed = "cafe\u{301}/re\u{301}sume\u{301}.pdf";
        validate_new(NameKind::File, composed).unwrap();
        validate_new(NameKind::Group, "caf\u{e9}").unwrap();
        // An existing name in another form is still a valid name.
        validate(NameKind::File, decomposed).unwrap();
        let e = validate_new(NameKind::File, decomposed).unwrap_err();
        assert_eq!(e, NameError::NotNfc(NameKind::File, decomposed.into()));
        assert!(e.to_string().contains(&format!("write it as {composed:?}")), "{e}");
        assert!(validate_new(NameKind::User, "Ame\u{301}lie").is_err());
        assert_eq!(nfc(decomposed), composed);
        assert_eq!(nfc(composed), composed);
        // Hangul jamo compose too.
        assert_eq!(nfc("\u{1100}\u{1161}"), "\u{AC00}");
    }

    #[test]
    fn invisible_and_path_like_characters_are_refused() {
        // Shown as nothing, or as blank: tags, fillers, variation
        // selectors, the combining grapheme joiner, the blank braille cell.
        for n in [
            "a\u{E0041}",
            "g\u{3164}",
            "g\u{115F}",
            "g\u{FFA0}",
            "a\u{FE0F}",
            "a\u{034F}b",
            "a\u{2800}",
            "a\u{180B}",
            "a\u{1D173}",
        ] {
            assert!(matches!(validate(NameKind::Group, n), Err(NameError::BadChar(..))), "{n:?}");
            assert!(matches!(validate(NameKind::File, n), Err(NameError::BadChar(..))), "{n:?}");
        }
        // Read as a path that it is not: refused when new.
        for n in [
            "a\u{FF0F}b",
            "\u{FF0E}\u{FF0E}/x",
            "a/\u{2025}/b",
            "a\u{FF3C}b",
            "\u{FF0E}",
            "a\u{2044}b.bin",
            "a\u{2215}b.bin",
            "x\u{29F8}y.bin",
            "a\u{1735}b",
            "a\u{0338}b",
            "a\u{4E3F}b",
        ] {
            validate(NameKind::File, n).unwrap();
            let e = validate_new(NameKind::File, n).unwrap_err();
            assert_eq!(e, NameError::LooksLikePath(NameKind::File, n.into()), "{n:?}");
        }
        assert!(validate_new(NameKind::Group, "g\u{FF0F}h").is_err());
        for n in ["\u{FF0E}\u{FF0E}", "\u{2025}", "\u{2024}\u{2024}", "\u{FE52}\u{FE52}"] {
            assert!(validate_new(NameKind::Group, n).is_err(), "{n:?}");
            assert!(validate_new(NameKind::User, n).is_err(), "{n:?}");
        }
        // A dot look-alike anywhere: `x\u{FF0E}y` would list beside `x.y`.
        for n in ["x\u{FF0E}y", "u\u{2025}v", "a\u{2024}b", "x\u{FE52}y", "d/e\u{FF0E}txt"] {
            validate(NameKind::File, n).unwrap();
            assert!(validate_new(NameKind::File, n).is_err(), "{n:?}");
            assert!(validate_new(NameKind::Group, &n.replace('/', "")).is_err(), "{n:?}");
        }
        // Ordinary non-ASCII names are not, an ellipsis included.
        for n in ["caf\u{e9}/\u{65e5}\u{672c}.txt", "\u{00bd}-size.png", "Wait\u{2026} what.mp3"] {
            let n = n.replace(' ', "_");
            validate_new(NameKind::File, &n).unwrap();
        }
    }

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
        for n in [
            "a b",
            "a\\b",
            "..",
            ".",
            "tab\there",
            "nl\n",
            "\u{7f}",
            "d/a b",
            "report\u{202E}fdp.exe",
            "a\u{200B}b",
            "\u{FEFF}x",
            "d/\u{2066}x",
        ] {
            assert!(matches!(validate(NameKind::File, n), Err(NameError::BadChar(..))), "{n:?}");
        }
        for n in ["a/b", "a/../b"] {
            assert!(validate(NameKind::User, n).is_err(), "{n:?}");
            assert!(validate(NameKind::Group, n).is_err(), "{n:?}");
        }
    }

    #[test]
    fn file_names_are_relative_paths() {
        for n in ["photos/2026/a.jpg", "a/b", ".git/config", "x/.hidden/y"] {
            validate(NameKind::File, n).unwrap();
        }
        for n in ["/abs", "a//b", "a/", "a/./b", "a/../b", "../up", "a/..", "./a", "/"] {
            assert_eq!(validate(NameKind::File, n), Err(NameError::BadPath(n.to_owned())), "{n:?}");
        }
        let long = format!("d/{}", "c".repeat(256));
        assert_eq!(validate(NameKind::File, &long), Err(NameError::ComponentTooLong(long.clone())));
        validate(NameKind::File, &format!("d/{}", "c".repeat(255))).unwrap();
        let deep = vec!["abcdefg"; 129].join("/");
        assert_eq!(validate(NameKind::File, &deep), Err(NameError::TooLong(NameKind::File)));
        assert!(validate(NameKind::User, &"a".repeat(65)).is_err());
    }

    #[test]
    fn directory_prefixes_match_whole_components() {
        assert!(under_dir("photos/a.jpg", "photos"));
        assert!(under_dir("photos/a.jpg", "photos/"));
        assert!(under_dir("photos/2026/a.jpg", "photos/2026"));
        assert!(!under_dir("photos2/a.jpg", "photos"));
        assert!(!under_dir("photos", "photos"));
        assert!(under_dir("anything", ""));
    }
}
