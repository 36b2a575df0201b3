//! The threads driver of a download: carries out what the sans-IO
//! [`DownloadCore`] decides, over blocking sockets.
//!
//! Threads of one download:
//! - the **controller** ticks the core (timeouts, window top-ups, when to
//!   ask for peers and to make the `.part` record durable), asks the
//!   [`PeerSource`] for peers, starts a peer thread per peer the core wants
//!   to connect to, measures the rate and finishes (or fails) the download;
//! - one **peer thread** per connection: sends what the core queued for its
//!   peer and reads frames, piece data straight into a pooled buffer. When
//!   there are at least as many peers as cores, it reads [`HASH_CHUNK`] at a
//!   time and hashes each chunk as it lands (hot in cache); with fewer peers
//!   the hashing is left to the workers, so that one fast peer still keeps
//!   every core busy;
//! - **workers** (the shared [`HashPool`]) hash a piece if its peer thread
//!   did not, and — once the core has compared the digest — write it at its
//!   offset (`O_DIRECT`: no copy into the page cache, see
//!   [`PartFile::write_piece`]), record it in the `.part` state, and tell
//!   the core and the [`ServedFile`] that re-shares it (connected
//!   downloaders get a `have`).
//!
//! Memory is flat: piece data only lives in [`MAX_BUFFERS`] pooled buffers of
//! one piece each, whatever the file's size or the requests in flight; a
//! buffer returns to the pool when dropped, whatever path drops it.
//!
//! All protocol state is in the core, behind one mutex (`Shared::driven`),
//! never held across socket or file I/O.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use sha1::{Digest, Sha1};

pub use crate::download::STALL_TIMEOUT;
use crate::download::{Action, DownloadCore, PieceFate, Timeouts, CONNECT_TIMEOUT, PROGRESS_EVERY};
use crate::hash::{sha1_of, HashPool};
use crate::link::{PeerSecurity, PeerStream};
use crate::meta::{Bitfield, FileMeta, Geometry, Sha1Digest};
use crate::metrics::Latency;
use crate::peer::{self, kind, MAX_FRAME};
use crate::picker::PeerId;
use crate::secure::PublicKey;
use crate::serve::Backend;
use crate::serve::ServedFile;
use crate::store::{AlignedBuf, PartFile};
use crate::wire::{self, HEADER_LEN};

mod ring;
mod workers;

/// Piece buffers per download: the bound on its piece data in memory.
pub const MAX_BUFFERS: usize = 24;
/// How often peer threads wake from a blocking read.
const TICK: Duration = Duration::from_millis(50);
/// A peer thread's read timeout while nothing is asked of its peer: a
/// completed download's threads see their release soon enough for the
/// next download to take their links over.
const IDLE_TICK: Duration = Duration::from_millis(2);
/// How long a connection whose download completed stays open for another
/// download of the process to the same node (the peer protocol's "another
/// file on the same link") before it closes.
pub const PARK_FOR: Duration = Duration::from_secs(10);

/// Connections a download took over from a completed one, since the
/// process started (for tests and figures).
pub static LINKS_REUSED: AtomicU64 = AtomicU64::new(0);
/// Connections downloads opened to peers, since the process started.
pub static LINKS_OPENED: AtomicU64 = AtomicU64::new(0);
/// How often the controller ticks the core when nothing wakes it.
const CONTROL_TICK: Duration = Duration::from_millis(100);

/// Peers that share the file, and a fresh ticket to show them.
#[derive(Debug, Clone, Default)]
pub struct PeerList {
    /// Their piece-server addresses.
    pub addrs: Vec<SocketAddr>,
    /// A newer ticket (tickets expire; the tracker hands out fresh ones).
    pub ticket: Option<Vec<u8>>,
    /// The key each listed piece server must prove on its encrypted link
    /// (the tracker's peer list carries them); a server listed without one
    /// may prove any key.
    pub keys: HashMap<SocketAddr, PublicKey>,
    /// Other nodes the tracker listed but left out of `addrs` (no key
    /// known yet, an address this node cannot connect to): somebody shares
    /// the file even when `addrs` is empty.
    pub left_out: usize,
    /// Listed addresses that are this node's own (left out: a download
    /// never asks itself), for the message when nobody else is listed.
    pub own: usize,
}

/// Why a [`PeerSource`] has no peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// Not now (the tracker unreachable, …): asked again later; the
    /// download fails only when no peer served it for a long while.
    Unavailable(String),
    /// Never: the file is gone (no longer in its group, access lost); the
    /// download fails at once, keeping what it verified for a resume.
    Gone(String),
}

impl From<String> for PeerError {
    fn from(e: String) -> Self {
        PeerError::Unavailable(e)
    }
}

/// Where a download finds peers: the tracker, in the client.
pub trait PeerSource: Send {
    /// The current peers that share the file.
    fn peers(&mut self) -> Result<PeerList, PeerError>;
}

impl<F, E> PeerSource for F
where
    F: FnMut() -> Result<PeerList, E> + Send,
    E: Into<PeerError>,
{
    fn peers(&mut self) -> Result<PeerList, PeerError> {
        self().map_err(Into::into)
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
    /// Most peers connected at once ([`crate::download::MAX_PEERS`] by
    /// default).
    pub max_peers: usize,
    /// The driver: io_uring (one ring thread carries every peer of every
    /// download) or a thread per peer. A ring that cannot start falls back
    /// to threads, with a warning.
    pub io: Backend,
    /// The node's key and whether its links are plaintext (both drivers);
    /// by default a random key, the same for every spec of the process.
    pub security: PeerSecurity,
    /// When complete, park its links for another download of the process
    /// ([`PARK_FOR`]) instead of closing them: for a bulk fetch, whose
    /// next files come from the same nodes. Off by default: a parked link
    /// holds one of the server's connections, and a lone download's
    /// would hold it for nothing.
    pub park_links: bool,
    /// When complete, leave the fsync and the move into place to this
    /// settler, which does them for many files at once (a bulk fetch);
    /// by default each download does its own ([`PartFile::finish`]).
    pub settle: Option<Arc<crate::store::Settler>>,
    /// Peers known already (the tracker's answer that gave the file's
    /// metadata): the download connects to them at once, and asks its
    /// [`PeerSource`] only when it next wants more. Without, its first
    /// want goes to the source (for a ring download: a hand-off to its
    /// control thread and back, per file of a bulk fetch).
    pub first_peers: Option<PeerList>,
}

impl FetchSpec {
    /// A spec with the default stall timeout.
    pub fn new(
        meta: FileMeta,
        user: String,
        ticket: Vec<u8>,
        own_addr: Option<SocketAddr>,
    ) -> Self {
        Self {
            meta,
            user,
            ticket,
            own_addr,
            stall_timeout: STALL_TIMEOUT,
            max_peers: crate::download::MAX_PEERS,
            io: Backend::Threads,
            // One random key for every spec that is not given the node's:
            // a key pair per download cost an X25519 base-point multiply
            // on the caller's thread for a key then replaced.
            security: {
                static DEFAULT: std::sync::OnceLock<PeerSecurity> = std::sync::OnceLock::new();
                DEFAULT.get_or_init(PeerSecurity::ephemeral).clone()
            },
            park_links: false,
            settle: None,
            first_peers: None,
        }
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
    controller: Mutex<Option<workers::Done>>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Download({})", self.shared.meta.name)
    }
}

/// How a download ended, as the core said.
enum End {
    Complete,
    Failed(String),
}

/// The core and the actions it queued, sorted by who carries them out.
struct Driven {
    core: DownloadCore,
    /// Bytes each peer thread is to send.
    out: HashMap<PeerId, Vec<u8>>,
    /// Peers the core closed (their threads end), with why.
    closing: HashMap<PeerId, String>,
    /// Peers the core released: their threads park the link if they can
    /// (see [`PARK_FOR`]), and end.
    released: std::collections::HashSet<PeerId>,
    /// For the controller: peers to connect to, and what else to do.
    connect: Vec<(PeerId, SocketAddr)>,
    want_peers: bool,
    sync: bool,
    first: bool,
    end: Option<End>,
}

impl Driven {
    /// Sorts the core's actions; true when the controller has work.
    fn route(&mut self) -> bool {
        let mut wake = false;
        while let Some(a) = self.core.poll_action() {
            match a {
                Action::Send { peer, bytes } => {
                    self.out.entry(peer).or_default().extend_from_slice(&bytes)
                }
                Action::Close { peer, reason } => {
                    self.out.remove(&peer);
                    self.closing.insert(peer, reason);
                }
                Action::Release { peer } => {
                    self.out.remove(&peer);
                    self.released.insert(peer);
                }
                Action::Connect { peer, addr } => {
                    self.connect.push((peer, addr));
                    wake = true;
                }
                Action::WantPeers => (self.want_peers, wake) = (true, true),
                Action::SyncState => (self.sync, wake) = (true, true),
                Action::FirstPiece => (self.first, wake) = (true, true),
                Action::Complete => (self.end, wake) = (Some(End::Complete), true),
                Action::Failed(r) => (self.end, wake) = (Some(End::Failed(r)), true),
            }
        }
        wake
    }

    fn controller_has_work(&self) -> bool {
        !self.connect.is_empty() || self.want_peers || self.sync || self.first || self.end.is_some()
    }
}

struct Shared {
    meta: FileMeta,
    geometry: Geometry,
    part: PartFile,
    served: Arc<ServedFile>,
    driven: Mutex<Driven>,
    /// Wakes the controller.
    wake: Condvar,
    pool: Arc<HashPool>,
    /// Cores on this machine: how many peers hash what they receive.
    cores: usize,
    buffers: Arc<BufferPool>,
    /// Mirrors of the core's counters, read without its lock.
    active: AtomicUsize,
    rate_bits: AtomicU64,
    stop: AtomicBool,
    status: Mutex<Status>,
    /// When it completed or failed.
    ended: std::sync::OnceLock<Instant>,
    latency: Latency,
    events: Box<dyn Fn(FetchEvent) + Send + Sync>,
    /// Driven by the download ring (else by threads).
    uring: std::sync::atomic::AtomicBool,
    security: PeerSecurity,
    /// The key each listed server must prove (from the latest peer list).
    keys: Mutex<HashMap<SocketAddr, PublicKey>>,
    /// [`FetchSpec::park_links`].
    park_links: bool,
    /// [`FetchSpec::settle`].
    settle: Option<Arc<crate::store::Settler>>,
}

impl Download {
    /// Starts downloading into `part` (opened by [`PartFile::open`], with
    /// `have` already verified) and re-sharing through `served`.
    pub fn start(
        spec: FetchSpec,
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
            ^ u64::from(process_id());
        let timeouts = Timeouts {
            stall: spec.stall_timeout,
            max_peers: spec.max_peers,
            ..Timeouts::default()
        };
        let now = Instant::now();
        let mut core = DownloadCore::new(
            spec.meta,
            spec.user,
            spec.ticket,
            spec.own_addr,
            &have,
            timeouts,
            seed,
            now,
        );
        if spec.security.plaintext {
            core.plaintext_links();
        }
        let mut keys = HashMap::new();
        if let Some(first) = spec.first_peers {
            if let Some(t) = first.ticket {
                core.set_ticket(t);
            }
            core.given_peers(&first.addrs, now);
            core.also_listed(first.left_out);
            core.listed_itself(first.own > 0);
            keys = first.keys;
        }
        let driven = Driven {
            core,
            out: HashMap::new(),
            closing: HashMap::new(),
            released: Default::default(),
            connect: Vec::new(),
            want_peers: false,
            sync: false,
            first: false,
            end: None,
        };
        let shared = Arc::new(Shared {
            meta,
            geometry,
            part,
            served,
            driven: Mutex::new(driven),
            wake: Condvar::new(),
            pool,
            cores: cores(),
            buffers: Arc::new(BufferPool::new(MAX_BUFFERS)),
            active: AtomicUsize::new(0),
            rate_bits: AtomicU64::new(0f64.to_bits()),
            stop: AtomicBool::new(false),
            status: Mutex::new(Status::Running),
            ended: std::sync::OnceLock::new(),
            latency: Latency::new(),
            events,
            uring: AtomicBool::new(false),
            security: spec.security,
            keys: Mutex::new(keys),
            park_links: spec.park_links,
            settle: spec.settle,
        });
        let reported = have.count_ones() > 0;
        let source = match spec.io {
            Backend::Uring => {
                shared.uring.store(true, Ordering::Release);
                match ring::start(&shared, source, reported) {
                    Ok(control) => {
                        return Arc::new(Self { shared, controller: Mutex::new(Some(control)) })
                    }
                    Err((e, source)) => {
                        tracing::warn!("download ring unavailable ({e}); using threads");
                        shared.uring.store(false, Ordering::Release);
                        source
                    }
                }
            }
            Backend::Threads => source,
        };
        let controller = {
            let shared = Arc::clone(&shared);
            workers::spawn("fetch-ctl", move || controller(&shared, source, reported))
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
        let stats = lock(&s.driven).core.stats();
        Progress {
            total: s.meta.len,
            verified: stats.verified,
            peers: stats.active_peers + stats.pending_peers,
            rate: f64::from_bits(s.rate_bits.load(Ordering::Relaxed)),
            status: lock(&s.status).clone(),
        }
    }

    /// The bytes a resume takes from its part file once it failed or was
    /// stopped: what is verified, or none when the part file was removed
    /// (nothing was verified when it ended; a piece verified in the last
    /// instant is not kept then).
    pub fn kept(&self) -> u64 {
        if self.shared.part.discarded() {
            0
        } else {
            self.progress().verified
        }
    }

    /// Whether it runs, completed or failed: [`progress`](Self::progress)'s
    /// status alone, without the core's lock (which the driver holds while
    /// it works).
    pub fn status(&self) -> Status {
        lock(&self.shared.status).clone()
    }

    /// When it completed (its file in place, or handed to the settler) or
    /// failed; `None` while it runs or once stopped. Its time taken, to
    /// the microsecond, whatever its follower's polling period.
    pub fn ended_at(&self) -> Option<Instant> {
        self.shared.ended.get().copied()
    }

    /// The addresses it could not connect to the last time it tried
    /// ([`DownloadCore::unreached`](crate::download::DownloadCore::unreached)).
    pub fn unreached(&self) -> Vec<SocketAddr> {
        lock(&self.shared.driven).core.unreached().collect()
    }

    /// Bytes each peer contributed (verified pieces only).
    pub fn contributions(&self) -> HashMap<SocketAddr, u64> {
        lock(&self.shared.driven).core.contributions().clone()
    }

    /// Piece latency, request sent → piece verified.
    pub fn latency(&self) -> &Latency {
        &self.shared.latency
    }

    /// Stops the download, keeping `.part` and its bitfield for a resume;
    /// returns once it has stopped.
    pub fn stop(&self) {
        self.stop_soon();
        self.wait();
    }

    /// Tells the download to stop, and returns at once: [`Download::wait`]
    /// for it to have stopped. Many downloads stop together when each is
    /// told first and waited for after (a thread-driven download's peer
    /// threads see the stop within a read timeout, 50 ms: a bulk get that
    /// stopped its downloads one after another took seconds to end).
    pub fn stop_soon(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_all();
        if self.shared.uring.load(Ordering::Acquire) {
            if let Ok(r) = ring::ring() {
                r.send(ring::Cmd::Wake);
            }
        }
    }

    /// Which driver carries it.
    pub fn driver(&self) -> Backend {
        if self.shared.uring.load(Ordering::Acquire) {
            Backend::Uring
        } else {
            Backend::Threads
        }
    }

    /// Waits until the download completes, fails or is stopped.
    pub fn wait(&self) {
        let done = lock(&self.controller).take();
        if let Some(d) = done {
            d.wait();
        }
    }
}

/// The cores this process may use, looked up once (it reads cgroup files:
/// a download of a small file would pay for it each time).
/// This process's id, asked of the kernel once (a `getpid` per download
/// otherwise).
fn process_id() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| thread::available_parallelism().map_or(2, |n| n.get()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Keeps the keys of a fresh peer list (a server's key does not change
    /// between lists; a later list wins).
    fn learn_keys(&self, keys: HashMap<SocketAddr, PublicKey>) {
        lock(&self.keys).extend(keys);
    }

    /// The key the server at `addr` must prove, if its listing gave one.
    fn expected_key(&self, addr: &SocketAddr) -> Option<PublicKey> {
        lock(&self.keys).get(addr).copied()
    }

    /// This download's key on its links (`None`: plaintext).
    fn link_key(&self) -> Option<PublicKey> {
        (!self.security.plaintext).then(|| self.security.keypair.public())
    }

    /// Whether a parked link to `addr`, opened with our key `local` to a
    /// server that proved `remote`, may carry this download: the same key
    /// on our side and, when the download knows the server's key, that one.
    fn may_take(
        &self,
        addr: &SocketAddr,
        local: Option<PublicKey>,
        remote: Option<PublicKey>,
    ) -> bool {
        local == self.link_key() && self.expected_key(addr).is_none_or(|k| remote == Some(k))
    }

    /// Whether no piece is verified: a resume would have nothing to take
    /// from the part file, which goes when the download fails or stops.
    /// (Asked only when the core is free: kept if not.)
    fn verified_nothing(&self) -> bool {
        self.driven.try_lock().is_ok_and(|d| d.core.stats().verified == 0)
    }

    /// Stopped by the user: what is verified stays for the next start (the
    /// part file, unless nothing is).
    fn keep_for_resume(&self) {
        if self.verified_nothing() {
            self.part.discard();
        } else if let Err(e) = self.part.sync_state() {
            self.fail(e.to_string());
        }
        self.part.release();
    }

    fn fail(&self, reason: String) {
        let mut st = lock(&self.status);
        if *st == Status::Running {
            // Logged for the record only: every caller tells its user
            // itself (the shell's show_downloads, get's error or its
            // `failed` line), and a warning here said it twice.
            tracing::info!(file = %self.meta.name, "download failed: {reason}");
            *st = Status::Failed(reason.clone());
            let _ = self.ended.set(Instant::now());
            drop(st);
            if self.verified_nothing() {
                self.part.discard();
            }
            self.part.release();
            self.stop.store(true, Ordering::Release);
            self.wake.notify_all();
            if self.uring.load(Ordering::Acquire) {
                if let Ok(r) = ring::ring() {
                    r.send(ring::Cmd::Wake);
                }
            }
            (self.events)(FetchEvent::Failed(reason));
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Runs `f` on the core, then sorts what it queued.
    fn with_core<R>(&self, f: impl FnOnce(&mut DownloadCore) -> R) -> R {
        let mut d = lock(&self.driven);
        let r = f(&mut d.core);
        let wake = d.route();
        self.active.store(d.core.stats().active_peers, Ordering::Release);
        drop(d);
        if wake {
            self.wake.notify_all();
        }
        r
    }
}

/// Verified bytes per second over the last two seconds.
#[derive(Default)]
struct RateMeter {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl RateMeter {
    fn sample(&mut self, shared: &Shared) {
        let now = Instant::now();
        let verified = lock(&shared.driven).core.stats().verified;
        self.samples.push_back((now, verified));
        while self.samples.len() > 2
            && now.duration_since(self.samples[0].0) > Duration::from_secs(2)
        {
            self.samples.pop_front();
        }
        if let (Some(a), Some(b)) = (self.samples.front(), self.samples.back()) {
            let dt = b.0.duration_since(a.0).as_secs_f64();
            let rate = if dt > 0.0 { b.1.saturating_sub(a.1) as f64 / dt } else { 0.0 };
            shared.rate_bits.store(rate.to_bits(), Ordering::Relaxed);
        }
    }
}

/// What the controller takes from the core in one round.
struct Round {
    connect: Vec<(PeerId, SocketAddr)>,
    want_peers: bool,
    sync: bool,
    first: bool,
    end: Option<End>,
}

fn controller(shared: &Arc<Shared>, mut source: Box<dyn PeerSource>, mut reported: bool) {
    let mut threads: HashMap<PeerId, thread::JoinHandle<()>> = HashMap::new();
    let mut rate = RateMeter::default();
    loop {
        let round = {
            let mut d = lock(&shared.driven);
            d.core.tick(Instant::now());
            d.route();
            Round {
                connect: std::mem::take(&mut d.connect),
                want_peers: std::mem::take(&mut d.want_peers),
                sync: std::mem::take(&mut d.sync),
                first: std::mem::take(&mut d.first),
                end: d.end.take(),
            }
        };
        if round.first && !std::mem::replace(&mut reported, true) {
            (shared.events)(FetchEvent::FirstPiece);
        }
        match round.end {
            Some(End::Complete) => {
                finish(shared, reported);
                break;
            }
            Some(End::Failed(reason)) => {
                shared.fail(reason);
                break;
            }
            None => {}
        }
        if shared.stopping() {
            break;
        }
        spawn_peers(shared, round.connect, &mut threads);
        if round.sync {
            if let Err(e) = shared.part.sync_state() {
                shared.fail(e.to_string());
                break;
            }
        }
        if round.want_peers {
            match source.peers() {
                Ok(list) => {
                    let connect = {
                        let mut d = lock(&shared.driven);
                        if let Some(t) = list.ticket {
                            d.core.set_ticket(t);
                        }
                        shared.learn_keys(list.keys);
                        d.core.add_peers(&list.addrs, Instant::now());
                        d.core.also_listed(list.left_out);
                        d.core.listed_itself(list.own > 0);
                        d.route();
                        std::mem::take(&mut d.connect)
                    };
                    spawn_peers(shared, connect, &mut threads);
                }
                Err(PeerError::Unavailable(e)) => shared.with_core(|c| c.peers_unavailable(e)),
                Err(PeerError::Gone(why)) => shared.with_core(|c| c.file_gone(why)),
            }
        }
        threads.retain(|_, h| !h.is_finished());
        rate.sample(shared);
        let d = lock(&shared.driven);
        if !d.controller_has_work() && !shared.stopping() {
            let _ = shared.wake.wait_timeout(d, CONTROL_TICK);
        }
    }
    shared.stop.store(true, Ordering::Release);
    for (_, h) in threads {
        let _ = h.join();
    }
    if *lock(&shared.status) == Status::Running {
        shared.keep_for_resume();
    }
    shared.rate_bits.store(0f64.to_bits(), Ordering::Relaxed);
}

fn spawn_peers(
    shared: &Arc<Shared>,
    connect: Vec<(PeerId, SocketAddr)>,
    threads: &mut HashMap<PeerId, thread::JoinHandle<()>>,
) {
    for (id, addr) in connect {
        let sh = Arc::clone(shared);
        match thread::Builder::new()
            .name("fetch-peer".into())
            .spawn(move || peer_thread(&sh, id, addr))
        {
            Ok(h) => {
                threads.insert(id, h);
            }
            Err(e) => shared.with_core(|c| c.closed(id, &format!("no thread: {e}"))),
        }
    }
}

fn finish(shared: &Shared, reported: bool) {
    let finished = match &shared.settle {
        Some(settler) => {
            shared.part.finish_later(settler);
            Ok(())
        }
        None => shared.part.finish(),
    };
    match finished {
        Ok(()) => {
            // Registered before it shows complete: a node that sees it
            // complete and leaves finds the registration handed over, to
            // withdraw.
            if !reported {
                (shared.events)(FetchEvent::FirstPiece);
            }
            let _ = shared.ended.set(Instant::now());
            *lock(&shared.status) = Status::Complete;
            let mut peers: Vec<_> =
                lock(&shared.driven).core.contributions().iter().map(|(a, b)| (*a, *b)).collect();
            peers.sort();
            (shared.events)(FetchEvent::Complete(peers));
        }
        Err(e) => shared.fail(e.to_string()),
    }
}

/// Why a peer's connection ended.
#[derive(Debug, thiserror::Error)]
enum PeerEnd {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    /// The core closed it (it already knows).
    #[error("{0}")]
    Closed(String),
    #[error("stopped")]
    Stopped,
}

fn peer_thread(shared: &Arc<Shared>, id: PeerId, addr: SocketAddr) {
    let result = run_peer(shared, id, addr);
    {
        let mut d = lock(&shared.driven);
        d.out.remove(&id);
        d.closing.remove(&id);
        d.released.remove(&id);
    }
    match result {
        Ok(()) | Err(PeerEnd::Stopped) => shared.with_core(|c| c.closed(id, "stopped")),
        Err(PeerEnd::Closed(why)) => tracing::debug!(%addr, "peer closed: {why}"),
        Err(e) => {
            let why = e.to_string();
            tracing::debug!(%addr, "peer dropped: {why}");
            shared.with_core(|c| c.closed(id, &why));
        }
    }
}

/// A connection whose download completed, open for another download of
/// the process to the same node for [`PARK_FOR`] (the threads driver's;
/// the io_uring driver keeps its own).
struct ParkedLink {
    stream: PeerStream,
    /// Our key on it (`None`: plaintext).
    local: Option<PublicKey>,
    since: Instant,
}

/// Most links parked per node. A peer thread sees its release only at its
/// next read timeout, by when the next download may have connected anew:
/// kept small so that parked links do not crowd a server's connections
/// per address (128 by default).
const PARKED_PER_NODE: usize = 8;

fn parked_links() -> MutexGuard<'static, HashMap<SocketAddr, Vec<ParkedLink>>> {
    static PARKED: std::sync::OnceLock<Mutex<HashMap<SocketAddr, Vec<ParkedLink>>>> =
        std::sync::OnceLock::new();
    let mut all = lock(PARKED.get_or_init(Default::default));
    // Expired links close (dropped) whenever the table is looked at.
    all.retain(|_, list| {
        list.retain(|p| p.since.elapsed() < PARK_FOR);
        !list.is_empty()
    });
    all
}

/// A parked link to `addr` this download can take over: the same key on
/// our side and, when the download knows the server's key, the one the
/// link authenticated.
fn take_parked(shared: &Shared, addr: &SocketAddr) -> Option<PeerStream> {
    let mut all = parked_links();
    let list = all.get_mut(addr)?;
    // Nobody reads a parked link: one its server closed meanwhile goes.
    list.retain(|p| !p.stream.peer_closed());
    let i = list.iter().position(|p| shared.may_take(addr, p.local, p.stream.remote_key()))?;
    let p = list.swap_remove(i);
    if list.is_empty() {
        all.remove(addr);
    }
    Some(p.stream)
}

fn park_link(shared: &Shared, addr: SocketAddr, stream: PeerStream) {
    let mut all = parked_links();
    let list = all.entry(addr).or_default();
    if list.len() < PARKED_PER_NODE {
        list.push(ParkedLink { stream, local: shared.link_key(), since: Instant::now() });
    }
}

fn run_peer(shared: &Arc<Shared>, id: PeerId, addr: SocketAddr) -> Result<(), PeerEnd> {
    // A link another download completed on: frames of its file may still
    // come, until the answer to our handshake (see `crate::peer`).
    let (mut stream, mut stale) = match take_parked(shared, &addr) {
        Some(s) => {
            LINKS_REUSED.fetch_add(1, Ordering::Relaxed);
            (s, true)
        }
        None => {
            LINKS_OPENED.fetch_add(1, Ordering::Relaxed);
            let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
            tcp.set_nodelay(true)?;
            tcp.set_read_timeout(Some(TICK))?;
            let expect = shared.expected_key(&addr);
            let s = PeerStream::connect(tcp, &shared.security, expect, CONNECT_TIMEOUT)
                .map_err(|e| PeerEnd::Protocol(format!("secure handshake: {e}")))?;
            (s, false)
        }
    };
    // The server answered our handshake (a bitfield or an error).
    let mut answered = false;
    shared.with_core(|c| c.connected(id, Instant::now()));
    let mut reader = FrameReader::default();
    let mut read_timeout = TICK;
    // Bytes of a frame read so far, and when the core last heard of them.
    let mut seen = 0;
    let mut reported = Instant::now();
    loop {
        let (out, closing, released) = {
            let mut d = lock(&shared.driven);
            (d.out.remove(&id), d.closing.remove(&id), d.released.remove(&id))
        };
        // Before the stop flag: a completed download stops its peer
        // threads right after releasing them.
        if released {
            if shared.park_links && answered && reader.between_frames() {
                park_link(shared, addr, stream);
            }
            return Err(PeerEnd::Closed("download complete".into()));
        }
        // A link let go of with requests out is reset, so that the server
        // stops answering them (`link::abort`).
        if let Some(why) = closing {
            stream.abort();
            return Err(PeerEnd::Closed(why));
        }
        if shared.stopping() {
            stream.abort();
            return Err(PeerEnd::Stopped);
        }
        if let Some(out) = out {
            stream.send(&out)?;
        }
        let idle = shared.park_links && !lock(&shared.driven).core.awaits(id);
        let want = if idle { IDLE_TICK } else { TICK };
        if want != read_timeout {
            stream.set_read_timeout(want)?;
            read_timeout = want;
        }
        // With a core for every connected peer, each hashes what it
        // receives while the bytes are hot in cache; with fewer peers than
        // cores the workers hash, so the download still uses every core.
        let hash_here = shared.active.load(Ordering::Acquire) >= shared.cores;
        let Some(msg) = reader.poll(&mut stream, &shared.buffers, hash_here)? else {
            // Part of a frame: a slow peer is not a stalled one.
            let got = reader.head_got + reader.body_got;
            if got != seen && reported.elapsed() >= PROGRESS_EVERY {
                reported = Instant::now();
                shared.with_core(|c| c.on_bytes(id, reported));
            }
            seen = got;
            continue;
        };
        match msg {
            Incoming::Piece { .. } if stale => {}
            Incoming::Control(k, _) if stale && k != kind::BITFIELD && k != kind::ERROR => {}
            Incoming::Piece { piece, offset, buf, len, digest } => {
                let submit = shared.with_core(|c| {
                    match c.on_piece(id, piece, offset, len, Instant::now()) {
                        PieceFate::Discard => None,
                        PieceFate::Verify => match digest {
                            // Hashed as it arrived: the core checks it now.
                            Some(d) => c.piece_hashed(piece, d).then_some(None),
                            None => Some(Some(())),
                        },
                    }
                });
                match submit {
                    Some(hash) => submit_write(shared, piece, buf, len, hash.is_some()),
                    None => drop(buf),
                }
            }
            Incoming::Control(k, p) => {
                if k == kind::BITFIELD || k == kind::ERROR {
                    (stale, answered) = (false, true);
                }
                shared.with_core(|c| c.on_frame(id, k, &p, Instant::now()));
            }
        }
    }
}

/// Hashes (unless already done) a piece on a worker and, once the core has
/// checked the digest, writes and records it.
fn submit_write(shared: &Arc<Shared>, piece: u32, buf: Pooled, len: usize, hash: bool) {
    let sh = Arc::clone(shared);
    shared.pool.spawn(move || {
        let data = &buf.as_slice()[..len];
        if hash {
            let digest = sha1_of(data);
            if !sh.with_core(|c| c.piece_hashed(piece, digest)) {
                return;
            }
        }
        let range = sh.geometry.range(sh.geometry.piece(u64::from(piece)).expect("checked piece"));
        // Recorded at once (a killed process loses no verified piece); the
        // core has it made durable every half second.
        let result = sh
            .part
            .write_piece(range.start, data)
            .and_then(|()| sh.part.record(piece))
            .map_err(|e| e.to_string());
        drop(buf);
        let ok = result.is_ok();
        // Recorded before the core's actions are applied (the last piece's
        // completes the download, whose figures are then read).
        sh.with_core(|c| {
            if let Some(l) = c.piece_written(piece, result, Instant::now()) {
                sh.latency.record(l);
            }
        });
        if ok {
            sh.served.add_piece(piece);
        }
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
        s: &mut impl Read,
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

    /// No frame partly read: the next byte on the link starts one.
    fn between_frames(&self) -> bool {
        self.frame.is_none() && self.head_got == 0 && self.piece.is_none()
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
    s: &mut impl Read,
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
