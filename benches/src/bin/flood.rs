//! `ringshare-flood`: one hostile flood against a real tracker or node,
//! with a legitimate client measured beside it.
//!
//! It starts its own tracker (and, for the node floods, a seeding node via
//! `ringshare share`) on loopback, sets up the accounts it needs, then for
//! `--seconds` runs `--clients` hostile tasks of one `--kind` from
//! 127.0.0.1 while a legitimate client on 127.0.0.2 sends one request every
//! 20 ms and records its latency. The target's resident memory is sampled
//! every 10 ms, its CPU time read before and after. Prints one line and,
//! with `--json`, the same figures as JSON.
//!
//! Kinds (tracker): `login` (wrong passwords for an existing user),
//! `signup` (create_user with fresh names), `conns` (connections held idle),
//! `half-open` (4 bytes of a frame header, then silence), `oversized`
//! (a header announcing the largest frame, then one byte a second), `slow`
//! (a small request sent one byte a second), `list-files` (ListFiles of a
//! group with `--files` files, as fast as answered), `sync` (sync-port
//! hellos from a process that is not a tracker), `metadata` (one account
//! registering files of 100,000 pieces each, six to a request: 12 MB of
//! piece hashes a request, as fast as answered). The legitimate client
//! sends ListGroups.
//!
//! Kinds (node piece port): `node-conns`, `node-half-open`, `bad-tickets`
//! (handshakes with forged tickets, reconnecting), `all-pieces` (a valid
//! ticket, every piece requested at once, nothing read). The legitimate
//! client fetches one 512 KiB piece with its own valid ticket.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader as StdBufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use ringshare_engine::control::{read_frame, read_msg, write_msg};
use ringshare_engine::meta::{FileMeta, Sha1Digest, PIECE_LEN};
use ringshare_engine::peer::{self, Message};
use ringshare_engine::proto::{Request, Response, Token, MAX_FRAME, REQUEST, RESPONSE};
use ringshare_engine::secure::{Keypair, CONTROL_PROLOGUE, PEER_PROLOGUE};
use ringshare_engine::secure_io::SecureStream;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    Login,
    Signup,
    Conns,
    HalfOpen,
    Oversized,
    Slow,
    ListFiles,
    Sync,
    NodeConns,
    NodeHalfOpen,
    BadTickets,
    AllPieces,
    Metadata,
}

impl Kind {
    fn at_node(self) -> bool {
        matches!(self, Kind::NodeConns | Kind::NodeHalfOpen | Kind::BadTickets | Kind::AllPieces)
    }
}

/// One flood against a real ringshare tracker or node (see the module docs).
#[derive(Debug, Parser)]
struct Args {
    /// Which flood.
    #[arg(long, value_enum)]
    kind: Kind,
    /// The ringshare-tracker binary.
    #[arg(long)]
    tracker_bin: PathBuf,
    /// The ringshare binary (for the node floods).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Hostile connections or tasks at once.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// How long the flood lasts.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Files in the group of `list-files`.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Size of the shared file for the node floods, MiB.
    #[arg(long, default_value_t = 64)]
    file_mib: u64,
    /// Extra argument for the tracker (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    tracker_arg: Vec<String>,
    /// A label for the binaries measured (e.g. before / after).
    #[arg(long, default_value = "")]
    label: String,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    label: String,
    kind: Kind,
    target: &'static str,
    clients: usize,
    seconds: f64,
    rss_before_kib: u64,
    rss_peak_kib: u64,
    /// Anonymous memory only (RSS less mapped file pages, which the
    /// kernel can drop).
    rss_anon_peak_kib: u64,
    /// Wall time from the flood's start to its stop.
    elapsed_seconds: f64,
    cpu_seconds: f64,
    hostile_ops: u64,
    legit_ok: u64,
    legit_failed: u64,
    legit_p50_ms: f64,
    legit_p99_ms: f64,
    legit_max_ms: f64,
    target_alive: bool,
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn connect_from(to: SocketAddr, from: &str) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from.parse::<IpAddr>().expect("an address"), 0))?;
    s.connect(to).await
}

/// This tool's one node key: the tickets its tracker links get are bound to
/// it, so its peer links can present them.
fn me() -> &'static Keypair {
    static ME: std::sync::OnceLock<Keypair> = std::sync::OnceLock::new();
    ME.get_or_init(Keypair::generate)
}

/// An encrypted connection to a tracker from `from`.
async fn connect_tracker(to: SocketAddr, from: &str) -> std::io::Result<Link> {
    let tcp = connect_from(to, from).await?;
    SecureStream::connect(tcp, me(), CONTROL_PROLOGUE, None).await.map_err(std::io::Error::other)
}

/// An encrypted connection to a tracker or a node.
type Link = SecureStream<TcpStream>;

async fn call(s: &mut Link, req: &Request) -> Result<Response> {
    write_msg(s, REQUEST, req).await?;
    read_msg(s, RESPONSE).await?.context("tracker closed the connection")
}

async fn login(s: &mut Link, user: &str, peer_addr: &str) -> Result<Token> {
    let _ = call(s, &Request::CreateUser { user: user.into(), password: "pw".into() }).await?;
    let req =
        Request::Login { user: user.into(), password: "pw".into(), peer_addr: peer_addr.into() };
    match call(s, &req).await? {
        Response::LoggedIn { token, .. } => Ok(token),
        other => bail!("login {user}: {other:?}"),
    }
}

async fn done(s: &mut Link, req: Request) -> Result<()> {
    match call(s, &req).await? {
        Response::Done => Ok(()),
        other => bail!("{req:?}: {other:?}"),
    }
}

fn start_tracker(bin: &Path, dir: &Path, extra: &[String]) -> Result<(Proc, SocketAddr)> {
    let boot = dir.join("boot.txt");
    std::fs::write(&boot, "127.0.0.1:0\n")?;
    let mut child = Command::new(bin)
        .arg(&boot)
        .arg("1")
        .arg("--data-dir")
        .arg(dir.join("tracker-data"))
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("tracker.log"))?)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let mut line = String::new();
    StdBufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let addr = line.trim().rsplit(' ').next().unwrap_or("").parse().context("readiness line")?;
    Ok((Proc(child), addr))
}

/// What the node floods need: the seeder, its file, two valid tickets.
struct NodeSetup {
    node: Proc,
    addr: SocketAddr,
    meta: FileMeta,
    /// (user, ticket) for the legitimate client and for the flood.
    legit: (String, Vec<u8>),
    hostile: (String, Vec<u8>),
}

async fn setup_node(
    args: &Args,
    dir: &Path,
    tracker: SocketAddr,
    alice: &mut Link,
    owner: Token,
) -> Result<NodeSetup> {
    let bin = args.node_bin.as_ref().context("--node-bin is needed for the node floods")?;
    let file = dir.join("shared.bin");
    ringshare_engine::sample::write_pseudo_random(&file, args.file_mib << 20, 7)
        .context("make the shared file")?;
    let info = dir.join("tracker_info.txt");
    std::fs::write(&info, format!("{tracker}\n"))?;
    std::fs::write(dir.join("pw"), "pw\n")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut child = Command::new(bin)
        .args(["share", "--trackers"])
        .arg(&info)
        .args(["--user", "alice", "--password-file"])
        .arg(dir.join("pw"))
        .args(["--listen", &addr.to_string(), "team"])
        .arg(&file)
        .env("RINGSHARE_STATE_DIR", dir.join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("node.log"))?)
        .spawn()?;
    // `share` prints its upload line once it serves.
    let mut line = String::new();
    StdBufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    if !line.contains("uploaded") && !line.contains("sharing") {
        bail!("ringshare share: {line:?} (see {})", dir.join("node.log").display());
    }
    let node = Proc(child);
    let mut tickets = Vec::new();
    for user in ["legit", "hostile"] {
        let mut s = connect_tracker(tracker, "127.0.0.2").await?;
        let token = login(&mut s, user, "127.0.0.2:9").await?;
        done(&mut s, Request::JoinGroup { token, group: "team".into() }).await?;
        done(
            alice,
            Request::AcceptRequest { token: owner, group: "team".into(), user: user.into() },
        )
        .await?;
        let req = Request::FileInfo { token, group: "team".into(), file: "shared.bin".into() };
        match call(&mut s, &req).await? {
            Response::FileInfo { meta, ticket, .. } => {
                tickets.push((user.to_owned(), ticket, meta))
            }
            other => bail!("file info: {other:?}"),
        }
    }
    let (h_user, h_ticket, _) = tickets.pop().context("ticket")?;
    let (l_user, l_ticket, meta) = tickets.pop().context("ticket")?;
    Ok(NodeSetup { node, addr, meta, legit: (l_user, l_ticket), hostile: (h_user, h_ticket) })
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
}

fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name (which may hold spaces), 1-based 14/15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf only reads its argument.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

async fn handshake(
    addr: SocketAddr,
    from: &str,
    meta: &FileMeta,
    user: &str,
    ticket: &[u8],
) -> Result<Link> {
    let tcp = connect_from(addr, from).await?;
    let mut s = SecureStream::connect(tcp, me(), PEER_PROLOGUE, None).await?;
    let mut out = Vec::new();
    peer::encode(&Message::Handshake { version: 1, file_id: meta.sha1, user, ticket }, &mut out);
    s.write_all(&out).await?;
    s.flush().await?;
    let (kind, payload) = read_frame(&mut s).await?.context("closed at handshake")?;
    match peer::decode_payload(kind, &payload) {
        Ok(Message::Bitfield(_)) => Ok(s),
        other => bail!("handshake: {other:?}"),
    }
}

/// One piece through an open peer connection; its latency.
async fn fetch_piece(s: &mut Link, piece: u32, len: u32) -> Result<Duration> {
    let t = Instant::now();
    let mut out = Vec::new();
    peer::encode(&Message::Request { piece, offset: 0, len }, &mut out);
    s.write_all(&out).await?;
    s.flush().await?;
    loop {
        let (kind, payload) = read_frame(s).await?.context("closed")?;
        match peer::decode_payload(kind, &payload) {
            Ok(Message::Piece { .. }) => return Ok(t.elapsed()),
            Ok(Message::Have(_)) => continue,
            other => bail!("piece: {other:?}"),
        }
    }
}

#[derive(Serialize)]
enum SyncHello {
    Hello { from: u16, known: BTreeMap<u16, u64> },
}

const SYNC: u32 = 3;

/// One hostile task until `stop`; counts its operations in `ops`.
async fn hostile(
    kind: Kind,
    i: usize,
    target: SocketAddr,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    node: Option<(Arc<FileMeta>, String, Vec<u8>)>,
    owner: Token,
) -> Result<()> {
    let count = || ops.fetch_add(1, Ordering::Relaxed);
    let until_stop = || async {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    match kind {
        Kind::Login | Kind::Signup | Kind::ListFiles => {
            let mut s = connect_tracker(target, "127.0.0.1").await?;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let req = match kind {
                    Kind::Login => Request::Login {
                        user: "alice".into(),
                        password: format!("guess{n}"),
                        peer_addr: "127.0.0.1:9".into(),
                    },
                    Kind::Signup => {
                        Request::CreateUser { user: format!("f{i}x{n}"), password: "pw".into() }
                    }
                    _ => Request::ListFiles { token: owner, group: "big".into() },
                };
                n += 1;
                // Read the answer as bytes: decoding it would make this tool,
                // not the target, the bottleneck.
                write_msg(&mut s, REQUEST, &req).await?;
                read_frame(&mut s).await?.context("closed")?;
                count();
            }
        }
        Kind::Conns | Kind::NodeConns => {
            let _s = connect_from(target, "127.0.0.1").await?;
            count();
            until_stop().await;
        }
        Kind::HalfOpen | Kind::NodeHalfOpen => {
            let mut s = connect_from(target, "127.0.0.1").await?;
            s.write_all(&[0, 0, 0]).await?;
            count();
            until_stop().await;
        }
        Kind::Oversized | Kind::Slow => {
            // Inside the encrypted link: the frame layer is what is flooded.
            let mut s = connect_tracker(target, "127.0.0.1").await?;
            let len = if kind == Kind::Oversized { MAX_FRAME } else { 100 };
            let mut head = Vec::new();
            head.extend(len.to_be_bytes());
            head.extend(REQUEST.to_be_bytes());
            s.write_all(&head).await?;
            s.flush().await?;
            count();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let sent = async {
                    s.write_all(&[0]).await?;
                    s.flush().await
                };
                if sent.await.is_err() {
                    // Cut off: come back, as an attacker would.
                    s = connect_tracker(target, "127.0.0.1").await?;
                    s.write_all(&head).await?;
                    s.flush().await?;
                }
                count();
            }
        }
        Kind::Sync => {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = connect_tracker(target, "127.0.0.1").await else { continue };
                let hello = SyncHello::Hello { from: 2, known: BTreeMap::new() };
                let _ = write_msg(&mut s, SYNC, &hello).await;
                // Read whatever comes (a catch-up, or a refusal) for a while.
                let mut buf = vec![0u8; 64 * 1024];
                let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
                count();
            }
        }
        Kind::BadTickets => {
            let (meta, _, _) = node.context("node setup")?;
            while !stop.load(Ordering::Relaxed) {
                let r = handshake(target, "127.0.0.1", &meta, "eve", &[7u8; 120]).await;
                if r.is_ok() {
                    bail!("a forged ticket was admitted");
                }
                count();
            }
        }
        Kind::Metadata => {
            // One account registering files of 100,000 pieces (2 MB of
            // piece hashes each), six to a request, as fast as answered.
            let mut s = connect_tracker(target, "127.0.0.1").await?;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let files = (0..6)
                    .map(|k| {
                        let id = ((i as u64) << 40) | (n << 3) | k;
                        FileMeta {
                            name: format!("m{id:x}"),
                            len: 100_000 * PIECE_LEN,
                            sha1: ringshare_engine::hash::sha1_of(&id.to_be_bytes()),
                            piece_hashes: vec![Sha1Digest([7; 20]); 100_000],
                        }
                    })
                    .collect();
                n += 1;
                let req = Request::UploadFiles { token: owner, group: "team".into(), files };
                write_msg(&mut s, REQUEST, &req).await?;
                read_frame(&mut s).await?.context("closed")?;
                count();
            }
        }
        Kind::AllPieces => {
            let (meta, user, ticket) = node.context("node setup")?;
            let mut s = handshake(target, "127.0.0.1", &meta, &user, &ticket).await?;
            let mut out = Vec::new();
            let g = meta.geometry();
            for p in g.pieces() {
                let len = g.len_of(p) as u32;
                peer::encode(&Message::Request { piece: p.get(), offset: 0, len }, &mut out);
            }
            // The node may close on us; what matters is what it holds meanwhile.
            let _ = s.write_all(&out).await;
            let _ = s.flush().await;
            count();
            until_stop().await;
        }
    }
    Ok(())
}

async fn run(args: Args) -> Result<()> {
    let keep = std::env::var_os("FLOOD_KEEP").is_some();
    let dir = tempfile::Builder::new().prefix("flood.").disable_cleanup(keep).tempdir()?;
    if keep {
        eprintln!("flood: keeping {}", dir.path().display());
    }
    let mut extra = args.tracker_arg.clone();
    let has_limits = Command::new(&args.tracker_bin)
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--signups-per-minute"));
    if has_limits && (args.kind == Kind::ListFiles || args.kind.at_node()) {
        // Setup makes a few accounts from loopback (trackers before the
        // attempt limits have no such option and need none).
        extra.push("--signups-per-minute=100000".into());
    }
    let (tracker, taddr) = start_tracker(&args.tracker_bin, dir.path(), &extra)?;
    let mut alice = connect_tracker(taddr, "127.0.0.3").await?;
    let owner = login(&mut alice, "alice", "127.0.0.3:9").await?;
    done(&mut alice, Request::CreateGroup { token: owner, group: "team".into() }).await?;
    if args.kind == Kind::ListFiles {
        done(&mut alice, Request::CreateGroup { token: owner, group: "big".into() }).await?;
        for n in 0..args.files {
            let digest = Sha1Digest([(n % 251) as u8; 20]);
            let meta = FileMeta {
                name: format!("file-{n:06}.bin"),
                len: 1,
                sha1: ringshare_engine::hash::sha1_of(&(n as u64).to_be_bytes()),
                piece_hashes: vec![digest],
            };
            done(&mut alice, Request::UploadFile { token: owner, group: "big".into(), meta })
                .await?;
        }
    }
    let node = if args.kind.at_node() {
        Some(setup_node(&args, dir.path(), taddr, &mut alice, owner).await?)
    } else {
        None
    };
    let (pid, target, what) = match &node {
        Some(n) => (n.node.0.id(), n.addr, "node"),
        None => (tracker.0.id(), taddr, "tracker"),
    };

    // The legitimate client runs on a thread and runtime of its own, so
    // the hostile tasks delay it only through the target. It connects (and
    // logs in) before the flood starts, then waits for the go.
    let legit_target = LegitTarget {
        tracker: taddr,
        node: node.as_ref().map(|n| (n.addr, n.meta.clone(), n.legit.clone())),
    };
    let window = Duration::from_secs_f64(args.seconds);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let legit = std::thread::spawn(move || -> Result<_> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let conn = rt.block_on(legit_connect(&legit_target))?;
        let _ = ready_tx.send(());
        let _ = go_rx.recv();
        rt.block_on(legit_loop(legit_target, conn, window))
    });
    if ready_rx.recv().is_err() {
        let e = legit.join().map_err(|_| anyhow::anyhow!("the legitimate client panicked"))?;
        return e.map(|_| ()).context("the legitimate client could not start");
    }

    let rss_before = status_kib(pid, "VmRSS:").unwrap_or(0);
    let cpu_before = cpu_seconds(pid);
    let flood_start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let sampler = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut peak, mut anon) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                peak = status_kib(pid, "VmRSS:").unwrap_or(0).max(peak);
                anon = status_kib(pid, "RssAnon:").unwrap_or(0).max(anon);
                std::thread::sleep(Duration::from_millis(10));
            }
            (peak, anon)
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    let node_hostile =
        node.as_ref().map(|n| (Arc::new(n.meta.clone()), n.hostile.0.clone(), n.hostile.1.clone()));
    for i in 0..args.clients {
        let (stop, ops, nh) = (Arc::clone(&stop), Arc::clone(&ops), node_hostile.clone());
        tasks.spawn(hostile(args.kind, i, target, stop, ops, nh, owner));
    }
    let _ = go_tx.send(());
    let (hist, ok, failed) =
        legit.join().map_err(|_| anyhow::anyhow!("the legitimate client panicked"))??;
    stop.store(true, Ordering::Relaxed);
    let elapsed = flood_start.elapsed().as_secs_f64();
    let (peak, anon_peak) = sampler.join().unwrap_or((0, 0));
    let cpu = cpu_seconds(pid) - cpu_before;
    tasks.abort_all();
    let mut hostile_errors = BTreeMap::<String, usize>::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            *hostile_errors.entry(format!("{e:#}")).or_default() += 1;
        }
    }
    for (e, n) in &hostile_errors {
        eprintln!("hostile task ended ({n}x): {e}");
    }
    let alive = std::fs::metadata(format!("/proc/{pid}")).is_ok()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let report = Report {
        label: args.label.clone(),
        kind: args.kind,
        target: what,
        clients: args.clients,
        seconds: args.seconds,
        rss_before_kib: rss_before,
        rss_peak_kib: peak,
        rss_anon_peak_kib: anon_peak,
        elapsed_seconds: elapsed,
        cpu_seconds: cpu,
        hostile_ops: ops.load(Ordering::Relaxed),
        legit_ok: ok,
        legit_failed: failed,
        legit_p50_ms: if ok > 0 { ms(0.5) } else { f64::NAN },
        legit_p99_ms: if ok > 0 { ms(0.99) } else { f64::NAN },
        legit_max_ms: hist.max() as f64 / 1000.0,
        target_alive: alive,
    };
    println!(
        "{:<10} {:<13} {:<7} clients {:>4}  RSS {:>7.1} -> peak {:>7.1} MiB (anon {:>6.1})  CPU {:>5.2} s in {:>4.1} s  \
         hostile ops {:>7}  legit {} ok / {} failed, p50 {:.2} ms, p99 {:.2} ms  {}",
        report.label,
        format!("{:?}", report.kind),
        what,
        report.clients,
        rss_before as f64 / 1024.0,
        peak as f64 / 1024.0,
        anon_peak as f64 / 1024.0,
        cpu,
        elapsed,
        report.hostile_ops,
        ok,
        failed,
        report.legit_p50_ms,
        report.legit_p99_ms,
        if alive { "alive" } else { "DIED" }
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    drop(node);
    drop(tracker);
    if !alive {
        bail!("the {what} died during the flood");
    }
    Ok(())
}

/// Where the legitimate client goes.
struct LegitTarget {
    tracker: SocketAddr,
    /// The node's address, its file, and (user, ticket).
    node: Option<(SocketAddr, FileMeta, (String, Vec<u8>))>,
}

async fn legit_connect(t: &LegitTarget) -> Result<Legit> {
    Ok(match &t.node {
        Some((addr, meta, (user, ticket))) => {
            Legit::Node(handshake(*addr, "127.0.0.2", meta, user, ticket).await?)
        }
        None => {
            let mut s = connect_tracker(t.tracker, "127.0.0.2").await?;
            let token = login(&mut s, "legit", "127.0.0.2:9").await?;
            Legit::Tracker(s, token)
        }
    })
}

/// One request every 20 ms for `window`: its latencies (µs), successes, failures.
async fn legit_loop(
    t: LegitTarget,
    conn: Legit,
    window: Duration,
) -> Result<(Histogram<u64>, u64, u64)> {
    let piece_len = t.node.as_ref().map_or(PIECE_LEN as u32, |(_, meta, _)| {
        let g = meta.geometry();
        g.pieces().next().map_or(0, |p| g.len_of(p) as u32)
    });
    // Under some floods even reconnecting (and logging in) fails: that
    // counts as a failed request, and the client keeps trying.
    let mut conn = Some(conn);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let (mut ok, mut failed) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < window {
        let t0 = Instant::now();
        if conn.is_none() {
            match legit_connect(&t).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    failed += 1;
                    eprintln!("legitimate client cannot connect: {e:#}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let r = match conn.as_mut().expect("connected above") {
            Legit::Tracker(s, token) => {
                call(s, &Request::ListGroups { token: *token }).await.map(|_| t0.elapsed())
            }
            Legit::Node(s) => fetch_piece(s, 0, piece_len).await,
        };
        match r {
            Ok(d) => {
                ok += 1;
                hist.saturating_record(d.as_micros() as u64);
            }
            Err(e) => {
                failed += 1;
                eprintln!("legitimate request failed: {e:#}");
                conn = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((hist, ok, failed))
}

enum Legit {
    Tracker(Link, Token),
    Node(Link),
}
