//! The shell's command language: one command per line, words separated by
//! whitespace ([`words`] says how a word holds a space). Parsing is pure;
//! [`crate::node`] carries commands out.

use std::fmt;

/// A parsed shell command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `create_user <user_id> <passwd>`
    CreateUser { user: String, password: String },
    /// `login <user_id> <passwd>`
    Login { user: String, password: String },
    /// `create_group <group_id>`
    CreateGroup { group: String },
    /// `join_group <group_id>`
    JoinGroup { group: String },
    /// `leave_group <group_id>`
    LeaveGroup { group: String },
    /// `list_requests <group_id>`
    ListRequests { group: String },
    /// `accept_request <group_id> <user_id>`
    AcceptRequest { group: String, user: String },
    /// `reject_request <group_id> <user_id>`
    RejectRequest { group: String, user: String },
    /// `list_groups`
    ListGroups,
    /// `list_files <group_id> [prefix]`
    ListFiles { group: String, prefix: Option<String> },
    /// `upload_file <file_path> <group_id>`
    UploadFile { path: String, group: String },
    /// `download_file <group_id> <file_name> <destination_path>`
    DownloadFile { group: String, file: String, dest: String },
    /// `show_downloads`
    ShowDownloads,
    /// `stop_share <group_id> <file_name>`
    StopShare { group: String, file: String },
    /// `logout`
    Logout,
    /// `help [command]`: every command, or one command's usage.
    Help(Option<String>),
    /// `quit` or `exit`
    Quit,
}

/// Why a line is not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The first word is not a command.
    Unknown(String),
    /// The command takes a different number of arguments.
    Arity { usage: &'static str, got: usize },
    /// A word opened with a quote that the line does not close.
    Unclosed(char),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Unknown(w) => write!(f, "unknown command: {w} (type help for the list)"),
            ParseError::Arity { usage, got } => {
                write!(f, "wrong number of arguments ({got}): usage: {usage}")
            }
            ParseError::Unclosed(q) => {
                write!(f, "unclosed {q}: a word that starts with {q} ends at the next {q}")
            }
        }
    }
}

/// Every command with its usage and what it does, for `help`.
pub const HELP: &[(&str, &str)] = &[
    ("create_user <user_id> <passwd>", "register a new user"),
    ("login <user_id> <passwd>", "log in; resumes sharing what this user shared here before"),
    ("create_group <group_id>", "create a group; you become its owner"),
    ("join_group <group_id>", "ask the owner to let you in"),
    ("leave_group <group_id>", "leave a group and stop sharing its files"),
    ("list_requests <group_id>", "owner: pending join requests"),
    ("accept_request <group_id> <user_id>", "owner: let a user in"),
    ("reject_request <group_id> <user_id>", "owner: refuse a join request"),
    ("list_groups", "every group in the network"),
    (
        "list_files <group_id> [prefix]",
        "members: files shared in a group (names starting with prefix)",
    ),
    (
        "upload_file <file_path> <group_id>",
        "share a file, or every file under a directory, with a group",
    ),
    ("download_file <group_id> <file_name> <destination_path>", "fetch a file in the background"),
    ("show_downloads", "progress of downloads"),
    ("stop_share <group_id> <file_name>", "stop sharing a file"),
    ("logout", "log out; sharing pauses until the next login"),
    ("help [command]", "this list, or one command's usage"),
    ("quit", "leave the shell (also: exit)"),
];

/// `text` as one line that shows what it holds: control characters
/// (escape sequences, new lines — names and paths a user typed or a peer
/// sent may hold them) and bidirectional controls (which reorder what
/// follows them on the terminal: `foo<U+202E>bar` would read `foorab`) are
/// written as escapes, not sent to the terminal.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(escaped) {
        return text.into();
    }
    text.chars()
        .map(|c| if escaped(c) { c.escape_default().collect() } else { c.to_string() })
        .collect::<String>()
        .into()
}

/// Whether [`one_line`] writes `c` as an escape.
fn escaped(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// What a listing command that listed nothing says on a terminal (a user
/// typing it got no answer at all); scripts reading from a pipe get the
/// empty list, as before.
pub fn nothing_listed(cmd: &Command) -> Option<String> {
    Some(match cmd {
        Command::ListGroups => "(no groups)".to_owned(),
        Command::ListRequests { group } => format!("(no pending requests to join {group})"),
        Command::ListFiles { group, prefix: None } => format!("(no files in {group})"),
        Command::ListFiles { group, prefix: Some(p) } => {
            format!("(no files in {group} whose names start with {p})")
        }
        Command::ShowDownloads => "(no downloads)".to_owned(),
        _ => return None,
    })
}

/// Most characters of an unknown command word an error repeats.
const SHOWN_WORD: usize = 40;

/// Splits a line into words at whitespace. A path may hold spaces: a word
/// that starts with `"` or `'` runs to the next same quote, spaces
/// included (`"/home/me/My Documents/a.pdf"`; what follows the closing
/// quote up to the next whitespace belongs to the word too), and `\`
/// before a whitespace character makes it part of the word
/// (`My\ Documents`). Nothing else is special: a quote inside a word
/// (`it's`) and a backslash before anything but whitespace are themselves,
/// so every line that split into the right words before still does.
pub fn words(line: &str) -> Result<Vec<String>, ParseError> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else { return Ok(out) };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            loop {
                match chars.next() {
                    Some(c) if c == first => break,
                    Some(c) => word.push(c),
                    None => return Err(ParseError::Unclosed(first)),
                }
            }
        }
        while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
            match chars.peek() {
                Some(&next) if c == '\\' && next.is_whitespace() => {
                    word.push(next);
                    chars.next();
                }
                _ => word.push(c),
            }
        }
        out.push(word);
    }
}

/// Parses one line; `Ok(None)` for a blank line.
pub fn parse(line: &str) -> Result<Option<Command>, ParseError> {
    let words = words(line)?;
    let Some((cmd, args)) = words.split_first() else {
        return Ok(None);
    };
    let usage = |name: &str| {
        let name = if name == "exit" { "quit" } else { name };
        HELP.iter().map(|(u, _)| *u).find(|u| u.split(' ').next() == Some(name)).unwrap_or("")
    };
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(ParseError::Arity { usage: usage(cmd), got: args.len() })
        }
    };
    let a = |i: usize| args[i].to_owned();
    let command = match cmd.as_str() {
        "create_user" => arity(2).map(|()| Command::CreateUser { user: a(0), password: a(1) }),
        "login" => arity(2).map(|()| Command::Login { user: a(0), password: a(1) }),
        "create_group" => arity(1).map(|()| Command::CreateGroup { group: a(0) }),
        "join_group" => arity(1).map(|()| Command::JoinGroup { group: a(0) }),
        "leave_group" => arity(1).map(|()| Command::LeaveGroup { group: a(0) }),
        "list_requests" => arity(1).map(|()| Command::ListRequests { group: a(0) }),
        "accept_request" => arity(2).map(|()| Command::AcceptRequest { group: a(0), user: a(1) }),
        "reject_request" => arity(2).map(|()| Command::RejectRequest { group: a(0), user: a(1) }),
        "list_groups" => arity(0).map(|()| Command::ListGroups),
        "list_files" => match args.len() {
            1 | 2 => {
                Ok(Command::ListFiles { group: a(0), prefix: args.get(1).map(|p| p.to_string()) })
            }
            n => Err(ParseError::Arity { usage: usage(cmd), got: n }),
        },
        "upload_file" => arity(2).map(|()| Command::UploadFile { path: a(0), group: a(1) }),
        "download_file" => {
            arity(3).map(|()| Command::DownloadFile { group: a(0), file: a(1), dest: a(2) })
        }
        "show_downloads" => arity(0).map(|()| Command::ShowDownloads),
        "stop_share" => arity(2).map(|()| Command::StopShare { group: a(0), file: a(1) }),
        "logout" => arity(0).map(|()| Command::Logout),
        "help" => match args {
            [] => Ok(Command::Help(None)),
            [name] => Ok(Command::Help(Some(name.to_owned()))),
            _ => Err(ParseError::Arity { usage: usage(cmd), got: args.len() }),
        },
        "quit" | "exit" => arity(0).map(|()| Command::Quit),
        other => Err(ParseError::Unknown(match other.char_indices().nth(SHOWN_WORD) {
            // A 20 MB line was a 20 MB error line.
            Some((cut, _)) => format!("{}…", &other[..cut]),
            None => other.to_owned(),
        })),
    }?;
    Ok(Some(command))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_show_control_characters_as_escapes() {
        assert_eq!(one_line("no file in g"), "no file in g");
        assert_eq!(one_line("starts with \x1b[31m\nx"), "starts with \\u{1b}[31m\\nx");
        assert_eq!(one_line("foo\u{202e}bar \u{2067}x"), "foo\\u{202e}bar \\u{2067}x");
        assert_eq!(one_line("café ok"), "café ok");
    }

    #[test]
    fn an_unknown_word_is_shown_cut_short_and_exit_has_its_usage() {
        let long = "a".repeat(100_000);
        let e = parse(&long).unwrap_err().to_string();
        assert_eq!(e, format!("unknown command: {}… (type help for the list)", "a".repeat(40)));
        assert_eq!(
            parse("exit x").unwrap_err().to_string(),
            "wrong number of arguments (1): usage: quit"
        );
    }

    #[test]
    fn parses_every_command() {
        let cases = [
            ("create_user u p", Command::CreateUser { user: "u".into(), password: "p".into() }),
            ("  login   u\tp ", Command::Login { user: "u".into(), password: "p".into() }),
            (
                "upload_file /tmp/x g",
                Command::UploadFile { path: "/tmp/x".into(), group: "g".into() },
            ),
            (
                "download_file g f /tmp",
                Command::DownloadFile { group: "g".into(), file: "f".into(), dest: "/tmp".into() },
            ),
            ("reject_request g u", Command::RejectRequest { group: "g".into(), user: "u".into() }),
            ("list_groups", Command::ListGroups),
            ("list_files g", Command::ListFiles { group: "g".into(), prefix: None }),
            (
                "list_files g photos/",
                Command::ListFiles { group: "g".into(), prefix: Some("photos/".into()) },
            ),
            ("exit", Command::Quit),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), Ok(Some(want)), "{line}");
        }
        assert_eq!(parse("   "), Ok(None));
    }

    #[test]
    fn an_empty_listing_is_named_only_for_listings() {
        let said = |line: &str| nothing_listed(&parse(line).unwrap().unwrap());
        assert_eq!(said("list_files g").as_deref(), Some("(no files in g)"));
        assert_eq!(
            said("list_files g a/").as_deref(),
            Some("(no files in g whose names start with a/)")
        );
        assert_eq!(said("list_requests g").as_deref(), Some("(no pending requests to join g)"));
        assert_eq!(said("list_groups").as_deref(), Some("(no groups)"));
        assert_eq!(said("show_downloads").as_deref(), Some("(no downloads)"));
        assert_eq!(said("logout"), None);
        assert_eq!(said("accept_request g u"), None);
    }

    #[test]
    fn a_quoted_or_escaped_word_holds_spaces() {
        let w = |line: &str| words(line).unwrap();
        assert_eq!(
            w(r#"upload_file "/home/me/My Docs/a.pdf" g"#),
            ["upload_file", "/home/me/My Docs/a.pdf", "g"]
        );
        assert_eq!(w("upload_file '/tmp/a b' g"), ["upload_file", "/tmp/a b", "g"]);
        assert_eq!(
            w(r"download_file g f /tmp/My\ Downloads/"),
            ["download_file", "g", "f", "/tmp/My Downloads/"]
        );
        // What follows a closing quote belongs to the word.
        assert_eq!(w(r#"x "/tmp/a b"/c.txt"#), ["x", "/tmp/a b/c.txt"]);
        // The other quote inside quotes, and empty quotes.
        assert_eq!(w(r#"x "it's" ''"#), ["x", "it's", ""]);
        // Quotes and backslashes inside a word are themselves: passwords
        // and paths that parsed before parse the same.
        assert_eq!(w(r#"login bob it's"#), ["login", "bob", "it's"]);
        assert_eq!(w(r#"login bob pa"ss\w\"#), ["login", "bob", r#"pa"ss\w\"#]);
        assert_eq!(w("  a\tb  "), ["a", "b"]);
        assert_eq!(words(r#"upload_file "/tmp/a b g"#), Err(ParseError::Unclosed('"')));
        assert_eq!(
            parse("upload_file 'x").unwrap_err().to_string(),
            "unclosed ': a word that starts with ' ends at the next '"
        );
        assert_eq!(
            parse(r#"upload_file "/tmp/My Docs" g"#),
            Ok(Some(Command::UploadFile { path: "/tmp/My Docs".into(), group: "g".into() }))
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(parse("frobnicate x"), Err(ParseError::Unknown("frobnicate".into())));
        let e = parse("create_user onlyone").unwrap_err();
        assert_eq!(
            e.to_string(),
            "wrong number of arguments (1): usage: create_user <user_id> <passwd>"
        );
        assert!(parse("list_groups extra").is_err());
        assert!(parse("list_files").is_err());
        assert!(parse("list_files g p extra").is_err());
        assert!(parse("download_file g f").unwrap_err().to_string().contains("<destination_path>"));
        assert_eq!(parse("help").unwrap(), Some(Command::Help(None)));
        assert_eq!(parse("help login").unwrap(), Some(Command::Help(Some("login".into()))));
        assert!(parse("help login logout").is_err());
    }

    #[test]
    fn every_command_has_a_usage_line() {
        for (usage, _) in HELP {
            let name = usage.split(' ').next().unwrap();
            let argc = usage.split(' ').count() - 1;
            let line = std::iter::once(name.to_string())
                .chain((0..argc).map(|i| format!("a{i}")))
                .collect::<Vec<_>>()
                .join(" ");
            assert!(matches!(parse(&line), Ok(Some(_))), "{line}");
        }
    }
}
