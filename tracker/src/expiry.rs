//! Which sessions to end for silence ([`crate::state::Op::Expire`]): no I/O,
//! `now` passed in.
//!
//! A session lives in the replicated state until its node logs out, so a
//! node killed without logging out (a `get` stopped with `kill -9`, a host
//! that lost power) left its session, and the shares registered from its
//! address, for good: state and snapshots that only grew, and shares that
//! counted against its user's budget with no node left to stop them. A
//! tracker now ends a session that no tracker has heard from for the
//! session expiry (`--session-expiry`, a day by default).
//!
//! Whether a session was heard from is soft state (heartbeats here, the
//! other trackers' `Alive` gossip), so a tracker that could not have heard
//! decides nothing: it ends sessions only once it has been up for the
//! expiry and has received every other tracker's gossip without a gap
//! longer than [`GOSSIP_GAP`] for the expiry. A tracker cut off from
//! another (a partition, a peer down) ends none until it has heard that
//! peer without a break for the whole expiry again, so a node that kept
//! heartbeating to the other side is never taken for gone.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ringshare_engine::proto::Token;

/// Gossip arrives every second from each peer; a longer silence than this
/// breaks the unbroken contact [`Expiry`] asks for.
pub const GOSSIP_GAP: Duration = Duration::from_secs(10);

/// At most this many sessions are ended at one look: each ends with an op
/// that looks at every file of its user's groups.
pub const MOST_AT_ONCE: usize = 64;

/// What a tracker knows about silence (see the module's text).
#[derive(Debug)]
pub struct Expiry {
    after: Duration,
    started: Instant,
    /// Since when each session not heard from within the TTL has been
    /// known silent here.
    quiet: HashMap<Token, Instant>,
    /// Each other tracker: since when its gossip has come without a gap
    /// longer than [`GOSSIP_GAP`], and when it last came.
    peers: BTreeMap<u16, Option<(Instant, Instant)>>,
}

impl Expiry {
    /// A tracker up since `now`, with `peers` the other trackers' numbers,
    /// ending sessions silent for `after`.
    pub fn new(after: Duration, peers: impl IntoIterator<Item = u16>, now: Instant) -> Self {
        Self {
            after,
            started: now,
            quiet: HashMap::new(),
            peers: peers.into_iter().map(|p| (p, None)).collect(),
        }
    }

    /// Tracker `peer`'s `Alive` gossip arrived.
    pub fn gossip(&mut self, peer: u16, now: Instant) {
        let Some(contact) = self.peers.get_mut(&peer) else { return };
        *contact = match *contact {
            Some((since, last)) if now.saturating_duration_since(last) <= GOSSIP_GAP => {
                Some((since, now))
            }
            _ => Some((now, now)),
        };
    }

    /// Whether this tracker could have heard every live session for the
    /// whole expiry: up that long, and every other tracker heard without a
    /// break that long.
    pub fn could_hear_all(&self, now: Instant) -> bool {
        let long_enough = |since: Instant| now.saturating_duration_since(since) >= self.after;
        long_enough(self.started)
            && self.peers.values().all(|c| {
                c.is_some_and(|(since, last)| {
                    long_enough(since) && now.saturating_duration_since(last) <= GOSSIP_GAP
                })
            })
    }

    /// The sessions to end now, at most [`MOST_AT_ONCE`]: of `sessions`
    /// (every session of the state), those not heard from within `ttl`
    /// (`live`: when each was last heard, here or by gossip) and known
    /// silent here for the expiry. None while
    /// [`could_hear_all`](Self::could_hear_all) is false, though silence
    /// is still noted.
    pub fn due(
        &mut self,
        sessions: impl IntoIterator<Item = Token>,
        live: &HashMap<Token, Instant>,
        ttl: Duration,
        now: Instant,
    ) -> Vec<Token> {
        let mut quiet = HashMap::with_capacity(self.quiet.len());
        for t in sessions {
            let heard = live.get(&t).copied();
            if heard.is_some_and(|at| now.saturating_duration_since(at) < ttl) {
                continue;
            }
            // Silent: since it was last heard, if that is known, else since
            // now (found silent at a look; a session restored at start-up
            // or installed with an image was never heard here).
            let since = self.quiet.get(&t).copied().or(heard).unwrap_or(now);
            quiet.insert(t, since);
        }
        // Sessions heard again, or gone from the state, are forgotten.
        self.quiet = quiet;
        if !self.could_hear_all(now) {
            return Vec::new();
        }
        let mut due: Vec<(Instant, Token)> = self
            .quiet
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= self.after)
            .map(|(t, since)| (*since, *t))
            .collect();
        // The longest silent first.
        due.sort_unstable();
        due.truncate(MOST_AT_ONCE);
        due.into_iter().map(|(_, t)| t).collect()
    }

    /// `token` was ended (or found gone): no longer watched.
    pub fn ended(&mut self, token: &Token) {
        self.quiet.remove(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(30);
    const DAY: Duration = Duration::from_secs(86_400);

    fn t(n: u8) -> Token {
        Token([n; 16])
    }

    #[test]
    fn a_session_silent_for_the_expiry_is_ended_and_a_heard_one_is_not() {
        let t0 = Instant::now();
        let mut e = Expiry::new(DAY, [], t0);
        let mut live = HashMap::from([(t(1), t0), (t(2), t0)]);
        assert!(e.due([t(1), t(2)], &live, TTL, t0).is_empty());
        // Session 2 keeps heartbeating; session 1 went silent at t0.
        for h in 1..48 {
            let now = t0 + Duration::from_secs(1_800 * h);
            live.insert(t(2), now);
            let due = e.due([t(1), t(2)], &live, TTL, now);
            assert!(due.is_empty(), "a day has not passed at {h} half-hours");
        }
        let now = t0 + DAY + Duration::from_secs(1);
        live.insert(t(2), now);
        assert_eq!(e.due([t(1), t(2)], &live, TTL, now), [t(1)]);
        e.ended(&t(1));
        assert!(e.due([t(2)], &live, TTL, now).is_empty());
    }

    #[test]
    fn a_session_heard_again_starts_its_silence_anew() {
        let t0 = Instant::now();
        let mut e = Expiry::new(DAY, [], t0);
        let mut live = HashMap::new();
        // Found silent at the first look (restored at start, never heard).
        assert!(e.due([t(1)], &live, TTL, t0).is_empty());
        let back = t0 + Duration::from_secs(80_000);
        live.insert(t(1), back);
        assert!(e.due([t(1)], &live, TTL, back).is_empty());
        // A day after t0, but not after it was heard last.
        let later = t0 + DAY + Duration::from_secs(60);
        assert!(e.due([t(1)], &live, TTL, later).is_empty());
        assert_eq!(e.due([t(1)], &live, TTL, back + DAY), [t(1)]);
    }

    #[test]
    fn nothing_is_ended_before_the_tracker_has_been_up_for_the_expiry() {
        // (Ahead of the clock: a machine up for less than two days has no
        // instant two days before now.)
        let t0 = Instant::now() + 3 * DAY;
        let mut e = Expiry::new(DAY, [], t0);
        let live = HashMap::from([(t(1), t0 - 2 * DAY)]);
        // Silent for two days by what it knows, but it was not up to hear.
        assert!(e.due([t(1)], &live, TTL, t0 + Duration::from_secs(5)).is_empty());
        assert!(!e.could_hear_all(t0 + DAY - Duration::from_secs(1)));
        assert_eq!(e.due([t(1)], &live, TTL, t0 + DAY), [t(1)]);
    }

    #[test]
    fn a_break_in_a_peers_gossip_holds_every_expiry_back_for_the_expiry_again() {
        let t0 = Instant::now();
        let mut e = Expiry::new(DAY, [2, 3], t0);
        let live = HashMap::new();
        let step = Duration::from_secs(1);
        let mut now = t0;
        // Tracker 2 heard every second for a day and more; tracker 3 never.
        while now < t0 + DAY + step {
            e.gossip(2, now);
            now += step;
        }
        assert!(e.due([t(1)], &live, TTL, now).is_empty(), "tracker 3 never heard");
        // Tracker 3 from now on, every second, for a day; tracker 2 too,
        // but for one silence of 11 s in the middle.
        let from = now;
        let gap_at = from + DAY / 2;
        while now < from + DAY + 2 * GOSSIP_GAP {
            e.gossip(3, now);
            if now < gap_at || now > gap_at + GOSSIP_GAP + step {
                e.gossip(2, now);
            }
            now += step;
        }
        assert!(!e.could_hear_all(now), "tracker 2's break was less than a day ago");
        assert!(e.due([t(1)], &live, TTL, now).is_empty());
        while now < gap_at + GOSSIP_GAP + step + DAY + step {
            e.gossip(2, now);
            e.gossip(3, now);
            now += step;
        }
        assert!(e.could_hear_all(now));
        assert_eq!(e.due([t(1)], &live, TTL, now), [t(1)]);
        // A peer that goes quiet now stops it at once.
        assert!(!e.could_hear_all(now + GOSSIP_GAP + step));
        // Gossip of a tracker that is not listed changes nothing.
        e.gossip(9, now);
        assert!(e.could_hear_all(now));
    }

    #[test]
    fn at_most_a_batch_at_a_look_the_longest_silent_first() {
        let t0 = Instant::now();
        let mut e = Expiry::new(DAY, [], t0);
        let n = MOST_AT_ONCE as u8 + 10;
        let live: HashMap<Token, Instant> =
            (0..n).map(|i| (t(i), t0 + Duration::from_secs(u64::from(n - i)))).collect();
        let now = t0 + DAY + Duration::from_secs(3_600);
        let due = e.due((0..n).map(t), &live, TTL, now);
        assert_eq!(due.len(), MOST_AT_ONCE);
        // Heard last the earliest: the highest numbers.
        assert_eq!(due[0], t(n - 1));
        assert!(!due.contains(&t(0)));
    }
}
