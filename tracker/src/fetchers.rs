//! Which nodes are fetching each file: one tracker's soft state, neither
//! replicated nor persisted. No I/O; `now` is passed in.
//!
//! A download asks its tracker for the file's peers (`FileInfo`) every
//! half second to two seconds while it runs. The asking node is listed as
//! a peer of that file for [`FETCHER_TTL`] after each ask, even before it
//! holds a piece (its node serves the part file from the start: a peer
//! that connects sees an empty bitfield, then a `have` per piece). A
//! flash crowd then meshes from its first second, as a BitTorrent swarm
//! does, instead of every downloader connecting first to the few nodes
//! that verified a piece earliest: with only sharers listed, those few
//! took every downloader's connections up to its peer limit, and the
//! nodes that got their first piece later were never connected to — a
//! third of the crowd's uploads idle in a crowd of 100 (simulator,
//! docs/PERFORMANCE.md, "Crowds: fetchers listed").
//!
//! Bounded: entries older than the TTL go at the next look at their file
//! and in a sweep at most every TTL; past [`MAX_FETCHERS`] entries in all
//! a new fetcher is not listed (it still gets its answer).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ringshare_engine::proto::Token;

/// How long a node stays listed as fetching a file after it last asked.
pub const FETCHER_TTL: Duration = Duration::from_secs(10);
/// Most fetcher entries kept over all files.
pub const MAX_FETCHERS: usize = 1 << 18;

/// How often one file's list is cleared of expired entries (each look at
/// it would cost a pass over a crowd's list).
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// The fetchers of every file (see the module docs).
#[derive(Debug)]
pub struct Fetchers {
    files: HashMap<(String, String), FileFetchers>,
    entries: usize,
    cap: usize,
    next_sweep: Option<Instant>,
}

#[derive(Debug, Default)]
struct FileFetchers {
    asked: BTreeMap<Token, Instant>,
    pruned_at: Option<Instant>,
}

impl Default for Fetchers {
    fn default() -> Self {
        Self::with_cap(MAX_FETCHERS)
    }
}

impl Fetchers {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table that keeps at most `cap` entries.
    pub fn with_cap(cap: usize) -> Self {
        Self { files: HashMap::new(), entries: 0, cap, next_sweep: None }
    }

    /// Entries kept (for tests and the bound).
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether no entry is kept.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// `token` asked at `now` for the peers of `file` in `group`: it is
    /// listed as fetching the file until [`FETCHER_TTL`] from now. Returns
    /// the other sessions listed as fetching it, in token order.
    pub fn touch(&mut self, group: &str, file: &str, token: Token, now: Instant) -> Vec<Token> {
        if self.next_sweep.is_none_or(|t| now >= t) || self.entries >= self.cap {
            self.sweep(now);
            self.next_sweep = Some(now + FETCHER_TTL);
        }
        let room = self.entries < self.cap;
        let list = self.files.entry((group.to_owned(), file.to_owned())).or_default();
        if list.pruned_at.is_none_or(|t| now.saturating_duration_since(t) >= PRUNE_EVERY) {
            let before = list.asked.len();
            list.asked.retain(|_, at| fresh(*at, now));
            list.pruned_at = Some(now);
            self.entries -= before - list.asked.len();
        }
        if let Some(at) = list.asked.get_mut(&token) {
            *at = now;
        } else if room {
            list.asked.insert(token, now);
            self.entries += 1;
        }
        let others =
            list.asked.iter().filter(|(t, at)| **t != token && fresh(**at, now)).map(|(t, _)| *t);
        let others = others.collect();
        if list.asked.is_empty() {
            self.files.remove(&(group.to_owned(), file.to_owned()));
        }
        others
    }

    /// Drops every entry older than the TTL.
    fn sweep(&mut self, now: Instant) {
        let mut entries = 0;
        self.files.retain(|_, list| {
            list.asked.retain(|_, at| fresh(*at, now));
            entries += list.asked.len();
            !list.asked.is_empty()
        });
        self.entries = entries;
    }
}

fn fresh(at: Instant, now: Instant) -> bool {
    now.saturating_duration_since(at) < FETCHER_TTL
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(i: u8) -> Token {
        Token([i; 16])
    }

    #[test]
    fn a_fetcher_is_listed_to_others_until_its_ttl() {
        let t0 = Instant::now();
        let mut f = Fetchers::new();
        assert!(f.touch("g", "a", tok(1), t0).is_empty());
        assert_eq!(f.touch("g", "a", tok(2), t0), vec![tok(1)]);
        // Another file, another group: separate lists.
        assert!(f.touch("g", "b", tok(3), t0).is_empty());
        assert!(f.touch("h", "a", tok(3), t0).is_empty());
        assert_eq!(f.touch("g", "a", tok(3), t0 + Duration::from_secs(1)), vec![tok(1), tok(2)]);
        // 1 asks again and stays; 2 does not and goes.
        f.touch("g", "a", tok(1), t0 + Duration::from_secs(8));
        let later = t0 + FETCHER_TTL + Duration::from_millis(1);
        assert_eq!(f.touch("g", "a", tok(4), later), vec![tok(1), tok(3)]);
        // g/a holds 1, 3 and 4; the sweep due by now dropped g/b and h/a.
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn a_sweep_drops_files_nobody_asks_for_any_more() {
        let t0 = Instant::now();
        let mut f = Fetchers::new();
        for i in 0..50u8 {
            f.touch("g", &format!("f{i}"), tok(i), t0);
        }
        assert_eq!(f.len(), 50);
        let later = t0 + FETCHER_TTL + Duration::from_secs(1);
        assert!(f.touch("g", "other", tok(200), later).is_empty());
        assert_eq!(f.len(), 1);
        assert_eq!(f.files.len(), 1);
    }

    #[test]
    fn entries_stay_bounded() {
        let t0 = Instant::now();
        let cap = 1000;
        let mut f = Fetchers::with_cap(cap);
        let file = "f";
        for i in 0..(cap as u32 + 100) {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&i.to_be_bytes());
            f.touch("g", file, Token(b), t0);
        }
        assert_eq!(f.len(), cap);
        // A listed fetcher is still refreshed; the others keep their answer.
        let mut first = [0u8; 16];
        first[..4].copy_from_slice(&0u32.to_be_bytes());
        let others = f.touch("g", file, Token(first), t0 + Duration::from_secs(1));
        assert_eq!(others.len(), cap - 1);
        // Once they expire, room again.
        let later = t0 + FETCHER_TTL + Duration::from_secs(2);
        assert!(f.touch("g", "other", Token([0xff; 16]), later).is_empty());
        assert_eq!(f.len(), 1);
    }
}
