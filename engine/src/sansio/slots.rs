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
//!
//! A connection that has waited [`BUSY_AFTER`] in line is told so: the
//! driver takes it out of line ([`SendSlots::overdue`]) and answers its
//! queued requests with `busy` ([`crate::peer::Message::Busy`]), and its
//! downloader asks peers with time for it. A crowd's early holders are
//! asked by everyone (they are listed first and hold what others lack);
//! with first come first served and no answer, a request waited in their
//! lines for seconds while other holders of the piece idled, and the
//! downloaders that waited most were the early holders themselves, busy
//! serving each other (simulator, docs/PERFORMANCE.md, "Busy answers").

use std::collections::VecDeque;
use std::str::FromStr;
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

/// How long a connection may wait in line for a slot before its requests
/// are answered with `busy`. Simulator, flash crowd of 100 at 256 MiB
/// (docs/PERFORMANCE.md; a first version whose answer made the
/// downloader forget the piece at that peer): no answer 1.48× the bound;
/// 1 s 1.38×, 500 ms 1.34×, 250 ms 1.31×, 100 ms 1.28×. Each answer costs
/// the downloader a round trip to ask elsewhere, so not shorter.
pub const BUSY_AFTER: Duration = Duration::from_millis(250);

/// How far the pieces a node has started may run ahead of its upload rate
/// ([`SendSlots::start_at`]): a piece that would start further ahead waits.
/// The node sends at most its rate × (time + this) plus one piece.
pub const RATE_AHEAD: Duration = Duration::from_millis(250);

/// A piece the node's upload rate lets start only this far ahead or more
/// waits unsent, and its connection tells the downloader it is alive (a
/// `have` of the piece) this often meanwhile: a downloader takes a request
/// unanswered with no byte from its peer for
/// [`crate::download::STALL_TIMEOUT`] (20 s) as stalled.
pub const KEEPALIVE: Duration = Duration::from_secs(5);

/// A node's upload rate, as its user gives it (`--upload-rate`): the
/// piece servers pace each connection sending a piece at its share of it
/// ([`UploadRate::share`], set as the socket's `SO_MAX_PACING_RATE` when
/// the piece starts), and start no piece ahead of the rate
/// ([`SendSlots::start_at`]): pacing alone spaces a socket's next piece,
/// not its first segment, so many connections sending small pieces one
/// after another went at up to twice the rate. Each peer is then held to its share instead of what
/// TCP gives it: on the namespace testbed's crowd of 12 (BBR, a bridge
/// with no delay and 50 ms queues), connections of one host ran with
/// windows of 4 to 154 segments side by side, and the downloaders whose
/// links came out worst finished last (docs/PERFORMANCE.md, twenty-fourth
/// session). A rate a tenth over the uplink's evens the shares as well as
/// one under it (twenty-fifth session); under it, nothing queues at the
/// uplink either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadRate(u64);

impl UploadRate {
    /// The least rate taken: 8 kbit/s.
    pub const MIN_BYTES_PER_S: u64 = 1000;

    /// The rate, bytes per second.
    pub fn bytes_per_s(self) -> u64 {
        self.0
    }

    /// Each connection's pace while `senders` send at once (the one asking
    /// among them), bytes per second.
    pub fn share(self, senders: usize) -> u64 {
        (self.0 / senders.max(1) as u64).max(1)
    }
}

impl FromStr for UploadRate {
    type Err = String;

    /// `40mbit`, `800kbit`, `1.5gbit`, `64000bit` (bits per second, powers
    /// of 1000; `bit` in either case), `5MB`, `600kB`, `1GB`, `5000B`
    /// (bytes per second: a capital `B`), or a plain number of bytes per
    /// second. A small `b` (`5mb`, `5Mb`) is refused: written so, it means
    /// bits as often as bytes, eight times apart.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("upload rate {s:?}: expected a rate such as 40mbit, 800kbit or 5MB (bytes per second)")
        };
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let per_byte = match unit {
            "" | "B" => 1.0,
            "kB" | "KB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            u => match u.to_ascii_lowercase().as_str() {
                "bit" => 1.0 / 8.0,
                "kbit" => 1e3 / 8.0,
                "mbit" => 1e6 / 8.0,
                "gbit" => 1e9 / 8.0,
                "b" | "kb" | "mb" | "gb" => {
                    let big = u[..u.len() - 1].to_ascii_uppercase().replace('K', "k");
                    let small = u[..u.len() - 1].to_ascii_lowercase();
                    return Err(format!(
                        "upload rate {s:?}: write {num}{big}B for bytes per second or \
                         {num}{small}bit for bits per second"
                    ));
                }
                _ => return Err(bad()),
            },
        };
        let bytes = value * per_byte;
        if !bytes.is_finite() || bytes < Self::MIN_BYTES_PER_S as f64 {
            return Err(format!("upload rate {s:?}: at least 8kbit (1000 bytes per second)"));
        }
        if bytes >= u64::MAX as f64 {
            return Err(format!(
                "upload rate {s:?} is too large (leave --upload-rate out for none)"
            ));
        }
        Ok(Self(bytes as u64))
    }
}

/// The slots of one node (see the module docs); `K` names a connection.
#[derive(Debug, Clone)]
pub struct SendSlots<K> {
    limit: usize,
    /// Who holds a slot, since when.
    holders: Vec<(K, Instant)>,
    /// In line, with their rank and since when: a slot goes to the lowest
    /// rank, the longest waiting among equals.
    waiting: VecDeque<(K, u32, Instant)>,
    /// Each connection sending a piece at a paced rate, and when that
    /// piece is sent at that pace ([`SendSlots::senders`]).
    recent: Vec<(K, Instant)>,
    /// When the piece data started so far is out at the node's upload
    /// rate ([`SendSlots::start_at`]).
    paid_until: Option<Instant>,
}

impl<K: Copy + PartialEq> SendSlots<K> {
    /// `limit` slots (0: as many as asked for).
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            holders: Vec::new(),
            waiting: VecDeque::new(),
            recent: Vec::new(),
            paid_until: None,
        }
    }

    /// `k` starts sending a piece of `len` bytes at `now`, the node's
    /// upload held to `rate`: how many connections send at once, as the
    /// rate is divided ([`UploadRate::share`]). `k` and those still sending
    /// the piece they started, going by when it ends at their share of the
    /// rate. Not the slots held at this instant: a connection lets go of its
    /// slot once its piece is in the socket, long before it is sent at its
    /// pace, so two connections sending pieces one after another each found
    /// the other between two and went at the whole rate (two files fetched
    /// from one node went at twice its `--upload-rate`).
    pub fn senders(&mut self, k: K, now: Instant, rate: UploadRate, len: u32) -> usize {
        self.recent.retain(|(x, end)| *x != k && *end > now);
        let n = self.recent.len() + 1;
        let secs = f64::from(len) * n as f64 / rate.bytes_per_s() as f64;
        self.recent.push((k, now + Duration::from_secs_f64(secs.min(3600.0))));
        n
    }

    /// `k` ended before its piece was all sent (a downloader that reset
    /// the link): it no longer counts among those sending at once, or the
    /// next downloader's pieces went at a share of the rate beside
    /// connections that were gone (a stopped bulk get's twenty left the
    /// next one-file get at a twenty-first of the rate for seconds).
    pub fn left(&mut self, k: K) {
        self.recent.retain(|(x, _)| *x != k);
    }

    /// When a piece of `len` bytes ready at `now` may start, the node's
    /// upload held to `rate`: at once while the pieces started before it
    /// would be out at that rate within [`RATE_AHEAD`], else as much
    /// earlier than when they would. Its bytes are counted from then on,
    /// so call it once per piece, as it is about to go. Pieces get their
    /// start times in the order they ask, whichever connection sends them.
    pub fn start_at(&mut self, now: Instant, rate: UploadRate, len: u32) -> Instant {
        let due = self.paid_until.map_or(now, |t| t.max(now));
        let start = due.checked_sub(RATE_AHEAD).map_or(now, |t| t.max(now));
        let secs = f64::from(len) / rate.bytes_per_s() as f64;
        self.paid_until = Some(due + Duration::from_secs_f64(secs.min(3600.0)));
        start
    }

    /// A piece of `len` bytes given its start by
    /// [`start_at`](Self::start_at) never went out (its connection ended
    /// while it waited): its bytes go back to the budget, so that the
    /// pieces asked after it do not wait for bytes nobody sent. (A bulk
    /// get stopped with many pieces in line left the node's next
    /// downloader waiting seconds for a 200 kB file.) Pieces already given
    /// a later start keep it.
    pub fn refund(&mut self, now: Instant, rate: UploadRate, len: u32) {
        let Some(t) = self.paid_until else { return };
        let secs = f64::from(len) / rate.bytes_per_s() as f64;
        let back = t.checked_sub(Duration::from_secs_f64(secs.min(3600.0))).unwrap_or(now);
        self.paid_until = Some(back.max(now));
    }

    /// What of a piece of `len` bytes, paced at `pace` bytes a second from
    /// `started` on, had not gone by `now`: what a connection ended in the
    /// middle of it gives back ([`refund`](Self::refund)). A downloader that
    /// resets its links leaves the pieces being sent to it half sent, and
    /// each had been paid for whole: a bulk get's pieces, sent to it at
    /// once at a share of the rate each, left the next downloader up to two
    /// seconds behind them. (An estimate: what TCP had sent when the reset
    /// came is gone with the connection.)
    pub fn unsent(started: Instant, pace: u64, len: u32, now: Instant) -> u32 {
        let gone = now.saturating_duration_since(started).as_secs_f64() * pace as f64;
        len.saturating_sub(gone.min(f64::from(len)) as u32)
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
        if self.waiting.iter().any(|(x, ..)| *x == k) {
            return false;
        }
        if self.holders.len() < self.limit && self.waiting.is_empty() {
            self.holders.push((k, now));
            return true;
        }
        self.waiting.push_back((k, rank, now));
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
        let best = self.waiting.iter().map(|(_, r, _)| *r).min()?;
        let pos = self.waiting.iter().position(|(_, r, _)| *r == best)?;
        let (next, ..) = self.waiting.remove(pos)?;
        self.holders.push((next, now));
        Some(next)
    }

    /// The connections that have waited [`BUSY_AFTER`] or longer, of those
    /// `may_answer` accepts (their downloaders understand `busy`), leave
    /// the line and are returned, longest waiting first: the driver
    /// answers their queued requests with `busy`. One that asks for a slot
    /// again lines up at the back.
    pub fn overdue(&mut self, now: Instant, may_answer: impl Fn(K) -> bool) -> Vec<K> {
        let mut out = Vec::new();
        self.waiting.retain(|&(k, _, since)| {
            let due = now.saturating_duration_since(since) >= BUSY_AFTER && may_answer(k);
            if due {
                out.push(k);
            }
            !due
        });
        out
    }

    /// When the next connection in line is due an answer
    /// ([`overdue`](Self::overdue)), if one waits.
    pub fn next_overdue(&self) -> Option<Instant> {
        self.waiting.iter().map(|&(_, _, since)| since + BUSY_AFTER).min()
    }

    /// `k` stops waiting (its connection ended).
    pub fn forget(&mut self, k: K) {
        self.waiting.retain(|(x, ..)| *x != k);
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

    /// A piece that never went out gives its bytes back: the next piece
    /// starts as if it had not been asked for; one that went out does not.
    #[test]
    fn a_piece_that_never_went_gives_its_budget_back() {
        let rate: UploadRate = "1MB".parse().unwrap();
        let t0 = Instant::now();
        let mut slots: SendSlots<u32> = SendSlots::new(0);
        let len = 500_000;
        assert_eq!(slots.start_at(t0, rate, len), t0);
        let second = slots.start_at(t0, rate, len);
        assert_eq!(second, t0 + Duration::from_millis(250), "half a second on, less RATE_AHEAD");
        let third = slots.start_at(t0, rate, len);
        assert_eq!(third, t0 + Duration::from_millis(750));
        // The third never goes: the next one takes its place.
        slots.refund(t0, rate, len);
        assert_eq!(slots.start_at(t0, rate, len), third);
        // Never below now: a refund of more than was paid is the present.
        let later = t0 + Duration::from_secs(10);
        slots.refund(later, rate, len);
        assert_eq!(slots.start_at(later, rate, len), later);
    }

    #[test]
    fn a_connection_that_left_is_not_counted_among_the_senders() {
        let rate: UploadRate = "1MB".parse().unwrap();
        let t0 = Instant::now();
        let mut slots: SendSlots<u32> = SendSlots::new(0);
        assert_eq!(slots.senders(1, t0, rate, 500_000), 1);
        assert_eq!(slots.senders(2, t0, rate, 500_000), 2);
        slots.left(1);
        assert_eq!(slots.senders(3, t0, rate, 500_000), 2, "2 and 3");
    }

    #[test]
    fn a_piece_cut_off_half_sent_gives_back_what_had_not_gone() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // 400 kB at 100 kB/s: a quarter of it gone each second.
        assert_eq!(SendSlots::<u32>::unsent(t0, 100_000, 400_000, t0), 400_000);
        assert_eq!(SendSlots::<u32>::unsent(t0, 100_000, 400_000, at(1000)), 300_000);
        assert_eq!(SendSlots::<u32>::unsent(t0, 100_000, 400_000, at(10_000)), 0);
        // Not started yet (its pause had not ended): all of it.
        assert_eq!(SendSlots::<u32>::unsent(at(500), 100_000, 400_000, t0), 400_000);
    }

    #[test]
    fn upload_rates_read_in_bits_or_bytes() {
        let r = |s: &str| s.parse::<UploadRate>().map(UploadRate::bytes_per_s);
        assert_eq!(r("50mbit"), Ok(6_250_000));
        assert_eq!(r("47Mbit"), Ok(5_875_000));
        assert_eq!(r("1.5gbit"), Ok(187_500_000));
        assert_eq!(r("800kbit"), Ok(100_000));
        assert_eq!(r("64000bit"), Ok(8000));
        assert_eq!(r("5MB"), Ok(5_000_000));
        assert_eq!(r("600kB"), Ok(600_000));
        assert_eq!(r(" 1GB "), Ok(1_000_000_000));
        assert_eq!(r("12000"), Ok(12_000));
        assert_eq!(r("8kbit"), Ok(1000));
        assert_eq!(r("2KB"), Ok(2000));
        assert_eq!(r("5000B"), Ok(5000));
        for bad in
            ["", "mbit", "abc", "-5mbit", "5 mbit", "5mbps", "1e9", "0", "7kbit", "0.5", "1..2MB"]
        {
            assert!(r(bad).is_err(), "{bad:?} was taken");
        }
        // A small b is bits as often as bytes: refused, saying both.
        assert_eq!(
            r("5mb").unwrap_err(),
            "upload rate \"5mb\": write 5MB for bytes per second or 5mbit for bits per second"
        );
        for ambiguous in ["5Mb", "600kb", "1gb", "9000b"] {
            assert!(r(ambiguous).unwrap_err().contains("bits per second"), "{ambiguous}");
        }
        let big = r("99999999999999999999999gbit").unwrap_err();
        assert!(big.contains("is too large"), "{big}");
    }

    #[test]
    fn each_sender_is_paced_at_its_share() {
        let rate: UploadRate = "48mbit".parse().unwrap();
        assert_eq!(rate.share(1), 6_000_000);
        assert_eq!(rate.share(0), 6_000_000, "the one asking counts");
        assert_eq!(rate.share(16), 375_000);
        let least: UploadRate = "8kbit".parse().unwrap();
        assert_eq!(least.share(10_000), 1, "never a pace of zero (unlimited)");
    }

    #[test]
    fn senders_are_those_still_sending_their_piece_at_their_pace() {
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        // 512 KiB pieces at 80 MB/s: 6.6 ms alone, 13.1 ms at half.
        let rate: UploadRate = "80MB".parse().unwrap();
        let piece = 512 * 1024;
        let mut s = SendSlots::<u32>::new(16);
        // Two connections each sending one piece after another (no slot is
        // held between pieces): each piece finds the other still sending.
        let at = |n: usize| Duration::from_secs_f64(f64::from(piece) * n as f64 / 80e6);
        let mut next = [ms(0), ms(1)];
        assert_eq!(s.senders(1, next[0], rate, piece), 1);
        next[0] += at(1);
        assert_eq!(s.senders(2, next[1], rate, piece), 2);
        next[1] += at(2);
        for _ in 0..100 {
            let c = if next[0] <= next[1] { 0 } else { 1 };
            assert_eq!(s.senders(c as u32 + 1, next[c], rate, piece), 2);
            next[c] += at(2);
        }
        assert_eq!(s.busy(), 0, "no slot was held meanwhile");
        // Connection 2 stops: once its last piece is out, 1 sends alone.
        let end = next[1];
        assert_eq!(s.senders(1, end - Duration::from_millis(1), rate, piece), 2);
        assert_eq!(s.senders(1, end + Duration::from_millis(1), rate, piece), 1);
        // A slow rate: ten connections, the last sending its piece for
        // 8.4 s at a tenth of 5 Mbit/s; those still sending count.
        let slow: UploadRate = "5mbit".parse().unwrap();
        let mut s = SendSlots::<u32>::new(16);
        for c in 0..10 {
            assert_eq!(s.senders(c, ms(u64::from(c)), slow, piece), c as usize + 1);
        }
        assert_eq!(s.senders(0, ms(500), slow, piece), 10, "the first's piece at full pace ended");
        assert_eq!(
            s.senders(0, ms(5_000), slow, piece),
            6,
            "the five whose pieces are not out yet, and this one"
        );
        // A small piece ends soon.
        let mut s = SendSlots::<u32>::new(16);
        s.senders(1, ms(0), rate, 4096);
        assert_eq!(s.senders(2, ms(1), rate, piece), 1);
    }

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

    #[test]
    fn a_connection_that_waited_too_long_leaves_the_line() {
        let t = Instant::now();
        let mut s = SendSlots::new(1);
        assert!(s.acquire(1, t));
        assert!(!s.acquire(2, t));
        assert!(!s.acquire(3, t + BUSY_AFTER / 2));
        assert!(!s.acquire(4, t + BUSY_AFTER / 2));
        assert_eq!(s.next_overdue(), Some(t + BUSY_AFTER));
        assert!(s.overdue(t + BUSY_AFTER / 2, |_| true).is_empty());
        // 2 is due; 3 and 4 not yet.
        assert_eq!(s.overdue(t + BUSY_AFTER, |_| true), vec![2]);
        assert_eq!(s.waiting(), 2);
        // Only those whose downloaders understand the answer leave.
        assert_eq!(s.overdue(t + BUSY_AFTER * 2, |k| k == 4), vec![4]);
        assert_eq!(s.waiting(), 1);
        // 2 asks again: it lines up behind 3, with a new wait.
        assert!(!s.acquire(2, t + BUSY_AFTER * 2));
        assert_eq!(s.release(1, t + BUSY_AFTER * 2), Some(3));
        assert_eq!(s.next_overdue(), Some(t + BUSY_AFTER * 3));
        assert_eq!(s.release(3, t + BUSY_AFTER * 2), Some(2));
        assert_eq!(s.next_overdue(), None);
    }

    #[test]
    fn pieces_start_no_further_ahead_of_the_rate_than_allowed() {
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        let rate: UploadRate = "2MB".parse().unwrap();
        let mut s = SendSlots::<u32>::new(16);
        // 20 KB pieces are 10 ms each at 2 MB/s: 26 start at once (the
        // 26th when the 25 before it would be out in 250 ms), then one
        // every 10 ms, whoever asks.
        for _ in 0..26 {
            assert_eq!(s.start_at(t, rate, 20_000), t);
        }
        for n in 1..=10 {
            assert_eq!(s.start_at(t, rate, 20_000), ms(10 * n));
        }
        // Asked later than its turn, a piece starts when asked.
        assert_eq!(s.start_at(ms(150), rate, 20_000), ms(150));
        // After a pause the node may run ahead again by as much, no more.
        let later = ms(10_000);
        for _ in 0..26 {
            assert_eq!(s.start_at(later, rate, 20_000), later);
        }
        assert_eq!(s.start_at(later, rate, 20_000), later + Duration::from_millis(10));
        // A piece at 2 MB/s of 512 KiB is 262 ms: the next one waits.
        let mut s = SendSlots::<u32>::new(16);
        assert_eq!(s.start_at(t, rate, 512 * 1024), t);
        let next = s.start_at(t, rate, 512 * 1024);
        assert!(next > ms(12) && next < ms(13), "{next:?}");
    }

    proptest! {
        /// Whatever the pieces and whenever they ask, the data started up
        /// to each piece's start is within the rate over the time since the
        /// first, plus [`RATE_AHEAD`]; no piece starts before it asks, and
        /// none waits while the node is not ahead.
        #[test]
        fn started_data_keeps_to_the_rate(
            rate in 1_000u64..200_000_000,
            steps in proptest::collection::vec((0u64..50_000, 1u32..=512 * 1024), 1..300),
        ) {
            let rate = UploadRate(rate);
            let t0 = Instant::now();
            let mut s = SendSlots::<u32>::new(16);
            let (mut now, mut sent, mut last_start) = (t0, 0u64, t0);
            for (gap_us, len) in steps {
                now = now.max(last_start) + Duration::from_micros(gap_us);
                let behind = s.paid_until.is_none_or(|p| p <= now + RATE_AHEAD);
                let start = s.start_at(now, rate, len);
                prop_assert!(start >= now);
                prop_assert!(start >= last_start);
                if behind {
                    prop_assert_eq!(start, now);
                }
                let allowed = (start - t0 + RATE_AHEAD).as_secs_f64() * rate.bytes_per_s() as f64;
                prop_assert!(sent as f64 <= allowed + 1.0, "{} started by {:?}", sent, start - t0);
                sent += u64::from(len);
                last_start = start;
            }
        }
    }

    proptest! {
        /// Whatever connections do, at most `limit` hold a slot, nobody
        /// waits while a slot is free, and every waiter is served in turn.
        #[test]
        fn slots_are_never_overbooked_nor_left_idle(
            ops in proptest::collection::vec((0u8..5, 0u8..6, 0u64..800), 0..200)
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
                    4 => {
                        let (busy, waiting) = (s.busy(), s.waiting());
                        let gone = s.overdue(now, |x| x % 2 == k % 2);
                        for g in &gone {
                            prop_assert!(!holders.contains(g));
                        }
                        prop_assert_eq!(s.busy(), busy);
                        prop_assert_eq!(s.waiting(), waiting - gone.len());
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
