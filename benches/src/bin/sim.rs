//! The swarm simulator's scenarios (see `ringshare_benches::sim` for the
//! model): runs them, prints a summary, writes `NAME.json` and a
//! completion-time CDF `NAME.svg` per scenario into `--out`.
//!
//!   ringshare-sim --scenario all --size-mib 1024 --out perf/results/DATE/sim

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use ringshare_benches::sim::{self, HostSpec, Report, Scenario};

#[derive(Parser)]
struct Args {
    /// flash-N (any N; all runs 10, 100, 1000), hetero, churn, late,
    /// corrupt, or all; several separated by commas.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// File size, MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Downloaders in the hetero, churn, late and corrupt scenarios.
    #[arg(long, default_value_t = 100)]
    peers: usize,
    /// Link rate of every host in the flash crowds, Mbit/s each way.
    #[arg(long, default_value_t = 100.0)]
    mbit: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write JSON and SVG.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seeds show every piece to every downloader (no initial seeding:
    /// how seeds behaved before it, for comparison).
    #[arg(long)]
    no_seeding_plan: bool,
    /// The tracker lists only hosts that hold a piece, not the downloaders
    /// fetching the file (how it listed peers before, for comparison).
    #[arg(long)]
    sharers_only: bool,
    /// Upload slots per host (0: every connection sends at once, as
    /// before upload slots).
    #[arg(long, default_value_t = ringshare_engine::slots::SEND_SLOTS)]
    send_slots: usize,
    /// Seeds send each connection's requests in the order asked (how they
    /// did before sending the least-sent piece first, for comparison).
    #[arg(long)]
    seed_in_order: bool,
    /// Requests that waited for an upload slot are never answered `busy`
    /// (how piece servers behaved before, for comparison).
    #[arg(long)]
    no_busy: bool,
    /// Each sender splits its uplink equally among its flows (the network
    /// model before max-min shares at the senders, for comparison).
    #[arg(long)]
    equal_split: bool,
    /// Hosts serve the file to any number of downloaders at once (before
    /// the cap of 64, for comparison).
    #[arg(long)]
    unlimited_downloaders: bool,
    /// Seeds offer and send second copies before every piece went out
    /// once (before they kept them back, for comparison).
    #[arg(long)]
    second_copies_early: bool,
    /// The share of each link's rate that carries payload (default: a
    /// full TCP segment's over its Ethernet frame; 1 leaves headers out,
    /// as the model did before).
    #[arg(long, default_value_t = sim::TCP_PAYLOAD_SHARE)]
    payload_share: f64,
    /// Peers each download connects to at once (default: what a shipped
    /// download does).
    #[arg(long, default_value_t = ringshare_engine::download::MAX_PEERS)]
    max_peers: usize,
    /// Downloaders leave once their file is complete, as `ringshare get`
    /// does (default: they stay and serve).
    #[arg(long)]
    leave_when_done: bool,
    /// One-way latency of every host in the flash crowds, ms (default: a
    /// random 5-50 ms each, the seed 10 ms).
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Seeds send a first copy to a downloader however many it was sent
    /// (before they deferred those past its share, for comparison).
    #[arg(long)]
    no_defer: bool,
}

/// xorshift for the scenario's own choices (join times, latencies).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

fn seed_host(mbit: f64) -> HostSpec {
    HostSpec { seed: true, ..HostSpec::symmetric(mbit, 10) }
}

fn scenario(name: &str, args: &Args) -> Result<Scenario> {
    let mut rng = Rng(args.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    let file_len = args.size_mib * 1024 * 1024;
    let n = args.peers;
    let mut hosts = Vec::new();
    let lat = |rng: &mut Rng| rng.range(5, 50);
    match name {
        flash if flash.starts_with("flash-") => {
            let n: usize = flash["flash-".len()..].parse()?;
            let mut seed = seed_host(args.mbit);
            if let Some(ms) = args.latency_ms {
                seed.latency = Duration::from_millis(ms);
            }
            hosts.push(seed);
            for _ in 0..n {
                let ms = args.latency_ms.unwrap_or_else(|| lat(&mut rng));
                hosts.push(HostSpec::symmetric(args.mbit, ms));
            }
        }
        "hetero" => {
            hosts.push(seed_host(100.0));
            for i in 0..n {
                let mut h = if i % 10 == 0 {
                    HostSpec::symmetric(1000.0, lat(&mut rng))
                } else {
                    HostSpec::symmetric(20.0, lat(&mut rng))
                };
                if i % 10 != 0 {
                    h.up = 5e6 / 8.0;
                }
                hosts.push(h);
            }
        }
        "churn" | "late" | "corrupt" => {
            hosts.push(seed_host(100.0));
            // What a downloader needs at its link's rate, as a time scale.
            let alone = file_len as f64 / (100e6 / 8.0);
            for i in 0..n {
                let mut h = HostSpec::symmetric(100.0, lat(&mut rng));
                if name == "churn" && i % 10 < 3 {
                    let at = rng.range(0, (alone * 3000.0) as u64);
                    h.leave = Some(Duration::from_millis(at));
                    if i % 2 == 0 {
                        h.rejoin = Some(Duration::from_millis(at + rng.range(10_000, 60_000)));
                    }
                }
                if name == "late" && i % 2 == 1 {
                    h.join = Duration::from_millis(rng.range(0, (alone * 2000.0) as u64));
                }
                hosts.push(h);
            }
            if name == "corrupt" {
                hosts.push(HostSpec { corrupt: true, ..seed_host(100.0) });
            }
        }
        other => bail!("unknown scenario {other}"),
    }
    Ok(Scenario {
        name: name.to_owned(),
        file_len,
        hosts,
        seed: args.seed,
        limit: Duration::from_secs(24 * 3600),
        seeding_plan: !args.no_seeding_plan,
        list_fetchers: !args.sharers_only,
        send_slots: args.send_slots,
        seed_in_order: args.seed_in_order,
        busy_answers: !args.no_busy,
        equal_split: args.equal_split,
        unlimited_downloaders: args.unlimited_downloaders,
        second_copies_early: args.second_copies_early,
        payload_share: args.payload_share,
        max_peers: args.max_peers,
        leave_when_done: args.leave_when_done,
        defer_first_copies: !args.no_defer,
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let names: Vec<&str> = if args.scenario == "all" {
        vec!["flash-10", "flash-100", "flash-1000", "hetero", "churn", "late", "corrupt"]
    } else {
        args.scenario.split(',').collect()
    };
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
    }
    println!(
        "{:<11} {:>6} {:>9} {:>9} {:>9} {:>9} {:>7} {:>10} {:>8}",
        "scenario", "hosts", "p50 s", "max s", "bound s", "max/bnd", "incompl", "seed MiB", "cpu s"
    );
    for name in names {
        let sc = scenario(name, &args)?;
        let started = Instant::now();
        let r = sim::run(&sc);
        let cpu = started.elapsed().as_secs_f64();
        let bound = r.bound_seed_up_s.max(r.bound_down_s).max(r.bound_total_up_s);
        let pct = |q: f64| {
            r.completion_s
                .get(((r.completion_s.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        println!(
            "{:<11} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.2} {:>7} {:>10} {:>8.1}",
            name,
            r.hosts,
            pct(0.5),
            pct(1.0),
            bound,
            pct(1.0) / bound,
            r.incomplete,
            r.seed_uploaded >> 20,
            cpu
        );
        if let Some(out) = &args.out {
            let mut doc = serde_json::to_value(&r)?;
            doc["bound_s"] = bound.into();
            doc["cpu_s"] = cpu.into();
            std::fs::write(out.join(format!("{name}.json")), serde_json::to_string_pretty(&doc)?)?;
            std::fs::write(out.join(format!("{name}.svg")), cdf_svg(&r, bound))?;
        }
    }
    Ok(())
}

/// The completion-time CDF with the lower bound as a vertical line.
fn cdf_svg(r: &Report, bound: f64) -> String {
    let (w, h, m) = (640.0, 400.0, 50.0);
    let tmax = r.completion_s.last().copied().unwrap_or(bound).max(bound) * 1.05;
    let n = r.completion_s.len().max(1) as f64;
    let x = |t: f64| m + (w - 2.0 * m) * t / tmax;
    let y = |f: f64| h - m - (h - 2.0 * m) * f;
    let mut pts = String::new();
    for (i, t) in r.completion_s.iter().enumerate() {
        pts.push_str(&format!("{:.1},{:.1} ", x(*t), y(i as f64 / n)));
        pts.push_str(&format!("{:.1},{:.1} ", x(*t), y((i + 1) as f64 / n)));
    }
    let mut ticks = String::new();
    for k in 0..=5 {
        let t = tmax * k as f64 / 5.0;
        ticks.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{:.0}</text>",
            x(t),
            h - m + 16.0,
            t
        ));
        let f = k as f64 / 5.0;
        ticks.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{:.0}%</text>",
            m - 6.0,
            y(f) + 4.0,
            f * 100.0
        ));
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{m}\" y=\"24\" font-size=\"14\">{name}: completion time CDF ({hosts} hosts, {mib} MiB; seed {seed})</text>\
         <line x1=\"{m}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\
         <line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{b}\" stroke=\"black\"/>\
         <line x1=\"{bx:.1}\" y1=\"{m}\" x2=\"{bx:.1}\" y2=\"{b}\" stroke=\"grey\" stroke-dasharray=\"4\"/>\
         <text x=\"{bx:.1}\" y=\"{lb}\" font-size=\"11\" fill=\"grey\">lower bound {bound:.1} s</text>\
         <polyline fill=\"none\" stroke=\"steelblue\" stroke-width=\"2\" points=\"{pts}\"/>{ticks}\
         <text x=\"{cx}\" y=\"{xb}\" font-size=\"12\" text-anchor=\"middle\">seconds from join to complete</text></svg>",
        name = r.name,
        hosts = r.hosts,
        mib = r.file_len >> 20,
        seed = r.seed,
        b = h - m,
        r = w - m,
        bx = x(bound),
        lb = m - 6.0,
        cx = w / 2.0,
        xb = h - 12.0,
    )
}
