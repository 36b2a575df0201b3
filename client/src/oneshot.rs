//! One-shot commands for scripts and bulk work, and what every form of the
//! binary shares: the backend choice, server limits, the state directory and
//! the download progress bar.
//!
//! - `ringshare get`: log in, download one file with a progress bar, exit 0
//!   only when it is complete and verified.
//! - `ringshare share`: log in, upload a file and seed it until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use ringshare_engine::fetch::{Download, Status};
use ringshare_engine::serve::{Backend, ServerLimits};
use ringshare_engine::tracker_info::TrackerList;

use crate::node::Node;
use crate::shell::Command;

/// How a one-shot command's node logs in.
#[derive(Debug, clap::Args)]
pub struct NodeLogin {
    /// The tracker list (tracker_info.txt).
    #[arg(long)]
    pub trackers: PathBuf,
    /// The user to log in as (a member of the group).
    #[arg(long)]
    pub user: String,
    /// A file whose first line is the password.
    #[arg(long)]
    pub password_file: PathBuf,
    /// Where this node serves pieces while it runs [default: 127.0.0.1:0
    /// when every tracker is on loopback, else 0.0.0.0:0 — the trackers
    /// then list it under the address its login comes from].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The address to give the trackers instead (a node behind NAT with a
    /// forwarded port: its public IP:PORT).
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// I/O (serving and fetching): uring or threads.
    #[arg(long)]
    pub io: Option<Backend>,
    /// Peer links (downloads and serving) without encryption or
    /// authentication, for benchmarks and trusted networks only: serves
    /// downloaders that also ask for it, asks it of every seeder (a seeder
    /// without this flag refuses). Tracker links stay encrypted.
    #[arg(long)]
    pub plaintext: bool,
}

/// Download one file and exit: 0 when it is complete and verified.
#[derive(Debug, Parser)]
#[command(name = "ringshare get")]
pub struct GetArgs {
    #[command(flatten)]
    pub node: NodeLogin,
    /// Write figures of the download as JSON here (bytes, seconds, MB/s,
    /// piece latency percentiles, bytes per peer).
    #[arg(long)]
    pub stats: Option<PathBuf>,
    /// Write the piece latency histogram here (.hgrm percentile format, ms).
    #[arg(long)]
    pub hgrm: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// The group sharing the file.
    pub group: String,
    /// The file's name in the group.
    pub file: String,
    /// A directory (the file keeps its name) or a file path.
    pub destination: String,
}

/// Upload a file to a group and seed it until SIGINT or SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "ringshare share")]
pub struct ShareArgs {
    #[command(flatten)]
    pub node: NodeLogin,
    /// The group to share in.
    pub group: String,
    /// The file to share.
    pub path: PathBuf,
}

/// `ringshare get`.
pub async fn get(args: GetArgs) -> Result<()> {
    let mut node = login_node(&args.node).await?;
    let cmd = Command::DownloadFile { group: args.group, file: args.file, dest: args.destination };
    let started = std::time::Instant::now();
    let line = run(&mut node, cmd).await?;
    eprintln!("{line}");
    let entry = node.downloads().last().ok_or_else(|| anyhow!("the download did not start"))?;
    let download = Arc::clone(&entry.download);
    let status = if args.quiet {
        wait_quietly(&download).await
    } else {
        follow(&download, &entry.name).await
    };
    let seconds = started.elapsed().as_secs_f64();
    let _ = run(&mut node, Command::Logout).await;
    node.shutdown();
    match status {
        Status::Complete => {
            write_figures(&download, seconds, args.stats.as_deref(), args.hgrm.as_deref())?;
            println!("{}", entry_path(&node));
            Ok(())
        }
        Status::Failed(why) => bail!("download failed: {why}"),
        Status::Running => bail!("download stopped before completing"),
    }
}

/// `ringshare share`.
pub async fn share(args: ShareArgs) -> Result<()> {
    let mut node = login_node(&args.node).await?;
    let path = args.path.to_str().ok_or_else(|| anyhow!("path is not valid UTF-8"))?.to_owned();
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: a signal right after the announcement stops cleanly.
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let line = run(&mut node, Command::UploadFile { path, group: args.group }).await?;
    println!("{line}");
    println!("seeding on {} until SIGINT or SIGTERM", node.addr());
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    let _ = run(&mut node, Command::Logout).await;
    node.shutdown();
    Ok(())
}

/// Shows a download's progress until it ends; returns how it ended.
pub async fn follow(download: &Arc<Download>, name: &str) -> Status {
    let total = download.progress().total;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    loop {
        let p = download.progress();
        bar.set_position(p.verified);
        bar.set_message(format!("{name} ({} peers)", p.peers));
        if p.status != Status::Running {
            bar.finish();
            return p.status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_quietly(download: &Arc<Download>) -> Status {
    loop {
        let p = download.progress();
        if p.status != Status::Running {
            return p.status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes a finished download's figures (JSON) and latency histogram (.hgrm).
fn write_figures(
    download: &Download,
    seconds: f64,
    stats: Option<&Path>,
    hgrm: Option<&Path>,
) -> Result<()> {
    let hist = download.latency().snapshot();
    if let Some(p) = stats {
        let bytes = download.meta().len;
        let latency: serde_json::Map<String, serde_json::Value> =
            ringshare_engine::metrics::percentiles_us(&hist)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into()))
                .collect();
        let mut peers: Vec<_> = download.contributions().into_iter().collect();
        peers.sort();
        let peers: Vec<serde_json::Value> = peers
            .into_iter()
            .map(|(a, b)| serde_json::json!({"addr": a.to_string(), "bytes": b}))
            .collect();
        let doc = serde_json::json!({
            "file": download.meta().name,
            "bytes": bytes,
            "seconds": seconds,
            "mbps": bytes as f64 / seconds / 1e6,
            "latency_us": latency,
            "peers": peers,
        });
        std::fs::write(p, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("write {}", p.display()))?;
    }
    if let Some(p) = hgrm {
        std::fs::write(p, ringshare_engine::metrics::hgrm(&hist))
            .with_context(|| format!("write {}", p.display()))?;
    }
    Ok(())
}

/// Binds the piece server's address. A node restarted right after a crash
/// may find its port still held for a moment (an io_uring instance releases
/// its files asynchronously after the process dies): retry for a few seconds.
pub fn bind_piece_server(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e).with_context(|| format!("bind piece server to {addr}")),
        }
    }
}

/// The I/O backend (piece server and downloads) to run, printing which and why.
pub fn backend(flag: Option<Backend>) -> Result<Backend> {
    let forced = match flag {
        Some(b) => Some(b),
        None => match std::env::var("RINGSHARE_IO") {
            Ok(v) if !v.is_empty() => {
                Some(v.parse::<Backend>().map_err(|e| anyhow!("RINGSHARE_IO: {e}"))?)
            }
            _ => None,
        },
    };
    let (backend, why) = Backend::choose(forced);
    eprintln!("ringshare: I/O backend (serving and fetching): {} ({why})", backend.name());
    Ok(backend)
}

/// Piece server limits; `RINGSHARE_SERVE_DELAY_MS` slows every piece served
/// (fault injection for tests and demos).
pub fn limits() -> ServerLimits {
    let mut limits = ServerLimits::default();
    if let Some(ms) = std::env::var("RINGSHARE_SERVE_DELAY_MS").ok().and_then(|v| v.parse().ok()) {
        limits.piece_delay = Duration::from_millis(ms);
    }
    limits
}

/// Where a node keeps its records: $RINGSHARE_STATE_DIR, else
/// $XDG_STATE_HOME/ringshare, else ~/.local/state/ringshare.
pub fn default_state_dir() -> PathBuf {
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

async fn login_node(login: &NodeLogin) -> Result<Node> {
    let list = TrackerList::load(&login.trackers)?;
    let pw_file = &login.password_file;
    let password =
        std::fs::read_to_string(pw_file).with_context(|| format!("read {}", pw_file.display()))?;
    let password = password.lines().next().unwrap_or("").to_owned();
    if password.is_empty() {
        bail!("{} holds no password", pw_file.display());
    }
    let listen = login.listen.unwrap_or_else(|| default_listen(&list));
    let listener = bind_piece_server(listen)?;
    let mut node = Node::new(
        listener,
        list,
        default_state_dir(),
        limits(),
        backend(login.io)?,
        login.plaintext,
    )?;
    if login.plaintext {
        eprintln!(
            "ringshare: peer links are PLAINTEXT (--plaintext): not encrypted, not authenticated"
        );
    }
    node.set_advertise(login.advertise);
    run(&mut node, Command::Login { user: login.user.clone(), password }).await?;
    Ok(node)
}

/// Where `get` and `share` listen unless told: loopback when every tracker
/// is on loopback (nothing else could reach the node), else every
/// interface, on a free port.
pub fn default_listen(trackers: &TrackerList) -> SocketAddr {
    if trackers.addrs.iter().all(|t| t.ip().is_loopback()) {
        SocketAddr::from(([127, 0, 0, 1], 0))
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    }
}

/// Runs one command; its single line, or its error.
async fn run(node: &mut Node, cmd: Command) -> Result<String> {
    let (_, result) = node.execute(cmd).await;
    Ok(result?.join("\n"))
}

fn entry_path(node: &Node) -> String {
    node.downloads().last().map(|d| d.dest.display().to_string()).unwrap_or_default()
}
