//! Where a download's pieces live until it completes.
//!
//! `<destination>.part` is preallocated to the file's length (fallocate, so a
//! full disk shows up at the start, not mid-download; a file of one piece is
//! only sized, its one write following at once) and written piece by
//! piece at the pieces' offsets. Pieces are written with `O_DIRECT` where
//! the filesystem allows it: the data goes from the piece buffer to the
//! disk without a copy into the page cache (that copy cost more CPU than
//! the SHA1 of the same bytes). Of a last piece that is not a multiple of
//! [`DIRECT_ALIGN`] only the tail after its last whole block takes plain
//! `pwrite` (a small file is all last piece), as does everything on
//! filesystems without `O_DIRECT`.
//!
//! `<destination>.part.state` records the file's identity and which pieces
//! are verified, so a restarted client resumes where it stopped. It is
//! created atomically (temporary file, fsync, rename); after that each
//! verified piece sets its bit in place with a one-byte `pwrite` (bits are
//! only ever set while a download runs, and a one-byte write cannot tear),
//! and [`PartFile::sync_state`] makes the record durable. When every piece is
//! verified, the data is fsync'ed (and, on a filesystem that took no
//! `fallocate`, read back and checked: `FALLOCATE`) and `.part` becomes
//! the destination —
//! never replacing a file that appeared there meanwhile.
//!
//! A bulk fetch finishes its files through a [`Settler`] instead: each
//! file's fsync, move into place and directory fsync (most of a small
//! file's cost in a bulk fetch) become one `syncfs`, the renames and one
//! more `syncfs` for every batch of files finished meanwhile. A file stays
//! `.part` until its data is durable, so a power cut never leaves a torn
//! file under its final name; [`Settler::flush`] waits for the moves.
//!
//! On resume, every piece the state claims is hashed again before it counts:
//! a crash can leave the state ahead of the data that reached the disk.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::fsio::{with_suffix, write_atomically, PathIoError};
use crate::hash::sha1_of;
use crate::meta::{Bitfield, FileMeta, Sha1Digest};

/// Why a download's storage failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The destination already exists; it is never overwritten.
    #[error("destination {0} already exists")]
    Exists(String),
    /// Something that is not a part file of this store's is where the
    /// download's part file or state would go (the user's own file, or
    /// another file of the group named so): it is never overwritten.
    #[error("{0} is in the way: it is not a ringshare part file, and is not overwritten")]
    InTheWay(String),
    /// Another download (of this process or another) is fetching into
    /// the same destination now: it holds the part file's lock.
    #[error("{0} is being fetched by another download now (its part file is in use)")]
    Busy(String),
    /// A directory under the destination is a symbolic link or not a
    /// directory now (replaced while the fetch ran): nothing is made or
    /// moved through it.
    #[error(
        "{0} is not the directory made for it any more (replaced by a symbolic link?): nothing \
         is written through it"
    )]
    Replaced(String),
    /// The part file's mark could not be taken off (the user made the part
    /// file read-only while it was fetched): it is not moved into place
    /// with it, since a marked file is taken for a part file.
    #[error(
        "cannot take the part-file mark off {0} ({1}): it stays there, whole; make it writable \
         and run the same command again"
    )]
    Marked(String, io::Error),
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] PathIoError),
}

impl StoreError {
    fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        let at = PathIoError::at(what, path);
        move |source| StoreError::Io(at(source))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct PartState {
    sha1: Sha1Digest,
    len: u64,
    bits: Vec<u8>,
}

/// Alignment of offsets, lengths and buffers for `O_DIRECT` writes (a page:
/// enough for every logical block size Linux supports below it).
pub const DIRECT_ALIGN: usize = 4096;

/// Bytes an [`AlignedBuf`] keeps past its end ([`AlignedBuf::with_tail_mut`]):
/// room for a cipher opening a record in place, whose tag lands past the
/// plaintext. A piece's last record then opens in the piece's own buffer
/// rather than through a staging buffer and a second copy.
pub const BUF_TAIL: usize = 64;

/// A byte buffer whose data starts at a multiple of [`DIRECT_ALIGN`], so a
/// whole piece in it can be written with `O_DIRECT` (safe code: a plain
/// vector with room to slide the start to the next aligned address, and
/// [`BUF_TAIL`] bytes past the end).
#[derive(Debug, Default)]
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes.
    pub fn new(len: usize) -> Self {
        let mut b = Self::default();
        b.resize(len);
        b
    }

    /// The longest it can be made without allocating again.
    pub fn room(&self) -> usize {
        self.raw.len().saturating_sub(DIRECT_ALIGN + BUF_TAIL)
    }

    /// Makes it `len` bytes long (contents unspecified), keeping the
    /// allocation when it is large enough.
    pub fn resize(&mut self, len: usize) {
        if self.raw.len() < len + DIRECT_ALIGN + BUF_TAIL {
            self.raw = vec![0; len + DIRECT_ALIGN + BUF_TAIL];
        }
        let addr = self.raw.as_ptr() as usize;
        self.start = addr.next_multiple_of(DIRECT_ALIGN) - addr;
        self.len = len;
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }

    /// The bytes and the [`BUF_TAIL`] bytes past them (scratch: what is
    /// written there is not part of the buffer), writable. Shorter only for
    /// a buffer never sized ([`Default`]).
    pub fn with_tail_mut(&mut self) -> &mut [u8] {
        let end = (self.start + self.len + BUF_TAIL).min(self.raw.len());
        &mut self.raw[self.start..end]
    }
}

/// A download's directory, held open (`O_PATH`) from the part file's
/// creation to its move into place: every name the download makes, opens
/// or moves there is looked up from the open directory (the `*at` calls
/// with its descriptor on the hot path, `/proc/self/fd/N/NAME` for the
/// rest), not through the path again, so a directory
/// on the path replaced meanwhile (by a symbolic link to elsewhere) cannot
/// send the download's files out of it.
///
/// A fetch opens the destination it was given by its path and each
/// directory under it from its parent's open directory, never through a
/// link ([`DestDir::child`]), once, and hands it to the downloads of every
/// file in it ([`PartFile::open_at`]): one open directory is the same
/// directory whatever happens to its path later.
#[derive(Debug)]
pub struct DestDir {
    /// The directory (`O_PATH`), where `/proc` shows it (else `None`).
    fd: Option<std::os::fd::OwnedFd>,
    /// `/proc/self/fd/N`, or the path as given where `/proc` is missing.
    via: PathBuf,
}

impl DestDir {
    /// Opens directory `dir` by its path, links followed: a destination
    /// the user named (its path is the user's choice).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        Self::open_flags(dir, dir, 0)
    }

    /// Opens the directory `path` names (its last component) in this one,
    /// not following a link: [`StoreError::Replaced`] if it is a link or
    /// not a directory.
    pub fn child(&self, path: &Path) -> Result<Self, StoreError> {
        Self::open_flags(&self.at(path), path, libc::O_NOFOLLOW)
    }

    fn open_flags(at: &Path, shown: &Path, flags: i32) -> Result<Self, StoreError> {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(at.as_os_str().as_bytes()).map_err(|e| {
            StoreError::io("open", shown)(io::Error::new(io::ErrorKind::InvalidInput, e))
        })?;
        // SAFETY: a NUL-terminated path alive for the call.
        let fd = unsafe {
            libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC | flags)
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENOTDIR) | Some(libc::ELOOP) if flags & libc::O_NOFOLLOW != 0 => {
                    StoreError::Replaced(shown.display().to_string())
                }
                _ => StoreError::io("open", shown)(e),
            });
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let via = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        if fs::symlink_metadata(&via).is_ok() {
            Ok(Self { fd: Some(fd), via })
        } else {
            // No /proc: by path, as given.
            Ok(Self { fd: None, via: at.to_owned() })
        }
    }

    /// `path`'s last component in this directory.
    pub fn at(&self, path: &Path) -> PathBuf {
        match path.file_name() {
            Some(name) => self.via.join(name),
            None => path.to_owned(),
        }
    }

    /// The open directory and `path`'s last component, for the `*at` calls
    /// below: `None` where the directory is not held open (no `/proc`) or
    /// the name cannot be one, and the caller goes by [`DestDir::at`].
    /// (A name looked up from the descriptor walks no `/proc/self/fd/N`
    /// first: a bulk get of small files made nine such walks a file, each
    /// about 2.7 µs more than the lookup itself.)
    fn fd_name(&self, path: &Path) -> Option<(i32, std::ffi::CString)> {
        use std::os::unix::ffi::OsStrExt;
        let fd = self.fd.as_ref()?.as_raw_fd();
        let name = std::ffi::CString::new(path.file_name()?.as_bytes()).ok()?;
        Some((fd, name))
    }

    /// The device and inode of what is at `path`'s name in this directory
    /// (a link not followed; a dangling one included), if anything is.
    fn id_of_name(&self, path: &Path) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let Some((fd, name)) = self.fd_name(path) else {
            return fs::symlink_metadata(self.at(path)).ok().map(|md| (md.dev(), md.ino()));
        };
        // SAFETY: a zeroed `stat` is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a descriptor held open by `self`, a NUL-terminated name and
        // a `stat` to fill, all alive for the call.
        let rc = unsafe { libc::fstatat(fd, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        (rc == 0).then_some((st.st_dev, st.st_ino))
    }

    /// Whether anything (a dangling symbolic link included) is at `path`'s
    /// name in this directory.
    fn holds_name(&self, path: &Path) -> bool {
        self.id_of_name(path).is_some()
    }

    /// Opens `path`'s name in this directory with `flags` (`O_CLOEXEC`
    /// added; `O_CREAT` not allowed: no mode is given).
    fn open_name(&self, path: &Path, flags: i32) -> io::Result<File> {
        use std::os::fd::FromRawFd;
        let Some((fd, name)) = self.fd_name(path) else {
            let mut opts = OpenOptions::new();
            opts.custom_flags(flags & !libc::O_ACCMODE);
            match flags & libc::O_ACCMODE {
                libc::O_RDONLY => opts.read(true),
                libc::O_WRONLY => opts.write(true),
                _ => opts.read(true).write(true),
            };
            return opts.open(self.at(path));
        };
        // SAFETY: a descriptor held open by `self` and a NUL-terminated name,
        // both alive for the call.
        let rc = unsafe { libc::openat(fd, name.as_ptr(), flags | libc::O_CLOEXEC) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `rc` was just opened and is owned by nobody else.
        Ok(unsafe { File::from_raw_fd(rc) })
    }

    /// Renames `from`'s name to `to`'s in this directory unless `to`'s is
    /// taken ([`rename_noreplace`]).
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        #[cfg(test)]
        if tests::links_refused() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let (Some((fd, from_name)), Some((_, to_name))) = (self.fd_name(from), self.fd_name(to))
        else {
            return rename_noreplace(&self.at(from), &self.at(to));
        };
        // SAFETY: a descriptor held open by `self` and two NUL-terminated
        // names, all alive for the call.
        let rc = unsafe {
            libc::renameat2(fd, from_name.as_ptr(), fd, to_name.as_ptr(), libc::RENAME_NOREPLACE)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// A download's `.part` file and its persisted bitfield.
#[derive(Debug)]
pub struct PartFile {
    dest: PathBuf,
    part: PathBuf,
    state: PathBuf,
    /// The destination's directory, held open ([`DestDir`]), and the three
    /// paths above through it: what the download's file operations use
    /// (the paths above are what messages and callers see).
    dir: std::sync::Arc<DestDir>,
    dest_at: PathBuf,
    part_at: PathBuf,
    state_at: PathBuf,
    file: File,
    /// The same file opened with `O_DIRECT`, when the filesystem allows it.
    direct: Option<File>,
    /// Cleared when a direct write of an aligned piece is refused: the
    /// filesystem opens with `O_DIRECT` but does not honour it; later
    /// pieces go straight to `pwrite`.
    direct_works: std::sync::atomic::AtomicBool,
    meta: FileMeta,
    /// The filesystem holding the part file (`st_dev`): a [`Settler`]
    /// syncs each filesystem of a batch once.
    dev: u64,
    /// The state file, open for in-place bit updates, with the pieces it
    /// records; `None` once the download finished.
    record: std::sync::Mutex<Option<StateRecord>>,
    /// Read back and checked before it moves into place: its filesystem
    /// took no `fallocate` (see [`FALLOCATE`]).
    check_back: bool,
    /// Set once [`discard`](PartFile::discard) removed the part file:
    /// whatever is verified later is not kept.
    discarded: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct StateRecord {
    file: File,
    /// Offset of the bitfield's first byte in the file.
    bits_at: u64,
    have: Bitfield,
    /// Bits set since the last fsync.
    unsynced: bool,
}

impl PartFile {
    /// Opens (resuming) or creates the part file for `meta` at `dest`.
    /// Returns it and the pieces already verified.
    pub fn open(dest: &Path, meta: &FileMeta) -> Result<(Self, Bitfield), StoreError> {
        let dir = dest.parent().unwrap_or(Path::new(""));
        Self::open_at(dest, meta, std::sync::Arc::new(DestDir::open(dir)?))
    }

    /// [`PartFile::open`] in `dir`, the directory of `dest` held open
    /// ([`DestDir`]): from here to the move into place the download's
    /// files are made, opened and moved through it, not through the path
    /// again.
    pub fn open_at(
        dest: &Path,
        meta: &FileMeta,
        dir: std::sync::Arc<DestDir>,
    ) -> Result<(Self, Bitfield), StoreError> {
        let part = part_path(dest);
        let state = state_path(dest);
        let (dest_at, part_at, state_at_path) = (dir.at(dest), dir.at(&part), dir.at(&state));
        // Anything at the path, a dangling symbolic link included: the
        // final move would refuse it only once the download is whole.
        if dir.holds_name(dest) {
            return Err(StoreError::Exists(dest.display().to_string()));
        }
        let pieces = meta.piece_hashes.len() as u32;
        // What is at the part file's or the state's path may be somebody
        // else's (the user's own `x.part`, or a file of the group named so):
        // only a part file or state this store made is reused or replaced.
        let mut state_at = if pieces > 1 {
            StateAt::read(&state_at_path, &state, meta)?
        } else {
            StateAt::Missing
        };
        if state_at == StateAt::Damaged {
            // Ours, damaged (a disk's fault, a hand's), if the part file
            // beside it was this very download's: every piece is hashed
            // again. Otherwise it is somebody's file that happens not to
            // decode, and is left alone.
            if marked_path(&part_at) != Some(meta.sha1) {
                return Err(StoreError::InTheWay(state.display().to_string()));
            }
            tracing::warn!("{}: damaged; every piece is verified again", state.display());
        }
        if state_at == StateAt::Foreign {
            return Err(StoreError::InTheWay(state.display().to_string()));
        }
        let (file, made, made_marked) = open_part(&dir, &part_at, &part, &meta.sha1)?;
        // One made marked is locked already (`create_marked`).
        if !made_marked && !lock(&file) {
            return Err(StoreError::Busy(dest.display().to_string()));
        }
        // Another download may have moved this file into place between the
        // look above and taking the lock: its part file was gone, so this
        // one made a new one, which it takes away again.
        if dir.holds_name(dest) {
            if made {
                let _ = fs::remove_file(&part_at);
            }
            return Err(StoreError::Exists(dest.display().to_string()));
        }
        // A mark is taken off as the file moves into place: a marked file
        // is a part file still (of this file, or of an earlier version).
        let mark_now = match (made, made_marked) {
            (true, true) => Some(meta.sha1),
            (true, false) => None,
            (false, _) => marked(&file),
        };
        if pieces == 1 && !made && mark_now.is_none() {
            // A part file of one piece without a mark: ours if a state
            // beside it names this very file (what a filesystem without
            // user attributes gets in place of the mark, below).
            state_at = StateAt::read(&state_at_path, &state, meta)?;
        }
        let ours = made
            || mark_now.is_some()
            || match state_at {
                StateAt::Ours(Some(_)) => true,
                StateAt::Ours(None) | StateAt::Damaged => pieces > 1,
                StateAt::Missing | StateAt::Foreign => false,
            };
        if !ours {
            return Err(StoreError::InTheWay(part.display().to_string()));
        }
        // Where the filesystem takes no user attributes (ramfs, some FUSE
        // and network filesystems), a part file of one piece gets a state
        // in their place, so that a run after a crash can claim it (a
        // black-box run's `kill -9` on ramfs left part files that every
        // later run refused as somebody's).
        let marked = mark_now == Some(meta.sha1) || mark(&file, &meta.sha1).is_ok();
        let one_piece_state = !marked && pieces == 1 && {
            if made {
                state_at = StateAt::read(&state_at_path, &state, meta)?;
            }
            // Never over somebody's file at the state's name (a file of the
            // group named so): then, as before, no state.
            matches!(state_at, StateAt::Missing | StateAt::Ours(_))
        };
        let md = file.metadata().map_err(StoreError::io("inspect", &part))?;
        let (current, dev) = (md.len(), std::os::unix::fs::MetadataExt::dev(&md));
        let claimed = if pieces == 1 {
            // A file of one piece keeps no state (see below): a part file
            // of the right length may hold it; hashing it again tells.
            let mut all = Bitfield::new(pieces);
            if current == meta.len {
                all.set(0);
            }
            all
        } else {
            match &mut state_at {
                StateAt::Ours(Some(have)) => std::mem::replace(have, Bitfield::new(0)),
                StateAt::Damaged => Bitfield::full(pieces),
                // A state that names another file beside a part file marked
                // with this one: its header was damaged into another file's
                // (a black-box run overwrote bytes 3-11, and 90 MB of good
                // pieces were fetched again). Every piece is hashed again.
                StateAt::Ours(None) if mark_now == Some(meta.sha1) => Bitfield::full(pieces),
                _ => Bitfield::new(pieces),
            }
        };
        if current != meta.len {
            let sized = (|| {
                // A new part file is empty already.
                if current != 0 {
                    file.set_len(0).map_err(StoreError::io("truncate", &part))?;
                }
                if pieces == 1 && fallocate_known(dev).is_some() {
                    // Its one write comes next and allocates as it goes: an
                    // fallocate first was a twentieth of a bulk get's CPU on
                    // a tree of small files (7 % of its system time). (The
                    // first file on each filesystem is preallocated, to
                    // learn whether it takes it.)
                    file.set_len(meta.len).map_err(StoreError::io("size", &part))
                } else {
                    let allocated = preallocate(&file, meta.len)
                        .map_err(StoreError::io("preallocate", &part))?;
                    if meta.len > 0 {
                        fallocate_learnt(dev, allocated);
                    }
                    Ok(())
                }
            })();
            if let Err(e) = sized {
                // A part file made for nothing (a full disk): not left
                // behind, empty, for the user to find.
                if made {
                    let _ = fs::remove_file(&part_at);
                }
                return Err(e);
            }
        }
        let direct = dir.open_name(&part, libc::O_WRONLY | libc::O_DIRECT | libc::O_NOFOLLOW).ok();
        let check_back = checks_back(dev, &file, meta.len);
        let mut this = Self {
            dest: dest.to_owned(),
            part,
            state,
            dir,
            dest_at,
            part_at,
            state_at: state_at_path,
            file,
            direct_works: std::sync::atomic::AtomicBool::new(direct.is_some()),
            direct,
            meta: meta.clone(),
            dev,
            record: std::sync::Mutex::new(None),
            check_back,
            discarded: std::sync::atomic::AtomicBool::new(false),
        };
        let have =
            if current == meta.len { this.reverify(&claimed) } else { Bitfield::new(pieces) };
        if pieces > 1 || one_piece_state {
            let record = match this.write_state(&have) {
                Ok(r) => r,
                Err(e) => {
                    // Its state not written (a full disk): a part file made
                    // now holds nothing to resume and is not left behind.
                    if made {
                        let _ = fs::remove_file(&this.part_at);
                    }
                    return Err(e);
                }
            };
            this.record = std::sync::Mutex::new(Some(record));
        } else {
            // One piece (marked) is verified only when the file is whole, so
            // there is nothing between "none" and "done" to record. Creating and then
            // deleting a state file per file was most of a small file's cost
            // in a bulk fetch (each deleted inode is one more that ext4
            // without a journal skips, for one to six minutes, when it
            // allocates the next). What is at the state's path is left
            // alone: it may be a file of the group named `x.part.state`.
        }
        Ok((this, have))
    }

    /// Writes the whole state atomically (temporary file, fsync, rename) and
    /// keeps it open for in-place updates.
    fn write_state(&self, have: &Bitfield) -> Result<StateRecord, StoreError> {
        let st =
            PartState { sha1: self.meta.sha1, len: self.meta.len, bits: have.as_bytes().to_vec() };
        let bytes = postcard::to_stdvec(&st)
            .map_err(|e| StoreError::io("encode", &self.state)(io::Error::other(e)))?;
        // postcard writes a byte vector as its length and then its bytes:
        // the bitfield is the file's tail.
        let bits_at = (bytes.len() - have.as_bytes().len()) as u64;
        let file = write_atomically(&self.state_at, &bytes)
            .map_err(StoreError::io("write", &self.state))?;
        Ok(StateRecord { file, bits_at, have: have.clone(), unsynced: false })
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
    /// Goes around the page cache (`O_DIRECT`) for the whole blocks of
    /// `data` when `offset` and the buffer's address are multiples of
    /// [`DIRECT_ALIGN`] and the filesystem allows it; a tail shorter than a
    /// block goes through the page cache.
    pub fn write_piece(&self, mut offset: u64, mut data: &[u8]) -> Result<(), StoreError> {
        while !data.is_empty() {
            let (file, direct, len) = self.target(offset, data);
            let (chunk, rest) = data.split_at(len);
            match file.write_all_at(chunk, offset) {
                Ok(()) => {}
                // Refused (an alignment the device wants larger, a
                // filesystem that accepts the flag but not the writes):
                // this piece and every later one go through the page cache.
                Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    self.refuse_direct();
                    continue;
                }
                Err(e) => return Err(StoreError::io("write", &self.part)(e)),
            }
            offset += len as u64;
            data = rest;
        }
        Ok(())
    }

    /// How a driver that writes by itself (io_uring) writes `data` at
    /// `offset`, as [`PartFile::write_piece`] would: the descriptor, whether
    /// it is the `O_DIRECT` one, and how many of the bytes to write with it
    /// (when direct, the whole blocks; the rest then takes a second write).
    /// A direct write refused with `EINVAL` is reported with
    /// [`PartFile::refuse_direct`] and retried on the plain one.
    pub fn write_target(&self, offset: u64, data: &[u8]) -> (RawFd, bool, usize) {
        let (file, direct, len) = self.target(offset, data);
        (file.as_raw_fd(), direct, len)
    }

    /// The file to write `data` at `offset` with, whether it is the
    /// `O_DIRECT` one, and how many of the bytes it takes.
    fn target(&self, offset: u64, data: &[u8]) -> (&File, bool, usize) {
        let blocks = data.len() / DIRECT_ALIGN * DIRECT_ALIGN;
        let aligned = offset % DIRECT_ALIGN as u64 == 0
            && blocks > 0
            && (data.as_ptr() as usize) % DIRECT_ALIGN == 0;
        match self.direct.as_ref() {
            Some(d) if aligned && self.direct_works.load(Ordering::Relaxed) => (d, true, blocks),
            _ => (&self.file, false, data.len()),
        }
    }

    /// A direct write was refused: this piece and every later one go
    /// through the page cache (see [`PartFile::write_piece`]).
    pub fn refuse_direct(&self) {
        self.direct_works.store(false, Ordering::Relaxed);
    }

    /// Whether whole pieces bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct_works.load(Ordering::Relaxed)
    }

    /// Records piece `piece` as verified: one byte written in place. It
    /// survives a killed process at once (the page cache keeps it) and a
    /// power cut after the next [`PartFile::sync_state`]; resume re-verifies
    /// either way. Does nothing after [`PartFile::finish`].
    pub fn record(&self, piece: u32) -> Result<(), StoreError> {
        let mut guard = self.record.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rec) = guard.as_mut() else { return Ok(()) };
        if !rec.have.set(piece) {
            return Ok(());
        }
        rec.unsynced = true;
        let i = (piece / 8) as usize;
        rec.file
            .write_all_at(&rec.have.as_bytes()[i..=i], rec.bits_at + i as u64)
            .map_err(StoreError::io("write", &self.state))
    }

    /// Deletes the part file and its state: the download failed holding no
    /// verified piece, so a resume has nothing to take from them (a
    /// preallocated part file of a large file is as large as the file).
    /// Nothing is recorded after.
    pub fn discard(&self) {
        let mut guard = self.record.lock().unwrap_or_else(|p| p.into_inner());
        let state_file = guard.take().map(|r| r.file);
        self.discarded.store(true, std::sync::atomic::Ordering::Release);
        let _ = fs::remove_file(&self.part_at);
        // A file of one piece has no state (but where it could not be
        // marked): what is at that path is not its.
        if self.meta.piece_hashes.len() > 1 || state_file.is_some() {
            remove_state(&self.dir, &self.state_at, state_file.as_ref());
        }
        self.release();
    }

    /// Whether [`discard`](Self::discard) removed the part file (pieces
    /// verified since are not kept for a resume).
    pub fn discarded(&self) -> bool {
        self.discarded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Lets go of the part file's lock ([`lock`]): the download is over
    /// (failed, or stopped by its user), though this `PartFile` may live
    /// on with it (a shell lists its downloads), and a later download of
    /// the same destination takes the part file up.
    pub fn release(&self) {
        unlock(&self.file);
    }

    /// Makes the recorded pieces durable (fdatasync), if any changed.
    pub fn sync_state(&self) -> Result<(), StoreError> {
        let file = {
            let mut guard = self.record.lock().unwrap_or_else(|p| p.into_inner());
            let Some(rec) = guard.as_mut().filter(|r| r.unsynced) else { return Ok(()) };
            rec.unsynced = false;
            rec.file.try_clone().map_err(StoreError::io("sync", &self.state))?
        };
        // Outside the lock: workers keep recording while the disk syncs.
        file.sync_data().map_err(StoreError::io("sync", &self.state))
    }

    /// Every piece is verified: make the data durable and move it to the
    /// destination (refusing to replace a file that appeared there).
    pub fn finish(&self) -> Result<(), StoreError> {
        // No state write may land after the state file is removed.
        let mut record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        let state_file = record.take().map(|r| r.file);
        let moved = unmark(&self.file)
            .map_err(|e| StoreError::Marked(self.part.display().to_string(), e))
            .and_then(|()| self.file.sync_all().map_err(StoreError::io("sync", &self.part)))
            .and_then(|()| self.read_back())
            .and_then(|()| {
                move_into_place(
                    &self.dir,
                    (&self.part_at, &self.dest_at),
                    Some(&self.file),
                    &self.dest,
                    (self.meta.len, self.meta.sha1),
                )
            });
        self.release();
        if let Err(e) = moved {
            let has_state = self.meta.piece_hashes.len() > 1 || state_file.is_some();
            if has_state && matches!(e, StoreError::InTheWay(_)) {
                // Something else at the part file's name: nothing for a
                // later run to take up, and the state would claim it.
                remove_state(&self.dir, &self.state_at, state_file.as_ref());
            }
            // Still a part file, for the next run to take up.
            let _ = mark(&self.file, &self.meta.sha1);
            return Err(e);
        }
        if self.meta.piece_hashes.len() > 1 || state_file.is_some() {
            remove_state(&self.dir, &self.state_at, state_file.as_ref());
        }
        if let Ok(d) = File::open(&self.dir.via) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// On a filesystem that may lose written data unnoticed
    /// ([`FALLOCATE`]), once it is synced: the file read back whole holds
    /// the bytes verified, or the move is refused (the part file stays,
    /// and a resume hashes every piece again).
    fn read_back(&self) -> Result<(), StoreError> {
        match self.check_back && !holds(&self.part_at, self.meta.len, &self.meta.sha1) {
            true => {
                Err(StoreError::io("read back", &self.part)(io::Error::other(LOST_AT_WRITE_BACK)))
            }
            false => Ok(()),
        }
    }

    /// Every piece is verified: like [`PartFile::finish`], but the data is
    /// made durable and moved to the destination by `settler`, with the
    /// other files of its batch. Until then the file stays `.part` (and a
    /// multi-piece file keeps its state), so a crash before it is settled
    /// leaves a download that resumes.
    pub fn finish_later(&self, settler: &Settler) {
        let mut record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        let state_file = record.take().map(|r| r.file);
        settler.submit(Pending {
            // The part file stays locked until it is moved (or left).
            lock: self.file.try_clone().ok(),
            sha1: self.meta.sha1,
            len: self.meta.len,
            part: self.part_at.clone(),
            dest: self.dest_at.clone(),
            shown: self.dest.clone(),
            state: (self.meta.piece_hashes.len() > 1 || state_file.is_some())
                .then(|| self.state_at.clone()),
            state_file,
            dev: self.dev,
            check_back: self.check_back,
            dir: std::sync::Arc::clone(&self.dir),
        });
    }

    /// Fills the part file with the bytes of `from`, a file this node holds
    /// that is believed to be the same (a share with this SHA1), and returns
    /// the pieces that verify: a download of bytes the node has already
    /// takes nothing from the network. A multi-piece file's state records
    /// them.
    pub fn fill_from(&self, from: &File) -> Result<Bitfield, StoreError> {
        use std::io::{Read, Seek, Write};
        let mut to = &self.file;
        let copied = to
            .seek(io::SeekFrom::Start(0))
            .and_then(|_| io::copy(&mut from.take(self.meta.len), &mut to))
            .and_then(|n| to.flush().map(|()| n));
        if let Err(e) = &copied {
            tracing::warn!("copy into {}: {e}", self.part.display());
        }
        // Whatever the copy did (it may have stopped halfway over pieces
        // verified before), what verifies now is what the file holds.
        let pieces = self.meta.piece_hashes.len() as u32;
        let have = self.reverify(&Bitfield::full(pieces));
        if pieces > 1 {
            for p in 0..pieces {
                if have.get(p) {
                    self.record(p)?;
                }
            }
        }
        Ok(have)
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

/// Renames the finished `part` to `dest`, refusing to replace a file
/// that appeared there.
///
/// A part file gone, with the file (`len` bytes of SHA1 `sha1`) at `dest`,
/// is a move done already: another download into the same place (another
/// `get` into the same directory) shared this part file and moved it
/// first. Both then succeed; the second used to fail ("rename: No such
/// file or directory") with the file whole in place.
fn move_into_place(
    dir: &DestDir,
    (part, dest): (&Path, &Path),
    written: Option<&File>,
    shown: &Path,
    (len, sha1): (u64, Sha1Digest),
) -> Result<(), StoreError> {
    let exists = |e: io::Error, what| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            StoreError::Exists(shown.display().to_string())
        } else {
            StoreError::io(what, shown)(e)
        }
    };
    // What is moved is a name: the part file this download wrote, unless
    // something else was put at its name meanwhile (a black-box run moved
    // the part file away mid-fetch and put a file of its own there, which
    // the move put in place as the group's file, the fetch reporting
    // success). Looked at just before the move; the user's file stays.
    if let Some(f) = written {
        if dir.id_of_name(part).is_some_and(|at| Some(at) != id_of(f)) {
            return Err(StoreError::InTheWay(part_path(shown).display().to_string()));
        }
    }
    match dir.rename_noreplace(part, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && holds(dest, len, &sha1) => Ok(()),
        // A filesystem without RENAME_NOREPLACE: link, then unlink.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
            match hard_link(part, dest) {
                Ok(()) => {
                    fs::remove_file(part).map_err(StoreError::io("remove", &part_path(shown)))
                }
                // Nor hard links (FAT, exFAT, NTFS-3G and sshfs through
                // libfuse 2): a plain rename once nothing is at the
                // destination's name. Every file of a fetch there failed
                // at its move, left whole as a part file that no run could
                // move either. What another process makes at that name
                // between the look and the rename is replaced: the one way
                // a fetch can replace a file, on a filesystem that offers
                // none to refuse it.
                Err(l) if no_links(&l) => match dir.holds_name(dest) {
                    true => Err(StoreError::Exists(shown.display().to_string())),
                    false => fs::rename(part, dest).map_err(|e| exists(e, "rename")),
                },
                Err(l) => Err(exists(l, "link")),
            }
        }
        Err(e) => Err(exists(e, "rename")),
    }
}

/// `fs::hard_link` (refused as a filesystem without links refuses it in
/// tests that ask: [`tests::without_links`]).
fn hard_link(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(test)]
    if tests::links_refused() {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    fs::hard_link(from, to)
}

/// Whether a failed `link` says the filesystem has no hard links.
fn no_links(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS))
}

/// The device and inode of an open file.
fn id_of(file: &File) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().ok().map(|md| (md.dev(), md.ino()))
}

/// Removes a finished download's state at `state` (in `dir`): only if it is
/// still `written`, the state file the download wrote, when that is known.
/// (A black-box run put a file of its own at the state's name mid-fetch,
/// and the download's end deleted it.)
fn remove_state(dir: &DestDir, state: &Path, written: Option<&File>) {
    if written.is_none_or(|f| dir.id_of_name(state).is_some_and(|at| Some(at) == id_of(f))) {
        let _ = fs::remove_file(state);
    }
}

/// Whether `path` is a regular file of `len` bytes whose SHA1 is `sha1`
/// (read whole: asked only when a move found its part file gone, or when
/// a shared file's change time moved with its length and modification
/// time kept).
pub fn holds(path: &Path, len: u64, sha1: &Sha1Digest) -> bool {
    use sha1::{Digest, Sha1};
    let Ok(mut f) =
        OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)
    else {
        return false;
    };
    if !f.metadata().is_ok_and(|m| m.is_file() && m.len() == len) {
        return false;
    }
    let mut h = Sha1::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match io::Read::read(&mut f, &mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    Sha1Digest(h.finalize().into()) == *sha1
}

/// Where the part file of a download to `dest` is while it runs (and,
/// under a [`Settler`], until it is settled): `<name>.part`. A name too long
/// for `<name>.part.state.tmp` to be a file name (255 bytes) is cut, and a
/// hash of it added: `<its first 200 bytes>~<16 hex digits>.part`. (It
/// used to fail with "File name too long", or with a false "in the way",
/// for names of 241 to 255 bytes, which groups accept.)
pub fn part_path(dest: &Path) -> PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let Some(name) = dest.file_name() else { return with_suffix(dest, ".part") };
    let name = name.as_bytes();
    if name.len() <= LONGEST_PLAIN_PART_NAME {
        return with_suffix(dest, ".part");
    }
    let mut cut = CUT_NAME.min(name.len());
    // At a character's start, when the name is UTF-8 (group names are).
    while cut > 0 && (name[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    let mut short = name[..cut].to_vec();
    short.extend_from_slice(format!("~{}.part", &sha1_of(name).to_hex()[..16]).as_bytes());
    dest.with_file_name(std::ffi::OsString::from_vec(short))
}

/// Where a multi-piece download to `dest` records its verified pieces.
fn state_path(dest: &Path) -> PathBuf {
    with_suffix(&part_path(dest), ".state")
}

/// The longest name whose part file is `<name>.part`: 255 bytes less
/// `.part.state` and the `.tmp` it is written through.
const LONGEST_PLAIN_PART_NAME: usize = 255 - ".part.state".len() - ".tmp".len();
/// How much of a longer name its part file keeps.
const CUT_NAME: usize = 200;

/// A finished part file waiting for its [`Settler`].
#[derive(Debug)]
struct Pending {
    /// The part file, open: its lock ([`lock`]) is let go of once it has
    /// moved, or failed to.
    lock: Option<File>,
    /// The file's SHA1: its part file's mark, put back if it cannot move.
    sha1: Sha1Digest,
    /// The file's length.
    len: u64,
    /// The part file and the destination through the directory held
    /// open ([`DestDir`]), and the destination as given (for messages and
    /// the failures returned).
    part: PathBuf,
    dest: PathBuf,
    shown: PathBuf,
    /// The state file to remove once moved (multi-piece files).
    state: Option<PathBuf>,
    /// The state file as this download wrote it: what is at `state` is
    /// removed only if it is still that file.
    state_file: Option<File>,
    dev: u64,
    /// Read back and checked before it moves ([`PartFile::check_back`]).
    check_back: bool,
    /// Held open until the file is settled; its move is made there.
    dir: std::sync::Arc<DestDir>,
}

/// Why a file read back before its move is not moved.
const LOST_AT_WRITE_BACK: &str = "its bytes on disk are not those written and verified: the \
     filesystem lost some as it wrote them back (a full disk?); run the same command again once \
     there is room";

/// Files finished meanwhile are settled together, at most this many.
const SETTLE_BATCH: usize = 4096;
/// How long a batch waits for more files after its first. Dropping the
/// settler or [`Settler::flush`] cuts the wait short.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Makes finished downloads durable and moves them into place in batches,
/// on its own thread (see the module's introduction). Dropping it settles
/// what was handed to it first.
#[derive(Debug)]
pub struct Settler {
    tx: Option<crossbeam_channel::Sender<Settle>>,
    shared: std::sync::Arc<SettleShared>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Files handed over and not settled yet, at most: each holds its part
    /// file open until it is moved, and under a low limit on open files
    /// (`prlimit --nofile=150`) the queue behind a batch's syncs took every
    /// descriptor left (a bulk get of small files failed "Too many open
    /// files"). A hand-over waits for room; with the usual limits, never.
    most_unsettled: u64,
}

/// What the settling thread is told.
#[derive(Debug)]
enum Settle {
    File(Box<Pending>),
    /// Settle what has come without waiting for more.
    Now,
}

#[derive(Debug, Default)]
struct SettleShared {
    state: std::sync::Mutex<SettleState>,
    settled: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct SettleState {
    submitted: u64,
    settled: u64,
    /// Destinations that could not be settled, and why, since the last
    /// [`Settler::flush`].
    failed: Vec<(PathBuf, String)>,
}

impl Settler {
    /// Starts the settling thread.
    pub fn new() -> io::Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded::<Settle>();
        let shared = std::sync::Arc::new(SettleShared::default());
        let sh = std::sync::Arc::clone(&shared);
        let thread = std::thread::Builder::new().name("settle".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let Settle::File(first) = first else { continue };
                // Files finish one by one: those finished shortly after the
                // first share its two syncs (a batch of whatever had queued
                // was ~3 files, and each sync costs about what it covers).
                let until = std::time::Instant::now() + SETTLE_WAIT;
                let mut batch = vec![*first];
                while batch.len() < SETTLE_BATCH {
                    match rx.recv_deadline(until) {
                        Ok(Settle::File(p)) => batch.push(*p),
                        Ok(Settle::Now) | Err(_) => break,
                    }
                }
                sh.done(batch.len(), settle(&batch));
            }
        })?;
        let most_unsettled = (open_files_limit().saturating_sub(64) / 4).max(8);
        Ok(Self { tx: Some(tx), shared, thread: Some(thread), most_unsettled })
    }

    fn submit(&self, p: Pending) {
        {
            let mut st = self.shared.lock();
            while st.submitted - st.settled >= self.most_unsettled {
                if let Some(tx) = &self.tx {
                    let _ = tx.send(Settle::Now);
                }
                st = self.shared.settled.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            st.submitted += 1;
        }
        if let Some(Err(e)) = self.tx.as_ref().map(|tx| tx.send(Settle::File(Box::new(p)))) {
            // The thread is gone (it cannot be while `self` lives): settle
            // here rather than lose the file.
            if let Settle::File(p) = e.into_inner() {
                self.shared.done(1, settle(&[*p]));
            }
        }
    }

    /// Waits until every file handed over so far is settled; returns the
    /// destinations that could not be (their data stays in `.part`), with
    /// the reason, since the last call.
    pub fn flush(&self) -> Vec<(PathBuf, String)> {
        let mut st = self.shared.lock();
        if st.settled < st.submitted {
            if let Some(tx) = &self.tx {
                let _ = tx.send(Settle::Now);
            }
        }
        while st.settled < st.submitted {
            st = self.shared.settled.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        std::mem::take(&mut st.failed)
    }
}

impl SettleShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SettleState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn done(&self, n: usize, failed: Vec<(PathBuf, String)>) {
        let mut st = self.lock();
        st.settled += n as u64;
        st.failed.extend(failed);
        self.settled.notify_all();
    }
}

impl Drop for Settler {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The soft limit on this process's open files (`u64::MAX` if unknown).
pub fn open_files_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes only `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return u64::MAX;
    }
    lim.rlim_cur
}

/// `syncfs` on the filesystem holding `path`.
fn sync_fs_of(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    // SAFETY: syncfs takes a valid open descriptor (owned by `f` for the
    // duration of the call) and no memory.
    if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `syncfs` on the filesystem `dev` of `batch`, through the first of its
/// files (or their directories) that can be opened: one part file gone
/// (removed by hand, by another process) fails its own move only, not
/// every file of the batch on that filesystem.
fn sync_dev(batch: &[Pending], dev: u64) -> Result<(), String> {
    let mut why = String::from("no file to sync through");
    for p in batch.iter().filter(|p| p.dev == dev) {
        let dir = p.part.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        for at in [p.part.as_path(), dir] {
            match sync_fs_of(at) {
                Ok(()) => return Ok(()),
                Err(e) => why = format!("sync {}: {e}", part_path(&p.shown).display()),
            }
        }
    }
    Err(why)
}

/// Settles a batch: one `syncfs` per filesystem makes the data durable,
/// then each file is moved into place, then one more `syncfs` makes the
/// moves durable. Returns the files that failed, and why.
fn settle(batch: &[Pending]) -> Vec<(PathBuf, String)> {
    let mut failed = Vec::new();
    let mut devs: Vec<(u64, Result<(), String>)> = Vec::new();
    for p in batch {
        if !devs.iter().any(|(d, _)| *d == p.dev) {
            devs.push((p.dev, sync_dev(batch, p.dev)));
        }
    }
    let mut moved: Vec<&Pending> = Vec::with_capacity(batch.len());
    for p in batch {
        let synced = devs.iter().find(|(d, _)| *d == p.dev).map(|(_, r)| r);
        if let Some(Err(e)) = synced {
            failed.push((p.shown.clone(), e.clone()));
            continue;
        }
        if p.check_back && !holds(&p.part, p.len, &p.sha1) {
            if let Some(f) = &p.lock {
                unlock(f);
            }
            let why = format!("read back {}: {LOST_AT_WRITE_BACK}", part_path(&p.shown).display());
            failed.push((p.shown.clone(), why));
            continue;
        }
        // Whole and durable: no part file any more for a later download to
        // take up (the mark stays until now, so that a bulk get waiting for
        // this path knows it is one).
        // (By the descriptor the download wrote, when it is held: no path
        // to look up.)
        let unmarked = match &p.lock {
            Some(f) => unmark(f),
            None => unmark_path(&p.part),
        };
        let into_place = unmarked
            .map_err(|e| StoreError::Marked(part_path(&p.shown).display().to_string(), e))
            .and_then(|()| {
                move_into_place(
                    &p.dir,
                    (&p.part, &p.dest),
                    p.lock.as_ref(),
                    &p.shown,
                    (p.len, p.sha1),
                )
            });
        if into_place.is_err() {
            // Still a part file, for the next run to take up.
            match &p.lock {
                Some(f) => {
                    let _ = mark(f, &p.sha1);
                }
                None => mark_path(&p.part, &p.sha1),
            }
        }
        if let Some(f) = &p.lock {
            unlock(f);
        }
        match into_place {
            Ok(()) => {
                if let Some(state) = &p.state {
                    remove_state(&p.dir, state, p.state_file.as_ref());
                }
                moved.push(p);
            }
            Err(e) => {
                if let (StoreError::InTheWay(_), Some(state)) = (&e, &p.state) {
                    // Not its part file any more: nothing for a later run
                    // to take up, and its state would claim that file.
                    remove_state(&p.dir, state, p.state_file.as_ref());
                }
                failed.push((p.shown.clone(), e.to_string()))
            }
        }
    }
    let mut names_synced: Vec<u64> = Vec::new();
    for p in &moved {
        if names_synced.contains(&p.dev) {
            continue;
        }
        names_synced.push(p.dev);
        if let Err(e) = sync_fs_of(&p.dest) {
            let why = format!("sync {}: {e}", p.shown.display());
            failed.extend(
                moved.iter().filter(|q| q.dev == p.dev).map(|q| (q.shown.clone(), why.clone())),
            );
        }
    }
    failed
}

/// Renames `from` to `to` unless `to` exists (`renameat2` with
/// `RENAME_NOREPLACE`: atomic, one call).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both arguments are valid NUL-terminated strings that outlive
    // the call; AT_FDCWD resolves them like rename(2) does.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What is at a download's state path.
#[derive(Debug, PartialEq, Eq)]
enum StateAt {
    /// Nothing.
    Missing,
    /// A state this store wrote: the pieces it records when it is this
    /// file's (`None`: another file's, or an earlier version of this one).
    Ours(Option<Bitfield>),
    /// A regular file that is not a state: ours if the part file beside
    /// it is this download's (see [`PartFile::open`]), else somebody's.
    Damaged,
    /// Something else, never replaced.
    Foreign,
}

impl StateAt {
    /// What is at `path` (`shown`: the path for messages). A path that
    /// cannot be looked at (no permission, a name too long) is that error,
    /// not something in the way.
    fn read(path: &Path, shown: &Path, meta: &FileMeta) -> Result<Self, StoreError> {
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::Missing),
            Err(e) => return Err(StoreError::io("inspect", shown)(e)),
            Ok(md) if !md.is_file() => return Ok(Self::Foreign),
            Ok(md) if md.len() > MAX_STATE_LEN => return Ok(Self::Damaged),
            Ok(_) => {}
        }
        let mut bytes = Vec::new();
        let read = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .and_then(|f| io::Read::read_to_end(&mut io::Read::take(f, MAX_STATE_LEN), &mut bytes));
        match read {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(Self::Foreign),
            Err(e) => return Err(StoreError::io("read", shown)(e)),
        }
        // A state is exactly a record whose bitfield fits its length; other
        // bytes that happen to decode are not taken for one.
        let st = match postcard::take_from_bytes::<PartState>(&bytes) {
            Ok((st, [])) => st,
            _ => return Ok(Self::Damaged),
        };
        let Ok(pieces) = u32::try_from(st.len.div_ceil(crate::meta::PIECE_LEN)) else {
            return Ok(Self::Damaged);
        };
        let Some(bits) = Bitfield::from_bytes(&st.bits, pieces) else { return Ok(Self::Damaged) };
        Ok(Self::Ours((st.sha1 == meta.sha1 && st.len == meta.len).then_some(bits)))
    }
}

/// Longest state file read: the bitfield of a file of 64 M pieces (32 TiB).
const MAX_STATE_LEN: u64 = (1 << 23) + 64;

/// Whether `path` holds a download state this store wrote (of any file):
/// such a file at a destination goes once its download is done.
pub fn is_part_state(path: &Path) -> bool {
    let any =
        FileMeta { name: String::new(), len: 0, sha1: Sha1Digest([0; 20]), piece_hashes: vec![] };
    matches!(StateAt::read(path, path, &any), Ok(StateAt::Ours(_)))
}

/// Opens the part file at `part`, creating it if nothing is there,
/// already marked as a part file of `sha1` where the filesystem allows
/// ([`create_marked`]): the file, whether it was made now, and whether it
/// was made marked. Only a regular file is opened, never through a
/// symbolic link.
fn open_part(
    dir: &DestDir,
    part: &Path,
    shown: &Path,
    sha1: &Sha1Digest,
) -> Result<(File, bool, bool), StoreError> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).custom_flags(libc::O_NOFOLLOW);
    match create_marked(dir, part, sha1) {
        Ok(Some(f)) => return Ok((f, true, true)),
        Ok(None) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(StoreError::io("create", shown)(e)),
    }
    match opts.clone().create_new(true).open(part) {
        Ok(f) => return Ok((f, true, false)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(StoreError::io("create", shown)(e)),
    }
    let in_the_way = || StoreError::InTheWay(shown.display().to_string());
    // A FIFO or a device is not opened (a FIFO would block); a symbolic
    // link fails O_NOFOLLOW.
    match fs::symlink_metadata(part) {
        Ok(md) if md.is_file() => {}
        _ => return Err(in_the_way()),
    }
    match opts.open(part) {
        Ok(f) => Ok((f, false, false)),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(in_the_way()),
        Err(e) => Err(StoreError::io("open", shown)(e)),
    }
}

/// Makes the part file at `part` with its mark already on it: an unnamed
/// file in the destination's directory (`O_TMPFILE`) is marked and then
/// linked at `part`, failing with `AlreadyExists` if something is there.
/// A part file made and then marked, as before, was left unmarked by a
/// crash between the two (a `kill -9` of a bulk get, two runs in four): no
/// run after could tell it from somebody's file, and each refused it.
/// `Ok(None)` where the filesystem or the system offers no way (no
/// `O_TMPFILE`, no user attributes, no `/proc`): the caller makes it
/// unmarked, as before.
fn create_marked(dir: &DestDir, part: &Path, sha1: &Sha1Digest) -> io::Result<Option<File>> {
    match dir.fd_name(part) {
        Some((dfd, name)) => create_marked_at(dfd, &name, sha1),
        None => create_marked_path(part, sha1),
    }
}

/// [`create_marked`] in the open directory `dfd`, as `name`.
fn create_marked_at(
    dfd: i32,
    name: &std::ffi::CStr,
    sha1: &Sha1Digest,
) -> io::Result<Option<File>> {
    use std::os::fd::FromRawFd;
    // SAFETY: a descriptor the caller holds open and a NUL-terminated path,
    // both alive for the call.
    let rc = unsafe {
        libc::openat(dfd, c".".as_ptr(), libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC, 0o666)
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        // As in `create_marked_path`: a directory gone is the same error by
        // either way; anything else falls back.
        return match e.kind() {
            io::ErrorKind::NotFound => Err(e),
            _ => Ok(None),
        };
    }
    // SAFETY: `rc` was just opened and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(rc) };
    if mark(&file, sha1).is_err() {
        return Ok(None);
    }
    // Locked before anyone can see it.
    lock(&file);
    // By the descriptor itself where the kernel lets this process
    // (`AT_EMPTY_PATH`: CAP_DAC_READ_SEARCH, or a kernel that allows it for
    // a file of one's own), else through `/proc/self/fd/N`; once the second
    // way works where the first did not, the next part file goes it at once.
    static EMPTY_PATH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    if EMPTY_PATH.load(Ordering::Relaxed) {
        match link_in(&file, dfd, name, true) {
            Ok(()) => return Ok(Some(file)),
            Err(e)
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::EPERM) | Some(libc::EINVAL)
                ) =>
            {
                return linked(e)
            }
            Err(_) => {}
        }
    }
    match link_in(&file, dfd, name, false) {
        Ok(()) => {
            EMPTY_PATH.store(false, Ordering::Relaxed);
            Ok(Some(file))
        }
        Err(e) => linked(e),
    }
}

/// Gives the unnamed `file` the name `name` in the open directory `dfd`,
/// refusing to replace anything there: by its descriptor
/// (`AT_EMPTY_PATH`) or through `/proc/self/fd/N`.
fn link_in(file: &File, dfd: i32, name: &std::ffi::CStr, empty_path: bool) -> io::Result<()> {
    let rc = if empty_path {
        // SAFETY: two valid descriptors and two NUL-terminated paths, all
        // alive for the call.
        unsafe {
            libc::linkat(file.as_raw_fd(), c"".as_ptr(), dfd, name.as_ptr(), libc::AT_EMPTY_PATH)
        }
    } else {
        let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(io::Error::other)?;
        // SAFETY: a valid descriptor and two NUL-terminated paths, all alive
        // for the call.
        unsafe {
            libc::linkat(libc::AT_FDCWD, from.as_ptr(), dfd, name.as_ptr(), libc::AT_SYMLINK_FOLLOW)
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What a failed link of a new part file means: something is at its name
/// (`AlreadyExists`), or no way to make it marked (`Ok(None)`: no `/proc`,
/// a filesystem that will not link), which the caller makes as before.
fn linked(e: io::Error) -> io::Result<Option<File>> {
    match e.kind() {
        io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(None),
    }
}

/// [`create_marked`] by path (the directory not held open).
fn create_marked_path(part: &Path, sha1: &Sha1Digest) -> io::Result<Option<File>> {
    use std::os::unix::ffi::OsStrExt;
    let dir = match part.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file =
        match OpenOptions::new().read(true).write(true).custom_flags(libc::O_TMPFILE).open(dir) {
            Ok(f) => f,
            // A directory that is not there (or not one) is the same error by
            // either way of making the file; anything else (EOPNOTSUPP, EISDIR
            // or EINVAL where O_TMPFILE is not known) falls back.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
            Err(_) => return Ok(None),
        };
    if mark(&file, sha1).is_err() {
        return Ok(None);
    }
    // Locked before anyone can see it.
    lock(&file);
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(io::Error::other)?;
    let to = std::ffi::CString::new(part.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: two NUL-terminated paths alive for the call.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        return Ok(Some(file));
    }
    linked(io::Error::last_os_error())
}

/// Takes the part file's lock (`flock`, exclusive, not waiting): false
/// if another download holds it. A download holds its part file's lock
/// until the file is moved into place or the download ends (the kernel
/// lets go of it when the process does, a crash included), so that two
/// downloads into one destination at once (two `get`s, or a shell and a
/// `get`) never write one part file: the second is told at once instead of
/// failing later at the final move, or leaving a second part file beside
/// the finished one. A filesystem without locks locks nothing (true).
fn lock(file: &File) -> bool {
    // SAFETY: a valid descriptor owned by `file`.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EWOULDBLOCK)
}

/// Whether another download (of any process) holds the part file of a
/// download to `dest` now ([`lock`]: the reason a download into the same
/// place is refused with [`StoreError::Busy`]); if it does, what its part
/// file looks like (length, blocks, modification time), which changes as
/// that download writes. `None`: no part file there, or nobody holds it.
///
/// Looking takes the lock for a moment (shared, not waiting): a download
/// starting into that place in that moment is refused as busy.
pub fn part_held(dest: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(part_path(dest))
        .ok()?;
    let md = file.metadata().ok()?;
    if !md.is_file() {
        return None;
    }
    // SAFETY: a valid descriptor owned by `file`.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EWOULDBLOCK) {
        // Free (closing the file lets go of the shared lock).
        return None;
    }
    Some((md.len(), md.blocks(), md.mtime(), md.mtime_nsec()))
}

/// Lets go of a part file's lock ([`lock`]), held through any descriptor
/// of the same open file.
fn unlock(file: &File) {
    // SAFETY: a valid descriptor owned by `file`.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
}

/// The extended attribute that marks a part file as this store's, holding
/// the SHA1 of the file it fetches.
const PART_MARK: &std::ffi::CStr = c"user.ringshare.part";

/// Marks `file` as a part file of the file `sha1`.
fn mark(file: &File, sha1: &Sha1Digest) -> io::Result<()> {
    // SAFETY: a valid descriptor owned by `file`, a NUL-terminated name and
    // a 20-byte value that outlive the call.
    let rc = unsafe {
        libc::fsetxattr(file.as_raw_fd(), PART_MARK.as_ptr(), sha1.0.as_ptr().cast(), 20, 0)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Takes the part-file mark off `file`: it is whole, no part file any more
/// (a later download must not take it up). Fails only if the mark stays
/// (a file never marked, on a filesystem without user attributes, has
/// nothing to take off).
fn unmark(file: &File) -> io::Result<()> {
    #[cfg(test)]
    if tests::unmark_fails(file) {
        return Err(io::Error::from_raw_os_error(libc::EACCES));
    }
    // SAFETY: a valid descriptor owned by `file` and a NUL-terminated name,
    // both alive for the call.
    let rc = unsafe { libc::fremovexattr(file.as_raw_fd(), PART_MARK.as_ptr()) };
    let e = io::Error::last_os_error();
    match rc == 0 || marked(file).is_none() {
        true => Ok(()),
        false => Err(e),
    }
}

/// [`mark`] by path, not following a link.
fn mark_path(path: &Path, sha1: &Sha1Digest) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: NUL-terminated path and name and a 20-byte value, all
        // alive for the call.
        let _ = unsafe {
            libc::lsetxattr(c.as_ptr(), PART_MARK.as_ptr(), sha1.0.as_ptr().cast(), 20, 0)
        };
    }
}

/// [`unmark`] by path, not following a link.
fn unmark_path(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return Ok(()) };
    // SAFETY: NUL-terminated path and name, both alive for the call.
    let rc = unsafe { libc::lremovexattr(c.as_ptr(), PART_MARK.as_ptr()) };
    let e = io::Error::last_os_error();
    match rc == 0 || marked_path(path).is_none() {
        true => Ok(()),
        false => Err(e),
    }
}

/// The SHA1 `file` is marked with as a part file of this store's, if it is
/// marked (any value marks it; one of the wrong length reads as zeros).
fn marked(file: &File) -> Option<Sha1Digest> {
    let mut value = [0u8; 20];
    // SAFETY: a valid descriptor, a NUL-terminated name and a buffer of the
    // length given, all outliving the call.
    let n = unsafe {
        libc::fgetxattr(file.as_raw_fd(), PART_MARK.as_ptr(), value.as_mut_ptr().cast(), 20)
    };
    match n {
        20 => Some(Sha1Digest(value)),
        n if n >= 0 => Some(Sha1Digest([0; 20])),
        // ERANGE: longer than a SHA1, still the mark.
        _ if io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE) => {
            Some(Sha1Digest([0; 20]))
        }
        _ => None,
    }
}

/// [`marked`] by path: a regular file's mark, not through a link.
fn marked_path(path: &Path) -> Option<Sha1Digest> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_file() => {}
        _ => return None,
    }
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()
        .and_then(|f| marked(&f))
}

/// Whether `path` is a part file this store made (a download of this or an
/// earlier run, still going or stopped): such a file at a destination is
/// not somebody's file, and goes once its download is done.
pub fn is_part_file(path: &Path) -> bool {
    marked_path(path).is_some()
}

/// Reserves `len` bytes for the file so that a full disk fails now.
/// Returns whether the blocks are allocated (false: the filesystem has no
/// `fallocate`, and the file was sized sparsely).
fn preallocate(file: &File, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    let Ok(len) = libc::off_t::try_from(len) else {
        return Err(io::Error::other("file too large"));
    };
    // SAFETY: fallocate is called on a valid, open, writable descriptor owned
    // by `file` for the duration of the call; it touches no user memory.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // Filesystems without fallocate (ext4 without extents, tmpfs on old
        // kernels, some FUSE): size it sparsely.
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => file.set_len(len as u64).map(|()| false),
        _ => Err(err),
    }
}

/// Whether each filesystem (by device) took `fallocate`, as far as this
/// process has seen. Where it did not, a file's blocks are allocated only
/// as its data is written back, and ext4 on a volume without extents
/// (an ext3 volume) has lost such data on a full disk without a word to
/// anyone ("Delayed block allocation failed … Data will be lost": `syncfs`
/// and `fsync` returned 0, and a bulk get moved files of zeros into
/// place). A finished file there is read back and checked before it moves
/// ([`PartFile::check_back`]).
static FALLOCATE: std::sync::Mutex<Vec<(u64, bool)>> = std::sync::Mutex::new(Vec::new());

fn fallocate_known(dev: u64) -> Option<bool> {
    let seen = FALLOCATE.lock().unwrap_or_else(|p| p.into_inner());
    seen.iter().find(|(d, _)| *d == dev).map(|&(_, ok)| ok)
}

fn fallocate_learnt(dev: u64, ok: bool) {
    let mut seen = FALLOCATE.lock().unwrap_or_else(|p| p.into_inner());
    match seen.iter_mut().find(|(d, _)| *d == dev) {
        Some(e) => e.1 = ok,
        None => seen.push((dev, ok)),
    }
}

/// Whether the filesystem of `dev` may lose a finished file's data at
/// write-back unnoticed (it took no `fallocate`), found out with `file`
/// (`len` bytes) if not known yet.
fn checks_back(dev: u64, file: &File, len: u64) -> bool {
    if let Some(ok) = fallocate_known(dev) {
        return !ok;
    }
    let Ok(off) = libc::off_t::try_from(len.max(1)) else { return false };
    // SAFETY: fallocate on a valid, open descriptor owned by `file`; it
    // touches no user memory. KEEP_SIZE: the file's length is not changed.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, off) };
    let ok = rc == 0
        || !matches!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::EOPNOTSUPP | libc::ENOSYS)
        );
    fallocate_learnt(dev, ok);
    !ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashPool;
    use crate::meta::PIECE_LEN;

    /// Files (device, inode) whose mark cannot be taken off, as if the
    /// user had made them read-only (root may remove it all the same).
    static UNMARK_FAILS: std::sync::Mutex<Vec<(u64, u64)>> = std::sync::Mutex::new(Vec::new());

    pub(super) fn unmark_fails(file: &File) -> bool {
        let failing = UNMARK_FAILS.lock().unwrap_or_else(|p| p.into_inner());
        id_of(file).is_some_and(|id| failing.contains(&id))
    }

    thread_local! {
        /// This thread's moves go as on a filesystem with neither
        /// `RENAME_NOREPLACE` nor hard links (FAT through FUSE).
        static NO_LINKS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    pub(super) fn links_refused() -> bool {
        NO_LINKS.with(|n| n.get())
    }

    /// Runs `f` with this thread's moves as on such a filesystem.
    fn without_links<T>(f: impl FnOnce() -> T) -> T {
        NO_LINKS.with(|n| n.set(true));
        let out = f();
        NO_LINKS.with(|n| n.set(false));
        out
    }

    /// On a filesystem with neither `RENAME_NOREPLACE` nor hard links, a
    /// finished file moves into place with a plain rename when nothing is
    /// at its name, and a file there is still never replaced (every file
    /// of a fetch on such a FUSE filesystem used to fail at its move).
    #[test]
    fn a_filesystem_without_links_still_gets_its_files_and_never_loses_one() {
        let tmp = tempfile::tempdir().unwrap();
        let (bytes, meta) = source(tmp.path(), 3 * PIECE_LEN as usize + 77);
        let dest = tmp.path().join("got.bin");
        let (part, _) = PartFile::open(&dest, &meta).unwrap();
        fill(&part, &bytes, &meta);
        without_links(|| part.finish()).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), bytes);
        assert!(!part_path(&dest).exists() && !state_path(&dest).exists());
        // Something put at the destination meanwhile stays, and the file
        // stays whole at its part file's name.
        let other = tmp.path().join("other.bin");
        let (part, _) = PartFile::open(&other, &meta).unwrap();
        fill(&part, &bytes, &meta);
        fs::write(&other, b"the user's").unwrap();
        let e = without_links(|| part.finish()).unwrap_err();
        assert!(matches!(e, StoreError::Exists(_)), "{e}");
        assert_eq!(fs::read(&other).unwrap(), b"the user's");
        assert_eq!(fs::read(part_path(&other)).unwrap(), bytes);
    }

    /// A part file whose mark cannot be taken off (made read-only by its
    /// user mid-fetch) is not moved into place with it: a finished file
    /// must not pass for a part file. It stays whole at its part file's
    /// name, marked, and fails saying why; once its mark can go, a run
    /// after takes it up and moves it (it used to move, marked, silently).
    #[test]
    fn a_part_file_whose_mark_stays_is_not_moved_into_place() {
        let tmp = tempfile::tempdir().unwrap();
        for (len, settled) in [(3000, false), (3000, true), (700_000, false), (700_000, true)] {
            let (bytes, meta) = source(tmp.path(), len);
            let dest = tmp.path().join(format!("m{len}-{settled}"));
            let (part, _) = PartFile::open(&dest, &meta).unwrap();
            fill(&part, &bytes, &meta);
            let id = id_of(part.file()).unwrap();
            UNMARK_FAILS.lock().unwrap().push(id);
            let failed = finish_failing(&part, &dest, settled);
            assert_eq!(failed.len(), 1, "{failed:?}");
            assert!(failed[0].1.starts_with("cannot take the part-file mark off "), "{failed:?}");
            assert!(failed[0].1.contains(&part_path(&dest).display().to_string()), "{failed:?}");
            assert!(fs::symlink_metadata(&dest).is_err(), "nothing moved into place");
            assert!(is_part_file(&part_path(&dest)), "still a part file");
            assert_eq!(fs::read(part_path(&dest)).unwrap(), bytes);
            drop(part);
            UNMARK_FAILS.lock().unwrap().retain(|i| *i != id);
            let (again, have) = PartFile::open(&dest, &meta).unwrap();
            assert_eq!(have.count_ones(), have.len(), "taken up whole");
            again.finish().unwrap();
            assert_eq!(fs::read(&dest).unwrap(), bytes);
            assert!(marked_path(&dest).is_none());
        }
    }

    /// A directory opened under the destination's is refused when it is
    /// a link; one held open goes on in the directory it holds, however its
    /// path changes: the file lands there (moved away), not where the path
    /// leads now.
    #[test]
    fn a_download_is_made_in_the_directory_held_open_and_nowhere_else() {
        let tmp = tempfile::tempdir().unwrap();
        let (bytes, meta) = source(tmp.path(), 3000);
        let (real, elsewhere) = (tmp.path().join("real"), tmp.path().join("elsewhere"));
        fs::create_dir(&real).unwrap();
        fs::create_dir(&elsewhere).unwrap();
        let top = DestDir::open(tmp.path()).unwrap();
        let dest = real.join("f");
        let dir = std::sync::Arc::new(top.child(&real).unwrap());
        // The directory is replaced by a link to elsewhere.
        fs::rename(&real, tmp.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &real).unwrap();
        assert!(matches!(top.child(&real), Err(StoreError::Replaced(_))));
        let (part, _) = PartFile::open_at(&dest, &meta, dir).unwrap();
        part.write_piece(0, &bytes).unwrap();
        part.finish().unwrap();
        assert_eq!(fs::read(tmp.path().join("moved/f")).unwrap(), bytes);
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    /// A part file moved away mid-download and something else put at its
    /// name (a file, a link): the move into place leaves that alone and
    /// fails, by `finish` and by a settler alike. (It used to put the
    /// user's file in place as the group's, and report the file fetched.)
    #[test]
    fn what_replaced_a_part_file_is_never_moved_into_place() {
        let tmp = tempfile::tempdir().unwrap();
        let cases = [
            (3000, false, false),
            (3000, true, false),
            (700_000, false, false),
            (700_000, true, false),
            (700_000, true, true),
        ];
        for (len, settled, link) in cases {
            let (bytes, meta) = source(tmp.path(), len);
            let dest = tmp.path().join(format!("f{len}-{settled}-{link}"));
            let (part, _) = PartFile::open(&dest, &meta).unwrap();
            fill(&part, &bytes, &meta);
            let away = tmp.path().join("away");
            fs::rename(part.part_path(), &away).unwrap();
            match link {
                true => std::os::unix::fs::symlink("/etc/hostname", part.part_path()).unwrap(),
                false => fs::write(part.part_path(), b"my own file").unwrap(),
            }
            let failed = finish_failing(&part, &dest, settled);
            assert_eq!(failed.len(), 1, "{failed:?}");
            assert!(failed[0].1.contains("is in the way"), "{failed:?}");
            assert!(fs::symlink_metadata(&dest).is_err(), "nothing moved into place");
            match link {
                true => assert!(fs::symlink_metadata(part.part_path()).unwrap().is_symlink()),
                false => assert_eq!(fs::read(part.part_path()).unwrap(), b"my own file"),
            }
            assert_eq!(fs::read(&away).unwrap(), bytes, "what was fetched is where it was moved");
            // Nor does a run after take it up as its part file (a state left
            // beside it would have claimed it, and written into it).
            drop(part);
            let again = PartFile::open(&dest, &meta);
            assert!(matches!(again, Err(StoreError::InTheWay(_))), "{again:?}");
            if !link {
                assert_eq!(fs::read(part_path(&dest)).unwrap(), b"my own file");
            }
            fs::remove_file(part_path(&dest)).unwrap();
        }
    }

    /// A file of the user's put at a running download's state name: left
    /// as it is when the download finishes, by `finish` and by a settler
    /// (it used to be deleted with the state).
    #[test]
    fn what_replaced_a_state_file_is_never_removed() {
        let tmp = tempfile::tempdir().unwrap();
        for settled in [false, true] {
            let (bytes, meta) = source(tmp.path(), 3 * PIECE_LEN as usize + 11);
            let dest = tmp.path().join(format!("s-{settled}"));
            let (part, _) = PartFile::open(&dest, &meta).unwrap();
            fill(&part, &bytes, &meta);
            let state = state_path(&dest);
            fs::write(tmp.path().join("mine"), b"my own file").unwrap();
            fs::rename(tmp.path().join("mine"), &state).unwrap();
            if settled {
                let settler = Settler::new().unwrap();
                part.finish_later(&settler);
                assert!(settler.flush().is_empty());
            } else {
                part.finish().unwrap();
            }
            assert_eq!(fs::read(&dest).unwrap(), bytes);
            assert_eq!(fs::read(&state).unwrap(), b"my own file", "left as it was");
            fs::remove_file(&state).unwrap();
        }
        // And a download's own state goes with it.
        let (bytes, meta) = source(tmp.path(), 3 * PIECE_LEN as usize + 11);
        let dest = tmp.path().join("own");
        let (part, _) = PartFile::open(&dest, &meta).unwrap();
        fill(&part, &bytes, &meta);
        assert!(state_path(&dest).exists());
        part.finish().unwrap();
        assert!(!state_path(&dest).exists());
    }

    /// On a filesystem without user attributes (ramfs), a part file of one
    /// piece left by a crash is taken up by the next run (its state says
    /// it is ours), and its state goes when it is done; a file of the
    /// user's at the state's name is never written over, nor claimed.
    #[test]
    fn one_piece_part_files_resume_where_they_cannot_be_marked() {
        let tmp = tempfile::tempdir().unwrap();
        let Some(mounted) = Tmpfs::ramfs(tmp.path()) else { return };
        let (bytes, meta) = source(tmp.path(), 300_000);
        let dest = mounted.0.join("f");
        {
            let (part, have) = PartFile::open(&dest, &meta).unwrap();
            assert_eq!(have.count_ones(), 0);
            assert_eq!(marked_path(part.part_path()), None, "ramfs takes no user attributes");
            fill(&part, &bytes, &meta);
            // Crashed here: dropped, neither finished nor discarded.
        }
        let (part, have) = PartFile::open(&dest, &meta).expect("the crash's part file is ours");
        assert_eq!(have.count_ones(), 1, "its piece verifies");
        part.finish().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), bytes);
        assert!(!state_path(&dest).exists() && !part_path(&dest).exists());
        // Somebody's file at the state's name: no state written over it, so
        // the part file left by a crash is not claimed either.
        let dest = mounted.0.join("g");
        fs::write(state_path(&dest), b"the group's file named g.part.state").unwrap();
        {
            let (part, _) = PartFile::open(&dest, &meta).unwrap();
            fill(&part, &bytes, &meta);
        }
        assert_eq!(fs::read(state_path(&dest)).unwrap(), b"the group's file named g.part.state");
        assert!(matches!(PartFile::open(&dest, &meta), Err(StoreError::InTheWay(_))));
    }

    /// A tmpfs of `bytes` mounted at `dir/fs` (unmounted when dropped),
    /// or `None` when not root; or a ramfs ([`Tmpfs::ramfs`]).
    struct Tmpfs(PathBuf);

    impl Tmpfs {
        fn mount(dir: &Path, bytes: u64) -> Option<Self> {
            Self::mount_as(dir, &["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        }

        /// A ramfs (no user attributes) at `dir/fs`.
        fn ramfs(dir: &Path) -> Option<Self> {
            Self::mount_as(dir, &["-t", "ramfs", "ramfs"])
        }

        fn mount_as(dir: &Path, args: &[&str]) -> Option<Self> {
            // SAFETY: geteuid takes no arguments and cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                eprintln!("skipped: mounting a filesystem needs root");
                return None;
            }
            let at = dir.join("fs");
            fs::create_dir(&at).unwrap();
            let st = std::process::Command::new("mount").args(args).arg(&at).status().unwrap();
            assert!(st.success(), "mount {args:?}");
            Some(Self(at))
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    fn source(dir: &Path, len: usize) -> (Vec<u8>, FileMeta) {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let p = dir.join("src");
        fs::write(&p, &bytes).unwrap();
        let meta = HashPool::new(1).hash_file(&p, "f").unwrap();
        (bytes, meta)
    }

    /// Writes every piece of `bytes` into `part` and records it.
    /// Finishes `part`, expected to fail, by itself or through a settler;
    /// the failures as a settler gives them.
    fn finish_failing(part: &PartFile, dest: &Path, settled: bool) -> Vec<(PathBuf, String)> {
        if settled {
            let settler = Settler::new().unwrap();
            part.finish_later(&settler);
            settler.flush()
        } else {
            vec![(dest.to_owned(), part.finish().unwrap_err().to_string())]
        }
    }

    fn fill(part: &PartFile, bytes: &[u8], meta: &FileMeta) {
        let g = meta.geometry();
        for p in g.pieces() {
            let r = g.range(p);
            part.write_piece(r.start, &bytes[r.start as usize..r.end as usize]).unwrap();
            part.record(p.get()).unwrap();
        }
    }

    /// On a filesystem that took no `fallocate`, a finished file is read
    /// back before it moves: data lost at write-back (ext4 without extents
    /// on a full disk dropped it, and `syncfs` said nothing) keeps it a
    /// part file, one-file and settled alike; written again, it moves.
    #[test]
    fn data_lost_at_write_back_keeps_the_file_a_part_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (bytes, meta) = source(tmp.path(), 100_000);
        let Some(mounted) = Tmpfs::mount(tmp.path(), 8 << 20) else { return };
        let fs_dir = mounted.0.clone();
        // As if this filesystem had refused `fallocate`.
        let dev = std::os::unix::fs::MetadataExt::dev(&fs::metadata(&fs_dir).unwrap());
        fallocate_learnt(dev, false);
        // What the kernel dropped: the first page, a hole again.
        let lose = |part: &PartFile| {
            // SAFETY: fallocate on a descriptor `part` owns; no user memory.
            let rc = unsafe {
                libc::fallocate(
                    part.file().as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    0,
                    4096,
                )
            };
            assert_eq!(rc, 0, "punch a hole");
        };
        for settled in [false, true] {
            let dest = fs_dir.join(format!("f-{settled}"));
            let (part, _) = PartFile::open(&dest, &meta).unwrap();
            fill(&part, &bytes, &meta);
            lose(&part);
            let e = if settled {
                let settler = Settler::new().unwrap();
                part.finish_later(&settler);
                let failed = settler.flush();
                assert_eq!(failed.len(), 1, "{failed:?}");
                failed[0].1.clone()
            } else {
                part.finish().unwrap_err().to_string()
            };
            assert!(e.contains("not those written and verified"), "{e}");
            assert!(!dest.exists(), "{e}");
            assert!(part_path(&dest).exists(), "kept for a resume");
            drop(part);
            // The next run: the piece fetched again, the file moves.
            let (part, have) = PartFile::open(&dest, &meta).unwrap();
            assert_eq!(have.count_ones(), 0, "the lost piece is not taken for verified");
            fill(&part, &bytes, &meta);
            part.finish().unwrap();
            assert_eq!(fs::read(&dest).unwrap(), bytes);
        }
    }

    /// A part file made whose state cannot be written (the disk full once
    /// the file took its room) is not left behind: it holds nothing to
    /// resume (a black-box run found a 3 MB one beside a failed download).
    #[test]
    fn a_part_file_whose_state_cannot_be_written_is_not_left() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, meta) = source(tmp.path(), 2 * PIECE_LEN as usize);
        let Some(mounted) = Tmpfs::mount(tmp.path(), 2 * PIECE_LEN) else { return };
        let small = mounted.0.clone();
        let Err(e) = PartFile::open(&small.join("f"), &meta) else {
            panic!("opened with no room for the state")
        };
        assert!(e.to_string().contains("No space left on device"), "{e}");
        let left: Vec<_> = fs::read_dir(&small).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// A part file is marked before it has a name: what a crash leaves
    /// right after its creation (empty, nothing else beside it) is this
    /// store's, and the next run takes it up. (Made and then marked, a
    /// `kill -9` between the two left an unmarked file every later run
    /// refused as somebody's.)
    #[test]
    fn a_part_file_has_its_mark_from_its_first_moment() {
        let dir = tempfile::tempdir().unwrap();
        let held = DestDir::open(dir.path()).unwrap();
        assert!(held.fd_name(Path::new("x")).is_some(), "held open here");
        // From the directory held open, and by path (no /proc).
        let both =
            [5_000usize, 3 * PIECE_LEN as usize + 7].into_iter().flat_map(|l| [(l, 0), (l, 1)]);
        for (len, way) in both {
            let (bytes, meta) = source(dir.path(), len);
            let dest = dir.path().join(format!("d{len}-{way}"));
            let part = part_path(&dest);
            let make = || match way {
                0 => create_marked(&held, &part, &meta.sha1),
                _ => create_marked_path(&part, &meta.sha1),
            };
            // Where the crash would come: just made.
            drop(make().unwrap().expect("O_TMPFILE and xattrs here"));
            assert_eq!(fs::metadata(&part).unwrap().len(), 0);
            assert_eq!(marked_path(&part), Some(meta.sha1));
            // Something at the name already: never replaced.
            let e = make().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
            let (pf, have) = PartFile::open(&dest, &meta).unwrap();
            assert_eq!(have.count_ones(), 0);
            fill(&pf, &bytes, &meta);
            pf.finish().unwrap();
            assert_eq!(fs::read(&dest).unwrap(), bytes);
        }
        // Both ways of naming an unnamed file in the open directory (the
        // second is what a process without CAP_DAC_READ_SEARCH takes).
        for empty_path in [true, false] {
            use std::os::fd::FromRawFd;
            let name = std::ffi::CString::new(format!("linked-{empty_path}")).unwrap();
            let dfd = held.fd_name(Path::new("x")).unwrap().0;
            // SAFETY: a descriptor held open by `held` and a NUL-terminated path.
            let rc = unsafe {
                libc::openat(
                    dfd,
                    c".".as_ptr(),
                    libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
                    0o600,
                )
            };
            assert!(rc >= 0, "{}", io::Error::last_os_error());
            // SAFETY: just opened, owned by nobody else.
            let f = unsafe { File::from_raw_fd(rc) };
            io::Write::write_all(&mut &f, b"named").unwrap();
            link_in(&f, dfd, &name, empty_path).unwrap();
            let at = dir.path().join(name.to_str().unwrap());
            assert_eq!(fs::read(&at).unwrap(), b"named");
            let e = link_in(&f, dfd, &name, empty_path).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "never replaced");
        }
        // And a part file made by open is marked too.
        let (_, meta) = source(dir.path(), 7_000);
        let dest = dir.path().join("fresh");
        let (pf, _) = PartFile::open(&dest, &meta).unwrap();
        assert_eq!(marked_path(pf.part_path()), Some(meta.sha1));
    }

    #[test]
    fn names_up_to_255_bytes_are_fetched_whole() {
        let dir = tempfile::tempdir().unwrap();
        for (len, name_len) in
            [(600_000usize, 255usize), (600_000, 241), (5_000, 255), (5_000, 240)]
        {
            let (bytes, meta) = source(dir.path(), len);
            // Multi-byte characters across the cut.
            let name: String = "é".repeat(name_len / 2) + &"x".repeat(name_len % 2);
            assert_eq!(name.len(), name_len);
            let dest = dir.path().join(&name);
            let part = part_path(&dest);
            let part_name = part.file_name().unwrap().to_str().expect("cut at a character");
            assert!(part_name.len() + ".state.tmp".len() <= 255, "{}", part_name.len());
            if name_len <= LONGEST_PLAIN_PART_NAME {
                assert_eq!(part, with_suffix(&dest, ".part"));
            } else {
                assert!(part_name.ends_with(".part") && part_name.contains('~'), "{part_name}");
            }
            let (pf, _) = PartFile::open(&dest, &meta).unwrap();
            assert_eq!(pf.part_path(), part);
            if len > PIECE_LEN as usize {
                pf.write_piece(0, &bytes[..PIECE_LEN as usize]).unwrap();
                pf.record(0).unwrap();
            }
            drop(pf);
            // Resumed (a multi-piece file's state sits beside its part).
            let (pf, have) = PartFile::open(&dest, &meta).unwrap();
            assert_eq!(have.count_ones() > 0, len > PIECE_LEN as usize, "{len}");
            fill(&pf, &bytes, &meta);
            pf.finish().unwrap();
            assert_eq!(fs::read(&dest).unwrap(), bytes);
            assert!(!part.exists() && !state_path(&dest).exists());
            fs::remove_file(&dest).unwrap();
        }
    }

    /// Two downloads into one place at once (two `get`s, a shell and a
    /// `get`): the second is refused while the first holds the part file,
    /// finds the file in place once the first moved it (at once or through
    /// a settler), and takes the part file up once the first failed or was
    /// stopped.
    #[test]
    fn a_second_download_into_one_place_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        for (len, settled) in
            [(3 * PIECE_LEN as usize + 11, false), (70_000, false), (70_000, true)]
        {
            let (bytes, meta) = source(dir.path(), len);
            let dest = dir.path().join(format!("out-{len}-{settled}"));
            let (first, _) = PartFile::open(&dest, &meta).unwrap();
            let busy = |r: Result<(PartFile, Bitfield), StoreError>| match r {
                Err(StoreError::Busy(at)) => assert_eq!(at, dest.display().to_string()),
                other => panic!("{:?}", other.map(|(_, have)| have)),
            };
            busy(PartFile::open(&dest, &meta));
            fill(&first, &bytes, &meta);
            if settled {
                let settler = Settler::new().unwrap();
                first.finish_later(&settler);
                // Still a part file until it is settled, and still locked.
                if part_path(&dest).exists() {
                    busy(PartFile::open(&dest, &meta));
                }
                assert!(settler.flush().is_empty());
            } else {
                first.finish().unwrap();
            }
            assert_eq!(fs::read(&dest).unwrap(), bytes);
            assert!(matches!(PartFile::open(&dest, &meta), Err(StoreError::Exists(_))));
            assert!(!part_path(&dest).exists());
        }
        // Failed or stopped: the part file is free, the first still alive.
        let (bytes, meta) = source(dir.path(), 3 * PIECE_LEN as usize);
        let dest = dir.path().join("resumed");
        let (first, _) = PartFile::open(&dest, &meta).unwrap();
        let g = meta.geometry();
        let p0 = g.range(g.piece(0).unwrap());
        first.write_piece(p0.start, &bytes[p0.start as usize..p0.end as usize]).unwrap();
        first.record(0).unwrap();
        first.sync_state().unwrap();
        first.release();
        let (second, have) = PartFile::open(&dest, &meta).unwrap();
        assert_eq!(have.count_ones(), 1, "resumed");
        assert!(matches!(PartFile::open(&dest, &meta), Err(StoreError::Busy(_))));
        drop(first);
        fill(&second, &bytes, &meta);
        second.finish().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), bytes);
    }

    #[test]
    fn a_damaged_state_beside_its_own_part_file_is_verified_again() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, meta) = source(dir.path(), 3 * PIECE_LEN as usize + 11);
        let dest = dir.path().join("out");
        let (pf, _) = PartFile::open(&dest, &meta).unwrap();
        let g = meta.geometry();
        for p in g.pieces().take(2) {
            let r = g.range(p);
            pf.write_piece(r.start, &bytes[r.start as usize..r.end as usize]).unwrap();
            pf.record(p.get()).unwrap();
        }
        drop(pf);
        let state = state_path(&dest);
        for damage in [&b""[..], &[0xA5; 75][..]] {
            fs::write(&state, damage).unwrap();
            let (pf, have) = PartFile::open(&dest, &meta).unwrap();
            assert_eq!(have.count_ones(), 2, "the two written pieces verify again");
            drop(pf);
        }
        // Its header damaged into another file's SHA1 (bytes 3-11), the
        // record still decoding: the same.
        let mut good = fs::read(&state).unwrap();
        good[3..12].copy_from_slice(b"garbage!!");
        fs::write(&state, &good).unwrap();
        let (pf, have) = PartFile::open(&dest, &meta).unwrap();
        assert_eq!(have.count_ones(), 2, "the two written pieces verify again");
        drop(pf);
        // Beside a part file that is not this download's (another file's
        // mark), the same bytes are somebody's file: left alone.
        let (_, other) = source(&dir.path().join(""), 100);
        mark_path(&part_path(&dest), &other.sha1);
        fs::write(&state, [0xA5; 75]).unwrap();
        assert!(matches!(PartFile::open(&dest, &meta), Err(StoreError::InTheWay(_))));
        assert_eq!(fs::read(&state).unwrap(), [0xA5; 75]);
        // A path that cannot be looked at is that error, not "in the way".
        let long = dir.path().join("d".repeat(300)).join("out");
        let err = PartFile::open(&long, &meta).unwrap_err();
        assert!(matches!(err, StoreError::Io(_)), "{err}");
        assert!(err.to_string().contains("File name too long"), "{err}");
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
            let p0 = g.range(g.piece(0).unwrap());
            part.write_piece(p0.start, &bytes[p0.start as usize..p0.end as usize]).unwrap();
            part.record(0).unwrap();
            // Claims piece 1 too, without its data: resume must not trust it.
            part.record(1).unwrap();
            part.sync_state().unwrap();
        }
        let (part, have) = PartFile::open(&dest, &meta).unwrap();
        assert!(have.get(0) && !have.get(1) && !have.get(2), "{have:?}");
        // While one download has it, another of the same destination (of
        // this process or another) is refused and changes nothing.
        assert!(matches!(PartFile::open(&dest, &meta), Err(StoreError::Busy(_))));
        let one = dir.path().join("one");
        let (_, single) = source(dir.path(), 1000);
        let (first, _) = PartFile::open(&one, &single).unwrap();
        assert!(matches!(PartFile::open(&one, &single), Err(StoreError::Busy(_))));
        drop(first);
        drop(PartFile::open(&one, &single).expect("free once the first is gone"));
        for p in [1u32, 2] {
            let r = g.range(g.piece(p as u64).unwrap());
            part.write_piece(r.start, &bytes[r.start as usize..r.end as usize]).unwrap();
        }
        part.finish().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), bytes);
        assert!(!part.part_path().exists());
        assert!(matches!(PartFile::open(&dest, &meta), Err(StoreError::Exists(_))));
        // A dangling symbolic link is refused at the start too, not once
        // the download is whole.
        let dangling = dir.path().join("dangling.bin");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(matches!(PartFile::open(&dangling, &meta), Err(StoreError::Exists(_))));
        assert!(!part_path(&dangling).exists());
    }

    /// A file of one piece writes no state file; resume hashes the part
    /// file again; the finish never replaces a file that appeared at the
    /// destination meanwhile.
    #[test]
    fn one_piece_keeps_no_state_and_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, meta) = source(dir.path(), 100_000);
        let dest = dir.path().join("out");
        let state = with_suffix(&dest, ".part.state");
        {
            let (part, have) = PartFile::open(&dest, &meta).unwrap();
            assert_eq!(have.count_ones(), 0);
            assert!(!state.exists());
            assert_eq!(fs::metadata(part.part_path()).unwrap().len(), meta.len, "sized");
            part.write_piece(0, &bytes).unwrap();
            part.record(0).unwrap();
            part.sync_state().unwrap();
            assert!(!state.exists());
        }
        let (part, have) = PartFile::open(&dest, &meta).unwrap();
        assert!(have.is_complete(), "the written piece is found again on resume");
        fs::write(&dest, b"someone else's").unwrap();
        assert!(matches!(part.finish(), Err(StoreError::Exists(_))));
        assert_eq!(fs::read(&dest).unwrap(), b"someone else's");
        assert_eq!(fs::read(part.part_path()).unwrap(), bytes, "the part file stays");
        fs::remove_file(&dest).unwrap();
        // A part file whose piece does not verify counts for nothing.
        let mut other = meta.clone();
        other.piece_hashes[0] = Sha1Digest([7; 20]);
        let (_, have) = PartFile::open(&dest, &other).unwrap();
        assert_eq!(have.count_ones(), 0);
        let (part, have) = PartFile::open(&dest, &meta).unwrap();
        assert!(have.is_complete());
        part.finish().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), bytes);
        assert!(!part.part_path().exists() && !state.exists());
    }

    /// Somebody's file where a part file or its state would go (the user's
    /// own `x.part`, a file of the group named so, a symbolic link) is
    /// refused and left as it was, failure or not; a part file this store
    /// made, in an earlier run or an earlier version, is taken up.
    #[test]
    fn what_is_not_a_part_file_is_never_touched() {
        let dir = tempfile::tempdir().unwrap();
        let (small_bytes, small) = source(dir.path(), 100_000);
        let (big_bytes, big) = {
            let d = dir.path().join("big");
            fs::create_dir(&d).unwrap();
            source(&d, 2 * PIECE_LEN as usize + 7)
        };
        let in_the_way =
            |r: Result<(PartFile, Bitfield), StoreError>| matches!(r, Err(StoreError::InTheWay(_)));
        for (i, meta) in [&small, &big].into_iter().enumerate() {
            let dest = dir.path().join(format!("x{i}"));
            let (part, state) = (with_suffix(&dest, ".part"), with_suffix(&dest, ".part.state"));
            // A file at the part file's path.
            fs::write(&part, b"my notes").unwrap();
            assert!(in_the_way(PartFile::open(&dest, meta)), "{i}");
            assert_eq!(fs::read(&part).unwrap(), b"my notes");
            assert!(!is_part_file(&part) && !state.exists());
            // A symbolic link there: neither it nor its target is touched.
            fs::remove_file(&part).unwrap();
            std::os::unix::fs::symlink("target", &part).unwrap();
            fs::write(dir.path().join("target"), b"kept").unwrap();
            assert!(in_the_way(PartFile::open(&dest, meta)), "{i}");
            assert_eq!(fs::read(dir.path().join("target")).unwrap(), b"kept");
            fs::remove_file(&part).unwrap();
            // A file at the state's path: a file of many pieces refuses it;
            // one of one piece leaves it, also when it fails.
            fs::write(&state, b"my state of mind").unwrap();
            if i == 1 {
                assert!(in_the_way(PartFile::open(&dest, meta)));
                assert!(!part.exists());
            } else {
                let (p, _) = PartFile::open(&dest, meta).unwrap();
                p.discard();
                assert!(!part.exists());
            }
            assert_eq!(fs::read(&state).unwrap(), b"my state of mind");
            fs::remove_file(&state).unwrap();
        }
        // A part file a killed run left, its piece half written: taken up,
        // where the filesystem keeps the mark.
        let dest = dir.path().join("y");
        let (p, _) = PartFile::open(&dest, &small).unwrap();
        p.write_piece(0, &small_bytes[..4096]).unwrap();
        let kept = marked(p.file()).is_some();
        drop(p);
        match PartFile::open(&dest, &small) {
            Ok((p, have)) => {
                assert!(kept && have.count_ones() == 0);
                p.write_piece(0, &small_bytes).unwrap();
                p.finish().unwrap();
                assert_eq!(fs::read(&dest).unwrap(), small_bytes);
            }
            Err(e) => assert!(!kept && matches!(e, StoreError::InTheWay(_)), "{e}"),
        }
        // A file fetched under a part file's name (`w.part`) is no part
        // file once whole: the download of `w` refuses it, whether it was
        // finished at once or by a settler.
        for settled in [false, true] {
            let w = dir.path().join(format!("w{settled}"));
            let named = with_suffix(&w, ".part");
            let (p, _) = PartFile::open(&named, &small).unwrap();
            p.write_piece(0, &small_bytes).unwrap();
            if settled {
                let settler = Settler::new().unwrap();
                p.finish_later(&settler);
                assert!(settler.flush().is_empty());
            } else {
                p.finish().unwrap();
            }
            assert!(!is_part_file(&named));
            assert!(in_the_way(PartFile::open(&w, &big)), "{settled}");
            assert!(in_the_way(PartFile::open(&w, &small)), "{settled}");
            assert_eq!(fs::read(&named).unwrap(), small_bytes);
        }
        // An earlier version's part file (no mark) beside its state resumes.
        let dest = dir.path().join("z");
        let part = with_suffix(&dest, ".part");
        let (p, _) = PartFile::open(&dest, &big).unwrap();
        p.write_piece(0, &big_bytes[..PIECE_LEN as usize]).unwrap();
        p.record(0).unwrap();
        p.sync_state().unwrap();
        drop(p);
        let mut data = fs::read(&part).unwrap();
        fs::remove_file(&part).unwrap();
        data.truncate(big.len as usize);
        fs::write(&part, &data).unwrap();
        let (_p, have) = PartFile::open(&dest, &big).unwrap();
        assert_eq!(have.count_ones(), 1, "resumed from the state");
        assert_eq!(is_part_file(&part), kept, "and marked, where marks are kept");
    }

    #[test]
    fn state_of_another_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (_, meta) = source(dir.path(), PIECE_LEN as usize + 100);
        let dest = dir.path().join("out");
        let (part, _) = PartFile::open(&dest, &meta).unwrap();
        part.record(0).unwrap();
        part.release();
        let mut other = meta.clone();
        other.sha1 = Sha1Digest([9; 20]);
        let (_, have) = PartFile::open(&dest, &other).unwrap();
        assert_eq!(have.count_ones(), 0);
    }

    #[test]
    fn aligned_buffers_are_aligned() {
        for len in [0, 1, 4095, 4096, PIECE_LEN as usize] {
            let mut b = AlignedBuf::new(len);
            assert_eq!(b.as_slice().len(), len);
            assert_eq!(b.as_mut_slice().as_ptr() as usize % DIRECT_ALIGN, 0);
            b.resize(len / 2);
            assert_eq!(b.as_slice().as_ptr() as usize % DIRECT_ALIGN, 0);
        }
    }

    /// Every sized buffer has its tail past the end, however it was sized
    /// before; what is written there does not show in the bytes.
    #[test]
    fn aligned_buffers_keep_a_tail_past_their_end() {
        assert!(AlignedBuf::default().with_tail_mut().is_empty());
        let mut b = AlignedBuf::default();
        for len in [0, 1, 4095, 4096, 100_000, PIECE_LEN as usize, 7, PIECE_LEN as usize - 1] {
            b.resize(len);
            b.as_mut_slice().fill(1);
            let tail = b.with_tail_mut();
            assert_eq!(tail.len(), len + BUF_TAIL);
            assert_eq!(tail.as_ptr() as usize % DIRECT_ALIGN, 0);
            tail[len..].fill(2);
            assert!(b.as_slice().iter().all(|&x| x == 1));
            assert_eq!(b.as_slice().len(), len);
        }
    }

    /// A last piece longer than a block is written in two parts, its whole
    /// blocks direct and the rest through the page cache; the file is whole
    /// and exact, whatever the tail (none, one byte, a block less one).
    #[test]
    fn a_short_last_piece_is_written_direct_up_to_its_last_whole_block() {
        let dir = tempfile::tempdir().unwrap();
        for (i, len) in [
            3 * DIRECT_ALIGN + 100,
            2 * DIRECT_ALIGN,
            PIECE_LEN as usize + DIRECT_ALIGN + 1,
            PIECE_LEN as usize + 2 * DIRECT_ALIGN - 1,
        ]
        .into_iter()
        .enumerate()
        {
            let sub = dir.path().join(format!("{i}"));
            fs::create_dir(&sub).unwrap();
            let (bytes, meta) = source(&sub, len);
            let dest = sub.join("out");
            let g = meta.geometry();
            let (part, _) = PartFile::open(&dest, &meta).unwrap();
            for p in g.pieces() {
                let r = g.range(p);
                let mut buf = AlignedBuf::new((r.end - r.start) as usize);
                buf.as_mut_slice().copy_from_slice(&bytes[r.start as usize..r.end as usize]);
                part.write_piece(r.start, buf.as_slice()).unwrap();
                part.record(p.get()).unwrap();
            }
            part.finish().unwrap();
            assert!(fs::read(&dest).unwrap() == bytes, "{len}: finished file differs");
        }
    }

    /// Whole pieces from aligned buffers take the O_DIRECT path where the
    /// filesystem has it; reads through the page cache see the new bytes
    /// even when they had cached the range before the write (the kernel
    /// drops those pages); bits recorded in place survive a reopen.
    #[test]
    fn direct_writes_and_in_place_records() {
        let dir = tempfile::tempdir().unwrap();
        let pieces = 20usize;
        let (bytes, meta) = source(dir.path(), pieces * PIECE_LEN as usize + 123);
        let dest = dir.path().join("out");
        let g = meta.geometry();
        {
            let (part, _) = PartFile::open(&dest, &meta).unwrap();
            // Cache the (still zero) range of piece 3 first.
            let mut before = vec![1u8; PIECE_LEN as usize];
            part.file().read_exact_at(&mut before, 3 * PIECE_LEN).unwrap();
            assert!(before.iter().all(|b| *b == 0));
            for p in (0..pieces as u32).rev().step_by(2).chain([3]) {
                let r = g.range(g.piece(u64::from(p)).unwrap());
                let mut buf = AlignedBuf::new((r.end - r.start) as usize);
                buf.as_mut_slice().copy_from_slice(&bytes[r.start as usize..r.end as usize]);
                part.write_piece(r.start, buf.as_slice()).unwrap();
                part.record(p).unwrap();
            }
            part.sync_state().unwrap();
            let mut after = vec![0u8; PIECE_LEN as usize];
            part.file().read_exact_at(&mut after, 3 * PIECE_LEN).unwrap();
            assert_eq!(after, bytes[3 * PIECE_LEN as usize..4 * PIECE_LEN as usize]);
            if !part.is_direct() {
                eprintln!("note: this filesystem has no O_DIRECT; buffered path tested");
            }
        }
        let (part, have) = PartFile::open(&dest, &meta).unwrap();
        let want: Vec<u32> = (0..pieces as u32).rev().step_by(2).chain([3]).collect();
        for p in 0..=pieces as u32 {
            assert_eq!(have.get(p), want.contains(&p), "piece {p}");
        }
        for p in (0..=pieces as u32).filter(|p| !want.contains(p)) {
            let r = g.range(g.piece(u64::from(p)).unwrap());
            part.write_piece(r.start, &bytes[r.start as usize..r.end as usize]).unwrap();
            part.record(p).unwrap();
        }
        part.finish().unwrap();
        assert!(fs::read(&dest).unwrap() == bytes, "finished file differs from the source");
    }

    /// Files finished through a settler are in place, whole, without part
    /// or state files once it is flushed (or dropped); one whose
    /// destination was taken meanwhile is reported and stays `.part`, and
    /// a new `PartFile::open` finds it complete.
    #[test]
    fn a_settler_moves_finished_files_into_place_and_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let settler = Settler::new().unwrap();
        let mut files = Vec::new();
        for (i, len) in [100_000usize, 2 * PIECE_LEN as usize + 9, 1, 4096].into_iter().enumerate()
        {
            let sub = dir.path().join(format!("{i}"));
            fs::create_dir(&sub).unwrap();
            let (bytes, meta) = source(&sub, len);
            let dest = sub.join("out");
            let (part, _) = PartFile::open(&dest, &meta).unwrap();
            let g = meta.geometry();
            for p in g.pieces() {
                let r = g.range(p);
                part.write_piece(r.start, &bytes[r.start as usize..r.end as usize]).unwrap();
                part.record(p.get()).unwrap();
            }
            files.push((part, dest, bytes, meta));
        }
        // The third file's destination is taken before it is settled; the
        // first's part file is removed (by hand, by another process): each
        // fails alone (the first's used to fail every file of the batch, as
        // the filesystem's sync was reached through it).
        fs::write(&files[2].1, b"someone else's").unwrap();
        fs::remove_file(files[0].0.part_path()).unwrap();
        for (part, ..) in &files {
            part.finish_later(&settler);
        }
        let failed = settler.flush();
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert_eq!(failed[0].0, files[0].1);
        assert!(failed[0].1.contains("No such file"), "{}", failed[0].1);
        assert_eq!(failed[1].0, files[2].1);
        assert!(failed[1].1.contains("exists"), "{}", failed[1].1);
        for (i, (part, dest, bytes, meta)) in files.iter().enumerate() {
            if i == 0 {
                assert!(!dest.exists());
                continue;
            }
            if i == 2 {
                assert_eq!(fs::read(dest).unwrap(), b"someone else's");
                assert_eq!(&fs::read(part.part_path()).unwrap(), bytes, "the part file stays");
                fs::remove_file(dest).unwrap();
                let (_, have) = PartFile::open(dest, meta).unwrap();
                assert!(have.is_complete(), "the unsettled file resumes complete");
                continue;
            }
            assert!(&fs::read(dest).unwrap() == bytes, "file {i} differs");
            assert!(!part.part_path().exists(), "file {i} left its part file");
            assert!(!with_suffix(dest, ".part.state").exists(), "file {i} left its state");
        }
        assert!(settler.flush().is_empty(), "failures are reported once");
        // Dropping a settler settles what it was handed first.
        let settler = Settler::new().unwrap();
        let (bytes, meta) = source(dir.path(), 5000);
        let dest = dir.path().join("last");
        let (part, _) = PartFile::open(&dest, &meta).unwrap();
        part.write_piece(0, &bytes).unwrap();
        part.finish_later(&settler);
        drop(settler);
        assert_eq!(fs::read(&dest).unwrap(), bytes);
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
