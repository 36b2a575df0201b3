//! How many bytes to keep requested from one peer: its bandwidth × delay.
//!
//! A peer answers requests in order, so the bytes a downloader keeps
//! outstanding at a peer are its congestion window at the application
//! layer: too few and the link idles for a round trip after every batch
//! (the rate is capped near outstanding / RTT — 6 pieces over 200 ms is
//! 15 MB/s whatever the link), too many and every piece waits in the
//! peer's queue (piece latency, endgame, and a dead peer's lost work grow).
//!
//! [`PeerFlow`] sizes it the way BBR sizes a TCP window, from two
//! estimates it keeps per peer, with no I/O and `now` passed in:
//!
//! - **bottleneck rate**: the highest delivery rate over recent sample
//!   intervals (each at least one round trip long);
//! - **round trip**: the lowest request-to-arrival time of a piece over
//!   the last [`RTT_WINDOW`]. A piece that waited behind others in the
//!   peer's queue only raises a sample, so the minimum is the path's.
//!
//! It starts small and doubles what it keeps outstanding every round trip
//! while the rate keeps growing (like TCP's slow start); once the rate
//! stops growing by a quarter for three rounds it keeps
//! [`STEADY_GAIN`] × rate × RTT and one request more outstanding (a gain
//! of 1: on a path whose "round trip" is mostly the hosts' own queueing,
//! as on loopback, every request beyond that only waits — measured with
//! `ringshare demo`, 1 GiB, 3 seeders: gain 2 and two spare requests gave a
//! piece latency p99 of 38-74 ms and 1174-1324 MB/s, gain 1 and one spare
//! 16-20 ms and 1283-1322 MB/s; over 100 and 200 ms paths both filled the
//! same, 109 and 99 MB/s). When the round
//! trip estimate is [`RTT_WINDOW`] old, it keeps half the bandwidth × delay
//! outstanding until a request sent with the queue empty comes back, and
//! takes that as the round trip (BBR's ProbeRTT; it costs about one round
//! trip of half the rate every ten seconds).
//!
//! Requests, not memory, are what this sizes: a downloader's buffers hold
//! only data that has arrived and waits to be hashed or written.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a round-trip sample stays the estimate before it is probed again.
pub const RTT_WINDOW: Duration = Duration::from_secs(10);
/// Outstanding bytes in the steady state, in rates × round trips.
pub const STEADY_GAIN: f64 = 1.0;
/// Outstanding bytes while the rate is still growing, in rates × round trips.
pub const STARTUP_GAIN: f64 = 2.9;
/// The fewest requests kept outstanding (one being answered, one behind).
pub const MIN_REQUESTS: usize = 2;
/// Requests sent to a new peer before anything is known of its path:
/// 4 MiB in flight, 20 MB/s at 200 ms in the first round trip.
pub const INITIAL_REQUESTS: usize = 8;
/// The most requests kept outstanding at one peer.
pub const MAX_REQUESTS: usize = 512;
/// Shortest rate-sample interval (the clock's and the scheduler's grain).
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Rate samples kept for the maximum (each at least one round trip).
const BW_SAMPLES: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Doubling while the rate grows; `flat` rounds without 25 % growth.
    Startup { flat: u32 },
    /// Rate × RTT × gain.
    Steady,
    /// Keeping half the bandwidth × delay outstanding, so that the peer's
    /// queue empties, to sample the round trip afresh; since when it is
    /// drained (a request sent after that arrives unqueued).
    ProbeRtt { drained_at: Option<Instant> },
}

/// The request window of one peer (see the module docs).
#[derive(Debug, Clone)]
pub struct PeerFlow {
    /// Bytes per request (a piece, usually).
    request_len: u64,
    phase: Phase,
    min_rtt: Option<Duration>,
    min_rtt_at: Instant,
    /// Recent delivery-rate samples, bytes/s, newest last.
    bw: VecDeque<f64>,
    /// The rate the startup last grew from.
    full_bw: f64,
    /// The current sample interval: its start and bytes delivered since.
    interval: (Instant, u64),
    /// Whether, during the current interval, the window was not filled for
    /// want of pieces to ask this peer for: a rate that did not grow then
    /// says nothing about the path.
    app_limited: bool,
}

impl PeerFlow {
    /// A fresh peer at `now`, asked for requests of about `request_len` bytes.
    pub fn new(request_len: u64, now: Instant) -> Self {
        Self {
            request_len: request_len.max(1),
            phase: Phase::Startup { flat: 0 },
            min_rtt: None,
            min_rtt_at: now,
            bw: VecDeque::new(),
            full_bw: 0.0,
            interval: (now, 0),
            app_limited: false,
        }
    }

    /// A piece (`bytes` long) requested at `sent` arrived at `now`.
    pub fn on_arrival(&mut self, sent: Instant, bytes: u64, now: Instant) {
        let rtt = now.saturating_duration_since(sent);
        if let Phase::ProbeRtt { drained_at: Some(d) } = self.phase {
            if sent >= d {
                // Requested with the queue drained: the path's round trip
                // now, even if it grew.
                self.min_rtt = Some(rtt);
                self.min_rtt_at = now;
                self.phase = Phase::Steady;
            }
        }
        if self.min_rtt.is_none_or(|m| rtt <= m) {
            self.min_rtt = Some(rtt);
            self.min_rtt_at = now;
        }
        self.interval.1 += bytes;
        let span = now.saturating_duration_since(self.interval.0);
        if span >= self.min_rtt.unwrap_or(MIN_INTERVAL).max(MIN_INTERVAL) {
            let rate = self.interval.1 as f64 / span.as_secs_f64();
            if matches!(self.phase, Phase::ProbeRtt { .. }) {
                // Held back on purpose: not what the path can carry.
                self.interval = (now, 0);
                return;
            }
            if self.bw.len() == BW_SAMPLES {
                self.bw.pop_front();
            }
            self.bw.push_back(rate);
            self.interval = (now, 0);
            let limited = std::mem::take(&mut self.app_limited);
            self.end_of_round(rate, limited);
        }
    }

    /// The window was not filled: the peer had no piece left to ask for
    /// (it holds few, or a seed offers few at a time). Until the current
    /// sample interval ends, a rate that does not grow does not count
    /// toward leaving the startup (BBR's application-limited samples).
    pub fn app_limited(&mut self) {
        self.app_limited = true;
    }

    /// One rate sample (about a round trip) ended.
    fn end_of_round(&mut self, rate: f64, app_limited: bool) {
        if let Phase::Startup { flat } = self.phase {
            if rate > self.full_bw * 1.25 {
                self.full_bw = rate;
                self.phase = Phase::Startup { flat: 0 };
            } else if app_limited {
                // Held back by the pieces on offer, not by the path.
            } else if flat + 1 >= 3 {
                self.phase = Phase::Steady;
            } else {
                self.phase = Phase::Startup { flat: flat + 1 };
            }
        }
    }

    /// The bottleneck rate estimate, bytes/s (0 before the first sample).
    pub fn rate(&self) -> f64 {
        self.bw.iter().copied().fold(0.0, f64::max)
    }

    /// The round-trip estimate, once a piece has arrived.
    pub fn rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// How many requests to keep outstanding now, given `outstanding` bytes
    /// requested and not yet arrived.
    pub fn window(&mut self, outstanding: u64, now: Instant) -> usize {
        let Some(rtt) = self.min_rtt else { return INITIAL_REQUESTS };
        if self.phase == Phase::Steady
            && now.saturating_duration_since(self.min_rtt_at) > RTT_WINDOW
        {
            self.phase = Phase::ProbeRtt { drained_at: None };
        }
        let bdp = self.rate() * rtt.as_secs_f64().min(60.0);
        let bytes = match self.phase {
            Phase::Startup { .. } => {
                // Double per round trip: keep twice what arrived in the last one.
                (STARTUP_GAIN * bdp).max(2.0 * self.interval_bytes_per_rtt(rtt, now))
            }
            Phase::Steady => STEADY_GAIN * bdp,
            Phase::ProbeRtt { drained_at } => {
                // Half the bandwidth × delay: the queue empties within a
                // round trip while the link stays half busy.
                let half = 0.5 * bdp;
                if drained_at.is_none() && outstanding as f64 <= half + self.request_len as f64 {
                    self.phase = Phase::ProbeRtt { drained_at: Some(now) };
                }
                half
            }
        };
        // One request more than the bytes call for: the one being answered.
        let requests = (bytes / self.request_len as f64).ceil() as usize + 1;
        requests.clamp(MIN_REQUESTS, MAX_REQUESTS)
    }

    fn interval_bytes_per_rtt(&self, rtt: Duration, now: Instant) -> f64 {
        let span = now.saturating_duration_since(self.interval.0).as_secs_f64();
        if span <= 0.0 {
            return 0.0;
        }
        self.interval.1 as f64 / span * rtt.as_secs_f64()
    }

    /// Whether the rate has stopped growing (out of the startup).
    pub fn is_steady(&self) -> bool {
        !matches!(self.phase, Phase::Startup { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    const PIECE: u64 = 512 * 1024;

    /// A peer behind a path of `rtt` and `rate` bytes/s, answering whole
    /// pieces in order, driven for `secs` of virtual time. Returns the
    /// bytes delivered in the last `measure` seconds and the most
    /// requests that were outstanding at once.
    fn simulate(rtt: Duration, rate: f64, secs: f64, measure: f64) -> (f64, usize, PeerFlow) {
        let t0 = Instant::now();
        let mut flow = PeerFlow::new(PIECE, t0);
        let serve = Duration::from_secs_f64(PIECE as f64 / rate);
        // (sent, arrives) of each outstanding request, in order.
        let mut queue: VecDeque<(Instant, Instant)> = VecDeque::new();
        let mut link_free = t0; // when the peer's sender is next idle
        let mut now = t0;
        let end = t0 + Duration::from_secs_f64(secs);
        let from = t0 + Duration::from_secs_f64(secs - measure);
        let (mut delivered, mut most) = (0.0, 0);
        while now < end {
            // Top the window up.
            let w = flow.window(queue.len() as u64 * PIECE, now);
            while queue.len() < w {
                // The request reaches the peer half a round trip later; it
                // is sent after the ones before it; it lands half a round
                // trip after its last byte leaves.
                let start = (now + rtt / 2).max(link_free);
                link_free = start + serve;
                queue.push_back((now, link_free + rtt / 2));
            }
            most = most.max(queue.len());
            // Jump to the next arrival.
            let Some((sent, at)) = queue.pop_front() else { break };
            now = at;
            flow.on_arrival(sent, PIECE, now);
            if now >= from {
                delivered += PIECE as f64;
            }
        }
        (delivered / measure, most, flow)
    }

    #[test]
    fn fills_any_path_up_to_300_ms() {
        for rtt_ms in [1u64, 20, 50, 100, 200, 300] {
            for rate in [10e6, 40e6, 125e6] {
                let rtt = Duration::from_millis(rtt_ms);
                let (got, most, flow) = simulate(rtt, rate, 30.0, 10.0);
                assert!(
                    got >= 0.97 * rate,
                    "rtt {rtt_ms} ms, {} MB/s: got {:.1} MB/s",
                    rate / 1e6,
                    got / 1e6
                );
                // Outstanding stays near the path's bandwidth × delay.
                let bdp = rate * rtt.as_secs_f64() / PIECE as f64;
                assert!(
                    (most as f64) <= STARTUP_GAIN * 2.0 * bdp + 8.0,
                    "rtt {rtt_ms} ms, {} MB/s: {most} outstanding for a BDP of {bdp:.1}",
                    rate / 1e6
                );
                assert!(flow.is_steady());
            }
        }
    }

    #[test]
    fn rounds_limited_by_the_pieces_on_offer_do_not_end_the_startup() {
        let t0 = Instant::now();
        let mut flow = PeerFlow::new(PIECE, t0);
        let mut now = t0;
        // Ten rounds of 100 ms at the same rate, each app-limited.
        for _ in 0..10 {
            flow.app_limited();
            now += Duration::from_millis(100);
            flow.on_arrival(now - Duration::from_millis(100), PIECE, now);
        }
        assert!(!flow.is_steady(), "still probing for the path's rate");
        // Three flat rounds that were not limited end it.
        for _ in 0..3 {
            now += Duration::from_millis(100);
            flow.on_arrival(now - Duration::from_millis(100), PIECE, now);
        }
        assert!(flow.is_steady());
    }

    #[test]
    fn a_near_path_keeps_few_requests_outstanding() {
        // Loopback-like: 0.1 ms, 1 GB/s. Deep queues there only add latency.
        let (got, _, mut flow) = simulate(Duration::from_micros(100), 1e9, 5.0, 2.0);
        assert!(got >= 0.95e9, "{got}");
        let w = flow.window(0, Instant::now() + Duration::from_secs(5));
        assert!(w <= 8, "window {w}");
    }

    #[test]
    fn the_round_trip_is_probed_again_after_the_window() {
        let t0 = Instant::now();
        let mut flow = PeerFlow::new(PIECE, t0);
        let mut now = t0;
        // 100 MB/s; arrivals at 50 ms latency, then (queueing) 80 ms.
        let mut steady_window = 0;
        for i in 0..4000u32 {
            let lat = Duration::from_millis(if i < 200 { 50 } else { 80 });
            now += Duration::from_micros(5243);
            flow.on_arrival(now - lat, PIECE, now);
            let w = flow.window(20 * PIECE, now);
            if flow.is_steady() && now.duration_since(t0) < RTT_WINDOW {
                steady_window = w;
            }
            if w < steady_window / 2 {
                break;
            }
        }
        // More than RTT_WINDOW after the last 50 ms sample, the window is
        // half of 100 MB/s × 50 ms (2.5 MB, 5 requests) and the one being
        // answered; steady, it was 5 MB (10 requests) and that one …
        assert!(now.duration_since(t0) > RTT_WINDOW);
        let probe = flow.window(20 * PIECE, now);
        assert_eq!((probe, steady_window), (6, 11));
        // … queued pieces do not change the estimate …
        now += Duration::from_millis(5);
        flow.on_arrival(now - Duration::from_millis(90), PIECE, now);
        assert_eq!(flow.rtt(), Some(Duration::from_millis(50)));
        // … once drained, a request sent then sets it, even higher, and the
        // window is back to twice rate × round trip.
        let drained = now;
        assert_eq!(flow.window(4 * PIECE, drained), probe);
        now += Duration::from_millis(60);
        flow.on_arrival(drained, PIECE, now);
        assert_eq!(flow.rtt(), Some(Duration::from_millis(60)));
        assert!(flow.window(4 * PIECE, now) > steady_window, "steady at the longer round trip");
    }

    #[test]
    fn windows_stay_within_bounds_whatever_the_samples() {
        let t0 = Instant::now();
        let mut flow = PeerFlow::new(PIECE, t0);
        let mut now = t0;
        let mut x = 12345u64;
        for _ in 0..10_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            now += Duration::from_micros(x % 50_000);
            let lat = Duration::from_micros((x >> 20) % 2_000_000);
            flow.on_arrival(now.checked_sub(lat).unwrap_or(t0), (x >> 40) % (2 * PIECE), now);
            let w = flow.window((x >> 8) % (64 * PIECE), now);
            assert!((MIN_REQUESTS..=MAX_REQUESTS).contains(&w) || w == INITIAL_REQUESTS, "{w}");
        }
    }
}
