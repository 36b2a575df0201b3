//! How many files a bulk `get` fetches at once (sans-IO: the caller says
//! when a file ended and passes `now`; [`JobWindow::limit`] is the answer).
//!
//! A small file costs about one round trip on its link whatever its size,
//! so the files a fetch keeps running have to cover the path's bandwidth ×
//! delay: 16 at once fill a 1 Gbit/s path at 1 ms but a quarter of it at
//! 50 ms and a twelfth at 200 ms, while on loopback or a near peer more
//! files at once only add threads and connections. No fixed number suits
//! both, so by default the window looks for it, as TCP's slow start and
//! BBR's bandwidth probing do for bytes:
//!
//! - it measures in **rounds**: a round ends once at least as many files
//!   as the limit have ended and [`MIN_ROUND`] has passed, and its rate is
//!   the bytes of the files that ended in it over its length. After a
//!   change the next round starts only once the files started before it
//!   have ended: on a far path their ends lag the change by a round trip
//!   or more, and counted in, they made a doubling look no better and a
//!   halving as fast as what it replaced (at 200 ms the window fell from
//!   128 back to 32 while 128 was the fastest);
//! - **growing**: while a round's rate is at least [`GAIN`] × the best so
//!   far, the limit doubles (up to the maximum); the first round that
//!   gains less puts the limit back where the best rate was, and the
//!   window holds there. More files at once can also be slower (at 50 ms
//!   and 128 files on the wide-area testbed, losses at the link's queue
//!   and the retransmission timeouts of small transfers), which this
//!   undoes the same way;
//! - **holding**: every [`REPROBE_ROUNDS`] rounds, and no sooner than
//!   [`REPROBE_AFTER`], it probes, up and down
//!   in turn (the path, the peers or the files may have changed): a
//!   doubling is kept if its round gains [`GAIN`] × the round before it
//!   (and doubling goes on), a halving if its round keeps [`KEEP_DOWN`]
//!   of it (and the next probe halves again). So a window that a change
//!   made too large (a seeder that refuses connections beyond its cap per
//!   address, a path that got congested) comes down.
//!
//! It starts at [`DEFAULT_START`] and never goes below its minimum (the
//! fixed default before it adapted). `--jobs N` fixes the limit instead.

use std::time::{Duration, Instant};

/// A round lasts at least this long (a round of 16 small files on loopback
/// is ~10 ms: too few bytes to tell rates apart).
pub const MIN_ROUND: Duration = Duration::from_millis(200);
/// A larger limit is kept only if its round's rate is this much better.
pub const GAIN: f64 = 1.15;
/// Rounds held before the next probe (up or down, in turn).
pub const REPROBE_ROUNDS: u32 = 8;
/// And at least this long: a far path's rounds are short (about one
/// round trip of files), and a probe down costs half the rate for a
/// round and the files of the one before (at 200 ms, every 2.5 s half a
/// second at 128 of 256).
pub const REPROBE_AFTER: Duration = Duration::from_secs(5);
/// A smaller limit is kept if its round's rate is at least this share of
/// the rate before: as fast with fewer files at once.
pub const KEEP_DOWN: f64 = 0.95;
/// The adaptive window's range by default: 16 was the fixed default; 256
/// covers 1 Gbit/s at 200 ms with files of ~130 KiB. A link carries two
/// files at once (the next one's handshake and requests go behind the
/// last one's, to a server of the pipelining protocol version), so 256
/// files need 128 links, what a piece server admits from one address
/// (`ServerLimits`).
pub const DEFAULT_MIN: usize = 16;
/// See [`DEFAULT_MIN`].
pub const DEFAULT_MAX: usize = 256;
/// The most by default where a link carries one file at a time (the
/// threads download driver): a link per file.
pub const ONE_PER_LINK_MAX: usize = 128;
/// Where the adaptive window starts by default: each doubling costs a
/// round and the files of the last limit to end (about two round trips on
/// a far path), and on loopback the rate is the same at 16 or 64 (the
/// machine is the limit), so it starts where far paths need it rather
/// than climbing there (wide-area testbed, 2,000 small files: 50 ms
/// 2.81–2.90 s from 16, 2.54–2.59 s from 64; 200 ms 5.46–5.50 s and
/// 4.78–4.82 s).
pub const DEFAULT_START: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// `--jobs N`: never changes.
    Fixed,
    /// Doubling while each round gains.
    Grow { best: f64, best_limit: usize },
    /// At the best limit found; `rounds` held so far; whether the next
    /// probe goes up.
    Hold { rounds: u32, up: bool },
    /// Trying `limit` (above `from` if `up`, else below) after holding at
    /// `from` at the rate `reference`.
    Probe { from: usize, reference: f64, up: bool },
}

/// The number of files a bulk fetch runs at once.
#[derive(Debug, Clone)]
pub struct JobWindow {
    limit: usize,
    min: usize,
    max: usize,
    phase: Phase,
    round_start: Instant,
    round_files: usize,
    round_bytes: u64,
    /// Files still to end that were started before the last change: a
    /// round starts only once they have (else a larger limit's round
    /// counts files started under the smaller one and looks no better,
    /// and a smaller limit's looks as fast as the larger one it follows).
    skip: usize,
    /// When the window last came to hold where it is.
    held_since: Instant,
    started: Instant,
    changes: Vec<(Duration, usize)>,
}

impl JobWindow {
    /// Always `n` (at least 1).
    pub fn fixed(n: usize, now: Instant) -> Self {
        let n = n.max(1);
        Self::new(n, n, n, Phase::Fixed, now)
    }

    /// Adapts between `min` and `max` (at least 1, `max` at least `min`),
    /// starting at `min`.
    pub fn adaptive(min: usize, max: usize, now: Instant) -> Self {
        Self::adaptive_from(min, min, max, now)
    }

    /// Adapts between `min` and `max`, starting at `start` (within them).
    pub fn adaptive_from(min: usize, start: usize, max: usize, now: Instant) -> Self {
        let min = min.max(1);
        let max = max.max(min);
        let start = start.clamp(min, max);
        Self::new(start, min, max, Phase::Grow { best: 0.0, best_limit: start }, now)
    }

    fn new(limit: usize, min: usize, max: usize, phase: Phase, now: Instant) -> Self {
        Self {
            limit,
            min,
            max,
            phase,
            round_start: now,
            round_files: 0,
            round_bytes: 0,
            skip: 0,
            held_since: now,
            started: now,
            changes: vec![(Duration::ZERO, limit)],
        }
    }

    /// Files to keep running now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Every limit taken, with the time since the window was made: for the
    /// fetch's `--stats`.
    pub fn changes(&self) -> &[(Duration, usize)] {
        &self.changes
    }

    /// A file ended (complete, failed, or found already there) after
    /// `bytes` were fetched for it.
    pub fn on_file_done(&mut self, bytes: u64, now: Instant) {
        if self.phase == Phase::Fixed {
            return;
        }
        if self.skip > 0 {
            self.skip -= 1;
            if self.skip == 0 {
                self.round_start = now;
            }
            return;
        }
        self.round_files += 1;
        self.round_bytes += bytes;
        let took = now.saturating_duration_since(self.round_start);
        if self.round_files < self.limit || took < MIN_ROUND {
            return;
        }
        let rate = self.round_bytes as f64 / took.as_secs_f64();
        self.round_start = now;
        self.round_files = 0;
        self.round_bytes = 0;
        let next = match self.phase {
            Phase::Fixed => return,
            Phase::Grow { best, .. } if rate >= GAIN * best => self.up_from(rate),
            Phase::Grow { best_limit, .. } => (best_limit, Phase::Hold { rounds: 0, up: false }),
            Phase::Hold { rounds, up }
                if rounds + 1 >= REPROBE_ROUNDS
                    && now.saturating_duration_since(self.held_since) >= REPROBE_AFTER =>
            {
                let up = if up { self.limit < self.max } else { self.limit == self.min };
                let to = if up { self.grown() } else { self.shrunk() };
                (to, Phase::Probe { from: self.limit, reference: rate, up })
            }
            Phase::Hold { rounds, up } => (self.limit, Phase::Hold { rounds: rounds + 1, up }),
            Phase::Probe { reference, up: true, .. } if rate >= GAIN * reference => {
                self.up_from(rate)
            }
            Phase::Probe { reference, up: false, .. } if rate >= KEEP_DOWN * reference => {
                (self.limit, Phase::Hold { rounds: 0, up: false })
            }
            Phase::Probe { from, up, .. } => (from, Phase::Hold { rounds: 0, up: !up }),
        };
        if matches!(next.1, Phase::Hold { rounds: 0, .. }) {
            self.held_since = now;
        }
        self.phase = next.1;
        if next.0 != self.limit {
            // The files running now were started under the old limit.
            self.skip = self.limit;
            self.limit = next.0.clamp(self.min, self.max);
            self.changes.push((now.saturating_duration_since(self.started), self.limit));
        }
    }

    /// A round at this limit gained: double again, or hold at the top.
    fn up_from(&self, rate: f64) -> (usize, Phase) {
        if self.limit < self.max {
            (self.grown(), Phase::Grow { best: rate, best_limit: self.limit })
        } else {
            (self.limit, Phase::Hold { rounds: 0, up: false })
        }
    }

    fn grown(&self) -> usize {
        (self.limit * 2).min(self.max)
    }

    fn shrunk(&self) -> usize {
        (self.limit / 2).max(self.min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A path as a fetch sees it: `rate(t, limit)` bytes/s at `t` seconds
    /// with `limit` files running. Runs the window for `secs` of files of
    /// `file` bytes each ending at that rate, and returns it with the
    /// limits it held at each `t` (of file ends).
    fn drive_in_time(
        mut w: JobWindow,
        file: u64,
        secs: f64,
        rate: impl Fn(f64, usize) -> f64,
    ) -> (JobWindow, Vec<(f64, usize)>) {
        let t0 = Instant::now();
        let mut t = 0.0;
        let mut held = Vec::new();
        while t < secs {
            t += file as f64 / rate(t, w.limit());
            w.on_file_done(file, t0 + Duration::from_secs_f64(t));
            held.push((t, w.limit()));
        }
        (w, held)
    }

    /// [`drive_in_time`] on a path that does not change.
    fn drive(w: JobWindow, file: u64, secs: f64, rate: impl Fn(usize) -> f64) -> JobWindow {
        drive_in_time(w, file, secs, |_, l| rate(l)).0
    }

    /// Round-trip bound: `limit` files per `rtt`, up to `link` bytes/s.
    fn path(rtt: f64, link: f64, file: u64) -> impl Fn(usize) -> f64 {
        move |limit| (limit as f64 * file as f64 / rtt).min(link)
    }

    /// A path file by file: a file started with `running` files on the way
    /// takes one round trip, or longer when they share the link past it
    /// (`running × file / link`). Files start as others end, up to the
    /// window's limit at that moment, so a change shows in the rates only
    /// once the files started before it have ended — as on a real path.
    /// Returns the window and the limits it held at each file's end.
    fn drive_files(
        mut w: JobWindow,
        file: u64,
        secs: f64,
        rtt: f64,
        link: f64,
    ) -> (JobWindow, Vec<(f64, usize)>) {
        let t0 = Instant::now();
        let mut ends: std::collections::BinaryHeap<std::cmp::Reverse<u64>> = Default::default();
        let mut held = Vec::new();
        let ns = |t: f64| (t * 1e9) as u64;
        let mut t = 0.0;
        while t < secs {
            while ends.len() < w.limit() {
                let took = rtt.max(w.limit() as f64 * file as f64 / link);
                ends.push(std::cmp::Reverse(ns(t + took)));
            }
            let std::cmp::Reverse(end) = ends.pop().expect("files running");
            t = end as f64 / 1e9;
            w.on_file_done(file, t0 + Duration::from_nanos(end));
            held.push((t, w.limit()));
        }
        (w, held)
    }

    /// The limit held at the most file ends within `during`.
    fn most_held(held: &[(f64, usize)], during: std::ops::Range<f64>) -> usize {
        let mut count = std::collections::BTreeMap::new();
        for (_, l) in held.iter().filter(|(t, _)| during.contains(t)) {
            *count.entry(*l).or_insert(0usize) += 1;
        }
        count.into_iter().max_by_key(|&(_, n)| n).map_or(0, |(l, _)| l)
    }

    #[test]
    fn a_far_path_keeps_the_window_its_rate_calls_for() {
        // 1 Gbit/s at 200 ms, 128 KiB files: ~190 at once would fill it,
        // so the maximum is the answer and it holds there; files started
        // under a smaller limit ending in a larger one's round must not
        // make the larger look no better.
        let (w, held) =
            drive_files(JobWindow::adaptive(16, 128, Instant::now()), 128 << 10, 30.0, 0.2, 125e6);
        let late: Vec<usize> = held.iter().filter(|(t, _)| *t > 10.0).map(|h| h.1).collect();
        let at_max = late.iter().filter(|&&l| l == 128).count();
        assert!(at_max * 10 >= late.len() * 8, "{:?}", w.changes());
        assert!(held.iter().all(|&(t, l)| t < 2.0 || l >= 64), "{:?}", w.changes());
        // 50 ms: full at ~48 files; 64 is the answer.
        let (w, _) =
            drive_files(JobWindow::adaptive(16, 128, Instant::now()), 128 << 10, 30.0, 0.05, 125e6);
        assert_eq!(w.limit(), 64, "{:?}", w.changes());
    }

    #[test]
    fn a_window_started_high_finds_the_same_limits() {
        let start = || JobWindow::adaptive_from(16, DEFAULT_START, 128, Instant::now());
        let file = 128 << 10;
        let (w, held) = drive_files(start(), file, 30.0, 0.2, 125e6);
        assert_eq!(held.first().map(|h| h.1), Some(DEFAULT_START));
        assert_eq!(most_held(&held, 5.0..30.0), 128, "{:?}", w.changes());
        let (w, held) = drive_files(start(), file, 30.0, 0.05, 125e6);
        assert_eq!(most_held(&held, 5.0..30.0), 64, "{:?}", w.changes());
        // Near: as fast at any limit, so it comes down to the minimum.
        let w = drive(start(), file, 30.0, |_| 200e6);
        assert_eq!(w.limit(), 16, "{:?}", w.changes());
        // The start is kept within the range.
        assert_eq!(JobWindow::adaptive_from(16, 4, 128, Instant::now()).limit(), 16);
        assert_eq!(JobWindow::adaptive_from(16, 500, 128, Instant::now()).limit(), 128);
    }

    #[test]
    fn a_far_path_grows_the_window_until_the_link_is_full() {
        // 1 Gbit/s at 50 ms, 128 KiB files: full at ~48 files at once.
        let w = drive(
            JobWindow::adaptive(16, 128, Instant::now()),
            128 << 10,
            30.0,
            path(0.05, 125e6, 128 << 10),
        );
        assert_eq!(w.limit(), 64, "{:?}", w.changes());
        // 200 ms: ~190 files would fill it; the maximum is the answer.
        let w = drive(
            JobWindow::adaptive(16, 128, Instant::now()),
            128 << 10,
            30.0,
            path(0.2, 125e6, 128 << 10),
        );
        assert_eq!(w.limit(), 128, "{:?}", w.changes());
    }

    #[test]
    fn a_near_path_stays_at_the_minimum() {
        // Loopback: CPU-bound, the same rate at any limit.
        let w = drive(JobWindow::adaptive(16, 128, Instant::now()), 128 << 10, 30.0, |_| 200e6);
        assert_eq!(w.limit(), 16, "{:?}", w.changes());
        // It tried once and came back, then tries again now and then.
        let ups = w.changes().iter().filter(|(_, l)| *l == 32).count();
        assert!(ups >= 2, "it re-probes: {:?}", w.changes());
    }

    #[test]
    fn more_files_that_are_slower_are_undone() {
        // Faster up to 64 at once, slower beyond (losses at the queue).
        let rate = |l: usize| if l <= 64 { l as f64 * 1e6 } else { 30e6 };
        let (w, held) =
            drive_in_time(JobWindow::adaptive(16, 128, Instant::now()), 128 << 10, 30.0, |_, l| {
                rate(l)
            });
        // Held there between its probes (one up, one down, in turn).
        assert_eq!(most_held(&held, 10.0..30.0), 64, "{:?}", w.changes());
    }

    #[test]
    fn a_held_window_probes_no_more_often_than_its_floor() {
        // 200 ms: rounds of ~0.2 s, so eight of them are under two seconds.
        let (w, _) =
            drive_files(JobWindow::adaptive(16, 128, Instant::now()), 128 << 10, 60.0, 0.2, 125e6);
        let downs: Vec<Duration> = w
            .changes()
            .windows(2)
            .filter(|p| p[1].1 < p[0].1 && p[0].1 == 128)
            .map(|p| p[1].0)
            .collect();
        assert!(downs.len() >= 2, "it still probes: {:?}", w.changes());
        assert!(downs.windows(2).all(|d| d[1] - d[0] >= REPROBE_AFTER), "{:?}", w.changes());
    }

    #[test]
    fn the_window_follows_a_path_that_gets_farther() {
        let file = 128 << 10;
        let (near, far) = (path(0.001, 125e6, file), path(0.1, 125e6, file));
        let (w, held) =
            drive_in_time(JobWindow::adaptive(16, 128, Instant::now()), file, 60.0, |t, l| {
                if t < 20.0 {
                    near(l)
                } else {
                    far(l)
                }
            });
        // Held at the top once far, between its probes.
        assert_eq!(most_held(&held, 25.0..60.0), 128, "{:?}", w.changes());
    }

    #[test]
    fn a_window_grown_too_large_comes_back_down() {
        // A far path, then its seeder starts refusing links beyond 32 from
        // this address: every file over that waits out a peer retry.
        let file = 128 << 10;
        let far = path(0.2, 125e6, file);
        let (w, held) =
            drive_in_time(JobWindow::adaptive(16, 128, Instant::now()), file, 60.0, |t, l| {
                if t >= 15.0 && l > 32 {
                    5e6
                } else {
                    far(l)
                }
            });
        assert_eq!(most_held(&held, 5.0..15.0), 128, "{:?}", w.changes());
        assert_eq!(w.limit(), 32, "{:?}", w.changes());
    }

    #[test]
    fn a_fixed_window_never_moves() {
        let w = drive(
            JobWindow::fixed(7, Instant::now()),
            128 << 10,
            30.0,
            path(0.2, 125e6, 128 << 10),
        );
        assert_eq!(w.limit(), 7);
        assert_eq!(w.changes().len(), 1);
        assert_eq!(JobWindow::fixed(0, Instant::now()).limit(), 1);
    }

    proptest! {
        /// Whatever the files and the rates, the limit stays in its range
        /// and every change is recorded.
        #[test]
        fn the_limit_stays_in_range(
            min in 1usize..40,
            extra in 0usize..200,
            start in 0usize..300,
            ends in proptest::collection::vec((0u64..1 << 22, 0u64..2_000_000), 0..600),
        ) {
            let t0 = Instant::now();
            let mut w = JobWindow::adaptive_from(min, start, min + extra, t0);
            let mut t = Duration::ZERO;
            for (bytes, gap_us) in ends {
                t += Duration::from_micros(gap_us);
                w.on_file_done(bytes, t0 + t);
                prop_assert!(w.limit() >= min && w.limit() <= min + extra);
            }
            prop_assert_eq!(w.changes().last().map(|c| c.1), Some(w.limit()));
        }
    }
}
