//! Sample data for the demo, the benchmarks and the tests: incompressible
//! pseudo-random bytes (xorshift64), written without holding the file in
//! memory.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Writes `len` pseudo-random bytes derived from `seed` to `path`.
pub fn write_pseudo_random(path: &Path, len: u64, seed: u64) -> io::Result<()> {
    write_pseudo_random_until(path, len, seed, &std::sync::atomic::AtomicBool::new(false))
}

/// [`write_pseudo_random`], given up (an `Interrupted` error) within a
/// megabyte of `stop` being set.
pub fn write_pseudo_random_until(
    path: &Path,
    len: u64,
    seed: u64,
    stop: &std::sync::atomic::AtomicBool,
) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        for w in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(chunk.len() as u64) as usize;
        out.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    out.flush()
}

/// Parses `1GiB`, `256MiB`, `64KiB`, `2TiB`, `10GB`, `5MB`, `1TB`, `5M`, or
/// plain bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_and_determinism() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_pseudo_random(&a, 3 * 1024 * 1024 + 5, 1).unwrap();
        write_pseudo_random(&b, 3 * 1024 * 1024 + 5, 1).unwrap();
        let x = std::fs::read(&a).unwrap();
        assert_eq!(x.len(), 3 * 1024 * 1024 + 5);
        assert_eq!(x, std::fs::read(&b).unwrap());
        write_pseudo_random(&b, 10, 2).unwrap();
        assert_ne!(&x[..10], &std::fs::read(&b).unwrap()[..]);
    }

    #[test]
    fn sizes_in_binary_and_decimal_units() {
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("256mib"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert_eq!(parse_size("1TB"), Ok(1_000_000_000_000));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("1PiB").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("99999999TiB").unwrap_err().contains("too large"));
    }
}
