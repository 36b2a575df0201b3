//! `tracker_load`: many concurrent clients against one ringshare tracker.
//!
//! Each client is a tokio task with its own connection and session, sending
//! one request at a time (the protocol's one-request-one-response rule), like
//! `redis-benchmark` without pipelining. The run has four parts:
//!
//! 1. **Setup** (not measured): every client creates its user (or finds it
//!    from an earlier run with the same `--prefix`) and logs in; the first
//!    `--groups` clients each own a shared group holding `--files-per-group`
//!    files, and every other client joins one of them (join + accept). For the
//!    `writes` and `mixed` mixes, every client also owns a private group.
//! 2. **Warm-up** (`--warmup` seconds): the loop runs, nothing is recorded
//!    but refusals, which are counted apart.
//! 3. **Window** (`--seconds`): every op that completes is counted and its
//!    latency recorded; every refusal or broken connection is an error.
//! 4. **Teardown** (not measured): every client leaves every group it is in
//!    (owners last, which deletes the groups and their files) and logs out,
//!    so a long-running tracker is left with only the users.
//!
//! The ops of the loop:
//! - reads: `ListGroups` and `ListFiles` of the client's shared group, in turn;
//! - durable writes, all of which succeed every time by construction: client
//!   `i` asks to join the private group of client `i+1`, whose task accepts
//!   or rejects it (in turn) when it next picks an op; once accepted, `i`
//!   leaves again; while its request is pending, `i` registers a file in its
//!   own private group and stops sharing it, in turn;
//! - mixed: each op is a write with probability `--write-percent`;
//! - peers: a swarm's peer lists — every member shares the first file of
//!   its shared group (so with `--groups 1` every client is a peer of one
//!   file), and the first `--askers` clients ask for that file's
//!   `FileInfo` (its online peers with their keys, and a signed ticket)
//!   over and over; the others only keep their sessions alive (a
//!   heartbeat a second), as seeding nodes do. With `--sharers K` only K
//!   members share: the askers that do not are the file's fetchers, as in
//!   a flash crowd.
//!
//! Output: a human summary on stdout, and with `--json FILE` the same
//! figures as JSON. The exit status is 3 when any request failed during the
//! warm-up or the window (the figures are still printed).

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader as StdBufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use ringshare_benches::conn::{file_meta, Conn};
use ringshare_engine::meta::FileMeta;
use ringshare_engine::proto::{Refusal, Request, Response, Token};
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

/// Drive a ringshare tracker with many concurrent clients and report
/// throughput and latency percentiles.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address of an already running tracker.
    #[arg(long, required_unless_present = "spawn", conflicts_with = "spawn")]
    tracker: Option<SocketAddr>,
    /// Start this tracker binary on a free loopback port, with a temporary
    /// data directory, and stop it at the end.
    #[arg(long)]
    spawn: Option<PathBuf>,
    /// Extra argument for the spawned tracker (repeatable), e.g.
    /// `--tracker-arg=--snapshot-every=50000`.
    #[arg(long, allow_hyphen_values = true)]
    tracker_arg: Vec<String>,
    /// Concurrent clients, each with its own connection and session.
    #[arg(long, default_value_t = 256)]
    clients: usize,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of load before the window, not measured.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Which requests the clients send.
    #[arg(long, value_enum, default_value_t = Mix::Reads)]
    mix: Mix,
    /// With `--mix peers`: the clients that ask for peer lists (the rest
    /// only heartbeat).
    #[arg(long, default_value_t = 64)]
    askers: usize,
    /// With `--mix peers`: how many of the members share the file (default:
    /// every one). The askers that do not share are its fetchers, listed
    /// as its peers too, as in a flash crowd (`--sharers 1`).
    #[arg(long)]
    sharers: Option<usize>,
    /// With `--mix mixed`: the percentage of ops that are writes.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(0..=100))]
    write_percent: u8,
    /// Shared groups (each owned by one client, the others spread over them).
    #[arg(long, default_value_t = 8)]
    groups: usize,
    /// Files registered in each shared group (what `ListFiles` returns).
    #[arg(long, default_value_t = 4)]
    files_per_group: usize,
    /// Worker threads of the load generator (1: a single-threaded runtime,
    /// like redis-benchmark's default).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Requests that hash a password (create user, login) in flight at once
    /// during setup: argon2id takes tens of ms and about 19 MiB each.
    #[arg(long, default_value_t = 4)]
    setup_concurrency: usize,
    /// Prefix of the user and group names; users are reused by later runs
    /// with the same prefix (their creation is the slow part of setup).
    #[arg(long, default_value = "tl")]
    prefix: String,
    /// A request unanswered for this many seconds is an error (and ends
    /// that client).
    #[arg(long, default_value_t = 10)]
    op_timeout: u64,
    /// PID of the `--tracker` process, to report its CPU time per op
    /// (automatic with `--spawn`).
    #[arg(long)]
    tracker_pid: Option<u32>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mix {
    /// `ListGroups` and `ListFiles`.
    Reads,
    /// Join / accept / reject / leave, upload / stop-share: all durable.
    Writes,
    /// Reads with `--write-percent` writes among them.
    Mixed,
    /// `FileInfo` of a file every client shares (a swarm's peer lists).
    Peers,
}

impl Mix {
    fn has_writes(self) -> bool {
        matches!(self, Mix::Writes | Mix::Mixed)
    }
}

/// The kinds of op the loop sends, for per-op figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    ListGroups,
    ListFiles,
    JoinGroup,
    AcceptRequest,
    RejectRequest,
    LeaveGroup,
    UploadFile,
    StopShare,
    FileInfo,
}

const KINDS: [Kind; 9] = [
    Kind::ListGroups,
    Kind::ListFiles,
    Kind::JoinGroup,
    Kind::AcceptRequest,
    Kind::RejectRequest,
    Kind::LeaveGroup,
    Kind::UploadFile,
    Kind::StopShare,
    Kind::FileInfo,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ListGroups => "list_groups",
            Kind::ListFiles => "list_files",
            Kind::JoinGroup => "join_group",
            Kind::AcceptRequest => "accept_request",
            Kind::RejectRequest => "reject_request",
            Kind::LeaveGroup => "leave_group",
            Kind::UploadFile => "upload_file",
            Kind::StopShare => "stop_share",
            Kind::FileInfo => "file_info",
        }
    }
}

fn main() {
    let args = Args::parse();
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the runtime: {e}");
            std::process::exit(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(errors) if errors > 0 => std::process::exit(3),
        Ok(_) => {}
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Resolves on SIGINT or SIGTERM, with the signal's name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

// ---------------------------------------------------------------------------
// The spawned tracker.

/// A tracker process this tool started; killed on drop if still running.
struct Spawned {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Spawned {
    fn start(bin: &Path, extra: &[String]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("tracker_load.").tempdir()?;
        let info = dir.path().join("tracker_info.txt");
        std::fs::write(&info, "127.0.0.1:0\n")?;
        let log = std::fs::File::create(dir.path().join("tracker.log"))?;
        let mut child = Command::new(bin)
            .arg(&info)
            .arg("1")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let stdout = child.stdout.take().context("tracker stdout")?;
        // Read stdout on a thread: the readiness line, then drain the rest.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in StdBufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut me = Self { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) => {
                    if let Some((_, addr)) = line.split_once(" listening on ") {
                        me.addr = addr.trim().parse().with_context(|| {
                            format!("tracker readiness line {line:?}: bad address")
                        })?;
                        return Ok(me);
                    }
                }
                Err(_) => {
                    let status = me.child.try_wait().ok().flatten();
                    bail!(
                        "the tracker did not report readiness within 30 s (exit status {status:?}); its log:\n{}",
                        me.log_tail()
                    );
                }
            }
            if Instant::now() >= deadline {
                bail!("the tracker did not report readiness within 30 s:\n{}", me.log_tail());
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("tracker.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Asks the tracker to quit (it writes a snapshot), killing it if it has
    /// not stopped within 10 s.
    fn stop(mut self) -> Result<()> {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(b"quit\n");
            let _ = stdin.flush();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the tracker exited with {status}; its log:\n{}", self.log_tail());
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("the tracker did not stop within 10 s of `quit`: killed")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU time (user + system) of a process, from /proc (Linux, 100 Hz ticks).
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line, the 12th and 13th after it.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

// ---------------------------------------------------------------------------
// Names of this run.

#[derive(Debug, Clone)]
struct Names {
    prefix: String,
    run: String,
}

impl Names {
    fn user(&self, i: usize) -> String {
        format!("{}-u{i}", self.prefix)
    }
    fn password(&self, i: usize) -> String {
        format!("{}-pw{i}", self.prefix)
    }
    /// Where client `i` says it serves pieces: distinct per client, stable
    /// across runs (a later login replaces the earlier session).
    fn peer_addr(i: usize) -> String {
        format!("127.0.0.1:{}", 20_000 + i)
    }
    fn shared_group(&self, g: usize) -> String {
        format!("{}-{}-s{g}", self.prefix, self.run)
    }
    fn private_group(&self, i: usize) -> String {
        format!("{}-{}-w{i}", self.prefix, self.run)
    }
}

// ---------------------------------------------------------------------------
// Figures.

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

struct Stats {
    all: Histogram<u64>,
    per_kind: BTreeMap<Kind, Histogram<u64>>,
    errors: u64,
    warmup_errors: u64,
    /// Error message → count (window and warm-up together).
    error_kinds: BTreeMap<String, u64>,
    clients_lost: u64,
}

impl Stats {
    fn new() -> Self {
        Self {
            all: new_hist(),
            per_kind: KINDS.iter().map(|k| (*k, new_hist())).collect(),
            errors: 0,
            warmup_errors: 0,
            error_kinds: BTreeMap::new(),
            clients_lost: 0,
        }
    }
}

#[derive(Debug, Serialize)]
struct Percentiles {
    ops: u64,
    ops_per_sec: f64,
    mean_us: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

fn percentiles(h: &Histogram<u64>, seconds: f64) -> Percentiles {
    let q = |x: f64| if h.is_empty() { 0 } else { h.value_at_quantile(x) };
    Percentiles {
        ops: h.len(),
        ops_per_sec: h.len() as f64 / seconds,
        mean_us: if h.is_empty() { 0.0 } else { h.mean() },
        p50_us: q(0.50),
        p90_us: q(0.90),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: h.max(),
    }
}

#[derive(Debug, Serialize)]
struct Report {
    tool: &'static str,
    tracker: String,
    spawned: bool,
    mix: Mix,
    write_percent: Option<u8>,
    clients: usize,
    groups: usize,
    files_per_group: usize,
    threads: usize,
    warmup_s: f64,
    window_s: f64,
    setup_s: f64,
    total: Percentiles,
    per_op: BTreeMap<&'static str, Percentiles>,
    errors: u64,
    warmup_errors: u64,
    error_kinds: BTreeMap<String, u64>,
    clients_lost: u64,
    ops_per_client_min: u64,
    ops_per_client_max: u64,
    /// CPU seconds the tracker used during the window (when its PID is known).
    tracker_cpu_s: Option<f64>,
    /// Tracker CPU per op, in µs.
    tracker_cpu_us_per_op: Option<f64>,
    /// CPU seconds this tool used during the window.
    loadgen_cpu_s: Option<f64>,
}

// ---------------------------------------------------------------------------
// Clients.

/// What client `i` knows of the join requests it makes (to the private
/// group of client `i+1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinState {
    Idle,
    /// Requested; the owner has not decided yet.
    Pending,
    /// Accepted: a member until it leaves.
    Member,
}

/// Messages between the clients of the write loop.
#[derive(Debug)]
enum Note {
    /// To an owner: client `from` asked to join your private group.
    Requested { from: usize },
    /// To a joiner: your request was accepted (or rejected).
    Decided { accepted: bool },
}

struct Client {
    idx: usize,
    conn: Conn,
    token: Token,
    /// The shared group this client is a member (or the owner) of.
    home: usize,
    join: JoinState,
    /// Whether this client's file in its private group is registered.
    sharing: bool,
    /// Join requests to decide on, oldest first.
    to_decide: Vec<usize>,
    /// Next decision: accept (true) or reject (false).
    accept_next: bool,
    /// Next read: `ListGroups` (true) or `ListFiles` (false).
    list_groups_next: bool,
    rng: u64,
    ops: u64,
    /// Notes from the neighbours in the write loop.
    inbox: Option<mpsc::UnboundedReceiver<Note>>,
}

impl Client {
    /// Takes in what the neighbours said.
    fn drain_inbox(&mut self) {
        let Some(inbox) = self.inbox.as_mut() else { return };
        while let Ok(note) = inbox.try_recv() {
            match note {
                Note::Requested { from } => self.to_decide.push(from),
                Note::Decided { accepted } => {
                    self.join = if accepted { JoinState::Member } else { JoinState::Idle }
                }
            }
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Runs `f` on every client, at most `limit` at once; returns them in order.
async fn each<F, Fut>(clients: Vec<Client>, limit: usize, f: F) -> Result<Vec<Client>>
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = Result<Client>> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(limit.max(1)));
    let mut set = JoinSet::new();
    for c in clients {
        let fut = f(c);
        let sem = Arc::clone(&sem);
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            fut.await
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.context("client task")??);
    }
    out.sort_by_key(|c| c.idx);
    Ok(out)
}

/// Source address for client `i` on a loopback target: 256 clients per
/// address (127.0.0.1, 127.0.0.2, …), so that no source IP reaches the
/// tracker's per-IP connection cap, as with clients on many hosts.
fn source_ip(target: SocketAddr, i: usize) -> Option<IpAddr> {
    match target.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => {
            let n = 1 + (i / 256) as u32;
            Some(IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + n)))
        }
        _ => None,
    }
}

async fn run(args: Args) -> Result<u64> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if args.mix.has_writes() && args.clients < 2 {
        bail!("the write loop needs at least 2 clients");
    }
    if !args.seconds.is_finite()
        || args.seconds <= 0.0
        || !args.warmup.is_finite()
        || args.warmup < 0.0
    {
        bail!("--seconds must be positive and --warmup not negative");
    }
    let groups = args.groups.clamp(1, args.clients);
    let spawned = match &args.spawn {
        Some(bin) => {
            let s = Spawned::start(bin, &args.tracker_arg)?;
            eprintln!("tracker_load: spawned tracker pid {} on {}", s.pid(), s.addr);
            Some(s)
        }
        None => None,
    };
    let addr = match (&spawned, args.tracker) {
        (Some(s), _) => s.addr,
        (None, Some(a)) => a,
        (None, None) => bail!("give --tracker ADDR or --spawn PATH"),
    };
    let tracker_pid = spawned.as_ref().map(Spawned::pid).or(args.tracker_pid);
    // SIGINT or SIGTERM end the run early; the spawned tracker is still stopped.
    let result = tokio::select! {
        r = drive(&args, addr, groups, tracker_pid) => r,
        sig = interrupted() => Err(anyhow!("interrupted by {sig}")),
    };
    if let Some(s) = spawned {
        if let Err(e) = s.stop() {
            eprintln!("tracker_load: warning: {e:#}");
        }
    }
    let report = result?;
    print_report(&report);
    if let Some(path) = &args.json {
        let mut text = serde_json::to_string_pretty(&report)?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(report.errors + report.warmup_errors)
}

async fn drive(
    args: &Args,
    addr: SocketAddr,
    groups: usize,
    tracker_pid: Option<u32>,
) -> Result<Report> {
    let n = args.clients;
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64
        ^ u64::from(std::process::id());
    let names = Arc::new(Names { prefix: args.prefix.clone(), run: format!("{:x}", run_id) });
    let timeout = Duration::from_secs(args.op_timeout.max(1));
    let setup_start = Instant::now();

    // Setup 1: connect, create the users (an existing one is fine: an earlier
    // run with the same prefix), log in. Argon2id-bound: limited concurrency.
    eprintln!("tracker_load: setting up {n} clients on {addr} (users, logins)…");
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let conn = Conn::connect(addr, source_ip(addr, i), timeout)
            .await
            .with_context(|| format!("client {i}"))?;
        clients.push(Client {
            idx: i,
            conn,
            token: Token([0; 16]),
            home: i % groups,
            join: JoinState::Idle,
            sharing: false,
            to_decide: Vec::new(),
            accept_next: true,
            list_groups_next: i % 2 == 0,
            rng: 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1).wrapping_mul(0xff51_afd7_ed55_8ccd),
            ops: 0,
            inbox: None,
        });
    }
    let clients = each(clients, args.setup_concurrency, |mut c| {
        let names = Arc::clone(&names);
        async move {
            let i = c.idx;
            let create = Request::CreateUser { user: names.user(i), password: names.password(i) };
            match c.conn.call(&create).await? {
                Response::Done | Response::Refused(Refusal::UserExists(_)) => {}
                other => bail!("client {i}: create user: {other:?}"),
            }
            let login = Request::Login {
                user: names.user(i),
                password: names.password(i),
                peer_addr: Names::peer_addr(i),
            };
            match c.conn.call(&login).await? {
                Response::LoggedIn { token, .. } => c.token = token,
                other => bail!("client {i}: login as {}: {other:?}", names.user(i)),
            }
            Ok(c)
        }
    })
    .await?;

    // Setup 2: groups. Owners of shared groups create them and register their
    // files; with writes, every client creates its private group.
    eprintln!("tracker_load: setting up groups and files…");
    let (files_per_group, has_writes) = (args.files_per_group, args.mix.has_writes());
    let clients = each(clients, n, |mut c| {
        let names = Arc::clone(&names);
        async move {
            let (i, token) = (c.idx, c.token);
            if i < groups {
                let group = names.shared_group(i);
                c.conn.done(&Request::CreateGroup { token, group: group.clone() }).await?;
                for f in 0..files_per_group {
                    let meta = file_meta(format!("shared-{f}.bin"), 3 << 20, f as u8);
                    let req = Request::UploadFile { token, group: group.clone(), meta };
                    c.conn.done(&req).await.with_context(|| format!("upload in {group}"))?;
                }
            }
            if has_writes {
                c.conn.done(&Request::CreateGroup { token, group: names.private_group(i) }).await?;
            }
            Ok(c)
        }
    })
    .await?;
    // Setup 3: every other client asks to join its shared group…
    let clients = each(clients, n, |mut c| {
        let names = Arc::clone(&names);
        async move {
            if c.idx >= groups {
                let req = Request::JoinGroup { token: c.token, group: names.shared_group(c.home) };
                c.conn.done(&req).await.with_context(|| format!("client {} join", c.idx))?;
            }
            Ok(c)
        }
    })
    .await?;
    // … and the owners let them in.
    let clients = each(clients, n, |mut c| {
        let names = Arc::clone(&names);
        async move {
            if c.idx < groups {
                let group = names.shared_group(c.idx);
                for u in (groups + c.idx..n).step_by(groups) {
                    let req = Request::AcceptRequest {
                        token: c.token,
                        group: group.clone(),
                        user: names.user(u),
                    };
                    c.conn.done(&req).await.with_context(|| format!("accept {u} in {group}"))?;
                }
            }
            Ok(c)
        }
    })
    .await?;
    // With peer lists: every member shares its group's first file too
    // (or the first `--sharers` of them).
    let sharing = groups.saturating_add(args.sharers.unwrap_or(usize::MAX));
    let clients = if args.mix == Mix::Peers {
        each(clients, n, |mut c| {
            let names = Arc::clone(&names);
            async move {
                if c.idx >= groups && c.idx < sharing {
                    let group = names.shared_group(c.home);
                    let meta = file_meta("shared-0.bin".into(), 3 << 20, 0);
                    let req = Request::UploadFile { token: c.token, group, meta };
                    c.conn.done(&req).await.with_context(|| format!("client {} share", c.idx))?;
                }
                Ok(c)
            }
        })
        .await?
    } else {
        clients
    };
    let setup_s = setup_start.elapsed().as_secs_f64();
    eprintln!(
        "tracker_load: setup took {setup_s:.1} s; warm-up {} s, window {} s",
        args.warmup, args.seconds
    );

    // The loop.
    let stats = Arc::new(Mutex::new(Stats::new()));
    let mut clients = clients;
    let mut inboxes_tx = Vec::with_capacity(n);
    for c in &mut clients {
        let (tx, rx) = mpsc::unbounded_channel::<Note>();
        inboxes_tx.push(tx);
        c.inbox = Some(rx);
    }
    let inboxes_tx = Arc::new(inboxes_tx);
    let start = Instant::now() + Duration::from_millis(50);
    let window_start = start + Duration::from_secs_f64(args.warmup);
    let window_end = window_start + Duration::from_secs_f64(args.seconds);
    let plan = Plan {
        mix: args.mix,
        write_percent: args.write_percent,
        n,
        names: Arc::clone(&names),
        window_start,
        window_end,
        upload_meta: file_meta("mine.bin".into(), 1 << 20, 0x5a),
        askers: args.askers,
        peers_seen: std::sync::atomic::AtomicUsize::new(usize::MAX),
    };
    let plan = Arc::new(plan);
    let mut set = JoinSet::new();
    for c in clients {
        let plan = Arc::clone(&plan);
        let stats = Arc::clone(&stats);
        let tx = Arc::clone(&inboxes_tx);
        set.spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            client_loop(c, &tx, &plan, &stats).await
        });
    }
    // CPU use over the window.
    tokio::time::sleep_until(window_start.into()).await;
    let cpu0 = (cpu_seconds(tracker_pid), cpu_seconds(None));
    tokio::time::sleep_until(window_end.into()).await;
    let cpu1 = (cpu_seconds(tracker_pid), cpu_seconds(None));
    let mut clients = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Some(c) = r.context("client task")? {
            clients.push(c);
        }
    }
    clients.sort_by_key(|c| c.idx);
    if args.mix == Mix::Peers {
        let fewest = plan.peers_seen.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "tracker_load: each FileInfo answer listed at least {} online peer(s)",
            if fewest == usize::MAX { 0 } else { fewest }
        );
    }
    let ops: Vec<u64> = clients.iter().map(|c| c.ops).collect();
    // Every loop has stopped, so every decision has been sent: take the
    // last ones in before leaving.
    for c in &mut clients {
        c.drain_inbox();
    }

    // Teardown: leave everything (joiners and members first, owners last),
    // log out. Not measured; failures are reported as warnings.
    eprintln!("tracker_load: tearing down…");
    let teardown_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients = each(clients, n, |mut c| {
        let names = Arc::clone(&names);
        let errs = Arc::clone(&teardown_errors);
        async move {
            let token = c.token;
            let mut leave = Vec::new();
            if c.join != JoinState::Idle {
                leave.push(names.private_group((c.idx + 1) % n));
            }
            if c.idx >= groups {
                leave.push(names.shared_group(c.home));
            }
            for group in leave {
                if let Err(e) = c.conn.done(&Request::LeaveGroup { token, group }).await {
                    errs.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{e:#}"));
                }
            }
            Ok(c)
        }
    })
    .await?;
    let _ = each(clients, n, |mut c| {
        let names = Arc::clone(&names);
        let errs = Arc::clone(&teardown_errors);
        async move {
            let token = c.token;
            let mut leave = Vec::new();
            if c.idx < groups {
                leave.push(names.shared_group(c.idx));
            }
            if has_writes {
                leave.push(names.private_group(c.idx));
            }
            let mut reqs: Vec<Request> =
                leave.into_iter().map(|group| Request::LeaveGroup { token, group }).collect();
            reqs.push(Request::Logout { token });
            for req in reqs {
                if let Err(e) = c.conn.done(&req).await {
                    errs.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{e:#}"));
                }
            }
            Ok(c)
        }
    })
    .await?;
    let teardown_errors =
        std::mem::take(&mut *teardown_errors.lock().unwrap_or_else(|p| p.into_inner()));
    if !teardown_errors.is_empty() {
        eprintln!(
            "tracker_load: warning: {} teardown request(s) failed, e.g. {}",
            teardown_errors.len(),
            teardown_errors[0]
        );
    }

    let stats =
        std::mem::replace(&mut *stats.lock().unwrap_or_else(|p| p.into_inner()), Stats::new());
    let window_s = args.seconds;
    let diff = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    let tracker_cpu_s = diff(cpu0.0, cpu1.0);
    let per_op = stats
        .per_kind
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(k, h)| (k.name(), percentiles(h, window_s)))
        .collect();
    Ok(Report {
        tool: "tracker_load",
        tracker: addr.to_string(),
        spawned: args.spawn.is_some(),
        mix: args.mix,
        write_percent: (args.mix == Mix::Mixed).then_some(args.write_percent),
        clients: n,
        groups,
        files_per_group: args.files_per_group,
        threads: args.threads.max(1),
        warmup_s: args.warmup,
        window_s,
        setup_s,
        total: percentiles(&stats.all, window_s),
        per_op,
        errors: stats.errors,
        warmup_errors: stats.warmup_errors,
        error_kinds: stats.error_kinds,
        clients_lost: stats.clients_lost,
        ops_per_client_min: ops.iter().copied().min().unwrap_or(0),
        ops_per_client_max: ops.iter().copied().max().unwrap_or(0),
        tracker_cpu_us_per_op: tracker_cpu_s
            .filter(|_| !stats.all.is_empty())
            .map(|s| s * 1e6 / stats.all.len() as f64),
        tracker_cpu_s,
        loadgen_cpu_s: diff(cpu0.1, cpu1.1),
    })
}

/// What every client loop shares.
struct Plan {
    mix: Mix,
    write_percent: u8,
    n: usize,
    names: Arc<Names>,
    window_start: Instant,
    window_end: Instant,
    upload_meta: FileMeta,
    /// With `--mix peers`: clients `0..askers` ask, the others heartbeat.
    askers: usize,
    /// The fewest peers a `FileInfo` answer listed (to check the swarm's
    /// size).
    peers_seen: std::sync::atomic::AtomicUsize,
}

/// Picks the next op of client `c`, updating its view of its own state as
/// if the op succeeds (a refusal is an error and ends the run's validity).
fn next_op(c: &mut Client, plan: &Plan) -> (Kind, Request) {
    let write = match plan.mix {
        Mix::Reads | Mix::Peers => false,
        Mix::Writes => true,
        Mix::Mixed => c.next_rand() % 100 < u64::from(plan.write_percent),
    };
    let token = c.token;
    let names = &plan.names;
    if plan.mix == Mix::Peers {
        let group = names.shared_group(c.home);
        return (Kind::FileInfo, Request::FileInfo { token, group, file: "shared-0.bin".into() });
    }
    if !write {
        c.list_groups_next = !c.list_groups_next;
        return if !c.list_groups_next {
            (Kind::ListGroups, Request::ListGroups { token })
        } else {
            (Kind::ListFiles, Request::ListFiles { token, group: names.shared_group(c.home) })
        };
    }
    if !c.to_decide.is_empty() {
        let user = names.user(c.to_decide[0]);
        let group = names.private_group(c.idx);
        return if c.accept_next {
            (Kind::AcceptRequest, Request::AcceptRequest { token, group, user })
        } else {
            (Kind::RejectRequest, Request::RejectRequest { token, group, user })
        };
    }
    let target = names.private_group((c.idx + 1) % plan.n);
    match c.join {
        JoinState::Idle => (Kind::JoinGroup, Request::JoinGroup { token, group: target }),
        JoinState::Member => (Kind::LeaveGroup, Request::LeaveGroup { token, group: target }),
        JoinState::Pending => {
            let group = names.private_group(c.idx);
            if c.sharing {
                let file = plan.upload_meta.name.clone();
                (Kind::StopShare, Request::StopShare { token, group, file })
            } else {
                let meta = plan.upload_meta.clone();
                (Kind::UploadFile, Request::UploadFile { token, group, meta })
            }
        }
    }
}

/// The client's view after `kind` succeeded; tells the other clients.
fn after_op(c: &mut Client, kind: Kind, n: usize, inboxes: &[mpsc::UnboundedSender<Note>]) {
    match kind {
        Kind::ListGroups | Kind::ListFiles | Kind::FileInfo => {}
        Kind::JoinGroup => {
            c.join = JoinState::Pending;
            let _ = inboxes[(c.idx + 1) % n].send(Note::Requested { from: c.idx });
        }
        Kind::LeaveGroup => c.join = JoinState::Idle,
        Kind::AcceptRequest | Kind::RejectRequest => {
            let from = c.to_decide.remove(0);
            let accepted = kind == Kind::AcceptRequest;
            c.accept_next = !accepted;
            let _ = inboxes[from].send(Note::Decided { accepted });
        }
        Kind::UploadFile => c.sharing = true,
        Kind::StopShare => c.sharing = false,
    }
}

/// One client's loop; returns the client (for teardown) unless its
/// connection broke.
async fn client_loop(
    mut c: Client,
    inboxes: &[mpsc::UnboundedSender<Note>],
    plan: &Plan,
    stats: &Mutex<Stats>,
) -> Option<Client> {
    if plan.mix == Mix::Peers && c.idx >= plan.askers {
        // A seeding node: its session kept alive, nothing measured.
        while Instant::now() < plan.window_end {
            if c.conn.call(&Request::Heartbeat { token: c.token }).await.is_err() {
                stats.lock().unwrap_or_else(|p| p.into_inner()).clients_lost += 1;
                return None;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        return Some(c);
    }
    loop {
        c.drain_inbox();
        let began = Instant::now();
        if began >= plan.window_end {
            return Some(c);
        }
        let (kind, req) = next_op(&mut c, plan);
        let result = c.conn.call(&req).await;
        let ended = Instant::now();
        let in_window = ended >= plan.window_start && ended < plan.window_end;
        let failure = match &result {
            Ok(Response::Refused(r)) => Some(format!("{}: refused: {r}", kind.name())),
            Ok(Response::Done)
                if !matches!(kind, Kind::ListGroups | Kind::ListFiles | Kind::FileInfo) =>
            {
                None
            }
            Ok(Response::Names(_)) if kind == Kind::ListGroups => None,
            Ok(Response::Files(_)) if kind == Kind::ListFiles => None,
            Ok(Response::FileInfo { peers, .. }) if kind == Kind::FileInfo => {
                plan.peers_seen.fetch_min(peers.len(), std::sync::atomic::Ordering::Relaxed);
                None
            }
            Ok(other) => Some(format!("{}: unexpected answer {other:?}", kind.name())),
            Err(e) => Some(format!("{}: {e:#}", kind.name())),
        };
        let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
        match failure {
            None => {
                after_op(&mut c, kind, plan.n, inboxes);
                if in_window {
                    let us = (ended - began).as_micros().clamp(1, 60_000_000) as u64;
                    let _ = s.all.record(us);
                    if let Some(h) = s.per_kind.get_mut(&kind) {
                        let _ = h.record(us);
                    }
                    c.ops += 1;
                }
            }
            Some(msg) => {
                if ended < plan.window_start {
                    s.warmup_errors += 1;
                } else {
                    s.errors += 1;
                }
                *s.error_kinds.entry(msg).or_insert(0) += 1;
                // A broken connection is in an unknown state; after a refused
                // write the loop's view of the client's state may be wrong:
                // either way this client stops rather than cascade errors. A
                // refused read changed nothing: that client goes on.
                let read = matches!(kind, Kind::ListGroups | Kind::ListFiles | Kind::FileInfo);
                if result.is_err() || !read {
                    s.clients_lost += 1;
                    return None;
                }
            }
        }
    }
}

fn print_report(r: &Report) {
    let mix = match r.write_percent {
        Some(p) => format!("mixed ({p}% writes)"),
        None => format!("{:?}", r.mix).to_lowercase(),
    };
    println!(
        "tracker_load: {} clients, mix {mix}, {:.1} s window after {:.1} s warm-up, tracker {}{}",
        r.clients,
        r.window_s,
        r.warmup_s,
        r.tracker,
        if r.spawned { " (spawned)" } else { "" }
    );
    let t = &r.total;
    println!("  ops        {} in {:.1} s = {:.0} ops/s", t.ops, r.window_s, t.ops_per_sec);
    println!(
        "  latency µs p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.0})",
        t.p50_us, t.p90_us, t.p99_us, t.p999_us, t.max_us, t.mean_us
    );
    println!(
        "  errors     {} in the window, {} in the warm-up, {} client(s) stopped",
        r.errors, r.warmup_errors, r.clients_lost
    );
    for (msg, count) in &r.error_kinds {
        println!("    {count} × {msg}");
    }
    println!("  ops/client min {} max {}", r.ops_per_client_min, r.ops_per_client_max);
    if let Some(cpu) = r.tracker_cpu_s {
        println!(
            "  tracker CPU {:.2} s over the window ({:.0}% of a core), {:.1} µs per op",
            cpu,
            100.0 * cpu / r.window_s,
            r.tracker_cpu_us_per_op.unwrap_or(0.0)
        );
    }
    if let Some(cpu) = r.loadgen_cpu_s {
        println!("  load generator CPU {:.2} s ({:.0}% of a core)", cpu, 100.0 * cpu / r.window_s);
    }
    if r.per_op.len() > 1 {
        println!("  per op:");
        for (name, p) in &r.per_op {
            println!(
                "    {name:<15} {:>9} ops {:>9.0}/s  p50 {:>6}  p99 {:>6}  p99.9 {:>6}  max {:>7} µs",
                p.ops, p.ops_per_sec, p.p50_us, p.p99_us, p.p999_us, p.max_us
            );
        }
    }
}
