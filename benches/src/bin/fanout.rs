//! One download from many peers: a piece server in a child process,
//! reached through N loopback addresses (127.0.0.1, .2, …), so that the
//! downloader — this process, nothing else in it — holds N peer
//! connections. Reports its throughput, CPU, peak RSS and most threads as
//! JSON on stdout.
//!
//!   ringshare-fanout --file BIG --peers 200 --io uring

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use ringshare_engine::fetch::{Download, FetchEvent, FetchSpec, PeerList};
use ringshare_engine::hash::HashPool;
use ringshare_engine::serve::{Backend, PieceServer, ServeTable, ServedFile, ServerLimits};
use ringshare_engine::store::PartFile;

#[derive(Parser)]
struct Args {
    /// The file to move.
    #[arg(long)]
    file: PathBuf,
    /// Peers (loopback addresses) the download connects to.
    #[arg(long, default_value_t = 200)]
    peers: u16,
    /// The download's driver: uring or threads.
    #[arg(long, default_value = "uring")]
    io: Backend,
    /// Scratch directory for the copy.
    #[arg(long)]
    tmp: Option<PathBuf>,
    /// Internal: be the piece server for FILE.
    #[arg(long, hide = true)]
    serve: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.serve {
        return serve(&args);
    }
    let meta = HashPool::with_available_cores().hash_file(&args.file, "fanout.bin")?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve", "--file"])
        .arg(&args.file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("start the piece server")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("server stdout")?).read_line(&mut line)?;
    let port: u16 = line.trim().parse().context("the server's port")?;
    let tmp = tempfile::tempdir_in(args.tmp.clone().unwrap_or_else(std::env::temp_dir))?;
    let (part, have) = PartFile::open(&tmp.path().join("copy.bin"), &meta)?;
    let served = ServedFile::partial(meta.clone(), part.file().try_clone()?, have.clone());
    let peers: Vec<SocketAddr> = (0..args.peers)
        .map(|i| SocketAddr::from(([127, 0, (1 + i / 250) as u8, (1 + i % 250) as u8], port)))
        .collect();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let mut spec = FetchSpec::new(meta.clone(), "u".into(), vec![], None);
    spec.io = args.io;
    spec.max_peers = usize::from(args.peers);
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let d = Download::start(
        spec,
        part,
        have,
        served,
        Arc::new(HashPool::new(2 * std::thread::available_parallelism().map_or(2, |n| n.get()))),
        Box::new(move || {
            Ok::<_, String>(PeerList {
                addrs: peers.clone(),
                ticket: None,
                keys: Default::default(),
                left_out: 0,
                own: 0,
            })
        }),
        Box::new(move |e| {
            let _ = tx.lock().map(|t| t.send(e));
        }),
    );
    let (mut most_peers, mut most_threads) = (0, 0);
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(FetchEvent::Complete(_)) => break,
            Ok(FetchEvent::Failed(e)) => bail!("download failed: {e}"),
            _ => {}
        }
        most_peers = most_peers.max(d.progress().peers);
        most_threads = most_threads.max(std::fs::read_dir("/proc/self/task")?.count());
    }
    let secs = t0.elapsed().as_secs_f64();
    d.wait();
    let cpu = cpu_seconds() - cpu0;
    drop(child.stdin.take());
    let _ = child.wait();
    let gb = meta.len as f64 / 1e9;
    let out = serde_json::json!({
        "tool": "ringshare-fanout",
        "io": d.driver().name(),
        "peers_listed": args.peers,
        "most_peers_at_once": most_peers,
        "peers_contributed": d.contributions().len(),
        "bytes": meta.len,
        "seconds": secs,
        "mbps": meta.len as f64 / secs / 1e6,
        "downloader_cpu_s_per_gb": cpu / gb,
        "downloader_peak_rss_kib": peak_rss_kib(),
        "most_threads": most_threads,
    });
    println!("{out}");
    Ok(())
}

fn serve(args: &Args) -> Result<()> {
    let meta = HashPool::with_available_cores().hash_file(&args.file, "fanout.bin")?;
    let table = ServeTable::new(Box::new(|_, _, _, _| true));
    table.insert(ServedFile::complete(meta, File::open(&args.file)?));
    let listener = TcpListener::bind("0.0.0.0:0")?;
    let port = listener.local_addr()?.port();
    // Every connection comes from 127.0.0.1.
    let limits = ServerLimits {
        max_per_ip: 4096,
        max_connections: 4096,
        max_downloaders: 4096,
        ..Default::default()
    };
    let (backend, _) = Backend::choose(None);
    let _server = PieceServer::start(listener, table, limits, backend)?;
    println!("{port}");
    // Serve until the parent closes stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
