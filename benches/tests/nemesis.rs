//! Short nemesis schedules (see `ringshare_benches::nemesis`): three real
//! trackers in network namespaces under client load, faults injected on a
//! schedule from a seed, then healed and checked. Needs root, `ip` and
//! `nft` (CI installs them); elsewhere the test says why it cannot run and
//! passes. The long run is `perf/nemesis.sh`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ringshare_benches::nemesis::{self, Options};

/// The tracker binary of this build (built if this test run did not).
fn tracker_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap(); // target/<profile>/deps -> target/<profile>
    let path = dir.join("ringshare-tracker");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "ringshare-tracker", "--bin", "ringshare-tracker"])
            .status()
            .unwrap();
        assert!(status.success(), "build ringshare-tracker");
    }
    path
}

/// Seeds and fault counts whose schedules between them inject every kind
/// of fault: partitions, heals, kill -9 and restart, pauses, clock jumps,
/// a wiped data directory and a full disk (a count, not a duration, so
/// that a slow machine makes the same faults).
const SCHEDULES: [(u64, usize); 3] = [(11, 10), (15, 6), (17, 7)];

#[test]
fn short_fault_schedules_lose_nothing_acknowledged_and_converge() {
    if let Some(why) = nemesis::unusable() {
        eprintln!("skipped: the nemesis {why}");
        return;
    }
    let bin = tracker_bin();
    let mut kinds = std::collections::BTreeSet::new();
    for (seed, faults) in SCHEDULES {
        let opts = Options {
            seed,
            duration: Duration::ZERO,
            faults: Some(faults),
            clients_per_tracker: 2,
            tracker_bin: bin.clone(),
            verbose: false,
            keep: false,
        };
        let r = nemesis::run(&opts).unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
        assert!(
            r.failures.is_empty(),
            "seed {seed} failed (replay: ringshare-nemesis --seed {seed} --faults {faults}):\n{}\nhistory:\n{}",
            r.failures.join("\n"),
            r.history.join("\n")
        );
        assert!(r.convergence_ms.is_some(), "seed {seed}: never converged");
        assert!(
            r.ops.acked > 100 && r.acked_checked > 100,
            "seed {seed}: too little load: {:?}",
            r.ops
        );
        assert!(r.conflicts > 0, "seed {seed}: no conflict was made");
        assert_eq!(r.inconclusive, 0, "seed {seed}: a client's history was not checked");
        kinds.extend(r.fault_counts.keys().cloned());
    }
    let all = [
        "partition",
        "heal",
        "kill -9",
        "restart",
        "pause",
        "clock skew",
        "wipe data dir",
        "disk full",
    ];
    for k in all {
        assert!(kinds.contains(k), "no schedule injected {k}: {kinds:?}");
    }
}
