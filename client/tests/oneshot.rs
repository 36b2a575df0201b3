//! The one-shot forms of the binary: `ringshare demo`, `ringshare share` and
//! `ringshare get`, run as real processes.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{bin, random_file, NodeProc, TrackerProc};

#[test]
fn demo_moves_a_file_and_reports_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("ringshare"))
        .args(["demo", "--size", "6MiB", "--seeders", "2", "--io", "threads", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("byte-for-byte identical"), "{stdout}");
    assert!(stdout.contains("MB/s") && stdout.contains("CPU time"), "{stdout}");
    assert!(
        stdout.contains("p50") && stdout.contains("p99.9") && stdout.contains("max"),
        "{stdout}"
    );
    assert!(stderr.contains("I/O backend (serving and fetching): threads"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the demo cleans up");

    let bad = Command::new(bin("ringshare")).args(["demo", "--size", "lots"]).output().unwrap();
    assert!(!bad.status.success());
    // More than the disk holds: refused before anything is written.
    let big = Command::new(bin("ringshare"))
        .args(["demo", "--size", "100000000GiB", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&big.stderr);
    assert!(!big.status.success());
    assert!(
        stderr.lines().any(|l| l.starts_with("error: a ") && l.contains("free in")),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing left");
    // Stopped while it makes its file (1 GiB: it needs 2.1 GiB free): its
    // directory goes, and the status
    // says which signal.
    let mut child = Command::new(bin("ringshare"))
        .args(["demo", "--size", "1GiB", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with("ringshare demo:"), "{first}");
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the demo cleans up");
}

/// `ringshare SUB --trackers INFO --user USER --password-file PW` keeping
/// its records in `state`; the caller adds the rest.
fn one_shot(sub: &str, info: &Path, user: &str, pw: &Path, state: &Path) -> Command {
    let mut cmd = Command::new(bin("ringshare"));
    cmd.args([sub, "--trackers"])
        .arg(info)
        .args(["--user", user, "--password-file"])
        .arg(pw)
        .arg("--state-dir")
        .arg(state);
    cmd
}

/// Starts `share`, waits for its line saying it seeds; the process and
/// its first line (what it shared).
/// A one-shot `share` by alice of `payload.bin` (700,000 bytes from random
/// seed `seed`), seeding, with its standard error line by line.
fn alice_shares_700_kb(
    dir: &Path,
    info: &Path,
    seed: u64,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let file = dir.join("payload.bin");
    random_file(&file, 700_000, seed);
    let pw_a = dir.join("pw-a");
    std::fs::write(&pw_a, "pw-a\n").unwrap();
    let (mut sharer, _) = seeding(
        one_shot("share", info, "alice", &pw_a, &dir.join("state-share"))
            .arg("g")
            .arg(&file)
            .stderr(Stdio::piped()),
    );
    let err = common::line_reader(sharer.stderr.take().unwrap());
    (sharer, err)
}

fn seeding(share: &mut Command) -> (std::process::Child, String) {
    let mut sharer = share.stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(sharer.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    assert!(second.starts_with("seeding on"), "{first}\n{second}");
    (sharer, first)
}

/// Alice (owner of group `g`, her node serving on `listen` with `env`)
/// and bob, a member, each in a shell logged in.
fn alice_and_bob(
    dir: &Path,
    info: &Path,
    listen: &str,
    env: &[(&str, &str)],
) -> (NodeProc, NodeProc) {
    let mut owner = NodeProc::spawn(listen, info, &dir.join("state-o"), env, None);
    owner.ok("create_user alice pw-a");
    owner.ok("login alice pw-a");
    owner.ok("create_group g");
    let mut bob = NodeProc::start(info, &dir.join("state-b"));
    bob.ok("create_user bob pw-b");
    bob.ok("login bob pw-b");
    bob.ok("join_group g");
    owner.ok("accept_request g bob");
    (owner, bob)
}

/// Waits for a line of `lines` that starts with `start`; the line.
fn line_starting(lines: &std::sync::mpsc::Receiver<String>, start: &str) -> String {
    loop {
        match lines.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(l) if l.starts_with(start) => return l,
            Ok(_) => {}
            Err(e) => panic!("no line starting {start:?}: {e}"),
        }
    }
}

/// A seeder says so when no tracker answers its heartbeats and again when
/// one does (a tracker killed and started again with its data); and it
/// ends with an error once the trackers no longer know its session (the
/// tracker's data put back from before its login): it would seed for
/// nobody, silently.
#[test]
fn a_seeder_says_when_the_trackers_go_silent_and_forget_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut t, info) = TrackerProc::start(dir.path());
    let (mut owner, _bob) = alice_and_bob(dir.path(), &info, "127.0.0.1:0", &[]);
    let data = dir.path().join("tracker-data");
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_name() != "lock" {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    };
    let before = dir.path().join("tracker-data-before");
    copy(&data, &before);
    let (mut sharer, err) = alice_shares_700_kb(dir.path(), &info, 5);
    t.kill();
    let silent = line_starting(&err, "ringshare: no tracker has answered for ");
    assert!(
        silent.ends_with(": this node's files are not listed while none does; trying on"),
        "{silent}"
    );
    let mut t = TrackerProc::start_with(&info, 1, &data, &[]);
    assert_eq!(
        line_starting(&err, "ringshare: a tracker answers"),
        "ringshare: a tracker answers again: the files are listed again"
    );
    // A tracker that hangs: said from the heartbeat it does not answer
    // (a call fails only at the link's timeout, 10 s).
    let signal = |sig: &str| {
        Command::new("kill").args([sig, &t.child.id().to_string()]).status().unwrap();
    };
    signal("-STOP");
    assert_eq!(
        line_starting(&err, "ringshare: no tracker has answered for "),
        "ringshare: no tracker has answered for 5s (no answer yet): this node's files are not \
         listed while none does; trying on"
    );
    signal("-CONT");
    line_starting(&err, "ringshare: a tracker answers again");
    // Its data from before the seeder's login: the session is unknown. The
    // seeder logs in again with the password it was given, and its file is
    // shared again from its share record.
    let before_again = dir.path().join("tracker-data-before-again");
    copy(&before, &before_again);
    let put_back = |t: &mut TrackerProc, from: &Path| {
        t.kill();
        std::fs::remove_dir_all(&data).unwrap();
        std::fs::rename(from, &data).unwrap();
        TrackerProc::start_with(&info, 1, &data, &[])
    };
    let mut t = put_back(&mut t, &before);
    assert_eq!(
        line_starting(&err, "ringshare: the trackers had ended"),
        "ringshare: the trackers had ended this node's session (silent for longer than their \
         session expiry, or a tracker lost its data): logged in again; resumed sharing 1 file(s)"
    );
    common::eventually("the file listed again", || {
        owner.cmd("list_files g") == ["payload.bin  700000 bytes  1 peer"]
    });
    // Ended again within a minute: an error, as before (another node
    // taking its address each time would have them take turns).
    let _t = put_back(&mut t, &before_again);
    let ended = line_starting(&err, "error:");
    assert!(
        ended.starts_with("error: the trackers no longer know this node's session: another node")
            && ended
                .ends_with("or a tracker lost its data: its files are not listed; run share again"),
        "{ended}"
    );
    assert_eq!(sharer.wait().unwrap().code(), Some(1));
}

/// A `share` silent for longer than the trackers' session expiry (stopped,
/// here; a laptop asleep, a network down for a day) finds its session
/// ended when it wakes: it logs in again and its file is listed again.
#[test]
fn a_seeder_whose_session_expired_logs_in_again() {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("boot.txt");
    std::fs::write(&boot, "127.0.0.1:0\n").unwrap();
    let extra = ["--peer-ttl", "1", "--session-expiry", "2"];
    let _t = TrackerProc::start_with(&boot, 1, &dir.path().join("tdata"), &extra);
    let info = dir.path().join("tracker_info.txt");
    std::fs::write(&info, format!("{}\n", _t.addr)).unwrap();
    let (mut owner, _bob) = alice_and_bob(dir.path(), &info, "127.0.0.1:0", &[]);
    let (mut sharer, err) = alice_shares_700_kb(dir.path(), &info, 6);
    let listed = "payload.bin  700000 bytes  1 peer".to_owned();
    common::eventually("the file listed", || owner.cmd("list_files g") == [listed.clone()]);
    let signal = |sig: &str| {
        Command::new("kill").args([sig, &sharer.id().to_string()]).status().unwrap();
    };
    signal("-STOP");
    // Its session expires with its share: the file, shared by it alone,
    // leaves the group.
    common::eventually("the file gone", || owner.cmd("list_files g").is_empty());
    signal("-CONT");
    assert_eq!(
        line_starting(&err, "ringshare: the trackers had ended"),
        "ringshare: the trackers had ended this node's session (silent for longer than their \
         session expiry, or a tracker lost its data): logged in again; resumed sharing 1 file(s)"
    );
    common::eventually("the file listed again", || owner.cmd("list_files g") == [listed.clone()]);
    signal("-TERM");
    assert!(sharer.wait().unwrap().success(), "{:?}", err.try_iter().collect::<Vec<_>>());
}

#[test]
fn share_then_get() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, info) = TrackerProc::start(dir.path());
    let (mut owner, mut bob) = alice_and_bob(dir.path(), &info, "127.0.0.1:0", &[]);
    bob.ok("logout");

    let file = dir.path().join("payload.bin");
    random_file(&file, 3 * 1024 * 1024 + 17, 21);
    let pw_a = dir.path().join("pw-a");
    std::fs::write(&pw_a, "pw-a\n").unwrap();
    let pw_b = dir.path().join("pw-b");
    std::fs::write(&pw_b, "pw-b\n").unwrap();

    let state = dir.path().join("state-share");
    // Paced: each downloader served at its share of the upload rate.
    let (mut sharer, first) = seeding(
        one_shot("share", &info, "alice", &pw_a, &state)
            .args(["--upload-rate", "200mbit", "g"])
            .arg(&file)
            .stderr(Stdio::null()),
    );
    assert!(first.starts_with("uploaded payload.bin to g"), "{first}");

    let get = |name: &str, dest: &std::path::Path| {
        one_shot("get", &info, "bob", &pw_b, &dir.path().join("state-get"))
            .args(["g", name])
            .arg(dest)
            .output()
            .unwrap()
    };
    let dest = dir.path().join("got.bin");
    let out = get("payload.bin", &dest);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&file).unwrap());

    // A rate it cannot read: one error line naming it, nothing fetched.
    let out = Command::new(bin("ringshare"))
        .args(["get", "--upload-rate", "fast", "--trackers"])
        .arg(&info)
        .args(["--user", "bob", "--password-file"])
        .arg(&pw_b)
        .args(["g", "payload.bin"])
        .arg(dir.path().join("never"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    assert!(err.contains("upload rate \"fast\""), "{err}");
    assert!(!dir.path().join("never").exists());

    let out = get("missing.bin", &dir.path().join("nothing"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: no such file in group g: missing.bin"), "{err}");

    // --quiet: the path on stdout, nothing on stderr; run again, with the
    // file already there, the same.
    let quiet = dir.path().join("quiet.bin");
    for _ in 0..2 {
        let out = one_shot("get", &info, "bob", &pw_b, &dir.path().join("state-get"))
            .args(["--quiet", "g", "payload.bin"])
            .arg(&quiet)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stderr), "");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), quiet.display().to_string());
    }

    // The same command again: the same file is already there, verified.
    let out = get("payload.bin", &dest);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("is already there (same SHA1)"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), dest.display().to_string());
    // A different file there is never overwritten.
    let other = dir.path().join("other.bin");
    std::fs::write(&other, vec![7u8; 3 * 1024 * 1024 + 17]).unwrap();
    let out = get("payload.bin", &other);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an existing destination is not overwritten");
    assert!(
        err.contains(&format!(
            "error: destination {} already exists (not this file: it is never overwritten)",
            other.display()
        )),
        "{err}"
    );
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    assert_eq!(std::fs::read(&other).unwrap(), vec![7u8; 3 * 1024 * 1024 + 17]);

    // --stats is written however the one-file form ends (it was left
    // empty but for a completed download).
    let stats = dir.path().join("stats.json");
    let with_stats = |name: &str, dest: &std::path::Path| {
        let _ = std::fs::remove_file(&stats);
        let out = one_shot("get", &info, "bob", &pw_b, &dir.path().join("state-get"))
            .args(["--quiet", "--stats"])
            .arg(&stats)
            .args(["g", name])
            .arg(dest)
            .output()
            .unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&stats).unwrap()).expect("a JSON document");
        (out.status.success(), doc)
    };
    let fresh = dir.path().join("fresh.bin");
    let (ok, doc) = with_stats("payload.bin", &fresh);
    assert!(ok, "{doc}");
    assert_eq!(
        (doc["files_done"].as_u64(), doc["bytes"].as_u64()),
        (Some(1), Some(3 * 1024 * 1024 + 17))
    );
    assert_eq!(doc["fetched"], doc["bytes"], "all of it fetched by this run: {doc}");
    assert!(doc["mbps"].as_f64().unwrap() > 0.0 && doc["failed"].as_array().unwrap().is_empty());
    let (ok, doc) = with_stats("payload.bin", &fresh);
    assert!(ok && doc["already_present"] == true && doc["files_done"] == 1, "{doc}");
    // Its size, and nothing fetched (the figures were left out).
    assert_eq!(doc["bytes"].as_u64(), Some(3 * 1024 * 1024 + 17), "{doc}");
    assert!(doc["fetched"] == 0 && doc["peers"].as_array().is_some_and(Vec::is_empty), "{doc}");
    let (ok, doc) = with_stats("payload.bin", &other);
    assert!(!ok && doc["files_failed"] == 1 && doc["files_done"] == 0, "{doc}");
    assert!(doc["failed"][0]["reason"].as_str().unwrap().contains("already exists"), "{doc}");
    let (ok, doc) = with_stats("missing.bin", &dir.path().join("nothing"));
    assert!(!ok && doc["names_unmatched"] == 1 && doc["files_failed"] == 0, "{doc}");

    let status = Command::new("kill").arg("-TERM").arg(sharer.id().to_string()).status().unwrap();
    assert!(status.success());
    assert!(sharer.wait().unwrap().success(), "share exits cleanly on SIGTERM");
    // On a port the system picked, no later node can serve the file from
    // that address: it was withdrawn (bob's get withdrew what it had
    // registered as it fetched, too), and neither node left a share record.
    assert!(owner.cmd("list_files g").is_empty());
    for state in [state, dir.path().join("state-get")] {
        let logs = common::share_records(&state);
        assert!(logs.is_empty(), "{logs:?} in {}", state.display());
    }
}

/// `get --seed-for`: once its files are complete the node goes on serving
/// them (here to a third node, the first seeder gone), says so, and a
/// signal ends it with exit status 0; a duration it cannot read is one
/// error line before anything is fetched.
#[test]
fn a_get_that_seeds_on_serves_the_next_downloader() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, info) = TrackerProc::start(dir.path());
    let (mut owner, mut bob) = alice_and_bob(dir.path(), &info, "127.0.0.1:0", &[]);
    bob.ok("logout");
    let mut carol = NodeProc::start(&info, &dir.path().join("state-c"));
    carol.ok("create_user carol pw-c");
    carol.ok("login carol pw-c");
    carol.ok("join_group g");
    owner.ok("accept_request g carol");
    carol.ok("logout");
    let file = dir.path().join("payload.bin");
    random_file(&file, 2 * 1024 * 1024 + 5, 8);
    let pw = |user: &str| {
        let p = dir.path().join(format!("pw-{user}"));
        std::fs::write(&p, format!("pw-{user}\n")).unwrap();
        p
    };
    let (pw_a, pw_b, pw_c) = (pw("a"), pw("b"), pw("c"));
    let (mut sharer, _) = seeding(
        one_shot("share", &info, "alice", &pw_a, &dir.path().join("state-share"))
            .arg("g")
            .arg(&file)
            .stderr(Stdio::null()),
    );

    let out = one_shot("get", &info, "bob", &pw_b, &dir.path().join("state-get"))
        .args(["--seed-for", "5x", "g", "payload.bin"])
        .arg(dir.path().join("never"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    assert!(err.contains("expected a duration such as 90, 30s, 10m or 2h"), "{err}");
    assert!(!dir.path().join("never").exists());

    // The bulk form (a glob), seeding on.
    let got = dir.path().join("got");
    let mut seeder = one_shot("get", &info, "bob", &pw_b, &dir.path().join("state-get"))
        .args(["--seed-for", "10m", "g", "*.bin"])
        .arg(&got)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = common::line_reader(seeder.stderr.take().unwrap());
    assert_eq!(
        line_starting(&err, "ringshare: seeding"),
        "ringshare: seeding 1 fetched file(s) to g for 10m (SIGINT, SIGTERM or SIGHUP ends it \
         sooner)"
    );
    assert_eq!(std::fs::read(got.join("payload.bin")).unwrap(), std::fs::read(&file).unwrap());
    // The first seeder leaves (withdrawing its file): bob's node is left.
    Command::new("kill").arg("-TERM").arg(sharer.id().to_string()).status().unwrap();
    assert!(sharer.wait().unwrap().success());
    let dest = dir.path().join("carol.bin");
    let out = one_shot("get", &info, "carol", &pw_c, &dir.path().join("state-carol"))
        .args(["--quiet", "g", "payload.bin"])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&file).unwrap());
    Command::new("kill").arg("-TERM").arg(seeder.id().to_string()).status().unwrap();
    assert_eq!(seeder.wait().unwrap().code(), Some(0), "a signal ends the seeding, not the get");
    // It withdrew as it left: the file has no sharer now.
    assert!(owner.cmd("list_files g").is_empty());
}

/// A one-shot `share` of a file by alice, and bob's `get --seed-for 10m` of
/// it into `got.bin`, past its line saying it seeds.
struct SeedingGet {
    sharer: std::process::Child,
    seeder: std::process::Child,
    /// The seeding get's standard error, line by line.
    err: std::sync::mpsc::Receiver<String>,
    /// Alice's password file.
    pw_a: std::path::PathBuf,
}

fn share_and_seed_on(dir: &Path, info: &Path, file: &Path) -> SeedingGet {
    let pw = |user: &str| {
        let p = dir.join(format!("pw-{user}"));
        std::fs::write(&p, format!("pw-{user}\n")).unwrap();
        p
    };
    let (pw_a, pw_b) = (pw("a"), pw("b"));
    let (sharer, _) = seeding(
        one_shot("share", info, "alice", &pw_a, &dir.join("state-share"))
            .arg("g")
            .arg(file)
            .stderr(Stdio::null()),
    );
    let mut seeder = one_shot("get", info, "bob", &pw_b, &dir.join("state-get"))
        .args(["--seed-for", "10m", "g"])
        .arg(file.file_name().unwrap())
        .arg(dir.join("got.bin"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = common::line_reader(seeder.stderr.take().unwrap());
    line_starting(&err, "ringshare: seeding");
    SeedingGet { sharer, seeder, err, pw_a }
}

/// A `get --seed-for` of a small file is listed as its sharer (a get that
/// ends at once registers such a file only seconds later, if at all): once
/// the file's first sharer leaves, the file stays in its group and the
/// seeding get serves it.
#[test]
fn a_get_that_seeds_on_keeps_a_small_file_listed_when_its_sharer_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, info) = TrackerProc::start(dir.path());
    let (mut owner, _bob) = alice_and_bob(dir.path(), &info, "127.0.0.1:0", &[]);
    let file = dir.path().join("small.bin");
    random_file(&file, 100_000, 11);
    let SeedingGet { mut sharer, mut seeder, pw_a, .. } =
        share_and_seed_on(dir.path(), &info, &file);
    // Listed by the time it says it seeds.
    assert_eq!(owner.cmd("list_files g"), ["small.bin  100000 bytes  2 peers"]);
    Command::new("kill").arg("-TERM").arg(sharer.id().to_string()).status().unwrap();
    assert!(sharer.wait().unwrap().success());
    assert_eq!(owner.cmd("list_files g"), ["small.bin  100000 bytes  1 peer"]);
    let again = dir.path().join("again.bin");
    let out = one_shot("get", &info, "alice", &pw_a, &dir.path().join("state-again"))
        .args(["--quiet", "g", "small.bin"])
        .arg(&again)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&file).unwrap());
    Command::new("kill").arg("-TERM").arg(seeder.id().to_string()).status().unwrap();
    assert_eq!(seeder.wait().unwrap().code(), Some(0));
}

/// A `get --seed-for` whose user leaves the group serves nothing any more:
/// it ends then, saying why, rather than run on for the rest of its time
/// (a black-box run's went on for five minutes).
#[test]
fn a_get_that_seeds_on_ends_once_nothing_is_shared() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, info) = TrackerProc::start(dir.path());
    let (_owner, mut bob) = alice_and_bob(dir.path(), &info, "127.0.0.1:0", &[]);
    let file = dir.path().join("payload.bin");
    random_file(&file, 100_000, 9);
    let SeedingGet { mut sharer, mut seeder, err, .. } =
        share_and_seed_on(dir.path(), &info, &file);
    bob.ok("leave_group g");
    let said = line_starting(&err, "ringshare: stopped seeding");
    assert_eq!(
        said,
        "ringshare: stopped seeding: nothing is shared here any more (see the warnings above)"
    );
    assert_eq!(seeder.wait().unwrap().code(), Some(0), "the files fetched stay fetched");
    Command::new("kill").arg("-TERM").arg(sharer.id().to_string()).status().unwrap();
    sharer.wait().unwrap();
}

/// A `share` on a picked port that cannot withdraw (the tracker gone) ends
/// with one error line that says where the files stay listed and how to
/// stop sharing them, and keeps its share record for that.
#[test]
fn a_withdrawal_that_fails_is_an_error_and_keeps_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut tracker, info) = TrackerProc::start(dir.path());
    let (_owner, _bob) = alice_and_bob(dir.path(), &info, "127.0.0.1:0", &[]);
    let file = dir.path().join("w.bin");
    random_file(&file, 2000, 9);
    let pw = dir.path().join("pw-a");
    std::fs::write(&pw, "pw-a\n").unwrap();
    let state = dir.path().join("state-share");
    // Listening on every interface: listed under the address its login
    // came from, which the message cannot name (it named 0.0.0.0).
    let every = dir.path().join("state-every");
    let (on_every, _) = seeding(
        one_shot("share", &info, "alice", &pw, &every)
            .args(["--listen", "0.0.0.0:0", "g"])
            .arg(&file)
            .stderr(Stdio::piped()),
    );
    let (sharer, first) = seeding(
        one_shot("share", &info, "alice", &pw, &state).arg("g").arg(&file).stderr(Stdio::piped()),
    );
    assert!(first.starts_with("uploaded w.bin to g"), "{first}");
    tracker.kill();
    Command::new("kill").arg("-INT").arg(on_every.id().to_string()).status().unwrap();
    let out = on_every.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stay listed under port "), "{err}");
    assert!(err.contains("of the address the trackers see this host at"), "{err}");
    assert!(!err.contains("listed under 0.0.0.0"), "{err}");
    Command::new("kill").arg("-INT").arg(sharer.id().to_string()).status().unwrap();
    let out = sharer.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].starts_with("error: withdraw the shared files: "), "{err}");
    assert!(errors[0].contains("stay listed under 127.0.0.1:"), "{err}");
    assert_eq!(common::share_records(&state).len(), 1, "the record stays");
}

/// A `share` on a fixed `--listen` port stops with its files still listed
/// (0 peers); the same command run again seeds them again, resumed from its
/// share record.
#[test]
fn share_on_a_fixed_port_keeps_its_files_listed_and_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, info) = TrackerProc::start(dir.path());
    let (mut owner, _bob) = alice_and_bob(dir.path(), &info, "127.0.0.1:0", &[]);
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    random_file(&tree.join("a.bin"), 600_000, 3);
    random_file(&tree.join("b.bin"), 1_000, 4);
    let pw = dir.path().join("pw-a");
    std::fs::write(&pw, "pw-a\n").unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let run = |expect: &str| {
        let (sharer, first) = seeding(
            one_shot("share", &info, "alice", &pw, &dir.path().join("state-share"))
                .args(["--listen", &listen, "g"])
                .arg(&tree)
                .stderr(Stdio::null()),
        );
        assert_eq!(first, expect);
        sharer
    };
    let stop = |mut sharer: std::process::Child| {
        let status =
            Command::new("kill").arg("-INT").arg(sharer.id().to_string()).status().unwrap();
        assert!(status.success());
        assert!(sharer.wait().unwrap().success(), "share exits cleanly on SIGINT");
    };
    let sharer = run("shared 2 file(s) in g: 601000 bytes, 3 pieces");
    assert_eq!(
        owner.cmd("list_files g"),
        ["tree/a.bin  600000 bytes  1 peer", "tree/b.bin  1000 bytes  1 peer"]
    );
    stop(sharer);
    assert_eq!(
        owner.cmd("list_files g"),
        ["tree/a.bin  600000 bytes  0 peers", "tree/b.bin  1000 bytes  0 peers"]
    );
    let sharer = run("shared 0 file(s) in g: 0 bytes, 0 pieces; 2 already shared");
    assert_eq!(
        owner.cmd("list_files g"),
        ["tree/a.bin  600000 bytes  1 peer", "tree/b.bin  1000 bytes  1 peer"]
    );
    stop(sharer);
}

/// A file nobody shares: both forms of `get` fail once the trackers have
/// listed no sharer for 10 s, each saying why once (the download's own
/// warning said it a second time).
#[test]
fn a_file_nobody_shares_fails_saying_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, info) = TrackerProc::start(dir.path());
    // At a fixed address: its files stay listed while it is logged out.
    let listen = format!("127.0.0.1:{}", common::free_port());
    let (mut owner, _bob) = alice_and_bob(dir.path(), &info, &listen, &[]);
    let file = dir.path().join("f.bin");
    random_file(&file, 1000, 2);
    owner.ok(&format!("upload_file {} g", file.display()));
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    random_file(&tree.join("sub/deep.bin"), 1000, 3);
    owner.ok(&format!("upload_file {} g", tree.display()));
    owner.ok("logout");
    let pw_b = dir.path().join("pw-b");
    std::fs::write(&pw_b, "pw-b\n").unwrap();
    let get = |args: &[&str], state: &str| {
        one_shot("get", &info, "bob", &pw_b, &dir.path().join(state))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Both at once: downloaders of a file nobody shares are not listed to
    // one another (they hold nothing), so neither waits on the other.
    let (one, all) = (dir.path().join("one"), dir.path().join("all"));
    let one_run = get(&["g", "f.bin", one.to_str().unwrap()], "state-one");
    let all_run = get(&["g", "f.bin", "tree/", all.to_str().unwrap()], "state-all");
    // Into directories made for them: none is left behind, empty.
    let (deep, under) = (dir.path().join("deep"), dir.path().join("under"));
    // (Directories above DEST made too: made for it as well.)
    let deep_run = get(&["g", "tree/sub/deep.bin", &format!("{}/x/", deep.display())], "state-d");
    let under_run = get(&["g", "tree/", under.join("p/q").to_str().unwrap()], "state-u");
    for (run, line, files) in [
        (one_run, "error: download failed: no node shares the file (none listed for 10s)", 1),
        (all_run, "ringshare: failed f.bin: no node shares the file (none listed for 10s)", 2),
        (deep_run, "error: download failed: no node shares the file (none listed for 10s)", 1),
        (
            under_run,
            "ringshare: failed tree/sub/deep.bin: no node shares the file (none listed for 10s)",
            1,
        ),
    ] {
        let out = run.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.lines().any(|l| l == line), "{err}");
        assert_eq!(err.matches("no node shares").count(), files, "{err}");
    }
    // Nothing was verified: no part file is left for a resume to use.
    assert!(!dir.path().join("one.part").exists());
    assert!(!all.join("f.bin.part").exists());
    assert!(!deep.exists() && !under.exists() && !all.exists());
}

/// A `get` stopped by a signal (a port the system picked) withdraws its
/// registration; the run that resumes it holds verified pieces from its
/// start and is registered at once, at its own address, with no new piece.
#[test]
fn a_resumed_get_is_a_sharer_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, info) = TrackerProc::start(dir.path());
    // Each piece served a second late: the first run is stopped between
    // its first piece and its last.
    let slow = [("RINGSHARE_SERVE_DELAY_MS", "1000")];
    // At a fixed address: its file stays listed while it is logged out.
    let listen = format!("127.0.0.1:{}", common::free_port());
    let (mut owner, mut bob) = alice_and_bob(dir.path(), &info, &listen, &slow);
    let file = dir.path().join("f.bin");
    random_file(&file, 12 * 512 * 1024, 5);
    owner.ok(&format!("upload_file {} g", file.display()));
    let pw_b = dir.path().join("pw-b");
    std::fs::write(&pw_b, "pw-b\n").unwrap();
    let dest = dir.path().join("got.bin");
    let stats = |n: u32| dir.path().join(format!("stats-{n}.json"));
    let get = |n: u32| {
        one_shot("get", &info, "bob", &pw_b, &dir.path().join("state-get"))
            .arg("--stats")
            .arg(stats(n))
            .args(["g", "f.bin"])
            .arg(&dest)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let peers = |bob: &mut NodeProc, n: &str| {
        bob.cmd("list_files g") == [format!("f.bin  6291456 bytes  {n}")]
    };
    let first = get(1);
    // Registered once its first piece is verified.
    common::eventually("the first run to be listed", || peers(&mut bob, "2 peers"));
    // SIGTERM, as a service manager sends it, stops it as Ctrl-C does.
    Command::new("kill").arg("-TERM").arg(first.id().to_string()).status().unwrap();
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "128 + SIGTERM");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines().any(|l| l == "error: terminated; run the same command again to resume"),
        "{err}"
    );
    assert_eq!(bob.cmd("list_files g"), ["f.bin  6291456 bytes  1 peer"], "withdrawn");
    // Its figures say what it fetched before it was stopped.
    let doc = |n: u32| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(stats(n)).unwrap()).unwrap()
    };
    let first = doc(1);
    assert_eq!(first["stopped_by"], "terminated", "{first}");
    assert_eq!(first["files_interrupted"], 1, "{first}");
    assert_eq!(first["bytes"], 6291456, "{first}");
    let fetched = first["fetched"].as_u64().expect("fetched");
    assert!(fetched > 0 && fetched < 6291456, "{first}");
    assert_eq!(first["bytes_partial"], fetched, "{first}");
    assert!(first["seconds"].as_f64() > Some(0.0), "{first}");
    assert_eq!(first["peers"][0]["bytes"], fetched, "{first}");
    // Alice gone: the run that resumes can fetch nothing more, yet holds
    // pieces, and is listed from its start.
    owner.ok("logout");
    assert!(peers(&mut bob, "0 peers"));
    let again = get(2);
    common::eventually("the resumed run to be listed", || peers(&mut bob, "1 peer"));
    let out = again.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Its own address the one listed: it says so, and how much it holds.
    assert!(
        err.contains("no other node shares the file (for 10s the only node listed was this one, which holds "),
        "{err}"
    );
    assert!(err.contains(" of its 12 pieces); the "), "{err}");
    // And that what it holds is kept, for the same command to resume.
    assert!(
        err.contains(" of 6291456 bytes verified are kept: run the same command again to resume\n"),
        "{err}"
    );
    // Failed, its figures too: nothing fetched by this run.
    let second = doc(2);
    assert_eq!(second["files_failed"], 1, "{second}");
    assert_eq!((second["bytes"].as_u64(), second["fetched"].as_u64()), (Some(6291456), Some(0)));
    assert!(second["failed"][0]["reason"].as_str().unwrap().contains("no other node"), "{second}");
    // What it holds stays for the next run.
    assert!(dir.path().join("got.bin.part").exists());
    assert!(dir.path().join("got.bin.part.state").exists());
}

/// A missing file is one `error:` line that names the OS error once, from
/// each binary (its message carries the OS error; a chain printed whole
/// once said it again as the cause).
#[test]
fn a_missing_file_is_one_error_line_that_says_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-tracker-info.txt");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pw\n").unwrap();
    let runs = [
        Command::new(bin("ringshare"))
            .args(["get", "--trackers"])
            .arg(&missing)
            .args(["--user", "bob", "--password-file"])
            .arg(&pw)
            .args(["g", "x"])
            .arg(dir.path().join("out"))
            .output()
            .unwrap(),
        Command::new(bin("ringshare"))
            .args(["ls", "--trackers"])
            .arg(dir.path())
            .args(["--user", "bob", "--password-file"])
            .arg(dir.path().join("no-such-password-file"))
            .arg("g")
            .output()
            .unwrap(),
        Command::new(bin("ringshare-tracker")).arg(&missing).arg("1").output().unwrap(),
    ];
    for out in runs {
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert_eq!(lines[0].matches("os error").count(), 1, "{err}");
    }
}

/// One node per user and address: a second node (another state
/// directory, so another node key) given a running node's address with
/// `--advertise` is refused with one line instead of logging that node
/// out; `ls` with the same flags logs in at its own address; a node of the
/// same state directory (a restart, as the tracker sees it) takes the
/// place, and the node it displaced says so at once and can log in again.
#[test]
fn a_second_node_at_a_running_node_s_address_does_not_log_it_out() {
    let dir = tempfile::tempdir().unwrap();
    // Heartbeats every second (a third of the TTL).
    let (_t, info) = TrackerProc::start_with_ttl(dir.path(), 3);
    let port = common::free_port();
    let at = format!("127.0.0.1:{port}");
    let (state_a, shell_err) = (dir.path().join("state-a"), dir.path().join("a.stderr"));
    let mut a = NodeProc::spawn(&at, &info, &state_a, &[], Some(&shell_err));
    a.ok("create_user al pw");
    a.ok("login al pw");
    a.ok("create_group g");
    let file = dir.path().join("f.bin");
    random_file(&file, 70_000, 3);
    a.ok(&format!("upload_file {} g", file.display()));
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pw\n").unwrap();
    let other = |sub: &str, state: &Path| {
        let mut c = one_shot(sub, &info, "al", &pw, state);
        c.args(["--listen", "127.0.0.1:0", "--advertise", &at]);
        c
    };
    let state_b = dir.path().join("state-b");
    let out = other("share", &state_b).arg("g").arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains(&format!("another node is logged in as al at {at}")), "{err}");
    let out = other("ls", &state_b).arg("g").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("f.bin"));
    // The shell is still logged in, its file still listed by it.
    let line = a.ok("list_files g");
    assert!(line.contains("1 peer"), "{line}");
    // Its own state directory: taken for a restart of that node.
    let out = other("ls", &state_a).arg("g").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    a.ok("list_groups");
    let mut sharer = other("share", &state_a)
        .arg("g")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::eventually("the shell to say its session ended", || {
        std::fs::read_to_string(&shell_err).unwrap().contains(
            "the trackers no longer know this node's session: another node logged in as al",
        )
    });
    let said = std::fs::read_to_string(&shell_err).unwrap();
    assert_eq!(said.matches("no longer know").count(), 1, "{said}");
    sharer.kill().unwrap();
    sharer.wait().unwrap();
    a.err("list_groups", "not logged in");
    a.ok("login al pw");
    a.ok("list_groups");
}

/// A one-file get whose place another node of its state directory took
/// (so the trackers forgot its session) stops at once saying why, instead
/// of failing a minute later for want of a ticket ("no peer could serve
/// the file for 60s (last error: not logged in)").
#[test]
fn a_displaced_get_stops_at_once_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, info) = TrackerProc::start_with_ttl(dir.path(), 3);
    let mut a = NodeProc::start(&info, &dir.path().join("state-a"));
    a.ok("create_user al pw");
    a.ok("login al pw");
    a.ok("create_group g");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pw\n").unwrap();
    // A seeder that takes a minute per piece: the get is still running.
    let big = dir.path().join("big.bin");
    random_file(&big, 1_200_000, 5);
    let (mut seeder, _) = seeding(
        one_shot("share", &info, "al", &pw, &dir.path().join("state-s"))
            .env("RINGSHARE_SERVE_DELAY_MS", "60000")
            .arg("g")
            .arg(&big),
    );
    let state_g = dir.path().join("state-g");
    let at = format!("127.0.0.1:{}", common::free_port());
    let mut get = one_shot("get", &info, "al", &pw, &state_g)
        .args(["--listen", &at, "g", "big.bin"])
        .arg(dir.path().join("out.bin"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = common::line_reader(get.stderr.take().unwrap());
    line_starting(&err, "downloading big.bin");
    // The same state directory (its key) at the get's address.
    let small = dir.path().join("small.bin");
    random_file(&small, 1000, 6);
    let displace = |state: &Path, at: &str| {
        one_shot("share", &info, "al", &pw, state)
            .args(["--listen", "127.0.0.1:0", "--advertise", at, "g"])
            .arg(&small)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut displacer = displace(&state_g, &at);
    let said = line_starting(&err, "error:");
    assert!(
        said.starts_with(
            "error: download stopped: the trackers no longer know this node's session"
        ),
        "{said}"
    );
    assert_eq!(get.wait().unwrap().code(), Some(1));
    displacer.kill().unwrap();
    displacer.wait().unwrap();
    // A bulk get the same: stopped as by a signal, what it verified kept.
    let state_h = dir.path().join("state-h");
    let at = format!("127.0.0.1:{}", common::free_port());
    let into = dir.path().join("bulk");
    let get = one_shot("get", &info, "al", &pw, &state_h)
        .args(["--quiet", "--listen", &at, "g", "big.bin", "small.bin"])
        .arg(&into)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::eventually("the bulk get to start", || into.join("big.bin.part").exists());
    let mut displacer = displace(&state_h, &at);
    let out = get.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(
        line.starts_with("error: the trackers no longer know this node's session")
            && line.contains("file(s) not fetched; run the same command again to resume"),
        "{err}"
    );
    displacer.kill().unwrap();
    displacer.wait().unwrap();
    seeder.kill().unwrap();
    seeder.wait().unwrap();
}

/// A command line clap refuses (an unknown option, missing arguments, a
/// bad value, a mistyped form) is one `error:` line and status 2, as any
/// other failure is one line: clap's paragraph (tip, usage, pointer to
/// `--help`) is folded into it. Help still prints whole.
#[test]
fn a_bad_command_line_is_one_error_line() {
    let runs: [(&str, &[&str], &str); 8] = [
        ("ringshare", &["get", "--quite", "g", "d"], "similar argument exists: '--quiet'"),
        ("ringshare", &["get"], "--trackers <TRACKERS>, --user <USER>"),
        ("ringshare", &["get", "--jobs", "0", "g", "d"], "'0' for '--jobs <JOBS>'"),
        ("ringshare", &["gte", "g"], "'gte' is neither IP:PORT"),
        ("ringshare", &[], "<LISTEN>, <TRACKER_INFO>"),
        ("ringshare-tracker", &["info.txt", "one"], "invalid value 'one'"),
        ("ringshare-tracker", &["info.txt", "1", "--peer-ttl", "0"], "'0' for '--peer-ttl"),
        (
            "ringshare-tracker",
            &["info.txt", "1", "--digest", "--dump-state", "s"],
            "'--digest' cannot be used with '--dump-state <PATH>'",
        ),
    ];
    for (program, args, says) in runs {
        let out = Command::new(bin(program)).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{program} {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{program} {args:?}: {err}");
        assert!(err.starts_with("error: ") && err.contains(says), "{program} {args:?}: {err}");
        assert!(err.contains("--help')"), "{program} {args:?}: {err}");
    }
    let help = Command::new(bin("ringshare")).args(["get", "--help"]).output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--seed-for"));
}

/// `--advertise` with a port the system picks for the node: warned about
/// (no forward can be set up to it ahead, and its files stay listed).
#[test]
fn advertise_without_a_fixed_port_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, info) = TrackerProc::start(dir.path());
    let (_owner, _bob) = alice_and_bob(dir.path(), &info, "127.0.0.1:0", &[]);
    let pw = dir.path().join("pw-b");
    std::fs::write(&pw, "pw-b\n").unwrap();
    let warning = "with a port the system picks for this node";
    // (A get of the empty group: logged in, nothing to fetch. `ls`
    // logs in at its own address whatever --advertise says.)
    let dest = dir.path().join("dest");
    let get = |listen: &str| {
        let out = one_shot("get", &info, "bob", &pw, &dir.path().join("state-get"))
            .args(["--listen", listen, "--advertise", "127.0.0.1:17001", "g"])
            .arg(&dest)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        err.contains(warning)
    };
    assert!(get("127.0.0.1:0"));
    let fixed = format!("127.0.0.1:{}", common::free_port());
    assert!(!get(&fixed));
}
