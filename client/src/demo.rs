//! `ringshare demo`: the whole system in one process on loopback — a
//! tracker, N seeder nodes and one downloader sharing a generated random
//! file — then a byte-for-byte check and the figures: throughput, CPU time
//! and piece latency percentiles.

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use ringshare_engine::fetch::Status;
use ringshare_engine::metrics;
use ringshare_engine::serve::Backend;
use ringshare_engine::tracker_info::TrackerList;
use ringshare_tracker::service::Tracker;

use crate::node::Node;
use crate::oneshot;
use crate::shell::Command;

/// Run a tracker, seeders and a downloader in this process on loopback.
#[derive(Debug, Parser)]
#[command(name = "ringshare demo")]
pub struct DemoArgs {
    /// Size of the generated file (e.g. 1GiB, 256MiB, 10MB, 12345).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub size: u64,
    /// Seeder nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub seeders: u32,
    /// I/O (serving and fetching): uring or threads.
    #[arg(long)]
    pub io: Option<Backend>,
    /// Where to put the temporary files [default: the system temp dir].
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Peer links (downloads and serving) without encryption or
    /// authentication, for benchmarks and trusted networks only: every node of the demo
    /// (to compare with the encrypted default). Tracker links stay encrypted.
    #[arg(long)]
    pub plaintext: bool,
}

pub use ringshare_engine::sample::parse_size;

/// `ringshare demo`, until it ends or a signal stops it (its temporary
/// directory is removed either way).
pub async fn run_until_signal(args: DemoArgs) -> Result<()> {
    let mut stop = oneshot::StopSignals::new()?;
    tokio::select! {
        r = run(args) => r,
        why = stop.recv() => Err(oneshot::Stopped::error(why, "; the demo's files are removed")),
    }
}

/// Bytes free to this user on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: statvfs is a plain C struct of integers, for which all
    // zeroes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statvfs, both alive for the
    // call, which only writes the latter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The demo's file being written on a thread of its own. Dropped unfinished
/// (a signal stopped the demo), it stops the thread and waits for it, so
/// that nothing is written into the directory once it is removed.
struct Writer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    done: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Writer {
    fn start(path: &Path, size: u64) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (path, flag) = (path.to_owned(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let seed = u64::from(std::process::id());
            let r = ringshare_engine::sample::write_pseudo_random_until(&path, size, seed, &flag);
            let _ = tx.send(());
            r
        });
        Self { stop, thread: Some(thread), done: Some(rx) }
    }

    async fn finish(mut self) -> std::io::Result<()> {
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(std::io::Error::other("the writing thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `ringshare demo`.
pub async fn run(args: DemoArgs) -> Result<()> {
    let tmp = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("create a temporary directory")?;
    let dir = tmp.path();
    // The file and its copy, with room to spare: refused now rather than
    // the disk filled halfway.
    let need = args.size.saturating_mul(2).saturating_add(64 << 20);
    let free =
        free_bytes(dir).with_context(|| format!("look at the space in {}", dir.display()))?;
    if free < need {
        bail!(
            "a {} demo needs {} free in {} (the file and its copy), and {} is: pass a smaller \
             --size or another --dir",
            human(args.size),
            human(need),
            dir.display(),
            human(free)
        );
    }
    crate::say!(
        "ringshare demo: {} seeder(s), a {} file, in {}; peer links {}",
        args.seeders,
        human(args.size),
        dir.display(),
        if args.plaintext { "PLAINTEXT (--plaintext)" } else { "encrypted" }
    );

    // The tracker, in this process.
    let listener =
        tokio::net::TcpListener::bind("127.0.0.1:0").await.context("bind the tracker")?;
    let tracker_addr = listener.local_addr()?;
    let links = Arc::new(ringshare_tracker::links::Links::ephemeral());
    tokio::spawn(ringshare_tracker::server::serve(listener, Arc::new(Tracker::new()), links));
    let trackers = TrackerList::new(vec![tracker_addr]);

    let src = dir.join("demo.bin");
    let t = Instant::now();
    // Off the runtime's thread, so that a signal meanwhile is heard.
    Writer::start(&src, args.size).finish().await.context("write the demo file")?;
    crate::say!(
        "generated {} of random data in {:.2} s",
        human(args.size),
        t.elapsed().as_secs_f64()
    );

    let backend = oneshot::backend(args.io)?;
    let new_node = |name: &str| -> Result<Node> {
        let l = TcpListener::bind("127.0.0.1:0").context("bind a node")?;
        Node::new(
            l,
            trackers.clone(),
            dir.join(format!("state-{name}")),
            oneshot::limits(None),
            backend,
            args.plaintext,
        )
    };
    let mut seeders = Vec::new();
    for i in 0..args.seeders {
        let name = format!("seeder{i}");
        let mut n = new_node(&name)?;
        cmd(&mut n, Command::CreateUser { user: name.clone(), password: "demo".into() }).await?;
        cmd(&mut n, Command::Login { user: name.clone(), password: "demo".into() }).await?;
        if i == 0 {
            cmd(&mut n, Command::CreateGroup { group: "demo".into() }).await?;
        } else {
            cmd(&mut n, Command::JoinGroup { group: "demo".into() }).await?;
            let owner: &mut Node = &mut seeders[0];
            cmd(owner, Command::AcceptRequest { group: "demo".into(), user: name.clone() }).await?;
        }
        let t = Instant::now();
        let path = src.display().to_string();
        cmd(&mut n, Command::UploadFile { path, group: "demo".into() }).await?;
        crate::say!(
            "{name} on {} hashed and shared it in {:.2} s",
            n.addr(),
            t.elapsed().as_secs_f64()
        );
        seeders.push(n);
    }

    let mut down = new_node("downloader")?;
    // Its completion line follows the progress bar (below), not the fetch.
    down.set_announce(false);
    cmd(&mut down, Command::CreateUser { user: "downloader".into(), password: "demo".into() })
        .await?;
    cmd(&mut down, Command::Login { user: "downloader".into(), password: "demo".into() }).await?;
    cmd(&mut down, Command::JoinGroup { group: "demo".into() }).await?;
    cmd(
        &mut seeders[0],
        Command::AcceptRequest { group: "demo".into(), user: "downloader".into() },
    )
    .await?;

    let dest = dir.join("copy.bin");
    let cpu0 = cpu_times();
    let t = Instant::now();
    let dest_s = dest.display().to_string();
    cmd(
        &mut down,
        Command::DownloadFile { group: "demo".into(), file: "demo.bin".into(), dest: dest_s },
    )
    .await?;
    let download = down.downloads()[0].download().cloned().context("the demo's download")?;
    let status = oneshot::follow(&download, "demo.bin").await;
    // When it ended, not when the bar's poll (every 100 ms) saw it: the
    // figure of a small size was a multiple of a tenth of a second.
    let secs = download
        .ended_at()
        .map_or_else(|| t.elapsed(), |e| e.saturating_duration_since(t))
        .as_secs_f64();
    let cpu1 = cpu_times();
    if let Status::Failed(why) = status {
        bail!("the download failed: {why}");
    }
    eprintln!("{}", crate::node::completed_line("demo", "demo.bin", &download));

    let t = Instant::now();
    same_bytes(&src, &dest)?;
    crate::say!(
        "verified: the copy is byte-for-byte identical ({:.2} s to compare)",
        t.elapsed().as_secs_f64()
    );
    let mbps = args.size as f64 / secs / 1e6;
    crate::say!("downloaded {} in {secs:.2} s: {mbps:.1} MB/s", human(args.size));
    crate::say!(
        "CPU time during the download (every node, one process): user {:.2} s, sys {:.2} s",
        cpu1.0 - cpu0.0,
        cpu1.1 - cpu0.1
    );
    let mut peers: Vec<_> = download.contributions().into_iter().collect();
    peers.sort();
    for (addr, bytes) in peers {
        crate::say!("  from {addr}: {}", human(bytes));
    }
    crate::say!(
        "piece latency (request sent -> verified): {}",
        metrics::summary(&download.latency().snapshot())
    );
    for n in seeders.iter_mut().chain(std::iter::once(&mut down)) {
        n.shutdown();
    }
    Ok(())
}

async fn cmd(node: &mut Node, c: Command) -> Result<()> {
    let (_, r) = node.execute(c).await;
    r.map(|_| ())
}

fn same_bytes(a: &Path, b: &Path) -> Result<()> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            bail!("the copy differs from the original near byte {offset}");
        }
        if na == 0 {
            return Ok(());
        }
        offset += na as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// (user, system) CPU seconds of this process so far.
fn cpu_times() -> (f64, f64) {
    // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_SELF is valid.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("12345"), Ok(12345));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5XB").is_err());
        assert!(parse_size("99999999999GiB").is_err());
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(12), "12 B");
    }
}
