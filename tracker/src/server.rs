//! The tracker's network driver: accepts client connections and answers
//! their requests, one at a time per connection, in order.
//!
//! Every connection opens with the encrypted link's handshake (Noise XX,
//! [`crate::links`]); frames ride inside it. A connection over the caps is
//! closed at once, before any handshake work.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ringshare_engine::control::{
    decode_msg, read_frame_gated, write_msg, FrameBudget, FrameIoError,
};
use ringshare_engine::proto::{Refusal, Request, Response, REQUEST, RESPONSE};
use ringshare_engine::secure::CONTROL_PROLOGUE;
use ringshare_engine::secure_io::SecureStream;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::links::Links;
use crate::service::{Reply, Tracker};
use crate::sync::{self, SyncMsg, SYNC};

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 8192;
/// Most connections served at once from one IP address.
pub const MAX_PER_IP: usize = 1024;
/// The longest an answer may take to be written (or `--client-idle` if
/// shorter): a client that stops reading gives its connection, and the
/// answer it holds, up. (Writes had no limit: a client that sent requests
/// and never read kept its connection for good.)
pub const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Writes `write` within `limit`, else the connection ends.
async fn within<T>(
    limit: std::time::Duration,
    write: impl std::future::Future<Output = Result<T, FrameIoError>>,
) -> Result<T, FrameIoError> {
    match tokio::time::timeout(limit, write).await {
        Ok(r) => r,
        Err(_) => Err(FrameIoError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client read nothing of its answer for too long",
        ))),
    }
}

/// Descriptors kept back from connections (the data directory's files,
/// the links to other trackers, the listener).
const RESERVED_FDS: u64 = 128;

/// The caps on connections, in total and per address, that `open_files`
/// descriptors allow: [`MAX_CONNECTIONS`] and [`MAX_PER_IP`], or less in
/// proportion (under the usual soft limit of 1024, 1024 connections from
/// one address took every descriptor: no other client could connect).
pub fn connection_caps(open_files: u64) -> (usize, usize) {
    let room = usize::try_from(open_files.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    let total = room.clamp(1, MAX_CONNECTIONS);
    let per_ip = (total * MAX_PER_IP / MAX_CONNECTIONS).max(1);
    (total, per_ip)
}

/// Memory for the requests being received on every connection together
/// (past each one's first 4 KiB): a request that finds it spent is refused
/// as busy. Sixteen requests of the largest size at once; a flood of
/// large frames cannot take more.
pub const FRAME_BUDGET: usize = 256 << 20;
/// The longest the encrypted link's handshake may take (or `--client-idle`
/// if shorter): a connection that stops halfway gives its slot back.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest request other than an upload's: a withdrawal of 1,024 names
/// of up to 1 KiB is the largest, near 1 MiB. A frame of tiny items
/// decodes into many times its size (a 16 MiB frame of empty names was
/// 400 MiB of strings), so only the requests that carry file metadata
/// (`UploadFile`, `UploadFiles`: piece hashes) may use a whole frame.
pub const MAX_SMALL_REQUEST: usize = 2 << 20;

/// The bytes of a request that [`Gate`] looks at: its variant (one byte)
/// and, for an upload, its session token.
const REQUEST_HEAD: usize = 17;

/// What the first bytes of each frame on a client's connection say of it
/// ([`read_frame_gated`]): a request longer than [`MAX_SMALL_REQUEST`] is
/// kept only if it is an upload (`UploadFile`, `UploadFiles`) from a live
/// session; any other is read past, undecoded and never held whole (30
/// links sending 16 MiB frames from no session held 442 MiB while each
/// was read whole to be refused).
struct Gate<'a> {
    tracker: &'a Tracker,
    /// The last frame read past was an upload (else too long for its kind).
    upload: bool,
}

impl Gate<'_> {
    fn keep(&mut self, kind: u32, len: usize, head: &[u8]) -> bool {
        if kind != REQUEST || len <= MAX_SMALL_REQUEST {
            return true;
        }
        self.upload = matches!(head.first(), Some(11 | 19));
        self.upload && head.get(1..REQUEST_HEAD).is_some_and(|t| self.tracker.is_session(t))
    }

    /// How a frame read past is answered: an upload with `NotLoggedIn`
    /// (the connection goes on); anything else is too long for its kind
    /// (`None`: refused as such, and the connection ends).
    fn refusal(&self) -> Option<Refusal> {
        self.upload.then_some(Refusal::NotLoggedIn)
    }
}

/// Why a request frame is refused before it is decoded: too long for its
/// kind (its variant, postcard's leading varint).
fn oversized(payload: &[u8]) -> Option<FrameIoError> {
    if payload.len() <= MAX_SMALL_REQUEST {
        return None;
    }
    // Variants 11 and 19 (UploadFile, UploadFiles), each one byte.
    match payload.first() {
        Some(11 | 19) => None,
        _ => Some(FrameIoError::TooLong { len: payload.len(), limit: MAX_SMALL_REQUEST }),
    }
}

/// A connection's place among those served: since when it has waited for
/// a request (a link still in its handshake waits too), whether any of its
/// requests was granted, and a way to end it for a newcomer when every
/// place is taken.
#[derive(Debug, Default)]
struct Slot {
    /// Milliseconds since the server started; `u64::MAX` while it works
    /// on a request (or serves another tracker's pull).
    waiting_since: AtomicU64,
    /// When it was admitted (milliseconds since the server started).
    admitted: u64,
    /// A request of it was answered with anything but a refusal (or it is
    /// another tracker's pull): set once, never cleared.
    proven: std::sync::atomic::AtomicBool,
    /// Whose it is, from its first granted request that names a user
    /// (directly, or through its session): a hash of the name, 0 while
    /// unknown. Set once.
    owner: AtomicU64,
    evict: tokio::sync::Notify,
    /// Told to end ([`Slots::admit`]): counted in [`Slots::evicting`] until
    /// it has.
    evicted: std::sync::atomic::AtomicBool,
}

impl Slot {
    fn wait(&self, clock: Instant) {
        self.waiting_since.store(millis(clock), Ordering::Relaxed);
    }

    fn work(&self) {
        self.waiting_since.store(u64::MAX, Ordering::Relaxed);
    }

    fn prove(&self) {
        self.proven.store(true, Ordering::Relaxed);
    }

    /// Its owner is `user`, unless one was set before.
    fn own(&self, user: &str) {
        use std::hash::BuildHasher;
        // Not 0 (unknown); the same hash for a name in every connection.
        static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
            std::sync::OnceLock::new();
        let h = KEYS.get_or_init(Default::default).hash_one(user).max(1);
        let _ = self.owner.compare_exchange(0, h, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// `f`, unless the slot is given to a newcomer first.
    async fn unless_evicted<F: std::future::Future>(&self, f: F) -> Option<F::Output> {
        tokio::select! {
            r = f => Some(r),
            () = self.evict.notified() => None,
        }
    }
}

fn millis(clock: Instant) -> u64 {
    u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
}

/// The connections served, by address.
#[derive(Debug, Default)]
struct Slots {
    per_ip: HashMap<IpAddr, usize>,
    live: HashMap<u64, Arc<Slot>>,
    next: u64,
    /// Connections told to give their slot up, not gone yet.
    evicting: usize,
    /// When a newcomer from each address (IPv6: /64) last took a slot
    /// that way: one a second per address ([`EVICT_AFTER_MS`]).
    took: HashMap<IpAddr, u64>,
    /// What being full did, for the log ([`ringshare_engine::share::FullLog`]).
    full: ringshare_engine::share::FullLog,
}

/// A connection waiting this long for a request may lose its slot to a
/// newcomer when every slot is taken.
const EVICT_AFTER_MS: u64 = 1000;
/// Most evictions under way at once (the connections served may exceed
/// the cap by this many while they end).
const EVICT_AHEAD: usize = 64;

impl Slots {
    /// A slot for a connection from `ip`, if the caps allow it: when every
    /// slot is taken, a connection is told to end and gives its slot up —
    /// the oldest of those admitted at least [`EVICT_AFTER_MS`] ago that
    /// no request of has been granted, else the one that has waited
    /// longest for a request (as long at least), else, of the user holding
    /// the most connections (two or more), the one of them that has waited
    /// longest. (Connections that
    /// finished their handshake and then said nothing held every slot
    /// until `--client-idle`: nine addresses shut every client out; and
    /// links sending a request with a made-up token every half second,
    /// never silent, held every slot for good under a low open files
    /// limit.)
    ///
    /// A newcomer from an address (IPv6: its /64) takes a slot so at most
    /// once a second: a flood that reconnected as fast as its links were
    /// ended took the slots coming free before honest newcomers did.
    fn admit(
        &mut self,
        ip: IpAddr,
        caps: (usize, usize),
        clock: Instant,
    ) -> Option<(u64, Arc<Slot>)> {
        self.admit_at(ip, caps, millis(clock))
    }

    /// [`admit`](Self::admit) at `now` (milliseconds since the server
    /// started).
    fn admit_at(&mut self, ip: IpAddr, caps: (usize, usize), now: u64) -> Option<(u64, Arc<Slot>)> {
        let (max_total, max_per_ip) = caps;
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= max_per_ip {
            return None;
        }
        if self.live.len() >= max_total + self.evicting {
            let gave_up = self.give_up_for(ip, now);
            self.full.note(gave_up);
            if !gave_up {
                return None;
            }
        }
        let id = self.next;
        self.next += 1;
        let slot = Arc::new(Slot { admitted: now, ..Slot::default() });
        slot.waiting_since.store(now, Ordering::Relaxed);
        self.live.insert(id, Arc::clone(&slot));
        *self.per_ip.entry(ip).or_insert(0) += 1;
        Some((id, slot))
    }

    /// With every slot taken, tells the connection that gives its slot up
    /// to a newcomer from `ip` (see [`admit`](Self::admit)); false if none
    /// may.
    fn give_up_for(&mut self, ip: IpAddr, now: u64) -> bool {
        if self.evicting >= EVICT_AHEAD {
            return false;
        }
        let key = crate::guard::addr_key(ip);
        if self.took.get(&key).is_some_and(|&t| now < t.saturating_add(EVICT_AFTER_MS)) {
            return false;
        }
        let unproven = self
            .live
            .values()
            .filter(|s| {
                !s.proven.load(Ordering::Relaxed)
                    && !s.evicted.load(Ordering::Relaxed)
                    && s.admitted.saturating_add(EVICT_AFTER_MS) <= now
            })
            .min_by_key(|s| s.admitted);
        let silent = || {
            self.live
                .values()
                .filter(|s| {
                    let t = s.waiting_since.load(Ordering::Relaxed);
                    t != u64::MAX && t.saturating_add(EVICT_AFTER_MS) <= now
                })
                .min_by_key(|s| s.waiting_since.load(Ordering::Relaxed))
        };
        // Else one of the user holding the most connections, if more
        // than one (links sending a real session's requests from a
        // dozen addresses held every slot): the one of them that has
        // waited longest for a request.
        let greedy = || {
            let mut held: HashMap<u64, usize> = HashMap::new();
            for s in self.live.values() {
                let o = s.owner.load(Ordering::Relaxed);
                if o != 0 && !s.evicted.load(Ordering::Relaxed) {
                    *held.entry(o).or_default() += 1;
                }
            }
            let (&owner, &n) = held.iter().max_by_key(|(_, &n)| n)?;
            if n < 2 {
                return None;
            }
            self.live
                .values()
                .filter(|s| {
                    s.owner.load(Ordering::Relaxed) == owner
                        && !s.evicted.load(Ordering::Relaxed)
                        && s.admitted.saturating_add(EVICT_AFTER_MS) <= now
                })
                .min_by_key(|s| s.waiting_since.load(Ordering::Relaxed))
        };
        let Some(victim) = unproven.or_else(silent).or_else(greedy) else { return false };
        // Not chosen twice.
        victim.work();
        victim.evicted.store(true, Ordering::Relaxed);
        victim.evict.notify_one();
        self.evicting += 1;
        if self.took.len() >= 4096 {
            self.took.retain(|_, t| now < t.saturating_add(EVICT_AFTER_MS));
        }
        self.took.insert(key, now);
        true
    }

    /// The connection `id` from `ip` ended (told to or not).
    fn release(&mut self, id: u64, ip: IpAddr) {
        let told = self.live.remove(&id).is_some_and(|s| s.evicted.load(Ordering::Relaxed));
        if told {
            self.evicting = self.evicting.saturating_sub(1);
        }
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

/// Accepts connections on `listener` forever, serving each on its own task.
pub async fn serve(
    listener: TcpListener,
    tracker: Arc<Tracker>,
    links: Arc<Links>,
) -> std::io::Result<()> {
    let slots: Arc<std::sync::Mutex<Slots>> = Arc::default();
    let clock = Instant::now();
    let budget = FrameBudget::new(FRAME_BUDGET);
    let limit = ringshare_engine::fsio::raise_open_files_limit();
    let caps = connection_caps(limit);
    let (max_total, max_per_ip) = caps;
    if max_total < MAX_CONNECTIONS {
        tracing::warn!(
            "the open files limit ({limit}) allows {max_total} connections at once ({max_per_ip} \
             per address), not {MAX_CONNECTIONS}: raise it (ulimit -n) for more"
        );
    }
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Running out of file descriptors and the like: log, back off, go on.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (admitted, full) = {
            let mut slots = slots.lock().unwrap_or_else(|p| p.into_inner());
            let admitted = slots.admit(peer.ip(), caps, clock);
            (admitted, slots.full.report(std::time::Instant::now()))
        };
        if let Some((gave_up, turned_away)) = full {
            tracing::warn!(
                "tracker full ({} connections): {gave_up} connection(s) gave their slot to \
                 newcomers and {turned_away} newcomer(s) were turned away since the last report",
                caps.0
            );
        }
        let Some((id, slot)) = admitted else {
            tracing::debug!(%peer, "refused a connection: too many connections");
            drop(stream);
            continue;
        };
        let tracker = Arc::clone(&tracker);
        let slots = Arc::clone(&slots);
        let links = Arc::clone(&links);
        let budget = budget.clone();
        tokio::spawn(async move {
            let served = connection(stream, peer, tracker, &links, &budget, (&slot, clock)).await;
            let evicted = match served {
                Ok(evicted) => evicted,
                Err(e) => {
                    tracing::debug!(%peer, "connection ended: {e}");
                    false
                }
            };
            if evicted {
                tracing::debug!(%peer, "gave its slot to a newcomer after waiting for a request");
            }
            slots.lock().unwrap_or_else(|p| p.into_inner()).release(id, peer.ip());
        });
    }
}

/// Serves one connection: a client's requests, or (when the first frame is
/// of type [`SYNC`]) another tracker's replication pull.
///
/// The first frame is read straight from the socket, so a sync pull gets the
/// stream with nothing read past its hello; a client's connection is then
/// buffered (one `recv` usually brings a whole request, header and payload).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tracker: Arc<Tracker>,
    links: &Links,
    budget: &FrameBudget,
    (slot, clock): (&Slot, Instant),
) -> Result<bool, FrameIoError> {
    stream.set_nodelay(true)?;
    tracing::debug!(%peer, "connected");
    let idle = tracker.config().client_idle;
    let write_limit = idle.min(WRITE_TIMEOUT);
    let handshake = SecureStream::accept(stream, links.keypair(), CONTROL_PROLOGUE);
    let handshake = tokio::time::timeout(idle.min(HANDSHAKE_TIMEOUT), handshake);
    let Some(shaken) = slot.unless_evicted(handshake).await else { return Ok(true) };
    let mut stream = match shaken {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "secure handshake failed: {e}");
            return Ok(false);
        }
        Err(_) => return Ok(false),
    };
    let mut gate = Gate { tracker: &tracker, upload: false };
    let keep = |k, len, head: &[u8]| gate.keep(k, len, head);
    let first =
        tokio::time::timeout(idle, read_frame_gated(&mut stream, budget, REQUEST_HEAD, keep));
    let Some(first) = slot.unless_evicted(first).await else { return Ok(true) };
    let Ok(first) = first else {
        return Ok(false);
    };
    slot.work();
    if let Ok(Some((SYNC, payload))) = &first {
        let hello = decode_msg::<SyncMsg>(payload)?;
        // A pull is served only to a listed tracker, from its address,
        // proving its key: anyone else could read the whole state and move
        // what this tracker thinks a peer holds.
        let verdict = match &hello {
            SyncMsg::Hello { from, .. } if tracker.is_listed_peer(*from, peer.ip()) => {
                let listed = tracker.config().peer_addrs.iter().find(|(n, _)| n == from);
                match (links.expected(*from), listed) {
                    // Not met yet: the tracker at its listed address says.
                    (None, Some((_, at))) => {
                        sync::check_unmet(links, *from, *at, stream.remote_key()).await
                    }
                    _ => links.check_inbound(*from, stream.remote_key()),
                }
            }
            _ => Err("not a listed tracker's address".to_owned()),
        };
        if let Some(why) = tracker.failure() {
            let refusal = Refusal::Internal(format!("tracker stopped: op log failed ({why})"));
            let _ =
                within(write_limit, write_msg(&mut stream, RESPONSE, &Response::Refused(refusal)))
                    .await;
            return Ok(false);
        }
        if let Err(why) = verdict {
            // A misconfigured tracker asks again every 300 ms: said once a
            // minute per address and reason, not three times a second.
            if first_in_a_while(peer.ip(), &why) {
                tracing::warn!(%peer, "refused a sync pull: {why} (said once a minute)");
            } else {
                tracing::debug!(%peer, "refused a sync pull: {why}");
            }
            let refusal = Refusal::BadRequest("sync is for the listed trackers only".into());
            let _ =
                within(write_limit, write_msg(&mut stream, RESPONSE, &Response::Refused(refusal)))
                    .await;
            return Ok(false);
        }
        // Not one to give its slot up: it is not told (it waits for no
        // request).
        slot.prove();
        return sync::serve_pull(stream, tracker, hello).await.map(|()| false);
    }
    let remote = stream.remote_key();
    let node_key = remote.0;
    let mut stream = BufReader::with_capacity(16 * 1024, stream);
    let mut frame = first;
    loop {
        // A large upload from no live session: read past undecoded (16
        // MiB of metadata grows about four times as it decodes; 30 such
        // frames from anyone took a tracker to 513 MiB), and refused.
        if let Err(FrameIoError::Unwanted(_)) = &frame {
            if let Some(refusal) = gate.refusal() {
                let refusal = Response::Refused(refusal);
                within(write_limit, write_msg(&mut stream, RESPONSE, &refusal)).await?;
                let keep = |k, len, head: &[u8]| gate.keep(k, len, head);
                match next_request(&mut stream, idle, budget, (slot, clock), keep).await {
                    Ok(next) => frame = next,
                    Err(evicted) => return Ok(evicted),
                }
                continue;
            }
        }
        let req = match frame {
            Ok(Some((REQUEST, payload))) => match oversized(&payload) {
                Some(why) => Err(why),
                None => decode_msg::<Request>(&payload),
            },
            Ok(Some((kind, _))) => Err(FrameIoError::Kind(kind)),
            Ok(None) => return Ok(false),
            // Read past, not an upload (one is answered above).
            Err(FrameIoError::Unwanted(len)) => {
                Err(FrameIoError::TooLong { len, limit: MAX_SMALL_REQUEST })
            }
            Err(e) => Err(e),
        };
        let req = match req {
            Ok(req) => req,
            Err(FrameIoError::Io(e)) => return Err(FrameIoError::Io(e)),
            Err(e) => {
                // Garbage from the client, or more request data than the
                // tracker takes in at once: one error frame, then disconnect.
                let refusal = match e {
                    FrameIoError::Busy => Refusal::Limit(e.to_string()),
                    _ => Refusal::BadRequest(e.to_string()),
                };
                let _ = within(
                    write_limit,
                    write_msg(&mut stream, RESPONSE, &Response::Refused(refusal)),
                )
                .await;
                return Err(e);
            }
        };
        if matches!(req, Request::StateImage) && !links.is_tracker_key(remote) {
            // The whole state holds password hashes, live session tokens
            // and the ticket key: for a tracker's own key only, whatever
            // the address (any process on this host is on loopback).
            let refusal = Refusal::BadRequest(
                "the state image is served only over a link that proves a tracker's key \
                 (ringshare-tracker TRACKER_INFO N --dump-state PATH, run with that tracker's \
                 --data-dir)"
                    .into(),
            );
            within(write_limit, write_msg(&mut stream, RESPONSE, &Response::Refused(refusal)))
                .await?;
            return Ok(false);
        }
        {
            let _answering = tracker.answering();
            // Whose the connection is: known from its first granted
            // request that names a user.
            let named = match &req {
                _ if slot.owner.load(Ordering::Relaxed) != 0 => None,
                Request::Login { user, .. } | Request::CreateUser { user, .. } => {
                    Some(user.clone())
                }
                other => other.token().and_then(|t| tracker.session_user(&t)),
            };
            match tracker.reply(req, peer.ip(), Some(node_key)).await {
                Reply::Msg(resp) => {
                    if !matches!(resp, Response::Refused(_)) {
                        slot.prove();
                        if let Some(user) = &named {
                            slot.own(user);
                        }
                    }
                    within(write_limit, write_msg(&mut stream, RESPONSE, &resp)).await?
                }
                Reply::Frame(frame) => {
                    slot.prove();
                    if let Some(user) = &named {
                        slot.own(user);
                    }
                    within(write_limit, async {
                        stream.write_all(&frame).await?;
                        stream.flush().await.map_err(FrameIoError::Io)
                    })
                    .await?
                }
            }
        }
        let keep = |k, len, head: &[u8]| gate.keep(k, len, head);
        match next_request(&mut stream, idle, budget, (slot, clock), keep).await {
            Ok(next) => frame = next,
            Err(evicted) => return Ok(evicted),
        }
    }
}

/// The next request's frame, waited for as a connection that may give its
/// slot up ([`Slots::admit`]); `Err(evicted)` when the connection is to
/// end: a client that sends nothing (or trickles a frame) for `idle` gives
/// it up (`false`), as one whose slot went to a newcomer (`true`).
async fn next_request<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    idle: std::time::Duration,
    budget: &FrameBudget,
    (slot, clock): (&Slot, Instant),
    keep: impl FnMut(u32, usize, &[u8]) -> bool,
) -> Result<Result<Option<(u32, ringshare_engine::control::BudgetedPayload)>, FrameIoError>, bool> {
    slot.wait(clock);
    let next = tokio::time::timeout(idle, read_frame_gated(stream, budget, REQUEST_HEAD, keep));
    let next = slot.unless_evicted(next).await.ok_or(true)?.map_err(|_| false)?;
    slot.work();
    Ok(next)
}

/// Whether a refused pull from `ip` for `why` was not logged in the last
/// minute (and is to be now).
fn first_in_a_while(ip: std::net::IpAddr, why: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    static LAST: Mutex<Option<HashMap<(std::net::IpAddr, String), Instant>>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let map = last.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    let fresh = |at: &Instant| now.duration_since(*at) < Duration::from_secs(60);
    let key = (ip, why.to_owned());
    if map.get(&key).is_some_and(fresh) {
        return false;
    }
    // Bounded: past 1024 remembered refusals the stale ones go, and a
    // flood of refusals from many addresses is logged at debug only.
    if map.len() >= 1024 {
        map.retain(|_, at| fresh(at));
        if map.len() >= 1024 {
            return false;
        }
    }
    map.insert(key, now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// When every slot is taken, a newcomer takes the slot of a link that
    /// has held its own a second without a granted request; one address
    /// does so at most once a second, so a flood reconnecting as fast as
    /// it is ended does not take every slot that comes free.
    #[test]
    fn an_address_takes_a_slot_from_others_at_most_once_a_second() {
        let mut slots = Slots::default();
        let caps = (4, 4);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) =
            ([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), [10, 0, 0, 3].into());
        for _ in 0..4 {
            assert!(slots.admit_at(a, caps, 0).is_some());
        }
        assert!(slots.admit_at(b, caps, 500).is_none(), "none held a second yet");
        assert!(slots.admit_at(b, caps, 1000).is_some());
        assert_eq!(slots.evicting, 1);
        assert!(slots.admit_at(b, caps, 1500).is_none(), "b took one within the second");
        assert!(slots.admit_at(c, caps, 1500).is_some(), "another address may");
        assert!(slots.admit_at(b, caps, 2000).is_some(), "b, a second later");
        assert_eq!(slots.evicting, 3);
        // A link told to end gives its slot back once it has.
        let (id, _) = slots
            .live
            .iter()
            .find(|(_, s)| s.evicted.load(Ordering::Relaxed))
            .map(|(&id, s)| (id, Arc::clone(s)))
            .unwrap();
        slots.release(id, a);
        assert_eq!(slots.evicting, 2);
        // What being full did is counted for the log: three slots given
        // up to newcomers, two newcomers turned away.
        let now = std::time::Instant::now();
        assert_eq!(slots.full.report(now), Some((3, 2)));
        assert_eq!(slots.full.report(now), None, "nothing since");
    }

    #[test]
    fn connections_fit_the_open_files_limit() {
        assert_eq!(connection_caps(u64::MAX), (MAX_CONNECTIONS, MAX_PER_IP));
        assert_eq!(connection_caps(20_000), (MAX_CONNECTIONS, MAX_PER_IP));
        // The usual soft limit: one address cannot take every descriptor.
        let (total, per_ip) = connection_caps(1024);
        assert_eq!(total, 1024 - RESERVED_FDS as usize);
        assert_eq!(per_ip, total / 8);
        assert_eq!(connection_caps(10), (1, 1));
    }

    #[test]
    fn a_refused_pull_is_logged_once_a_minute_per_address_and_reason() {
        let (a, b): (std::net::IpAddr, std::net::IpAddr) =
            ([10, 200, 0, 1].into(), [10, 200, 0, 2].into());
        assert!(first_in_a_while(a, "not listed"));
        assert!(!first_in_a_while(a, "not listed"), "again within the minute");
        assert!(first_in_a_while(a, "wrong key"), "another reason");
        assert!(first_in_a_while(b, "not listed"), "another address");
        assert!(!first_in_a_while(b, "not listed"));
    }
}
