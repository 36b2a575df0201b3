//! Piece servers and downloads in one process over loopback sockets.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use ringshare_engine::fetch::{Download, FetchEvent, FetchSpec, PeerList, Status};
use ringshare_engine::hash::HashPool;
use ringshare_engine::meta::{FileMeta, PIECE_LEN};
use ringshare_engine::serve::{PieceServer, ServeTable, ServedFile, ServerLimits};
use ringshare_engine::store::PartFile;

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
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

fn seeder(path: &Path, meta: &FileMeta) -> PieceServer {
    let table = ServeTable::new(Box::new(|_, _, _| true));
    table.insert(ServedFile::complete(meta.clone(), File::open(path).unwrap()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    PieceServer::start_threads(listener, table, ServerLimits::default()).unwrap()
}

fn download(
    dir: &Path,
    meta: &FileMeta,
    peers: Vec<SocketAddr>,
) -> (Arc<Download>, mpsc::Receiver<FetchEvent>) {
    let dest = dir.join("out.bin");
    let (part, have) = PartFile::open(&dest, meta).unwrap();
    let served = ServedFile::partial(meta.clone(), part.file().try_clone().unwrap(), have.clone());
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let spec = FetchSpec::new(meta.clone(), "u".into(), vec![], None);
    let d = Download::start(
        spec,
        part,
        have,
        served,
        Arc::new(HashPool::new(1)),
        Box::new(move || Ok(PeerList { addrs: peers.clone(), ticket: None })),
        Box::new(move |e| {
            let _ = tx.lock().unwrap().send(e);
        }),
    );
    (d, rx)
}

fn wait_complete(rx: &mpsc::Receiver<FetchEvent>) {
    loop {
        match rx.recv_timeout(Duration::from_secs(120)).expect("download event") {
            FetchEvent::Complete(_) => return,
            FetchEvent::Failed(e) => panic!("download failed: {e}"),
            FetchEvent::FirstPiece => {}
        }
    }
}

#[test]
fn three_seeders_one_corrupt_and_the_copy_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = random_bytes(8 * PIECE_LEN as usize + 1234, 42);
    let src = dir.path().join("src.bin");
    fs::write(&src, &bytes).unwrap();
    let meta = HashPool::new(1).hash_file(&src, "src.bin").unwrap();

    let mut bad = bytes.clone();
    for b in bad.iter_mut().step_by(4096) {
        *b ^= 0xff;
    }
    let bad_path = dir.path().join("bad.bin");
    fs::write(&bad_path, &bad).unwrap();

    let s1 = seeder(&src, &meta);
    let s2 = seeder(&src, &meta);
    let s3 = seeder(&bad_path, &meta);
    let (d, rx) = download(dir.path(), &meta, vec![s3.addr(), s1.addr(), s2.addr()]);
    wait_complete(&rx);
    d.wait();
    assert_eq!(d.progress().status, Status::Complete);
    assert_eq!(fs::read(dir.path().join("out.bin")).unwrap(), bytes);
    let contrib = d.contributions();
    assert!(!contrib.contains_key(&s3.addr()), "the corrupt seeder contributed nothing verified");
    assert!(d.latency().snapshot().len() >= meta.piece_hashes.len() as u64);
}

#[test]
fn empty_and_one_byte_files() {
    for len in [0usize, 1] {
        let dir = tempfile::tempdir().unwrap();
        let bytes = random_bytes(len, 7);
        let src = dir.path().join("src.bin");
        fs::write(&src, &bytes).unwrap();
        let meta = HashPool::new(1).hash_file(&src, "src.bin").unwrap();
        let s = seeder(&src, &meta);
        let (d, rx) = download(dir.path(), &meta, vec![s.addr()]);
        wait_complete(&rx);
        d.wait();
        assert_eq!(fs::read(dir.path().join("out.bin")).unwrap(), bytes);
    }
}
