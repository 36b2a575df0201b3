//! What recording one more (or one fewer) share costs with N shares on
//! record: the append-only share log (`ShareBook::put` / `remove`, each
//! fdatasync'ed) against rewriting the whole record each time, which is
//! what the node did before (`write_atomically` of the postcard list:
//! temporary file, fsync, rename, directory fsync).
//!
//! `cargo bench -p ringshare --bench share_record` (env `SHARE_BENCH_DIR`,
//! default the system temp dir: put it on the disk the state directory
//! lives on). Prints µs per operation for N = 10, 1,000 and 10,000 shares
//! of 4 MiB files (8 piece hashes each).

use std::path::Path;
use std::time::Instant;

use ringshare::shares::{LocalShare, ShareBook};
use ringshare_engine::fsio::write_atomically;
use ringshare_engine::meta::{FileMeta, Sha1Digest};

const OPS: u32 = 40;

fn share(file: &Path, i: usize) -> LocalShare {
    let meta = FileMeta {
        name: format!("file-{i:06}.bin"),
        len: 4 << 20,
        sha1: Sha1Digest([(i % 251) as u8; 20]),
        piece_hashes: vec![Sha1Digest([7; 20]); 8],
    };
    LocalShare::new("group".into(), file.to_owned(), meta).expect("stat the sample file")
}

fn main() {
    let base = std::env::var_os("SHARE_BENCH_DIR").map(std::path::PathBuf::from);
    let dir = match base {
        Some(b) => tempfile::tempdir_in(b),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let file = dir.path().join("sample.bin");
    std::fs::write(&file, b"x").expect("sample file");
    println!("{:>8}  {:>18}  {:>22}", "shares", "log µs/op", "whole-record µs/op");
    for n in [10usize, 1_000, 10_000] {
        let shares: Vec<LocalShare> = (0..n).map(|i| share(&file, i)).collect();
        let state = dir.path().join(format!("state-{n}"));
        let book = ShareBook::new(&state, "u", "127.0.0.1:1");
        book.load();
        book.replace(&shares, &Default::default()).expect("fill the log");
        let extra = share(&file, n + 1);
        let t = Instant::now();
        for _ in 0..OPS / 2 {
            book.put(&extra).expect("put");
            book.remove(&extra.group, &extra.meta.name).expect("remove");
        }
        let log_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(OPS);

        let mut list = shares.clone();
        let record = state.join("whole.shares");
        let t = Instant::now();
        for i in 0..OPS {
            if i % 2 == 0 {
                list.push(extra.clone());
            } else {
                list.pop();
            }
            let bytes = postcard::to_stdvec(&list).expect("encode");
            drop(write_atomically(&record, &bytes).expect("rewrite"));
        }
        let whole_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(OPS);
        println!("{n:>8}  {log_us:>18.0}  {whole_us:>22.0}");
    }
}
