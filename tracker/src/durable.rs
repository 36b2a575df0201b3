//! A tracker's data directory: the latest snapshot and the op logs after it.
//!
//! ```text
//! <data-dir>/snapshot    "RSSNAP2\0", CRC32C of the rest, postcard SnapshotFile
//!                        { version, image, next_log }; replaced atomically
//! <data-dir>/log.<n>     op logs (see oplog.rs); those with n >= next_log are replayed
//! <data-dir>/tracker     the tracker number the directory belongs to
//! <data-dir>/lock        locked (flock) while a tracker uses the directory
//! ```
//!
//! Start-up takes the lock, loads the snapshot (if any), replays every log
//! numbered from the snapshot's `next_log` on, and appends to the newest log.
//! What it refuses rather than start with less than was acknowledged: a
//! snapshot whose checksum fails, logs with a number missing among them (or
//! logs with no snapshot before them), and a damaged record anywhere but at
//! the end of the newest log or of the one before it (a crash while a
//! snapshot switched logs tears that one; see [`DataDir::begin_snapshot`]).
//! A torn tail in those two places is truncated. [`DataDir::snapshot`] switches appends to a new
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
use crate::replica::{Replica, ReplicaImage, ReplicaImageV2};

/// The snapshot format written: [`SNAPSHOT_MAGIC`], a checksum, the body,
/// whose state keeps membership ids.
const SNAPSHOT_VERSION: u32 = 3;
/// The checksummed format before membership ids (read, never written: its
/// members get id 0).
const SNAPSHOT_VERSION_NO_IDS: u32 = 2;
/// The first snapshot format: the postcard body alone, no checksum (read,
/// never written).
const SNAPSHOT_VERSION_UNCHECKED: u32 = 1;
/// How a checksummed snapshot starts, versions 2 and 3 alike (a version 1
/// file starts with the byte 1, its version).
const SNAPSHOT_MAGIC: &[u8; 8] = b"RSSNAP2\0";
/// The file naming the tracker a directory belongs to.
const NUMBER_FILE: &str = "tracker";
/// The file locked while a tracker uses the directory.
const LOCK_FILE: &str = "lock";

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
    /// Another process holds the directory.
    #[error("{path} is in use by another tracker ({holder}); two trackers on one data directory would corrupt its logs")]
    InUse {
        /// The directory.
        path: String,
        /// What the lock file says of its holder.
        holder: String,
    },
    /// The logs and the snapshot do not add up: some acknowledged ops are
    /// missing.
    #[error("{path}: {reason}; refusing to start rather than lose acknowledged ops")]
    Incomplete {
        /// The directory.
        path: String,
        /// What is missing.
        reason: String,
    },
    /// A file of the directory holds nonsense.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: String,
        /// What is wrong with it.
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
    /// Holds the directory's lock until the tracker is gone.
    _lock: fs::File,
}

impl DataDir {
    /// Opens (creating) `path` for tracker `me` and recovers its state.
    pub fn open(path: &Path, me: u16) -> Result<Opened, DataDirError> {
        private_dir(path).map_err(io_err("create", path))?;
        let lock = lock_dir(path)?;
        check_number(path, me)?;
        remove_temporaries(path);
        let shown = || path.display().to_string();
        let snap_path = path.join("snapshot");
        let (mut replica, next_log, snapshot) = match fs::read(&snap_path) {
            Ok(bytes) => {
                let snap = decode_snapshot(&bytes).map_err(|reason| DataDirError::Snapshot {
                    path: snap_path.display().to_string(),
                    reason,
                })?;
                if snap.image.me != me {
                    return Err(DataDirError::WrongTracker {
                        path: shown(),
                        found: snap.image.me,
                        expected: me,
                    });
                }
                (Replica::from_image(snap.image), snap.next_log, true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Replica::new(me), 1, false),
            Err(e) => return Err(io_err("read", &snap_path)(e)),
        };
        let mut logs = log_numbers(path)?;
        logs.retain(|n| *n >= next_log);
        check_sequence(&logs, next_log, snapshot)
            .map_err(|reason| DataDirError::Incomplete { path: shown(), reason })?;
        let mut replayed = 0;
        let mut torn_bytes = 0;
        let mut last_seq = 0;
        for (i, n) in logs.iter().enumerate() {
            // Only the newest log, and the one a snapshot was switching away
            // from, can end in a record a crash tore.
            let may_tear = i + 2 >= logs.len();
            let rec = read_log(&path.join(format!("log.{n}")), may_tear)?;
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
        record_number(path, me)?;
        Ok(Opened {
            replica,
            log,
            dir: DataDir { path: path.to_owned(), current_log, _lock: lock },
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
        let bytes = encode_snapshot(&snap).map_err(|e| DataDirError::Snapshot {
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

/// Removes the temporary files a tracker killed mid-write left in its data
/// directory (`snapshot.tmp`, `snapshot.tmp.PID.N`, the same for
/// `tracker`): under the lock nobody else writes there, and left, they
/// took the room a full disk had freed (each start that failed to write a
/// snapshot added one).
fn remove_temporaries(path: &Path) {
    let Ok(entries) = fs::read_dir(path) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = ["snapshot", "tracker"].iter().any(|base| {
            name.strip_prefix(base).and_then(|r| r.strip_prefix(".tmp")).is_some_and(|r| {
                r.is_empty()
                    || r.starts_with('.') && r[1..].chars().all(|c| c.is_ascii_digit() || c == '.')
            })
        });
        if ours && e.file_type().is_ok_and(|t| t.is_file()) && fs::remove_file(e.path()).is_ok() {
            tracing::info!("removed {}, a temporary file an earlier run left", e.path().display());
        }
    }
}

/// A snapshot file's bytes: the magic, the CRC32C of the body, the body.
fn encode_snapshot(snap: &SnapshotFile) -> Result<Vec<u8>, postcard::Error> {
    let body = postcard::to_stdvec(snap)?;
    let mut out = Vec::with_capacity(SNAPSHOT_MAGIC.len() + 4 + body.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads a snapshot file: a checksummed one, or one of the first format.
fn decode_snapshot(bytes: &[u8]) -> Result<SnapshotFile, String> {
    let (body, framed) = match bytes.strip_prefix(SNAPSHOT_MAGIC.as_slice()) {
        Some(rest) => {
            let (crc, body) = rest.split_at_checked(4).ok_or("cut short")?;
            let crc = u32::from_be_bytes(crc.try_into().map_err(|_| "cut short")?);
            if crc32c::crc32c(body) != crc {
                return Err("checksum mismatch: the file is damaged".into());
            }
            (body, true)
        }
        None => (bytes, false),
    };
    // The body is the postcard of a SnapshotFile: its version first, then
    // an image of that version's form, then next_log.
    let err = |e: postcard::Error| e.to_string();
    let (version, image) = postcard::take_from_bytes::<u32>(body).map_err(err)?;
    let (image, next_log, rest) = match (framed, version) {
        (true, SNAPSHOT_VERSION) => {
            let ((image, next_log), rest) =
                postcard::take_from_bytes::<(ReplicaImage, u64)>(image).map_err(err)?;
            (image, next_log, rest)
        }
        (true, SNAPSHOT_VERSION_NO_IDS) | (false, SNAPSHOT_VERSION_UNCHECKED) => {
            let ((image, next_log), rest) =
                postcard::take_from_bytes::<(ReplicaImageV2, u64)>(image).map_err(err)?;
            (image.into(), next_log, rest)
        }
        _ => {
            return Err(format!(
                "version {version} (this tracker reads {SNAPSHOT_VERSION_UNCHECKED} to \
                 {SNAPSHOT_VERSION})"
            ))
        }
    };
    if !rest.is_empty() {
        return Err(format!("{} bytes after its end", rest.len()));
    }
    Ok(SnapshotFile { version, image, next_log })
}

/// Checks that `logs` (sorted, those numbered `next_log` on) run from
/// `next_log` with no number missing. A snapshot makes its `next_log`
/// before it is written, and deletes older logs only once it is in place;
/// without one, logs start at 1.
fn check_sequence(logs: &[u64], next_log: u64, snapshot: bool) -> Result<(), String> {
    let Some(&first) = logs.first() else {
        return match snapshot {
            true => Err(format!("log.{next_log}, which the snapshot is followed by, is missing")),
            false => Ok(()),
        };
    };
    if first != next_log {
        return Err(match snapshot {
            true => format!("log.{next_log}, which the snapshot is followed by, is missing"),
            false => format!(
                "log.{first} is the oldest log but there is no snapshot (log.1 to log.{} or the \
                 snapshot before log.{first} is missing)",
                first - 1
            ),
        });
    }
    if let Some(w) = logs.windows(2).find(|w| w[1] != w[0] + 1) {
        return Err(format!("log.{} is missing between log.{} and log.{}", w[0] + 1, w[0], w[1]));
    }
    Ok(())
}

/// Makes `path` (and its missing parents) a directory only its owner may
/// read: it holds the users' password hashes, their sessions and the
/// ticket key (in the snapshot and the logs). One made by an earlier
/// version, readable by others, is closed to them, and so are the files in
/// it (0600) but the key: a key file others could read may be theirs
/// already, and the tracker refuses to start with it (`chmod 600` it, or
/// make a new key).
pub fn private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    let md = fs::metadata(path)?;
    if md.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    }
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        // Not through a link: only this directory's own files.
        let md = entry.metadata()?;
        if entry.file_name() == crate::links::KEY_FILE {
            continue;
        }
        if md.is_file() && md.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Locks the directory for this process (released when it exits, however
/// it exits). The lock file names the holder, for the error of the next.
fn lock_dir(path: &Path) -> Result<fs::File, DataDirError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let at = path.join(LOCK_FILE);
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&at)
        .map_err(io_err("open", &at))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io_err("lock", &at)(e));
        }
        let mut holder = String::new();
        let _ = f.take(64).read_to_string(&mut holder);
        let holder = match holder.trim() {
            "" => "its lock is held".to_owned(),
            pid => format!("process {pid}"),
        };
        return Err(DataDirError::InUse { path: path.display().to_string(), holder });
    }
    let mine = format!("{}\n", std::process::id());
    f.set_len(0)
        .and_then(|()| f.rewind())
        .and_then(|()| f.write_all(mine.as_bytes()))
        .map_err(io_err("write", &at))?;
    Ok(f)
}

/// Checks the tracker number the directory belongs to, if it names one:
/// the same data under another number would stamp its ops as another
/// tracker's.
fn check_number(path: &Path, me: u16) -> Result<(), DataDirError> {
    let at = path.join(NUMBER_FILE);
    match fs::read_to_string(&at) {
        Ok(text) => match text.trim().parse::<u16>() {
            Ok(found) if found == me => Ok(()),
            Ok(found) => Err(DataDirError::WrongTracker {
                path: path.display().to_string(),
                found,
                expected: me,
            }),
            Err(_) => Err(DataDirError::BadFile {
                path: at.display().to_string(),
                reason: format!(
                    "not a tracker number: {:?}",
                    text.chars().take(40).collect::<String>()
                ),
            }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("read", &at)(e)),
    }
}

/// Records the tracker number of a directory that has none yet (once it
/// was found to hold nothing of another number).
fn record_number(path: &Path, me: u16) -> Result<(), DataDirError> {
    let at = path.join(NUMBER_FILE);
    if at.exists() {
        return Ok(());
    }
    write_atomically(&at, format!("{me}\n").as_bytes()).map(drop).map_err(io_err("write", &at))
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

    /// Temporary files an earlier run left (killed, or failing to write
    /// on a full disk) are removed at start; other files are not.
    #[test]
    fn temporaries_left_by_an_earlier_run_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        drop(DataDir::open(dir.path(), 1).unwrap());
        let left = ["snapshot.tmp", "snapshot.tmp.4242.0", "tracker.tmp.17.3"];
        let kept = ["snapshot.tmpx", "notes.tmp", "snapshot.tmp.x"];
        for name in left.iter().chain(&kept) {
            fs::write(dir.path().join(name), b"partial").unwrap();
        }
        drop(DataDir::open(dir.path(), 1).unwrap());
        for name in left {
            assert!(!dir.path().join(name).exists(), "{name}");
        }
        for name in kept {
            assert!(dir.path().join(name).exists(), "{name}");
        }
    }

    /// Password hashes, sessions and the ticket key are in the snapshot
    /// and the logs: the directory and every file in it are the owner's
    /// only, a directory an earlier version made readable included.
    #[test]
    fn the_data_directory_is_its_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("new/data");
        let mut o = DataDir::open(&at, 1).unwrap();
        assert_eq!(mode(&at), 0o700);
        append(&mut o.replica, &o.log, user(1));
        o.dir.snapshot(&o.replica, &mut o.log).unwrap();
        append(&mut o.replica, &o.log, user(2));
        drop(o);
        let old = dir.path().join("old");
        fs::create_dir(&old).unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o755)).unwrap();
        drop(DataDir::open(&old, 1).unwrap());
        for f in fs::read_dir(&old).unwrap() {
            fs::set_permissions(f.unwrap().path(), fs::Permissions::from_mode(0o644)).unwrap();
        }
        fs::set_permissions(&old, fs::Permissions::from_mode(0o755)).unwrap();
        drop(DataDir::open(&old, 1).unwrap());
        assert_eq!(mode(&old), 0o700);
        for f in fs::read_dir(&old).unwrap() {
            let f = f.unwrap().path();
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
        let files: Vec<_> = fs::read_dir(&at).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(files.iter().any(|f| f.ends_with("snapshot")), "{files:?}");
        assert!(files.iter().any(|f| f.ends_with("log.2")), "{files:?}");
        for f in files {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
    }

    /// A snapshot that fails after the switch to a new log (its file could
    /// not be written): the logs pile up, all of them needed.
    fn failed_snapshot(o: &mut Opened) {
        let (next, path) = o.dir.next_log();
        let new_log = OpLog::open(&path, 0).unwrap();
        drop(o.dir.begin_snapshot(&o.replica, &mut o.log, next, new_log));
    }

    fn open_err(dir: &Path) -> String {
        DataDir::open(dir, 1).unwrap_err().to_string()
    }

    #[test]
    fn damage_that_would_lose_acknowledged_ops_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        {
            let mut o = DataDir::open(d, 1).unwrap();
            for i in 0..4 {
                append(&mut o.replica, &o.log, user(i));
                failed_snapshot(&mut o);
            }
            append(&mut o.replica, &o.log, user(4));
        }
        assert_eq!(log_numbers(d).unwrap(), vec![1, 2, 3, 4, 5]);
        let o = DataDir::open(d, 1).unwrap();
        assert_eq!(o.replayed, 5, "logs with no snapshot before them, from log.1");
        drop(o);

        // A record that does not check out at the end of log.1, which four
        // logs follow: not a crash's tear. The file is left as it was.
        let log1 = d.join("log.1");
        let good = std::fs::read(&log1).unwrap();
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        std::fs::write(&log1, &bad).unwrap();
        let err = open_err(d);
        assert!(err.contains("log.1: corrupt record at offset 0"), "{err}");
        assert_eq!(std::fs::read(&log1).unwrap(), bad);
        std::fs::write(&log1, &good).unwrap();

        // A log missing in the middle, and at the start.
        let log3 = d.join("log.3");
        std::fs::rename(&log3, d.join("away")).unwrap();
        let err = open_err(d);
        assert!(err.contains("log.3 is missing between log.2 and log.4"), "{err}");
        std::fs::rename(d.join("away"), &log3).unwrap();
        std::fs::rename(&log1, d.join("away")).unwrap();
        let err = open_err(d);
        assert!(err.contains("log.2 is the oldest log but there is no snapshot"), "{err}");
        std::fs::rename(d.join("away"), &log1).unwrap();

        // With a snapshot: its log missing; then its checksum failing.
        let mut o = DataDir::open(d, 1).unwrap();
        o.dir.snapshot(&o.replica, &mut o.log).unwrap();
        append(&mut o.replica, &o.log, user(5));
        drop(o);
        assert_eq!(log_numbers(d).unwrap(), vec![6]);
        std::fs::rename(d.join("log.6"), d.join("away")).unwrap();
        let err = open_err(d);
        assert!(err.contains("log.6, which the snapshot is followed by, is missing"), "{err}");
        std::fs::rename(d.join("away"), d.join("log.6")).unwrap();
        let snap = d.join("snapshot");
        let good = std::fs::read(&snap).unwrap();
        for at in [SNAPSHOT_MAGIC.len() + 4, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            std::fs::write(&snap, &bad).unwrap();
            let err = open_err(d);
            assert!(err.contains("checksum mismatch"), "byte {at}: {err}");
        }
        std::fs::write(&snap, &good[..good.len() - 1]).unwrap();
        assert!(open_err(d).contains("checksum mismatch"));
        std::fs::write(&snap, &good).unwrap();
        let o = DataDir::open(d, 1).unwrap();
        for i in 0..6 {
            assert!(o.replica.state().user_exists(&format!("u{i}")), "u{i}");
        }
    }

    #[test]
    fn a_snapshot_of_the_first_format_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut o = DataDir::open(d, 1).unwrap();
        append(&mut o.replica, &o.log, user(0));
        let old = (SNAPSHOT_VERSION_UNCHECKED, legacy(o.replica.image()), 1u64);
        drop(o);
        std::fs::write(d.join("snapshot"), postcard::to_stdvec(&old).unwrap()).unwrap();
        std::fs::remove_file(d.join("log.1")).unwrap();
        std::fs::write(d.join("log.1"), b"").unwrap();
        let o = DataDir::open(d, 1).unwrap();
        assert!(o.replica.state().user_exists("u0"));
        drop(o);
        // A version it does not know, checksummed or not, is refused.
        let newer = SnapshotFile { version: 9, image: Replica::new(1).image(), next_log: 1 };
        std::fs::write(d.join("snapshot"), postcard::to_stdvec(&newer).unwrap()).unwrap();
        assert!(open_err(d).contains("version 9"), "{}", open_err(d));
        std::fs::write(d.join("snapshot"), encode_snapshot(&newer).unwrap()).unwrap();
        assert!(open_err(d).contains("version 9"), "{}", open_err(d));
    }

    /// What shares hold is counted again from a snapshot and its logs (a
    /// state read from bytes holds no count): a tracker's limits hold
    /// across restarts.
    #[test]
    fn what_shares_hold_is_counted_again_at_start() {
        use ringshare_engine::meta::{FileMeta, Sha1Digest};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let share = |n: u8| Op::UploadFile {
            user: "u0".into(),
            peer_addr: "127.0.0.1:1".into(),
            group: "g".into(),
            meta: FileMeta {
                name: format!("f{n}"),
                len: 1,
                sha1: Sha1Digest([n; 20]),
                piece_hashes: vec![Sha1Digest([n; 20])],
            },
        };
        let mut o = DataDir::open(d, 1).unwrap();
        append(&mut o.replica, &o.log, user(0));
        append(&mut o.replica, &o.log, Op::CreateGroup { user: "u0".into(), group: "g".into() });
        append(&mut o.replica, &o.log, share(1));
        // In the snapshot's compacted base, not among its entries.
        o.replica.compact(&[]);
        o.dir.snapshot(&o.replica, &mut o.log).unwrap();
        append(&mut o.replica, &o.log, share(2));
        let held = |o: &Opened| {
            let st = o.replica.state();
            (st.share_bytes("u0"), st.total_share_bytes())
        };
        let before = held(&o);
        assert!(before.0 > 0 && before.1 > before.0, "{before:?}");
        drop(o);
        let o = DataDir::open(d, 1).unwrap();
        assert_eq!(o.replayed, 1, "one op after the snapshot");
        assert_eq!(held(&o), before);
    }

    /// `image` in the form snapshots before membership ids held.
    fn legacy(image: ReplicaImage) -> ReplicaImageV2 {
        ReplicaImageV2 {
            me: image.me,
            hlc: image.hlc,
            base: image.base.into(),
            base_known: image.base_known,
            entries: image.entries,
        }
    }

    #[test]
    fn a_snapshot_without_membership_ids_is_read_and_its_members_get_id_0() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut o = DataDir::open(d, 1).unwrap();
        for (i, u) in ["a", "b"].into_iter().enumerate() {
            let user = u.to_owned();
            append(&mut o.replica, &o.log, Op::CreateUser { user, password_hash: "h".into() });
            let group = format!("g{i}");
            append(&mut o.replica, &o.log, Op::CreateGroup { user: u.into(), group });
        }
        // Every op in the base, as the tracker of an earlier version wrote it.
        o.replica.compact(&[]);
        let image = o.replica.image();
        assert_eq!(image.entries.len(), 0, "everything compacted");
        let before = o.replica.state().member_since("a", "g0").unwrap();
        assert_ne!(before, 0);
        drop(o);
        let old = (SNAPSHOT_VERSION_NO_IDS, legacy(image), 1u64);
        let body = postcard::to_stdvec(&old).unwrap();
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        bytes.extend_from_slice(&body);
        std::fs::write(d.join("snapshot"), bytes).unwrap();
        std::fs::remove_file(d.join("log.1")).unwrap();
        std::fs::write(d.join("log.1"), b"").unwrap();
        let mut o = DataDir::open(d, 1).unwrap();
        assert_eq!(o.replica.state().member_since("a", "g0"), Ok(0));
        assert_eq!(o.replica.state().member_since("b", "g1"), Ok(0));
        // Memberships made from now on have ids, and keep them through a
        // snapshot of the current version.
        append(&mut o.replica, &o.log, Op::JoinGroup { user: "b".into(), group: "g0".into() });
        let accept = Op::AcceptRequest { owner: "a".into(), group: "g0".into(), user: "b".into() };
        append(&mut o.replica, &o.log, accept);
        let id = o.replica.state().member_since("b", "g0").unwrap();
        assert_ne!(id, 0);
        o.dir.snapshot(&o.replica, &mut o.log).unwrap();
        drop(o);
        let o = DataDir::open(d, 1).unwrap();
        assert_eq!(o.replica.state().member_since("b", "g0"), Ok(id));
        assert_eq!(o.replica.state().member_since("a", "g0"), Ok(0));
    }

    #[test]
    fn one_directory_serves_one_tracker_of_one_number() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let o = DataDir::open(d, 1).unwrap();
        let err = open_err(d);
        assert!(err.contains("is in use by another tracker"), "{err}");
        assert!(err.contains(&format!("process {}", std::process::id())), "{err}");
        drop(o);
        // Its number is recorded; with no snapshot yet, only that tells.
        let err = DataDir::open(d, 2).unwrap_err();
        assert!(matches!(err, DataDirError::WrongTracker { found: 1, expected: 2, .. }), "{err}");
        drop(DataDir::open(d, 1).unwrap());
        std::fs::write(d.join(NUMBER_FILE), "x\n").unwrap();
        assert!(open_err(d).contains("not a tracker number"));
        // A directory of an earlier version, with no number file: the
        // snapshot's number counts, and no file is written for a wrong one.
        std::fs::remove_file(d.join(NUMBER_FILE)).unwrap();
        let mut o = DataDir::open(d, 1).unwrap();
        o.dir.snapshot(&o.replica, &mut o.log).unwrap();
        drop(o);
        std::fs::remove_file(d.join(NUMBER_FILE)).unwrap();
        assert!(matches!(DataDir::open(d, 3), Err(DataDirError::WrongTracker { found: 1, .. })));
        assert!(!d.join(NUMBER_FILE).exists());
    }
}
