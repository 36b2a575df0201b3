//! Hashing a file: the pool (whole-file SHA1 beside parallel piece SHA1s)
//! against one thread doing both in turn.

use std::io::Write;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringshare_engine::hash::{sha1_of, HashPool};
use ringshare_engine::meta::PIECE_LEN;

const FILE_LEN: usize = 64 * 1024 * 1024;

fn bench_hash(c: &mut Criterion) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..FILE_LEN / chunk.len() {
        for b in chunk.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        file.write_all(&chunk).unwrap();
    }
    file.flush().unwrap();
    let bytes = std::fs::read(file.path()).unwrap(); // only for the one-thread baseline

    let mut g = c.benchmark_group("hash_64MiB");
    g.throughput(Throughput::Bytes(FILE_LEN as u64));
    g.sample_size(10);
    g.bench_function("one_thread_whole_then_pieces", |b| {
        b.iter(|| {
            let whole = sha1_of(&bytes);
            let pieces: Vec<_> = bytes.chunks(PIECE_LEN as usize).map(sha1_of).collect();
            (whole, pieces)
        })
    });
    g.bench_function("whole_file_sha1_only", |b| b.iter(|| sha1_of(&bytes)));
    for threads in [1, 2] {
        let pool = HashPool::new(threads);
        g.bench_with_input(BenchmarkId::new("pool_hash_file", threads), &threads, |b, _| {
            b.iter(|| pool.hash_file(file.path(), "bench").unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench_hash);
criterion_main!(benches);
