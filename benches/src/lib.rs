//! ringshare's criterion benchmarks live in `benches/benches/`; run them with
//! `cargo bench -p ringshare-benches`. The `tracker_load` binary
//! (`src/bin/tracker_load.rs`) drives a tracker with many concurrent clients;
//! `perf/tracker_load.sh` runs it next to redis-benchmark.

pub mod conn;
pub mod nemesis;
pub mod sim;
