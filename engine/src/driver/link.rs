//! Peer links for the threads drivers: a blocking stream that is either the
//! encrypted link (Noise XX, [`crate::secure`]) or, when both ends asked for
//! it, plain TCP; and [`PeerSecurity`], the node's key and that choice.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use crate::secure::{is_plaintext_preface, Keypair, PublicKey, PEER_PROLOGUE};
use crate::secure_io::{BlockingSecureStream, HandshakeError};

/// How a node's peer links are secured.
#[derive(Debug, Clone)]
pub struct PeerSecurity {
    /// The node's long-term key: proved to every peer, and the key the
    /// trackers bind into this node's tickets.
    pub keypair: Arc<Keypair>,
    /// Plaintext peer links (benchmarks, trusted networks only): a piece
    /// server also serves downloaders that ask for plaintext, a downloader
    /// asks every seeder for it. Never chosen silently: both ends set it.
    pub plaintext: bool,
}

impl PeerSecurity {
    /// Encrypted links proving `keypair`.
    pub fn encrypted(keypair: Arc<Keypair>) -> Self {
        Self { keypair, plaintext: false }
    }

    /// Encrypted links with a fresh key (tests and tools that have no node
    /// identity).
    pub fn ephemeral() -> Self {
        Self::encrypted(Arc::new(Keypair::generate()))
    }

    /// What the links are, for logs and `show_downloads`.
    pub fn describe(&self) -> &'static str {
        if self.plaintext {
            "PLAINTEXT (--plaintext: not encrypted, not authenticated)"
        } else {
            "encrypted (Noise XX, AES-GCM)"
        }
    }
}

/// A blocking peer connection.
#[derive(Debug)]
pub(crate) enum PeerStream {
    Plain(TcpStream),
    Secure(Box<BlockingSecureStream<TcpStream>>),
}

/// Paces what `fd` sends at `bytes_per_s` (`SO_MAX_PACING_RATE`, which TCP
/// honours by itself, with or without the `fq` qdisc).
pub(crate) fn pace(fd: std::os::fd::RawFd, bytes_per_s: u64) {
    // SAFETY: setsockopt reads the u64 for the length given; `fd` is the
    // caller's open socket.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&bytes_per_s as *const u64).cast(),
            std::mem::size_of::<u64>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!("cannot pace a piece connection: {}", std::io::Error::last_os_error());
    }
}

/// Ends the TCP connection on `fd` with a reset rather than a FIN, at once
/// (`connect` with `AF_UNSPEC`: TCP's disconnect, which also ends any
/// receive or send waiting on it). A downloader lets go of a link it asked
/// pieces on so: to a FIN a piece server answers what it was asked (a
/// downloader may stop sending and still read), and a server holding to an
/// upload rate spent seconds of it on pieces for a get that had been
/// stopped, while the next downloader waited. False if the kernel refused;
/// the caller then shuts the socket down as before.
pub(crate) fn abort(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: a zeroed sockaddr with only its family set, of its own size;
    // `fd` is the caller's open socket.
    let rc = unsafe {
        let mut any: libc::sockaddr = std::mem::zeroed();
        any.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
        libc::connect(fd, &any, std::mem::size_of::<libc::sockaddr>() as libc::socklen_t)
    };
    rc == 0
}

/// Whether the peer on `fd` reset the connection (or it is closed both
/// ways), waiting up to `wait` for it: poll(2) asked for no event reports
/// only an error or a hang-up, neither of which a peer that only stopped
/// sending raises.
pub(crate) fn reset_within(fd: std::os::fd::RawFd, wait: std::time::Duration) -> bool {
    let mut p = libc::pollfd { fd, events: 0, revents: 0 };
    let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one pollfd, alive for the call.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n > 0 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// [`reset_within`] at once.
pub(crate) fn reset(fd: std::os::fd::RawFd) -> bool {
    reset_within(fd, std::time::Duration::ZERO)
}

impl PeerStream {
    /// Resets the connection at once (see [`abort`]).
    pub(crate) fn abort(&self) {
        if !abort(self.raw_fd()) {
            // SAFETY: shutdown(2) on the socket this stream owns.
            unsafe { libc::shutdown(self.raw_fd(), libc::SHUT_RDWR) };
        }
    }

    /// The socket under the link.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Self::Plain(tcp) => tcp.as_raw_fd(),
            Self::Secure(s) => s.get_ref().as_raw_fd(),
        }
    }

    /// The downloader's end: the encrypted link to a server that must prove
    /// `expect` (any key when `None`), or plain TCP when asked for.
    pub(crate) fn connect(
        tcp: TcpStream,
        security: &PeerSecurity,
        expect: Option<PublicKey>,
        timeout: Duration,
    ) -> Result<Self, HandshakeError> {
        if security.plaintext {
            return Ok(PeerStream::Plain(tcp));
        }
        let before = tcp.read_timeout()?;
        tcp.set_read_timeout(Some(timeout))?;
        let s = BlockingSecureStream::connect(tcp, &security.keypair, PEER_PROLOGUE, expect)?;
        s.get_ref().set_read_timeout(before)?;
        Ok(PeerStream::Secure(Box::new(s)))
    }

    /// The server's end: the encrypted link, or plain TCP if the first
    /// bytes are a plaintext frame and this server allows plaintext.
    pub(crate) fn accept(
        tcp: TcpStream,
        security: &PeerSecurity,
        timeout: Duration,
    ) -> Result<Self, HandshakeError> {
        let before = tcp.read_timeout()?;
        tcp.set_read_timeout(Some(timeout))?;
        if security.plaintext {
            let mut first = [0u8; 2];
            let mut got = 0;
            while got < 2 {
                let n = tcp.peek(&mut first[..])?;
                if n == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                }
                got = n;
                if got < 2 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            if is_plaintext_preface(first) {
                tcp.set_read_timeout(before)?;
                return Ok(PeerStream::Plain(tcp));
            }
        }
        let s = BlockingSecureStream::accept(tcp, &security.keypair, PEER_PROLOGUE)?;
        s.get_ref().set_read_timeout(before)?;
        Ok(PeerStream::Secure(Box::new(s)))
    }

    /// The key the other end proved (`None` on a plaintext link).
    pub(crate) fn remote_key(&self) -> Option<PublicKey> {
        match self {
            PeerStream::Plain(_) => None,
            PeerStream::Secure(s) => Some(s.remote_key()),
        }
    }

    /// Whether the other end has closed (or reset) the connection, seen
    /// without waiting or taking any byte.
    pub(crate) fn peer_closed(&self) -> bool {
        match self.peek() {
            0 => true,
            n if n > 0 => false,
            _ => !matches!(
                io::Error::last_os_error().raw_os_error(),
                Some(libc::EAGAIN) | Some(libc::EINTR)
            ),
        }
    }

    /// Whether a read would find something at once: plaintext opened and
    /// not read, or bytes (or the end) in the socket.
    pub(crate) fn readable_now(&self) -> bool {
        match self {
            PeerStream::Secure(s) if s.has_plaintext() => true,
            _ => self.peek() >= 0,
        }
    }

    /// `recv` of one byte with MSG_PEEK | MSG_DONTWAIT: 1, 0 at the end,
    /// -1 with errno set.
    fn peek(&self) -> isize {
        use std::os::fd::AsRawFd;
        let fd = match self {
            PeerStream::Plain(s) => s.as_raw_fd(),
            PeerStream::Secure(s) => s.get_ref().as_raw_fd(),
        };
        let mut byte = 0u8;
        // SAFETY: recv writes at most one byte into `byte`, which lives
        // across the call; MSG_PEEK leaves it in the socket.
        unsafe {
            libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
        }
    }

    /// How long a read waits.
    pub(crate) fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            PeerStream::Plain(s) => s.set_read_timeout(Some(t)),
            PeerStream::Secure(s) => s.get_ref().set_read_timeout(Some(t)),
        }
    }

    /// Writes all of `bytes` and sends them now.
    pub(crate) fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)?;
        self.flush()
    }
}

impl Read for PeerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            PeerStream::Plain(s) => s.read(buf),
            PeerStream::Secure(s) => s.read(buf),
        }
    }
}

impl Write for PeerStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            PeerStream::Plain(s) => s.write(buf),
            PeerStream::Secure(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            PeerStream::Plain(s) => s.flush(),
            PeerStream::Secure(s) => s.flush(),
        }
    }
}
