//! The node's own record of what it shares, kept on disk so that the next
//! `login` of the same user at the same node address — in this process or
//! after a restart — resumes sharing without a new `upload_file`.
//!
//! One append-only log per (user, node address) in the state directory
//! (`<user>@<addr>.sharelog`): each `upload_file`, finished download,
//! `stop_share`, `leave_group` or withdrawn file appends one record —
//! `[len u32 LE][crc32c u32 LE][postcard Entry]` — and fdatasyncs it before
//! the command answers, so adding or removing a share costs the same
//! whether the node shares ten files or a million (it used to rewrite the
//! whole record each time). The log is compacted (rewritten atomically:
//! temporary file, fsync, rename, directory fsync) when it holds more than
//! twice as many records as live shares plus 64, and at each login. A torn
//! last record (a crash mid-append) is dropped with a warning, and so is a
//! damaged record elsewhere, alone (the records after it kept); the record
//! of an older version (`<user>@<addr>.shares`, one postcard list) is read
//! once and replaced. Each share remembers the file's path, its metadata
//! and a cheap fingerprint (length and mtime) that tells whether the file
//! changed since it was hashed. Each group shared in also has the id of
//! the user's membership the shares were made in (a `Member` record): a
//! login that finds another one (the user left and was let in again, or
//! the group was deleted and made anew under its name by anyone) does not
//! resume them into it.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::UNIX_EPOCH;

use ringshare_engine::fsio::write_atomically;
use ringshare_engine::meta::FileMeta;
use serde::{Deserialize, Serialize};

/// A file this node shares in a group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalShare {
    /// The group it is shared in.
    pub group: String,
    /// Where the file is on disk (absolute).
    pub path: PathBuf,
    /// Its metadata as registered with the tracker.
    pub meta: FileMeta,
    /// Modification time (ns since the epoch) when it was hashed.
    pub mtime_ns: u128,
    /// The file's change time (s, ns) and inode when it was hashed in this
    /// process: a change that kept its length and modification time moves
    /// them (see `node::watch_shares`). Not recorded on disk, and not
    /// compared: the same share read back from the record is equal.
    #[serde(skip)]
    pub changed: Option<ChangeMark>,
}

/// A file's change time (s, ns) and inode.
pub type ChangeMark = (i64, i64, u64);

/// The change time and inode of `md`.
pub fn change_mark(md: &fs::Metadata) -> ChangeMark {
    use std::os::unix::fs::MetadataExt;
    (md.ctime(), md.ctime_nsec(), md.ino())
}

impl PartialEq for LocalShare {
    fn eq(&self, other: &Self) -> bool {
        (&self.group, &self.path, &self.meta, self.mtime_ns)
            == (&other.group, &other.path, &other.meta, other.mtime_ns)
    }
}

impl Eq for LocalShare {}

/// Why a recorded share can no longer be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staleness {
    /// The file is gone or unreadable.
    Missing(String),
    /// Its length or modification time changed.
    Changed,
    /// A download's record that did not become a share: registered at its
    /// first piece, never finished here (see [`LocalShare::unfinished`]).
    Unfinished,
}

/// The modification time of an [`LocalShare::unfinished`] record: none a
/// file has.
const UNFINISHED: u128 = u128::MAX;

impl LocalShare {
    /// Records a freshly hashed file.
    pub fn new(group: String, path: PathBuf, meta: FileMeta) -> std::io::Result<Self> {
        let md = fs::metadata(&path)?;
        let mtime_ns = mtime_ns(&md)?;
        Ok(Self { group, path, meta, mtime_ns, changed: Some(change_mark(&md)) })
    }

    /// Records a file that will be at `path` but is at `now` (a fetched
    /// file still `.part` until it is settled: a move keeps its length and
    /// modification time).
    pub fn at(group: String, path: PathBuf, now: &Path, meta: FileMeta) -> std::io::Result<Self> {
        Self::of(group, path, &fs::metadata(now)?, meta)
    }

    /// [`LocalShare::at`] with the file's metadata taken already (from a
    /// descriptor of it: a bulk get's stat of each part file by its path
    /// was a sixth of the thread that ends downloads).
    pub fn of(
        group: String,
        path: PathBuf,
        md: &fs::Metadata,
        meta: FileMeta,
    ) -> std::io::Result<Self> {
        let mtime_ns = mtime_ns(md)?;
        // (Its change time moves as it is put in place: taken there.)
        Ok(Self { group, path, meta, mtime_ns, changed: None })
    }

    /// The record of a download to `dest` registered as a sharer of its
    /// verified pieces and not finished yet. Its finish replaces it with the
    /// share; if it never finishes here (a crash, a logout), the next login
    /// finds it and withdraws the registration, which the tracker would
    /// otherwise list for good once this node is back at its address.
    pub fn unfinished(group: String, dest: PathBuf, meta: FileMeta) -> Self {
        Self { group, path: dest, meta, mtime_ns: UNFINISHED, changed: None }
    }

    /// Whether this is an [`LocalShare::unfinished`] record.
    pub fn is_unfinished(&self) -> bool {
        self.mtime_ns == UNFINISHED
    }

    /// Checks that the file is still there and unchanged (or, fetched and
    /// not settled yet, still its unchanged `.part`).
    pub fn check(&self) -> Result<(), Staleness> {
        self.check_at().map(|_| ())
    }

    /// [`LocalShare::check`], with what was looked at: the file's metadata
    /// when it is at its path, `None` when it is its `.part` still.
    pub fn check_at(&self) -> Result<Option<fs::Metadata>, Staleness> {
        if self.is_unfinished() {
            return Err(Staleness::Unfinished);
        }
        // The part file may be moved in place while it is looked at: the
        // path, the part file, then the path again.
        let at_path = |md: fs::Metadata| (true, md);
        let (placed, md) = fs::metadata(&self.path)
            .map(at_path)
            .or_else(|e| {
                fs::metadata(ringshare_engine::store::part_path(&self.path))
                    .ok()
                    .filter(|md| self.unchanged(md))
                    .map(|md| (false, md))
                    .ok_or(e)
            })
            .or_else(|_| fs::metadata(&self.path).map(at_path))
            .map_err(|e| Staleness::Missing(e.to_string()))?;
        if self.unchanged(&md) {
            Ok(placed.then_some(md))
        } else {
            Err(Staleness::Changed)
        }
    }

    /// Whether `md` (of the file at `path`, or of a descriptor opened on
    /// it) still has the length and modification time the file was hashed
    /// with.
    pub fn unchanged(&self, md: &fs::Metadata) -> bool {
        md.is_file() && md.len() == self.meta.len && mtime_ns(md).is_ok_and(|t| t == self.mtime_ns)
    }
}

fn mtime_ns(md: &fs::Metadata) -> std::io::Result<u128> {
    let t = md.modified()?;
    Ok(t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0))
}

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Entry {
    /// A share is added (or replaces the one of the same group and name).
    Put(LocalShare),
    /// The share of that group and name is gone.
    Remove { group: String, name: String },
    /// The shares of `group` were made in the user's membership `since`
    /// (the tracker's id for it), until another such record.
    Member { group: String, since: u64 },
}

/// A record's header: length and CRC32C of the payload.
const RECORD_HEAD: usize = 8;
/// Compaction is due when the log holds more records than this many more
/// than twice the live shares.
const COMPACT_SLACK: u64 = 64;

type Key = (String, String);

fn key_of(s: &LocalShare) -> Key {
    (s.group.clone(), s.meta.name.clone())
}

/// What the book knows of its log file.
#[derive(Debug, Default)]
struct LogState {
    /// Open for appending once loaded (or first written).
    file: Option<Arc<fs::File>>,
    records: u64,
    live: std::collections::HashSet<Key>,
    /// The membership each group's shares were made in.
    since: std::collections::HashMap<String, u64>,
    /// Records appended, and how many of them are known durable: one
    /// fdatasync makes every record written before it durable, so puts
    /// that end together share one (group commit).
    written: u64,
    synced: u64,
}

/// The on-disk record of one user's shares at one node address. Clones
/// share one log.
#[derive(Debug, Clone)]
pub struct ShareBook {
    log: PathBuf,
    /// The record of an older version, read once and replaced.
    legacy: PathBuf,
    state: Arc<Mutex<LogState>>,
    /// Held while one fdatasync runs for the puts waiting on it.
    syncing: Arc<Mutex<()>>,
}

impl ShareBook {
    /// The record for `user` at `node_addr` inside `state_dir`.
    pub fn new(state_dir: &Path, user: &str, node_addr: &str) -> Self {
        // User ids are validated names (no separators); ':' is fine in file names.
        let log = state_dir.join(format!("{user}@{node_addr}.sharelog"));
        let legacy = state_dir.join(format!("{user}@{node_addr}.shares"));
        Self { log, legacy, state: Arc::default(), syncing: Arc::default() }
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The recorded shares; an unreadable record is empty and a damaged
    /// tail is dropped (a warning is returned beside them).
    pub fn load(&self) -> (Vec<LocalShare>, Option<String>) {
        let mut st = self.lock();
        st.file = None;
        let (Replayed { shares, records, since }, mut warning) = match read_log(&self.log) {
            Ok((r, w)) => (r, w),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Replayed::default(), None),
            Err(e) => (Replayed::default(), Some(format!("read {}: {e}", self.log.display()))),
        };
        let (shares, records) = if records == 0 && self.legacy.exists() {
            match fs::read(&self.legacy).map(|b| postcard::from_bytes::<Vec<LocalShare>>(&b)) {
                Ok(Ok(old)) => (old, u64::MAX),
                Ok(Err(e)) => {
                    warning = Some(format!("ignoring {}: {e}", self.legacy.display()));
                    (Vec::new(), 0)
                }
                Err(e) => {
                    warning = Some(format!("read {}: {e}", self.legacy.display()));
                    (Vec::new(), 0)
                }
            }
        } else {
            (shares, records)
        };
        st.live = shares.iter().map(key_of).collect();
        st.records = records;
        st.since = since;
        if records == u64::MAX {
            // Carried over from the older record: write the log, drop it.
            match self.rewrite(&mut st, &shares) {
                Ok(()) => {
                    let _ = fs::remove_file(&self.legacy);
                }
                Err(e) => warning = Some(format!("rewrite {}: {e}", self.log.display())),
            }
        }
        (shares, warning)
    }

    /// Records a share (replacing the one of the same group and name);
    /// durable when it returns.
    pub fn put(&self, share: &LocalShare) -> std::io::Result<()> {
        let mine = self.append(share)?;
        self.sync_to(mine)
    }

    /// Records a share like [`put`](Self::put), durable only after the next
    /// [`sync`](Self::sync) (or a put that syncs).
    pub fn put_unsynced(&self, share: &LocalShare) -> std::io::Result<()> {
        self.append(share).map(drop)
    }

    /// Makes every record written so far durable.
    pub fn sync(&self) -> std::io::Result<()> {
        let mine = self.lock().written;
        self.sync_to(mine)
    }

    /// Records several shares (each replacing the one of the same group
    /// and name); durable when it returns, with one sync for them all — a
    /// tree of thousands of files shared at once took an fdatasync per
    /// file, in turn, most of its registration time.
    ///
    /// All or nothing: if a record cannot be written or made durable (a
    /// full disk), the log is cut back to where it was and the error
    /// returned, so that shares taken back for it do not come back at the
    /// next login (those written before the disk filled did).
    pub fn put_all(&self, shares: &[LocalShare]) -> std::io::Result<()> {
        if shares.is_empty() {
            return Ok(());
        }
        // Held throughout: no other record goes in between, so cutting
        // back drops only this batch's.
        let mut st = self.lock();
        let before = match &st.file {
            Some(f) => f.metadata()?.len(),
            None => match fs::metadata(&self.log) {
                Ok(md) => md.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => return Err(e),
            },
        };
        let (records, written, live) = (st.records, st.written, st.live.clone());
        let result = shares
            .iter()
            .try_for_each(|share| {
                self.write(&mut st, &Entry::Put(share.clone()))?;
                st.live.insert(key_of(share));
                Ok(())
            })
            .and_then(|()| st.file.as_ref().map_or(Ok(()), |f| f.sync_data()));
        if let Err(e) = result {
            if let Some(f) = &st.file {
                // Cutting back frees blocks: it works on a full disk.
                let _ = f.set_len(before);
                let _ = f.sync_data();
            }
            st.records = records;
            st.written = written;
            st.live = live;
            return Err(e);
        }
        st.synced = st.written;
        // Recorded and durable: a compaction that fails leaves the log as
        // it is, whole, and is tried again at the next record.
        if let Err(e) = self.maybe_compact(&mut st) {
            tracing::warn!("compact {}: {e}", self.log.display());
        }
        Ok(())
    }

    /// Appends a put record (compacting when due); returns its number for
    /// [`sync_to`](Self::sync_to).
    fn append(&self, share: &LocalShare) -> std::io::Result<u64> {
        let mut st = self.lock();
        self.write(&mut st, &Entry::Put(share.clone()))?;
        st.live.insert(key_of(share));
        self.maybe_compact(&mut st)?;
        Ok(st.written)
    }

    /// Makes every record up to the `mine`th durable: returns at once if a
    /// sync since covered it, else syncs (for itself and whoever wrote
    /// meanwhile) — downloads ending together share one fdatasync instead
    /// of queueing one each behind the book's lock.
    fn sync_to(&self, mine: u64) -> std::io::Result<()> {
        let _one = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        let (file, upto) = {
            let st = self.lock();
            if st.synced >= mine {
                return Ok(());
            }
            (st.file.clone(), st.written)
        };
        if let Some(f) = file {
            f.sync_data()?;
        }
        let mut st = self.lock();
        st.synced = st.synced.max(upto);
        Ok(())
    }

    /// Deletes the record: every share it held was withdrawn, and no later
    /// node will have this address (a port the system picked).
    pub fn discard(&self) -> std::io::Result<()> {
        let mut st = self.lock();
        st.file = None;
        st.live.clear();
        st.since.clear();
        st.records = 0;
        for path in [&self.log, &self.legacy] {
            match fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Records that the share of `group` and `name` is gone; durable when
    /// it returns.
    pub fn remove(&self, group: &str, name: &str) -> std::io::Result<()> {
        let mut st = self.lock();
        let key = (group.to_owned(), name.to_owned());
        if !st.live.contains(&key) {
            return Ok(());
        }
        self.write(&mut st, &Entry::Remove { group: key.0.clone(), name: key.1.clone() })?;
        st.live.remove(&key);
        self.maybe_compact(&mut st)?;
        let mine = st.written;
        drop(st);
        self.sync_to(mine)
    }

    /// Replaces the whole record with `shares`, compacted (at login), and
    /// the membership each group of theirs was made in with `since`'s
    /// where it names one.
    pub fn replace(
        &self,
        shares: &[LocalShare],
        since: &std::collections::BTreeMap<String, u64>,
    ) -> std::io::Result<()> {
        let mut st = self.lock();
        st.live = shares.iter().map(key_of).collect();
        st.since.extend(since.iter().map(|(g, s)| (g.clone(), *s)));
        self.rewrite(&mut st, shares)
    }

    /// The membership of `group` the shares recorded there were made in,
    /// if known (recorded before membership ids were, or never asked).
    pub fn since(&self, group: &str) -> Option<u64> {
        self.lock().since.get(group).copied()
    }

    /// Records that the shares of `group` are made in membership `since`
    /// from now on; durable when it returns. Nothing is written when that
    /// is on record already.
    pub fn set_since(&self, group: &str, since: u64) -> std::io::Result<()> {
        let mut st = self.lock();
        if st.since.get(group) == Some(&since) {
            return Ok(());
        }
        self.write(&mut st, &Entry::Member { group: group.to_owned(), since })?;
        st.since.insert(group.to_owned(), since);
        let mine = st.written;
        drop(st);
        self.sync_to(mine)
    }

    /// Appends a record (durable after [`sync_to`](Self::sync_to)).
    fn write(&self, st: &mut LogState, entry: &Entry) -> std::io::Result<()> {
        if st.file.is_none() {
            let dir = self.log.parent().unwrap_or(Path::new("."));
            fs::create_dir_all(dir)?;
            let created = !self.log.exists();
            let f = fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
            if created {
                fs::File::open(dir)?.sync_all()?;
            }
            st.file = Some(Arc::new(f));
        }
        let bytes = encode(entry)?;
        let f = st.file.as_ref().expect("opened above");
        (&**f).write_all(&bytes)?;
        st.records += 1;
        st.written += 1;
        Ok(())
    }

    fn maybe_compact(&self, st: &mut LogState) -> std::io::Result<()> {
        if st.records <= 2 * st.live.len() as u64 + COMPACT_SLACK {
            return Ok(());
        }
        let (replayed, _) = read_log(&self.log)?;
        self.rewrite(st, &replayed.shares)
    }

    /// Writes `shares` as a fresh log, atomically, and appends to it next;
    /// with the membership of each of their groups that is known.
    fn rewrite(&self, st: &mut LogState, shares: &[LocalShare]) -> std::io::Result<()> {
        let dir = self.log.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let groups: std::collections::HashSet<&str> =
            shares.iter().map(|s| s.group.as_str()).collect();
        st.since.retain(|g, _| groups.contains(g.as_str()));
        let mut bytes = Vec::new();
        let mut members: Vec<(&String, &u64)> = st.since.iter().collect();
        members.sort();
        for (group, since) in &members {
            bytes.extend(encode(&Entry::Member { group: (*group).clone(), since: **since })?);
        }
        for s in shares {
            bytes.extend(encode(&Entry::Put(s.clone()))?);
        }
        drop(write_atomically(&self.log, &bytes)?);
        st.file = Some(Arc::new(fs::OpenOptions::new().append(true).open(&self.log)?));
        st.records = (shares.len() + members.len()) as u64;
        // Written and synced whole: everything recorded so far is durable.
        st.synced = st.written;
        Ok(())
    }
}

fn encode(entry: &Entry) -> std::io::Result<Vec<u8>> {
    let payload = postcard::to_stdvec(entry).map_err(std::io::Error::other)?;
    let len = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(RECORD_HEAD + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// What a log holds, replayed.
#[derive(Debug, Default)]
struct Replayed {
    /// The live shares, in the order first put.
    shares: Vec<LocalShare>,
    /// The number of records.
    records: u64,
    /// Each group's membership, the last recorded.
    since: std::collections::HashMap<String, u64>,
}

/// Replays the log; and a warning if damaged records were dropped (a
/// damaged tail — no whole record after it — is cut off, so that the next
/// append follows the last whole record; one followed by whole records is
/// skipped, and goes at the next compaction).
fn read_log(path: &Path) -> std::io::Result<(Replayed, Option<String>)> {
    let bytes = fs::read(path)?;
    let mut since = std::collections::HashMap::new();
    let mut slots: Vec<Option<LocalShare>> = Vec::new();
    let mut index: std::collections::HashMap<Key, usize> = std::collections::HashMap::new();
    let (mut at, mut records, mut warning) = (0usize, 0u64, None);
    // The record at `at`, whole and checked, and its length.
    let record_at = |at: usize| {
        let h = bytes.get(at..at + RECORD_HEAD)?;
        let len = u32::from_le_bytes(h[..4].try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(h[4..].try_into().ok()?);
        let payload = bytes.get(at + RECORD_HEAD..at.checked_add(RECORD_HEAD + len)?)?;
        if crc32c::crc32c(payload) != crc {
            return None;
        }
        Some((postcard::from_bytes::<Entry>(payload).ok()?, RECORD_HEAD + len))
    };
    let mut dropped = Vec::new();
    while at < bytes.len() {
        let Some((entry, used)) = record_at(at) else {
            // A damaged record (a flipped byte): the records after it are
            // kept (they were all lost with it), found where the next one
            // whole and checked starts. None: a torn tail, cut off.
            match next_record(&bytes, at, &record_at) {
                Some(next) => {
                    dropped.push((at, next - at));
                    at = next;
                    continue;
                }
                None => {
                    warning = Some(format!(
                        "{}: dropped a damaged record at byte {at} and what followed ({} bytes)",
                        path.display(),
                        bytes.len() - at
                    ));
                    fs::OpenOptions::new().write(true).open(path)?.set_len(at as u64)?;
                    break;
                }
            }
        };
        match entry {
            Entry::Put(s) => match index.get(&key_of(&s)) {
                Some(&i) => slots[i] = Some(s),
                None => {
                    index.insert(key_of(&s), slots.len());
                    slots.push(Some(s));
                }
            },
            Entry::Remove { group, name } => {
                if let Some(i) = index.remove(&(group, name)) {
                    slots[i] = None;
                }
            }
            Entry::Member { group, since: id } => {
                since.insert(group, id);
            }
        }
        at += used;
        records += 1;
    }
    if !dropped.is_empty() {
        let spans: Vec<String> =
            dropped.iter().map(|(at, n)| format!("{n} bytes at byte {at}")).collect();
        let also = warning.map(|w| format!("; {w}")).unwrap_or_default();
        warning = Some(format!(
            "{}: dropped damaged records ({}), kept the others{also}",
            path.display(),
            spans.join(", ")
        ));
    }
    Ok((Replayed { shares: slots.into_iter().flatten().collect(), records, since }, warning))
}

/// Where the first whole, checked record after the damaged one at `at`
/// starts, if any: where its length says the next starts, else looked
/// for byte by byte (at most [`RESYNC_WORK`] bytes checksummed, against a
/// long tail of garbage).
fn next_record<T>(
    bytes: &[u8],
    at: usize,
    record_at: &impl Fn(usize) -> Option<T>,
) -> Option<usize> {
    let claimed = bytes
        .get(at..at + 4)
        .map(|h| at + RECORD_HEAD + u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize);
    if let Some(next) = claimed.filter(|&n| n < bytes.len()) {
        if record_at(next).is_some() {
            return Some(next);
        }
    }
    let mut work = 0usize;
    for next in at + 1..bytes.len() {
        let len = bytes
            .get(next..next + 4)
            .map_or(0, |h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize);
        if next + RECORD_HEAD + len > bytes.len() {
            continue;
        }
        work += len;
        if work > RESYNC_WORK {
            return None;
        }
        if record_at(next).is_some() {
            return Some(next);
        }
    }
    None
}

/// At most this many bytes are checksummed looking for the record after a
/// damaged one.
const RESYNC_WORK: usize = 256 << 20;

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
        book.put(&share).unwrap();
        let again = ShareBook::new(dir.path(), "alice", "127.0.0.1:9000");
        assert_eq!(again.load().0, vec![share.clone()]);

        fs::write(&path, b"hello, world").unwrap();
        assert_eq!(share.check(), Err(Staleness::Changed));
        fs::remove_file(&path).unwrap();
        assert!(matches!(share.check(), Err(Staleness::Missing(_))));
    }

    /// A fetched file recorded while still `.part` (not settled yet)
    /// checks as present there, and at its own path once moved; a changed
    /// part file does not stand in for it.
    #[test]
    fn a_file_not_settled_yet_checks_as_its_part_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let part = ringshare_engine::store::part_path(&path);
        fs::write(&part, b"hello").unwrap();
        let meta = FileMeta {
            name: "f.bin".into(),
            len: 5,
            sha1: Sha1Digest([1; 20]),
            piece_hashes: vec![],
        };
        let share = LocalShare::at("g".into(), path.clone(), &part, meta).unwrap();
        assert_eq!(share.path, path);
        share.check().unwrap();
        fs::rename(&part, &path).unwrap();
        share.check().unwrap();
        fs::rename(&path, &part).unwrap();
        fs::write(&part, b"HELLO, world").unwrap();
        assert!(matches!(share.check(), Err(Staleness::Missing(_))));
    }

    fn share(dir: &Path, group: &str, name: &str, len: u64) -> LocalShare {
        let path = dir.join(name);
        fs::write(&path, vec![7u8; len as usize]).unwrap();
        let meta = FileMeta {
            name: name.into(),
            len,
            sha1: Sha1Digest([len as u8; 20]),
            piece_hashes: vec![],
        };
        LocalShare::new(group.into(), path, meta).unwrap()
    }

    /// A batch that does not fit (a full disk) leaves nothing of itself in
    /// the log: the shares it held are taken back by the caller, and those
    /// written before the disk filled came back at the next login.
    #[test]
    fn a_batch_that_does_not_fit_leaves_no_record() {
        // SAFETY: geteuid takes no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        fs::create_dir(&small).unwrap();
        let mount = |args: &[&str]| std::process::Command::new(args[0]).args(&args[1..]).status();
        let at = small.to_str().unwrap();
        assert!(mount(&["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", at]).unwrap().success());
        struct Unmount<'a>(&'a str);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(self.0).status();
            }
        }
        let _unmount = Unmount(at);
        let book = ShareBook::new(&small, "alice", "127.0.0.1:9000");
        let first = share(dir.path(), "g", "first", 10);
        book.put(&first).unwrap();
        let len = fs::metadata(small.join("alice@127.0.0.1:9000.sharelog")).unwrap().len();
        let batch: Vec<LocalShare> =
            (0..200).map(|i| share(dir.path(), "g", &format!("f{i:03}"), 100 + i)).collect();
        let err = book.put_all(&batch).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        let log = small.join("alice@127.0.0.1:9000.sharelog");
        assert_eq!(fs::metadata(&log).unwrap().len(), len, "cut back");
        assert_eq!(
            ShareBook::new(&small, "alice", "127.0.0.1:9000").load(),
            (vec![first.clone()], None)
        );
        // The book goes on: a share that fits is recorded after it.
        let second = share(dir.path(), "g", "second", 20);
        book.put(&second).unwrap();
        let (loaded, warning) = ShareBook::new(&small, "alice", "127.0.0.1:9000").load();
        assert_eq!((loaded, warning), (vec![first, second], None));
    }

    /// Puts from many threads at once (a bulk fetch's downloads ending
    /// together share fdatasyncs) all land, through compactions too.
    #[test]
    fn concurrent_puts_all_replay() {
        let dir = tempfile::tempdir().unwrap();
        let book = ShareBook::new(dir.path(), "u", "127.0.0.1:1");
        book.load();
        let files: Vec<LocalShare> =
            (0..8).map(|t| share(dir.path(), "g", &format!("t{t}"), 1 + t)).collect();
        std::thread::scope(|s| {
            for (t, f) in files.iter().enumerate() {
                let book = book.clone();
                s.spawn(move || {
                    for i in 0..100 {
                        let mut one = f.clone();
                        one.meta.name = format!("t{t}-{i}");
                        book.put(&one).unwrap();
                        if i % 10 == 9 {
                            book.remove("g", &format!("t{t}-{}", i - 1)).unwrap();
                        }
                    }
                });
            }
        });
        let again = ShareBook::new(dir.path(), "u", "127.0.0.1:1");
        let (shares, warning) = again.load();
        assert!(warning.is_none(), "{warning:?}");
        assert_eq!(shares.len(), 8 * 90);
        assert!(!shares.iter().any(|s| s.meta.name == "t3-8"));
        assert!(shares.iter().any(|s| s.meta.name == "t3-9"));
    }

    /// Each group's membership is on record with its shares: read back,
    /// kept by compactions while the group has shares, replaced by a later
    /// one, merged by a login's rewrite; a record of an earlier version
    /// (no membership) reads as none known.
    #[test]
    fn a_groups_membership_is_recorded_and_compactions_keep_it_while_it_has_shares() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = || {
            let b = ShareBook::new(dir.path(), "u", "127.0.0.1:1");
            b.load();
            b
        };
        let book = fresh();
        let (a, b) = (share(dir.path(), "g", "a", 1), share(dir.path(), "h", "b", 2));
        book.put(&a).unwrap();
        book.put(&b).unwrap();
        assert_eq!(fresh().since("g"), None, "recorded before memberships were");
        book.set_since("g", 7).unwrap();
        book.set_since("h", 9).unwrap();
        let records = book.lock().records;
        book.set_since("g", 7).unwrap();
        assert_eq!(book.lock().records, records, "the same again writes nothing");
        assert_eq!((fresh().since("g"), fresh().since("h")), (Some(7), Some(9)));
        book.set_since("g", 8).unwrap();
        assert_eq!(fresh().since("g"), Some(8));
        // Churn past the slack: compacted, the memberships kept.
        for _ in 0..200 {
            book.put(&a).unwrap();
        }
        assert!(book.lock().records < 100, "compacted");
        let again = fresh();
        assert_eq!((again.since("g"), again.since("h")), (Some(8), Some(9)));
        assert_eq!(again.load().0, vec![a.clone(), b.clone()]);
        // A login's rewrite: h's shares gone, so is its membership; g's
        // is the one given.
        let now = std::collections::BTreeMap::from([("g".to_owned(), 10), ("h".to_owned(), 11)]);
        book.replace(std::slice::from_ref(&a), &now).unwrap();
        let again = fresh();
        assert_eq!((again.since("g"), again.since("h")), (Some(10), None));
        assert_eq!(again.load().0, vec![a]);
        book.discard().unwrap();
        assert_eq!(book.since("g"), None);
    }

    #[test]
    fn puts_and_removes_replay_in_order_and_compaction_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let book = ShareBook::new(dir.path(), "u", "127.0.0.1:1");
        book.load();
        let a = share(dir.path(), "g", "a", 1);
        let b = share(dir.path(), "g", "b", 2);
        let a2 = share(dir.path(), "g", "a", 3);
        book.put(&a).unwrap();
        book.put(&b).unwrap();
        book.put(&a2).unwrap();
        book.remove("g", "b").unwrap();
        book.remove("g", "nothing").unwrap();
        let fresh = || ShareBook::new(dir.path(), "u", "127.0.0.1:1").load();
        assert_eq!(fresh(), (vec![a2.clone()], None));
        // Churn far past the slack: the log is compacted and stays small.
        for i in 0..500 {
            book.put(&b).unwrap();
            if i % 2 == 0 {
                book.remove("g", "b").unwrap();
            }
        }
        let (shares, warning) = fresh();
        assert_eq!((shares, warning), (vec![a2.clone(), b.clone()], None));
        let records = book.lock().records;
        assert!(records <= 2 * 2 + COMPACT_SLACK + 1, "{records} records for 2 shares");
    }

    /// Shares put together replay like shares put one by one (a later one
    /// of the same name replaces an earlier one, removes still apply), with
    /// one sync for the lot, and compaction keeps them; a share put without
    /// a sync is on record once synced.
    #[test]
    fn shares_put_together_replay_like_shares_put_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let book = ShareBook::new(dir.path(), "u", "127.0.0.1:1");
        book.load();
        let a = share(dir.path(), "g", "a", 1);
        book.put(&a).unwrap();
        fs::create_dir(dir.path().join("t")).unwrap();
        let many: Vec<LocalShare> =
            (0..300).map(|i| share(dir.path(), "g", &format!("t/f{i}"), i + 2)).collect();
        let a2 = share(dir.path(), "g", "a", 9);
        let mut batch = many.clone();
        batch.push(a2.clone());
        let synced_before = book.lock().synced;
        book.put_all(&batch).unwrap();
        book.put_all(&[]).unwrap();
        {
            let st = book.lock();
            assert_eq!(st.synced, st.written, "durable when it returns");
            assert!(st.written > synced_before);
        }
        book.remove("g", "t/f7").unwrap();
        // Put without a sync: on record once synced.
        let late = share(dir.path(), "g", "late", 5);
        book.put_unsynced(&late).unwrap();
        {
            let st = book.lock();
            assert!(st.synced < st.written);
        }
        book.sync().unwrap();
        {
            let st = book.lock();
            assert_eq!(st.synced, st.written);
        }
        let (shares, warning) = ShareBook::new(dir.path(), "u", "127.0.0.1:1").load();
        assert_eq!(warning, None);
        let mut want: Vec<LocalShare> = vec![a2.clone()];
        want.extend(many.iter().filter(|s| s.meta.name != "t/f7").cloned());
        want.push(late.clone());
        assert_eq!(shares, want);
        // Put again, twice over: compacted, nothing lost.
        book.put_all(&many).unwrap();
        book.put_all(&many).unwrap();
        let (shares, _) = ShareBook::new(dir.path(), "u", "127.0.0.1:1").load();
        assert_eq!(shares.len(), 302);
        let records = book.lock().records;
        assert!(records <= 2 * 302 + COMPACT_SLACK + 301, "{records} records for 302 shares");
    }

    #[test]
    fn a_torn_tail_is_dropped_and_appends_follow_the_last_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let book = ShareBook::new(dir.path(), "u", "127.0.0.1:1");
        book.load();
        let (a, b) = (share(dir.path(), "g", "a", 1), share(dir.path(), "g", "b", 2));
        book.put(&a).unwrap();
        book.put(&b).unwrap();
        let log = dir.path().join("u@127.0.0.1:1.sharelog");
        let len = fs::metadata(&log).unwrap().len();
        fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(len - 3).unwrap();
        let book = ShareBook::new(dir.path(), "u", "127.0.0.1:1");
        let (shares, warning) = book.load();
        assert_eq!(shares, vec![a.clone()]);
        assert!(warning.unwrap().contains("damaged record"));
        book.put(&b).unwrap();
        assert_eq!(ShareBook::new(dir.path(), "u", "127.0.0.1:1").load(), (vec![a, b], None));
    }

    /// A damaged record (a byte flipped in its payload, or in its length)
    /// is dropped alone: the records after it are kept (all were lost with
    /// it, and the file cut there), also when the tail is torn too.
    #[test]
    fn a_damaged_record_is_dropped_alone() {
        for (what, offset) in [("payload", RECORD_HEAD + 3), ("length", 1)] {
            let dir = tempfile::tempdir().unwrap();
            let book = ShareBook::new(dir.path(), "u", "127.0.0.1:1");
            book.load();
            let all: Vec<LocalShare> =
                (0..3).map(|i| share(dir.path(), "g", &format!("f{i}"), i)).collect();
            for s in &all {
                book.put(s).unwrap();
            }
            let log = dir.path().join("u@127.0.0.1:1.sharelog");
            let mut bytes = fs::read(&log).unwrap();
            bytes[offset] ^= 0xff;
            fs::write(&log, &bytes).unwrap();
            let (shares, warning) = ShareBook::new(dir.path(), "u", "127.0.0.1:1").load();
            assert_eq!(shares, all[1..], "{what}");
            let warning = warning.unwrap();
            assert!(warning.contains("dropped damaged records"), "{what}: {warning}");
            assert_eq!(fs::read(&log).unwrap(), bytes, "{what}: the file is not cut");
            // A torn tail besides: cut off, the middle kept.
            fs::write(&log, &bytes[..bytes.len() - 2]).unwrap();
            let (shares, warning) = ShareBook::new(dir.path(), "u", "127.0.0.1:1").load();
            assert_eq!(shares, all[1..2], "{what}");
            assert!(warning.unwrap().contains("and what followed"), "{what}");
        }
    }

    #[test]
    fn the_older_whole_file_record_is_read_once_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let a = share(dir.path(), "g", "a", 1);
        let legacy = dir.path().join("u@127.0.0.1:1.shares");
        fs::write(&legacy, postcard::to_stdvec(&vec![a.clone()]).unwrap()).unwrap();
        let book = ShareBook::new(dir.path(), "u", "127.0.0.1:1");
        assert_eq!(book.load(), (vec![a.clone()], None));
        assert!(!legacy.exists());
        assert_eq!(ShareBook::new(dir.path(), "u", "127.0.0.1:1").load(), (vec![a], None));
    }

    #[test]
    fn corrupt_record_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let book = ShareBook::new(dir.path(), "bob", "127.0.0.1:1");
        fs::write(dir.path().join("bob@127.0.0.1:1.sharelog"), [0xff; 7]).unwrap();
        let (shares, warning) = book.load();
        assert!(shares.is_empty());
        assert!(warning.is_some());
        fs::write(dir.path().join("bob@127.0.0.1:1.shares"), [0xff; 7]).unwrap();
        let (shares, warning) = ShareBook::new(dir.path(), "bob", "127.0.0.1:1").load();
        assert!(shares.is_empty());
        assert!(warning.is_some());
    }
}
