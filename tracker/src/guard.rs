//! Budgets for the work anyone can make a tracker do without an account.
//!
//! `login` and `create_user` each cost one argon2id computation (19 MiB and
//! tens of milliseconds). Two things keep a flood of them from taking the
//! tracker's memory or CPU:
//!
//! - [`Limits`]: a sans-IO table of attempt limits (`now` is passed in).
//!   Every login attempt takes a token from its source address's bucket
//!   before any hashing and a successful one gives it back, so an address
//!   can fail `login_burst` times at once and then once per
//!   `login_refill`. A user name that keeps failing backs off
//!   exponentially (`user_free_failures` free, then 1 s, 2 s, 4 s … up to
//!   `user_max_backoff`), except from an address that has logged in as
//!   that user before: guessing is slowed everywhere, the owner is not
//!   locked out from a known address, and from a fresh one waits at most
//!   `user_max_backoff`. Account creation takes a token from a
//!   per-address bucket of `signups_per_minute`. IPv6 addresses count per
//!   /64, which one host usually holds whole. The tables are bounded:
//!   idle entries are dropped when one fills, and a full table of busy
//!   entries refuses newcomers ("tracker busy") rather than grow.
//! - [`HashPool`]: a fixed set of threads with a bounded queue in front.
//!   A job that finds the queue full is refused at once, so the memory
//!   for hashing is at most `workers` × 19 MiB however many requests
//!   arrive. The threads are long-lived, so the allocator's per-thread
//!   arenas stay as many as the threads.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most entries in each table (addresses, user names).
pub const MAX_TRACKED: usize = 65_536;
/// Addresses remembered per user as having logged in before.
pub const KNOWN_ADDRS_PER_USER: usize = 16;

/// The attempt limits, all per source address except the per-user backoff.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Failed logins an address may make back to back.
    pub login_burst: u32,
    /// After the burst, one more failed login per this long.
    pub login_refill: Duration,
    /// Failed logins for one user before it backs off.
    pub user_free_failures: u32,
    /// The longest a user's backoff grows.
    pub user_max_backoff: Duration,
    /// Accounts an address may create per minute (also the burst).
    pub signups_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            login_burst: 10,
            login_refill: Duration::from_secs(6),
            user_free_failures: 5,
            user_max_backoff: Duration::from_secs(60),
            signups_per_minute: 10,
        }
    }
}

/// Why an attempt was not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The address used up its failed logins.
    #[error("too many failed logins from {addr}; retry in {} s", secs(*.retry_in))]
    Address {
        /// The address (or IPv6 /64) as counted.
        addr: String,
        /// When a new attempt will be let through.
        retry_in: Duration,
    },
    /// The user name is backing off.
    #[error("too many failed logins for {user}; retry in {} s", secs(*.retry_in))]
    User {
        /// The user name.
        user: String,
        /// When a new attempt will be let through.
        retry_in: Duration,
    },
    /// The address created its accounts for now.
    #[error("too many new accounts from {addr}; retry in {} s", secs(*.retry_in))]
    Signups {
        /// The address (or IPv6 /64) as counted.
        addr: String,
        /// When a new attempt will be let through.
        retry_in: Duration,
    },
    /// A table is full of busy entries.
    #[error("tracker busy, try again")]
    Busy,
}

fn secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

/// The key an address is counted under: itself, or its /64 for IPv6.
pub(crate) fn addr_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn addr_label(key: IpAddr) -> String {
    match key {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

/// A token bucket: `capacity` tokens, one back per `period`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(capacity: u32, now: Instant) -> Self {
        Self { tokens: f64::from(capacity), at: now }
    }

    fn refill(&mut self, capacity: u32, period: Duration, now: Instant) {
        let gained = now.saturating_duration_since(self.at).as_secs_f64() / period.as_secs_f64();
        self.tokens = (self.tokens + gained).min(f64::from(capacity));
        self.at = now;
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, capacity: u32, period: Duration, now: Instant) -> Result<(), Duration> {
        self.refill(capacity, period, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(period.mul_f64(1.0 - self.tokens))
        }
    }

    fn give_back(&mut self, capacity: u32) {
        self.tokens = (self.tokens + 1.0).min(f64::from(capacity));
    }

    fn is_full(&self, capacity: u32, period: Duration, now: Instant) -> bool {
        let mut b = *self;
        b.refill(capacity, period, now);
        b.tokens >= f64::from(capacity)
    }
}

#[derive(Debug)]
struct AddrEntry {
    logins: Bucket,
    signups: Bucket,
    /// Logins from here still being checked.
    in_flight: u32,
}

#[derive(Debug, Default)]
struct UserEntry {
    /// Failed logins since the last success.
    failures: u32,
    /// Attempts being checked now from addresses it does not know.
    in_flight: u32,
    /// No attempt from an unknown address before this.
    not_before: Option<Instant>,
    /// Addresses that logged in as this user (most recent last).
    known: Vec<IpAddr>,
}

/// A login attempt let through: hand it back to [`Limits::login_done`].
#[derive(Debug)]
#[must_use = "a login permit must be settled with login_done"]
pub struct LoginPermit {
    addr: IpAddr,
    user: String,
    known_addr: bool,
}

/// The attempt-limit tables (see the module docs).
#[derive(Debug)]
pub struct Limits {
    config: LimitsConfig,
    addrs: HashMap<IpAddr, AddrEntry>,
    users: HashMap<String, UserEntry>,
    cap: usize,
}

impl Limits {
    /// Empty tables.
    pub fn new(config: LimitsConfig) -> Self {
        Self::with_capacity(config, MAX_TRACKED)
    }

    fn with_capacity(config: LimitsConfig, cap: usize) -> Self {
        Self { config, addrs: HashMap::new(), users: HashMap::new(), cap }
    }

    /// The limits in force.
    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Entries held (addresses, users), for tests and metrics.
    pub fn tracked(&self) -> (usize, usize) {
        (self.addrs.len(), self.users.len())
    }

    fn addr_entry(&mut self, key: IpAddr, now: Instant) -> Result<&mut AddrEntry, Refused> {
        if !self.addrs.contains_key(&key) && self.addrs.len() >= self.cap {
            let c = &self.config;
            let signup_period = signup_period(c.signups_per_minute);
            self.addrs.retain(|_, e| {
                e.in_flight > 0
                    || !e.logins.is_full(c.login_burst, c.login_refill, now)
                    || !e.signups.is_full(c.signups_per_minute, signup_period, now)
            });
            if self.addrs.len() >= self.cap {
                return Err(Refused::Busy);
            }
        }
        let c = &self.config;
        Ok(self.addrs.entry(key).or_insert_with(|| AddrEntry {
            logins: Bucket::full(c.login_burst, now),
            signups: Bucket::full(c.signups_per_minute, now),
            in_flight: 0,
        }))
    }

    /// Asks to check a password for `user` (an existing user) from `ip`.
    pub fn login_start(
        &mut self,
        ip: IpAddr,
        user: &str,
        now: Instant,
    ) -> Result<LoginPermit, Refused> {
        let key = addr_key(ip);
        let (burst, refill) = (self.config.login_burst, self.config.login_refill);
        // The user first: a refusal there must not cost the address a token.
        if !self.users.contains_key(user) && self.users.len() >= self.cap {
            self.users.retain(|_, u| {
                u.in_flight > 0 || u.failures > 0 || u.not_before.is_some_and(|t| t > now)
            });
            if self.users.len() >= self.cap {
                return Err(Refused::Busy);
            }
        }
        let free = self.config.user_free_failures;
        let u = self.users.entry(user.to_owned()).or_default();
        let known_addr = u.known.contains(&key);
        if !known_addr {
            let backing_off = u.failures + u.in_flight >= free;
            let waiting = u.not_before.filter(|t| *t > now);
            if backing_off && (u.in_flight > 0 || waiting.is_some()) {
                let retry_in = waiting.map_or(Duration::from_secs(1), |t| t - now);
                return Err(Refused::User { user: user.to_owned(), retry_in });
            }
        }
        let a = self.addr_entry(key, now)?;
        if let Err(retry_in) = a.logins.take(burst, refill, now) {
            return Err(Refused::Address { addr: addr_label(key), retry_in });
        }
        a.in_flight += 1;
        if !known_addr {
            if let Some(u) = self.users.get_mut(user) {
                u.in_flight += 1;
            }
        }
        Ok(LoginPermit { addr: key, user: user.to_owned(), known_addr })
    }

    /// Settles a login let through by [`Limits::login_start`].
    pub fn login_done(&mut self, permit: LoginPermit, success: bool, now: Instant) {
        let LoginPermit { addr, user, known_addr } = permit;
        if let Some(a) = self.addrs.get_mut(&addr) {
            a.in_flight = a.in_flight.saturating_sub(1);
            if success {
                a.logins.give_back(self.config.login_burst);
            }
        }
        let free = self.config.user_free_failures;
        let max = self.config.user_max_backoff;
        if let Some(u) = self.users.get_mut(&user) {
            if !known_addr {
                u.in_flight = u.in_flight.saturating_sub(1);
            }
            if success {
                u.failures = 0;
                u.not_before = None;
                u.known.retain(|k| *k != addr);
                if u.known.len() >= KNOWN_ADDRS_PER_USER {
                    u.known.remove(0);
                }
                u.known.push(addr);
            } else {
                u.failures = u.failures.saturating_add(1);
                if u.failures >= free {
                    let doublings = (u.failures - free).min(20);
                    let wait = Duration::from_secs(1u64 << doublings).min(max);
                    u.not_before = Some(now + wait);
                }
            }
        }
    }

    /// Settles a login that was let through but never checked (the
    /// hashing pool was full, or the request went away): it costs nothing.
    pub fn login_abandoned(&mut self, permit: LoginPermit) {
        let LoginPermit { addr, user, known_addr } = permit;
        if let Some(a) = self.addrs.get_mut(&addr) {
            a.in_flight = a.in_flight.saturating_sub(1);
            a.logins.give_back(self.config.login_burst);
        }
        if !known_addr {
            if let Some(u) = self.users.get_mut(&user) {
                u.in_flight = u.in_flight.saturating_sub(1);
            }
        }
    }

    /// A login for a user that does not exist: no hashing happens, but it
    /// is a failed attempt for the address all the same.
    pub fn login_unknown_user(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        let key = addr_key(ip);
        let (burst, refill) = (self.config.login_burst, self.config.login_refill);
        let a = self.addr_entry(key, now)?;
        a.logins
            .take(burst, refill, now)
            .map_err(|retry_in| Refused::Address { addr: addr_label(key), retry_in })
    }

    /// Asks to create an account from `ip`.
    pub fn signup(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        let key = addr_key(ip);
        let per_min = self.config.signups_per_minute;
        let a = self.addr_entry(key, now)?;
        a.signups
            .take(per_min, signup_period(per_min), now)
            .map_err(|retry_in| Refused::Signups { addr: addr_label(key), retry_in })
    }
}

fn signup_period(per_minute: u32) -> Duration {
    Duration::from_secs(60) / per_minute.max(1)
}

/// The hashing pool is full: refuse the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("tracker busy, try again")]
pub struct Busy;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads for password hashing behind a bounded queue.
#[derive(Debug)]
pub struct HashPool {
    tx: crossbeam_channel::Sender<Job>,
    workers: usize,
}

impl HashPool {
    /// `workers` threads (at least one) and room for `queue` waiting jobs.
    pub fn new(workers: usize, queue: usize) -> std::io::Result<Self> {
        let workers = workers.max(1);
        let (tx, rx) = crossbeam_channel::bounded::<Job>(queue);
        for i in 0..workers {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || {
                lower_priority();
                while let Ok(job) = rx.recv() {
                    job();
                }
            })?;
        }
        Ok(Self { tx, workers })
    }

    /// How many threads hash.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Runs `f` on the pool and waits for it, or refuses at once when the
    /// queue is full.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(f());
        });
        self.tx.try_send(job).map_err(|_| Busy)?;
        // The sender is dropped only when the job ran (a panic in it drops
        // it too): either way there is nothing more to wait for.
        result.await.map_err(|_| Busy)
    }
}

/// Hashing threads yield to the threads that answer requests, so a queue
/// of logins slows other clients as little as it can (nice +10; Linux
/// applies it to the calling thread only).
fn lower_priority() {
    // SAFETY: setpriority reads no memory of ours; `gettid` names this thread.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    fn config() -> LimitsConfig {
        LimitsConfig {
            login_burst: 3,
            login_refill: Duration::from_secs(10),
            user_free_failures: 2,
            user_max_backoff: Duration::from_secs(8),
            signups_per_minute: 2,
        }
    }

    fn fail(l: &mut Limits, from: IpAddr, user: &str, now: Instant) -> Result<(), Refused> {
        let p = l.login_start(from, user, now)?;
        l.login_done(p, false, now);
        Ok(())
    }

    #[test]
    fn an_address_gets_its_burst_then_one_per_refill() {
        let t0 = Instant::now();
        let mut l = Limits::new(config());
        for (i, user) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(fail(&mut l, ip(1), user, t0), Ok(()), "attempt {i}");
        }
        let e = fail(&mut l, ip(1), "d", t0).unwrap_err();
        assert_eq!(
            e,
            Refused::Address { addr: "10.0.0.1".into(), retry_in: Duration::from_secs(10) }
        );
        assert_eq!(e.to_string(), "too many failed logins from 10.0.0.1; retry in 10 s");
        // Another address is not affected.
        assert_eq!(fail(&mut l, ip(2), "d", t0), Ok(()));
        // One token back after the refill period, and only one.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(fail(&mut l, ip(1), "e", t1), Ok(()));
        assert!(fail(&mut l, ip(1), "f", t1).is_err());
        // The limits reset: a full bucket after burst × refill.
        let t2 = t1 + Duration::from_secs(30);
        for user in ["g", "h", "i"] {
            assert_eq!(fail(&mut l, ip(1), user, t2), Ok(()));
        }
    }

    #[test]
    fn concurrent_attempts_count_before_they_finish() {
        let t0 = Instant::now();
        let mut l = Limits::new(config());
        let permits: Vec<_> =
            ["a", "b", "c"].iter().map(|u| l.login_start(ip(1), u, t0).unwrap()).collect();
        assert!(matches!(l.login_start(ip(1), "d", t0), Err(Refused::Address { .. })));
        for p in permits {
            l.login_done(p, true, t0);
        }
        // Successes give their tokens back.
        assert!(l.login_start(ip(1), "d", t0).is_ok());
    }

    #[test]
    fn a_guessed_user_backs_off_exponentially_up_to_the_cap() {
        let t0 = Instant::now();
        let mut l = Limits::new(LimitsConfig { login_burst: 100, ..config() });
        let mut now = t0;
        assert_eq!(fail(&mut l, ip(1), "alice", now), Ok(()));
        assert_eq!(fail(&mut l, ip(2), "alice", now), Ok(()));
        // Two free failures, then 1 s, 2 s, 4 s, 8 s, 8 s …
        for wait in [1, 2, 4, 8, 8, 8] {
            let e = fail(&mut l, ip(3), "alice", now).unwrap_err();
            assert_eq!(
                e,
                Refused::User { user: "alice".into(), retry_in: Duration::from_secs(wait) }
            );
            assert!(e.to_string().contains(&format!("retry in {wait} s")));
            now += Duration::from_secs(wait);
            assert_eq!(fail(&mut l, ip(4), "alice", now), Ok(()));
        }
        // Other users are not slowed.
        assert_eq!(fail(&mut l, ip(4), "bob", now), Ok(()));
    }

    #[test]
    fn a_known_address_gets_through_a_users_backoff() {
        let t0 = Instant::now();
        let mut l = Limits::new(LimitsConfig { login_burst: 100, ..config() });
        let p = l.login_start(ip(9), "alice", t0).unwrap();
        l.login_done(p, true, t0);
        for _ in 0..3 {
            let _ = fail(&mut l, ip(1), "alice", t0);
        }
        assert!(matches!(l.login_start(ip(2), "alice", t0), Err(Refused::User { .. })));
        // alice's own address: straight in; a success resets the backoff.
        let p = l.login_start(ip(9), "alice", t0).unwrap();
        l.login_done(p, true, t0);
        assert!(l.login_start(ip(2), "alice", t0).is_ok());
    }

    #[test]
    fn an_abandoned_login_costs_nothing() {
        let t0 = Instant::now();
        let mut l = Limits::new(config());
        for _ in 0..10 {
            let p = l.login_start(ip(1), "alice", t0).unwrap();
            l.login_abandoned(p);
        }
        // Neither the address nor the user was charged.
        for _ in 0..2 {
            assert_eq!(fail(&mut l, ip(1), "alice", t0), Ok(()));
        }
    }

    #[test]
    fn signups_per_address_per_minute() {
        let t0 = Instant::now();
        let mut l = Limits::new(config());
        assert_eq!(l.signup(ip(1), t0), Ok(()));
        assert_eq!(l.signup(ip(1), t0), Ok(()));
        let e = l.signup(ip(1), t0).unwrap_err();
        assert_eq!(
            e,
            Refused::Signups { addr: "10.0.0.1".into(), retry_in: Duration::from_secs(30) }
        );
        assert_eq!(l.signup(ip(2), t0), Ok(()));
        assert_eq!(l.signup(ip(1), t0 + Duration::from_secs(30)), Ok(()));
    }

    #[test]
    fn ipv6_counts_per_64() {
        let t0 = Instant::now();
        let mut l = Limits::new(LimitsConfig { signups_per_minute: 1, ..config() });
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(l.signup(a, t0), Ok(()));
        let e = l.signup(b, t0).unwrap_err();
        assert!(e.to_string().contains("2001:db8:1:2::/64"), "{e}");
        assert_eq!(l.signup(c, t0), Ok(()));
        // A v4-mapped address counts as its IPv4 address.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(l.signup(mapped, t0), Ok(()));
        assert!(l.signup(ip(1), t0).is_err());
    }

    #[test]
    fn tables_stay_bounded() {
        let t0 = Instant::now();
        let mut l = Limits::with_capacity(config(), 4);
        for n in 0..4 {
            assert_eq!(l.signup(ip(n), t0), Ok(()));
        }
        // Four busy entries: a fifth address waits.
        assert_eq!(l.signup(ip(200), t0), Err(Refused::Busy));
        // Once they are idle again they make room.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(l.signup(ip(200), later), Ok(()));
        assert!(l.tracked().0 <= 4);
    }

    proptest! {
        /// Whatever the mix of attempts, an address never has more
        /// failed logins let through than its burst plus what refilled.
        #[test]
        fn an_address_never_exceeds_its_budget(
            steps in proptest::collection::vec((0u8..4, 0u8..3, 0u64..5_000, any::<bool>()), 1..200),
        ) {
            let t0 = Instant::now();
            let c = config();
            let mut l = Limits::new(c.clone());
            let mut now = t0;
            let mut failures = [0u32; 4];
            for (addr, user, dt_ms, ok) in steps {
                now += Duration::from_millis(dt_ms);
                let user = ["a", "b", "c"][user as usize];
                if let Ok(p) = l.login_start(ip(addr), user, now) {
                    l.login_done(p, ok, now);
                    if !ok {
                        failures[addr as usize] += 1;
                    }
                }
                let elapsed = now.duration_since(t0).as_secs_f64();
                let allowed = f64::from(c.login_burst) + elapsed / c.login_refill.as_secs_f64();
                prop_assert!(f64::from(failures[addr as usize]) <= allowed + 1e-9);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_refuses_when_its_queue_is_full() {
        let pool = HashPool::new(1, 1).unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let pool = std::sync::Arc::new(pool);
        let p = std::sync::Arc::clone(&pool);
        let running = tokio::spawn(async move {
            p.run(move || {
                started_tx.send(()).unwrap();
                wait.recv().unwrap();
                1
            })
            .await
        });
        tokio::task::spawn_blocking(move || started.recv().unwrap()).await.unwrap();
        // One job runs; one waits in the queue; the next is refused.
        let p = std::sync::Arc::clone(&pool);
        let queued = tokio::spawn(async move { p.run(|| 2).await });
        // Let the queued job reach the queue.
        while pool.tx.is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.run(|| 3).await, Err(Busy));
        release.send(()).unwrap();
        assert_eq!(running.await.unwrap(), Ok(1));
        assert_eq!(queued.await.unwrap(), Ok(2));
        assert_eq!(pool.run(|| 4).await, Ok(4));
    }
}
