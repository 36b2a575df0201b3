//! One-shot commands for scripts and bulk work, and what every form of the
//! binary shares: the backend choice, server limits, the state directory and
//! the download progress bar.
//!
//! - `ringshare get`: log in, download one file, many files (names,
//!   directory prefixes, globs) or a whole group with a progress view; exit
//!   0 only when every selected file is complete and verified.
//! - `ringshare share`: log in, share files and directory trees and seed
//!   them until SIGINT/SIGTERM.
//! - `ringshare ls`: log in, list a group's files (optionally under a prefix).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::downloads::DestExists;
use crate::jobs::{self, JobWindow};
use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use ringshare_engine::download::{NONE_LISTED, NO_SHARER_LIMIT, WITHOUT_PLAINTEXT};
use ringshare_engine::fetch::{Download, Status, LINKS_OPENED, LINKS_REUSED};
use ringshare_engine::meta::Sha1Digest;
use ringshare_engine::names;
use ringshare_engine::proto::{FileEntry, Refusal};
use ringshare_engine::serve::{Backend, ServerLimits};
use ringshare_engine::slots::UploadRate;
use ringshare_engine::tracker_info::TrackerList;
use serde::Serialize;
use std::io::Write;

use crate::bulk;
use crate::node::{FileInfo, Node, OneFile, TrackerCalls, TrackerNews};
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
    /// then list it under the address its login comes from]. On a port
    /// the system picks (0), the node withdraws what it shares as it
    /// stops: no later node has that address. With a fixed port (or
    /// --advertise) its files stay listed, and the next node there with
    /// the same user and state directory resumes them.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The address to give the trackers instead (a node behind NAT with a
    /// forwarded port: its public IP:PORT). One node per address and user:
    /// the trackers refuse a second while the first runs (`ls`, which
    /// serves nothing, logs in at its own address instead).
    #[arg(long, value_parser = advertised)]
    pub advertise: Option<SocketAddr>,
    /// Where the node remembers what it shares between runs [default:
    /// $RINGSHARE_STATE_DIR, else $XDG_STATE_HOME/ringshare, else
    /// ~/.local/state/ringshare].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// I/O (serving and fetching): uring or threads.
    #[arg(long)]
    pub io: Option<Backend>,
    /// Peer links (downloads and serving) without encryption or
    /// authentication, for benchmarks and trusted networks only: serves
    /// downloaders that also ask for it, asks it of every seeder (a seeder
    /// without this flag refuses). Tracker links stay encrypted.
    #[arg(long)]
    pub plaintext: bool,
    /// Upload at most this fast, e.g. 40mbit or 5MB (bytes per second):
    /// each peer served is paced at its share, so every peer gets an even
    /// share. Roughly your uplink's rate; a little below it, nothing queues
    /// there either [default: no limit].
    #[arg(long, value_name = "RATE")]
    pub upload_rate: Option<UploadRate>,
}

/// Download files and exit: 0 when every selected file is complete and
/// verified.
///
/// `ringshare get GROUP FILE DEST` fetches one file (DEST a directory, or
/// the file's path). With several names, directory prefixes
/// (`photos/`), globs (`'photos/**/*.jpg'`: `*` within a component, `**`
/// across) or none at all (the whole group), DEST is a directory (made if
/// missing) and each file lands at its name under it. Running the same
/// command again resumes what is missing.
#[derive(Debug, Parser)]
#[command(name = "ringshare get")]
pub struct GetArgs {
    #[command(flatten)]
    pub node: NodeLogin,
    /// Write figures of the download as JSON here (bytes, seconds, MB/s,
    /// piece latency percentiles, bytes per peer; per file for many).
    #[arg(long)]
    pub stats: Option<PathBuf>,
    /// Write the piece latency histogram here (.hgrm percentile format, ms;
    /// every file's pieces together for many).
    #[arg(long)]
    pub hgrm: Option<PathBuf>,
    /// No progress view; only the final summary.
    #[arg(long)]
    pub quiet: bool,
    /// Files downloaded at once (the next ones' tracker answers are asked
    /// for ahead). By default the number adapts to the path between 16
    /// and 256, starting at 64: each small file costs about one round trip, so far peers
    /// want many at once (at 50 ms 16 fetch about 240 small files a
    /// second, 64 about 575), near ones gain nothing from more. `--jobs N`
    /// fixes it. A link to a node carries up to two files at once, and a
    /// piece server serves at most 128 connections from one address.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: Option<u16>,
    /// Once every selected file is complete, go on sharing what this run
    /// fetched for this long (`90`, `30s`, `10m`, `2h`) before leaving, as
    /// a BitTorrent client seeds: peers still fetching the same files take
    /// pieces from this node too. SIGINT, SIGTERM or SIGHUP end it sooner,
    /// with exit status 0 [default: leave at once].
    #[arg(long, value_name = "DURATION", value_parser = seed_duration)]
    pub seed_for: Option<Duration>,
    /// The group sharing the files.
    pub group: String,
    /// The files (names, directory prefixes or globs; none: every file of
    /// the group), then the destination.
    #[arg(value_name = "NAME... DEST", required = true)]
    pub files_and_dest: Vec<String>,
}

/// Share files and directory trees with a group and seed them until SIGINT
/// or SIGTERM. A file under a directory is named by its path from the
/// directory's own name on (`photos/2026/a.jpg`); symbolic links are
/// followed only to files inside the same tree; a file that cannot be
/// shared is reported with one line and skipped.
#[derive(Debug, Parser)]
#[command(name = "ringshare share")]
pub struct ShareArgs {
    #[command(flatten)]
    pub node: NodeLogin,
    /// The group to share in.
    pub group: String,
    /// Files and directories to share.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// List a group's files, sorted, with sizes and online peers.
#[derive(Debug, Parser)]
#[command(name = "ringshare ls")]
pub struct LsArgs {
    #[command(flatten)]
    pub node: NodeLogin,
    /// The group.
    pub group: String,
    /// Only names starting with this (`photos/`).
    pub prefix: Option<String>,
}

/// `ringshare get`.
pub async fn get(mut args: GetArgs) -> Result<()> {
    let dest = args.files_and_dest.pop().ok_or_else(|| anyhow!("no destination given"))?;
    let patterns = std::mem::take(&mut args.files_and_dest);
    // Where the figures go is checked before anything is fetched: a
    // download is not to end in an error for want of a place to write them.
    let mut made = Vec::new();
    for path in [&args.stats, &args.hgrm].into_iter().flatten() {
        let new = std::fs::symlink_metadata(path).is_err();
        let open =
            || std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path);
        open()
            .or_else(|e| match path.parent().filter(|d| !d.as_os_str().is_empty()) {
                // In DEST, or under it, not there yet: made, as the fetch
                // would make DEST. (Anywhere else a missing directory is
                // an error before anything is fetched.)
                Some(dir) if e.kind() == std::io::ErrorKind::NotFound && within(dir, &dest) => {
                    // The directories made too.
                    made.extend(crate::downloads::missing_dirs(dir));
                    std::fs::create_dir_all(dir).and_then(|()| open())
                }
                _ => Err(e),
            })
            .with_context(|| format!("write {}", path.display()))?;
        if new {
            // Written whole at the end (`write_figures`): none is left
            // empty by a run killed before then.
            let _ = std::fs::remove_file(path);
        }
    }
    let mut node = login_node(&args.node, !args.quiet).await?;
    // One that seeds on (`--seed-for`) is there to serve: it registers what
    // it fetches at once (a file whose other sharers left would otherwise
    // be gone from its group until the registration came).
    node.set_transient(picked(args.node.listen, args.node.advertise) && args.seed_for.is_none());
    // How many files this run fetched (and so serves): seeded on with
    // `--seed-for`.
    let mut result = get_in(&mut node, &args, patterns, dest).await;
    node.remove_empty_dirs_made();
    if let (Ok(fetched), Some(time)) = (&result, args.seed_for) {
        let fetched = *fetched;
        result = seed_after(&node, &args, fetched, time).await.map(|()| fetched);
    }
    let result = result.map(drop);
    if result.as_ref().is_err_and(|e| e.is::<FiguresInTheWay>()) {
        // Made to check the figures' path, at a file's: the directories
        // made for them are not left there (the deepest first).
        made.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in &made {
            let _ = std::fs::remove_dir(p);
        }
    }
    let picked = picked(args.node.listen, args.node.advertise);
    if let Err(e) = leave(&mut node, picked, false).await {
        // What was fetched stays fetched: said, not the command's failure.
        eprintln!("ringshare: {e:#}");
    }
    result
}

/// Whether `path` is `dir` or under it, both made absolute (not
/// resolved: a missing directory has nothing to resolve).
fn within(path: &Path, dir: &str) -> bool {
    absolute(path).starts_with(absolute(Path::new(dir)))
}

/// `p` made absolute as written (`..` and links left as they are), or as
/// it is if the working directory cannot be had.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// `--seed-for`'s duration: seconds, or a number with `s`, `m` or `h`.
fn seed_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => s.split_at(at),
        None => (s, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("expected a duration such as 90, 30s, 10m or 2h, not {s:?}")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n <= 366 * 24 * 3600)
        .map(Duration::from_secs)
        .ok_or_else(|| {
            format!("expected a duration such as 90, 30s, 10m or 2h (at most a year), not {s:?}")
        })
}

/// `get --seed-for`: the node, every selected file complete, goes on
/// serving what it fetched for `time` or until a signal, then leaves as
/// any `get` does. The files are complete whatever happens meanwhile: a
/// tracker that stops listing the node is said, not the command's failure.
async fn seed_after(node: &Node, args: &GetArgs, fetched: usize, time: Duration) -> Result<()> {
    if fetched == 0 || time.is_zero() {
        if !args.quiet && fetched == 0 {
            eprintln!("ringshare: nothing was fetched by this run, so there is nothing to seed");
        }
        return Ok(());
    }
    let mut stop = StopSignals::new()?;
    // Listed before it says it seeds (a tracker that does not answer is
    // asked again in the background).
    node.registrations_answered(Duration::from_secs(5)).await;
    if !args.quiet {
        eprintln!(
            "ringshare: seeding {fetched} fetched file(s) to {} for {} (SIGINT, SIGTERM or \
             SIGHUP ends it sooner)",
            args.group,
            humane_duration(time)
        );
    }
    tokio::select! {
        () = tokio::time::sleep(time) => {}
        r = watch_trackers(node, &mut stop, "the files fetched stay") => {
            if let Err(e) = r {
                eprintln!("ringshare: stopped seeding: {e:#}");
            }
        }
    }
    Ok(())
}

/// A duration as `--seed-for` takes it.
fn humane_duration(d: Duration) -> String {
    match d.as_secs() {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Whether a node's address was picked by the system for this run (port
/// 0, nothing advertised instead): no later node will have it.
pub fn picked(listen: Option<SocketAddr>, advertise: Option<SocketAddr>) -> bool {
    listen.is_none_or(|a| a.port() == 0) && advertise.is_none()
}

/// How long a stopping node gives [`Node::withdraw_all`].
const WITHDRAW_LIMIT: Duration = Duration::from_secs(15);

/// The node stops: one on a port the system picked withdraws every file it
/// shares or registered and forgets its records (`say` tells how many on
/// stderr); then it logs out and stops serving. A second stop signal
/// meanwhile ends the process at once. A failed withdrawal is the error.
pub async fn leave(node: &mut Node, picked: bool, say: bool) -> Result<()> {
    let work = async {
        let withdrawn = if picked {
            match tokio::time::timeout(WITHDRAW_LIMIT, node.withdraw_all()).await {
                Ok(Ok(n)) => {
                    if say && n > 0 {
                        eprintln!(
                            "ringshare: withdrew {n} shared file(s): this run's port will not come back (a fixed --listen IP:PORT keeps them listed)"
                        );
                    }
                    Ok(())
                }
                Ok(Err(e)) => Err(e.context("withdraw the shared files")),
                Err(_) => {
                    Err(anyhow!("withdraw the shared files: no answer within {WITHDRAW_LIMIT:?}"))
                }
            }
        } else {
            Ok(())
        };
        if node.logged_in() {
            let _ = run(node, Command::Logout).await;
        }
        withdrawn
    };
    let result = match StopSignals::new() {
        Ok(mut again) => tokio::select! {
            r = work => r,
            why = again.recv() => {
                eprintln!("ringshare: {why} again; stopping without withdrawing or logging out");
                std::process::exit(StopSignals::exit_status(why));
            }
        },
        Err(_) => work.await,
    };
    node.shutdown();
    result
}

/// A command a signal stopped: its message, and the exit status a shell
/// reports for a process the signal ended (128 + its number).
#[derive(Debug)]
pub struct Stopped {
    /// The exit status.
    pub status: i32,
    message: String,
}

impl Stopped {
    /// Stopped by the signal [`StopSignals::recv`] named `why`; `rest`
    /// follows its name in the message.
    pub fn error(why: &str, rest: &str) -> anyhow::Error {
        anyhow::Error::new(Self {
            status: StopSignals::exit_status(why),
            message: format!("{why}{rest}"),
        })
    }
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Stopped {}

/// The signals that stop a node: SIGINT (Ctrl-C), SIGTERM, and SIGHUP (its
/// terminal or ssh session closed).
#[derive(Debug)]
pub struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers (from now on these signals no longer kill the
    /// process).
    pub fn new() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let install = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("install {name} handler"))
        };
        Ok(Self {
            int: install(SignalKind::interrupt(), "SIGINT")?,
            term: install(SignalKind::terminate(), "SIGTERM")?,
            hup: install(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// Waits for the next one; its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "interrupted",
            _ = self.term.recv() => "terminated",
            _ = self.hup.recv() => "hung up",
        }
    }

    /// The exit status of a process a signal named by [`recv`](Self::recv)
    /// ended: 128 + its number, as a shell reports a process it killed.
    pub fn exit_status(why: &str) -> i32 {
        128 + match why {
            "terminated" => libc::SIGTERM,
            "hung up" => libc::SIGHUP,
            _ => libc::SIGINT,
        }
    }
}

async fn get_in(
    node: &mut Node,
    args: &GetArgs,
    patterns: Vec<String>,
    dest: String,
) -> Result<usize> {
    let selection = bulk::Selection::new(&patterns)?;
    // Directories made for files that then fail are removed as the fetch
    // ends (`get`): a failed run leaves no empty ones.
    node.set_remember_dirs(true);
    // What it fetches becomes this node's share of the group: recorded
    // with the membership it is fetched in.
    node.note_membership(&args.group).await;
    let mut listed = Vec::new();
    for prefix in selection.list_prefixes() {
        listed.extend(node.list_group(&args.group, &prefix).await?);
    }
    if let [name] = patterns.as_slice() {
        // One name: that file, as always, unless it names only a directory
        // (the listing above, under the name, tells; so does a name that
        // ends with `/`, whether or not anything is under it).
        if !bulk::is_glob(name)
            && !name.ends_with('/')
            && (!listed.iter().any(|f| names::under_dir(&f.name, name))
                || listed.iter().any(|f| f.name == *name))
        {
            let into = Path::new(&dest);
            let at = if dest.ends_with('/') || into.is_dir() {
                into.join(name)
            } else {
                into.to_owned()
            };
            figures_not_at(args, &at, name)?;
            return get_one(node, args, name.clone(), dest).await;
        }
    }
    if patterns.is_empty() {
        refuse_dest_like_a_name(&dest, &args.group, &listed)?;
    }
    let (files, missed) = selection.select(listed);
    let dest = PathBuf::from(dest);
    for f in &files {
        figures_not_at(args, &dest.join(&f.name), &f.name)?;
    }
    if std::fs::metadata(&dest).is_ok_and(|m| !m.is_dir()) {
        bail!("{} is not a directory", dest.display());
    }
    // Nothing selected: no directory made for it. (Made, it is removed
    // again as the get ends if empty: nothing fetched, nothing to resume.)
    let dest_new = std::fs::symlink_metadata(&dest).is_err();
    if !files.is_empty() {
        node.make_dirs(&dest).with_context(|| format!("create {}", dest.display()))?;
    }
    let mut report = get_many(node, args, files, &dest).await?;
    for m in missed {
        report.failed.push((m.clone(), format!("no file in {} matches {m}", args.group)));
        report.unmatched += 1;
    }
    report.finish(args, &dest, || {
        node.remove_empty_dirs_made();
        dest_new && std::fs::symlink_metadata(&dest).is_err()
    })
}

/// `--stats` or `--hgrm` given the path a selected file is fetched to,
/// or one of its directories.
#[derive(Debug, thiserror::Error)]
#[error("{option} {path} is where {name}{what}: give the figures another path")]
struct FiguresInTheWay {
    option: &'static str,
    path: String,
    name: String,
    /// " is fetched to", or " goes" after "a directory of".
    what: &'static str,
}

/// Refuses a figures file at `at`, where file `name` is to be fetched (it
/// was written over a file already there, or made the download fail).
fn figures_not_at(args: &GetArgs, at: &Path, name: &str) -> Result<()> {
    let at = absolute(at);
    for (option, path) in [("--stats", &args.stats), ("--hgrm", &args.hgrm)] {
        let Some(p) = path.as_deref() else { continue };
        let (name, what) = if absolute(p) == at {
            (name.to_owned(), " is fetched to")
        } else if at.starts_with(absolute(p)) {
            // The file's own directory, or one above it: written first,
            // the figures made every file under it fail.
            (format!("a directory of {name}"), " goes")
        } else {
            continue;
        };
        return Err(FiguresInTheWay { option, path: p.display().to_string(), name, what }.into());
    }
    Ok(())
}

/// A lone argument after the group is the destination, and the whole
/// group is fetched into it. Refused when it is not there yet and reads as
/// what was meant to be fetched (a pattern, or a file or directory of the
/// group): DEST was most likely left out.
fn refuse_dest_like_a_name(dest: &str, group: &str, listed: &[FileEntry]) -> Result<()> {
    if std::fs::symlink_metadata(dest).is_ok() || dest.trim_end_matches('/').is_empty() {
        return Ok(());
    }
    let what = if bulk::is_glob(dest) {
        "a pattern"
    } else if listed.iter().any(|f| f.name == dest) {
        "a file of the group"
    } else if listed.iter().any(|f| names::under_dir(&f.name, dest)) {
        "a directory of the group"
    } else {
        return Ok(());
    };
    if what == "a pattern" {
        // `./photos/*` would make a directory named `*`: no such advice.
        bail!(
            "{dest} is {what}, given as the destination: name the destination last \
             (ringshare get {group} '{dest}' DEST)"
        )
    }
    bail!(
        "{dest} is {what}, given as the destination: name the destination last \
         (ringshare get {group} NAME... DEST); to fetch all of {group} into a new \
         directory of that name, write ./{dest}"
    )
}

/// How a one-file `get` ended, for its `--stats` document.
enum OneEnd {
    /// Fetched (its own figures), in this many seconds.
    Fetched(Arc<Download>, f64),
    /// The same file, of this many bytes, was at the destination already.
    Present(u64),
    /// Stopped by a signal after this many seconds.
    Stopped(&'static str, Arc<Download>, f64),
    /// Started, and failed after this many seconds.
    Failed(Arc<Download>, f64),
}

impl OneEnd {
    /// The download and its seconds, if one ran.
    fn ran(&self) -> Option<(&Arc<Download>, f64)> {
        match self {
            Self::Fetched(d, s) | Self::Stopped(_, d, s) | Self::Failed(d, s) => Some((d, *s)),
            Self::Present(_) => None,
        }
    }
}

/// Fetches one file; 1 if this run fetched it, 0 if it was there already.
async fn get_one(node: &mut Node, args: &GetArgs, file: String, dest: String) -> Result<usize> {
    let mut end = None;
    let result = get_one_ending(node, args, &file, dest, &mut end).await;
    // Written however it ended.
    if let Some(p) = &args.stats {
        write_one_stats(p, &file, end.as_ref(), result.as_ref().err())
            .with_context(|| format!("write {}", p.display()))?;
    }
    if let (Some(OneEnd::Fetched(download, _)), Some(p)) = (&end, &args.hgrm) {
        write_figures(
            p,
            ringshare_engine::metrics::hgrm(&download.latency().snapshot()).as_bytes(),
        )
        .with_context(|| format!("write {}", p.display()))?;
    }
    result.map(|()| usize::from(matches!(end, Some(OneEnd::Fetched(..)))))
}

async fn get_one_ending(
    node: &mut Node,
    args: &GetArgs,
    file: &str,
    dest: String,
    end: &mut Option<OneEnd>,
) -> Result<()> {
    let file = file.to_owned();
    // Ctrl-C stops the download cleanly (what is verified stays for the
    // next run) and the node leaves as after any end: it withdraws what it
    // registered and logs out.
    let mut interrupt = StopSignals::new()?;
    // Quiet: the path on stdout when it is done, and errors; nothing else.
    // Otherwise the completion line is printed here, once the progress
    // bar is gone: the node's own, printed from the fetch as the file
    // completed, was glued to the bar on a terminal.
    node.set_announce(false);
    let cmd = Command::DownloadFile { group: args.group.clone(), file: file.clone(), dest };
    let mut started = std::time::Instant::now();
    let mut said = false;
    let line = loop {
        match run(node, cmd.clone()).await {
            Ok(line) => break line,
            Err(e) if DestExists::is(&e) => {
                let len = already_there(node, &args.group, &file, e, args.quiet).await?;
                *end = Some(OneEnd::Present(len));
                return Ok(());
            }
            // Another process's download is fetching it into the same
            // place: waited for while it gets on, then taken up (most
            // often it is then there, whole).
            Err(e) => match e.downcast_ref::<ringshare_engine::store::StoreError>() {
                Some(ringshare_engine::store::StoreError::Busy(at)) => {
                    let at = PathBuf::from(at);
                    if !args.quiet && !said {
                        said = true;
                        eprintln!(
                            "ringshare: {} is being fetched by another download now; waiting for \
                             as long as it gets on",
                            at.display()
                        );
                    }
                    tokio::select! {
                        freed = let_go_of(&at) => if !freed { return Err(e) },
                        why = interrupt.recv() => return Err(Stopped::error(why, "")),
                    }
                    started = std::time::Instant::now();
                }
                _ => return Err(e),
            },
        }
    };
    // The shell's line points at its own `show_downloads`; not here.
    if !args.quiet {
        eprintln!("{}", line.trim_end_matches("; see show_downloads"));
    }
    let entry = node.downloads().last().ok_or_else(|| anyhow!("the download did not start"))?;
    let download = entry
        .download()
        .cloned()
        .ok_or_else(|| anyhow!("the download ended before it was looked at"))?;
    let watch = async {
        if args.quiet {
            wait_quietly(&download).await
        } else {
            follow(&download, &entry.name).await
        }
    };
    let status = tokio::select! {
        status = watch => status,
        why = interrupt.recv() => {
            let stopped = Arc::clone(&download);
            let _ = tokio::task::spawn_blocking(move || stopped.stop()).await;
            let seconds = started.elapsed().as_secs_f64();
            *end = Some(OneEnd::Stopped(why, Arc::clone(&download), seconds));
            return Err(Stopped::error(why, "; run the same command again to resume"));
        }
        // Displaced (another node took this one's place at the trackers):
        // no ticket comes any more, and it would fail a minute later for
        // want of one.
        why = session_lost(node) => {
            let stopped = Arc::clone(&download);
            let _ = tokio::task::spawn_blocking(move || stopped.stop()).await;
            *end = Some(OneEnd::Failed(Arc::clone(&download), started.elapsed().as_secs_f64()));
            bail!(
                "download stopped: {why}; the {} bytes verified are kept: run the same command \
                 again to resume",
                download.kept()
            )
        }
    };
    let seconds = download
        .ended_at()
        .map_or_else(|| started.elapsed(), |e| e.saturating_duration_since(started))
        .as_secs_f64();
    match status {
        Status::Complete => {
            *end = Some(OneEnd::Fetched(Arc::clone(&download), seconds));
            if !args.quiet {
                eprintln!("{}", crate::node::completed_line(&args.group, &entry.name, &download));
            }
            crate::say!("{}", entry_path(node));
            Ok(())
        }
        Status::Failed(why) => {
            // What it verified stays in the part file for the next run.
            let kept = download.kept();
            *end = Some(OneEnd::Failed(Arc::clone(&download), seconds));
            if kept > 0 {
                bail!(
                    "download failed: {why}; the {kept} of {} bytes verified are kept: run the \
                     same command again to resume",
                    download.meta().len
                )
            }
            bail!("download failed: {why}")
        }
        Status::Running => bail!("download stopped before completing"),
    }
}

/// Something at a file's destination that a fetch does not overwrite.
#[derive(Debug, thiserror::Error)]
enum Taken {
    /// Somebody's file: it stays, and fetching again will not change that.
    #[error("{0}")]
    NotOverwritten(String),
    /// Another download's part file or state (`x.part` while `x` is
    /// fetched), or a part file another download is writing now: tried
    /// again once the others are done.
    #[error("{0}")]
    HeldByPart(String),
}

impl Taken {
    fn of(e: &anyhow::Error) -> Option<&Self> {
        e.downcast_ref::<Self>()
    }
}

/// The one-file form found something at the destination (`taken`): the
/// same file (by its SHA1) is success, as in the bulk form (a fetch run
/// again); anything else is the error, and stays untouched.
async fn already_there(
    node: &mut Node,
    group: &str,
    file: &str,
    taken: anyhow::Error,
    quiet: bool,
) -> Result<u64> {
    let at = match (
        taken.downcast_ref::<DestExists>(),
        taken.downcast_ref::<ringshare_engine::store::StoreError>(),
    ) {
        (Some(DestExists(p)), _) => p.clone(),
        (_, Some(ringshare_engine::store::StoreError::Exists(p))) => PathBuf::from(p),
        _ => return Err(taken),
    };
    let answers = node.tracker_calls()?.fetch_many(group, &[file.to_owned()]).await?;
    let Some(Ok(info)) = answers.into_iter().next() else { return Err(taken) };
    if !holds(node, &at, file, info.meta.sha1, info.meta.len).await? {
        // Said what it is: not the file (a directory, another file).
        let what = match std::fs::symlink_metadata(&at) {
            Ok(md) if md.is_dir() => "a directory",
            Ok(md) if md.is_symlink() => "a symbolic link",
            _ => "not this file: it is never overwritten",
        };
        return Err(anyhow!("destination {} already exists ({what})", at.display()));
    }
    if !quiet {
        eprintln!("ringshare: {} is already there (same SHA1)", at.display());
    }
    crate::say!("{}", at.display());
    Ok(info.meta.len)
}

/// Whether the regular file at `at` is the file `name` of this SHA1 and
/// length (hashed on the node's pool when its length is right).
async fn holds(node: &Node, at: &Path, name: &str, sha1: Sha1Digest, len: u64) -> Result<bool> {
    if !std::fs::symlink_metadata(at).is_ok_and(|m| m.is_file() && m.len() == len) {
        return Ok(false);
    }
    let pool = node.hash_pool();
    let (path, name) = (at.to_owned(), name.to_owned());
    let local = tokio::task::spawn_blocking(move || pool.hash_file(&path, &name))
        .await
        .context("hashing task")??;
    Ok(local.sha1 == sha1 && local.len == len)
}

/// How one file of a bulk `get` ended.
#[derive(Debug)]
struct FileFigures {
    name: String,
    bytes: u64,
    /// Of `bytes`, those fetched by this run (a resumed file had the rest).
    fetched: u64,
    seconds: f64,
    /// Already at the destination, verified; nothing fetched.
    present: bool,
    /// Piece latency percentiles (µs); none when nothing was fetched.
    latency: Vec<(&'static str, u64)>,
    peers: Vec<(std::net::SocketAddr, u64)>,
}

/// What a bulk `get` did.
#[derive(Debug, Default)]
struct BulkReport {
    done: Vec<FileFigures>,
    /// Every file's piece latencies, when `--hgrm` asks for them (a
    /// histogram per file would cost ~0.2 MB each).
    latency: Option<hdrhistogram::Histogram<u64>>,
    failed: Vec<(String, String)>,
    /// How many of `failed` have had their line printed (as they failed,
    /// rather than all at the end: a fetch whose sharers left was silent
    /// for minutes).
    said: usize,
    /// A file of this fetch failed because no node was listed for it:
    /// others listed with nobody fail at once rather than each waiting
    /// for one as long.
    unlisted: bool,
    /// The nodes such a file could not connect to when it last tried (a
    /// sharer killed at a fixed address: listed until its listing expired,
    /// refusing connections): files whose answers, asked ahead, list only
    /// these fail at once too.
    /// When each was found so: an answer asked later that lists it again
    /// (a seeder restarted) is tried.
    gone: std::collections::HashMap<std::net::SocketAddr, std::time::Instant>,
    /// Of `failed`, the files whose download found something of somebody
    /// else's where it would write (its part file's path included).
    not_overwritten: std::collections::HashSet<String>,
    /// Of `failed`, the files another download was fetching (or whose
    /// part file was in the way) when this one tried, twice.
    held: std::collections::HashSet<String>,
    /// Of `failed`, the names and patterns that matched no file.
    unmatched: usize,
    seconds: f64,
    /// Files not fetched because of Ctrl-C.
    interrupted: usize,
    /// The signal that stopped the fetch, as [`StopSignals::recv`] names it,
    /// or [`SESSION_ENDED`].
    stopped_by: Option<&'static str>,
    /// Why the trackers forgot the session, or refused its user the group
    /// ([`NOT_A_MEMBER`]), when that stopped the fetch.
    lost: Option<String>,
    /// Files refused because the user is no member of the group (any
    /// more): not failures of their own, and not listed one by one.
    refused: usize,
    /// Bytes verified of the files stopped by Ctrl-C.
    partial: u64,
    /// Files fetched at once: each limit taken, from when (seconds in).
    jobs: Vec<(f64, usize)>,
    /// The I/O backend that fetched.
    io: &'static str,
}

/// A bulk `get`'s `--stats` document, serialized as it is written (keys
/// in alphabetical order, as a `serde_json::Value` had them): built as a
/// `Value` first, the figures of 10,000 files took 53 MB and a third of a
/// second after the fetch.
#[derive(Serialize)]
struct BulkStats<'a> {
    /// Bytes this run fetched (the summary line's figure).
    bytes: u64,
    /// Of them, the verified pieces of files a signal stopped.
    bytes_partial: u64,
    /// Each failed file and each name that matched none, with the reason.
    failed: Vec<FailedFigures<'a>>,
    /// A record per file complete and verified.
    files: Vec<FileStats<'a>>,
    files_done: usize,
    /// Files that failed (not the names that matched none).
    files_failed: usize,
    /// Files not finished because a signal stopped the fetch.
    files_interrupted: usize,
    /// The I/O backend that fetched (`uring` or `threads`).
    io: &'static str,
    jobs: Vec<JobsFigures>,
    /// `bytes` over `seconds`, in MB/s.
    mbps: f64,
    /// Names given that matched no file of the group.
    names_unmatched: usize,
    peer_links_opened: u64,
    peer_links_reused: u64,
    seconds: f64,
    /// What stopped the fetch, if a signal did: `interrupted` (SIGINT),
    /// `terminated` (SIGTERM) or `hung up` (SIGHUP).
    stopped_by: Option<&'static str>,
}

#[derive(Serialize)]
struct FailedFigures<'a> {
    file: &'a str,
    reason: &'a str,
}

#[derive(Serialize)]
struct JobsFigures {
    at_s: f64,
    limit: usize,
}

#[derive(Serialize)]
struct FileStats<'a> {
    /// Found complete at the destination (checked by SHA1, not fetched).
    already_present: bool,
    /// The file's size.
    bytes: u64,
    /// Bytes this run fetched of it (less than `bytes` when it resumed).
    fetched: u64,
    file: &'a str,
    latency_us: std::collections::BTreeMap<&'static str, u64>,
    /// `fetched` over `seconds`, in MB/s.
    mbps: f64,
    peers: Vec<PeerFigures>,
    seconds: f64,
}

#[derive(Serialize)]
struct PeerFigures {
    addr: String,
    bytes: u64,
}

impl BulkReport {
    /// Writes the `--stats` document to `path`.
    fn write_stats(&self, path: &Path, bytes: u64, mbps: f64) -> Result<()> {
        let doc = BulkStats {
            bytes,
            failed: self
                .failed
                .iter()
                .map(|(file, reason)| FailedFigures { file, reason })
                .collect(),
            files: self
                .done
                .iter()
                .map(|f| FileStats {
                    already_present: f.present,
                    bytes: f.bytes,
                    fetched: f.fetched,
                    file: &f.name,
                    latency_us: f.latency.iter().copied().collect(),
                    mbps: f.fetched as f64 / f.seconds.max(1e-9) / 1e6,
                    peers: f
                        .peers
                        .iter()
                        .map(|(a, b)| PeerFigures { addr: a.to_string(), bytes: *b })
                        .collect(),
                    seconds: f.seconds,
                })
                .collect(),
            bytes_partial: self.partial,
            files_done: self.done.len(),
            files_failed: self.failed.len() - self.unmatched,
            files_interrupted: self.interrupted.max(self.refused),
            io: self.io,
            jobs: self.jobs.iter().map(|&(at_s, limit)| JobsFigures { at_s, limit }).collect(),
            mbps,
            names_unmatched: self.unmatched,
            peer_links_opened: LINKS_OPENED.load(std::sync::atomic::Ordering::Relaxed),
            peer_links_reused: LINKS_REUSED.load(std::sync::atomic::Ordering::Relaxed),
            seconds: self.seconds,
            stopped_by: self.stopped_by,
        };
        write_figures(path, &serde_json::to_vec_pretty(&doc)?)?;
        Ok(())
    }

    /// Prints the summary (and each failure), writes the figures; an error
    /// unless every selected file is complete, else how many this run
    /// fetched (not those already there).
    /// `tidy` removes the empty directories the fetch made, once the
    /// figures (which may go into DEST) are written, and says whether DEST
    /// was one of them: the summary does not name it as if it were there.
    fn finish(mut self, args: &GetArgs, dest: &Path, tidy: impl FnOnce() -> bool) -> Result<usize> {
        // What this run fetched: not what a resumed file had already, and
        // the verified pieces of files stopped by Ctrl-C too.
        let bytes: u64 = self.done.iter().map(|f| f.fetched).sum::<u64>() + self.partial;
        let present = self.done.iter().filter(|f| f.present).count();
        let mbps = bytes as f64 / self.seconds.max(1e-9) / 1e6;
        // Under a second, to the hundredth: "in 0.0 s (101.9 MB/s)" read as
        // a rate out of nothing.
        let precision = if self.seconds < 1.0 { 2 } else { 1 };
        let mut line = format!(
            "fetched {} file(s), {bytes} bytes in {:.*} s ({mbps:.1} MB/s) into {}",
            self.done.len() - present,
            precision,
            self.seconds,
            dest.display()
        );
        let mut figures = Ok(());
        if let Some(p) = &args.stats {
            figures =
                self.write_stats(p, bytes, mbps).with_context(|| format!("write {}", p.display()));
        }
        if let (Some(p), Some(all), Ok(())) = (&args.hgrm, &self.latency, &figures) {
            figures = write_figures(p, ringshare_engine::metrics::hgrm(all).as_bytes())
                .with_context(|| format!("write {}", p.display()));
        }
        // (Not when the user removed it: nothing of this run's is left.)
        if tidy() && self.stopped_by != Some(DEST_REMOVED) {
            line += " (removed again: nothing in it)";
        }
        if present > 0 {
            line += &format!("; {present} already there");
        }
        crate::say!("{line}");
        self.say_failures(None);
        figures?;
        // Refused the group, the last files to start may end the fetch
        // before it stops: counted all the same.
        let not_fetched = self.interrupted.max(self.refused);
        if let Some(lost) = self.lost.take().filter(|_| not_fetched > 0) {
            // (A lost session says why itself; a login mends it.)
            let again = if self.refused > 0 && self.stopped_by != Some(SESSION_ENDED) {
                format!("once a member of {} again, run the same command to resume", args.group)
            } else if self.stopped_by == Some(DEST_REMOVED) {
                "run the same command again to fetch them".to_owned()
            } else {
                "run the same command again to resume".to_owned()
            };
            bail!(
                "{lost}: {not_fetched} file(s) not fetched{}; {again}",
                self.failures_in_brackets()
            );
        }
        if let Some(why) = self.stopped_by.filter(|_| self.interrupted > 0) {
            return Err(Stopped::error(
                why,
                &format!(
                    ": {} file(s) not fetched{}; run the same command again to resume",
                    self.interrupted,
                    self.failures_in_brackets()
                ),
            ));
        }
        if self.failed.is_empty() {
            return Ok(self.done.len() - present);
        }
        // Files, and apart from them the names that matched none.
        let files_failed = self.failed.len() - self.unmatched;
        let total = files_failed + self.done.len();
        let mut what = Vec::new();
        if files_failed > 0 {
            what.push(format!("{files_failed} of {total} file(s) failed"));
        }
        if self.unmatched > 0 {
            what.push(format!("{} name(s) matched no file", self.unmatched));
        }
        let what = what.join(" and ");
        // Failures that running the command again cannot mend: a name that
        // matched nothing, and something at a file's path that is not
        // overwritten (another file, whether there before or made during
        // the run; a link or a file where a directory goes). A file that
        // another download was fetching is not one of them, even if it is
        // there now: that download put it there.
        let file_failures = &self.failed[..files_failed];
        let lasting = self.unmatched
            + file_failures
                .iter()
                .filter(|(name, why)| {
                    !self.held.contains(name)
                        && (self.not_overwritten.contains(name)
                            || something_in_the_way(dest, name)
                            || why.contains(IN_THE_WAY))
                })
                .count();
        bail!("{what}{}", advice(file_failures, self.failed.len(), lasting))
    }
}

/// What a failure says when somebody's file is at a download's part file
/// or state (`StoreError::InTheWay`; at the move, one put there while the
/// file was fetched): it stays, so fetching again will not change it.
const IN_THE_WAY: &str = " is in the way: it is not a ringshare part file";

/// How a bulk get that failed `all` files and names (`file_failures` the
/// files', with their reasons) ends its closing line, `lasting` of them
/// failures that running it again cannot mend.
fn advice(file_failures: &[(String, String)], all: usize, lasting: usize) -> String {
    if lasting == all {
        return " (see above; fetching again will not change it)".into();
    }
    // Refused by encrypted-only nodes: the same command fails the same.
    let plain = file_failures.iter().filter(|(_, why)| why.ends_with(WITHOUT_PLAINTEXT)).count();
    if plain > 0 && lasting + plain == all {
        return format!(" (see above); {WITHOUT_PLAINTEXT}");
    }
    // Some of each: a run without --plaintext resumes them all.
    if plain > 0 {
        return format!(
            "; run the same command again without --plaintext to resume ({plain} of them \
             refused over plaintext)"
        );
    }
    "; run the same command again to resume".into()
}

impl BulkReport {
    /// Records `r`, complete and verified, with its figures (its piece
    /// latencies when `with_latency`).
    fn completed(&mut self, r: Running, with_latency: bool) {
        let mut peers: Vec<_> = r.download.contributions().into_iter().collect();
        peers.sort();
        let latency = r.download.latency();
        if let Some(all) = self.latency.as_mut() {
            let _ = latency.add_to(all);
        }
        let fetched = peers.iter().map(|(_, b)| b).sum();
        let seconds = r
            .download
            .ended_at()
            .map_or_else(|| r.started.elapsed(), |e| e.saturating_duration_since(r.started));
        self.done.push(FileFigures {
            name: r.entry.name,
            bytes: r.entry.len,
            fetched,
            seconds: seconds.as_secs_f64(),
            present: false,
            latency: if with_latency { latency.percentiles_us() } else { Vec::new() },
            peers,
        });
    }

    /// Prints the `ringshare: failed NAME: reason` lines not printed yet
    /// (above the progress view, if one is given).
    fn say_failures(&mut self, view: Option<&MultiProgress>) {
        let new = &self.failed[self.said.min(self.failed.len())..];
        if new.is_empty() {
            return;
        }
        let say = || {
            for (name, why) in new {
                eprintln!("ringshare: failed {name}: {why}");
            }
        };
        match view {
            Some(m) => m.suspend(say),
            None => say(),
        }
        self.said = self.failed.len();
    }

    /// ` (2 failed, 1 name(s) matched no file)`, or nothing.
    fn failures_in_brackets(&self) -> String {
        let files_failed = self.failed.len() - self.unmatched;
        let mut parts = Vec::new();
        if files_failed > 0 {
            parts.push(format!("{files_failed} failed"));
        }
        if self.unmatched > 0 {
            parts.push(format!("{} name(s) matched no file", self.unmatched));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    }
}

/// Whether something a fetch does not replace is at file `name`'s path
/// under `dest`: anything at the path itself (the fetch failed, so it is
/// not the file), or a link or a non-directory where one of its
/// directories goes.
fn something_in_the_way(dest: &Path, name: &str) -> bool {
    let mut at = dest.to_owned();
    let parts: Vec<&str> = name.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let Ok(md) = std::fs::symlink_metadata(&at) else { return false };
        if i + 1 == parts.len() || !md.is_dir() {
            return true;
        }
    }
    false
}

/// A file of a bulk `get` being fetched.
struct Running {
    entry: FileEntry,
    download: Arc<Download>,
    /// Its line in the progress view (none with `--quiet`).
    bar: Option<ProgressBar>,
    started: std::time::Instant,
}

/// Fetches `files` into `dest`, as many at a time as `args.jobs` says or
/// the [`JobWindow`] finds, with one progress view: an overall bar and a
/// line per running file.
async fn get_many(
    node: &mut Node,
    args: &GetArgs,
    files: Vec<FileEntry>,
    dest: &Path,
) -> Result<BulkReport> {
    let started = std::time::Instant::now();
    let total_bytes: u64 = files.iter().map(|f| f.len).sum();
    let total_files = files.len();
    let multi = MultiProgress::new();
    if args.quiet {
        multi.set_draw_target(ProgressDrawTarget::hidden());
    }
    let overall = multi.add(ProgressBar::new(total_bytes));
    overall.set_style(style(
        "{msg} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ));
    // Parsed once: a template per file was a visible part of the loop's
    // time with thousands of small files.
    let file_style = style("  {msg} [{bar:20}] {bytes}/{total_bytes}");
    // A name longer than the line has room for loses its middle: a
    // wrapped line pushes the view down the terminal at every redraw.
    let name_room = term_columns().saturating_sub(FILE_LINE_REST).max(MIN_NAME);
    let mut report = BulkReport {
        latency: args.hgrm.is_some().then(|| ringshare_engine::metrics::Latency::new().snapshot()),
        io: node.fetch_backend().name(),
        ..BulkReport::default()
    };
    let mut queue: std::collections::VecDeque<FileEntry> = files.into();
    let mut running: Vec<Running> = Vec::new();
    let mut finished_bytes = 0u64;
    let ended = node.download_ended();
    node.set_announce(false);
    // The files fetched are made durable and moved into place in batches,
    // and their share records once, when the fetch ends (below), not each
    // file's on its own.
    node.set_defer_sync(true);
    // The next files come from the same nodes: their links carry them.
    node.set_park_links(true);
    // Its files go into a few directories: each is looked at once.
    node.set_remember_dirs(true);
    let dest_s = dest.to_str().ok_or_else(|| anyhow!("destination is not valid UTF-8"))?.to_owned();
    // The tracker's answers for the next files are asked for ahead, several
    // at once: on a path with delay, one `FileInfo` round trip per file in
    // turn capped a bulk fetch at one file per RTT whatever --jobs said.
    let fetcher = node.tracker_calls()?;
    let mut interrupt = StopSignals::new()?;
    // Two files to a link need the io_uring driver; the threads driver's
    // links carry one, and a seeder admits 128 from one address.
    let most = match node.fetch_backend() {
        Backend::Uring => jobs::DEFAULT_MAX,
        Backend::Threads => jobs::ONE_PER_LINK_MAX,
    };
    // A running file holds about five descriptors (its part file twice,
    // its state, what serves it, a link's share), and a finished one its
    // part file until it is settled (`Settler`): under a low limit on
    // open files (`prlimit --nofile=150`) the default window is kept to
    // what fits, or every file failed "Too many open files".
    // (The node raises the soft limit to the hard one at start.)
    let limit = ringshare_engine::store::open_files_limit();
    let room = usize::try_from(limit.saturating_sub(64) / 6).unwrap_or(usize::MAX);
    let most = most.min(room).max(1);
    let mut window = match args.jobs {
        Some(n) => JobWindow::fixed(usize::from(n), started),
        None => JobWindow::adaptive_from(
            jobs::DEFAULT_MIN.min(most),
            jobs::DEFAULT_START,
            most,
            started,
        ),
    };
    // Asked for in batches (one request and one ticket for up to
    // `ticket::MAX_FILES` files): refilled when under two windows' worth.
    // Each with when it was asked.
    let mut ahead: std::collections::VecDeque<(
        FileEntry,
        tokio::sync::oneshot::Receiver<Result<FileInfo>>,
        std::time::Instant,
    )> = std::collections::VecDeque::new();
    // Files whose destination another download's part file held, and
    // whether they have been tried again.
    let (mut later, mut retried) = (Vec::new(), false);
    // Files still held once tried again: another process's download is
    // fetching them. Waited for while it gets on (see `Others`).
    let mut others = Others::default();
    // A signal that came while the fetch waited on the tracker, and the
    // file whose answer it was waiting for (not started, counted as not
    // fetched).
    let mut stop_asked: Option<&'static str> = None;
    // DEST itself, held: removed mid-fetch (`rm -rf DEST`), it is seen at
    // once, not after every file left has been fetched into it in vain.
    let mut dest_held = DestHeld::open(dest);
    loop {
        // Twice the window at least, four times at most: a doubling
        // starts as many files at once, and their answers must be here
        // already (at 200 ms, 128 → 256 waited on the tracker a round
        // trip mid-round, and the larger window's round looked no faster).
        let limit = window.limit();
        let (low, high) = ((2 * limit).max(BATCH / 2), (4 * limit).max(BATCH));
        if ahead.len() < low {
            while ahead.len() < high && !queue.is_empty() {
                let batch: Vec<FileEntry> = queue.drain(..BATCH.min(queue.len())).collect();
                let at = std::time::Instant::now();
                ahead.extend(
                    ask_batch(&fetcher, &args.group, batch).into_iter().map(|(f, rx)| (f, rx, at)),
                );
            }
        }
        while running.len() < window.limit() {
            let Some((f, asked, asked_at)) = ahead.pop_front() else { break };
            // A tracker slow to answer must not hold a signal back.
            let info = tokio::select! {
                a = asked => a.unwrap_or_else(|_| Err(anyhow!("tracker request task ended"))),
                why = interrupt.recv() => {
                    stop_asked = Some(why);
                    break;
                }
            };
            // Nobody listed, after another file waited for somebody in vain.
            let nobody = |i: &FileInfo| {
                report.unlisted && node.listed_others(i) == 0 && !started_here(dest, &f)
            };
            // Listed only with nodes another file found gone since this
            // answer was asked for (a sharer killed at a fixed address stays
            // listed a while, and answers are asked ahead): asked again, not
            // tried (each waited 10 s); an answer asked since that lists
            // them again (a sharer restarted) is tried.
            // (Looked at only once some node was found gone: it parses the
            // file's listed addresses.)
            let stale = |i: &FileInfo| {
                !report.gone.is_empty()
                    && node.listed_others(i) > 0
                    && node.others_in(i).all(|a| report.gone.get(&a).is_some_and(|&t| asked_at < t))
            };
            if matches!(&info, Ok(i) if stale(i)) {
                queue.push_front(f);
                continue;
            }
            let info = match info {
                Ok(i) if nobody(&i) => Err(anyhow!(
                    "{NONE_LISTED} (none listed; another file of this fetch waited {}s for one)",
                    NO_SHARER_LIMIT.as_secs()
                )),
                other => other,
            };
            match start_one(node, &args.group, &f, dest, &dest_s, info).await {
                Ok(Some(download)) => {
                    // No hidden bars with --quiet: a bar and its style per
                    // file were a visible part of a small file's cost.
                    let bar = (!args.quiet).then(|| {
                        let bar = multi.add(ProgressBar::new(f.len));
                        bar.set_style(file_style.clone());
                        bar.set_message(fit(&f.name, name_room));
                        bar
                    });
                    running.push(Running {
                        entry: f,
                        download,
                        bar,
                        started: std::time::Instant::now(),
                    });
                }
                Ok(None) => {
                    finished_bytes += f.len;
                    report.done.push(FileFigures {
                        name: f.name,
                        bytes: f.len,
                        fetched: 0,
                        seconds: 0.0,
                        present: true,
                        latency: Vec::new(),
                        peers: Vec::new(),
                    });
                }
                Err(e) if matches!(Taken::of(&e), Some(Taken::HeldByPart(_))) && !retried => {
                    later.push(f)
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    if !node.logged_in() || why == Refusal::NotLoggedIn.to_string() {
                        bail!("{why}");
                    }
                    match Taken::of(&e) {
                        Some(Taken::NotOverwritten(_)) => {
                            report.not_overwritten.insert(f.name.clone());
                        }
                        Some(Taken::HeldByPart(_)) => {
                            if others.wait_for(&f, dest, &why) {
                                continue;
                            }
                            report.held.insert(f.name.clone());
                        }
                        None => {}
                    }
                    if refuses_the_group(&why, &args.group) {
                        report.lost.get_or_insert(why);
                        report.refused += 1;
                        continue;
                    }
                    report.failed.push((f.name, why));
                }
            }
        }
        if stop_asked.is_none() && running.is_empty() && ahead.is_empty() && queue.is_empty() {
            if !later.is_empty() && !retried {
                // The part files in their way were the other downloads',
                // all done now: once settled, they are gone.
                settle(node, dest, &mut report)?;
                retried = true;
                queue.extend(later.drain(..));
                continue;
            }
            if others.files.is_empty() {
                break;
            }
            let n = others.files.len();
            overall.set_message(format!(
                "{}/{total_files} files; waiting for {n} that another download is fetching",
                report.done.len()
            ));
            if !args.quiet && !others.said {
                others.said = true;
                // A status line: on standard error, as the others are.
                multi.suspend(|| {
                    eprintln!(
                        "ringshare: waiting for {n} file(s) that another download is fetching \
                         into {} (for as long as it gets on)",
                        dest.display()
                    )
                });
            }
            tokio::select! {
                freed = others.freed(dest) => match freed {
                    Some(files) => queue.extend(files),
                    // Nothing changed for a while: that download is stuck,
                    // or stopped without letting go (a shell keeps a
                    // failed download's part file): this run ends.
                    None => {
                        for (f, why) in others.files.drain(..) {
                            report.held.insert(f.name.clone());
                            report.failed.push((f.name, why));
                        }
                        break;
                    }
                },
                why = interrupt.recv() => {
                    report.stopped_by = Some(why);
                    report.interrupted = others.files.len();
                    multi.clear().ok();
                    break;
                }
            }
            continue;
        }
        let mut in_flight = 0u64;
        let mut i = 0;
        while i < running.len() {
            let status = running[i].download.status();
            if status == Status::Running {
                // The bars' figures; with --quiet there are none, and the
                // core's lock is left to the driver.
                if let Some(bar) = &running[i].bar {
                    let verified = running[i].download.progress().verified;
                    bar.set_position(verified);
                    in_flight += verified;
                }
                i += 1;
                continue;
            }
            let r = running.swap_remove(i);
            if let Some(bar) = &r.bar {
                bar.finish_and_clear();
                multi.remove(bar);
            }
            node.forget_download(&r.download);
            let fetched = if status == Status::Complete { r.entry.len } else { 0 };
            window.on_file_done(fetched, std::time::Instant::now());
            match status {
                Status::Complete => {
                    finished_bytes += r.entry.len;
                    report.completed(r, args.stats.is_some());
                }
                Status::Failed(why) if refuses_the_group(&why, &args.group) => {
                    report.lost.get_or_insert(why);
                    report.refused += 1;
                }
                Status::Failed(why) => {
                    if why.starts_with(NONE_LISTED) {
                        report.unlisted = true;
                        let now = std::time::Instant::now();
                        report.gone.extend(r.download.unreached().into_iter().map(|a| (a, now)));
                    }
                    report.failed.push((r.entry.name, why))
                }
                Status::Running => {}
            }
        }
        report.say_failures(Some(&multi));
        let done = report.done.len();
        overall.set_position(finished_bytes + in_flight);
        overall.set_message(format!("{done}/{total_files} files"));
        let mut stop = match stop_asked {
            Some(why) => Some(why),
            // Woken as soon as one ends; else the bars refresh.
            None if !running.is_empty() => tokio::select! {
                _ = tokio::time::timeout(Duration::from_millis(200), ended.notified()) => None,
                why = interrupt.recv() => Some(why),
            },
            None => None,
        };
        if stop.is_none() && node.tracker_news() == TrackerNews::SessionEnded {
            // Displaced: no ticket comes any more, and every file would
            // fail a minute later for want of one. Stopped as by a signal
            // (what is verified stays), and said why.
            report.lost = Some(node.session_ended_why());
            stop = Some(SESSION_ENDED);
        }
        if stop.is_none() && report.refused > 0 {
            stop = Some(NOT_A_MEMBER);
        }
        if stop.is_none() && dest_held.removed() {
            report.lost =
                Some(format!("{} was removed while this get fetched into it", dest.display()));
            stop = Some(DEST_REMOVED);
        }
        if let Some(why) = stop {
            // Ctrl-C: what is verified stays for the next run.
            report.stopped_by = Some(why);
            let stopped: Vec<Arc<Download>> =
                running.iter().map(|r| Arc::clone(&r.download)).collect();
            // Every one told first, then waited for: they stop together.
            for d in &stopped {
                d.stop_soon();
            }
            let _ =
                tokio::task::spawn_blocking(move || stopped.iter().for_each(|d| d.wait())).await;
            // One that completed since the last look is done, not stopped
            // (it was counted interrupted, its bytes partial).
            let (done, stopped): (Vec<Running>, Vec<Running>) =
                running.drain(..).partition(|r| r.download.status() == Status::Complete);
            for r in done {
                node.forget_download(&r.download);
                report.completed(r, args.stats.is_some());
            }
            report.partial =
                stopped.iter().flat_map(|r| r.download.contributions().into_values()).sum();
            running = stopped;
            multi.clear().ok();
            report.interrupted = running.len()
                + ahead.len()
                + queue.len()
                + later.len()
                + report.refused
                + usize::from(stop_asked.is_some());
            break;
        }
    }
    overall.finish_and_clear();
    settle(node, dest, &mut report)?;
    report.seconds = started.elapsed().as_secs_f64();
    report.jobs = window.changes().iter().map(|&(at, n)| (at.as_secs_f64(), n)).collect();
    Ok(report)
}

/// Waits until the part file of a download to `dest` that another process
/// holds is let go of (true), or has not changed for
/// [`Others::STUCK_AFTER`] (false): the one-file form of [`Others`], whose
/// names are joined to a directory (an empty one here: `dest` itself).
async fn let_go_of(dest: &Path) -> bool {
    let entry = FileEntry { name: dest.to_string_lossy().into_owned(), len: 0, peers: 0 };
    let mut one = Others::default();
    if !one.wait_for(&entry, Path::new(""), "") {
        return true;
    }
    one.freed(Path::new("")).await.is_some()
}

/// Files of a bulk `get` that another process's download is fetching into
/// the same place (its part file's lock, [`ringshare_engine::store::part_held`]),
/// waited for while that download gets on: each is fetched again once its
/// part file is let go of (most often it is then there, whole, and counts
/// as done), and the wait ends when none of their part files has changed
/// for [`Others::STUCK_AFTER`].
struct Others {
    files: Vec<(FileEntry, String)>,
    /// The part files as last seen, and when one last changed.
    seen: std::collections::HashMap<String, (u64, u64, i64, i64)>,
    changed: Option<std::time::Instant>,
    /// The line saying so was written.
    said: bool,
    /// [`Others::STUCK_AFTER`] (shorter in tests).
    stuck_after: Duration,
}

impl Default for Others {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            seen: Default::default(),
            changed: None,
            said: false,
            stuck_after: Self::STUCK_AFTER,
        }
    }
}

impl Others {
    /// Without a change in any part file waited for this long, the others'
    /// downloads are taken to be stuck.
    const STUCK_AFTER: Duration = Duration::from_secs(30);
    /// How often the part files are looked at.
    const LOOK_EVERY: Duration = Duration::from_millis(250);

    /// Waits for `f` if another download holds its part file now; false
    /// if none does (the file then fails as it did).
    fn wait_for(&mut self, f: &FileEntry, dest: &Path, why: &str) -> bool {
        let Some(seen) = ringshare_engine::store::part_held(&dest.join(&f.name)) else {
            return false;
        };
        self.seen.insert(f.name.clone(), seen);
        self.changed.get_or_insert_with(std::time::Instant::now);
        self.files.push((f.clone(), why.to_owned()));
        true
    }

    /// The files whose part file was let go of, once one is; `None` once
    /// no part file has changed for [`Others::STUCK_AFTER`].
    async fn freed(&mut self, dest: &Path) -> Option<Vec<FileEntry>> {
        loop {
            tokio::time::sleep(Self::LOOK_EVERY).await;
            let now = std::time::Instant::now();
            let mut freed = Vec::new();
            let mut i = 0;
            while i < self.files.len() {
                let name = &self.files[i].0.name;
                match ringshare_engine::store::part_held(&dest.join(name)) {
                    None => {
                        self.seen.remove(name);
                        freed.push(self.files.swap_remove(i).0);
                        continue;
                    }
                    Some(seen) => {
                        if self.seen.insert(name.clone(), seen) != Some(seen) {
                            self.changed = Some(now);
                        }
                    }
                }
                i += 1;
            }
            if !freed.is_empty() {
                self.changed = Some(now);
                return Some(freed);
            }
            if self.changed.is_some_and(|at| now.duration_since(at) >= self.stuck_after) {
                return None;
            }
        }
    }
}

/// Makes the files fetched so far durable and moves them into place; one
/// that could not be moved counts as failed.
fn settle(node: &Node, dest: &Path, report: &mut BulkReport) -> Result<()> {
    for (at, why) in node.sync_deferred()? {
        let name = at
            .strip_prefix(dest)
            .map_or_else(|_| at.display().to_string(), |n| n.display().to_string());
        report.done.retain(|f| f.name != name);
        report.failed.push((name, why));
    }
    Ok(())
}

/// Whether file `f` has something at its path under `dest` already (the
/// file, or a part file to resume): started on as usual.
fn started_here(dest: &Path, f: &FileEntry) -> bool {
    let at = dest.join(&f.name);
    std::fs::symlink_metadata(&at).is_ok()
        || std::fs::symlink_metadata(ringshare_engine::store::part_path(&at)).is_ok()
}

/// Files asked of the tracker in one `FileInfos`.
const BATCH: usize = ringshare_engine::ticket::MAX_FILES;

/// Asks the tracker for `files` of `group` in one request (again for those
/// it did not answer): each file's answer arrives on its own channel.
fn ask_batch(
    fetcher: &TrackerCalls,
    group: &str,
    files: Vec<FileEntry>,
) -> Vec<(FileEntry, tokio::sync::oneshot::Receiver<Result<FileInfo>>)> {
    let mut names = Vec::with_capacity(files.len());
    let mut senders = Vec::with_capacity(files.len());
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let (tx, rx) = tokio::sync::oneshot::channel();
        names.push(f.name.clone());
        senders.push(tx);
        out.push((f, rx));
    }
    let (fetcher, group) = (fetcher.clone(), group.to_owned());
    tokio::spawn(async move {
        let mut senders = senders.into_iter();
        let mut at = 0;
        let mut waits = lookup_retry_delays();
        while at < names.len() {
            let why = match fetcher.fetch_many(&group, &names[at..]).await {
                // No tracker reachable, or one that failed to answer (a
                // restart): asked again rather than failing every file
                // asked, for about as long as a download waits for a peer.
                Err(e) if transient(&e) => match waits.next() {
                    Some(wait) => {
                        tracing::debug!("file lookup failed, again in {wait:?}: {e:#}");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    None => format!("{e:#}"),
                },
                // An empty answer to a non-empty ask would never end.
                Ok(answers) if !answers.is_empty() => {
                    at += answers.len();
                    for (answer, tx) in answers.into_iter().zip(senders.by_ref()) {
                        let _ = tx.send(answer);
                    }
                    continue;
                }
                Ok(_) => "the tracker answered for none of the files asked".to_owned(),
                Err(e) => format!("{e:#}"),
            };
            senders.for_each(|tx| drop(tx.send(Err(anyhow!("{why}")))));
            break;
        }
    });
    out
}

/// The waits between tries of a file lookup that found no tracker: a
/// quarter of a second, doubling to 8 s, then every 8 s; a minute and more
/// in all.
fn lookup_retry_delays() -> impl Iterator<Item = Duration> {
    (0..6)
        .map(|i| Duration::from_millis(250 << i))
        .chain(std::iter::repeat_n(Duration::from_secs(8), 6))
}

/// Whether a tracker call's failure may pass: no tracker reached, or one
/// that failed to carry the request out or is catching up.
fn transient(e: &anyhow::Error) -> bool {
    use ringshare_engine::proto::Refusal;
    e.downcast_ref::<crate::tracker_link::LinkError>().is_some()
        || matches!(
            e.downcast_ref::<Refusal>(),
            Some(Refusal::Internal(_) | Refusal::CatchingUp(_) | Refusal::Stopping(_))
        )
}

/// Starts fetching `f` into `dest` with the tracker's answer `info`:
/// `None` when the same file is already there (verified by its SHA1); an
/// error when a different one is (it is never overwritten) or the download
/// cannot start.
async fn start_one(
    node: &mut Node,
    group: &str,
    f: &FileEntry,
    dest: &Path,
    dest_s: &str,
    info: Result<FileInfo>,
) -> Result<Option<Arc<Download>>> {
    let at = dest.join(&f.name);
    let differs = || {
        // A download's part file (`x.part` while `x` is fetched, in this
        // run or a stopped one): gone once that download is done.
        if ringshare_engine::store::is_part_file(&at) || ringshare_engine::store::is_part_state(&at)
        {
            return anyhow::Error::new(Taken::HeldByPart(format!(
                "the part file of another download is at {}; run the same command again once \
                 that download is done",
                at.display()
            )));
        }
        let what = match std::fs::symlink_metadata(&at) {
            Ok(md) if md.is_dir() => "a directory",
            Ok(md) if md.is_symlink() => "a symbolic link",
            Ok(md) if !md.is_file() => "something other than a regular file",
            _ => "a different file",
        };
        anyhow::Error::new(Taken::NotOverwritten(format!(
            "{what} is at {}; not overwritten",
            at.display()
        )))
    };
    // Whether what is at the path is not a file of the expected size
    // (`None`: nothing there).
    let other = || std::fs::symlink_metadata(&at).ok().map(|md| !md.is_file() || md.len() != f.len);
    let info = match info {
        Ok(info) => info,
        // Something else in the way is named as such, whatever the tracker
        // answered (its lookup only on this path).
        Err(_) if other() == Some(true) => return Err(differs()),
        Err(e) => return Err(e),
    };
    let (sha1, len) = (info.meta.sha1, info.meta.len);
    // The destination is looked at by the download's start: only a file
    // already there (a fetch run again) costs a second look, here.
    match node.download_with(group.to_owned(), f.name.clone(), dest_s.to_owned(), info) {
        Ok(_) => {
            let entry =
                node.downloads().last().ok_or_else(|| anyhow!("the download did not start"))?;
            Ok(Some(
                entry
                    .download()
                    .cloned()
                    .ok_or_else(|| anyhow!("the download ended before it was looked at"))?,
            ))
        }
        Err(e) if DestExists::is(&e) => {
            if holds(node, &at, &f.name, sha1, len).await? {
                Ok(None)
            } else {
                Err(differs())
            }
        }
        // Somebody's file where the part file would go stays, and so does
        // the failure.
        Err(e) => match e.downcast::<ringshare_engine::store::StoreError>() {
            Ok(e @ ringshare_engine::store::StoreError::InTheWay(_)) => {
                Err(anyhow::Error::new(Taken::NotOverwritten(e.to_string())))
            }
            // Another download (another `get`, a shell) is fetching it now:
            // tried again once this run's others are done.
            Ok(e @ ringshare_engine::store::StoreError::Busy(_)) => {
                Err(anyhow::Error::new(Taken::HeldByPart(e.to_string())))
            }
            Ok(e) => Err(e.into()),
            Err(e) => Err(e),
        },
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// `ringshare share`.
pub async fn share(args: ShareArgs) -> Result<()> {
    let mut node = login_node(&args.node, true).await?;
    let result = seed(&mut node, &args).await;
    let left =
        leave(&mut node, picked(args.node.listen, args.node.advertise), result.is_ok()).await;
    result.and(left)
}

/// Shares `args.paths` and seeds them until SIGINT, SIGTERM or SIGHUP.
async fn seed(node: &mut Node, args: &ShareArgs) -> Result<()> {
    // Handlers first: a signal right after the announcement stops cleanly.
    let mut stop = StopSignals::new()?;
    let single = match args.paths.as_slice() {
        [p] => std::fs::metadata(p).is_ok_and(|m| m.is_file()),
        _ => false,
    };
    let group = &args.group;
    // A signal while the files are hashed stops the hashing, and nothing is
    // shared (it used to be heeded only once every file was hashed and
    // registered: minutes on a large tree).
    let halt = node.hash_stop();
    let report = {
        let sharing = node.share_paths(&args.paths, group);
        tokio::pin!(sharing);
        tokio::select! {
            r = &mut sharing => r?,
            why = stop.recv() => {
                halt.store(true, std::sync::atomic::Ordering::Relaxed);
                // Registration has not begun, or it ends as it would.
                let rest = match sharing.await {
                    Ok(_) => " as the files were registered",
                    Err(_) => "; nothing was shared",
                };
                return Err(Stopped::error(why, rest));
            }
        }
    };
    if single {
        // Shared before from this node and resumed at login (the same
        // command run again on a fixed --listen): seeded again, said so.
        match report.one_file()? {
            OneFile::Shared(s) => crate::say!("{}", s.uploaded(group)),
            OneFile::Already(s) => crate::say!(
                "{} is already shared in {group} by this node: {} bytes, {}, sha1 {}",
                s.name,
                s.len,
                crate::node::pieces_word(s.pieces),
                s.sha1
            ),
        }
    } else {
        // Every file skipped, or none there: the error alone, as the
        // shell's `upload_file` says it (a lone skip's reason is in it).
        let from = match args.paths.as_slice() {
            [one] => one.display().to_string(),
            _ => "the paths given".to_owned(),
        };
        let nothing = report.nothing_shared(&from);
        if nothing.is_none() || report.skipped.len() > 1 {
            for s in &report.skipped {
                eprintln!("ringshare: skipped {s}");
            }
        }
        if let Some(why) = nothing {
            bail!("{why}");
        }
        let bytes: u64 =
            report.shared.iter().chain(report.already.iter().map(|(_, s)| s)).map(|s| s.len).sum();
        eprintln!(
            "ringshare: hashed {bytes} bytes in {:.2} s ({:.0} MB/s); registered {} file(s) in {:.2} s",
            report.hash_seconds,
            bytes as f64 / report.hash_seconds.max(1e-9) / 1e6,
            report.shared.len(),
            report.register_seconds
        );
        crate::say!("{}", report.summary(&args.group));
    }
    // A signal that came while the files were hashed stops it here.
    let early = tokio::select! {
        biased;
        _ = stop.recv() => true,
        _ = std::future::ready(()) => false,
    };
    if !early {
        match args.node.advertise {
            Some(a) => crate::say!(
                "seeding on {} (listed as {a}) until SIGINT, SIGTERM or SIGHUP",
                node.addr()
            ),
            None => crate::say!("seeding on {} until SIGINT, SIGTERM or SIGHUP", node.addr()),
        }
        seed_on(node, &args.node, &mut stop).await?;
    }
    Ok(())
}

/// Watches the trackers for a `share` until a signal ([`watch_trackers`]).
/// A session the trackers ended (its node silent for longer than their
/// session expiry, a tracker that lost its data) is logged in again with
/// the password `share` was given, and the files are shared again from
/// the share record, with one line saying so; a session ended again
/// within [`RELOGIN_AT_MOST_EVERY`] of that, or a login that fails (the
/// address taken by another running node), ends it with the error as
/// before.
async fn seed_on(node: &mut Node, login: &NodeLogin, stop: &mut StopSignals) -> Result<()> {
    let mut last_relogin: Option<std::time::Instant> = None;
    loop {
        let ended = match watch_trackers(node, stop, "run share again").await {
            Err(e) if node.tracker_news() == TrackerNews::SessionEnded => e,
            other => return other,
        };
        if last_relogin.is_some_and(|at| at.elapsed() < RELOGIN_AT_MOST_EVERY) {
            return Err(ended);
        }
        last_relogin = Some(std::time::Instant::now());
        let again = async {
            let password = read_password(&login.password_file)?;
            run(node, Command::Login { user: login.user.clone(), password }).await
        };
        match again.await {
            Ok(line) => {
                let rest: Vec<&str> = line.split("; ").skip(1).collect();
                let rest =
                    if rest.is_empty() { String::new() } else { format!("; {}", rest.join("; ")) };
                eprintln!(
                    "ringshare: the trackers had ended this node's session (silent for longer \
                     than their session expiry, or a tracker lost its data): logged in again{rest}"
                );
            }
            Err(e) => return Err(ended.context(format!("logging in again failed: {e:#}"))),
        }
    }
}

/// How soon after logging in again a `share` whose session ends again
/// gives up ([`seed_on`]): another node taking its address each time.
const RELOGIN_AT_MOST_EVERY: Duration = Duration::from_secs(60);

/// How a bulk get's `--stats` names a fetch stopped because the trackers
/// forgot its session (`stopped_by`).
const SESSION_ENDED: &str = "session ended";

/// How a bulk get's `--stats` names a fetch stopped because its
/// destination directory was removed while it ran.
const DEST_REMOVED: &str = "destination removed";

/// A bulk get's destination directory, held open (`O_PATH`) and looked at
/// every [`DestHeld::EVERY`]: once removed, nothing fetched can be put in
/// it, since its directories are held open too ([`crate::downloads`]).
struct DestHeld {
    dir: Option<std::fs::File>,
    looked: std::time::Instant,
}

impl DestHeld {
    const EVERY: Duration = Duration::from_millis(100);

    fn open(dest: &Path) -> Self {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(dest)
            .ok();
        Self { dir, looked: std::time::Instant::now() }
    }

    /// Whether the directory was removed (it has no name left: a removed
    /// directory's link count is 0), looked at once in [`Self::EVERY`].
    fn removed(&mut self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(dir) = &self.dir else { return false };
        if self.looked.elapsed() < Self::EVERY {
            return false;
        }
        self.looked = std::time::Instant::now();
        dir.metadata().is_ok_and(|md| md.nlink() == 0)
    }
}

/// How a bulk get's `--stats` names a fetch stopped because its user is no
/// member of the group (any more): every file would be refused alike (a
/// user who left mid-fetch got 1,167 lines of `not a member of group`, and
/// a closing line saying a run again would resume).
const NOT_A_MEMBER: &str = "not a member";

/// Whether `why` refuses the user the group `group` itself (no member, no
/// such group), not one file of it.
fn refuses_the_group(why: &str, group: &str) -> bool {
    why.ends_with(&Refusal::NotMember(group.to_owned()).to_string())
        || why.ends_with(&Refusal::NoSuchGroup(group.to_owned()).to_string())
}

/// Resolves, with why, once the trackers no longer know `node`'s session
/// (its heartbeat found it so).
async fn session_lost(node: &Node) -> String {
    loop {
        if node.tracker_news() == TrackerNews::SessionEnded {
            return node.session_ended_why();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How long a seeder's heartbeats go unanswered before it says so.
const SILENT_TRACKERS_AFTER: Duration = Duration::from_secs(5);

/// Seeds until a signal, saying on standard error when no tracker has
/// answered the node's heartbeats for [`SILENT_TRACKERS_AFTER`] (its files
/// leave the peer lists meanwhile) and when one answers again; an error
/// once the trackers no longer know its session (nobody is told of it any
/// more, so it would seed for nobody), ending with `then` (what comes of
/// it: `share` is to be run again; a `get --seed-for` keeps its files).
async fn watch_trackers(node: &Node, stop: &mut StopSignals, then: &str) -> Result<()> {
    let mut said_silent = false;
    loop {
        tokio::select! {
            _ = stop.recv() => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        match node.tracker_news() {
            TrackerNews::Silent(for_, why) if for_ >= SILENT_TRACKERS_AFTER && !said_silent => {
                said_silent = true;
                eprintln!(
                    "ringshare: no tracker has answered for {}s ({why}): this node's files are \
                     not listed while none does; trying on",
                    for_.as_secs()
                );
            }
            TrackerNews::Answering if said_silent => {
                said_silent = false;
                eprintln!("ringshare: a tracker answers again: the files are listed again");
            }
            TrackerNews::SessionEnded | TrackerNews::LoggedOut => {
                bail!("{}: its files are not listed; {then}", node.session_ended_why())
            }
            _ => {}
        }
        if node.shared_count() == 0 {
            // Every file withdrawn (its user left the group, it changed on
            // disk, …; a warning said which): a `get --seed-for` went on
            // for the rest of its time serving nothing.
            bail!("nothing is shared here any more (see the warnings above)");
        }
    }
}

/// `ringshare ls`.
pub async fn ls(mut args: LsArgs) -> Result<()> {
    // A listing serves nothing: it logs in at its own address, never at an
    // advertised one, where it would take the place of the node serving
    // there (the same user's `share`, given the same flags).
    args.node.advertise = None;
    let mut node = login_node(&args.node, false).await?;
    let prefix = args.prefix.as_deref().unwrap_or("");
    let result = node.list_group(&args.group, prefix).await;
    let _ = leave(&mut node, picked(args.node.listen, args.node.advertise), false).await;
    let files = result?;
    crate::node::no_match(&files, &args.group, prefix)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = files
        .iter()
        .try_for_each(|f| writeln!(out, "{}", crate::node::file_line(f)))
        .and_then(|()| out.flush());
    match written {
        // A reader that had enough (`| head`) is not a failure.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Columns a bulk get's file line takes beside the name (the bar, bytes of
/// total bytes).
const FILE_LINE_REST: usize = 50;
/// Columns the one-file progress line takes beside the name: its peer
/// count, bytes of total bytes, rate and ETA (about 62), and at least 10
/// of the bar, which takes whatever is left (`wide_bar`).
const ONE_LINE_REST: usize = 72;
/// A name is never cut shorter than this.
const MIN_NAME: usize = 12;

/// The width of the terminal on standard error (80 when it is not one).
fn term_columns() -> usize {
    let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `winsize` into `size`.
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        80
    }
}

/// `name` in at most `max` characters: past that its middle gives way to
/// `…`, keeping more of the end (the file) than of the start (where).
fn fit(name: &str, max: usize) -> String {
    let n = name.chars().count();
    if n <= max || max < 3 {
        return name.to_owned();
    }
    let head = (max - 1) / 3;
    let tail = max - 1 - head;
    let mut out: String = name.chars().take(head).collect();
    out.push('…');
    out.extend(name.chars().skip(n - tail));
    out
}

/// Shows a download's progress until it ends; returns how it ended.
pub async fn follow(download: &Arc<Download>, name: &str) -> Status {
    let total = download.progress().total;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let name = fit(name, term_columns().saturating_sub(ONE_LINE_REST).max(MIN_NAME));
    loop {
        let p = download.progress();
        // The message first: the position draws the bar, which showed once
        // without its name.
        let s = if p.peers == 1 { "" } else { "s" };
        bar.set_message(format!("{name} ({} peer{s})", p.peers));
        bar.set_position(p.verified);
        if p.status != Status::Running {
            // Cleared: the line that says how it ended follows on its own.
            bar.finish_and_clear();
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

/// The one-file form's `--stats` document: the file's own figures when a
/// download ran, whether it completed, was stopped or failed (`file`,
/// `bytes` — its size —, `fetched` by this run, `seconds`, `mbps`,
/// `latency_us`, `peers`; for a file already there, its size and nothing
/// fetched), and whatever happened the bulk form's counts
/// (`files_done`, `files_failed`, `failed` with the reason,
/// `names_unmatched`, `files_interrupted`, `bytes_partial`, `stopped_by`,
/// `already_present`).
fn write_one_stats(
    path: &Path,
    name: &str,
    end: Option<&OneEnd>,
    error: Option<&anyhow::Error>,
) -> Result<()> {
    let unmatched = error.is_some_and(|e| {
        e.chain().any(|c| matches!(c.downcast_ref::<Refusal>(), Some(Refusal::NoSuchFile { .. })))
    });
    let stopped_by = match end {
        Some(OneEnd::Stopped(why, ..)) => Some(*why),
        _ => None,
    };
    // What this run fetched (a resumed file's verified pieces from before
    // are not counted).
    let fetched_by = |d: &Download| -> u64 { d.contributions().into_values().sum() };
    let failed: Vec<serde_json::Value> = match (error, stopped_by) {
        (Some(e), None) => vec![serde_json::json!({"file": name, "reason": format!("{e:#}")})],
        _ => Vec::new(),
    };
    let mut doc = serde_json::json!({
        "file": name,
        "files_done": usize::from(matches!(end, Some(OneEnd::Fetched(..) | OneEnd::Present(_)))),
        "files_failed": usize::from(!failed.is_empty() && !unmatched),
        "failed": failed,
        "names_unmatched": usize::from(unmatched),
        "files_interrupted": usize::from(stopped_by.is_some()),
        "bytes_partial": match end {
            Some(OneEnd::Stopped(_, d, _) | OneEnd::Failed(d, _)) => fetched_by(d),
            _ => 0,
        },
        "stopped_by": stopped_by,
        "already_present": matches!(end, Some(OneEnd::Present(_))),
    });
    // There already: its size, and nothing fetched.
    if let (Some(OneEnd::Present(len)), Some(d)) = (end, doc.as_object_mut()) {
        let figures = serde_json::json!({
            "bytes": len, "fetched": 0, "seconds": 0.0, "mbps": 0.0, "latency_us": {}, "peers": [],
        });
        if let serde_json::Value::Object(f) = figures {
            d.extend(f);
        }
    }
    if let Some((download, seconds)) = end.and_then(OneEnd::ran) {
        let bytes = download.meta().len;
        let latency: serde_json::Map<String, serde_json::Value> =
            ringshare_engine::metrics::percentiles_us(&download.latency().snapshot())
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into()))
                .collect();
        let mut peers: Vec<_> = download.contributions().into_iter().collect();
        peers.sort();
        // What this run fetched: a resumed file's size over this run's
        // time made a rate that was not (27.8 MB/s against 9.7).
        let fetched: u64 = peers.iter().map(|(_, b)| *b).sum();
        let peers: Vec<serde_json::Value> = peers
            .into_iter()
            .map(|(a, b)| serde_json::json!({"addr": a.to_string(), "bytes": b}))
            .collect();
        let figures = serde_json::json!({
            "bytes": bytes,
            "fetched": fetched,
            "seconds": seconds,
            "mbps": fetched as f64 / seconds / 1e6,
            "latency_us": latency,
            "peers": peers,
        });
        if let (Some(d), serde_json::Value::Object(f)) = (doc.as_object_mut(), figures) {
            d.extend(f);
        }
    }
    write_figures(path, &serde_json::to_vec_pretty(&doc)?)?;
    Ok(())
}

/// Writes a figures file (`--stats`, `--hgrm`) whole or not at all: into
/// a new file beside it, then moved over it (a regular file or none). A run killed while writing
/// leaves the last run's figures (or none), never half a document.
fn write_figures(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // A link, a device (`/dev/stdout`), a FIFO: written through, as given.
    if std::fs::symlink_metadata(path).is_ok_and(|md| !md.is_file()) {
        return std::fs::write(path, bytes);
    }
    let name = path.file_name().ok_or_else(|| std::io::Error::other("not a file name"))?;
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(format!(".{}.tmp", std::process::id()));
    let temp = path.with_file_name(temp);
    let written = std::fs::write(&temp, bytes).and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
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
    choose_backend(flag, true)
}

/// [`backend`], saying which only when `say` (not for a listing, nor a
/// `get --quiet`).
fn choose_backend(flag: Option<Backend>, say: bool) -> Result<Backend> {
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
    if say {
        eprintln!("ringshare: I/O backend (serving and fetching): {} ({why})", backend.name());
    }
    Ok(backend)
}

/// Piece server limits, with the node's upload rate;
/// `RINGSHARE_SERVE_DELAY_MS` slows every piece served (fault injection for
/// tests and demos).
pub fn limits(upload_rate: Option<UploadRate>) -> ServerLimits {
    let mut limits = ServerLimits { upload_rate, ..ServerLimits::default() };
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

/// Parses `--advertise`: an address other nodes can connect to (not
/// 0.0.0.0, not port 0, not multicast).
pub fn advertised(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    let broadcast = matches!(addr.ip(), std::net::IpAddr::V4(v4) if v4.is_broadcast());
    if addr.ip().is_unspecified() || addr.ip().is_multicast() || broadcast || addr.port() == 0 {
        return Err(format!("{addr} is no address other nodes can connect to"));
    }
    Ok(addr)
}

/// Warns when the node would be listed under a loopback address while a
/// tracker is elsewhere: nodes on other hosts could not fetch from it.
pub fn warn_if_unreachable(listen: SocketAddr, advertise: Option<SocketAddr>, list: &TrackerList) {
    if let Some(a) = advertise.filter(|_| listen.port() == 0) {
        // A forward to a port not known until the node starts cannot be
        // set up ahead; and an advertised address counts as a fixed one,
        // so the files stay listed under it after the node stops.
        eprintln!(
            "ringshare: warning: --advertise {a} with a port the system picks for this node: a \
             port forward cannot be set up to it ahead, and the files stay listed under {a} \
             after it stops (give --listen IP:PORT with the port the forward targets)"
        );
    }
    let listed = advertise.unwrap_or(listen);
    if listed.ip().is_loopback() && list.addrs.iter().any(|t| !t.ip().is_loopback()) {
        eprintln!(
            "ringshare: warning: this node is listed as {listed}, which only this host can \
             reach, while a tracker is on another host: nodes elsewhere cannot fetch from it \
             (listen on 0.0.0.0, or pass --advertise)"
        );
    }
}

/// Starts a node and logs it in; `say` prints which I/O backend it runs
/// and what the login did not resume (not with `get --quiet` nor `ls`).
/// The password in the first line of `pw_file`.
fn read_password(pw_file: &Path) -> Result<String> {
    let password =
        std::fs::read_to_string(pw_file).with_context(|| format!("read {}", pw_file.display()))?;
    let password = password.lines().next().unwrap_or("").to_owned();
    if password.is_empty() {
        bail!("{} holds no password", pw_file.display());
    }
    Ok(password)
}

async fn login_node(login: &NodeLogin, say: bool) -> Result<Node> {
    let list = TrackerList::load(&login.trackers)?;
    list.check_ports(None)?;
    let password = read_password(&login.password_file)?;
    let listen = login.listen.unwrap_or_else(|| default_listen(&list));
    warn_if_unreachable(listen, login.advertise, &list);
    let listener = bind_piece_server(listen)?;
    let backend = choose_backend(login.io, say)?;
    if say {
        crate::node::say_tcp_buffer_note();
    }
    let mut node = Node::new(
        listener,
        list,
        login.state_dir.clone().unwrap_or_else(default_state_dir),
        limits(login.upload_rate),
        backend,
        login.plaintext,
    )?;
    if login.plaintext {
        eprintln!(
            "ringshare: peer links are PLAINTEXT (--plaintext): not encrypted, not authenticated"
        );
    }
    node.set_advertise(login.advertise);
    let line = run(&mut node, Command::Login { user: login.user.clone(), password }).await?;
    // What a login has to say beyond itself and the shares of this address
    // it resumed (those it did not, and why; a record it could not write),
    // as the shell says it — not with `get --quiet` nor `ls`.
    let said: Vec<&str> =
        line.split("; ").skip(1).filter(|s| !s.starts_with("resumed sharing ")).collect();
    if say && !said.is_empty() {
        eprintln!("ringshare: {}", said.join("; "));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_durations_read_as_written_and_say_so_back() {
        let secs = |s: &str| seed_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("90"), Ok(90));
        assert_eq!(secs("30s"), Ok(30));
        assert_eq!(secs("10m"), Ok(600));
        assert_eq!(secs("2h"), Ok(7200));
        for bad in ["", "s", "5x", "-3", "1.5m", "10 m", "9999999h", "18446744073709551615m"] {
            assert!(seed_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(humane_duration(Duration::from_secs(600)), "10m");
        assert_eq!(humane_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(humane_duration(Duration::from_secs(90)), "90s");
    }

    /// A bulk get's closing line says what to do: nothing (what failed
    /// stays failed), drop --plaintext, both, or run it again.
    #[test]
    fn a_failed_bulk_gets_closing_line_says_what_would_mend_it() {
        let f = |why: &str| ("f".to_owned(), why.to_owned());
        let plain = f(&format!("refused at the handshake; {WITHOUT_PLAINTEXT}"));
        let other = f("no node shares the file (none listed for 10s)");
        let lasting = f("a directory is in the way");
        assert_eq!(
            advice(std::slice::from_ref(&lasting), 1, 1),
            " (see above; fetching again will not change it)"
        );
        let p = [plain.clone(), lasting.clone()];
        assert_eq!(advice(&p, 2, 1), format!(" (see above); {WITHOUT_PLAINTEXT}"));
        // Some refused over plaintext, some that a run mends.
        let mixed = [plain.clone(), other.clone(), lasting];
        assert_eq!(
            advice(&mixed, 3, 1),
            "; run the same command again without --plaintext to resume (1 of them refused over \
             plaintext)"
        );
        assert_eq!(advice(&[other], 1, 0), "; run the same command again to resume");
    }

    #[test]
    fn an_interrupted_fetch_counts_unmatched_names_apart_from_failed_files() {
        let mut r = BulkReport::default();
        assert_eq!(r.failures_in_brackets(), "");
        r.failed.push(("a".into(), "why".into()));
        assert_eq!(r.failures_in_brackets(), " (1 failed)");
        r.failed.push(("nomatch".into(), "no file in g matches nomatch".into()));
        r.unmatched = 1;
        assert_eq!(r.failures_in_brackets(), " (1 failed, 1 name(s) matched no file)");
        r.failed.remove(0);
        assert_eq!(r.failures_in_brackets(), " (1 name(s) matched no file)");
    }

    /// A file whose part file another download holds is waited for while
    /// that part file changes, handed back once it is let go of, and given
    /// up once it has not changed for a while.
    #[tokio::test]
    async fn files_another_download_holds_are_waited_for_while_it_gets_on() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let entry = |name: &str| FileEntry { name: name.into(), len: 10, peers: 1 };
        let part = |name: &str| ringshare_engine::store::part_path(&dir.path().join(name));
        let held = |name: &str| {
            let f = std::fs::File::create(part(name)).unwrap();
            // SAFETY: a valid descriptor owned by `f`.
            assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
            f
        };
        let mut others = Others { stuck_after: Duration::from_millis(2000), ..Others::default() };
        // No part file, or one nobody holds: not waited for.
        assert!(!others.wait_for(&entry("none.bin"), dir.path(), "why"));
        std::fs::write(part("free.bin"), b"x").unwrap();
        assert!(!others.wait_for(&entry("free.bin"), dir.path(), "why"));
        let a = held("a.bin");
        let b = held("b.bin");
        assert!(others.wait_for(&entry("a.bin"), dir.path(), "a is busy"));
        assert!(others.wait_for(&entry("b.bin"), dir.path(), "b is busy"));
        // a is let go of: handed back; b still waited for.
        drop(a);
        let freed = others.freed(dir.path()).await.unwrap();
        assert_eq!(freed.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["a.bin"]);
        assert_eq!(others.files.len(), 1);
        // b's download gets on (its part file grows) for longer than the
        // limit: still waited for.
        let started = std::time::Instant::now();
        let writer = {
            let path = part("b.bin");
            tokio::spawn(async move {
                for i in 0..12u8 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let mut bytes = std::fs::read(&path).unwrap();
                    bytes.push(i);
                    std::fs::write(&path, bytes).unwrap();
                }
            })
        };
        // Then it stops changing: given up, its reason kept.
        assert!(others.freed(dir.path()).await.is_none());
        writer.await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(2400 + 2000));
        assert_eq!(
            others.files.iter().map(|(f, why)| (f.name.as_str(), why.as_str())).collect::<Vec<_>>(),
            [("b.bin", "b is busy")]
        );
        drop(b);
    }

    #[test]
    fn only_an_address_others_can_reach_is_advertised() {
        assert_eq!(advertised("203.0.113.7:7101"), Ok("203.0.113.7:7101".parse().unwrap()));
        assert_eq!(advertised("[2001:db8::1]:7101").unwrap().port(), 7101);
        for bad in [
            "0.0.0.0:7101",
            "203.0.113.7:0",
            "224.0.0.1:7101",
            "255.255.255.255:1",
            "[::]:7101",
            "x:1",
            "",
        ] {
            assert!(advertised(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_long_name_loses_its_middle_to_fit() {
        assert_eq!(fit("photos/a.jpg", 24), "photos/a.jpg");
        let long = format!("photos/2026/{}/holiday-in-the-mountains.jpg", "x".repeat(200));
        let cut = fit(&long, 40);
        assert_eq!(cut.chars().count(), 40);
        assert_eq!(cut, "photos/2026/x…liday-in-the-mountains.jpg");
        // Characters, not bytes: a multi-byte name is cut on its boundaries.
        let wide = "é".repeat(100);
        assert_eq!(fit(&wide, 10).chars().count(), 10);
        assert_eq!(fit("abcdef", 2), "abcdef", "too narrow to cut");
    }
}
