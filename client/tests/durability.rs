//! Trackers that lose nothing: kill -9 during writes, two trackers that
//! converge after one was down, a tracker that lost its data, client
//! failover mid-download, peers that vanish, and a damaged log — all with
//! the real binaries.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{eventually, free_port, random_file, raw_login, NodeProc, RawClient, TrackerProc};
use ringshare_engine::proto::{Refusal, Request, Response};

/// Trackers on reserved ports, listed in one tracker_info.txt.
struct Cluster {
    dir: tempfile::TempDir,
    info: PathBuf,
    addrs: Vec<std::net::SocketAddr>,
    trackers: Vec<Option<TrackerProc>>,
    extra: Vec<String>,
}

impl Cluster {
    fn new(n: usize, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<std::net::SocketAddr> =
            (0..n).map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap()).collect();
        let info = dir.path().join("tracker_info.txt");
        let text: String = addrs.iter().map(|a| format!("{a}\n")).collect();
        std::fs::write(&info, text).unwrap();
        let mut c = Self {
            dir,
            info,
            addrs,
            trackers: (0..n).map(|_| None).collect(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 1..=n {
            c.start(i);
        }
        c
    }

    fn data(&self, no: usize) -> PathBuf {
        self.dir.path().join(format!("data-{no}"))
    }

    fn start(&mut self, no: usize) {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.trackers[no - 1] =
            Some(TrackerProc::start_with(&self.info, no, &self.data(no), &extra));
    }

    fn kill(&mut self, no: usize) {
        if let Some(mut t) = self.trackers[no - 1].take() {
            t.kill();
        }
    }

    /// `ringshare-tracker --digest` of tracker `no`: its state digest line.
    fn digest(&self, no: usize) -> String {
        let out = std::process::Command::new(common::bin("ringshare-tracker"))
            .arg(&self.info)
            .arg(no.to_string())
            .arg("--digest")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// A tracker_info.txt naming only tracker `no`: a client pinned to it.
    fn pinned(&self, no: usize) -> PathBuf {
        let p = self.dir.path().join(format!("only-{no}.txt"));
        std::fs::write(&p, format!("{}\n", self.addrs[no - 1])).unwrap();
        p
    }

    fn node(&self, info: &Path, name: &str) -> NodeProc {
        NodeProc::spawn(
            "127.0.0.1:0",
            info,
            &self.dir.path().join(format!("state-{name}")),
            &[("RINGSHARE_SERVE_DELAY_MS", "0")],
            Some(&self.dir.path().join(format!("{name}.stderr"))),
        )
    }
}

#[test]
fn kill_9_during_a_write_burst_loses_no_acknowledged_op() {
    write_burst_then_kill_9(&[]);
}

/// The same with a snapshot every 7 entries: the kill lands among
/// snapshots being written outside the state lock while writes go on.
#[test]
fn kill_9_among_snapshots_loses_no_acknowledged_op() {
    let c = write_burst_then_kill_9(&["--snapshot-every", "7"]);
    assert!(c.data(1).join("snapshot").exists(), "no snapshot was written");
}

/// Four clients write until 200 writes are acknowledged, the tracker is
/// killed with SIGKILL mid-burst and restarted: every acknowledged write
/// is there.
fn write_burst_then_kill_9(extra: &[&str]) -> Cluster {
    let mut c = Cluster::new(1, extra);
    let addr = c.addrs[0];
    let token = raw_login(&mut RawClient::connect(addr).unwrap(), "writer");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                let Ok(mut conn) = RawClient::connect(addr) else { return };
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let group = format!("g{w}-{i}");
                    match conn.call(&Request::CreateGroup { token, group: group.clone() }) {
                        Ok(Response::Done) => acked.lock().unwrap().push(group),
                        Ok(other) => panic!("{other:?}"),
                        Err(_) => return, // the tracker died mid-request: unknown outcome
                    }
                }
            })
        })
        .collect();
    eventually("200 acknowledged writes", || acked.lock().unwrap().len() >= 200);
    c.kill(1); // SIGKILL, mid-burst
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    c.start(1);
    let mut conn = RawClient::connect(addr).unwrap();
    // The session survived too: the same token still works.
    let Response::Names(groups) = conn.call(&Request::ListGroups { token }).unwrap() else {
        panic!()
    };
    let missing: Vec<&String> = acked.iter().filter(|g| !groups.contains(g)).collect();
    assert!(missing.is_empty(), "{} acknowledged ops lost: {missing:?}", missing.len());
    c
}

/// A node killed without logging out: once no tracker has heard from it
/// for `--session-expiry`, its session ends at both trackers and its share
/// leaves the group's listing; a node that heartbeats to the other tracker
/// only (heard here through gossip) is not taken for gone.
#[test]
fn a_node_killed_without_logging_out_expires_with_its_shares() {
    let c = Cluster::new(2, &["--session-expiry", "3", "--peer-ttl", "1"]);
    let (only1, only2) = (c.pinned(1), c.pinned(2));
    let mut a = c.node(&only1, "alice");
    a.ok("create_user alice pw");
    a.ok("login alice pw");
    a.ok("create_group g");
    let f = c.dir.path().join("kept.bin");
    random_file(&f, 100_000, 5);
    a.ok(&format!("upload_file {} g", f.display()));
    let mut b = c.node(&only2, "bob");
    b.ok("create_user bob pw");
    b.ok("login bob pw");
    eventually("the group reaches tracker 2", || {
        !b.cmd("join_group g").iter().any(|l| l.starts_with("error:"))
    });
    eventually("bob's request reaches tracker 1", || {
        !a.cmd("accept_request g bob").iter().any(|l| l.starts_with("error:"))
    });
    let listed = |b: &mut NodeProc| {
        let lines = b.cmd("list_files g");
        assert!(!lines.iter().any(|l| l.starts_with("error:")), "{lines:?}");
        lines.iter().any(|l| l.contains("kept.bin"))
    };
    eventually("bob sees alice's file", || listed(&mut b));
    a.kill();
    eventually("alice's node expires with its share", || !listed(&mut b));
    // Bob, heard at tracker 1 only through tracker 2's gossip, is still
    // logged in at both: a change he makes through tracker 2 reaches 1.
    b.ok("create_group h");
    let mut a1 = c.node(&only1, "alice-again");
    a1.ok("login alice pw");
    eventually("bob's group reaches tracker 1", || a1.cmd("list_groups") == ["g", "h"]);
    eventually("the state digests agree", || c.digest(1) == c.digest(2));
}

#[test]
fn two_trackers_converge_after_one_was_down() {
    let mut c = Cluster::new(2, &[]);
    let (only1, only2) = (c.pinned(1), c.pinned(2));
    let mut a = c.node(&only1, "alice");
    a.ok("create_user alice pw");
    a.ok("login alice pw");
    a.ok("create_group g1");
    let mut b2 = c.node(&only2, "bob");
    // bob's account, made at tracker 1, reaches tracker 2.
    a.cmd("logout");
    let mut b1 = c.node(&only1, "bob1");
    b1.ok("create_user bob pw");
    eventually("bob replicated to tracker 2", || {
        b2.cmd("login bob pw").len() == 1 && b2.cmd("list_groups") == ["g1"]
    });

    c.kill(2);
    a.ok("login alice pw");
    a.ok("create_group g2");
    b1.ok("login bob pw");
    b1.ok("join_group g1");
    b1.ok("join_group g2");
    a.ok("accept_request g2 bob");
    let f = c.dir.path().join("f.bin");
    random_file(&f, 100_000, 3);
    a.ok(&format!("upload_file {} g1", f.display()));
    c.start(2);

    let mut a2 = c.node(&only2, "alice2");
    eventually("tracker 2 caught up", || {
        a2.cmd("login alice pw");
        a2.cmd("list_groups") == ["g1", "g2"] && a2.cmd("list_requests g1") == ["bob"]
    });
    for cmd in
        ["list_groups", "list_requests g1", "list_requests g2", "list_files g1", "list_files g2"]
    {
        assert_eq!(a.cmd(cmd), a2.cmd(cmd), "{cmd}");
    }
    // And changes made at tracker 2 reach tracker 1.
    a2.ok("accept_request g1 bob");
    eventually("tracker 1 sees the accept", || a.cmd("list_requests g1").is_empty());
    // bob's shell at tracker 2 outlived its restart: its link reconnects.
    assert_eq!(b1.cmd("list_files g1"), b2.cmd("list_files g1"));
    // And the whole replicated states agree, digest for digest.
    eventually("the state digests agree", || c.digest(1) == c.digest(2));
    let line = c.digest(1);
    assert!(line.len() > 40 && line.contains(" ops="), "{line}");
}

#[test]
fn a_tracker_that_lost_its_data_sends_clients_on_until_every_other_has_caught_it_up() {
    let mut c = Cluster::new(3, &[]);
    let only1 = c.pinned(1);
    let mut a = c.node(&only1, "alice");
    a.ok("create_user alice pw");
    a.ok("login alice pw");
    a.ok("create_group g1");
    eventually("every tracker holds it", || {
        let one = c.digest(1);
        c.digest(2) == one && c.digest(3) == one
    });
    a.kill();
    // Tracker 1 loses its data directory (its key survives); tracker 3 is
    // down meanwhile, so tracker 1 cannot know what it had made.
    c.kill(1);
    c.kill(3);
    for e in std::fs::read_dir(c.data(1)).unwrap().map(Result::unwrap) {
        let name = e.file_name();
        if name != "tracker.key" && name != "known_trackers" {
            let p = e.path();
            if p.is_dir() {
                std::fs::remove_dir_all(p).unwrap();
            } else {
                std::fs::remove_file(p).unwrap();
            }
        }
    }
    c.start(1);
    // A client whose list starts with tracker 1 is served by tracker 2,
    // without an error.
    let info = c.info.clone();
    let mut b = c.node(&info, "bob");
    b.ok("login alice pw");
    assert_eq!(b.cmd("list_groups"), ["g1"]);
    b.ok("create_group g2");
    // A client that knows only tracker 1 is told why it is not served.
    let mut d = c.node(&only1, "dave");
    d.err("login alice pw", "lost its data");
    // Once tracker 3 is back, tracker 1 has heard from both and serves
    // again, with everything it had made and what was made meanwhile; its
    // next op follows its own lost ones (or the digests would never agree).
    c.start(3);
    eventually("tracker 1 serves again", || {
        !d.cmd("login alice pw").iter().any(|l| l.starts_with("error:"))
    });
    assert_eq!(d.cmd("list_groups"), ["g1", "g2"]);
    d.ok("create_group g3");
    eventually("the three digests agree", || {
        let one = c.digest(1);
        c.digest(2) == one && c.digest(3) == one
    });
}

/// A tracker whose data directory is put back from an older copy, started
/// while another tracker is up, takes back its own later ops from it before
/// it makes new ones: nothing is numbered twice and the two converge. (It
/// numbered its next op as one the other held, and they differed for good.)
#[test]
fn a_tracker_put_back_from_an_older_copy_takes_its_own_ops_back_first() {
    let mut c = Cluster::new(2, &[]);
    let only1 = c.pinned(1);
    let mut a = c.node(&only1, "alice");
    a.ok("create_user alice pw");
    a.ok("login alice pw");
    a.ok("create_group g1");
    eventually("both trackers hold it", || c.digest(1) == c.digest(2));
    a.kill();
    c.kill(1);
    let copy = c.dir.path().join("data-1.copy");
    let cp = |from: &Path, to: &Path| {
        let st = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
        assert!(st.success(), "cp -a {} {}", from.display(), to.display());
    };
    cp(&c.data(1), &copy);
    // Tracker 1 goes on: a login, a group; tracker 2 takes both.
    c.start(1);
    let mut a = c.node(&only1, "alice-later");
    a.ok("login alice pw");
    a.ok("create_group g2");
    eventually("both trackers hold the later ops", || c.digest(1) == c.digest(2));
    a.kill();
    c.kill(1);
    // Its data directory put back to the copy; tracker 2 is up.
    std::fs::remove_dir_all(c.data(1)).unwrap();
    cp(&copy, &c.data(1));
    c.start(1);
    let mut a = c.node(&only1, "alice-restored");
    a.ok("login alice pw");
    a.ok("create_group g3");
    assert_eq!(a.cmd("list_groups"), ["g1", "g2", "g3"]);
    eventually("the two trackers converge", || c.digest(1) == c.digest(2));
}

#[test]
fn a_client_whose_tracker_dies_mid_download_finishes_through_the_other() {
    let mut c = Cluster::new(2, &[]);
    let both = c.info.clone();
    let src = c.dir.path().join("big.bin");
    random_file(&src, 12 * 1024 * 1024, 5);
    let mut seed = NodeProc::spawn(
        "127.0.0.1:0",
        &both,
        &c.dir.path().join("state-seed"),
        &[("RINGSHARE_SERVE_DELAY_MS", "40")],
        None,
    );
    seed.ok("create_user seed pw");
    seed.ok("login seed pw");
    seed.ok("create_group g");
    seed.ok(&format!("upload_file {} g", src.display()));
    let mut d = c.node(&both, "down");
    d.ok("create_user down pw");
    d.ok("login down pw");
    d.ok("join_group g");
    seed.ok("accept_request g down");
    let out = c.dir.path().join("out.bin");
    d.ok(&format!("download_file g big.bin {}", out.display()));
    d.wait_downloads(|l| l.first().is_some_and(|l| l.starts_with("[D]") && !l.contains(" 0%")));
    c.kill(1);
    // The shell keeps working with the same login, through tracker 2.
    assert_eq!(d.cmd("list_groups"), ["g"]);
    d.wait_downloads(|l| l.first().is_some_and(|l| l.starts_with("[C]")));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());
}

#[test]
fn a_peer_that_vanishes_drops_out_of_peer_lists() {
    vanishing_peer(1);
}

/// With two trackers too: the sharer's heartbeats go to one, the lists
/// come from the other. (Each passed the other's sessions back in its
/// gossip, stamped alive again every second: a node killed without
/// logging out stayed listed for good.)
#[test]
fn a_peer_that_vanishes_drops_out_of_both_trackers_peer_lists() {
    vanishing_peer(2);
}

fn vanishing_peer(trackers: usize) {
    let c = Cluster::new(trackers, &["--peer-ttl", "2"]);
    let (to_owner, to_sharer) = (c.pinned(trackers), c.pinned(1));
    let mut owner = c.node(&to_owner, "owner");
    owner.ok("create_user owner pw");
    owner.ok("login owner pw");
    owner.ok("create_group g");
    let mut sharer = c.node(&to_sharer, "sharer");
    sharer.ok("create_user sharer pw");
    sharer.ok("login sharer pw");
    // (With two trackers, each change reaches the other a moment later.)
    let done = |out: Vec<String>| !out.iter().any(|l| l.starts_with("error:"));
    eventually("the group reaches the sharer's tracker", || done(sharer.cmd("join_group g")));
    eventually("the request reaches the owner's tracker", || {
        done(owner.cmd("accept_request g sharer"))
    });
    eventually("the accept reaches the sharer's tracker", || {
        sharer.cmd("list_files g").iter().all(|l| !l.starts_with("error:"))
    });
    let f = c.dir.path().join("v.bin");
    random_file(&f, 1000, 9);
    sharer.ok(&format!("upload_file {} g", f.display()));
    eventually("the file reaches the owner's tracker", || {
        owner.cmd("list_files g") == ["v.bin  1000 bytes  1 peer"]
    });
    // Heartbeats keep it listed past the TTL.
    std::thread::sleep(std::time::Duration::from_millis(3000));
    assert_eq!(owner.cmd("list_files g"), ["v.bin  1000 bytes  1 peer"]);
    sharer.kill(); // no logout
    eventually("the vanished peer expires", || {
        owner.cmd("list_files g") == ["v.bin  1000 bytes  0 peers"]
    });
    if trackers > 1 {
        // And at the tracker it heard from.
        let mut at_first = c.node(&to_sharer, "owner-at-1");
        at_first.ok("login owner pw");
        assert_eq!(at_first.cmd("list_files g"), ["v.bin  1000 bytes  0 peers"]);
    }
}

/// A tracker restarted knows the key no sharer's node proved until it hears
/// from it again, and lists no node without one. A sharer's node sees its
/// connection close and heartbeats again at once (then retries, sooner at
/// first, until the tracker is back): a download finds it long before the
/// next period's heartbeat.
/// Here the period is a minute (`--peer-ttl` 600 s, a third of it capped at
/// 60 s); the node used to be missing from peer lists for all of it.
#[test]
fn a_restarted_tracker_hears_from_its_sharers_at_once() {
    let mut c = Cluster::new(1, &["--peer-ttl", "600"]);
    let info = c.info.clone();
    let mut owner = c.node(&info, "owner");
    owner.ok("create_user owner pw");
    owner.ok("login owner pw");
    owner.ok("create_group g");
    let mut sharer = c.node(&info, "sharer");
    sharer.ok("create_user sharer pw");
    sharer.ok("login sharer pw");
    sharer.ok("join_group g");
    owner.ok("accept_request g sharer");
    let f = c.dir.path().join("r.bin");
    random_file(&f, 1000, 11);
    sharer.ok(&format!("upload_file {} g", f.display()));
    assert_eq!(owner.cmd("list_files g"), ["r.bin  1000 bytes  1 peer"]);
    c.kill(1);
    c.start(1);
    let out = c.dir.path().join("out.bin");
    owner.ok(&format!("download_file g r.bin {}", out.display()));
    // Far less than the minute the next heartbeat would have taken.
    let start = std::time::Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < std::time::Duration::from_secs(30) {
        seen = owner.cmd("show_downloads");
        if seen.first().is_some_and(|l| l.starts_with("[C]")) {
            assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&f).unwrap());
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("not fetched from the sharer within 30 s of the restart: {seen:?}");
}

#[test]
fn a_damaged_log_stops_start_up_and_a_torn_tail_is_recovered() {
    let mut c = Cluster::new(1, &[]);
    let addr = c.addrs[0];
    let mut conn = RawClient::connect(addr).unwrap();
    let token = raw_login(&mut conn, "u");
    for i in 0..10 {
        assert_eq!(
            conn.call(&Request::CreateGroup { token, group: format!("g{i}") }).unwrap(),
            Response::Done
        );
    }
    c.kill(1); // no snapshot: everything is in log.1
    let log = c.data(1).join("log.1");
    let good = std::fs::read(&log).unwrap();

    // A torn tail: the start of a record (header and part of its payload).
    let mut torn = good.clone();
    torn.extend_from_slice(&good[..30]);
    std::fs::write(&log, &torn).unwrap();
    c.start(1);
    let mut conn = RawClient::connect(addr).unwrap();
    let Response::Names(groups) = conn.call(&Request::ListGroups { token }).unwrap() else {
        panic!()
    };
    assert_eq!(groups.len(), 10);
    c.kill(1);

    // A flipped byte in the middle: start-up refuses, naming file and offset.
    let mut bad = std::fs::read(&log).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x20;
    std::fs::write(&log, &bad).unwrap();
    let out = std::process::Command::new(common::bin("ringshare-tracker"))
        .arg(&c.info)
        .arg("1")
        .arg("--data-dir")
        .arg(c.data(1))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log.1") && err.contains("corrupt record at offset"), "{err}");
}

#[test]
fn quit_writes_a_snapshot_that_restarts_cleanly() {
    let mut c = Cluster::new(1, &[]);
    let addr = c.addrs[0];
    let mut conn = RawClient::connect(addr).unwrap();
    let token = raw_login(&mut conn, "u");
    conn.call(&Request::CreateGroup { token, group: "kept".into() }).unwrap();
    let mut t = c.trackers[0].take().unwrap();
    use std::io::Write;
    writeln!(t.stdin.as_mut().unwrap(), "quit").unwrap();
    assert!(t.child.wait().unwrap().success());
    assert!(c.data(1).join("snapshot").exists());
    c.start(1);
    let mut conn = RawClient::connect(addr).unwrap();
    assert_eq!(
        conn.call(&Request::ListGroups { token }).unwrap(),
        Response::Names(vec!["kept".into()])
    );
}

/// A tracker stopped cleanly (`quit`; SIGTERM and SIGINT take the same
/// path) in the middle of a client's writes: every write is answered, by
/// it or by the other tracker. Its log used to close under requests still
/// coming in, which failed with `tracker failure: op log: op log closed`
/// instead of going to the other tracker (found by a black-box run).
#[test]
fn a_tracker_stopped_mid_burst_sends_the_writes_on_to_the_other() {
    let mut c = Cluster::new(2, &[]);
    let mut node = c.node(&c.info, "writer");
    node.ok("create_user w pw");
    node.ok("login w pw");
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut wrong = Vec::new();
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let out = node.cmd(&format!("create_group g{i}"));
                if out != [format!("group g{i} created; you are its owner")] {
                    wrong.push(out);
                }
                acked.fetch_add(1, Ordering::Relaxed);
            }
            wrong
        })
    };
    // Writers straight to the tracker that stops, as fast as it answers:
    // done, or sent on (`Stopping`), or cut off as it exits; never failed.
    let addr = c.addrs[0];
    let token = raw_login(&mut RawClient::connect(addr).unwrap(), "raw");
    // Each raw writer's writes answered so far: the tracker is stopped only
    // once each has had one answered (it stopped before a writer started
    // on a loaded machine, and that writer had none to show).
    let answered: Arc<Vec<AtomicUsize>> = Arc::new((0..3).map(|_| AtomicUsize::new(0)).collect());
    let raw: Vec<_> = (0..3)
        .map(|w| {
            let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
            std::thread::spawn(move || {
                let (mut done, mut failed) = (0, Vec::new());
                let Ok(mut conn) = RawClient::connect(addr) else { return (done, failed) };
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let group = format!("r{w}-{i}");
                    match conn.call(&Request::CreateGroup { token, group }) {
                        Ok(Response::Done) => {
                            done += 1;
                            answered[w].fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Response::Refused(Refusal::Stopping(_))) | Err(_) => break,
                        Ok(other) => failed.push(other),
                    }
                }
                (done, failed)
            })
        })
        .collect();
    eventually("100 writes answered", || acked.load(Ordering::Relaxed) >= 100);
    eventually("a write of each raw writer answered", || {
        answered.iter().all(|n| n.load(Ordering::Relaxed) > 0)
    });
    let mut t = c.trackers[0].take().unwrap();
    use std::io::Write;
    writeln!(t.stdin.as_mut().unwrap(), "quit").unwrap();
    assert!(t.child.wait().unwrap().success());
    let at_quit = acked.load(Ordering::Relaxed);
    eventually("100 more writes answered", || acked.load(Ordering::Relaxed) >= at_quit + 100);
    stop.store(true, Ordering::Relaxed);
    let wrong = writer.join().unwrap();
    assert!(
        wrong.is_empty(),
        "{} writes not done: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
    for w in raw {
        let (done, failed) = w.join().unwrap();
        assert!(done > 0 && failed.is_empty(), "{done} done; failed: {failed:?}");
    }
}

/// A second tracker added to one that ran alone (its ops all folded into
/// its snapshot, so a newcomer gets an image): the newcomer takes the whole
/// state, without waiting for a write. Its first image, made before the
/// lone tracker held the newcomer's own first op, does not cover it and is
/// refused; the newcomer used to wait for entries that never came, serve
/// an empty state and take writes that the merge later lost.
#[test]
fn a_tracker_added_beside_one_that_ran_alone_takes_its_state() {
    let mut c = Cluster::new(1, &[]);
    let mut conn = RawClient::connect(c.addrs[0]).unwrap();
    let token = raw_login(&mut conn, "u");
    conn.call(&Request::CreateGroup { token, group: "kept".into() }).unwrap();
    let mut t = c.trackers[0].take().unwrap();
    use std::io::Write;
    writeln!(t.stdin.as_mut().unwrap(), "quit").unwrap();
    assert!(t.child.wait().unwrap().success());
    // Grown to two trackers: the same list, one more line.
    c.addrs.push(format!("127.0.0.1:{}", free_port()).parse().unwrap());
    c.trackers.push(None);
    let text: String = c.addrs.iter().map(|a| format!("{a}\n")).collect();
    std::fs::write(&c.info, text).unwrap();
    c.start(1);
    c.start(2);
    eventually("the new tracker holds the state", || c.digest(1) == c.digest(2));
    let mut conn = RawClient::connect(c.addrs[1]).unwrap();
    assert_eq!(
        conn.call(&Request::ListGroups { token }).unwrap(),
        Response::Names(vec!["kept".into()])
    );
}

/// A relay to `to` that passes the handshake's answer and cuts the
/// connection when the tracker's answer to the first request comes: the
/// tracker carried the request out, the client never hears so.
fn answer_eater(to: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut tracker) = std::net::TcpStream::connect(to) else { return };
            let (mut c2, mut t2) = (client.try_clone().unwrap(), tracker.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut t2);
            });
            std::thread::spawn(move || {
                // The handshake's one message back: a 2-byte length, then
                // that many bytes.
                let mut head = [0u8; 2];
                if tracker.read_exact(&mut head).is_err() {
                    return;
                }
                let mut msg = vec![0u8; usize::from(u16::from_be_bytes(head))];
                if tracker.read_exact(&mut msg).is_err() {
                    return;
                }
                let _ = client.write_all(&head).and_then(|()| client.write_all(&msg));
                // Then the answer: eaten, and both sides cut.
                let _ = tracker.read(&mut head);
                let _ = client.shutdown(std::net::Shutdown::Both);
                let _ = tracker.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr
}

/// A request carried out by a tracker whose answer never came, then asked
/// again of the next tracker, which already holds it: the refusal says it
/// may be this very command's doing (it read as somebody else's name: a
/// black-box run saw it twice in 17,000 writes with trackers killed).
#[test]
fn a_refusal_after_a_lost_answer_says_it_may_be_the_commands_own_doing() {
    let mut c = Cluster::new(1, &[]);
    let relay = answer_eater(c.addrs[0]);
    // The client asks through the relay first, then the tracker itself.
    let info = c.dir.path().join("relay-first.txt");
    std::fs::write(&info, format!("{relay}\n{}\n", c.addrs[0])).unwrap();
    let mut a = c.node(&info, "alice");
    a.err("create_user alice pw", "user alice already exists (perhaps by this very command");
    // It was made: the password works.
    a.ok("login alice pw");
    // A plain refusal says nothing more.
    let plain = a.err("create_user alice pw", "already exists");
    assert_eq!(plain, "error: user alice already exists");
    // Nor after a restart of the tracker: the link it closed is not
    // taken for one that lost an answer.
    c.kill(1);
    c.start(1);
    let plain = a.err("create_user alice pw", "already exists");
    assert_eq!(plain, "error: user alice already exists");
}
