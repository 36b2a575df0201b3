//! Turning client requests into reads of the [`State`] or [`Op`]s applied to it.
//!
//! [`Tracker::handle`] validates a request (names, addresses, metadata),
//! resolves its session token to a user, does the slow or random work
//! (argon2id, token generation) outside the state lock, and then either reads
//! the state or builds an [`Op`] and applies it. Every op passes through
//! [`Tracker::commit`], the one place the durability layer hooks into.
//!
//! Locks, in the order they may be taken: `snapshots` (one snapshot at a
//! time), `inner` (the state and its log), `live` (session liveness);
//! `acked` alone. None is held across an `.await`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use ringshare_engine::names::{self, NameKind, MAX_FILE_NAME_LEN, MAX_PASSWORD_LEN};
use ringshare_engine::proto::{
    encode_frame, FileLookup, PeerInfo, Refusal, Request, Response, Token, MAX_PAGE, MAX_STOPS,
    MAX_UPLOADS, RESPONSE,
};
use ringshare_engine::ticket;
use tokio::sync::{broadcast, oneshot};

use crate::durable::{DataDir, DataDirError, Opened};
use crate::guard::{HashPool, Limits, LimitsConfig, LoginPermit};
use crate::oplog::{Entry, OpLog};
use crate::replica::{Known, ReceiveError, Replica, ReplicaImage};
use crate::state::{Op, State};

/// Most pending join requests one group may have.
pub const MAX_PENDING_REQUESTS: usize = 1000;
/// Most groups whose `ListFiles` answer is kept encoded.
pub const FILES_CACHE_GROUPS: usize = 1024;

/// About the most bytes one `FileInfos` answer holds (its files' metadata
/// and peers): a quarter of `MAX_FRAME`.
const FILE_INFOS_BYTES: usize = 4 << 20;

/// An answer for the network driver: a message to encode, or a frame
/// already encoded and shared between every client that asked.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Encode and send this.
    Msg(Response),
    /// Send these bytes (a whole RESPONSE frame).
    Frame(Arc<[u8]>),
}

/// Most peers one `FileInfo` answer lists. A swarm's peers are each
/// listed to every downloader that asks, and a member could make the list
/// as long as it liked (a node per login, every one listed as fetching):
/// a downloader connects to `MAX_PEERS` (64) at most and asks again every
/// 2 s, so a list of 200 is plenty, and one past it is cut to a random
/// 200 each time, the nodes sharing the file first.
pub const MAX_LISTED: usize = 200;

/// `peers` (its first `sharers` the nodes sharing the file, then those
/// fetching it) cut to [`MAX_LISTED`]: every sharer while they fit, and a
/// random choice of the rest; a random choice of sharers if they alone
/// are too many. `below(n)` is a random number under `n` (the simulator
/// passes its own, seeded).
pub fn cap_listed<T>(peers: &mut Vec<T>, sharers: usize, mut below: impl FnMut(usize) -> usize) {
    if peers.len() <= MAX_LISTED {
        return;
    }
    let sharers = sharers.min(peers.len());
    let (from, to) = if sharers >= MAX_LISTED {
        peers.truncate(sharers);
        (0, MAX_LISTED)
    } else {
        (sharers, MAX_LISTED)
    };
    // The first places of `from..` drawn at random from all of it.
    for i in from..to {
        let j = i + below(peers.len() - i);
        peers.swap(i, j);
    }
    peers.truncate(MAX_LISTED);
}

/// Encoded `ListFiles` answers per group: (state version, liveness epoch, frame).
type FilesCache = HashMap<String, (u64, u64, Arc<[u8]>)>;

/// How a tracker runs.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// This tracker's number (1-based line of tracker_info.txt).
    pub me: u16,
    /// The other trackers: number and listed address (a sync pull is
    /// served only to a listed tracker, from that tracker's address).
    pub peer_addrs: Vec<(u16, SocketAddr)>,
    /// A session not heard from for this long drops out of peer lists.
    pub peer_ttl: Duration,
    /// Write a snapshot after this many logged entries.
    pub snapshot_every: usize,
    /// How long a download ticket stays valid.
    pub ticket_ttl: Duration,
    /// A client connection that sends nothing for this long is closed.
    pub client_idle: Duration,
    /// Threads computing argon2id (each holds 19 MiB while it works).
    pub hash_workers: usize,
    /// Password checks that may wait for a hashing thread; more are
    /// refused with "tracker busy, try again".
    pub hash_queue: usize,
    /// Limits on failed logins and account creation.
    pub limits: LimitsConfig,
    /// Entries from other trackers stamped further ahead of this clock are
    /// refused (a tracker whose clock jumped ahead would otherwise win
    /// every last-writer-wins conflict for as long as it stays ahead).
    pub max_clock_skew: Duration,
    /// The address this tracker listens on: a connection from its IP comes
    /// from this host, like one from loopback (admin requests).
    pub own_addr: Option<SocketAddr>,
    /// This tracker has run before (its key predates this start). If its
    /// data directory then holds no state, its data was lost: the other
    /// trackers may hold ops it made, so it makes none (and takes no
    /// changes) until each of them has sent it what it holds — new ops
    /// would reuse the lost ones' (origin, seq) and be dropped as
    /// duplicates everywhere else.
    pub has_run_before: bool,
    /// The most one user's shares may hold of the state (names and piece
    /// hashes, [`crate::state::share_cost`] per file and node): a share
    /// past it is refused (`limit reached: …`).
    pub max_share_bytes_per_user: u64,
    /// The most every share together may hold (each file's metadata once).
    pub max_share_bytes: u64,
    /// A session no tracker has heard from for this long ends, and its
    /// node's shares with it ([`crate::expiry`], [`Op::Expire`]).
    pub session_expiry: Duration,
}

/// [`TrackerConfig::session_expiry`] by default: a day.
pub const DEFAULT_SESSION_EXPIRY: Duration = Duration::from_secs(86_400);

/// [`TrackerConfig::max_share_bytes_per_user`] by default: 64 MiB, some
/// 3.3 million pieces (1.6 TiB of files) or 350,000 small files. The
/// tracker holds about twice what it keeps (the state, and each op until
/// every tracker has it), and writes it to its log and snapshots.
pub const DEFAULT_MAX_SHARE_BYTES_PER_USER: u64 = 64 << 20;

/// [`TrackerConfig::max_share_bytes`] by default: 1 GiB.
pub const DEFAULT_MAX_SHARE_BYTES: u64 = 1 << 30;

/// The default number of hashing threads: one per core.
pub fn default_hash_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            me: 1,
            peer_addrs: Vec::new(),
            peer_ttl: Duration::from_secs(30),
            snapshot_every: 10_000,
            ticket_ttl: Duration::from_secs(600),
            client_idle: Duration::from_secs(600),
            hash_workers: default_hash_workers(),
            hash_queue: 32,
            limits: LimitsConfig::default(),
            max_clock_skew: Duration::from_secs(300),
            own_addr: None,
            has_run_before: false,
            max_share_bytes_per_user: DEFAULT_MAX_SHARE_BYTES_PER_USER,
            max_share_bytes: DEFAULT_MAX_SHARE_BYTES,
            session_expiry: DEFAULT_SESSION_EXPIRY,
        }
    }
}

/// What start-up recovered, for the log line.
#[derive(Debug, Clone, Copy)]
pub struct Recovery {
    /// Entries replayed from the op logs.
    pub replayed: usize,
    /// Bytes of torn tail dropped.
    pub torn_bytes: u64,
    /// The data directory held no state though the tracker had run before.
    pub lost: bool,
}

struct Inner {
    replica: Replica,
    log: Option<OpLog>,
    dir: Option<DataDir>,
    since_snapshot: usize,
}

/// A request being answered ([`Tracker::answering`]).
#[derive(Debug)]
pub struct Answering<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// How long a copy of the live sessions is reused ([`Tracker::live_set`]).
const LIVE_REUSE: Duration = Duration::from_millis(100);

/// The live sessions as [`Tracker::live_set`] copied them.
#[derive(Debug)]
struct LiveCopy {
    at: Instant,
    /// The liveness epoch when copied.
    epoch: u64,
    set: HashMap<Token, Instant>,
}

impl std::ops::Deref for LiveCopy {
    type Target = HashMap<Token, Instant>;

    fn deref(&self) -> &Self::Target {
        &self.set
    }
}

/// A tracker: the replicated state, its log, and the request handler.
pub struct Tracker {
    config: TrackerConfig,
    inner: Mutex<Inner>,
    /// Soft state: when each session was last heard from (here or, by gossip,
    /// at another tracker).
    live: Mutex<HashMap<Token, Instant>>,
    /// The live sessions as last pruned and copied ([`Tracker::live_set`]),
    /// reused for [`LIVE_REUSE`] while no session joins. Lock order: this,
    /// then `live`.
    live_copy: Mutex<Option<Arc<LiveCopy>>>,
    /// Soft state: the sessions heard from here, by their own requests, in
    /// the last [`GOSSIP_WINDOW`]: what the `Alive` gossip passes on. Not
    /// what gossip brought: two trackers that passed on each other's
    /// sessions stamped them alive again every second, and a node killed
    /// without logging out stayed listed for good.
    heard_here: Mutex<HashMap<Token, Instant>>,
    /// Soft state: the node key each session's links prove (learnt from its
    /// login or heartbeat connection here, or by gossip): peer lists carry
    /// it. Lock order: `live` or `inner`, then this.
    node_keys: Mutex<HashMap<Token, [u8; 32]>>,
    /// Soft state: which sessions have been silent since when, and whether
    /// this tracker could have heard them ([`crate::expiry`]).
    expiry: Mutex<crate::expiry::Expiry>,
    /// Set (under `inner`'s lock) as [`Tracker::shutdown`] starts: no op is
    /// appended after, so none meets the closed log; clients are sent to
    /// another tracker ([`Refusal::Stopping`]).
    stopping: std::sync::atomic::AtomicBool,
    /// Requests being answered now ([`Tracker::answering`]): a stopping
    /// tracker lets them finish before it exits.
    in_flight: std::sync::atomic::AtomicUsize,
    /// Held from a login's look at its address to its session being live
    /// with its key: two logins at one address at once here are taken one
    /// after the other, so the second sees the first ([`Tracker::address_free`]).
    /// (Two at once at two trackers cannot be told apart: the later one
    /// replaces the other.)
    logins: tokio::sync::Mutex<()>,
    /// Soft state: the sessions fetching each file, listed as its peers
    /// ([`crate::fetchers`]). Lock order: `inner`, then this.
    fetchers: Mutex<crate::fetchers::Fetchers>,
    /// Moves whenever a session joins or leaves the live set (see
    /// [`Tracker::touch_all`]): part of the version of cached answers.
    live_epoch: std::sync::atomic::AtomicU64,
    /// Every new entry (local or received), for the streams to other trackers.
    feed: broadcast::Sender<Entry>,
    /// What each other tracker acknowledged holding.
    acked: Mutex<HashMap<u16, Known>>,
    /// Held while a snapshot is taken and written: one at a time. Lock
    /// order: this, then `inner`.
    snapshots: Mutex<()>,
    /// Attempt limits for logins and account creation.
    limits: Mutex<Limits>,
    /// Where argon2id runs: a fixed number of threads, a bounded queue.
    hashing: HashPool,
    /// `ListFiles` answers, encoded once and shared (see [`Tracker::list_files`]).
    files_cache: Mutex<FilesCache>,
    /// Why the op log failed, once it has: the tracker then stops
    /// (fail-stop) and acknowledges nothing more.
    failed: tokio::sync::watch::Sender<Option<String>>,
    /// This tracker's own entries known to be on disk (see [`Durable`]):
    /// catch-up sends no own entry beyond them.
    durable_own: Arc<Mutex<Durable>>,
    /// Peers to hear from before taking changes (see
    /// [`TrackerConfig::has_run_before`]); empty in normal running.
    waiting_for: Mutex<BTreeSet<u16>>,
    /// Peers not yet reached since start-up (caught up with, or found
    /// unreachable), and until when changes wait for them
    /// ([`Tracker::await_first_contact`]).
    first_contact: (tokio::sync::watch::Sender<BTreeSet<u16>>, std::sync::OnceLock<Instant>),
    /// Whether a change was made here since start-up: one of this
    /// tracker's own ops coming back from a peer after that means two ops
    /// under one number.
    made_own: std::sync::atomic::AtomicBool,
}

/// A session heard from here is passed on in the `Alive` gossip (sent every
/// second) for this long after: a few chances to arrive, and a peer's
/// stamp of it at most this late.
pub const GOSSIP_WINDOW: Duration = Duration::from_secs(3);

/// The most sessions one user holds ([`Tracker::room_for_session`]).
pub const MAX_SESSIONS_PER_USER: usize = 1024;

/// [`Op::Expire`]s committed together ([`Tracker::expire_silent`]).
const EXPIRE_BATCH: usize = 8;

/// How long a tracker's first changes wait for its peers to be reached
/// ([`Tracker::await_first_contact`]): a peer that is down fails its
/// connection at once (or within the pull's 2 s connect timeout).
pub const FIRST_CONTACT: Duration = Duration::from_secs(5);

/// A tracker's own entries on disk, released to the feed in seq order:
/// every one up to `prefix` is on disk and has gone to the feed; those in
/// `ahead` are on disk and wait for a predecessor (group commit wakes its
/// writers in any order). Catch-up offers own entries up to `prefix` only
/// and the feed carries each later one, in order: the prefix moves and the
/// feed is sent to under one lock, so a stream that subscribed before its
/// catch-up misses none. (Released out of order, an entry sent on the feed
/// before a stream subscribed but beyond the prefix its catch-up saw
/// reached that stream never, and the stream held back every later own
/// entry behind it until it reconnected.)
#[derive(Debug, Default)]
struct Durable {
    prefix: u64,
    ahead: BTreeMap<u64, Entry>,
}

impl Durable {
    /// Own entry `e` is on disk.
    fn settle(&mut self, e: Entry, feed: &broadcast::Sender<Entry>) {
        if e.origin_seq > self.prefix {
            self.ahead.insert(e.origin_seq, e);
        }
        self.release(feed);
    }

    /// Every own entry up to `seq` is on disk and on the feed already (it
    /// came back from a peer after this tracker lost its data).
    fn raise_to(&mut self, seq: u64, feed: &broadcast::Sender<Entry>) {
        if seq > self.prefix {
            self.prefix = seq;
            self.ahead.retain(|s, _| *s > seq);
        }
        self.release(feed);
    }

    fn release(&mut self, feed: &broadcast::Sender<Entry>) {
        while let Some(next) = self.ahead.remove(&(self.prefix + 1)) {
            self.prefix += 1;
            let _ = feed.send(next);
        }
    }
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tracker({})", self.config.me)
    }
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracker {
    /// A lone tracker with its state in memory only.
    pub fn new() -> Self {
        Self::with_config(TrackerConfig::default())
    }

    /// [`Tracker::new`] with `config`.
    pub fn with_config(config: TrackerConfig) -> Self {
        let inner =
            Inner { replica: Replica::new(config.me), log: None, dir: None, since_snapshot: 0 };
        let t = Self::build(config, inner);
        t.ensure_ticket_key();
        t
    }

    /// A tracker keeping its state in `data_dir`: recovers it (snapshot and
    /// log replay) and logs every accepted op before answering.
    pub fn open(
        config: TrackerConfig,
        data_dir: &std::path::Path,
    ) -> Result<(Self, Recovery), DataDirError> {
        let Opened { replica, log, dir, replayed, torn_bytes } =
            DataDir::open(data_dir, config.me)?;
        let recovered_own = replica.known().get(&config.me).copied().unwrap_or(0);
        let lost = config.has_run_before && replica.known().is_empty();
        if lost && config.peer_addrs.is_empty() {
            // Alone, it serves an empty world: every login refused, every
            // name free to take. A key put there by hand before a first
            // start looks the same, so it starts; but it says so, loudly.
            tracing::warn!(
                "{}: no state (no snapshot, no op in its logs), but its tracker.key is \
                 there: if this tracker ran before, everything it held (users, groups, \
                 shares) is lost, and it now serves an empty state; stop it and put the \
                 directory back from a copy (no other tracker is listed to take the state \
                 back from)",
                data_dir.display()
            );
        }
        let inner = Inner { replica, log: Some(log), dir: Some(dir), since_snapshot: replayed };
        let t = Self::build(config, inner);
        // What was replayed is on disk.
        t.durable().prefix = recovered_own;
        // Every session restored from disk gets a full TTL to show up again.
        let tokens: Vec<Token> = t.lock().replica.state().tokens().copied().collect();
        t.touch_all(&tokens);
        let peers: BTreeSet<u16> = t.config.peer_addrs.iter().map(|(n, _)| *n).collect();
        if lost && !peers.is_empty() {
            tracing::warn!(
                "no state in the data directory, but this tracker has run before: it takes no \
                 changes until trackers {peers:?} have sent it what they hold"
            );
            *t.waiting_for() = peers;
        } else {
            t.ensure_ticket_key();
        }
        Ok((t, Recovery { replayed, torn_bytes, lost }))
    }

    fn waiting_for(&self) -> MutexGuard<'_, BTreeSet<u16>> {
        self.waiting_for.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes made here wait until each of `peers` has been reached once
    /// (its catch-up received, or its address found unreachable), for
    /// `within` at most. A tracker whose data directory was put back from
    /// an older copy (or whose newest log lost its end) would otherwise
    /// number its next op as one of its own that a peer already holds: the
    /// two trackers would then differ for good. Reached first, the peer
    /// sends those ops back and the next one follows them. A tracker whose
    /// peers are down still serves alone, after their first failed
    /// connection.
    pub fn await_first_contact(&self, peers: BTreeSet<u16>, within: Duration) {
        let _ = self.first_contact.1.set(Instant::now() + within);
        self.first_contact.0.send_replace(peers);
    }

    /// Tracker `peer` was reached (caught up with) or found unreachable:
    /// changes need not wait for it ([`Tracker::await_first_contact`]).
    pub fn contacted(&self, peer: u16) {
        self.first_contact.0.send_if_modified(|waiting| waiting.remove(&peer));
    }

    /// Waits until every peer was reached once since start-up, or the time
    /// [`Tracker::await_first_contact`] gave has passed.
    async fn first_contact_made(&self) {
        if self.first_contact.0.borrow().is_empty() {
            return;
        }
        let Some(until) = self.first_contact.1.get() else { return };
        let mut rx = self.first_contact.0.subscribe();
        let until = tokio::time::Instant::from_std(*until);
        let _ = tokio::time::timeout_at(until, rx.wait_for(BTreeSet::is_empty)).await;
    }

    /// Tracker `peer` has sent this one everything it held when this one
    /// last connected (its catch-up is followed by the first `Alive`).
    /// Once every peer has, a tracker that lost its data takes changes again.
    pub fn heard_from(&self, peer: u16) {
        self.contacted(peer);
        let done = {
            let mut waiting = self.waiting_for();
            waiting.remove(&peer) && waiting.is_empty()
        };
        if done {
            let own = self.known().get(&self.config.me).copied().unwrap_or(0);
            tracing::info!(
                "caught up with every tracker ({own} op(s) of this one's own): taking changes"
            );
            self.ensure_ticket_key();
        }
    }

    /// Refuses requests while this tracker, having lost its data, has not
    /// heard from every peer.
    fn not_waiting(&self) -> Result<(), Refusal> {
        let waiting = self.waiting_for();
        if waiting.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = waiting.iter().map(u16::to_string).collect();
        Err(Refusal::CatchingUp(format!(
            "this tracker lost its data and serves nothing until tracker(s) {} have sent it \
             what they hold; try another tracker",
            list.join(", ")
        )))
    }

    /// Makes the ticket signing key if no tracker has yet. Two trackers that
    /// start fresh at once each make one; the first in stamp order stays.
    fn ensure_ticket_key(&self) {
        let mut inner = self.lock();
        if inner.replica.state().ticket_key().is_some() {
            return;
        }
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        if let Ok(e) = inner.replica.propose(Op::SetTicketKey { secret }, wall_ms()) {
            // Logged like any op; offered to the other trackers once on disk.
            let (durable, feed) = (Arc::clone(&self.durable_own), self.feed.clone());
            let logged = inner.append(&e);
            let settle = move |ok: bool| {
                if ok {
                    lock_durable(&durable).settle(e, &feed);
                }
            };
            match logged {
                None => settle(true),
                Some(rx) => {
                    // Start-up is not in an async context yet everywhere: wait on a thread.
                    let spawned = std::thread::Builder::new()
                        .name("ticket-key".into())
                        .spawn(move || settle(matches!(rx.blocking_recv(), Ok(Ok(())))));
                    if let Err(err) = spawned {
                        tracing::error!("wait for the ticket key to be logged: {err}");
                    }
                }
            }
        }
    }

    fn durable(&self) -> MutexGuard<'_, Durable> {
        lock_durable(&self.durable_own)
    }

    /// The public half of the ticket key.
    fn ticket_public(&self) -> Result<[u8; 32], Refusal> {
        let inner = self.lock();
        let secret = inner
            .replica
            .state()
            .ticket_key()
            .ok_or_else(|| Refusal::Internal("no ticket key".into()))?;
        Ok(ringshare_engine::ticket::public_key(secret))
    }

    fn build(config: TrackerConfig, inner: Inner) -> Self {
        let (feed, _) = broadcast::channel(4096);
        // Failing to start a handful of threads at start-up leaves nothing to serve with.
        let hashing = HashPool::new(config.hash_workers, config.hash_queue)
            .expect("start the password hashing threads");
        let expiry = Mutex::new(crate::expiry::Expiry::new(
            config.session_expiry,
            config.peer_addrs.iter().map(|(n, _)| *n),
            Instant::now(),
        ));
        Self {
            limits: Mutex::new(Limits::new(config.limits.clone())),
            hashing,
            files_cache: Mutex::new(HashMap::new()),
            failed: tokio::sync::watch::Sender::new(None),
            durable_own: Arc::default(),
            waiting_for: Mutex::default(),
            first_contact: (tokio::sync::watch::Sender::new(BTreeSet::new()), Default::default()),
            made_own: Default::default(),
            config,
            inner: Mutex::new(inner),
            live: Mutex::new(HashMap::new()),
            live_copy: Mutex::new(None),
            heard_here: Mutex::default(),
            node_keys: Mutex::new(HashMap::new()),
            expiry,
            stopping: std::sync::atomic::AtomicBool::new(false),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            logins: tokio::sync::Mutex::new(()),
            fetchers: Mutex::default(),
            live_epoch: std::sync::atomic::AtomicU64::new(0),
            feed,
            acked: Mutex::new(HashMap::new()),
            snapshots: Mutex::new(()),
        }
    }

    /// Whether tracker `from` is listed and at address `ip`: the check on
    /// a sync pull until links are authenticated.
    pub fn is_listed_peer(&self, from: u16, ip: IpAddr) -> bool {
        self.config.peer_addrs.iter().any(|(n, a)| *n == from && a.ip() == ip)
    }

    /// This tracker's configuration.
    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    /// SHA1 of the replicated state's canonical encoding (every map in it
    /// is ordered, so equal states encode to equal bytes) and the number of
    /// ops it holds. Soft state (liveness, node keys) is not in it.
    pub fn state_digest(&self) -> ([u8; 20], u64) {
        let (digest, known, _) = self.state_image();
        (digest, known.values().sum())
    }

    /// The replicated state's canonical encoding, its SHA1 and what the
    /// replica holds per origin (`--digest`, `--dump-state`).
    fn state_image(&self) -> ([u8; 20], Known, Vec<u8>) {
        let (state, known) = {
            let inner = self.lock();
            (inner.replica.state().clone(), inner.replica.known().clone())
        };
        let bytes = postcard::to_stdvec(&state).unwrap_or_default();
        (ringshare_engine::hash::sha1_of(&bytes).0, known, bytes)
    }

    /// State digests and images are for this host and the listed trackers.
    fn admin_only(&self, from: IpAddr) -> Result<(), Refusal> {
        let listed = self.config.peer_addrs.iter().any(|(_, a)| a.ip() == from);
        let own = self.config.own_addr.is_some_and(|a| a.ip() == from);
        if from.is_loopback() || listed || own {
            Ok(())
        } else {
            Err(Refusal::BadRequest(
                "state digests are for this host and the listed trackers".into(),
            ))
        }
    }

    /// A copy of the current state (for tests and comparisons).
    pub fn snapshot(&self) -> State {
        self.lock().replica.state().clone()
    }
    /// Handles one request from a local client (tests, tools).
    pub async fn handle(&self, req: Request) -> Response {
        self.handle_from(req, IpAddr::V4(Ipv4Addr::LOCALHOST)).await
    }

    /// Handles one request that came from address `from`.
    pub async fn handle_from(&self, req: Request, from: IpAddr) -> Response {
        match self.reply(req, from, None).await {
            Reply::Msg(resp) => resp,
            Reply::Frame(frame) => decode_frame(&frame).unwrap_or_else(Response::Refused),
        }
    }

    /// The op log failed (a write or fsync): this tracker stops. Nothing it
    /// did not make durable was acknowledged, and from now on nothing is:
    /// requests and sync pulls are refused and no snapshot is written (it
    /// would hold the op that failed). `ringshare-tracker` exits; clients
    /// fail over to the other trackers.
    pub fn fail_stop(&self, why: &str) {
        self.failed.send_if_modified(|f| {
            if f.is_some() {
                return false;
            }
            tracing::error!(
                "op log: {why}; stopping (fail-stop): nothing that is not on disk is acknowledged"
            );
            *f = Some(why.to_owned());
            true
        });
    }

    /// Why the tracker stopped, if it did (see [`Tracker::fail_stop`]).
    pub fn failure(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    /// Resolves once the tracker has failed, with the reason.
    pub async fn failed(&self) -> String {
        let mut rx = self.failed.subscribe();
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Handles one request from `from` on a link that proved node key
    /// `key`, for the network driver: large answers that many clients ask
    /// for come encoded once and shared.
    pub async fn reply(&self, req: Request, from: IpAddr, key: Option<[u8; 32]>) -> Reply {
        if let Some(why) = self.failure() {
            return Reply::Msg(Response::Refused(Refusal::Internal(format!(
                "tracker stopped: op log failed ({why})"
            ))));
        }
        if !matches!(req, Request::StateDigest | Request::StateImage) {
            // Lost its data and not caught up: every answer would be about
            // an empty state. Clients move on to another tracker.
            if let Err(refusal) = self.not_waiting() {
                return Reply::Msg(Response::Refused(refusal));
            }
        }
        let result = match req {
            Request::ListFiles { token, group } => {
                self.list_files(&token, &group).map(Reply::Frame)
            }
            req => self.dispatch(req, from, key).await.map(Reply::Msg),
        };
        result.unwrap_or_else(|refusal| Reply::Msg(Response::Refused(refusal)))
    }

    /// `ListFiles`: the group's files with online-peer counts, as an
    /// encoded frame. A group of 10,000 files answers with about 300 KB;
    /// 1,000 clients asking at once used to build and encode 1,000 copies
    /// (797 MiB, a legitimate client's p99 4 s). The frame is now built
    /// once per version — the replicated state's (the sum of what it holds
    /// from each tracker) and the live sessions' — and shared, so it is
    /// exactly what a fresh build would say. Membership is checked every time.
    fn list_files(&self, token: &Token, group: &str) -> Result<Arc<[u8]>, Refusal> {
        let (user, _) = self.session(token)?;
        name(NameKind::Group, group)?;
        let version = {
            let inner = self.lock();
            inner.replica.state().require_member(&user, group)?;
            inner.replica.known().values().sum::<u64>()
        };
        let epoch = self.live_epoch();
        let mut cache = self.files_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, e, frame)) = cache.get(group) {
            if (*v, *e) == (version, epoch) {
                return Ok(Arc::clone(frame));
            }
        }
        // Built under the cache lock: one build at a time, not one per
        // client that missed.
        let live = self.live_set();
        let files = self.lock().replica.state().files(&user, group, &|t| live.contains_key(t))?;
        let frame: Arc<[u8]> = encode_frame(RESPONSE, &Response::Files(files))
            .map_err(|e| Refusal::Internal(format!("encode: {e}")))?
            .into();
        if cache.len() >= FILES_CACHE_GROUPS {
            cache.retain(|_, (v, e, _)| (*v, *e) == (version, epoch));
            if cache.len() >= FILES_CACHE_GROUPS {
                cache.clear();
            }
        }
        cache.insert(group.to_owned(), (version, epoch, Arc::clone(&frame)));
        Ok(frame)
    }

    fn limits(&self) -> MutexGuard<'_, Limits> {
        self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn dispatch(
        &self,
        req: Request,
        from: IpAddr,
        key: Option<[u8; 32]>,
    ) -> Result<Response, Refusal> {
        match req {
            Request::CreateUser { user, password } => {
                new_name(NameKind::User, &user)?;
                password_ok(&password)?;
                if self.lock().replica.state().user_exists(&user) {
                    return Err(Refusal::UserExists(user));
                }
                self.limits().signup(from, Instant::now()).map_err(limit)?;
                let password_hash =
                    self.hashing.run(move || hash_password(&password)).await.map_err(limit)??;
                self.commit(Op::CreateUser { user, password_hash }).await?;
                Ok(Response::Done)
            }
            Request::Login { user, password, peer_addr } => {
                name(NameKind::User, &user)?;
                let peer_addr = listed_address(&peer_addr, from)?;
                let stored = self.lock().replica.state().password_hash(&user).map(str::to_owned);
                let Some(stored) = stored else {
                    // No hashing to do, but a failed attempt all the same.
                    self.limits().login_unknown_user(from, Instant::now()).map_err(limit)?;
                    return Err(Refusal::BadCredentials);
                };
                let permit =
                    self.limits().login_start(from, &user, Instant::now()).map_err(limit)?;
                let mut attempt = Attempt { limits: &self.limits, permit: Some(permit) };
                let verified = self
                    .hashing
                    .run(move || verify_password(&password, &stored))
                    .await
                    .map_err(limit)?;
                attempt.settle(verified);
                if !verified {
                    return Err(Refusal::BadCredentials);
                }
                let one_at_a_time = self.logins.lock().await;
                if let Some(k) = key {
                    self.address_free(&user, &peer_addr, &k)?;
                }
                self.room_for_session(&user, &peer_addr).await?;
                let mut raw = [0u8; 16];
                OsRng.fill_bytes(&mut raw);
                let token = Token(raw);
                self.commit(Op::Login { user, token, peer_addr }).await?;
                self.touch_here(token);
                if let Some(k) = key {
                    self.learn_keys(&[(token, k)]);
                }
                drop(one_at_a_time);
                let heartbeat_ms = (self.config.peer_ttl.as_millis() / 3).clamp(100, 60_000) as u32;
                Ok(Response::LoggedIn { token, heartbeat_ms, ticket_key: self.ticket_public()? })
            }
            Request::Logout { token } => {
                self.commit(Op::Logout { token }).await?;
                Ok(Response::Done)
            }
            Request::StateDigest => {
                self.admin_only(from)?;
                let (digest, ops) = self.state_digest();
                Ok(Response::StateDigest { digest, ops })
            }
            Request::StateImage => {
                self.admin_only(from)?;
                let (digest, known, state) = self.state_image();
                Ok(Response::StateImage { digest, known: known.into_iter().collect(), state })
            }
            Request::Heartbeat { token } => {
                self.session(&token)?;
                if let Some(k) = key {
                    self.learn_keys(&[(token, k)]);
                }
                Ok(Response::Alive { ticket_key: self.ticket_public()? })
            }
            Request::CreateGroup { token, group } => {
                let (user, _) = self.session(&token)?;
                new_name(NameKind::Group, &group)?;
                self.commit(Op::CreateGroup { user, group }).await?;
                Ok(Response::Done)
            }
            Request::JoinGroup { token, group } => {
                let (user, _) = self.session(&token)?;
                name(NameKind::Group, &group)?;
                if self.lock().replica.state().pending_requests(&group) >= MAX_PENDING_REQUESTS {
                    return Err(Refusal::Limit(format!(
                        "group {group} already has {MAX_PENDING_REQUESTS} pending join requests"
                    )));
                }
                self.commit(Op::JoinGroup { user, group }).await?;
                Ok(Response::Done)
            }
            Request::LeaveGroup { token, group } => {
                let (user, _) = self.session(&token)?;
                name(NameKind::Group, &group)?;
                self.commit(Op::LeaveGroup { user, group }).await?;
                Ok(Response::Done)
            }
            Request::ListRequests { token, group } => {
                let (user, _) = self.session(&token)?;
                name(NameKind::Group, &group)?;
                Ok(Response::Names(self.lock().replica.state().requests(&user, &group)?))
            }
            Request::AcceptRequest { token, group, user } => {
                let (owner, _) = self.session(&token)?;
                name(NameKind::Group, &group)?;
                name(NameKind::User, &user)?;
                self.commit(Op::AcceptRequest { owner, group, user }).await?;
                Ok(Response::Done)
            }
            Request::RejectRequest { token, group, user } => {
                let (owner, _) = self.session(&token)?;
                name(NameKind::Group, &group)?;
                name(NameKind::User, &user)?;
                self.commit(Op::RejectRequest { owner, group, user }).await?;
                Ok(Response::Done)
            }
            Request::ListGroups { token } => {
                self.session(&token)?;
                Ok(Response::Names(self.lock().replica.state().group_ids()))
            }
            Request::ListFiles { token, group } => decode_frame(&self.list_files(&token, &group)?),
            Request::ListFilesPage { token, group, prefix, after, limit } => {
                let (user, _) = self.session(&token)?;
                name(NameKind::Group, &group)?;
                if prefix.len() > MAX_FILE_NAME_LEN || after.len() > MAX_FILE_NAME_LEN {
                    return Err(Refusal::BadRequest("prefix or position too long".into()));
                }
                let limit = limit.clamp(1, MAX_PAGE) as usize;
                let live = self.live_set();
                let (files, more) = self.lock().replica.state().files_page(
                    &user,
                    &group,
                    &prefix,
                    &after,
                    limit,
                    &|t| live.contains_key(t),
                )?;
                Ok(Response::FilesPage { files, more })
            }
            Request::UploadFile { token, group, meta } => {
                let (user, peer_addr) = self.session(&token)?;
                name(NameKind::Group, &group)?;
                checked_meta(&meta)?;
                self.may_add(&group, &meta.name)?;
                self.commit(Op::UploadFile { user, peer_addr, group, meta }).await?;
                Ok(Response::Done)
            }
            Request::UploadFiles { token, group, files } => {
                let (user, peer_addr) = self.session(&token)?;
                name(NameKind::Group, &group)?;
                if files.len() > MAX_UPLOADS {
                    return Err(Refusal::BadRequest(format!(
                        "{} files registered at once, at most {MAX_UPLOADS} allowed",
                        files.len()
                    )));
                }
                // Each file is checked on its own: a bad one is refused in
                // its place, the others are registered. (Names clash with
                // the group's and with those taken before in this batch.)
                let batch = std::sync::Mutex::new(BTreeMap::<String, ()>::new());
                self.commit_each(files, |meta| {
                    checked_meta(&meta)?;
                    self.may_add(&group, &meta.name)?;
                    let mut batch = batch.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(other) = crate::state::name_clash(&batch, &meta.name) {
                        return Err(clash(&group, &meta.name, other));
                    }
                    batch.insert(meta.name.clone(), ());
                    Ok(Op::UploadFile {
                        user: user.clone(),
                        peer_addr: peer_addr.clone(),
                        group: group.clone(),
                        meta,
                    })
                })
                .await
            }
            Request::StopShares { token, group, files } => {
                let (user, peer_addr) = self.session(&token)?;
                name(NameKind::Group, &group)?;
                if files.len() > MAX_STOPS {
                    return Err(Refusal::BadRequest(format!(
                        "{} files withdrawn at once, at most {MAX_STOPS} allowed",
                        files.len()
                    )));
                }
                // As with UploadFiles: a bad name is refused in its place.
                self.commit_each(files, |file| {
                    name(NameKind::File, &file)?;
                    Ok(Op::StopShare {
                        user: user.clone(),
                        peer_addr: peer_addr.clone(),
                        group: group.clone(),
                        file,
                    })
                })
                .await
            }
            Request::Membership { token, group } => {
                let (user, _) = self.session(&token)?;
                name(NameKind::Group, &group)?;
                let since = self.lock().replica.state().member_since(&user, &group)?;
                Ok(Response::Member { since })
            }
            Request::StopShare { token, group, file } => {
                let (user, peer_addr) = self.session(&token)?;
                name(NameKind::Group, &group)?;
                name(NameKind::File, &file)?;
                self.commit(Op::StopShare { user, peer_addr, group, file }).await?;
                Ok(Response::Done)
            }
            Request::FileInfo { token, group, file } => {
                let (user, _) = self.session(&token)?;
                name(NameKind::Group, &group)?;
                name(NameKind::File, &file)?;
                let live = self.live_set();
                let (meta, peers) = self.look_up(token, &user, &group, &file, &live)?;
                let ticket = self.ticket(user, group, vec![meta.sha1], key)?;
                Ok(Response::FileInfo { meta, peers, ticket })
            }
            Request::FileInfos { token, group, files } => {
                let (user, _) = self.session(&token)?;
                name(NameKind::Group, &group)?;
                if files.len() > ticket::MAX_FILES {
                    return Err(Refusal::BadRequest(format!(
                        "{} files asked for at once, at most {} allowed",
                        files.len(),
                        ticket::MAX_FILES
                    )));
                }
                self.lock().replica.state().require_member(&user, &group)?;
                let live = self.live_set();
                let mut found = Vec::new();
                let mut answered = Vec::with_capacity(files.len());
                let mut bytes = 0usize;
                for file in &files {
                    let looked = name(NameKind::File, file)
                        .and_then(|()| self.look_up(token, &user, &group, file, &live));
                    match looked {
                        Ok((meta, peers)) => {
                            // Roughly its encoded size: the answer stays far
                            // below MAX_FRAME; what does not fit is asked
                            // for again.
                            let size = meta.name.len()
                                + 20 * meta.piece_hashes.len()
                                + peers
                                    .iter()
                                    .map(|p| p.user.len() + p.addr.len() + 40)
                                    .sum::<usize>()
                                + 64;
                            if !answered.is_empty() && bytes + size > FILE_INFOS_BYTES {
                                break;
                            }
                            bytes += size;
                            found.push(meta.sha1);
                            answered.push(FileLookup::Found { meta, peers });
                        }
                        Err(refusal) => answered.push(FileLookup::Refused(refusal)),
                    }
                }
                let ticket = if found.is_empty() {
                    Vec::new()
                } else {
                    self.ticket(user, group, found, key)?
                };
                Ok(Response::FileInfos { files: answered, ticket })
            }
        }
    }

    /// The metadata and online peers of `file` in `group` for `user` (at
    /// most [`MAX_LISTED`]), the
    /// caller of session `token`, who from now on counts as one of the
    /// file's fetchers.
    fn look_up(
        &self,
        token: Token,
        user: &str,
        group: &str,
        file: &str,
        live: &HashMap<Token, Instant>,
    ) -> Result<(ringshare_engine::meta::FileMeta, Vec<PeerInfo>), Refusal> {
        // The other nodes fetching the file are its peers too
        // (`crate::fetchers`): known once this ask is allowed.
        let mut fetching = Vec::new();
        // Only the sharers' keys are looked up (no copy of the map per
        // request). Lock order: `inner`, then `node_keys`; nothing
        // takes `inner` while holding `node_keys`.
        let inner = self.lock();
        let keys = self.node_keys.lock().unwrap_or_else(|p| p.into_inner());
        let mut rng = rand::thread_rng();
        let (meta, mut peers) = inner.replica.state().file_info(
            user,
            group,
            file,
            &|t| live.contains_key(t),
            &|t| keys.get(t).copied(),
            |n| rand::Rng::gen_range(&mut rng, 0..n),
        )?;
        drop(keys);
        let sharers = peers.len();
        let fetchers = self.fetchers.lock().unwrap_or_else(|p| p.into_inner()).touch(
            group,
            file,
            token,
            Instant::now(),
        );
        // Nodes fetching a file nobody shares hold nothing to trade (a node
        // registers as a sharer from its first verified piece, or from the
        // start of a resume): they are listed only beside a sharer, so that
        // the downloaders of a file nobody shares each see an empty list
        // and fail within the core's NO_SHARER_LIMIT, rather than wait a
        // minute on one another.
        let room = if peers.is_empty() { 0 } else { MAX_LISTED.saturating_sub(sharers) };
        if room > 0 && !fetchers.is_empty() {
            // A random choice of the fetchers that are live and not listed
            // as sharers, taken one by one (a shuffle cut short): a flash
            // crowd's 1,000 fetchers were each looked up and copied for
            // every ask, to keep 199.
            let listed: std::collections::HashSet<(&str, &str)> =
                peers.iter().map(|p| (p.user.as_str(), p.addr.as_str())).collect();
            let mut order = fetchers;
            let state = inner.replica.state();
            for i in 0..order.len() {
                if fetching.len() == room {
                    break;
                }
                let j = rand::Rng::gen_range(&mut rng, i..order.len());
                order.swap(i, j);
                let t = order[i];
                let Some(s) = state.session(&t) else { continue };
                if live.contains_key(&t)
                    && !listed.contains(&(s.user.as_str(), s.peer_addr.as_str()))
                {
                    fetching.push((t, s.user.clone(), s.peer_addr.clone()));
                }
            }
        }
        drop(inner);
        if !fetching.is_empty() {
            let keys = self.node_keys.lock().unwrap_or_else(|p| p.into_inner());
            peers.extend(fetching.into_iter().map(|(t, user, addr)| PeerInfo {
                user,
                addr,
                key: keys.get(&t).copied(),
            }));
        }
        cap_listed(&mut peers, sharers, |n| rand::Rng::gen_range(&mut rng, 0..n));
        Ok((meta, peers))
    }

    /// A ticket for `user` to fetch `files` of `group`, bound to the node
    /// key `key` its request's link proved.
    fn ticket(
        &self,
        user: String,
        group: String,
        files: Vec<ringshare_engine::meta::Sha1Digest>,
        key: Option<[u8; 32]>,
    ) -> Result<Vec<u8>, Refusal> {
        let secret = *self
            .lock()
            .replica
            .state()
            .ticket_key()
            .ok_or_else(|| Refusal::Internal("no ticket key".into()))?;
        let t = ticket::Ticket {
            user,
            group,
            files,
            expires_ms: wall_ms() + self.config.ticket_ttl.as_millis() as u64,
            // Bound to the key this request's link proved: useless to
            // anyone without that node's private key.
            holder: key,
        };
        Ok(ticket::sign(&secret, &t))
    }

    /// Refuses a file that `group` cannot take: a new name not in Unicode
    /// normal form C (a look-alike of another spelling), or one it cannot
    /// hold beside one it has (`a` and `a/b`). A name it holds already (one
    /// more sharer) passes. Checked here, when the request comes, not when
    /// the op is applied, so that ops accepted before (or on the other side
    /// of a partition) apply as they did.
    /// Refuses a share that would take its user's shares, or everyone's,
    /// past what the tracker keeps ([`TrackerConfig::max_share_bytes_per_user`],
    /// [`TrackerConfig::max_share_bytes`]): with no limit, one account sent
    /// 16 MiB of piece hashes per request, each kept in memory, in the op
    /// log and in every snapshot. Checked under the state's lock, in turn
    /// with the ops before it (a batch's files count one after another).
    /// A share held already is not checked: it adds nothing.
    fn within_limits(&self, state: &State, op: &Op) -> Result<(), Refusal> {
        let Op::UploadFile { user, peer_addr, group, meta } = op else { return Ok(()) };
        if state.is_sharing(group, &meta.name, user, peer_addr) {
            return Ok(());
        }
        let cost = crate::state::share_cost(meta);
        let limit = self.config.max_share_bytes_per_user;
        let free = limit.saturating_sub(state.share_bytes(user));
        if cost > free {
            return Err(Refusal::Limit(format!(
                "limit reached: {} needs {} of names and piece hashes at this tracker, and {} of \
                 the {} it keeps for one user's shares is free; stop sharing some to share it",
                meta.name,
                size(cost, Round::Up),
                size(free, Round::Down),
                size(limit, Round::Down)
            )));
        }
        let limit = self.config.max_share_bytes;
        let free = limit.saturating_sub(state.total_share_bytes());
        if !state.has_file(group, &meta.name) && cost > free {
            return Err(Refusal::Limit(format!(
                "limit reached: {} needs {} of names and piece hashes at this tracker, and {} of \
                 the {} it keeps for every share is free",
                meta.name,
                size(cost, Round::Up),
                size(free, Round::Down),
                size(limit, Round::Down)
            )));
        }
        Ok(())
    }

    fn may_add(&self, group: &str, file: &str) -> Result<(), Refusal> {
        let inner = self.lock();
        let state = inner.replica.state();
        if state.has_file(group, file) {
            return Ok(());
        }
        new_name(NameKind::File, file)?;
        match state.name_clash(group, file) {
            Some(other) => Err(clash(group, file, other)),
            None => Ok(()),
        }
    }

    /// Applies an op, logs it (fsync'ed with group commit) and hands it to
    /// the other trackers: the single path by which a client changes state.
    async fn commit(&self, op: Op) -> Result<(), Refusal> {
        self.commit_all(vec![op]).await?.pop().unwrap_or(Ok(()))
    }

    /// [`Tracker::commit`] for several ops at once: each applied (or
    /// refused, in its place) in order, then every one logged, awaited
    /// together (one group-commit sync for the batch). Errs as a whole only
    /// when no change may be made here now, or the log failed.
    /// Commits the op `op` makes of each item (one log wait for them all),
    /// answering each in its place ([`Response::Uploads`]): the refusal of
    /// an item `op` refuses, else its op's outcome.
    async fn commit_each<T>(
        &self,
        items: Vec<T>,
        op: impl Fn(T) -> Result<Op, Refusal>,
    ) -> Result<Response, Refusal> {
        let mut answers: Vec<Option<Refusal>> = Vec::with_capacity(items.len());
        let mut ops = Vec::with_capacity(items.len());
        for item in items {
            match op(item) {
                Ok(o) => {
                    ops.push(o);
                    answers.push(None);
                }
                Err(refusal) => answers.push(Some(refusal)),
            }
        }
        let mut committed = self.commit_all(ops).await?.into_iter();
        for answer in answers.iter_mut().filter(|a| a.is_none()) {
            *answer = committed.next().and_then(Result::err);
        }
        Ok(Response::Uploads(answers))
    }

    async fn commit_all(&self, ops: Vec<Op>) -> Result<Vec<Result<(), Refusal>>, Refusal> {
        self.not_waiting()?;
        self.first_contact_made().await;
        let mut results = Vec::with_capacity(ops.len());
        let mut logging = Vec::new();
        let snapshot_due = {
            let mut inner = self.lock();
            if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(Refusal::Stopping(format!(
                    "tracker {} is stopping and takes no more changes; ask another",
                    self.config.me
                )));
            }
            for op in ops {
                if let Err(refusal) = self.within_limits(inner.replica.state(), &op) {
                    results.push(Err(refusal));
                    continue;
                }
                match inner.replica.propose(op, wall_ms()) {
                    Ok(entry) => {
                        self.made_own.store(true, std::sync::atomic::Ordering::Relaxed);
                        let durable = inner.append(&entry);
                        logging.push((entry, durable));
                        results.push(Ok(()));
                    }
                    Err(refusal) => results.push(Err(refusal)),
                }
            }
            inner.since_snapshot >= self.config.snapshot_every
        };
        for (entry, durable) in logging {
            if let Some(rx) = durable {
                if let Err(why) = logged(rx).await {
                    // The op is in this replica but not on disk: stop rather
                    // than let it reach a client, a peer or a snapshot.
                    self.fail_stop(&why);
                    return Err(Refusal::Internal(format!("op log: {why}")));
                }
            }
            self.durable().settle(entry, &self.feed);
        }
        if snapshot_due {
            self.maybe_snapshot();
        }
        Ok(results)
    }

    /// Takes entries streamed from another tracker; returns once they are
    /// durable here.
    pub async fn receive_remote(&self, entries: Vec<Entry>) -> Result<(), ReceiveError> {
        let mut waits = Vec::new();
        let mut fresh = Vec::new();
        let mut gap = None;
        {
            let mut inner = self.lock();
            if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(ReceiveError::Stopping);
            }
            let bound_ms = self.config.max_clock_skew.as_millis() as u64;
            let now = wall_ms();
            for e in entries {
                if e.stamp.wall_ms > now.saturating_add(bound_ms) {
                    // Refused (and so is what follows from that origin,
                    // a gap) until this clock comes within the bound.
                    let refusal = ReceiveError::FromTheFuture {
                        origin: e.stamp.origin,
                        seq: e.origin_seq,
                        ahead_ms: e.stamp.wall_ms - now,
                        bound_ms,
                    };
                    gap = Some(refusal);
                    break;
                }
                match inner.replica.receive_deferred(e.clone()) {
                    Ok(true) => {
                        waits.extend(inner.append(&e));
                        fresh.push(e);
                    }
                    Ok(false) => {}
                    Err(g) => {
                        gap = Some(g);
                        break;
                    }
                }
            }
            // One rebuild for the batch, however many entries came late.
            inner.replica.settle();
            self.report_diverged(inner.replica.take_diverged());
        }
        for rx in waits {
            if let Err(why) = logged(rx).await {
                // Not durable here: no acknowledgement may go back.
                self.fail_stop(&why);
                return Err(ReceiveError::NotDurable(why));
            }
        }
        // A session that just logged in elsewhere is alive.
        let logins: Vec<Token> = fresh
            .iter()
            .filter_map(|e| match &e.op {
                Op::Login { token, .. } => Some(*token),
                _ => None,
            })
            .collect();
        self.touch_all(&logins);
        {
            // This tracker's own ops, lost with its data and sent back by a
            // peer: on disk here now, and may be offered in catch-up again.
            let mut durable = self.durable();
            let own: Vec<u64> = fresh
                .iter()
                .filter(|e| e.stamp.origin == self.config.me)
                .map(|e| e.origin_seq)
                .collect();
            for &seq in &own {
                durable.raise_to(seq, &self.feed);
            }
            if let (Some(first), Some(last)) = (own.first(), own.last()) {
                self.took_back_own(*first, *last);
            }
        }
        for e in fresh {
            let _ = self.feed.send(e);
        }
        self.maybe_snapshot();
        gap.map_or(Ok(()), Err)
    }

    /// Says that ops `first..=last` of this tracker's own came back from a
    /// peer: its data directory had lost them. Harmless if it made no op
    /// since it started (they are taken back, and its next op follows
    /// them); if it did, those were numbered as ops the peer held.
    fn took_back_own(&self, first: u64, last: u64) {
        if self.made_own.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::error!(
                "a peer holds ops {first}..={last} of this tracker's own, which it numbered \
                 again after start-up (its data directory was put back from an older copy, or \
                 its log lost its end, while no peer could be reached): the trackers will not \
                 converge; compare them with --digest, and rebuild this one: stopped, its data \
                 directory emptied but for tracker.key and known_trackers, it takes what the \
                 others hold when started (docs/DURABILITY.md)"
            );
        } else {
            tracing::warn!(
                "took back ops {first}..={last} of this tracker's own from a peer: its data \
                 directory had lost them (put back from an older copy, or a log that lost its \
                 end); its next op follows them"
            );
        }
    }

    /// Replaces the state with another tracker's image when it holds
    /// everything this one does (catching up past a compacted log). An
    /// image stamped beyond the clock-skew bound is refused, as entries are:
    /// installing it would move this tracker's clock (and every stamp it
    /// makes after) that far ahead.
    pub fn install(&self, img: ReplicaImage) -> Result<bool, ReceiveError> {
        let bound_ms = self.config.max_clock_skew.as_millis() as u64;
        let now = wall_ms();
        let newest = img.newest_wall_ms();
        if newest > now.saturating_add(bound_ms) {
            return Err(ReceiveError::ImageFromTheFuture {
                origin: img.me,
                ahead_ms: newest - now,
                bound_ms,
            });
        }
        let _one = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let mut inner = self.lock();
        let ok = inner.replica.install(img);
        if ok {
            if let Err(e) = inner.snapshot_now(None) {
                tracing::error!("snapshot: {e}");
            }
            // Own entries in the image came back from a peer that holds
            // them: they may be offered in catch-up.
            let own = inner.replica.known().get(&self.config.me).copied().unwrap_or(0);
            self.durable().raise_to(own, &self.feed);
        }
        Ok(ok)
    }

    /// Logs, once per origin, that a peer holds another op than this
    /// tracker under the same number: `(origin, seq)` pairs from
    /// [`crate::replica::Replica::take_diverged`].
    fn report_diverged(&self, diverged: Vec<(u16, u64)>) {
        for (origin, seq) in diverged {
            let whose = if origin == self.config.me {
                "this tracker's own".to_owned()
            } else {
                format!("tracker {origin}'s")
            };
            tracing::error!(
                "a peer holds another op than this tracker as {whose} op {seq}: one of the \
                 two numbered new ops after losing some it had acknowledged (a data \
                 directory put back from an older copy, or a log that lost its end), and the \
                 trackers will not converge; compare them with --digest, and rebuild the \
                 wrong one: stopped, its data directory emptied but for tracker.key and \
                 known_trackers, it takes what the others hold when started (what only it \
                 held is lost; docs/DURABILITY.md)"
            );
        }
    }

    /// Checks a pulling peer's newest entries per origin against this
    /// tracker's (`SyncMsg::Tips`): two trackers that each hold as many ops
    /// of an origin, but different ones, diverged (one was put back from an
    /// older copy of its data while the other was down, and numbered new
    /// ops as the lost ones), and no entry would ever pass between them to
    /// show it. Logged as [`Tracker::receive_remote`] logs an entry that
    /// shows it.
    pub fn check_tips(&self, tips: &[(u16, u64, crate::hlc::Stamp)]) {
        let mut inner = self.lock();
        inner.replica.check_tips(tips);
        let diverged = inner.replica.take_diverged();
        drop(inner);
        self.report_diverged(diverged);
    }

    /// This tracker's newest entry per origin, for a pull's `Tips`.
    pub fn tips(&self) -> Vec<(u16, u64, crate::hlc::Stamp)> {
        self.lock().replica.tips()
    }

    /// What this tracker holds, per origin.
    pub fn known(&self) -> Known {
        self.lock().replica.known().clone()
    }

    /// Entries a tracker holding `theirs` lacks, or the image to send when
    /// some were compacted away.
    ///
    /// This tracker's own entries go only as far as they are on disk here:
    /// one sent before its fsync could, after a crash, be proposed again as
    /// a different op under the same (origin, seq). The rest follow on the
    /// feed once durable.
    pub fn catch_up(&self, theirs: &Known) -> Result<Vec<Entry>, Box<ReplicaImage>> {
        let me = self.config.me;
        let prefix = self.durable().prefix;
        let on_disk = |e: &Entry| e.stamp.origin != me || e.origin_seq <= prefix;
        let inner = self.lock();
        match inner.replica.entries_after(theirs) {
            Some(mut entries) => {
                entries.retain(on_disk);
                Ok(entries)
            }
            None => {
                let mut img = inner.replica.image();
                img.entries.retain(on_disk);
                Err(Box::new(img))
            }
        }
    }

    /// A stream of every new entry.
    pub fn subscribe(&self) -> broadcast::Receiver<Entry> {
        self.feed.subscribe()
    }

    /// Another tracker acknowledged holding `known`.
    pub fn set_acked(&self, peer: u16, known: Known) {
        self.acked.lock().unwrap_or_else(|p| p.into_inner()).insert(peer, known);
    }

    /// Marks sessions as alive now.
    pub fn touch_all(&self, tokens: &[Token]) {
        let now = Instant::now();
        let ttl = self.config.peer_ttl;
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut revived = false;
        for t in tokens {
            let before = live.insert(*t, now);
            revived |= before.is_none_or(|at| now.saturating_duration_since(at) >= ttl);
        }
        if revived {
            self.live_epoch.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Session `token` was heard from here, by its own request: alive, and
    /// passed on to the other trackers for a while ([`GOSSIP_WINDOW`]).
    fn touch_here(&self, token: Token) {
        self.touch_all(&[token]);
        self.heard_here.lock().unwrap_or_else(|p| p.into_inner()).insert(token, Instant::now());
    }

    /// The sessions heard from here, by their own requests, within
    /// [`GOSSIP_WINDOW`] before `now`: what the `Alive` gossip carries.
    pub fn heard_here_lately(&self, now: Instant) -> Vec<Token> {
        let mut heard = self.heard_here.lock().unwrap_or_else(|p| p.into_inner());
        heard.retain(|_, at| now.saturating_duration_since(*at) < GOSSIP_WINDOW);
        heard.keys().copied().collect()
    }

    /// Tracker `peer`'s `Alive` gossip arrived (it is heard without a break:
    /// [`crate::expiry`]).
    pub fn gossip_from(&self, peer: u16) {
        self.expiry.lock().unwrap_or_else(|p| p.into_inner()).gossip(peer, Instant::now());
    }

    /// Ends the sessions no tracker has heard from for the session expiry
    /// ([`crate::expiry`]), at most [`crate::expiry::MOST_AT_ONCE`]: one
    /// [`Op::Expire`] each, [`EXPIRE_BATCH`] to a commit. Returns how many
    /// ended.
    pub async fn expire_silent(&self, now: Instant) -> Result<usize, Refusal> {
        let tokens: Vec<Token> = self.lock().replica.state().tokens().copied().collect();
        let due = {
            let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            let mut expiry = self.expiry.lock().unwrap_or_else(|p| p.into_inner());
            expiry.due(tokens, &live, self.config.peer_ttl, now)
        };
        if due.is_empty() {
            return Ok(0);
        }
        // A few to a commit: each looks at every file of its user's groups
        // under the state's lock, which requests wait for.
        let mut ended = 0;
        for batch in due.chunks(EXPIRE_BATCH) {
            // (Not one already gone: logged out, or ended by another tracker.)
            let ops: Vec<Op> = {
                let inner = self.lock();
                batch
                    .iter()
                    .filter(|t| inner.replica.state().session(t).is_some())
                    .map(|token| Op::Expire { token: *token })
                    .collect()
            };
            if !ops.is_empty() {
                let results = self.commit_all(ops).await?;
                ended += results.iter().filter(|r| r.is_ok()).count();
            }
            let mut expiry = self.expiry.lock().unwrap_or_else(|p| p.into_inner());
            for token in batch {
                expiry.ended(token);
            }
        }
        Ok(ended)
    }

    /// Looks for silent sessions to end ([`Tracker::expire_silent`]) every
    /// quarter of the session expiry (every minute at most), for as long
    /// as the tracker runs.
    pub async fn expire_forever(self: Arc<Self>) {
        let every = (self.config.session_expiry / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(60));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            match self.expire_silent(Instant::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    "ended {n} session(s) no tracker heard from for {} s, with their nodes' shares",
                    self.config.session_expiry.as_secs()
                ),
                Err(e) => tracing::debug!("session expiry: {e}"),
            }
        }
    }

    /// Learns the node keys of sessions (from their own links, or gossip).
    /// The first key heard for a session stays: a token used from another
    /// node does not move its peers' connections there.
    pub fn learn_keys(&self, pairs: &[(Token, [u8; 32])]) {
        let mut keys = self.node_keys.lock().unwrap_or_else(|p| p.into_inner());
        for (t, k) in pairs {
            let known = *keys.entry(*t).or_insert(*k);
            if known != *k {
                tracing::warn!(
                    "a session's requests came over a link with another node key; kept the first"
                );
            }
        }
    }

    /// Refuses a login of `user` at `peer_addr` over a link proving node
    /// key `key` while another node (another key) is logged in there and
    /// still heard from: the login would replace its session, and that node
    /// would find itself logged out (a second node given the same
    /// `--advertise` address, a `get` or an `ls` among them). A node that
    /// comes back (its own key: a restart, a login after a logout) and a
    /// node whose key is not known here replace it as before; a node gone
    /// without a logout stops counting once silent for the peer TTL.
    fn address_free(&self, user: &str, peer_addr: &str, key: &[u8; 32]) -> Result<(), Refusal> {
        let there = self.lock().replica.state().sessions_at(user, peer_addr);
        if there.is_empty() {
            return Ok(());
        }
        let live = self.live_set();
        let keys = self.node_keys.lock().unwrap_or_else(|p| p.into_inner());
        let other =
            there.iter().any(|t| live.contains_key(t) && keys.get(t).is_some_and(|k| k != key));
        if !other {
            return Ok(());
        }
        Err(Refusal::AddressInUse(format!(
            "another node is logged in as {user} at {peer_addr} and still running (it has another \
             node key): a login here would log it out; give this node its own address (--listen, \
             --advertise) or stop that one (a node gone without logging out stops counting {}s \
             after its last heartbeat)",
            self.config.peer_ttl.as_secs()
        )))
    }

    /// Makes room for one more session of `user` (a login at `peer_addr`,
    /// which replaces the session there, if any): a user holds at most
    /// [`MAX_SESSIONS_PER_USER`]. At the most, a silent one of them ends
    /// ([`Op::Expire`]: not heard within the TTL, at any tracker), else the
    /// login is refused. Every login with the user's password at a new
    /// address had made a session that stayed until logged out.
    async fn room_for_session(&self, user: &str, peer_addr: &str) -> Result<(), Refusal> {
        let others = self.lock().replica.state().sessions_of_but(user, peer_addr);
        if others.len() < MAX_SESSIONS_PER_USER {
            return Ok(());
        }
        let live = self.live_set();
        let Some(silent) = others.iter().find(|t| !live.contains_key(*t)) else {
            return Err(Refusal::Limit(format!(
                "limit reached: {user} has {} nodes logged in and running, the most a tracker \
                 keeps for one user; log out one of them first",
                others.len()
            )));
        };
        self.commit(Op::Expire { token: *silent }).await
    }

    /// The node keys of the live sessions, for gossip.
    pub fn live_keys(&self) -> Vec<(Token, [u8; 32])> {
        let live = self.live_set();
        let keys = self.node_keys.lock().unwrap_or_else(|p| p.into_inner());
        live.keys().filter_map(|t| Some((*t, *keys.get(t)?))).collect()
    }

    /// The liveness epoch, which moves whenever the set of live sessions
    /// changes (after dropping the ones silent for longer than the TTL, at
    /// most [`LIVE_REUSE`] late).
    fn live_epoch(&self) -> u64 {
        self.live_set().epoch
    }

    /// Sessions heard from within the TTL.
    pub fn live_tokens(&self) -> Vec<Token> {
        self.live_set().set.keys().copied().collect()
    }

    /// The sessions heard from within the TTL: a copy, made again once it
    /// is [`LIVE_REUSE`] old or a session joined (the epoch moved). A copy
    /// pruned and made for every peer list and listing cost O(sessions)
    /// each, whatever the file's sharers (15 % of a tracker's CPU samples
    /// with 4,000 sessions, `tracker_load --mix peers`); a session that
    /// goes silent is seen gone at most that much later.
    fn live_set(&self) -> Arc<LiveCopy> {
        let now = Instant::now();
        let mut copy = self.live_copy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = copy.as_ref() {
            let epoch = self.live_epoch.load(std::sync::atomic::Ordering::Relaxed);
            if now.saturating_duration_since(c.at) < LIVE_REUSE && c.epoch == epoch {
                return Arc::clone(c);
            }
        }
        let live = self.live_pruned();
        // Read under `live`'s lock: a session joining after it moves the
        // epoch past this copy's.
        let epoch = self.live_epoch.load(std::sync::atomic::Ordering::Relaxed);
        let fresh = Arc::new(LiveCopy { at: now, epoch, set: live.clone() });
        drop(live);
        *copy = Some(Arc::clone(&fresh));
        fresh
    }

    /// The live map, without the sessions silent for longer than the TTL
    /// (moving the liveness epoch when it dropped any).
    fn live_pruned(&self) -> MutexGuard<'_, HashMap<Token, Instant>> {
        let ttl = self.config.peer_ttl;
        // One clock read for the whole map, not one per session: this runs
        // on every `ListFiles` and `FileInfo`, and reading the clock for each
        // live session took a third of the tracker's CPU under a read load
        // of 256 clients (docs/PERFORMANCE.md, "Tracker load").
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let before = live.len();
        live.retain(|_, at| now.saturating_duration_since(*at) < ttl);
        if live.len() != before {
            self.live_epoch.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut keys = self.node_keys.lock().unwrap_or_else(|p| p.into_inner());
            keys.retain(|t, _| live.contains_key(t));
        }
        live
    }

    /// Counts a request as being answered until the guard drops (after its
    /// answer is written).
    pub fn answering(&self) -> Answering<'_> {
        self.in_flight.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Answering(&self.in_flight)
    }

    /// After [`Tracker::shutdown`]: waits, at most `limit`, until no
    /// request is being answered, so that those whose ops went into the
    /// log before it closed get their answers (a client not answered would
    /// ask the next tracker again, and be told that its own change already
    /// exists).
    pub async fn drain(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.in_flight.load(std::sync::atomic::Ordering::Acquire) > 0
            && Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Writes a snapshot now (shutdown).
    pub fn shutdown(&self) -> Result<(), DataDirError> {
        if self.failure().is_some() {
            // The replica holds an op that is not on disk: no snapshot.
            return Ok(());
        }
        let acked = self.acked_all();
        let _one = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let mut inner = self.lock();
        // Ops appended before this are in the log's queue, written before
        // it closes; none is appended after.
        self.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
        let written = inner.snapshot_now(acked.as_deref());
        if let Some(log) = inner.log.as_mut() {
            log.close();
        }
        written
    }

    /// Takes a snapshot once enough entries were logged since the last. Only
    /// the switch to a new log and the copy of the state hold the state
    /// lock; waiting for the old log and writing the file do not, so
    /// requests keep being answered meanwhile (see docs/DURABILITY.md).
    fn maybe_snapshot(&self) {
        if self.failure().is_some() || self.lock().since_snapshot < self.config.snapshot_every {
            return;
        }
        // One at a time; a snapshot under way covers these entries too.
        let Ok(_one) = self.snapshots.try_lock() else { return };
        let acked = self.acked_all();
        let Some((next, path)) = self.lock().dir.as_ref().map(DataDir::next_log) else { return };
        let new_log = match OpLog::open(&path, 0) {
            Ok(l) => l,
            Err(e) => {
                // Tried again after as many ops, not at every op (a data
                // directory made read-only logged this once per op).
                self.lock().since_snapshot = 0;
                tracing::error!(
                    "snapshot: open {}: {e} (the op log keeps every op; tried again after {} more)",
                    path.display(),
                    self.config.snapshot_every
                );
                return;
            }
        };
        let pending = {
            let mut inner = self.lock();
            if let Some(acked) = acked.as_deref() {
                inner.replica.compact(acked);
            }
            let Inner { replica, log, dir, since_snapshot } = &mut *inner;
            let (Some(dir), Some(log)) = (dir.as_mut(), log.as_mut()) else { return };
            *since_snapshot = 0;
            dir.begin_snapshot(replica, log, next, new_log)
        };
        let write = move || {
            if let Err(e) = pending.write() {
                tracing::error!("snapshot: {e}");
            }
        };
        // On a multi-threaded runtime, let the other tasks move off this
        // worker while it waits on the disk.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(write),
            _ => write(),
        }
    }

    /// Every peer's acknowledgement; `None` if some peer never acked (then
    /// no entry may be compacted). A lone tracker has no peers: `Some([])`.
    fn acked_all(&self) -> Option<Vec<Known>> {
        let acked = self.acked.lock().unwrap_or_else(|p| p.into_inner());
        self.config.peer_addrs.iter().map(|(p, _)| acked.get(p).cloned()).collect()
    }

    /// Whether `token` (its 16 bytes) is a live session's, without
    /// counting as hearing from it: a large upload's frame is checked so
    /// before it is decoded (`server::connection`).
    pub fn is_session(&self, token: &[u8]) -> bool {
        let Ok(bytes) = <[u8; 16]>::try_from(token) else { return false };
        self.lock().replica.state().session(&Token(bytes)).is_some()
    }

    /// The user of a live session, without counting as hearing from it
    /// (`server::Slots` tells connections apart by it).
    pub fn session_user(&self, token: &Token) -> Option<String> {
        self.lock().replica.state().session(token).map(|s| s.user.clone())
    }

    /// The user and peer address of a live session; hearing from it keeps
    /// it alive.
    fn session(&self, token: &Token) -> Result<(String, String), Refusal> {
        let found = {
            let inner = self.lock();
            inner.replica.state().session(token).map(|s| (s.user.clone(), s.peer_addr.clone()))
        };
        let found = found.ok_or(Refusal::NotLoggedIn)?;
        self.touch_here(*token);
        Ok(found)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug in `apply`, which
        // leaves the state unchanged on refusal; keep serving the data.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    /// Queues an entry on the log; the receiver fires once it is durable.
    fn append(&mut self, entry: &Entry) -> Option<oneshot::Receiver<std::io::Result<()>>> {
        let log = self.log.as_ref()?;
        let bytes = match postcard::to_stdvec(entry) {
            Ok(b) => b,
            Err(e) => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Err(std::io::Error::other(e)));
                return Some(rx);
            }
        };
        let (tx, rx) = oneshot::channel();
        log.append(bytes, move |r| {
            let _ = tx.send(r);
        });
        self.since_snapshot += 1;
        Some(rx)
    }

    /// Compacts what every peer holds (when all acknowledged something) and
    /// writes a snapshot.
    fn snapshot_now(&mut self, acked: Option<&[Known]>) -> Result<(), DataDirError> {
        if self.log.is_none() {
            return Ok(());
        }
        if let Some(acked) = acked {
            self.replica.compact(acked);
        }
        let Inner { replica, log, dir, since_snapshot } = self;
        if let (Some(dir), Some(log)) = (dir.as_mut(), log.as_mut()) {
            dir.snapshot(replica, log)?;
            *since_snapshot = 0;
        }
        Ok(())
    }
}

/// Milliseconds added to the wall clock: 0 except under a fault-injection
/// test (`ringshare-tracker --test-clock-offset-file`), which moves this
/// tracker's clock ahead or behind while it runs.
static CLOCK_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Sets the offset added to this process's wall clock (tests only).
pub fn set_clock_offset_ms(ms: i64) {
    CLOCK_OFFSET_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
}

fn wall_ms() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64);
    let offset = CLOCK_OFFSET_MS.load(std::sync::atomic::Ordering::Relaxed);
    now.map(|ms| ms.saturating_add(offset).max(0) as u64).unwrap_or(0)
}

fn name(kind: NameKind, value: &str) -> Result<(), Refusal> {
    names::validate(kind, value).map_err(|e| Refusal::BadName(e.to_string()))
}

/// [`name`] for a name to be created: also in Unicode normal form C.
fn new_name(kind: NameKind, value: &str) -> Result<(), Refusal> {
    names::validate_new(kind, value).map_err(|e| Refusal::BadName(e.to_string()))
}

/// The refusal of `file`, which `group` cannot hold beside `other`.
fn clash(group: &str, file: &str, other: &str) -> Refusal {
    Refusal::BadName(format!(
        "{file} cannot be shared in {group} beside {other}: one name cannot be both a file and \
         a directory"
    ))
}

fn password_ok(password: &str) -> Result<(), Refusal> {
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        return Err(Refusal::BadRequest(format!("password must be 1 to {MAX_PASSWORD_LEN} bytes")));
    }
    Ok(())
}

/// A file's metadata as a client registers it: a valid name, and
/// consistent in itself.
/// Which way [`size`] rounds.
#[derive(Clone, Copy)]
enum Round {
    Up,
    Down,
}

/// `bytes` for a message: in bytes, or in KiB or MiB to a tenth, rounded
/// `way` (what is needed up, what is free down: "needs 2.0 MiB, 2.0 MiB
/// free" never reads as enough when it is not).
fn size(bytes: u64, way: Round) -> String {
    let (unit, name) = match bytes {
        0..1024 => return format!("{bytes} bytes"),
        1024..0x10_0000 => (1024u64, "KiB"),
        _ => (1 << 20, "MiB"),
    };
    let tenths = match way {
        Round::Up => (bytes * 10).div_ceil(unit),
        Round::Down => bytes * 10 / unit,
    };
    format!("{}.{} {name}", tenths / 10, tenths % 10)
}

fn checked_meta(meta: &ringshare_engine::meta::FileMeta) -> Result<(), Refusal> {
    name(NameKind::File, &meta.name)?;
    meta.validate().map_err(|e| Refusal::BadRequest(e.to_string()))
}

/// Waits for an append to the op log: why it failed, if it did.
async fn logged(rx: oneshot::Receiver<std::io::Result<()>>) -> Result<(), String> {
    match rx.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("op log closed".to_owned()),
    }
}

fn lock_durable(d: &Mutex<Durable>) -> MutexGuard<'_, Durable> {
    d.lock().unwrap_or_else(|p| p.into_inner())
}

/// The response in a frame this tracker encoded.
fn decode_frame(frame: &[u8]) -> Result<Response, Refusal> {
    let (f, _) = ringshare_engine::wire::decode(frame, u32::MAX)
        .map_err(|e| Refusal::Internal(e.to_string()))?;
    postcard::from_bytes(f.payload).map_err(|e| Refusal::Internal(e.to_string()))
}

/// An attempt limit or a full queue, as the client sees it.
fn limit(e: impl std::fmt::Display) -> Refusal {
    Refusal::Limit(e.to_string())
}

/// A login let through the limits: settled with its outcome, or, when it
/// is dropped unsettled (hashing refused, request cancelled), charged nothing.
struct Attempt<'a> {
    limits: &'a Mutex<Limits>,
    permit: Option<LoginPermit>,
}

impl Attempt<'_> {
    fn settle(&mut self, success: bool) {
        if let Some(p) = self.permit.take() {
            let mut l = self.limits.lock().unwrap_or_else(|p| p.into_inner());
            l.login_done(p, success, Instant::now());
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.limits.lock().unwrap_or_else(|p| p.into_inner()).login_abandoned(p);
        }
    }
}

fn hash_password(password: &str) -> Result<String, Refusal> {
    crate::password::hash(password).map_err(|e| Refusal::Internal(format!("hash password: {e}")))
}

fn verify_password(password: &str, stored: &str) -> bool {
    crate::password::verify(password, stored)
}

/// The address a node is listed under: the one it gave, or — when it
/// listens on every interface (`0.0.0.0:PORT`, `[::]:PORT`) — the address
/// its connection came from with its port, as BitTorrent trackers do. A
/// node behind NAT with a forwarded port names its public address itself
/// (`--advertise`).
fn listed_address(given: &str, from: IpAddr) -> Result<String, Refusal> {
    let mut addr = given
        .parse::<SocketAddr>()
        .map_err(|_| Refusal::BadRequest(format!("bad peer address {given:?}")))?;
    if addr.port() == 0 {
        return Err(Refusal::BadRequest(format!("bad peer address {given:?}: port 0")));
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(from.to_canonical());
    }
    // One spelling per address: `[::ffff:10.9.9.9]:5` is `10.9.9.9:5` (it
    // was another address to the one-node-per-address rule).
    addr.set_ip(addr.ip().to_canonical());
    Ok(addr.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_on_every_interface_is_listed_under_the_address_it_came_from() {
        let from: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(listed_address("0.0.0.0:4000", from), Ok("10.1.2.3:4000".into()));
        assert_eq!(listed_address("[::]:4000", from), Ok("10.1.2.3:4000".into()));
        let mapped: IpAddr = "::ffff:10.9.9.9".parse().unwrap();
        assert_eq!(listed_address("0.0.0.0:5", mapped), Ok("10.9.9.9:5".into()));
        // An address given (--advertise, or a node on one interface) stands.
        assert_eq!(listed_address("203.0.113.7:6881", from), Ok("203.0.113.7:6881".into()));
        assert_eq!(listed_address("[::ffff:203.0.113.7]:7", from), Ok("203.0.113.7:7".into()));
        assert!(listed_address("0.0.0.0:0", from).is_err());
        assert!(listed_address("nonsense", from).is_err());
    }

    #[tokio::test]
    async fn the_state_digest_follows_the_state_and_only_local_callers_get_it() {
        let a = Tracker::new();
        let digest = |t: &Tracker| t.state_digest();
        let req = Request::CreateUser { user: "u".into(), password: "pw".into() };
        assert_eq!(a.handle(req).await, Response::Done);
        // A copy of the same replicated state digests the same …
        let c = Tracker::new();
        c.lock().replica = a.lock().replica.clone();
        assert_eq!(digest(&c), digest(&a));
        assert_eq!(digest(&a).1, a.known().values().sum::<u64>());
        // … and one more op changes it.
        let req = Request::CreateUser { user: "v".into(), password: "pw".into() };
        assert_eq!(c.handle(req).await, Response::Done);
        assert_ne!(digest(&c).0, digest(&a).0);
        match a.handle(Request::StateDigest).await {
            Response::StateDigest { digest: d, ops } => assert_eq!((d, ops), digest(&a)),
            other => panic!("{other:?}"),
        }
        let far = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
        let r = a.handle_from(Request::StateDigest, far).await;
        assert!(matches!(r, Response::Refused(Refusal::BadRequest(_))), "{r:?}");
    }

    #[tokio::test]
    async fn session_flow_through_requests() {
        let t = Tracker::new();
        let create = Request::CreateUser { user: "al".into(), password: "pw".into() };
        assert_eq!(t.handle(create.clone()).await, Response::Done);
        assert_eq!(t.handle(create).await, Response::Refused(Refusal::UserExists("al".into())));
        let login = |pw: &str| Request::Login {
            user: "al".into(),
            password: pw.into(),
            peer_addr: "127.0.0.1:4000".into(),
        };
        assert_eq!(t.handle(login("bad")).await, Response::Refused(Refusal::BadCredentials));
        let Response::LoggedIn { token, .. } = t.handle(login("pw")).await else {
            panic!("no login")
        };
        assert_eq!(t.handle(Request::ListGroups { token }).await, Response::Names(vec![]));
        assert_eq!(t.handle(Request::Logout { token }).await, Response::Done);
        assert_eq!(
            t.handle(Request::ListGroups { token }).await,
            Response::Refused(Refusal::NotLoggedIn)
        );
    }

    /// A snapshot that cannot start (its new log cannot be made) is tried
    /// again after as many ops, not at every op (it logged an error per op),
    /// and goes ahead once the log can be made; every op is kept meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_that_cannot_start_is_tried_again_later_not_at_every_op() {
        let dir = tempfile::tempdir().unwrap();
        let config = TrackerConfig { snapshot_every: 3, ..Default::default() };
        let (t, _) = Tracker::open(config, dir.path()).unwrap();
        let (_, blocked) = t.lock().dir.as_ref().unwrap().next_log();
        std::fs::create_dir(&blocked).unwrap();
        let op = |user: String| Op::CreateUser { user, password_hash: "x".into() };
        for i in 0..7 {
            t.commit(op(format!("u{i}"))).await.unwrap();
            assert!(t.lock().since_snapshot < 3, "tried again at op {i}");
        }
        let snapshot = dir.path().join("snapshot");
        assert!(!snapshot.exists());
        std::fs::remove_dir(&blocked).unwrap();
        for i in 7..12 {
            t.commit(op(format!("u{i}"))).await.unwrap();
        }
        assert!(snapshot.is_file(), "the snapshot went ahead once it could");
        drop(t);
        let (t, _) = Tracker::open(TrackerConfig::default(), dir.path()).unwrap();
        assert!((0..12).all(|i| t.snapshot().user_exists(&format!("u{i}"))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn catch_up_sends_no_own_entry_before_it_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let peer_addrs = vec![(2, "127.0.0.1:9".parse().unwrap())];
        let config = TrackerConfig { peer_addrs, ..Default::default() };
        let (t, _) = Tracker::open(config, dir.path()).unwrap();
        let t = Arc::new(t);
        let op = |user: &str| Op::CreateUser { user: user.into(), password_hash: "x".into() };
        t.commit(op("a")).await.unwrap();
        // The ticket key and "a" are on disk: both go.
        let start = Instant::now();
        while t.catch_up(&Known::new()).unwrap().len() < 2 {
            assert!(start.elapsed() < Duration::from_secs(10), "never durable");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Hold the log writer: "b" is applied but not on disk.
        let gate = t.lock().log.as_ref().unwrap().gate();
        let (held_tx, held) = std::sync::mpsc::channel::<()>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _g = gate.lock().unwrap();
            held_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        held.recv().unwrap();
        let t2 = Arc::clone(&t);
        let pending = tokio::spawn(async move { t2.commit(op("b")).await });
        while !t.snapshot().user_exists("b") {
            tokio::task::yield_now().await;
        }
        let sent = t.catch_up(&Known::new()).unwrap();
        assert_eq!(sent.len(), 2, "an entry not on disk was offered: {sent:?}");
        // Once on disk it goes too.
        release.send(()).unwrap();
        holder.join().unwrap();
        pending.await.unwrap().unwrap();
        assert_eq!(t.catch_up(&Known::new()).unwrap().len(), 3);
    }

    #[test]
    fn own_entries_reach_the_feed_in_order_whatever_order_they_settle_in() {
        let (feed, mut rx) = broadcast::channel(16);
        let mut d = Durable::default();
        let mut r = Replica::new(1);
        let op = |user: &str| Op::CreateUser { user: user.into(), password_hash: "x".into() };
        let (a, b, c) = (
            r.propose(op("a"), 1).unwrap(),
            r.propose(op("b"), 2).unwrap(),
            r.propose(op("c"), 3).unwrap(),
        );
        // b and c are on disk before a (one group commit, writers woken in
        // any order): neither goes out, and catch-up offers none of them.
        d.settle(c.clone(), &feed);
        d.settle(b.clone(), &feed);
        assert!(rx.try_recv().is_err());
        assert_eq!(d.prefix, 0);
        d.settle(a.clone(), &feed);
        let got: Vec<u64> =
            std::iter::from_fn(|| rx.try_recv().ok()).map(|e| e.origin_seq).collect();
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(d.prefix, 3);
    }

    #[tokio::test]
    async fn a_tracker_that_lost_its_data_makes_no_ops_until_its_peers_sent_its_own_back() {
        // Before the loss, tracker 1 made the ticket key and three ops,
        // which tracker 2 holds.
        let mut before = Replica::new(1);
        let op = |user: &str| Op::CreateUser { user: user.into(), password_hash: "x".into() };
        let mut made =
            vec![before.propose(Op::SetTicketKey { secret: [7; 32] }, wall_ms()).unwrap()];
        made.extend(["a", "b", "c"].iter().map(|u| before.propose(op(u), wall_ms()).unwrap()));
        // It restarts with an empty data directory but its old key.
        let dir = tempfile::tempdir().unwrap();
        let peer_addrs = vec![(2, "127.0.0.1:9".parse().unwrap())];
        let config = TrackerConfig { peer_addrs, has_run_before: true, ..Default::default() };
        let (t, rec) = Tracker::open(config, dir.path()).unwrap();
        assert!(rec.lost);
        // No ticket key of its own (it would reuse (1, 1)), no changes.
        assert!(t.known().is_empty());
        let r = t.commit(op("d")).await;
        assert!(matches!(r, Err(Refusal::CatchingUp(_))), "{r:?}");
        // Tracker 2's catch-up brings its four ops back; the first Alive
        // after it says that was everything.
        t.receive_remote(made).await.unwrap();
        t.heard_from(2);
        t.commit(op("d")).await.unwrap();
        assert_eq!(t.known().get(&1), Some(&5), "the next op follows the lost ones");
        // Its own ops that came back are on disk here: catch-up offers them.
        assert_eq!(t.catch_up(&Known::new()).unwrap().len(), 5);
    }

    #[tokio::test]
    async fn changes_wait_for_the_first_contact_and_follow_own_ops_a_peer_sent_back() {
        let op = |user: &str| Op::CreateUser { user: user.into(), password_hash: "x".into() };
        let dir = tempfile::tempdir().unwrap();
        let peer_addrs = vec![(2, "127.0.0.1:9".parse().unwrap())];
        let config = TrackerConfig { peer_addrs: peer_addrs.clone(), ..Default::default() };
        let (t, _) = Tracker::open(config, dir.path()).unwrap();
        // Tracker 1 went on to make two more ops, which tracker 2 holds;
        // then its data directory was put back to this older copy.
        let mut later = Replica::from_image(t.lock().replica.image());
        let made: Vec<Entry> =
            ["a", "b"].iter().map(|u| later.propose(op(u), wall_ms()).unwrap()).collect();
        let own = t.known().get(&1).copied().unwrap_or(0);
        let t = Arc::new(t);
        t.await_first_contact([2].into(), Duration::from_secs(600));
        let t2 = Arc::clone(&t);
        let write = tokio::spawn(async move { t2.commit(op("c")).await });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!write.is_finished(), "a change waits until tracker 2 is reached");
        // Tracker 2's catch-up sends the two back, then its first Alive.
        t.receive_remote(made).await.unwrap();
        t.heard_from(2);
        write.await.unwrap().unwrap();
        assert_eq!(t.known().get(&1), Some(&(own + 3)), "the new op follows the two taken back");
        let st = t.snapshot();
        assert!(st.user_exists("a") && st.user_exists("b") && st.user_exists("c"));

        // Peers that cannot be reached do not hold changes for long: one
        // failed connection each, or the time given.
        let dir = tempfile::tempdir().unwrap();
        let config = TrackerConfig { peer_addrs, ..Default::default() };
        let (t, _) = Tracker::open(config, dir.path()).unwrap();
        t.await_first_contact([2].into(), Duration::from_secs(600));
        t.contacted(2);
        t.commit(op("d")).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (t, _) = Tracker::open(TrackerConfig::default(), dir.path()).unwrap();
        t.await_first_contact([2, 3].into(), Duration::ZERO);
        t.commit(op("e")).await.unwrap();
    }

    #[tokio::test]
    async fn entries_stamped_beyond_the_skew_bound_are_refused() {
        let t = Tracker::new();
        let mut other = Replica::new(2);
        let op = |user: &str| Op::CreateUser { user: user.into(), password_hash: "x".into() };
        let near = other.propose(op("near"), wall_ms() + 1_000).unwrap();
        let far = other.propose(op("far"), wall_ms() + 3_600_000).unwrap();
        t.receive_remote(vec![near]).await.unwrap();
        let r = t.receive_remote(vec![far]).await;
        assert!(matches!(r, Err(ReceiveError::FromTheFuture { origin: 2, seq: 2, .. })), "{r:?}");
        let st = t.snapshot();
        assert!(st.user_exists("near"));
        assert!(!st.user_exists("far"), "an entry an hour ahead is not applied");
        assert_eq!(t.known().get(&2), Some(&1));
    }

    #[test]
    fn an_image_stamped_beyond_the_skew_bound_is_not_installed() {
        let t = Tracker::new();
        // Images that hold everything this tracker does (so that they would
        // be installed), plus one entry of tracker 2 stamped `ahead_ms` ahead.
        let image = |user: &str, ahead_ms: u64| {
            let mine = t.lock().replica.image();
            let hlc = crate::hlc::Hlc::new(2);
            let mut other = Replica::from_image(ReplicaImage { me: 2, hlc, ..mine });
            let op = Op::CreateUser { user: user.into(), password_hash: "x".into() };
            other.propose(op, wall_ms() + ahead_ms).unwrap();
            other.image()
        };
        let r = t.install(image("far", 3_600_000));
        assert!(matches!(r, Err(ReceiveError::ImageFromTheFuture { origin: 2, .. })), "{r:?}");
        assert!(!t.snapshot().user_exists("far"), "an image an hour ahead is not installed");
        assert_eq!(t.install(image("near", 1_000)), Ok(true));
        assert!(t.snapshot().user_exists("near"));
    }

    #[tokio::test]
    async fn pending_join_requests_are_capped() {
        let t = Tracker::new();
        let login = |t: &Tracker, user: String, n: u8| {
            let token = Token([n; 16]);
            let mut inner = t.lock();
            let hash = "x".to_owned();
            inner
                .replica
                .propose(Op::CreateUser { user: user.clone(), password_hash: hash }, 1)
                .unwrap();
            let peer_addr = "127.0.0.1:1".to_owned();
            inner.replica.propose(Op::Login { user, token, peer_addr }, 1).unwrap();
            token
        };
        let owner = login(&t, "owner".into(), 0);
        assert_eq!(
            t.handle(Request::CreateGroup { token: owner, group: "g".into() }).await,
            Response::Done
        );
        for i in 0..MAX_PENDING_REQUESTS {
            // Tokens only need to be distinct: reuse 255 of them, re-logging in.
            let token = login(&t, format!("u{i}"), (i % 250) as u8 + 1);
            assert_eq!(
                t.handle(Request::JoinGroup { token, group: "g".into() }).await,
                Response::Done
            );
        }
        let late = login(&t, "late".into(), 255);
        let r = t.handle(Request::JoinGroup { token: late, group: "g".into() }).await;
        assert!(matches!(r, Response::Refused(Refusal::Limit(_))), "{r:?}");
    }

    /// Each (user, token, port) created and logged in at 127.0.0.1:port;
    /// the first owns group `g`, `members` join it, and the first shares
    /// file `f` from its address.
    fn group_sharing_f(t: &Tracker, users: &[(&str, Token, u16)], members: &[&str]) {
        let mut inner = t.lock();
        let mut op = |op| inner.replica.propose(op, 1).unwrap();
        for &(user, token, port) in users {
            op(Op::CreateUser { user: user.into(), password_hash: "x".into() });
            let peer_addr = format!("127.0.0.1:{port}");
            op(Op::Login { user: user.into(), token, peer_addr });
        }
        let (owner, _, port) = users[0];
        op(Op::CreateGroup { user: owner.into(), group: "g".into() });
        for &user in members {
            op(Op::JoinGroup { user: user.into(), group: "g".into() });
            op(Op::AcceptRequest { owner: owner.into(), group: "g".into(), user: user.into() });
        }
        let meta = ringshare_engine::meta::FileMeta {
            name: "f".into(),
            len: 1,
            sha1: ringshare_engine::meta::Sha1Digest([7; 20]),
            piece_hashes: vec![ringshare_engine::meta::Sha1Digest([7; 20])],
        };
        op(Op::UploadFile {
            user: owner.into(),
            peer_addr: format!("127.0.0.1:{port}"),
            group: "g".into(),
            meta,
        });
    }

    /// Users logged in at `t`, each at an address of its own: their tokens.
    async fn logged_in(t: &Tracker, users: &[&str]) -> Vec<Token> {
        let mut tokens = Vec::new();
        for (i, u) in users.iter().enumerate() {
            let r =
                t.handle(Request::CreateUser { user: (*u).into(), password: "pw".into() }).await;
            assert_eq!(r, Response::Done);
            let login = Request::Login {
                user: (*u).into(),
                password: "pw".into(),
                peer_addr: format!("127.0.0.1:{}", 7 + i),
            };
            let Response::LoggedIn { token, .. } = t.handle(login).await else { panic!("login") };
            tokens.push(token);
        }
        tokens
    }

    #[tokio::test]
    async fn a_user_holds_a_bounded_number_of_sessions_and_a_silent_one_makes_room() {
        let t = Tracker::new();
        let r = t.handle(Request::CreateUser { user: "u".into(), password: "pw".into() }).await;
        assert_eq!(r, Response::Done);
        // All but one of the sessions a user may hold, made directly.
        let made: Vec<Token> = (0..MAX_SESSIONS_PER_USER - 1)
            .map(|i| {
                let token = Token(((i as u128) << 8 | 0xAB).to_le_bytes());
                let peer_addr = format!("10.0.{}.{}:9", i / 250, i % 250);
                t.lock()
                    .replica
                    .propose(Op::Login { user: "u".into(), token, peer_addr }, 1)
                    .unwrap();
                token
            })
            .collect();
        let login = |at: &str| Request::Login {
            user: "u".into(),
            password: "pw".into(),
            peer_addr: at.into(),
        };
        let sessions = |t: &Tracker| t.lock().replica.state().sessions_of_but("u", "").len();
        // The last one there is room for.
        assert!(matches!(t.handle(login("127.0.0.1:1")).await, Response::LoggedIn { .. }));
        assert_eq!(sessions(&t), MAX_SESSIONS_PER_USER);
        // One more: a silent session (none of those made was heard) ends.
        assert!(matches!(t.handle(login("127.0.0.1:2")).await, Response::LoggedIn { .. }));
        assert_eq!(sessions(&t), MAX_SESSIONS_PER_USER);
        // Every one heard from: refused, with the reason.
        t.touch_all(&made);
        match t.handle(login("127.0.0.1:3")).await {
            Response::Refused(Refusal::Limit(why)) => assert!(why.contains("log out one"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A login at a node's own address replaces its session: still room.
        assert!(matches!(t.handle(login("127.0.0.1:2")).await, Response::LoggedIn { .. }));
        assert_eq!(sessions(&t), MAX_SESSIONS_PER_USER);
    }

    #[tokio::test]
    async fn shares_past_a_users_or_the_trackers_limit_are_refused_and_stops_make_room() {
        use ringshare_engine::meta::{FileMeta, Sha1Digest, PIECE_LEN};
        // A file of 1,000 pieces costs its sharer 20,129 bytes (20 per
        // piece, 128 a file, its name).
        let file = |name: &str, fill: u8| FileMeta {
            name: name.into(),
            len: 1000 * PIECE_LEN,
            sha1: Sha1Digest([fill; 20]),
            piece_hashes: vec![Sha1Digest([fill; 20]); 1000],
        };
        let cost = crate::state::share_cost(&file("f0", 0));
        let config = TrackerConfig {
            max_share_bytes_per_user: 3 * cost,
            max_share_bytes: 5 * cost + 2 * 64,
            ..Default::default()
        };
        let t = Tracker::with_config(config);
        let tokens = logged_in(&t, &["a", "b"]).await;
        let (a, b) = (tokens[0], tokens[1]);
        let g = || "g".to_owned();
        assert_eq!(t.handle(Request::CreateGroup { token: a, group: g() }).await, Response::Done);
        assert_eq!(t.handle(Request::JoinGroup { token: b, group: g() }).await, Response::Done);
        let accept = Request::AcceptRequest { token: a, group: g(), user: "b".into() };
        assert_eq!(t.handle(accept).await, Response::Done);
        let up = |token, files: Vec<FileMeta>| Request::UploadFiles { token, group: g(), files };
        let answers = |r: Response| match r {
            Response::Uploads(a) => a.into_iter().map(|a| a.map(|r| r.to_string())).collect(),
            other => panic!("{other:?}"),
        };
        // Three fit a's limit; the fourth in the same batch does not.
        let four: Vec<FileMeta> = (0..4).map(|i| file(&format!("f{i}"), i)).collect();
        let got: Vec<Option<String>> = answers(t.handle(up(a, four.clone())).await);
        assert_eq!(got[..3], [None, None, None]);
        let refusal = got[3].clone().expect("the fourth refused");
        assert_eq!(
            refusal,
            "limit reached: f3 needs 19.7 KiB of names and piece hashes at this tracker, and 0 \
             bytes of the 58.9 KiB it keeps for one user's shares is free; stop sharing some to \
             share it"
        );
        assert_eq!(size(0x10_0000 - 1, Round::Down), "1023.9 KiB");
        assert_eq!(size(0x10_0000 - 1, Round::Up), "1024.0 KiB");
        assert_eq!(size(3 << 20, Round::Up), "3.0 MiB");
        assert_eq!(size(1023, Round::Up), "1023 bytes");
        // Sharing a file held already costs nothing more: still taken.
        let again: Vec<Option<String>> = answers(t.handle(up(a, four[..1].to_vec())).await);
        assert_eq!(again, [Some("file f0 is already shared in group g by this node".to_owned())]);
        // b shares one of a's files (it costs b, not the tracker's total
        // beyond its entry) and two files of its own: the tracker's total
        // holds five files then, and a sixth is refused, though b may.
        let got: Vec<Option<String>> =
            answers(t.handle(up(b, vec![four[0].clone(), file("g0", 10)])).await);
        assert_eq!(got, [None, None]);
        let got: Vec<Option<String>> = answers(t.handle(up(b, vec![file("g1", 11)])).await);
        assert_eq!(
            got,
            [Some(
                "limit reached: g1 needs 19.7 KiB of names and piece hashes at this tracker, and \
                 19.4 KiB of the 98.4 KiB it keeps for every share is free"
                    .to_owned()
            )]
        );
        // A stop makes room: a's second file withdrawn, a shares the fourth.
        let stop = Request::StopShare { token: a, group: g(), file: "f1".into() };
        assert_eq!(t.handle(stop).await, Response::Done);
        let got: Vec<Option<String>> = answers(t.handle(up(a, vec![four[3].clone()])).await);
        assert_eq!(got, [None]);
        // Leaving frees what the leaver shared there.
        assert_eq!(t.lock().replica.state().share_bytes("a"), 3 * cost);
        assert_eq!(t.handle(Request::LeaveGroup { token: a, group: g() }).await, Response::Done);
        let st = t.lock();
        assert_eq!(st.replica.state().share_bytes("a"), 0);
        assert_eq!(st.replica.state().share_bytes("b"), 2 * cost);
    }

    #[tokio::test]
    async fn a_membership_is_answered_with_its_id_which_a_leave_and_a_rejoin_change() {
        let t = Tracker::new();
        let mut tokens = Vec::new();
        for (i, u) in ["a", "b"].into_iter().enumerate() {
            let r = t.handle(Request::CreateUser { user: u.into(), password: "pw".into() }).await;
            assert_eq!(r, Response::Done);
            let login = Request::Login {
                user: u.into(),
                password: "pw".into(),
                peer_addr: format!("127.0.0.1:{}", 7 + i),
            };
            let Response::LoggedIn { token, .. } = t.handle(login).await else { panic!("login") };
            tokens.push(token);
        }
        let (a, b) = (tokens[0], tokens[1]);
        let g = || "g".to_owned();
        let since = |token| {
            let t = &t;
            async move {
                match t.handle(Request::Membership { token, group: g() }).await {
                    Response::Member { since } => Ok(since),
                    Response::Refused(r) => Err(r),
                    other => panic!("{other:?}"),
                }
            }
        };
        assert_eq!(since(a).await, Err(Refusal::NoSuchGroup(g())));
        assert_eq!(t.handle(Request::CreateGroup { token: a, group: g() }).await, Response::Done);
        let owner = since(a).await.unwrap();
        assert_ne!(owner, 0);
        assert_eq!(since(b).await, Err(Refusal::NotMember(g())));
        let join = || Request::JoinGroup { token: b, group: g() };
        let accept = || Request::AcceptRequest { token: a, group: g(), user: "b".into() };
        assert_eq!(t.handle(join()).await, Response::Done);
        assert_eq!(since(b).await, Err(Refusal::NotMember(g())), "pending is not a member");
        assert_eq!(t.handle(accept()).await, Response::Done);
        let first = since(b).await.unwrap();
        assert_eq!(since(b).await, Ok(first), "asked again, the same");
        assert_eq!(t.handle(Request::LeaveGroup { token: b, group: g() }).await, Response::Done);
        assert_eq!(t.handle(join()).await, Response::Done);
        assert_eq!(t.handle(accept()).await, Response::Done);
        let second = since(b).await.unwrap();
        assert!(![0, first, owner].contains(&second), "{second}");
        assert_eq!(since(a).await, Ok(owner));
        // An ended session is not answered.
        assert_eq!(t.handle(Request::Logout { token: b }).await, Response::Done);
        assert_eq!(since(b).await, Err(Refusal::NotLoggedIn));
    }

    #[tokio::test]
    async fn gossip_passes_on_sessions_heard_here_lately_not_what_gossip_brought() {
        let t = Tracker::new();
        let c = |r: Request| {
            let t = &t;
            async move { t.handle(r).await }
        };
        assert_eq!(
            c(Request::CreateUser { user: "u".into(), password: "pw".into() }).await,
            Response::Done
        );
        let login = Request::Login {
            user: "u".into(),
            password: "pw".into(),
            peer_addr: "127.0.0.1:7".into(),
        };
        let Response::LoggedIn { token, .. } = c(login).await else { panic!("no login") };
        let now = Instant::now();
        assert_eq!(t.heard_here_lately(now), [token], "its own login is heard here");
        // A session another tracker heard from is alive here, but not
        // passed on: two trackers passing each other's sessions on kept
        // a dead node alive for good.
        let elsewhere = Token([9; 16]);
        t.touch_all(&[elsewhere]);
        assert!(t.live_tokens().contains(&elsewhere));
        assert!(!t.heard_here_lately(now).contains(&elsewhere));
        // Passed on for a few seconds after it was last heard, then not.
        assert!(t.heard_here_lately(now + GOSSIP_WINDOW).is_empty());
        let r = c(Request::Heartbeat { token }).await;
        assert!(matches!(r, Response::Alive { .. }), "{r:?}");
        assert_eq!(t.heard_here_lately(Instant::now()), [token], "a heartbeat is heard here");
    }

    #[tokio::test]
    async fn sharers_not_heard_from_within_the_ttl_are_not_counted() {
        // Long enough that no pause of a loaded machine between a
        // heartbeat and the next list outlasts it.
        let config = TrackerConfig { peer_ttl: Duration::from_secs(2), ..Default::default() };
        let t = Tracker::with_config(config);
        let (a, b) = (Token([1; 16]), Token([2; 16]));
        group_sharing_f(&t, &[("a", a, 1), ("b", b, 2)], &["b"]);
        let peers = |r: Response| match r {
            Response::Files(f) => f[0].peers,
            other => panic!("{other:?}"),
        };
        let list = || Request::ListFiles { token: b, group: "g".into() };
        assert!(matches!(t.handle(Request::Heartbeat { token: a }).await, Response::Alive { .. }));
        assert_eq!(peers(t.handle(list()).await), 1);
        // a goes quiet for longer than the TTL: its share is not offered.
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(peers(t.handle(list()).await), 0);
        assert!(!t.live_tokens().contains(&a));
        // A heartbeat brings it back.
        t.handle(Request::Heartbeat { token: a }).await;
        assert_eq!(peers(t.handle(list()).await), 1);
        // The shared answer follows every change of the state at once.
        let names = |r: Response| match r {
            Response::Files(f) => f.into_iter().map(|f| f.name).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(names(t.handle(list()).await), ["f"]);
        let meta = ringshare_engine::meta::FileMeta {
            name: "f2".into(),
            len: 1,
            sha1: ringshare_engine::meta::Sha1Digest([8; 20]),
            piece_hashes: vec![ringshare_engine::meta::Sha1Digest([8; 20])],
        };
        let up = Request::UploadFile { token: b, group: "g".into(), meta };
        assert_eq!(t.handle(up).await, Response::Done);
        assert_eq!(names(t.handle(list()).await), ["f", "f2"]);
        let stop = Request::StopShare { token: a, group: "g".into(), file: "f".into() };
        assert_eq!(t.handle(stop).await, Response::Done);
        assert_eq!(names(t.handle(list()).await), ["f2"]);
        // A non-member is refused even when the answer is cached.
        let c = Token([3; 16]);
        t.lock()
            .replica
            .propose(Op::CreateUser { user: "c".into(), password_hash: "x".into() }, 1)
            .unwrap();
        let peer_addr = "127.0.0.1:3".to_owned();
        t.lock().replica.propose(Op::Login { user: "c".into(), token: c, peer_addr }, 1).unwrap();
        let r = t.handle(Request::ListFiles { token: c, group: "g".into() }).await;
        assert_eq!(r, Response::Refused(Refusal::NotMember("g".into())));
    }

    #[tokio::test]
    async fn a_session_no_tracker_heard_from_for_the_expiry_ends_with_its_shares() {
        let config =
            TrackerConfig { session_expiry: Duration::from_secs(10), ..Default::default() };
        let t = Tracker::with_config(config);
        let (a, b) = (Token([1; 16]), Token([2; 16]));
        // a shares f; neither has been heard from here yet.
        group_sharing_f(&t, &[("a", a, 1), ("b", b, 2)], &["b"]);
        let t0 = Instant::now();
        assert_eq!(t.expire_silent(t0).await, Ok(0));
        // b heartbeats; a was killed.
        assert!(matches!(t.handle(Request::Heartbeat { token: b }).await, Response::Alive { .. }));
        let later = Instant::now() + Duration::from_secs(11);
        assert_eq!(t.expire_silent(later).await, Ok(1));
        let r = t.handle(Request::Heartbeat { token: a }).await;
        assert_eq!(r, Response::Refused(Refusal::NotLoggedIn));
        // Its share went with it: f had no other sharer.
        match t.handle(Request::ListFiles { token: b, group: "g".into() }).await {
            Response::Files(f) => assert!(f.is_empty(), "{f:?}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(t.handle(Request::Heartbeat { token: b }).await, Response::Alive { .. }));
        assert_eq!(t.expire_silent(later).await, Ok(0));
    }

    #[tokio::test]
    async fn nodes_fetching_a_file_are_listed_as_its_peers() {
        let t = Tracker::new();
        t.ensure_ticket_key();
        let (a, b, c, d) = (Token([1; 16]), Token([2; 16]), Token([3; 16]), Token([4; 16]));
        let users = [("a", a, 1), ("b", b, 2), ("c", c, 3), ("d", d, 4)];
        group_sharing_f(&t, &users, &["b", "c"]);
        for token in [a, b, c, d] {
            t.handle(Request::Heartbeat { token }).await;
        }
        let info = |token| Request::FileInfo { token, group: "g".into(), file: "f".into() };
        let addrs = |r: Response| match r {
            Response::FileInfo { peers, .. } => {
                let mut a: Vec<String> = peers.into_iter().map(|p| p.addr).collect();
                a.sort();
                a
            }
            other => panic!("{other:?}"),
        };
        // b asks first: only the sharer is listed; c then sees b fetching
        // too, and b, asking again, sees c (never itself).
        assert_eq!(addrs(t.handle(info(b)).await), ["127.0.0.1:1"]);
        assert_eq!(addrs(t.handle(info(c)).await), ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(addrs(t.handle(info(b)).await), ["127.0.0.1:1", "127.0.0.1:3"]);
        // The sharer fetching its own file is listed once.
        assert_eq!(addrs(t.handle(info(a)).await), ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        assert_eq!(addrs(t.handle(info(c)).await), ["127.0.0.1:1", "127.0.0.1:2"]);
        // A non-member's ask is refused and lists it nowhere.
        let r = t.handle(info(d)).await;
        assert_eq!(r, Response::Refused(Refusal::NotMember("g".into())));
        assert_eq!(addrs(t.handle(info(b)).await), ["127.0.0.1:1", "127.0.0.1:3"]);
        // The sharer gone: the fetchers, holding nothing, are not listed to
        // one another either.
        t.handle(Request::Logout { token: a }).await;
        assert!(addrs(t.handle(info(b)).await).is_empty());
        assert!(addrs(t.handle(info(c)).await).is_empty());
    }

    /// A file fetched by more nodes than an answer lists: each answer has
    /// `MAX_LISTED`, every sharer among them, the fetchers a random few
    /// (answers differ); a list of sharers alone past it is cut too.
    #[test]
    fn peer_lists_are_cut_to_the_most_listed_sharers_first() {
        let peer =
            |i: usize| PeerInfo { user: format!("u{i}"), addr: format!("10.0.0.1:{i}"), key: None };
        let peers: Vec<PeerInfo> = (0..1000).map(peer).collect();
        let cap = |mut l: Vec<PeerInfo>, sharers| {
            let mut rng = rand::thread_rng();
            cap_listed(&mut l, sharers, |n| rand::Rng::gen_range(&mut rng, 0..n));
            l
        };
        let a = cap(peers.clone(), 3);
        assert_eq!(a.len(), MAX_LISTED);
        assert_eq!(a[..3], peers[..3], "the sharers first");
        let set = |l: &[PeerInfo]| {
            l.iter().map(|p| p.addr.clone()).collect::<std::collections::HashSet<_>>()
        };
        assert_eq!(set(&a).len(), MAX_LISTED, "no one twice");
        let b = cap(peers.clone(), 3);
        assert_ne!(set(&a), set(&b), "another choice each time");
        let c = cap(peers.clone(), 500);
        assert_eq!(c.len(), MAX_LISTED);
        assert!(c
            .iter()
            .all(|p| p.addr.rsplit(':').next().unwrap().parse::<usize>().unwrap() < 500));
        assert_eq!(cap(peers[..MAX_LISTED].to_vec(), 0), peers[..MAX_LISTED]);
    }

    /// A flash crowd: one sharer and more fetchers than an answer lists.
    /// Each answer has `MAX_LISTED`: the sharer, and a random choice of the
    /// fetchers, each once, never the asker nor one logged out since.
    #[tokio::test]
    async fn a_crowd_of_fetchers_is_listed_as_a_random_choice_of_the_live_ones() {
        let t = Tracker::new();
        t.ensure_ticket_key();
        let n = MAX_LISTED + 100;
        let token = |i: usize| {
            Token([(i % 256) as u8, (i / 256) as u8, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9])
        };
        let names: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
        let users: Vec<(&str, Token, u16)> =
            (0..n).map(|i| (names[i].as_str(), token(i), 1000 + i as u16)).collect();
        let members: Vec<&str> = names[1..].iter().map(String::as_str).collect();
        group_sharing_f(&t, &users, &members);
        for i in 0..n {
            t.handle(Request::Heartbeat { token: token(i) }).await;
        }
        let info = |i| Request::FileInfo { token: token(i), group: "g".into(), file: "f".into() };
        // Each member asks once: all but the sharer are fetchers now. Every
        // tenth then logs out: no session, not listed.
        for i in 1..n {
            t.handle(info(i)).await;
        }
        let gone = |i: usize| i % 10 == 7;
        for i in (1..n).filter(|&i| gone(i)) {
            t.handle(Request::Logout { token: token(i) }).await;
        }
        let ports = |r: Response| match r {
            Response::FileInfo { peers, .. } => peers
                .into_iter()
                .map(|p| p.addr.rsplit(':').next().unwrap().parse::<usize>().unwrap() - 1000)
                .collect::<Vec<usize>>(),
            other => panic!("{other:?}"),
        };
        let a = ports(t.handle(info(5)).await);
        assert_eq!(a.len(), MAX_LISTED);
        assert_eq!(a[0], 0, "the sharer first");
        let set: std::collections::HashSet<usize> = a.iter().copied().collect();
        assert_eq!(set.len(), a.len(), "no one twice");
        assert!(!set.contains(&5), "never the asker");
        assert!(a.iter().all(|&i| !gone(i)), "no node logged out: {a:?}");
        let b = ports(t.handle(info(5)).await);
        assert_ne!(set, b.iter().copied().collect(), "another choice each time");
    }

    #[tokio::test]
    async fn many_files_are_looked_up_at_once_under_one_ticket() {
        let t = Tracker::new();
        t.ensure_ticket_key();
        let (a, b, d) = (Token([1; 16]), Token([2; 16]), Token([4; 16]));
        group_sharing_f(&t, &[("a", a, 1), ("b", b, 2), ("d", d, 4)], &["b"]);
        for token in [a, b, d] {
            t.handle(Request::Heartbeat { token }).await;
        }
        let ask = |token, files: &[&str]| Request::FileInfos {
            token,
            group: "g".into(),
            files: files.iter().map(|f| f.to_string()).collect(),
        };
        let Response::FileInfos { files, ticket } =
            t.handle(ask(b, &["f", "nope", "../x", "f"])).await
        else {
            panic!("no answer")
        };
        assert_eq!(files.len(), 4);
        let FileLookup::Found { meta, peers } = &files[0] else { panic!("{:?}", files[0]) };
        assert_eq!(peers.iter().map(|p| p.addr.as_str()).collect::<Vec<_>>(), ["127.0.0.1:1"]);
        assert_eq!(files[3], files[0]);
        assert!(matches!(files[1], FileLookup::Refused(Refusal::NoSuchFile { .. })), "{files:?}");
        assert!(matches!(files[2], FileLookup::Refused(Refusal::BadName(_))), "{files:?}");
        // One ticket for the files found, in b's name.
        let public = t.ticket_public().unwrap();
        let ok = ticket::verify(&public, &ticket, "b", &meta.sha1, None, wall_ms()).unwrap();
        assert_eq!(ok.files, [meta.sha1, meta.sha1]);
        // b now counts as a fetcher of f: a later ask lists it.
        let Response::FileInfo { peers, .. } =
            t.handle(Request::FileInfo { token: a, group: "g".into(), file: "f".into() }).await
        else {
            panic!("no answer")
        };
        assert!(peers.iter().any(|p| p.addr == "127.0.0.1:2"), "{peers:?}");
        // A non-member is refused as a whole; too many names at once too.
        let r = t.handle(ask(d, &["f"])).await;
        assert_eq!(r, Response::Refused(Refusal::NotMember("g".into())));
        let many = vec!["f"; ticket::MAX_FILES + 1];
        let r = t.handle(ask(b, &many)).await;
        assert!(matches!(r, Response::Refused(Refusal::BadRequest(_))), "{r:?}");
        // No file found: no ticket.
        let Response::FileInfos { ticket, .. } = t.handle(ask(b, &["nope"])).await else {
            panic!("no answer")
        };
        assert!(ticket.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_files_are_registered_and_withdrawn_at_once_each_answered_in_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let (t, _) = Tracker::open(TrackerConfig::default(), dir.path()).unwrap();
        let (a, b) = (Token([1; 16]), Token([2; 16]));
        let meta = |name: &str, fill: u8| ringshare_engine::meta::FileMeta {
            name: name.into(),
            len: 1,
            sha1: ringshare_engine::meta::Sha1Digest([fill; 20]),
            piece_hashes: vec![ringshare_engine::meta::Sha1Digest([fill; 20])],
        };
        // Set up through the log, so that a restart holds it all.
        for (user, token, port) in [("a", a, 1), ("b", b, 2)] {
            t.commit(Op::CreateUser { user: user.into(), password_hash: "x".into() })
                .await
                .unwrap();
            let peer_addr = format!("127.0.0.1:{port}");
            t.commit(Op::Login { user: user.into(), token, peer_addr }).await.unwrap();
        }
        t.commit(Op::CreateGroup { user: "a".into(), group: "g".into() }).await.unwrap();
        let shared = Op::UploadFile {
            user: "a".into(),
            peer_addr: "127.0.0.1:1".into(),
            group: "g".into(),
            meta: meta("f", 7),
        };
        t.commit(shared).await.unwrap();
        let mut inconsistent = meta("bad-meta", 3);
        inconsistent.piece_hashes.clear();
        let files = vec![
            meta("x/one", 1),
            meta("../up", 2),
            meta("f", 7),
            inconsistent,
            meta("f", 8),
            meta("two", 2),
        ];
        let up = |token, files| Request::UploadFiles { token, group: "g".into(), files };
        let Response::Uploads(answers) = t.handle(up(a, files)).await else { panic!("no answer") };
        assert_eq!(answers.len(), 6);
        assert_eq!(answers[0], None);
        assert!(matches!(answers[1], Some(Refusal::BadName(_))), "{answers:?}");
        assert!(matches!(answers[2], Some(Refusal::AlreadySharing { .. })), "{answers:?}");
        assert!(matches!(answers[3], Some(Refusal::BadRequest(_))), "{answers:?}");
        assert!(matches!(answers[4], Some(Refusal::DifferentContent { .. })), "{answers:?}");
        assert_eq!(answers[5], None);
        // A non-member is refused file by file; too many files as a whole.
        let Response::Uploads(answers) = t.handle(up(b, vec![meta("z", 9)])).await else {
            panic!("no answer")
        };
        assert_eq!(answers, [Some(Refusal::NotMember("g".into()))]);
        // A name that is a directory of a file there, or a file's
        // directory, is refused; in the group or earlier in the batch.
        let clash = vec![
            meta("x", 3),
            meta("x/one/two", 3),
            meta("f/g", 3),
            meta("p", 3),
            meta("p/q", 4),
            meta("xy", 5),
        ];
        let Response::Uploads(answers) = t.handle(up(a, clash)).await else { panic!("no answer") };
        let refused: Vec<bool> =
            answers.iter().map(|a| matches!(a, Some(Refusal::BadName(_)))).collect();
        assert_eq!(refused, [true, true, true, false, true, false], "{answers:?}");
        let said = answers[0].as_ref().unwrap().to_string();
        assert!(said.contains("x cannot be shared in g beside x/one"), "{said}");
        // A new name must be in Unicode normal form C; a name the group
        // took before that rule (an op of an older tracker) is still one.
        let older = Op::UploadFile {
            user: "a".into(),
            peer_addr: "127.0.0.1:1".into(),
            group: "g".into(),
            meta: meta("old-cafe\u{301}", 6),
        };
        t.commit(older).await.unwrap();
        let forms = vec![meta("cafe\u{301}", 6), meta("caf\u{e9}", 6), meta("old-cafe\u{301}", 6)];
        let Response::Uploads(answers) = t.handle(up(a, forms)).await else { panic!("no answer") };
        assert!(
            matches!(&answers[0], Some(Refusal::BadName(why)) if why.contains("NFC")),
            "{answers:?}"
        );
        assert_eq!(answers[1], None);
        assert!(matches!(answers[2], Some(Refusal::AlreadySharing { .. })), "{answers:?}");
        let r = t.handle(Request::CreateGroup { token: a, group: "ge\u{301}".into() }).await;
        assert!(matches!(r, Response::Refused(Refusal::BadName(_))), "{r:?}");
        let user = Request::CreateUser { user: "zoe\u{308}".into(), password: "pw".into() };
        let r = t.handle(user).await;
        assert!(matches!(r, Response::Refused(Refusal::BadName(_))), "{r:?}");
        let files = vec!["caf\u{e9}".to_string(), "old-cafe\u{301}".to_string()];
        let r = t.handle(Request::StopShares { token: a, group: "g".into(), files }).await;
        assert_eq!(r, Response::Uploads(vec![None, None]));
        let one = Request::UploadFile { token: a, group: "g".into(), meta: meta("two/x", 3) };
        let r = t.handle(one).await;
        assert!(matches!(r, Response::Refused(Refusal::BadName(_))), "{r:?}");
        let files = vec!["p".to_string(), "xy".to_string()];
        let r = t.handle(Request::StopShares { token: a, group: "g".into(), files }).await;
        assert_eq!(r, Response::Uploads(vec![None, None]));
        let many = vec![meta("m", 9); MAX_UPLOADS + 1];
        let r = t.handle(up(a, many)).await;
        assert!(matches!(r, Response::Refused(Refusal::BadRequest(_))), "{r:?}");
        // Withdrawn many at once, each answered in its place.
        let stop = |token, files: &[&str]| Request::StopShares {
            token,
            group: "g".into(),
            files: files.iter().map(|f| f.to_string()).collect(),
        };
        let Response::Uploads(answers) =
            t.handle(stop(a, &["x/one", "../up", "never", "two"])).await
        else {
            panic!("no answer")
        };
        assert_eq!(answers.len(), 4);
        assert_eq!(answers[0], None);
        assert!(matches!(answers[1], Some(Refusal::BadName(_))), "{answers:?}");
        assert!(matches!(answers[2], Some(Refusal::NoSuchFile { .. })), "{answers:?}");
        assert_eq!(answers[3], None);
        let Response::Uploads(answers) = t.handle(stop(b, &["f"])).await else {
            panic!("no answer")
        };
        assert_eq!(answers, [Some(Refusal::NotMember("g".into()))]);
        let many = vec!["m"; MAX_STOPS + 1];
        let r = t.handle(stop(a, &many)).await;
        assert!(matches!(r, Response::Refused(Refusal::BadRequest(_))), "{r:?}");
        // Answered means on disk: a restart lists the file left.
        drop(t);
        let (t, _) = Tracker::open(TrackerConfig::default(), dir.path()).unwrap();
        let state = t.snapshot();
        let names: Vec<&String> = state.group("g").unwrap().files.keys().collect();
        assert_eq!(names, ["f"]);
    }

    /// A second node (another key) logging in as the same user at the
    /// address of a node still heard from is refused, not let log it out;
    /// the same node coming back, a node of unknown key and a login once
    /// the first logged out replace or take the place as before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_login_at_a_running_node_s_address_with_another_key_is_refused() {
        // With an op log (a commit waits for its fsync) and two hashing
        // workers: two logins at once are checked and committed side by
        // side, as a tracker's are.
        let dir = tempfile::tempdir().unwrap();
        let config = TrackerConfig { hash_workers: 2, ..TrackerConfig::default() };
        let (t, _) = Tracker::open(config, dir.path()).unwrap();
        t.handle(Request::CreateUser { user: "al".into(), password: "pw".into() }).await;
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let login = |addr: &str, key: Option<[u8; 32]>| {
            let req =
                Request::Login { user: "al".into(), password: "pw".into(), peer_addr: addr.into() };
            let t = &t;
            async move {
                match t.reply(req, local, key).await {
                    Reply::Msg(resp) => resp,
                    Reply::Frame(frame) => decode_frame(&frame).unwrap_or_else(Response::Refused),
                }
            }
        };
        let token = |r: Response| match r {
            Response::LoggedIn { token, .. } => token,
            other => panic!("{other:?}"),
        };
        let first = token(login("127.0.0.1:4000", Some([1; 32])).await);
        match login("127.0.0.1:4000", Some([2; 32])).await {
            Response::Refused(Refusal::AddressInUse(why)) => {
                assert!(why.contains("al at 127.0.0.1:4000"), "{why}");
                assert!(why.contains("--advertise"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert!(t.snapshot().session(&first).is_some(), "the running node's session stays");
        // Another address, or another user's node: no matter.
        token(login("127.0.0.1:4001", Some([2; 32])).await);
        // The same node again (a restart within the TTL) replaces its session.
        let again = token(login("127.0.0.1:4000", Some([1; 32])).await);
        assert!(t.snapshot().session(&first).is_none());
        // A link proving no key: as before.
        let unknown = token(login("127.0.0.1:4000", None).await);
        assert!(t.snapshot().session(&again).is_none());
        // Once the node there logged out, another takes the address.
        assert_eq!(t.handle(Request::Logout { token: unknown }).await, Response::Done);
        token(login("127.0.0.1:4000", Some([2; 32])).await);
        // Two at once at a new address: one gets in, the other is refused
        // (a black-box run had both get in, the later logging out the other).
        let (x, y) = tokio::join!(
            login("127.0.0.1:4002", Some([3; 32])),
            login("127.0.0.1:4002", Some([4; 32]))
        );
        let refused = |r: &Response| matches!(r, Response::Refused(Refusal::AddressInUse(_)));
        let logged = |r: &Response| matches!(r, Response::LoggedIn { .. });
        assert!(logged(&x) && refused(&y) || refused(&x) && logged(&y), "{x:?} {y:?}");
    }

    #[tokio::test]
    async fn bad_names_and_addresses_are_refused() {
        let t = Tracker::new();
        let r = t.handle(Request::CreateUser { user: "a b".into(), password: "pw".into() }).await;
        assert!(matches!(r, Response::Refused(Refusal::BadName(_))), "{r:?}");
        let r = t.handle(Request::CreateUser { user: "a".into(), password: String::new() }).await;
        assert!(matches!(r, Response::Refused(Refusal::BadRequest(_))), "{r:?}");
        t.handle(Request::CreateUser { user: "a".into(), password: "p".into() }).await;
        let r = t
            .handle(Request::Login {
                user: "a".into(),
                password: "p".into(),
                peer_addr: "nowhere".into(),
            })
            .await;
        assert!(matches!(r, Response::Refused(Refusal::BadRequest(_))), "{r:?}");
    }

    #[tokio::test]
    async fn path_names_are_checked_and_listed_a_page_at_a_time() {
        let t = Tracker::new();
        let a = Token([1; 16]);
        {
            let mut inner = t.lock();
            let mut op = |op| inner.replica.propose(op, 1).unwrap();
            op(Op::CreateUser { user: "a".into(), password_hash: "x".into() });
            op(Op::Login { user: "a".into(), token: a, peer_addr: "127.0.0.1:1".into() });
            op(Op::CreateGroup { user: "a".into(), group: "g".into() });
        }
        let meta = |name: &str, fill: u8| ringshare_engine::meta::FileMeta {
            name: name.into(),
            len: 1,
            sha1: ringshare_engine::meta::Sha1Digest([fill; 20]),
            piece_hashes: vec![ringshare_engine::meta::Sha1Digest([fill; 20])],
        };
        let up = |name: &str, fill| Request::UploadFile {
            token: a,
            group: "g".into(),
            meta: meta(name, fill),
        };
        let long = format!("d/{}", "c".repeat(256));
        for bad in ["../x", "/abs", "a//b", "a/", "a/./b", "a\\b", long.as_str()] {
            let r = t.handle(up(bad, 1)).await;
            assert!(matches!(r, Response::Refused(Refusal::BadName(_))), "{bad}: {r:?}");
            let r =
                t.handle(Request::FileInfo { token: a, group: "g".into(), file: bad.into() }).await;
            assert!(matches!(r, Response::Refused(Refusal::BadName(_))), "{bad}: {r:?}");
        }
        for i in 0..2500u32 {
            let name = format!("dir{}/f{i:05}", i % 3);
            assert_eq!(t.handle(up(&name, (i % 250) as u8)).await, Response::Done);
        }
        let page = |prefix: &str, after: &str, limit| Request::ListFilesPage {
            token: a,
            group: "g".into(),
            prefix: prefix.into(),
            after: after.into(),
            limit,
        };
        let mut seen: Vec<String> = Vec::new();
        let mut pages = 0;
        loop {
            let after = seen.last().cloned().unwrap_or_default();
            match t.handle(page("", &after, u32::MAX)).await {
                Response::FilesPage { files, more } => {
                    assert!(files.len() <= MAX_PAGE as usize, "the page size is capped");
                    pages += 1;
                    seen.extend(files.into_iter().map(|f| f.name));
                    if !more {
                        break;
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((seen.len(), pages), (2500, 2));
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "sorted, each once");
        match t.handle(page("dir1/", "", 0)).await {
            Response::FilesPage { files, more } => {
                assert_eq!((files.len(), more), (1, true), "a zero limit means one");
                assert_eq!(files[0].name, "dir1/f00001");
            }
            other => panic!("{other:?}"),
        }
        let r = t.handle(page(&"p".repeat(2000), "", 10)).await;
        assert!(matches!(r, Response::Refused(Refusal::BadRequest(_))), "{r:?}");
        let r = t
            .handle(Request::ListFilesPage {
                token: Token([9; 16]),
                group: "g".into(),
                prefix: String::new(),
                after: String::new(),
                limit: 10,
            })
            .await;
        assert_eq!(r, Response::Refused(Refusal::NotLoggedIn));
    }
}
