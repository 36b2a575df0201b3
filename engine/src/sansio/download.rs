//! The download core: one download's whole protocol logic, with no I/O.
//!
//! No sockets, threads, files or clock reads in here: a driver (the
//! threads driver in [`crate::fetch`], a simulator) feeds it events with
//! `now` passed in and carries out the [`Action`]s it queues. It owns
//!
//! - the [`Picker`] (rarest first, endgame duplicates and their cancels);
//! - each peer's session: connecting → handshake sent → bitfield → active;
//!   `have`s, requests in the order sent (the first window right behind the
//!   handshake, one round trip before the bitfield), cancels,
//!   `reject` answers;
//! - each peer's request window ([`PeerFlow`]: its rate × round trip, no
//!   global count), topped up after every event that could open it;
//! - stall and handshake timeouts, bans of peers that sent a piece that
//!   failed its SHA1 (the piece is requested elsewhere), when to ask for
//!   peers, when to make the record of pieces durable, and when the
//!   download is complete or has failed.
//!
//! Piece data never passes through the core: a driver reads it into its
//! own buffer and reports the piece's header ([`DownloadCore::on_piece`]);
//! the core answers whether to verify it ([`PieceFate`]). The driver
//! hashes it (or did so while receiving) and reports the digest
//! ([`DownloadCore::piece_hashed`]); the core compares it with the file's
//! piece hash and only then says to write. So nothing is ever written that
//! did not pass its SHA1, whatever the driver or the peers do.
//!
//! Memory: requests are what the windows size; piece data in memory is
//! bounded by the driver's buffers, which hold only data that has arrived
//! and waits to be hashed or written.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::flow::PeerFlow;
use crate::meta::{Bitfield, FileMeta, Geometry, Sha1Digest};
use crate::peer::{self, ErrorCode, Message};
use crate::picker::{PeerId, Picker};

/// How long a request may go unanswered, with no byte from its peer
/// either, before the peer counts as stalled. Counted from the last byte
/// too: a seed whose upload is split among a thousand downloaders sends a
/// 512 KiB piece in 42 s at 100 Mbit/s, and is slow, not stalled.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a driver need report that bytes are arriving from a peer
/// ([`DownloadCore::on_bytes`]) while no whole frame has.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// How long a connection and its handshake's answer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often to ask for peers while some are connected and the lists
/// bring no new ones.
pub const PEER_REFRESH: Duration = Duration::from_secs(2);
/// How often to ask for peers while none is connected, or while each list
/// brings new ones (a swarm forming: in a flash crowd the downloaders are
/// listed once they verify a first piece, and every half second sooner
/// they meet is a half second more of their uploads); the interval
/// doubles up to [`PEER_REFRESH`] after a list with nobody new.
pub const PEER_RETRY: Duration = Duration::from_millis(500);
/// A download with no peer that can serve it (none connected shows a
/// piece still missing, none is sending one) for this long fails.
pub const NO_PEER_LIMIT: Duration = Duration::from_secs(60);
/// A download whose peer lists have named nobody but this node for this
/// long, with no peer connected that can serve it, fails: no node shares
/// the file (its sharers stopped or crashed; a node that restarts is
/// listed again within seconds of its login). Shorter than
/// [`NO_PEER_LIMIT`], which waits out peers that are listed but
/// unreachable and trackers that do not answer.
pub const NO_SHARER_LIMIT: Duration = Duration::from_secs(10);
/// How a download that found no node listed for [`NO_SHARER_LIMIT`] fails
/// (the start of its reason; a bulk get looks for it).
pub const NONE_LISTED: &str = "no node shares the file";
/// How a plaintext download refused by every node listed ends its reason
/// (they serve encrypted links only).
pub const WITHOUT_PLAINTEXT: &str = "run it without --plaintext";
/// How often the record of verified pieces is made durable.
pub const SYNC_EVERY: Duration = Duration::from_millis(500);
/// How long a request may wait behind others in a peer's queue before it
/// is asked elsewhere, when another peer has the piece.
pub const REQUEST_PATIENCE: Duration = Duration::from_secs(4);
/// How long a request must have waited at a peer, beyond two of that
/// peer's round trips ([`DownloadCore`]'s stealing), before a peer with
/// nothing else to send may take it over: a request queued behind
/// others since it was sent, or the first in line when nothing has
/// arrived from that peer since it was sent or since its last bytes (a
/// peer whose upload slots are all taken). Longer than a request waits
/// at a peer that keeps up (its window is its rate × round trip), so a
/// lone download on a long path never moves requests back and forth.
pub const STEAL_AFTER: Duration = Duration::from_millis(250);
/// How long after a look for a request to take over found none the next
/// look waits.
const STEAL_RETRY: Duration = Duration::from_millis(250);
/// How long a peer that answered a request with `busy` is not asked for
/// that piece again (its upload slots were taken for
/// [`crate::slots::BUSY_AFTER`]): the piece is asked of others meanwhile.
pub const BUSY_SNOOZE: Duration = Duration::from_secs(2);
/// How long a download with nothing to ask of anyone waits before it asks
/// peers again for the pieces they answered with `reject`. A seed keeps a
/// piece back while a crowd gets its first copies and offers it again
/// later (`crate::seeding`), but only on a request or a `have` from the
/// downloader: one left with nothing else to fetch sends neither. (The
/// wait does not count as a peer serving: one that rejects every time
/// still fails the download at [`NO_PEER_LIMIT`].)
pub const REJECT_RETRY: Duration = Duration::from_secs(5);
/// Most peers one download connects to at once (BitTorrent clients keep
/// 50–80): a swarm of thousands would otherwise have every downloader
/// connect to every other.
pub const MAX_PEERS: usize = 64;

/// The core's timeouts (the defaults are the constants above).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// See [`STALL_TIMEOUT`].
    pub stall: Duration,
    /// See [`CONNECT_TIMEOUT`].
    pub connect: Duration,
    /// See [`NO_PEER_LIMIT`].
    pub no_peer: Duration,
    /// See [`NO_SHARER_LIMIT`].
    pub no_sharer: Duration,
    /// See [`MAX_PEERS`].
    pub max_peers: usize,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            stall: STALL_TIMEOUT,
            connect: CONNECT_TIMEOUT,
            no_peer: NO_PEER_LIMIT,
            no_sharer: NO_SHARER_LIMIT,
            max_peers: MAX_PEERS,
        }
    }
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a connection to this peer; report [`DownloadCore::connected`]
    /// or [`DownloadCore::closed`].
    Connect {
        /// The core's name for it.
        peer: PeerId,
        /// Its piece server.
        addr: SocketAddr,
    },
    /// Send these bytes to the peer, after everything sent to it before.
    Send {
        /// To whom.
        peer: PeerId,
        /// Whole frames.
        bytes: Vec<u8>,
    },
    /// Close the connection. The core has already forgotten the peer; the
    /// driver need not report it closed.
    Close {
        /// Which.
        peer: PeerId,
        /// Why (for the log).
        reason: String,
    },
    /// The download is complete and done with this peer, which broke no
    /// rule: the driver may keep the link open for another download of
    /// the same node (its next handshake goes on the same link), else
    /// closes it. The core has already forgotten the peer.
    Release {
        /// Which.
        peer: PeerId,
    },
    /// Ask the tracker for the file's peers; report
    /// [`DownloadCore::add_peers`] or [`DownloadCore::peers_unavailable`].
    WantPeers,
    /// Make the record of verified pieces durable (fsync).
    SyncState,
    /// The first piece is verified and written: the node can share the file.
    FirstPiece,
    /// Every piece is verified and written.
    Complete,
    /// The download cannot go on.
    Failed(String),
}

/// What to do with piece data that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceFate {
    /// Not wanted (cancelled, a duplicate, or its peer was just closed):
    /// drop it.
    Discard,
    /// Hash it and report [`DownloadCore::piece_hashed`].
    Verify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Connect asked for at this time.
    Connecting(Instant),
    /// Handshake sent at this time; waiting for the bitfield.
    Handshaking(Instant),
    /// Bitfield received.
    Active,
}

#[derive(Debug)]
struct Peer {
    addr: SocketAddr,
    stage: Stage,
    bits: Bitfield,
    /// Requests in the order sent (a server answers in order): piece and
    /// when it was requested.
    outstanding: VecDeque<(u32, Instant)>,
    /// Pieces cancelled whose data may still arrive.
    cancelled: HashSet<u32>,
    flow: PeerFlow,
    /// Frames queued for it during the current event.
    out: Vec<u8>,
    /// When bytes from it last arrived (a frame, or a driver's report).
    last_bytes: Instant,
    /// Its path's round trip: from the handshake to the bitfield.
    path_rtt: Duration,
    /// Pieces it answered with `busy`, left out of `bits` until then.
    snoozed: Vec<(u32, Instant)>,
    /// Pieces it showed and answered with `reject`, left out of `bits`
    /// until the download has nothing to ask of anyone ([`REJECT_RETRY`]).
    rejected: Vec<u32>,
    /// Its handshake went out behind another download's requests on the
    /// same link ([`DownloadCore::connected_behind`]): not timed until
    /// the link is this download's ([`DownloadCore::link_free`]).
    behind: bool,
}

impl Peer {
    /// Withdraws a request already taken off `outstanding`: a cancel goes
    /// out, and its data is dropped if it comes anyway.
    fn cancel(&mut self, piece: u32, len: u64) {
        self.cancelled.insert(piece);
        peer::encode(&Message::Cancel { piece, offset: 0, len: len as u32 }, &mut self.out);
    }
}

/// A piece whose data arrived and is being hashed or written.
#[derive(Debug, Clone, Copy)]
struct InHand {
    peer: PeerId,
    addr: SocketAddr,
    sent: Instant,
    hashed: bool,
}

/// Counters for progress reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Bytes verified and written.
    pub verified: u64,
    /// Peers with an open session (bitfield received).
    pub active_peers: usize,
    /// Peers connecting or handshaking.
    pub pending_peers: usize,
    /// Pieces whose data arrived and is being hashed or written.
    pub in_hand: usize,
}

/// One download's protocol state (see the module docs).
#[derive(Debug)]
pub struct DownloadCore {
    meta: FileMeta,
    geometry: Geometry,
    user: String,
    ticket: Vec<u8>,
    own_addr: Option<SocketAddr>,
    timeouts: Timeouts,
    picker: Picker,
    /// Ordered, so that a run is the same every time (ticks visit peers in
    /// id order).
    peers: BTreeMap<PeerId, Peer>,
    by_addr: HashMap<SocketAddr, PeerId>,
    banned: HashSet<SocketAddr>,
    /// Peers that refused a protocol version: the version handshakes to
    /// them say now, one below the last refused (a node built before
    /// `busy` speaks [`peer::MIN_VERSION`]).
    older: HashMap<SocketAddr, u32>,
    next_id: PeerId,
    /// Peers in `peers` that are active.
    active: usize,
    /// Every piece: what a peer is assumed to have before its bitfield.
    all: Bitfield,
    /// Shuffles peer lists (xorshift).
    rng: u64,
    in_hand: HashMap<u32, InHand>,
    actions: VecDeque<Action>,
    /// Peers whose `out` is not empty.
    to_flush: Vec<PeerId>,
    verified: u64,
    contributions: HashMap<SocketAddr, u64>,
    first_reported: bool,
    /// `Some` once complete or failed.
    ended: bool,
    last_refresh: Option<Instant>,
    /// How long after `last_refresh` to ask again while peers are
    /// connected: [`PEER_RETRY`] up to [`PEER_REFRESH`].
    refresh_every: Duration,
    last_peer_seen: Instant,
    /// Since when every peer list has named nobody but this node (`None`
    /// once a list names someone): [`NO_SHARER_LIMIT`].
    unlisted_since: Option<Instant>,
    /// The last peer list named this node's own address ([`DownloadCore::listed_itself`]).
    listed_itself: bool,
    /// When rejected pieces were last asked for again ([`REJECT_RETRY`]).
    last_retry: Instant,
    /// Pieces were asked for again and neither a piece nor a new offer
    /// (`have`) has come since: requests and pieces shown do not count as
    /// a peer serving meanwhile.
    retrying: bool,
    last_sync: Instant,
    /// No steal is looked for before this (a look that found none holds
    /// the next off for [`STEAL_RETRY`]: an idle peer asks at every event).
    steal_hold: Option<Instant>,
    unsynced: bool,
    last_error: String,
    /// This download's links are plaintext ([`DownloadCore::plaintext_links`]).
    plaintext: bool,
    /// Peers that closed a plaintext link at its handshake without a word:
    /// nodes that serve encrypted links only.
    refused_plaintext: HashSet<SocketAddr>,
    /// Addresses whose last connection failed before it was made (refused,
    /// timed out): [`DownloadCore::unreached`].
    unreached: HashSet<SocketAddr>,
    /// The other nodes the last peer list named (kept for a plaintext
    /// download only).
    last_listed: Vec<SocketAddr>,
}

impl DownloadCore {
    /// A download of `meta` by `user` showing `ticket`, starting at `now`
    /// with the pieces in `have` already verified on disk. `seed` drives
    /// the picker's random tie-break.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        meta: FileMeta,
        user: String,
        ticket: Vec<u8>,
        own_addr: Option<SocketAddr>,
        have: &Bitfield,
        timeouts: Timeouts,
        seed: u64,
        now: Instant,
    ) -> Self {
        let geometry = meta.geometry();
        let verified =
            geometry.pieces().filter(|p| have.get(p.get())).map(|p| geometry.len_of(p)).sum();
        Self {
            geometry,
            user,
            ticket,
            own_addr,
            timeouts,
            picker: Picker::new(have, seed),
            peers: BTreeMap::new(),
            by_addr: HashMap::new(),
            banned: HashSet::new(),
            older: HashMap::new(),
            next_id: 0,
            active: 0,
            all: Bitfield::full(have.len()),
            rng: seed.rotate_left(17) | 1,
            in_hand: HashMap::new(),
            actions: VecDeque::new(),
            to_flush: Vec::new(),
            verified,
            contributions: HashMap::new(),
            first_reported: have.count_ones() > 0,
            ended: false,
            last_refresh: None,
            refresh_every: PEER_RETRY,
            last_peer_seen: now,
            unlisted_since: None,
            listed_itself: false,
            last_retry: now,
            retrying: false,
            last_sync: now,
            steal_hold: None,
            unsynced: false,
            last_error: String::new(),
            plaintext: false,
            refused_plaintext: HashSet::new(),
            unreached: HashSet::new(),
            last_listed: Vec::new(),
            meta,
        }
    }

    /// The file.
    pub fn meta(&self) -> &FileMeta {
        &self.meta
    }

    /// The next action to carry out, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Progress counters.
    pub fn stats(&self) -> CoreStats {
        CoreStats {
            verified: self.verified,
            active_peers: self.active,
            pending_peers: self.peers.len() - self.active,
            in_hand: self.in_hand.len(),
        }
    }

    /// Whether the download still waits on `peer`: requests to it are
    /// outstanding, or pieces are left that no data has come for yet.
    /// (False: the peer will only be released or closed.)
    pub fn awaits(&self, peer: PeerId) -> bool {
        let pieces = self.meta.piece_hashes.len();
        self.peers.get(&peer).is_some_and(|p| !p.outstanding.is_empty())
            || (self.picker.have_count() as usize) + self.in_hand.len() < pieces
    }

    /// The protocol version of the handshake sent to `peer`.
    pub fn version_to(&self, peer: PeerId) -> Option<u32> {
        let p = self.peers.get(&peer)?;
        Some(self.older.get(&p.addr).copied().unwrap_or(peer::VERSION))
    }

    /// Whether the download will ask `peer` for nothing more: its
    /// handshake went out, and every piece not verified or being verified
    /// is asked of it (requests go ahead of the bitfield). A driver may
    /// then send the next file's handshake on the link behind these
    /// requests, to a server that answers them all first.
    pub fn asks_nothing_more(&self, peer: PeerId) -> bool {
        let Some(p) = self.peers.get(&peer) else { return false };
        let pieces = self.meta.piece_hashes.len();
        !matches!(p.stage, Stage::Connecting(_))
            && !p.outstanding.is_empty()
            && self.picker.have_count() as usize + self.in_hand.len() + p.outstanding.len()
                >= pieces
    }

    /// The addresses this download could not connect to the last time it
    /// tried (refused, timed out) and has not reached since: with a
    /// failure for want of a sharer, which of the nodes once listed are
    /// gone rather than merely no longer listed.
    pub fn unreached(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.unreached.iter().copied()
    }

    /// Bytes each peer contributed (verified pieces only).
    pub fn contributions(&self) -> &HashMap<SocketAddr, u64> {
        &self.contributions
    }

    /// Whether every piece is verified and written.
    pub fn is_complete(&self) -> bool {
        self.picker.is_complete()
    }

    /// Whether `addr` sent a piece that failed its hash.
    pub fn is_banned(&self, addr: &SocketAddr) -> bool {
        self.banned.contains(addr)
    }

    /// When [`tick`](Self::tick) next has something to do.
    pub fn next_deadline(&self) -> Instant {
        let refresh = match self.last_refresh {
            None => self.last_peer_seen,
            Some(t) if self.peers.is_empty() => t + PEER_RETRY,
            Some(t) => t + self.refresh_every,
        };
        let mut next = refresh.min(self.last_sync + SYNC_EVERY);
        for p in self.peers.values() {
            let due = match p.stage {
                Stage::Handshaking(_) if p.behind => continue,
                Stage::Connecting(t) | Stage::Handshaking(t) => t + self.timeouts.connect,
                Stage::Active => match p.outstanding.front() {
                    Some((_, t)) => (*t).max(p.last_bytes) + self.timeouts.stall,
                    None => continue,
                },
            };
            next = next.min(due);
        }
        next
    }

    /// This download's links are plaintext (`--plaintext`): a node that
    /// closes one at its handshake without a word serves encrypted links
    /// only, and once every node listed has, the download fails at once
    /// saying so, rather than after [`NO_PEER_LIMIT`].
    pub fn plaintext_links(&mut self) {
        self.plaintext = true;
    }

    /// A newer ticket from the tracker, shown to peers connected from now on.
    pub fn set_ticket(&mut self, ticket: Vec<u8>) {
        self.ticket = ticket;
    }

    /// Peers known before the download asked ([`Action::WantPeers`]):
    /// [`add_peers`](Self::add_peers), counted as its first list, so that
    /// it asks for more only when it would have asked again.
    pub fn given_peers(&mut self, addrs: &[SocketAddr], now: Instant) {
        if self.ended {
            return;
        }
        self.last_refresh = Some(now);
        self.add_peers(addrs, now);
    }

    /// The tracker listed these peers: connect to new ones, in random
    /// order, up to [`Timeouts::max_peers`] at once.
    pub fn add_peers(&mut self, addrs: &[SocketAddr], now: Instant) {
        if self.ended {
            return;
        }
        if addrs.iter().all(|a| Some(*a) == self.own_addr) {
            self.unlisted_since.get_or_insert(now);
        } else {
            self.unlisted_since = None;
        }
        if self.plaintext {
            self.last_listed =
                addrs.iter().copied().filter(|a| Some(*a) != self.own_addr).collect();
        }
        let mut fresh: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| {
                Some(*a) != self.own_addr
                    && !self.by_addr.contains_key(a)
                    && !self.banned.contains(a)
            })
            .collect();
        // Shuffled (Fisher–Yates), so that downloaders given the same list
        // do not all pick its head.
        for i in (1..fresh.len()).rev() {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            fresh.swap(i, (self.rng % (i as u64 + 1)) as usize);
        }
        let room = self.timeouts.max_peers.saturating_sub(self.peers.len());
        fresh.truncate(room);
        self.refresh_every =
            if fresh.is_empty() { (self.refresh_every * 2).min(PEER_REFRESH) } else { PEER_RETRY };
        for addr in fresh {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            self.peers.insert(
                id,
                Peer {
                    addr,
                    stage: Stage::Connecting(now),
                    bits: Bitfield::new(0),
                    outstanding: VecDeque::new(),
                    cancelled: HashSet::new(),
                    flow: PeerFlow::new(self.geometry.piece_len(), now),
                    out: Vec::new(),
                    last_bytes: now,
                    path_rtt: Duration::ZERO,
                    snoozed: Vec::new(),
                    rejected: Vec::new(),
                    behind: false,
                },
            );
            self.by_addr.insert(addr, id);
            self.actions.push_back(Action::Connect { peer: id, addr });
        }
    }

    /// The last list also named `n` other nodes left out of it (their keys
    /// not yet known to the tracker, addresses this node cannot reach):
    /// somebody shares the file, so [`NO_SHARER_LIMIT`] does not apply.
    /// Call after [`add_peers`](Self::add_peers) with the same list.
    pub fn also_listed(&mut self, n: usize) {
        if n > 0 {
            self.unlisted_since = None;
        }
    }

    /// Whether the last list named this node's own address (left out of
    /// the list given): if nobody else is listed, the failure says so
    /// rather than that nobody shares the file.
    pub fn listed_itself(&mut self, yes: bool) {
        self.listed_itself = yes;
    }

    /// Asking for peers failed; kept for the message if the download fails.
    /// An empty list before says nothing once the tracker stops answering:
    /// [`NO_PEER_LIMIT`] waits it out.
    pub fn peers_unavailable(&mut self, error: String) {
        self.last_error = error;
        self.unlisted_since = None;
    }

    /// The file is gone for good (no longer in its group, access lost):
    /// the download fails now with `why`; what it verified stays recorded
    /// for a resume.
    pub fn file_gone(&mut self, why: String) {
        self.fail(why);
    }

    /// The connection to `peer` is open: the handshake goes out.
    pub fn connected(&mut self, peer: PeerId, now: Instant) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        if !matches!(p.stage, Stage::Connecting(_)) {
            return;
        }
        p.stage = Stage::Handshaking(now);
        p.last_bytes = now;
        self.unreached.remove(&p.addr);
        let hs = Message::Handshake {
            version: self.older.get(&p.addr).copied().unwrap_or(peer::VERSION),
            file_id: self.meta.sha1,
            user: &self.user,
            ticket: &self.ticket,
        };
        peer::encode(&hs, &mut p.out);
        // What this node holds, for a seed that offers pieces by it
        // (`crate::seeding`); later pieces follow as `have`s.
        if self.picker.have_count() > 0 {
            let mut held = Bitfield::new(self.meta.piece_hashes.len() as u32);
            for i in 0..held.len() {
                if self.picker.has(i) {
                    held.set(i);
                }
            }
            peer::encode(&Message::Bitfield(held.as_bytes()), &mut p.out);
        }
        self.to_flush.push(peer);
        self.fill(peer, now);
        self.flush();
    }

    /// The connection to `peer` is another download's link, which carries
    /// this one's handshake behind that one's last requests (pipelined):
    /// the server answers those first, at whatever pace it sends (a node
    /// holding its upload to a rate may take many seconds), so the
    /// handshake's answer is timed from [`link_free`](Self::link_free)
    /// on, not from now. (Timed from now, a paced seed's next files timed
    /// out at [`CONNECT_TIMEOUT`] and closed the link under the file
    /// before, and a bulk get from it wedged.) The link's current
    /// download times its own requests; if the link fails, both hear.
    pub fn connected_behind(&mut self, peer: PeerId, now: Instant) {
        self.connected(peer, now);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.behind = true;
        }
    }

    /// The link carrying `peer`'s handshake behind another download
    /// ([`connected_behind`](Self::connected_behind)) is this download's
    /// from `now`: its answer is timed from here.
    pub fn link_free(&mut self, peer: PeerId, now: Instant) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        if std::mem::replace(&mut p.behind, false) {
            if let Stage::Handshaking(_) = p.stage {
                p.stage = Stage::Handshaking(now);
                p.last_bytes = now;
            }
        }
    }

    /// Bytes from `peer` arrived that make no whole frame yet (part of a
    /// piece): it is not stalled. Drivers report it at most every
    /// [`PROGRESS_EVERY`].
    pub fn on_bytes(&mut self, peer: PeerId, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_bytes = now;
        }
    }

    /// The connection to `peer` failed or ended. Its requests go back to
    /// the picker; pieces of it already in hand are still verified.
    pub fn closed(&mut self, peer: PeerId, reason: &str) {
        if let Some(p) = self.forget(peer) {
            tracing::debug!(peer, addr = %p.addr, "peer closed: {reason}");
            // Closed with the handshake sent and no answer, not even an
            // error: most often a node without `--plaintext` meeting a
            // `--plaintext` downloader (it can tell it nothing it could
            // read).
            if self.plaintext && matches!(p.stage, Stage::Handshaking(_)) {
                self.refused_plaintext.insert(p.addr);
            }
            self.last_error = if matches!(p.stage, Stage::Handshaking(_)) {
                format!(
                    "{}: {reason} before answering the handshake (a node without \
                     --plaintext closes a --plaintext downloader's links)",
                    p.addr
                )
            } else {
                format!("{}: {reason}", p.addr)
            };
        }
    }

    /// A whole frame from `peer` (type and payload; the driver checked its
    /// length against [`peer::MAX_FRAME`]). For a piece carried in the
    /// frame, the answer says whether to verify its data.
    pub fn on_frame(&mut self, peer: PeerId, kind: u32, payload: &[u8], now: Instant) -> PieceFate {
        match peer::decode_payload(kind, payload) {
            Ok(msg) => self.on_message(peer, &msg, now),
            Err(e) => {
                self.close(peer, format!("protocol: {e}"));
                PieceFate::Discard
            }
        }
    }

    /// A decoded message from `peer` (see [`on_frame`](Self::on_frame)).
    pub fn on_message(&mut self, peer: PeerId, msg: &Message<'_>, now: Instant) -> PieceFate {
        if let Message::Piece { piece, offset, data } = msg {
            return self.on_piece(peer, *piece, *offset, data.len(), now);
        }
        if let Message::Reject { piece, .. } | Message::Busy { piece, .. } = msg {
            self.on_refusal(peer, *piece, matches!(msg, Message::Busy { .. }), now);
            return PieceFate::Discard;
        }
        let pieces = self.meta.piece_hashes.len() as u32;
        let Some(p) = self.peers.get_mut(&peer) else { return PieceFate::Discard };
        p.last_bytes = now;
        // An older node refuses this version's handshake: connect to it
        // again, speaking the version below (down to the oldest a server
        // admits; version 2 never answers `busy`, version 3 drops the
        // requests before a new handshake).
        if let (Stage::Handshaking(_), Message::Error { code: ErrorCode::Version, text }) =
            (p.stage, msg)
        {
            let addr = p.addr;
            let spoke = self.older.get(&addr).copied().unwrap_or(peer::VERSION);
            if spoke > peer::MIN_VERSION {
                self.older.insert(addr, spoke - 1);
                self.close(peer, format!("peer refused: {text}"));
                self.add_peers(&[addr], now);
                return PieceFate::Discard;
            }
        }
        let refusal = match (p.stage, msg) {
            (Stage::Handshaking(since), Message::Bitfield(b)) => {
                match peer::parse_bitfield(b, pieces) {
                    Some(bits) => {
                        self.refused_plaintext.remove(&p.addr);
                        p.path_rtt = now.saturating_duration_since(since);
                        p.bits = bits;
                        p.stage = Stage::Active;
                        self.active += 1;
                        self.picker.add_peer(&p.bits);
                        None
                    }
                    None => Some("protocol: bad bitfield".to_owned()),
                }
            }
            // A piece it will not send comes back as a `reject` naming the
            // request; an error ends the session.
            (_, Message::Error { text, .. }) => Some(format!("peer refused: {text}")),
            (Stage::Active, Message::Have(i)) if *i < pieces => {
                if p.bits.set(*i) {
                    self.picker.peer_has(*i);
                    // An offer: a seed that answered a retry with one
                    // serves it, however long its queue keeps the request.
                    self.retrying = false;
                }
                None
            }
            (Stage::Active, Message::Have(_)) => Some("protocol: have out of range".to_owned()),
            (Stage::Active, m) => Some(format!("protocol: unexpected {}", name(m))),
            (_, m) => Some(format!("protocol: {} before the bitfield", name(m))),
        };
        match refusal {
            Some(reason) => self.close(peer, reason),
            None => {
                self.fill(peer, now);
                self.flush();
            }
        }
        PieceFate::Discard
    }

    /// `peer` will not send `piece`: it does not have it, or does not offer
    /// it to this download (`reject`), or not soon, its upload slots being
    /// taken (`busy`). The request goes back to the picker; a piece its
    /// bitfield or a `have` showed is no longer counted as its — after a
    /// `busy` only for [`BUSY_SNOOZE`] (it still has it), so that peers
    /// with time for it are asked first.
    fn on_refusal(&mut self, peer: PeerId, piece: u32, busy: bool, now: Instant) {
        let what = if busy { "busy" } else { "reject" };
        let Some(p) = self.peers.get_mut(&peer) else { return };
        tracing::trace!(piece, addr = %p.addr, answer = what, "request refused");
        if p.stage != Stage::Active {
            return self.close(peer, format!("protocol: {what} before the bitfield"));
        }
        if let Some(pos) = p.outstanding.iter().position(|(q, _)| *q == piece) {
            p.outstanding.remove(pos);
            self.picker.unrequest(piece, peer);
            if p.bits.clear(piece) {
                self.picker.peer_lacks(piece);
                if busy {
                    p.snoozed.push((piece, now + BUSY_SNOOZE));
                } else {
                    p.rejected.push(piece);
                }
            }
        } else if !p.cancelled.remove(&piece) {
            return self.close(peer, format!("protocol: {what} of unrequested piece {piece}"));
        }
        self.fill(peer, now);
        self.flush();
    }

    /// Pieces still missing that an active peer rejected count as its
    /// again ([`REJECT_RETRY`]); whether there were any.
    fn show_rejected(&mut self) -> bool {
        let mut any = false;
        for p in self.peers.values_mut() {
            if p.stage != Stage::Active {
                continue;
            }
            for piece in p.rejected.drain(..) {
                if self.picker.is_missing(piece) && p.bits.set(piece) {
                    self.picker.peer_has(piece);
                    any = true;
                }
            }
        }
        any
    }

    /// Pieces snoozed at a peer ([`on_refusal`](Self::on_refusal)) whose time
    /// is up count as its again.
    fn wake_snoozed(&mut self, now: Instant) {
        for p in self.peers.values_mut() {
            if p.snoozed.is_empty() || p.stage != Stage::Active {
                continue;
            }
            let picker = &mut self.picker;
            let bits = &mut p.bits;
            p.snoozed.retain(|&(piece, until)| {
                if now < until {
                    return true;
                }
                if bits.set(piece) {
                    picker.peer_has(piece);
                }
                false
            });
        }
    }

    /// The header of a piece message from `peer`: `len` bytes of `piece`
    /// from `offset`. Its data is the driver's to keep until it hashes it
    /// or drops it, as the answer says.
    pub fn on_piece(
        &mut self,
        peer: PeerId,
        piece: u32,
        offset: u32,
        len: usize,
        now: Instant,
    ) -> PieceFate {
        let Some(p) = self.peers.get_mut(&peer) else { return PieceFate::Discard };
        p.last_bytes = now;
        if p.stage != Stage::Active {
            self.close(peer, "protocol: piece before the bitfield".into());
            return PieceFate::Discard;
        }
        let expected = self.geometry.piece(u64::from(piece)).map(|i| self.geometry.len_of(i));
        if offset != 0 || expected != Some(len as u64) {
            self.close(peer, format!("protocol: piece {piece} with bad offset or length"));
            return PieceFate::Discard;
        }
        let sent = match p.outstanding.iter().position(|(q, _)| *q == piece) {
            Some(pos) => p.outstanding.remove(pos).map(|(_, t)| t).expect("position is valid"),
            None if p.cancelled.remove(&piece) => return PieceFate::Discard,
            None => {
                self.close(peer, format!("protocol: unrequested piece {piece}"));
                return PieceFate::Discard;
            }
        };
        p.flow.on_arrival(sent, len as u64, now);
        let addr = p.addr;
        let fate = if self.picker.received(piece, peer) {
            self.retrying = false;
            self.in_hand.insert(piece, InHand { peer, addr, sent, hashed: false });
            PieceFate::Verify
        } else {
            PieceFate::Discard
        };
        self.fill(peer, now);
        self.flush();
        fate
    }

    /// The driver hashed `piece` (which [`on_piece`](Self::on_piece) said
    /// to verify). True: write it, then report
    /// [`piece_written`](Self::piece_written). False: drop it — it failed
    /// its hash (its peer is banned from this download and closed, and the
    /// piece will be requested elsewhere) or was not expected.
    pub fn piece_hashed(&mut self, piece: u32, digest: Sha1Digest) -> bool {
        let Some(h) = self.in_hand.get_mut(&piece) else { return false };
        if h.hashed {
            return false;
        }
        if self.meta.piece_hashes.get(piece as usize) == Some(&digest) {
            h.hashed = true;
            return true;
        }
        let InHand { peer, addr, .. } = self.in_hand.remove(&piece).expect("present above");
        self.picker.failed(piece);
        self.banned.insert(addr);
        tracing::warn!(%addr, piece, "piece failed its hash: peer banned from this download");
        self.close(peer, "sent a piece that failed its hash".into());
        false
    }

    /// The driver wrote `piece` (verified by
    /// [`piece_hashed`](Self::piece_hashed)) and recorded it, or failed
    /// to. Returns the time from its request to now, for the latency
    /// histogram.
    pub fn piece_written(
        &mut self,
        piece: u32,
        result: Result<(), String>,
        now: Instant,
    ) -> Option<Duration> {
        let h = match self.in_hand.get(&piece) {
            Some(h) if h.hashed => *h,
            _ => return None,
        };
        self.in_hand.remove(&piece);
        if let Err(e) = result {
            self.picker.failed(piece);
            self.fail(e);
            return None;
        }
        let len = self.geometry.piece(u64::from(piece)).map_or(0, |i| self.geometry.len_of(i));
        for loser in self.picker.verified(piece) {
            if loser == h.peer {
                continue;
            }
            let Some(p) = self.peers.get_mut(&loser) else { continue };
            if let Some(pos) = p.outstanding.iter().position(|(q, _)| *q == piece) {
                p.outstanding.remove(pos);
                p.cancel(piece, len);
                self.to_flush.push(loser);
            }
        }
        // Every peer that does not show every piece hears of it — one
        // that shows it too: a seed that offered it and sees it taken
        // elsewhere offers another (`crate::seeding`; unheard, the offer
        // would stand, and with nothing asked of it the seed offers
        // nothing more) — with the next requests to it, or now if it has
        // none outstanding. A peer that shows every piece learns nothing
        // from it.
        for (&id, p) in &mut self.peers {
            let full = p.stage == Stage::Active && p.bits.is_complete();
            if full || matches!(p.stage, Stage::Connecting(_)) {
                continue;
            }
            peer::encode(&Message::Have(piece), &mut p.out);
            if p.outstanding.is_empty() {
                self.to_flush.push(id);
            }
        }
        self.verified += len;
        self.unsynced = true;
        tracing::trace!(piece, addr = %h.addr, verified = self.verified, "piece verified");
        *self.contributions.entry(h.addr).or_insert(0) += len;
        if !std::mem::replace(&mut self.first_reported, true) {
            self.actions.push_back(Action::FirstPiece);
        }
        self.flush();
        self.check_complete();
        Some(now.saturating_duration_since(h.sent))
    }

    /// Time passes: timeouts, window top-ups, peer refreshes, syncs.
    pub fn tick(&mut self, now: Instant) {
        if self.ended {
            return;
        }
        self.check_complete();
        if self.ended {
            return;
        }
        let mut expired = Vec::new();
        for (&id, p) in &self.peers {
            let late = match p.stage {
                Stage::Handshaking(_) if p.behind => false,
                Stage::Connecting(t) | Stage::Handshaking(t) => {
                    now.saturating_duration_since(t) > self.timeouts.connect
                }
                Stage::Active => {
                    p.outstanding.front().is_some_and(|(_, t)| {
                        now.saturating_duration_since(*t) > self.timeouts.stall
                    }) && now.saturating_duration_since(p.last_bytes) > self.timeouts.stall
                }
            };
            if late {
                expired.push((id, p.stage));
            }
        }
        for (id, stage) in expired {
            let why = if stage == Stage::Active { "stalled" } else { "timed out connecting" };
            self.close(id, why.into());
        }
        self.wake_snoozed(now);
        let active: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.stage == Stage::Active)
            .map(|(&id, _)| id)
            .collect();
        // A peer counts while it can serve: it shows a piece still missing,
        // or one is on its way. Peers that hold nothing new (other
        // downloaders of a swarm whose sources left) keep no download
        // waiting forever.
        let serving = !self.in_hand.is_empty()
            || (!self.retrying
                && (self
                    .peers
                    .values()
                    .any(|p| !p.outstanding.is_empty() && p.stage == Stage::Active)
                    || self.picker.any_missing_available()));
        if serving {
            self.last_peer_seen = now;
        } else if now.saturating_duration_since(self.last_peer_seen.max(self.last_retry))
            >= REJECT_RETRY
            && self.show_rejected()
        {
            self.last_retry = now;
            self.retrying = true;
        }
        // A peer that had to give requests back is not refilled in the same
        // tick: the others get the first pick of what it gave back.
        let gave_back: Vec<PeerId> =
            active.iter().copied().filter(|&id| self.requeue_stale(id, now)).collect();
        for id in active {
            if gave_back.contains(&id) {
                continue;
            }
            self.fill(id, now);
        }
        self.flush();
        let due = match self.last_refresh {
            None => true,
            Some(t) if self.peers.is_empty() => now.saturating_duration_since(t) >= PEER_RETRY,
            Some(t) => now.saturating_duration_since(t) >= self.refresh_every,
        };
        if due {
            self.last_refresh = Some(now);
            self.actions.push_back(Action::WantPeers);
        }
        let pending = self.peers.values().any(|p| p.stage != Stage::Active);
        let unlisted = self.unlisted_since.filter(|&t| {
            now.saturating_duration_since(t.max(self.last_peer_seen)) >= self.timeouts.no_sharer
        });
        if !serving && !pending && unlisted.is_some() {
            let secs = self.timeouts.no_sharer.as_secs();
            self.fail(if self.listed_itself {
                // Listed as a sharer of what it holds, not as a holder of the
                // file: said with how much that is.
                format!(
                    "no other node shares the file (for {secs}s the only node listed was this \
                     one, which holds {} of its {} pieces)",
                    self.picker.have_count(),
                    self.geometry.piece_count()
                )
            } else {
                // A node listed before may have failed in a way worth
                // naming (another key than the one listed: an impostor at
                // a sharer's address).
                if self.last_error.is_empty() {
                    format!("{NONE_LISTED} (none listed for {secs}s)")
                } else {
                    format!(
                        "{NONE_LISTED} (none listed for {secs}s; last error: {})",
                        self.last_error
                    )
                }
            });
            return;
        }
        if !serving
            && !pending
            && !self.last_listed.is_empty()
            && self.last_listed.iter().all(|a| self.refused_plaintext.contains(a))
        {
            let n = self.last_listed.len();
            self.fail(format!(
                "every node listed as sharing the file ({n}) closed the link at its handshake: \
                 nodes whose links are encrypted do not serve a --plaintext download; \
                 {WITHOUT_PLAINTEXT}"
            ));
            return;
        }
        if !serving
            && !pending
            && now.saturating_duration_since(self.last_peer_seen) > self.timeouts.no_peer
        {
            let why = if self.last_error.is_empty() {
                String::new()
            } else {
                format!(" (last error: {})", self.last_error)
            };
            let secs = self.timeouts.no_peer.as_secs();
            self.fail(format!("no peer could serve the file for {secs}s{why}"));
            return;
        }
        if self.unsynced && now.saturating_duration_since(self.last_sync) >= SYNC_EVERY {
            self.unsynced = false;
            self.last_sync = now;
            self.actions.push_back(Action::SyncState);
        }
    }

    /// Requests from `peer` up to its window.
    ///
    /// Before its bitfield arrives a peer is asked as if it had every
    /// piece: the requests go out right behind the handshake, so data flows
    /// one round trip sooner (a server admits, sends its bitfield, then
    /// answers in order, a piece it lacks with a `reject` that frees
    /// the request). Only the initial window is asked that way.
    fn fill(&mut self, peer: PeerId, now: Instant) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        if self.ended || matches!(p.stage, Stage::Connecting(_)) {
            return;
        }
        let piece_len = self.geometry.piece_len();
        let depth = p.flow.window(p.outstanding.len() as u64 * piece_len, now);
        let mut stole = false;
        loop {
            let Some(p) = self.peers.get_mut(&peer) else { return };
            let active = p.stage == Stage::Active;
            let bits = if active { &p.bits } else { &self.all };
            let mut starved = false;
            while p.outstanding.len() < depth {
                let Some(i) = self.picker.pick(peer, bits) else {
                    starved = true;
                    break;
                };
                let len = self.geometry.len_of(i) as u32;
                peer::encode(&Message::Request { piece: i.get(), offset: 0, len }, &mut p.out);
                p.outstanding.push_back((i.get(), now));
                tracing::trace!(piece = i.get(), addr = %p.addr, "piece requested");
            }
            if !starved {
                break;
            }
            // Nothing left that nobody asked for: take over the request
            // that has waited longest in another peer's queue (once per
            // call: enough to keep this peer busy; a pick follows it).
            if !stole && active && self.steal(peer, now) {
                stole = true;
                continue;
            }
            if let Some(p) = self.peers.get_mut(&peer) {
                p.flow.app_limited();
            }
            break;
        }
        // Requests, and `have`s waiting to go with them.
        if self.peers.get(&peer).is_some_and(|p| !p.out.is_empty()) {
            self.to_flush.push(peer);
        }
    }

    /// `thief` has an open window and nothing to ask for: among the
    /// requests at other peers for pieces `thief` has, the one queued
    /// deepest that has waited [`STEAL_AFTER`] beyond two of its peer's
    /// round trips is cancelled there and goes back to the picker for
    /// `thief` to pick. The first in line at a peer counts as waiting only
    /// while nothing arrives from that peer: it is waiting for one of the
    /// peer's upload slots, not being sent. A busy peer (a seed or early
    /// downloader shared by many) would otherwise hold a crowd's pieces in
    /// its queues while peers that could send them now idle (in the
    /// simulator's crowd of 100, a fifth of the downloaders uploaded almost
    /// nothing 5 s in, every piece they held asked of others that had it
    /// queued for seconds). Returns whether it took one.
    fn steal(&mut self, thief: PeerId, now: Instant) -> bool {
        if self.steal_hold.is_some_and(|t| now < t) {
            return false;
        }
        let Some(t) = self.peers.get(&thief) else { return false };
        let mut best: Option<(PeerId, usize, u32)> = None;
        for (&id, p) in &self.peers {
            if id == thief {
                continue;
            }
            let patience = STEAL_AFTER + 2 * p.path_rtt;
            for (pos, &(piece, sent)) in p.outstanding.iter().enumerate() {
                let since = if pos == 0 { sent.max(p.last_bytes) } else { sent };
                if now.saturating_duration_since(since) < patience
                    || !t.bits.get(piece)
                    || !self.picker.is_missing(piece)
                    || self.picker.is_requested_at(piece, thief)
                {
                    continue;
                }
                if best.is_none_or(|(_, d, _)| pos > d) {
                    best = Some((id, pos, piece));
                }
            }
        }
        let Some((donor, pos, piece)) = best else {
            self.steal_hold = Some(now + STEAL_RETRY);
            return false;
        };
        let len = self.geometry.piece(u64::from(piece)).map_or(0, |i| self.geometry.len_of(i));
        let Some(d) = self.peers.get_mut(&donor) else { return false };
        d.outstanding.remove(pos);
        d.cancel(piece, len);
        tracing::trace!(piece, addr = %d.addr, "request taken over");
        self.picker.unrequest(piece, donor);
        if !self.to_flush.contains(&donor) {
            self.to_flush.push(donor);
        }
        true
    }

    /// Requests that have waited [`REQUEST_PATIENCE`] in a peer's queue
    /// behind the one it is sending, for pieces another connected peer
    /// also has, are cancelled there and go back to the picker: a peer
    /// whose upload is shared by many (a seed in a flash crowd) would
    /// otherwise hold them until the endgame while others could send them.
    fn requeue_stale(&mut self, peer: PeerId, now: Instant) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else { return false };
        let mut gave_back = false;
        let mut k = 1;
        while k < p.outstanding.len() {
            let (piece, sent) = p.outstanding[k];
            let stale = now.saturating_duration_since(sent) > REQUEST_PATIENCE
                && self.picker.availability(piece) > 1;
            if !stale {
                k += 1;
                continue;
            }
            p.outstanding.remove(k);
            self.picker.unrequest(piece, peer);
            p.cancel(
                piece,
                self.geometry.piece(u64::from(piece)).map_or(0, |i| self.geometry.len_of(i)),
            );
            if !self.to_flush.contains(&peer) {
                self.to_flush.push(peer);
            }
            gave_back = true;
        }
        gave_back
    }

    /// Turns the frames queued for peers into `Send` actions.
    fn flush(&mut self) {
        for id in std::mem::take(&mut self.to_flush) {
            if let Some(p) = self.peers.get_mut(&id) {
                if !p.out.is_empty() {
                    let bytes = std::mem::take(&mut p.out);
                    self.actions.push_back(Action::Send { peer: id, bytes });
                }
            }
        }
    }

    /// Drops a peer and asks the driver to close it.
    fn close(&mut self, peer: PeerId, reason: String) {
        if let Some(p) = self.forget(peer) {
            tracing::debug!(peer, addr = %p.addr, "closing peer: {reason}");
            if !self.ended {
                self.last_error = format!("{}: {reason}", p.addr);
            }
            self.actions.push_back(Action::Close { peer, reason });
        }
    }

    fn forget(&mut self, peer: PeerId) -> Option<Peer> {
        let p = self.peers.remove(&peer)?;
        self.by_addr.remove(&p.addr);
        if !self.ended && matches!(p.stage, Stage::Connecting(_)) {
            self.unreached.insert(p.addr);
        }
        if p.stage == Stage::Active {
            self.active -= 1;
            self.picker.remove_peer(peer, &p.bits);
        } else {
            // Requests sent ahead of the bitfield.
            for (piece, _) in &p.outstanding {
                self.picker.unrequest(*piece, peer);
            }
        }
        Some(p)
    }

    fn check_complete(&mut self) {
        if !self.ended && self.picker.is_complete() {
            self.ended = true;
            let ids: Vec<PeerId> = self.peers.keys().copied().collect();
            for id in ids {
                if let Some(p) = self.forget(id) {
                    tracing::debug!(peer = id, addr = %p.addr, "download complete: peer released");
                    self.actions.push_back(Action::Release { peer: id });
                }
            }
            self.actions.push_back(Action::Complete);
        }
    }

    fn fail(&mut self, reason: String) {
        if self.ended {
            return;
        }
        self.ended = true;
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.close(id, "download failed".into());
        }
        self.actions.push_back(Action::Failed(reason));
    }
}

fn name(m: &Message<'_>) -> &'static str {
    match m {
        Message::Handshake { .. } => "handshake",
        Message::Bitfield(_) => "bitfield",
        Message::Have(_) => "have",
        Message::Request { .. } => "request",
        Message::Piece { .. } => "piece",
        Message::Cancel { .. } => "cancel",
        Message::Reject { .. } => "reject",
        Message::Busy { .. } => "busy",
        Message::Error { .. } => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::PIECE_LEN;
    use proptest::prelude::*;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    const TICK: Duration = Duration::from_millis(50);

    fn digest(i: u32) -> Sha1Digest {
        let mut d = [0u8; 20];
        d[..4].copy_from_slice(&i.to_be_bytes());
        d[19] = 0x5a;
        Sha1Digest(d)
    }

    fn meta(pieces: u32) -> FileMeta {
        FileMeta {
            name: "f".into(),
            len: u64::from(pieces) * PIECE_LEN,
            sha1: Sha1Digest([9; 20]),
            piece_hashes: (0..pieces).map(digest).collect(),
        }
    }

    /// A download of `pieces` pieces, nothing verified yet.
    fn fresh(pieces: u32, seed: u64, now: Instant) -> DownloadCore {
        let none = Bitfield::new(pieces);
        DownloadCore::new(
            meta(pieces),
            "u".into(),
            vec![],
            None,
            &none,
            Timeouts::default(),
            seed,
            now,
        )
    }

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 7000))
    }

    /// A scripted piece server behind a path.
    #[derive(Clone)]
    struct Server {
        addr: SocketAddr,
        rtt: Duration,
        /// Upload rate, bytes/s.
        rate: f64,
        /// Sends garbage instead of this piece's data.
        corrupt: Option<u32>,
        /// Answers the handshake, then never sends a piece.
        mute: bool,
        /// Never answers a connect (a blackholed address).
        unreachable: bool,
        /// When its uplink is next idle.
        free: Instant,
        /// When the tracker starts listing it.
        joins: Duration,
    }

    impl Server {
        fn new(i: u8, rtt_ms: u64, mbps: f64, t0: Instant) -> Self {
            Self {
                addr: addr(i),
                rtt: Duration::from_millis(rtt_ms),
                rate: mbps * 1e6 / 8.0,
                corrupt: None,
                mute: false,
                unreachable: false,
                free: t0,
                joins: Duration::ZERO,
            }
        }
    }

    #[derive(Debug)]
    enum Ev {
        Bitfield(PeerId),
        Piece(PeerId, u32),
        Tick,
    }

    /// The core and its scripted peers in virtual time: a tiny driver.
    struct Sim {
        core: DownloadCore,
        servers: Vec<Server>,
        /// Peer id → server index.
        conns: HashMap<PeerId, usize>,
        queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
        events: Vec<Ev>,
        now: Instant,
        t0: Instant,
        /// Everything the core did, in order.
        log: Vec<Action>,
        /// Pieces written, in order.
        written: Vec<u32>,
        /// Requests sent to each server: (peer, piece).
        requests: Vec<(usize, u32)>,
        cancels: Vec<(usize, u32)>,
        most_outstanding: usize,
        outstanding: HashMap<PeerId, usize>,
        /// Connections asked for, open or connecting now, and the most at once.
        connects: usize,
        open: usize,
        most_open: usize,
    }

    impl Sim {
        fn new(pieces: u32, have: &Bitfield, servers: Vec<Server>, t0: Instant) -> Self {
            assert_eq!(have.len(), pieces);
            let core = DownloadCore::new(
                meta(pieces),
                "u".into(),
                b"ticket".to_vec(),
                None,
                have,
                Timeouts::default(),
                7,
                t0,
            );
            let mut s = Self {
                core,
                servers,
                conns: HashMap::new(),
                queue: BinaryHeap::new(),
                events: Vec::new(),
                now: t0,
                t0,
                log: Vec::new(),
                written: Vec::new(),
                requests: Vec::new(),
                cancels: Vec::new(),
                most_outstanding: 0,
                outstanding: HashMap::new(),
                connects: 0,
                open: 0,
                most_open: 0,
            };
            s.at(t0, Ev::Tick);
            s
        }

        fn at(&mut self, t: Instant, ev: Ev) {
            self.events.push(ev);
            self.queue.push(Reverse((t, self.events.len() as u64, self.events.len() - 1)));
        }

        /// Runs until complete, failed or `limit` of virtual time.
        fn run(&mut self, limit: Duration) {
            while let Some(&Reverse((t, _, i))) = self.queue.peek() {
                if t > self.t0 + limit || self.ended() {
                    break;
                }
                self.queue.pop();
                self.now = t;
                let ev = std::mem::replace(&mut self.events[i], Ev::Tick);
                match ev {
                    Ev::Tick => {
                        self.core.tick(t);
                        self.at(t + TICK, Ev::Tick);
                    }
                    Ev::Bitfield(peer) => {
                        if let Some(&s) = self.conns.get(&peer) {
                            let bits = Bitfield::full(self.core.meta.piece_hashes.len() as u32);
                            let _ = self.servers[s].addr;
                            self.core.on_message(peer, &Message::Bitfield(bits.as_bytes()), t);
                        }
                    }
                    Ev::Piece(peer, piece) => {
                        let Some(&s) = self.conns.get(&peer) else { continue };
                        *self.outstanding.entry(peer).or_default() -= 1;
                        let fate = self.core.on_piece(peer, piece, 0, PIECE_LEN as usize, t);
                        if fate == PieceFate::Verify {
                            let d = if self.servers[s].corrupt == Some(piece) {
                                Sha1Digest([0; 20])
                            } else {
                                digest(piece)
                            };
                            if self.core.piece_hashed(piece, d) {
                                self.core.piece_written(piece, Ok(()), t);
                                self.written.push(piece);
                            }
                        }
                    }
                }
                self.drain();
            }
        }

        fn ended(&self) -> bool {
            self.log.iter().any(|a| matches!(a, Action::Complete | Action::Failed(_)))
        }

        fn drain(&mut self) {
            while let Some(a) = self.core.poll_action() {
                match &a {
                    Action::WantPeers => {
                        let since = self.now - self.t0;
                        let addrs: Vec<_> = self
                            .servers
                            .iter()
                            .filter(|s| s.joins <= since)
                            .map(|s| s.addr)
                            .collect();
                        self.core.add_peers(&addrs, self.now);
                    }
                    Action::Connect { peer, addr } => {
                        let s = self.servers.iter().position(|s| s.addr == *addr).expect("known");
                        self.conns.insert(*peer, s);
                        self.connects += 1;
                        self.open += 1;
                        self.most_open = self.most_open.max(self.open);
                        if !self.servers[s].unreachable {
                            self.core.connected(*peer, self.now);
                        }
                    }
                    Action::Send { peer, bytes } => self.deliver(*peer, bytes),
                    Action::Close { peer, .. } | Action::Release { peer }
                        if self.conns.remove(peer).is_some() =>
                    {
                        self.open -= 1;
                    }
                    _ => {}
                }
                self.log.push(a);
            }
        }

        /// Frames from the downloader reach server `peer`.
        fn deliver(&mut self, peer: PeerId, mut bytes: &[u8]) {
            let s = self.conns[&peer];
            while !bytes.is_empty() {
                let (msg, used) = peer::decode(bytes).expect("the core sends whole frames");
                bytes = &bytes[used..];
                let srv = &mut self.servers[s];
                let half = srv.rtt / 2;
                match msg {
                    Message::Handshake { .. } => {
                        let t = self.now + srv.rtt;
                        self.at(t, Ev::Bitfield(peer));
                    }
                    Message::Request { piece, .. } => {
                        self.requests.push((s, piece));
                        let o = self.outstanding.entry(peer).or_default();
                        *o += 1;
                        self.most_outstanding = self.most_outstanding.max(*o);
                        if srv.mute {
                            continue;
                        }
                        let start = (self.now + half).max(srv.free);
                        srv.free = start + Duration::from_secs_f64(PIECE_LEN as f64 / srv.rate);
                        let t = srv.free + half;
                        self.at(t, Ev::Piece(peer, piece));
                    }
                    Message::Cancel { piece, .. } => self.cancels.push((s, piece)),
                    // What the downloader holds: these servers show every piece.
                    Message::Bitfield(_) | Message::Have(_) => {}
                    m => panic!("unexpected {m:?}"),
                }
            }
        }

        fn finished_at(&self) -> Option<Duration> {
            self.ended().then(|| self.now - self.t0)
        }
    }

    /// A peer list flooded with unreachable addresses (300 blackholed, one
    /// real seeder) costs connect timeouts only: at most `MAX_PEERS`
    /// connections are pending or open at once, each unreachable address
    /// is tried a bounded number of times, and the download completes.
    #[test]
    fn a_flood_of_unreachable_peers_costs_only_bounded_connect_timeouts() {
        let t0 = Instant::now();
        let pieces = 40;
        let mut servers: Vec<Server> = (0..300u16)
            .map(|i| {
                let mut s = Server::new(0, 20, 100.0, t0);
                s.addr = SocketAddr::from(([10, 9, (i / 250) as u8, (i % 250) as u8], 7000));
                s.unreachable = true;
                s
            })
            .collect();
        servers.push(Server::new(1, 20, 100.0, t0));
        let mut sim = Sim::new(pieces, &Bitfield::new(pieces), servers, t0);
        sim.run(Duration::from_secs(600));
        assert!(sim.log.contains(&Action::Complete), "{:?}", sim.log.last());
        assert_eq!(sim.written.len(), pieces as usize);
        assert!(sim.most_open <= MAX_PEERS, "{} connections at once", sim.most_open);
        let tries = sim.connects - 1;
        assert!(tries <= 3 * 300, "{tries} attempts at 300 unreachable addresses");
        eprintln!(
            "done in {:.1} s of virtual time, {tries} attempts at unreachable addresses, {} at once",
            sim.finished_at().expect("finished").as_secs_f64(),
            sim.most_open
        );
    }

    #[test]
    fn a_200_ms_peer_gets_enough_in_flight_to_fill_its_rate() {
        let t0 = Instant::now();
        // 400 Mbit/s × 200 ms = 10 MB = 19 pieces in flight needed.
        let pieces = 1200; // 600 MiB
        let mut sim =
            Sim::new(pieces, &Bitfield::new(pieces), vec![Server::new(1, 200, 400.0, t0)], t0);
        sim.run(Duration::from_secs(120));
        assert!(sim.log.contains(&Action::Complete));
        let took = sim.finished_at().expect("finished").as_secs_f64();
        let bound = f64::from(pieces) * PIECE_LEN as f64 / 50e6;
        assert!(took <= bound * 1.1, "took {took:.1}s, the link needs {bound:.1}s");
        assert!(sim.most_outstanding >= 19, "{} in flight", sim.most_outstanding);
        assert_eq!(sim.written.len(), pieces as usize);
    }

    #[test]
    fn a_stalled_peer_loses_its_pieces_after_the_timeout() {
        let t0 = Instant::now();
        let pieces = 40;
        // The only peer listed at first answers the handshake and then
        // nothing; a good one is listed from 25 s. (With both from the
        // start the endgame would rescue the mute peer's pieces first.)
        let mut mute = Server::new(1, 20, 100.0, t0);
        mute.mute = true;
        let mut good = Server::new(2, 20, 100.0, t0);
        good.joins = Duration::from_secs(25);
        let mut sim = Sim::new(pieces, &Bitfield::new(pieces), vec![mute, good], t0);
        sim.run(Duration::from_secs(24));
        let stalled = sim
            .log
            .iter()
            .filter(|a| matches!(a, Action::Close { peer: 0, reason } if reason == "stalled"))
            .count();
        assert_eq!(stalled, 1, "closed once at the timeout");
        assert_eq!(sim.core.stats().active_peers, 1, "reconnected: it is not banned");
        sim.run(Duration::from_secs(60));
        assert!(sim.log.contains(&Action::Complete), "{:?}", sim.log.last());
        // Every piece the mute peer held was requested again from the other.
        for (_, p) in sim.requests.iter().filter(|(s, _)| *s == 0) {
            assert!(sim.requests.contains(&(1, *p)), "piece {p} never re-requested");
        }
        assert_eq!(sim.written.len(), pieces as usize);
    }

    #[test]
    fn the_endgame_duplicates_the_last_requests_and_cancels_the_losers() {
        let t0 = Instant::now();
        let pieces = 30;
        // One fast peer, one very slow one: at the end the fast one
        // duplicates what the slow one holds and wins.
        let fast = Server::new(1, 10, 400.0, t0);
        let slow = Server::new(2, 10, 4.0, t0);
        let mut sim = Sim::new(pieces, &Bitfield::new(pieces), vec![fast, slow], t0);
        sim.run(Duration::from_secs(60));
        assert!(sim.log.contains(&Action::Complete));
        // Both peers are released (their links may carry another file),
        // none is closed as if it had failed.
        let released: Vec<&Action> =
            sim.log.iter().filter(|a| matches!(a, Action::Release { .. })).collect();
        assert_eq!(released.len(), 2, "{released:?}");
        assert!(!sim.log.iter().any(|a| matches!(a, Action::Close { .. })));
        let dup: Vec<u32> = sim
            .requests
            .iter()
            .filter(|(s, _)| *s == 1)
            .map(|(_, p)| *p)
            .filter(|p| sim.requests.contains(&(0, *p)))
            .collect();
        assert!(!dup.is_empty(), "no duplicate request in the endgame");
        assert!(!sim.cancels.is_empty(), "losers were not cancelled");
        for (s, p) in &sim.cancels {
            assert_eq!(*s, 1, "only the slow peer loses");
            assert!(dup.contains(p));
        }
        // Far sooner than the slow peer alone would take for its share.
        assert!(sim.finished_at().expect("done") < Duration::from_secs(3));
        let mut w = sim.written.clone();
        w.sort_unstable();
        w.dedup();
        assert_eq!(w.len(), pieces as usize, "each piece written once");
        assert_eq!(sim.written.len(), pieces as usize);
    }

    #[test]
    fn a_corrupt_peer_is_banned_and_its_piece_fetched_elsewhere() {
        let t0 = Instant::now();
        let pieces = 20;
        let mut bad = Server::new(1, 10, 100.0, t0);
        let good = Server::new(2, 10, 100.0, t0);
        // Which piece the bad one sends first is the picker's choice:
        // corrupt every piece it sends.
        bad.corrupt = None;
        let mut sim = Sim::new(pieces, &Bitfield::new(pieces), vec![bad, good], t0);
        // Find the first piece requested from the bad peer and corrupt it.
        sim.run(Duration::from_millis(11));
        let first = sim.requests.iter().find(|(s, _)| *s == 0).map(|(_, p)| *p).expect("asked");
        sim.servers[0].corrupt = Some(first);
        sim.run(Duration::from_secs(30));
        assert!(sim.log.contains(&Action::Complete));
        assert!(sim.core.is_banned(&addr(1)));
        assert!(sim.log.iter().any(|a| matches!(a,
            Action::Close { peer: 0, reason } if reason.contains("failed its hash"))));
        assert!(sim.requests.contains(&(1, first)), "re-fetched from the good peer");
        // The tracker lists it again every refresh: never reconnected.
        let connects = sim
            .log
            .iter()
            .filter(|a| matches!(a, Action::Connect { addr: a, .. } if *a == addr(1)))
            .count();
        assert_eq!(connects, 1);
        assert_eq!(sim.written.len(), pieces as usize);
    }

    #[test]
    fn a_resumed_download_fetches_only_what_is_missing() {
        let t0 = Instant::now();
        let pieces = 64;
        let mut have = Bitfield::new(pieces);
        for i in (0..pieces).filter(|i| i % 3 != 0) {
            have.set(i);
        }
        let mut sim = Sim::new(pieces, &have, vec![Server::new(1, 20, 100.0, t0)], t0);
        assert_eq!(sim.core.stats().verified, u64::from(have.count_ones()) * PIECE_LEN);
        sim.run(Duration::from_secs(30));
        assert!(sim.log.contains(&Action::Complete));
        let mut asked: Vec<u32> = sim.requests.iter().map(|(_, p)| *p).collect();
        asked.sort_unstable();
        let missing: Vec<u32> = (0..pieces).filter(|i| i % 3 == 0).collect();
        assert_eq!(asked, missing);
        // Already verified before: no FirstPiece again.
        assert!(!sim.log.contains(&Action::FirstPiece));
        // A complete file completes at once, asking no peer.
        let mut sim =
            Sim::new(pieces, &Bitfield::full(pieces), vec![Server::new(1, 20, 100.0, t0)], t0);
        sim.run(Duration::from_secs(1));
        assert_eq!(sim.log, vec![Action::Complete]);
    }

    /// Frames of every `Send` to `peer` among `actions`.
    fn sent_to(actions: &[Action], peer: PeerId) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        for a in actions {
            if let Action::Send { peer: p, bytes } = a {
                let mut b = &bytes[..];
                while !b.is_empty() && *p == peer {
                    let (_, used) = peer::decode(b).unwrap();
                    frames.push(b[..used].to_vec());
                    b = &b[used..];
                }
            }
        }
        frames
    }

    #[test]
    fn the_downloader_tells_its_servers_what_it_holds() {
        let t0 = Instant::now();
        let mut held = Bitfield::new(8);
        held.set(3);
        let mut core =
            DownloadCore::new(meta(8), "u".into(), vec![], None, &held, Timeouts::default(), 1, t0);
        core.add_peers(&[addr(1), addr(2)], t0);
        let mut actions: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        core.connected(0, t0);
        core.connected(1, t0);
        actions.extend(std::iter::from_fn(|| core.poll_action()));
        // Handshake, then its bitfield, then the first window.
        let frames = sent_to(&actions, 0);
        let kinds: Vec<Message<'_>> = frames.iter().map(|f| peer::decode(f).unwrap().0).collect();
        assert!(matches!(kinds[0], Message::Handshake { .. }));
        assert_eq!(kinds[1], Message::Bitfield(held.as_bytes()));
        assert!(kinds[2..].iter().all(|m| matches!(m, Message::Request { .. })));
        // Peer 0 shows only piece 5, peer 1 everything; pieces arrive from
        // both and verify.
        let mut five = Bitfield::new(8);
        five.set(5);
        core.on_message(0, &Message::Bitfield(five.as_bytes()), t0);
        core.on_message(1, &Message::Bitfield(Bitfield::full(8).as_bytes()), t0);
        let _: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        let from = |core: &DownloadCore, piece| {
            core.peers
                .iter()
                .find(|(_, p)| p.outstanding.iter().any(|(q, _)| *q == piece))
                .map(|(id, _)| *id)
        };
        let mut written = Vec::new();
        for piece in [5, 6, 7] {
            let Some(peer) = from(&core, piece) else { continue };
            written.push(piece);
            assert_eq!(core.on_piece(peer, piece, 0, PIECE_LEN as usize, t0), PieceFate::Verify);
            assert!(core.piece_hashed(piece, digest(piece)));
            core.piece_written(piece, Ok(()), t0);
        }
        // Drain the other outstanding requests so everything is flushed.
        core.tick(t0);
        let later: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        let haves = |peer| -> Vec<u32> {
            sent_to(&later, peer)
                .iter()
                .filter_map(|f| match peer::decode(f).unwrap().0 {
                    Message::Have(i) => Some(i),
                    _ => None,
                })
                .collect()
        };
        assert!(haves(1).is_empty(), "peer 1 shows every piece");
        // Peer 0 shows only some: it hears of every piece, those it shows
        // too (it may have offered one that came from elsewhere).
        assert!(written.len() >= 2);
        assert_eq!(haves(0), written);
    }

    #[test]
    fn no_peer_for_the_limit_fails_with_the_last_error() {
        let t0 = Instant::now();
        let mut core = fresh(4, 1, t0);
        let mut now = t0;
        let mut failed = None;
        while now < t0 + NO_PEER_LIMIT + Duration::from_secs(2) {
            core.tick(now);
            while let Some(a) = core.poll_action() {
                match a {
                    Action::WantPeers => core.peers_unavailable("tracker unreachable".into()),
                    Action::Failed(r) => failed = Some((now - t0, r)),
                    a => panic!("{a:?}"),
                }
            }
            now = core.next_deadline().max(now + Duration::from_millis(1));
        }
        let (at, why) = failed.expect("failed");
        assert!(at > NO_PEER_LIMIT && at < NO_PEER_LIMIT + Duration::from_secs(1), "{at:?}");
        assert_eq!(why, "no peer could serve the file for 60s (last error: tracker unreachable)");
    }

    /// A peer that closes the link with the handshake unanswered (no
    /// frame at all) is named as such in the failure: what a `--plaintext`
    /// downloader meets at an encrypted node.
    #[test]
    fn a_link_closed_before_the_handshake_is_answered_is_said_so() {
        let t0 = Instant::now();
        let mut core = fresh(4, 1, t0);
        let mut now = t0;
        let mut failed = None;
        while now < t0 + NO_PEER_LIMIT + Duration::from_secs(2) && failed.is_none() {
            core.tick(now);
            while let Some(a) = core.poll_action() {
                match a {
                    Action::WantPeers => core.add_peers(&[addr(1)], now),
                    Action::Connect { peer, .. } => {
                        core.connected(peer, now);
                        core.closed(peer, "connection closed");
                    }
                    Action::Failed(r) => failed = Some(r),
                    _ => {}
                }
            }
            now = core.next_deadline().max(now + Duration::from_millis(1));
        }
        let why = failed.expect("failed");
        assert!(
            why.ends_with(&format!(
                "(last error: {}: connection closed before answering the handshake (a node \
                 without --plaintext closes a --plaintext downloader's links))",
                addr(1)
            )),
            "{why}"
        );
    }

    /// A `--plaintext` download fails at once, saying why, once every node
    /// listed has closed its link at the handshake without a word (nodes
    /// whose links are encrypted): not after [`NO_PEER_LIMIT`]. One node
    /// that answers keeps it going.
    #[test]
    fn a_plaintext_download_that_every_node_refuses_fails_at_once() {
        let run = |answering: Option<SocketAddr>| {
            let t0 = Instant::now();
            let mut core = fresh(4, 1, t0);
            core.plaintext_links();
            let mut now = t0;
            while now < t0 + Duration::from_secs(5) {
                core.tick(now);
                while let Some(a) = core.poll_action() {
                    match a {
                        Action::WantPeers => core.add_peers(&[addr(1), addr(2)], now),
                        Action::Connect { peer, addr: at } => {
                            core.connected(peer, now);
                            if Some(at) == answering {
                                let bits = Bitfield::full(4);
                                core.on_message(peer, &Message::Bitfield(bits.as_bytes()), now);
                            } else {
                                core.closed(peer, "connection closed");
                            }
                        }
                        Action::Failed(r) => return Some((now - t0, r)),
                        _ => {}
                    }
                }
                now = core
                    .next_deadline()
                    .clamp(now + Duration::from_millis(1), now + Duration::from_millis(100));
            }
            None
        };
        let (after, why) = run(None).expect("failed");
        assert!(after < Duration::from_secs(1), "{after:?}");
        assert!(why.starts_with("every node listed as sharing the file (2) closed"), "{why}");
        assert!(why.ends_with("run it without --plaintext"), "{why}");
        assert_eq!(run(Some(addr(2))), None, "one node serves it");
    }

    /// Runs `core` from `t0` for `secs`, answering every `WantPeers` with
    /// `list(now)`; when and why it failed, if it did.
    fn run_listing(
        core: &mut DownloadCore,
        t0: Instant,
        secs: u64,
        list: impl Fn(Duration) -> Vec<SocketAddr>,
    ) -> Option<(Duration, String)> {
        let mut now = t0;
        while now < t0 + Duration::from_secs(secs) {
            core.tick(now);
            while let Some(a) = core.poll_action() {
                match a {
                    Action::WantPeers => core.add_peers(&list(now - t0), now),
                    Action::Failed(r) => return Some((now - t0, r)),
                    Action::Connect { peer, .. } => core.closed(peer, "refused"),
                    a => panic!("{a:?}"),
                }
            }
            now = core.next_deadline().max(now + Duration::from_millis(1));
        }
        None
    }

    #[test]
    fn a_file_no_node_shares_fails_after_the_shorter_limit() {
        let t0 = Instant::now();
        // Lists that name nobody, or only this node.
        let own = addr(9);
        for listed in [vec![], vec![own]] {
            let none = Bitfield::new(4);
            let mut core = DownloadCore::new(
                meta(4),
                "u".into(),
                vec![],
                Some(own),
                &none,
                Timeouts::default(),
                1,
                t0,
            );
            let (at, why) = run_listing(&mut core, t0, 30, |_| listed.clone()).expect("failed");
            assert!(
                at >= NO_SHARER_LIMIT && at < NO_SHARER_LIMIT + Duration::from_secs(1),
                "{at:?}"
            );
            assert_eq!(why, "no node shares the file (none listed for 10s)");
        }
        // Lists whose only sharer the driver left out as this node's own
        // address (any of its addresses, on a node on every interface).
        let mut core = fresh(4, 1, t0);
        core.listed_itself(true);
        let (_, why) = run_listing(&mut core, t0, 30, |_| vec![]).expect("failed");
        assert_eq!(
            why,
            "no other node shares the file (for 10s the only node listed was this one, which \
             holds 0 of its 4 pieces)"
        );
        // A sharer listed again before the limit (a node restarting) starts
        // the count over; listed but unreachable, it is waited for to the
        // longer limit.
        let mut core = fresh(4, 1, t0);
        let back = Duration::from_secs(8);
        let (at, why) =
            run_listing(&mut core, t0, 90, |t| if t < back { vec![] } else { vec![addr(1)] })
                .expect("failed");
        assert!(at > NO_PEER_LIMIT, "{at:?}");
        assert!(why.starts_with("no peer could serve the file for 60s"), "{why}");
        // Listed, then gone for good (crashed, its listing expired): the
        // shorter limit counts from the list that first named nobody.
        let mut core = fresh(4, 1, t0);
        let gone = Duration::from_secs(20);
        let (at, why) =
            run_listing(&mut core, t0, 90, |t| if t < gone { vec![addr(1)] } else { vec![] })
                .expect("failed");
        assert!(
            at >= gone + NO_SHARER_LIMIT && at < gone + NO_SHARER_LIMIT + Duration::from_secs(3),
            "{at:?}"
        );
        // What went wrong with the node listed before is named.
        assert_eq!(
            why,
            format!(
                "no node shares the file (none listed for 10s; last error: {}: refused)",
                addr(1)
            )
        );
        // The node that was listed is named as out of reach, for a bulk
        // fetch to tell its other files listing only it.
        assert_eq!(core.unreached().collect::<Vec<_>>(), vec![addr(1)]);
        // One reached, even once closed, is not.
        let mut core = fresh(4, 1, t0);
        core.add_peers(&[addr(1), addr(2)], t0);
        while let Some(a) = core.poll_action() {
            if let Action::Connect { peer, addr: a } = a {
                if a == addr(1) {
                    core.connected(peer, t0);
                    core.closed(peer, "reset");
                } else {
                    core.closed(peer, "refused");
                }
            }
        }
        assert_eq!(core.unreached().collect::<Vec<_>>(), vec![addr(2)]);
        // Others listed but left out of the addresses (keys not known yet),
        // or an empty list and then no answer: the longer limit.
        let mut core = fresh(4, 1, t0);
        let mut now = t0;
        let mut failed = None;
        while failed.is_none() && now < t0 + NO_PEER_LIMIT + Duration::from_secs(2) {
            core.tick(now);
            while let Some(a) = core.poll_action() {
                match a {
                    Action::WantPeers if now < t0 + Duration::from_secs(20) => {
                        core.add_peers(&[], now);
                        core.also_listed(2);
                    }
                    Action::WantPeers => {
                        core.add_peers(&[], now);
                        core.peers_unavailable("tracker unreachable".into());
                    }
                    Action::Failed(r) => failed = Some((now - t0, r)),
                    a => panic!("{a:?}"),
                }
            }
            now = core.next_deadline().max(now + Duration::from_millis(1));
        }
        let (at, why) = failed.expect("failed");
        assert!(at > NO_PEER_LIMIT, "{at:?}");
        assert!(why.starts_with("no peer could serve the file for 60s"), "{why}");
    }

    #[test]
    fn a_file_gone_from_its_group_fails_at_once() {
        let t0 = Instant::now();
        let mut core = fresh(4, 1, t0);
        core.tick(t0);
        let mut actions = Vec::new();
        while let Some(a) = core.poll_action() {
            if a == Action::WantPeers {
                core.file_gone("no such file in group g: f".into());
            } else {
                actions.push(a);
            }
        }
        assert_eq!(actions, vec![Action::Failed("no such file in group g: f".into())]);
        core.file_gone("again".into());
        assert_eq!(core.poll_action(), None, "a download fails once");
    }

    /// A core with one active peer (id 0) that has every piece; returns it
    /// and the requests sent.
    fn one_active_peer(pieces: u32, now: Instant) -> (DownloadCore, Vec<u32>) {
        let mut core = fresh(pieces, 1, now);
        core.add_peers(&[addr(1), addr(2)], now);
        core.connected(0, now);
        core.connected(1, now);
        let bits = Bitfield::full(pieces);
        core.on_message(0, &Message::Bitfield(bits.as_bytes()), now);
        core.on_message(1, &Message::Bitfield(bits.as_bytes()), now);
        let mut asked = Vec::new();
        while let Some(a) = core.poll_action() {
            if let Action::Send { peer: 0, bytes } = a {
                let mut b = &bytes[..];
                while let Ok((m, used)) = peer::decode(b) {
                    if let Message::Request { piece, .. } = m {
                        asked.push(piece);
                    }
                    b = &b[used..];
                }
            }
        }
        (core, asked)
    }

    fn closes(core: &mut DownloadCore) -> Vec<(PeerId, String)> {
        let mut out = Vec::new();
        while let Some(a) = core.poll_action() {
            if let Action::Close { peer, reason } = a {
                out.push((peer, reason));
            }
        }
        out
    }

    #[test]
    fn a_slow_peer_is_not_stalled_while_its_bytes_arrive() {
        let t0 = Instant::now();
        let (mut core, _) = one_active_peer(16, t0);
        // A piece that takes 45 s (a seed shared a thousand ways): bytes
        // keep coming, reported every second.
        let step = Duration::from_secs(1);
        let mut now = t0;
        for _ in 0..45 {
            now += step;
            core.on_bytes(0, now);
            core.on_bytes(1, now);
            core.tick(now);
            assert!(closes(&mut core).is_empty(), "closed at {:?}", now - t0);
        }
        // Then peer 0 goes silent: stalled once the timeout has passed
        // since its last byte, not before.
        for _ in 0..25 {
            now += step;
            core.on_bytes(1, now);
            core.tick(now);
            let closed = closes(&mut core);
            let silent = now - (t0 + 45 * step);
            if silent <= STALL_TIMEOUT {
                assert!(closed.is_empty(), "after {silent:?} of silence");
            } else {
                assert_eq!(closed, vec![(0, "stalled".to_owned())]);
                return;
            }
        }
        panic!("never closed");
    }

    type BadInput<'a> = dyn Fn(&mut DownloadCore, &[u32]) -> PieceFate + 'a;

    #[test]
    fn bad_input_closes_only_the_peer_that_sent_it() {
        let t0 = Instant::now();
        let full = Bitfield::full(16);
        let bad: Vec<(&str, Box<BadInput<'_>>)> = vec![
            (
                "unrequested",
                Box::new(|c, asked| {
                    let p = (0..16).find(|p| !asked.contains(p)).expect("an unasked piece");
                    c.on_piece(0, p, 0, PIECE_LEN as usize, t0)
                }),
            ),
            (
                "bad offset",
                Box::new(|c, asked| c.on_piece(0, asked[0], 4, PIECE_LEN as usize - 4, t0)),
            ),
            ("bad length", Box::new(|c, asked| c.on_piece(0, asked[0], 0, 100, t0))),
            (
                "above a piece",
                Box::new(|c, asked| c.on_piece(0, asked[0], 0, PIECE_LEN as usize + 1, t0)),
            ),
            ("out of range", Box::new(|c, _| c.on_piece(0, 16, 0, PIECE_LEN as usize, t0))),
            (
                "second bitfield",
                Box::new(move |c, _| c.on_message(0, &Message::Bitfield(full.as_bytes()), t0)),
            ),
            ("have out of range", Box::new(|c, _| c.on_message(0, &Message::Have(16), t0))),
            ("garbage", Box::new(|c, _| c.on_frame(0, 99, b"\x01\x02", t0))),
            ("malformed have", Box::new(|c, _| c.on_frame(0, peer::kind::HAVE, b"\x01", t0))),
            (
                "a request",
                Box::new(|c, _| {
                    c.on_message(0, &Message::Request { piece: 0, offset: 0, len: 1 }, t0)
                }),
            ),
            (
                "a refusal",
                Box::new(|c, _| {
                    c.on_message(0, &Message::Error { code: ErrorCode::Busy, text: "no" }, t0)
                }),
            ),
        ];
        for (what, send) in bad {
            let (mut core, asked) = one_active_peer(16, t0);
            assert!(!asked.is_empty());
            assert_eq!(send(&mut core, &asked), PieceFate::Discard, "{what}");
            let closed = closes(&mut core);
            assert_eq!(closed.len(), 1, "{what}: {closed:?}");
            assert_eq!(closed[0].0, 0, "{what}");
            assert_eq!(core.stats().active_peers, 1, "{what}: the other peer goes on");
            // Its requests are free for the other peer.
            let next = core.picker.pick(1, &Bitfield::full(16)).expect("a piece for peer 1");
            assert!(asked.contains(&next.get()), "{what}: {next:?} was not peer 0's");
        }
    }

    #[test]
    fn before_the_bitfield_only_a_bitfield_or_a_refusal_is_accepted() {
        let t0 = Instant::now();
        let mut core = DownloadCore::new(
            meta(4),
            "u".into(),
            b"t".to_vec(),
            None,
            &Bitfield::new(4),
            Timeouts::default(),
            1,
            t0,
        );
        core.add_peers(&[addr(1), addr(2), addr(3)], t0);
        for p in 0..3 {
            core.connected(p, t0);
        }
        assert_eq!(core.on_piece(0, 0, 0, PIECE_LEN as usize, t0), PieceFate::Discard);
        core.on_message(1, &Message::Have(0), t0);
        core.on_message(2, &Message::Error { code: ErrorCode::BadTicket, text: "bad ticket" }, t0);
        let closed = closes(&mut core);
        assert_eq!(closed.len(), 3, "{closed:?}");
        assert!(closed[2].1.contains("bad ticket"));
        // The handshake carries the ticket and the user.
        let mut core = DownloadCore::new(
            meta(4),
            "alice".into(),
            b"tk".to_vec(),
            None,
            &Bitfield::new(4),
            Timeouts::default(),
            1,
            t0,
        );
        core.add_peers(&[addr(1)], t0);
        core.connected(0, t0);
        let sent: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        let Action::Send { bytes, .. } = &sent[1] else { panic!("{sent:?}") };
        let (m, _) = peer::decode(bytes).expect("a frame");
        assert_eq!(
            m,
            Message::Handshake {
                version: peer::VERSION,
                file_id: Sha1Digest([9; 20]),
                user: "alice",
                ticket: b"tk"
            }
        );
        // Without a bitfield within the connect timeout it is dropped.
        core.tick(t0 + CONNECT_TIMEOUT + Duration::from_millis(1));
        assert_eq!(closes(&mut core)[0].1, "timed out connecting");
    }

    /// A handshake sent on another download's link, behind that one's last
    /// requests, is not timed while the server answers those (a node
    /// holding its upload to a rate may take longer than the connect
    /// timeout): only once the link is this download's.
    #[test]
    fn a_handshake_behind_another_download_is_timed_once_the_link_is_free() {
        let t0 = Instant::now();
        let mut core = fresh(4, 1, t0);
        core.add_peers(&[addr(1)], t0);
        core.connected_behind(0, t0);
        let sent: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        assert!(sent.iter().any(|a| matches!(a, Action::Send { peer: 0, .. })), "{sent:?}");
        let later = t0 + 10 * CONNECT_TIMEOUT;
        core.tick(later);
        assert!(closes(&mut core).is_empty(), "waiting behind is not timing out");
        core.link_free(0, later);
        core.tick(later + CONNECT_TIMEOUT - Duration::from_millis(1));
        assert!(closes(&mut core).is_empty());
        core.tick(later + CONNECT_TIMEOUT + Duration::from_millis(1));
        assert_eq!(closes(&mut core)[0].1, "timed out connecting");
    }

    #[test]
    fn a_reject_names_its_request_whatever_the_order() {
        let t0 = Instant::now();
        let (mut core, asked) = one_active_peer(16, t0);
        let len = PIECE_LEN as u32;
        // Not the oldest: the others stay asked for, the oldest arrives.
        core.on_message(0, &Message::Reject { piece: asked[3], offset: 0, len }, t0);
        assert!(closes(&mut core).is_empty());
        assert_eq!(core.on_piece(0, asked[0], 0, PIECE_LEN as usize, t0), PieceFate::Verify);
        // A reject of nothing asked for is a protocol error.
        let never = (0..16).find(|p| !asked.contains(p)).unwrap();
        core.on_message(0, &Message::Reject { piece: never, offset: 0, len }, t0);
        assert!(closes(&mut core)[0].1.contains("reject of unrequested piece"));
    }

    /// An older node refuses this version's handshake; the download
    /// connects to it again at once, speaking the version below, down to
    /// the oldest, and only to it.
    #[test]
    fn a_node_of_an_older_version_is_asked_again_in_its_version() {
        let t0 = Instant::now();
        let mut core = fresh(4, 1, t0);
        core.add_peers(&[addr(1), addr(2)], t0);
        let versions = |core: &mut DownloadCore| -> Vec<(PeerId, u32)> {
            let mut v = Vec::new();
            while let Some(a) = core.poll_action() {
                if let Action::Send { peer, bytes } = a {
                    if let Ok((Message::Handshake { version, .. }, _)) = peer::decode(&bytes) {
                        v.push((peer, version));
                    }
                }
            }
            v
        };
        core.connected(0, t0);
        core.connected(1, t0);
        assert_eq!(versions(&mut core), vec![(0, peer::VERSION), (1, peer::VERSION)]);
        assert_eq!(core.version_to(0), Some(peer::VERSION));
        let refusal = Message::Error {
            code: ErrorCode::Version,
            text: "protocol version 4 not supported (this node speaks 2)",
        };
        let mut id = 0;
        for speaks in (peer::MIN_VERSION..peer::VERSION).rev() {
            core.on_message(id, &refusal, t0);
            let actions: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
            assert!(matches!(actions[0], Action::Close { peer, .. } if peer == id), "{actions:?}");
            let again = actions.iter().find_map(|a| match a {
                Action::Connect { peer, addr: a } => Some((*peer, *a)),
                _ => None,
            });
            let (next, at) = again.expect("connects again");
            assert_eq!(at, addr(1));
            id = next;
            core.connected(id, t0);
            assert_eq!(versions(&mut core), vec![(id, speaks)]);
            assert_eq!(core.version_to(id), Some(speaks));
        }
        // Refused again in the oldest version: it is gone, not retried.
        core.on_message(id, &refusal, t0);
        let actions: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        assert!(actions.iter().any(|a| matches!(a, Action::Close { .. })), "{actions:?}");
        assert!(!actions.iter().any(|a| matches!(a, Action::Connect { .. })), "{actions:?}");
        // The other peer still speaks this version.
        assert_eq!(core.version_to(1), Some(peer::VERSION));
    }

    /// Once every piece left is asked of a peer, the download asks it for
    /// nothing more.
    #[test]
    fn a_peer_asked_for_every_piece_left_is_asked_nothing_more() {
        let t0 = Instant::now();
        for pieces in [1, 4] {
            let mut core = fresh(pieces, 1, t0);
            core.add_peers(&[addr(1)], t0);
            let mut sent: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
            assert!(!core.asks_nothing_more(0), "not connected");
            core.connected(0, t0);
            sent.extend(std::iter::from_fn(|| core.poll_action()));
            // Requests go ahead of the bitfield.
            let ahead = requests_in(&sent, 0).len();
            assert!(ahead >= 1);
            assert_eq!(core.asks_nothing_more(0), ahead == pieces as usize, "{ahead} ahead");
            core.on_message(0, &Message::Bitfield(Bitfield::full(pieces).as_bytes()), t0);
            sent.extend(std::iter::from_fn(|| core.poll_action()));
            let asked = requests_in(&sent, 0).len();
            assert!(asked >= 1);
            // Only once every piece is asked of it (one piece: at once).
            assert_eq!(core.asks_nothing_more(0), asked == pieces as usize, "{asked} asked");
            assert!(!core.asks_nothing_more(7), "an unknown peer");
        }
    }

    #[test]
    fn a_busy_piece_is_asked_elsewhere_and_of_its_peer_again_later() {
        let t0 = Instant::now();
        let pieces = 4;
        let len = PIECE_LEN as u32;
        let full = Bitfield::full(pieces);
        let mut core = fresh(pieces, 1, t0);
        core.add_peers(&[addr(1)], t0);
        core.connected(0, t0);
        core.on_message(0, &Message::Bitfield(full.as_bytes()), t0);
        let sent: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        let asked = requests_in(&sent, 0);
        assert_eq!(asked.len(), pieces as usize, "{sent:?}");
        // Peer 0's slots are taken: the first piece comes back.
        core.on_message(0, &Message::Busy { piece: asked[0], offset: 0, len }, t0);
        let sent: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        assert!(requests_in(&sent, 0).is_empty(), "not asked of the busy peer again: {sent:?}");
        assert!(!sent.iter().any(|a| matches!(a, Action::Close { .. })), "{sent:?}");
        // Another peer (asked, behind its handshake, for what the first
        // has not sent yet too): asked there.
        core.add_peers(&[addr(2)], t0);
        core.connected(1, t0);
        core.on_message(1, &Message::Bitfield(full.as_bytes()), t0);
        let sent: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        assert!(requests_in(&sent, 1).contains(&asked[0]), "{sent:?}");
        // Peer 1 is busy too: nobody is asked until the first snooze ends,
        // then peer 0 is asked again (it still has the piece).
        let t1 = t0 + Duration::from_millis(300);
        core.on_message(1, &Message::Busy { piece: asked[0], offset: 0, len }, t1);
        let mut now = t1;
        while now < t0 + BUSY_SNOOZE {
            core.on_bytes(0, now);
            core.tick(now);
            let sent: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
            assert!(requests_in(&sent, 0).is_empty(), "{:?}: {sent:?}", now - t0);
            assert!(requests_in(&sent, 1).is_empty(), "{:?}: {sent:?}", now - t0);
            now += Duration::from_millis(100);
        }
        core.tick(t0 + BUSY_SNOOZE);
        let sent: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        assert_eq!(requests_in(&sent, 0), vec![asked[0]], "{sent:?}");
        assert_eq!(core.on_piece(0, asked[0], 0, len as usize, now), PieceFate::Verify);
        // A busy for a piece not asked of it (any more), or before its
        // bitfield, is a protocol error.
        core.on_message(1, &Message::Busy { piece: asked[0], offset: 0, len }, now);
        assert!(closes(&mut core)[0].1.contains("busy of unrequested piece"));
        let mut core = fresh(pieces, 1, t0);
        core.add_peers(&[addr(1)], t0);
        core.connected(0, t0);
        core.on_message(0, &Message::Busy { piece: 0, offset: 0, len }, t0);
        assert!(closes(&mut core)[0].1.contains("busy before the bitfield"));
    }

    #[test]
    fn a_reject_frees_its_request_and_forgets_the_piece() {
        let t0 = Instant::now();
        let (mut core, asked) = one_active_peer(8, t0);
        let len = PIECE_LEN as u32;
        core.on_message(0, &Message::Reject { piece: asked[0], offset: 0, len }, t0);
        assert!(closes(&mut core).is_empty());
        // Not asked of that peer again: it said it lacks it.
        let t = t0 + Duration::from_millis(5);
        for p in &asked[1..] {
            assert_eq!(core.on_piece(0, *p, 0, PIECE_LEN as usize, t), PieceFate::Verify);
            assert!(core.piece_hashed(*p, digest(*p)));
            core.piece_written(*p, Ok(()), t);
        }
        let again: Vec<u32> = std::iter::from_fn(|| core.poll_action())
            .filter_map(|a| match a {
                Action::Send { peer: 0, bytes } => Some(bytes),
                _ => None,
            })
            .flat_map(|b| {
                let mut v = Vec::new();
                let mut b = &b[..];
                while let Ok((Message::Request { piece, .. }, used)) = peer::decode(b) {
                    v.push(piece);
                    b = &b[used..];
                }
                v
            })
            .collect();
        assert!(!again.contains(&asked[0]), "{again:?}");
    }

    /// A seed keeps back a piece while a crowd gets its first copies and
    /// offers it again only when the downloader asks or reports: a
    /// downloader with nothing else to fetch asks again for what it was
    /// refused, after [`REJECT_RETRY`] — and one refused every time still
    /// fails [`NO_PEER_LIMIT`] after it was last served.
    #[test]
    fn a_rejected_piece_is_asked_for_again_when_nothing_else_is_left() {
        let t0 = Instant::now();
        let len = PIECE_LEN as u32;
        // One seed showing 4 pieces sends 3 and rejects the first asked for.
        let refused_one = || {
            let pieces = 4;
            let mut core = fresh(pieces, 1, t0);
            core.add_peers(&[addr(1)], t0);
            core.connected(0, t0);
            core.on_message(0, &Message::Bitfield(Bitfield::full(pieces).as_bytes()), t0);
            let asked =
                requests_in(&std::iter::from_fn(|| core.poll_action()).collect::<Vec<_>>(), 0);
            assert_eq!(asked.len(), pieces as usize, "{asked:?}");
            let kept = asked[0];
            core.on_message(0, &Message::Reject { piece: kept, offset: 0, len }, t0);
            for &p in &asked[1..] {
                assert_eq!(core.on_piece(0, p, 0, PIECE_LEN as usize, t0), PieceFate::Verify);
                assert!(core.piece_hashed(p, digest(p)));
                core.piece_written(p, Ok(()), t0);
            }
            (core, kept)
        };
        let (mut core, kept) = refused_one();
        let served_last = t0;
        let mut now = t0;
        let mut retries = Vec::new();
        let mut failed = None;
        while failed.is_none() && now < t0 + NO_PEER_LIMIT + Duration::from_secs(10) {
            now += Duration::from_millis(250);
            core.tick(now);
            let actions: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
            for a in &actions {
                if let Action::Failed(why) = a {
                    failed = Some((now, why.clone()));
                }
            }
            for p in requests_in(&actions, 0) {
                assert_eq!(p, kept);
                retries.push(now);
                // Refused again, every time.
                core.on_message(0, &Message::Reject { piece: p, offset: 0, len }, now);
            }
        }
        assert!(
            retries.first().is_some_and(|&r| r >= t0 + REJECT_RETRY && r < t0 + REJECT_RETRY * 2),
            "first asked again at {:?}",
            retries.first().map(|r| *r - t0)
        );
        assert!(retries.len() >= 10, "asked again every {REJECT_RETRY:?}: {}", retries.len());
        let (at, why) = failed.expect("failed");
        assert!(why.starts_with("no peer could serve the file for 60s"), "{why}");
        let waited = at - served_last;
        assert!(
            waited > NO_PEER_LIMIT && waited < NO_PEER_LIMIT + Duration::from_secs(1),
            "{waited:?}"
        );

        // Offered again after a request: the piece is fetched.
        let (mut core, kept) = refused_one();
        while core.poll_action().is_some() {}
        let later = t0 + REJECT_RETRY + Duration::from_millis(10);
        core.tick(later);
        let actions: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        assert_eq!(requests_in(&actions, 0), vec![kept]);
        // The seed refuses it (it was not offered) and offers it.
        core.on_message(0, &Message::Reject { piece: kept, offset: 0, len }, later);
        core.on_message(0, &Message::Have(kept), later);
        let actions: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        assert_eq!(requests_in(&actions, 0), vec![kept]);
        // Offered, the request counts as served however long it waits in
        // the seed's queue (the seed heard from meanwhile): no failure 60 s
        // after the last piece.
        let mut now = later;
        while now < t0 + NO_PEER_LIMIT + Duration::from_secs(10) {
            now += Duration::from_millis(250);
            if (now - later).as_millis() % 5000 == 0 {
                core.on_message(0, &Message::Have(kept), now);
            }
            core.tick(now);
            let failed = std::iter::from_fn(|| core.poll_action())
                .any(|a| matches!(a, Action::Failed(_) | Action::Close { .. }));
            assert!(!failed, "at {:?}", now - t0);
        }
        assert_eq!(core.on_piece(0, kept, 0, PIECE_LEN as usize, now), PieceFate::Verify);
        assert!(core.piece_hashed(kept, digest(kept)));
        core.piece_written(kept, Ok(()), now);
        let done = std::iter::from_fn(|| core.poll_action()).any(|a| matches!(a, Action::Complete));
        assert!(done);
    }

    /// The pieces named by the frames sent to `to` that `named` picks out.
    fn pieces_in(
        actions: &[Action],
        to: PeerId,
        named: impl Fn(&Message<'_>) -> Option<u32>,
    ) -> Vec<u32> {
        let mut v = Vec::new();
        for a in actions {
            if let Action::Send { peer, bytes } = a {
                if *peer != to {
                    continue;
                }
                let mut b = &bytes[..];
                while let Ok((m, used)) = peer::decode(b) {
                    v.extend(named(&m));
                    b = &b[used..];
                }
            }
        }
        v
    }

    fn requests_in(actions: &[Action], to: PeerId) -> Vec<u32> {
        pieces_in(actions, to, |m| match m {
            Message::Request { piece, .. } => Some(*piece),
            _ => None,
        })
    }

    fn cancels_in(actions: &[Action], to: PeerId) -> Vec<u32> {
        pieces_in(actions, to, |m| match m {
            Message::Cancel { piece, .. } => Some(*piece),
            _ => None,
        })
    }

    #[test]
    fn requests_ride_behind_the_handshake_and_refusals_free_them() {
        let t0 = Instant::now();
        let pieces = 16;
        let mut core = fresh(pieces, 1, t0);
        core.add_peers(&[addr(1)], t0);
        core.connected(0, t0);
        let sent: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        let asked = requests_in(&sent, 0);
        assert_eq!(asked.len(), crate::flow::INITIAL_REQUESTS, "{sent:?}");
        // The handshake goes first, in the same send.
        let Some(Action::Send { bytes, .. }) =
            sent.iter().find(|a| matches!(a, Action::Send { .. }))
        else {
            panic!()
        };
        assert!(matches!(peer::decode(bytes), Ok((Message::Handshake { .. }, _))));
        // The peer has only the even pieces: its answers to the odd ones
        // are rejects, right after its bitfield.
        let mut bits = Bitfield::new(pieces);
        for i in (0..pieces).step_by(2) {
            bits.set(i);
        }
        let t = t0 + Duration::from_millis(50);
        core.on_message(0, &Message::Bitfield(bits.as_bytes()), t);
        let mut refused = Vec::new();
        for &p in &asked {
            if p % 2 == 1 {
                let len = PIECE_LEN as u32;
                core.on_message(0, &Message::Reject { piece: p, offset: 0, len }, t);
                refused.push(p);
            } else {
                assert_eq!(core.on_piece(0, p, 0, PIECE_LEN as usize, t), PieceFate::Verify);
            }
        }
        assert!(closes(&mut core).is_empty(), "refusals are not fatal");
        // Those pieces are free for another peer, and never asked of this one again.
        core.add_peers(&[addr(2)], t);
        core.connected(1, t);
        let later: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        let again = requests_in(&later, 1);
        assert!(refused.iter().any(|p| again.contains(p)), "{refused:?} vs {again:?}");
        assert!(requests_in(&later, 0).iter().all(|p| p % 2 == 0));
    }

    #[test]
    fn at_most_max_peers_at_once_and_not_always_the_same_ones() {
        let t0 = Instant::now();
        let list: Vec<SocketAddr> = (0..200u16)
            .map(|i| SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8], 7)))
            .collect();
        let timeouts = Timeouts { max_peers: 10, ..Timeouts::default() };
        let picked = |seed: u64| {
            let mut core = DownloadCore::new(
                meta(4),
                "u".into(),
                vec![],
                None,
                &Bitfield::new(4),
                timeouts,
                seed,
                t0,
            );
            core.add_peers(&list, t0);
            core.add_peers(&list, t0);
            let mut v: Vec<SocketAddr> = std::iter::from_fn(|| core.poll_action())
                .filter_map(|a| match a {
                    Action::Connect { addr, .. } => Some(addr),
                    _ => None,
                })
                .collect();
            assert_eq!(v.len(), 10, "capped, also when listed again");
            // One closes: a place for one more.
            core.closed(0, "gone");
            core.add_peers(&list, t0);
            assert_eq!(std::iter::from_fn(|| core.poll_action()).count(), 1);
            v.sort();
            v
        };
        assert_ne!(picked(1), picked(2), "two downloaders pick different peers");
    }

    #[test]
    fn peers_given_at_the_start_are_its_first_list() {
        let t0 = Instant::now();
        let wants = |core: &mut DownloadCore| {
            std::iter::from_fn(|| core.poll_action()).fold((0, 0), |(w, c), a| match a {
                Action::WantPeers => (w + 1, c),
                Action::Connect { .. } => (w, c + 1),
                _ => (w, c),
            })
        };
        // Not given any: the first tick asks.
        let mut asks = fresh(4, 1, t0);
        asks.tick(t0);
        assert_eq!(wants(&mut asks), (1, 0));
        // Given two: it connects to them at once and asks the source only
        // when a list would be due again.
        let mut given = fresh(4, 1, t0);
        given.given_peers(&[addr(1), addr(2)], t0);
        given.tick(t0);
        assert_eq!(wants(&mut given), (0, 2));
        given.tick(t0 + PEER_RETRY - Duration::from_millis(1));
        assert_eq!(wants(&mut given), (0, 0));
        given.tick(t0 + PEER_RETRY);
        assert_eq!(wants(&mut given), (1, 0));
        // Given none (nobody online): asked again as soon as with none
        // connected.
        let mut empty = fresh(4, 1, t0);
        empty.given_peers(&[], t0);
        empty.tick(t0);
        assert_eq!(wants(&mut empty), (0, 0));
        empty.tick(t0 + PEER_RETRY);
        assert_eq!(wants(&mut empty), (1, 0));
    }

    #[test]
    fn requests_waiting_too_long_at_a_busy_peer_are_asked_elsewhere() {
        let t0 = Instant::now();
        // Peer 0 took 8 requests; peer 1 took 8 others. Neither answers.
        let (mut core, asked) = one_active_peer(24, t0);
        assert_eq!(asked.len(), 8);
        let t = t0 + REQUEST_PATIENCE + Duration::from_millis(1);
        core.tick(t);
        let sent: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        let cancelled = cancels_in(&sent, 0);
        // All but the one it is sending, and asked of peer 1 or 0 again
        // as the picker sees fit; none is lost.
        assert_eq!(cancelled, asked[1..].to_vec(), "{sent:?}");
        // A late copy of a cancelled piece is dropped, not a protocol error.
        assert_eq!(core.on_piece(0, asked[3], 0, PIECE_LEN as usize, t), PieceFate::Discard);
        assert!(closes(&mut core).is_empty());
        // A piece only this peer has is left where it is.
        let t0 = Instant::now();
        let mut core = fresh(4, 1, t0);
        core.add_peers(&[addr(1)], t0);
        core.connected(0, t0);
        core.on_message(0, &Message::Bitfield(Bitfield::full(4).as_bytes()), t0);
        while core.poll_action().is_some() {}
        core.tick(t0 + REQUEST_PATIENCE * 2);
        let cancels = requests_in(&[], 0).len()
            + std::iter::from_fn(|| core.poll_action())
                .filter(|a| matches!(a, Action::Send { bytes, .. } if peer::decode(bytes).is_ok_and(|(m, _)| matches!(m, Message::Cancel { .. }))))
                .count();
        assert_eq!(cancels, 0, "nobody else has those pieces");
    }

    #[test]
    fn an_idle_peer_takes_over_the_request_queued_deepest_at_a_busy_one() {
        let t0 = Instant::now();
        let pieces = 12;
        let mut core = fresh(pieces, 1, t0);
        core.add_peers(&[addr(1), addr(2)], t0);
        core.connected(0, t0);
        core.on_message(0, &Message::Bitfield(Bitfield::full(pieces).as_bytes()), t0);
        let queued = requests_in(&std::iter::from_fn(|| core.poll_action()).collect::<Vec<_>>(), 0);
        assert_eq!(queued.len(), crate::flow::INITIAL_REQUESTS);
        // Peer 1 holds nothing yet (a downloader listed as fetching): its
        // answers to the requests that rode behind the handshake are rejects.
        core.connected(1, t0);
        core.on_message(1, &Message::Bitfield(Bitfield::new(pieces).as_bytes()), t0);
        let first: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        for p in requests_in(&first, 1) {
            let len = PIECE_LEN as u32;
            core.on_message(1, &Message::Reject { piece: p, offset: 0, len }, t0);
        }
        while core.poll_action().is_some() {}
        // It verifies the piece peer 0 is sending and the one queued last
        // there; the others are still free to ask of peer 0 only.
        let (head, deepest) = (queued[0], queued[queued.len() - 1]);
        let t = t0 + STEAL_AFTER / 2;
        core.on_message(1, &Message::Have(head), t);
        core.on_message(1, &Message::Have(deepest), t);
        let early: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        assert!(requests_in(&early, 1).is_empty(), "waited less than STEAL_AFTER: {early:?}");
        assert!(cancels_in(&early, 0).is_empty());
        let t = t0 + STEAL_AFTER + Duration::from_millis(100);
        core.on_bytes(0, t);
        core.tick(t);
        let sent: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        assert_eq!(cancels_in(&sent, 0), vec![deepest], "{sent:?}");
        assert_eq!(requests_in(&sent, 1), vec![deepest]);
        assert!(closes(&mut core).is_empty());
        // The piece whose bytes are arriving is not taken, and a late copy
        // of the stolen one from peer 0 is dropped quietly.
        let t = t + Duration::from_secs(1);
        core.on_bytes(0, t);
        core.tick(t);
        let later: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        assert!(!cancels_in(&later, 0).contains(&head), "{later:?}");
        assert_eq!(core.on_piece(0, deepest, 0, PIECE_LEN as usize, t), PieceFate::Discard);
        assert_eq!(core.on_piece(1, deepest, 0, PIECE_LEN as usize, t), PieceFate::Verify);
        assert!(closes(&mut core).is_empty());
        // Nothing from peer 0 since (its upload slots all taken): the first
        // in line is taken over too.
        core.tick(t + STEAL_AFTER + Duration::from_millis(100));
        let idle: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        assert_eq!(cancels_in(&idle, 0), vec![head], "{idle:?}");
        assert_eq!(requests_in(&idle, 1), vec![head]);
        assert!(closes(&mut core).is_empty());
    }

    #[test]
    fn a_request_on_a_long_path_waits_its_round_trips_before_it_is_taken() {
        let t0 = Instant::now();
        let pieces = 12;
        let rtt = Duration::from_millis(200);
        let mut core = fresh(pieces, 1, t0);
        core.add_peers(&[addr(1), addr(2)], t0);
        core.connected(0, t0);
        core.on_message(0, &Message::Bitfield(Bitfield::full(pieces).as_bytes()), t0 + rtt);
        let queued = requests_in(&std::iter::from_fn(|| core.poll_action()).collect::<Vec<_>>(), 0);
        core.connected(1, t0);
        core.on_message(1, &Message::Bitfield(Bitfield::new(pieces).as_bytes()), t0 + rtt);
        let first: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        for p in requests_in(&first, 1) {
            let len = PIECE_LEN as u32;
            core.on_message(1, &Message::Reject { piece: p, offset: 0, len }, t0 + rtt);
        }
        while core.poll_action().is_some() {}
        let deepest = queued[queued.len() - 1];
        core.on_message(1, &Message::Have(deepest), t0 + rtt);
        // Asked at t0 with the handshake. Past STEAL_AFTER and a round
        // trip, short of two: left where it is.
        let t = t0 + STEAL_AFTER + 2 * rtt - Duration::from_millis(50);
        core.on_bytes(0, t);
        core.tick(t);
        let early: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        assert!(cancels_in(&early, 0).is_empty(), "{early:?}");
        // (A look that found none holds the next off for STEAL_RETRY.)
        let t = t + STEAL_RETRY;
        core.on_bytes(0, t);
        core.tick(t);
        let sent: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
        assert_eq!(cancels_in(&sent, 0), vec![deepest], "{sent:?}");
    }

    #[test]
    fn peers_with_nothing_missing_keep_no_download_waiting() {
        let t0 = Instant::now();
        let pieces = 4;
        let mut core = fresh(pieces, 1, t0);
        core.add_peers(&[addr(1)], t0);
        core.connected(0, t0);
        // Another downloader with nothing: connected, answering, useless.
        core.on_message(0, &Message::Bitfield(Bitfield::new(pieces).as_bytes()), t0);
        let asked = requests_in(&std::iter::from_fn(|| core.poll_action()).collect::<Vec<_>>(), 0);
        for p in asked {
            let len = PIECE_LEN as u32;
            core.on_message(0, &Message::Reject { piece: p, offset: 0, len }, t0);
        }
        let mut now = t0;
        let mut failed = None;
        while now < t0 + NO_PEER_LIMIT + Duration::from_secs(2) && failed.is_none() {
            core.tick(now);
            while let Some(a) = core.poll_action() {
                match a {
                    Action::Failed(r) => failed = Some((now - t0, r)),
                    Action::WantPeers | Action::Send { .. } | Action::Close { .. } => {}
                    a => panic!("{a:?}"),
                }
            }
            now += Duration::from_millis(250);
        }
        let (at, why) = failed.expect("failed");
        assert!(at > NO_PEER_LIMIT && at < NO_PEER_LIMIT + Duration::from_secs(1), "{at:?}");
        assert!(why.starts_with("no peer could serve the file for 60s"), "{why}");
        // Had it shown a piece, the download would have waited for it.
        let mut core = fresh(pieces, 1, t0);
        core.add_peers(&[addr(1)], t0);
        core.connected(0, t0);
        let mut one = Bitfield::new(pieces);
        one.set(2);
        core.on_message(0, &Message::Bitfield(one.as_bytes()), t0);
        while core.poll_action().is_some() {}
        let mut now = t0;
        while now < t0 + NO_PEER_LIMIT + Duration::from_secs(2) {
            // A slow piece on its way: bytes keep coming.
            core.on_bytes(0, now);
            core.tick(now);
            let acts: Vec<Action> = std::iter::from_fn(|| core.poll_action()).collect();
            assert!(!acts.iter().any(|a| matches!(a, Action::Failed(_))), "{acts:?}");
            now += Duration::from_millis(500);
        }
    }

    proptest! {
        /// Whatever peers send and whatever digests the driver reports,
        /// the core never panics and never says to write a piece whose
        /// digest is not the file's.
        #[test]
        fn random_events_never_panic_nor_write_a_bad_piece(
            ops in proptest::collection::vec((0u8..10, 0u32..4, 0u32..12, any::<u32>(), proptest::collection::vec(any::<u8>(), 0..12)), 0..300)
        ) {
            let t0 = Instant::now();
            let pieces = 10;
            let mut core = fresh(pieces, 3, t0);
            let mut now = t0;
            let mut written = HashSet::new();
            for (op, peer, piece, x, bytes) in ops {
                now += Duration::from_millis(u64::from(x % 3000));
                match op {
                    0 => core.add_peers(&[addr((x % 5) as u8)], now),
                    1 => core.connected(peer, now),
                    2 => core.closed(peer, "gone"),
                    3 => { core.on_frame(peer, x % 9, &bytes, now); }
                    4 => { core.on_message(peer, &Message::Bitfield(&bytes), now); }
                    5 => { core.on_piece(peer, piece, x % 2, if x % 5 == 0 { 1 } else { PIECE_LEN as usize }, now); }
                    6 => {
                        let good = x % 4 != 0;
                        let d = if good { digest(piece) } else { Sha1Digest([x as u8; 20]) };
                        if core.piece_hashed(piece, d) {
                            prop_assert_eq!(d, digest(piece));
                            prop_assert!(written.insert(piece) || piece >= pieces, "written twice");
                            let r = if x % 50 == 0 { Err("disk".to_owned()) } else { Ok(()) };
                            core.piece_written(piece, r, now);
                        }
                    }
                    7 => { core.piece_written(piece, Ok(()), now); }
                    8 => { core.on_message(peer, &Message::Have(piece), now); }
                    _ => core.tick(now),
                }
                while let Some(a) = core.poll_action() {
                    if let Action::Send { bytes, .. } = a {
                        let mut b = &bytes[..];
                        while !b.is_empty() {
                            let (_, used) = peer::decode(b).expect("whole frames");
                            b = &b[used..];
                        }
                    }
                }
                prop_assert!(core.stats().verified <= core.meta().len);
            }
        }
    }
}
