//! `ringshare-hash FILE…`: hashes files the way `upload_file` does (the
//! whole-file SHA1 streamed on this thread, piece SHA1s on the pool) and
//! prints the time and GB/s — for comparison with `openssl dgst -sha1`.

use std::time::Instant;

use ringshare_engine::hash::HashPool;

fn main() {
    let pool = HashPool::with_available_cores();
    let mut failed = false;
    for path in std::env::args_os().skip(1) {
        let path = std::path::PathBuf::from(path);
        let t = Instant::now();
        match pool.hash_file(&path, "bench") {
            Ok(meta) => {
                let s = t.elapsed().as_secs_f64();
                println!(
                    "{}: {} bytes, {} pieces, sha1 {} in {s:.3} s: {:.2} GB/s",
                    path.display(),
                    meta.len,
                    meta.piece_hashes.len(),
                    meta.sha1,
                    meta.len as f64 / s / 1e9
                );
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
