//! A shared file that changes under the node: it is withdrawn from its
//! group with one log line, and the node goes on — on real processes.

mod common;

use std::path::{Path, PathBuf};

use common::{eventually, random_file, NodeProc, TrackerProc};

/// A tracker whose nodes heartbeat, and so watch their shares, every
/// second (a third of a 3 s peer TTL), and its tracker_info.txt.
fn fast_watch(dir: &Path) -> (TrackerProc, PathBuf) {
    TrackerProc::start_with_ttl(dir, 3)
}

/// A node logging to `<name>.stderr` in `dir`.
fn node(dir: &Path, info: &Path, name: &str) -> NodeProc {
    NodeProc::spawn(
        "127.0.0.1:0",
        info,
        &dir.join(format!("state-{name}")),
        &[],
        Some(&dir.join(format!("{name}.stderr"))),
    )
}

/// Alice's node (logging to `alice.stderr`), owner of group `team`,
/// sharing two new files named `names` in `dir`: 1.5 MiB and 512 KiB of
/// random bytes (seeds `seed` and `seed + 1`).
fn alice_sharing_two(
    dir: &Path,
    info: &Path,
    names: [&str; 2],
    seed: u64,
) -> (NodeProc, [PathBuf; 2]) {
    let mut alice = node(dir, info, "alice");
    alice.ok("create_user alice pw");
    alice.ok("login alice pw");
    alice.ok("create_group team");
    let files = names.map(|n| dir.join(n));
    for (i, (f, len)) in files.iter().zip([3 << 19, 1 << 19]).enumerate() {
        random_file(f, len, seed + i as u64);
        alice.ok(&format!("upload_file {} team", f.display()));
    }
    (alice, files)
}

/// The `stopped sharing` lines of node `name`'s log.
fn stopped_lines(dir: &Path, name: &str) -> Vec<String> {
    let log = std::fs::read_to_string(dir.join(format!("{name}.stderr"))).unwrap();
    log.lines().filter(|l| l.contains("stopped sharing")).map(str::to_owned).collect()
}

#[test]
fn a_shared_file_that_changes_is_withdrawn_and_the_node_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (t, info) = fast_watch(dir.path());
    let mut alice = node(dir.path(), &info, "alice");
    let mut bob = node(dir.path(), &info, "bob");
    alice.ok("create_user alice pw");
    alice.ok("login alice pw");
    alice.ok("create_group team");
    bob.ok("create_user bob pw");
    bob.ok("login bob pw");
    bob.ok("join_group team");
    alice.ok("accept_request team bob");

    let changing = dir.path().join("changing.bin");
    let steady = dir.path().join("steady.bin");
    random_file(&changing, 3 << 19, 1);
    random_file(&steady, 1 << 19, 2);
    alice.ok(&format!("upload_file {} team", changing.display()));
    alice.ok(&format!("upload_file {} team", steady.display()));
    let files = bob.cmd("list_files team");
    assert_eq!(files.len(), 2, "{files:?}");

    // Rewritten by another program: shorter now.
    std::fs::OpenOptions::new().write(true).open(&changing).unwrap().set_len(4096).unwrap();
    eventually("the changed file leaves list_files", || {
        let files = bob.cmd("list_files team");
        files.len() == 1 && files[0].starts_with("steady.bin")
    });
    let log = std::fs::read_to_string(dir.path().join("alice.stderr")).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("stopped sharing")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("team/changing.bin") && lines[0].contains("changed on disk"));
    // In the form of the node's other lines, not a log's (a time, a level,
    // a module).
    assert!(lines[0].starts_with("ringshare: warning: stopped sharing "), "{log}");
    // A log written to a file carries no terminal colour codes.
    assert!(!log.contains('\x1b'), "{log:?}");

    // Everything else goes on: the steady file downloads from alice, and
    // the new content can be shared again.
    let dest = dir.path().join("dl");
    std::fs::create_dir(&dest).unwrap();
    bob.ok(&format!("download_file team steady.bin {}", dest.display()));
    bob.wait_downloads(|out| out.iter().any(|l| l.starts_with("[C]")));
    assert_eq!(std::fs::read(dest.join("steady.bin")).unwrap(), std::fs::read(&steady).unwrap());
    alice.ok(&format!("upload_file {} team", changing.display()));
    assert_eq!(bob.cmd("list_files team").len(), 2);
    drop(t);
}

/// A file rewritten with its length and modification time put back
/// (`rsync -t`, `cp -p`, `touch -r`) is withdrawn too: its change time
/// moved, so it is read again and its SHA1 is no longer the one shared.
/// One whose change time moved with its content kept (a `chmod`) stays.
/// (It used to be served on, every piece refused by the downloaders, its
/// user told nothing.)
#[test]
fn a_file_rewritten_with_its_modification_time_put_back_is_withdrawn() {
    let dir = tempfile::tempdir().unwrap();
    let (t, info) = fast_watch(dir.path());
    let (mut alice, [sneaky, chmodded]) =
        alice_sharing_two(dir.path(), &info, ["sneaky.bin", "chmodded.bin"], 3);

    // 1 KiB rewritten in place, the modification time put back.
    let f = std::fs::OpenOptions::new().write(true).open(&sneaky).unwrap();
    let mtime = f.metadata().unwrap().modified().unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x5a; 1024], 100 * 1024).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    assert_eq!(std::fs::metadata(&sneaky).unwrap().modified().unwrap(), mtime);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&chmodded, std::fs::Permissions::from_mode(0o600)).unwrap();

    eventually("the rewritten file leaves list_files", || {
        let files = alice.cmd("list_files team");
        files.len() == 1 && files[0].starts_with("chmodded.bin")
    });
    let lines = stopped_lines(dir.path(), "alice");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let why = "changed on disk (its content; its length and modification time were kept)";
    assert!(lines[0].contains("team/sneaky.bin") && lines[0].contains(why), "{lines:?}");
    drop(t);
}

/// A file touched (a new modification time, the same bytes) is read
/// again and shared on, while it runs and at the next login; one saved
/// with other bytes of the same length is withdrawn. (A touch withdrew the
/// file: only its length and modification time were looked at.)
#[test]
fn a_touched_file_is_shared_on_and_one_saved_with_other_bytes_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (t, info) = fast_watch(dir.path());
    let (mut alice, [touched, resaved]) =
        alice_sharing_two(dir.path(), &info, ["touched.bin", "resaved.bin"], 5);
    let later = |p: &Path, secs: u64| {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        let t = f.metadata().unwrap().modified().unwrap() + std::time::Duration::from_secs(secs);
        f.set_modified(t).unwrap();
    };
    later(&touched, 10);
    let f = std::fs::OpenOptions::new().write(true).open(&resaved).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x5a; 1024], 1000).unwrap();
    drop(f);
    later(&resaved, 10);
    eventually("the resaved file leaves list_files", || {
        let files = alice.cmd("list_files team");
        files.len() == 1 && files[0].starts_with("touched.bin")
    });
    let lines = stopped_lines(dir.path(), "alice");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("team/resaved.bin") && lines[0].contains("changed on disk"));
    // Touched while the node was away: the login reads it again.
    alice.ok("logout");
    later(&touched, 20);
    assert_eq!(alice.ok("login alice pw"), "logged in as alice; resumed sharing 1 file(s)");
    assert_eq!(alice.cmd("list_files team"), [format!("touched.bin  {} bytes  1 peer", 3 << 19)]);
    drop(t);
}

/// Bob's running node shares a file in a group; from another node he
/// leaves the group and is let in again. The running node's watch finds
/// the membership changed (or, if it looked in between, gone) and
/// withdraws the share, which was for the members of another time: its
/// next login resumes nothing.
#[test]
fn a_share_of_a_membership_left_and_got_back_elsewhere_is_withdrawn() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, info) = fast_watch(dir.path());
    let (mut alice, _) = alice_sharing_two(dir.path(), &info, ["a1.bin", "a2.bin"], 30);
    let mut bob = node(dir.path(), &info, "bob");
    bob.ok("create_user bob pw");
    bob.ok("login bob pw");
    bob.ok("join_group team");
    alice.ok("accept_request team bob");
    let f = dir.path().join("bobs.bin");
    random_file(&f, 100_000, 40);
    // Its membership is on record from here (the upload asks for it).
    bob.ok(&format!("upload_file {} team", f.display()));

    let mut elsewhere = node(dir.path(), &info, "bob-2");
    elsewhere.ok("login bob pw");
    elsewhere.ok("leave_group team");
    elsewhere.ok("join_group team");
    alice.ok("accept_request team bob");
    eventually("bob's node withdraws the share", || !stopped_lines(dir.path(), "bob").is_empty());
    let lines = stopped_lines(dir.path(), "bob");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].ends_with(
            "stopped sharing team/bobs.bin: shared before you left team or it was made anew"
        ) || lines[0].ends_with("stopped sharing team/bobs.bin: no longer a member of team"),
        "{lines:?}"
    );
    bob.ok("logout");
    assert_eq!(bob.ok("login bob pw"), "logged in as bob");
    // Shared again in this membership, it resumes.
    bob.ok(&format!("upload_file {} team", f.display()));
    bob.ok("logout");
    assert_eq!(bob.ok("login bob pw"), "logged in as bob; resumed sharing 1 file(s)");
}
