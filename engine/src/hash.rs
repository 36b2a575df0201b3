//! The hashing pool: SHA1 of pieces in parallel, the whole file beside them.
//!
//! [`HashPool`] owns a fixed set of worker threads fed through a crossbeam
//! channel. [`HashPool::hash_file`] reads a file piece by piece, queues one job
//! per piece on the workers and streams the whole-file SHA1 on the calling
//! thread at the same time, so hashing a file takes about as long as the
//! sequential whole-file hash alone. The `sha1` crate picks the SHA-NI
//! instructions at run time where the CPU has them.
//!
//! No file is ever read whole into a `Vec`: it is read with `pread` into a
//! handful of piece-sized buffers that go round between this thread and
//! the workers. (It used to be mapped; a file truncated meanwhile then
//! killed the process with SIGBUS.)

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use sha1::{Digest, Sha1};
use thiserror::Error;

use crate::fsio::PathIoError;
use crate::meta::{FileMeta, Geometry, PieceIndex, Sha1Digest, PIECE_LEN};

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
    /// The file changed (length or modification time) while it was being
    /// hashed.
    #[error("{0} changed while it was being hashed")]
    Changed(String),
    /// The file reads other than its length says, unchanged meanwhile: a
    /// pseudo-file (`/proc/cpuinfo` has length 0 and reads 2 KB), whose
    /// bytes would not be what its metadata promised.
    #[error("{0} does not read as long as its file system says (a pseudo-file, such as those under /proc or /sys)")]
    NotTrueLength(String),
    /// Hashing was stopped (see [`HashPool::hash_file_unless`]).
    #[error("stopped while hashing {0}")]
    Stopped(String),
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
    ///
    /// The file is read with `pread` into a few pooled piece buffers, not
    /// mapped: a file truncated while it is hashed (a log rotated, a file
    /// rewritten by another program) makes a mapping raise SIGBUS and kill
    /// the process, while a read just comes up short. That, or a length or
    /// modification time that differs at the end from the start, is
    /// [`HashError::Changed`].
    pub fn hash_file(&self, path: &Path, name: &str) -> Result<FileMeta, HashError> {
        self.hash_file_observed(path, name, &mut |_| {})
    }

    /// [`HashPool::hash_file`], given up with [`HashError::Stopped`] once
    /// `stop` is set (looked at before each piece: a large file does not
    /// hold a Ctrl-C until it is read whole).
    pub fn hash_file_unless(
        &self,
        path: &Path,
        name: &str,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<FileMeta, HashError> {
        self.hash(path, name, &mut |_| {}, stop)
    }

    /// [`HashPool::hash_file`], calling `after_read(piece)` once each
    /// piece has been read and added to the whole-file SHA1, in order
    /// (tests change the file there).
    pub fn hash_file_observed(
        &self,
        path: &Path,
        name: &str,
        after_read: &mut dyn FnMut(u32),
    ) -> Result<FileMeta, HashError> {
        self.hash(path, name, after_read, &std::sync::atomic::AtomicBool::new(false))
    }

    fn hash(
        &self,
        path: &Path,
        name: &str,
        after_read: &mut dyn FnMut(u32),
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<FileMeta, HashError> {
        use std::os::unix::fs::OpenOptionsExt;
        let shown = path.display().to_string();
        let stopped = || stop.load(std::sync::atomic::Ordering::Relaxed);
        if stopped() {
            return Err(HashError::Stopped(shown));
        }
        let io_err = |what| PathIoError::at(what, path);
        // Not blocking: a FIFO put where a file was (after the tree was
        // listed) is opened at once, and refused below, instead of waiting
        // for a writer that may never come.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(io_err("open"))?;
        let md = file.metadata().map_err(io_err("inspect"))?;
        if !md.is_file() {
            return Err(HashError::NotAFile(shown));
        }
        let len = md.len();
        let mtime = md.modified().ok();
        // Bytes rewritten in place (same length) show in the mtime; a file
        // that grew shows in the length.
        let unchanged = |file: &File| -> Result<(), HashError> {
            let after = file.metadata().map_err(io_err("inspect"))?;
            if after.len() != len || after.modified().ok() != mtime {
                return Err(HashError::Changed(shown.clone()));
            }
            Ok(())
        };
        if len == 0 {
            // An empty file reads nothing; a pseudo-file of length 0 reads
            // its text (or fails: /proc/self/mem).
            let mut one = [0u8; 1];
            match file.read_at(&mut one, 0) {
                Ok(0) => {}
                Ok(_) => {
                    unchanged(&file)?;
                    return Err(HashError::NotTrueLength(shown));
                }
                Err(e) => return Err(io_err("read")(e).into()),
            }
        }
        let geometry = Geometry::new(len);
        let count = geometry.piece_count() as usize;
        advise_sequential(&file);
        if count == 1 {
            // One piece: its SHA1 is the whole file's; read and hash it once,
            // here (a tree of small files hashes several files at once
            // instead, see the client's bulk sharing).
            let mut buf = vec![0; len as usize];
            match file.read_exact_at(&mut buf, 0) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    // Shorter than it says: cut meanwhile, or a pseudo-file.
                    unchanged(&file)?;
                    return Err(HashError::NotTrueLength(shown));
                }
                Err(e) => return Err(io_err("read")(e).into()),
            }
            after_read(0);
            unchanged(&file)?;
            let digest = sha1_of(&buf);
            return Ok(FileMeta {
                name: name.to_owned(),
                len,
                sha1: digest,
                piece_hashes: vec![digest],
            });
        }

        // Workers read and hash pieces into a few buffers that go round;
        // this thread feeds them, in order, to the whole-file SHA1 (the
        // longest sequential job, so the copy out of the page cache is the
        // workers'). Enough buffers that every worker has one while this
        // thread hashes another.
        let file = Arc::new(file);
        let slots = 2 * self.threads() + 2;
        let (free_tx, free_rx) = crossbeam_channel::bounded::<Vec<u8>>(slots);
        for _ in 0..slots.min(count) {
            let _ = free_tx.send(Vec::with_capacity(PIECE_LEN as usize));
        }
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let mut whole = Sha1::new();
        let mut piece_hashes = vec![Sha1Digest([0; 20]); count];
        let mut arrived: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        let (mut next_read, mut next_whole) = (0u32, 0u32);
        let count32 = count as u32; // piece indices are u32 (see PieceIndex)
        while next_whole < count32 {
            while next_read < count32 {
                let Ok(mut buf) = free_rx.try_recv() else { break };
                let r = geometry.range(PieceIndex::from_picker(next_read));
                let (file, done, piece) = (Arc::clone(&file), done_tx.clone(), next_read);
                self.spawn(move || {
                    buf.resize((r.end - r.start) as usize, 0);
                    let read = file.read_exact_at(&mut buf, r.start).map(|()| sha1_of(&buf));
                    let _ = done.send((piece, read, buf));
                });
                next_read += 1;
            }
            if stopped() {
                // Jobs under way finish into a channel nobody reads.
                return Err(HashError::Stopped(shown));
            }
            // The piece `next_whole` is being read: a job holds it.
            let (piece, read, buf) = done_rx.recv().expect("a hashing worker died");
            match read {
                Ok(digest) => piece_hashes[piece as usize] = digest,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(HashError::Changed(shown));
                }
                Err(e) => return Err(io_err("read")(e).into()),
            }
            arrived.insert(piece, buf);
            while let Some(buf) = arrived.remove(&next_whole) {
                whole.update(&buf);
                after_read(next_whole);
                next_whole += 1;
                let _ = free_tx.send(buf);
            }
        }
        unchanged(&file)?;
        let sha1 = Sha1Digest(whole.finalize().into());
        Ok(FileMeta { name: name.to_owned(), len, sha1, piece_hashes })
    }
}

/// Tells the kernel the file is read front to back (more read-ahead).
fn advise_sequential(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads its arguments; the descriptor is open.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
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
    fn a_file_truncated_while_hashing_is_an_error_not_a_crash() {
        // A sparse file hashes fast and costs no disk.
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(16 * PIECE_LEN).unwrap();
        let path = f.path().to_owned();
        let err = HashPool::new(2)
            .hash_file_observed(&path, "t", &mut |piece| {
                if piece == 2 {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .unwrap()
                        .set_len(4096)
                        .unwrap();
                }
            })
            .unwrap_err();
        assert!(matches!(err, HashError::Changed(_)), "{err}");
        assert_eq!(
            err.to_string(),
            format!("{} changed while it was being hashed", path.display())
        );
    }

    #[test]
    fn a_file_rewritten_in_place_while_hashing_is_an_error() {
        let f = file_with(&vec![7u8; 3 * PIECE_LEN as usize]);
        let path = f.path().to_owned();
        let err = HashPool::new(1)
            .hash_file_observed(&path, "t", &mut |piece| {
                if piece == 0 {
                    // Same length, new bytes (and a new mtime).
                    let w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                    w.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
                }
            })
            .unwrap_err();
        assert!(matches!(err, HashError::Changed(_)), "{err}");
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // (It blocked in open until something wrote to the FIFO.)
        let err = HashPool::new(1).hash_file(&fifo, "f").unwrap_err();
        assert!(matches!(err, HashError::NotAFile(_)), "{err}");
    }

    #[test]
    fn hashing_stops_between_pieces_once_told() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![7u8; 20 * PIECE_LEN as usize]).unwrap();
        let pool = HashPool::new(2);
        let stop = AtomicBool::new(false);
        assert!(pool.hash_file_unless(&path, "b", &stop).is_ok());
        // Told after the third piece: the rest is not read.
        let mut read = 0;
        let err = pool
            .hash(
                &path,
                "b",
                &mut |piece| {
                    read = piece + 1;
                    if piece == 2 {
                        stop.store(true, Ordering::Relaxed);
                    }
                },
                &stop,
            )
            .unwrap_err();
        assert!(matches!(err, HashError::Stopped(_)), "{err}");
        assert!(read < 20, "{read}");
        let err = pool.hash_file_unless(&path, "b", &stop).unwrap_err();
        assert!(matches!(err, HashError::Stopped(_)), "{err}");
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

    #[test]
    fn a_pseudo_file_is_refused_and_an_empty_file_is_not() {
        let pool = HashPool::new(1);
        // Length 0, reads text.
        let err = pool.hash_file(Path::new("/proc/self/status"), "status").unwrap_err();
        assert!(matches!(err, HashError::NotTrueLength(_)), "{err}");
        assert!(err.to_string().contains("pseudo-file"), "{err}");
        // Length 0, cannot be read at offset 0.
        let err = pool.hash_file(Path::new("/proc/self/mem"), "mem").unwrap_err();
        assert!(matches!(err, HashError::Io(_)), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        let meta = pool.hash_file(&empty, "empty").unwrap();
        assert_eq!((meta.len, meta.piece_hashes.len()), (0, 0));
    }
}
