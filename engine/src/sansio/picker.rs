//! Which piece to ask which peer for: rarest first with a random tie-break,
//! and an endgame that duplicates the last requests. No I/O, no clock.
//!
//! Each piece is `Missing`, `Verifying` (its bytes arrived and are being
//! hashed) or `Have`. A missing piece may be requested from several peers
//! only in the endgame, when every missing piece is already requested; the
//! first copy that verifies wins and [`Picker::verified`] names the peers to
//! cancel.
//!
//! A pick scans from a random piece and stops at the first candidate (missing,
//! not requested, held by the peer) whose availability is the lowest the peer
//! can offer. That lowest value is remembered per peer once a full scan found
//! it (`floor`); it stays a lower bound while candidates only disappear and
//! availabilities only grow, and every event that could lower it (a peer
//! leaves or lacks a piece, a peer gains a piece, a piece becomes a candidate
//! again) forgets all floors. So picks stay exactly rarest-first, and a whole
//! file costs O(n log n) piece visits instead of O(n²) when every piece is
//! equally available (several full seeders).
//!
//! The scan visits only candidates: the picker keeps the pieces missing and
//! asked of nobody as a bitset laid out like a [`Bitfield`]'s bytes, and a
//! pick masks it with the peer's bitfield 64 pieces at a time. A pick that
//! finds nothing (a peer holding nothing this download lacks and nobody
//! was asked for, the common case in a swarm) so costs n/64 word
//! operations, not n piece visits: in the simulator's crowds of 100 with
//! 512 pieces, such scans were half of the run's CPU.

use crate::meta::{Bitfield, PieceIndex};

/// A peer's identity within one download.
pub type PeerId = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceState {
    Missing,
    Verifying,
    Have,
}

/// Most peers one piece is requested from at once in the endgame.
const MAX_DUPLICATES: usize = 2;

/// Piece selection for one download.
#[derive(Debug, Clone)]
pub struct Picker {
    state: Vec<PieceState>,
    /// How many connected peers have each piece.
    availability: Vec<u32>,
    /// Peers each piece is outstanding at.
    requested: Vec<Vec<PeerId>>,
    have: u32,
    rng: u64,
    /// Per peer: no candidate it has is rarer than this (see the module
    /// documentation); absent means unknown.
    floors: std::collections::HashMap<PeerId, u32>,
    /// Pieces missing and outstanding nowhere (a pick's candidates), in a
    /// [`Bitfield`]'s byte layout: piece `i` is bit `0x80 >> (i % 8)` of
    /// byte `i / 8`.
    open: Vec<u8>,
    /// Pieces set in `open`.
    open_count: u32,
    /// Pieces missing (the endgame's candidates), in the same layout.
    missing: Vec<u8>,
}

/// Eight bytes of a bitset from byte `8 * w` on (zeros past its end), as a
/// word whose highest bit is the first of them: bit `63 - j` is piece
/// `64 * w + j`.
fn word(bytes: &[u8], w: usize) -> u64 {
    let at = 8 * w;
    match bytes.get(at..at + 8) {
        Some(b) => u64::from_be_bytes(b.try_into().expect("eight bytes")),
        None => {
            let mut b = [0u8; 8];
            if let Some(rest) = bytes.get(at..) {
                b[..rest.len()].copy_from_slice(rest);
            }
            u64::from_be_bytes(b)
        }
    }
}

fn put_bit(bytes: &mut [u8], i: usize, on: bool) {
    let mask = 0x80u8 >> (i % 8);
    if on {
        bytes[i / 8] |= mask;
    } else {
        bytes[i / 8] &= !mask;
    }
}

/// Calls `visit` with each piece set in `a & b` (bitsets of `n` pieces),
/// in order from `start` round to `start - 1`, until it returns false.
fn each_common(a: &[u8], b: &[u8], n: usize, start: usize, mut visit: impl FnMut(usize) -> bool) {
    let words = n.div_ceil(64);
    if words == 0 {
        return;
    }
    let (sw, sb) = (start / 64, start % 64);
    // The start word from `start` on, the words after it, round to the
    // words before it, then the start word before `start`.
    let head = u64::MAX >> sb;
    for k in 0..=words {
        let w = (sw + k) % words;
        let mask = match k {
            0 => head,
            k if k == words => !head,
            _ => u64::MAX,
        };
        let mut bits = word(a, w) & word(b, w) & mask;
        while bits != 0 {
            let j = bits.leading_zeros() as usize;
            bits &= !(1u64 << (63 - j));
            let i = 64 * w + j;
            if i < n && !visit(i) {
                return;
            }
        }
    }
}

impl Picker {
    /// A picker for `pieces` pieces, of which `have` are already verified.
    /// `seed` drives the random tie-break.
    pub fn new(have: &Bitfield, seed: u64) -> Self {
        let n = have.len() as usize;
        let state = (0..have.len())
            .map(|i| if have.get(i) { PieceState::Have } else { PieceState::Missing })
            .collect();
        let mut missing = vec![0u8; n.div_ceil(8)];
        for i in 0..n {
            put_bit(&mut missing, i, !have.get(i as u32));
        }
        Self {
            state,
            availability: vec![0; n],
            requested: vec![Vec::new(); n],
            have: have.count_ones(),
            rng: seed | 1,
            floors: std::collections::HashMap::new(),
            open: missing.clone(),
            open_count: n as u32 - have.count_ones(),
            missing,
        }
    }

    /// Brings piece `i`'s bits in `open` and `missing` up to its state and
    /// requests.
    fn refresh(&mut self, i: usize) {
        let missing = self.state[i] == PieceState::Missing;
        let open = missing && self.requested[i].is_empty();
        let was = self.open[i / 8] & (0x80 >> (i % 8)) != 0;
        if open != was {
            put_bit(&mut self.open, i, open);
            if open {
                self.open_count += 1;
            } else {
                self.open_count -= 1;
            }
        }
        put_bit(&mut self.missing, i, missing);
    }

    /// Whether every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.have as usize == self.state.len()
    }

    /// Number of verified pieces.
    pub fn have_count(&self) -> u32 {
        self.have
    }

    /// Whether a piece is verified.
    pub fn has(&self, piece: u32) -> bool {
        self.state.get(piece as usize) == Some(&PieceState::Have)
    }

    /// Whether a piece is still wanted: not verified, and no copy of it
    /// is being verified.
    pub fn is_missing(&self, piece: u32) -> bool {
        self.state.get(piece as usize) == Some(&PieceState::Missing)
    }

    /// Whether a connected peer has a piece that is still missing.
    pub fn any_missing_available(&self) -> bool {
        self.state.iter().zip(&self.availability).any(|(s, a)| *s == PieceState::Missing && *a > 0)
    }

    /// Whether `piece` is outstanding at `peer`.
    pub fn is_requested_at(&self, piece: u32, peer: PeerId) -> bool {
        self.requested.get(piece as usize).is_some_and(|r| r.contains(&peer))
    }

    /// How many connected peers have a piece.
    pub fn availability(&self, piece: u32) -> u32 {
        self.availability.get(piece as usize).copied().unwrap_or(0)
    }

    /// A peer connected with this bitfield.
    pub fn add_peer(&mut self, bits: &Bitfield) {
        for i in 0..self.state.len() as u32 {
            if bits.get(i) {
                self.availability[i as usize] += 1;
            }
        }
    }

    /// A connected peer announced a new piece.
    pub fn peer_has(&mut self, piece: u32) {
        if let Some(a) = self.availability.get_mut(piece as usize) {
            *a += 1;
            // That peer may now offer a piece rarer than its floor.
            self.floors.clear();
        }
    }

    /// A connected peer turned out not to have a piece after all.
    pub fn peer_lacks(&mut self, piece: u32) {
        if let Some(a) = self.availability.get_mut(piece as usize) {
            *a = a.saturating_sub(1);
            self.floors.clear();
        }
    }

    /// A peer went away: forget its pieces and its outstanding requests.
    pub fn remove_peer(&mut self, peer: PeerId, bits: &Bitfield) {
        self.floors.clear();
        for i in 0..self.state.len() {
            if bits.get(i as u32) {
                self.availability[i] = self.availability[i].saturating_sub(1);
            }
            if !self.requested[i].is_empty() {
                self.requested[i].retain(|p| *p != peer);
                self.refresh(i);
            }
        }
    }

    /// Chooses the next piece to request from `peer`, which has `bits`, and
    /// records the request. `None`: nothing this peer can usefully send now.
    pub fn pick(&mut self, peer: PeerId, bits: &Bitfield) -> Option<PieceIndex> {
        let n = self.state.len();
        if n == 0 {
            return None;
        }
        let start = (self.next_random() % n as u64) as usize;
        // Nothing is rarer than a piece one peer has, nor than the floor.
        let floor = self.floors.get(&peer).copied().unwrap_or(1).max(1);
        let mut best: Option<(usize, u32)> = None;
        let mut stopped = false;
        let availability = &self.availability;
        each_common(&self.open, bits.as_bytes(), n, start, |i| {
            let a = availability[i];
            if best.is_none_or(|(_, b)| a < b) {
                best = Some((i, a));
                if a <= floor {
                    stopped = true;
                    return false;
                }
            }
            true
        });
        if let (Some((_, a)), false) = (best, stopped) {
            // A full scan: `a` is the rarest this peer can offer.
            self.floors.insert(peer, a);
        }
        let i = match best {
            Some((i, _)) => i,
            // Endgame only once no piece is left unrequested anywhere: the
            // missing piece this peer has with the fewest requests (fewer
            // than the most, none of them this peer's), first from `start`.
            None if self.open_count == 0 => {
                let mut endgame: Option<(usize, usize)> = None;
                let requested = &self.requested;
                each_common(&self.missing, bits.as_bytes(), n, start, |i| {
                    let reqs = &requested[i];
                    if reqs.len() < MAX_DUPLICATES
                        && !reqs.contains(&peer)
                        && endgame.is_none_or(|(_, d)| reqs.len() < d)
                    {
                        endgame = Some((i, reqs.len()));
                    }
                    true
                });
                endgame?.0
            }
            None => return None,
        };
        self.requested[i].push(peer);
        self.refresh(i);
        Some(PieceIndex::from_picker(i as u32))
    }

    /// `peer` will not send `piece` (refused, cancelled, or it went away).
    pub fn unrequest(&mut self, piece: u32, peer: PeerId) {
        if let Some(r) = self.requested.get_mut(piece as usize) {
            r.retain(|p| *p != peer);
            self.refresh(piece as usize);
            // It may be a candidate again.
            self.floors.clear();
        }
    }

    /// `piece` arrived from `peer`: hashing starts. Returns false when the
    /// piece is no longer wanted (another copy is verifying or verified).
    pub fn received(&mut self, piece: u32, peer: PeerId) -> bool {
        let i = piece as usize;
        let Some(state) = self.state.get(i).copied() else { return false };
        self.requested[i].retain(|p| *p != peer);
        if state != PieceState::Missing {
            self.refresh(i);
            return false;
        }
        self.state[i] = PieceState::Verifying;
        self.refresh(i);
        true
    }

    /// `piece` passed its hash. Returns the peers whose requests for it are
    /// still outstanding: cancel them.
    pub fn verified(&mut self, piece: u32) -> Vec<PeerId> {
        let i = piece as usize;
        if self.state.get(i) != Some(&PieceState::Verifying) {
            return Vec::new();
        }
        self.state[i] = PieceState::Have;
        self.have += 1;
        let losers = std::mem::take(&mut self.requested[i]);
        self.refresh(i);
        losers
    }

    /// `piece` failed its hash: it is missing again.
    pub fn failed(&mut self, piece: u32) {
        if let Some(s) = self.state.get_mut(piece as usize) {
            if *s == PieceState::Verifying {
                *s = PieceState::Missing;
                self.refresh(piece as usize);
                self.floors.clear();
            }
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: enough for a tie-break.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bits(n: u32, set: &[u32]) -> Bitfield {
        let mut b = Bitfield::new(n);
        for i in set {
            b.set(*i);
        }
        b
    }

    #[test]
    fn rarest_first() {
        let mut p = Picker::new(&Bitfield::new(4), 7);
        let everyone = Bitfield::full(4);
        p.add_peer(&everyone);
        p.add_peer(&everyone);
        p.add_peer(&bits(4, &[0, 1, 3]));
        // Piece 2 is held by two peers, the others by three.
        assert_eq!(p.pick(0, &everyone).map(|i| i.get()), Some(2));
    }

    #[test]
    fn no_piece_twice_before_the_endgame_then_duplicates() {
        let mut p = Picker::new(&Bitfield::new(3), 1);
        let all = Bitfield::full(3);
        p.add_peer(&all);
        p.add_peer(&all);
        let mut got: Vec<u32> = (0..3).map(|_| p.pick(0, &all).unwrap().get()).collect();
        got.sort();
        assert_eq!(got, [0, 1, 2]);
        assert_eq!(p.pick(0, &all), None, "peer 0 already has every piece requested");
        // Endgame: peer 1 duplicates.
        let dup = p.pick(1, &all).unwrap().get();
        assert!(p.received(dup, 1));
        assert_eq!(p.verified(dup), vec![0], "cancel peer 0's copy");
        assert!(!p.received(dup, 0), "the loser's copy is not wanted");
    }

    #[test]
    fn failed_piece_is_picked_again() {
        let mut p = Picker::new(&Bitfield::new(1), 3);
        let all = Bitfield::full(1);
        p.add_peer(&all);
        assert_eq!(p.pick(0, &all).unwrap().get(), 0);
        assert!(p.received(0, 0));
        p.failed(0);
        assert_eq!(p.pick(1, &all).unwrap().get(), 0);
        assert!(p.received(0, 1));
        assert!(p.verified(0).is_empty());
        assert!(p.is_complete());
    }

    #[test]
    fn removed_peer_frees_its_requests() {
        let mut p = Picker::new(&Bitfield::new(1), 3);
        let all = Bitfield::full(1);
        p.add_peer(&all);
        p.pick(0, &all).unwrap();
        p.remove_peer(0, &all);
        p.add_peer(&all);
        assert_eq!(p.pick(1, &all).unwrap().get(), 0);
    }

    #[test]
    fn resumed_pieces_are_not_picked() {
        let mut p = Picker::new(&bits(3, &[0, 2]), 3);
        let all = Bitfield::full(3);
        p.add_peer(&all);
        assert_eq!(p.pick(0, &all).unwrap().get(), 1);
        assert_eq!(p.pick(0, &all), None);
    }

    /// The rarest availability among the pieces `peer` could be asked for
    /// before the endgame (brute force, for checking `pick`).
    fn rarest_candidate(p: &Picker, bits: &Bitfield) -> Option<u32> {
        (0..p.state.len())
            .filter(|&i| {
                p.state[i] == PieceState::Missing && p.requested[i].is_empty() && bits.get(i as u32)
            })
            .map(|i| p.availability[i])
            .min()
    }

    /// The pick as it was before the bitset scan: every piece visited from
    /// the random start (for checking that `pick` chooses exactly the same).
    fn reference_pick(p: &mut Picker, peer: PeerId, bits: &Bitfield) -> Option<u32> {
        let n = p.state.len();
        if n == 0 {
            return None;
        }
        let start = (p.next_random() % n as u64) as usize;
        let floor = p.floors.get(&peer).copied().unwrap_or(1).max(1);
        let mut best: Option<(usize, u32)> = None;
        let mut stopped = false;
        let mut endgame: Option<(usize, usize)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if p.state[i] != PieceState::Missing || !bits.get(i as u32) {
                continue;
            }
            let reqs = &p.requested[i];
            if reqs.is_empty() {
                let a = p.availability[i];
                if best.is_none_or(|(_, b)| a < b) {
                    best = Some((i, a));
                    if a <= floor {
                        stopped = true;
                        break;
                    }
                }
            } else if best.is_none()
                && reqs.len() < MAX_DUPLICATES
                && !reqs.contains(&peer)
                && endgame.is_none_or(|(_, d)| reqs.len() < d)
            {
                endgame = Some((i, reqs.len()));
            }
        }
        if let (Some((_, a)), false) = (best, stopped) {
            p.floors.insert(peer, a);
        }
        let all_requested =
            (0..n).all(|i| p.state[i] != PieceState::Missing || !p.requested[i].is_empty());
        let i = match (best, endgame) {
            (Some((i, _)), _) => i,
            (None, Some((i, _))) if all_requested => i,
            _ => return None,
        };
        p.requested[i].push(peer);
        Some(i as u32)
    }

    proptest! {
        /// Remembered floors never make a pick less rare than a full scan
        /// would: through any mix of joins, leaves, haves, lacks,
        /// unrequests, failures and verifications, every pick before the
        /// endgame has the lowest availability the peer can offer. And the
        /// bitset scan picks exactly what visiting every piece did (the
        /// same piece, from the same random start, with the same floors),
        /// over files of several words, the endgame included, with its
        /// bitsets following the pieces' states and requests.
        #[test]
        fn picks_stay_exactly_rarest_first(
            n in 1u32..300,
            ops in proptest::collection::vec((0u8..8, 0u32..4, 0u32..300), 1..400),
            seed: u64,
        ) {
            let mut p = Picker::new(&Bitfield::new(n), seed);
            let mut fields: Vec<Option<Bitfield>> = vec![None; 4];
            let mut in_flight: Vec<(u32, u32)> = Vec::new();
            for (op, peer, x) in ops {
                let piece = x % n;
                match op {
                    0 => {
                        if let Some(b) = fields[peer as usize].take() {
                            p.remove_peer(peer, &b);
                            in_flight.retain(|(q, _)| *q != peer);
                        }
                        let mut b = Bitfield::new(n);
                        for i in 0..n {
                            if (i.wrapping_mul(x + 3) ^ peer) % 3 != 0 {
                                b.set(i);
                            }
                        }
                        p.add_peer(&b);
                        fields[peer as usize] = Some(b);
                    }
                    1 => {
                        if let Some(b) = fields[peer as usize].take() {
                            p.remove_peer(peer, &b);
                            in_flight.retain(|(q, _)| *q != peer);
                        }
                    }
                    2 => {
                        if let Some(b) = fields[peer as usize].as_mut() {
                            if b.set(piece) {
                                p.peer_has(piece);
                            }
                        }
                    }
                    3 => {
                        if let Some(b) = fields[peer as usize].as_mut() {
                            if b.clear(piece) {
                                p.peer_lacks(piece);
                            }
                        }
                    }
                    4 => {
                        if let Some(k) = in_flight.iter().position(|(q, _)| *q == peer) {
                            let (q, i) = in_flight.remove(k);
                            p.unrequest(i, q);
                        }
                    }
                    5 | 6 => {
                        if let Some(k) = in_flight.iter().position(|(q, _)| *q == peer) {
                            let (q, i) = in_flight.remove(k);
                            if p.received(i, q) {
                                if op == 5 { p.failed(i); } else { p.verified(i); }
                            }
                        }
                    }
                    _ => {
                        let Some(b) = fields[peer as usize].clone() else { continue };
                        let want = rarest_candidate(&p, &b);
                        let mut reference = p.clone();
                        let full_scan = reference_pick(&mut reference, peer, &b);
                        let got = p.pick(peer, &b);
                        prop_assert_eq!(got.map(|g| g.get()), full_scan);
                        if let Some(w) = want {
                            let g = got.expect("a candidate exists").get();
                            prop_assert_eq!(p.availability[g as usize], w, "piece {} not the rarest", g);
                        }
                        if let Some(g) = got {
                            in_flight.push((peer, g.get()));
                        }
                    }
                }
                for i in 0..n as usize {
                    let missing = p.state[i] == PieceState::Missing;
                    prop_assert_eq!(p.missing[i / 8] & (0x80 >> (i % 8)) != 0, missing);
                    let open = missing && p.requested[i].is_empty();
                    prop_assert_eq!(p.open[i / 8] & (0x80 >> (i % 8)) != 0, open);
                }
                let open = (0..n as usize)
                    .filter(|&i| p.state[i] == PieceState::Missing && p.requested[i].is_empty())
                    .count();
                prop_assert_eq!(p.open_count as usize, open);
            }
        }

        /// Whatever peers, bitfields, failures and orders: a download that
        /// keeps going completes, and no piece is verified twice.
        #[test]
        fn downloads_always_complete(
            n in 1u32..40,
            peers in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 40), 1..5),
            fail_every in 2usize..9,
            seed: u64,
        ) {
            let mut p = Picker::new(&Bitfield::new(n), seed);
            let mut fields: Vec<Bitfield> = peers.iter().map(|v| {
                let mut b = Bitfield::new(n);
                for (i, has) in v.iter().enumerate().take(n as usize) { if *has { b.set(i as u32); } }
                b
            }).collect();
            // Make sure someone has everything.
            fields[0] = Bitfield::full(n);
            for f in &fields { p.add_peer(f); }
            let mut step = 0usize;
            let mut arrivals = 0usize;
            let mut verified = Bitfield::new(n);
            while !p.is_complete() {
                step += 1;
                prop_assert!(step < 10_000, "stuck");
                let peer = (step % fields.len()) as u32;
                if let Some(piece) = p.pick(peer, &fields[peer as usize]) {
                    let i = piece.get();
                    if p.received(i, peer) {
                        arrivals += 1;
                        if arrivals % fail_every == 0 {
                            p.failed(i);
                        } else {
                            p.verified(i);
                            prop_assert!(verified.set(i), "piece {} verified twice", i);
                        }
                    }
                }
            }
        }
    }
}
