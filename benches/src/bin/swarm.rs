//! The swarm harness: the real binaries on loopback — a tracker, N seeder
//! processes (`ringshare share`) and one downloader process (`ringshare
//! get`) — downloading one file, reported as JSON.
//!
//! ```text
//! ringshare-swarm --size 2GiB --seeders 3 --io uring --runs 5 --out perf/results/x
//! ```
//!
//! Per run: MB/s (download start → every piece verified and the file in
//! place; 1 MB = 1e6 bytes), the downloader's CPU seconds per GB and peak
//! RSS (wait4), the seeders' CPU seconds per GB (/proc/<pid>/stat), and the
//! piece latency percentiles (request sent → piece verified). The file is
//! generated once (page cache warm), each run downloads it afresh.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use ringshare_engine::proto::{self, Request, Response};
use ringshare_engine::wire;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(
    name = "ringshare-swarm",
    about = "Download one file from N seeders with the real binaries; JSON out"
)]
struct Args {
    /// File size (e.g. 256MiB, 2GiB) of the generated file.
    #[arg(long, default_value = "256MiB")]
    size: String,
    /// Use this file instead of generating one.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Seeder processes.
    #[arg(long, default_value_t = 1)]
    seeders: u32,
    /// I/O of every node (serving and fetching): uring or threads.
    #[arg(long, default_value = "uring")]
    io: String,
    /// Timed runs.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Untimed runs first.
    #[arg(long, default_value_t = 0)]
    warmup: u32,
    /// Directory of ringshare and ringshare-tracker [default: next to this binary].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where to write run-<i>.json, latency-<i>.hgrm and summary.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Scratch directory [default: the system temp dir].
    #[arg(long)]
    tmp: Option<PathBuf>,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().context("binary directory")?.to_owned(),
    };
    let ringshare = bin_dir.join("ringshare");
    let tracker_bin = bin_dir.join("ringshare-tracker");
    for b in [&ringshare, &tracker_bin] {
        if !b.exists() {
            bail!("{} not found: build with cargo build --release --workspace", b.display());
        }
    }
    let tmp = match &args.tmp {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let dir = tmp.path();
    let file = match &args.file {
        Some(f) => f.canonicalize()?,
        None => {
            let size =
                ringshare_engine::sample::parse_size(&args.size).map_err(anyhow::Error::msg)?;
            let p = dir.join("swarm.bin");
            ringshare_engine::sample::write_pseudo_random(&p, size, 7)?;
            p
        }
    };
    let size = std::fs::metadata(&file)?.len();
    let name = file.file_name().and_then(|n| n.to_str()).context("file name")?.to_owned();
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
    }

    // Tracker.
    let boot = dir.join("boot.txt");
    std::fs::write(&boot, "127.0.0.1:0\n")?;
    let mut tracker = Command::new(&tracker_bin)
        .arg(&boot)
        .arg("1")
        .arg("--data-dir")
        .arg(dir.join("tracker-data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start the tracker")?;
    let mut first = String::new();
    BufReader::new(tracker.stdout.take().context("tracker stdout")?).read_line(&mut first)?;
    let taddr: SocketAddr = first.trim().rsplit(' ').next().context("tracker address")?.parse()?;
    let info = dir.join("tracker_info.txt");
    std::fs::write(&info, format!("{taddr}\n"))?;
    let mut guard = Procs { children: vec![tracker] };

    // Users and the group, through the protocol.
    let mut t = Raw::connect(taddr)?;
    let users: Vec<String> =
        (0..args.seeders).map(|i| format!("seed{i}")).chain(["down".to_owned()]).collect();
    let mut tokens = Vec::new();
    for u in &users {
        t.expect_done(&Request::CreateUser { user: u.clone(), password: "pw".into() })?;
        match t.call(&Request::Login {
            user: u.clone(),
            password: "pw".into(),
            peer_addr: "127.0.0.1:9".into(),
        })? {
            Response::LoggedIn { token, .. } => tokens.push(token),
            other => bail!("login {u}: {other:?}"),
        }
    }
    t.expect_done(&Request::CreateGroup { token: tokens[0], group: "bench".into() })?;
    for (u, tok) in users.iter().zip(&tokens).skip(1) {
        t.expect_done(&Request::JoinGroup { token: *tok, group: "bench".into() })?;
        t.expect_done(&Request::AcceptRequest {
            token: tokens[0],
            group: "bench".into(),
            user: u.clone(),
        })?;
    }
    for tok in &tokens {
        t.expect_done(&Request::Logout { token: *tok })?;
    }
    let pw = dir.join("pw");
    std::fs::write(&pw, "pw\n")?;

    // Seeders.
    let mut seeder_pids = Vec::new();
    for i in 0..args.seeders {
        let mut c = Command::new(&ringshare)
            .args(["share", "--trackers"])
            .arg(&info)
            .args(["--user", &format!("seed{i}"), "--password-file"])
            .arg(&pw)
            .args(["--io", &args.io, "bench"])
            .arg(&file)
            .env("RINGSHARE_STATE_DIR", dir.join(format!("state-seed{i}")))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start a seeder")?;
        let mut lines = BufReader::new(c.stdout.take().context("seeder stdout")?).lines();
        let _uploaded = lines.next().context("seeder output")??;
        let seeding = lines.next().context("seeder output")??;
        if !seeding.starts_with("seeding on") {
            bail!("seeder {i}: {seeding}");
        }
        seeder_pids.push(c.id());
        guard.children.push(c);
    }

    let mut runs = Vec::new();
    for r in 0..args.warmup + args.runs {
        let dest = dir.join("copy.bin");
        let stats = dir.join("stats.json");
        let hgrm = dir.join("latency.hgrm");
        let seed_cpu0: f64 = seeder_pids.iter().map(|p| proc_cpu(*p)).sum();
        let t0 = Instant::now();
        let child = Command::new(&ringshare)
            .args(["get", "--quiet", "--trackers"])
            .arg(&info)
            .args(["--user", "down", "--password-file"])
            .arg(&pw)
            .args(["--io", &args.io, "--stats"])
            .arg(&stats)
            .arg("--hgrm")
            .arg(&hgrm)
            .args(["bench", &name])
            .arg(&dest)
            .env("RINGSHARE_STATE_DIR", dir.join("state-down"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start the downloader")?;
        let (ok, user_s, sys_s, maxrss_kib) = wait_rusage(child.id())?;
        let wall = t0.elapsed().as_secs_f64();
        let seed_cpu = seeder_pids.iter().map(|p| proc_cpu(*p)).sum::<f64>() - seed_cpu0;
        if !ok {
            bail!("run {r}: the download failed");
        }
        let st: Value = serde_json::from_slice(&std::fs::read(&stats)?)?;
        let gb = size as f64 / 1e9;
        let doc = json!({
            "run": r,
            "warmup": r < args.warmup,
            "bytes": size,
            "seconds": st["seconds"],
            "mbps": st["mbps"],
            "process_wall_seconds": wall,
            "downloader_cpu_seconds": user_s + sys_s,
            "downloader_user_seconds": user_s,
            "downloader_sys_seconds": sys_s,
            "downloader_cpu_s_per_gb": (user_s + sys_s) / gb,
            "seeders_cpu_s_per_gb": seed_cpu / gb,
            "downloader_peak_rss_kib": maxrss_kib,
            "latency_us": st["latency_us"],
            "peers": st["peers"],
        });
        eprintln!(
            "{} {r}: {:.1} MB/s, downloader {:.2} CPU s/GB, seeders {:.2} CPU s/GB, peak RSS {} KiB, p99 {} us",
            if r < args.warmup { "warmup" } else { "run" },
            st["mbps"].as_f64().unwrap_or(0.0),
            (user_s + sys_s) / gb,
            seed_cpu / gb,
            maxrss_kib,
            st["latency_us"]["p99"]
        );
        if let Some(out) = &args.out {
            std::fs::write(out.join(format!("run-{r}.json")), serde_json::to_vec_pretty(&doc)?)?;
            std::fs::copy(&hgrm, out.join(format!("latency-{r}.hgrm")))?;
        }
        if r >= args.warmup {
            runs.push(doc);
        }
        std::fs::remove_file(&dest)?;
    }
    let mut rates: Vec<f64> = runs.iter().filter_map(|r| r["mbps"].as_f64()).collect();
    rates.sort_by(f64::total_cmp);
    let median = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    let summary = json!({
        "tool": "ringshare-swarm",
        "bytes": size,
        "seeders": args.seeders,
        "io": args.io,
        "runs": runs,
        "median_mbps": median,
    });
    if let Some(out) = &args.out {
        std::fs::write(out.join("summary.json"), serde_json::to_vec_pretty(&summary)?)?;
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    eprintln!(
        "ringshare: {} seeders -> 1 downloader ({}): {median:.1} MB/s",
        args.seeders, args.io
    );
    drop(guard);
    Ok(())
}

/// Children stopped on the way out, whatever happens.
struct Procs {
    children: Vec<Child>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            // SAFETY: kill(2) with a pid we spawned and have not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

/// Waits for a child and returns (exited 0, user s, sys s, max RSS KiB).
fn wait_rusage(pid: u32) -> Result<(bool, f64, f64, i64)> {
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter; pid is our child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 writes into `status` and `ru`, both live for the call.
    let rc = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut ru) };
    if rc < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    Ok((ok, secs(ru.ru_utime), secs(ru.ru_stime), ru.ru_maxrss))
}

/// CPU seconds (user + system) a process has used, from /proc.
fn proc_cpu(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command (which may hold spaces) start after ") ".
    let rest = stat.rsplit_once(") ").map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 here.
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// A blocking protocol connection to the tracker.
struct Raw {
    s: ringshare_engine::secure_io::BlockingSecureStream<TcpStream>,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Result<Self> {
        use ringshare_engine::secure::{Keypair, CONTROL_PROLOGUE};
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        let me = Keypair::generate();
        let s = ringshare_engine::secure_io::BlockingSecureStream::connect(
            s,
            &me,
            CONTROL_PROLOGUE,
            None,
        )?;
        Ok(Self { s })
    }

    fn call(&mut self, req: &Request) -> Result<Response> {
        self.s.write_all(&proto::encode_frame(proto::REQUEST, req)?)?;
        self.s.flush()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match wire::decode(&buf, proto::MAX_FRAME) {
                Ok((f, _)) => return Ok(postcard::from_bytes(f.payload)?),
                Err(wire::DecodeError::NeedMore(_)) => {}
                Err(e) => bail!("{e}"),
            }
            let n = self.s.read(&mut chunk)?;
            if n == 0 {
                bail!("tracker closed the connection");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn expect_done(&mut self, req: &Request) -> Result<()> {
        match self.call(req)? {
            Response::Done => Ok(()),
            other => bail!("{req:?}: {other:?}"),
        }
    }
}
