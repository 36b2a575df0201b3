//! The hashing pool: SHA1 of pieces in parallel, the whole file beside them.
//!
//! [`HashPool`] owns a fixed set of worker threads fed through a crossbeam
//! channel. [`HashPool::hash_file`] maps a file into memory, queues one job
//! per piece on the workers and streams the whole-file SHA1 on the calling
//! thread at the same time, so hashing a file takes about as long as the
//! sequential whole-file hash alone. The `sha1` crate picks the SHA-NI
//! instructions at run time where the CPU has them.
//!
//! No file is ever read whole into a `Vec`: the bytes are the page cache's,
//! seen through the mapping.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use memmap2::{Advice, Mmap};
use sha1::{Digest, Sha1};
use thiserror::Error;

use crate::fsio::PathIoError;
use crate::meta::{FileMeta, Geometry, Sha1Digest};

/// A unit of work for the pool.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// Why a file could not be hashed.
#[derive(Debug, Error)]
pub enum HashError {
    /// The file could not be opened, inspected or mapped.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// The path names something other than a regular file.
    #[error("{0} is not a regular file")]
    NotAFile(String),
    /// The file changed length while it was being hashed.
    #[error("{0} changed while it was being hashed")]
    Changed(String),
}

/// A fixed pool of hashing threads.
#[derive(Debug)]
pub struct HashPool {
    jobs: Option<Sender<Job>>,
    workers: Vec<thread::JoinHandle<()>>,
}

impl HashPool {
    /// A pool sized for this machine: one worker per core but one, because
    /// the caller's thread is busy too (the whole-file SHA1 in
    /// [`HashPool::hash_file`], receiving in a download). Measured on 2 cores,
    /// 64 MiB: 1 worker 36 ms (the whole-file hash alone takes 35 ms), 2
    /// workers 43 ms — the second worker only steals the sequential hash's core.
    pub fn with_available_cores() -> Self {
        Self::new(thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1)))
    }

    /// A pool of `threads` workers (at least one).
    pub fn new(threads: usize) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let workers = (0..threads.max(1))
            .map(|i| {
                let rx: Receiver<Job> = rx.clone();
                thread::Builder::new()
                    .name(format!("hash-{i}"))
                    .spawn(move || {
                        for job in rx {
                            job();
                        }
                    })
                    .expect("spawn hashing thread")
            })
            .collect();
        Self { jobs: Some(tx), workers }
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Runs `job` on a worker.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        if let Some(jobs) = &self.jobs {
            // The workers only stop when `jobs` is dropped, so the channel is open.
            let _ = jobs.send(Box::new(job));
        }
    }

    /// Hashes the file at `path` into a [`FileMeta`] named `name`: the
    /// whole-file SHA1 on this thread, the piece SHA1s on the workers.
    pub fn hash_file(&self, path: &Path, name: &str) -> Result<FileMeta, HashError> {
        let shown = path.display().to_string();
        let io_err = |what| PathIoError::at(what, path);
        let file = File::open(path).map_err(io_err("open"))?;
        let md = file.metadata().map_err(io_err("inspect"))?;
        if !md.is_file() {
            return Err(HashError::NotAFile(shown));
        }
        let len = md.len();
        if len == 0 {
            return Ok(FileMeta {
                name: name.to_owned(),
                len: 0,
                sha1: Sha1Digest(Sha1::digest([]).into()),
                piece_hashes: Vec::new(),
            });
        }
        // SAFETY: the mapping is read-only and private to this call. If another
        // process truncates the file while it is mapped, reading the vanished
        // pages raises SIGBUS; that is the documented risk of hashing a file in
        // place, the same one every mmap-based hasher takes. Writers that change
        // bytes without truncating only make the hashes describe a mix, which
        // the length check below and the downloader's verification catch.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err("map"))?;
        if map.len() as u64 != len {
            return Err(HashError::Changed(shown));
        }
        let _ = map.advise(Advice::Sequential);
        let map = Arc::new(map);
        let geometry = Geometry::new(len);
        let count = geometry.piece_count() as usize;

        let (done_tx, done_rx) = crossbeam_channel::bounded(count);
        for piece in geometry.pieces() {
            let map = Arc::clone(&map);
            let done = done_tx.clone();
            let r = geometry.range(piece);
            self.spawn(move || {
                let digest = sha1_of(&map[r.start as usize..r.end as usize]);
                let _ = done.send((piece.get() as usize, digest));
            });
        }
        drop(done_tx);

        let whole = sha1_of(&map[..]);
        let mut piece_hashes = vec![Sha1Digest([0; 20]); count];
        let mut received = 0;
        for (i, digest) in done_rx {
            piece_hashes[i] = digest;
            received += 1;
        }
        assert_eq!(received, count, "a hashing worker died");
        Ok(FileMeta { name: name.to_owned(), len, sha1: whole, piece_hashes })
    }
}

impl Drop for HashPool {
    fn drop(&mut self) {
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// SHA1 of a byte slice.
pub fn sha1_of(bytes: &[u8]) -> Sha1Digest {
    Sha1Digest(Sha1::digest(bytes).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::PIECE_LEN;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        f
    }

    #[test]
    fn known_digests() {
        // FIPS 180 test vector.
        assert_eq!(sha1_of(b"abc").to_hex(), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(sha1_of(b"").to_hex(), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }

    #[test]
    fn empty_file_has_no_pieces() {
        let f = file_with(b"");
        let meta = HashPool::new(2).hash_file(f.path(), "e").unwrap();
        assert_eq!(meta.len, 0);
        assert!(meta.piece_hashes.is_empty());
        assert_eq!(meta.sha1, sha1_of(b""));
        meta.validate().unwrap();
    }

    #[test]
    fn pieces_match_sequential_hashing() {
        let bytes: Vec<u8> = (0..(2 * PIECE_LEN + 12345)).map(|i| (i * 31 % 251) as u8).collect();
        let f = file_with(&bytes);
        let meta = HashPool::new(3).hash_file(f.path(), "x").unwrap();
        meta.validate().unwrap();
        assert_eq!(meta.sha1, sha1_of(&bytes));
        for (i, chunk) in bytes.chunks(PIECE_LEN as usize).enumerate() {
            assert_eq!(meta.piece_hashes[i], sha1_of(chunk), "piece {i}");
        }
    }

    #[test]
    fn directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = HashPool::new(1).hash_file(dir.path(), "d").unwrap_err();
        assert!(matches!(err, HashError::NotAFile(_)), "{err}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = HashPool::new(1).hash_file(Path::new("/nonexistent/zz"), "z").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/zz"), "{err}");
    }
}
