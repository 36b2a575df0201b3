//! Hybrid logical clock stamps: a total order on ops from every tracker
//! that follows wall-clock time where clocks agree and causality where they
//! do not. Pure: the caller passes the wall-clock reading in.

use serde::{Deserialize, Serialize};

/// An op's place in the global order: (wall ms, counter, origin tracker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Milliseconds since the Unix epoch (or later, if a clock ran ahead).
    pub wall_ms: u64,
    /// Orders stamps within one millisecond.
    pub counter: u32,
    /// The tracker that made the op (its 1-based number): breaks the last ties.
    pub origin: u16,
}

/// A tracker's clock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hlc {
    origin: u16,
    last: (u64, u32),
}

impl Hlc {
    /// A clock for tracker `origin`.
    pub fn new(origin: u16) -> Self {
        Self { origin, last: (0, 0) }
    }

    /// A stamp after every stamp this clock has made or observed.
    pub fn now(&mut self, wall_ms: u64) -> Stamp {
        self.last =
            if wall_ms > self.last.0 { (wall_ms, 0) } else { (self.last.0, self.last.1 + 1) };
        Stamp { wall_ms: self.last.0, counter: self.last.1, origin: self.origin }
    }

    /// Takes another clock's readings into account (same origin kept).
    pub fn merge(&mut self, other: &Hlc) {
        self.last = self.last.max(other.last);
    }

    /// The wall-clock part of the newest stamp made or observed.
    pub fn last_wall_ms(&self) -> u64 {
        self.last.0
    }

    /// Takes a stamp from elsewhere into account.
    pub fn observe(&mut self, s: Stamp) {
        if (s.wall_ms, s.counter) > self.last {
            self.last = (s.wall_ms, s.counter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_even_when_the_wall_clock_steps_back() {
        let mut c = Hlc::new(1);
        let a = c.now(100);
        let b = c.now(100);
        let d = c.now(50);
        assert!(a < b && b < d);
        c.observe(Stamp { wall_ms: 500, counter: 7, origin: 2 });
        let e = c.now(200);
        assert!(e > Stamp { wall_ms: 500, counter: 7, origin: 2 });
        assert_eq!(e.origin, 1);
    }
}
