//! The io_uring driver of downloads: one ring on one thread carries every
//! peer of every download of the process — no thread per peer.
//!
//! Each download's protocol logic is its [`DownloadCore`] (the same one the
//! threads driver runs); this file only carries out its actions:
//!
//! - **connect**: a socket per peer and a `Connect` op;
//! - **receive**: a `Recv` per connection, into a 16 KiB staging buffer
//!   while frame headers and control frames come in, and straight into the
//!   piece's page-aligned buffer for the body of a piece (what the staging
//!   buffer caught of it is copied over, at most 16 KiB);
//! - **send**: one `Send` in flight per connection, frames in order;
//! - **hash**: on the worker pool; the digest comes back to the ring
//!   thread over a channel (an eventfd wakes the ring);
//! - **write**: a `Write` op, `O_DIRECT` when the piece qualifies
//!   ([`PartFile::write_target`]), then the one-byte record and
//!   [`DownloadCore::piece_written`];
//! - **tick**: a `Timeout` op every [`TICK`] while downloads run.
//!
//! A connection whose download completed is kept open for [`PARK_FOR`]
//! ("parked", when its download asked: [`super::FetchSpec::park_links`]),
//! and a later download of the process that connects to the
//! same node with the same keys takes it over: it sends its handshake on
//! the open link (the peer protocol's "another file on the same link"),
//! and the driver drops every frame until the server's answer to it (a
//! bitfield or an error), since what comes before belongs to the file
//! before. A bulk fetch of many small files from the same nodes so pays
//! for one connection and one Noise handshake per node, not per file.
//!
//! A link also carries a second download at once (pipelined): when its
//! server answered a handshake of [`PIPELINE_VERSION`] (it answers every
//! request taken before a new handshake) and its download asks it for
//! nothing more ([`DownloadCore::asks_nothing_more`]: a small file's one
//! request went out), a download that connects to the same node sends
//! its handshake and requests right behind ([`Conn::next`]). Frames up to
//! the server's next answer (a bitfield or an error) are the first
//! download's; from that answer on, the second's, and the first lets go
//! of the link. Should the first want to say more meanwhile, it does
//! without the link (its requests are asked again elsewhere). A far
//! server so serves two small files per round trip on one link: one file
//! per link at a time had capped a bulk fetch at 128 files per round trip,
//! the links a server admits from one address.
//!
//! Blocking work stays off the ring: a small control thread per download
//! asks the tracker for peers, fsyncs the piece record, reports events and
//! finishes the file, like the threads driver's controller but with no
//! socket of its own.
//!
//! Memory: piece data lives only in [`MAX_BUFFERS`] buffers per download.
//! When none is free, a connection whose next piece needs one stops
//! receiving (its bytes wait in the kernel's socket buffer: TCP flow
//! control) and resumes when a buffer comes back.
//!
//! Invariants (as in the piece server's ring, `crate::uring`): every buffer,
//! address or descriptor an op points at lives in a boxed [`Conn`], a
//! [`Write`] or the driver, and is not moved or freed until that op's CQE
//! is reaped — a connection counts its ops in flight and is freed at zero;
//! user_data carries a generation so a CQE never reaches a slot's next
//! occupant.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use io_uring::{opcode, types, IoUring};

use super::{
    finish, lock, PeerList, PeerSource, Shared, Status, LINKS_OPENED, LINKS_REUSED, MAX_BUFFERS,
    PARK_FOR,
};
use crate::download::{Action, DownloadCore, PieceFate, PROGRESS_EVERY};
use crate::hash::sha1_of;
use crate::meta::Sha1Digest;
use crate::peer::{kind, MAX_FRAME, PIPELINE_VERSION};
use crate::picker::PeerId;
use crate::secure::{
    record_at, Link, PublicKey, MAX_MESSAGE, PEER_PROLOGUE, RECORD_HEADER, TAG_LEN,
};
use crate::store::AlignedBuf;
use crate::uring::Ring;
use crate::wire::{self, HEADER_LEN};

/// How often the ring ticks the cores while downloads run.
const TICK: Duration = Duration::from_millis(20);
/// Staging buffer per connection for headers and control frames.
const RX_STAGE: usize = 16 * 1024;
/// Frame header plus a piece message's piece and offset.
const PIECE_HEAD: usize = HEADER_LEN + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Connect = 1,
    Recv,
    Send,
    Write,
    Wake,
    Tick,
    Cancel,
}

impl Op {
    fn data(self, gen: u32, slot: u32) -> u64 {
        (self as u64) << 56 | u64::from(gen & 0xff_ffff) << 32 | u64::from(slot)
    }

    fn parse(data: u64) -> Option<(Op, u32, u32)> {
        let op = match data >> 56 {
            1 => Op::Connect,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::Write,
            5 => Op::Wake,
            6 => Op::Tick,
            7 => Op::Cancel,
            _ => return None,
        };
        Some((op, ((data >> 32) & 0xff_ffff) as u32, data as u32))
    }
}

/// Messages to the ring thread.
pub(super) enum Cmd {
    /// Start carrying a download; tell its control thread through `ctl`.
    Add(u64, Arc<Shared>, CtlSender),
    /// The tracker's answer for a download.
    Peers(u64, Result<PeerList, super::PeerError>),
    /// A worker hashed a piece.
    Hashed { dl: u64, piece: u32, buf: AlignedBuf, digest: Sha1Digest },
    /// Look at the downloads' stop flags now.
    Wake,
}

/// Messages to a download's control thread.
pub(super) enum Ctl {
    WantPeers,
    Sync,
    FirstPiece,
    Complete,
    Failed(String),
    /// The ring let go of the download: nothing of it is in flight.
    Released,
}

/// A download's messages to its control thread, in order: a queue under a
/// lock, and a condition variable it sleeps on. (A channel's blocking
/// receive spins and yields the CPU a few times before it sleeps: with a
/// bulk fetch's thousands of small downloads, their control threads spent
/// more time yielding than working.)
#[derive(Default)]
pub(super) struct CtlQueue {
    /// The messages, and whether the sender is gone.
    state: Mutex<(VecDeque<Ctl>, bool)>,
    ready: Condvar,
}

/// What a control thread waits for next.
enum Next {
    Msg(Ctl),
    /// Nothing arrived within the wait.
    Timeout,
    /// The ring let go of the download without a word (and everything
    /// sent before was taken).
    Closed,
}

impl CtlQueue {
    fn recv_timeout(&self, wait: Duration) -> Next {
        let mut state = lock(&self.state);
        if state.0.is_empty() && !state.1 {
            state = self.ready.wait_timeout(state, wait).unwrap_or_else(|p| p.into_inner()).0;
        }
        match state.0.pop_front() {
            Some(msg) => Next::Msg(msg),
            None if state.1 => Next::Closed,
            None => Next::Timeout,
        }
    }
}

/// The ring's end of a download's control: its own thread's
/// [`CtlQueue`], or the light downloads' controller ([`Light`]). Dropping
/// it tells the control thread.
pub(super) enum CtlSender {
    Own(Arc<CtlQueue>),
    Light(u64),
}

impl CtlSender {
    fn send(&self, msg: Ctl) {
        match self {
            Self::Own(q) => {
                lock(&q.state).0.push_back(msg);
                q.ready.notify_one();
            }
            Self::Light(id) => {
                if let Ok(light) = light() {
                    light.push(*id, LightMsg::Ctl(msg));
                }
            }
        }
    }
}

impl Drop for CtlSender {
    fn drop(&mut self) {
        match self {
            Self::Own(q) => {
                lock(&q.state).1 = true;
                q.ready.notify_one();
            }
            Self::Light(id) => {
                if let Ok(light) = light() {
                    light.push(*id, LightMsg::Closed);
                }
            }
        }
    }
}

/// The control work of light downloads — a file of one piece whose finish
/// a [`crate::store::Settler`] does (a bulk fetch's small files) — done by
/// one thread for all of them: such a download's control never blocks but
/// to ask for more peers, which a worker does. A control thread per small
/// file cost a job hand-off and two or three wake-ups per file, about a
/// tenth of a bulk fetch's CPU. The ring queues their messages without a
/// wake-up and wakes the controller once per turn of its loop
/// ([`Light::flush`]).
struct Light {
    inbox: Mutex<Vec<(u64, LightMsg)>>,
    /// Messages queued since the last wake-up.
    unsignalled: std::sync::atomic::AtomicBool,
    ready: Condvar,
}

enum LightMsg {
    Start(Box<LightDl>),
    Ctl(Ctl),
    /// The ring let go of the download.
    Closed,
}

/// What the controller keeps of a light download.
struct LightDl {
    shared: Arc<Shared>,
    source: Arc<Mutex<Box<dyn PeerSource>>>,
    ctl: Control,
    rate: super::RateMeter,
    done: super::workers::Done,
}

/// A light download is over for `Download::wait` once its controller lets
/// go of it, also when its control panicked midway.
impl Drop for LightDl {
    fn drop(&mut self) {
        self.done.set();
    }
}

static LIGHT: OnceLock<Result<Arc<Light>, String>> = OnceLock::new();

/// The light downloads' controller, started on first use.
fn light() -> Result<&'static Arc<Light>, String> {
    LIGHT
        .get_or_init(|| {
            let light = Arc::new(Light {
                inbox: Mutex::new(Vec::new()),
                unsignalled: std::sync::atomic::AtomicBool::new(false),
                ready: Condvar::new(),
            });
            let l = Arc::clone(&light);
            thread::Builder::new()
                .name("fetch-light".into())
                .spawn(move || l.run())
                .map_err(|e| format!("spawn the light downloads' controller: {e}"))?;
            Ok(light)
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl Light {
    /// Queues a message; the controller is woken at the ring's next
    /// [`flush`](Self::flush).
    fn push(&self, id: u64, msg: LightMsg) {
        lock(&self.inbox).push((id, msg));
        self.unsignalled.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Wakes the controller if anything was queued since the last call.
    fn flush(&self) {
        if self.unsignalled.swap(false, std::sync::atomic::Ordering::AcqRel) {
            let _guard = lock(&self.inbox);
            self.ready.notify_one();
        }
    }

    fn run(&self) {
        let mut dls: HashMap<u64, LightDl> = HashMap::new();
        let mut sampled = Instant::now();
        loop {
            let msgs = {
                let mut inbox = lock(&self.inbox);
                if inbox.is_empty() {
                    inbox = self
                        .ready
                        .wait_timeout(inbox, Duration::from_millis(100))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                std::mem::take(&mut *inbox)
            };
            for (id, msg) in msgs {
                // A panic in one download's events ends that download, not
                // the controller.
                let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    Self::handle(&mut dls, id, msg)
                }));
                if handled.is_err() {
                    if let Some(dl) = dls.remove(&id) {
                        dl.shared.fail("the download's control failed".into());
                    }
                }
            }
            if sampled.elapsed() >= Duration::from_millis(100) {
                sampled = Instant::now();
                for dl in dls.values_mut() {
                    dl.rate.sample(&dl.shared);
                }
            }
        }
    }

    /// One message of download `id`: what [`control`] does, without blocking.
    fn handle(dls: &mut HashMap<u64, LightDl>, id: u64, msg: LightMsg) {
        let Ok(ring) = ring() else { return };
        let step = match msg {
            LightMsg::Start(dl) => {
                dls.insert(id, *dl);
                return;
            }
            LightMsg::Ctl(msg) => match dls.get_mut(&id) {
                Some(dl) => dl.ctl.on(&dl.shared, msg, ring),
                None => return,
            },
            LightMsg::Closed => Step::Ended,
        };
        match step {
            Step::Done => {}
            Step::WantPeers => {
                let Some(dl) = dls.get(&id) else { return };
                // The tracker may take a while: on a worker.
                let source = Arc::clone(&dl.source);
                let asked = super::workers::spawn("fetch-peers", move || {
                    let peers = lock(&source).peers();
                    ring.send(Cmd::Peers(id, peers));
                });
                if asked.is_err() {
                    ring.send(Cmd::Peers(
                        id,
                        Err(super::PeerError::Unavailable("no thread".into())),
                    ));
                }
            }
            Step::Ended => {
                if let Some(dl) = dls.remove(&id) {
                    dl.ctl.end(&dl.shared);
                }
            }
        }
    }
}

/// The process's download ring: where to send commands.
pub(super) struct FetchRing {
    cmds: Sender<Cmd>,
    wake: File,
}

impl FetchRing {
    pub(super) fn send(&self, cmd: Cmd) {
        if self.cmds.send(cmd).is_ok() {
            let _ = (&self.wake).write(&1u64.to_ne_bytes());
        }
    }
}

static RING: OnceLock<Result<FetchRing, String>> = OnceLock::new();
static NEXT_DL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The process's download ring, started on first use.
pub(super) fn ring() -> Result<&'static FetchRing, String> {
    RING.get_or_init(start_ring).as_ref().map_err(Clone::clone)
}

fn start_ring() -> Result<FetchRing, String> {
    // SAFETY: eventfd takes no pointer; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("eventfd: {}", io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor owned by nothing else.
    let wake = unsafe { File::from_raw_fd(fd) };
    let ring_wake = wake.try_clone().map_err(|e| format!("eventfd: {e}"))?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    thread::Builder::new()
        .name("fetch-ring".into())
        .spawn(move || {
            // Made on the thread that submits: a single-issuer ring refuses
            // submissions from any other.
            let uring = IoUring::builder()
                .setup_cqsize(8192)
                .setup_coop_taskrun()
                .setup_single_issuer()
                .build(512)
                .or_else(|_| IoUring::builder().setup_cqsize(8192).build(512));
            match uring {
                Ok(uring) => {
                    let _ = ready_tx.send(Ok(()));
                    Driver::new(uring, ring_wake, rx).run();
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("io_uring_setup: {e}")));
                }
            }
        })
        .map_err(|e| format!("spawn the download ring: {e}"))?;
    ready_rx.recv().map_err(|_| "the download ring thread died".to_owned())??;
    Ok(FetchRing { cmds: tx, wake })
}

/// Hands a download to the ring; returns its control thread.
#[allow(clippy::type_complexity)]
pub(super) fn start(
    shared: &Arc<Shared>,
    source: Box<dyn PeerSource>,
    reported: bool,
) -> Result<super::workers::Done, (String, Box<dyn PeerSource>)> {
    let ring = match ring() {
        Ok(r) => r,
        Err(e) => return Err((e, source)),
    };
    let id = NEXT_DL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if shared.settle.is_some() && shared.meta.piece_hashes.len() <= 1 {
        if let Ok(light) = light() {
            let done = super::workers::Done::default();
            let dl = LightDl {
                shared: Arc::clone(shared),
                source: Arc::new(Mutex::new(source)),
                ctl: Control { reported, complete: false },
                rate: super::RateMeter::default(),
                done: done.clone(),
            };
            // Queued before the ring hears of the download: every message
            // of the download comes after it.
            light.push(id, LightMsg::Start(Box::new(dl)));
            ring.send(Cmd::Add(id, Arc::clone(shared), CtlSender::Light(id)));
            return Ok(done);
        }
    }
    let queue = Arc::new(CtlQueue::default());
    let (sh, rx) = (Arc::clone(shared), Arc::clone(&queue));
    let handle =
        super::workers::spawn("fetch-ctl", move || control(&sh, id, source, &rx, reported))
            .expect("spawn a download's control thread");
    ring.send(Cmd::Add(id, Arc::clone(shared), CtlSender::Own(queue)));
    Ok(handle)
}

/// A download's control thread: the blocking work of a ring download.
fn control(
    shared: &Arc<Shared>,
    id: u64,
    mut source: Box<dyn PeerSource>,
    rx: &CtlQueue,
    reported: bool,
) {
    let Ok(ring) = ring() else { return };
    let mut rate = super::RateMeter::default();
    let mut ctl = Control { reported, complete: false };
    loop {
        let msg = rx.recv_timeout(Duration::from_millis(100));
        rate.sample(shared);
        match msg {
            Next::Msg(msg) => match ctl.on(shared, msg, ring) {
                Step::WantPeers => ring.send(Cmd::Peers(id, source.peers())),
                Step::Ended => break,
                Step::Done => {}
            },
            Next::Closed => break,
            Next::Timeout => {}
        }
    }
    ctl.end(shared);
}

/// A download's control, wherever it runs (its own thread, [`control`], or
/// the light downloads' controller, [`Light`]).
struct Control {
    /// The first verified piece was reported (or there was one at the start).
    reported: bool,
    complete: bool,
}

/// What a message leaves to the one who runs the control.
enum Step {
    Done,
    /// Ask the download's [`PeerSource`] (it may block) and send the answer
    /// to the ring.
    WantPeers,
    /// The ring let go of the download: [`Control::end`].
    Ended,
}

impl Control {
    /// Does what `msg` asks that never blocks long.
    fn on(&mut self, shared: &Shared, msg: Ctl, ring: &FetchRing) -> Step {
        match msg {
            Ctl::WantPeers => return Step::WantPeers,
            Ctl::Sync => {
                if let Err(e) = shared.part.sync_state() {
                    shared.fail(e.to_string());
                    ring.send(Cmd::Wake);
                }
            }
            Ctl::FirstPiece => {
                if !std::mem::replace(&mut self.reported, true) {
                    (shared.events)(super::FetchEvent::FirstPiece);
                }
            }
            Ctl::Complete => self.complete = true,
            Ctl::Failed(reason) => shared.fail(reason),
            Ctl::Released => return Step::Ended,
        }
        Step::Done
    }

    /// The ring let go of the download: finish it if complete, else (stopped
    /// by the user) keep what it has for the next start.
    fn end(&self, shared: &Shared) {
        if self.complete {
            finish(shared, self.reported);
        } else if *lock(&shared.status) == Status::Running {
            shared.keep_for_resume();
        }
        shared.rate_bits.store(0f64.to_bits(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// Piece data being received straight into its buffer.
struct Body {
    piece: u32,
    offset: u32,
    buf: AlignedBuf,
    got: usize,
}

/// One connection to a peer.
struct Conn {
    /// The download it carries (0: parked, none).
    dl: u64,
    peer: PeerId,
    gen: u32,
    fd: OwnedFd,
    /// The peer's piece server.
    to: SocketAddr,
    /// The server answered the last handshake (a bitfield or an error
    /// reached the core): nothing of a file before can arrive any more.
    answered: bool,
    /// Frames of a file before may still arrive: drop every frame until
    /// the answer to the handshake sent since.
    stale: bool,
    /// A download whose handshake and requests went out behind the
    /// current one's last requests (pipelined: the server answers those
    /// first, see [`Conn::pipelines`]). It takes the link over when the
    /// server's answer to its handshake comes, or when the current one
    /// lets go of the link.
    next: Option<(u64, PeerId)>,
    /// The server answered a handshake of [`PIPELINE_VERSION`] or later on
    /// this link: it answers every request before a new handshake.
    pipelines: bool,
    /// Parked since (see the module's docs).
    parked: Option<Instant>,
    /// The peer's address, for the `Connect` op.
    addr: Box<(libc::sockaddr_storage, libc::socklen_t)>,
    open: bool,
    rx: Vec<u8>,
    rx_len: usize,
    body: Option<Body>,
    recv_armed: bool,
    /// Waiting for a piece buffer.
    starved: bool,
    /// Frames queued, and the ones being sent with how much is sent.
    tx: Vec<u8>,
    sending: Vec<u8>,
    sent: usize,
    /// CQEs still owed for this connection's ops.
    inflight: usize,
    closing: bool,
    /// The encrypted link (`None`: plaintext, both ends asked for it). Its
    /// records arrive in `crx[..crx_len]`; what it seals waits in `wire`.
    link: Option<Box<Link>>,
    expect: Option<PublicKey>,
    crx: Vec<u8>,
    crx_len: usize,
    wire: Vec<u8>,
    opened: Vec<u8>,
    /// When the core last heard that bytes arrived ([`PROGRESS_EVERY`]).
    reported: Instant,
}

impl Conn {
    /// Whether nothing more of the current download can arrive on the link
    /// (its handshake answered, no piece of it half received): only then
    /// may the next download, queued behind it, take the link over.
    fn done_with_current(&self) -> bool {
        self.answered && self.body.is_none()
    }
}

/// A piece being written.
struct Write {
    dl: u64,
    piece: u32,
    buf: AlignedBuf,
    offset: u64,
    done: usize,
    direct: bool,
}

/// A download the ring carries.
struct Dl {
    shared: Arc<Shared>,
    ctl: CtlSender,
    conns: HashMap<PeerId, usize>,
    bufs: Vec<AlignedBuf>,
    /// Buffers made so far (at most [`MAX_BUFFERS`]).
    made: usize,
    /// Buffers out at workers or in write ops.
    away: usize,
    /// Stop, failure or completion: close everything, then let go.
    ending: bool,
}

impl Dl {
    /// A piece buffer of `len` bytes: one of the download's, else a new one
    /// (from `spare`, the buffers of downloads that ended, when it has any)
    /// while it has fewer than [`MAX_BUFFERS`].
    fn take_buf(&mut self, len: usize, spare: &mut Spares) -> Option<AlignedBuf> {
        let mut b = match self.bufs.pop() {
            Some(b) => b,
            None if self.made < MAX_BUFFERS => {
                self.made += 1;
                spare.take(len)
            }
            None => return None,
        };
        b.resize(len);
        Some(b)
    }
}

/// Piece buffers of downloads that ended, for the next ones: a bulk fetch
/// of small files otherwise allocated, zeroed and freed a buffer per file.
#[derive(Default)]
struct Spares {
    bufs: Vec<AlignedBuf>,
    /// Their room, together: at most [`SPARE_BYTES`].
    bytes: usize,
}

/// Most room kept in spare buffers: 64 of a 512 KiB piece, some 200 of a
/// bulk fetch's small files (with 32 buffers, whatever their size, a
/// third of the files of a 10,000-file fetch found none: the window of
/// files running grows by a hundred at a time).
const SPARE_BYTES: usize = 32 << 20;

/// What a buffer taken from the spares for a larger need is grown to a
/// multiple of, so that it fits the next files of about its size too.
const SPARE_STEP: usize = 64 << 10;

impl Spares {
    /// The buffer that holds `len` bytes with the least room to spare,
    /// else the roomiest, grown; else a new one. (The last one was taken
    /// whatever its size: of small files of every size, 4-256 KiB, half
    /// then found it too small, and allocated and zeroed one again.)
    fn take(&mut self, len: usize) -> AlignedBuf {
        let room = |(_, b): &(usize, &AlignedBuf)| b.room();
        let bufs = || self.bufs.iter().enumerate();
        let at = match bufs().filter(|(_, b)| b.room() >= len).min_by_key(room) {
            Some((i, _)) => Some(i),
            None => bufs().max_by_key(room).map(|(i, _)| i),
        };
        let mut b = at.map(|i| self.bufs.swap_remove(i)).unwrap_or_default();
        self.bytes -= b.room();
        if b.room() < len {
            b.resize(len.next_multiple_of(SPARE_STEP));
        }
        b
    }

    /// Keeps what `bufs` has room for.
    fn keep(&mut self, bufs: Vec<AlignedBuf>) {
        for b in bufs {
            if self.bytes + b.room() > SPARE_BYTES {
                break;
            }
            self.bytes += b.room();
            self.bufs.push(b);
        }
    }
}

struct Driver {
    ring: Ring,
    wake: File,
    wake_buf: Box<u64>,
    tick: Box<types::Timespec>,
    tick_armed: bool,
    cmds: Receiver<Cmd>,
    dls: HashMap<u64, Dl>,
    conns: Vec<Option<Box<Conn>>>,
    free: Vec<usize>,
    writes: Vec<Option<Box<Write>>>,
    free_writes: Vec<usize>,
    next_gen: u32,
    /// Parked connections by their peer's address.
    parked: HashMap<SocketAddr, Vec<usize>>,
    /// Piece buffers of downloads that ended, for the next ones.
    spare: Spares,
}

impl Driver {
    fn new(uring: IoUring, wake: File, cmds: Receiver<Cmd>) -> Self {
        Self {
            ring: Ring { uring, inflight: 0 },
            wake,
            wake_buf: Box::new(0),
            tick: Box::new(types::Timespec::from(TICK)),
            tick_armed: false,
            cmds,
            dls: HashMap::new(),
            conns: Vec::new(),
            free: Vec::new(),
            writes: Vec::new(),
            free_writes: Vec::new(),
            next_gen: 1,
            parked: HashMap::new(),
            spare: Spares::default(),
        }
    }

    fn run(mut self) {
        if let Err(e) = self.arm_wake() {
            tracing::error!("download ring: {e}");
            return;
        }
        let mut cqes: Vec<(u64, i32)> = Vec::with_capacity(256);
        loop {
            match self.ring.uring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(e) => {
                    // Ops may still point at buffers: leak rather than free.
                    tracing::error!("download ring failed: {e}");
                    std::mem::forget(self);
                    return;
                }
            }
            cqes.clear();
            cqes.extend(self.ring.uring.completion().map(|c| (c.user_data(), c.result())));
            for &(data, res) in &cqes {
                self.ring.inflight = self.ring.inflight.saturating_sub(1);
                self.dispatch(data, res);
            }
            if let Some(Ok(light)) = LIGHT.get() {
                light.flush();
            }
        }
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let e = opcode::Read::new(
            types::Fd(self.wake.as_raw_fd()),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(Op::Wake.data(0, 0));
        // SAFETY: `wake_buf` and the eventfd live as long as the driver,
        // which never ends while ops are in flight (it leaks on failure).
        unsafe { self.ring.push(&[e]) }
    }

    fn arm_tick(&mut self) {
        if self.tick_armed {
            return;
        }
        let e = opcode::Timeout::new(&*self.tick).build().user_data(Op::Tick.data(0, 0));
        // SAFETY: the timespec is boxed in the driver and never changed.
        match unsafe { self.ring.push(&[e]) } {
            Ok(()) => self.tick_armed = true,
            Err(e) => tracing::warn!("download ring: cannot arm the tick: {e}"),
        }
    }

    fn dispatch(&mut self, data: u64, res: i32) {
        let Some((op, gen, slot)) = Op::parse(data) else {
            tracing::error!(data, "download ring: CQE with unknown user_data");
            return;
        };
        match op {
            Op::Wake => {
                if let Err(e) = self.arm_wake() {
                    tracing::error!("download ring: cannot re-arm its wake-up: {e}");
                }
                self.on_commands();
            }
            Op::Tick => {
                self.tick_armed = false;
                self.on_tick();
            }
            Op::Cancel => {}
            Op::Write => self.on_write(slot as usize, res),
            Op::Connect | Op::Recv | Op::Send => {
                let slot = slot as usize;
                let Some(c) = self.conns.get_mut(slot).and_then(|c| c.as_mut()) else { return };
                if c.gen != gen {
                    return;
                }
                c.inflight -= 1;
                if c.closing {
                    if op == Op::Recv {
                        c.recv_armed = false;
                    }
                    self.maybe_free(slot);
                    return;
                }
                match op {
                    Op::Connect => self.on_connect(slot, res),
                    Op::Recv => self.on_recv(slot, res),
                    _ => self.on_send(slot, res),
                }
            }
        }
    }

    fn on_commands(&mut self) {
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                Cmd::Add(id, shared, ctl) => {
                    let dl = Dl {
                        shared,
                        ctl,
                        conns: HashMap::new(),
                        bufs: Vec::new(),
                        made: 0,
                        away: 0,
                        ending: false,
                    };
                    self.dls.insert(id, dl);
                    self.core(id, |c, now| c.tick(now));
                    self.arm_tick();
                }
                Cmd::Peers(id, mut result) => {
                    if let (Ok(list), Some(dl)) = (result.as_mut(), self.dls.get(&id)) {
                        dl.shared.learn_keys(std::mem::take(&mut list.keys));
                    }
                    self.core(id, |c, now| match result {
                        Ok(list) => {
                            if let Some(t) = list.ticket {
                                c.set_ticket(t);
                            }
                            c.add_peers(&list.addrs, now);
                            c.also_listed(list.left_out);
                            c.listed_itself(list.own > 0);
                        }
                        Err(super::PeerError::Unavailable(e)) => c.peers_unavailable(e),
                        Err(super::PeerError::Gone(why)) => c.file_gone(why),
                    });
                }
                Cmd::Hashed { dl, piece, buf, digest } => self.on_hashed(dl, piece, buf, digest),
                Cmd::Wake => {}
            }
        }
        self.check_stops();
    }

    fn on_tick(&mut self) {
        let ids: Vec<u64> = self.dls.keys().copied().collect();
        for id in ids {
            self.core(id, |c, now| c.tick(now));
            self.feed_starved(id);
        }
        self.check_stops();
        let now = Instant::now();
        let expired: Vec<usize> = self
            .parked
            .values()
            .flatten()
            .copied()
            .filter(|&s| {
                self.conns[s]
                    .as_ref()
                    .and_then(|c| c.parked)
                    .is_some_and(|t| now.saturating_duration_since(t) >= PARK_FOR)
            })
            .collect();
        for slot in expired {
            self.close(slot);
        }
        if !self.dls.is_empty() || !self.parked.is_empty() {
            self.arm_tick();
        }
    }

    /// Downloads stopped by their user (or failed) start letting go.
    fn check_stops(&mut self) {
        let stopped: Vec<u64> = self
            .dls
            .iter()
            .filter(|(_, d)| d.shared.stopping() && !d.ending)
            .map(|(id, _)| *id)
            .collect();
        for id in stopped {
            self.end(id);
        }
    }

    /// Runs `f` on a download's core, then carries out its actions.
    fn core<R>(&mut self, id: u64, f: impl FnOnce(&mut DownloadCore, Instant) -> R) -> Option<R> {
        let (r, actions) = self.step(id, f)?;
        self.apply_all(id, actions);
        Some(r)
    }

    fn apply_all(&mut self, id: u64, actions: Vec<Action>) {
        for a in actions {
            self.apply(id, a);
        }
    }

    /// Runs `f` on download `id`'s core and takes the actions it led to,
    /// for the caller to apply.
    fn step<R>(
        &self,
        id: u64,
        f: impl FnOnce(&mut DownloadCore, Instant) -> R,
    ) -> Option<(R, Vec<Action>)> {
        let dl = self.dls.get(&id)?;
        let mut d = lock(&dl.shared.driven);
        let r = f(&mut d.core, Instant::now());
        let actions: Vec<Action> = std::iter::from_fn(|| d.core.poll_action()).collect();
        dl.shared.active.store(d.core.stats().active_peers, std::sync::atomic::Ordering::Release);
        Some((r, actions))
    }

    fn apply(&mut self, id: u64, action: Action) {
        let Some(dl) = self.dls.get_mut(&id) else { return };
        match action {
            Action::Send { peer, bytes } => {
                if let Some(&slot) = dl.conns.get(&peer) {
                    if self.conns[slot].as_ref().is_some_and(|c| c.dl == id && c.next.is_some()) {
                        // The next file's handshake went out behind this
                        // one's last requests: whatever this one says now
                        // would reach the server in the next file's session.
                        return self.leave_to_next(slot, "the link went on to the next file");
                    }
                    if let Some(c) = self.conns[slot].as_mut() {
                        c.tx.extend_from_slice(&bytes);
                    }
                    self.start_send(slot);
                }
            }
            Action::Close { peer, .. } => {
                if let Some(slot) = dl.conns.remove(&peer) {
                    self.close(slot);
                }
            }
            Action::Release { peer } => {
                if let Some(slot) = dl.conns.remove(&peer) {
                    let (current, next, clean) = match self.conns[slot].as_ref() {
                        Some(c) => (c.dl == id, c.next.is_some(), c.done_with_current()),
                        None => (false, false, false),
                    };
                    if current && next && !clean {
                        // It completed from other peers before this link
                        // answered it, or with a copy of a piece half
                        // received here: what comes next on the link is
                        // still its, and would pass for the next
                        // download's answer or piece. Both let go.
                        return self.close(slot);
                    }
                    if current && next {
                        return self.hand_to_next(slot);
                    }
                    if !current {
                        // Done before its handshake was answered on a link
                        // it shares: the link cannot carry that session.
                        return self.close(slot);
                    }
                    if dl.shared.park_links {
                        self.park(slot);
                    } else {
                        self.close(slot);
                    }
                }
            }
            Action::Connect { peer, addr } => self.connect(id, peer, addr),
            Action::WantPeers => {
                dl.ctl.send(Ctl::WantPeers);
            }
            Action::SyncState => {
                dl.ctl.send(Ctl::Sync);
            }
            Action::FirstPiece => {
                dl.ctl.send(Ctl::FirstPiece);
            }
            Action::Complete => {
                dl.ctl.send(Ctl::Complete);
                self.end(id);
            }
            Action::Failed(reason) => {
                dl.ctl.send(Ctl::Failed(reason));
                self.end(id);
            }
        }
    }

    /// Closes every connection of a download; it is let go of once nothing
    /// of it is in flight.
    fn end(&mut self, id: u64) {
        let Some(dl) = self.dls.get_mut(&id) else { return };
        dl.ending = true;
        let slots: Vec<(PeerId, usize)> = dl.conns.drain().collect();
        for (peer, slot) in slots {
            self.close(slot);
            // The core may still count it (a user's stop, not its own close).
            if let Some(dl) = self.dls.get(&id) {
                lock(&dl.shared.driven).core.closed(peer, "stopped");
            }
        }
        self.maybe_release(id);
    }

    fn maybe_release(&mut self, id: u64) {
        let Some(dl) = self.dls.get(&id) else { return };
        if dl.ending && dl.conns.is_empty() && dl.away == 0 {
            let busy = self
                .conns
                .iter()
                .flatten()
                .any(|c| c.dl == id || c.next.is_some_and(|(n, _)| n == id));
            if !busy {
                let dl = self.dls.remove(&id).expect("present above");
                dl.ctl.send(Ctl::Released);
                self.spare.keep(dl.bufs);
            }
        }
    }

    /// Keeps a connection open for another download if it can carry one:
    /// open, its handshakes answered, no piece half received; else closes it.
    fn park(&mut self, slot: usize) {
        let Some(c) = self.conns[slot].as_mut() else { return };
        let ready = c.link.as_ref().is_none_or(|l| l.is_ready());
        if !(c.open && !c.closing && c.answered && ready && c.body.is_none() && !c.starved) {
            return self.close(slot);
        }
        c.dl = 0;
        c.peer = 0;
        c.stale = true;
        c.parked = Some(Instant::now());
        self.parked.entry(c.to).or_default().push(slot);
        // Frames of the file before are read and dropped meanwhile.
        self.parse(slot);
        self.arm_recv(slot);
        self.arm_tick();
    }

    /// A parked connection to `addr` that download `id` can take over: the
    /// same keys on our side and, when the download knows the server's
    /// key, the one the link authenticated.
    fn take_parked(&mut self, id: u64, addr: &SocketAddr) -> Option<usize> {
        let shared = &self.dls.get(&id)?.shared;
        let list = self.parked.get_mut(addr)?;
        let conns = &self.conns;
        let i = list.iter().position(|&s| {
            conns[s].as_ref().is_some_and(|c| {
                let (local, remote) = match &c.link {
                    Some(l) => (Some(l.local_key()), l.remote_key()),
                    None => (None, None),
                };
                !c.closing && shared.may_take(addr, local, remote)
            })
        })?;
        let slot = list.swap_remove(i);
        if list.is_empty() {
            self.parked.remove(addr);
        }
        Some(slot)
    }

    /// Forgets a parked connection (it closes or is taken over).
    fn unpark(&mut self, slot: usize) {
        let Some(c) = self.conns[slot].as_mut() else { return };
        if c.parked.take().is_none() {
            return;
        }
        if let Some(list) = self.parked.get_mut(&c.to) {
            list.retain(|&s| s != slot);
            if list.is_empty() {
                self.parked.remove(&c.to);
            }
        }
    }

    /// A connection to `addr` busy with another download that asks it for
    /// nothing more, on which download `id` can send its handshake and
    /// requests now: the server answered a pipelining version's handshake
    /// on it before, nothing is queued behind the current download yet,
    /// and the keys are the ones `id` may use (as for a parked link).
    fn take_pipelined(&self, id: u64, addr: &SocketAddr) -> Option<usize> {
        let shared = &self.dls.get(&id)?.shared;
        self.conns.iter().position(|c| {
            let Some(c) = c.as_ref() else { return false };
            let ready = c.link.as_ref().is_none_or(|l| l.is_ready());
            let (local, remote) = match &c.link {
                Some(l) => (Some(l.local_key()), l.remote_key()),
                None => (None, None),
            };
            c.to == *addr
                && c.open
                && !c.closing
                && c.pipelines
                && c.next.is_none()
                && c.dl != 0
                && c.dl != id
                && ready
                && shared.may_take(addr, local, remote)
                && self
                    .dls
                    .get(&c.dl)
                    .is_some_and(|d| lock(&d.shared.driven).core.asks_nothing_more(c.peer))
        })
    }

    /// The current download let go of the link (complete, its answer in,
    /// no piece half received): the next one, whose handshake went out
    /// behind it, takes it over. What arrives until the answer to that
    /// handshake is the file before's.
    fn hand_to_next(&mut self, slot: usize) {
        self.switch_to_next(slot);
        self.parse(slot);
    }

    fn switch_to_next(&mut self, slot: usize) {
        let Some(c) = self.conns[slot].as_mut() else { return };
        let Some((id, peer)) = c.next.take() else { return };
        c.dl = id;
        c.peer = peer;
        c.answered = false;
        c.stale = true;
        c.reported = Instant::now();
        self.core(id, |core, now| core.link_free(peer, now));
    }

    /// The current download wants to say more on a link that went on to
    /// the next file: it has to do without the link (what it asked is
    /// asked again elsewhere), which the next one takes over. Before the
    /// link answered it, or with a piece of it half received, the link
    /// closes (both download again): what comes next is still its.
    fn leave_to_next(&mut self, slot: usize, why: &str) {
        let Some(c) = self.conns[slot].as_ref() else { return };
        if !c.done_with_current() {
            return self.fail_conn(slot, why);
        }
        self.pass_on(slot, why);
    }

    /// The link's current download is done with it (`why`): the next one,
    /// whose handshake went out behind it, has it from now on.
    fn pass_on(&mut self, slot: usize, why: &str) {
        let Some(c) = self.conns[slot].as_ref() else { return };
        let (id, peer) = (c.dl, c.peer);
        if let Some(dl) = self.dls.get_mut(&id) {
            dl.conns.remove(&peer);
        }
        self.switch_to_next(slot);
        self.core(id, |core, _| core.closed(peer, why));
        self.maybe_release(id);
    }

    fn connect(&mut self, id: u64, peer: PeerId, addr: SocketAddr) {
        if let Some(slot) = self.take_parked(id, &addr) {
            let c = self.conns[slot].as_mut().expect("parked connections are live");
            c.parked = None;
            c.dl = id;
            c.peer = peer;
            c.answered = false;
            c.reported = Instant::now();
            if let Some(dl) = self.dls.get_mut(&id) {
                dl.conns.insert(peer, slot);
            }
            LINKS_REUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.core(id, |core, now| core.connected(peer, now));
            return self.start_send(slot);
        }
        if let Some(slot) = self.take_pipelined(id, &addr) {
            // Behind the current download's last requests: the server
            // answers them, then this handshake.
            let c = self.conns[slot].as_mut().expect("a live connection");
            c.next = Some((id, peer));
            if let Some(dl) = self.dls.get_mut(&id) {
                dl.conns.insert(peer, slot);
            }
            LINKS_REUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.core(id, |core, now| core.connected_behind(peer, now));
            return self.start_send(slot);
        }
        LINKS_OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (storage, len) = sockaddr(&addr);
        let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            self.core(id, |c, _| c.closed(peer, &format!("socket: {e}")));
            return;
        }
        // SAFETY: a fresh descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads `one` for the length given.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let gen = self.next_gen;
        self.next_gen = (self.next_gen + 1) & 0xff_ffff;
        let expect = self.dls.get(&id).and_then(|d| d.shared.expected_key(&addr));
        let conn = Box::new(Conn {
            dl: id,
            peer,
            gen,
            fd,
            to: addr,
            answered: false,
            stale: false,
            next: None,
            pipelines: false,
            parked: None,
            addr: Box::new((storage, len)),
            open: false,
            rx: vec![0; RX_STAGE],
            rx_len: 0,
            body: None,
            recv_armed: false,
            starved: false,
            tx: Vec::new(),
            sending: Vec::new(),
            sent: 0,
            inflight: 0,
            closing: false,
            link: None,
            expect,
            crx: Vec::new(),
            crx_len: 0,
            wire: Vec::new(),
            opened: Vec::new(),
            reported: Instant::now(),
        });
        let slot = place(&mut self.conns, &mut self.free, conn);
        if let Some(dl) = self.dls.get_mut(&id) {
            dl.conns.insert(peer, slot);
        }
        let c = self.conns[slot].as_mut().expect("just placed");
        let e = opcode::Connect::new(
            types::Fd(c.fd.as_raw_fd()),
            (&c.addr.0 as *const libc::sockaddr_storage).cast(),
            c.addr.1,
        )
        .build()
        .user_data(Op::Connect.data(gen, slot as u32));
        // SAFETY: the address is boxed in the connection, which is freed
        // only when its ops are all reaped.
        match unsafe { self.ring.push(&[e]) } {
            Ok(()) => c.inflight += 1,
            Err(e) => {
                let why = format!("connect: {e}");
                self.fail_conn(slot, &why);
            }
        }
    }

    fn on_connect(&mut self, slot: usize, res: i32) {
        if res < 0 {
            let e = io::Error::from_raw_os_error(-res);
            return self.fail_conn(slot, &e.to_string());
        }
        let security = {
            let c = self.conns[slot].as_ref().expect("live slot");
            self.dls.get(&c.dl).map(|d| d.shared.security.clone())
        };
        let c = self.conns[slot].as_mut().expect("live slot");
        c.open = true;
        if let Some(sec) = security.filter(|s| !s.plaintext) {
            match Link::initiator(&sec.keypair, PEER_PROLOGUE, c.expect, &mut c.wire) {
                Ok(l) => c.link = Some(Box::new(l)),
                Err(e) => return self.fail_conn(slot, &format!("secure link: {e}")),
            }
            c.crx = vec![0; RECORD_HEADER + MAX_MESSAGE];
            // The core learns of the connection once the handshake has
            // ended (`on_records`): its first requests then leave when it
            // thinks they do, and its round-trip samples stay true.
            self.start_send(slot);
            return self.arm_recv(slot);
        }
        let (id, peer) = (c.dl, c.peer);
        self.core(id, |core, now| core.connected(peer, now));
        self.start_send(slot);
        self.arm_recv(slot);
    }

    /// The connection failed on its own: the core learns it, then it closes.
    fn fail_conn(&mut self, slot: usize, why: &str) {
        let Some(c) = self.conns[slot].as_ref() else { return };
        let (id, peer) = (c.dl, c.peer);
        if let Some(dl) = self.dls.get_mut(&id) {
            dl.conns.remove(&peer);
        }
        self.close(slot);
        self.core(id, |core, _| core.closed(peer, why));
        self.maybe_release(id);
    }

    fn close(&mut self, slot: usize) {
        self.unpark(slot);
        let Some(c) = self.conns[slot].as_mut() else { return };
        if c.closing {
            return;
        }
        c.closing = true;
        // Downloads still on the link (the caller let go of its own): both
        // when one was pipelined behind another.
        let on_it = [Some((c.dl, c.peer)), c.next.take()];
        // A reset, not a FIN, once connected: to a FIN the server answers
        // what it was asked, to nobody (`link::abort`). Either ends a
        // pending receive and send.
        if !c.open || !crate::link::abort(c.fd.as_raw_fd()) {
            // SAFETY: shutdown(2) on a descriptor the connection owns.
            unsafe { libc::shutdown(c.fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
        if !c.open && c.inflight > 0 {
            // A connect in flight is not ended by a shutdown.
            let target = Op::Connect.data(c.gen, slot as u32);
            let e = opcode::AsyncCancel::new(target).build().user_data(Op::Cancel.data(0, 0));
            // SAFETY: an AsyncCancel carries no pointer.
            if let Err(e) = unsafe { self.ring.push(&[e]) } {
                tracing::warn!("download ring: cannot cancel a connect: {e}");
            }
        }
        self.maybe_free(slot);
        for (id, peer) in on_it.into_iter().flatten() {
            let held = self.dls.get_mut(&id).is_some_and(|d| {
                d.conns.get(&peer) == Some(&slot) && d.conns.remove(&peer).is_some()
            });
            if held {
                self.core(id, |core, _| core.closed(peer, "the link closed"));
                self.maybe_release(id);
            }
        }
    }

    fn maybe_free(&mut self, slot: usize) {
        let Some(c) = self.conns[slot].as_ref() else { return };
        if !c.closing || c.inflight > 0 {
            return;
        }
        let c = self.conns[slot].take().expect("present above");
        self.free.push(slot);
        let id = c.dl;
        if let Some(dl) = self.dls.get_mut(&id) {
            if let Some(b) = c.body {
                dl.bufs.push(b.buf);
            }
        }
        self.feed_starved(id);
        self.maybe_release(id);
    }

    fn arm_recv(&mut self, slot: usize) {
        let Some(c) = self.conns[slot].as_mut() else { return };
        if c.recv_armed || c.closing || c.starved {
            return;
        }
        let secure = c.link.is_some();
        let (ptr, len) = match c.body.as_mut() {
            _ if secure => {
                // Records, opened once whole.
                let rest = &mut c.crx[c.crx_len..];
                (rest.as_mut_ptr(), rest.len())
            }
            Some(b) => {
                let rest = &mut b.buf.as_mut_slice()[b.got..];
                (rest.as_mut_ptr(), rest.len())
            }
            None => {
                if c.rx_len == c.rx.len() {
                    // A control frame larger than the staging buffer.
                    let want = c.rx.len() * 2;
                    c.rx.resize(want.min(MAX_FRAME as usize), 0);
                }
                let rest = &mut c.rx[c.rx_len..];
                (rest.as_mut_ptr(), rest.len())
            }
        };
        let e = opcode::Recv::new(types::Fd(c.fd.as_raw_fd()), ptr, len as u32)
            .build()
            .user_data(Op::Recv.data(c.gen, slot as u32));
        // SAFETY: the buffer is the connection's staging vector or record
        // buffer (neither resized while a receive is armed) or its body's
        // buffer (dropped only when the connection is freed, after every CQE).
        match unsafe { self.ring.push(&[e]) } {
            Ok(()) => {
                c.recv_armed = true;
                c.inflight += 1;
            }
            Err(e) => self.fail_conn(slot, &format!("recv: {e}")),
        }
    }

    fn on_recv(&mut self, slot: usize, res: i32) {
        let c = self.conns[slot].as_mut().expect("live slot");
        c.recv_armed = false;
        if res <= 0 {
            let why = if res == 0 {
                "connection closed".to_owned()
            } else {
                io::Error::from_raw_os_error(-res).to_string()
            };
            return self.fail_conn(slot, &why);
        }
        let n = res as usize;
        // Part of a frame, perhaps: a slow peer is not a stalled one.
        let now = Instant::now();
        if now.saturating_duration_since(c.reported) >= PROGRESS_EVERY {
            c.reported = now;
            let (id, peer) = (c.dl, c.peer);
            self.core(id, |core, now| core.on_bytes(peer, now));
        }
        let Some(c) = self.conns[slot].as_mut() else { return };
        if c.link.is_some() {
            return self.on_records(slot, n);
        }
        if let Some(b) = c.body.as_mut() {
            b.got += n;
            if b.got == b.buf.as_slice().len() {
                let b = c.body.take().expect("present above");
                self.deliver(slot, b);
            }
        } else {
            c.rx_len += n;
        }
        self.parse(slot);
        self.arm_recv(slot);
    }

    /// `n` bytes of records arrived on an encrypted link: open each whole
    /// one — straight into the piece's buffer when it holds only piece
    /// data (the server seals a piece's header apart), else into a staging
    /// buffer handed on as if it had been received.
    fn on_records(&mut self, slot: usize, n: usize) {
        let gen = self.conns[slot].as_ref().expect("live slot").gen;
        let live =
            |d: &mut Self| d.conns[slot].as_ref().is_some_and(|c| c.gen == gen && !c.closing);
        if let Some(c) = self.conns[slot].as_mut() {
            c.crx_len += n;
        }
        let mut used = 0;
        loop {
            if !live(self) {
                return;
            }
            let c = self.conns[slot].as_mut().expect("live above");
            let Conn { crx, crx_len, body, link, opened, wire, .. } = &mut **c;
            let Some(rec) = record_at(&crx[used..*crx_len]) else { break };
            let rec_len = RECORD_HEADER + rec.len();
            let link = link.as_mut().expect("an encrypted connection");
            // Opened in place in the piece's buffer when the record holds
            // only piece data: its tag lands in what follows (overwritten
            // by the next record) or, for the piece's last record, in the
            // buffer's tail. A record that runs past the piece (a server
            // that does not seal the piece apart) goes through the staging
            // buffer.
            let direct = match body.as_mut() {
                Some(b) if link.is_ready() && rec.len() >= TAG_LEN => {
                    let room = b.buf.as_slice().len() - b.got;
                    let pt = rec.len() - TAG_LEN;
                    let fits = b.got + rec.len() <= b.buf.with_tail_mut().len();
                    (pt <= room && fits).then_some((b, pt))
                }
                _ => None,
            };
            if let Some((b, pt)) = direct {
                let out = &mut b.buf.with_tail_mut()[b.got..b.got + rec.len()];
                if let Err(e) = link.open_into(rec, out) {
                    return self.fail_conn(slot, &format!("secure link: {e}"));
                }
                b.got += pt;
                used += rec_len;
                if b.got == b.buf.as_slice().len() {
                    let b = body.take().expect("present above");
                    self.deliver(slot, b);
                }
                continue;
            }
            let mut plain = std::mem::take(opened);
            let was_ready = link.is_ready();
            if let Err(e) = link.recv(&crx[used..used + rec_len], &mut plain, wire) {
                return self.fail_conn(slot, &format!("secure link: {e}"));
            }
            used += rec_len;
            if !was_ready && link.is_ready() {
                // The handshake ended (its last message is in `wire`): the
                // core's handshake and first requests follow it.
                let (id, peer) = (c.dl, c.peer);
                self.core(id, |core, now| core.connected(peer, now));
            }
            self.start_send(slot);
            self.take_plain(slot, &plain);
            plain.clear();
            if let Some(c) = self.conns[slot].as_mut().filter(|c| c.gen == gen) {
                c.opened = plain;
            }
        }
        if let Some(c) = self.conns[slot].as_mut().filter(|c| c.gen == gen) {
            c.crx.copy_within(used..c.crx_len, 0);
            c.crx_len -= used;
            self.arm_recv(slot);
        }
    }

    /// Plaintext from an encrypted link: the rest of a piece body first,
    /// then frames in the staging buffer.
    fn take_plain(&mut self, slot: usize, mut bytes: &[u8]) {
        let Some(c) = self.conns[slot].as_mut() else { return };
        let gen = c.gen;
        if let Some(b) = c.body.as_mut() {
            let body = b.buf.as_mut_slice();
            let n = (body.len() - b.got).min(bytes.len());
            body[b.got..b.got + n].copy_from_slice(&bytes[..n]);
            b.got += n;
            bytes = &bytes[n..];
            if b.got < body.len() {
                return;
            }
            let b = c.body.take().expect("present above");
            self.deliver(slot, b);
        }
        // The slot may have been freed (and even reused) meanwhile.
        let Some(c) = self.conns[slot].as_mut().filter(|c| c.gen == gen) else { return };
        if c.closing {
            return;
        }
        if c.rx.len() < c.rx_len + bytes.len() {
            c.rx.resize(c.rx_len + bytes.len(), 0);
        }
        c.rx[c.rx_len..c.rx_len + bytes.len()].copy_from_slice(bytes);
        c.rx_len += bytes.len();
        self.parse(slot);
    }

    /// Handles every whole frame in the staging buffer, and starts the
    /// body of a piece whose header is there.
    fn parse(&mut self, slot: usize) {
        loop {
            let Some(c) = self.conns[slot].as_mut() else { return };
            if c.closing || c.body.is_some() || c.rx_len < HEADER_LEN {
                return;
            }
            let head: [u8; HEADER_LEN] = c.rx[..HEADER_LEN].try_into().expect("header length");
            let (len, k) = wire::parse_header(&head);
            if let Err(e) = wire::check_len(len, MAX_FRAME) {
                return self.fail_conn(slot, &format!("protocol: {e}"));
            }
            let len = len as usize;
            if k == kind::PIECE && !c.stale {
                if len < PIECE_HEAD {
                    return self.fail_conn(slot, "protocol: short piece message");
                }
                if c.rx_len < PIECE_HEAD {
                    return;
                }
                let word = |i: usize| u32::from_be_bytes(c.rx[i..i + 4].try_into().expect("4"));
                let (piece, offset) = (word(HEADER_LEN), word(HEADER_LEN + 4));
                let data_len = len - PIECE_HEAD;
                let id = c.dl;
                let spare = &mut self.spare;
                let Some(mut buf) = self.dls.get_mut(&id).and_then(|d| d.take_buf(data_len, spare))
                else {
                    // No buffer free: stop receiving until one comes back.
                    c.starved = true;
                    return;
                };
                let c = self.conns[slot].as_mut().expect("live slot");
                c.starved = false;
                let have = (c.rx_len - PIECE_HEAD).min(data_len);
                buf.as_mut_slice()[..have].copy_from_slice(&c.rx[PIECE_HEAD..PIECE_HEAD + have]);
                c.rx.copy_within(PIECE_HEAD + have..c.rx_len, 0);
                c.rx_len -= PIECE_HEAD + have;
                let body = Body { piece, offset, buf, got: have };
                if have == data_len {
                    self.deliver(slot, body);
                } else {
                    c.body = Some(body);
                    return;
                }
            } else {
                if c.rx_len < len {
                    if len > c.rx.len() {
                        c.rx.resize(len, 0);
                    }
                    return;
                }
                let gen = c.gen;
                let answer = k == kind::BITFIELD || k == kind::ERROR;
                // An answer after the current download's own: the next
                // one's, whose handshake went out behind it.
                let handoff = answer && c.answered && !c.stale && c.next.is_some();
                // A parked connection, or one taken over whose new
                // handshake is not answered yet: the frame is of the file
                // before.
                let drop = c.stale && !(answer && c.dl != 0);
                let frame = if drop { Vec::new() } else { c.rx[HEADER_LEN..len].to_vec() };
                c.rx.copy_within(len..c.rx_len, 0);
                c.rx_len -= len;
                if c.rx.len() > RX_STAGE && c.rx_len <= RX_STAGE {
                    c.rx.truncate(RX_STAGE);
                    c.rx.shrink_to_fit();
                }
                if drop {
                    continue;
                }
                if handoff {
                    // Every request of the download before was answered
                    // first: it is done with the link.
                    self.pass_on(slot, "the link went on to the next file");
                }
                let Some(c) = self.conns[slot].as_mut().filter(|c| c.gen == gen) else {
                    return;
                };
                if c.closing {
                    return;
                }
                let (id, peer) = (c.dl, c.peer);
                if answer {
                    c.stale = false;
                    c.answered = true;
                }
                let bitfield = k == kind::BITFIELD;
                let (version, actions) = self
                    .step(id, |core, now| {
                        let v = if bitfield { core.version_to(peer) } else { None };
                        core.on_frame(peer, k, &frame, now);
                        v
                    })
                    .unwrap_or_default();
                if bitfield {
                    // The server admitted this handshake's version: from
                    // the pipelining one on, it answers every request
                    // before the next handshake. Set before the actions
                    // run: one may hand the link on and parse the next
                    // download's answer.
                    if let Some(c) = self.conns[slot].as_mut() {
                        c.pipelines = version.is_some_and(|v| v >= PIPELINE_VERSION);
                    }
                }
                self.apply_all(id, actions);
            }
        }
    }

    /// A whole piece arrived on `slot`.
    fn deliver(&mut self, slot: usize, body: Body) {
        let c = self.conns[slot].as_ref().expect("live slot");
        let (id, peer) = (c.dl, c.peer);
        let len = body.buf.as_slice().len();
        let fate =
            self.core(id, |core, now| core.on_piece(peer, body.piece, body.offset, len, now));
        let Some(dl) = self.dls.get_mut(&id) else { return };
        if fate != Some(PieceFate::Verify) {
            dl.bufs.push(body.buf);
            return;
        }
        dl.away += 1;
        let piece = body.piece;
        let buf = body.buf;
        dl.shared.pool.spawn(move || {
            let digest = sha1_of(buf.as_slice());
            if let Ok(ring) = ring() {
                ring.send(Cmd::Hashed { dl: id, piece, buf, digest });
            }
        });
    }

    fn on_hashed(&mut self, id: u64, piece: u32, buf: AlignedBuf, digest: Sha1Digest) {
        let Some(dl) = self.dls.get_mut(&id) else { return };
        dl.away -= 1;
        // A bad digest closes and bans the peer: `core` carries that out.
        let write = !dl.ending && self.core(id, |c, _| c.piece_hashed(piece, digest)) == Some(true);
        if !write {
            if let Some(dl) = self.dls.get_mut(&id) {
                dl.bufs.push(buf);
            }
            self.feed_starved(id);
            self.maybe_release(id);
            return;
        }
        let Some(dl) = self.dls.get_mut(&id) else { return };
        let g = dl.shared.geometry;
        let offset = g.range(g.piece(u64::from(piece)).expect("verified piece")).start;
        dl.away += 1;
        let w = Box::new(Write { dl: id, piece, buf, offset, done: 0, direct: false });
        let slot = place(&mut self.writes, &mut self.free_writes, w);
        self.submit_write(slot);
    }

    fn submit_write(&mut self, slot: usize) {
        let w = self.writes[slot].as_mut().expect("live write");
        let Some(dl) = self.dls.get(&w.dl) else { return };
        let data = &w.buf.as_slice()[w.done..];
        let at = w.offset + w.done as u64;
        let (fd, direct, len): (RawFd, bool, usize) = dl.shared.part.write_target(at, data);
        w.direct = direct;
        let e = opcode::Write::new(types::Fd(fd), data.as_ptr(), len as u32)
            .offset(at)
            .build()
            .user_data(Op::Write.data(0, slot as u32));
        // SAFETY: the buffer is boxed in the write slot, freed only after
        // this CQE; the part file lives in the download's shared state,
        // which the ring holds until every write of it is reaped.
        if let Err(e) = unsafe { self.ring.push(&[e]) } {
            self.finish_write(slot, Err(format!("write: {e}")));
        }
    }

    fn on_write(&mut self, slot: usize, res: i32) {
        let Some(w) = self.writes.get_mut(slot).and_then(|w| w.as_mut()) else { return };
        if res == -libc::EINVAL && w.direct {
            if let Some(dl) = self.dls.get(&w.dl) {
                dl.shared.part.refuse_direct();
            }
            return self.submit_write(slot);
        }
        if res <= 0 {
            // Named as the threads' driver names it (`PartFile::write_piece`).
            let at = match self.dls.get(&w.dl) {
                Some(d) => format!("write {}", d.shared.part.part_path().display()),
                None => "write".into(),
            };
            let why = if res < 0 {
                io::Error::from_raw_os_error(-res).to_string()
            } else {
                "no progress".into()
            };
            return self.finish_write(slot, Err(format!("{at}: {why}")));
        }
        w.done += res as usize;
        if w.done < w.buf.as_slice().len() {
            return self.submit_write(slot);
        }
        self.finish_write(slot, Ok(()));
    }

    fn finish_write(&mut self, slot: usize, result: Result<(), String>) {
        let w = self.writes[slot].take().expect("live write");
        self.free_writes.push(slot);
        let Write { dl: id, piece, buf, .. } = *w;
        let Some(dl) = self.dls.get_mut(&id) else { return };
        dl.away -= 1;
        dl.bufs.push(buf);
        let shared = Arc::clone(&dl.shared);
        // Recorded at once (a killed process loses no verified piece).
        let result = result.and_then(|()| shared.part.record(piece).map_err(|e| e.to_string()));
        let ok = result.is_ok();
        // The sample is taken before the core's actions are applied: the
        // last piece's completes the download, and its figures are read as
        // soon as it is complete.
        self.core(id, |c, now| {
            if let Some(l) = c.piece_written(piece, result, now) {
                shared.latency.record(l);
            }
        });
        if ok {
            shared.served.add_piece(piece);
        }
        self.feed_starved(id);
        self.maybe_release(id);
    }

    /// Connections of a download that wait for a buffer get one if free.
    fn feed_starved(&mut self, id: u64) {
        let Some(dl) = self.dls.get(&id) else { return };
        let starved: Vec<usize> = dl
            .conns
            .values()
            .copied()
            .filter(|&s| self.conns[s].as_ref().is_some_and(|c| c.starved))
            .collect();
        for slot in starved {
            if let Some(c) = self.conns[slot].as_mut() {
                c.starved = false;
            }
            self.parse(slot);
            self.arm_recv(slot);
        }
    }

    fn start_send(&mut self, slot: usize) {
        let Some(c) = self.conns[slot].as_mut() else { return };
        if c.closing || !c.open || !c.sending.is_empty() {
            return;
        }
        if let Some(link) = c.link.as_mut() {
            // Sealed in order as it leaves (kept by the link until the
            // handshake has ended).
            if !c.tx.is_empty() {
                if let Err(e) = link.send(&c.tx, &mut c.wire) {
                    return self.fail_conn(slot, &format!("secure link: {e}"));
                }
                c.tx.clear();
            }
            if c.wire.is_empty() {
                return;
            }
            std::mem::swap(&mut c.sending, &mut c.wire);
        } else {
            if c.tx.is_empty() {
                return;
            }
            std::mem::swap(&mut c.sending, &mut c.tx);
        }
        c.sent = 0;
        self.push_send(slot);
    }

    fn push_send(&mut self, slot: usize) {
        let c = self.conns[slot].as_mut().expect("live slot");
        let rest = &c.sending[c.sent..];
        let e = opcode::Send::new(types::Fd(c.fd.as_raw_fd()), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(Op::Send.data(c.gen, slot as u32));
        // SAFETY: `sending` is not touched while its send is in flight (new
        // frames go to `tx`); the connection outlives its ops.
        match unsafe { self.ring.push(&[e]) } {
            Ok(()) => c.inflight += 1,
            Err(e) => self.fail_conn(slot, &format!("send: {e}")),
        }
    }

    fn on_send(&mut self, slot: usize, res: i32) {
        if res < 0 {
            let e = io::Error::from_raw_os_error(-res);
            return self.fail_conn(slot, &e.to_string());
        }
        let c = self.conns[slot].as_mut().expect("live slot");
        c.sent += res as usize;
        if c.sent < c.sending.len() {
            return self.push_send(slot);
        }
        c.sending.clear();
        self.start_send(slot);
    }
}

/// Puts `v` in a free slot of `slots` (or a new one); returns its index.
fn place<T>(slots: &mut Vec<Option<T>>, free: &mut Vec<usize>, v: T) -> usize {
    match free.pop() {
        Some(s) => {
            slots[s] = Some(v);
            s
        }
        None => {
            slots.push(Some(v));
            slots.len() - 1
        }
    }
}

/// A socket address in the form `connect(2)` takes.
fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for any
            // sockaddr; the write is of exactly a sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for a sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spare_buffer_is_the_one_that_fits_best() {
        let sized = |n: usize| AlignedBuf::new(n);
        let mut spare = Spares::default();
        spare.keep(vec![sized(200 << 10), sized(8 << 10), sized(64 << 10)]);
        assert_eq!(spare.bytes, 272 << 10);
        // The smallest that holds it, not the last one.
        assert_eq!(spare.take(40 << 10).room(), 64 << 10);
        assert_eq!((spare.bufs.len(), spare.bytes), (2, 208 << 10));
        // None holds it: the roomiest, grown past the need.
        assert_eq!(spare.take(300 << 10).room(), 320 << 10);
        assert_eq!(spare.take(4 << 10).room(), 8 << 10);
        // None left: a new one.
        assert_eq!(spare.bytes, 0);
        assert_eq!(spare.take(4 << 10).room(), 64 << 10);
        // No more room kept than SPARE_BYTES.
        spare.keep((0..100).map(|_| sized(512 << 10)).collect());
        assert_eq!(spare.bufs.len(), SPARE_BYTES / (512 << 10));
    }
}
