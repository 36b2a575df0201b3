//! Command-line usage errors on one line.
//!
//! clap renders a usage error as a paragraph (the error, its list of
//! missing arguments one per line, a tip, the usage, a pointer to
//! `--help`). Every other failure of the binaries is one `error:` line, and
//! scripts and users read them so; the binaries turn clap's text into
//! one line with [`one_line`].

/// `rendered` (clap's usage error, without styles) as one line: its first
/// paragraph (the error and any list under it, joined by `, `), its tips
/// after `; `, and `(see 'HELP')`, where `help` is the command that
/// explains it (`ringshare get --help`).
pub fn one_line(rendered: &str, help: &str) -> String {
    let mut paragraphs = rendered.split("\n\n").map(str::trim).filter(|p| !p.is_empty());
    let first = paragraphs.next().unwrap_or("error: bad usage");
    let mut lines = first.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut out = lines.next().unwrap_or_default().to_owned();
    if !out.starts_with("error:") {
        out.insert_str(0, "error: ");
    }
    let list: Vec<&str> = lines.collect();
    if !list.is_empty() {
        out.push(' ');
        out.push_str(&list.join(", "));
    }
    for tip in paragraphs.filter(|p| p.starts_with("tip:")) {
        out.push_str("; ");
        out.push_str(&tip.lines().map(str::trim).collect::<Vec<_>>().join(" "));
    }
    out.push_str(&format!(" (see '{help}')"));
    out
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_usage_error_becomes_one_line() {
        let unexpected = "error: unexpected argument '--quite' found\n\n  tip: a similar argument \
                          exists: '--quiet'\n\nUsage: get [OPTIONS] <GROUP>\n\nFor more \
                          information, try '--help'.\n";
        assert_eq!(
            one_line(unexpected, "ringshare get --help"),
            "error: unexpected argument '--quite' found; tip: a similar argument exists: \
             '--quiet' (see 'ringshare get --help')"
        );
        let missing = "error: the following required arguments were not provided:\n  --user \
                       <USER>\n  <GROUP>\n\nUsage: get --user <USER> <GROUP>\n\nFor more \
                       information, try '--help'.\n";
        assert_eq!(
            one_line(missing, "ringshare get --help"),
            "error: the following required arguments were not provided: --user <USER>, <GROUP> \
             (see 'ringshare get --help')"
        );
        for text in ["", "\n\n", "odd text\nmore"] {
            let line = one_line(text, "x --help");
            assert!(line.starts_with("error: ") && !line.contains('\n'), "{line:?}");
        }
    }
}
