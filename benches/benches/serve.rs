//! Piece server send methods, side by side in one run: one in-process server
//! serves a random file (1 GiB by default, page cache warm) over loopback to
//! one in-process client, for each io_uring send method and for the threads
//! backend.
//!
//! Two clients:
//! - `download`: the real [`Download`] (hashes every piece on one hash
//!   thread and writes it into a `.part` file on /dev/shm, so no disk is
//!   timed);
//! - `raw`: a bare client that keeps 8 whole-piece requests in flight and
//!   throws the data away: the server's send path with little else.
//!
//! Links are plaintext on both ends (`PeerSecurity::plaintext`): this bench
//! compares the zero-copy send paths, which only a plaintext link uses; the
//! cost of encryption is measured by `ringshare demo` with and without
//! `--plaintext` (docs/PERFORMANCE.md).
//!
//! Server and client share the machine's cores. Variants are interleaved,
//! round by round, so drift hits them all alike. Prints MB/s (1e6 bytes/s),
//! the process's CPU seconds per GB sent, and ratios to the threads backend.
//!
//! `cargo bench -p ringshare-benches --bench serve`; environment:
//! `SERVE_BENCH_MIB` (file size, default 1024), `SERVE_BENCH_ROUNDS`
//! (default 3), `SERVE_BENCH_DIR` (source file directory, default /tmp),
//! `SERVE_BENCH_CLIENTS` (`raw,download` by default),
//! `SERVE_BENCH_QUIET_SECS` (how long each run may wait for an idle
//! machine, default 20).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use ringshare_engine::fetch::{Download, FetchEvent, FetchSpec, PeerList};
use ringshare_engine::hash::HashPool;
use ringshare_engine::link::PeerSecurity;
use ringshare_engine::meta::FileMeta;
use ringshare_engine::peer::{self, Message, PIECE_HEADER_LEN};
use ringshare_engine::serve::{
    Backend, PieceServer, SendMethod, ServeTable, ServedFile, ServerLimits,
};
use ringshare_engine::store::PartFile;
use ringshare_engine::wire::{self, HEADER_LEN};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    Uring(SendMethod),
    Threads,
}

impl Variant {
    fn name(self) -> String {
        match self {
            Variant::Uring(m) => format!("uring/{}", m.name()),
            Variant::Threads => "threads/sendfile".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Client {
    Download,
    Raw,
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Writes `len` pseudo-random bytes to `path` unless a file of that size is there.
fn make_source(path: &Path, len: u64) -> std::io::Result<()> {
    if fs::metadata(path).map(|m| m.len() == len).unwrap_or(false) {
        return Ok(());
    }
    ringshare_engine::sample::write_pseudo_random(path, len, 1)
}

/// Reads the file once so its pages are in the page cache.
fn warm(path: &Path) -> std::io::Result<()> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed rusage we pass; no other memory.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Busy and total jiffies of the whole machine.
fn cpu_jiffies() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Waits (at most `limit`) until the machine is idle: under 5% of its CPU
/// busy over 300 ms. The cores are shared with other work; a run started in
/// a quiet moment measures this code, not the neighbour. Returns whether a
/// quiet moment came.
fn wait_quiet(limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        let (b0, t0) = cpu_jiffies();
        std::thread::sleep(Duration::from_millis(300));
        let (b1, t1) = cpu_jiffies();
        if t1 > t0 && ((b1 - b0) as f64) < 0.05 * (t1 - t0) as f64 {
            return true;
        }
    }
    false
}

fn server(variant: Variant, src: &Path, meta: &FileMeta) -> PieceServer {
    let table = ServeTable::secured(Box::new(|_, _, _, _| true), plaintext());
    table.insert(ServedFile::complete(meta.clone(), File::open(src).expect("open source")));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let limits = ServerLimits::default();
    match variant {
        Variant::Uring(m) => PieceServer::start_uring_with(listener, table, limits, m),
        Variant::Threads => PieceServer::start(listener, table, limits, Backend::Threads),
    }
    .expect("start server")
}

/// One full download into /dev/shm; returns the bytes fetched.
fn run_download(addr: SocketAddr, meta: &FileMeta, pool: &Arc<HashPool>) -> u64 {
    let dir = tempfile::Builder::new()
        .prefix("ringshare-bench-")
        .tempdir_in(if Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" })
        .expect("dest dir");
    let dest = dir.path().join("out.bin");
    let (part, have) = PartFile::open(&dest, meta).expect("part file");
    let served =
        ServedFile::partial(meta.clone(), part.file().try_clone().expect("dup"), have.clone());
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let mut spec = FetchSpec::new(meta.clone(), "u".into(), vec![], None);
    spec.security = plaintext();
    let d = Download::start(
        spec,
        part,
        have,
        served,
        Arc::clone(pool),
        Box::new(move || {
            Ok::<_, String>(PeerList {
                addrs: vec![addr],
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
    loop {
        match rx.recv_timeout(Duration::from_secs(600)).expect("download event") {
            FetchEvent::Complete(_) => break,
            FetchEvent::Failed(e) => panic!("download failed: {e}"),
            FetchEvent::FirstPiece => {}
        }
    }
    d.wait();
    meta.len
}

/// Plaintext links with a fresh key.
fn plaintext() -> PeerSecurity {
    PeerSecurity { plaintext: true, ..PeerSecurity::ephemeral() }
}

/// Fetches every piece with 8 requests in flight and drops the data.
fn run_raw(addr: SocketAddr, meta: &FileMeta) -> u64 {
    let g = meta.geometry();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut out = Vec::new();
    let hs =
        Message::Handshake { version: peer::VERSION, file_id: meta.sha1, user: "u", ticket: b"" };
    peer::encode(&hs, &mut out);
    s.write_all(&out).expect("handshake");
    let mut head = [0u8; HEADER_LEN];
    s.read_exact(&mut head).expect("bitfield header");
    let (len, _) = wire::parse_header(&head);
    let mut scratch = vec![0u8; 1 << 20];
    s.read_exact(&mut scratch[..len as usize - HEADER_LEN]).expect("bitfield");
    let pieces: Vec<_> = g.pieces().collect();
    let (mut next, mut done, mut bytes) = (0usize, 0usize, 0u64);
    while done < pieces.len() {
        out.clear();
        while next < pieces.len() && next - done < 8 {
            let p = pieces[next];
            let len = g.len_of(p) as u32;
            peer::encode(&Message::Request { piece: p.get(), offset: 0, len }, &mut out);
            next += 1;
        }
        if !out.is_empty() {
            s.write_all(&out).expect("requests");
        }
        let mut ph = [0u8; PIECE_HEADER_LEN];
        s.read_exact(&mut ph).expect("piece header");
        let (len, kind) = wire::parse_header(ph[..HEADER_LEN].try_into().expect("header"));
        assert_eq!(kind, peer::kind::PIECE, "a piece");
        let data = len as usize - PIECE_HEADER_LEN;
        s.read_exact(&mut scratch[..data]).expect("piece data");
        bytes += data as u64;
        done += 1;
    }
    bytes
}

struct Sample {
    mbps: f64,
    cpu_per_gb: f64,
    quiet: bool,
}

fn run(
    variant: Variant,
    client: Client,
    src: &Path,
    meta: &FileMeta,
    pool: &Arc<HashPool>,
) -> Sample {
    let mut srv = server(variant, src, meta);
    let quiet = wait_quiet(Duration::from_secs(env_or("SERVE_BENCH_QUIET_SECS", 20)));
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let bytes = match client {
        Client::Download => run_download(srv.addr(), meta, pool),
        Client::Raw => run_raw(srv.addr(), meta),
    };
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    srv.stop();
    Sample { mbps: bytes as f64 / secs / 1e6, cpu_per_gb: cpu / (bytes as f64 / 1e9), quiet }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let mib = env_or("SERVE_BENCH_MIB", 1024);
    let rounds = env_or("SERVE_BENCH_ROUNDS", 3) as usize;
    let dir = PathBuf::from(std::env::var("SERVE_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()));
    let src = dir.join(format!("ringshare-serve-bench-{mib}MiB.bin"));
    make_source(&src, mib << 20).expect("write the source file");
    warm(&src).expect("warm the page cache");
    let meta = HashPool::with_available_cores().hash_file(&src, "bench.bin").expect("hash");
    let pool = Arc::new(HashPool::new(1));

    let mut variants = vec![Variant::Threads];
    match Backend::choose(Some(Backend::Uring)) {
        (Backend::Uring, _) => {
            variants.extend(SendMethod::ALL.into_iter().map(Variant::Uring));
        }
        (_, why) => println!("note: io_uring variants skipped: {why}"),
    }
    println!(
        "serving {mib} MiB over loopback, {} cores, {rounds} rounds, default uring method: {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        SendMethod::DEFAULT.name()
    );
    let clients = std::env::var("SERVE_BENCH_CLIENTS").unwrap_or_else(|_| "raw,download".into());
    let clients = [(Client::Raw, "raw"), (Client::Download, "download")]
        .into_iter()
        .filter(|(_, name)| clients.split(',').any(|c| c.trim() == *name))
        .map(|(c, _)| c);
    for client in clients {
        let mut results: Vec<(Variant, Vec<f64>, Vec<f64>)> =
            variants.iter().map(|v| (*v, Vec::new(), Vec::new())).collect();
        for round in 0..rounds {
            // Rotate the order each round.
            for k in 0..results.len() {
                let i = (k + round) % results.len();
                let s = run(results[i].0, client, &src, &meta, &pool);
                println!(
                    "  {client:?} round {round} {:<18} {:>8.0} MB/s  {:>5.2} CPU s/GB{}",
                    results[i].0.name(),
                    s.mbps,
                    s.cpu_per_gb,
                    if s.quiet { "" } else { "  (machine busy at start)" }
                );
                results[i].1.push(s.mbps);
                results[i].2.push(s.cpu_per_gb);
            }
        }
        let base = results
            .iter_mut()
            .find(|r| r.0 == Variant::Threads)
            .map(|r| median(&mut r.1))
            .unwrap_or(f64::NAN);
        println!("{client:?} client, medians:");
        println!(
            "  {:<18} {:>8} {:>12} {:>12} {:>10}",
            "variant", "MB/s", "min..max", "CPU s/GB", "vs threads"
        );
        for (v, mbps, cpu) in &mut results {
            let lo = mbps.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = mbps.iter().copied().fold(0.0, f64::max);
            let m = median(mbps);
            println!(
                "  {:<18} {:>8.0} {:>5.0}..{:<6.0} {:>12.2} {:>10.2}",
                v.name(),
                m,
                lo,
                hi,
                median(cpu),
                m / base
            );
        }
    }
}
