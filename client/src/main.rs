//! `ringshare`: a ringshare node and its shell, plus one-shot commands.
//!
//! - `ringshare <IP>:<PORT> <tracker_info.txt>`: the node and its shell.
//! - `ringshare demo`: the whole system in one process on loopback.
//! - `ringshare get …` / `ringshare share …` / `ringshare ls …`: one-shot
//!   download / seed / listing.

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use ringshare::node::{Flow, Node, TrackerNews};
use ringshare::{demo, oneshot, shell};
use ringshare_engine::serve::Backend;
use ringshare_engine::tracker_info::TrackerList;
use tokio::sync::{mpsc, oneshot as once};

/// A ringshare node: serves the pieces it has on IP:PORT and reads commands,
/// one per line, from standard input (type `help` for the list).
///
/// Other forms: `ringshare demo`, `ringshare get`, `ringshare share`,
/// `ringshare ls` (each has its own --help).
#[derive(Debug, Parser)]
#[command(version)]
struct NodeArgs {
    /// Where this node serves pieces to other peers (port 0: any free port).
    listen: SocketAddr,
    /// File listing the trackers: `IP:PORT`, `IP PORT`, or IP and port on
    /// alternate lines.
    tracker_info: PathBuf,
    /// Where the node remembers what it shares between runs [default:
    /// $RINGSHARE_STATE_DIR, else $XDG_STATE_HOME/ringshare, else
    /// ~/.local/state/ringshare].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// I/O (serving and fetching): uring or threads [default: uring where the kernel
    /// allows it; also $RINGSHARE_IO].
    #[arg(long)]
    io: Option<Backend>,
    /// The address to give the trackers instead of LISTEN (a node behind
    /// NAT with a forwarded port: its public IP:PORT). A node listening on
    /// 0.0.0.0 is otherwise listed under the address its login comes from.
    #[arg(long, value_parser = oneshot::advertised)]
    advertise: Option<SocketAddr>,
    /// Peer links (downloads and serving) without encryption or
    /// authentication, for benchmarks and trusted networks only: serves
    /// downloaders that also ask for it, asks it of every seeder (a seeder
    /// without this flag refuses). Tracker links stay encrypted.
    #[arg(long)]
    plaintext: bool,
    /// Upload at most this fast, e.g. 40mbit or 5MB (bytes per second):
    /// each peer served is paced at its share, so every peer gets an even
    /// share. Roughly your uplink's rate; a little below it, nothing queues
    /// there either [default: no limit].
    #[arg(long, value_name = "RATE")]
    upload_rate: Option<ringshare_engine::slots::UploadRate>,
}

/// A line from standard input, with the channel to say it was handled.
type LineMsg = (String, once::Sender<()>);

fn main() {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours for a terminal only, not for a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match tracing_subscriber::EnvFilter::try_from_default_env() {
        // Asked for (RUST_LOG): the full form, with times and modules.
        Ok(filter) => logs.with_env_filter(filter).init(),
        // A user's warnings read like the node's other lines.
        Err(_) => logs
            .with_env_filter(tracing_subscriber::EnvFilter::new(default_log_level(&argv)))
            .event_format(UserLines)
            .init(),
    }
    // A node keeps every file it serves open.
    ringshare_engine::fsio::raise_open_files_limit();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let sub = argv.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let result = match sub {
        "demo" => rt.block_on(demo::run_until_signal(args(&argv[1..], "ringshare demo"))),
        "get" => rt.block_on(oneshot::get(args(&argv[1..], "ringshare get"))),
        "share" => rt.block_on(oneshot::share(args(&argv[1..], "ringshare share"))),
        "ls" => rt.block_on(oneshot::ls(args(&argv[1..], "ringshare ls"))),
        _ => rt.block_on(run(args(&argv, "ringshare"))),
    };
    if let Err(e) = result {
        eprintln!("error: {}", shell::one_line(&format!("{e:#}")));
        // Stopped by a signal: 128 + its number, as a shell reports it.
        std::process::exit(e.downcast_ref::<oneshot::Stopped>().map_or(1, |s| s.status));
    }
}

/// The arguments of `command` (`argv` from its name on), or exit: help
/// and version are printed as clap prints them; a usage error is one
/// `error:` line (status 2, clap's), as every other failure is.
fn args<T: Parser>(argv: &[OsString], command: &str) -> T {
    T::try_parse_from(argv).unwrap_or_else(|e| {
        use clap::error::ErrorKind;
        if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            e.exit();
        }
        let first = argv.get(1).and_then(|a| a.to_str()).unwrap_or("");
        let line = if command == "ringshare"
            && e.kind() == ErrorKind::ValueValidation
            && !first.starts_with('-')
            && first.parse::<SocketAddr>().is_err()
        {
            // `ringshare gte …`, `ringshare 127.0.0.1 …`: clap's "invalid
            // value for '<LISTEN>'" did not say what the first word may be.
            format!(
                "error: '{}' is neither IP:PORT (where the node serves) nor one of demo, get, \
                 share, ls (see 'ringshare --help')",
                shell::one_line(first)
            )
        } else {
            ringshare_engine::usage::one_line(&e.render().to_string(), &format!("{command} --help"))
        };
        eprintln!("{line}");
        std::process::exit(2)
    })
}

/// What is logged unless `RUST_LOG` says otherwise: warnings, but for
/// `get --quiet`, whose output is its summary alone (each failed file
/// already has its `ringshare: failed NAME: reason` line there; a bulk get
/// into a full disk also logged a warning per file).
/// Log events as a user reads them: `ringshare: warning: what happened
/// (key=value …)`, the form of the node's other lines on standard error.
/// The default form (a time, the level, the module) showed up in the shell
/// between its own lines (`2026-12-07T10:47:32Z  WARN ringshare::node:
/// stopped sharing …`).
struct UserLines;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for UserLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "fault",
            tracing::Level::WARN => "warning",
            _ => "note",
        };
        write!(w, "ringshare: {level}: ")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

fn default_log_level(argv: &[OsString]) -> &'static str {
    let get = argv.get(1).is_some_and(|a| a == "get");
    if get && argv.iter().skip(2).take_while(|a| *a != "--").any(|a| a == "--quiet") {
        "error"
    } else {
        "warn"
    }
}

async fn run(args: NodeArgs) -> Result<()> {
    let trackers = TrackerList::load(&args.tracker_info)?;
    trackers.check_ports(None)?;
    oneshot::warn_if_unreachable(args.listen, args.advertise, &trackers);
    let listener = oneshot::bind_piece_server(args.listen)?;
    let state_dir = args.state_dir.unwrap_or_else(oneshot::default_state_dir);
    let backend = oneshot::backend(args.io)?;
    ringshare::node::say_tcp_buffer_note();
    let mut node = Node::new(
        listener,
        trackers,
        state_dir,
        oneshot::limits(args.upload_rate),
        backend,
        args.plaintext,
    )?;
    if args.plaintext {
        eprintln!(
            "ringshare: peer links are PLAINTEXT (--plaintext): not encrypted, not authenticated"
        );
    }
    node.set_advertise(args.advertise);
    // A port the system picked (0) will not come back: what the node
    // shares is withdrawn at logout and as it stops.
    let picked = oneshot::picked(Some(args.listen), args.advertise);
    node.set_picked(picked);
    // Downloads run in the background: a failure is said when it happens.
    node.set_announce_failures(true);
    match args.advertise {
        Some(a) => eprintln!("ringshare node serving on {} (advertised as {a})", node.addr()),
        None => eprintln!("ringshare node serving on {}", node.addr()),
    }

    let interactive = std::io::stdin().is_terminal();
    let (tx, mut rx) = mpsc::channel::<LineMsg>(1);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_lines(interactive, tx))
        .context("start the input thread")?;

    let mut stop = oneshot::StopSignals::new()?;
    let mut stdout = std::io::stdout();
    // The session ending under the node (the trackers no longer know it)
    // is said when it happens, not at the next command's `not logged in`.
    let mut watch = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut said_ended = false;
    loop {
        let (line, done) = tokio::select! {
            msg = rx.recv() => match msg {
                Some(m) => m,
                None => break,
            },
            why = stop.recv() => stopped(&mut node, picked, why).await,
            _ = watch.tick() => {
                let ended = node.tracker_news() == TrackerNews::SessionEnded;
                if ended && !said_ended {
                    ringshare::notice(&format!(
                        "ringshare: {}; its files are not listed until you log in again",
                        node.session_ended_why()
                    ));
                }
                said_ended = ended;
                continue;
            }
        };
        let flow = match shell::parse(&line) {
            Ok(None) => Flow::Continue,
            Ok(Some(cmd)) => {
                // On a terminal, a listing of nothing says so.
                let empty = if interactive { shell::nothing_listed(&cmd) } else { None };
                let (flow, result) = node.execute(cmd).await;
                match result {
                    Ok(lines) => {
                        if lines.is_empty() {
                            if let Some(said) = empty {
                                let _ = writeln!(stdout, "{}", shell::one_line(&said));
                            }
                        }
                        for l in lines {
                            let _ = writeln!(stdout, "{l}");
                        }
                    }
                    Err(e) => {
                        let _ = writeln!(stdout, "error: {}", shell::one_line(&format!("{e:#}")));
                    }
                }
                flow
            }
            Err(e) => {
                let _ = writeln!(stdout, "error: {}", shell::one_line(&e.to_string()));
                Flow::Continue
            }
        };
        let _ = stdout.flush();
        if flow == Flow::Quit {
            // Not acknowledged: the input thread ends without drawing
            // another prompt (lines printed as the node leaves were glued
            // to it).
            break;
        }
        let _ = done.send(());
    }
    let waiting = node.running_downloads();
    if waiting > 0 {
        eprintln!("ringshare: waiting for {waiting} download(s) to finish (Ctrl-C stops; download_file resumes)");
        tokio::select! {
            _ = node.finish_downloads() => {}
            why = stop.recv() => stopped(&mut node, picked, why).await,
        }
    }
    // The session ends too: the trackers stop listing the node at once,
    // not a peer TTL later.
    oneshot::leave(&mut node, picked, true).await?;
    Ok(())
}

/// A stop signal: running downloads stop (what they verified stays), the
/// node leaves, the process exits.
async fn stopped(node: &mut Node, picked: bool, why: &str) -> ! {
    let n = node.stop_downloads();
    if n == 0 {
        eprintln!("ringshare: {why}");
    } else {
        eprintln!(
            "ringshare: {why}; stopped {n} download(s) (download_file with the same destination \
             resumes)"
        );
    }
    if let Err(e) = oneshot::leave(node, picked, true).await {
        eprintln!("error: {e:#}");
    }
    std::process::exit(oneshot::StopSignals::exit_status(why));
}

/// Reads commands from standard input: with line editing and history on a
/// terminal, plain lines otherwise. Waits for each line to be handled before
/// reading (and prompting for) the next.
fn read_lines(interactive: bool, tx: mpsc::Sender<LineMsg>) {
    let send = |line: String| -> bool {
        let (done_tx, done_rx) = once::channel();
        if tx.blocking_send((line, done_tx)).is_err() {
            return false;
        }
        done_rx.blocking_recv().is_ok()
    };
    if interactive {
        if let Ok(mut editor) = rustyline::DefaultEditor::new() {
            // Lines that come while a command is typed (a download done)
            // are printed above the prompt, not across it — where they go
            // to the terminal anyway (standard error is one too).
            if std::io::stderr().is_terminal() {
                if let Ok(mut printer) = editor.create_external_printer() {
                    use rustyline::ExternalPrinter as _;
                    ringshare::set_notice_printer(Box::new(move |line| {
                        printer.print(format!("{line}\n")).is_ok()
                    }));
                }
            }
            loop {
                match editor.readline("ringshare> ") {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line.as_str());
                        }
                        if !send(line) {
                            return;
                        }
                    }
                    Err(rustyline::error::ReadlineError::Interrupted) => continue,
                    Err(rustyline::error::ReadlineError::Io(e))
                        if e.kind() == std::io::ErrorKind::InvalidData =>
                    {
                        not_utf8(None);
                        continue;
                    }
                    Err(_) => return,
                }
            }
        }
    }
    let mut stdin = std::io::stdin().lock();
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        match stdin.read_until(b'\n', &mut bytes) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if bytes.ends_with(b"\n") {
            bytes.pop();
        }
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
        match String::from_utf8(std::mem::take(&mut bytes)) {
            Ok(line) => {
                if !send(line) {
                    return;
                }
            }
            // Refused, not read with replacement characters: a name or a
            // path in it would be another name or path.
            Err(e) => not_utf8(Some(e.utf8_error().valid_up_to())),
        }
    }
}

/// The one error line for an input line that is not UTF-8. The line before
/// it is done with (each waits for its answer), so this prints in order.
fn not_utf8(at: Option<usize>) {
    let at = at.map(|n| format!(" (at byte {})", n + 1)).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "error: the line is not valid UTF-8{at}; ignored");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_get_logs_errors_only() {
        let level = |args: &[&str]| {
            let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
            default_log_level(&argv)
        };
        assert_eq!(level(&["ringshare", "get", "--quiet", "g", "dest"]), "error");
        assert_eq!(level(&["ringshare", "get", "g", "f", "dest", "--quiet"]), "error");
        assert_eq!(level(&["ringshare", "get", "g", "dest"]), "warn");
        assert_eq!(level(&["ringshare", "get", "g", "--", "--quiet", "dest"]), "warn");
        assert_eq!(level(&["ringshare", "share", "g", "--quiet"]), "warn");
        assert_eq!(level(&["ringshare", "127.0.0.1:0", "ti.txt"]), "warn");
        assert_eq!(level(&["ringshare"]), "warn");
    }
}
