//! `ringshare-nemesis`: random fault schedules against three real trackers,
//! each checked (see `ringshare_benches::nemesis`). Needs root, `ip`, `nft`.
//!
//! ```text
//! ringshare-nemesis --schedules 100 --seed 1 --duration 12 --json out.json
//! ```
//!
//! Prints one line per schedule and a summary; a failing schedule prints its
//! seed, what the checker found and the history (replay it with
//! `--schedules 1 --seed SEED`). Exit status 1 if any schedule failed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use ringshare_benches::nemesis::{self, Options, Report};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(about = "Random fault schedules against three real ringshare trackers, checked")]
struct Args {
    /// How many schedules (seeds SEED, SEED+1, …).
    #[arg(long, default_value_t = 1)]
    schedules: u64,
    /// The first schedule's seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of faults per schedule.
    #[arg(long, default_value_t = 12.0)]
    duration: f64,
    /// Inject exactly this many faults per schedule instead of --duration
    /// seconds of them (the same seed then makes the same faults anywhere).
    #[arg(long)]
    faults: Option<usize>,
    /// Clients per tracker.
    #[arg(long, default_value_t = 2)]
    clients_per_tracker: usize,
    /// The tracker binary [default: ringshare-tracker next to this one].
    #[arg(long)]
    tracker_bin: Option<PathBuf>,
    /// Write every schedule's report (histories of failing ones included)
    /// and the summary here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print each fault as it happens.
    #[arg(long)]
    verbose: bool,
    /// Keep each schedule's tracker logs and final states (printed where).
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Serialize)]
struct Summary {
    schedules: usize,
    failed: Vec<u64>,
    faults: BTreeMap<String, usize>,
    acked: usize,
    refused: usize,
    not_sent: usize,
    unknown: usize,
    acked_checked: usize,
    reads_checked: usize,
    conflicts: usize,
    inconclusive: usize,
    convergence_ms_p50: Option<u64>,
    convergence_ms_p99: Option<u64>,
    convergence_ms_max: Option<u64>,
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

fn summarize(reports: &[Report]) -> Summary {
    let mut faults = BTreeMap::new();
    for r in reports {
        for (k, n) in &r.fault_counts {
            *faults.entry(k.clone()).or_default() += n;
        }
    }
    let mut conv: Vec<u64> = reports.iter().filter_map(|r| r.convergence_ms).collect();
    conv.sort_unstable();
    Summary {
        schedules: reports.len(),
        failed: reports.iter().filter(|r| !r.failures.is_empty()).map(|r| r.seed).collect(),
        faults,
        acked: reports.iter().map(|r| r.ops.acked).sum(),
        refused: reports.iter().map(|r| r.ops.refused).sum(),
        not_sent: reports.iter().map(|r| r.ops.not_sent).sum(),
        unknown: reports.iter().map(|r| r.ops.unknown).sum(),
        acked_checked: reports.iter().map(|r| r.acked_checked).sum(),
        reads_checked: reports.iter().map(|r| r.reads_checked).sum(),
        conflicts: reports.iter().map(|r| r.conflicts).sum(),
        inconclusive: reports.iter().map(|r| r.inconclusive).sum(),
        convergence_ms_p50: percentile(&conv, 0.50),
        convergence_ms_p99: percentile(&conv, 0.99),
        convergence_ms_max: conv.last().copied(),
    }
}

fn main() {
    match run(Args::parse()) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn run(args: Args) -> Result<bool> {
    if let Some(why) = nemesis::unusable() {
        anyhow::bail!("the nemesis cannot run here: {why}");
    }
    let tracker_bin = match args.tracker_bin {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("ringshare-tracker"),
    };
    let mut reports = Vec::new();
    for i in 0..args.schedules {
        let opts = Options {
            seed: args.seed + i,
            duration: Duration::from_secs_f64(args.duration),
            faults: args.faults,
            clients_per_tracker: args.clients_per_tracker,
            tracker_bin: tracker_bin.clone(),
            verbose: args.verbose,
            keep: args.keep,
        };
        let r = nemesis::run(&opts).with_context(|| format!("schedule with seed {}", opts.seed))?;
        println!(
            "seed {:>4}: {} faults, ops {} acked / {} refused / {} not sent / {} unknown, {} conflicts, converged in {} — {}",
            r.seed,
            r.faults.len(),
            r.ops.acked,
            r.ops.refused,
            r.ops.not_sent,
            r.ops.unknown,
            r.conflicts,
            r.convergence_ms.map_or("never".into(), |ms| format!("{ms} ms")),
            if r.failures.is_empty() { "ok".to_owned() } else { format!("FAILED ({})", r.failures.len()) }
        );
        if !r.failures.is_empty() {
            eprintln!(
                "schedule with seed {} FAILED; replay: --schedules 1 --seed {}",
                r.seed, r.seed
            );
            for f in &r.failures {
                eprintln!("  {f}");
            }
            eprintln!("history:");
            for line in &r.history {
                eprintln!("  {line}");
            }
        }
        reports.push(r);
    }
    let summary = summarize(&reports);
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(path) = &args.json {
        let all = serde_json::json!({ "summary": summary, "schedules": reports });
        std::fs::write(path, serde_json::to_string_pretty(&all)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(summary.failed.is_empty())
}
