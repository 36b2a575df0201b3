//! A tracker's data directory: the latest snapshot and the op logs after it.
//!
//! ```text
//! <data-dir>/snapshot    postcard SnapshotFile { version, image, next_log }, replaced atomically
//! <data-dir>/log.<n>     op logs (see oplog.rs); those with n >= next_log are replayed
//! ```
//!
//! Start-up loads the snapshot (if any), replays every log numbered from the
//! snapshot's `next_log` on (torn tails truncated, corruption refused), and
//! appends to the newest log. [`DataDir::snapshot`] switches appends to a new
//! log, writes the snapshot (temporary file, fsync, rename, fsync the
//! directory) and only then deletes the logs it covers: a crash at any point
//! leaves a snapshot and logs that together hold every acknowledged op.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use ringshare_engine::fsio::{write_atomically, PathIoError};

use crate::oplog::{read_log, LogError, OpLog};
use crate::replica::{Replica, ReplicaImage};

const SNAPSHOT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    version: u32,
    image: ReplicaImage,
    next_log: u64,
}

/// Why a data directory cannot be opened.
#[derive(Debug, Error)]
pub enum DataDirError {
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// A log is damaged.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The snapshot is unreadable.
    #[error("{path}: unreadable snapshot ({reason})")]
    Snapshot {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The directory belongs to another tracker number.
    #[error("{path} holds the data of tracker {found}, not tracker {expected}")]
    WrongTracker {
        /// The directory.
        path: String,
        /// The tracker number in the snapshot.
        found: u16,
        /// This tracker's number.
        expected: u16,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DataDirError + 'a {
    let at = PathIoError::at(what, path);
    move |source| DataDirError::Io(at(source))
}

/// What opening a data directory found.
#[derive(Debug)]
pub struct Opened {
    /// The replica rebuilt from the snapshot and logs.
    pub replica: Replica,
    /// The log to append to.
    pub log: OpLog,
    /// The directory.
    pub dir: DataDir,
    /// Entries replayed from logs.
    pub replayed: usize,
    /// Bytes of torn tail dropped.
    pub torn_bytes: u64,
}

/// A tracker's data directory.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// The number of the log being appended to.
    current_log: u64,
}

impl DataDir {
    /// Opens (creating) `path` for tracker `me` and recovers its state.
    pub fn open(path: &Path, me: u16) -> Result<Opened, DataDirError> {
        fs::create_dir_all(path).map_err(io_err("create", path))?;
        let snap_path = path.join("snapshot");
        let (mut replica, next_log) = match fs::read(&snap_path) {
            Ok(bytes) => {
                let snap: SnapshotFile =
                    postcard::from_bytes(&bytes).map_err(|e| DataDirError::Snapshot {
                        path: snap_path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                if snap.version != SNAPSHOT_VERSION {
                    return Err(DataDirError::Snapshot {
                        path: snap_path.display().to_string(),
                        reason: format!(
                            "version {} (this tracker reads {SNAPSHOT_VERSION})",
                            snap.version
                        ),
                    });
                }
                if snap.image.me != me {
                    return Err(DataDirError::WrongTracker {
                        path: path.display().to_string(),
                        found: snap.image.me,
                        expected: me,
                    });
                }
                (Replica::from_image(snap.image), snap.next_log)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Replica::new(me), 1),
            Err(e) => return Err(io_err("read", &snap_path)(e)),
        };
        let mut logs = log_numbers(path)?;
        logs.retain(|n| *n >= next_log);
        let mut replayed = 0;
        let mut torn_bytes = 0;
        let mut last_seq = 0;
        for n in &logs {
            let rec = read_log(&path.join(format!("log.{n}")))?;
            torn_bytes += rec.torn_bytes;
            last_seq = rec.last_seq;
            for e in rec.entries {
                if replica.receive_deferred(e).unwrap_or(false) {
                    replayed += 1;
                }
            }
        }
        replica.settle();
        let current_log = logs.last().copied().unwrap_or(next_log);
        if logs.last() != Some(&current_log) {
            last_seq = 0;
        }
        let log_path = path.join(format!("log.{current_log}"));
        let log = OpLog::open(&log_path, last_seq).map_err(io_err("open", &log_path))?;
        Ok(Opened {
            replica,
            log,
            dir: DataDir { path: path.to_owned(), current_log },
            replayed,
            torn_bytes,
        })
    }

    /// Writes a snapshot of `replica` and starts a new log in place of
    /// `log`, deleting the logs the snapshot covers. The caller holds the
    /// replica's lock, so every entry in the old log is in the image.
    pub fn snapshot(&mut self, replica: &Replica, log: &mut OpLog) -> Result<(), DataDirError> {
        let (next, path) = self.next_log();
        let new_log = OpLog::open(&path, 0).map_err(io_err("open", &path))?;
        self.begin_snapshot(replica, log, next, new_log).write()
    }

    /// The number and path of the log the next snapshot starts. Open it
    /// ([`OpLog::open`]) before taking the replica's lock: only snapshots
    /// move the numbering on, and the caller runs one at a time.
    pub fn next_log(&self) -> (u64, PathBuf) {
        let next = self.current_log + 1;
        (next, self.path.join(format!("log.{next}")))
    }

    /// The part of a snapshot that needs the replica's lock: appends switch
    /// to `new_log` (numbered `next`, from [`DataDir::next_log`]) and the
    /// image is taken, so every entry is in exactly one of the two. The
    /// slow part — waiting for the old log, writing and syncing the file —
    /// is [`PendingSnapshot::write`], without the lock.
    pub fn begin_snapshot(
        &mut self,
        replica: &Replica,
        log: &mut OpLog,
        next: u64,
        new_log: OpLog,
    ) -> PendingSnapshot {
        let old = std::mem::replace(log, new_log);
        self.current_log = next;
        PendingSnapshot { path: self.path.clone(), next, old, image: replica.image() }
    }
}

/// A snapshot taken under the lock, not yet on disk. Until
/// [`PendingSnapshot::write`] finishes, the previous snapshot and every log
/// after it (the old ones are deleted only once the new snapshot is in
/// place) still hold every acknowledged op: a crash at any point recovers.
#[derive(Debug)]
pub struct PendingSnapshot {
    path: PathBuf,
    next: u64,
    old: OpLog,
    image: ReplicaImage,
}

impl PendingSnapshot {
    /// Waits for the old log's last writes, writes the snapshot (temporary
    /// file, fsync, rename, fsync the directory) and deletes the logs it
    /// covers.
    pub fn write(mut self) -> Result<(), DataDirError> {
        self.old.close(); // everything queued before the switch is on disk
        let snap =
            SnapshotFile { version: SNAPSHOT_VERSION, image: self.image, next_log: self.next };
        let bytes = postcard::to_stdvec(&snap).map_err(|e| DataDirError::Snapshot {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        })?;
        let dest = self.path.join("snapshot");
        write_atomically(&dest, &bytes).map_err(io_err("write", &dest))?;
        for n in log_numbers(&self.path)? {
            if n < self.next {
                let _ = fs::remove_file(self.path.join(format!("log.{n}")));
            }
        }
        Ok(())
    }
}

fn log_numbers(dir: &Path) -> Result<Vec<u64>, DataDirError> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let e = e.map_err(io_err("list", dir))?;
        if let Some(n) =
            e.file_name().to_str().and_then(|s| s.strip_prefix("log.")).and_then(|s| s.parse().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Op;
    use std::sync::mpsc;

    fn append(r: &mut Replica, log: &OpLog, op: Op) {
        let e = r.propose(op, 1).unwrap();
        let (tx, rx) = mpsc::channel();
        log.append(postcard::to_stdvec(&e).unwrap(), move |res| tx.send(res.is_ok()).unwrap());
        assert!(rx.recv().unwrap());
    }

    fn user(n: usize) -> Op {
        Op::CreateUser { user: format!("u{n}"), password_hash: "h".into() }
    }

    #[test]
    fn ops_survive_restarts_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = DataDir::open(dir.path(), 1).unwrap();
            for i in 0..5 {
                append(&mut o.replica, &o.log, user(i));
            }
        }
        let mut o = DataDir::open(dir.path(), 1).unwrap();
        assert_eq!(o.replayed, 5);
        assert!(o.replica.state().user_exists("u4"));
        o.dir.snapshot(&o.replica, &mut o.log).unwrap();
        append(&mut o.replica, &o.log, user(5));
        drop(o);
        let o = DataDir::open(dir.path(), 1).unwrap();
        assert_eq!(o.replayed, 1, "only the op after the snapshot is replayed");
        for i in 0..6 {
            assert!(o.replica.state().user_exists(&format!("u{i}")), "u{i}");
        }
        assert_eq!(log_numbers(dir.path()).unwrap(), vec![2]);
        drop(o);
        assert!(matches!(DataDir::open(dir.path(), 2), Err(DataDirError::WrongTracker { .. })));
    }
}
