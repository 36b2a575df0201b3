//! Upload slots: how many of a node's connections send piece data at once.
//! No I/O.
//!
//! A node serving many downloaders at once (a seed or an early downloader
//! in a flash crowd) used to send to all of them together, its upload
//! split a hundred ways: each 512 KiB piece then took a hundred times
//! longer to arrive, so nobody had a piece to pass on for seconds (4 s in
//! a crowd of 100 at 100 Mbit/s, 42 s in a crowd of 1000). With
//! [`SEND_SLOTS`] connections sending at a time, first in first served
//! and one piece per turn, the first pieces arrive within a fraction of a
//! second and their holders start uploading too — BitTorrent's upload
//! slots, applied per piece. A node with no more downloaders than slots
//! sends as before.
//!
//! Grants, not polls: [`SendSlots::release`] hands a freed slot straight
//! to the connection that waited longest among those with the lowest
//! rank, which then holds it (and gives it back at once if it no longer
//! has a piece to send). A seed ranks a request by how often the piece
//! already went out ([`crate::seeding::SeedPlan::sent`], fixed when the
//! request lines up), so first copies leave first; a partial holder ranks
//! all alike (first come first served). A piece that
//! holds its slot longer than [`SLOT_HOLD`] (a slow or stuck receiver)
//! keeps sending, but its slot goes on ([`SendSlots::expire`]): a peer
//! that stops reading cannot hold the node's uploads hostage.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Connections of one node that send piece data at once. Simulator
/// (docs/PERFORMANCE.md, seeds 1-3): 4 slowed a crowd of 6; 8 was best in
/// flash crowds of 100 and 1000 but slowed fast hosts serving slow ones
/// (hetero, +9 %); 16 was as good as none or better in every scenario;
/// 32 gave back most of the crowds' gain.
pub const SEND_SLOTS: usize = 16;

/// How long one piece may hold a slot. A connection still sending after
/// that keeps sending, but its slot goes to the next in line: a slow
/// receiver (or one that stops reading, to hold the slots hostage) costs
/// the others at most this long per piece.
pub const SLOT_HOLD: Duration = Duration::from_secs(1);

/// The slots of one node (see the module docs); `K` names a connection.
#[derive(Debug, Clone)]
pub struct SendSlots<K> {
    limit: usize,
    /// Who holds a slot, since when.
    holders: Vec<(K, Instant)>,
    /// In line, with their rank: a slot goes to the lowest rank, the
    /// longest waiting among equals.
    waiting: VecDeque<(K, u32)>,
}

impl<K: Copy + PartialEq> SendSlots<K> {
    /// `limit` slots (0: as many as asked for).
    pub fn new(limit: usize) -> Self {
        Self { limit, holders: Vec::new(), waiting: VecDeque::new() }
    }

    /// `k` has a piece to send at `now`. True: it holds a slot until it
    /// calls [`release`](Self::release) (or [`expire`](Self::expire) hands
    /// it on). False: it waits in line (once, however often it asks) until
    /// a slot is handed to it.
    pub fn acquire(&mut self, k: K, now: Instant) -> bool {
        self.acquire_ranked(k, 0, now)
    }

    /// [`acquire`](Self::acquire) for a piece of rank `rank`: a freed slot
    /// goes to the lowest rank waiting, first come first served among
    /// equals. A seed ranks a piece by how often it already went out
    /// ([`crate::seeding::SeedPlan::sent`]), so first copies leave before
    /// second ones.
    pub fn acquire_ranked(&mut self, k: K, rank: u32, now: Instant) -> bool {
        if self.limit == 0 {
            return true;
        }
        if self.waiting.iter().any(|(x, _)| *x == k) {
            return false;
        }
        if self.holders.len() < self.limit && self.waiting.is_empty() {
            self.holders.push((k, now));
            return true;
        }
        self.waiting.push_back((k, rank));
        false
    }

    /// `k` is done with its slot at `now`. Returns the connection that
    /// waited longest, which holds the slot from now on, if one waits.
    /// Nothing happens if `k` holds none (its slot expired).
    pub fn release(&mut self, k: K, now: Instant) -> Option<K> {
        let pos = self.holders.iter().position(|(h, _)| *h == k)?;
        self.holders.swap_remove(pos);
        self.hand_on(now)
    }

    /// Slots held longer than [`SLOT_HOLD`] go to the next in line: the
    /// connections handed one.
    pub fn expire(&mut self, now: Instant) -> Vec<K> {
        let mut handed = Vec::new();
        while !self.waiting.is_empty() {
            let Some(pos) = self
                .holders
                .iter()
                .position(|(_, since)| now.saturating_duration_since(*since) >= SLOT_HOLD)
            else {
                break;
            };
            self.holders.swap_remove(pos);
            handed.extend(self.hand_on(now));
        }
        handed
    }

    fn hand_on(&mut self, now: Instant) -> Option<K> {
        let best = self.waiting.iter().map(|(_, r)| *r).min()?;
        let pos = self.waiting.iter().position(|(_, r)| *r == best)?;
        let (next, _) = self.waiting.remove(pos)?;
        self.holders.push((next, now));
        Some(next)
    }

    /// `k` stops waiting (its connection ended).
    pub fn forget(&mut self, k: K) {
        self.waiting.retain(|(x, _)| *x != k);
    }

    /// Slots held.
    pub fn busy(&self) -> usize {
        self.holders.len()
    }

    /// Connections waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_come_first_served_one_piece_per_turn() {
        let t = Instant::now();
        let mut s = SendSlots::new(2);
        assert!(s.acquire(1, t));
        assert!(s.acquire(2, t));
        assert!(!s.acquire(3, t));
        assert!(!s.acquire(3, t), "asking again keeps its place");
        assert!(!s.acquire(4, t));
        assert_eq!((s.busy(), s.waiting()), (2, 2));
        // 1 sent its piece: the slot goes to 3; 1 lines up again behind 4.
        assert_eq!(s.release(1, t), Some(3));
        assert!(!s.acquire(1, t));
        assert_eq!(s.release(3, t), Some(4));
        // 4 left before using it (its connection gives the slot back at
        // once); the slot moves on to 1.
        assert_eq!(s.release(4, t), Some(1));
        assert_eq!(s.release(1, t), None);
        assert_eq!((s.busy(), s.waiting()), (1, 0));
        // A connection that ends while waiting leaves the line.
        let mut s = SendSlots::new(1);
        assert!(s.acquire(1, t));
        assert!(!s.acquire(2, t));
        assert!(!s.acquire(3, t));
        s.forget(2);
        assert_eq!(s.release(1, t), Some(3));
        // Unlimited.
        let mut s = SendSlots::new(0);
        assert!((0..100).all(|k| s.acquire(k, t)));
    }

    #[test]
    fn the_lowest_rank_goes_first_then_the_longest_waiting() {
        let t = Instant::now();
        let mut s = SendSlots::new(1);
        assert!(s.acquire_ranked(1, 5, t));
        assert!(!s.acquire_ranked(2, 3, t));
        assert!(!s.acquire_ranked(3, 1, t));
        assert!(!s.acquire_ranked(4, 1, t));
        assert_eq!(s.release(1, t), Some(3));
        assert_eq!(s.release(3, t), Some(4));
        assert_eq!(s.release(4, t), Some(2));
        assert_eq!(s.release(2, t), None);
    }

    #[test]
    fn a_slot_held_too_long_goes_to_the_next_in_line() {
        let t = Instant::now();
        let mut s = SendSlots::new(1);
        assert!(s.acquire(1, t));
        assert!(!s.acquire(2, t));
        assert!(s.expire(t + SLOT_HOLD / 2).is_empty());
        assert_eq!(s.expire(t + SLOT_HOLD), vec![2]);
        // 1 finishes later: it held nothing any more, nothing moves.
        assert_eq!(s.release(1, t + SLOT_HOLD * 2), None);
        assert_eq!(s.busy(), 1);
        // Nobody waiting: a long send keeps its slot.
        assert!(s.expire(t + SLOT_HOLD * 5).is_empty());
        assert_eq!(s.release(2, t + SLOT_HOLD * 5), None);
        assert_eq!(s.busy(), 0);
    }

    proptest! {
        /// Whatever connections do, at most `limit` hold a slot, nobody
        /// waits while a slot is free, and every waiter is served in turn.
        #[test]
        fn slots_are_never_overbooked_nor_left_idle(
            ops in proptest::collection::vec((0u8..4, 0u8..6, 0u64..800), 0..200)
        ) {
            let limit = 3;
            let t0 = Instant::now();
            let mut now = t0;
            let mut s = SendSlots::new(limit);
            let mut holders: Vec<u8> = Vec::new();
            for (op, k, ms) in ops {
                now += Duration::from_millis(ms);
                match op {
                    0 if !holders.contains(&k) && s.acquire_ranked(k, (ms % 3) as u32, now) => {
                        holders.push(k)
                    }
                    1 => {
                        let held = holders.iter().position(|h| *h == k);
                        let next = s.release(k, now);
                        if let Some(pos) = held {
                            holders.remove(pos);
                        } else {
                            prop_assert_eq!(next, None);
                        }
                        if let Some(next) = next {
                            prop_assert!(!holders.contains(&next));
                            holders.push(next);
                        }
                    }
                    2 if !holders.contains(&k) => s.forget(k),
                    3 => {
                        let before = s.busy();
                        let handed = s.expire(now);
                        // The expired holders keep sending but hold nothing.
                        holders.retain(|h| !handed.contains(h));
                        holders.retain(|h| s.holders.iter().any(|(x, _)| x == h));
                        for n in handed {
                            prop_assert!(!holders.contains(&n));
                            holders.push(n);
                        }
                        prop_assert_eq!(s.busy(), before);
                    }
                    _ => {}
                }
                prop_assert_eq!(s.busy(), holders.len());
                prop_assert!(holders.len() <= limit);
                prop_assert!(s.waiting() == 0 || holders.len() == limit);
            }
        }
    }
}
