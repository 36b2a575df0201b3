//! The downloader: fetches a file's pieces from many peers at once, verifies
//! each on the hash pool, writes it into the `.part` file and re-shares it.
//!
//! Threads of one download:
//! - the **controller** asks the [`PeerSource`] for peers (at start, then every
//!   few seconds), starts a peer thread per new peer, persists the bitfield,
//!   measures the rate and finishes (or fails) the download;
//! - one **peer thread** per connection: handshake, bitfield, then keeps a
//!   pipeline of whole-piece requests sized to the peer's rate × round trip
//!   ([`PeerFlow`]) and reads
//!   piece data straight into a pooled buffer. When there are at least as
//!   many peers as cores, it reads [`HASH_CHUNK`] at a time and hashes each
//!   chunk as it lands (hot in cache); with fewer peers the hashing is left
//!   to the workers, so that one fast peer still keeps every core busy;
//! - **workers** (the shared [`HashPool`]) verify the piece if its peer
//!   thread did not, write it at its offset (`O_DIRECT`: no copy into the
//!   page cache, see [`PartFile::write_piece`]), record it in the `.part`
//!   state, and mark it: picker, the [`ServedFile`] that re-shares it
//!   (connected downloaders get a `have`).
//!
//! Memory is flat: piece data only lives in [`MAX_BUFFERS`] pooled buffers of
//! one piece each, whatever the file's size; a buffer returns to the pool
//! when dropped, whatever path drops it.
//!
//! A piece that fails its hash is requested again elsewhere and the peer that
//! sent it is banned from this download. A peer that vanishes or stalls costs
//! only its in-flight pieces.
//!
//! Lock order: `Shared::work` before `ServedFile::have`; no lock is held
//! across socket I/O.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use sha1::{Digest, Sha1};

use crate::flow::PeerFlow;
use crate::hash::{sha1_of, HashPool};
use crate::meta::{Bitfield, FileMeta, Geometry, Sha1Digest};
use crate::metrics::Latency;
use crate::peer::{self, kind, ErrorCode, Message, MAX_FRAME};
use crate::picker::{PeerId, Picker};
use crate::serve::ServedFile;
use crate::store::{AlignedBuf, PartFile};
use crate::wire::{self, HEADER_LEN};

/// Piece buffers per download: the bound on its piece data in memory.
pub const MAX_BUFFERS: usize = 24;
/// How long a request may go unanswered before the peer counts as stalled
/// (the default of [`FetchSpec::stall_timeout`]).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to wait for a connection and for the handshake's answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often peer threads wake from a blocking read.
const TICK: Duration = Duration::from_millis(50);
/// How often the controller asks for peers.
const PEER_REFRESH: Duration = Duration::from_secs(2);
/// A download with no reachable peer for this long fails.
const NO_PEER_LIMIT: Duration = Duration::from_secs(60);

/// Peers that share the file, and a fresh ticket to show them.
#[derive(Debug, Clone, Default)]
pub struct PeerList {
    /// Their piece-server addresses.
    pub addrs: Vec<SocketAddr>,
    /// A newer ticket (tickets expire; the tracker hands out fresh ones).
    pub ticket: Option<Vec<u8>>,
}

/// Where a download finds peers: the tracker, in the client.
pub trait PeerSource: Send {
    /// The current peers that share the file.
    fn peers(&mut self) -> Result<PeerList, String>;
}

impl<F: FnMut() -> Result<PeerList, String> + Send> PeerSource for F {
    fn peers(&mut self) -> Result<PeerList, String> {
        self()
    }
}

/// Something a download reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchEvent {
    /// The first piece verified: this node can now share the file.
    FirstPiece,
    /// Every piece verified and the file is at its destination; the bytes
    /// each peer contributed in this run.
    Complete(Vec<(SocketAddr, u64)>),
    /// The download stopped for good; the `.part` file is kept.
    Failed(String),
}

/// A download's state as `show_downloads` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Fetching.
    Running,
    /// Done and verified.
    Complete,
    /// Stopped with this reason.
    Failed(String),
}

/// What to download and as whom.
#[derive(Debug, Clone)]
pub struct FetchSpec {
    /// The file's metadata from the tracker.
    pub meta: FileMeta,
    /// The downloading user (sent in the handshake).
    pub user: String,
    /// The tracker's ticket for this user and file (refreshed through the
    /// [`PeerSource`]).
    pub ticket: Vec<u8>,
    /// This node's own address, never connected to.
    pub own_addr: Option<SocketAddr>,
    /// A request unanswered for this long marks its peer as stalled: the
    /// peer is dropped and its pieces are requested elsewhere.
    pub stall_timeout: Duration,
}

impl FetchSpec {
    /// A spec with the default stall timeout.
    pub fn new(
        meta: FileMeta,
        user: String,
        ticket: Vec<u8>,
        own_addr: Option<SocketAddr>,
    ) -> Self {
        Self { meta, user, ticket, own_addr, stall_timeout: STALL_TIMEOUT }
    }
}

/// A snapshot of a download's progress.
#[derive(Debug, Clone)]
pub struct Progress {
    /// File length.
    pub total: u64,
    /// Bytes verified and written.
    pub verified: u64,
    /// Peers connected now.
    pub peers: usize,
    /// Verified bytes per second over the last few seconds.
    pub rate: f64,
    /// Where it stands.
    pub status: Status,
}

/// A running (or finished) download.
pub struct Download {
    shared: Arc<Shared>,
    controller: Mutex<Option<thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Download({})", self.shared.meta.name)
    }
}

struct Work {
    picker: Picker,
    first_reported: bool,
}

struct Shared {
    meta: FileMeta,
    geometry: Geometry,
    spec: FetchSpec,
    /// The newest ticket, shown to each new peer.
    ticket: Mutex<Vec<u8>>,
    part: PartFile,
    served: Arc<ServedFile>,
    work: Mutex<Work>,
    wake: Condvar,
    pool: Arc<HashPool>,
    /// Cores on this machine: how many peers hash what they receive.
    cores: usize,
    buffers: Arc<BufferPool>,
    verified: AtomicU64,
    connected: AtomicUsize,
    rate_bits: AtomicU64,
    stop: AtomicBool,
    status: Mutex<Status>,
    latency: Latency,
    contributions: Mutex<HashMap<SocketAddr, u64>>,
    banned: Mutex<HashSet<SocketAddr>>,
    cancels: Mutex<HashMap<PeerId, Vec<u32>>>,
    events: Box<dyn Fn(FetchEvent) + Send + Sync>,
}

impl Download {
    /// Starts downloading into `part` (opened by [`PartFile::open`], with
    /// `have` already verified) and re-sharing through `served`.
    pub fn start(
        mut spec: FetchSpec,
        part: PartFile,
        have: Bitfield,
        served: Arc<ServedFile>,
        pool: Arc<HashPool>,
        source: Box<dyn PeerSource>,
        events: Box<dyn Fn(FetchEvent) + Send + Sync>,
    ) -> Arc<Self> {
        let meta = spec.meta.clone();
        let geometry = meta.geometry();
        let seed = u64::from_le_bytes(meta.sha1.0[..8].try_into().unwrap_or([7; 8]))
            ^ std::process::id() as u64;
        let verified =
            geometry.pieces().filter(|p| have.get(p.get())).map(|p| geometry.len_of(p)).sum();
        let work = Work { picker: Picker::new(&have, seed), first_reported: have.count_ones() > 0 };
        let shared = Arc::new(Shared {
            meta,
            geometry,
            // Kept only here, where refreshed tickets replace it.
            ticket: Mutex::new(std::mem::take(&mut spec.ticket)),
            spec,
            part,
            served,
            work: Mutex::new(work),
            wake: Condvar::new(),
            pool,
            cores: thread::available_parallelism().map_or(2, |n| n.get()),
            buffers: Arc::new(BufferPool::new(MAX_BUFFERS)),
            verified: AtomicU64::new(verified),
            connected: AtomicUsize::new(0),
            rate_bits: AtomicU64::new(0f64.to_bits()),
            stop: AtomicBool::new(false),
            status: Mutex::new(Status::Running),
            latency: Latency::new(),
            contributions: Mutex::new(HashMap::new()),
            banned: Mutex::new(HashSet::new()),
            cancels: Mutex::new(HashMap::new()),
            events,
        });
        let controller = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("fetch-ctl".into())
                .spawn(move || controller(&shared, source))
                .expect("spawn download controller")
        };
        Arc::new(Self { shared, controller: Mutex::new(Some(controller)) })
    }

    /// The file's metadata.
    pub fn meta(&self) -> &FileMeta {
        &self.shared.meta
    }

    /// Current progress.
    pub fn progress(&self) -> Progress {
        let s = &self.shared;
        Progress {
            total: s.meta.len,
            verified: s.verified.load(Ordering::Acquire),
            peers: s.connected.load(Ordering::Acquire),
            rate: f64::from_bits(s.rate_bits.load(Ordering::Relaxed)),
            status: lock(&s.status).clone(),
        }
    }

    /// Bytes each peer contributed (verified pieces only).
    pub fn contributions(&self) -> HashMap<SocketAddr, u64> {
        lock(&self.shared.contributions).clone()
    }

    /// Piece latency, request sent → piece verified.
    pub fn latency(&self) -> &Latency {
        &self.shared.latency
    }

    /// Stops the download, keeping `.part` and its bitfield for a resume.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_all();
        self.wait();
    }

    /// Waits until the download completes, fails or is stopped.
    pub fn wait(&self) {
        let handle = lock(&self.controller).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn fail(&self, reason: String) {
        let mut st = lock(&self.status);
        if *st == Status::Running {
            tracing::warn!(file = %self.meta.name, "download failed: {reason}");
            *st = Status::Failed(reason.clone());
            drop(st);
            self.stop.store(true, Ordering::Release);
            self.wake.notify_all();
            (self.events)(FetchEvent::Failed(reason));
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Makes the record of verified pieces durable (fsync), if it changed.
    fn persist(&self) {
        if let Err(e) = self.part.sync_state() {
            self.fail(e.to_string());
        }
    }
}

fn controller(shared: &Arc<Shared>, mut source: Box<dyn PeerSource>) {
    let mut connected: HashMap<SocketAddr, thread::JoinHandle<()>> = HashMap::new();
    let mut next_id: PeerId = 0;
    let mut last_refresh: Option<Instant> = None;
    let mut last_persist = Instant::now();
    let mut last_peer_seen = Instant::now();
    let mut samples: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut last_error = String::new();
    loop {
        if lock(&shared.work).picker.is_complete() {
            finish(shared);
            break;
        }
        if shared.stopping() {
            break;
        }
        connected.retain(|_, h| !h.is_finished());
        let live = shared.connected.load(Ordering::Acquire);
        if live > 0 {
            last_peer_seen = Instant::now();
        }
        let due = last_refresh.is_none_or(|t| t.elapsed() >= PEER_REFRESH)
            || (connected.is_empty()
                && last_refresh.is_some_and(|t| t.elapsed() >= Duration::from_millis(500)));
        if due {
            last_refresh = Some(Instant::now());
            match source.peers() {
                Ok(list) => {
                    if let Some(t) = list.ticket {
                        *lock(&shared.ticket) = t;
                    }
                    for addr in list.addrs {
                        let skip = Some(addr) == shared.spec.own_addr
                            || connected.contains_key(&addr)
                            || lock(&shared.banned).contains(&addr);
                        if skip {
                            continue;
                        }
                        let id = next_id;
                        next_id += 1;
                        let sh = Arc::clone(shared);
                        let spawned = thread::Builder::new()
                            .name("fetch-peer".into())
                            .spawn(move || peer_thread(&sh, id, addr));
                        if let Ok(h) = spawned {
                            connected.insert(addr, h);
                        }
                    }
                }
                Err(e) => last_error = e,
            }
        }
        if connected.is_empty() && last_peer_seen.elapsed() > NO_PEER_LIMIT {
            let why =
                if last_error.is_empty() { String::new() } else { format!(" ({last_error})") };
            shared.fail(format!(
                "no peer could serve the file for {}s{why}",
                NO_PEER_LIMIT.as_secs()
            ));
            break;
        }
        let now = Instant::now();
        samples.push_back((now, shared.verified.load(Ordering::Acquire)));
        while samples.len() > 2 && now.duration_since(samples[0].0) > Duration::from_secs(2) {
            samples.pop_front();
        }
        if let (Some(a), Some(b)) = (samples.front(), samples.back()) {
            let dt = b.0.duration_since(a.0).as_secs_f64();
            let rate = if dt > 0.0 { (b.1 - a.1) as f64 / dt } else { 0.0 };
            shared.rate_bits.store(rate.to_bits(), Ordering::Relaxed);
        }
        if last_persist.elapsed() >= Duration::from_millis(500) {
            last_persist = Instant::now();
            shared.persist();
        }
        let w = lock(&shared.work);
        let _ = shared.wake.wait_timeout(w, Duration::from_millis(100));
    }
    shared.stop.store(true, Ordering::Release);
    shared.wake.notify_all();
    for (_, h) in connected {
        let _ = h.join();
    }
    if *lock(&shared.status) == Status::Running {
        // Stopped by the user: keep what we have for the next start.
        shared.persist();
    }
    shared.rate_bits.store(0f64.to_bits(), Ordering::Relaxed);
}

fn finish(shared: &Shared) {
    match shared.part.finish() {
        Ok(()) => {
            *lock(&shared.status) = Status::Complete;
            if !lock(&shared.work).first_reported {
                (shared.events)(FetchEvent::FirstPiece);
            }
            let mut peers: Vec<_> =
                lock(&shared.contributions).iter().map(|(a, b)| (*a, *b)).collect();
            peers.sort();
            (shared.events)(FetchEvent::Complete(peers));
        }
        Err(e) => shared.fail(e.to_string()),
    }
}

/// Why a peer's connection ended.
#[derive(Debug, thiserror::Error)]
enum PeerEnd {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("peer refused: {0}")]
    Refused(String),
    #[error("stalled")]
    Stalled,
    #[error("sent a piece that failed its hash")]
    Corrupt,
    #[error("stopped")]
    Stopped,
}

fn peer_thread(shared: &Arc<Shared>, id: PeerId, addr: SocketAddr) {
    shared.connected.fetch_add(1, Ordering::AcqRel);
    let mut bits = Bitfield::new(0);
    let result = run_peer(shared, id, addr, &mut bits);
    shared.connected.fetch_sub(1, Ordering::AcqRel);
    lock(&shared.work).picker.remove_peer(id, &bits);
    lock(&shared.cancels).remove(&id);
    shared.wake.notify_all();
    match result {
        Ok(()) | Err(PeerEnd::Stopped) => {}
        Err(e) => tracing::debug!(%addr, "peer dropped: {e}"),
    }
}

fn run_peer(
    shared: &Arc<Shared>,
    id: PeerId,
    addr: SocketAddr,
    bits: &mut Bitfield,
) -> Result<(), PeerEnd> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_nodelay(true)?;
    let mut out = Vec::new();
    let ticket = lock(&shared.ticket).clone();
    let hs = Message::Handshake {
        version: peer::VERSION,
        file_id: shared.meta.sha1,
        user: &shared.spec.user,
        ticket: &ticket,
    };
    peer::encode(&hs, &mut out);
    stream.write_all(&out)?;
    stream.set_read_timeout(Some(TICK))?;
    let mut reader = FrameReader::default();
    let pieces = shared.meta.piece_hashes.len() as u32;
    let started = Instant::now();
    loop {
        if shared.stopping() {
            return Err(PeerEnd::Stopped);
        }
        match reader.poll(&mut stream, &shared.buffers, false)? {
            Some(Incoming::Control(k, p)) => match peer::decode_payload(k, &p) {
                Ok(Message::Bitfield(b)) => {
                    *bits = peer::parse_bitfield(b, pieces)
                        .ok_or_else(|| PeerEnd::Protocol("bad bitfield".into()))?;
                    break;
                }
                Ok(Message::Error { text, .. }) => return Err(PeerEnd::Refused(text.to_owned())),
                Ok(_) => return Err(PeerEnd::Protocol("expected a bitfield".into())),
                Err(e) => return Err(PeerEnd::Protocol(e.to_string())),
            },
            Some(Incoming::Piece { .. }) => {
                return Err(PeerEnd::Protocol("piece before bitfield".into()))
            }
            None if started.elapsed() > CONNECT_TIMEOUT => return Err(PeerEnd::Stalled),
            None => {}
        }
    }
    lock(&shared.work).picker.add_peer(bits);

    // Requests in the order sent: a server answers in order.
    let mut outstanding: VecDeque<(u32, Instant)> = VecDeque::new();
    let mut cancelled: HashSet<u32> = HashSet::new();
    let mut flow = PeerFlow::new(shared.geometry.piece_len(), Instant::now());
    loop {
        if shared.stopping() {
            return Err(PeerEnd::Stopped);
        }
        out.clear();
        let cancels = lock(&shared.cancels).remove(&id).unwrap_or_default();
        for p in cancels {
            if let Some(pos) = outstanding.iter().position(|(q, _)| *q == p) {
                outstanding.remove(pos);
                cancelled.insert(p);
                let len = shared
                    .geometry
                    .len_of(shared.geometry.piece(u64::from(p)).expect("picked piece"))
                    as u32;
                peer::encode(&Message::Cancel { piece: p, offset: 0, len }, &mut out);
            }
        }
        // Requests outstanding follow this peer's rate × round trip
        // (flow::PeerFlow), not a fixed count.
        let piece_len = shared.geometry.piece_len();
        let depth = flow.window(outstanding.len() as u64 * piece_len, Instant::now());
        if outstanding.len() < depth {
            let mut w = lock(&shared.work);
            while outstanding.len() < depth {
                let Some(p) = w.picker.pick(id, bits) else { break };
                let len = shared.geometry.len_of(p) as u32;
                peer::encode(&Message::Request { piece: p.get(), offset: 0, len }, &mut out);
                outstanding.push_back((p.get(), Instant::now()));
            }
        }
        if !out.is_empty() {
            stream.write_all(&out)?;
        }
        if let Some((_, t)) = outstanding.front() {
            if t.elapsed() > shared.spec.stall_timeout {
                return Err(PeerEnd::Stalled);
            }
        }
        // With a core for every connected peer, each hashes what it
        // receives while the bytes are hot in cache; with fewer peers than
        // cores the workers hash, so the download still uses every core.
        let hash_here = shared.connected.load(Ordering::Acquire) >= shared.cores;
        let Some(msg) = reader.poll(&mut stream, &shared.buffers, hash_here)? else { continue };
        match msg {
            Incoming::Piece { piece, offset, buf, len, digest } => {
                let expected =
                    shared.geometry.piece(u64::from(piece)).map(|p| shared.geometry.len_of(p));
                if offset != 0 || expected != Some(len as u64) {
                    return Err(PeerEnd::Protocol(format!(
                        "piece {piece} with bad offset or length"
                    )));
                }
                let sent = match outstanding.iter().position(|(q, _)| *q == piece) {
                    Some(pos) => {
                        outstanding.remove(pos).map(|(_, t)| t).expect("position is valid")
                    }
                    None if cancelled.remove(&piece) => continue,
                    None => return Err(PeerEnd::Protocol(format!("unrequested piece {piece}"))),
                };
                flow.on_arrival(sent, len as u64, Instant::now());
                let wanted = lock(&shared.work).picker.received(piece, id);
                if !wanted {
                    drop(buf);
                } else if digest.is_some_and(|d| d != shared.meta.piece_hashes[piece as usize]) {
                    drop(buf);
                    corrupt(shared, addr, piece);
                } else {
                    let piece = Received { piece, buf, len, sent, verified: digest.is_some() };
                    submit_write(shared, id, addr, piece);
                }
                if lock(&shared.banned).contains(&addr) {
                    return Err(PeerEnd::Corrupt);
                }
            }
            Incoming::Control(k, p) => match peer::decode_payload(k, &p) {
                Ok(Message::Have(i)) if i < pieces => {
                    if bits.set(i) {
                        lock(&shared.work).picker.peer_has(i);
                    }
                }
                Ok(Message::Error { code: ErrorCode::NotAvailable, .. }) => {
                    if let Some((p, _)) = outstanding.pop_front() {
                        lock(&shared.work).picker.unrequest(p, id);
                        if bits.clear(p) {
                            // Keep the picker's availability honest about this peer.
                            lock(&shared.work).picker.peer_lacks(p);
                        }
                    }
                }
                Ok(Message::Error { text, .. }) => return Err(PeerEnd::Refused(text.to_owned())),
                Ok(Message::Have(_)) => return Err(PeerEnd::Protocol("have out of range".into())),
                Ok(_) => return Err(PeerEnd::Protocol(format!("unexpected message type {k}"))),
                Err(e) => return Err(PeerEnd::Protocol(e.to_string())),
            },
        }
    }
}

/// A whole piece as it came off the socket.
struct Received {
    piece: u32,
    buf: Pooled,
    len: usize,
    /// When its request was sent.
    sent: Instant,
    /// Whether its SHA1 was already checked (hashed while receiving).
    verified: bool,
}

/// A piece failed its hash: it is requested again elsewhere and the peer
/// that sent it is banned from this download.
fn corrupt(shared: &Shared, addr: SocketAddr, piece: u32) {
    lock(&shared.work).picker.failed(piece);
    lock(&shared.banned).insert(addr);
    tracing::warn!(%addr, piece, "piece failed its hash: peer banned from this download");
    shared.wake.notify_all();
}

/// Verifies (unless already done) and writes a piece on a worker, then
/// records it.
fn submit_write(shared: &Arc<Shared>, id: PeerId, addr: SocketAddr, got: Received) {
    let sh = Arc::clone(shared);
    shared.pool.spawn(move || {
        let Received { piece, buf, len, sent, verified } = got;
        let data = &buf.as_slice()[..len];
        if !verified && sha1_of(data) != sh.meta.piece_hashes[piece as usize] {
            drop(buf);
            corrupt(&sh, addr, piece);
            return;
        }
        let range = sh.geometry.range(sh.geometry.piece(u64::from(piece)).expect("checked piece"));
        if let Err(e) = sh.part.write_piece(range.start, data) {
            lock(&sh.work).picker.failed(piece);
            drop(buf);
            sh.fail(e.to_string());
            return;
        }
        drop(buf);
        // Recorded at once (a killed process loses no verified piece); the
        // controller makes it durable every half second.
        if let Err(e) = sh.part.record(piece) {
            sh.fail(e.to_string());
        }
        let (losers, first) = {
            let mut w = lock(&sh.work);
            let losers = w.picker.verified(piece);
            let first = !std::mem::replace(&mut w.first_reported, true);
            (losers, first)
        };
        sh.served.add_piece(piece);
        sh.verified.fetch_add(len as u64, Ordering::AcqRel);
        sh.latency.record(sent.elapsed());
        *lock(&sh.contributions).entry(addr).or_insert(0) += len as u64;
        if !losers.is_empty() {
            let mut c = lock(&sh.cancels);
            for l in losers.into_iter().filter(|l| *l != id) {
                c.entry(l).or_default().push(piece);
            }
        }
        if first {
            (sh.events)(FetchEvent::FirstPiece);
        }
        sh.wake.notify_all();
    });
}

/// A bounded pool of piece-sized buffers, aligned for `O_DIRECT` writes.
struct BufferPool {
    tx: Sender<AlignedBuf>,
    rx: Receiver<AlignedBuf>,
    made: AtomicUsize,
    max: usize,
}

impl BufferPool {
    fn new(max: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(max);
        Self { tx, rx, made: AtomicUsize::new(0), max }
    }

    /// A buffer of `len` bytes; waits (one tick) when all are in use. It
    /// goes back to the pool when dropped.
    fn get(self: &Arc<Self>, len: usize) -> Option<Pooled> {
        let mut buf = match self.rx.try_recv() {
            Ok(b) => b,
            Err(_) if self.made.fetch_add(1, Ordering::AcqRel) < self.max => AlignedBuf::default(),
            Err(_) => {
                self.made.fetch_sub(1, Ordering::AcqRel);
                self.rx.recv_timeout(TICK).ok()?
            }
        };
        buf.resize(len);
        Some(Pooled { buf, home: Arc::clone(self) })
    }
}

/// A buffer on loan from a [`BufferPool`]: every path that lets go of it
/// (written, duplicate, corrupt, peer gone mid-piece) returns it.
struct Pooled {
    buf: AlignedBuf,
    home: Arc<BufferPool>,
}

impl std::ops::Deref for Pooled {
    type Target = AlignedBuf;
    fn deref(&self) -> &AlignedBuf {
        &self.buf
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut AlignedBuf {
        &mut self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let _ = self.home.tx.try_send(std::mem::take(&mut self.buf));
    }
}

enum Incoming {
    /// A message other than a piece: its type and payload.
    Control(u32, Vec<u8>),
    /// Piece data in a pooled buffer (`len` bytes valid) and its SHA1 if
    /// it was hashed as it arrived.
    Piece { piece: u32, offset: u32, buf: Pooled, len: usize, digest: Option<Sha1Digest> },
}

/// Bytes of piece data read (and then hashed) at a time: small enough that
/// the SHA1 finds them in L2, large enough that syscalls stay cheap.
pub const HASH_CHUNK: usize = 64 * 1024;

/// Reads frames from a socket with a read timeout, keeping partial state
/// across timeouts; piece data goes straight into a pooled buffer and through
/// the SHA1 as it arrives.
#[derive(Default)]
struct FrameReader {
    head: [u8; HEADER_LEN + 8],
    head_got: usize,
    /// (type, total frame length) once the frame header is read.
    frame: Option<(u32, usize)>,
    body: Vec<u8>,
    body_got: usize,
    /// The pooled buffer piece data is read into.
    piece: Option<Pooled>,
    /// SHA1 of the piece data read so far, when `hashing`.
    hasher: Sha1,
    hashing: bool,
}

impl FrameReader {
    /// One complete message, or `None` if the read timed out first.
    /// `hash` says whether piece data is hashed here as it arrives (the
    /// piece then carries its digest) or left to the worker.
    fn poll(
        &mut self,
        s: &mut TcpStream,
        pool: &Arc<BufferPool>,
        hash: bool,
    ) -> Result<Option<Incoming>, PeerEnd> {
        loop {
            let Some((k, len)) = self.frame else {
                if !read_into(s, &mut self.head[..HEADER_LEN], &mut self.head_got, None)? {
                    return Ok(None);
                }
                let h: [u8; HEADER_LEN] =
                    self.head[..HEADER_LEN].try_into().expect("header length");
                let (len, k) = wire::parse_header(&h);
                wire::check_len(len, MAX_FRAME).map_err(|e| PeerEnd::Protocol(e.to_string()))?;
                self.frame = Some((k, len as usize));
                continue;
            };
            if k == kind::PIECE {
                if len < peer::PIECE_HEADER_LEN {
                    return Err(PeerEnd::Protocol("short piece message".into()));
                }
                if !read_into(
                    s,
                    &mut self.head[..peer::PIECE_HEADER_LEN],
                    &mut self.head_got,
                    None,
                )? {
                    return Ok(None);
                }
                let data_len = len - peer::PIECE_HEADER_LEN;
                if self.piece.is_none() {
                    let Some(buf) = pool.get(data_len) else { return Ok(None) };
                    self.piece = Some(buf);
                    // Decided once per piece: the hasher holds the bytes
                    // read so far.
                    self.hashing = hash;
                }
                let buf = self.piece.as_mut().expect("piece buffer taken above");
                let hasher = self.hashing.then_some(&mut self.hasher);
                if !read_into(s, buf.as_mut_slice(), &mut self.body_got, hasher)? {
                    return Ok(None);
                }
                let digest = self.hashing.then(|| Sha1Digest(self.hasher.finalize_reset().into()));
                let word =
                    |i: usize| u32::from_be_bytes(self.head[i..i + 4].try_into().expect("4 bytes"));
                let (piece, offset) = (word(HEADER_LEN), word(HEADER_LEN + 4));
                let buf = self.piece.take().expect("piece buffer filled above");
                self.reset();
                return Ok(Some(Incoming::Piece { piece, offset, buf, len: data_len, digest }));
            }
            let body_len = len - HEADER_LEN;
            if self.body.len() != body_len {
                self.body = vec![0; body_len];
            }
            if !read_into(s, &mut self.body[..], &mut self.body_got, None)? {
                return Ok(None);
            }
            let body = std::mem::take(&mut self.body);
            self.reset();
            return Ok(Some(Incoming::Control(k, body)));
        }
    }

    fn reset(&mut self) {
        self.head_got = 0;
        self.frame = None;
        self.body_got = 0;
    }
}

/// Fills `buf[*got..]`; true when full, false on a read timeout. With a
/// `hasher`, at most [`HASH_CHUNK`] per read, feeding each chunk to it while
/// it is hot in cache.
fn read_into(
    s: &mut TcpStream,
    buf: &mut [u8],
    got: &mut usize,
    mut hasher: Option<&mut Sha1>,
) -> Result<bool, PeerEnd> {
    let chunk = if hasher.is_some() { HASH_CHUNK } else { usize::MAX };
    while *got < buf.len() {
        let end = buf.len().min(got.saturating_add(chunk));
        match s.read(&mut buf[*got..end]) {
            Ok(0) => return Err(PeerEnd::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => {
                if let Some(h) = hasher.as_deref_mut() {
                    h.update(&buf[*got..*got + n]);
                }
                *got += n;
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DIRECT_ALIGN;

    /// Buffers come back to the pool on every path that drops them, so a
    /// stream of peers that vanish mid-piece or send junk never drains it.
    #[test]
    fn pooled_buffers_return_on_drop() {
        let pool = Arc::new(BufferPool::new(3));
        for _ in 0..20 {
            let held: Vec<Pooled> = (0..3).map(|_| pool.get(1000).expect("a buffer")).collect();
            assert!(pool.get(10).is_none(), "a fourth buffer beyond the bound");
            for b in &held {
                assert_eq!(b.as_slice().len(), 1000);
                assert_eq!(b.as_slice().as_ptr() as usize % DIRECT_ALIGN, 0);
            }
            drop(held);
        }
        assert_eq!(pool.made.load(Ordering::Acquire), 3, "no buffer made beyond the bound");
    }
}
