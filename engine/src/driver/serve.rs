//! The piece server ([`PieceServer`]) over its two drivers: the threads
//! driver here, the io_uring driver in `crate::uring` (same behaviour, one
//! ring on one thread). What a node shares, the connection caps and the
//! admission of a handshake are in [`crate::share`], which both drivers use;
//! the protocol is [`ServerSession`].
//!
//! The threads driver runs one thread per connection, reads requests with a
//! short timeout (to push `have`s and notice a stop), answers each request
//! with the piece header and then `sendfile(2)` from the file, so piece data
//! is never copied through user space. Limits: total connections, outstanding
//! requests per connection, handshake and idle timeouts; a peer that breaks
//! the protocol gets an error frame and is disconnected, and only that peer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::link::PeerStream;
use crate::meta::Bitfield;
use crate::peer::{self, ErrorCode, Message, PeerDecodeError, Refuse, ServerAction, ServerSession};
use crate::share::{self, ConnCaps, TICK};
use crate::slots::{SendSlots, KEEPALIVE};

pub use crate::share::{
    Admission, Opener, ServeTable, ServedFile, ServerLimits, MAX_DOWNLOADERS, MAX_SESSIONS_PER_USER,
};
pub use crate::uring::SendMethod;

/// Which I/O driver serves pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One io_uring per serving thread.
    Uring,
    /// A thread per connection with blocking sockets and sendfile.
    Threads,
}

impl Backend {
    /// The backend's name as `--io` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Threads => "threads",
        }
    }

    /// Picks a backend: the one forced, else io_uring when the kernel offers
    /// everything the driver uses. Returns it and the reason, for the one log
    /// line that says which backend runs and why.
    pub fn choose(forced: Option<Backend>) -> (Backend, String) {
        match forced {
            Some(Backend::Threads) => (Backend::Threads, "forced with --io threads".into()),
            Some(Backend::Uring) => match crate::uring::probe() {
                Ok(()) => (Backend::Uring, "forced with --io uring".into()),
                Err(e) => (
                    Backend::Threads,
                    format!("--io uring asked, but io_uring is unavailable: {e}"),
                ),
            },
            None => match crate::uring::probe() {
                Ok(()) => (Backend::Uring, "io_uring probe passed".into()),
                Err(e) => (Backend::Threads, format!("io_uring unavailable: {e}")),
            },
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uring" | "io_uring" => Ok(Backend::Uring),
            "threads" => Ok(Backend::Threads),
            other => Err(format!("unknown io backend {other:?} (uring or threads)")),
        }
    }
}

/// A running piece server.
#[derive(Debug)]
pub struct PieceServer {
    addr: SocketAddr,
    backend: Backend,
    stop: Arc<AtomicBool>,
    listener: Option<Arc<TcpListener>>,
    acceptor: Option<thread::JoinHandle<()>>,
    uring: Option<crate::uring::UringServer>,
}

impl PieceServer {
    /// Starts serving `table` on `listener` with the given backend.
    pub fn start(
        listener: TcpListener,
        table: Arc<ServeTable>,
        limits: ServerLimits,
        backend: Backend,
    ) -> io::Result<Self> {
        table.set_max_downloaders(limits.max_downloaders);
        match backend {
            Backend::Threads => Self::start_threads(listener, table, limits),
            Backend::Uring => {
                let addr = listener.local_addr()?;
                Ok(Self::uring(addr, crate::uring::UringServer::start(listener, table, limits)?))
            }
        }
    }

    /// Starts the io_uring backend sending piece data with `method`
    /// ([`PieceServer::start`] uses [`SendMethod::DEFAULT`]); benchmarks and
    /// tests compare the methods with it. Fails if io_uring or an op the
    /// method needs is unavailable.
    pub fn start_uring_with(
        listener: TcpListener,
        table: Arc<ServeTable>,
        limits: ServerLimits,
        method: SendMethod,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        table.set_max_downloaders(limits.max_downloaders);
        let uring = crate::uring::UringServer::start_with(listener, table, limits, method)?;
        Ok(Self::uring(addr, uring))
    }

    fn uring(addr: SocketAddr, uring: crate::uring::UringServer) -> Self {
        Self {
            addr,
            backend: Backend::Uring,
            stop: Arc::new(AtomicBool::new(false)),
            listener: None,
            acceptor: None,
            uring: Some(uring),
        }
    }

    /// The backend serving.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts serving `table` on `listener` with one thread per connection.
    pub fn start_threads(
        listener: TcpListener,
        table: Arc<ServeTable>,
        limits: ServerLimits,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let listener = Arc::new(listener);
        let acceptor = {
            let (stop, listener) = (Arc::clone(&stop), Arc::clone(&listener));
            thread::Builder::new()
                .name("piece-accept".into())
                .spawn(move || accept_loop(&listener, &table, limits, &stop))?
        };
        Ok(Self {
            addr,
            backend: Backend::Threads,
            stop,
            listener: Some(listener),
            acceptor: Some(acceptor),
            uring: None,
        })
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and ends every connection (within one tick).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(u) = self.uring.as_mut() {
            u.stop();
        }
        if let Some(listener) = &self.listener {
            // SAFETY: shutdown on the listener's valid descriptor (kept open by
            // the Arc we hold) wakes the acceptor's blocking accept; no memory
            // is involved.
            unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
        }
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PieceServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The threads backend's connections by their id in the caps: a handle to
/// end each (a clone of its socket, shut down to end it), and whether its
/// session opened.
type Links = Arc<Mutex<HashMap<u64, (TcpStream, Arc<AtomicBool>)>>>;

/// A threads-backend connection's place under the caps, given back when
/// dropped.
struct ConnSlot {
    caps: Arc<Mutex<ConnCaps>>,
    links: Links,
    id: u64,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.caps.lock().unwrap_or_else(|p| p.into_inner()).release(self.id);
        self.links.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

/// Sleeps until `at`, or ends the connection once the server stops or the
/// downloader on `fd` is gone: reset (`link::abort`) or closed both ways. A
/// downloader that only stopped sending still reads, and waits on.
fn sleep_until(at: Instant, stop: &AtomicBool, fd: std::os::fd::RawFd) -> Result<(), ConnEnd> {
    loop {
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        if stop.load(Ordering::Acquire) {
            return Err(ConnEnd::Stopped);
        }
        if crate::link::reset_within(
            fd,
            left.clamp(Duration::from_millis(1), Duration::from_millis(50)),
        ) {
            return Err(ConnEnd::Io(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the downloader left while its piece waited",
            )));
        }
    }
}

/// The node's upload slots for the threads backend ([`crate::slots`]): a
/// connection thread holds one while it sends a piece; one that waits
/// sleeps on the condition variable until a release hands it the slot.
struct SlotGate {
    state: Mutex<(SendSlots<u64>, HashSet<u64>)>,
    handed: Condvar,
}

impl SlotGate {
    fn new(limit: usize) -> Self {
        Self { state: Mutex::new((SendSlots::new(limit), HashSet::new())), handed: Condvar::new() }
    }

    /// Connection `id` starts a piece: when it may ([`SendSlots::start_at`])
    /// and the connections sending at once then ([`SendSlots::senders`]).
    fn start(&self, id: u64, rate: crate::slots::UploadRate, len: u32) -> (Instant, usize) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let start = st.0.start_at(Instant::now(), rate, len);
        (start, st.0.senders(id, start, rate, len))
    }

    /// Connection `id` ended with `unsent` bytes of the last piece it
    /// started ([`start`](Self::start)) not gone: it sends no more
    /// ([`SendSlots::left`]) and they go back ([`SendSlots::refund`]).
    fn left(&self, id: u64, rate: crate::slots::UploadRate, unsent: u32) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0.left(id);
        st.0.refund(Instant::now(), rate, unsent);
    }

    /// Waits for a slot for connection `id` (a piece of `rank`,
    /// [`SendSlots::acquire_ranked`]). Each waiter hands on, every tick,
    /// slots held past their time. Gives up once the server stops, or, if
    /// `may_answer` (its downloader understands `busy`), once it has
    /// waited [`crate::slots::BUSY_AFTER`].
    fn acquire<'a>(
        &'a self,
        id: u64,
        rank: u32,
        stop: &AtomicBool,
        may_answer: bool,
    ) -> Result<SlotHeld<'a>, NoSlot> {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if g.0.acquire_ranked(id, rank, Instant::now()) {
            return Ok(SlotHeld(self, id));
        }
        loop {
            let handed = g.0.expire(Instant::now());
            if !handed.is_empty() {
                g.1.extend(handed);
                self.handed.notify_all();
            }
            if g.1.remove(&id) {
                return Ok(SlotHeld(self, id));
            }
            if stop.load(Ordering::Acquire) {
                g.0.forget(id);
                return Err(NoSlot::Stopped);
            }
            if may_answer && !g.0.overdue(Instant::now(), |k| k == id).is_empty() {
                return Err(NoSlot::Busy);
            }
            g = self.handed.wait_timeout(g, TICK).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// Why [`SlotGate::acquire`] gave up.
enum NoSlot {
    /// The server stops.
    Stopped,
    /// It waited too long: answer the requests queued with `busy`.
    Busy,
}

/// A slot held by a connection, given back (and handed on) when dropped.
struct SlotHeld<'a>(&'a SlotGate, u64);

impl Drop for SlotHeld<'_> {
    fn drop(&mut self) {
        let mut g = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(next) = g.0.release(self.1, Instant::now()) {
            g.1.insert(next);
            self.0.handed.notify_all();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    table: &Arc<ServeTable>,
    limits: ServerLimits,
    stop: &Arc<AtomicBool>,
) {
    let caps = Arc::new(Mutex::new(ConnCaps::new(&limits)));
    let links: Links = Arc::default();
    let gate = Arc::new(SlotGate::new(limits.send_slots));
    while !stop.load(Ordering::Acquire) {
        let (mut stream, peer) = match listener.accept() {
            Ok(x) => x,
            Err(_) if stop.load(Ordering::Acquire) => return,
            Err(e) => {
                tracing::warn!("piece server accept: {e}");
                thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let admitted = {
            let mut caps = caps.lock().unwrap_or_else(|p| p.into_inner());
            if caps.live() >= limits.max_connections {
                // Which keep their place if one must give it up.
                for (id, (_, opened)) in links.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                    if opened.load(Ordering::Relaxed) {
                        caps.opened(*id);
                    }
                }
            }
            let admitted = caps.admit(peer.ip(), Instant::now());
            if let Some(line) = caps.full_report(Instant::now()) {
                tracing::warn!("{line}");
            }
            admitted
        };
        let (id, evict) = match admitted {
            Ok(x) => x,
            Err(text) => {
                let _ = send_error(&mut stream, ErrorCode::Busy, text);
                continue;
            }
        };
        if let Some(victim) = evict {
            // Its thread's read ends, and so the thread.
            if let Some((s, _)) = links.lock().unwrap_or_else(|p| p.into_inner()).get(&victim) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        let opened = Arc::new(AtomicBool::new(false));
        if let Ok(handle) = stream.try_clone() {
            let mut links = links.lock().unwrap_or_else(|p| p.into_inner());
            links.insert(id, (handle, Arc::clone(&opened)));
        }
        // Gives the connection's place back when dropped: when the thread
        // ends, and also when it cannot be started (the closure is dropped).
        let slot = ConnSlot { caps: Arc::clone(&caps), links: Arc::clone(&links), id };
        let (table, stop, gate) = (Arc::clone(table), Arc::clone(stop), Arc::clone(&gate));
        let spawned = thread::Builder::new().name("piece-conn".into()).spawn(move || {
            let _slot = slot;
            let conn = (&*gate, id, &*opened);
            if let Err(e) = serve_connection(stream, &table, limits, &stop, conn) {
                tracing::debug!(%peer, "piece connection ended: {e}");
            }
        });
        if spawned.is_err() {
            tracing::warn!("piece server: cannot start a connection thread");
        }
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnEnd {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("refused: {0}")]
    Refused(String),
    #[error("timed out")]
    Timeout,
    #[error("stopped")]
    Stopped,
}

fn serve_connection(
    tcp: TcpStream,
    table: &ServeTable,
    limits: ServerLimits,
    stop: &AtomicBool,
    conn: (&SlotGate, u64, &AtomicBool),
) -> Result<(), ConnEnd> {
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(TICK))?;
    let mut stream = PeerStream::accept(tcp, table.security(), limits.handshake_timeout)
        .map_err(|e| ConnEnd::Refused(format!("secure handshake: {e}")))?;
    let mut session = ServerSession::new(limits.max_outstanding);
    let mut served: Option<Arc<ServedFile>> = None;
    let mut paced = None;
    let end = serve_session(
        &mut stream,
        table,
        limits,
        stop,
        conn,
        (&mut session, &mut served, &mut paced),
    );
    share::session_closed(&mut session, served.as_deref());
    // Ended (reset, most often) with the last piece given to TCP perhaps
    // not all gone: what had not goes back ([`SendSlots::unsent`]).
    if let (Err(_), Some(rate), Some((at, pace, len))) = (&end, limits.upload_rate, paced) {
        conn.0.left(conn.1, rate, SendSlots::<u64>::unsent(at, pace, len, Instant::now()));
    }
    end
}

/// The last piece a connection started under the upload rate: when it
/// starts, its pace (bytes a second) and length ([`SendSlots::unsent`]).
type Paced = Option<(Instant, u64, u32)>;

/// The messages of one admitted (or to be admitted) session, until it ends.
fn serve_session(
    stream: &mut PeerStream,
    table: &ServeTable,
    limits: ServerLimits,
    stop: &AtomicBool,
    (gate, id, opened): (&SlotGate, u64, &AtomicBool),
    (session, served, paced): (&mut ServerSession, &mut Option<Arc<ServedFile>>, &mut Paced),
) -> Result<(), ConnEnd> {
    let holder = stream.remote_key();
    // Piece data for an encrypted link: read from the file, then sealed.
    let mut piece_buf = Vec::new();
    let mut announced = Bitfield::new(0);
    let mut seen_version = 0;
    let mut buf = Vec::with_capacity(8192);
    let mut last_activity = Instant::now();
    let mut out = Vec::with_capacity(64);
    // Pieces asked for and not yet sent (piece, offset, file offset, length).
    let mut asked: VecDeque<(u32, u32, u64, u32)> = VecDeque::new();
    // The downloader stopped sending (the answers it asked for still go).
    let mut ended = false;
    // The group of the ticket the session was admitted with
    // (`ServeTable::still_admits`).
    let mut group: Option<String> = None;
    loop {
        if stop.load(Ordering::Acquire) {
            return Err(ConnEnd::Stopped);
        }
        // Handle every complete message in the buffer; a handshake (which
        // ends the session, to go on to another file) waits until the
        // pieces asked for before it are out.
        loop {
            let (msg, used) = match peer::decode(&buf) {
                Ok(x) => x,
                Err(PeerDecodeError::NeedMore(_)) => break,
                Err(e) => {
                    let _ = send_error(stream, ErrorCode::BadMessage, &e.to_string());
                    return Err(ConnEnd::Refused(e.to_string()));
                }
            };
            if !asked.is_empty() && matches!(msg, Message::Handshake { .. }) {
                break;
            }
            last_activity = Instant::now();
            out.clear();
            let answer =
                share::session_message(session, served.as_deref(), &msg, last_activity, &mut out);
            if !out.is_empty() {
                stream.send(&out)?;
            }
            match answer {
                Ok(ServerAction::Admit { file_id, user, ticket }) => {
                    let file = match table.admit(&file_id, &user, &ticket, holder.as_ref()) {
                        Ok(file) => file,
                        Err(Refuse { code, text, .. }) => {
                            let _ = send_error(stream, code, &text);
                            return Err(ConnEnd::Refused(text));
                        }
                    };
                    seen_version = file.version();
                    group = crate::ticket::group_of(&ticket);
                    announced = file.open_session(session, &user, last_activity);
                    out.clear();
                    peer::encode(&Message::Bitfield(announced.as_bytes()), &mut out);
                    stream.send(&out)?;
                    *served = Some(file);
                    // It keeps its place when all are taken.
                    opened.store(true, Ordering::Relaxed);
                }
                Ok(ServerAction::Serve { piece, offset, file_offset, len }) => {
                    asked.push_back((piece, offset, file_offset, len));
                }
                Ok(ServerAction::Cancel { piece, offset }) => {
                    let at = asked.iter().position(|a| a.0 == piece && a.1 == offset);
                    if at.and_then(|i| asked.remove(i)).is_some() {
                        out.clear();
                        share::session_served(session, served.as_deref(), Instant::now(), &mut out);
                        if !out.is_empty() {
                            stream.send(&out)?;
                        }
                    }
                }
                // A reject went out with the offers.
                Ok(ServerAction::Reject { .. } | ServerAction::Nothing) => {}
                Err(Refuse { code, text, fatal }) => {
                    send_error(stream, code, &text)?;
                    if fatal {
                        return Err(ConnEnd::Refused(text));
                    }
                }
            }
            buf.drain(..used);
        }
        // One piece asked for goes out, then what arrived meanwhile is
        // read; the next waits in `asked`.
        if !asked.is_empty() {
            let file = served.as_ref().expect("a session serves only after admission");
            // A seed sends first the piece it sent least (and ranks it by
            // that at the upload slots), chosen again once a slot is its.
            let least = |asked: &VecDeque<(u32, u32, u64, u32)>| {
                file.least_sent(asked.iter().map(|a| a.0)).unwrap_or((0, 0))
            };
            // A seed serving a crowd its first copies keeps back a piece
            // that went out since it was asked for, and defers one to a
            // downloader sent more than its share: before waiting for a
            // slot, and again once it holds one.
            if withhold_least(stream, session, file, &mut asked, &mut out)? {
                continue;
            }
            // Given back once the piece is out (or its send failed).
            let _held = match gate.acquire(id, least(&asked).1, stop, session.takes_busy()) {
                Ok(held) => held,
                Err(NoSlot::Stopped) => return Err(ConnEnd::Stopped),
                Err(NoSlot::Busy) => {
                    out.clear();
                    let requests = asked.drain(..).map(|(p, o, _, l)| (p, o, l));
                    share::session_busy(session, Some(file), requests, Instant::now(), &mut out);
                    stream.send(&out)?;
                    continue;
                }
            };
            if withhold_least(stream, session, file, &mut asked, &mut out)? {
                continue;
            }
            let (i, _) = least(&asked);
            let (piece, offset, file_offset, len) = asked.remove(i).expect("in range");
            file.note_sent(session, piece);
            let mut start = Instant::now();
            let mut pace = 0;
            if let Some(rate) = limits.upload_rate {
                let senders;
                (start, senders) = gate.start(id, rate, len);
                pace = rate.share(senders);
                crate::link::pace(stream.raw_fd(), pace);
            }
            // Far ahead, the downloader hears a `have` of the piece every
            // KEEPALIVE meanwhile, or it would take the request as stalled
            // (see the io_uring driver's `Conn::wait_to_start`).
            let at = start + limits.piece_delay;
            let fd = stream.raw_fd();
            let waited = (|| {
                while at.saturating_duration_since(Instant::now()) > KEEPALIVE {
                    out.clear();
                    peer::encode(&Message::Have(piece), &mut out);
                    stream.send(&out)?;
                    sleep_until(Instant::now() + KEEPALIVE, stop, fd)?;
                }
                sleep_until(at, stop, fd)
            })();
            if let Err(e) = waited {
                // Never to go: its bytes go back to the budget.
                if let Some(rate) = limits.upload_rate {
                    gate.left(id, rate, len);
                }
                return Err(e);
            }
            if limits.upload_rate.is_some() {
                *paced = Some((at, pace, len));
            }
            match &mut *stream {
                PeerStream::Plain(tcp) => {
                    send_piece(tcp, file, piece, offset, file_offset, len)?;
                }
                secure => {
                    seal_piece(secure, file, piece, offset, file_offset, len, &mut piece_buf)?;
                }
            }
            last_activity = Instant::now();
            out.clear();
            share::session_served(session, Some(file), last_activity, &mut out);
            if !out.is_empty() {
                stream.send(&out)?;
            }
        }
        let group_gone = |f: &ServedFile| {
            group.as_deref().is_some_and(|g| !table.still_admits(&f.meta().sha1, g))
        };
        if served.as_deref().is_some_and(|f| f.is_withdrawn() || group_gone(f)) {
            let _ = send_error(stream, ErrorCode::UnknownFile, share::WITHDRAWN);
            return Err(ConnEnd::Refused(share::WITHDRAWN.into()));
        }
        // Tell the downloader about pieces verified since the last look.
        if let Some(file) = &served {
            out.clear();
            file.haves_since(&mut announced, &mut seen_version, &mut out);
            if !out.is_empty() {
                stream.send(&out)?;
            }
        }
        // With pieces still asked for, read only what is there already;
        // a downloader that stopped sending still gets them.
        if !asked.is_empty() && (ended || !stream.readable_now()) {
            continue;
        }
        if ended {
            return Ok(());
        }
        let limit = if session.is_open() { limits.idle_timeout } else { limits.handshake_timeout };
        if last_activity.elapsed() > limit {
            let _ = send_error(stream, ErrorCode::Busy, "idle too long");
            return Err(ConnEnd::Timeout);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => ended = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The piece `session` would send next of those `asked` (the least sent)
/// is kept back or deferred if the file's plan says so
/// ([`share::session_withholds`]): it leaves `asked`, and its `reject` or
/// `busy` and any offers go out. True if so.
fn withhold_least(
    stream: &mut PeerStream,
    session: &mut ServerSession,
    file: &ServedFile,
    asked: &mut VecDeque<(u32, u32, u64, u32)>,
    out: &mut Vec<u8>,
) -> io::Result<bool> {
    let Some((i, _)) = file.least_sent(asked.iter().map(|a| a.0)) else { return Ok(false) };
    let (piece, offset, _, len) = asked[i];
    out.clear();
    if !share::session_withholds(session, Some(file), (piece, offset, len), Instant::now(), out) {
        return Ok(false);
    }
    asked.remove(i);
    stream.send(out)?;
    Ok(true)
}

/// Sends a piece message on an encrypted link: the header sealed on its
/// own, then the data read from the file into `buf` (kept at its largest
/// size for the next piece: overwritten, never zeroed) and sealed.
fn seal_piece(
    stream: &mut PeerStream,
    file: &ServedFile,
    piece: u32,
    offset: u32,
    file_offset: u64,
    len: u32,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut header = Vec::with_capacity(peer::PIECE_HEADER_LEN);
    peer::encode_piece_header(piece, offset, len as usize, &mut header)
        .ok_or_else(|| io::Error::other("piece too large"))?;
    let n = len as usize;
    if buf.len() < n {
        buf.resize(n, 0);
    }
    file.file.read_exact_at(&mut buf[..n], file_offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(io::ErrorKind::UnexpectedEof, "shared file shrank")
        } else {
            e
        }
    })?;
    stream.write_all(&header)?;
    stream.write_all(&buf[..n])?;
    stream.flush()?;
    file.uploaded.fetch_add(u64::from(len), Ordering::Relaxed);
    Ok(())
}

/// Sends a piece message: the header from user space, the data with
/// sendfile(2) straight from the page cache.
fn send_piece(
    stream: &mut TcpStream,
    file: &ServedFile,
    piece: u32,
    offset: u32,
    file_offset: u64,
    len: u32,
) -> io::Result<()> {
    let mut header = Vec::with_capacity(peer::PIECE_HEADER_LEN);
    peer::encode_piece_header(piece, offset, len as usize, &mut header)
        .ok_or_else(|| io::Error::other("piece too large"))?;
    send_more(stream, &header)?;
    let mut off = libc::off_t::try_from(file_offset).map_err(io::Error::other)?;
    let mut left = len as usize;
    while left > 0 {
        // SAFETY: both descriptors are open for the call (owned by `stream` and
        // `file`); `off` is a valid, exclusively borrowed off_t that sendfile
        // advances. No user buffer is involved.
        let n =
            unsafe { libc::sendfile(stream.as_raw_fd(), file.file.as_raw_fd(), &mut off, left) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            // The file is shorter than its metadata: it changed under us.
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "shared file shrank"));
        }
        left -= n as usize;
    }
    file.uploaded.fetch_add(u64::from(len), Ordering::Relaxed);
    Ok(())
}

/// Writes all of `bytes` with MSG_MORE: the data that follows joins them in
/// the same segments.
fn send_more(stream: &mut TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid slice for the duration of the call and the
        // descriptor is owned by `stream`.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_MORE | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

fn send_error(stream: &mut impl Write, code: ErrorCode, text: &str) -> io::Result<()> {
    let mut out = Vec::new();
    peer::encode(&Message::Error { code, text }, &mut out);
    stream.write_all(&out)?;
    stream.flush()
}
