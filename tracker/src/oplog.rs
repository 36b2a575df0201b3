//! The operation log: every accepted op, appended and fsync'ed before anyone
//! is told it happened.
//!
//! A log file is a sequence of records (integers big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | `len`: payload length |
//! | 4 | `!len`: the length again, inverted (a torn or flipped header shows) |
//! | 4 | CRC32C of `seq` and the payload |
//! | 8 | `seq`: the record's number in this log, from 1 |
//! | len | payload: a postcard-encoded [`Entry`] |
//!
//! Recovery ([`read_log`]): a record cut short at the end of the file, or a
//! bad record followed only by zero bytes (a crash mid-append), is a torn
//! tail: it is dropped and the file truncated there. A bad record anywhere
//! else is corruption: start-up stops with an error naming the file and the
//! offset, because dropping it would silently lose acknowledged ops.
//!
//! [`OpLog`] appends with group commit: a writer thread takes every record
//! queued while the previous fsync ran, writes them in one go, fsyncs once,
//! and acknowledges them all.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::hlc::Stamp;
use crate::state::Op;

/// Bytes before a record's payload.
pub const RECORD_HEADER: usize = 4 + 4 + 4 + 8;
/// Largest payload: an upload of a file of about 1 TiB (2 Mi piece hashes).
pub const MAX_PAYLOAD: u32 = 48 * 1024 * 1024;

/// An op with its place in the global order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Global order; `stamp.origin` is the tracker that accepted the op.
    pub stamp: Stamp,
    /// The op's number among its origin's ops, from 1.
    pub origin_seq: u64,
    /// The change.
    pub op: Op,
}

/// Why bytes are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RecordError {
    /// The buffer ends inside the record.
    #[error("record cut short")]
    Truncated,
    /// The length and its inverse disagree, or the length is absurd.
    #[error("bad record header")]
    BadHeader,
    /// The checksum does not match.
    #[error("checksum mismatch")]
    BadCrc,
}

/// Appends a record to `out`.
pub fn encode_record(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len() as u32;
    let mut crc = crc32c::crc32c(&seq.to_be_bytes());
    crc = crc32c::crc32c_append(crc, payload);
    out.extend(len.to_be_bytes());
    out.extend((!len).to_be_bytes());
    out.extend(crc.to_be_bytes());
    out.extend(seq.to_be_bytes());
    out.extend(payload);
}

/// Decodes the record at the start of `buf`: `(seq, payload, bytes used)`.
pub fn decode_record(buf: &[u8]) -> Result<(u64, &[u8], usize), RecordError> {
    if buf.len() < RECORD_HEADER {
        return Err(RecordError::Truncated);
    }
    let word = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let (len, inv, crc) = (word(0), word(4), word(8));
    if len != !inv || len > MAX_PAYLOAD {
        return Err(RecordError::BadHeader);
    }
    let end = RECORD_HEADER + len as usize;
    if buf.len() < end {
        return Err(RecordError::Truncated);
    }
    let seq_bytes = &buf[12..20];
    let payload = &buf[RECORD_HEADER..end];
    let got = crc32c::crc32c_append(crc32c::crc32c(seq_bytes), payload);
    if got != crc {
        return Err(RecordError::BadCrc);
    }
    let seq = u64::from_be_bytes(seq_bytes.try_into().expect("8 bytes"));
    Ok((seq, payload, end))
}

/// Why a log cannot be read.
#[derive(Debug, Error)]
pub enum LogError {
    /// The file could not be read or repaired. (The OS error is in the
    /// message, so it is not also the source: see
    /// [`ringshare_engine::fsio::PathIoError`].)
    #[error("{path}: {os}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        os: io::Error,
    },
    /// A record in the middle of the log is damaged.
    #[error("{path}: corrupt record at offset {offset} ({reason}); refusing to start rather than lose acknowledged ops")]
    Corrupt {
        /// The file.
        path: String,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// What [`read_log`] recovered.
#[derive(Debug)]
pub struct Recovered {
    /// The entries, in file order.
    pub entries: Vec<Entry>,
    /// The last record number (0 for an empty log).
    pub last_seq: u64,
    /// Bytes of torn tail dropped (0 when the log was clean).
    pub torn_bytes: u64,
}

/// Reads a log, truncating a torn tail if `may_tear` (the newest log, or
/// the one before it); an absent file is an empty log. In an older log a
/// torn tail is corruption: logs after it hold later ops.
pub fn read_log(path: &Path, may_tear: bool) -> Result<Recovered, LogError> {
    let shown = path.display().to_string();
    let io_err = |os| LogError::Io { path: shown.clone(), os };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(e)),
    };
    let mut entries = Vec::new();
    let mut off = 0usize;
    let mut last_seq = 0;
    while off < bytes.len() {
        let rest = &bytes[off..];
        match decode_record(rest) {
            Ok((seq, payload, used)) => {
                let entry: Entry =
                    postcard::from_bytes(payload).map_err(|e| LogError::Corrupt {
                        path: shown.clone(),
                        offset: off as u64,
                        reason: format!("undecodable entry: {e}"),
                    })?;
                entries.push(entry);
                last_seq = seq;
                off += used;
            }
            Err(e) => {
                // A crash tears only the end of the log: a record cut short, a
                // last record that does not check out, or zeros where the
                // filesystem extended the file before the data landed.
                let torn = match e {
                    RecordError::Truncated => true,
                    RecordError::BadHeader => rest.iter().all(|b| *b == 0),
                    RecordError::BadCrc => {
                        let end = record_end(rest).unwrap_or(rest.len());
                        end >= rest.len() || rest[end..].iter().all(|b| *b == 0)
                    }
                };
                if !torn || !may_tear {
                    let reason = match torn {
                        true => format!("{e}, at the end of a log that newer logs follow"),
                        false => e.to_string(),
                    };
                    return Err(LogError::Corrupt { path: shown, offset: off as u64, reason });
                }
                let f = OpenOptions::new().write(true).open(path).map_err(io_err)?;
                f.set_len(off as u64).map_err(io_err)?;
                f.sync_all().map_err(io_err)?;
                return Ok(Recovered { entries, last_seq, torn_bytes: (bytes.len() - off) as u64 });
            }
        }
    }
    Ok(Recovered { entries, last_seq, torn_bytes: 0 })
}

/// Where a record claims to end, if its header is sound.
fn record_end(buf: &[u8]) -> Option<usize> {
    let word = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    if buf.len() < RECORD_HEADER || word(0) != !word(4) {
        return None;
    }
    Some(RECORD_HEADER + word(0) as usize)
}

type Ack = Box<dyn FnOnce(io::Result<()>) + Send>;

/// An open log being appended to with group commit.
#[derive(Debug)]
pub struct OpLog {
    path: PathBuf,
    tx: Option<crossbeam_channel::Sender<(Vec<u8>, Ack)>>,
    writer: Option<thread::JoinHandle<()>>,
    /// Taken by the writer around each batch; see [`OpLog::gate`].
    gate: Arc<Mutex<()>>,
}

impl OpLog {
    /// Opens `path` for appending after record `last_seq` (see [`read_log`]).
    pub fn open(path: &Path, last_seq: u64) -> io::Result<Self> {
        // Readable by the tracker's user only: ops carry password hashes.
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let (tx, rx) = crossbeam_channel::unbounded::<(Vec<u8>, Ack)>();
        let gate = Arc::new(Mutex::new(()));
        let held = Arc::clone(&gate);
        let writer = thread::Builder::new()
            .name("oplog".into())
            .spawn(move || group_commit(file, rx, last_seq, &held))?;
        Ok(Self { path: path.to_owned(), tx: Some(tx), writer: Some(writer), gate })
    }

    /// The writer's gate: while someone holds it, appends queue up
    /// unacknowledged. Tests use it to catch an op between its append and
    /// its fsync.
    pub fn gate(&self) -> Arc<Mutex<()>> {
        Arc::clone(&self.gate)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `payload`; `ack` runs once it is on disk (or failed to be).
    pub fn append(&self, payload: Vec<u8>, ack: impl FnOnce(io::Result<()>) + Send + 'static) {
        match &self.tx {
            Some(tx) => {
                if let Err(e) = tx.send((payload, Box::new(ack))) {
                    let (_, ack) = e.into_inner();
                    ack(Err(io::Error::other("op log closed")));
                }
            }
            None => ack(Err(io::Error::other("op log closed"))),
        }
    }

    /// Flushes everything queued and stops the writer.
    pub fn close(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for OpLog {
    fn drop(&mut self) {
        self.close();
    }
}

fn group_commit(
    mut file: File,
    rx: crossbeam_channel::Receiver<(Vec<u8>, Ack)>,
    mut seq: u64,
    gate: &Mutex<()>,
) {
    let mut buf = Vec::new();
    while let Ok(first) = rx.recv() {
        let _held = gate.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        buf.clear();
        for (payload, _) in &batch {
            seq += 1;
            encode_record(seq, payload, &mut buf);
        }
        let result = file.write_all(&buf).and_then(|()| file.sync_data());
        for (_, ack) in batch {
            ack(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
        if let Err(e) = result {
            // The file may end in a torn record now: writing on after it
            // would put good records behind garbage. Everything later fails
            // (the tracker stops; recovery drops the torn tail).
            let why = format!("op log failed earlier: {e}");
            for (_, ack) in rx.iter() {
                ack(Err(io::Error::new(e.kind(), why.clone())));
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::mpsc;

    fn entry(i: u64) -> Entry {
        Entry {
            stamp: Stamp { wall_ms: i, counter: 0, origin: 1 },
            origin_seq: i,
            op: Op::CreateGroup { user: format!("u{i}"), group: format!("g{i}") },
        }
    }

    fn write_entries(path: &Path, n: u64) {
        let mut log = OpLog::open(path, 0).unwrap();
        let (tx, rx) = mpsc::channel();
        for i in 1..=n {
            let tx = tx.clone();
            log.append(postcard::to_stdvec(&entry(i)).unwrap(), move |r| {
                tx.send(r.is_ok()).unwrap()
            });
        }
        for _ in 0..n {
            assert!(rx.recv().unwrap());
        }
        log.close();
    }

    #[test]
    fn golden_record() {
        let mut out = Vec::new();
        encode_record(1, b"ab", &mut out);
        assert_eq!(&out[0..4], &[0, 0, 0, 2]); // len 2
        assert_eq!(&out[4..8], &[0xff, 0xff, 0xff, 0xfd]); // !2
        assert_eq!(&out[12..20], &[0, 0, 0, 0, 0, 0, 0, 1]); // seq 1
        assert_eq!(&out[20..], b"ab");
        assert_eq!(decode_record(&out).unwrap(), (1, &b"ab"[..], 22));
    }

    #[test]
    fn appended_entries_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        write_entries(&p, 50);
        let r = read_log(&p, true).unwrap();
        assert_eq!(r.entries.len(), 50);
        assert_eq!(r.last_seq, 50);
        assert_eq!(r.entries[49], entry(50));
        assert_eq!(r.torn_bytes, 0);
    }

    #[test]
    fn torn_tail_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        write_entries(&p, 3);
        let full = std::fs::metadata(&p).unwrap().len();
        // A crash mid-append: half a record.
        let mut bytes = std::fs::read(&p).unwrap();
        let mut extra = Vec::new();
        encode_record(4, &postcard::to_stdvec(&entry(4)).unwrap(), &mut extra);
        bytes.extend(&extra[..extra.len() / 2]);
        std::fs::write(&p, &bytes).unwrap();
        let r = read_log(&p, true).unwrap();
        assert_eq!(r.entries.len(), 3);
        assert!(r.torn_bytes > 0);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), full, "truncated to the last good record");
        // A crash that left the file extended with zeros.
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.extend([0u8; 100]);
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(read_log(&p, true).unwrap().entries.len(), 3);
        // The same tail in a log that newer logs follow: their ops came
        // after it, so it is damage, not a crash's tear. Left as it is.
        bytes.truncate(full as usize);
        bytes.extend(&extra[..extra.len() / 2]);
        std::fs::write(&p, &bytes).unwrap();
        let err = read_log(&p, false).unwrap_err().to_string();
        assert!(err.contains("at the end of a log that newer logs follow"), "{err}");
        assert!(err.contains(&format!("corrupt record at offset {full}")), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), bytes, "not truncated");
    }

    #[test]
    fn flipped_byte_in_the_middle_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        write_entries(&p, 5);
        let mut bytes = std::fs::read(&p).unwrap();
        let second = decode_record(&bytes).unwrap().2;
        bytes[second + RECORD_HEADER + 1] ^= 0x01;
        std::fs::write(&p, &bytes).unwrap();
        let err = read_log(&p, true).unwrap_err().to_string();
        assert!(err.contains(&format!("corrupt record at offset {second}")), "{err}");
        assert!(err.contains("log"), "{err}");
        // ... and the file was not touched.
        assert_eq!(std::fs::read(&p).unwrap(), bytes);
        // A flipped length is caught by its inverse.
        let mut bytes2 = bytes.clone();
        bytes2[second + RECORD_HEADER + 1] ^= 0x01;
        bytes2[second + 3] ^= 0x40;
        std::fs::write(&p, &bytes2).unwrap();
        assert!(read_log(&p, true).unwrap_err().to_string().contains("bad record header"));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode_record(&bytes);
        }

        #[test]
        fn every_prefix_is_truncated(seq: u64, payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut out = Vec::new();
            encode_record(seq, &payload, &mut out);
            for n in 0..out.len() {
                prop_assert_eq!(decode_record(&out[..n]).unwrap_err(), RecordError::Truncated);
            }
            prop_assert_eq!(decode_record(&out).unwrap(), (seq, &payload[..], out.len()));
        }
    }
}
