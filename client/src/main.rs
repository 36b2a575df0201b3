//! `ringshare <IP>:<PORT> <tracker_info.txt>`: a ringshare node and its shell.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use ringshare_engine::serve::ServerLimits;
use ringshare_engine::tracker_info::TrackerList;
use tokio::sync::{mpsc, oneshot};

use ringshare::node::{Flow, Node};
use ringshare::shell;

/// A ringshare node: serves the pieces it has on IP:PORT and reads commands,
/// one per line, from standard input (type `help` for the list).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
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
}

/// A line from standard input, with the channel to say it was handled.
type LineMsg = (String, oneshot::Sender<()>);

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    let trackers = TrackerList::load(&args.tracker_info)?;
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("bind piece server to {}", args.listen))?;
    let state_dir = args.state_dir.unwrap_or_else(default_state_dir);
    let mut limits = ServerLimits::default();
    // Fault injection for tests and demos: slow every piece this node serves.
    if let Some(ms) = std::env::var("RINGSHARE_SERVE_DELAY_MS").ok().and_then(|v| v.parse().ok()) {
        limits.piece_delay = std::time::Duration::from_millis(ms);
    }
    let mut node = Node::new(listener, trackers, state_dir, limits)?;
    eprintln!("ringshare node serving on {}", node.addr());

    let interactive = std::io::stdin().is_terminal();
    let (tx, mut rx) = mpsc::channel::<LineMsg>(1);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_lines(interactive, tx))
        .context("start the input thread")?;

    let mut stdout = std::io::stdout();
    while let Some((line, done)) = rx.recv().await {
        let flow = match shell::parse(&line) {
            Ok(None) => Flow::Continue,
            Ok(Some(cmd)) => {
                let (flow, result) = node.execute(cmd).await;
                match result {
                    Ok(lines) => {
                        for l in lines {
                            let _ = writeln!(stdout, "{l}");
                        }
                    }
                    Err(e) => {
                        let _ = writeln!(stdout, "error: {e:#}");
                    }
                }
                flow
            }
            Err(e) => {
                let _ = writeln!(stdout, "error: {e}");
                Flow::Continue
            }
        };
        let _ = stdout.flush();
        let _ = done.send(());
        if flow == Flow::Quit {
            break;
        }
    }
    let waiting = node.running_downloads();
    if waiting > 0 {
        eprintln!("ringshare: waiting for {waiting} download(s) to finish (Ctrl-C stops; download_file resumes)");
        node.finish_downloads().await;
    }
    node.shutdown();
    Ok(())
}

/// Reads commands from standard input: with line editing and history on a
/// terminal, plain lines otherwise. Waits for each line to be handled before
/// reading (and prompting for) the next.
fn read_lines(interactive: bool, tx: mpsc::Sender<LineMsg>) {
    let send = |line: String| -> bool {
        let (done_tx, done_rx) = oneshot::channel();
        if tx.blocking_send((line, done_tx)).is_err() {
            return false;
        }
        done_rx.blocking_recv().is_ok()
    };
    if interactive {
        if let Ok(mut editor) = rustyline::DefaultEditor::new() {
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
                    Err(_) => return,
                }
            }
        }
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { return };
        if !send(line) {
            return;
        }
    }
}

fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RINGSHARE_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("ringshare");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/state/ringshare"),
        None => PathBuf::from(".ringshare-state"),
    }
}
