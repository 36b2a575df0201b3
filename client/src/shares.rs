//! The node's own record of what it shares, kept on disk so that the next
//! `login` of the same user at the same node address — in this process or
//! after a restart — resumes sharing without a new `upload_file`.
//!
//! One file per (user, node address) in the state directory, written
//! atomically (temporary file, fsync, rename). Each share remembers the
//! file's path, its metadata and a cheap fingerprint (length and mtime) that
//! tells whether the file changed since it was hashed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use ringshare_engine::fsio::write_atomically;
use ringshare_engine::meta::FileMeta;
use serde::{Deserialize, Serialize};

/// A file this node shares in a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalShare {
    /// The group it is shared in.
    pub group: String,
    /// Where the file is on disk (absolute).
    pub path: PathBuf,
    /// Its metadata as registered with the tracker.
    pub meta: FileMeta,
    /// Modification time (ns since the epoch) when it was hashed.
    pub mtime_ns: u128,
}

/// Why a recorded share can no longer be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staleness {
    /// The file is gone or unreadable.
    Missing(String),
    /// Its length or modification time changed.
    Changed,
}

impl LocalShare {
    /// Records a freshly hashed file.
    pub fn new(group: String, path: PathBuf, meta: FileMeta) -> std::io::Result<Self> {
        let mtime_ns = mtime_ns(&path)?;
        Ok(Self { group, path, meta, mtime_ns })
    }

    /// Checks that the file is still there and unchanged.
    pub fn check(&self) -> Result<(), Staleness> {
        let md = fs::metadata(&self.path).map_err(|e| Staleness::Missing(e.to_string()))?;
        if !md.is_file() || md.len() != self.meta.len {
            return Err(Staleness::Changed);
        }
        match mtime_ns(&self.path) {
            Ok(t) if t == self.mtime_ns => Ok(()),
            Ok(_) => Err(Staleness::Changed),
            Err(e) => Err(Staleness::Missing(e.to_string())),
        }
    }
}

fn mtime_ns(path: &Path) -> std::io::Result<u128> {
    let t = fs::metadata(path)?.modified()?;
    Ok(t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0))
}

/// The on-disk record of one user's shares at one node address.
#[derive(Debug, Clone)]
pub struct ShareBook {
    file: PathBuf,
}

impl ShareBook {
    /// The record for `user` at `node_addr` inside `state_dir`.
    pub fn new(state_dir: &Path, user: &str, node_addr: &str) -> Self {
        // User ids are validated names (no separators); ':' is fine in file names.
        let file = state_dir.join(format!("{user}@{node_addr}.shares"));
        Self { file }
    }

    /// The recorded shares; an absent or unreadable record is empty (and a
    /// warning is returned beside it).
    pub fn load(&self) -> (Vec<LocalShare>, Option<String>) {
        match fs::read(&self.file) {
            Ok(bytes) => match postcard::from_bytes(&bytes) {
                Ok(shares) => (shares, None),
                Err(e) => (Vec::new(), Some(format!("ignoring {}: {e}", self.file.display()))),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), None),
            Err(e) => (Vec::new(), Some(format!("read {}: {e}", self.file.display()))),
        }
    }

    /// Replaces the record, atomically.
    pub fn save(&self, shares: &[LocalShare]) -> std::io::Result<()> {
        let dir = self.file.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let bytes = postcard::to_stdvec(shares).map_err(std::io::Error::other)?;
        write_atomically(&self.file, &bytes).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringshare_engine::meta::Sha1Digest;

    #[test]
    fn record_round_trips_and_detects_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        fs::write(&path, b"hello").unwrap();
        let meta = FileMeta {
            name: "f.bin".into(),
            len: 5,
            sha1: Sha1Digest([1; 20]),
            piece_hashes: vec![],
        };
        let share = LocalShare::new("g".into(), path.clone(), meta).unwrap();
        share.check().unwrap();

        let book = ShareBook::new(dir.path(), "alice", "127.0.0.1:9000");
        assert_eq!(book.load(), (vec![], None));
        book.save(std::slice::from_ref(&share)).unwrap();
        assert_eq!(book.load().0, vec![share.clone()]);

        fs::write(&path, b"hello, world").unwrap();
        assert_eq!(share.check(), Err(Staleness::Changed));
        fs::remove_file(&path).unwrap();
        assert!(matches!(share.check(), Err(Staleness::Missing(_))));
    }

    #[test]
    fn corrupt_record_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let book = ShareBook::new(dir.path(), "bob", "127.0.0.1:1");
        fs::write(dir.path().join("bob@127.0.0.1:1.shares"), [0xff; 7]).unwrap();
        let (shares, warning) = book.load();
        assert!(shares.is_empty());
        assert!(warning.is_some());
    }
}
