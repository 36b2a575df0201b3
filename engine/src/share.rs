//! What a node shares and the rules every piece server driver applies the
//! same way — the threads driver (`crate::serve`) and the io_uring driver
//! (`crate::uring`) both build on this module and on
//! [`ServerSession`], and neither on the other.
//!
//! - [`ServedFile`]: a file this node holds fully or partly: an open file
//!   (the shared file, or a download's `.part`) and the bitfield of pieces
//!   it can serve. Downloads add pieces as they verify them; connected
//!   downloaders learn of them through `have` messages
//!   ([`ServedFile::haves_since`]).
//! - [`ServeTable`]: every served file by id, and the admission of a
//!   handshake ([`ServeTable::admit`]: known file, ticket accepted).
//! - [`ConnCaps`]: the connection caps (total and per source address), with
//!   no I/O: a driver asks before it serves a new connection and gives the
//!   place back when the connection ends.
//!
//! Lock order: `ServeTable::files` before any `ServedFile::have`.

use std::collections::HashMap;
use std::fs::File;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::link::PeerSecurity;
use crate::meta::{Bitfield, FileMeta, Sha1Digest};
use crate::peer::{self, ErrorCode, Message, Refuse, ServerAction, ServerSession};
use crate::secure::PublicKey;
use crate::seeding::SeedPlan;

/// A file this node serves pieces of.
#[derive(Debug)]
pub struct ServedFile {
    meta: FileMeta,
    pub(crate) file: File,
    have: RwLock<Bitfield>,
    /// Bumped on every new piece, so connections notice cheaply.
    pub(crate) version: AtomicU64,
    /// Bytes of piece data sent to peers.
    pub(crate) uploaded: AtomicU64,
    /// A file held whole is seeded under a plan: each downloader is
    /// offered the least-copied pieces first ([`crate::seeding`]).
    plan: Option<Mutex<SeedPlan>>,
    /// Sessions open on it now ([`MAX_DOWNLOADERS`]).
    downloaders: AtomicUsize,
    /// Of them, each user's ([`MAX_SESSIONS_PER_USER`]).
    users: Mutex<HashMap<Box<str>, usize>>,
    /// Each user's sessions of every file of the table serving it
    /// ([`MAX_USER_SESSIONS`]), set when the table takes it.
    table_users: std::sync::OnceLock<UserSessions>,
    /// No longer served ([`ServeTable::remove`]): sessions still open on
    /// it answer every request with a `reject` from now on, and end at
    /// their driver's next tick ([`ServedFile::is_withdrawn`]).
    withdrawn: std::sync::atomic::AtomicBool,
}

/// Downloaders a node serves one file to at once; the next gets a `busy`
/// refusal and goes to other peers. Without it, in a flash crowd of 1000
/// (the simulator) the first to ask the tracker were in every later peer
/// list and served 90 sessions and more each, their upload slots full and
/// long queues waiting, while a quarter of the holders of pieces served
/// nobody. 96, half again a download's own cap on its peers
/// ([`crate::download::MAX_PEERS`], 64): at 64 a crowd of 100 was 3-4 %
/// slower; at 96 it is unchanged and a crowd of 1000 gains as much.
pub const MAX_DOWNLOADERS: usize = 96;

/// Sessions of one file a node serves to one user at once. A download
/// opens one per seeder (two for a moment when it reconnects, a few when
/// the user fetches it into several places); without a cap one member
/// held all [`MAX_DOWNLOADERS`] with one ticket, idle, and every other
/// downloader of the file was refused for as long.
pub const MAX_SESSIONS_PER_USER: usize = 8;

/// Sessions of all its files a node serves to one user at once: half its
/// connections ([`ServerLimits::max_connections`]' default), what a bulk
/// get from one address can hold (128 links per address). With a cap per
/// file only, one member's ticket for 32 files opened 8 sessions of each
/// from two addresses, and every other downloader found the node full.
pub const MAX_USER_SESSIONS: usize = 128;

/// Sessions per user across a table's files.
type UserSessions = Arc<Mutex<HashMap<Box<str>, usize>>>;

impl ServedFile {
    /// A file held whole, seeded under a plan ([`crate::seeding`]).
    pub fn complete(meta: FileMeta, file: File) -> Arc<Self> {
        let pieces = meta.piece_hashes.len() as u32;
        // Where each session's offers start: random per process, so that
        // seeds of one file in different processes offer different pieces.
        let seed = std::collections::hash_map::RandomState::new().hash_one(meta.sha1.0);
        Arc::new(Self {
            meta,
            file,
            have: RwLock::new(Bitfield::full(pieces)),
            version: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            plan: Some(Mutex::new(SeedPlan::new(pieces, seed))),
            downloaders: AtomicUsize::new(0),
            users: Mutex::default(),
            table_users: Default::default(),
            withdrawn: Default::default(),
        })
    }

    /// Marks it no longer served ([`ServeTable::remove`]).
    fn withdraw(&self) {
        self.withdrawn.store(true, Ordering::Relaxed);
    }

    /// Whether it is no longer served ([`ServeTable::remove`]): a session
    /// serving it is closed with [`WITHDRAWN`] at the driver's next tick.
    /// (Its requests were kept back instead, and the link kept: a node that
    /// logged out and in again serves the file anew, from another
    /// `ServedFile`, and the downloaders on such a link, told every piece
    /// was kept back, never asked it again and failed after 60 s.)
    pub(crate) fn is_withdrawn(&self) -> bool {
        self.withdrawn.load(Ordering::Relaxed)
    }

    /// A file held partly: `have` lists the verified pieces; every
    /// downloader is told of all of them.
    pub fn partial(meta: FileMeta, file: File, have: Bitfield) -> Arc<Self> {
        Arc::new(Self {
            meta,
            file,
            have: RwLock::new(have),
            version: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            plan: None,
            downloaders: AtomicUsize::new(0),
            users: Mutex::default(),
            table_users: Default::default(),
            withdrawn: Default::default(),
        })
    }

    /// Opens `session` on this file (its handshake admitted); returns the
    /// bitfield to send: the pieces held, or a plan's first offers.
    pub(crate) fn open_session(
        &self,
        session: &mut ServerSession,
        user: &str,
        now: Instant,
    ) -> Bitfield {
        self.downloaders.fetch_add(1, Ordering::Relaxed);
        *lock(&self.users).entry(user.into()).or_default() += 1;
        if let Some(all) = self.table_users.get() {
            *lock(all).entry(user.into()).or_default() += 1;
        }
        session.set_user(user);
        let mut plan = self.plan.as_ref().map(lock);
        session
            .accept_with(self.meta.geometry(), plan.as_deref_mut().map(|p| (p, now)))
            .unwrap_or_else(|| self.bitfield())
    }

    /// `session`, open on this file, ends (or goes on to another file).
    fn leave(&self, session: &ServerSession) {
        self.downloaders.fetch_sub(1, Ordering::Relaxed);
        let Some(user) = session.user() else { return };
        let less = |users: &mut HashMap<Box<str>, usize>| {
            if let Some(n) = users.get_mut(user) {
                *n -= 1;
                if *n == 0 {
                    users.remove(user);
                }
            }
        };
        less(&mut lock(&self.users));
        if let Some(all) = self.table_users.get() {
            less(&mut lock(all));
        }
    }

    /// Sessions of this file open for `user` now.
    fn sessions_of(&self, user: &str) -> usize {
        lock(&self.users).get(user).copied().unwrap_or(0)
    }

    /// Of `pieces` (what a connection asked for, in order), the position
    /// of the first of those sent least so far ([`SeedPlan::sent`]), and
    /// that count: a seed sends it next, and its count is the connection's
    /// rank at the upload slots ([`crate::slots`]). `None` for a file not
    /// seeded under a plan (its pieces go in the order asked, rank 0).
    pub(crate) fn least_sent(&self, pieces: impl Iterator<Item = u32>) -> Option<(usize, u32)> {
        let plan = lock(self.plan.as_ref()?);
        pieces.map(|p| plan.sent(p)).enumerate().min_by_key(|&(_, n)| n)
    }

    /// `piece` starts going out to the downloader of `session`.
    pub(crate) fn note_sent(&self, session: &mut ServerSession, piece: u32) {
        if let Some(p) = &self.plan {
            session.sending_at(piece, &mut lock(p));
        }
    }

    /// The file's metadata.
    pub fn meta(&self) -> &FileMeta {
        &self.meta
    }

    /// The served file's metadata (`fstat`: no path looked up).
    pub fn metadata(&self) -> std::io::Result<std::fs::Metadata> {
        self.file.metadata()
    }

    /// A newly verified piece can be served.
    pub fn add_piece(&self, piece: u32) {
        if let Ok(mut h) = self.have.write() {
            if h.set(piece) {
                self.version.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// Whether a piece can be served.
    pub fn has(&self, piece: u32) -> bool {
        self.have.read().map(|h| h.get(piece)).unwrap_or(false)
    }

    /// The pieces that can be served now.
    pub fn bitfield(&self) -> Bitfield {
        match self.have.read() {
            Ok(h) => h.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Bytes of piece data sent so far.
    pub fn uploaded(&self) -> u64 {
        self.uploaded.load(Ordering::Relaxed)
    }

    /// The version counter (bumped on every new piece).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Appends a `have` to `out` for each piece gained since a connection
    /// last looked (`seen`, the version then; `announced`, the pieces it
    /// was told of), and brings both up to date. Cheap when nothing is new.
    pub fn haves_since(&self, announced: &mut Bitfield, seen: &mut u64, out: &mut Vec<u8>) {
        let v = self.version();
        if v == *seen {
            return;
        }
        *seen = v;
        let now = self.bitfield();
        for i in 0..now.len() {
            if now.get(i) && !announced.get(i) {
                peer::encode(&Message::Have(i), out);
            }
        }
        *announced = now;
    }
}

/// Handles one downloader message on `session`, which serves `served`
/// once admitted; a `have` for each piece that offers is appended to
/// `offers` (send it before acting on the answer). A `reject` answer is
/// appended there too, ahead of those, and returned as `Nothing`.
pub(crate) fn session_message(
    session: &mut ServerSession,
    served: Option<&ServedFile>,
    msg: &Message<'_>,
    now: Instant,
    offers: &mut Vec<u8>,
) -> Result<ServerAction, Refuse> {
    if let (Message::Handshake { .. }, true, Some(f)) = (msg, session.is_open(), served) {
        // On to another file: this one's session ends here.
        f.leave(session);
    }
    let has = |p| served.is_some_and(|f| f.has(p));
    let mut plan = served.and_then(|f| f.plan.as_ref()).map(lock);
    let answer = session.on_message_at(msg, has, plan.as_deref_mut().map(|p| (p, now)));
    // A `reject` goes out here, ahead of the offers made with it: one of
    // them may be the same piece, which the downloader would otherwise
    // take as offered and then, at the reject, as not.
    if let Ok(ServerAction::Reject { piece, offset, len }) = answer {
        peer::encode(&Message::Reject { piece, offset, len }, offers);
        take_offers(session, offers);
        return Ok(ServerAction::Nothing);
    }
    take_offers(session, offers);
    answer
}

/// A request on `session`, which serves `served`, was answered (sent or
/// cancelled); a `have` for each piece that offers is appended to `offers`.
pub(crate) fn session_served(
    session: &mut ServerSession,
    served: Option<&ServedFile>,
    now: Instant,
    offers: &mut Vec<u8>,
) {
    let mut plan = served.and_then(|f| f.plan.as_ref()).map(lock);
    session.served_at(plan.as_deref_mut().map(|p| (p, now)));
    take_offers(session, offers);
}

/// The request for `len` bytes of `piece` from `offset` is next to go out
/// of `session`, which serves `served`: true if the file's plan keeps it
/// back ([`SeedPlan::withhold`]) or defers it ([`SeedPlan::defer`]), in
/// which case a `reject` (kept back) or a `busy` (deferred) for it and a
/// `have` for each piece that offers are appended to `out`, and the
/// request counts as answered. A file no longer served
/// ([`ServeTable::remove`]) keeps every request back until its session
/// ends.
pub(crate) fn session_withholds(
    session: &mut ServerSession,
    served: Option<&ServedFile>,
    (piece, offset, len): (u32, u32, u32),
    now: Instant,
    out: &mut Vec<u8>,
) -> bool {
    if served.is_some_and(|f| f.withdrawn.load(Ordering::Relaxed)) {
        session.rejected();
        peer::encode(&Message::Reject { piece, offset, len }, out);
        return true;
    }
    let Some(plan) = served.and_then(|f| f.plan.as_ref()) else { return false };
    let mut plan = lock(plan);
    if session.withhold_at(piece, Some((&mut plan, now))) {
        peer::encode(&Message::Reject { piece, offset, len }, out);
    } else if session.defers_at(piece, Some((&mut plan, now))) {
        peer::encode(&Message::Busy { piece, offset, len }, out);
    } else {
        return false;
    }
    take_offers(session, out);
    true
}

/// Requests on `session`, which serves `served`, waited too long for an
/// upload slot ([`crate::slots::SendSlots::overdue`]): each is answered
/// with a `busy` appended to `out`, counts as answered, and a `have` for
/// each piece that offers follows.
pub(crate) fn session_busy(
    session: &mut ServerSession,
    served: Option<&ServedFile>,
    requests: impl IntoIterator<Item = (u32, u32, u32)>,
    now: Instant,
    out: &mut Vec<u8>,
) {
    let mut plan = served.and_then(|f| f.plan.as_ref()).map(lock);
    for (piece, offset, len) in requests {
        peer::encode(&Message::Busy { piece, offset, len }, out);
        session.served_at(plan.as_deref_mut().map(|p| (p, now)));
    }
    take_offers(session, out);
}

/// `session`, which served `served`, ended.
pub(crate) fn session_closed(session: &mut ServerSession, served: Option<&ServedFile>) {
    if let (true, Some(f)) = (session.is_open(), served) {
        f.leave(session);
    }
    if let Some(plan) = served.and_then(|f| f.plan.as_ref()) {
        session.close_at(&mut lock(plan));
    }
}

/// Appends a `have` for each piece `session` was offered since the last
/// look.
fn take_offers(session: &mut ServerSession, out: &mut Vec<u8>) {
    for piece in session.take_offers() {
        peer::encode(&Message::Have(piece), out);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Decides whether `user` with `ticket` may fetch the file `file_id`, on a
/// link that proved the given key (`None`: a plaintext link).
pub type Admission = dyn Fn(&Sha1Digest, &str, &[u8], Option<&PublicKey>) -> bool + Send + Sync;

/// Whether the file `file_id` is still served here in `group`: a session
/// admitted with a ticket from that group ends once it is not
/// ([`ServeTable::set_still_admits`]).
pub type StillAdmits = dyn Fn(&Sha1Digest, &str) -> bool + Send + Sync;

/// Opens a file served on demand (see [`ServeTable::insert_lazy`]).
pub type Opener = dyn Fn() -> std::io::Result<Arc<ServedFile>> + Send + Sync;

/// A file served on demand: how to open it, and the open instance while
/// any connection still serves it.
struct Lazy {
    open: Arc<Opener>,
    live: std::sync::Weak<ServedFile>,
    /// Why it could not be opened, once logged: each downloader's
    /// handshake tries again, and a file changed on disk is refused until
    /// it is withdrawn (one line, not one per handshake).
    failed: bool,
}

/// Everything this node serves, by file id (whole-file SHA1).
pub struct ServeTable {
    files: RwLock<HashMap<Sha1Digest, Arc<ServedFile>>>,
    /// Files opened only while connections serve them: a node sharing a
    /// tree of 100,000 files holds a descriptor per file being served, not
    /// per file shared.
    lazy: std::sync::Mutex<HashMap<Sha1Digest, Lazy>>,
    admit: Box<Admission>,
    security: PeerSecurity,
    /// Each user's sessions of all the files here ([`MAX_USER_SESSIONS`]).
    users: UserSessions,
    /// [`ServerLimits::max_downloaders`] of the server serving it.
    max_downloaders: AtomicUsize,
    /// Whether a file is still served in a group ([`StillAdmits`]).
    still: RwLock<Option<Box<StillAdmits>>>,
}

impl std::fmt::Debug for ServeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.files.read().map(|m| m.len()).unwrap_or(0);
        let lazy = self.lazy.lock().map(|m| m.len()).unwrap_or(0);
        write!(f, "ServeTable({n} files open, {lazy} on demand)")
    }
}

impl ServeTable {
    /// An empty table admitting downloaders according to `admit`, served
    /// over encrypted links with a fresh key (tests and tools).
    pub fn new(admit: Box<Admission>) -> Arc<Self> {
        Self::secured(admit, PeerSecurity::ephemeral())
    }

    /// An empty table admitting downloaders according to `admit`, its
    /// links secured as `security` says (the node's key).
    pub fn secured(admit: Box<Admission>, security: PeerSecurity) -> Arc<Self> {
        Arc::new(Self {
            files: RwLock::new(HashMap::new()),
            lazy: std::sync::Mutex::new(HashMap::new()),
            admit,
            security,
            users: UserSessions::default(),
            max_downloaders: AtomicUsize::new(MAX_DOWNLOADERS),
            still: RwLock::new(None),
        })
    }

    /// Ends, within a tick, each session admitted with a ticket from a
    /// group the file is no longer served in here, as `still` tells (the
    /// group's admission is the node's to say, as [`Admission`] is). A
    /// node sharing one file in two groups went on sending it, at its
    /// `stop_share` or `leave_group` in one, to a downloader admitted
    /// from that one: the file stayed in the table for the other.
    pub fn set_still_admits(&self, still: Box<StillAdmits>) {
        if let Ok(mut s) = self.still.write() {
            *s = Some(still);
        }
    }

    /// Whether a session of `id` admitted with a ticket from `group` may
    /// go on (true without a [`set_still_admits`](Self::set_still_admits)).
    pub fn still_admits(&self, id: &Sha1Digest, group: &str) -> bool {
        self.still.read().map_or(true, |s| s.as_ref().is_none_or(|f| f(id, group)))
    }

    /// How the servers of this table secure their links.
    pub fn security(&self) -> &PeerSecurity {
        &self.security
    }

    /// Serves a file (replacing an earlier entry for the same content).
    pub fn insert(&self, file: Arc<ServedFile>) {
        let _ = file.table_users.set(Arc::clone(&self.users));
        if let Ok(mut m) = self.files.write() {
            m.insert(file.meta.sha1, file);
        }
    }

    /// Serves the file `id` on demand: `open` is called when a downloader
    /// asks for it and no connection serves it already, and the file closes
    /// when the last connection serving it ends. Replaces an open entry
    /// for the same id (a finished download becomes an on-demand one;
    /// connections serving the old entry keep it until they end).
    pub fn insert_lazy(&self, id: Sha1Digest, open: Arc<Opener>) {
        self.lazy_map().insert(id, Lazy { open, live: std::sync::Weak::new(), failed: false });
        if let Ok(mut m) = self.files.write() {
            m.remove(&id);
        }
    }

    /// Stops serving a file: no new session, and those open on it send
    /// nothing more of it (their requests get a `reject`; the downloader
    /// asks elsewhere). A user who stops sharing, leaves the group or logs
    /// out stops uploading it, and a file changed on disk stops going out.
    pub fn remove(&self, id: &Sha1Digest) {
        if let Ok(mut m) = self.files.write() {
            if let Some(f) = m.remove(id) {
                f.withdraw();
            }
        }
        if let Some(f) = self.lazy_map().remove(id).and_then(|l| l.live.upgrade()) {
            f.withdraw();
        }
    }

    /// Stops serving `file` if it is still the entry open for its content
    /// (not one that took its place meanwhile); whether it was.
    pub fn remove_this(&self, file: &Arc<ServedFile>) -> bool {
        let Ok(mut m) = self.files.write() else { return false };
        if !m.get(&file.meta.sha1).is_some_and(|f| Arc::ptr_eq(f, file)) {
            return false;
        }
        m.remove(&file.meta.sha1);
        drop(m);
        file.withdraw();
        true
    }

    /// Stops serving everything, as [`ServeTable::remove`] does each file.
    pub fn clear(&self) {
        if let Ok(mut m) = self.files.write() {
            m.drain().for_each(|(_, f)| f.withdraw());
        }
        self.lazy_map().drain().filter_map(|(_, l)| l.live.upgrade()).for_each(|f| f.withdraw());
    }

    /// Whether a file with this id is served (without opening it).
    pub fn contains(&self, id: &Sha1Digest) -> bool {
        self.files.read().is_ok_and(|m| m.contains_key(id)) || self.lazy_map().contains_key(id)
    }

    /// The served file with this id, opened if it is served on demand and
    /// not open now (`None` if that fails; the reason is logged).
    pub fn get(&self, id: &Sha1Digest) -> Option<Arc<ServedFile>> {
        if let Some(f) = self.files.read().ok()?.get(id).cloned() {
            return Some(f);
        }
        let open = {
            let lazy = self.lazy_map();
            let entry = lazy.get(id)?;
            if let Some(f) = entry.live.upgrade() {
                return Some(f);
            }
            Arc::clone(&entry.open)
        };
        // Opened outside the lock: a slow disk delays only this admission.
        let opened = open();
        let mut lazy = self.lazy_map();
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                if lazy.get_mut(id).is_some_and(|l| !std::mem::replace(&mut l.failed, true)) {
                    tracing::warn!(file = %id, "cannot serve: {e}");
                } else {
                    tracing::debug!(file = %id, "cannot serve: {e}");
                }
                return None;
            }
        };
        let entry = lazy.get_mut(id)?;
        entry.failed = false;
        if let Some(f) = entry.live.upgrade() {
            return Some(f);
        }
        let _ = file.table_users.set(Arc::clone(&self.users));
        entry.live = Arc::downgrade(&file);
        Some(file)
    }

    fn lazy_map(&self) -> std::sync::MutexGuard<'_, HashMap<Sha1Digest, Lazy>> {
        self.lazy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the most downloaders of one file served at once (the server's
    /// [`ServerLimits::max_downloaders`]).
    pub fn set_max_downloaders(&self, n: usize) {
        self.max_downloaders.store(n, Ordering::Relaxed);
    }

    /// A handshake for `id` by `user` with `ticket`: the file to serve, or
    /// the fatal refusal to send (unknown file, ticket refused, the file
    /// served to its most downloaders already).
    pub fn admit(
        &self,
        id: &Sha1Digest,
        user: &str,
        ticket: &[u8],
        holder: Option<&PublicKey>,
    ) -> Result<Arc<ServedFile>, Refuse> {
        let unknown = || Refuse {
            code: ErrorCode::UnknownFile,
            text: "file not shared here".into(),
            fatal: true,
        };
        // The ticket first: a refusal says nothing of what this node holds
        // to one without a ticket for it.
        if !(self.admit)(id, user, ticket, holder) {
            return Err(Refuse {
                code: ErrorCode::BadTicket,
                text: "ticket refused".into(),
                fatal: true,
            });
        }
        if !self.contains(id) {
            return Err(unknown());
        }
        // Opened (if on demand) only for an admitted downloader.
        let file = self.get(id).ok_or_else(unknown)?;
        let most = self.max_downloaders.load(Ordering::Relaxed);
        if file.downloaders.load(Ordering::Relaxed) >= most {
            return Err(Refuse {
                code: ErrorCode::Busy,
                text: format!("serving this file to {most} downloaders already"),
                fatal: true,
            });
        }
        let all = lock(&self.users).get(user).copied().unwrap_or(0);
        if all >= MAX_USER_SESSIONS {
            return Err(Refuse {
                code: ErrorCode::Busy,
                text: format!("serving {MAX_USER_SESSIONS} sessions to {user} already"),
                fatal: true,
            });
        }
        if file.sessions_of(user) >= MAX_SESSIONS_PER_USER {
            return Err(Refuse {
                code: ErrorCode::Busy,
                text: format!(
                    "serving this file to {MAX_SESSIONS_PER_USER} sessions of {user} already"
                ),
                fatal: true,
            });
        }
        Ok(file)
    }
}

/// Limits of a piece server.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections served at once; more get a `busy` error.
    pub max_connections: usize,
    /// Connections served at once from one IP address.
    pub max_per_ip: usize,
    /// Downloaders of one file served at once ([`MAX_DOWNLOADERS`]).
    pub max_downloaders: usize,
    /// Unanswered requests allowed per connection.
    pub max_outstanding: u32,
    /// Time allowed for the handshake.
    pub handshake_timeout: Duration,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Fault injection: a pause before each piece is sent (zero in normal
    /// use; tests and demos slow a seeder down with it).
    pub piece_delay: Duration,
    /// Connections sending piece data at once, first come first served,
    /// one piece per turn ([`crate::slots`]; 0: no limit).
    pub send_slots: usize,
    /// The node's upload rate: each connection sending a piece is paced at
    /// its share of it, the rate over the upload slots held
    /// ([`crate::slots::UploadRate`]; with no slot limit, each at the whole
    /// rate; `None`: TCP's own pace).
    pub upload_rate: Option<crate::slots::UploadRate>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_per_ip: 128,
            max_downloaders: MAX_DOWNLOADERS,
            max_outstanding: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            piece_delay: Duration::ZERO,
            send_slots: crate::slots::SEND_SLOTS,
            upload_rate: None,
        }
    }
}

/// How often a connection wakes to push `have`s and check for a stop.
pub const TICK: Duration = Duration::from_millis(100);

/// The error a session of a file no longer served ends with
/// ([`ServedFile::is_withdrawn`]): its downloader goes to other peers, and
/// comes back once the node is listed again.
pub(crate) const WITHDRAWN: &str = "the file is no longer shared here";

/// The connection caps of one piece server: how many connections it serves
/// at once, in all and from one address, and which gives its place up when
/// all are taken. No I/O: the driver asks [`ConnCaps::admit`] for each new
/// connection, says when one's session opens ([`ConnCaps::opened`]), ends
/// the one `admit` names to give its place up, and calls
/// [`ConnCaps::release`] when an admitted one ends.
#[derive(Debug)]
pub struct ConnCaps {
    max_total: usize,
    max_per_ip: usize,
    live: HashMap<u64, Place>,
    per_ip: HashMap<IpAddr, usize>,
    next: u64,
    /// Connections told to give their place up, not gone yet.
    evicting: usize,
    /// When a newcomer from each address last took a place that way: once
    /// per [`EVICT_AFTER`] per address.
    took: HashMap<IpAddr, Instant>,
    /// What being full did, for the log ([`ConnCaps::full_report`]).
    full: FullLog,
}

/// What a server with every place taken did about newcomers, for a line in
/// its log at most once per [`FullLog::EVERY`]: a server ending thousands
/// of connections under a flood said nothing of it. The tracker keeps one
/// too.
#[derive(Debug, Default)]
pub struct FullLog {
    told: Option<Instant>,
    gave_up: u64,
    turned_away: u64,
}

impl FullLog {
    /// At most one report this often.
    pub const EVERY: Duration = Duration::from_secs(60);

    /// A newcomer found every place taken: a connection gave its place up
    /// to it (`gave_up`), or it was turned away.
    pub fn note(&mut self, gave_up: bool) {
        if gave_up {
            self.gave_up += 1;
        } else {
            self.turned_away += 1;
        }
    }

    /// The places given up and the newcomers turned away since the last
    /// report, if there were any and the last was [`Self::EVERY`] ago or
    /// more (the first at once).
    pub fn report(&mut self, now: Instant) -> Option<(u64, u64)> {
        if self.gave_up + self.turned_away == 0
            || self.told.is_some_and(|t| now.saturating_duration_since(t) < Self::EVERY)
        {
            return None;
        }
        self.told = Some(now);
        Some((std::mem::take(&mut self.gave_up), std::mem::take(&mut self.turned_away)))
    }
}

/// An admitted connection.
#[derive(Debug)]
struct Place {
    ip: IpAddr,
    since: Instant,
    /// Its session opened (a handshake with a good ticket).
    opened: bool,
    /// Told to give its place up.
    told: bool,
}

/// A connection admitted this long ago whose session has not opened may
/// give its place to a newcomer when all are taken.
pub const EVICT_AFTER: Duration = Duration::from_secs(1);
/// Most connections told to give their place up at once (the connections
/// served may pass the cap by this many while they end).
const EVICT_AHEAD: usize = 64;

impl ConnCaps {
    /// Caps from `limits`.
    pub fn new(limits: &ServerLimits) -> Self {
        Self {
            max_total: limits.max_connections,
            max_per_ip: limits.max_per_ip,
            live: HashMap::new(),
            per_ip: HashMap::new(),
            next: 0,
            evicting: 0,
            took: HashMap::new(),
            full: FullLog::default(),
        }
    }

    /// Takes a place for a connection from `ip` at `now`: its id, and the
    /// id of a connection to end now, which gives its place up — when all
    /// are taken, the oldest admitted [`EVICT_AFTER`] ago or more whose
    /// session has not opened (links that connect and say nothing, or
    /// never finish a handshake, held every place for the handshake
    /// timeout, 10 s, and a flood of them renewed that for good). A
    /// newcomer from one address takes a place so at most once per
    /// [`EVICT_AFTER`] (a flood reconnecting thousands of times a second
    /// took most places coming free before honest downloaders did). Or
    /// says why not: the text of the `Busy` error frame to send before
    /// closing it.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(u64, Option<u64>), &'static str> {
        let from_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.max_per_ip {
            return Err("too many connections from your address");
        }
        let mut evict = None;
        if self.live.len() >= self.max_total + self.evicting {
            let victim = self.give_up_for(ip, now);
            self.full.note(victim.is_some());
            evict = Some(victim.ok_or("too many connections")?);
        }
        let id = self.next;
        self.next += 1;
        self.live.insert(id, Place { ip, since: now, opened: false, told: false });
        *self.per_ip.entry(ip).or_insert(0) += 1;
        Ok((id, evict))
    }

    /// With every place taken, the connection that gives its place up to a
    /// newcomer from `ip` (see [`admit`](Self::admit)), told so.
    fn give_up_for(&mut self, ip: IpAddr, now: Instant) -> Option<u64> {
        if self.evicting >= EVICT_AHEAD {
            return None;
        }
        let recent = |t: &Instant| now.saturating_duration_since(*t) < EVICT_AFTER;
        if self.took.get(&ip).is_some_and(recent) {
            return None;
        }
        let (&id, place) = self
            .live
            .iter_mut()
            .filter(|(_, p)| {
                !p.opened && !p.told && now.saturating_duration_since(p.since) >= EVICT_AFTER
            })
            .min_by_key(|(&id, p)| (p.since, id))?;
        place.told = true;
        self.evicting += 1;
        if self.took.len() >= 4096 {
            self.took.retain(|_, t| recent(t));
        }
        self.took.insert(ip, now);
        Some(id)
    }

    /// Connection `id`'s session opened: it keeps its place.
    pub fn opened(&mut self, id: u64) {
        if let Some(p) = self.live.get_mut(&id) {
            p.opened = true;
        }
    }

    /// The admitted connection `id` ended (told to or not).
    pub fn release(&mut self, id: u64) {
        let Some(place) = self.live.remove(&id) else { return };
        if place.told {
            self.evicting = self.evicting.saturating_sub(1);
        }
        if let Some(n) = self.per_ip.get_mut(&place.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&place.ip);
            }
        }
    }

    /// Connections admitted and not released.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// The line a driver logs about being full, at most once a minute
    /// ([`FullLog`]), after [`admit`](Self::admit).
    pub fn full_report(&mut self, now: Instant) -> Option<String> {
        let (gave_up, turned_away) = self.full.report(now)?;
        Some(format!(
            "piece server full ({} connections): {gave_up} connection(s) that opened no \
             session gave their place to newcomers and {turned_away} newcomer(s) were turned \
             away since the last report",
            self.max_total
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_server_says_so_at_most_once_a_minute() {
        let limits = ServerLimits { max_connections: 1, max_per_ip: 8, ..Default::default() };
        let mut caps = ConnCaps::new(&limits);
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let (first, _) = caps.admit(a, t0).unwrap();
        assert_eq!(caps.full_report(t0), None, "not full yet");
        caps.opened(first);
        assert!(caps.admit(b, at(2)).is_err());
        let line = caps.full_report(at(2)).expect("the first at once");
        assert!(line.contains("0 connection(s)") && line.contains("1 newcomer(s)"), "{line}");
        assert!(caps.admit(b, at(3)).is_err());
        assert_eq!(caps.full_report(at(3)), None, "a minute apart");
        let line = caps.full_report(at(62)).expect("a minute on");
        assert!(line.contains("1 newcomer(s)"), "{line}");
        assert_eq!(caps.full_report(at(200)), None, "nothing since");
        // A silent connection gives its place up: counted so.
        let mut caps = ConnCaps::new(&limits);
        caps.admit(a, t0).unwrap();
        let (_, evict) = caps.admit(b, at(2)).unwrap();
        assert!(evict.is_some());
        let line = caps.full_report(at(2)).unwrap();
        assert!(line.contains("1 connection(s)") && line.contains("0 newcomer(s)"), "{line}");
    }

    #[test]
    fn caps_count_per_address_and_in_all_and_give_places_back() {
        let limits = ServerLimits { max_connections: 3, max_per_ip: 2, ..Default::default() };
        let mut caps = ConnCaps::new(&limits);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) =
            ([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), [10, 0, 0, 3].into());
        let now = Instant::now();
        let (a1, _) = caps.admit(a, now).unwrap();
        let (a2, _) = caps.admit(a, now).unwrap();
        assert_eq!(caps.admit(a, now), Err("too many connections from your address"));
        let (b1, _) = caps.admit(b, now).unwrap();
        for id in [a1, a2, b1] {
            caps.opened(id);
        }
        let later = now + 10 * EVICT_AFTER;
        assert_eq!(caps.admit(c, later), Err("too many connections"), "every session open");
        caps.release(a1);
        let (c1, evicted) = caps.admit(c, later).unwrap();
        assert_eq!(evicted, None);
        for id in [a2, b1, c1] {
            caps.release(id);
        }
        assert_eq!(caps.live(), 0);
        assert!(caps.per_ip.is_empty(), "no entry kept for a gone address");
    }

    /// When every place is taken, the oldest connection whose session has
    /// not opened, admitted a second ago or more, gives its place to the
    /// newcomer; a younger one, or one with its session open, does not.
    #[test]
    fn a_connection_that_opened_no_session_gives_its_place_up() {
        let limits = ServerLimits { max_connections: 3, max_per_ip: 3, ..Default::default() };
        let mut caps = ConnCaps::new(&limits);
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let t0 = Instant::now();
        let (open, _) = caps.admit(a, t0).unwrap();
        caps.opened(open);
        let (silent1, _) = caps.admit(a, t0 + Duration::from_millis(10)).unwrap();
        let (silent2, _) = caps.admit(a, t0 + Duration::from_millis(20)).unwrap();
        // Too young yet.
        assert_eq!(caps.admit(b, t0 + Duration::from_millis(500)), Err("too many connections"));
        let at = t0 + Duration::from_millis(1100);
        let (n1, evicted) = caps.admit(b, at).unwrap();
        assert_eq!(evicted, Some(silent1), "the oldest silent one");
        // One address takes a place so once a second: b again must wait.
        assert_eq!(caps.admit(b, at), Err("too many connections"));
        let at = at + EVICT_AFTER;
        // Told once: the next newcomer takes the other's place.
        let (_, evicted) = caps.admit(b, at).unwrap();
        assert_eq!(evicted, Some(silent2));
        // None left to tell (the newcomers are young, the open one stays).
        assert_eq!(caps.admit(b, at), Err("too many connections"));
        caps.opened(n1);
        caps.release(silent1);
        caps.release(silent2);
        assert_eq!(caps.live(), 3);
        assert_eq!(caps.evicting, 0);
    }

    #[test]
    fn one_user_holds_a_few_sessions_of_a_file_not_all() {
        let meta = FileMeta {
            name: "f".into(),
            len: 1,
            sha1: Sha1Digest([6; 20]),
            piece_hashes: vec![Sha1Digest([6; 20])],
        };
        let table = ServeTable::new(Box::new(|_: &_, _: &str, _: &[u8], _| true));
        table.insert(ServedFile::complete(meta.clone(), tempfile::tempfile().unwrap()));
        let now = Instant::now();
        let mut held = Vec::new();
        for _ in 0..MAX_SESSIONS_PER_USER {
            let f = table.admit(&meta.sha1, "mallory", b"t", None).unwrap();
            let mut s = ServerSession::new(8);
            f.open_session(&mut s, "mallory", now);
            held.push((f, s));
        }
        let e = table.admit(&meta.sha1, "mallory", b"t", None).unwrap_err();
        assert_eq!(e.code, ErrorCode::Busy);
        assert!(e.text.contains("sessions of mallory"), "{}", e.text);
        // Everyone else is still served.
        table.admit(&meta.sha1, "bob", b"t", None).unwrap();
        // One of them ends (and one goes on to another file): places again.
        let (f, mut s) = held.pop().unwrap();
        session_closed(&mut s, Some(&f));
        table.admit(&meta.sha1, "mallory", b"t", None).unwrap();
        assert_eq!(f.sessions_of("mallory"), MAX_SESSIONS_PER_USER - 1);
        let (f, mut s) = held.pop().unwrap();
        let mut out = Vec::new();
        let other = Message::Handshake {
            version: crate::peer::VERSION,
            file_id: Sha1Digest([7; 20]),
            user: "mallory",
            ticket: b"t",
        };
        let _ = session_message(&mut s, Some(&f), &other, now, &mut out);
        assert_eq!(f.sessions_of("mallory"), MAX_SESSIONS_PER_USER - 2);
        for (f, mut s) in held {
            session_closed(&mut s, Some(&f));
        }
        assert!(lock(&f.users).is_empty(), "no entry kept for a user with no session");
    }

    #[test]
    fn one_user_holds_at_most_half_a_nodes_sessions_across_files() {
        let table = ServeTable::new(Box::new(|_: &_, _: &str, _: &[u8], _| true));
        let files: Vec<FileMeta> = (0..=MAX_USER_SESSIONS / MAX_SESSIONS_PER_USER)
            .map(|i| {
                let id = Sha1Digest([i as u8 + 10; 20]);
                let meta =
                    FileMeta { name: format!("f{i}"), len: 1, sha1: id, piece_hashes: vec![id] };
                table.insert(ServedFile::complete(meta.clone(), tempfile::tempfile().unwrap()));
                meta
            })
            .collect();
        let now = Instant::now();
        let mut held = Vec::new();
        'fill: for meta in &files {
            for _ in 0..MAX_SESSIONS_PER_USER {
                if held.len() == MAX_USER_SESSIONS {
                    break 'fill;
                }
                let f = table.admit(&meta.sha1, "mallory", b"t", None).unwrap();
                let mut s = ServerSession::new(8);
                f.open_session(&mut s, "mallory", now);
                held.push((f, s));
            }
        }
        let last = files.last().unwrap();
        let e = table.admit(&last.sha1, "mallory", b"t", None).unwrap_err();
        assert_eq!(e.code, ErrorCode::Busy);
        assert!(e.text.contains("sessions to mallory"), "{}", e.text);
        table.admit(&last.sha1, "bob", b"t", None).unwrap();
        let (f, mut s) = held.pop().unwrap();
        session_closed(&mut s, Some(&f));
        table.admit(&last.sha1, "mallory", b"t", None).unwrap();
        for (f, mut s) in held {
            session_closed(&mut s, Some(&f));
        }
        assert!(lock(&table.users).is_empty(), "no entry kept for a user with no session");
    }

    #[test]
    fn files_served_on_demand_open_per_use_and_close_after() {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        let meta = FileMeta {
            name: "f".into(),
            len: 1,
            sha1: Sha1Digest([5; 20]),
            piece_hashes: vec![Sha1Digest([5; 20])],
        };
        let table = ServeTable::new(Box::new(|_: &_, _: &str, ticket: &[u8], _| ticket == b"ok"));
        let opened = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(AtomicBool::new(false));
        let (m, o, f) = (meta.clone(), Arc::clone(&opened), Arc::clone(&fail));
        table.insert_lazy(
            meta.sha1,
            Arc::new(move || {
                if f.load(Ordering::Relaxed) {
                    return Err(std::io::Error::other("changed"));
                }
                o.fetch_add(1, Ordering::Relaxed);
                Ok(ServedFile::complete(m.clone(), tempfile::tempfile()?))
            }),
        );
        assert!(table.contains(&meta.sha1));
        assert_eq!(opened.load(Ordering::Relaxed), 0, "nothing opened before it is asked for");
        let bad = table.admit(&meta.sha1, "u", b"no", None).unwrap_err();
        assert_eq!(bad.code, ErrorCode::BadTicket);
        assert_eq!(opened.load(Ordering::Relaxed), 0, "a refused downloader opens nothing");
        let a = table.admit(&meta.sha1, "u", b"ok", None).unwrap();
        let b = table.get(&meta.sha1).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one open instance while it is served");
        assert_eq!(opened.load(Ordering::Relaxed), 1);
        drop((a, b));
        let c = table.get(&meta.sha1).unwrap();
        assert_eq!(opened.load(Ordering::Relaxed), 2, "closed after its last use, opened again");
        drop(c);
        fail.store(true, Ordering::Relaxed);
        assert!(table.get(&meta.sha1).is_none(), "a file that cannot be opened is not served");
        let e = table.admit(&meta.sha1, "u", b"ok", None).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownFile);
        // Said once, not at each downloader's try (a black-box run saw 14
        // lines for one truncated file); said again after it opened.
        assert!(table.lazy_map()[&meta.sha1].failed, "the failure is remembered, so logged once");
        fail.store(false, Ordering::Relaxed);
        drop(table.get(&meta.sha1).unwrap());
        assert!(!table.lazy_map()[&meta.sha1].failed);
        table.remove(&meta.sha1);
        assert!(!table.contains(&meta.sha1));
    }

    #[test]
    fn haves_since_names_each_new_piece_once() {
        let meta = FileMeta {
            name: "f".into(),
            len: 3 * crate::meta::PIECE_LEN,
            sha1: Sha1Digest([1; 20]),
            piece_hashes: vec![Sha1Digest([0; 20]); 3],
        };
        let file = tempfile::tempfile().unwrap();
        let served = ServedFile::partial(meta, file, Bitfield::new(3));
        let (mut announced, mut seen) = (served.bitfield(), served.version());
        let mut out = Vec::new();
        served.haves_since(&mut announced, &mut seen, &mut out);
        assert!(out.is_empty());
        served.add_piece(2);
        served.add_piece(0);
        served.haves_since(&mut announced, &mut seen, &mut out);
        let mut got = Vec::new();
        let mut b = &out[..];
        while let Ok((m, used)) = peer::decode(b) {
            got.push(m.clone());
            b = &b[used..];
        }
        assert_eq!(got, vec![Message::Have(0), Message::Have(2)]);
        out.clear();
        served.haves_since(&mut announced, &mut seen, &mut out);
        assert!(out.is_empty(), "nothing new");
    }
}
