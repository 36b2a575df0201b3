//! The I/O around [`crate::secure`]: key files, pinned keys, and an
//! encrypted tokio stream.
//!
//! - [`load_or_create_key`]: a long-term key pair in a file of its own,
//!   created on first start with mode 0600; a file others can read, or one
//!   that is damaged, is an error naming it.
//! - [`Pins`]: keys first seen for an address (SSH's `known_hosts`), one
//!   `ADDRESS KEY` line each, appended and fsync'ed when learnt.
//! - [`SecureStream`]: a [`Link`] over an `AsyncRead + AsyncWrite` stream,
//!   itself `AsyncRead + AsyncWrite`, so the control plane's frame code runs
//!   over it unchanged; [`BlockingSecureStream`], the same over a blocking
//!   `Read + Write` stream.

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{ready, Context, Poll};

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::secure::{Keypair, Link, PublicKey, SecureError, RECORD_HEADER};

/// The first line of a key file.
const KEY_FILE_HEAD: &str = "# ringshare private key (X25519). Keep it secret: mode 0600.";

/// Why a key file cannot be used.
#[derive(Debug, Error)]
pub enum KeyFileError {
    /// The file could not be read, created or written. (The OS error is
    /// in the message, so it is not also the source: see
    /// [`crate::fsio::PathIoError`].)
    #[error("key file {path}: {os}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        os: io::Error,
    },
    /// Others may read the file.
    #[error(
        "key file {path} is readable by others (mode {mode:04o}): run `chmod 600 {path}` \
         (and consider the key leaked if others did read it)"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold a key.
    #[error("key file {path} is damaged: {why} (move it away to make a new key)")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// Loads the key pair at `path`, or creates it (mode 0600, fsync'ed, the
/// directory too) if the file does not exist.
pub fn load_or_create_key(path: &Path) -> Result<Keypair, KeyFileError> {
    let io_err = |os| KeyFileError::Io { path: path.to_owned(), os };
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyFileError::Exposed { path: path.to_owned(), mode });
            }
            let text = std::fs::read_to_string(path).map_err(|e| {
                if e.kind() == io::ErrorKind::InvalidData {
                    KeyFileError::Damaged { path: path.to_owned(), why: "not text".into() }
                } else {
                    io_err(e)
                }
            })?;
            parse_key_file(&text)
                .map_err(|why| KeyFileError::Damaged { path: path.to_owned(), why })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = Keypair::generate();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io_err)?;
            }
            let text = format!("{KEY_FILE_HEAD}\n{}\n", hex::encode(key.secret()));
            // Written whole under a temporary name, then linked into place:
            // two processes starting at once never see half a key, and the
            // one that loses the race loads the winner's.
            let tmp = crate::fsio::with_suffix(path, &format!(".tmp{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err)?;
            let linked = f
                .write_all(text.as_bytes())
                .and_then(|()| f.sync_all())
                .and_then(|()| std::fs::hard_link(&tmp, path));
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return load_or_create_key(path)
                }
                Err(e) => return Err(io_err(e)),
            }
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
            }
            Ok(key)
        }
        Err(e) => Err(io_err(e)),
    }
}

fn parse_key_file(text: &str) -> Result<Keypair, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    let line = lines.next().ok_or("no key in it")?;
    if lines.next().is_some() {
        return Err("more than one key line".into());
    }
    let mut secret = [0u8; 32];
    hex::decode_to_slice(line, &mut secret)
        .map_err(|_| "the key line is not 64 hex digits".to_owned())?;
    Ok(Keypair::from_secret(secret))
}

/// Keys pinned on first use, by address, in a file.
#[derive(Debug)]
pub struct Pins {
    file: PathBuf,
    keys: Mutex<BTreeMap<String, PublicKey>>,
}

/// A pinned key that differs from the key the other end proved.
#[derive(Debug, Error)]
#[error(
    "{what} {addr} proved key {got}, but {file} pins key {pinned} for it; if the key was \
     changed on purpose, edit that file (or list the new key after the address in the \
     tracker list)"
)]
pub struct PinMismatch {
    /// What the other end is ("tracker").
    pub what: &'static str,
    /// Its address.
    pub addr: String,
    /// The key it proved.
    pub got: PublicKey,
    /// The key pinned.
    pub pinned: PublicKey,
    /// The pin file.
    pub file: PathBuf,
}

impl Pins {
    /// The pins in `file` (none if it does not exist yet). Lines that do not
    /// parse are an error naming the file and line.
    pub fn load(file: &Path) -> Result<Self, String> {
        let mut keys = BTreeMap::new();
        match std::fs::read_to_string(file) {
            Ok(text) => {
                for (i, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let bad = || format!("{}:{}: not `ADDRESS KEY`", file.display(), i + 1);
                    let (addr, key) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
                    let key: PublicKey = key.trim().parse().map_err(|_| bad())?;
                    keys.insert(addr.to_owned(), key);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("read {}: {e}", file.display())),
        }
        Ok(Self { file: file.to_owned(), keys: Mutex::new(keys) })
    }

    /// The pin file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The key pinned for `addr`, if any.
    pub fn get(&self, addr: &str) -> Option<PublicKey> {
        self.keys.lock().ok()?.get(addr).copied()
    }

    /// Checks `got` against the pin for `addr`, pinning it (appended to the
    /// file, fsync'ed) when there is none.
    pub fn check_or_pin(
        &self,
        what: &'static str,
        addr: &str,
        got: PublicKey,
    ) -> Result<(), Box<PinMismatch>> {
        let Ok(mut keys) = self.keys.lock() else { return Ok(()) };
        match keys.get(addr) {
            Some(&pinned) if pinned != got => Err(Box::new(PinMismatch {
                what,
                addr: addr.to_owned(),
                got,
                pinned,
                file: self.file.clone(),
            })),
            Some(_) => Ok(()),
            None => {
                keys.insert(addr.to_owned(), got);
                if let Err(e) = append_pin(&self.file, addr, got) {
                    tracing::warn!("cannot record the key of {what} {addr}: {e}");
                }
                Ok(())
            }
        }
    }
}

fn append_pin(file: &Path, addr: &str, key: PublicKey) -> io::Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(file)?;
    writeln!(f, "{addr} {key}")?;
    f.sync_all()
}

/// Why an encrypted stream failed to open.
#[derive(Debug, Error)]
pub enum HandshakeError {
    /// The connection failed or closed during the handshake (the OS error
    /// is in the message, not also the source).
    #[error("connection: {0}")]
    Io(io::Error),
    /// The handshake itself failed.
    #[error(transparent)]
    Secure(#[from] SecureError),
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// An encrypted, authenticated stream over `S`.
#[derive(Debug)]
pub struct SecureStream<S> {
    io: S,
    link: Link,
    /// Ciphertext received, not yet a whole record.
    rx: RxBuf,
    /// Plaintext decrypted, not yet read, from `plain_at` on.
    plain: Vec<u8>,
    plain_at: usize,
    /// Ciphertext to send, from `tx_at` on.
    tx: Vec<u8>,
    tx_at: usize,
    eof: bool,
}

/// Ciphertext received and not yet opened, `buf[..len]`. The buffer is
/// zeroed once, at a whole record's size, and reads fill its tail:
/// zeroing 64 KiB before every read was most of what a tracker call
/// spent in `memset`, on both ends.
#[derive(Debug, Default)]
struct RxBuf {
    buf: Vec<u8>,
    len: usize,
}

impl RxBuf {
    /// Room for the next read: at least [`RX_MIN_SPARE`] past what it
    /// holds, and toward the whole of the record the buffer begins with
    /// (its header says how long) by at most [`RX_STEP`] at a time. The
    /// buffer grows to a record's size as that record's bytes come, not
    /// before: a connection still in its handshake (or one that never
    /// sends a byte, or only a header) holds 4 KiB, not 64 (black-box runs
    /// held 10,000 such connections to a tracker: 631 MiB; 8,000 that sent
    /// a header announcing 64 KiB: 1.1 GiB).
    fn spare(&mut self) -> &mut [u8] {
        let record = match self.buf.get(..self.len.min(RECORD_HEADER)) {
            Some(&[hi, lo]) => RECORD_HEADER + usize::from(u16::from_be_bytes([hi, lo])),
            _ => 0,
        };
        // Toward the record's size as its bytes come, not at its header:
        // two bytes announcing 64 KiB made a connection hold 64 KiB
        // (8,000 such connections, a gigabyte of a tracker's memory).
        let want = (self.len + RX_MIN_SPARE).max(record.min(self.len + RX_STEP));
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        &mut self.buf[self.len..]
    }

    /// `n` bytes were read into [`RxBuf::spare`].
    fn filled(&mut self, n: usize) {
        self.len += n;
    }

    fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The first `used` bytes were opened.
    fn consume(&mut self, used: usize) {
        self.buf.copy_within(used..self.len, 0);
        self.len -= used;
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The least room a read is given past what the receive buffer holds.
const RX_MIN_SPARE: usize = 4096;
/// The most a read is given past what the receive buffer holds, toward a
/// longer record.
const RX_STEP: usize = 16 * 1024;

/// Writes are accepted into the send buffer until it holds this much.
const TX_HIGH: usize = 256 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> SecureStream<S> {
    /// Opens a link as the connecting end and completes the handshake.
    pub async fn connect(
        io: S,
        local: &Keypair,
        prologue: &[u8],
        expect: Option<PublicKey>,
    ) -> Result<Self, HandshakeError> {
        let mut tx = Vec::new();
        let link = Link::initiator(local, prologue, expect, &mut tx)?;
        Self::handshake(io, link, tx).await
    }

    /// Opens a link as the accepting end and completes the handshake.
    pub async fn accept(io: S, local: &Keypair, prologue: &[u8]) -> Result<Self, HandshakeError> {
        let link = Link::responder(local, prologue)?;
        Self::handshake(io, link, Vec::new()).await
    }

    async fn handshake(io: S, link: Link, tx: Vec<u8>) -> Result<Self, HandshakeError> {
        let mut s = Self {
            io,
            link,
            rx: RxBuf::default(),
            plain: Vec::new(),
            plain_at: 0,
            tx,
            tx_at: 0,
            eof: false,
        };
        loop {
            if s.tx_at < s.tx.len() {
                s.io.write_all(&s.tx[s.tx_at..]).await?;
                s.io.flush().await?;
                s.tx.clear();
                s.tx_at = 0;
            }
            if s.link.is_ready() {
                return Ok(s);
            }
            let n = s.io.read(s.rx.spare()).await?;
            s.rx.filled(n);
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            let used = s.link.recv(s.rx.data(), &mut s.plain, &mut s.tx)?;
            s.rx.consume(used);
        }
    }

    /// The key the other end proved.
    pub fn remote_key(&self) -> PublicKey {
        self.link.remote_key().expect("known once the handshake has ended")
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    fn poll_send_tx(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tx_at < self.tx.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.tx[self.tx_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.tx_at += n;
        }
        self.tx.clear();
        self.tx_at = 0;
        Poll::Ready(Ok(()))
    }
}

fn secure_to_io(e: SecureError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for SecureStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_at < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_at);
                buf.put_slice(&this.plain[this.plain_at..this.plain_at + n]);
                this.plain_at += n;
                if this.plain_at == this.plain.len() {
                    this.plain.clear();
                    this.plain_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return if this.rx.is_empty() {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()))
                };
            }
            let mut rb = ReadBuf::new(this.rx.spare());
            let polled = Pin::new(&mut this.io).poll_read(cx, &mut rb);
            let n = rb.filled().len();
            this.rx.filled(n);
            ready!(polled)?;
            if n == 0 {
                this.eof = true;
                continue;
            }
            let used = this
                .link
                .recv(this.rx.data(), &mut this.plain, &mut this.tx)
                .map_err(secure_to_io)?;
            this.rx.consume(used);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for SecureStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.tx.len() - this.tx_at >= TX_HIGH {
            ready!(this.poll_send_tx(cx))?;
        }
        let n = buf.len().min(TX_HIGH);
        this.link.send(&buf[..n], &mut this.tx).map_err(secure_to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_tx(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_tx(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// An encrypted, authenticated stream over a blocking `S` (a `TcpStream`),
/// itself `Read + Write`. Writes are buffered until [`std::io::Write::flush`].
#[derive(Debug)]
pub struct BlockingSecureStream<S> {
    io: S,
    link: Link,
    rx: RxBuf,
    plain: Vec<u8>,
    plain_at: usize,
    /// Sealed records to send, `tx[..tx_len]` (the buffer keeps its largest
    /// size: records overwrite it, nothing zeroes it).
    tx: Vec<u8>,
    tx_len: usize,
}

impl<S: io::Read + io::Write> BlockingSecureStream<S> {
    /// Opens a link as the connecting end and completes the handshake.
    pub fn connect(
        io: S,
        local: &Keypair,
        prologue: &[u8],
        expect: Option<PublicKey>,
    ) -> Result<Self, HandshakeError> {
        let mut tx = Vec::new();
        let link = Link::initiator(local, prologue, expect, &mut tx)?;
        Self::handshake(io, link, tx)
    }

    /// Opens a link as the accepting end and completes the handshake.
    pub fn accept(io: S, local: &Keypair, prologue: &[u8]) -> Result<Self, HandshakeError> {
        let link = Link::responder(local, prologue)?;
        Self::handshake(io, link, Vec::new())
    }

    fn handshake(io: S, link: Link, tx: Vec<u8>) -> Result<Self, HandshakeError> {
        let tx_len = tx.len();
        let mut s =
            Self { io, link, rx: RxBuf::default(), plain: Vec::new(), plain_at: 0, tx, tx_len };
        loop {
            if s.tx_len > 0 {
                s.io.write_all(&s.tx[..s.tx_len])?;
                s.io.flush()?;
                s.tx_len = 0;
            }
            if s.link.is_ready() {
                return Ok(s);
            }
            if s.fill()? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        }
    }

    /// Reads once from the socket and opens every whole record; returns
    /// the bytes read (0 at the end of the stream).
    fn fill(&mut self) -> io::Result<usize> {
        let n = self.io.read(self.rx.spare())?;
        self.rx.filled(n);
        // Only handshake replies come out of a receive; they follow what is
        // waiting to be sent.
        self.tx.truncate(self.tx_len);
        let used =
            self.link.recv(self.rx.data(), &mut self.plain, &mut self.tx).map_err(secure_to_io)?;
        self.tx_len = self.tx.len();
        self.rx.consume(used);
        Ok(n)
    }

    /// The key the other end proved.
    pub fn remote_key(&self) -> PublicKey {
        self.link.remote_key().expect("known once the handshake has ended")
    }

    /// The stream underneath (for timeouts and shutdown).
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Whether plaintext already opened waits to be read.
    pub fn has_plaintext(&self) -> bool {
        self.plain_at < self.plain.len()
    }
}

impl<S: io::Read + io::Write> io::Read for BlockingSecureStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.plain_at == self.plain.len() {
            self.plain.clear();
            self.plain_at = 0;
            if self.fill()? == 0 {
                return if self.rx.is_empty() {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
        let n = buf.len().min(self.plain.len() - self.plain_at);
        buf[..n].copy_from_slice(&self.plain[self.plain_at..self.plain_at + n]);
        self.plain_at += n;
        Ok(n)
    }
}

impl<S: io::Read + io::Write> io::Write for BlockingSecureStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.tx_len >= TX_HIGH {
            self.flush()?;
        }
        let n = buf.len().min(TX_HIGH);
        self.tx_len =
            self.link.seal_at(&buf[..n], &mut self.tx, self.tx_len).map_err(secure_to_io)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.tx_len > 0 {
            self.io.write_all(&self.tx[..self.tx_len])?;
            self.tx_len = 0;
        }
        self.io.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::{CONTROL_PROLOGUE, MAX_MESSAGE};

    /// Reads land after what is kept; consuming moves the rest to the
    /// front; there is always room for the whole record the buffer begins
    /// with, and the buffer is small until a large record comes.
    #[test]
    fn the_receive_buffer_keeps_partial_records() {
        let mut rx = RxBuf::default();
        assert!(rx.is_empty());
        let room = rx.spare().len();
        assert_eq!(room, RX_MIN_SPARE, "a connection that sent nothing holds little");
        // A record of 300 bytes, its header and three bytes in.
        rx.spare()[..5].copy_from_slice(&[1, 44, b'a', b'b', b'c']);
        rx.filled(5);
        rx.spare()[..3].copy_from_slice(b"fgh");
        rx.filled(3);
        assert_eq!(rx.data(), &[1, 44, b'a', b'b', b'c', b'f', b'g', b'h']);
        assert!(rx.spare().len() >= RX_MIN_SPARE);
        rx.consume(6);
        assert_eq!(rx.data(), b"gh");
        // A record of the largest size: its header alone does not make
        // room for it all; its bytes, as they come, do.
        rx.consume(2);
        rx.spare()[..2].copy_from_slice(&(MAX_MESSAGE as u16).to_be_bytes());
        rx.filled(2);
        assert!(rx.spare().len() <= RX_STEP, "a header alone holds no 64 KiB");
        while rx.data().len() < 2 + MAX_MESSAGE {
            let room = rx.spare().len();
            assert!(room >= RX_MIN_SPARE);
            rx.filled(room.min(2 + MAX_MESSAGE - rx.data().len()));
        }
        assert!(!rx.spare().is_empty(), "a full buffer grows rather than read nothing");
        rx.consume(rx.data().len());
        assert!(rx.is_empty());
    }

    #[test]
    fn a_key_file_is_created_private_and_loads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/node.key");
        let k = load_or_create_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create_key(&path).unwrap().public(), k.public());
    }

    #[test]
    fn an_exposed_or_damaged_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        load_or_create_key(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create_key(&path).unwrap_err().to_string();
        assert!(e.contains("readable by others") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "# ringshare\nnot hex\n").unwrap();
        let e = load_or_create_key(&path).unwrap_err().to_string();
        assert!(e.contains("damaged") && e.contains("node.key"), "{e}");
        std::fs::write(&path, [0xff, 0xfe, 0]).unwrap();
        assert!(load_or_create_key(&path).unwrap_err().to_string().contains("damaged"));
    }

    #[test]
    fn pins_are_learnt_kept_and_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_trackers");
        let (a, b) = (Keypair::generate().public(), Keypair::generate().public());
        let pins = Pins::load(&file).unwrap();
        pins.check_or_pin("tracker", "127.0.0.1:1", a).unwrap();
        let pins = Pins::load(&file).unwrap();
        assert_eq!(pins.get("127.0.0.1:1"), Some(a));
        pins.check_or_pin("tracker", "127.0.0.1:1", a).unwrap();
        let e = pins.check_or_pin("tracker", "127.0.0.1:1", b).unwrap_err().to_string();
        assert!(e.contains("127.0.0.1:1") && e.contains("known_trackers"), "{e}");
        std::fs::write(&file, "garbage\n").unwrap();
        assert!(Pins::load(&file).unwrap_err().contains("known_trackers:1"));
    }

    #[tokio::test]
    async fn frames_cross_a_secure_stream_both_ways() {
        let (a, b) = tokio::io::duplex(1000);
        let (ka, kb) = (Keypair::generate(), Keypair::generate());
        let expect = kb.public();
        let kb2 = kb.clone();
        let server = tokio::spawn(async move {
            let mut s = SecureStream::accept(b, &kb2, CONTROL_PROLOGUE).await.unwrap();
            let mut got = vec![0u8; 300_000];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(&got[..10]).await.unwrap();
            s.flush().await.unwrap();
            (s.remote_key(), got)
        });
        let mut c = SecureStream::connect(a, &ka, CONTROL_PROLOGUE, Some(expect)).await.unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|x| (x % 249) as u8).collect();
        c.write_all(&data).await.unwrap();
        c.flush().await.unwrap();
        let mut back = [0u8; 10];
        c.read_exact(&mut back).await.unwrap();
        let (seen, got) = server.await.unwrap();
        assert_eq!((seen, got, &back[..]), (ka.public(), data.clone(), &data[..10]));
        drop(c);
    }

    #[test]
    fn a_blocking_stream_talks_to_an_async_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let kb = Keypair::generate();
        let expect = kb.public();
        let server = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                let (tcp, _) = l.accept().await.unwrap();
                let mut s = SecureStream::accept(tcp, &kb, CONTROL_PROLOGUE).await.unwrap();
                let mut got = vec![0u8; 100_000];
                s.read_exact(&mut got).await.unwrap();
                s.write_all(&got).await.unwrap();
                s.flush().await.unwrap();
            })
        });
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        let ka = Keypair::generate();
        let mut c =
            BlockingSecureStream::connect(tcp, &ka, CONTROL_PROLOGUE, Some(expect)).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|x| (x % 253) as u8).collect();
        io::Write::write_all(&mut c, &data).unwrap();
        io::Write::flush(&mut c).unwrap();
        let mut back = vec![0u8; data.len()];
        io::Read::read_exact(&mut c, &mut back).unwrap();
        assert_eq!(back, data);
        server.join().unwrap();
        let mut rest = [0u8; 1];
        assert_eq!(io::Read::read(&mut c, &mut rest).unwrap(), 0, "a clean end of stream");
    }

    #[tokio::test]
    async fn a_wrong_key_fails_the_connect() {
        let (a, b) = tokio::io::duplex(1000);
        let (ka, kb) = (Keypair::generate(), Keypair::generate());
        tokio::spawn(async move { SecureStream::accept(b, &kb, CONTROL_PROLOGUE).await });
        let other = Keypair::generate().public();
        let e = SecureStream::connect(a, &ka, CONTROL_PROLOGUE, Some(other)).await.unwrap_err();
        assert!(matches!(e, HandshakeError::Secure(SecureError::WrongKey { .. })), "{e}");
    }
}
