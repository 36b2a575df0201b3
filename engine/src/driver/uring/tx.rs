//! A connection's send queue: control frames and pieces, sent in the order
//! queued (but for a piece a seed moves ahead, [`Tx::send_next`]), one
//! step (a short chain of linked ops) at a time.
//!
//! A piece is its 16-byte header (a plain Send with MSG_MORE, copied by the
//! kernel) and its data, sent without a user-space copy by [`SendMethod`]:
//! - `Splice`: file → per-connection pipe → socket, two linked Splice ops
//!   per pipe-full (the pipe is grown to a piece where the system allows);
//! - `SendZc`: IORING_OP_SEND_ZC from a read-only mmap of the file; the
//!   mapping lives in the connection, freed only after every notification;
//! - `Send`: IORING_OP_SEND (MSG_WAITALL) from the same mmap.
//!
//! On an encrypted link each frame is sealed as it leaves the queue (records
//! carry sequence numbers, so nothing sealed may be dropped or reordered): a
//! piece is read from the file with `pread` and sealed with its header into
//! one buffer, sent with a plain Send. The handshake's own messages go out
//! unsealed (`push_raw`).
//!
//! A step ends when all its ops' result CQEs are in; a short or failed link
//! cancels the rest of the chain (-ECANCELED), and the next step resumes
//! from the bytes that did go out. A step that moves nothing closes the
//! connection.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use io_uring::{cqueue, opcode, squeue, types};
use memmap2::{Mmap, MmapOptions};

use super::conn::Key;
use super::{Op, Ring};
use crate::meta::PIECE_LEN;
use crate::peer::{self, PIECE_HEADER_LEN};
use crate::secure::Link;
use crate::share::ServedFile;

/// How the io_uring driver sends piece data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMethod {
    /// splice(2) file → per-connection pipe → socket (two linked ops).
    Splice,
    /// IORING_OP_SEND_ZC from a read-only mmap of the file.
    SendZc,
    /// IORING_OP_SEND from a read-only mmap of the file.
    Send,
}

impl SendMethod {
    /// The method the driver uses unless told otherwise: with the real
    /// downloader it was as fast as any and used the least CPU; on the bare
    /// send path it traded places with `Splice` (docs/PERFORMANCE.md).
    pub const DEFAULT: SendMethod = SendMethod::Send;

    /// Every method, for benchmarks and tests.
    pub const ALL: [SendMethod; 3] = [SendMethod::Splice, SendMethod::SendZc, SendMethod::Send];

    /// The method's name.
    pub fn name(self) -> &'static str {
        match self {
            SendMethod::Splice => "splice",
            SendMethod::SendZc => "send_zc",
            SendMethod::Send => "send",
        }
    }

    /// The opcodes this method adds to the driver's base set.
    pub(crate) fn opcodes(self) -> &'static [(u8, &'static str)] {
        match self {
            SendMethod::Splice => &[(opcode::Splice::CODE, "splice")],
            SendMethod::SendZc => &[(opcode::SendZc::CODE, "send_zc")],
            SendMethod::Send => &[],
        }
    }
}

/// A request to answer: the range the session checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PieceJob {
    pub(crate) piece: u32,
    pub(crate) offset: u32,
    pub(crate) file_offset: u64,
    pub(crate) len: u32,
}

enum Item {
    Bytes(Vec<u8>),
    Piece(PieceJob),
    /// Bytes sent as they are on an encrypted link (handshake messages).
    Raw(Vec<u8>),
}

/// The item being sent. Its buffers are referenced by in-flight ops: it is
/// replaced only when its step has no op left.
enum Active {
    Bytes {
        buf: Vec<u8>,
        sent: usize,
    },
    /// Sealed records, `buf[..len]`: control frames, or a piece
    /// (`piece_len`) with its header, sent after the piece delay if any.
    Sealed {
        buf: Vec<u8>,
        len: usize,
        sent: usize,
        piece_len: Option<u32>,
        delayed: bool,
    },
    Piece {
        job: PieceJob,
        header: [u8; PIECE_HEADER_LEN],
        header_sent: usize,
        /// Data bytes that reached the socket.
        sent: u32,
        /// Data bytes spliced into the pipe and not yet out of it.
        in_pipe: u32,
        delayed: bool,
    },
}

/// Where piece data comes from, made on the first piece.
enum Source {
    Map(Mmap),
    Pipe { read: OwnedFd, write: OwnedFd, cap: u32 },
}

/// What a completion meant for the queue.
pub(crate) enum Step {
    /// The step still has ops in flight (or this was a notification).
    Pending,
    /// The step finished and moved bytes; `piece_sent` is the data length of
    /// a piece that is now fully sent.
    Done { piece_sent: Option<u32> },
}

/// What the queue may use of its connection to queue ops.
pub(crate) struct TxIo<'a> {
    pub(crate) ring: &'a mut Ring,
    /// The connection's count of CQEs owed.
    pub(crate) inflight: &'a mut u32,
    pub(crate) sock: RawFd,
    pub(crate) key: Key,
    pub(crate) method: SendMethod,
    /// The pause before the piece this kick starts, if any (the
    /// connection's, [`super::conn`]).
    pub(crate) delay: Option<&'a types::Timespec>,
    /// The admitted file (pieces are queued only after admission).
    pub(crate) file: Option<&'a ServedFile>,
    /// The encrypted link that seals what is sent (`None`: plaintext).
    pub(crate) seal: Option<&'a mut Link>,
    /// The driver's buffers for sealing.
    pub(crate) bufs: &'a mut SealBufs,
}

/// Buffers for sealing pieces, shared by the connections of one driver
/// thread. Fresh memory costs a page fault and a cleared page per 4 KiB
/// touched: with a buffer of each kind per connection, grown piece by
/// piece (each growth copying what is overwritten anyway), a bulk fetch's
/// 128 links had the seed clearing fresh pages in a seventh of its samples
/// (docs/PERFORMANCE.md, twenty-eighth session).
#[derive(Default)]
pub(crate) struct SealBufs {
    /// A piece's plaintext: read from the file and sealed within one call,
    /// so one serves every connection.
    plain: Vec<u8>,
    /// Sealed buffers whose sends are done, the last given on top: the
    /// next piece sealed, by any connection, goes into the one last sent
    /// from, likely still in the cache. (Kept by each connection, the
    /// hundreds of a bulk get's links each sealed into its own buffer,
    /// long out of the cache: the seed's copies into it and the kernel's
    /// out of it cost a byte two to three times what one link's did.)
    free: Vec<Vec<u8>>,
}

impl SealBufs {
    /// Buffers kept for the pieces to come, at most: enough that hundreds
    /// of links sending at once do not allocate (and fault in) new ones.
    const KEEP: usize = 256;
    /// Buffers kept beyond one per connection open ([`SealBufs::trim`]).
    const IDLE: usize = 32;

    /// Keeps a spent sealed buffer for the next piece.
    pub(crate) fn give(&mut self, buf: Vec<u8>) {
        if buf.capacity() > 0 && self.free.len() < Self::KEEP {
            self.free.push(buf);
        }
    }

    /// A connection closed, `live` left: no more buffers kept than they
    /// could use at once and a few (each kept its own before, and the
    /// node as many as [`SealBufs::IDLE`] of those gone).
    pub(crate) fn trim(&mut self, live: usize) {
        // The ones given longest ago go (the bottom of the stack).
        let excess = self.free.len().saturating_sub(live + Self::IDLE);
        self.free.drain(..excess);
    }
}

/// Bytes a piece of `len` bytes takes sealed, its header's record included.
fn sealed_piece_len(len: usize) -> usize {
    crate::secure::sealed_len(PIECE_HEADER_LEN) + crate::secure::sealed_len(len)
}

/// Makes `v` hold `need` bytes without growing: if it cannot, a fresh
/// vector with room for `most` (a whole piece) replaces it. Growing would
/// copy, and fault in, bytes that are overwritten anyway.
fn room_for(v: &mut Vec<u8>, need: usize, most: usize) {
    if v.capacity() < need {
        *v = Vec::with_capacity(need.max(most));
    }
}

/// A connection's send queue.
#[derive(Default)]
pub(crate) struct Tx {
    queue: VecDeque<Item>,
    queued_bytes: usize,
    active: Option<Active>,
    /// Result CQEs of the current step still to come.
    ops: u32,
    progress: bool,
    error: Option<String>,
    src: Option<Source>,
    /// The sealed buffer of the step just done, for the driver to take
    /// ([`Tx::take_spare`]) and hand to the next piece sealed ([`SealBufs`]):
    /// kept at its largest size (overwritten, never zeroed).
    spare: Vec<u8>,
}

const SEND_FLAGS: i32 = libc::MSG_NOSIGNAL | libc::MSG_WAITALL;

impl Tx {
    /// Queues control frames (coalesced with queued ones, never with the
    /// buffer in flight).
    pub(crate) fn push_bytes(&mut self, bytes: Vec<u8>) {
        self.queued_bytes += bytes.len();
        match self.queue.back_mut() {
            Some(Item::Bytes(b)) => b.extend_from_slice(&bytes),
            _ => self.queue.push_back(Item::Bytes(bytes)),
        }
    }

    /// Queues control frames ahead of everything queued (nothing may be
    /// in flight): an answer that must not wait behind queued pieces.
    pub(crate) fn push_bytes_first(&mut self, bytes: Vec<u8>) {
        debug_assert!(self.active.is_none() && self.ops == 0);
        self.queued_bytes += bytes.len();
        match self.queue.front_mut() {
            Some(Item::Bytes(b)) => {
                b.splice(0..0, bytes);
            }
            _ => self.queue.push_front(Item::Bytes(bytes)),
        }
    }

    /// Queues bytes that go out unsealed (the handshake's messages).
    pub(crate) fn push_raw(&mut self, bytes: Vec<u8>) {
        self.queue.push_back(Item::Raw(bytes));
    }

    pub(crate) fn push_piece(&mut self, job: PieceJob) {
        self.queue.push_back(Item::Piece(job));
    }

    /// Drops a queued (not yet started) piece; true if one was dropped.
    pub(crate) fn cancel(&mut self, piece: u32, offset: u32) -> bool {
        let found = self
            .queue
            .iter()
            .position(|i| matches!(i, Item::Piece(j) if j.piece == piece && j.offset == offset));
        found.and_then(|i| self.queue.remove(i)).is_some()
    }

    /// The pieces queued, in order (those behind bytes to go out unsealed
    /// excepted).
    pub(crate) fn queued_pieces(&self) -> impl Iterator<Item = u32> + '_ {
        self.queue.iter().take_while(|i| !matches!(i, Item::Raw(_))).filter_map(|i| match i {
            Item::Piece(j) => Some(j.piece),
            _ => None,
        })
    }

    /// The `nth` of [`queued_pieces`](Self::queued_pieces) goes next, ahead
    /// of the others (a seed sends first the pieces it sent least). Only
    /// while a piece is next anyway: nothing is being sent.
    pub(crate) fn send_next(&mut self, nth: usize) {
        if nth == 0 || self.next_piece().is_none() {
            return;
        }
        let found = self
            .queue
            .iter()
            .enumerate()
            .filter(|(_, i)| matches!(i, Item::Piece(_)))
            .nth(nth)
            .map(|(at, _)| at);
        if let Some(item) = found.and_then(|i| self.queue.remove(i)) {
            self.queue.push_front(item);
        }
    }

    /// Drops every queued (not yet started) piece; returns how many.
    pub(crate) fn drop_pieces(&mut self) -> usize {
        let before = self.queue.len();
        self.queue.retain(|i| !matches!(i, Item::Piece(_)));
        before - self.queue.len()
    }

    /// Takes every queued (not yet started) piece out of the queue, in
    /// order.
    pub(crate) fn take_pieces(&mut self) -> Vec<PieceJob> {
        let mut taken = Vec::new();
        self.queue.retain(|i| match i {
            Item::Piece(j) => {
                taken.push(*j);
                false
            }
            _ => true,
        });
        taken
    }

    /// The connection goes on to another file: forget the one mapped or
    /// piped for the last. Only when idle (no op points into it).
    pub(crate) fn switch_file(&mut self) {
        debug_assert!(self.is_idle());
        // A pipe serves any file; a map only its own.
        if self.is_idle() && matches!(self.src, Some(Source::Map(_))) {
            self.src = None;
        }
    }

    /// The spent sealed buffer (empty if none), for the driver's
    /// [`SealBufs`].
    pub(crate) fn take_spare(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.spare)
    }

    /// Control bytes waiting in the queue.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// The piece the next step would start (nothing is being sent and a
    /// piece is first in line): it needs an upload slot.
    pub(crate) fn next_piece(&self) -> Option<u32> {
        match self.queue.front() {
            Some(Item::Piece(j)) if self.active.is_none() && self.ops == 0 => Some(j.piece),
            _ => None,
        }
    }

    /// The request [`next_piece`](Self::next_piece) would start.
    pub(crate) fn next_job(&self) -> Option<&PieceJob> {
        match self.queue.front() {
            Some(Item::Piece(j)) if self.active.is_none() && self.ops == 0 => Some(j),
            _ => None,
        }
    }

    /// A piece is being sent.
    pub(crate) fn sending_piece(&self) -> bool {
        matches!(
            self.active,
            Some(Active::Piece { .. } | Active::Sealed { piece_len: Some(_), .. })
        )
    }

    /// Nothing queued and nothing being sent.
    pub(crate) fn is_idle(&self) -> bool {
        self.active.is_none() && self.queue.is_empty() && self.ops == 0
    }

    /// Starts the next step unless one is in flight. Returns whether the
    /// step is a delay timeout; an error means the connection must close.
    pub(crate) fn kick(&mut self, io: &mut TxIo<'_>) -> Result<bool, String> {
        if self.ops > 0 {
            return Ok(false);
        }
        if self.active.is_none() && io.seal.is_some() {
            self.active = match self.queue.pop_front() {
                None => return Ok(false),
                Some(Item::Raw(buf)) => Some(Active::Bytes { buf, sent: 0 }),
                Some(item) => Some(self.seal(item, io)?),
            };
        }
        if self.active.is_none() {
            self.active = match self.queue.pop_front() {
                None => return Ok(false),
                Some(Item::Raw(buf)) => Some(Active::Bytes { buf, sent: 0 }),
                Some(Item::Bytes(buf)) => {
                    self.queued_bytes -= buf.len();
                    Some(Active::Bytes { buf, sent: 0 })
                }
                Some(Item::Piece(job)) => {
                    let mut h = Vec::with_capacity(PIECE_HEADER_LEN);
                    peer::encode_piece_header(job.piece, job.offset, job.len as usize, &mut h)
                        .ok_or("piece too large")?;
                    let header = h.try_into().map_err(|_| "bad piece header length")?;
                    Some(Active::Piece {
                        job,
                        header,
                        header_sent: 0,
                        sent: 0,
                        in_pipe: 0,
                        delayed: io.delay.is_none(),
                    })
                }
            };
        }
        if matches!(self.active, Some(Active::Piece { .. })) && self.src.is_none() {
            let file = io.file.ok_or("a piece before admission")?;
            self.src = Some(Source::new(io.method, file)?);
        }
        self.progress = false;
        self.error = None;
        let sock = types::Fd(io.sock);
        let data = |op: Op| op.data(io.key);
        let mut chain: Vec<squeue::Entry> = Vec::with_capacity(3);
        let mut is_delay = false;
        match (&mut self.active, &self.src) {
            (None, _) => return Ok(false),
            (Some(Active::Sealed { delayed: false, .. }), _) => {
                let ts = io.delay.ok_or("delay without a timespec")?;
                chain.push(opcode::Timeout::new(ts).build().user_data(data(Op::Delay)));
                is_delay = true;
            }
            (Some(Active::Bytes { buf, sent }), _) => {
                let rest = &buf[*sent..];
                chain.push(
                    opcode::Send::new(sock, rest.as_ptr(), rest.len() as u32)
                        .flags(SEND_FLAGS)
                        .build()
                        .user_data(data(Op::SendBytes)),
                );
            }
            (Some(Active::Sealed { buf, len, sent, .. }), _) => {
                let rest = &buf[*sent..*len];
                chain.push(
                    opcode::Send::new(sock, rest.as_ptr(), rest.len() as u32)
                        .flags(SEND_FLAGS)
                        .build()
                        .user_data(data(Op::SendBytes)),
                );
            }
            (Some(Active::Piece { delayed: false, .. }), _) => {
                let ts = io.delay.ok_or("delay without a timespec")?;
                chain.push(opcode::Timeout::new(ts).build().user_data(data(Op::Delay)));
                is_delay = true;
            }
            (Some(Active::Piece { job, header, header_sent, sent, in_pipe, .. }), Some(src)) => {
                if *header_sent < header.len() {
                    let h = &header[*header_sent..];
                    chain.push(
                        opcode::Send::new(sock, h.as_ptr(), h.len() as u32)
                            .flags(SEND_FLAGS | libc::MSG_MORE)
                            .build()
                            .user_data(data(Op::SendHeader)),
                    );
                }
                let left = job.len - *sent;
                match src {
                    Source::Map(map) => {
                        if left > 0 {
                            let start = job.file_offset + u64::from(*sent);
                            if start + u64::from(left) > map.len() as u64 {
                                return Err("piece beyond the mapped file".into());
                            }
                            // Pointer arithmetic only: user space never reads
                            // the mapping, the kernel does.
                            let ptr = map.as_ptr().wrapping_add(start as usize);
                            let e = if io.method == SendMethod::SendZc {
                                opcode::SendZc::new(sock, ptr, left).flags(SEND_FLAGS).build()
                            } else {
                                opcode::Send::new(sock, ptr, left).flags(SEND_FLAGS).build()
                            };
                            chain.push(e.user_data(data(Op::SendData)));
                        }
                    }
                    Source::Pipe { read, write, cap } => {
                        let file = io.file.ok_or("a piece before admission")?;
                        let out = |n| {
                            opcode::Splice::new(types::Fd(read.as_raw_fd()), -1, sock, -1, n)
                                .build()
                                .user_data(data(Op::SpliceOut))
                        };
                        if *in_pipe > 0 {
                            chain.push(out(*in_pipe));
                        } else if left > 0 {
                            let n = left.min(*cap);
                            let off = job.file_offset + u64::from(*sent);
                            let off = i64::try_from(off).map_err(|_| "file offset too large")?;
                            let fd = types::Fd(file.file.as_raw_fd());
                            chain.push(
                                opcode::Splice::new(fd, off, types::Fd(write.as_raw_fd()), -1, n)
                                    .build()
                                    .user_data(data(Op::SpliceIn)),
                            );
                            chain.push(out(n));
                        }
                    }
                }
            }
            (Some(Active::Piece { .. }), None) => return Err("no piece source".into()),
        }
        if chain.is_empty() {
            return Err("a send step with nothing to send".into());
        }
        let n = chain.len();
        for e in &mut chain[..n - 1] {
            *e = e.clone().flags(squeue::Flags::IO_LINK);
        }
        // SAFETY: the entries point into `self.active` (a Vec's heap buffer
        // or the header array inside the boxed connection), the mmap or pipe
        // in `self.src`, the served file held by the connection, and the
        // connection's pause timespec. None is moved, changed or dropped
        // while `self.ops > 0`, `src` lives as long as the connection, and the
        // connection is freed only when it is owed no CQE (notifications
        // included).
        unsafe { io.ring.push(&chain) }.map_err(|e| format!("cannot queue a send: {e}"))?;
        self.ops = n as u32;
        *io.inflight += n as u32;
        Ok(is_delay)
    }

    /// Seals the next item for an encrypted link: control frames as they
    /// are; a piece's header in a record of its own, then its data read
    /// from the file, so that the receiver can open each data record
    /// straight into the piece's buffer.
    fn seal(&mut self, item: Item, io: &mut TxIo<'_>) -> Result<Active, String> {
        let link = io.seal.as_deref_mut().ok_or("sealing without a link")?;
        if !link.is_ready() {
            return Err("nothing to send before the handshake ended".into());
        }
        let mut buf = io.bufs.free.pop().unwrap_or_default();
        let err = |e: crate::secure::SecureError| e.to_string();
        let (len, piece_len, delayed) = match item {
            Item::Raw(_) => return Err("raw bytes are not sealed".into()),
            Item::Bytes(plain) => {
                self.queued_bytes -= plain.len();
                (link.seal_at(&plain, &mut buf, 0).map_err(err)?, None, true)
            }
            Item::Piece(job) => {
                use std::os::unix::fs::FileExt;
                let file = io.file.ok_or("a piece before admission")?;
                let mut header = Vec::with_capacity(PIECE_HEADER_LEN);
                peer::encode_piece_header(job.piece, job.offset, job.len as usize, &mut header)
                    .ok_or("piece too large")?;
                let n = job.len as usize;
                room_for(&mut buf, sealed_piece_len(n), sealed_piece_len(PIECE_LEN as usize));
                let plain = &mut io.bufs.plain;
                room_for(plain, n, PIECE_LEN as usize);
                if plain.len() < n {
                    plain.resize(n, 0);
                }
                let at = link.seal_at(&header, &mut buf, 0).map_err(err)?;
                file.file.read_exact_at(&mut plain[..n], job.file_offset).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        "the shared file is shorter than its metadata".to_owned()
                    } else {
                        format!("read the shared file: {e}")
                    }
                })?;
                let end = link.seal_at(&plain[..n], &mut buf, at).map_err(err)?;
                (end, Some(job.len), io.delay.is_none())
            }
        };
        Ok(Active::Sealed { buf, len, sent: 0, piece_len, delayed })
    }

    /// Records a completion of this queue's ops.
    pub(crate) fn on_cqe(&mut self, op: Op, res: i32, flags: u32) -> Result<Step, String> {
        if cqueue::notif(flags) {
            // A SEND_ZC notification: the kernel is done with the mapping's
            // pages for that send. Only the counts change.
            return Ok(Step::Pending);
        }
        self.ops = self.ops.saturating_sub(1);
        self.record(op, res);
        if self.ops > 0 {
            return Ok(Step::Pending);
        }
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let complete = match &self.active {
            Some(Active::Bytes { buf, sent }) => *sent >= buf.len(),
            Some(Active::Sealed { len, sent, delayed, .. }) => *delayed && *sent >= *len,
            Some(Active::Piece { job, header_sent, sent, in_pipe, delayed, .. }) => {
                *delayed && *header_sent == PIECE_HEADER_LEN && *sent == job.len && *in_pipe == 0
            }
            None => false,
        };
        if complete {
            let piece_sent = match self.active.take() {
                Some(Active::Piece { job, .. }) => Some(job.len),
                Some(Active::Sealed { buf, piece_len, .. }) => {
                    self.spare = buf;
                    piece_len
                }
                _ => None,
            };
            return Ok(Step::Done { piece_sent });
        }
        if !self.progress {
            return Err("a send step moved no byte".into());
        }
        Ok(Step::Done { piece_sent: None })
    }

    fn record(&mut self, op: Op, res: i32) {
        let err = |what: &str| {
            format!("{what}: {}", std::io::Error::from_raw_os_error(res.saturating_neg()))
        };
        // -ECANCELED on a later link means an earlier one fell short: the
        // next step resumes from what went out.
        let cancelled_link = res == -libc::ECANCELED;
        let positive = u32::try_from(res).ok().filter(|n| *n > 0);
        match (&mut self.active, op) {
            (Some(Active::Sealed { delayed, .. }), Op::Delay) => {
                *delayed = true;
                self.progress = true;
            }
            (Some(Active::Bytes { buf, sent }), Op::SendBytes) => match positive {
                Some(n) => {
                    *sent = (*sent + n as usize).min(buf.len());
                    self.progress = true;
                }
                None if res < 0 => self.error = Some(err("send")),
                None => {}
            },
            (Some(Active::Sealed { len, sent, .. }), Op::SendBytes) => match positive {
                Some(n) => {
                    *sent = (*sent + n as usize).min(*len);
                    self.progress = true;
                }
                None if res < 0 => self.error = Some(err("send")),
                None => {}
            },
            (Some(Active::Piece { delayed, .. }), Op::Delay) => {
                *delayed = true;
                self.progress = true;
            }
            (Some(Active::Piece { header_sent, .. }), Op::SendHeader) => match positive {
                Some(n) => {
                    *header_sent = (*header_sent + n as usize).min(PIECE_HEADER_LEN);
                    self.progress = true;
                }
                None if res < 0 => self.error = Some(err("send")),
                None => {}
            },
            (Some(Active::Piece { job, sent, .. }), Op::SendData) => match positive {
                Some(n) => {
                    *sent = (*sent + n).min(job.len);
                    self.progress = true;
                }
                None if res < 0 && !cancelled_link => self.error = Some(err("send")),
                None => {}
            },
            (Some(Active::Piece { in_pipe, .. }), Op::SpliceIn) => match positive {
                Some(n) => {
                    *in_pipe += n;
                    self.progress = true;
                }
                None if res == 0 => {
                    self.error = Some("the shared file is shorter than its metadata".into())
                }
                None if !cancelled_link => self.error = Some(err("splice from the file")),
                None => {}
            },
            (Some(Active::Piece { job, sent, in_pipe, .. }), Op::SpliceOut) => match positive {
                Some(n) => {
                    let n = n.min(*in_pipe);
                    *in_pipe -= n;
                    *sent = (*sent + n).min(job.len);
                    self.progress = true;
                }
                None if res < 0 && !cancelled_link => {
                    self.error = Some(err("splice to the socket"))
                }
                None => {}
            },
            _ => self.error = Some(format!("unexpected completion {op:?}")),
        }
    }
}

impl Source {
    fn new(method: SendMethod, file: &ServedFile) -> Result<Self, String> {
        match method {
            SendMethod::Splice => Self::pipe(),
            SendMethod::Send | SendMethod::SendZc => {
                let len = usize::try_from(file.meta().len).map_err(|_| "file too large to map")?;
                // SAFETY: a read-only shared mapping that user space never
                // reads (no slice of it is ever made): only the kernel reads
                // it, on behalf of sends. A file truncated under us makes
                // such a send fail with EFAULT instead of raising SIGBUS, and
                // pages written concurrently (a download's pwrite) are never
                // observed by Rust code.
                let map = unsafe { MmapOptions::new().len(len).map(&file.file) }
                    .map_err(|e| format!("cannot map the file: {e}"))?;
                Ok(Source::Map(map))
            }
        }
    }

    fn pipe() -> Result<Self, String> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(format!("pipe: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: pipe2 just returned these two descriptors; nothing else owns them.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A pipe that holds a whole piece halves the ops per piece; the
        // system may refuse (pipe-user-pages-soft): keep what it allows.
        // SAFETY: fcntl on a descriptor we own, with an integer argument.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIECE_LEN as libc::c_int) };
        // SAFETY: as above; F_GETPIPE_SZ takes no argument.
        let cap = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        let cap = u32::try_from(cap).ok().filter(|c| *c > 0).ok_or("pipe size unknown")?;
        Ok(Source::Pipe { read, write, cap })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sealed_buffer_last_sent_from_is_the_next_sealed_into() {
        let mut bufs = SealBufs::default();
        let sized = |n: usize| Vec::<u8>::with_capacity(n);
        bufs.give(sized(1000));
        bufs.give(Vec::new()); // nothing to keep
        bufs.give(sized(2000));
        assert_eq!(bufs.free.len(), 2);
        assert_eq!(bufs.free.pop().map(|b| b.capacity()), Some(2000));
        // At most KEEP.
        for _ in 0..SealBufs::KEEP + 10 {
            bufs.give(sized(10));
        }
        assert_eq!(bufs.free.len(), SealBufs::KEEP);
        // Connections gone: the oldest go, the last given stay on top.
        bufs.free.remove(0);
        bufs.give(sized(3000));
        bufs.trim(4);
        assert_eq!(bufs.free.len(), 4 + SealBufs::IDLE);
        assert_eq!(bufs.free.last().map(|b| b.capacity()), Some(3000));
    }
}
