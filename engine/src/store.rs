//! Where a download's pieces live until it completes.
//!
//! `<destination>.part` is preallocated to the file's length (fallocate, so a
//! full disk shows up at the start, not mid-download) and written piece by
//! piece at the pieces' offsets. `<destination>.part.state` records the file's
//! identity and which pieces are verified, rewritten atomically (temporary
//! file, fsync, rename), so a restarted client resumes where it stopped. When
//! every piece is verified, the data is fsync'ed and `.part` becomes the
//! destination — never replacing a file that appeared there meanwhile.
//!
//! On resume, every piece the state claims is hashed again before it counts:
//! a crash can leave the state ahead of the data that reached the disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::hash::sha1_of;
use crate::meta::{Bitfield, FileMeta, Sha1Digest};

/// Why a download's storage failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The destination already exists; it is never overwritten.
    #[error("destination {0} already exists")]
    Exists(String),
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| StoreError::Io { what, path: path.display().to_string(), source }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct PartState {
    sha1: Sha1Digest,
    len: u64,
    bits: Vec<u8>,
}

/// A download's `.part` file and its persisted bitfield.
#[derive(Debug)]
pub struct PartFile {
    dest: PathBuf,
    part: PathBuf,
    state: PathBuf,
    file: File,
    meta: FileMeta,
    /// Serialises state writes; holds the number of pieces last recorded so
    /// an older snapshot never overwrites a newer one.
    written: std::sync::Mutex<Option<u32>>,
}

impl PartFile {
    /// Opens (resuming) or creates the part file for `meta` at `dest`.
    /// Returns it and the pieces already verified.
    pub fn open(dest: &Path, meta: &FileMeta) -> Result<(Self, Bitfield), StoreError> {
        if dest.exists() {
            return Err(StoreError::Exists(dest.display().to_string()));
        }
        let part = suffixed(dest, ".part");
        let state = suffixed(dest, ".part.state");
        let pieces = meta.piece_hashes.len() as u32;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)
            .map_err(StoreError::io("create", &part))?;
        let claimed = read_state(&state, meta).unwrap_or_else(|| Bitfield::new(pieces));
        let current = file.metadata().map_err(StoreError::io("inspect", &part))?.len();
        if current != meta.len {
            file.set_len(0).map_err(StoreError::io("truncate", &part))?;
            preallocate(&file, meta.len).map_err(StoreError::io("preallocate", &part))?;
        }
        let this = Self {
            dest: dest.to_owned(),
            part,
            state,
            file,
            meta: meta.clone(),
            written: std::sync::Mutex::new(None),
        };
        let have =
            if current == meta.len { this.reverify(&claimed) } else { Bitfield::new(pieces) };
        this.persist(&have, true)?;
        Ok((this, have))
    }

    /// The open `.part` file (for serving its verified pieces).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Path of the `.part` file.
    pub fn part_path(&self) -> &Path {
        &self.part
    }

    /// Writes a piece's bytes at its offset. Safe to call from several threads.
    pub fn write_piece(&self, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        self.file.write_all_at(data, offset).map_err(StoreError::io("write", &self.part))
    }

    /// Records the verified pieces, atomically. `durable` also fsyncs the
    /// record: without it the record survives a killed process (the page
    /// cache keeps it) but not a power cut; resume re-verifies either way.
    /// A snapshot with fewer pieces than the last one written is skipped.
    pub fn persist(&self, have: &Bitfield, durable: bool) -> Result<(), StoreError> {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if written.is_some_and(|n| n > have.count_ones()) {
            return Ok(());
        }
        let st =
            PartState { sha1: self.meta.sha1, len: self.meta.len, bits: have.as_bytes().to_vec() };
        let bytes = postcard::to_stdvec(&st).map_err(|e| StoreError::Io {
            what: "encode",
            path: self.state.display().to_string(),
            source: io::Error::other(e),
        })?;
        let tmp = suffixed(&self.state, ".tmp");
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            if durable {
                f.sync_data()?;
            }
            fs::rename(&tmp, &self.state)
        };
        write().map_err(StoreError::io("write", &self.state))?;
        *written = Some(have.count_ones());
        Ok(())
    }

    /// Every piece is verified: make the data durable and move it to the
    /// destination (refusing to replace a file that appeared there).
    pub fn finish(&self) -> Result<(), StoreError> {
        // No state write may land after the state file is removed.
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        *written = Some(u32::MAX);
        self.file.sync_all().map_err(StoreError::io("sync", &self.part))?;
        if let Err(e) = fs::hard_link(&self.part, &self.dest) {
            return Err(if e.kind() == io::ErrorKind::AlreadyExists {
                StoreError::Exists(self.dest.display().to_string())
            } else {
                StoreError::io("link", &self.dest)(e)
            });
        }
        fs::remove_file(&self.part).map_err(StoreError::io("remove", &self.part))?;
        let _ = fs::remove_file(&self.state);
        if let Some(dir) = self.dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Hashes every claimed piece again; keeps those that match.
    fn reverify(&self, claimed: &Bitfield) -> Bitfield {
        let g = self.meta.geometry();
        let mut ok = Bitfield::new(claimed.len());
        let mut buf = Vec::new();
        for p in g.pieces() {
            if !claimed.get(p.get()) {
                continue;
            }
            let r = g.range(p);
            buf.resize((r.end - r.start) as usize, 0);
            if self.file.read_exact_at(&mut buf, r.start).is_ok()
                && sha1_of(&buf) == self.meta.piece_hashes[p.get() as usize]
            {
                ok.set(p.get());
            }
        }
        ok
    }
}

fn read_state(path: &Path, meta: &FileMeta) -> Option<Bitfield> {
    let bytes = fs::read(path).ok()?;
    let st: PartState = postcard::from_bytes(&bytes).ok()?;
    if st.sha1 != meta.sha1 || st.len != meta.len {
        return None;
    }
    Bitfield::from_bytes(&st.bits, meta.piece_hashes.len() as u32)
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Reserves `len` bytes for the file so that a full disk fails now.
fn preallocate(file: &File, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let Ok(len) = libc::off_t::try_from(len) else {
        return Err(io::Error::other("file too large"));
    };
    // SAFETY: fallocate is called on a valid, open, writable descriptor owned
    // by `file` for the duration of the call; it touches no user memory.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // Filesystems without fallocate (tmpfs on old kernels, some FUSE): size it sparsely.
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => file.set_len(len as u64),
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashPool;
    use crate::meta::PIECE_LEN;

    fn source(dir: &Path, len: usize) -> (Vec<u8>, FileMeta) {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let p = dir.join("src");
        fs::write(&p, &bytes).unwrap();
        let meta = HashPool::new(1).hash_file(&p, "f").unwrap();
        (bytes, meta)
    }

    #[test]
    fn write_resume_and_finish() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, meta) = source(dir.path(), 2 * PIECE_LEN as usize + 7);
        let dest = dir.path().join("out");
        let g = meta.geometry();
        {
            let (part, have) = PartFile::open(&dest, &meta).unwrap();
            assert_eq!(have.count_ones(), 0);
            assert_eq!(fs::metadata(part.part_path()).unwrap().len(), meta.len, "preallocated");
            let mut have = have;
            let p0 = g.range(g.piece(0).unwrap());
            part.write_piece(p0.start, &bytes[p0.start as usize..p0.end as usize]).unwrap();
            have.set(0);
            // Claims piece 1 too, without its data: resume must not trust it.
            have.set(1);
            part.persist(&have, true).unwrap();
        }
        let (part, have) = PartFile::open(&dest, &meta).unwrap();
        assert!(have.get(0) && !have.get(1) && !have.get(2), "{have:?}");
        for p in [1u32, 2] {
            let r = g.range(g.piece(p as u64).unwrap());
            part.write_piece(r.start, &bytes[r.start as usize..r.end as usize]).unwrap();
        }
        part.finish().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), bytes);
        assert!(!part.part_path().exists());
        assert!(matches!(PartFile::open(&dest, &meta), Err(StoreError::Exists(_))));
    }

    #[test]
    fn state_of_another_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (_, meta) = source(dir.path(), 100);
        let dest = dir.path().join("out");
        let (part, mut have) = PartFile::open(&dest, &meta).unwrap();
        have.set(0);
        part.persist(&have, true).unwrap();
        let mut other = meta.clone();
        other.sha1 = Sha1Digest([9; 20]);
        let (_, have) = PartFile::open(&dest, &other).unwrap();
        assert_eq!(have.count_ones(), 0);
    }

    #[test]
    fn empty_file_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let (_, meta) = source(dir.path(), 0);
        let dest = dir.path().join("empty");
        let (part, have) = PartFile::open(&dest, &meta).unwrap();
        assert!(have.is_complete());
        part.finish().unwrap();
        assert_eq!(fs::metadata(&dest).unwrap().len(), 0);
    }
}
