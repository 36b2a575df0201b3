//! Shared by the engine's integration tests: the backends to run, and a
//! download into a scratch directory with its events on a channel.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use ringshare_engine::fetch::{Download, FetchEvent, FetchSpec, PeerList};
use ringshare_engine::hash::HashPool;
use ringshare_engine::link::PeerSecurity;
use ringshare_engine::meta::{Bitfield, FileMeta, PIECE_LEN};
use ringshare_engine::peer::{self, Message, PeerDecodeError};
use ringshare_engine::secure::{Keypair, PublicKey, PEER_PROLOGUE};
use ringshare_engine::secure_io::BlockingSecureStream;
use ringshare_engine::serve::{Backend, ServedFile};
use ringshare_engine::store::PartFile;

/// `len` pseudo-random bytes (xorshift from `seed`): the same every run.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The backends to test: io_uring where the kernel offers it, and threads.
pub fn backends() -> Vec<Backend> {
    let mut v = Vec::new();
    match Backend::choose(Some(Backend::Uring)) {
        (Backend::Uring, _) => v.push(Backend::Uring),
        (_, why) => eprintln!("note: not testing the uring backend: {why}"),
    }
    v.push(Backend::Threads);
    v
}

/// Downloads `meta` from `peers` into `dir/out.bin` (default stall
/// timeout) on the driver `io`.
pub fn download(
    dir: &Path,
    meta: &FileMeta,
    peers: Vec<SocketAddr>,
    io: Backend,
) -> (Arc<Download>, mpsc::Receiver<FetchEvent>) {
    download_with(dir, meta, peers, ringshare_engine::fetch::STALL_TIMEOUT, io)
}

/// Downloads `meta` from `peers` into `dir/out.bin` with a stall timeout,
/// on the driver `io`.
pub fn download_with(
    dir: &Path,
    meta: &FileMeta,
    peers: Vec<SocketAddr>,
    stall: Duration,
    io: Backend,
) -> (Arc<Download>, mpsc::Receiver<FetchEvent>) {
    let max_peers = ringshare_engine::download::MAX_PEERS;
    download_full(dir, meta, peers, stall, max_peers, io)
}

/// [`download_with`], connecting to at most `max_peers` at once.
pub fn download_full(
    dir: &Path,
    meta: &FileMeta,
    peers: Vec<SocketAddr>,
    stall: Duration,
    max_peers: usize,
    io: Backend,
) -> (Arc<Download>, mpsc::Receiver<FetchEvent>) {
    let opts = Opts { stall, max_peers, ..Opts::default() };
    download_opts(dir, meta, peers, io, opts)
}

/// How a test download differs from the default.
pub struct Opts {
    pub stall: Duration,
    pub max_peers: usize,
    /// The key each server must prove.
    pub keys: HashMap<SocketAddr, PublicKey>,
    /// The downloader's links.
    pub security: PeerSecurity,
    /// Park its links when complete (`FetchSpec::park_links`).
    pub park_links: bool,
    /// The peers go in `FetchSpec::first_peers` too (known at the start).
    pub first: bool,
    /// When the download asked its peer source, each time.
    pub asked: Option<Arc<Mutex<Vec<Instant>>>>,
    /// Leave its fsync and move into place to this settler.
    pub settle: Option<Arc<ringshare_engine::store::Settler>>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            stall: ringshare_engine::fetch::STALL_TIMEOUT,
            max_peers: ringshare_engine::download::MAX_PEERS,
            keys: HashMap::new(),
            security: PeerSecurity::ephemeral(),
            park_links: false,
            first: false,
            asked: None,
            settle: None,
        }
    }
}

/// A download with every option.
pub fn download_opts(
    dir: &Path,
    meta: &FileMeta,
    peers: Vec<SocketAddr>,
    io: Backend,
    opts: Opts,
) -> (Arc<Download>, mpsc::Receiver<FetchEvent>) {
    let Opts { stall, max_peers, keys, security, park_links, first, asked, settle } = opts;
    let (part, have) = PartFile::open(&dir.join("out.bin"), meta).unwrap();
    let served = ServedFile::partial(meta.clone(), part.file().try_clone().unwrap(), have.clone());
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let mut spec = FetchSpec::new(meta.clone(), "u".into(), vec![], None);
    spec.stall_timeout = stall;
    spec.max_peers = max_peers;
    spec.io = io;
    spec.security = security;
    spec.park_links = park_links;
    spec.settle = settle;
    if first {
        spec.first_peers = Some(PeerList {
            addrs: peers.clone(),
            ticket: None,
            keys: keys.clone(),
            left_out: 0,
            own: 0,
        });
    }
    let d = Download::start(
        spec,
        part,
        have,
        served,
        Arc::new(HashPool::new(1)),
        Box::new(move || {
            if let Some(asked) = &asked {
                asked.lock().unwrap().push(Instant::now());
            }
            Ok::<_, String>(PeerList {
                addrs: peers.clone(),
                ticket: None,
                keys: keys.clone(),
                left_out: 0,
                own: 0,
            })
        }),
        Box::new(move |e| {
            let _ = tx.lock().unwrap().send(e);
        }),
    );
    assert_eq!(d.driver(), io, "the download runs on the driver asked for");
    (d, rx)
}

/// Waits for the download to complete; panics if it fails (or after two
/// minutes, a hang guard).
pub fn wait_complete(rx: &mpsc::Receiver<FetchEvent>) {
    loop {
        match rx.recv_timeout(Duration::from_secs(120)).expect("download event") {
            FetchEvent::Complete(_) => return,
            FetchEvent::Failed(e) => panic!("download failed: {e}"),
            FetchEvent::FirstPiece => {}
        }
    }
}

/// A fake piece server over the encrypted link (whole files, every piece
/// held) that counts its connections. Before it answers a handshake it
/// calls `before_answer(again, file, out)` — `again` when the link
/// carried a file before; frames put in `out` go out first, and the hook
/// may block to hold the answer back.
pub fn fake_server(
    files: Vec<(Vec<u8>, FileMeta)>,
    before_answer: impl Fn(bool, &FileMeta, &mut Vec<u8>) + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let files = Arc::new(files);
    let hook = Arc::new(before_answer);
    std::thread::spawn(move || {
        let keypair = Keypair::generate();
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let (files, keypair, hook) = (Arc::clone(&files), keypair.clone(), Arc::clone(&hook));
            std::thread::spawn(move || {
                let Ok(mut s) = BlockingSecureStream::accept(tcp, &keypair, PEER_PROLOGUE) else {
                    return;
                };
                let mut buf = Vec::new();
                let mut current: Option<usize> = None;
                loop {
                    let (reply, used) = match peer::decode(&buf) {
                        Ok((msg, used)) => {
                            let mut out = Vec::new();
                            match msg {
                                Message::Handshake { file_id, .. } => {
                                    let again = current.is_some();
                                    current = files.iter().position(|(_, m)| m.sha1 == file_id);
                                    let Some(i) = current else { return };
                                    hook(again, &files[i].1, &mut out);
                                    let n = files[i].1.piece_hashes.len() as u32;
                                    let mut bits = Bitfield::new(n);
                                    (0..n).for_each(|p| {
                                        bits.set(p);
                                    });
                                    peer::encode(&Message::Bitfield(bits.as_bytes()), &mut out);
                                }
                                Message::Request { piece, offset, len } => {
                                    let Some(i) = current else { return };
                                    let at = piece as usize * PIECE_LEN as usize + offset as usize;
                                    let data = &files[i].0[at..at + len as usize];
                                    peer::encode(&Message::Piece { piece, offset, data }, &mut out);
                                }
                                _ => {}
                            }
                            (out, used)
                        }
                        Err(PeerDecodeError::NeedMore(_)) => {
                            let mut chunk = [0u8; 65536];
                            match s.read(&mut chunk) {
                                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                                _ => return,
                            }
                            continue;
                        }
                        Err(_) => return,
                    };
                    buf.drain(..used);
                    if s.write_all(&reply).and_then(|()| s.flush()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}
