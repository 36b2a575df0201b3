//! A link that carries the next file's handshake and requests behind the
//! last file's (protocol version 4, the io_uring download driver). Its own
//! test binary, its tests one at a time: they count the process's links.

mod common;

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{random_bytes, wait_complete, Opts};
use ringshare_engine::fetch::{LINKS_OPENED, LINKS_REUSED};
use ringshare_engine::hash::HashPool;
use ringshare_engine::link::PeerSecurity;
use ringshare_engine::meta::FileMeta;
use ringshare_engine::serve::{Backend, PieceServer, ServeTable, ServedFile, ServerLimits};

/// Held by each test: the link counters are the process's.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// This test's turn, or `None` (skip) where io_uring is not offered: only
/// its download driver pipelines.
fn one_at_a_time() -> Option<std::sync::MutexGuard<'static, ()>> {
    if Backend::choose(Some(Backend::Uring)).0 != Backend::Uring {
        eprintln!("note: skipping: the pipelining driver needs io_uring");
        return None;
    }
    Some(ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner()))
}

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
    let Some(_one) = one_at_a_time() else { return };
    let (mut opened, mut reused) =
        (LINKS_OPENED.load(Ordering::SeqCst), LINKS_REUSED.load(Ordering::SeqCst));
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

/// A download that completes from another node before a link it took
/// over has answered it, with the next download's handshake behind it on
/// that link: the link's next frames are still the finished download's
/// (its answer, its piece), so the link is not handed on; the next
/// download connects again and gets its own file.
#[test]
fn a_link_not_yet_answered_is_not_handed_to_the_next() {
    let Some(_one) = one_at_a_time() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Files 1 and 2 of one length: file 1's piece, taken for file 2's,
    // would fail only its digest.
    let files: Vec<(Vec<u8>, FileMeta)> = [5000, 70_000, 70_000]
        .iter()
        .enumerate()
        .map(|(i, &len)| source(dir.path(), &format!("g{i}"), len, 60 + i as u64))
        .collect();
    // B holds back its answer to file 1's handshake until told.
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let held = files[1].1.sha1;
    let (b, accepted) = {
        let gate = Arc::clone(&gate);
        common::fake_server(files.clone(), move |_, meta, _| {
            if meta.sha1 == held {
                let (open, cv) = &*gate;
                let mut g = open.lock().unwrap();
                while !*g {
                    g = cv.wait(g).unwrap();
                }
            }
        })
    };
    // A serves file 1 once told: not before file 2 has gone behind file 1
    // on B's link, or file 1 could complete first and leave it nothing to
    // go behind.
    let a_gate = Arc::new((Mutex::new(false), Condvar::new()));
    let (a, _) = {
        let a_gate = Arc::clone(&a_gate);
        common::fake_server(files.clone(), move |_, _, _| {
            let (open, cv) = &*a_gate;
            let mut g = open.lock().unwrap();
            while !*g {
                g = cv.wait(g).unwrap();
            }
        })
    };
    let security = PeerSecurity::ephemeral();
    let start = |i: usize, peers: Vec<std::net::SocketAddr>| {
        let sub = dir.path().join(format!("e{i}"));
        fs::create_dir(&sub).unwrap();
        let opts =
            Opts { security: security.clone(), park_links: true, first: true, ..Opts::default() };
        common::download_opts(&sub, &files[i].1, peers, Backend::Uring, opts)
    };
    // A link to B, answered in the pipelining version, parked.
    let (_d0, rx0) = start(0, vec![b]);
    wait_complete(&rx0);
    // File 1 takes it over (its request goes ahead of B's answer) and
    // asks A too; file 2 then goes behind it on B's link.
    let reused = || LINKS_REUSED.load(Ordering::SeqCst);
    let before = reused();
    let (_d1, rx1) = start(1, vec![b, a]);
    let t0 = std::time::Instant::now();
    while reused() == before {
        assert!(t0.elapsed() < Duration::from_secs(60), "file 1 never took the parked link");
        std::thread::yield_now();
    }
    let (_d2, rx2) = start(2, vec![b]);
    while reused() == before + 1 {
        assert!(t0.elapsed() < Duration::from_secs(60), "file 2 never went behind file 1");
        std::thread::yield_now();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "file 2 went on the busy link");
    // File 1 comes from A; then B answers it, on the link file 2 waits on.
    let open = |gate: &(Mutex<bool>, Condvar)| {
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
    };
    open(&a_gate);
    wait_complete(&rx1);
    open(&gate);
    wait_complete(&rx2);
    for (i, (bytes, _)) in files.iter().enumerate() {
        let got = fs::read(dir.path().join(format!("e{i}/out.bin"))).unwrap();
        assert!(got == *bytes, "file {i} differs");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "file 2 connected to B again");
}
