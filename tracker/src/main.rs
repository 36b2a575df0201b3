//! `ringshare-tracker <tracker_info.txt> <tracker_no>`: the tracker daemon.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use ringshare_engine::proto::{Request, Response};
use ringshare_engine::tracker_info::TrackerList;
use ringshare_tracker::guard::LimitsConfig;
use ringshare_tracker::links::Links;
use ringshare_tracker::service::{
    default_hash_workers, Tracker, TrackerConfig, DEFAULT_MAX_SHARE_BYTES,
    DEFAULT_MAX_SHARE_BYTES_PER_USER,
};
use ringshare_tracker::{server, sync};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

/// The ringshare tracker daemon.
///
/// Listens on line <TRACKER_NO> of <TRACKER_INFO>, keeps every change in an
/// op log under --data-dir (fsync'ed before the client is answered), keeps
/// in sync with every other tracker of the file, and serves clients until
/// `quit` on standard input, SIGINT or SIGTERM (each writes a snapshot).
/// Prints `ringshare-tracker N listening on ADDR` once it accepts connections,
/// then `ringshare-tracker N key KEY`: the public key it proves to clients
/// and trackers (put it after the address in tracker_info.txt to have
/// clients check it from the first connection on).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// File listing every tracker: `IP:PORT`, `IP PORT`, or IP and port on
    /// alternate lines; `#` comments and blank lines are ignored.
    #[arg(required_unless_present = "print_key")]
    tracker_info: Option<PathBuf>,
    /// Which line of the file is this tracker (1-based).
    #[arg(required_unless_present = "print_key")]
    tracker_no: Option<usize>,
    /// Print this tracker's public key (creating its key file in the data
    /// directory if there is none) and exit.
    #[arg(long)]
    print_key: bool,
    /// Ask the running tracker TRACKER_NO of TRACKER_INFO for the digest of
    /// its replicated state, print `DIGEST ops=N` (the digest in hex) and exit: trackers that
    /// hold the same ops print the same line. Over the encrypted link (the
    /// key its line gives is checked); served to this host and the listed
    /// trackers only.
    #[arg(long, conflicts_with_all = ["dump_state", "print_key"])]
    digest: bool,
    /// Like --digest, and write the state itself (postcard) to PATH; prints
    /// `DIGEST ops=N known=ORIGIN:COUNT,...`. For checkers (the nemesis).
    /// The state holds password hashes, session tokens and the ticket key,
    /// so it is served only to a link proving a tracker's key: the one in
    /// --data-dir (default ./tracker-<NO>.data).
    #[arg(long, value_name = "PATH", conflicts_with = "print_key")]
    dump_state: Option<PathBuf>,
    /// Tests only: read a signed number of milliseconds from PATH now and
    /// every 100 ms and add it to this tracker's wall clock (fault injection
    /// of clock skew; a missing or unreadable file means 0).
    #[arg(long, value_name = "PATH", hide = true)]
    test_clock_offset_file: Option<PathBuf>,
    /// Where the op log and snapshots live [default: ./tracker-<NO>.data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seconds after which a client that stopped sending heartbeats drops
    /// out of peer lists.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    peer_ttl: u64,
    /// Seconds after which a session no tracker has heard from ends, and
    /// its node's shares with it (a node killed without logging out); a
    /// tracker ends none until it has been up this long and heard every
    /// other tracker without a break this long.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    session_expiry: u64,
    /// Write a snapshot (and start a new log) after this many ops.
    #[arg(long, default_value_t = 10_000, value_parser = at_least_one)]
    snapshot_every: usize,
    /// Seconds a download ticket stays valid (downloads refresh theirs).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    ticket_ttl: u64,
    /// Seconds after which a client connection that sends nothing (or
    /// trickles a request) is closed.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    client_idle: u64,
    /// Threads computing argon2id for logins and new accounts (each holds
    /// 19 MiB while it works) [default: one per core].
    #[arg(long, value_parser = at_least_one)]
    hash_workers: Option<usize>,
    /// Password checks that may wait for a hashing thread; beyond that a
    /// login or create_user is refused with "tracker busy, try again".
    #[arg(long, default_value_t = 32)]
    hash_queue: usize,
    /// Failed logins one address (an IPv6 /64) may make back to back.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    login_burst: u32,
    /// After its burst, an address may fail one login per this many seconds.
    #[arg(long, default_value_t = 6.0)]
    login_refill_secs: f64,
    /// Failed logins for one user before its logins back off (1 s, 2 s,
    /// 4 s, …) for addresses it has not logged in from before.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    user_free_failures: u32,
    /// The longest a user's backoff grows, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    user_max_backoff: u64,
    /// Accounts one address (an IPv6 /64) may create per minute.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    signups_per_minute: u32,
    /// Entries from another tracker stamped more than this many seconds
    /// ahead of this tracker's clock are refused (and logged) until the
    /// clocks agree within it.
    #[arg(long, default_value_t = 300)]
    max_clock_skew: u64,
    /// The most one user's shares may hold at this tracker, in MiB of
    /// names and piece hashes (20 bytes per 512 KiB piece, and about 128
    /// bytes a file): a share past it is refused.
    #[arg(long, default_value_t = DEFAULT_MAX_SHARE_BYTES_PER_USER >> 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_share_mib_per_user: u64,
    /// The most every share together may hold at this tracker, in MiB
    /// (each file's metadata once).
    #[arg(long, default_value_t = DEFAULT_MAX_SHARE_BYTES >> 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_share_mib: u64,
}

/// A count that must be at least one (`--snapshot-every`,
/// `--hash-workers`): 0 was taken silently as 1.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("0 is not in 1..".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours for a terminal only, not for a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::try_parse().unwrap_or_else(|e| {
        use clap::error::ErrorKind;
        if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            e.exit();
        }
        // One `error:` line, as every other failure is.
        let help = "ringshare-tracker --help";
        eprintln!("{}", ringshare_engine::usage::one_line(&e.render().to_string(), help));
        std::process::exit(2)
    });
    if let Err(e) = run(args).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    if args.print_key {
        // Given a list and a number, they must name a tracker: a key made
        // for a number the list does not have is one no tracker starts with.
        if let (Some(info), Some(no)) = (&args.tracker_info, args.tracker_no) {
            let list = TrackerList::load(info)?;
            if list.get(no).is_none() {
                bail!(
                    "tracker number {no} is not in {} (it lists {} tracker(s), numbered from 1)",
                    info.display(),
                    list.addrs.len()
                );
            }
        }
        let data_dir = match (&args.data_dir, args.tracker_no) {
            (Some(d), _) => d.clone(),
            (None, Some(no)) => PathBuf::from(format!("tracker-{no}.data")),
            (None, None) => bail!("--print-key needs the tracker's number or --data-dir"),
        };
        println!("{}", ringshare_tracker::links::print_key(&data_dir)?);
        return Ok(());
    }
    let (Some(info), Some(tracker_no)) = (args.tracker_info.clone(), args.tracker_no) else {
        bail!("usage: ringshare-tracker TRACKER_INFO TRACKER_NO");
    };
    let list = TrackerList::load(&info)?;
    if args.digest {
        return print_digest(&list, tracker_no).await;
    }
    if let Some(path) = &args.dump_state {
        // The state is served only to a link proving a tracker's key: the
        // one in the data directory of the tracker asked (or of another
        // tracker of the list).
        let dir = args
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("tracker-{tracker_no}.data")));
        let key_file = dir.join(ringshare_tracker::links::KEY_FILE);
        if !key_file.exists() {
            bail!(
                "--dump-state proves a tracker's key, and {} does not exist: run it where the \
                 tracker's data directory is, or give --data-dir",
                key_file.display()
            );
        }
        let me = ringshare_engine::secure_io::load_or_create_key(&key_file)
            .with_context(|| format!("read {}", key_file.display()))?;
        return dump_state(&list, tracker_no, path, me).await;
    }
    if let Some(path) = args.test_clock_offset_file.clone() {
        follow_clock_offset(path);
    }
    let Some(addr) = list.get(tracker_no) else {
        bail!(
            "tracker number {} is not in {} (it lists {} tracker(s), numbered from 1)",
            tracker_no,
            info.display(),
            list.addrs.len()
        );
    };
    list.check_ports(Some(tracker_no))?;
    // Bound before the data directory is opened: a port in use fails the
    // start before anything (a new key, a first log) is written there.
    let bound = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .with_context(|| format!("bind tracker to {addr}"))?;
    let me = u16::try_from(tracker_no).context("tracker number too large")?;
    let peers: Vec<(u16, std::net::SocketAddr)> = (1..=list.addrs.len())
        .filter(|n| *n != tracker_no)
        .filter_map(|n| Some((u16::try_from(n).ok()?, list.get(n)?)))
        .collect();
    let data_dir =
        args.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("tracker-{me}.data")));
    let config = TrackerConfig {
        me,
        peer_addrs: peers.clone(),
        peer_ttl: std::time::Duration::from_secs(args.peer_ttl.max(1)),
        session_expiry: std::time::Duration::from_secs(args.session_expiry.max(1)),
        snapshot_every: args.snapshot_every.max(1),
        ticket_ttl: std::time::Duration::from_secs(args.ticket_ttl.max(1)),
        client_idle: std::time::Duration::from_secs(args.client_idle.max(1)),
        hash_workers: args.hash_workers.unwrap_or_else(default_hash_workers).max(1),
        hash_queue: args.hash_queue,
        limits: LimitsConfig {
            login_burst: args.login_burst.max(1),
            login_refill: std::time::Duration::try_from_secs_f64(args.login_refill_secs)
                .ok()
                .filter(|d| !d.is_zero())
                .context("--login-refill-secs must be a positive number of seconds")?,
            user_free_failures: args.user_free_failures.max(1),
            user_max_backoff: std::time::Duration::from_secs(args.user_max_backoff.max(1)),
            signups_per_minute: args.signups_per_minute.max(1),
        },
        max_clock_skew: std::time::Duration::from_secs(args.max_clock_skew),
        own_addr: Some(addr),
        has_run_before: ringshare_tracker::links::has_run_before(&data_dir),
        max_share_bytes_per_user: args.max_share_mib_per_user.saturating_mul(1 << 20),
        max_share_bytes: args.max_share_mib.saturating_mul(1 << 20),
    };
    let (tracker, rec) = Tracker::open(config, &data_dir)
        .with_context(|| format!("open the data directory {}", data_dir.display()))?;
    // Every op held, its snapshot's and its logs' (after a clean stop the
    // logs hold none: "recovered 0 op(s)" read as data lost).
    let held: u64 = tracker.known().values().sum();
    if rec.torn_bytes > 0 {
        // A crash mid-append tears the end of the log; so does damage there,
        // which cannot be told apart: either way it was never acknowledged
        // if it was a crash, and is worth a look if not.
        tracing::warn!(
            "recovered {held} op(s) from {} ({} replayed from its logs); dropped a torn tail \
             of {} bytes at the end of its newest log (a crash while writing, or damage there)",
            data_dir.display(),
            rec.replayed,
            rec.torn_bytes
        );
    } else {
        tracing::info!(
            "recovered {held} op(s) from {} ({} replayed from its logs)",
            data_dir.display(),
            rec.replayed
        );
    }
    let links = Arc::new(Links::open(&data_dir, list.clone())?);
    // Its own line's key is what every client and tracker will check: one
    // that is not this tracker's would have all of them refuse it.
    if let Some(listed) = list.key(tracker_no) {
        let own = links.keypair().public();
        if listed != own {
            bail!(
                "{} lists key {listed} for tracker {tracker_no}, but its key (in {}) is {own}: \
                 every client would refuse it; put its key on its line, or restore its key file",
                info.display(),
                data_dir.display()
            );
        }
    }
    // A directory that met tracker `me` as another key is not `me`'s (one
    // moved from another tracker number, from a version that did not
    // record its number).
    if let Some(pinned) = links.pinned(me) {
        let own = links.keypair().public();
        if pinned != own {
            bail!(
                "{} knows tracker {tracker_no} by key {pinned}, yet holds key {own}: it is \
                 another tracker's data directory",
                data_dir.display()
            );
        }
    }
    ringshare_tracker::links::key_used(&data_dir);
    let tracker = Arc::new(tracker);
    // Signal handlers go in before the readiness line: a SIGTERM right after
    // it must stop the tracker cleanly, not kill it.
    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let listener = TcpListener::from_std(bound).context("listen for clients")?;
    let local = listener.local_addr().context("read the bound address")?;
    // Changes wait (briefly) until each peer is reached once: a data
    // directory put back from an older copy takes its own later ops back
    // before numbering new ones.
    tracker.await_first_contact(
        peers.iter().map(|(n, _)| *n).collect(),
        ringshare_tracker::service::FIRST_CONTACT,
    );
    for (n, peer_addr) in peers {
        tokio::spawn(sync::pull_forever(Arc::clone(&tracker), Arc::clone(&links), n, peer_addr));
    }
    tokio::spawn(Arc::clone(&tracker).expire_forever());
    println!("ringshare-tracker {tracker_no} listening on {local}");
    println!("ringshare-tracker {tracker_no} key {}", links.keypair().public());

    tokio::select! {
        r = server::serve(listener, Arc::clone(&tracker), links) => r.context("serve clients")?,
        _ = sigint.recv() => tracing::info!("SIGINT: stopping"),
        _ = sigterm.recv() => tracing::info!("SIGTERM: stopping"),
        _ = quit_on_stdin() => tracing::info!("quit: stopping"),
        why = tracker.failed() => {
            // Fail-stop: no snapshot (the replica holds an op not on disk).
            bail!("op log failed ({why}); the tracker stopped so that nothing it did not make durable is acknowledged");
        }
    }
    // Changes stop (a client is sent to another tracker), the snapshot is
    // written and the log closed; the requests whose ops it holds get
    // their answers before the process exits.
    let written = tracker.shutdown();
    tracker.drain(std::time::Duration::from_secs(2)).await;
    written.context(
        "write the snapshot at exit (nothing is lost: the op logs hold every change, and are \
         replayed at the next start)",
    )?;
    Ok(())
}

/// One admin request to tracker `no` of `list` over the encrypted link (the
/// key its line gives is checked).
async fn ask_admin(
    list: &TrackerList,
    no: usize,
    req: Request,
    me: Option<ringshare_engine::secure::Keypair>,
) -> Result<Response> {
    use ringshare_engine::control::{read_msg, write_msg};
    use ringshare_engine::proto::{REQUEST, RESPONSE};
    use ringshare_engine::secure::{Keypair, CONTROL_PROLOGUE};
    use ringshare_engine::secure_io::SecureStream;
    let addr = list.get(no).with_context(|| format!("no tracker number {no} in the list"))?;
    let ask = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let me = me.unwrap_or_else(Keypair::generate);
        let mut s = SecureStream::connect(tcp, &me, CONTROL_PROLOGUE, list.key(no)).await?;
        write_msg(&mut s, REQUEST, &req).await?;
        anyhow::Ok(read_msg::<Response, _>(&mut s, RESPONSE).await?)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), ask)
        .await
        .with_context(|| format!("tracker {no} at {addr}: no answer in 10 s"))?
        .with_context(|| format!("tracker {no} at {addr}"))?;
    match answer {
        Some(Response::Refused(r)) => bail!("tracker {no} at {addr}: {r}"),
        Some(r) => Ok(r),
        None => bail!("tracker {no} at {addr}: closed the connection"),
    }
}

/// `--digest`: asks tracker `no` of `list` for its state digest.
async fn print_digest(list: &TrackerList, no: usize) -> Result<()> {
    match ask_admin(list, no, Request::StateDigest, None).await? {
        Response::StateDigest { digest, ops } => {
            println!("{} ops={ops}", hex::encode(digest));
            Ok(())
        }
        other => bail!("tracker {no}: unexpected answer {other:?}"),
    }
}

/// `--dump-state PATH`: asks tracker `no` of `list` for its state and writes
/// it to `path`.
async fn dump_state(
    list: &TrackerList,
    no: usize,
    path: &std::path::Path,
    me: ringshare_engine::secure::Keypair,
) -> Result<()> {
    match ask_admin(list, no, Request::StateImage, Some(me)).await? {
        Response::StateImage { digest, known, state } => {
            // The state holds password hashes, sessions and the ticket key:
            // written for its owner's eyes only.
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(path)?;
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                f.write_all(&state)
            };
            write().with_context(|| format!("write {}", path.display()))?;
            let ops: u64 = known.iter().map(|(_, n)| n).sum();
            let known: Vec<String> = known.iter().map(|(o, n)| format!("{o}:{n}")).collect();
            println!("{} ops={ops} known={}", hex::encode(digest), known.join(","));
            Ok(())
        }
        other => bail!("tracker {no}: unexpected answer {other:?}"),
    }
}

/// `--test-clock-offset-file`: keeps this process's clock offset equal to the
/// number in `path` (read every 100 ms), so a test can jump the clock.
fn follow_clock_offset(path: PathBuf) {
    let read = move || {
        std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<i64>().ok()).unwrap_or(0)
    };
    ringshare_tracker::service::set_clock_offset_ms(read());
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        ringshare_tracker::service::set_clock_offset_ms(read());
    });
}

/// Resolves when a `quit` (or `exit`) line arrives on standard input. End of
/// input does not stop the tracker: it may run with stdin closed. Read on a
/// thread of its own, not the runtime's blocking pool: the runtime waits for
/// that pool's reads when it shuts down, so an idle open stdin (a pipe a
/// supervisor holds) kept a tracker told to stop running until it closed.
async fn quit_on_stdin() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let reader = std::thread::Builder::new().name("stdin".into()).spawn(move || {
        use std::io::BufRead;
        let mut line = Vec::new();
        let mut stdin = std::io::stdin().lock();
        loop {
            line.clear();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            match String::from_utf8_lossy(&line).trim() {
                "quit" | "exit" => {
                    let _ = tx.send(());
                    return;
                }
                "" => {}
                other => {
                    let other: String = other.chars().take(60).collect();
                    eprintln!("error: unknown command {other:?} (the tracker understands: quit)");
                }
            }
        }
    });
    if reader.is_ok() && rx.await.is_ok() {
        return;
    }
    std::future::pending::<()>().await
}
