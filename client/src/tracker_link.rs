//! The client's connection to the trackers, with failover.
//!
//! The link talks to one tracker at a time, starting with the first of the
//! list. When the connection fails, or the tracker answers that it lost its
//! data and is still catching up (it did nothing with the request), it
//! moves on through the list (wrapping around) and retries the request
//! once on each tracker before giving up with [`LinkError::Unreachable`].
//! A tracker that let a request or a connection time out (hung, or cut off
//! without a reset) is tried last by every link of the node for
//! [`SILENT_FOR`]: one link's timeout is not paid again by each of the
//! others (a bulk fetch holds dozens). A tracker that closes a new
//! connection at its door (every connection it admits is taken, or too
//! many come from this address) is asked again after a short wait, up to
//! [`DOOR_RETRIES`] times, before the call fails.
//!
//! Every connection is encrypted and authenticated (Noise XX,
//! `ringshare_engine::secure`): the tracker must prove the key its line in
//! the tracker list gives, or else the key this client pinned for its
//! address the first time (`known_trackers` in the state directory); the
//! client proves its own node key.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringshare_engine::control::{read_msg, write_msg, FrameIoError};
use ringshare_engine::proto::{Refusal, Request, Response, REQUEST, RESPONSE};
use ringshare_engine::secure::{Keypair, SecureError, CONTROL_PROLOGUE};
use ringshare_engine::secure_io::{load_or_create_key, HandshakeError, Pins, SecureStream};
use ringshare_engine::tracker_info::TrackerList;
use tokio::net::TcpStream;

/// The node's key file in the state directory.
pub const KEY_FILE: &str = "node.key";
/// The tracker keys pinned on first use, in the state directory.
pub const PINS_FILE: &str = "known_trackers";

/// The trackers, with the keys to check them by and the key this node
/// proves to them.
#[derive(Debug, Clone)]
pub struct Trackers {
    /// The tracker list.
    pub list: TrackerList,
    me: Arc<Keypair>,
    pins: Arc<Pins>,
    /// Until when each tracker is tried last (it let a request time out).
    silent: Arc<std::sync::Mutex<Vec<Option<Instant>>>>,
}

impl Trackers {
    /// The trackers in `list`, with this node's key and pins from
    /// `state_dir` (the key is created on first use).
    pub fn open(list: TrackerList, state_dir: &Path) -> anyhow::Result<Self> {
        let me = load_or_create_key(&state_dir.join(KEY_FILE))?;
        let pins = Pins::load(&state_dir.join(PINS_FILE)).map_err(anyhow::Error::msg)?;
        let silent = Arc::new(std::sync::Mutex::new(vec![None; list.addrs.len()]));
        Ok(Self { list, me: Arc::new(me), pins: Arc::new(pins), silent })
    }

    fn silent_until(&self) -> std::sync::MutexGuard<'_, Vec<Option<Instant>>> {
        self.silent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tracker `i` let a request or a connection time out.
    fn mark_silent(&self, i: usize) {
        if let Some(t) = self.silent_until().get_mut(i) {
            *t = Some(Instant::now() + SILENT_FOR);
        }
    }

    /// Tracker `i` answered.
    fn mark_answering(&self, i: usize) {
        if let Some(t) = self.silent_until().get_mut(i) {
            *t = None;
        }
    }

    /// Whether tracker `i` timed out within the last [`SILENT_FOR`].
    fn is_silent(&self, i: usize) -> bool {
        let now = Instant::now();
        self.silent_until().get(i).copied().flatten().is_some_and(|until| now < until)
    }

    /// The trackers in the order to try them from `first`, wrapping
    /// around: those that answered lately first, the silent ones last.
    fn order_from(&self, first: usize) -> Vec<usize> {
        let n = self.list.addrs.len();
        let (mut ok, mut silent): (Vec<usize>, Vec<usize>) =
            (0..n).map(|k| (first + k) % n).partition(|&i| !self.is_silent(i));
        ok.append(&mut silent);
        ok
    }

    /// This node's key pair.
    pub fn keypair(&self) -> &Keypair {
        &self.me
    }

    /// This node's key pair, shared (the piece server and downloads prove it).
    pub fn keypair_arc(&self) -> Arc<Keypair> {
        Arc::clone(&self.me)
    }

    /// Opens an encrypted link to tracker `i` (0-based) at `addr`. An error
    /// says whether the tracker closed the connection in its handshake
    /// (it admits no more connections just now).
    async fn connect(&self, i: usize) -> Result<SecureStream<TcpStream>, (String, bool)> {
        let addr = self.list.addrs[i];
        let listed = self.list.keys.get(i).copied().flatten();
        let shown = addr.to_string();
        let pinned = if listed.is_none() { self.pins.get(&shown) } else { None };
        let tcp = TcpStream::connect(addr).await.map_err(|e| (e.to_string(), false))?;
        let _ = tcp.set_nodelay(true);
        let stream = SecureStream::connect(tcp, &self.me, CONTROL_PROLOGUE, listed.or(pinned))
            .await
            .map_err(|e| {
                use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, UnexpectedEof};
                let at_door = matches!(&e, HandshakeError::Io(e)
                    if matches!(e.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted));
                (handshake_failure(e, addr, listed.is_some(), &self.pins), at_door)
            })?;
        if listed.is_none() {
            self.pins
                .check_or_pin("tracker", &shown, stream.remote_key())
                .map_err(|e| (e.to_string(), false))?;
        }
        Ok(stream)
    }
}

/// What a failed handshake with the tracker at `addr` says.
fn handshake_failure(e: HandshakeError, addr: SocketAddr, listed: bool, pins: &Pins) -> String {
    match e {
        HandshakeError::Secure(SecureError::WrongKey { expected, got }) => {
            if listed {
                format!(
                    "tracker {addr} proved key {got}, not the key {expected} the tracker \
                             list gives for it; refused (fix the key in the tracker list if the \
                             tracker's key was changed on purpose)"
                )
            } else {
                format!(
                    "tracker {addr} proved key {got}, but {} pins key {expected} for it; \
                             refused (if the tracker's key was changed on purpose, edit that \
                             file, or list the new key after the address in the tracker list)",
                    pins.file().display()
                )
            }
        }
        e => format!("secure handshake: {e}"),
    }
}

/// How long a connection attempt to one tracker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request may wait for its response. A tracker answers in
/// milliseconds; the longest legitimate waits are a login queued behind a
/// few dozen password hashes (a second or two) and a write held until a
/// restarted tracker has heard from its peers (5 s at most). 30 s made a
/// hung tracker (stopped, or cut off with no reset) freeze a shell command
/// for 33 s and a finished download's registration for as long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a tracker that timed out is tried last (see the module docs).
const SILENT_FOR: Duration = Duration::from_secs(30);
/// How many times more the trackers are tried when one closed the
/// connection at its door and none answered, after waiting
/// [`DOOR_WAIT`], then twice as long each time up to [`DOOR_WAIT_MOST`]
/// (5.75 s in all): a tracker whose connections are all taken gives a
/// newcomer the slot of one that has said nothing for a second, or whose
/// requests were all refused, or of the user holding the most, and to a
/// newcomer from one address once a second (six shells started at once
/// from one address got two slots in the 1.75 s of three tries).
pub const DOOR_RETRIES: u32 = 5;
/// See [`DOOR_RETRIES`].
const DOOR_WAIT: Duration = Duration::from_millis(250);
/// See [`DOOR_RETRIES`].
const DOOR_WAIT_MOST: Duration = Duration::from_secs(2);

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No tracker in the list could be reached.
    #[error("tracker unreachable: {0}")]
    Unreachable(String),
}

/// A connection to one of the trackers.
#[derive(Debug)]
pub struct TrackerLink {
    trackers: Trackers,
    current: usize,
    stream: Option<SecureStream<TcpStream>>,
    /// The last call's answer came after an earlier try of it was sent and
    /// lost its answer (the connection broke, or the tracker fell silent):
    /// that try may have been carried out.
    resent: bool,
}

impl TrackerLink {
    /// A link over the given trackers; nothing is connected yet.
    pub fn new(trackers: Trackers) -> Self {
        Self { trackers, current: 0, stream: None, resent: false }
    }

    /// Whether the last call's answer came from a second try, after a first
    /// one that was sent and got no answer: a refusal such as "already
    /// exists" may then be the first try's doing.
    pub fn resent(&self) -> bool {
        self.resent
    }

    /// Sends a request and waits for its response, failing over between
    /// trackers when a connection breaks.
    pub async fn call(&mut self, req: &Request) -> Result<Response, LinkError> {
        let n = self.trackers.list.addrs.len();
        let mut failures = Vec::new();
        // A try that was sent and lost its answer.
        let mut unanswered = false;
        // A kept connection to a tracker that another link found silent is
        // left for one that answers, if any does.
        if self.stream.is_some() && self.trackers.is_silent(self.current) {
            let first = self.trackers.order_from(self.current)[0];
            if first != self.current {
                self.stream = None;
                self.current = first;
            }
        }
        // One the tracker closed while it was idle (it stopped or
        // restarted) is dropped before it is used: a request sent on it
        // would fail as one whose answer was lost, though no tracker saw it.
        if let Some(stream) = self.stream.as_ref() {
            let mut byte = [0u8; 1];
            match stream.get_ref().try_read(&mut byte) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // Ended, broken, or something unasked (a tracker only
                // answers).
                _ => self.stream = None,
            }
        }
        // A kept connection may have gone stale (the tracker restarted): on
        // failure, the current tracker is tried again on a fresh connection.
        if let Some(stream) = self.stream.as_mut() {
            match ask(&self.trackers, self.current, stream, req).await {
                Asked::Answer(resp) => {
                    self.resent = false;
                    return Ok(resp);
                }
                Asked::Passed(why) => {
                    failures.push(why);
                    self.current = (self.current + 1) % n;
                }
                Asked::Lost(why) => {
                    unanswered = true;
                    failures.push(why);
                }
            }
            self.stream = None;
        }
        let before = failures.len();
        // Every round ended with a tracker closing the connection at its
        // door and no request sent.
        let mut turned_away = false;
        for round in 0..=DOOR_RETRIES {
            if round > 0 {
                tokio::time::sleep((DOOR_WAIT * (1 << (round - 1))).min(DOOR_WAIT_MOST)).await;
                failures.truncate(before);
            }
            // A tracker closed the connection at its door, and no request
            // went out this round: worth another round.
            let mut at_door = false;
            let mut sent = false;
            for i in self.trackers.order_from(self.current) {
                self.current = i;
                let addr = self.trackers.list.addrs[i];
                let connect = self.trackers.connect(i);
                let mut stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                    Ok(Ok(s)) => s,
                    Ok(Err((e, door))) => {
                        at_door |= door;
                        if door {
                            failures.push(format!(
                                "{addr}: the tracker closed the connection at once: it admits \
                                 no more connections just now"
                            ));
                        } else {
                            failures.push(format!("{addr}: {e}"));
                        }
                        continue;
                    }
                    Err(_) => {
                        self.trackers.mark_silent(i);
                        failures.push(format!("{addr}: connect timed out"));
                        continue;
                    }
                };
                sent = true;
                match ask(&self.trackers, i, &mut stream, req).await {
                    Asked::Answer(resp) => {
                        self.trackers.mark_answering(i);
                        self.stream = Some(stream);
                        self.resent = unanswered;
                        return Ok(resp);
                    }
                    Asked::Passed(why) => failures.push(why),
                    Asked::Lost(why) => {
                        unanswered = true;
                        failures.push(why);
                    }
                }
            }
            turned_away = at_door && !sent;
            if !turned_away {
                break;
            }
        }
        self.resent = false;
        let mut why = failures.join("; ");
        if turned_away {
            why.push_str(&format!(" ({} tries in 6 s); try again shortly", DOOR_RETRIES + 1));
        }
        if unanswered && !req.only_reads() {
            why.push_str(
                "; the request was sent and its answer lost, so it may have been carried out: \
                 look before repeating it",
            );
        }
        Err(LinkError::Unreachable(why))
    }

    /// Resolves when the kept connection ends: the tracker closed it (it
    /// stopped or restarted), it broke, or it sent something unasked (a
    /// tracker only answers). The connection is dropped then, so that the
    /// next call opens a new one. Never resolves while none is kept.
    pub async fn closed(&mut self) {
        let Some(stream) = self.stream.as_ref() else {
            return std::future::pending().await;
        };
        let mut byte = [0u8; 1];
        // Whatever `peek` returns (end of stream, an error, a byte), the
        // connection is of no more use for requests.
        let _ = stream.get_ref().peek(&mut byte).await;
        self.stream = None;
    }
}

/// Tracker links kept open for a node's background calls (downloads' peer
/// lists, registering as a sharer): a call takes an idle link, or opens one
/// when none is idle, and puts it back after. A tree of small files
/// otherwise paid a Noise handshake (four X25519 operations on each side)
/// for every file, twice.
///
/// At most [`POOL_LINKS`] calls run at once, and every link opened is kept:
/// a pool that opened links without limit but kept only 32 idle opened
/// (and so handshook, and dropped) one per four files of a bulk fetch,
/// whose calls come in bursts of a hundred and more.
#[derive(Debug, Clone)]
pub struct LinkPool {
    trackers: Trackers,
    idle: Arc<std::sync::Mutex<Vec<TrackerLink>>>,
    calls: Arc<tokio::sync::Semaphore>,
}

/// Most links a pool opens, and so calls at once: enough for a bulk
/// fetch's tracker answers asked ahead (twice its largest window of
/// files, `jobs::DEFAULT_MAX`) and its registrations, a quarter of what a
/// tracker admits from one address (`MAX_PER_IP`).
pub const POOL_LINKS: usize = 256;

impl LinkPool {
    /// An empty pool over `trackers`.
    pub fn new(trackers: Trackers) -> Self {
        Self {
            trackers,
            idle: Arc::default(),
            calls: Arc::new(tokio::sync::Semaphore::new(POOL_LINKS)),
        }
    }

    /// [`TrackerLink::call`] on a pooled link.
    pub async fn call(&self, req: &Request) -> Result<Response, LinkError> {
        // The semaphore is never closed: a permit always comes.
        let _permit = self.calls.acquire().await.ok();
        let taken = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut link = taken.unwrap_or_else(|| TrackerLink::new(self.trackers.clone()));
        let result = link.call(req).await;
        if result.is_ok() {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(link);
        }
        result
    }
}

/// How one try of a request on tracker `i` went.
enum Asked {
    /// Its answer.
    Answer(Response),
    /// The tracker did nothing with it (catching up, or stopping): the
    /// next one is asked. Why, for the error.
    Passed(String),
    /// Sent, and its answer lost (the connection broke, or no answer came
    /// in time; the tracker is then marked silent). Why, for the error.
    Lost(String),
}

/// Sends `req` on `stream` to tracker `i` and waits for its answer.
async fn ask(
    trackers: &Trackers,
    i: usize,
    stream: &mut SecureStream<TcpStream>,
    req: &Request,
) -> Asked {
    let addr = trackers.list.addrs[i];
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange(stream, req)).await {
        // A tracker that lost its data and is catching up did nothing with
        // the request: the next one is asked.
        Ok(Ok(Response::Refused(Refusal::CatchingUp(why) | Refusal::Stopping(why)))) => {
            Asked::Passed(format!("{addr}: {why}"))
        }
        Ok(Ok(resp)) => Asked::Answer(resp),
        Ok(Err(e)) => Asked::Lost(format!("{addr}: {e}")),
        Err(_) => {
            trackers.mark_silent(i);
            Asked::Lost(format!("{addr}: no answer in {REQUEST_TIMEOUT:?}"))
        }
    }
}

async fn exchange(
    stream: &mut SecureStream<TcpStream>,
    req: &Request,
) -> Result<Response, FrameIoError> {
    write_msg(stream, REQUEST, req).await?;
    read_msg::<Response, _>(stream, RESPONSE).await?.ok_or(FrameIoError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tracker that closes the first connections at its door (every slot
    /// taken) is asked again after a short wait, and answers; one that
    /// keeps closing them fails the call with a line that says so.
    #[tokio::test]
    async fn a_tracker_that_closes_a_connection_at_its_door_is_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let key = Keypair::generate();
        let tracker = tokio::spawn(async move {
            // Two turned away, then served.
            for _ in 0..2 {
                drop(listener.accept().await.unwrap());
            }
            let (tcp, _) = listener.accept().await.unwrap();
            let mut s = SecureStream::accept(tcp, &key, CONTROL_PROLOGUE).await.unwrap();
            let req = read_msg::<Request, _>(&mut s, REQUEST).await.unwrap();
            assert!(matches!(req, Some(Request::ListGroups { .. })), "{req:?}");
            write_msg(&mut s, RESPONSE, &Response::Names(vec!["g".into()])).await.unwrap();
            // Then every connection turned away.
            loop {
                drop(listener.accept().await.unwrap());
            }
        });
        let list = TrackerList::parse(&format!("{addr}\n"), "tracker_info.txt").unwrap();
        let trackers = Trackers::open(list, dir.path()).unwrap();
        let req = Request::ListGroups { token: ringshare_engine::proto::Token([1; 16]) };
        let mut link = TrackerLink::new(trackers.clone());
        let r = link.call(&req).await;
        assert_eq!(r.unwrap(), Response::Names(vec!["g".into()]));
        let mut other = TrackerLink::new(trackers);
        let Err(LinkError::Unreachable(why)) = other.call(&req).await else { panic!() };
        let turned_away = format!(
            "{addr}: the tracker closed the connection at once: it admits no more connections \
             just now (6 tries in 6 s); try again shortly"
        );
        assert_eq!(why, turned_away);
        assert_eq!(why.matches(&addr.to_string()).count(), 1, "the last try only: {why}");
        tracker.abort();
    }

    #[test]
    fn a_tracker_that_timed_out_is_tried_last_by_every_link_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let text = "127.0.0.1:7001\n127.0.0.1:7002\n127.0.0.1:7003\n";
        let list = TrackerList::parse(text, "tracker_info.txt").unwrap();
        let trackers = Trackers::open(list, dir.path()).unwrap();
        let other = trackers.clone();
        assert_eq!(trackers.order_from(0), [0, 1, 2]);
        assert_eq!(trackers.order_from(2), [2, 0, 1]);
        trackers.mark_silent(0);
        // Seen by the node's other links (clones share it).
        assert_eq!(other.order_from(0), [1, 2, 0]);
        assert_eq!(other.order_from(2), [2, 1, 0]);
        trackers.mark_silent(2);
        assert_eq!(other.order_from(0), [1, 0, 2]);
        // Every one silent: all are still tried, in turn.
        trackers.mark_silent(1);
        assert_eq!(other.order_from(1), [1, 2, 0]);
        // One that answers again is tried in its turn.
        other.mark_answering(0);
        assert_eq!(trackers.order_from(2), [0, 2, 1]);
        // And the mark wears off.
        let past = Instant::now() - Duration::from_secs(1);
        trackers.silent_until().iter_mut().for_each(|t| *t = Some(past));
        assert_eq!(trackers.order_from(1), [1, 2, 0]);
    }
}
