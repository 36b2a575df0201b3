//! The nemesis: three real `ringshare-tracker` processes, each in its own
//! network namespace, under concurrent client load while faults are injected
//! on a random schedule from a seed; then the faults stop, the cluster heals
//! and a checker verifies the history (Jepsen's method, for ringshare's
//! multi-master trackers).
//!
//! **Testbed.** A bridge in the caller's namespace and three namespaces on
//! it, one tracker each (`10.213.S.1..3:7000`); the clients run here, in
//! this process, so a partition between trackers never cuts a client off
//! its own tracker. Each tracker's data directory is on its own small tmpfs.
//!
//! **Load.** `clients_per_tracker` clients per tracker, each pinned to its
//! tracker and working on names only it uses (`c<ID>-…`): creating users,
//! logging in and out, creating groups, joining, accepting, rejecting,
//! leaving, uploading and stopping shares, one request at a time. A
//! conflict client makes the conflicts of docs/DURABILITY.md's table on two
//! trackers at once (`x-…`): the same user with two passwords, the same
//! group by two users, the same file name with two contents, accept against
//! reject of one request. Every request's outcome is recorded: acknowledged,
//! refused, not sent (no connection), or unknown (no answer, or the
//! tracker's own failure).
//!
//! **Faults** (`Fault`): partitions (one tracker cut off, one-way loss, a
//! non-transitive cut, all apart; nftables drop rules in the namespaces),
//! heals, kill -9 and restart, SIGSTOP/SIGCONT pauses longer than the
//! heartbeat and peer TTL, a clock jumped minutes ahead or behind (a
//! test-only offset the tracker reads from a file:
//! `--test-clock-offset-file`), a restart with the data directory wiped
//! (its key files kept: a new key is a different tracker, refused by its
//! pinned peers), and a full disk (the tmpfs filled). At most one tracker is
//! down, paused, skewed or full at a time.
//!
//! **Checker**, once the clients stopped and every fault is healed:
//! (b) every tracker's state digest and per-origin entry counts agree
//! (convergence, timed from the heal); (a)+(d) for each client, the final
//! state restricted to its names is one that the client's history allows:
//! every acknowledged op applied, every refused or unsent op not, each
//! unknown op either, all in the client's order — its requests went to one
//! tracker, whose stamps follow its order — checked by running the history
//! through the tracker's own sequential `State` as the model, over every
//! world the unknown outcomes allow (an op applied twice, or an op that was
//! refused, gives a state no world matches); (c) each conflict ended with
//! exactly one side's effect, never a refused side's, and the other side
//! changed nothing. What (c) cannot see from outside is *which* stamp was
//! earlier; the replica's property tests check the order itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringshare_engine::meta::FileMeta;
use ringshare_engine::proto::{Refusal, Request, Response, Token};
use ringshare_tracker::state::{Group, Op, State};
use serde::Serialize;

use crate::conn::{file_meta, Conn};

/// The port every tracker listens on, in its own namespace.
const PORT: u16 = 7000;
/// How long a client waits for a connection or an answer.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// The trackers' peer TTL (s): pauses are made longer than it.
const PEER_TTL_S: u64 = 2;
/// Most worlds a client's unknown outcomes may open before the check gives up.
const MAX_WORLDS: usize = 4096;

/// What one schedule runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seeds the schedule, the load and every choice: a seed replays a run
    /// (up to the timing of real processes).
    pub seed: u64,
    /// How long faults are injected.
    pub duration: Duration,
    /// Inject exactly this many faults instead (whatever time they take):
    /// the same seed then makes the same faults on any machine.
    pub faults: Option<usize>,
    /// Clients per tracker.
    pub clients_per_tracker: usize,
    /// The `ringshare-tracker` binary.
    pub tracker_bin: PathBuf,
    /// Print each fault as it is injected.
    pub verbose: bool,
    /// Keep the work directory (tracker logs, states) and print where.
    pub keep: bool,
}

/// Requests by outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpCounts {
    /// Answered with success.
    pub acked: usize,
    /// Answered with a refusal.
    pub refused: usize,
    /// Never sent: no connection could be made.
    pub not_sent: usize,
    /// Sent, and no answer (or the tracker's own failure).
    pub unknown: usize,
}

/// What a schedule did and what the checker found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The schedule's seed.
    pub seed: u64,
    /// Faults injected: (seconds since the start, what).
    pub faults: Vec<(f64, String)>,
    /// Faults by kind.
    pub fault_counts: BTreeMap<String, usize>,
    /// Client requests (conflict pairs included).
    pub ops: OpCounts,
    /// Acknowledged ops whose presence was checked.
    pub acked_checked: usize,
    /// Answered reads checked against the client's history.
    pub reads_checked: usize,
    /// Conflict pairs made and checked.
    pub conflicts: usize,
    /// Milliseconds from the heal to equal digests on all trackers.
    pub convergence_ms: Option<u64>,
    /// The final digest of each tracker.
    pub digests: Vec<String>,
    /// Everything the checker found wrong (empty: the schedule passed).
    pub failures: Vec<String>,
    /// Worlds the per-client check could not enumerate (too many unknowns).
    pub inconclusive: usize,
    /// The history, one line per request, when the schedule failed.
    pub history: Vec<String>,
}

impl Report {
    /// A report of schedule `seed` with nothing in it yet.
    fn new(seed: u64) -> Self {
        Self {
            seed,
            faults: Vec::new(),
            fault_counts: BTreeMap::new(),
            ops: OpCounts::default(),
            acked_checked: 0,
            reads_checked: 0,
            conflicts: 0,
            convergence_ms: None,
            digests: Vec::new(),
            failures: Vec::new(),
            inconclusive: 0,
            history: Vec::new(),
        }
    }
}

/// Runs one schedule on a testbed of its own and checks it.
pub fn run(opts: &Options) -> Result<Report> {
    let bed = Testbed::build().context("build the testbed")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let report = rt.block_on(schedule(&bed, opts));
    if opts.keep {
        eprintln!("nemesis: tracker logs and states kept in {}", bed.keep_work()?.display());
    }
    report
}

// ---------------------------------------------------------------------------
// The testbed: namespaces, bridge, tmpfs, nftables.

/// Three namespaces on a bridge, removed on drop (also after a panic).
#[derive(Debug)]
struct Testbed {
    tag: String,
    ns: Vec<String>,
    ips: Vec<Ipv4Addr>,
    bridge: String,
    work: tempfile::TempDir,
    mounts: Vec<PathBuf>,
}

fn sh(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("run {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Why the nemesis cannot run here, if it cannot: it needs root, `ip` and
/// `nft`.
pub fn unusable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, tmpfs mounts)".into());
    }
    for tool in ["ip", "nft"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("needs `{tool}`"));
        }
    }
    None
}

impl Testbed {
    fn build() -> Result<Self> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = std::process::id() as usize * 7 + SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = format!("nm{}", n % 100_000);
        let subnet = (n % 250) as u8;
        let mut bed = Self {
            ns: (0..3).map(|k| format!("{tag}-{k}")).collect(),
            ips: (0..3).map(|k| Ipv4Addr::new(10, 213, subnet, k as u8 + 1)).collect(),
            bridge: format!("{tag}br"),
            work: tempfile::Builder::new().prefix("nemesis").tempdir()?,
            mounts: Vec::new(),
            tag,
        };
        let host = format!("10.213.{subnet}.254/24");
        sh(&["ip", "link", "add", &bed.bridge, "type", "bridge"])?;
        sh(&["ip", "addr", "add", &host, "dev", &bed.bridge])?;
        sh(&["ip", "link", "set", &bed.bridge, "up"])?;
        for k in 0..3 {
            let ns = bed.ns[k].clone();
            let (outer, inner) = (format!("{}h{k}", bed.tag), format!("{}n{k}", bed.tag));
            sh(&["ip", "netns", "add", &ns])?;
            sh(&["ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner])?;
            sh(&["ip", "link", "set", &inner, "netns", &ns])?;
            sh(&["ip", "link", "set", &outer, "master", &bed.bridge, "up"])?;
            let addr = format!("{}/24", bed.ips[k]);
            sh(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &inner])?;
            sh(&["ip", "-n", &ns, "link", "set", &inner, "up"])?;
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            let dir = bed.work.path().join(format!("t{k}"));
            std::fs::create_dir_all(&dir)?;
            let dir_s = dir.to_string_lossy().into_owned();
            sh(&["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", &dir_s])?;
            bed.mounts.push(dir);
        }
        Ok(bed)
    }

    fn addr(&self, k: usize) -> SocketAddr {
        SocketAddr::new(self.ips[k].into(), PORT)
    }

    /// Drops, at each tracker `to`, every packet from each `from` with
    /// `(from, to)` in `cuts`; an empty list heals.
    fn cut(&self, cuts: &[(usize, usize)]) -> Result<()> {
        for to in 0..3 {
            let from: Vec<String> =
                cuts.iter().filter(|c| c.1 == to).map(|c| self.ips[c.0].to_string()).collect();
            let mut rules = String::from("table inet nemesis\ndelete table inet nemesis\n");
            if !from.is_empty() {
                rules += &format!(
                    "table inet nemesis {{\n chain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {} }} drop; }}\n}}\n",
                    from.join(", ")
                );
            }
            let mut nft = Command::new("ip")
                .args(["netns", "exec", &self.ns[to], "nft", "-f", "-"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("run nft")?;
            nft.stdin.take().context("nft stdin")?.write_all(rules.as_bytes())?;
            let out = nft.wait_with_output()?;
            if !out.status.success() {
                bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
        }
        Ok(())
    }

    /// Copies the work directory (logs, states; not the tmpfs data) to a
    /// directory that outlives the testbed.
    fn keep_work(&self) -> Result<PathBuf> {
        let to = std::env::temp_dir().join(format!("nemesis-kept-{}", self.tag));
        std::fs::create_dir_all(&to)?;
        for e in std::fs::read_dir(self.work.path())?.map_while(|e| e.ok()) {
            if e.path().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name()))?;
            }
        }
        Ok(to)
    }

    fn mount(&self, k: usize) -> &Path {
        &self.mounts[k]
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for ns in &self.ns {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
        for m in &self.mounts {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

// ---------------------------------------------------------------------------
// The trackers.

struct Trackers<'a> {
    bed: &'a Testbed,
    bin: PathBuf,
    info: PathBuf,
    procs: Vec<Option<Child>>,
}

impl<'a> Trackers<'a> {
    fn new(bed: &'a Testbed, bin: &Path) -> Result<Self> {
        let info = bed.work.path().join("tracker_info.txt");
        let list: String = (0..3).map(|k| format!("{}\n", bed.addr(k))).collect();
        std::fs::write(&info, list)?;
        Ok(Self { bed, bin: bin.to_owned(), info, procs: vec![None, None, None] })
    }

    fn data(&self, k: usize) -> PathBuf {
        self.bed.mount(k).join("data")
    }

    fn offset_file(&self, k: usize) -> PathBuf {
        self.bed.work.path().join(format!("clock-offset-{k}"))
    }

    fn log_file(&self, k: usize) -> PathBuf {
        self.bed.work.path().join(format!("tracker-{k}.log"))
    }

    /// Starts tracker `k` and waits for its readiness line.
    fn start(&mut self, k: usize) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_file(k))?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.bed.ns[k]])
            .arg(&self.bin)
            .arg(&self.info)
            .arg((k + 1).to_string())
            .arg("--data-dir")
            .arg(self.data(k))
            .args(["--peer-ttl", &PEER_TTL_S.to_string(), "--snapshot-every", "500"])
            .args(["--signups-per-minute", "1000000", "--login-burst", "1000000"])
            .args(["--hash-workers", "1", "--client-idle", "30"])
            .arg("--test-clock-offset-file")
            .arg(self.offset_file(k))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("spawn ringshare-tracker")?;
        let out = child.stdout.take().context("tracker stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains("listening on") => {
                self.procs[k] = Some(child);
                Ok(())
            }
            other => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(self.log_file(k)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!("tracker {} did not start ({other:?}): {}", k + 1, tail.join(" | "))
            }
        }
    }

    fn kill(&mut self, k: usize) {
        if let Some(mut c) = self.procs[k].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether tracker `k` runs (a fail-stopped one has exited).
    fn running(&mut self, k: usize) -> bool {
        match &mut self.procs[k] {
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                _ => {
                    self.procs[k] = None;
                    false
                }
            },
            None => false,
        }
    }

    fn signal(&self, k: usize, sig: libc::c_int) {
        if let Some(c) = &self.procs[k] {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, sig) };
        }
    }

    /// Tracker `k`'s digest and per-origin entry counts; with `to`, its
    /// state is written there.
    fn inspect(&self, k: usize, to: Option<&Path>) -> Result<(String, BTreeMap<u16, u64>)> {
        let scratch = self.bed.work.path().join(format!("state-{k}.scratch"));
        let path = to.unwrap_or(&scratch);
        let out = Command::new("ip")
            .args(["netns", "exec", &self.bed.ns[k]])
            .arg(&self.bin)
            .arg(&self.info)
            .arg((k + 1).to_string())
            .arg("--dump-state")
            .arg(path)
            .arg("--data-dir")
            .arg(self.data(k))
            .output()
            .context("run ringshare-tracker --dump-state")?;
        if !out.status.success() {
            bail!("tracker {}: {}", k + 1, String::from_utf8_lossy(&out.stderr).trim());
        }
        let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let mut parts = line.split(' ');
        let digest = parts.next().unwrap_or_default().to_owned();
        let known = parts
            .find_map(|p| p.strip_prefix("known="))
            .unwrap_or_default()
            .split(',')
            .filter_map(|kv| {
                let (o, n) = kv.split_once(':')?;
                Some((o.parse().ok()?, n.parse().ok()?))
            })
            .collect();
        Ok((digest, known))
    }

    fn state(&self, k: usize) -> Result<(String, State)> {
        let path = self.bed.work.path().join(format!("state-{k}"));
        let (digest, _) = self.inspect(k, Some(&path))?;
        let bytes = std::fs::read(&path)?;
        Ok((digest, postcard::from_bytes(&bytes).context("decode the state")?))
    }
}

impl Drop for Trackers<'_> {
    fn drop(&mut self) {
        for k in 0..3 {
            self.signal(k, libc::SIGCONT);
            self.kill(k);
        }
    }
}

// ---------------------------------------------------------------------------
// The history.

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Acked,
    Refused(String),
    NotSent(String),
    Unknown(String),
}

impl Outcome {
    /// Whether the op may have been applied.
    fn maybe_applied(&self) -> bool {
        matches!(self, Outcome::Acked | Outcome::Unknown(_))
    }
}

/// A read a client makes at its tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Read {
    /// `ListGroups`: the client's groups among them.
    Groups,
    /// `ListRequests` of a group it owns.
    Requests(String),
    /// `ListFilesPage` of a group one of its users is in: the names.
    Files(String),
}

/// What a request does: an op the tracker would log, or a read and what
/// it returned (the client's own names only).
#[derive(Debug, Clone)]
enum Act {
    Write(Op),
    Read(Read, Vec<String>),
}

/// One request of a client.
#[derive(Debug, Clone)]
struct Rec {
    act: Act,
    /// The session it ran under: the op is valid only while it is live.
    session: Option<Token>,
    outcome: Outcome,
    tracker: usize,
    start: Duration,
    end: Duration,
}

impl Rec {
    fn line(&self, who: &str) -> String {
        format!(
            "{:>8.3}-{:<8.3} {who} @t{} {:?} -> {:?}",
            self.start.as_secs_f64(),
            self.end.as_secs_f64(),
            self.tracker + 1,
            self.act,
            self.outcome
        )
    }
}

/// What the clients share with the nemesis.
struct Shared {
    t0: Instant,
    stop: AtomicBool,
    /// Per tracker: no new requests (the nemesis is about to wipe it).
    gate: [AtomicBool; 3],
    /// Per tracker: requests in flight.
    busy: [AtomicUsize; 3],
}

impl Shared {
    fn enter(&self, k: usize) -> bool {
        self.busy[k].fetch_add(1, Ordering::SeqCst);
        if self.gate[k].load(Ordering::SeqCst) {
            self.busy[k].fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn leave(&self, k: usize) {
        self.busy[k].fetch_sub(1, Ordering::SeqCst);
    }
}

/// One request on a connection kept between requests; the outcome as seen
/// by the client, and the answer when there was one.
async fn request(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
    req: &Request,
) -> (Outcome, Option<Response>) {
    if conn.is_none() {
        match Conn::connect(addr, None, OP_TIMEOUT).await {
            Ok(c) => *conn = Some(c),
            Err(e) => return (Outcome::NotSent(format!("{e:#}")), None),
        }
    }
    let Some(c) = conn.as_mut() else { return (Outcome::NotSent("no connection".into()), None) };
    match c.call(req).await {
        // The tracker failed while handling it (fail-stop): the op may be on
        // its disk and come back at restart.
        Ok(Response::Refused(Refusal::Internal(why))) => {
            *conn = None;
            (Outcome::Unknown(format!("internal: {why}")), None)
        }
        Ok(Response::Refused(r)) => (Outcome::Refused(r.to_string()), None),
        Ok(resp) => (Outcome::Acked, Some(resp)),
        Err(e) => {
            *conn = None;
            (Outcome::Unknown(format!("{e:#}")), None)
        }
    }
}

// ---------------------------------------------------------------------------
// The clients.

/// What a client believes (its acknowledged ops, and the unknown ones taken
/// as applied): only used to pick plausible next requests.
struct Client {
    id: usize,
    tracker: usize,
    addr: SocketAddr,
    rng: StdRng,
    conn: Option<Conn>,
    belief: State,
    users: Vec<String>,
    tokens: BTreeMap<String, (Token, String)>,
    groups: Vec<String>,
    files: usize,
    logins: usize,
    recs: Vec<Rec>,
}

impl Client {
    fn user(&self, n: usize) -> String {
        format!("c{}-u{n}", self.id)
    }

    fn password(user: &str) -> String {
        format!("pw-{user}")
    }

    /// The next request and what it stands for: a read now and then, an
    /// op otherwise.
    fn next(&mut self) -> (Request, Act, Option<Token>) {
        if let Some((req, what, token)) = self.read().filter(|_| self.rng.gen_bool(0.2)) {
            return (req, Act::Read(what, Vec::new()), Some(token));
        }
        let (req, op, session) = self.next_op();
        (req, Act::Write(op), session)
    }

    /// A read this client can make: its groups, the requests to a group it
    /// owns, the files of a group one of its users is in.
    fn read(&mut self) -> Option<(Request, Read, Token)> {
        let (user, (token, _)) = {
            let sessions: Vec<_> = self.tokens.iter().collect();
            let (u, t) = sessions.get(self.rng.gen_range(0..sessions.len().max(1)))?;
            ((*u).clone(), (*t).clone())
        };
        let group = self.groups.get(self.rng.gen_range(0..self.groups.len().max(1))).cloned();
        match (self.rng.gen_range(0..3), group) {
            (1, Some(group)) if user == self.user(0) => Some((
                Request::ListRequests { token, group: group.clone() },
                Read::Requests(group),
                token,
            )),
            (2, Some(group)) => Some((
                Request::ListFilesPage {
                    token,
                    group: group.clone(),
                    prefix: String::new(),
                    after: String::new(),
                    limit: ringshare_engine::proto::MAX_PAGE,
                },
                Read::Files(group),
                token,
            )),
            _ => Some((Request::ListGroups { token }, Read::Groups, token)),
        }
    }

    /// What a read returned, restricted to this client's names.
    fn seen(&self, what: &Read, resp: Option<&Response>) -> Vec<String> {
        let prefix = format!("c{}-", self.id);
        match (what, resp) {
            (Read::Groups, Some(Response::Names(n))) => {
                n.iter().filter(|g| g.starts_with(&prefix)).cloned().collect()
            }
            (Read::Requests(_), Some(Response::Names(n))) => n.clone(),
            (Read::Files(_), Some(Response::FilesPage { files, .. })) => {
                files.iter().map(|f| f.name.clone()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The next op and what the tracker would log for it.
    fn next_op(&mut self) -> (Request, Op, Option<Token>) {
        // Users first, then sessions for them.
        if self.users.len() < 3 && (self.users.is_empty() || self.rng.gen_bool(0.5)) {
            let user = self.user(self.users.len());
            self.users.push(user.clone());
            let password = Self::password(&user);
            let op = Op::CreateUser { user: user.clone(), password_hash: String::new() };
            return (Request::CreateUser { user, password }, op, None);
        }
        let offline: Vec<String> = self
            .users
            .iter()
            .filter(|u| self.belief.user_exists(u) && !self.tokens.contains_key(*u))
            .cloned()
            .collect();
        if !offline.is_empty() && (self.tokens.is_empty() || self.rng.gen_bool(0.6)) {
            let user = offline[self.rng.gen_range(0..offline.len())].clone();
            return self.login(user);
        }
        let mut menu: Vec<(Request, Op, Option<Token>)> = Vec::new();
        let owner = self.user(0);
        if let Some((token, _)) = self.tokens.get(&owner).cloned() {
            if self.groups.len() < 2 {
                let group = format!("c{}-g{}", self.id, self.groups.len());
                menu.push((
                    Request::CreateGroup { token, group: group.clone() },
                    Op::CreateGroup { user: owner.clone(), group },
                    Some(token),
                ));
            }
            for g in &self.groups {
                for u in self.belief.group(g).map(|g| g.requests.clone()).unwrap_or_default() {
                    let (group, user) = (g.clone(), u.clone());
                    let accept = self.rng.gen_bool(0.7);
                    menu.push(if accept {
                        (
                            Request::AcceptRequest {
                                token,
                                group: group.clone(),
                                user: user.clone(),
                            },
                            Op::AcceptRequest { owner: owner.clone(), group, user },
                            Some(token),
                        )
                    } else {
                        (
                            Request::RejectRequest {
                                token,
                                group: group.clone(),
                                user: user.clone(),
                            },
                            Op::RejectRequest { owner: owner.clone(), group, user },
                            Some(token),
                        )
                    });
                }
            }
        }
        for (user, (token, peer_addr)) in self.tokens.clone() {
            for g in self.groups.clone() {
                let Some(state) = self.belief.group(&g).cloned() else { continue };
                let member = state.members.contains(&user);
                let requested = state.requests.contains(&user);
                if !member && !requested && user != owner {
                    menu.push((
                        Request::JoinGroup { token, group: g.clone() },
                        Op::JoinGroup { user: user.clone(), group: g.clone() },
                        Some(token),
                    ));
                }
                if (member && user != owner && self.rng.gen_bool(0.3)) || requested {
                    menu.push((
                        Request::LeaveGroup { token, group: g.clone() },
                        Op::LeaveGroup { user: user.clone(), group: g.clone() },
                        Some(token),
                    ));
                }
                if member {
                    self.files += 1;
                    let name = format!("c{}-f{}", self.id, self.files);
                    let meta =
                        file_meta(name, 1 + self.rng.gen_range(0..4_000_000), self.rng.gen());
                    menu.push(upload(token, &user, &peer_addr, &g, meta));
                    let mine: Vec<String> = state
                        .files
                        .values()
                        .filter(|f| {
                            f.sharers.iter().any(|s| s.user == user && s.peer_addr == peer_addr)
                        })
                        .map(|f| f.meta.name.clone())
                        .collect();
                    if let Some(file) = mine.first() {
                        menu.push((
                            Request::StopShare { token, group: g.clone(), file: file.clone() },
                            Op::StopShare {
                                user: user.clone(),
                                peer_addr: peer_addr.clone(),
                                group: g.clone(),
                                file: file.clone(),
                            },
                            Some(token),
                        ));
                    }
                }
            }
            if self.rng.gen_bool(0.05) {
                menu.push((Request::Logout { token }, Op::Logout { token }, Some(token)));
            }
        }
        if menu.is_empty() {
            // Nothing else to do yet: a session for a user, made again.
            let user = self.users[self.rng.gen_range(0..self.users.len())].clone();
            return self.login(user);
        }
        menu.swap_remove(self.rng.gen_range(0..menu.len()))
    }

    /// A login of `user` from a fresh address (no login replaces another);
    /// its token is learnt from the answer.
    fn login(&mut self, user: String) -> (Request, Op, Option<Token>) {
        self.logins += 1;
        let peer_addr = format!("198.18.{}.1:{}", self.id % 250, 1024 + self.logins);
        let password = Self::password(&user);
        let op =
            Op::Login { user: user.clone(), token: Token([0; 16]), peer_addr: peer_addr.clone() };
        (Request::Login { user, password, peer_addr }, op, None)
    }

    /// Takes a request's outcome into the client's belief.
    fn learn(&mut self, op: &mut Op, outcome: &Outcome, resp: Option<&Response>) {
        if let (Op::Login { token, user, peer_addr }, Some(Response::LoggedIn { token: t, .. })) =
            (&mut *op, resp)
        {
            *token = *t;
            self.tokens.insert(user.clone(), (*t, peer_addr.clone()));
        }
        if let Op::Login { token, .. } = op {
            if *token == Token([0; 16]) {
                // Unknown or refused: a token of our own making stands for it in
                // the model (it never matches a real one).
                let mut raw = [0u8; 16];
                self.rng.fill(&mut raw);
                raw[0] = 0xff;
                *token = Token(raw);
            }
        }
        if let Op::CreateGroup { group, .. } = op {
            if outcome.maybe_applied() && !self.groups.contains(group) {
                self.groups.push(group.clone());
            }
        }
        if let Op::Logout { token } = op {
            if outcome.maybe_applied() {
                self.tokens.retain(|_, (t, _)| t != token);
            }
        }
        if outcome.maybe_applied() {
            let _ = self.belief.apply(op);
        }
    }
}

fn upload(
    token: Token,
    user: &str,
    peer_addr: &str,
    group: &str,
    meta: FileMeta,
) -> (Request, Op, Option<Token>) {
    (
        Request::UploadFile { token, group: group.to_owned(), meta: meta.clone() },
        Op::UploadFile {
            user: user.to_owned(),
            peer_addr: peer_addr.to_owned(),
            group: group.to_owned(),
            meta,
        },
        Some(token),
    )
}

async fn client_loop(mut c: Client, shared: Arc<Shared>) -> Client {
    while !shared.stop.load(Ordering::SeqCst) {
        if !shared.enter(c.tracker) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let (req, mut act, session) = c.next();
        let start = shared.t0.elapsed();
        let (outcome, resp) = request(&mut c.conn, c.addr, &req).await;
        shared.leave(c.tracker);
        let end = shared.t0.elapsed();
        match &mut act {
            Act::Write(op) => c.learn(op, &outcome, resp.as_ref()),
            Act::Read(what, seen) => *seen = c.seen(what, resp.as_ref()),
        }
        let not_sent = matches!(outcome, Outcome::NotSent(_));
        c.recs.push(Rec { act, session, outcome, tracker: c.tracker, start, end });
        if not_sent {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    c
}

// ---------------------------------------------------------------------------
// Conflicts.

#[derive(Debug, Clone)]
enum ConflictKind {
    /// The same user created with two passwords.
    User { user: String, passwords: [String; 2] },
    /// The same group created by two users.
    Group { group: String, owners: [String; 2] },
    /// The same file name shared with two contents.
    File { file: String, metas: Box<[FileMeta; 2]>, sharers: [(String, String); 2] },
    /// Accept on one side, reject on the other.
    Decide { user: String },
}

#[derive(Debug, Clone)]
struct Conflict {
    kind: ConflictKind,
    trackers: [usize; 2],
    outcomes: [Outcome; 2],
    at: Duration,
}

/// The conflict client's two members of `x-shared`: (user, token, peer
/// address) each.
type Pair = [(String, Token, String); 2];

const SHARED_GROUP: &str = "x-shared";

/// Makes `x-a` and `x-b`, both members of `x-shared` (owned by `x-a`),
/// through tracker 1; the nemesis waits for it to reach the others.
async fn conflict_setup(bed: &Testbed) -> Result<Pair> {
    let mut conn = Conn::connect(bed.addr(0), None, Duration::from_secs(10)).await?;
    let mut pair = Vec::new();
    for (i, user) in ["x-a", "x-b"].into_iter().enumerate() {
        let password = format!("pw-{user}");
        conn.done(&Request::CreateUser { user: user.into(), password: password.clone() }).await?;
        let peer_addr = format!("198.19.0.{}:4000", i + 1);
        let login = Request::Login { user: user.into(), password, peer_addr: peer_addr.clone() };
        match conn.call(&login).await? {
            Response::LoggedIn { token, .. } => pair.push((user.to_owned(), token, peer_addr)),
            other => bail!("login {user}: {other:?}"),
        }
    }
    let (ta, tb) = (pair[0].1, pair[1].1);
    conn.done(&Request::CreateGroup { token: ta, group: SHARED_GROUP.into() }).await?;
    conn.done(&Request::JoinGroup { token: tb, group: SHARED_GROUP.into() }).await?;
    conn.done(&Request::AcceptRequest {
        token: ta,
        group: SHARED_GROUP.into(),
        user: "x-b".into(),
    })
    .await?;
    pair.try_into().map_err(|_| anyhow!("two users"))
}

/// Two requests at once, on two trackers.
async fn both(addrs: &[SocketAddr; 3], trackers: [usize; 2], reqs: [Request; 2]) -> [Outcome; 2] {
    let one = |k: usize, req: Request| async move {
        let mut conn = None;
        request(&mut conn, addrs[k], &req).await.0
    };
    let [r0, r1] = reqs;
    let (a, b) = tokio::join!(one(trackers[0], r0), one(trackers[1], r1));
    [a, b]
}

async fn conflict_loop(
    addrs: [SocketAddr; 3],
    pair: Pair,
    shared: Arc<Shared>,
    seed: u64,
) -> Vec<Conflict> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_c0f1);
    let mut done = Vec::new();
    let mut n = 0;
    let [(ua, ta, pa), (ub, tb, pb)] = pair;
    while !shared.stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..800))).await;
        let a = rng.gen_range(0..3);
        let b = (a + rng.gen_range(1..3)) % 3;
        if !shared.enter(a) {
            continue;
        }
        if !shared.enter(b) {
            shared.leave(a);
            continue;
        }
        n += 1;
        let at = shared.t0.elapsed();
        let kind = match rng.gen_range(0..4) {
            0 => {
                let user = format!("x-u{n}");
                let passwords = [format!("pw-a{n}"), format!("pw-b{n}")];
                let reqs = [
                    Request::CreateUser { user: user.clone(), password: passwords[0].clone() },
                    Request::CreateUser { user: user.clone(), password: passwords[1].clone() },
                ];
                Some((ConflictKind::User { user, passwords }, reqs))
            }
            1 => {
                let group = format!("x-g{n}");
                let reqs = [
                    Request::CreateGroup { token: ta, group: group.clone() },
                    Request::CreateGroup { token: tb, group: group.clone() },
                ];
                Some((ConflictKind::Group { group, owners: [ua.clone(), ub.clone()] }, reqs))
            }
            2 => {
                let file = format!("x-f{n}");
                let metas =
                    [file_meta(file.clone(), 1000, 0xa1), file_meta(file.clone(), 2000, 0xb2)];
                let reqs = [
                    Request::UploadFile {
                        token: ta,
                        group: SHARED_GROUP.into(),
                        meta: metas[0].clone(),
                    },
                    Request::UploadFile {
                        token: tb,
                        group: SHARED_GROUP.into(),
                        meta: metas[1].clone(),
                    },
                ];
                let sharers = [(ua.clone(), pa.clone()), (ub.clone(), pb.clone())];
                Some((ConflictKind::File { file, metas: Box::new(metas), sharers }, reqs))
            }
            _ => decide_setup(&addrs, a, b, n, ta).await.map(|user| {
                let g = SHARED_GROUP.to_owned();
                let reqs = [
                    Request::AcceptRequest { token: ta, group: g.clone(), user: user.clone() },
                    Request::RejectRequest { token: ta, group: g, user: user.clone() },
                ];
                (ConflictKind::Decide { user }, reqs)
            }),
        };
        if let Some((kind, reqs)) = kind {
            let outcomes = both(&addrs, [a, b], reqs).await;
            done.push(Conflict { kind, trackers: [a, b], outcomes, at });
        }
        shared.leave(a);
        shared.leave(b);
    }
    done
}

/// A pending request of a new user `x-r<n>` to `x-shared`, made at tracker
/// `a` and seen by the owner at tracker `b`; `None` if that did not happen
/// within a second or so.
async fn decide_setup(
    addrs: &[SocketAddr; 3],
    a: usize,
    b: usize,
    n: usize,
    owner: Token,
) -> Option<String> {
    let user = format!("x-r{n}");
    let mut conn = Conn::connect(addrs[a], None, OP_TIMEOUT).await.ok()?;
    let password = format!("pw-{user}");
    conn.done(&Request::CreateUser { user: user.clone(), password: password.clone() })
        .await
        .ok()?;
    let login = Request::Login {
        user: user.clone(),
        password,
        peer_addr: format!("198.19.1.{}:4000", n % 250),
    };
    let Ok(Response::LoggedIn { token, .. }) = conn.call(&login).await else { return None };
    conn.done(&Request::JoinGroup { token, group: SHARED_GROUP.into() }).await.ok()?;
    let mut there = Conn::connect(addrs[b], None, OP_TIMEOUT).await.ok()?;
    for _ in 0..10 {
        let ask = Request::ListRequests { token: owner, group: SHARED_GROUP.into() };
        if let Ok(Response::Names(names)) = there.call(&ask).await {
            if names.contains(&user) {
                return Some(user);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

// ---------------------------------------------------------------------------
// Faults.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Partition,
    Heal,
    Kill,
    Restart,
    Pause,
    Skew,
    Unskew,
    Wipe,
    DiskFull,
    FreeDisk,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Partition => "partition",
            Fault::Heal => "heal",
            Fault::Kill => "kill -9",
            Fault::Restart => "restart",
            Fault::Pause => "pause",
            Fault::Skew => "clock skew",
            Fault::Unskew => "clock restored",
            Fault::Wipe => "wipe data dir",
            Fault::DiskFull => "disk full",
            Fault::FreeDisk => "disk freed",
        }
    }
}

/// What is broken right now.
#[derive(Default)]
struct Broken {
    cut: bool,
    /// The tracker killed, or whose disk is full.
    down: Option<usize>,
    full: Option<usize>,
    skewed: Option<usize>,
}

struct Nemesis<'a, 'b> {
    bed: &'a Testbed,
    trackers: &'b mut Trackers<'a>,
    shared: Arc<Shared>,
    rng: StdRng,
    broken: Broken,
    log: Vec<(f64, String)>,
    verbose: bool,
}

impl Nemesis<'_, '_> {
    fn note(&mut self, what: String) {
        let t = self.shared.t0.elapsed().as_secs_f64();
        if self.verbose {
            eprintln!("nemesis {t:8.3} {what}");
        }
        self.log.push((t, what));
    }

    fn choices(&self) -> Vec<Fault> {
        let b = &self.broken;
        let mut c = vec![Fault::Partition];
        if b.cut {
            c.push(Fault::Heal);
        }
        if b.down.is_none() && b.full.is_none() {
            c.extend([Fault::Kill, Fault::Pause, Fault::Wipe, Fault::DiskFull]);
        }
        if b.down.is_some() && b.full.is_none() {
            c.push(Fault::Restart);
        }
        if b.full.is_some() {
            c.push(Fault::FreeDisk);
        }
        c.push(if b.skewed.is_some() { Fault::Unskew } else { Fault::Skew });
        c
    }

    async fn step(&mut self) -> Result<String> {
        let choices = self.choices();
        let fault = choices[self.rng.gen_range(0..choices.len())];
        let k = self.rng.gen_range(0..3);
        let what = match fault {
            Fault::Partition => {
                let (cuts, what) = self.random_cut(k);
                self.bed.cut(&cuts)?;
                self.broken.cut = true;
                what
            }
            Fault::Heal => {
                self.bed.cut(&[])?;
                self.broken.cut = false;
                "heal the network".into()
            }
            Fault::Kill => {
                self.trackers.kill(k);
                self.broken.down = Some(k);
                format!("kill -9 tracker {}", k + 1)
            }
            Fault::Restart => {
                let k = self.broken.down.take().unwrap_or(k);
                self.trackers.start(k)?;
                format!("restart tracker {}", k + 1)
            }
            Fault::Pause => {
                let ms = self.rng.gen_range(PEER_TTL_S * 1000 + 500..PEER_TTL_S * 2000);
                self.trackers.signal(k, libc::SIGSTOP);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                self.trackers.signal(k, libc::SIGCONT);
                format!("pause tracker {} for {ms} ms", k + 1)
            }
            Fault::Skew => {
                let minutes = self.rng.gen_range(1..=4) as i64;
                let ms = if self.rng.gen_bool(0.5) { minutes } else { -minutes } * 60_000;
                std::fs::write(self.trackers.offset_file(k), ms.to_string())?;
                self.broken.skewed = Some(k);
                format!("clock of tracker {} {ms:+} ms", k + 1)
            }
            Fault::Unskew => {
                let k = self.broken.skewed.take().unwrap_or(k);
                std::fs::write(self.trackers.offset_file(k), "0")?;
                format!("clock of tracker {} restored", k + 1)
            }
            Fault::Wipe => self.wipe(k).await?,
            Fault::DiskFull => {
                fill(self.bed.mount(k))?;
                self.broken.full = Some(k);
                format!("disk of tracker {} full", k + 1)
            }
            Fault::FreeDisk => {
                let k = self.broken.full.take().unwrap_or(k);
                let _ = std::fs::remove_file(self.bed.mount(k).join("filler"));
                let restarted = if self.trackers.running(k) {
                    ""
                } else {
                    self.trackers.start(k)?;
                    ", restarted it (it had stopped)"
                };
                format!("disk of tracker {} freed{restarted}", k + 1)
            }
        };
        self.note(what);
        Ok(fault.name().to_owned())
    }

    fn random_cut(&mut self, k: usize) -> (Vec<(usize, usize)>, String) {
        let (j, l) = ((k + 1) % 3, (k + 2) % 3);
        let t = |x: usize| x + 1;
        match self.rng.gen_range(0..4) {
            0 => (
                vec![(k, j), (j, k), (k, l), (l, k)],
                format!("partition: tracker {} cut off from {} and {}", t(k), t(j), t(l)),
            ),
            1 => (vec![(k, j)], format!("partition: one-way, {} -> {} lost", t(k), t(j))),
            2 => (
                vec![(k, j), (j, k)],
                format!("partition: {} and {} apart, both reach {}", t(k), t(j), t(l)),
            ),
            _ => (
                vec![(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)],
                "partition: all three apart".into(),
            ),
        }
    }

    /// Wipes tracker `k`'s data once the others hold everything it made:
    /// what only it held would be lost with its disk, and the checker counts
    /// every acknowledged op.
    async fn wipe(&mut self, k: usize) -> Result<String> {
        let origin = k as u16 + 1;
        self.shared.gate[k].store(true, Ordering::SeqCst);
        let result = async {
            if self.broken.cut {
                self.bed.cut(&[])?;
                self.broken.cut = false;
                self.note("heal the network (before a wipe)".into());
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if Instant::now() > deadline {
                    return Ok(format!(
                        "wipe of tracker {} skipped: the others did not catch up",
                        k + 1
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                if self.shared.busy[k].load(Ordering::SeqCst) > 0 {
                    continue;
                }
                let Ok((_, mine)) = self.trackers.inspect(k, None) else { continue };
                let made = mine.get(&origin).copied().unwrap_or(0);
                let mut held = true;
                for j in (0..3).filter(|j| *j != k) {
                    match self.trackers.inspect(j, None) {
                        Ok((_, theirs)) => {
                            held &= theirs.get(&origin).copied().unwrap_or(0) >= made
                        }
                        Err(_) => held = false,
                    }
                }
                if held {
                    break;
                }
            }
            self.trackers.kill(k);
            let data = self.trackers.data(k);
            for entry in std::fs::read_dir(&data)?.map_while(|e| e.ok()) {
                let name = entry.file_name();
                if name == ringshare_tracker::links::KEY_FILE
                    || name == ringshare_tracker::links::PINS_FILE
                {
                    continue;
                }
                let path = entry.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
            self.trackers.start(k)?;
            anyhow::Ok(format!("tracker {} restarted with its data dir wiped", k + 1))
        }
        .await;
        self.shared.gate[k].store(false, Ordering::SeqCst);
        result
    }

    /// Undoes every fault: network healed, clocks restored, disks freed,
    /// every tracker running.
    fn heal_all(&mut self) -> Result<()> {
        self.bed.cut(&[])?;
        for k in 0..3 {
            std::fs::write(self.trackers.offset_file(k), "0")?;
            let _ = std::fs::remove_file(self.bed.mount(k).join("filler"));
            self.trackers.signal(k, libc::SIGCONT);
            if !self.trackers.running(k) {
                self.trackers.start(k)?;
            }
        }
        self.broken = Broken::default();
        self.note("heal everything".into());
        Ok(())
    }
}

/// Fills the filesystem at `dir` (writes zeros until ENOSPC).
fn fill(dir: &Path) -> Result<()> {
    let mut f = std::fs::File::create(dir.join("filler"))?;
    let block = vec![0u8; 1 << 20];
    loop {
        match f.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e.into()),
        }
    }
    // The last partial block may still fit byte by byte.
    while f.write_all(&block[..4096]).is_ok() {}
    while f.write_all(&block[..1]).is_ok() {}
    Ok(())
}

// ---------------------------------------------------------------------------
// The schedule.

async fn schedule(bed: &Testbed, opts: &Options) -> Result<Report> {
    let mut trackers = Trackers::new(bed, &opts.tracker_bin)?;
    for k in 0..3 {
        std::fs::create_dir_all(trackers.data(k))?;
        trackers.start(k)?;
    }
    let pair = conflict_setup(bed).await.context("set up the conflict users")?;
    // Faults start once every tracker holds the setup.
    wait_converged(&trackers, Duration::from_secs(20), false)
        .await
        .context("the setup did not replicate")?;
    let shared = Arc::new(Shared {
        t0: Instant::now(),
        stop: AtomicBool::new(false),
        gate: Default::default(),
        busy: Default::default(),
    });
    let mut tasks = Vec::new();
    for i in 0..opts.clients_per_tracker * 3 {
        let k = i % 3;
        let c = Client {
            id: i,
            tracker: k,
            addr: bed.addr(k),
            rng: StdRng::seed_from_u64(opts.seed.wrapping_mul(1000).wrapping_add(i as u64)),
            conn: None,
            belief: State::default(),
            users: Vec::new(),
            tokens: BTreeMap::new(),
            groups: Vec::new(),
            files: 0,
            logins: 0,
            recs: Vec::new(),
        };
        tasks.push(tokio::spawn(client_loop(c, Arc::clone(&shared))));
    }
    let conflicts = {
        let shared = Arc::clone(&shared);
        let addrs = [bed.addr(0), bed.addr(1), bed.addr(2)];
        tokio::spawn(conflict_loop(addrs, pair, shared, opts.seed))
    };

    let mut nemesis = Nemesis {
        bed,
        trackers: &mut trackers,
        shared: Arc::clone(&shared),
        rng: StdRng::seed_from_u64(opts.seed),
        broken: Broken::default(),
        log: Vec::new(),
        verbose: opts.verbose,
    };
    let mut fault_counts: BTreeMap<String, usize> = BTreeMap::new();
    let end = Instant::now() + opts.duration;
    let mut trouble = None;
    let mut injected = 0;
    while match opts.faults {
        Some(n) => injected < n,
        None => Instant::now() < end,
    } {
        injected += 1;
        let wait = nemesis.rng.gen_range(300..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        match nemesis.step().await {
            Ok(kind) => *fault_counts.entry(kind).or_default() += 1,
            Err(e) => {
                trouble = Some(e);
                break;
            }
        }
    }
    // The load stops, then every fault is undone; convergence is timed from
    // the heal.
    shared.stop.store(true, Ordering::SeqCst);
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.context("client task")?);
    }
    let conflicts = conflicts.await.context("conflict task")?;
    nemesis.heal_all()?;
    let faults = std::mem::take(&mut nemesis.log);
    drop(nemesis);
    if let Some(e) = trouble {
        return Err(e.context("inject a fault"));
    }
    let healed = Instant::now();
    let converged = wait_converged(&trackers, Duration::from_secs(60), opts.verbose).await;
    let convergence_ms = converged.as_ref().ok().map(|()| healed.elapsed().as_millis() as u64);

    let mut report = Report {
        faults,
        fault_counts,
        conflicts: conflicts.len(),
        convergence_ms,
        ..Report::new(opts.seed)
    };
    if let Err(e) = converged {
        report.failures.push(format!("(b) no convergence within 60 s after the heal: {e:#}"));
    }
    let mut states = Vec::new();
    for k in 0..3 {
        let (digest, state) = trackers.state(k)?;
        report.digests.push(digest);
        states.push(state);
    }
    for k in 1..3 {
        if states[k] != states[0] {
            report
                .failures
                .push(format!("(b) tracker {} holds a different state than tracker 1", k + 1));
        }
    }
    let histories: Vec<(usize, &[Rec])> = clients.iter().map(|c| (c.id, &c.recs[..])).collect();
    check(&mut report, &histories, &conflicts, &states[0]);
    if !report.failures.is_empty() {
        for c in &clients {
            report.history.extend(c.recs.iter().map(|r| r.line(&format!("c{}", c.id))));
        }
        for x in &conflicts {
            report.history.push(format!(
                "{:>8.3} conflict @t{}/t{} {:?} -> {:?}",
                x.at.as_secs_f64(),
                x.trackers[0] + 1,
                x.trackers[1] + 1,
                x.kind,
                x.outcomes
            ));
        }
        for (t, f) in &report.faults {
            report.history.push(format!("{t:>8.3} nemesis {f}"));
        }
        report.history.sort();
        for k in 0..3 {
            let log = std::fs::read_to_string(trackers.log_file(k)).unwrap_or_default();
            for line in log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")) {
                report.history.push(format!("tracker {} log: {line}", k + 1));
            }
        }
    }
    Ok(report)
}

/// Waits until every tracker answers with the same digest and entry counts.
async fn wait_converged(trackers: &Trackers<'_>, within: Duration, trace: bool) -> Result<()> {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut took = Vec::new();
        let seen: Vec<_> = (0..3)
            .map(|k| {
                let t = Instant::now();
                let r = trackers.inspect(k, None);
                took.push(t.elapsed().as_millis());
                r
            })
            .collect();
        if let [Ok(a), Ok(b), Ok(c)] = &seen[..] {
            if a == b && b == c {
                return Ok(());
            }
        }
        last = format!("{seen:?}");
        if trace {
            let short: Vec<String> = seen
                .iter()
                .map(|r| match r {
                    Ok((d, k)) => format!("{} {k:?}", &d[..8.min(d.len())]),
                    Err(e) => format!("{e:#}"),
                })
                .collect();
            eprintln!(
                "converging {:>6} ms (asking took {took:?} ms): {}",
                (within - (deadline - Instant::now())).as_millis(),
                short.join(" | ")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("last seen: {last}")
}

// ---------------------------------------------------------------------------
// The checker.

/// The part of a state a client's history decides: its users, its sessions
/// (tokens it was given; others only by user and address), its groups.
#[derive(Debug, PartialEq, Eq, Hash, Clone)]
struct View {
    users: Vec<String>,
    sessions: Vec<(String, String, Option<Token>)>,
    groups: Vec<(String, Vec<u8>)>,
}

fn view(state: &State, prefix: &str, tokens: &BTreeSet<Token>) -> View {
    let users = (0..3).map(|n| format!("{prefix}u{n}")).filter(|u| state.user_exists(u)).collect();
    let mut sessions: Vec<(String, String, Option<Token>)> = state
        .tokens()
        .filter_map(|t| {
            let s = state.session(t)?;
            s.user
                .starts_with(prefix)
                .then(|| (s.user.clone(), s.peer_addr.clone(), tokens.contains(t).then_some(*t)))
        })
        .collect();
    sessions.sort();
    let groups = state
        .group_ids()
        .into_iter()
        .filter(|g| g.starts_with(prefix))
        .filter_map(|g| {
            let bytes = postcard::to_stdvec(state.group(&g)?).ok()?;
            Some((g, bytes))
        })
        .collect();
    View { users, sessions, groups }
}

/// Applies `op` (run under `session`) in one world: `None` if it is not
/// valid there.
fn apply(world: &State, op: &Op, session: Option<Token>) -> Option<State> {
    if let Some(t) = session {
        world.session(&t)?;
    }
    let mut next = world.clone();
    next.apply(op).ok()?;
    Some(next)
}

/// What `read` returns in `world` (the client's names only); `None` where
/// the tracker would have refused it.
fn read_in(world: &State, read: &Read, prefix: &str) -> Option<Vec<String>> {
    match read {
        Read::Groups => {
            Some(world.group_ids().into_iter().filter(|g| g.starts_with(prefix)).collect())
        }
        Read::Requests(g) => Some(world.group(g)?.requests.clone()),
        Read::Files(g) => Some(world.group(g)?.files.keys().cloned().collect()),
    }
}

/// Checks each client's history (`(client id, requests in order)`) and
/// each conflict against the final state `fin`, adding what is wrong to
/// `report.failures`.
fn check(report: &mut Report, histories: &[(usize, &[Rec])], conflicts: &[Conflict], fin: &State) {
    for &(id, recs) in histories {
        let prefix = format!("c{id}-");
        let mut tokens = BTreeSet::new();
        let mut worlds: Vec<State> = vec![State::default()];
        let mut overflow = false;
        for (i, r) in recs.iter().enumerate() {
            let op = match (&r.act, &r.outcome) {
                (Act::Write(op), _) => op,
                (Act::Read(what, seen), Outcome::Acked) => {
                    // A read at the client's own tracker sees exactly its
                    // own applied ops: the worlds it contradicts go.
                    report.reads_checked += 1;
                    worlds.retain(|w| read_in(w, what, &prefix).as_ref() == Some(seen));
                    if worlds.is_empty() {
                        report.failures.push(format!(
                            "(a) client c{id}: read #{i} {what:?} at its tracker saw {seen:?}, which its history does not allow"
                        ));
                        break;
                    }
                    continue;
                }
                (Act::Read(..), _) => continue,
            };
            match &r.outcome {
                Outcome::Acked => {
                    report.ops.acked += 1;
                    report.acked_checked += 1;
                    if let Op::Login { token, .. } = op {
                        tokens.insert(*token);
                    }
                    let next: Vec<State> =
                        worlds.iter().filter_map(|w| apply(w, op, r.session)).collect();
                    if next.is_empty() {
                        report.failures.push(format!(
                            "(a) client c{id}: acknowledged op #{i} {op:?} cannot follow its own history"
                        ));
                        break;
                    }
                    worlds = next;
                }
                Outcome::Refused(_) => report.ops.refused += 1,
                Outcome::NotSent(_) => report.ops.not_sent += 1,
                Outcome::Unknown(_) => {
                    report.ops.unknown += 1;
                    let more: Vec<State> =
                        worlds.iter().filter_map(|w| apply(w, op, r.session)).collect();
                    worlds.extend(more);
                    // Worlds that look the same to the check are one.
                    let mut seen = HashMap::new();
                    worlds.retain(|w| seen.insert(view(w, &prefix, &tokens), ()).is_none());
                    if worlds.len() > MAX_WORLDS {
                        overflow = true;
                        break;
                    }
                }
            }
        }
        if overflow {
            report.inconclusive += 1;
            continue;
        }
        if worlds.is_empty() {
            // Already reported: the history contradicted itself.
            continue;
        }
        let got = view(fin, &prefix, &tokens);
        if !worlds.iter().any(|w| view(w, &prefix, &tokens) == got) {
            let want = view(&worlds[0], &prefix, &tokens);
            report.failures.push(format!(
                "(a/d) client c{id}: the final state is none of the {} its history allows; got {}, e.g. wanted {}",
                worlds.len(),
                describe(fin, &got),
                describe(&worlds[0], &want)
            ));
        }
    }
    for x in conflicts {
        for o in &x.outcomes {
            match o {
                Outcome::Acked => report.ops.acked += 1,
                Outcome::Refused(_) => report.ops.refused += 1,
                Outcome::NotSent(_) => report.ops.not_sent += 1,
                Outcome::Unknown(_) => report.ops.unknown += 1,
            }
        }
        if let Err(e) = check_conflict(fin, x) {
            report.failures.push(format!(
                "(c) conflict at {:.3} s {:?} {:?}: {e}",
                x.at.as_secs_f64(),
                x.kind,
                x.outcomes
            ));
        }
    }
    // No duplicates anywhere.
    for g in fin.group_ids() {
        let Some(group) = fin.group(&g) else { continue };
        let members: BTreeSet<&String> = group.members.iter().collect();
        let requests: BTreeSet<&String> = group.requests.iter().collect();
        if members.len() != group.members.len() || requests.len() != group.requests.len() {
            report.failures.push(format!("(d) group {g} lists someone twice: {group:?}"));
        }
        if members.intersection(&requests).next().is_some() {
            report.failures.push(format!("(d) group {g} has a member who is also asking to join"));
        }
    }
}

fn describe(state: &State, v: &View) -> String {
    let groups: Vec<String> = v
        .groups
        .iter()
        .filter_map(|(g, _)| {
            let grp: &Group = state.group(g)?;
            Some(format!(
                "{g}{{members {:?}, requests {:?}, files {:?}}}",
                grp.members,
                grp.requests,
                grp.files.iter().map(|(n, f)| (n.clone(), f.sharers.len())).collect::<Vec<_>>()
            ))
        })
        .collect();
    let sessions: Vec<String> = v
        .sessions
        .iter()
        .map(|(u, a, t)| format!("{u}@{a}{}", if t.is_some() { "*" } else { "" }))
        .collect();
    format!("users {:?}, sessions {:?}, groups [{}]", v.users, sessions, groups.join(", "))
}

/// One conflict's end: exactly one side's effect, and never a side that was
/// refused (or not sent).
fn check_conflict(fin: &State, x: &Conflict) -> Result<()> {
    let may = [x.outcomes[0].maybe_applied(), x.outcomes[1].maybe_applied()];
    let winner = |side: Option<usize>| -> Result<()> {
        match side {
            None if may[0] || may[1] => bail!("neither side took effect"),
            None => Ok(()),
            Some(s) if !may[s] => {
                bail!("side {} took effect, but it was refused or never sent", s + 1)
            }
            Some(_) => Ok(()),
        }
    };
    match &x.kind {
        ConflictKind::User { user, passwords } => {
            let Some(hash) = fin.password_hash(user) else { return winner(None) };
            let ok: Vec<usize> = (0..2)
                .filter(|&s| ringshare_tracker::password::verify(&passwords[s], hash))
                .collect();
            match ok[..] {
                [s] => winner(Some(s)),
                _ => bail!("the account's password is not exactly one side's ({ok:?})"),
            }
        }
        ConflictKind::Group { group, owners } => {
            let Some(g) = fin.group(group) else { return winner(None) };
            let Some(s) = owners.iter().position(|o| g.members == [o.clone()]) else {
                bail!("the group is not one side's: {g:?}")
            };
            if !g.requests.is_empty() || !g.files.is_empty() {
                bail!("the group holds more than its creation: {g:?}");
            }
            winner(Some(s))
        }
        ConflictKind::File { file, metas, sharers } => {
            let Some(g) = fin.group(SHARED_GROUP) else { bail!("{SHARED_GROUP} is gone") };
            let Some(f) = g.files.get(file) else { return winner(None) };
            let Some(s) = metas.iter().position(|m| *m == f.meta) else {
                bail!("the file is neither side's")
            };
            let want: BTreeSet<(String, String)> = [sharers[s].clone()].into();
            let got: BTreeSet<(String, String)> =
                f.sharers.iter().map(|sh| (sh.user.clone(), sh.peer_addr.clone())).collect();
            if got != want {
                bail!("the winner's file is shared by {got:?}, not only by its uploader");
            }
            winner(Some(s))
        }
        ConflictKind::Decide { user } => {
            let Some(g) = fin.group(SHARED_GROUP) else { bail!("{SHARED_GROUP} is gone") };
            let member = g.members.contains(user);
            let pending = g.requests.contains(user);
            match (member, pending) {
                (true, true) => bail!("{user} is both a member and pending"),
                (false, true) => winner(None),
                (true, false) => winner(Some(0)),
                (false, false) => winner(Some(1)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(op: Op, session: Option<Token>, outcome: Outcome) -> Rec {
        let act = Act::Write(op);
        Rec { act, session, outcome, tracker: 0, start: Duration::ZERO, end: Duration::ZERO }
    }

    fn op(r: &Rec) -> &Op {
        match &r.act {
            Act::Write(op) => op,
            Act::Read(..) => panic!("a read"),
        }
    }

    fn report() -> Report {
        Report::new(0)
    }

    /// A client's history: a user, a session, a group (acknowledged), a
    /// second user (unknown: no answer), a join by it refused.
    fn history() -> Vec<Rec> {
        let t = Token([1; 16]);
        let user = |u: &str| Op::CreateUser { user: u.into(), password_hash: String::new() };
        vec![
            rec(user("c0-u0"), None, Outcome::Acked),
            rec(
                Op::Login { user: "c0-u0".into(), token: t, peer_addr: "198.18.0.1:1025".into() },
                None,
                Outcome::Acked,
            ),
            rec(
                Op::CreateGroup { user: "c0-u0".into(), group: "c0-g0".into() },
                Some(t),
                Outcome::Acked,
            ),
            rec(user("c0-u1"), None, Outcome::Unknown("no answer".into())),
            rec(
                Op::JoinGroup { user: "c0-u0".into(), group: "c0-g0".into() },
                Some(t),
                Outcome::Refused("already a member".into()),
            ),
        ]
    }

    fn final_state(ops: &[&Op]) -> State {
        let mut st = State::default();
        for op in ops {
            st.apply(op).unwrap();
        }
        st
    }

    fn failures(recs: &[Rec], fin: &State) -> Vec<String> {
        let mut r = report();
        check(&mut r, &[(0, recs)], &[], fin);
        r.failures
    }

    #[test]
    fn the_history_check_takes_every_state_the_history_allows_and_no_other() {
        let h = history();
        let ops: Vec<&Op> = h.iter().map(op).collect();
        // The unknown op applied, or not: both allowed.
        assert_eq!(failures(&h, &final_state(&ops[..4])), Vec::<String>::new());
        assert_eq!(failures(&h, &final_state(&ops[..3])), Vec::<String>::new());
        // An acknowledged op lost: caught.
        let lost = final_state(&[ops[0], ops[1], ops[3]]);
        assert_eq!(failures(&h, &lost).len(), 1, "a lost group must be caught");
        // An op that never happened (a second session, an extra member).
        let mut extra = final_state(&ops[..4]);
        extra.apply(&Op::JoinGroup { user: "c0-u1".into(), group: "c0-g0".into() }).unwrap();
        assert_eq!(failures(&h, &extra).len(), 1, "a refused or unmade op must be caught");
        // An acknowledged op that its own history makes impossible.
        let mut bad = h.clone();
        bad.push(rec(
            Op::AcceptRequest {
                owner: "c0-u0".into(),
                group: "c0-g0".into(),
                user: "c0-u1".into(),
            },
            Some(Token([1; 16])),
            Outcome::Acked,
        ));
        let f = failures(&bad, &final_state(&ops[..4]));
        assert!(f.iter().any(|f| f.contains("cannot follow")), "{f:?}");
    }

    #[test]
    fn a_read_at_its_tracker_must_show_the_clients_own_writes() {
        let mut h = history();
        let ops: Vec<Op> = h.iter().map(|r| op(r).clone()).collect();
        let read = |seen: &[&str], what: Read| Rec {
            act: Act::Read(what, seen.iter().map(|s| s.to_string()).collect()),
            session: None,
            outcome: Outcome::Acked,
            tracker: 0,
            start: Duration::ZERO,
            end: Duration::ZERO,
        };
        let fin = final_state(&ops[..4].iter().collect::<Vec<_>>());
        h.push(read(&["c0-g0"], Read::Groups));
        assert_eq!(failures(&h, &fin), Vec::<String>::new());
        // A read that misses an acknowledged group.
        let mut stale = history();
        stale.push(read(&[], Read::Groups));
        assert!(failures(&stale, &fin).iter().any(|f| f.contains("read #5")));
        // A read of a group's requests that shows one nobody made.
        let mut ghost = history();
        ghost.push(read(&["c0-u1"], Read::Requests("c0-g0".into())));
        assert!(!failures(&ghost, &fin).is_empty());
    }

    #[test]
    fn a_conflict_must_end_with_exactly_one_side_that_was_not_refused() {
        let hash = |pw: &str| ringshare_tracker::password::hash(pw).unwrap();
        let user = |pw: &str| {
            final_state(&[&Op::CreateUser { user: "x-u1".into(), password_hash: hash(pw) }])
        };
        let conflict = |outcomes: [Outcome; 2]| Conflict {
            kind: ConflictKind::User { user: "x-u1".into(), passwords: ["a".into(), "b".into()] },
            trackers: [0, 1],
            outcomes,
            at: Duration::ZERO,
        };
        let both = conflict([Outcome::Acked, Outcome::Acked]);
        assert!(check_conflict(&user("a"), &both).is_ok());
        assert!(check_conflict(&user("b"), &both).is_ok());
        assert!(check_conflict(&State::default(), &both).is_err(), "neither side won");
        let refused_b =
            conflict([Outcome::Acked, Outcome::Refused("user x-u1 already exists".into())]);
        assert!(check_conflict(&user("a"), &refused_b).is_ok());
        assert!(check_conflict(&user("b"), &refused_b).is_err(), "a refused side won");
        let none = conflict([Outcome::NotSent("down".into()), Outcome::Refused("busy".into())]);
        assert!(check_conflict(&State::default(), &none).is_ok());
        assert!(check_conflict(&user("a"), &none).is_err());
    }
}
