//! ringshare's criterion benchmarks live in `benches/benches/`; run them with
//! `cargo bench -p ringshare-benches`.
