//! Initial seeding: which of its pieces a seed tells each downloader of.
//! No I/O; `now` is passed in.
//!
//! In a flash crowd every downloader starts with the seed as the only
//! source of every piece. Told of every piece, each picks at random, so the
//! seed sends the same pieces to several downloaders (2–2.3 copies of the
//! file for a crowd of 12, measured) before the crowd can trade them, and
//! the last downloader finishes about when the seed's last copy does.
//! BitTorrent's answer is super-seeding; this is the same idea for a
//! protocol in which the downloader tells the server what it holds (its
//! bitfield after the handshake, a `have` per piece it verifies):
//!
//! - A seed keeps, per file, how many downloaders it knows to hold or to
//!   have been offered each piece ([`SeedPlan`]'s copies: offered, asked
//!   for, or reported held; each session counts a piece once).
//! - A session ([`SeedView`]) is told of only a few pieces at a time, the
//!   least-copied ones it lacks, starting the scan at a random piece so
//!   that sessions (and seeds in other processes) spread apart. The
//!   bitfield a seed sends is those; each later offer is a `have`.
//! - It keeps each session [`SeedView::target`] offers ahead, counting
//!   offers not asked for and pieces asked for and not yet sent:
//!   [`MIN_OFFERS`] plus the pieces it asked for in the last second, so
//!   that a session that gets one piece a second from a seed shared many
//!   ways holds one or two, and the seed's pieces leave about as fast as
//!   they are offered (offers that wait behind others at a busy seed were
//!   what made it send second copies before first ones arrived).
//! - A session that opens alone at the seed is told of every piece: nobody
//!   to spread pieces among, and a downloader on a long path must never
//!   wait for offers (offered a piece at a time, its offers grew one round
//!   trip at a time and its flow control, seeing the rate flat, left slow
//!   start early: 95 → 61–75 MB/s at 200 ms). Those offers are not counted
//!   as copies, only what it asks for, so a crowd that forms after it is
//!   offered pieces as if it had not been told (counting them, or telling
//!   it [`LONE_OFFERS`] pieces, left the crowd's first pieces queued at
//!   the seed behind its requests). A session left alone later is kept
//!   [`LONE_OFFERS`] plus twice its asks ahead.
//! - A request for a piece the session was not offered (a downloader's
//!   first window goes out before it sees the bitfield) is answered with
//!   a `reject` — "not offered", which the downloader reads exactly as
//!   the bitfield said; a later `have` may offer it. (Serving such a
//!   request when nobody held or was offered the piece never happened
//!   under these rules: a session with room for more offers has been
//!   offered every such piece already.)
//!
//! - While a crowd is served its first copies (more than one session open
//!   and some piece never sent), a session that has not asked for every
//!   piece that never went out is offered only such pieces, and its
//!   request for a piece that already went out is kept back —
//!   at the request, before its turn at the upload slots and when its
//!   turn comes ([`SeedPlan::withhold`]): it is answered with a `reject`
//!   (sent ahead of any offer made with it), and the session forgets the
//!   piece as offered (it is offered again once the session wants no
//!   first copy). A session is always left something to ask for. The crowd
//!   passes on what the seed sent once; the seed's upload goes to what it
//!   alone holds. (Traced in the simulator's crowd of 12: 11 second copies
//!   went out before the last first copy, which left at 6.9 s of a 5.4 s
//!   bound: once every piece had been offered, offers went on to pieces
//!   already sent while others still waited to go out.)
//!
//! - While a crowd of no more sessions than upload slots (where every
//!   session sends at once and TCP splits the seed's uplink) gets its
//!   first copies, a session that was sent
//!   [`FIRSTS_AHEAD`] more of them than its share, or half as many again,
//!   is deferred ([`SeedPlan::defer`]). Its share is the first copies
//!   sent to the open sessions in proportion to the pieces each holds
//!   (as far as the seed knows: sent them, or reported held): a fast
//!   downloader beside a slow one takes most first copies but holds most
//!   pieces too, and is not held to the slow one's pace; one that got
//!   more of what it holds from the seed than the others did is. Only
//!   while other sessions have requests waiting, so that the seed's
//!   upload never idles for it. Its request next in line is answered
//!   `busy` (only a downloader that reads `busy`; it asks again after
//!   its snooze) and it is offered nothing more meanwhile. TCP does not
//!   split a seed's upload evenly: on the namespace testbed the first
//!   downloader to connect took 12 of 64 first copies while the others
//!   took 4-5, then had to pass each on to eleven others from its own
//!   uplink, while the seed sent it second copies; deferred, the counts
//!   ran 4-8.
//!
//! Copies only order the offers. A session that ends takes back the
//! offers it did not take up (what it took stays counted), and a piece
//! kept back from a session is no longer counted for it. The scan keeps a lower bound of
//! the fewest copies, so a pick usually stops early.

use std::time::{Duration, Instant};

use crate::meta::Bitfield;
use crate::slots::SEND_SLOTS;

/// The fewest offers a session is kept ahead.
pub const MIN_OFFERS: u32 = 1;
/// The fewest offers a session alone at the seed is kept ahead: as many
/// as a downloader's first window asks for twice over (its flow control
/// starts at 8 requests and doubles each round trip), so that the plan
/// never holds a lone downloader back on a long path.
pub const LONE_OFFERS: u32 = 16;
/// The interval over which a session's requests are counted.
const RATE_INTERVAL: Duration = Duration::from_secs(1);
/// How many first copies a session may be sent beyond its share
/// ([`SeedPlan::rich`]), or half its share if that is more, while a crowd
/// gets them; past that its next one is [deferred](SeedPlan::defer).
/// Namespace testbed, A-B-B-A against no deferring (a first version, its
/// share the first copies over the sessions): with 2 alone, 1 → 12
/// gained (median completion 8.8 → 8.2 s) but 1 → 6 at 100 Mbit/s lost
/// 3 % (shares of about 21 first copies, TCP's uneven split deferred
/// someone all the time, each for a 2 s snooze); with the half share,
/// both gained or held (docs/PERFORMANCE.md, twenty-third session).
pub const FIRSTS_AHEAD: u32 = 2;

/// One file's offers to all its sessions at a seed.
#[derive(Debug, Clone)]
pub struct SeedPlan {
    /// Sessions that hold, asked for or were offered each piece.
    copies: Vec<u32>,
    /// Times each piece started going out ([`SeedPlan::note_sent`]).
    sent: Vec<u32>,
    /// Pieces that never went out.
    unsent: u32,
    /// Whether second copies wait until every piece went out once
    /// ([`SeedPlan::withhold`]; on unless turned off for comparison).
    first_copies_first: bool,
    /// Whether a session ahead of its share of first copies is deferred
    /// ([`SeedPlan::defer`]; on unless turned off for comparison).
    defers: bool,
    /// No piece has fewer copies than this.
    floor: u32,
    /// Sessions open (opened and not yet closed).
    live: u32,
    /// First copies sent to the open sessions, and pieces they hold as
    /// far as the seed knows (sent them, or reported held), in all.
    live_firsts: u64,
    /// See `live_firsts`.
    live_held: u64,
    /// Requests of the open sessions asked for and not yet answered.
    live_queued: u64,
    rng: u64,
}

/// What one session was told and is known to hold.
#[derive(Debug, Clone)]
pub struct SeedView {
    /// Pieces it was told of (the bitfield, then `have`s).
    told: Bitfield,
    /// Pieces it asked for or reported holding.
    taken: Bitfield,
    /// Told, not yet taken.
    pending: u32,
    /// Opened alone and told of every piece: its offers are not counted as
    /// copies (only what it takes is), so a crowd that forms after it is
    /// offered pieces as if it had not been told.
    told_all: bool,
    /// Told of every piece at some point, like a session `told_all`: its
    /// downloader then sees this seed holding everything and reports no
    /// piece it fetches elsewhere (`crate::download` sends a `have` only to
    /// peers that do not show every piece), so offers it had not taken up
    /// by then may never be.
    shown_all: bool,
    /// Asked for and served, not yet sent.
    queued: u32,
    /// Where its scans start.
    cursor: u32,
    /// Requests served in this interval and the last.
    asked: [u32; 2],
    interval_start: Instant,
    /// Offers made since the driver last looked.
    fresh: Vec<u32>,
    /// First copies sent to it: pieces that had never gone out.
    firsts: u32,
    /// Pieces it holds as far as the seed knows: sent to it (at the
    /// start of the send), or reported held (`have`, bitfield).
    held: Bitfield,
    /// How many pieces `held` holds.
    held_n: u32,
    /// Its downloader reads `busy` answers: only then may a first copy be
    /// [deferred](SeedPlan::defer).
    defers: bool,
    /// Pieces asked for and [deferred](SeedPlan::defer): its downloader
    /// asks again after its snooze (or reports them held).
    deferred: Bitfield,
    /// How many pieces `deferred` holds.
    deferred_n: u32,
}

impl SeedView {
    /// The pieces it was told of.
    pub fn told(&self) -> &Bitfield {
        &self.told
    }

    /// How many offers it is kept ahead at `now` (offered and not asked
    /// for, plus asked for and not sent): [`MIN_OFFERS`] plus the pieces it
    /// asked for in the last second; alone at the seed, [`LONE_OFFERS`]
    /// plus twice that.
    pub fn target(&mut self, now: Instant, alone: bool) -> u32 {
        self.roll(now);
        let asked = self.asked[0].max(self.asked[1]);
        if alone {
            LONE_OFFERS + 2 * asked
        } else {
            MIN_OFFERS + asked
        }
    }

    /// Offers made since the last call, in order: one `have` each.
    pub fn take_offers(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.fresh)
    }

    /// Its downloader reads `busy` answers (peer protocol version 3 on):
    /// the plan may [defer](SeedPlan::defer) its first copies.
    pub fn set_defers(&mut self, defers: bool) {
        self.defers = defers;
    }

    /// First copies sent to it.
    pub fn firsts(&self) -> u32 {
        self.firsts
    }

    /// A deferred piece is asked for again or reported held.
    fn undefer(&mut self, piece: u32) {
        if self.deferred.get(piece) {
            self.deferred.clear(piece);
            self.deferred_n -= 1;
        }
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.interval_start);
        if elapsed >= 2 * RATE_INTERVAL {
            self.asked = [0, 0];
            self.interval_start = now;
        } else if elapsed >= RATE_INTERVAL {
            self.asked = [0, self.asked[0]];
            self.interval_start += RATE_INTERVAL;
        }
    }
}

impl SeedPlan {
    /// A plan for a file of `pieces` pieces; `seed` drives where scans start.
    pub fn new(pieces: u32, seed: u64) -> Self {
        Self {
            copies: vec![0; pieces as usize],
            sent: vec![0; pieces as usize],
            unsent: pieces,
            first_copies_first: true,
            defers: true,
            floor: 0,
            live: 0,
            live_firsts: 0,
            live_held: 0,
            live_queued: 0,
            rng: seed | 1,
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// `piece` starts going out to the downloader of session `v`: counted
    /// among its first copies if it never went out before.
    pub fn note_sent_to(&mut self, v: &mut SeedView, piece: u32) {
        if self.sent(piece) == 0 && (piece as usize) < self.sent.len() {
            v.firsts += 1;
            self.live_firsts += 1;
        }
        self.hold(v, piece);
        self.note_sent(piece);
    }

    /// `piece` starts going out to a downloader (of a session the caller
    /// does not name; [`note_sent_to`](Self::note_sent_to) when it does).
    pub fn note_sent(&mut self, piece: u32) {
        if let Some(n) = self.sent.get_mut(piece as usize) {
            if *n == 0 {
                self.unsent -= 1;
            }
            *n = n.saturating_add(1);
        }
    }

    /// Whether a crowd is being served its first copies: more than one
    /// session open and some piece never sent. Until every piece went out
    /// once, the seed offers pieces that never did first, and keeps back
    /// second copies ([`withhold`](Self::withhold)).
    fn first_copies(&self) -> bool {
        self.first_copies_first && self.live > 1 && self.unsent > 0
    }

    /// Offers and sends second copies before every piece went out once
    /// (how seeds did before [`withhold`](Self::withhold), for comparison
    /// in the simulator).
    pub fn send_second_copies_early(mut self) -> Self {
        self.first_copies_first = false;
        self
    }

    /// The session's request for `piece` is next to go out (or is being
    /// made): true if the seed keeps it back instead (answer it with a
    /// `reject`), because a crowd is being served its first copies, this
    /// piece already went out once, and the session has not asked for
    /// every piece that did not — the crowd passes it on, and the seed's
    /// upload goes to a piece nobody has. The session forgets the piece as
    /// offered (a later `have` may offer it again) and is offered another.
    pub fn withhold(&mut self, v: &mut SeedView, piece: u32, now: Instant) -> bool {
        if self.sent(piece) == 0 || !v.taken.get(piece) || !self.wants_first_copy(v) {
            return false;
        }
        v.taken.clear(piece);
        v.told.clear(piece);
        self.unqueue(v);
        let c = &mut self.copies[piece as usize];
        *c = c.saturating_sub(1);
        self.floor = self.floor.min(*c);
        // It is not offered again while the session wants first copies
        // (`least_copied`), so the downloader is not told it in turn.
        self.top_up(v, now);
        true
    }

    /// Never defers a session (how seeds did before
    /// [`defer`](Self::defer), for comparison in the simulator).
    pub fn never_defer(mut self) -> Self {
        self.defers = false;
        self
    }

    /// The session's request for `piece` is next to go out and was not
    /// [kept back](Self::withhold): true if the seed defers it instead
    /// (answer it with `busy`), because a crowd is being served its first
    /// copies and the session was sent more of them than its share allows
    /// ([`rich`](Self::rich)). Its downloader asks again after its snooze
    /// (`busy`); meanwhile the seed's upload goes to the others, and the
    /// session is offered nothing more (the deferred piece counts as its
    /// offer), so it spends its own upload passing on what it holds. A second copy is deferred too: a session that asked for
    /// every piece that never went out (one that opened alone and asked
    /// for them all) is not [kept back](Self::withhold) from them.
    ///
    /// (On the namespace testbed, TCP split the seed's upload unevenly:
    /// the first downloader to connect took 12 of 64 first copies while
    /// the others took 4-5, and pieces waited seconds in its uplink,
    /// asked for by all eleven others at once, while the seed sent second
    /// copies of them.)
    pub fn defer(&mut self, v: &mut SeedView, piece: u32, now: Instant) -> bool {
        if !v.taken.get(piece) || v.deferred.get(piece) || !self.rich(v) {
            return false;
        }
        v.deferred.set(piece);
        v.deferred_n += 1;
        self.unqueue(v);
        self.top_up(v, now);
        true
    }

    /// Whether `v` takes `busy` answers, a crowd of no more sessions than
    /// upload slots ([`SEND_SLOTS`]) is getting its first copies, other
    /// sessions have requests waiting (deferring `v` must
    /// not leave the seed's upload idle), and `v` was sent
    /// [`FIRSTS_AHEAD`] or more first copies beyond its share (or half
    /// its share, if that is more). Its share is the first copies sent to
    /// the open sessions in proportion to the pieces each holds as far as
    /// the seed knows (sent them, or reported held; not merely asked for:
    /// a downloader alone at the seed asks for a window of many), rounded
    /// up. What a session holds shows what it can take in, so a
    /// downloader faster than the others, taking more first copies but
    /// holding more pieces too, is not held back (a share counted per
    /// session held a fast downloader beside a slow one to the slow one's
    /// pace, the seed's upload idle); one that got more of what it holds
    /// from the seed than the others did is.
    pub fn rich(&self, v: &SeedView) -> bool {
        // With more sessions than upload slots, the slots hand out the
        // seed's turns (first copies first), not TCP: nothing to correct,
        // and the simulator's crowd of 1000 at 256 MiB lost 3 % with it
        // (1.52 -> 1.56x).
        if !self.defers || !v.defers || !self.first_copies() || self.live as usize > SEND_SLOTS {
            return false;
        }
        // Only while others have requests waiting: deferring must not
        // leave the seed's upload idle (nor stall a downloader beside
        // sessions that ask for nothing, whatever they report holding).
        if self.live_held == 0 || self.live_queued <= u64::from(v.queued) {
            return false;
        }
        let share = (u64::from(v.held_n) * self.live_firsts).div_ceil(self.live_held);
        u64::from(v.firsts) >= share + u64::from(FIRSTS_AHEAD).max(share / 2)
    }

    /// Whether a crowd is getting its first copies and `v` has not asked
    /// for (nor holds) every piece that never went out: then it is offered
    /// only such pieces, and a request of its for one that went out is
    /// kept back.
    fn wants_first_copy(&self, v: &SeedView) -> bool {
        self.first_copies()
            && self.sent.iter().enumerate().any(|(i, &n)| n == 0 && !v.taken.get(i as u32))
    }

    /// How many times `piece` started going out: the rank of a request
    /// for it at the node's upload slots ([`crate::slots`]), so that, with
    /// a crowd in line, first copies leave before second ones. (A piece
    /// offered to many sessions at once waited in their queues behind
    /// second copies of others: in the simulator's crowd of 100, pieces
    /// nobody held yet 7 s in were queued for 8-9 sessions each.)
    pub fn sent(&self, piece: u32) -> u32 {
        self.sent.get(piece as usize).copied().unwrap_or(0)
    }

    /// How many sessions hold, asked for or were offered `piece`.
    pub fn copies(&self, piece: u32) -> u32 {
        self.copies.get(piece as usize).copied().unwrap_or(0)
    }

    /// A new session: its first offers are in [`SeedView::told`] (the
    /// bitfield to send).
    pub fn open(&mut self, now: Instant) -> SeedView {
        self.live += 1;
        let n = self.copies.len() as u32;
        let cursor = if n == 0 { 0 } else { (self.next_rand() % u64::from(n)) as u32 };
        let alone = self.live == 1;
        let mut v = SeedView {
            told: if alone { Bitfield::full(n) } else { Bitfield::new(n) },
            taken: Bitfield::new(n),
            pending: if alone { n } else { 0 },
            told_all: alone,
            shown_all: alone,
            queued: 0,
            cursor,
            asked: [0, 0],
            interval_start: now,
            fresh: Vec::new(),
            firsts: 0,
            held: Bitfield::new(n),
            held_n: 0,
            defers: false,
            deferred: Bitfield::new(n),
            deferred_n: 0,
        };
        self.top_up(&mut v, now);
        v.fresh.clear();
        v
    }

    /// The session asks for `piece` (in range). Whether to serve it:
    /// whether it was offered, and not [withheld](Self::withhold).
    pub fn on_request(&mut self, v: &mut SeedView, piece: u32, now: Instant) -> bool {
        if !v.told.get(piece) {
            self.top_up(v, now);
            return false;
        }
        v.undefer(piece);
        self.take(v, piece);
        v.queued += 1;
        self.live_queued += 1;
        if self.withhold(v, piece, now) {
            return false;
        }
        v.roll(now);
        v.asked[0] += 1;
        self.top_up(v, now);
        true
    }

    /// A piece the session asked for (and [`on_request`](Self::on_request)
    /// allowed) was sent, or its request cancelled or refused.
    pub fn on_sent(&mut self, v: &mut SeedView, now: Instant) {
        self.unqueue(v);
        self.top_up(v, now);
    }

    /// One of the session's requests was answered.
    fn unqueue(&mut self, v: &mut SeedView) {
        if v.queued > 0 {
            v.queued -= 1;
            self.live_queued -= 1;
        }
    }

    /// The session ended: its offers not taken are no longer counted.
    pub fn close(&mut self, v: SeedView) {
        self.live = self.live.saturating_sub(1);
        self.live_firsts -= u64::from(v.firsts);
        self.live_held -= u64::from(v.held_n);
        self.live_queued -= u64::from(v.queued);
        for i in 0..v.told.len() {
            if v.told.get(i) && !v.taken.get(i) && !v.told_all {
                self.copies[i as usize] -= 1;
            }
        }
        self.floor = self.floor.min(self.copies.iter().copied().min().unwrap_or(0));
    }

    /// The session reports holding `piece` (in range).
    pub fn on_have(&mut self, v: &mut SeedView, piece: u32, now: Instant) {
        self.hold(v, piece);
        self.take(v, piece);
        self.top_up(v, now);
    }

    /// The session holds `piece` (sent it, or reported).
    fn hold(&mut self, v: &mut SeedView, piece: u32) {
        if piece < v.held.len() && !v.held.get(piece) {
            v.held.set(piece);
            v.held_n += 1;
            self.live_held += 1;
        }
    }

    /// The session reports holding every piece set in `bits` (its length
    /// checked by the caller).
    pub fn on_bitfield(&mut self, v: &mut SeedView, bits: &Bitfield, now: Instant) {
        for i in 0..bits.len().min(v.taken.len()) {
            if bits.get(i) {
                self.hold(v, i);
                self.take(v, i);
            }
        }
        self.top_up(v, now);
    }

    fn take(&mut self, v: &mut SeedView, piece: u32) {
        if piece >= v.taken.len() {
            return;
        }
        if v.taken.get(piece) {
            v.undefer(piece);
            return;
        }
        v.taken.set(piece);
        if v.told.get(piece) {
            v.pending -= 1;
        }
        if !v.told.get(piece) || v.told_all {
            self.copies[piece as usize] += 1;
        }
    }

    /// Offers least-copied pieces until the session is `target` ahead or
    /// has been told of everything it lacks; a [rich](Self::rich) session
    /// one ahead, its deferred pieces counted.
    fn top_up(&mut self, v: &mut SeedView, now: Instant) {
        let target = if self.rich(v) { 1 } else { v.target(now, self.live <= 1) };
        if v.told.is_complete() {
            // Nothing it was not told of (a scan per request otherwise).
            v.shown_all = true;
            return;
        }
        // A session once told of every piece counts only what this call
        // offers as open offers: its downloader, shown every piece, reports
        // no piece it fetches elsewhere (until a piece is kept back from
        // it), so its untaken offers are not offers it may still take up,
        // and counted they left no room to offer a kept-back piece again.
        let mut open = if v.shown_all { 0 } else { v.pending };
        while open + v.queued + v.deferred_n < target {
            let Some(p) = self.least_copied(v) else { break };
            v.told.set(p);
            v.pending += 1;
            open += 1;
            // A session told everything while alone counts a piece when it
            // takes it (told again what was kept back from it, likewise).
            if !v.told_all {
                self.copies[p as usize] += 1;
            }
            v.fresh.push(p);
            v.cursor = if p + 1 == v.told.len() { 0 } else { p + 1 };
        }
        if v.told.is_complete() {
            v.shown_all = true;
        }
    }

    /// The first piece from the session's cursor with the fewest copies
    /// among those it was not told of and does not hold.
    fn least_copied(&mut self, v: &SeedView) -> Option<u32> {
        let n = self.copies.len() as u32;
        // While a crowd gets its first copies, a session that has not asked
        // for every piece that never went out is offered only those.
        let first_only = self.wants_first_copy(v);
        let mut best: Option<(u32, u32)> = None;
        let mut lowest = u32::MAX;
        for k in 0..n {
            let i = (v.cursor + k) % n;
            let c = self.copies[i as usize];
            lowest = lowest.min(c);
            if v.told.get(i) || v.taken.get(i) || (first_only && self.sent[i as usize] > 0) {
                continue;
            }
            if best.is_none_or(|(_, b)| c < b) {
                best = Some((i, c));
                if c <= self.floor {
                    return Some(i);
                }
            }
        }
        // A full scan: `lowest` is the fewest copies of any piece.
        self.floor = lowest;
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn offered(v: &SeedView) -> Vec<u32> {
        (0..v.told.len()).filter(|&i| v.told.get(i)).collect()
    }

    #[test]
    fn a_lone_session_is_told_everything_and_a_crowd_distinct_pieces() {
        let t = Instant::now();
        let mut plan = SeedPlan::new(64, 7);
        let mut alone = plan.open(t);
        assert_eq!(alone.told().count_ones(), 64, "nobody to spread pieces among");
        assert_eq!((0..64).map(|i| plan.copies(i)).sum::<u32>(), 0, "not counted");
        // It asks for two: those count.
        assert!(plan.on_request(&mut alone, 0, t) && plan.on_request(&mut alone, 1, t));
        let crowd: Vec<SeedView> = (0..11).map(|_| plan.open(t)).collect();
        let mut all: Vec<u32> = crowd.iter().flat_map(offered).collect();
        assert_eq!(all.len(), 11 * MIN_OFFERS as usize);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 11 * MIN_OFFERS as usize, "distinct pieces");
        assert!(!all.contains(&0) && !all.contains(&1), "not what the first one took");
        // What it took stays counted when it ends.
        plan.close(alone);
        assert_eq!(plan.copies(0) + plan.copies(1), 2);
        assert_eq!((0..64).map(|i| plan.copies(i)).sum::<u32>(), 2 + 11 * MIN_OFFERS);
    }

    /// A downloader that opened alone was told of every piece, so it tells
    /// the seed nothing of what it fetches elsewhere (the seed shows it
    /// every piece) until the seed keeps back a piece it asked for, which
    /// had gone out already while a crowd got its first copies. Once the
    /// crowd has every first copy, that piece is offered again. (Counted
    /// as offers still open, the pieces it fetched elsewhere unreported
    /// left no room for it: on the namespace testbed a downloader left
    /// alone with the seed lacked four such pieces and failed after 60 s.)
    #[test]
    fn a_piece_kept_back_from_a_session_told_everything_is_offered_again() {
        let t = Instant::now();
        let mut plan = SeedPlan::new(4, 1);
        let mut first = plan.open(t);
        let mut crowd = plan.open(t);
        let send_to_crowd = |plan: &mut SeedPlan, crowd: &mut SeedView| {
            let p = *offered(crowd).iter().find(|&&p| !crowd.taken.get(p))?;
            assert!(plan.on_request(crowd, p, t));
            plan.note_sent_to(crowd, p);
            plan.on_sent(crowd, t);
            Some(p)
        };
        let early = send_to_crowd(&mut plan, &mut crowd).unwrap();
        // Passed on to the first session, which does not report it.
        send_to_crowd(&mut plan, &mut crowd).unwrap();
        assert!(!plan.on_request(&mut first, early, t), "kept back: it went out already");
        assert!(!first.told().get(early));
        // The seed sends the crowd the other pieces; the first session gets
        // them from it and reports them now.
        let rest: Vec<u32> = std::iter::from_fn(|| send_to_crowd(&mut plan, &mut crowd)).collect();
        assert_eq!(rest.len(), 2);
        first.take_offers();
        for p in rest {
            plan.on_have(&mut first, p, t);
        }
        assert!(first.told().get(early), "offered again");
        assert_eq!(first.take_offers(), vec![early]);
    }

    /// The same for a downloader that was not first at the seed but was
    /// offered every piece in turn: from then on it too reports nothing it
    /// fetches elsewhere, so an offer it never took stays open. Once the
    /// crowd has every first copy, its request for the kept-back piece
    /// (the downloader asks again when it has nothing else to ask for,
    /// `crate::download::REJECT_RETRY`) has it offered again.
    #[test]
    fn a_piece_kept_back_from_a_session_offered_everything_is_offered_again() {
        let t = Instant::now();
        let mut plan = SeedPlan::new(4, 1);
        let mut first = plan.open(t);
        let mut x = plan.open(t);
        assert!(!x.told_all);
        let mut asked = Vec::new();
        loop {
            let untaken: Vec<u32> = offered(&x).into_iter().filter(|&p| !x.taken.get(p)).collect();
            if x.told().is_complete() && untaken.len() == 1 {
                break;
            }
            assert!(plan.on_request(&mut x, untaken[0], t));
            asked.push(untaken[0]);
        }
        // The offer it never takes: it fetches that piece elsewhere, and
        // tells the seed nothing (the seed shows every piece).
        let unreported = *offered(&x).iter().find(|&&p| !x.taken.get(p)).unwrap();
        let kept = asked[0];
        for &p in &asked[1..] {
            plan.note_sent_to(&mut x, p);
            plan.on_sent(&mut x, t);
        }
        // Its request for `kept` is cancelled; the first session takes it.
        plan.on_sent(&mut x, t);
        assert!(plan.on_request(&mut first, kept, t));
        plan.note_sent_to(&mut first, kept);
        plan.on_sent(&mut first, t);
        assert!(!plan.on_request(&mut x, kept, t), "kept back: it went out already");
        assert!(!x.told().get(kept));
        // The last first copy goes out.
        assert!(plan.on_request(&mut first, unreported, t));
        plan.note_sent_to(&mut first, unreported);
        plan.on_sent(&mut first, t);
        x.take_offers();
        // Seconds later it asks again for the piece it still lacks.
        let later = t + Duration::from_secs(3);
        assert!(!plan.on_request(&mut x, kept, later), "not offered when asked");
        assert_eq!(x.take_offers(), vec![kept], "offered now");
        assert!(plan.on_request(&mut x, kept, later));
    }

    #[test]
    fn a_request_for_a_piece_offered_elsewhere_is_not_available() {
        let t = Instant::now();
        let mut plan = SeedPlan::new(64, 1);
        let _first = plan.open(t);
        let mut a = plan.open(t);
        let mut b = plan.open(t);
        let (a1, b1) = (offered(&a)[0], offered(&b)[0]);
        assert_ne!(a1, b1);
        assert!(!plan.on_request(&mut b, a1, t), "offered to a, not to b");
        assert!(plan.on_request(&mut a, a1, t));
        assert!(plan.on_request(&mut b, b1, t));
        // Asking again for a piece it asked for (a cancelled request) is fine.
        assert!(plan.on_request(&mut a, a1, t));
    }

    #[test]
    fn a_crowd_gets_first_copies_before_second_ones() {
        let t = Instant::now();
        let mut plan = SeedPlan::new(4, 3);
        // Alone, a session is told everything and served whatever it asks.
        let mut a = plan.open(t);
        assert!(plan.on_request(&mut a, 0, t));
        plan.note_sent(0);
        assert!(!plan.withhold(&mut a, 0, t), "nobody else: nothing kept back");
        plan.on_sent(&mut a, t);
        assert!(plan.on_request(&mut a, 1, t));
        // A crowd forms: offers are of pieces nobody took before others.
        let mut b = plan.open(t);
        let b1 = offered(&b)[0];
        assert!(b1 == 2 || b1 == 3, "0 went out, a took 1: b is offered {b1}");
        assert!(plan.on_request(&mut b, b1, t));
        plan.note_sent(b1);
        let rest = 5 - b1;
        // a asks for what went out to b while the seed holds a piece nobody
        // has (`rest`): kept back, and offered again later as a second copy.
        assert!(!plan.on_request(&mut a, b1, t));
        // a's queued request for 1: 1 goes out elsewhere first, and a's is
        // kept back when its turn comes.
        plan.note_sent(1);
        assert!(plan.withhold(&mut a, 1, t));
        // Once a asked for every piece nobody has, it gets what it asks.
        assert!(plan.on_request(&mut a, rest, t));
        assert!(a.told().get(b1) && a.told().get(1), "offered again");
        assert!(plan.on_request(&mut a, b1, t));
        assert!(!plan.withhold(&mut a, b1, t));
        // Every piece out once: second copies flow to anyone.
        plan.note_sent(rest);
        plan.on_sent(&mut b, t);
        assert!(offered(&b).iter().any(|&p| p != b1), "b is offered second copies");
        assert!(!plan.withhold(&mut a, 0, t));
    }

    #[test]
    fn a_fast_session_is_offered_more_the_more_it_asks() {
        let t = Instant::now();
        let mut plan = SeedPlan::new(4096, 3);
        let _other = plan.open(t);
        let mut v = plan.open(t);
        assert_eq!(v.pending, MIN_OFFERS);
        for _ in 0..200 {
            let next = offered(&v).into_iter().find(|&i| !v.taken.get(i)).unwrap();
            assert!(plan.on_request(&mut v, next, t));
            plan.on_sent(&mut v, t);
        }
        assert_eq!(v.target(t, false), 201);
        assert_eq!(v.pending, 201);
        // Pieces asked for and not yet sent count against the target.
        let next = offered(&v).into_iter().find(|&i| !v.taken.get(i)).unwrap();
        assert!(plan.on_request(&mut v, next, t));
        assert_eq!(v.pending + v.queued, 202);
        // A second later the count is the last interval's; two later, none.
        assert_eq!(v.target(t + Duration::from_millis(1500), false), 202);
        assert_eq!(v.target(t + Duration::from_millis(2500), false), MIN_OFFERS);
        assert_eq!(v.target(t + Duration::from_millis(2500), true), LONE_OFFERS);
    }

    #[test]
    fn pieces_held_are_never_offered_and_a_have_frees_the_offer() {
        let t = Instant::now();
        let mut plan = SeedPlan::new(16, 5);
        let _other = plan.open(t);
        let mut v = plan.open(t);
        let mut held = Bitfield::new(16);
        for i in 0..12 {
            held.set(i);
        }
        plan.on_bitfield(&mut v, &held, t);
        let _ = v.take_offers();
        let open: Vec<u32> = offered(&v).into_iter().filter(|&i| !v.taken.get(i)).collect();
        assert_eq!(open.len(), 1);
        assert!(open[0] >= 12, "an offer it lacks");
        // It got that piece elsewhere: the offer is freed for another.
        plan.on_have(&mut v, open[0], t);
        let next = v.take_offers();
        assert_eq!(next.len(), 1);
        assert!(next[0] >= 12 && next[0] != open[0]);
    }

    #[test]
    fn a_session_sent_more_than_its_share_of_first_copies_is_deferred() {
        let t = Instant::now();
        let mut plan = SeedPlan::new(64, 11);
        // Alone, a takes four first copies: nobody to share them with.
        let mut a = plan.open(t);
        a.set_defers(true);
        for p in 0..4 {
            assert!(plan.on_request(&mut a, p, t));
            assert!(!plan.defer(&mut a, p, t), "alone: never deferred");
            plan.note_sent_to(&mut a, p);
            plan.on_sent(&mut a, t);
        }
        assert_eq!(a.firsts(), 4);
        // A crowd forms: b and c take a first copy each, and get a's four
        // from a. Six first copies over fourteen pieces held: a, holding
        // four (all first copies), has a share of two, and is two ahead.
        let mut b = plan.open(t);
        let mut c = plan.open(t);
        b.set_defers(true);
        for v in [&mut b, &mut c] {
            let p = offered(v)[0];
            assert!(plan.on_request(v, p, t));
            plan.note_sent_to(v, p);
            plan.on_sent(v, t);
            for q in 0..4 {
                plan.on_have(v, q, t);
            }
            assert!(!plan.rich(v), "one first copy of five pieces");
        }
        assert!(!plan.rich(&a), "nobody else waiting: the seed's upload would idle");
        // b asks for its next: a is deferred while that waits.
        let next = offered(&b).into_iter().find(|&i| !b.taken.get(i)).unwrap();
        assert!(plan.on_request(&mut b, next, t));
        assert!(plan.rich(&a));
        // More sessions than upload slots: the slots hand out turns.
        let crowd: Vec<SeedView> = (0..SEND_SLOTS - 2).map(|_| plan.open(t)).collect();
        assert!(!plan.rich(&a), "{} sessions", plan.live);
        for v in crowd {
            plan.close(v);
        }
        assert!(plan.rich(&a));
        let _ = a.take_offers();
        let p = (4..64).find(|&i| !b.taken.get(i) && !c.taken.get(i)).unwrap();
        assert!(plan.on_request(&mut a, p, t), "offered while alone");
        assert!(plan.defer(&mut a, p, t), "a first copy: deferred");
        assert!(!plan.defer(&mut a, p, t), "once");
        assert_eq!((a.queued, a.deferred_n), (0, 1));
        assert!(a.take_offers().is_empty(), "offered nothing more meanwhile");
        // A second copy it asks for is kept back while it wants first
        // copies (`withhold`, a `reject`): a lacks pieces nobody took.
        assert!(!plan.on_request(&mut a, 0, t));
        // b gets four more first copies: a's share grows to what it holds,
        // and the piece it asks for again goes out.
        for q in 40..44 {
            plan.note_sent_to(&mut b, q);
        }
        assert!(!plan.rich(&a), "{} first copies", a.firsts());
        assert!(plan.on_request(&mut a, p, t));
        assert_eq!(a.deferred_n, 0);
        assert!(!plan.defer(&mut a, p, t));
        // A closed session leaves the sums.
        plan.close(c);
        assert_eq!(plan.live_firsts, u64::from(a.firsts() + b.firsts()));
        assert_eq!(plan.live_held, u64::from(a.held_n + b.held_n));
    }

    /// A session that reports holding every piece and asks for nothing
    /// (a peer resuming, or one lying) does not get a downloader beside it
    /// deferred: nobody else waits for the seed's upload.
    #[test]
    fn a_downloader_beside_one_that_asks_for_nothing_is_not_deferred() {
        let t = Instant::now();
        let mut plan = SeedPlan::new(64, 3);
        let mut n = plan.open(t);
        n.set_defers(true);
        let mut liar = plan.open(t);
        liar.set_defers(true);
        plan.on_bitfield(&mut liar, &Bitfield::full(64), t);
        for _ in 0..40 {
            let p = offered(&n).into_iter().find(|&i| !n.taken.get(i)).unwrap();
            assert!(plan.on_request(&mut n, p, t));
            assert!(!plan.defer(&mut n, p, t), "{} first copies", n.firsts());
            plan.note_sent_to(&mut n, p);
            plan.on_sent(&mut n, t);
        }
    }

    /// A fast downloader and a slow one at a seed: the fast one takes
    /// most first copies, but they are most of what it holds, as for the
    /// slow one: neither is ahead of its share, and the seed's upload is
    /// not held back to the slow one's pace.
    #[test]
    fn a_fast_downloader_beside_a_slow_one_is_not_deferred() {
        let t = Instant::now();
        let mut plan = SeedPlan::new(256, 5);
        let mut fast = plan.open(t);
        let mut slow = plan.open(t);
        fast.set_defers(true);
        slow.set_defers(true);
        // Asks for its next offer (again, if the seed kept one back) and
        // gets it, unless deferred.
        let fetch = |plan: &mut SeedPlan, v: &mut SeedView| -> bool {
            loop {
                let p = offered(v).into_iter().find(|&i| !v.taken.get(i)).unwrap();
                if plan.on_request(v, p, t) {
                    if plan.defer(v, p, t) {
                        return false;
                    }
                    plan.note_sent_to(v, p);
                    plan.on_sent(v, t);
                    return true;
                }
            }
        };
        for round in 0..20 {
            // Ten pieces to the fast one for each to the slow one; the
            // slow one gets one in four of the fast one's from it.
            for _ in 0..10 {
                assert!(fetch(&mut plan, &mut fast), "round {round}");
            }
            assert!(fetch(&mut plan, &mut slow));
            if round % 4 == 3 {
                let q = (0..256).find(|&i| fast.taken.get(i) && !slow.taken.get(i)).unwrap();
                plan.on_have(&mut slow, q, t);
            }
        }
        assert!(fast.firsts() > 150 && slow.firsts() < 25, "{} {}", fast.firsts(), slow.firsts());
        assert_eq!(fast.deferred_n, 0);
    }

    proptest! {
        /// Whatever sessions say, the counts stay consistent: pending is
        /// the offered pieces a session has not taken; copies count each
        /// open session once per piece it was offered or took, and each
        /// closed one per piece it took; a session is always offered up to
        /// its target or all it lacks.
        #[test]
        fn counts_stay_consistent(
            pieces in 1u32..80,
            sessions in 1usize..6,
            ops in proptest::collection::vec((0usize..6, 0u8..6, 0u32..80, 0u64..3000), 0..300),
        ) {
            let t0 = Instant::now();
            let mut plan = SeedPlan::new(pieces, 9);
            // Every other session's downloader reads `busy` answers.
            let open = |plan: &mut SeedPlan, k: usize, now| {
                let mut v = plan.open(now);
                v.set_defers(k % 2 == 0);
                v
            };
            let mut views: Vec<SeedView> = (0..sessions).map(|k| open(&mut plan, k, t0)).collect();
            let mut kept = vec![0u32; pieces as usize];
            let mut now = t0;
            for (s, kind, piece, dt) in ops {
                now += Duration::from_millis(dt);
                let k = s % sessions;
                let piece = piece % pieces;
                let v = &mut views[k];
                match kind {
                    0 => { plan.on_request(v, piece, now); }
                    1 => plan.on_have(v, piece, now),
                    2 => {
                        let mut b = Bitfield::new(pieces);
                        b.set(piece);
                        plan.on_bitfield(v, &b, now);
                    }
                    3 => plan.on_sent(v, now),
                    // The piece next in line goes out, or is kept back.
                    // The piece next in line goes out, or is kept back, or
                    // deferred.
                    4 => {
                        if v.taken.get(piece)
                            && !plan.withhold(v, piece, now)
                            && !plan.defer(v, piece, now)
                        {
                            plan.note_sent_to(v, piece);
                            plan.on_sent(v, now);
                        }
                    }
                    _ => {
                        for i in 0..pieces {
                            if v.taken.get(i) {
                                kept[i as usize] += 1;
                            }
                        }
                        let old = views.remove(k);
                        plan.close(old);
                        views.insert(k, open(&mut plan, k, now));
                    }
                }
                let _ = views[k].take_offers();
                for i in 0..pieces {
                    let n = views
                        .iter()
                        .filter(|v| v.taken.get(i) || (v.told.get(i) && !v.told_all))
                        .count() as u32;
                    prop_assert_eq!(plan.copies(i), n + kept[i as usize]);
                    prop_assert!(plan.floor <= plan.copies(i));
                }
                prop_assert_eq!(plan.live_firsts, views.iter().map(|v| u64::from(v.firsts)).sum::<u64>());
                prop_assert_eq!(plan.live_held, views.iter().map(|v| u64::from(v.held_n)).sum::<u64>());
                prop_assert_eq!(plan.live_queued, views.iter().map(|v| u64::from(v.queued)).sum::<u64>());
                prop_assert!(views.iter().all(|v| v.held_n == v.held.count_ones()));
                for (j, v) in views.iter_mut().enumerate() {
                    let pending = (0..pieces).filter(|&i| v.told.get(i) && !v.taken.get(i)).count() as u32;
                    prop_assert_eq!(v.pending, pending);
                    let lacking: Vec<u32> =
                        (0..pieces).filter(|&i| !v.told.get(i) && !v.taken.get(i)).collect();
                    // Never left with nothing to ask for while it lacks a piece.
                    // (A deferred piece it asks for again.)
                    prop_assert!(lacking.is_empty() || v.pending + v.queued + v.deferred_n >= 1);
                    let deferred = (0..pieces).filter(|&i| v.deferred.get(i)).count() as u32;
                    prop_assert_eq!(v.deferred_n, deferred);
                    // Only what it took.
                    prop_assert!((0..pieces).all(|i| !v.deferred.get(i) || v.taken.get(i)));
                    prop_assert!(v.defers || v.deferred_n == 0);
                    // The session the step touched is offered up to its target
                    // or all it may be offered: while it wants first copies,
                    // only pieces that never went out.
                    let first_only = plan.wants_first_copy(v);
                    let offerable =
                        lacking.iter().filter(|&&i| !first_only || plan.sent(i) == 0).count();
                    // Sessions are replaced, never only closed: the count of
                    // open ones is `sessions` throughout.
                    let alone = sessions == 1;
                    if j == k {
                        let target = if plan.rich(v) { 1 } else { v.target(now, alone) };
                        prop_assert!(offerable == 0 || v.pending + v.queued + v.deferred_n >= target);
                    }
                }
            }
        }
    }
}
