//! 200 peers in one download. Its own test binary: it counts the threads
//! of the process, which other tests running beside it would change.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

mod common;

use common::backends;
use ringshare_engine::hash::HashPool;
use ringshare_engine::meta::{FileMeta, PIECE_LEN};
use ringshare_engine::serve::{Backend, PieceServer, ServeTable, ServedFile, ServerLimits};

fn source(dir: &Path, len: usize) -> (Vec<u8>, std::path::PathBuf, FileMeta) {
    let bytes: Vec<u8> =
        (0..len as u64).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let src = dir.join("src.bin");
    fs::write(&src, &bytes).unwrap();
    let meta = HashPool::new(1).hash_file(&src, "src.bin").unwrap();
    (bytes, src, meta)
}

/// Threads of this process now.
/// This process's threads, not counting io_uring's kernel workers
/// (`iou-wrk-*`, which the kernel adds and removes for blocking ops on its
/// own schedule: they made this count flaky under load).
fn threads_now() -> usize {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .flatten()
        .filter(|t| {
            let comm = fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            !comm.starts_with("iou-")
        })
        .count()
}

/// 200 peers in one download: one piece server reached through 200
/// loopback addresses (127.0.0.1–200), so the downloader sees 200 peers.
/// The io_uring driver carries them on its one ring thread; the threads
/// driver needs a thread each (its known cost, and why it is the fallback).
#[test]
fn two_hundred_peers_in_one_download() {
    const PEERS: u8 = 200;
    for io in backends() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, src, meta) = source(dir.path(), 48 * PIECE_LEN as usize + 99);
        let table = ServeTable::new(Box::new(|_, _, _, _| true));
        table.insert(ServedFile::complete(meta.clone(), File::open(&src).unwrap()));
        // Every address of 127/8 reaches a listener on the wildcard.
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Slow pieces: the download lasts until every peer is connected.
        // All 200 connections come from 127.0.0.1.
        let limits = ServerLimits {
            piece_delay: Duration::from_millis(100),
            max_per_ip: 256,
            max_downloaders: 256,
            ..ServerLimits::default()
        };
        let s = PieceServer::start(listener, table, limits, Backend::Uring)
            .or_else(|_| {
                let listener = TcpListener::bind(("0.0.0.0", port)).unwrap();
                let table = ServeTable::new(Box::new(|_, _, _, _| true));
                table.insert(ServedFile::complete(meta.clone(), File::open(&src).unwrap()));
                PieceServer::start(listener, table, limits, Backend::Threads)
            })
            .unwrap();
        let peers: Vec<SocketAddr> =
            (1..=PEERS).map(|i| SocketAddr::from(([127, 0, 0, i], s.addr().port()))).collect();
        let before = threads_now();
        // A download connects to at most 64 peers unless told otherwise.
        let (d, rx) = common::download_full(
            dir.path(),
            &meta,
            peers,
            ringshare_engine::fetch::STALL_TIMEOUT,
            usize::from(PEERS),
            io,
        );
        let mut most_peers = 0;
        let mut most_threads = 0;
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(ringshare_engine::fetch::FetchEvent::Complete(_)) => break,
                Ok(ringshare_engine::fetch::FetchEvent::Failed(e)) => panic!("{io:?}: {e}"),
                _ => {}
            }
            most_peers = most_peers.max(d.progress().peers);
            most_threads = most_threads.max(threads_now());
        }
        d.wait();
        assert_eq!(fs::read(dir.path().join("out.bin")).unwrap(), bytes, "{io:?}");
        let served_by = d.contributions().len();
        eprintln!(
            "{io:?}: {most_peers} peers at once, {served_by} contributed, \
             threads {before} -> {most_threads}"
        );
        assert!(most_peers >= usize::from(PEERS) * 3 / 4, "{io:?}: only {most_peers} peers");
        assert!(served_by > 1, "{io:?}: pieces came from {served_by} peers");
        if io == Backend::Uring {
            // The ring thread (process-wide) and the download's control
            // thread, never one per peer.
            assert!(most_threads <= before + 4, "{io:?}: threads {before} -> {most_threads}");
        }
    }
}
