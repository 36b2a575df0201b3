//! A tracker's replica of the global op history and the state it implies.
//!
//! Every accepted op is an [`Entry`] stamped with a hybrid logical clock
//! [`Stamp`] (wall ms, counter, origin tracker). The state is always the
//! result of applying every known entry **in stamp order** to the empty
//! state, so trackers that hold the same set of entries hold the same state,
//! whatever order the entries reached them in.
//!
//! - A local op is stamped after everything this replica has seen, so it
//!   applies on top of the current state (fast path). A refused local op is
//!   not an entry at all: nobody was told it happened.
//! - A remote entry newer than everything applied applies on top too; an
//!   older one (a peer that was cut off) is inserted in order and the state is
//!   rebuilt from the compacted base by replaying the entries after it.
//! - Entries of one origin arrive in `origin_seq` order (streams preserve
//!   it); a duplicate is ignored, a gap is refused so the stream restarts.
//! - [`Replica::compact`] folds entries that every tracker has into the base
//!   state; no older entry can arrive after that.
//!
//! Conflicts resolve by the same rule everywhere: in stamp order, an op that
//! the state at its place refuses changes nothing (see docs/DURABILITY.md).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ringshare_engine::proto::Refusal;
use serde::{Deserialize, Serialize};

use crate::hlc::{Hlc, Stamp};
use crate::oplog::Entry;
use crate::state::{Op, State, StateV2};

/// Per origin tracker, the highest `origin_seq` held (entries 1..=n all held).
pub type Known = BTreeMap<u16, u64>;

/// Why a remote entry was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    /// Entries of this origin are missing before it: resynchronise.
    #[error("gap in the ops of tracker {origin}: have {have}, got {got}")]
    Gap {
        /// The origin tracker.
        origin: u16,
        /// The highest seq held.
        have: u64,
        /// The seq received.
        got: u64,
    },
    /// The entry is stamped further ahead of this tracker's clock than the
    /// skew bound allows: taking it would let it win every conflict for as
    /// long as the clocks differ.
    #[error("entry {seq} of tracker {origin} is stamped {ahead_ms} ms ahead of this clock (bound {bound_ms} ms)")]
    FromTheFuture {
        /// The origin tracker.
        origin: u16,
        /// The entry's seq.
        seq: u64,
        /// How far ahead of this tracker's wall clock it is stamped.
        ahead_ms: u64,
        /// The bound.
        bound_ms: u64,
    },
    /// An image (catch-up past a compacted log) carries a clock further
    /// ahead of this one than the skew bound allows.
    #[error("an image from tracker {origin} is stamped {ahead_ms} ms ahead of this clock (bound {bound_ms} ms)")]
    ImageFromTheFuture {
        /// The tracker that sent it.
        origin: u16,
        /// How far ahead of this tracker's wall clock.
        ahead_ms: u64,
        /// The bound.
        bound_ms: u64,
    },
    /// The entries were taken but could not be made durable here: nothing
    /// may be acknowledged (the tracker stops).
    #[error("op log failed: {0}")]
    NotDurable(String),
    /// This tracker is stopping: it takes nothing more (the peer sends it
    /// again once it is back).
    #[error("this tracker is stopping")]
    Stopping,
}

/// The persisted form of a replica: everything but the derived state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaImage {
    /// The tracker this replica belongs to.
    pub me: u16,
    /// Its clock.
    pub hlc: Hlc,
    /// The state after every compacted entry.
    pub base: State,
    /// What the base covers.
    pub base_known: Known,
    /// Entries after the base, in stamp order.
    pub entries: Vec<Entry>,
}

/// A [`ReplicaImage`] as snapshots of versions 1 and 2 hold it: a base
/// state without membership ids (its members get id 0; the entries after
/// it are applied with their stamps as ever).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaImageV2 {
    /// See [`ReplicaImage::me`].
    pub me: u16,
    /// See [`ReplicaImage::hlc`].
    pub hlc: Hlc,
    /// See [`ReplicaImage::base`].
    pub base: StateV2,
    /// See [`ReplicaImage::base_known`].
    pub base_known: Known,
    /// See [`ReplicaImage::entries`].
    pub entries: Vec<Entry>,
}

impl From<ReplicaImageV2> for ReplicaImage {
    fn from(old: ReplicaImageV2) -> Self {
        Self {
            me: old.me,
            hlc: old.hlc,
            base: old.base.into(),
            base_known: old.base_known,
            entries: old.entries,
        }
    }
}

impl ReplicaImage {
    /// The newest wall-clock time the image carries: its clock's, or an
    /// entry's stamp (installing it moves this tracker's clock there).
    pub fn newest_wall_ms(&self) -> u64 {
        let entries = self.entries.iter().map(|e| e.stamp.wall_ms).max().unwrap_or(0);
        self.hlc.last_wall_ms().max(entries)
    }
}

/// A replica: the compacted base, the entries after it, the current state.
#[derive(Debug, Clone)]
pub struct Replica {
    me: u16,
    hlc: Hlc,
    base: State,
    base_known: Known,
    entries: BTreeMap<Stamp, Entry>,
    current: State,
    known: Known,
    /// `current` lags `entries`: entries were inserted before newer ones
    /// with [`Replica::receive_deferred`] and [`Replica::settle`] has not
    /// rebuilt it yet.
    stale: bool,
    /// The stamp of each entry in `entries`, by origin and seq.
    seqs: HashMap<(u16, u64), Stamp>,
    /// Origins of which an entry came that this replica holds under the
    /// same seq with another stamp ([`Replica::take_diverged`]), and those
    /// reported already.
    diverged: (Vec<(u16, u64)>, BTreeSet<u16>),
}

impl Replica {
    /// An empty replica for tracker `me`.
    pub fn new(me: u16) -> Self {
        Self::from_image(ReplicaImage {
            me,
            hlc: Hlc::new(me),
            base: State::default(),
            base_known: Known::new(),
            entries: Vec::new(),
        })
    }

    /// Rebuilds a replica from its image.
    pub fn from_image(mut img: ReplicaImage) -> Self {
        // Read from bytes, it holds no count of what shares hold.
        img.base.recount();
        let mut r = Self {
            me: img.me,
            hlc: img.hlc,
            current: img.base.clone(),
            base: img.base,
            known: img.base_known.clone(),
            base_known: img.base_known,
            entries: BTreeMap::new(),
            stale: false,
            seqs: HashMap::new(),
            diverged: (Vec::new(), BTreeSet::new()),
        };
        for e in img.entries {
            let _ = r.receive_deferred(e);
        }
        r.settle();
        r
    }

    /// The image to persist.
    pub fn image(&self) -> ReplicaImage {
        ReplicaImage {
            me: self.me,
            hlc: self.hlc.clone(),
            base: self.base.clone(),
            base_known: self.base_known.clone(),
            entries: self.entries.values().cloned().collect(),
        }
    }

    /// The current state.
    pub fn state(&self) -> &State {
        debug_assert!(!self.stale, "read a replica's state between receive_deferred and settle");
        &self.current
    }

    /// What this replica holds, per origin.
    pub fn known(&self) -> &Known {
        &self.known
    }

    /// What the compacted base covers, per origin.
    pub fn base_known(&self) -> &Known {
        &self.base_known
    }

    /// Entries held after the base.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Applies a local op stamped at `wall_ms`; the entry to log and send.
    pub fn propose(&mut self, op: Op, wall_ms: u64) -> Result<Entry, Refusal> {
        self.settle();
        // Stamped first: the state keeps the stamp of an op that lets a
        // member in (a refused op's stamp is never used; the clock only
        // moved on).
        let stamp = self.hlc.now(wall_ms);
        self.current.apply_stamped(&op, &stamp)?;
        let seq = self.known.get(&self.me).copied().unwrap_or(0) + 1;
        self.known.insert(self.me, seq);
        let entry = Entry { stamp, origin_seq: seq, op };
        self.seqs.insert((self.me, seq), stamp);
        self.entries.insert(stamp, entry.clone());
        Ok(entry)
    }

    /// Takes an entry from another tracker (or from the log at start-up).
    /// Returns whether it was new.
    pub fn receive(&mut self, entry: Entry) -> Result<bool, ReceiveError> {
        let r = self.receive_deferred(entry);
        self.settle();
        r
    }

    /// [`Replica::receive`] without bringing the state up to date when the
    /// entry lands before newer ones: a batch of late entries (a tracker
    /// back from a partition, a log replayed) costs one rebuild, in
    /// [`Replica::settle`], instead of one per entry (quadratic). Call
    /// `settle` before reading the state or proposing.
    pub fn receive_deferred(&mut self, entry: Entry) -> Result<bool, ReceiveError> {
        let origin = entry.stamp.origin;
        let have = self.known.get(&origin).copied().unwrap_or(0);
        if entry.origin_seq <= have {
            // Held already, normally the same entry. Another one under
            // that seq means two trackers numbered different ops alike
            // (one put back from an older copy of its data): they take
            // each other's for one they have, and differ for good.
            if self.seqs.get(&(origin, entry.origin_seq)).is_some_and(|s| *s != entry.stamp)
                && self.diverged.1.insert(origin)
            {
                self.diverged.0.push((origin, entry.origin_seq));
            }
            return Ok(false);
        }
        if entry.origin_seq != have + 1 {
            return Err(ReceiveError::Gap { origin, have, got: entry.origin_seq });
        }
        self.known.insert(origin, entry.origin_seq);
        self.seqs.insert((origin, entry.origin_seq), entry.stamp);
        self.hlc.observe(entry.stamp);
        let newest = self.entries.keys().next_back().is_none_or(|last| entry.stamp > *last);
        if newest && !self.stale {
            // A refusal here is the conflict rule at work: no change.
            let _ = self.current.apply_stamped(&entry.op, &entry.stamp);
        } else {
            self.stale = true;
        }
        self.entries.insert(entry.stamp, entry);
        Ok(true)
    }

    /// Entries received since the last call that this replica held under
    /// the same origin and seq with another stamp: (origin, seq), the
    /// first of each origin only.
    pub fn take_diverged(&mut self) -> Vec<(u16, u64)> {
        std::mem::take(&mut self.diverged.0)
    }

    /// The stamp of the newest entry held of each origin, where it is
    /// still held apart from the base: (origin, seq, stamp). A peer that
    /// holds another entry under one of these numbers diverged from this
    /// replica ([`Replica::check_tips`]), though both hold as many.
    pub fn tips(&self) -> Vec<(u16, u64, Stamp)> {
        self.known
            .iter()
            .filter_map(|(&o, &seq)| self.seqs.get(&(o, seq)).map(|&st| (o, seq, st)))
            .collect()
    }

    /// Checks a peer's [`Replica::tips`] against the entries held here
    /// under the same numbers: one held with another stamp is reported by
    /// [`Replica::take_diverged`] (the first of each origin only). An
    /// entry compacted here is not checked.
    pub fn check_tips(&mut self, tips: &[(u16, u64, Stamp)]) {
        for &(origin, seq, stamp) in tips {
            if self.seqs.get(&(origin, seq)).is_some_and(|s| *s != stamp)
                && self.diverged.1.insert(origin)
            {
                self.diverged.0.push((origin, seq));
            }
        }
    }

    /// Brings the state up to date after [`Replica::receive_deferred`].
    pub fn settle(&mut self) {
        if self.stale {
            self.rebuild();
            self.stale = false;
        }
    }

    /// The entries a replica holding `theirs` lacks, in stamp order; `None`
    /// when some of them were compacted away here (send an image instead).
    pub fn entries_after(&self, theirs: &Known) -> Option<Vec<Entry>> {
        for (origin, base_seq) in &self.base_known {
            if theirs.get(origin).copied().unwrap_or(0) < *base_seq {
                return None;
            }
        }
        Some(
            self.entries
                .values()
                .filter(|e| e.origin_seq > theirs.get(&e.stamp.origin).copied().unwrap_or(0))
                .cloned()
                .collect(),
        )
    }

    /// Replaces this replica with `img` when `img` holds everything this
    /// one does (a fresh tracker catching up from a compacted peer).
    pub fn install(&mut self, img: ReplicaImage) -> bool {
        let other = Replica::from_image(ReplicaImage { me: self.me, ..img });
        let covered =
            self.known.iter().all(|(o, s)| other.known.get(o).copied().unwrap_or(0) >= *s);
        if covered {
            // This tracker's clock (its origin), moved past the image's.
            let mut hlc = self.hlc.clone();
            hlc.merge(&other.hlc);
            *self = other;
            self.hlc = hlc;
        }
        covered
    }

    /// Folds into the base every entry that all of `acked` (each peer's
    /// acknowledged holdings) cover, up to the newest stamp every peer has
    /// seen: no entry older than that can still arrive.
    pub fn compact(&mut self, acked: &[Known]) {
        self.settle();
        let held_by_all = |e: &Entry| {
            acked.iter().all(|k| k.get(&e.stamp.origin).copied().unwrap_or(0) >= e.origin_seq)
        };
        // The newest stamp each peer is known to hold bounds what it can still send.
        let mut bound: Option<Stamp> = None;
        for k in acked {
            let newest = self
                .entries
                .values()
                .filter(|e| k.get(&e.stamp.origin).copied().unwrap_or(0) >= e.origin_seq)
                .map(|e| e.stamp)
                .max();
            let Some(n) = newest else { return };
            bound = Some(bound.map_or(n, |b: Stamp| b.min(n)));
        }
        // An origin some peer holds more of than this replica (its ack
        // outran the entries): the missing entries are stamped after the
        // newest one of that origin held here, so nothing newer may be
        // folded yet; with none held (all in the base), nothing may.
        for k in acked {
            for (origin, seq) in k {
                if *seq <= self.known.get(origin).copied().unwrap_or(0) {
                    continue;
                }
                let newest_held = self
                    .entries
                    .values()
                    .filter(|e| e.stamp.origin == *origin)
                    .map(|e| e.stamp)
                    .max();
                let Some(n) = newest_held else { return };
                bound = Some(bound.map_or(n, |b: Stamp| b.min(n)));
            }
        }
        let stable: Vec<Stamp> = self
            .entries
            .iter()
            .take_while(|(s, e)| bound.is_none_or(|b| **s <= b) && held_by_all(e))
            .map(|(s, _)| *s)
            .collect();
        for s in stable {
            if let Some(e) = self.entries.remove(&s) {
                self.seqs.remove(&(e.stamp.origin, e.origin_seq));
                let _ = self.base.apply_stamped(&e.op, &e.stamp);
                let k = self.base_known.entry(e.stamp.origin).or_insert(0);
                *k = (*k).max(e.origin_seq);
            }
        }
    }

    fn rebuild(&mut self) {
        let mut st = self.base.clone();
        for e in self.entries.values() {
            let _ = st.apply_stamped(&e.op, &e.stamp);
        }
        self.current = st;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(x: &str) -> String {
        x.to_owned()
    }

    /// Ops made on three trackers during a partition, some conflicting.
    fn history() -> Vec<Entry> {
        let mut t1 = Replica::new(1);
        let mut t2 = Replica::new(2);
        let mut t3 = Replica::new(3);
        let mut out = Vec::new();
        let mut push = |r: &mut Replica, op: Op, t: u64| {
            if let Ok(e) = r.propose(op, t) {
                out.push(e);
            }
        };
        push(&mut t1, Op::CreateUser { user: s("a"), password_hash: s("h1") }, 10);
        push(&mut t2, Op::CreateUser { user: s("a"), password_hash: s("h2") }, 10);
        push(&mut t1, Op::CreateGroup { user: s("a"), group: s("g") }, 11);
        push(&mut t2, Op::CreateGroup { user: s("a"), group: s("g") }, 12);
        push(&mut t3, Op::CreateUser { user: s("b"), password_hash: s("h") }, 5);
        push(&mut t3, Op::JoinGroup { user: s("b"), group: s("x") }, 6);
        push(&mut t2, Op::LeaveGroup { user: s("a"), group: s("g") }, 20);
        push(&mut t1, Op::JoinGroup { user: s("b"), group: s("g") }, 21);
        push(&mut t1, Op::CreateGroup { user: s("b"), group: s("h") }, 30);
        push(&mut t3, Op::CreateGroup { user: s("b"), group: s("h") }, 30);
        out
    }

    fn converge(order: &[Entry]) -> State {
        let mut r = Replica::new(9);
        // Deliver per-origin in order (streams keep it), interleaved as given.
        let mut pending: Vec<Entry> = order.to_vec();
        while !pending.is_empty() {
            let before = pending.len();
            pending.retain(|e| r.receive(e.clone()).is_err());
            assert!(pending.len() < before, "stuck");
        }
        r.state().clone()
    }

    #[test]
    fn conflicts_resolve_by_stamp_order() {
        let st = converge(&history());
        // Both trackers created "a" at wall 10: tracker 1's stamp is smaller, it wins.
        assert_eq!(st.password_hash("a"), Some("h1"));
        // The group created twice: the first stamp made it, the second changed nothing;
        // "a" left it at t=20 (the last member), deleting it, so b's join at 21 found no group.
        assert!(st.group("g").is_none());
        // Same stamp wall time for "h": tracker 1 < tracker 3 by origin.
        assert_eq!(st.group("h").unwrap().owner(), "b");
    }

    #[test]
    fn out_of_order_arrival_rebuilds() {
        let h = history();
        let mut rev = h.clone();
        rev.reverse();
        assert_eq!(converge(&h), converge(&rev));
    }

    #[test]
    fn duplicates_ignored_and_gaps_refused() {
        let h = history();
        let mut r = Replica::new(9);
        let first_of_1 = h.iter().find(|e| e.stamp.origin == 1).unwrap().clone();
        assert!(r.receive(first_of_1.clone()).unwrap());
        assert!(!r.receive(first_of_1).unwrap());
        let third_of_1 = h.iter().filter(|e| e.stamp.origin == 1).nth(2).unwrap().clone();
        assert!(matches!(
            r.receive(third_of_1),
            Err(ReceiveError::Gap { origin: 1, have: 1, got: 3 })
        ));
    }

    #[test]
    fn an_op_numbered_like_another_is_reported_once_per_origin() {
        let user = |n: &str| Op::CreateUser { user: n.into(), password_hash: "h".into() };
        let mut t1 = Replica::new(1);
        let mut t2 = Replica::new(2);
        let bob = t1.propose(user("bob"), 1_000).unwrap();
        let dan = t1.propose(user("dan"), 1_001).unwrap();
        assert!(t2.receive(bob.clone()).unwrap());
        assert!(!t2.receive(bob.clone()).unwrap(), "the same entry again: nothing to say");
        assert!(t2.take_diverged().is_empty());
        // Tracker 1 put back from a copy taken before bob: carol is its
        // op 1 too.
        let mut restored = Replica::new(1);
        let carol = restored.propose(user("carol"), 2_000).unwrap();
        assert_eq!(carol.origin_seq, bob.origin_seq);
        assert!(!t2.receive(carol).unwrap(), "taken for one held");
        assert_eq!(t2.take_diverged(), [(1, 1)]);
        assert!(!restored.receive(bob).unwrap());
        assert_eq!(restored.take_diverged(), [(1, 1)], "on both sides");
        // More of the same origin: reported once.
        assert!(t2.receive(dan).unwrap());
        let erin = restored.propose(user("erin"), 2_001).unwrap();
        assert!(!t2.receive(erin).unwrap());
        assert!(t2.take_diverged().is_empty(), "reported once");
    }

    /// Two replicas holding as many of tracker 1's ops, but different ones
    /// (tracker 1 put back from an older copy while tracker 2 was down):
    /// no entry passes between them, so only their tips tell.
    #[test]
    fn tips_tell_two_replicas_that_hold_as_many_different_ops() {
        let user = |n: &str| Op::CreateUser { user: n.into(), password_hash: "h".into() };
        let mut t1 = Replica::new(1);
        let mut t2 = Replica::new(2);
        let bob = t1.propose(user("bob"), 1_000).unwrap();
        assert!(t2.receive(bob.clone()).unwrap());
        // The same holdings: nothing to say, either way.
        t2.check_tips(&t1.tips());
        t1.check_tips(&t2.tips());
        assert!(t2.take_diverged().is_empty() && t1.take_diverged().is_empty());
        // Restored from a copy taken before bob: carol is its op 1.
        let mut restored = Replica::new(1);
        restored.propose(user("carol"), 2_000).unwrap();
        assert_eq!(restored.known(), t2.known());
        t2.check_tips(&restored.tips());
        assert_eq!(t2.take_diverged(), [(1, 1)]);
        restored.check_tips(&t2.tips());
        assert_eq!(restored.take_diverged(), [(1, 1)], "on both sides");
        t2.check_tips(&restored.tips());
        assert!(t2.take_diverged().is_empty(), "reported once");
        // What a peer does not hold yet is not a divergence.
        let mut t3 = Replica::new(3);
        t3.check_tips(&t1.tips());
        assert!(t3.take_diverged().is_empty());
    }

    #[test]
    fn compaction_keeps_the_state_and_limits_catch_up() {
        let h = history();
        let mut r = Replica::new(9);
        for e in &h {
            let _ = r.receive(e.clone());
        }
        let before = r.state().clone();
        let all = r.known().clone();
        r.compact(&[all.clone(), all.clone()]);
        assert_eq!(r.state(), &before);
        assert_eq!(r.entry_count(), 0);
        assert!(r.entries_after(&Known::new()).is_none(), "a fresh peer needs the image");
        assert_eq!(r.entries_after(&all), Some(vec![]));
        let mut fresh = Replica::new(4);
        assert!(fresh.install(r.image()));
        assert_eq!(fresh.state(), &before);
        // Its own new entries still carry its own origin.
        let mine =
            fresh.propose(Op::CreateUser { user: s("zed"), password_hash: s("h") }, 1).unwrap();
        assert_eq!(mine.stamp.origin, 4, "stamped as this tracker, not the image's");
        // The image round-trips.
        assert_eq!(Replica::from_image(r.image()).state(), &before);
    }

    /// A delivery schedule over `n` entries: every entry once in a random
    /// order (a permutation, so none can be left out), plus duplicates, each
    /// item held back a random number of steps.
    fn arb_schedule(n: usize) -> impl Strategy<Value = Vec<(usize, usize)>> {
        let order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
        let dups = proptest::collection::vec((0..n, 0..=n), 0..2 * n);
        let delays = proptest::collection::vec(0usize..8, 3 * n);
        (order, dups, delays).prop_map(|(mut order, dups, delays)| {
            for (entry, at) in dups {
                let at = at.min(order.len());
                order.insert(at, entry);
            }
            order.into_iter().zip(delays.into_iter().chain(std::iter::repeat(0))).collect()
        })
    }

    #[test]
    fn an_ack_that_outran_an_entry_does_not_let_later_entries_fold() {
        // Tracker 1 makes a1 (t=10) and a2 (t=20); trackers 2 and 3 make b
        // (t=30, the same user as a2 with another hash) and c (t=40).
        let mut t1 = Replica::new(1);
        let a1 = t1.propose(Op::CreateUser { user: s("x"), password_hash: s("h") }, 10).unwrap();
        let a2 = t1.propose(Op::CreateUser { user: s("u"), password_hash: s("h2") }, 20).unwrap();
        let b = Replica::new(2)
            .propose(Op::CreateUser { user: s("u"), password_hash: s("h3") }, 30)
            .unwrap();
        let c = Replica::new(3)
            .propose(Op::CreateUser { user: s("y"), password_hash: s("h") }, 40)
            .unwrap();
        let reference = converge(&[a1.clone(), a2.clone(), b.clone(), c.clone()]);
        assert_eq!(reference.password_hash("u"), Some("h2"), "a2 is first in stamp order");

        // Here a2 has not arrived, but a peer already acknowledges holding it.
        let mut r = Replica::new(9);
        for e in [a1, b, c] {
            r.receive(e).unwrap();
        }
        let peer: Known = [(1, 2), (2, 1), (3, 1)].into_iter().collect();
        r.compact(&[peer]);
        // b and c are after the missing a2: they must still be entries.
        assert_eq!(r.entry_count(), 2, "only a1 may be folded");
        r.receive(a2).unwrap();
        assert_eq!(r.state(), &reference);
    }

    proptest! {
        /// Any interleaving, duplication and delay of the same entries leaves
        /// every replica in the identical state. Entries refused for a gap
        /// are retried after later ones land, as a resending peer would.
        #[test]
        fn any_delivery_order_converges(schedule in arb_schedule(history().len())) {
            let h = history();
            let reference = converge(&h);
            let mut r = Replica::new(9);
            // (due step, entry): sent at its step, arriving `delay` steps later.
            let mut in_flight: Vec<(usize, usize)> = Vec::new();
            let mut held: Vec<usize> = Vec::new();
            for (step, (entry, delay)) in schedule.iter().copied().enumerate() {
                in_flight.push((step + delay, entry));
                let (due, later): (Vec<_>, Vec<_>) = in_flight.into_iter().partition(|(d, _)| *d <= step);
                in_flight = later;
                for (_, e) in due {
                    deliver(&mut r, &h, &mut held, e);
                }
            }
            in_flight.sort();
            for (_, e) in in_flight {
                deliver(&mut r, &h, &mut held, e);
            }
            prop_assert!(held.is_empty(), "entries never accepted: {:?}", held);
            prop_assert_eq!(r.known().values().sum::<u64>(), h.len() as u64);
            prop_assert_eq!(r.state(), &reference);
        }
    }

    /// Offer entry `e`; one refused for a gap waits in `held`, and every
    /// accepted entry retries the held ones until none lands. Terminates:
    /// each retry round accepts an entry or stops.
    fn deliver(r: &mut Replica, h: &[Entry], held: &mut Vec<usize>, e: usize) {
        match r.receive(h[e].clone()) {
            Ok(_) => loop {
                let before = held.len();
                held.retain(|&i| r.receive(h[i].clone()).is_err());
                if held.len() == before {
                    break;
                }
            },
            Err(ReceiveError::Gap { .. }) => held.push(e),
            Err(other) => panic!("entry {e} refused: {other}"),
        }
    }
}
