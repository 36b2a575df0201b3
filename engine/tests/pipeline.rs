//! A link that carries the next file's handshake and requests behind the
//! last file's (protocol version 4, the io_uring download driver). Its own
//! test binary: it counts the process's links.

mod common;

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{random_bytes, wait_complete, Opts};
use ringshare_engine::fetch::{LINKS_OPENED, LINKS_REUSED};
use ringshare_engine::hash::HashPool;
use ringshare_engine::link::PeerSecurity;
use ringshare_engine::meta::FileMeta;
use ringshare_engine::serve::{Backend, PieceServer, ServeTable, ServedFile, ServerLimits};

/// `len` pseudo-random bytes in `dir/name`, and their metadata.
fn source(dir: &Path, name: &str, len: usize, seed: u64) -> (Vec<u8>, FileMeta) {
    let bytes = random_bytes(len, seed);
    let path = dir.join(name);
    fs::write(&path, &bytes).unwrap();
    let meta = HashPool::new(1).hash_file(&path, name).unwrap();
    (bytes, meta)
}

/// Three small files from one node: the first parks its link, the second
/// takes it over, and the third — started while the second's piece is
/// held back by the server — sends its handshake behind the second's
/// request on the same link rather than opening one. Both arrive whole,
/// on both server drivers.
#[test]
fn the_next_file_goes_on_a_busy_link_behind_the_last() {
    if Backend::choose(Some(Backend::Uring)).0 != Backend::Uring {
        eprintln!("note: skipping: the pipelining driver needs io_uring");
        return;
    }
    let (mut opened, mut reused) = (0, 0);
    for backend in [Backend::Uring, Backend::Threads] {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<(Vec<u8>, FileMeta)> = [5000, 300_000, 70_000]
            .iter()
            .enumerate()
            .map(|(i, &len)| source(dir.path(), &format!("f{i}"), len, 40 + i as u64))
            .collect();
        let table = ServeTable::new(Box::new(|_, _, _, _| true));
        for (i, (_, meta)) in files.iter().enumerate() {
            let f = File::open(dir.path().join(format!("f{i}"))).unwrap();
            table.insert(ServedFile::complete(meta.clone(), f));
        }
        // Each piece waits: the second file is still on its way when the
        // third starts.
        let limits =
            ServerLimits { piece_delay: Duration::from_millis(300), ..ServerLimits::default() };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = PieceServer::start(listener, table, limits, backend).unwrap();
        let security = PeerSecurity::ephemeral();
        let start = |i: usize| {
            let sub = dir.path().join(format!("d{i}"));
            fs::create_dir(&sub).unwrap();
            let opts = Opts {
                security: security.clone(),
                park_links: true,
                first: true,
                ..Opts::default()
            };
            common::download_opts(&sub, &files[i].1, vec![server.addr()], Backend::Uring, opts)
        };
        let check = |i: usize| {
            let got = fs::read(dir.path().join(format!("d{i}/out.bin"))).unwrap();
            assert!(got == files[i].0, "{backend:?}: file {i} differs");
        };
        // The first link, answered in the pipelining version, then parked.
        let (_d0, rx0) = start(0);
        wait_complete(&rx0);
        check(0);
        // The second takes the parked link; the third, started at once,
        // finds it busy with a download that asks for nothing more.
        let (_d1, rx1) = start(1);
        let (_d2, rx2) = start(2);
        wait_complete(&rx1);
        wait_complete(&rx2);
        check(1);
        check(2);
        opened += 1;
        reused += 2;
        assert_eq!(
            (LINKS_OPENED.load(Ordering::SeqCst), LINKS_REUSED.load(Ordering::SeqCst)),
            (opened, reused),
            "{backend:?}: one link carried the three files"
        );
    }
}
