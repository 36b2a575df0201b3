//! A deterministic swarm simulator over the real protocol code.
//!
//! Every downloader is the shipped [`DownloadCore`] and every piece server
//! connection the shipped [`ServerSession`]; the simulator only replaces
//! sockets, disks, hashing and the clock:
//!
//! - **time** is virtual (an event queue; `now` goes to the cores);
//! - **network**: each host has an uplink and a downlink rate and a one-way
//!   latency to the core of the network (the path between two hosts has
//!   the sum of theirs each way). Piece data moves as fluid flows,
//!   shared max-min at both ends: a sender water-fills its uplink among
//!   its flows, each capped at what its receiver would give it (its
//!   downlink less what its other flows get, or its fair share if that
//!   is more), so uplink a flow cannot use goes to the sender's other
//!   flows; a receiver water-fills its downlink among its incoming flows,
//!   each capped at its sender's share, so downlink a flow cannot use goes
//!   to the receiver's other flows, as TCP flows sharing bottlenecks would
//!   take it. Each end works from the other's figures of its last change
//!   (recomputed for the hosts a flow starts or ends at and the receivers
//!   they send to): a lag, never more than a link's capacity. Before
//!   2026-12-02 (twelfth session) a sender split its uplink equally
//!   (`--equal-split` keeps that for comparison). Each connection sends
//!   one piece at a time, in request order, as one TCP stream does.
//!   Control frames (handshake, bitfield, have, request, cancel, errors)
//!   take the path's latency and no bandwidth. A link carries
//!   [`TCP_PAYLOAD_SHARE`] of its rate as payload (the rest is every
//!   segment's headers; `Scenario::payload_share`). Left out: TCP's own
//!   dynamics (slow start, losses, queueing delay), acknowledgements,
//!   connection setup beyond one round trip, disks and CPU;
//! - **tracker**: answers a download's `WantPeers` after the round trip to
//!   it with every online host that shares the file (seeds and downloaders
//!   with a verified piece) and every downloader that asked for peers
//!   within the tracker's fetcher TTL (when some host shares it), at most
//!   `MAX_LISTED` (200, the sharers first, a random choice of the rest), in
//!   random order, as the real tracker does; a host that leaves stays listed for the peer TTL;
//! - **hashing**: instant; a corrupt host's pieces fail their digest.
//!
//! A seed gives the same run every time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringshare_engine::download::{Action, DownloadCore, PieceFate, Timeouts};
use ringshare_engine::meta::{Bitfield, FileMeta, Sha1Digest, PIECE_LEN};
use ringshare_engine::peer::{self, ErrorCode, Message, ServerAction, ServerSession};
use ringshare_engine::picker::PeerId;
use ringshare_engine::seeding::SeedPlan;
use ringshare_engine::serve::MAX_DOWNLOADERS;
use ringshare_engine::slots::{SendSlots, BUSY_AFTER, SLOT_HOLD};
use ringshare_tracker::fetchers::FETCHER_TTL;
use ringshare_tracker::service::cap_listed;

/// How often each downloading host ticks its core.
const TICK: Duration = Duration::from_millis(50);
/// How long the tracker lists a host after it left.
const PEER_TTL: Duration = Duration::from_secs(30);

/// One host of a scenario.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// Uplink, bytes/s.
    pub up: f64,
    /// Downlink, bytes/s.
    pub down: f64,
    /// One-way latency to the network's core.
    pub latency: Duration,
    /// Holds the whole file from the start.
    pub seed: bool,
    /// Sends garbage for every piece (it claims to hold them all).
    pub corrupt: bool,
    /// When it joins.
    pub join: Duration,
    /// When it leaves, if it does.
    pub leave: Option<Duration>,
    /// When it comes back after leaving (and resumes), if it does.
    pub rejoin: Option<Duration>,
}

impl HostSpec {
    /// A downloader with symmetric links of `mbit` Mbit/s.
    pub fn symmetric(mbit: f64, latency_ms: u64) -> Self {
        Self {
            up: mbit * 1e6 / 8.0,
            down: mbit * 1e6 / 8.0,
            latency: Duration::from_millis(latency_ms),
            seed: false,
            corrupt: false,
            join: Duration::ZERO,
            leave: None,
            rejoin: None,
        }
    }
}

/// A run to simulate.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name in reports.
    pub name: String,
    /// The file's length.
    pub file_len: u64,
    /// Every host; seeds among them.
    pub hosts: Vec<HostSpec>,
    /// Drives every random choice.
    pub seed: u64,
    /// Virtual time after which the run stops.
    pub limit: Duration,
    /// Seeds offer pieces under the shipped plan ([`SeedPlan`], what a
    /// node holding a whole file does); false: every seed shows every
    /// piece to every downloader (before initial seeding, for comparison).
    pub seeding_plan: bool,
    /// The tracker lists the downloaders that asked for peers within
    /// [`FETCHER_TTL`] too, as the shipped tracker does; false: only hosts
    /// holding a piece (before it did, for comparison).
    pub list_fetchers: bool,
    /// Upload slots per host ([`ringshare_engine::slots::SEND_SLOTS`], as the shipped piece servers
    /// keep; 0: every connection sends at once, as before).
    pub send_slots: usize,
    /// A seed sends a connection's requests in the order asked (before it
    /// sent the least-sent first, for comparison).
    pub seed_in_order: bool,
    /// Requests that waited [`BUSY_AFTER`] for an upload slot are answered
    /// with `busy`, as the shipped piece servers answer them; false: they
    /// wait (before `busy`, for comparison).
    pub busy_answers: bool,
    /// A sender splits its uplink equally among its flows (the model
    /// before 2026-12-02's twelfth session, for comparison): uplink a flow
    /// cannot use because its receiver is the bottleneck is lost instead
    /// of going to the sender's other flows.
    pub equal_split: bool,
    /// A host serves the file to any number of downloaders at once (before
    /// [`MAX_DOWNLOADERS`], for comparison).
    pub unlimited_downloaders: bool,
    /// Seeds offer and send second copies before every piece went out
    /// once (before [`SeedPlan::withhold`], for comparison).
    pub second_copies_early: bool,
    /// The share of a link's rate that carries TCP payload
    /// ([`TCP_PAYLOAD_SHARE`]: a rate limiter such as `tbf` counts every
    /// frame's headers too); 1.0 leaves headers out, as the model did
    /// before 2026-12-04. The bounds stay the links' nominal rates.
    pub payload_share: f64,
    /// Peers a download connects to at once
    /// ([`ringshare_engine::download::MAX_PEERS`], what a shipped download
    /// does; other values for comparison).
    pub max_peers: usize,
    /// A downloader leaves once its file is complete, as `ringshare get`
    /// does (it exits); false: it stays and serves what it holds, as a
    /// node that keeps running (the shell, `share`) does.
    pub leave_when_done: bool,
    /// A seed defers a first copy to a downloader that was sent more than
    /// its share of them ([`SeedPlan::defer`], answered `busy`), as the
    /// shipped piece servers do (with `busy_answers`); false: it sends
    /// it (before, for comparison).
    pub defer_first_copies: bool,
}

/// A full TCP segment's payload over its frame on the wire: 1448 bytes
/// of data under 32 of TCP header (with timestamps), 20 of IPv4 and 14 of
/// Ethernet, 1514 in all. The acknowledgements a downloader sends back
/// also take a little of its uplink; left out.
pub const TCP_PAYLOAD_SHARE: f64 = 1448.0 / 1514.0;

/// What a run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Scenario name.
    pub name: String,
    /// Its seed.
    pub seed: u64,
    /// File length.
    pub file_len: u64,
    /// Hosts in all and downloaders among them.
    pub hosts: usize,
    /// Downloaders.
    pub downloaders: usize,
    /// Seconds from its join to complete, per downloader that completed
    /// (sorted).
    pub completion_s: Vec<f64>,
    /// Downloaders that did not complete within the limit.
    pub incomplete: usize,
    /// Lower bounds, seconds: size / seeder upload; size / the slowest
    /// downloader's downlink; bytes to deliver / total upload.
    pub bound_seed_up_s: f64,
    /// See `bound_seed_up_s`.
    pub bound_down_s: f64,
    /// See `bound_seed_up_s`.
    pub bound_total_up_s: f64,
    /// Bytes the seeds uploaded.
    pub seed_uploaded: u64,
    /// Bytes every host uploaded.
    pub total_uploaded: u64,
    /// Upload (all hosts) per second of the run, bytes.
    pub upload_per_s: Vec<u64>,
    /// Link use over time of some hosts: every seed and the first five
    /// downloaders.
    pub traced: Vec<HostTrace>,
    /// Hosts banned by at least one downloader (corrupt ones should be).
    pub banned_hosts: Vec<usize>,
    /// Pieces that failed their digest.
    pub bad_pieces: u64,
    /// Events processed and virtual seconds simulated.
    pub events: u64,
    /// See `events`.
    pub virtual_s: f64,
    /// Every downloader's end, to tell which hosts trail a crowd.
    pub downloader_ends: Vec<HostEnd>,
}

/// How one downloader ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostEnd {
    /// Its index among the scenario's hosts.
    pub host: usize,
    /// Its one-way latency to the network's core, ms.
    pub latency_ms: u64,
    /// When it had the whole file (`None`: it never did).
    pub done_s: Option<f64>,
    /// When it verified its first piece, seconds from its join (`None`:
    /// never): until then it has nothing to upload.
    pub first_piece_s: Option<f64>,
    /// Bytes it uploaded.
    pub uploaded: u64,
}

/// One host's link use, per second of the run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HostTrace {
    /// Its index in the scenario.
    pub host: usize,
    /// "seed", "corrupt" or "downloader".
    pub role: &'static str,
    /// Link capacities, bytes/s.
    pub up_capacity: f64,
    /// See `up_capacity`.
    pub down_capacity: f64,
    /// Bytes sent in each second.
    pub up_per_s: Vec<u64>,
    /// Bytes received in each second.
    pub down_per_s: Vec<u64>,
}

#[derive(Debug)]
enum Ev {
    Tick(usize),
    Join(usize),
    Leave(usize),
    /// A connect finished (or failed: the server is gone).
    Connected(usize),
    /// Frames from a downloader reach the server end of a connection.
    ToServer(usize, Vec<u8>),
    /// A message reaches the downloader end.
    ToClient(usize, ToClient),
    /// A flow may have finished (if the slot's generation still matches).
    FlowDone(usize, u64),
    /// The tracker's answer reaches a downloader.
    Peers(usize, u64, Vec<SocketAddr>),
    /// A host's upload slots may have been held past their time.
    SlotCheck(usize),
}

#[derive(Debug)]
enum ToClient {
    Bitfield(Vec<u8>),
    Have(u32),
    Reject(u32),
    Busy(u32),
    Refused(String),
    Piece(u32),
    Closed,
}

struct Host {
    spec: HostSpec,
    online: bool,
    left_at: Option<f64>,
    have: Bitfield,
    /// A seed's offers ([`Scenario::seeding_plan`]).
    plan: Option<SeedPlan>,
    core: Option<DownloadCore>,
    /// Its downloader's connections: peer id → conn.
    client_conns: HashMap<PeerId, usize>,
    /// Connections it serves.
    server_conns: Vec<usize>,
    /// Incarnation, so that a rejoined host ignores its old events.
    life: u64,
    joined_at: f64,
    /// Seconds from its first join to complete.
    finished_at: f64,
    done: bool,
    up_flows: usize,
    down_flows: usize,
    /// The rates of the flows it receives, summed (set at each fill, less
    /// a flow's rate when it ends).
    in_rate: f64,
    /// Bytes sent (fractions of a byte kept: a flow settles often).
    uploaded: f64,
    /// Its upload slots, as a node's piece server keeps them.
    slots: SendSlots<usize>,
    /// When its download last asked the tracker for peers: it is listed
    /// as fetching the file for [`FETCHER_TTL`] after.
    asked_at: Option<f64>,
    /// When it verified its first piece.
    first_piece_at: Option<f64>,
}

struct Conn {
    client: usize,
    server: usize,
    peer: PeerId,
    client_life: u64,
    server_life: u64,
    session: ServerSession,
    queue: VecDeque<u32>,
    flow: Option<usize>,
    open: bool,
    /// Holds one of its server's upload slots.
    holds: bool,
}

struct Flow {
    conn: usize,
    piece: u32,
    remaining: f64,
    rate: f64,
    /// Its share of its sender's uplink ([`Sim::share`]): the most its
    /// receiver may give it.
    share: f64,
    since: f64,
    /// The slot's occupant: events of an earlier flow in it are stale.
    gen: u64,
    /// The earliest completion event queued for it. A slower rate leaves
    /// that event in place (it finds bytes left and queues the next); only
    /// a faster one queues an earlier event, so stale events stay few.
    scheduled: f64,
    live: bool,
}

/// Runs a scenario to its end or its limit.
pub fn run(sc: &Scenario) -> Report {
    Sim::new(sc).run()
}

struct Sim<'a> {
    sc: &'a Scenario,
    meta: FileMeta,
    t0: Instant,
    now: f64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: Vec<Option<Ev>>,
    free_events: Vec<usize>,
    seq: u64,
    hosts: Vec<Host>,
    conns: Vec<Conn>,
    flows: Vec<Flow>,
    free_flows: Vec<usize>,
    rng: u64,
    upload_per_s: Vec<u64>,
    traced: HashMap<usize, HostTrace>,
    banned: std::collections::BTreeSet<usize>,
    bad_pieces: u64,
    processed: u64,
    /// Downloaders not yet finished nor gone for good, and in all.
    remaining: usize,
    downloaders: usize,
}

fn digest(i: u32) -> Sha1Digest {
    let mut d = [0x33u8; 20];
    d[..4].copy_from_slice(&i.to_be_bytes());
    Sha1Digest(d)
}

fn addr_of(h: usize) -> SocketAddr {
    SocketAddr::from(([10, (h >> 16) as u8, (h >> 8) as u8, h as u8], 7000))
}

fn host_of(a: &SocketAddr) -> usize {
    match a {
        SocketAddr::V4(v) => {
            let o = v.ip().octets();
            (usize::from(o[1]) << 16) | (usize::from(o[2]) << 8) | usize::from(o[3])
        }
        SocketAddr::V6(_) => usize::MAX,
    }
}

impl<'a> Sim<'a> {
    fn new(sc: &'a Scenario) -> Self {
        let pieces = sc.file_len.div_ceil(PIECE_LEN) as u32;
        let meta = FileMeta {
            name: "sim".into(),
            len: sc.file_len,
            sha1: Sha1Digest([7; 20]),
            piece_hashes: (0..pieces).map(digest).collect(),
        };
        let hosts = sc
            .hosts
            .iter()
            .enumerate()
            .map(|(i, spec)| Host {
                have: if spec.seed { Bitfield::full(pieces) } else { Bitfield::new(pieces) },
                plan: (spec.seed && !spec.corrupt && sc.seeding_plan).then(|| {
                    let mut plan = SeedPlan::new(pieces, sc.seed.wrapping_add(i as u64));
                    if sc.second_copies_early {
                        plan = plan.send_second_copies_early();
                    }
                    if !sc.defer_first_copies {
                        plan = plan.never_defer();
                    }
                    plan
                }),
                // The model's flows carry payload: each link a little less.
                spec: HostSpec {
                    up: spec.up * sc.payload_share,
                    down: spec.down * sc.payload_share,
                    ..spec.clone()
                },
                online: false,
                left_at: None,
                core: None,
                client_conns: HashMap::new(),
                server_conns: Vec::new(),
                life: 0,
                joined_at: 0.0,
                finished_at: 0.0,
                done: spec.seed,
                up_flows: 0,
                down_flows: 0,
                in_rate: 0.0,
                uploaded: 0.0,
                slots: SendSlots::new(sc.send_slots),
                asked_at: None,
                first_piece_at: None,
            })
            .collect();
        let mut s = Self {
            sc,
            meta,
            t0: Instant::now(),
            now: 0.0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            free_events: Vec::new(),
            seq: 0,
            hosts,
            conns: Vec::new(),
            flows: Vec::new(),
            free_flows: Vec::new(),
            rng: sc.seed | 1,
            upload_per_s: Vec::new(),
            traced: HashMap::new(),
            banned: Default::default(),
            bad_pieces: 0,
            processed: 0,
            remaining: sc.hosts.iter().filter(|h| !h.seed).count(),
            downloaders: sc.hosts.iter().filter(|h| !h.seed).count(),
        };
        let mut downloaders = 0;
        for (i, h) in sc.hosts.iter().enumerate() {
            let role = match (h.seed, h.corrupt) {
                (_, true) => "corrupt",
                (true, false) => "seed",
                (false, false) => "downloader",
            };
            if role != "downloader" || downloaders < 5 {
                downloaders += usize::from(role == "downloader");
                let t = HostTrace {
                    host: i,
                    role,
                    up_capacity: h.up,
                    down_capacity: h.down,
                    ..HostTrace::default()
                };
                s.traced.insert(i, t);
            }
        }
        for (i, h) in sc.hosts.iter().enumerate() {
            s.at(h.join.as_secs_f64(), Ev::Join(i));
            if let Some(l) = h.leave {
                s.at(l.as_secs_f64(), Ev::Leave(i));
                if let Some(r) = h.rejoin {
                    s.at(r.as_secs_f64().max(l.as_secs_f64()), Ev::Join(i));
                }
            }
        }
        s
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn at(&mut self, t: f64, ev: Ev) {
        let slot = match self.free_events.pop() {
            Some(i) => {
                self.events[i] = Some(ev);
                i
            }
            None => {
                self.events.push(Some(ev));
                self.events.len() - 1
            }
        };
        self.seq += 1;
        // Time in nanoseconds; ties in insertion order.
        let key = (t * 1e9) as u64;
        self.queue.push(Reverse((key, (self.seq << 24) | slot as u64)));
        debug_assert!(slot < 1 << 24);
    }

    fn instant(&self) -> Instant {
        self.t0 + Duration::from_secs_f64(self.now)
    }

    fn one_way(&self, a: usize, b: usize) -> f64 {
        (self.hosts[a].spec.latency + self.hosts[b].spec.latency).as_secs_f64()
    }

    fn run(mut self) -> Report {
        let limit = self.sc.limit.as_secs_f64();
        while let Some(Reverse((key, tag))) = self.queue.pop() {
            let t = key as f64 / 1e9;
            if t > limit {
                break;
            }
            self.now = t;
            let slot = (tag & 0xff_ffff) as usize;
            let Some(ev) = self.events[slot].take() else { continue };
            self.free_events.push(slot);
            self.processed += 1;
            self.dispatch(ev);
            if self.all_done() {
                break;
            }
        }
        self.report()
    }

    /// Every downloader has finished or left for good (kept as a count:
    /// checked after every event, a scan of the hosts made 1000-host runs
    /// quadratic).
    fn all_done(&self) -> bool {
        self.remaining == 0 && self.downloaders > 0
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Join(h) => self.join(h),
            Ev::Leave(h) => self.leave(h),
            Ev::Tick(h) => {
                if self.hosts[h].online && self.hosts[h].core.is_some() {
                    let now = self.instant();
                    // Bytes of a piece on the way from each peer sending
                    // one (what a driver reports from its reads).
                    let sending: Vec<PeerId> = self.hosts[h]
                        .client_conns
                        .iter()
                        .filter(|(_, &c)| self.conns[c].flow.is_some())
                        .map(|(&p, _)| p)
                        .collect();
                    self.with_core(h, |c| {
                        for p in sending {
                            c.on_bytes(p, now);
                        }
                        c.tick(now)
                    });
                    if self.hosts[h].core.is_some() {
                        self.at(self.now + TICK.as_secs_f64(), Ev::Tick(h));
                    }
                }
            }
            Ev::Peers(h, life, addrs) => {
                if self.hosts[h].life == life && self.hosts[h].online {
                    let now = self.instant();
                    self.with_core(h, |c| c.add_peers(&addrs, now));
                }
            }
            Ev::Connected(c) => self.on_connected(c),
            Ev::ToServer(c, bytes) => self.at_server(c, &bytes),
            Ev::ToClient(c, msg) => self.at_client(c, msg),
            Ev::FlowDone(f, version) => self.on_flow_done(f, version),
            Ev::SlotCheck(h) => {
                let now = self.instant();
                for c in self.hosts[h].slots.expire(now) {
                    self.use_slot(c);
                }
                // Connections that waited too long in line: `busy`.
                let (conns, on) = (&self.conns, self.sc.busy_answers);
                let due = self.hosts[h]
                    .slots
                    .overdue(now, |c| on && conns[c].open && conns[c].session.takes_busy());
                for c in due {
                    self.bounce(c);
                }
            }
        }
    }

    fn join(&mut self, h: usize) {
        let host = &mut self.hosts[h];
        host.online = true;
        host.life += 1;
        host.left_at = None;
        host.joined_at = if host.life == 1 { self.now } else { host.joined_at };
        if host.have.is_complete() {
            host.done = true;
            return;
        }
        let timeouts = Timeouts { max_peers: self.sc.max_peers, ..Timeouts::default() };
        let core = DownloadCore::new(
            self.meta.clone(),
            format!("u{h}"),
            vec![],
            Some(addr_of(h)),
            &host.have,
            timeouts,
            self.sc.seed ^ (h as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            self.t0 + Duration::from_secs_f64(self.now),
        );
        host.core = Some(core);
        self.at(self.now, Ev::Tick(h));
    }

    fn leave(&mut self, h: usize) {
        if !self.hosts[h].online {
            return;
        }
        self.hosts[h].online = false;
        self.hosts[h].left_at = Some(self.now);
        self.hosts[h].core = None;
        if !self.hosts[h].done && self.hosts[h].spec.rejoin.is_none() {
            self.remaining -= 1;
        }
        let host = &mut self.hosts[h];
        let mut conns: Vec<usize> = host.client_conns.drain().map(|(_, c)| c).collect();
        conns.append(&mut host.server_conns);
        conns.sort_unstable();
        for c in conns {
            self.close_conn(c, true);
        }
    }

    /// Runs `f` on host `h`'s core and carries out what it asks.
    fn with_core<R>(&mut self, h: usize, f: impl FnOnce(&mut DownloadCore) -> R) -> Option<R> {
        let core = self.hosts[h].core.as_mut()?;
        let r = f(core);
        let actions: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        for a in actions {
            self.apply(h, a);
        }
        Some(r)
    }

    fn apply(&mut self, h: usize, action: Action) {
        match action {
            Action::Connect { peer, addr } => {
                let server = host_of(&addr);
                let c = self.conns.len();
                self.conns.push(Conn {
                    client: h,
                    server,
                    peer,
                    client_life: self.hosts[h].life,
                    server_life: self.hosts.get(server).map_or(0, |s| s.life),
                    session: ServerSession::new(64),
                    queue: VecDeque::new(),
                    flow: None,
                    open: true,
                    holds: false,
                });
                self.hosts[h].client_conns.insert(peer, c);
                let rtt = 2.0 * self.one_way(h, server.min(self.hosts.len() - 1));
                self.at(self.now + rtt, Ev::Connected(c));
            }
            Action::Send { peer, bytes } => {
                if let Some(&c) = self.hosts[h].client_conns.get(&peer) {
                    let d = self.one_way(h, self.conns[c].server);
                    self.at(self.now + d, Ev::ToServer(c, bytes));
                }
            }
            // One file per host: nothing takes a released link over.
            Action::Close { peer, .. } | Action::Release { peer } => {
                if let Some(c) = self.hosts[h].client_conns.remove(&peer) {
                    self.close_conn(c, false);
                }
            }
            Action::WantPeers => {
                self.hosts[h].asked_at = Some(self.now);
                let now = self.now;
                let sharer = |o: &Host| {
                    o.have.count_ones() > 0
                        && (o.online || o.left_at.is_some_and(|l| now - l < PEER_TTL.as_secs_f64()))
                };
                // Fetchers only beside a sharer, as the tracker lists them:
                // the sharers first, then the fetchers, cut to the
                // tracker's MAX_LISTED as it cuts them.
                let shared = self.hosts.iter().any(sharer);
                let fetcher = |o: &Host| {
                    self.sc.list_fetchers
                        && shared
                        && o.asked_at.is_some_and(|a| now - a < FETCHER_TTL.as_secs_f64())
                };
                let others = || self.hosts.iter().enumerate().filter(|&(i, _)| i != h);
                let mut list: Vec<SocketAddr> =
                    others().filter(|(_, o)| sharer(o)).map(|(i, _)| addr_of(i)).collect();
                let sharers = list.len();
                list.extend(
                    others().filter(|(_, o)| !sharer(o) && fetcher(o)).map(|(i, _)| addr_of(i)),
                );
                cap_listed(&mut list, sharers, |n| (self.rand() % n as u64) as usize);
                for i in (1..list.len()).rev() {
                    let j = (self.rand() % (i as u64 + 1)) as usize;
                    list.swap(i, j);
                }
                // The tracker is as far as the host's own latency, twice.
                let rtt = 2.0 * self.hosts[h].spec.latency.as_secs_f64();
                let life = self.hosts[h].life;
                self.at(self.now + rtt, Ev::Peers(h, life, list));
            }
            Action::Complete => {
                let host = &mut self.hosts[h];
                if !host.done {
                    self.remaining -= 1;
                }
                host.done = true;
                host.finished_at = self.now - host.joined_at;
                host.core = None;
                if self.sc.leave_when_done {
                    self.at(self.now, Ev::Leave(h));
                }
            }
            Action::Failed(_) => {
                self.hosts[h].core = None;
            }
            Action::SyncState | Action::FirstPiece => {}
        }
    }

    fn on_connected(&mut self, c: usize) {
        let (client, server, peer) =
            (self.conns[c].client, self.conns[c].server, self.conns[c].peer);
        if !self.conns[c].open || self.hosts[client].life != self.conns[c].client_life {
            return;
        }
        let up = self.hosts.get(server).is_some_and(|s| s.online);
        if !up {
            self.conns[c].open = false;
            self.hosts[client].client_conns.remove(&peer);
            self.with_core(client, |core| core.closed(peer, "connection refused"));
            return;
        }
        self.conns[c].server_life = self.hosts[server].life;
        self.hosts[server].server_conns.push(c);
        let now = self.instant();
        self.with_core(client, |core| core.connected(peer, now));
    }

    fn at_server(&mut self, c: usize, mut bytes: &[u8]) {
        let (server, client) = (self.conns[c].server, self.conns[c].client);
        if !self.conns[c].open || self.hosts[server].life != self.conns[c].server_life {
            return;
        }
        let d = self.one_way(client, server);
        let now = self.instant();
        while let Ok((msg, used)) = peer::decode(bytes) {
            bytes = &bytes[used..];
            let host = &mut self.hosts[server];
            let (have, corrupt) = (&host.have, host.spec.corrupt);
            let has = |p: u32| corrupt || have.get(p);
            let answer = self.conns[c].session.on_message_at(
                &msg,
                has,
                host.plan.as_mut().map(|p| (p, now)),
            );
            // A reject goes out ahead of the offers made with it, as the
            // piece servers send it (`share::session_message`).
            if let Ok(ServerAction::Reject { piece, .. }) = answer {
                self.at(self.now + d, Ev::ToClient(c, ToClient::Reject(piece)));
            }
            self.send_offers(c);
            match answer {
                Ok(ServerAction::Admit { .. })
                    if !self.sc.unlimited_downloaders
                        && self.hosts[server]
                            .server_conns
                            .iter()
                            .filter(|&&k| k != c && self.conns[k].session.is_open())
                            .count()
                            >= MAX_DOWNLOADERS =>
                {
                    // As a node's piece server refuses the next downloader
                    // of a file it serves to its cap (`ServeTable::admit`).
                    let text =
                        format!("serving this file to {MAX_DOWNLOADERS} downloaders already");
                    self.at(self.now + d, Ev::ToClient(c, ToClient::Refused(text)));
                    self.close_conn(c, true);
                    return;
                }
                Ok(ServerAction::Admit { .. }) => {
                    let geometry = self.meta.geometry();
                    let host = &mut self.hosts[server];
                    let bits = if corrupt {
                        self.conns[c].session.accept(geometry);
                        Bitfield::full(self.meta.piece_hashes.len() as u32)
                    } else {
                        let plan = host.plan.as_mut().map(|p| (p, now));
                        let told = self.conns[c].session.accept_with(geometry, plan);
                        told.unwrap_or_else(|| host.have.clone())
                    };
                    self.at(
                        self.now + d,
                        Ev::ToClient(c, ToClient::Bitfield(bits.as_bytes().to_vec())),
                    );
                }
                Ok(ServerAction::Serve { piece, .. }) => {
                    self.conns[c].queue.push_back(piece);
                    if self.conns[c].flow.is_none() {
                        self.start_next(c);
                    }
                }
                Ok(ServerAction::Cancel { piece, .. }) => {
                    if let Some(pos) = self.conns[c].queue.iter().position(|p| *p == piece) {
                        self.conns[c].queue.remove(pos);
                        self.served(c);
                    }
                }
                Ok(ServerAction::Reject { .. } | ServerAction::Nothing) => {}
                Err(r) => {
                    self.at(self.now + d, Ev::ToClient(c, ToClient::Refused(r.text)));
                    self.close_conn(c, true);
                    return;
                }
            }
        }
    }

    fn at_client(&mut self, c: usize, msg: ToClient) {
        let (client, peer) = (self.conns[c].client, self.conns[c].peer);
        if self.hosts[client].life != self.conns[c].client_life
            || self.hosts[client].client_conns.get(&peer) != Some(&c)
        {
            return;
        }
        let now = self.instant();
        match msg {
            ToClient::Bitfield(b) => {
                self.with_core(client, |core| core.on_message(peer, &Message::Bitfield(&b), now));
            }
            ToClient::Have(i) => {
                self.with_core(client, |core| core.on_message(peer, &Message::Have(i), now));
            }
            ToClient::Reject(piece) => {
                let g = self.meta.geometry();
                let len = g.piece(u64::from(piece)).map_or(0, |i| g.len_of(i)) as u32;
                let m = Message::Reject { piece, offset: 0, len };
                self.with_core(client, |core| core.on_message(peer, &m, now));
            }
            ToClient::Busy(piece) => {
                let g = self.meta.geometry();
                let len = g.piece(u64::from(piece)).map_or(0, |i| g.len_of(i)) as u32;
                let m = Message::Busy { piece, offset: 0, len };
                self.with_core(client, |core| core.on_message(peer, &m, now));
            }
            ToClient::Refused(text) => {
                let m = Message::Error { code: ErrorCode::BadMessage, text: &text };
                self.hosts[client].client_conns.remove(&peer);
                self.with_core(client, |core| core.on_message(peer, &m, now));
            }
            ToClient::Closed => {
                self.hosts[client].client_conns.remove(&peer);
                self.with_core(client, |core| core.closed(peer, "closed by the server"));
            }
            ToClient::Piece(piece) => {
                let len =
                    self.meta.geometry().len_of(
                        self.meta.geometry().piece(u64::from(piece)).expect("a served piece"),
                    ) as usize;
                let fate = self.with_core(client, |core| core.on_piece(peer, piece, 0, len, now));
                if fate != Some(PieceFate::Verify) {
                    return;
                }
                let server = self.conns[c].server;
                let corrupt = self.hosts[server].spec.corrupt;
                let d = if corrupt { Sha1Digest([0; 20]) } else { digest(piece) };
                let write =
                    self.with_core(client, |core| core.piece_hashed(piece, d)) == Some(true);
                if !write {
                    if corrupt {
                        self.bad_pieces += 1;
                        self.banned.insert(server);
                    }
                    return;
                }
                self.hosts[client].have.set(piece);
                self.hosts[client].first_piece_at.get_or_insert(self.now);
                self.with_core(client, |core| core.piece_written(piece, Ok(()), now));
                // Every downloader this host serves hears of it.
                let serving: Vec<usize> = self.hosts[client].server_conns.clone();
                for sc in serving {
                    if self.conns[sc].open && self.conns[sc].session.is_open() {
                        let d = self.one_way(client, self.conns[sc].client);
                        self.at(self.now + d, Ev::ToClient(sc, ToClient::Have(piece)));
                    }
                }
            }
        }
    }

    /// A request of connection `c` was answered: its session (and the
    /// seed's plan) learn it; any piece that offers goes out as a `have`.
    fn served(&mut self, c: usize) {
        let now = self.instant();
        let server = self.conns[c].server;
        let plan = self.hosts[server].plan.as_mut().map(|p| (p, now));
        self.conns[c].session.served_at(plan);
        self.send_offers(c);
    }

    /// A `have` to connection `c`'s downloader for each piece its session
    /// was offered since the last look.
    fn send_offers(&mut self, c: usize) {
        let d = self.one_way(self.conns[c].server, self.conns[c].client);
        for piece in self.conns[c].session.take_offers() {
            self.at(self.now + d, Ev::ToClient(c, ToClient::Have(piece)));
        }
    }

    /// A seed sends, of the pieces a connection asked for, the one it sent
    /// least first (moved to the front of `c`'s queue), and its slots go
    /// first to those pieces: the rank to ask for a slot with.
    fn least_sent_first(&mut self, c: usize) -> u32 {
        let s = self.conns[c].server;
        let Some(plan) = &self.hosts[s].plan else { return 0 };
        let q = &mut self.conns[c].queue;
        if self.sc.seed_in_order {
            return q.front().map_or(0, |&p| plan.sent(p));
        }
        let Some(i) = (0..q.len()).min_by_key(|&i| (plan.sent(q[i]), i)) else { return 0 };
        let p = q.remove(i).expect("in range");
        q.push_front(p);
        plan.sent(p)
    }

    /// Whether connection `c`'s server, a seed, defers `piece`
    /// ([`ServerSession::defers_at`]).
    fn defers(&mut self, c: usize, piece: u32, now: Instant) -> bool {
        let plan = self.hosts[self.conns[c].server].plan.as_mut().map(|p| (p, now));
        self.conns[c].session.defers_at(piece, plan)
    }

    /// The server end sends the next queued piece of connection `c`, once
    /// it holds one of its server's upload slots.
    fn start_next(&mut self, c: usize) {
        if self.conns[c].queue.is_empty() || self.conns[c].flow.is_some() {
            return;
        }
        let s = self.conns[c].server;
        let rank = self.least_sent_first(c);
        if !self.conns[c].holds {
            let now = self.instant();
            if !self.hosts[s].slots.acquire_ranked(c, rank, now) {
                if self.sc.busy_answers && self.conns[c].session.takes_busy() {
                    self.at(self.now + BUSY_AFTER.as_secs_f64() + 1e-6, Ev::SlotCheck(s));
                }
                return;
            }
            self.conns[c].holds = true;
            self.at(self.now + SLOT_HOLD.as_secs_f64(), Ev::SlotCheck(s));
        }
        // A seed serving a crowd its first copies keeps back a piece that
        // went out since it was asked for (a `reject`), defers a first
        // copy to a downloader sent more than its share (a `busy`), and
        // sends the next.
        let piece = loop {
            let Some(piece) = self.conns[c].queue.pop_front() else {
                self.give_back(c);
                return;
            };
            let now = self.instant();
            let plan = self.hosts[s].plan.as_mut().map(|p| (p, now));
            let answer = if self.conns[c].session.withhold_at(piece, plan) {
                ToClient::Reject(piece)
            } else if self.sc.busy_answers && self.defers(c, piece, now) {
                ToClient::Busy(piece)
            } else {
                break piece;
            };
            let d = self.one_way(s, self.conns[c].client);
            self.at(self.now + d, Ev::ToClient(c, answer));
            self.send_offers(c);
            self.least_sent_first(c);
        };
        if let Some(plan) = self.hosts[s].plan.as_mut() {
            self.conns[c].session.sending_at(piece, plan);
        }
        let g = self.meta.geometry();
        let len = g.len_of(g.piece(u64::from(piece)).expect("range-checked")) as f64;
        let mut f = Flow {
            conn: c,
            piece,
            remaining: len,
            rate: 0.0,
            share: 0.0,
            since: self.now,
            gen: 0,
            scheduled: f64::INFINITY,
            live: true,
        };
        let id = match self.free_flows.pop() {
            Some(i) => {
                f.gen = self.flows[i].gen + 1;
                self.flows[i] = f;
                i
            }
            None => {
                self.flows.push(f);
                self.flows.len() - 1
            }
        };
        self.conns[c].flow = Some(id);
        let (s, r) = (self.conns[c].server, self.conns[c].client);
        self.hosts[s].up_flows += 1;
        self.hosts[r].down_flows += 1;
        self.reshare(s, r);
    }

    /// Connection `c` waited [`BUSY_AFTER`] in line and left it
    /// ([`SendSlots::overdue`]): each request queued is answered `busy`,
    /// as the piece servers answer them (`share::session_busy`).
    fn bounce(&mut self, c: usize) {
        let (s, client) = (self.conns[c].server, self.conns[c].client);
        let d = self.one_way(s, client);
        let now = self.instant();
        while let Some(piece) = self.conns[c].queue.pop_front() {
            self.at(self.now + d, Ev::ToClient(c, ToClient::Busy(piece)));
            let plan = self.hosts[s].plan.as_mut().map(|p| (p, now));
            self.conns[c].session.served_at(plan);
        }
        self.send_offers(c);
    }

    /// The flows host `h` sends (`up`) or receives.
    fn flows_at(&self, h: usize, up: bool) -> Vec<usize> {
        let host = &self.hosts[h];
        let mut out: Vec<usize> = if up {
            host.server_conns.iter().filter_map(|&c| self.conns[c].flow).collect()
        } else {
            host.client_conns.values().filter_map(|&c| self.conns[c].flow).collect()
        };
        out.sort_unstable();
        out
    }

    /// Each flow host `h` receives, with its share of `h`'s downlink:
    /// water-filled, each flow capped at its share of its sender's uplink
    /// ([`share`](Self::share)), so that downlink a flow cannot use (its
    /// sender is busy with others) goes to the other flows. Notes their
    /// sum for the senders' next shares.
    fn fill(&mut self, h: usize) -> Vec<(usize, f64)> {
        let mut caps: Vec<(f64, usize)> = self
            .flows_at(h, false)
            .into_iter()
            .map(|f| {
                let cap = if self.sc.equal_split {
                    let s = &self.hosts[self.conns[self.flows[f].conn].server];
                    s.spec.up / s.up_flows.max(1) as f64
                } else {
                    self.flows[f].share
                };
                (cap, f)
            })
            .collect();
        caps.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        let (shares, _) = water_fill(self.hosts[h].spec.down, &caps);
        self.hosts[h].in_rate = shares.iter().map(|s| s.1).sum();
        shares
    }

    /// Host `h`'s uplink shared among the flows it sends: water-filled,
    /// each flow capped at what its receiver would give it (its downlink
    /// less what its other flows get now, or its fair share if more), and
    /// what no receiver can take spread evenly on top. A flow's rate is capped
    /// at its share ([`fill`](Self::fill)), so the rates out of a host
    /// never sum past its uplink; the receivers' figures are those of
    /// their last fill (a fluid model's lag, not a loss of capacity).
    fn share(&mut self, h: usize) {
        let mut caps: Vec<(f64, usize)> = self
            .flows_at(h, true)
            .into_iter()
            .map(|f| {
                let r = &self.hosts[self.conns[self.flows[f].conn].client];
                let rate = self.flows[f].rate;
                let others = (r.in_rate - rate).max(0.0);
                let fair = r.spec.down / r.down_flows.max(1) as f64;
                ((r.spec.down - others).max(fair), f)
            })
            .collect();
        if caps.is_empty() {
            return;
        }
        caps.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        let (shares, spare) = water_fill(self.hosts[h].spec.up, &caps);
        let extra = spare / shares.len() as f64;
        for (f, share) in shares {
            self.flows[f].share = share + extra;
        }
    }

    /// Flow counts changed at `a` and `b`: every flow whose rate may
    /// depend on them gets its new rate and completion time. A flow's rate
    /// is its share of its receiver's downlink ([`fill`](Self::fill)),
    /// which never exceeds an equal split of its sender's uplink; so the
    /// flows into `a` and `b`, and into every host `a` or `b` sends to,
    /// are redone.
    fn reshare(&mut self, a: usize, b: usize) {
        if !self.sc.equal_split {
            self.share(a);
            self.share(b);
        }
        let mut hosts: Vec<usize> = vec![a, b];
        for h in [a, b] {
            for f in self.flows_at(h, true) {
                hosts.push(self.conns[self.flows[f].conn].client);
            }
        }
        hosts.sort_unstable();
        hosts.dedup();
        for h in hosts {
            for (f, rate) in self.fill(h) {
                self.settle(f);
                let fl = &mut self.flows[f];
                fl.rate = rate;
                let done = self.now + fl.remaining / fl.rate.max(1.0);
                if done < fl.scheduled - 1e-9 {
                    fl.scheduled = done;
                    let g = fl.gen;
                    self.at(done, Ev::FlowDone(f, g));
                }
            }
        }
    }

    /// Brings a flow's remaining bytes up to now.
    fn settle(&mut self, f: usize) {
        let now = self.now;
        let fl = &mut self.flows[f];
        let since = fl.since;
        let sent = (fl.rate * (now - since)).min(fl.remaining);
        fl.remaining -= sent;
        fl.since = now;
        let c = fl.conn;
        let (s, r) = (self.conns[c].server, self.conns[c].client);
        self.hosts[s].uploaded += sent;
        spread(&mut self.upload_per_s, since, now, sent);
        if let Some(t) = self.traced.get_mut(&s) {
            spread(&mut t.up_per_s, since, now, sent);
        }
        if let Some(t) = self.traced.get_mut(&r) {
            spread(&mut t.down_per_s, since, now, sent);
        }
    }

    fn on_flow_done(&mut self, f: usize, gen: u64) {
        if !self.flows[f].live || self.flows[f].gen != gen {
            return;
        }
        self.settle(f);
        let fl = &mut self.flows[f];
        if fl.remaining > 0.5 {
            // Slowed down since this was queued: not done yet.
            let done = self.now + fl.remaining / fl.rate.max(1.0);
            fl.scheduled = done;
            self.at(done, Ev::FlowDone(f, gen));
            return;
        }
        let (c, piece) = (self.flows[f].conn, self.flows[f].piece);
        self.end_flow(f);
        let (s, r) = (self.conns[c].server, self.conns[c].client);
        self.served(c);
        let d = self.one_way(s, r);
        self.at(self.now + d, Ev::ToClient(c, ToClient::Piece(piece)));
        // One piece per turn: the slot goes to the next in line, and this
        // connection lines up again for its next piece.
        self.give_back(c);
        self.start_next(c);
        if self.conns[c].flow.is_none() {
            self.reshare(s, r);
        }
    }

    /// Connection `c` leaves its server's upload slots: a slot it holds
    /// goes to the next connection in line with a piece to send.
    fn give_back(&mut self, c: usize) {
        let s = self.conns[c].server;
        let Some(host) = self.hosts.get_mut(s) else { return };
        if !std::mem::replace(&mut self.conns[c].holds, false) {
            host.slots.forget(c);
            return;
        }
        if let Some(n) = host.slots.release(c, self.t0 + Duration::from_secs_f64(self.now)) {
            self.use_slot(n);
        }
    }

    /// Connection `c` was handed an upload slot: it sends, or gives the
    /// slot on at once if it has nothing to send.
    fn use_slot(&mut self, c: usize) {
        let mut next = Some(c);
        while let Some(n) = next {
            let s = self.conns[n].server;
            let conn = &self.conns[n];
            if conn.open && conn.flow.is_none() && !conn.queue.is_empty() {
                self.conns[n].holds = true;
                self.start_next(n);
                self.at(self.now + SLOT_HOLD.as_secs_f64(), Ev::SlotCheck(s));
                return;
            }
            // A sender whose slot expired is still busy: it keeps sending
            // and holds nothing; the slot moves on.
            let now = self.instant();
            next = self.hosts[s].slots.release(n, now);
        }
    }

    fn end_flow(&mut self, f: usize) {
        let c = self.flows[f].conn;
        self.flows[f].live = false;
        self.free_flows.push(f);
        self.conns[c].flow = None;
        let (s, r) = (self.conns[c].server, self.conns[c].client);
        self.hosts[s].up_flows -= 1;
        self.hosts[r].down_flows -= 1;
        self.hosts[r].in_rate = (self.hosts[r].in_rate - self.flows[f].rate).max(0.0);
    }

    /// Ends a connection; `tell_client`: the downloader learns it after
    /// the path's latency (a server that left, or refused).
    fn close_conn(&mut self, c: usize, tell_client: bool) {
        if !self.conns[c].open {
            return;
        }
        self.conns[c].open = false;
        self.conns[c].queue.clear();
        let (s, r) = (self.conns[c].server, self.conns[c].client);
        if let Some(plan) = self.hosts.get_mut(s).and_then(|h| h.plan.as_mut()) {
            self.conns[c].session.close_at(plan);
        }
        if let Some(f) = self.conns[c].flow {
            self.settle(f);
            self.end_flow(f);
            self.reshare(s, r);
        }
        self.give_back(c);
        if let Some(h) = self.hosts.get_mut(s) {
            h.server_conns.retain(|x| *x != c);
        }
        if tell_client && self.hosts[r].online {
            let d = self.one_way(s.min(self.hosts.len() - 1), r);
            self.at(self.now + d, Ev::ToClient(c, ToClient::Closed));
        }
    }

    fn report(&self) -> Report {
        let mut completion: Vec<f64> = Vec::new();
        let mut incomplete = 0;
        for h in self.hosts.iter().filter(|h| !h.spec.seed) {
            if h.done {
                completion.push(h.finished_at);
            } else {
                incomplete += 1;
            }
        }
        completion.sort_by(f64::total_cmp);
        let len = self.sc.file_len as f64;
        let seed_up: f64 =
            self.sc.hosts.iter().filter(|h| h.seed && !h.corrupt).map(|h| h.up).sum();
        let down_min =
            self.sc.hosts.iter().filter(|h| !h.seed).map(|h| h.down).fold(f64::INFINITY, f64::min);
        let downloaders = self.sc.hosts.iter().filter(|h| !h.seed).count();
        let total_up: f64 = self.sc.hosts.iter().map(|h| h.up).sum();
        Report {
            name: self.sc.name.clone(),
            seed: self.sc.seed,
            file_len: self.sc.file_len,
            hosts: self.sc.hosts.len(),
            downloaders,
            completion_s: completion,
            incomplete,
            bound_seed_up_s: len / seed_up,
            bound_down_s: len / down_min,
            bound_total_up_s: len * downloaders as f64 / total_up,
            seed_uploaded: self
                .hosts
                .iter()
                .filter(|h| h.spec.seed && !h.spec.corrupt)
                .map(|h| h.uploaded.round() as u64)
                .sum(),
            total_uploaded: self.hosts.iter().map(|h| h.uploaded.round() as u64).sum(),
            upload_per_s: self.upload_per_s.clone(),
            traced: {
                let mut t: Vec<HostTrace> = self.traced.values().cloned().collect();
                t.sort_by_key(|t| t.host);
                t
            },
            banned_hosts: self.banned.iter().copied().collect(),
            bad_pieces: self.bad_pieces,
            events: self.processed,
            virtual_s: self.now,
            downloader_ends: self
                .hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| !h.spec.seed)
                .map(|(i, h)| HostEnd {
                    host: i,
                    latency_ms: h.spec.latency.as_millis() as u64,
                    done_s: h.done.then_some(h.finished_at),
                    first_piece_s: h.first_piece_at.map(|t| t - h.joined_at),
                    uploaded: h.uploaded.round() as u64,
                })
                .collect(),
        }
    }
}

/// Adds `bytes` sent evenly over `[from, to]` seconds to per-second totals.
/// Max-min shares of `capacity` among flows with caps (sorted ascending):
/// each flow's share and the capacity left over.
fn water_fill(capacity: f64, caps: &[(f64, usize)]) -> (Vec<(usize, f64)>, f64) {
    let mut left = capacity;
    let n = caps.len();
    let shares = caps
        .iter()
        .enumerate()
        .map(|(i, &(cap, f))| {
            let share = cap.min(left / (n - i) as f64);
            left -= share;
            (f, share)
        })
        .collect();
    (shares, left.max(0.0))
}

fn spread(v: &mut Vec<u64>, from: f64, to: f64, bytes: f64) {
    if bytes <= 0.0 {
        return;
    }
    let last = to as usize;
    if v.len() <= last {
        v.resize(last + 1, 0);
    }
    if to - from <= 0.0 {
        v[last] += bytes as u64;
        return;
    }
    let mut t = from;
    while t < to {
        let sec = t as usize;
        let end = ((sec + 1) as f64).min(to);
        v[sec] += (bytes * (end - t) / (to - from)).round() as u64;
        t = end;
    }
}
