//! `ringshare-tracker <tracker_info.txt> <tracker_no>`: the tracker daemon.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use ringshare_engine::tracker_info::TrackerList;
use ringshare_tracker::server;
use ringshare_tracker::service::Tracker;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

/// The ringshare tracker daemon.
///
/// Listens on line <TRACKER_NO> of <TRACKER_INFO> and serves clients until
/// `quit` on standard input, SIGINT or SIGTERM. Prints
/// `ringshare-tracker N listening on ADDR` once it accepts connections.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// File listing every tracker: `IP:PORT`, `IP PORT`, or IP and port on
    /// alternate lines; `#` comments and blank lines are ignored.
    tracker_info: PathBuf,
    /// Which line of the file is this tracker (1-based).
    tracker_no: usize,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Err(e) = run(Args::parse()).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    let list = TrackerList::load(&args.tracker_info)?;
    let Some(addr) = list.get(args.tracker_no) else {
        bail!(
            "tracker number {} is not in {} (it lists {} tracker(s), numbered from 1)",
            args.tracker_no,
            args.tracker_info.display(),
            list.0.len()
        );
    };
    let listener =
        TcpListener::bind(addr).await.with_context(|| format!("bind tracker to {addr}"))?;
    let local = listener.local_addr().context("read the bound address")?;
    let tracker = Arc::new(Tracker::new());
    println!("ringshare-tracker {} listening on {local}", args.tracker_no);

    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    tokio::select! {
        r = server::serve(listener, tracker) => r.context("serve clients")?,
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        _ = sigterm.recv() => tracing::info!("SIGTERM: stopping"),
        _ = quit_on_stdin() => tracing::info!("quit: stopping"),
    }
    Ok(())
}

/// Resolves when a `quit` (or `exit`) line arrives on standard input. End of
/// input does not stop the tracker: it may run with stdin closed.
async fn quit_on_stdin() {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match line.trim() {
            "quit" | "exit" => return,
            "" => {}
            other => eprintln!("error: unknown command {other:?} (the tracker understands: quit)"),
        }
    }
    std::future::pending::<()>().await
}
