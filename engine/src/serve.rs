//! The piece server: what a node shares ([`ServeTable`]) and the drivers
//! that serve it ([`PieceServer`]): the threads driver here, the io_uring
//! driver in `crate::uring` (same behaviour, one ring on one thread).
//!
//! A [`ServedFile`] is a file this node holds fully or partly: an open file
//! (the shared file, or a download's `.part`) and the bitfield of pieces it
//! can serve. Downloads add pieces as they verify them; connected downloaders
//! learn of them through `have` messages.
//!
//! The threads driver runs one thread per connection, reads requests with a
//! short timeout (to push `have`s and notice a stop), answers each request
//! with the piece header and then `sendfile(2)` from the file, so piece data
//! is never copied through user space. Limits: total connections, outstanding
//! requests per connection, handshake and idle timeouts; a peer that breaks
//! the protocol gets an error frame and is disconnected, and only that peer.
//!
//! Lock order: `ServeTable::files` before any `ServedFile::have`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::meta::{Bitfield, FileMeta, Sha1Digest};
use crate::peer::{self, ErrorCode, Message, PeerDecodeError, Refuse, ServerAction, ServerSession};

pub use crate::uring::SendMethod;

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
}

impl ServedFile {
    /// A file held whole.
    pub fn complete(meta: FileMeta, file: File) -> Arc<Self> {
        let have = Bitfield::full(meta.piece_hashes.len() as u32);
        Self::partial(meta, file, have)
    }

    /// A file held partly: `have` lists the verified pieces.
    pub fn partial(meta: FileMeta, file: File, have: Bitfield) -> Arc<Self> {
        Arc::new(Self {
            meta,
            file,
            have: RwLock::new(have),
            version: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
        })
    }

    /// The file's metadata.
    pub fn meta(&self) -> &FileMeta {
        &self.meta
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
}

/// Decides whether `user` with `ticket` may fetch the file `file_id`.
pub type Admission = dyn Fn(&Sha1Digest, &str, &[u8]) -> bool + Send + Sync;

/// Everything this node serves, by file id (whole-file SHA1).
pub struct ServeTable {
    files: RwLock<HashMap<Sha1Digest, Arc<ServedFile>>>,
    admit: Box<Admission>,
}

impl std::fmt::Debug for ServeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.files.read().map(|m| m.len()).unwrap_or(0);
        write!(f, "ServeTable({n} files)")
    }
}

impl ServeTable {
    /// An empty table admitting downloaders according to `admit`.
    pub fn new(admit: Box<Admission>) -> Arc<Self> {
        Arc::new(Self { files: RwLock::new(HashMap::new()), admit })
    }

    /// Serves a file (replacing an earlier entry for the same content).
    pub fn insert(&self, file: Arc<ServedFile>) {
        if let Ok(mut m) = self.files.write() {
            m.insert(file.meta.sha1, file);
        }
    }

    /// Stops serving a file.
    pub fn remove(&self, id: &Sha1Digest) {
        if let Ok(mut m) = self.files.write() {
            m.remove(id);
        }
    }

    /// Stops serving everything.
    pub fn clear(&self) {
        if let Ok(mut m) = self.files.write() {
            m.clear();
        }
    }

    /// The served file with this id.
    pub fn get(&self, id: &Sha1Digest) -> Option<Arc<ServedFile>> {
        self.files.read().ok()?.get(id).cloned()
    }

    /// Whether `user` with `ticket` may fetch `id`.
    pub(crate) fn admits(&self, id: &Sha1Digest, user: &str, ticket: &[u8]) -> bool {
        (self.admit)(id, user, ticket)
    }
}

/// Limits of a piece server.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections served at once; more get a `busy` error.
    pub max_connections: usize,
    /// Connections served at once from one IP address.
    pub max_per_ip: usize,
    /// Unanswered requests allowed per connection.
    pub max_outstanding: u32,
    /// Time allowed for the handshake.
    pub handshake_timeout: Duration,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Fault injection: a pause before each piece is sent (zero in normal
    /// use; tests and demos slow a seeder down with it).
    pub piece_delay: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_per_ip: 32,
            max_outstanding: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            piece_delay: Duration::ZERO,
        }
    }
}

/// How often a connection wakes to push `have`s and check for a stop.
pub(crate) const TICK: Duration = Duration::from_millis(100);

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

/// A threads-backend connection's share of the connection caps.
struct ConnSlot {
    active: Arc<AtomicUsize>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
        let mut ips = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = ips.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                ips.remove(&self.ip);
            }
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    table: &Arc<ServeTable>,
    limits: ServerLimits,
    stop: &Arc<AtomicBool>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    let per_ip: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::new(Mutex::new(HashMap::new()));
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
        if active.load(Ordering::Acquire) >= limits.max_connections {
            let _ = send_error(&mut stream, ErrorCode::Busy, "too many connections");
            continue;
        }
        {
            let mut ips = per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = ips.entry(peer.ip()).or_insert(0);
            if *n >= limits.max_per_ip {
                drop(ips);
                let _ = send_error(
                    &mut stream,
                    ErrorCode::Busy,
                    "too many connections from your address",
                );
                continue;
            }
            *n += 1;
        }
        active.fetch_add(1, Ordering::AcqRel);
        // Gives the connection's place back when dropped: when the thread
        // ends, and also when it cannot be started (the closure is dropped).
        let slot =
            ConnSlot { active: Arc::clone(&active), per_ip: Arc::clone(&per_ip), ip: peer.ip() };
        let (table, stop) = (Arc::clone(table), Arc::clone(stop));
        let spawned = thread::Builder::new().name("piece-conn".into()).spawn(move || {
            let _slot = slot;
            if let Err(e) = serve_connection(stream, &table, limits, &stop) {
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
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("refused: {0}")]
    Refused(String),
    #[error("timed out")]
    Timeout,
    #[error("stopped")]
    Stopped,
}

fn serve_connection(
    mut stream: TcpStream,
    table: &ServeTable,
    limits: ServerLimits,
    stop: &AtomicBool,
) -> Result<(), ConnEnd> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(TICK))?;
    let mut session = ServerSession::new(limits.max_outstanding);
    let mut served: Option<Arc<ServedFile>> = None;
    let mut announced = Bitfield::new(0);
    let mut seen_version = 0;
    let mut buf = Vec::with_capacity(8192);
    let mut last_activity = Instant::now();
    let mut out = Vec::with_capacity(64);
    loop {
        if stop.load(Ordering::Acquire) {
            return Err(ConnEnd::Stopped);
        }
        // Handle every complete message in the buffer.
        loop {
            let (msg, used) = match peer::decode(&buf) {
                Ok(x) => x,
                Err(PeerDecodeError::NeedMore(_)) => break,
                Err(e) => {
                    let _ = send_error(&mut stream, ErrorCode::BadMessage, &e.to_string());
                    return Err(ConnEnd::Refused(e.to_string()));
                }
            };
            last_activity = Instant::now();
            let has = |p| served.as_ref().is_some_and(|f| f.has(p));
            match session.on_message(&msg, has) {
                Ok(ServerAction::Admit { file_id, user, ticket }) => {
                    let Some(file) = table.get(&file_id) else {
                        let _ =
                            send_error(&mut stream, ErrorCode::UnknownFile, "file not shared here");
                        return Err(ConnEnd::Refused("unknown file".into()));
                    };
                    if !table.admits(&file_id, &user, &ticket) {
                        let _ = send_error(&mut stream, ErrorCode::BadTicket, "ticket refused");
                        return Err(ConnEnd::Refused("bad ticket".into()));
                    }
                    session.accept(file.meta.geometry());
                    seen_version = file.version.load(Ordering::Acquire);
                    announced = file.bitfield();
                    out.clear();
                    peer::encode(&Message::Bitfield(announced.as_bytes()), &mut out);
                    stream.write_all(&out)?;
                    served = Some(file);
                }
                Ok(ServerAction::Serve { piece, offset, file_offset, len }) => {
                    let file = served.as_ref().expect("a session serves only after admission");
                    if !limits.piece_delay.is_zero() {
                        thread::sleep(limits.piece_delay);
                    }
                    send_piece(&mut stream, file, piece, offset, file_offset, len)?;
                    session.served();
                }
                Ok(ServerAction::Cancel { .. } | ServerAction::Nothing) => {}
                Err(Refuse { code, text, fatal }) => {
                    send_error(&mut stream, code, &text)?;
                    if fatal {
                        return Err(ConnEnd::Refused(text));
                    }
                }
            }
            buf.drain(..used);
        }
        // Tell the downloader about pieces verified since the last look.
        if let Some(file) = &served {
            let v = file.version.load(Ordering::Acquire);
            if v != seen_version {
                seen_version = v;
                let now = file.bitfield();
                out.clear();
                for i in 0..now.len() {
                    if now.get(i) && !announced.get(i) {
                        peer::encode(&Message::Have(i), &mut out);
                    }
                }
                announced = now;
                stream.write_all(&out)?;
            }
        }
        let limit = if session.is_open() { limits.idle_timeout } else { limits.handshake_timeout };
        if last_activity.elapsed() > limit {
            let _ = send_error(&mut stream, ErrorCode::Busy, "idle too long");
            return Err(ConnEnd::Timeout);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
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

fn send_error(stream: &mut TcpStream, code: ErrorCode, text: &str) -> io::Result<()> {
    let mut out = Vec::new();
    peer::encode(&Message::Error { code, text }, &mut out);
    stream.write_all(&out)
}
