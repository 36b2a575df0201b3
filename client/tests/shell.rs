//! The shell's user, group and file commands against a real tracker, with
//! every error path, driven through standard input of real `ringshare`
//! processes.

mod common;

use std::path::{Path, PathBuf};

use common::{eventually, free_port, random_file, NodeProc, TrackerProc};

/// A tracker and a scratch directory.
fn setup() -> (tempfile::TempDir, TrackerProc, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (tracker, info) = TrackerProc::start(dir.path());
    (dir, tracker, info)
}

fn node(dir: &tempfile::TempDir, info: &Path) -> NodeProc {
    NodeProc::start(info, &dir.path().join("state"))
}

/// A logged-in node for a new user.
fn user(dir: &tempfile::TempDir, info: &Path, name: &str) -> NodeProc {
    let mut n = node(dir, info);
    n.ok(&format!("create_user {name} pw-{name}"));
    n.ok(&format!("login {name} pw-{name}"));
    n
}

#[test]
fn accounts_and_sessions() {
    let (dir, _t, info) = setup();
    let mut a = node(&dir, &info);
    a.err("list_groups", "not logged in");
    a.err("create_group g", "not logged in");
    a.err("join_group g", "not logged in");
    a.err("list_files g", "not logged in");
    a.err("upload_file /etc/hostname g", "not logged in");
    a.err("logout", "not logged in");
    assert_eq!(a.ok("create_user alice pw1"), "user alice created");
    a.err("create_user alice other", "user alice already exists");
    a.err("create_user bad/name pw", "user id");
    a.err("create_user", "wrong number of arguments");
    a.err("create_user bob ''", "a password must be 1 to 256 bytes (this one is 0)");
    a.err(&format!("login alice {}", "p".repeat(257)), "a password must be 1 to 256 bytes");
    a.err("login alice wrong", "wrong user id or password");
    a.err("login nobody pw", "wrong user id or password");
    assert_eq!(a.ok("login alice pw1"), "logged in as alice");
    a.err("login alice pw1", "already logged in as alice");
    assert!(a.cmd("list_groups").is_empty());
    a.err("frobnicate", "unknown command: frobnicate");
    a.err("list_groups now", "wrong number of arguments");
    assert!(a.ok("logout").starts_with("logged out alice"));
    a.err("list_groups", "not logged in");
    // The same user may log in again after logging out.
    a.ok("login alice pw1");
    assert!(a.cmd("help").len() >= 15);
    let one = a.ok("help download_file");
    assert!(one.starts_with("download_file <group_id> <file_name> <destination_path> "), "{one}");
    assert!(a.ok("help exit").starts_with("quit "));
    a.err("help frobnicate", "no command frobnicate (type help for the list)");
    a.err("help ''", "no command \"\" (type help for the list)");
    a.err("help login now", "wrong number of arguments (2): usage: help [command]");
    assert!(a.close().success(), "EOF on stdin ends the shell cleanly");
}

#[test]
fn group_membership_lifecycle() {
    let (dir, _t, info) = setup();
    let mut a = user(&dir, &info, "alice");
    let mut b = user(&dir, &info, "bob");
    let mut c = user(&dir, &info, "carol");

    assert_eq!(a.ok("create_group g1"), "group g1 created; you are its owner");
    a.err("create_group g1", "group g1 already exists");
    b.err("create_group g1", "group g1 already exists");
    a.err("create_group a/b", "group id");
    b.err("join_group nope", "no such group: nope");
    a.err("join_group g1", "already a member of group g1");
    b.ok("join_group g1");
    b.err("join_group g1", "already requested to join group g1");
    c.ok("join_group g1");
    assert_eq!(a.cmd("list_requests g1"), ["bob", "carol"]);
    b.err("list_requests g1", "not the owner of group g1");
    a.err("list_requests nope", "no such group: nope");
    b.err("accept_request g1 bob", "not the owner of group g1");
    a.err("accept_request g1 dave", "no pending request from dave to join g1");
    a.err("accept_request g1", "wrong number of arguments");
    assert_eq!(a.ok("accept_request g1 bob"), "bob is now a member of g1");
    a.ok("reject_request g1 carol");
    assert!(a.cmd("list_requests g1").is_empty());
    c.err("list_files g1", "not a member of group g1");
    a.err("reject_request g1 carol", "no pending request from carol to join g1");

    // Every logged-in user sees every group.
    c.ok("create_group g2");
    assert_eq!(b.cmd("list_groups"), ["g1", "g2"]);
    assert_eq!(c.cmd("list_groups"), ["g1", "g2"]);

    // The owner leaving hands the group to the longest-standing member.
    c.ok("join_group g1");
    a.ok("accept_request g1 carol");
    a.ok("leave_group g1");
    a.err("leave_group g1", "not a member of group g1");
    assert_eq!(b.cmd("list_requests g1"), Vec::<String>::new());
    c.err("list_requests g1", "not the owner");
    // A user may leave and ask to join again.
    a.ok("join_group g1");
    assert_eq!(b.cmd("list_requests g1"), ["alice"]);
    // Leaving a group only asked to join withdraws the request, and says so.
    assert_eq!(a.ok("leave_group g1"), "withdrew the request to join g1");
    assert!(b.cmd("list_requests g1").is_empty());
    a.err("leave_group g1", "not a member of group g1");
    a.ok("join_group g1");
    b.ok("accept_request g1 alice");
    a.cmd("list_files g1");
    // The last member leaving deletes the group.
    c.ok("leave_group g2");
    assert_eq!(a.cmd("list_groups"), ["g1"]);
    c.err("leave_group g2", "no such group: g2");
}

#[test]
fn sharing_files_in_groups() {
    let (dir, _t, info) = setup();
    let mut a = user(&dir, &info, "alice");
    let mut b = user(&dir, &info, "bob");
    let mut c = user(&dir, &info, "carol");
    a.ok("create_group g1");
    a.ok("create_group g2");
    b.ok("join_group g1");
    a.ok("accept_request g1 bob");

    let f = dir.path().join("data.bin");
    random_file(&f, 1_300_000, 1);
    let up = format!("upload_file {} g1", f.display());
    c.err(&up, "not a member of group g1");
    a.err(&format!("upload_file {} nope", f.display()), "no such group: nope");
    a.err("upload_file /definitely/not/here g1", "path not found: /definitely/not/here");
    a.err("upload_file /dev/null g1", "not a regular file");
    a.err(&format!("upload_file {}/ g1", f.display()), "cannot read ");
    a.err("upload_file onlyonearg", "wrong number of arguments");
    // A directory whose every file is skipped is a failure: one line.
    let specials = dir.path().join("specials");
    std::fs::create_dir(&specials).unwrap();
    a.err(&format!("upload_file {} g1", specials.display()), "nothing to share");
    for fifo in ["p1", "p2"] {
        let at = std::ffi::CString::new(specials.join(fifo).into_os_string().into_encoded_bytes());
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(at.unwrap().as_ptr(), 0o600) }, 0);
    }
    a.err(
        &format!("upload_file {} g1", specials.display()),
        &format!("nothing shared: all 2 file(s) under {} skipped (the first: ", specials.display()),
    );
    a.err("upload_file / g1", "nothing shared: skipped /: has no name to share its files under");
    let line = a.ok(&up);
    assert!(line.starts_with("uploaded data.bin to g1: 1300000 bytes, 3 pieces, sha1 "), "{line}");
    a.err(&up, "already shared in group g1");
    assert_eq!(b.cmd("list_files g1"), ["data.bin  1300000 bytes  1 peer"]);
    c.err("list_files g1", "not a member of group g1");
    b.err("list_files nope", "no such group: nope");

    // The same content from a second member: two peers share it.
    let copy = dir.path().join("b").join("data.bin");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(&f, &copy).unwrap();
    b.ok(&format!("upload_file {} g1", copy.display()));
    assert_eq!(a.cmd("list_files g1"), ["data.bin  1300000 bytes  2 peers"]);

    // Same name, different content, same group: refused.
    let other = dir.path().join("o").join("data.bin");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    random_file(&other, 1000, 2);
    b.ok("stop_share g1 data.bin");
    b.err(&format!("upload_file {} g1", other.display()), "a different file named data.bin");
    // ... but the same name in another group is another entry.
    let one = a.ok(&format!("upload_file {} g2", other.display()));
    assert!(one.starts_with("uploaded data.bin to g2: 1000 bytes, 1 piece, sha1 "), "{one}");
    assert_eq!(a.cmd("list_files g2"), ["data.bin  1000 bytes  1 peer"]);
    assert_eq!(a.cmd("list_files g1"), ["data.bin  1300000 bytes  1 peer"]);

    // stop_share by the last sharer removes the file; sharing again brings it back.
    a.err("stop_share g1 nothing", "no such file in group g1: nothing");
    b.err("stop_share g1 data.bin", "not sharing data.bin in group g1");
    a.ok("stop_share g1 data.bin");
    assert!(b.cmd("list_files g1").is_empty());
    b.ok(&format!("upload_file {} g1", copy.display()));
    assert_eq!(a.cmd("list_files g1"), ["data.bin  1300000 bytes  1 peer"]);

    // Leaving a group stops sharing there.
    b.ok("leave_group g1");
    assert!(a.cmd("list_files g1").is_empty());

    // Edge sizes hash and register: empty, one byte, exactly two pieces.
    for (name, len) in [("empty", 0usize), ("one", 1), ("two-pieces", 2 * 512 * 1024)] {
        let p = dir.path().join(name);
        random_file(&p, len, 3);
        a.ok(&format!("upload_file {} g2", p.display()));
    }
    let files = a.cmd("list_files g2");
    assert!(files.contains(&"empty  0 bytes  1 peer".to_string()), "{files:?}");
    assert!(files.contains(&"one  1 bytes  1 peer".to_string()), "{files:?}");
    assert!(files.contains(&"two-pieces  1048576 bytes  1 peer".to_string()), "{files:?}");
}

/// Alice logged in on a node at a fixed address with its own state
/// directory, so that a restart finds both again; with the address and
/// the directory.
fn alice_at_a_fixed_address(dir: &tempfile::TempDir, info: &Path) -> (NodeProc, String, PathBuf) {
    let state = dir.path().join("state-a");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut a = NodeProc::start_at(&listen, info, &state);
    a.ok("create_user alice pw");
    a.ok("login alice pw");
    (a, listen, state)
}

/// Group `g` owned by `owner`, with bob (`member`) accepted into it.
fn owner_and_bob_in(owner: &mut NodeProc, member: &mut NodeProc, g: &str) {
    owner.ok(&format!("create_group {g}"));
    member.ok(&format!("join_group {g}"));
    owner.ok(&format!("accept_request {g} bob"));
}

#[test]
fn logout_pauses_sharing_and_login_resumes_it_across_restarts() {
    let (dir, _t, info) = setup();
    let (mut a, listen, state) = alice_at_a_fixed_address(&dir, &info);
    let mut b = user(&dir, &info, "bob");
    owner_and_bob_in(&mut a, &mut b, "g");
    let keep = dir.path().join("keep.bin");
    let change = dir.path().join("change.bin");
    random_file(&keep, 700_000, 4);
    random_file(&change, 10_000, 5);
    a.ok(&format!("upload_file {} g", keep.display()));
    a.ok(&format!("upload_file {} g", change.display()));
    assert_eq!(
        b.cmd("list_files g"),
        ["change.bin  10000 bytes  1 peer", "keep.bin  700000 bytes  1 peer"]
    );

    a.ok("logout");
    assert_eq!(
        b.cmd("list_files g"),
        ["change.bin  10000 bytes  0 peers", "keep.bin  700000 bytes  0 peers"]
    );
    assert_eq!(a.ok("login alice pw"), "logged in as alice; resumed sharing 2 file(s)");
    assert_eq!(
        b.cmd("list_files g"),
        ["change.bin  10000 bytes  1 peer", "keep.bin  700000 bytes  1 peer"]
    );

    // Restart the client process at the same address: login resumes sharing,
    // and a file changed meanwhile is dropped with a clear message.
    a.kill();
    random_file(&change, 10_001, 6);
    let mut a = NodeProc::start_at(&listen, &info, &state);
    let line = a.ok("login alice pw");
    assert!(
        line.starts_with(
            "logged in as alice; resumed sharing 1 file(s); stopped sharing g/change.bin: changed"
        ),
        "{line}"
    );
    assert_eq!(b.cmd("list_files g"), ["keep.bin  700000 bytes  1 peer"]);
}

/// Bob's node at a fixed address with a state directory of its own (so
/// that a restart finds both again), logged in, and alice, owner of group
/// `g` with bob in it; with the address and the directory.
fn bob_at_a_fixed_address_in_alices_g(
    dir: &tempfile::TempDir,
    info: &Path,
) -> (NodeProc, NodeProc, String, PathBuf) {
    let state = dir.path().join("state-b");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut a = user(dir, info, "alice");
    let mut b = NodeProc::start_at(&listen, info, &state);
    b.ok("create_user bob pw-bob");
    b.ok("login bob pw-bob");
    owner_and_bob_in(&mut a, &mut b, "g");
    (a, b, listen, state)
}

/// While bob's node is away, group `g` is made anew: bob leaves it from
/// another node, and so does alice (it is gone); carol makes a group `g`
/// and lets bob in. Bob's other node, carol's, and alice's line as she
/// left.
fn g_made_anew_by_carol(
    dir: &tempfile::TempDir,
    info: &Path,
    alice: &mut NodeProc,
) -> (NodeProc, NodeProc, String) {
    let mut b2 = NodeProc::start(info, &dir.path().join("state-b2"));
    b2.ok("login bob pw-bob");
    // What this node shared there: nothing (the node away shared some).
    assert_eq!(
        b2.ok("leave_group g"),
        "left group g; stopped sharing 0 file(s) there from this node"
    );
    let left = alice.ok("leave_group g");
    let mut c = user(dir, info, "carol");
    c.ok("create_group g");
    b2.ok("join_group g");
    c.ok("accept_request g bob");
    (b2, c, left)
}

/// A node offline while its user left a group and the group was deleted
/// and made anew under its name by someone else does not put its old
/// shares into the new group at its next login: they were for the members
/// of another time (it did: "resumed sharing 1 file(s)", into carol's
/// group). Nor, running, those of a membership its user left and got back
/// from another node meanwhile. Shares of a membership that lasted resume.
#[test]
fn shares_of_an_earlier_membership_are_not_resumed_into_a_group_made_anew() {
    let (dir, _t, info) = setup();
    let (mut a, mut b, listen, state) = bob_at_a_fixed_address_in_alices_g(&dir, &info);
    owner_and_bob_in(&mut a, &mut b, "h");
    let file = |name: &str, len, seed| {
        let p = dir.path().join(name);
        random_file(&p, len, seed);
        p
    };
    let (old, kept) = (file("old.bin", 30_000, 3), file("kept.bin", 20_000, 4));
    b.ok(&format!("upload_file {} g", old.display()));
    b.ok(&format!("upload_file {} h", kept.display()));
    b.kill();
    let (mut b2, mut c, left) = g_made_anew_by_carol(&dir, &info, &mut a);
    assert_eq!(left, "left group g; stopped sharing 0 file(s) there from this node");
    let mut b = NodeProc::start_at(&listen, &info, &state);
    assert_eq!(
        b.ok("login bob pw-bob"),
        "logged in as bob; resumed sharing 1 file(s); stopped sharing g/old.bin: shared before \
         you left g or it was made anew"
    );
    assert!(c.cmd("list_files g").is_empty());
    assert_eq!(a.cmd("list_files h"), ["kept.bin  20000 bytes  1 peer"]);

    // Running, bob shares in g; from the other node he leaves it and is let
    // in again. What he shared before is not shared in the new membership:
    // not listed, and not resumed at the next login.
    let (before, after) = (file("before.bin", 10_000, 5), file("after.bin", 11_000, 6));
    b.ok(&format!("upload_file {} g", before.display()));
    b2.ok("leave_group g");
    b2.ok("join_group g");
    c.ok("accept_request g bob");
    b.ok(&format!("upload_file {} g", after.display()));
    assert_eq!(c.cmd("list_files g"), ["after.bin  11000 bytes  1 peer"]);
    b.ok("logout");
    assert_eq!(b.ok("login bob pw-bob"), "logged in as bob; resumed sharing 2 file(s)");
    assert_eq!(c.cmd("list_files g"), ["after.bin  11000 bytes  1 peer"]);
    assert_eq!(a.cmd("list_files h"), ["kept.bin  20000 bytes  1 peer"]);
}

/// A file fetched into a group is a share of it: a node that quits as
/// soon as it has it, offline while the group is deleted and made anew,
/// does not resume it into the new group (it did: the download's record
/// had no membership, and a quit before the first heartbeat's look left
/// none).
#[test]
fn a_download_into_a_group_made_anew_is_not_resumed_into_it() {
    let (dir, _t, info) = setup();
    let (mut a, mut b, listen, state) = bob_at_a_fixed_address_in_alices_g(&dir, &info);
    let f = dir.path().join("f.bin");
    random_file(&f, 40_000, 7);
    a.ok(&format!("upload_file {} g", f.display()));
    let got = dir.path().join("got");
    std::fs::create_dir_all(&got).unwrap();
    b.ok(&format!("download_file g f.bin {}", got.display()));
    b.wait_downloads(|l| l == ["[C] [g] f.bin"]);
    b.kill();
    let (_b2, mut c, left) = g_made_anew_by_carol(&dir, &info, &mut a);
    assert_eq!(left, "left group g; stopped sharing 1 file(s) there from this node");
    let mut b = NodeProc::start_at(&listen, &info, &state);
    assert_eq!(
        b.ok("login bob pw-bob"),
        "logged in as bob; resumed sharing 0 file(s); stopped sharing g/f.bin: shared before \
         you left g or it was made anew"
    );
    assert!(c.cmd("list_files g").is_empty());
}

/// A share record that cannot be written (here its path is a directory;
/// a full or read-only state directory in use): the login that was made
/// says so in its line, not as an `error:`; a share that cannot be recorded
/// is one `error:` line and is taken back, so that the tracker lists
/// nothing this node would not serve after a restart.
#[test]
fn a_share_record_that_cannot_be_written_takes_the_share_back() {
    let (dir, _t, info) = setup();
    let state = dir.path().join("state-a");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut a = NodeProc::start_at(&listen, &info, &state);
    a.ok("create_user alice pw");
    let mut b = user(&dir, &info, "bob");
    let record = state.join(format!("alice@{listen}.sharelog"));
    std::fs::create_dir_all(record.join("in-the-way")).unwrap();
    let line = a.ok("login alice pw");
    assert!(line.starts_with("logged in as alice; "), "{line}");
    assert!(line.contains("; warning: the share record cannot be written"), "{line}");
    owner_and_bob_in(&mut a, &mut b, "g");
    let file = dir.path().join("f.bin");
    random_file(&file, 5_000, 1);
    let err = a.err(&format!("upload_file {} g", file.display()), "save the share record");
    assert!(err.contains("nothing was shared: 1 file(s) taken back"), "{err}");
    let listed = b.cmd("list_files g");
    assert!(listed.iter().all(|l| !l.ends_with(" 1 peer")), "{listed:?}");
    // Once it can be written, the same command shares it.
    std::fs::remove_dir_all(&record).unwrap();
    a.ok(&format!("upload_file {} g", file.display()));
    assert_eq!(b.cmd("list_files g"), ["f.bin  5000 bytes  1 peer"]);
}

/// A file whose only sharer logged out is listed with 0 peers; fetching it
/// fails once the tracker has listed no sharer for `NO_SHARER_LIMIT`
/// (10 s), not after the minute given to unreachable peers.
#[test]
fn a_file_nobody_shares_fails_with_that_reason() {
    let (dir, _t, info) = setup();
    // At a fixed address: its file stays listed while it is logged out.
    let (mut a, _, _) = alice_at_a_fixed_address(&dir, &info);
    let log = dir.path().join("bob.log");
    let mut b = NodeProc::spawn("127.0.0.1:0", &info, &dir.path().join("state"), &[], Some(&log));
    b.ok("create_user bob pw-bob");
    b.ok("login bob pw-bob");
    owner_and_bob_in(&mut a, &mut b, "g");
    let f = dir.path().join("f.bin");
    random_file(&f, 700_000, 8);
    a.ok(&format!("upload_file {} g", f.display()));
    a.ok("logout");
    assert_eq!(b.cmd("list_files g"), ["f.bin  700000 bytes  0 peers"]);
    let into = dir.path().join("into");
    std::fs::create_dir(&into).unwrap();
    b.ok(&format!("download_file g f.bin {}", into.display()));
    let lines = b.wait_downloads(|l| l.iter().all(|l| !l.starts_with("[D]")));
    assert_eq!(lines, ["[F] [g] f.bin  no node shares the file (none listed for 10s)"]);
    // Said when it happens too: the download ran in the background. (The
    // line may follow the status `show_downloads` read.)
    let line =
        "ringshare: download failed [g] f.bin: no node shares the file (none listed for 10s)";
    let said = || std::fs::read_to_string(&log).unwrap();
    eventually("the failure to be said", || said().contains(line));
    assert_eq!(said().lines().filter(|l| *l == line).count(), 1, "{}", said());
    // Nothing of it is held open (its part file, removed, kept its space
    // for as long as the node ran).
    b.cmd("show_downloads");
    assert!(fds_under(&b, &into).is_empty(), "{:?}", fds_under(&b, &into));
    // Alice back: the same command fetches it.
    a.ok("login alice pw");
    b.ok(&format!("download_file g f.bin {}", into.display()));
    let lines = b.wait_downloads(|l| l.iter().all(|l| !l.starts_with("[D]")));
    assert_eq!(lines.last().map(String::as_str), Some("[C] [g] f.bin"), "{lines:?}");
}

/// A file this node shares already is copied, not fetched: its only
/// sharer is the node itself, which a download never asks (it failed,
/// "no node shares the file"). One piece and many.
#[test]
fn downloading_what_this_node_shares_copies_it() {
    let (dir, _t, info) = setup();
    let mut a = user(&dir, &info, "alice");
    a.ok("create_group g");
    for (name, len) in [("small.bin", 70_000), ("big.bin", 1_300_000)] {
        let f = dir.path().join(name);
        random_file(&f, len, 11);
        a.ok(&format!("upload_file {} g", f.display()));
        let copy = dir.path().join(format!("copy-{name}"));
        let line = a.ok(&format!("download_file g {name} {}", copy.display()));
        // Not a resume: the node's own bytes.
        assert!(line.contains("pieces copied from this node's own copy"), "{line}");
        let out = a.wait_downloads(|l| l.iter().all(|l| !l.starts_with("[D]")));
        assert_eq!(out.last().map(String::as_str), Some(&*format!("[C] [g] {name}")), "{out:?}");
        assert!(std::fs::read(&copy).unwrap() == std::fs::read(&f).unwrap(), "{name}");
    }
}

/// Paths with spaces, quoted or escaped: a file shared from one directory
/// and fetched into another; a quote left open is one error line.
#[test]
fn paths_with_spaces_are_quoted_or_escaped() {
    let (dir, _t, info) = setup();
    let mut a = user(&dir, &info, "alice");
    a.ok("create_group g");
    let docs = dir.path().join("My Documents");
    std::fs::create_dir(&docs).unwrap();
    let f = docs.join("report.bin");
    random_file(&f, 700_000, 5);
    a.ok(&format!("upload_file \"{}\" g", f.display()));
    let into = dir.path().join("My Downloads");
    std::fs::create_dir(&into).unwrap();
    let escaped = into.display().to_string().replace(' ', "\\ ");
    a.ok(&format!("download_file g report.bin {escaped}/"));
    let out = a.wait_downloads(|l| l.iter().all(|l| !l.starts_with("[D]")));
    assert_eq!(out.last().map(String::as_str), Some("[C] [g] report.bin"), "{out:?}");
    assert!(std::fs::read(into.join("report.bin")).unwrap() == std::fs::read(&f).unwrap());
    a.err(&format!("upload_file '{} g", f.display()), "unclosed '");
    a.ok("list_groups");
}

/// A node on a port the system picked withdraws its files as it quits (no
/// later node has its address); one on a fixed address leaves them listed
/// for its next login.
#[test]
fn quitting_withdraws_the_files_of_a_picked_port_only() {
    let (dir, _t, info) = setup();
    let (mut a, _, _) = alice_at_a_fixed_address(&dir, &info);
    let mut b = user(&dir, &info, "bob");
    owner_and_bob_in(&mut a, &mut b, "g");
    let mut c = user(&dir, &info, "carol");
    c.ok("join_group g");
    a.ok("accept_request g carol");
    let (kept, gone) = (dir.path().join("kept.bin"), dir.path().join("gone.bin"));
    random_file(&kept, 5_000, 1);
    random_file(&gone, 6_000, 2);
    a.ok(&format!("upload_file {} g", kept.display()));
    c.ok(&format!("upload_file {} g", gone.display()));
    // Bob fetches carol's file: his node shares it too, from port 0.
    let into = dir.path().join("into");
    std::fs::create_dir(&into).unwrap();
    b.ok(&format!("download_file g gone.bin {}", into.display()));
    b.wait_downloads(|l| l == ["[C] [g] gone.bin"]);
    eventually("bob listed as a sharer", || {
        a.cmd("list_files g").contains(&"gone.bin  6000 bytes  2 peers".to_owned())
    });
    // Carol logs out: her port may never log in again, so her share is
    // withdrawn; logged in again, she shares it again from her record.
    c.ok("logout");
    assert_eq!(
        a.cmd("list_files g"),
        ["gone.bin  6000 bytes  1 peer", "kept.bin  5000 bytes  1 peer"]
    );
    assert_eq!(c.ok("login carol pw-carol"), "logged in as carol; resumed sharing 1 file(s)");
    assert_eq!(
        a.cmd("list_files g"),
        ["gone.bin  6000 bytes  2 peers", "kept.bin  5000 bytes  1 peer"]
    );
    // Ended by SIGTERM or by end of input, the same.
    assert_eq!(c.terminate().code(), Some(128 + 15), "stopped by SIGTERM");
    assert!(b.close().success());
    assert!(a.close().success());
    let mut d = node(&dir, &info);
    d.ok("login bob pw-bob");
    assert_eq!(d.cmd("list_files g"), ["kept.bin  5000 bytes  0 peers"]);
    assert!(d.close().success());
    // No port-0 node left a share record.
    let records = common::share_records(&dir.path().join("state"));
    assert!(records.is_empty(), "{records:?}");
}

#[test]
fn unreachable_tracker_is_a_clear_error_and_the_shell_survives() {
    let (dir, mut t, info) = setup();
    let mut a = node(&dir, &info);
    a.ok("create_user alice pw");
    let mut b = node(&dir, &info);
    b.ok("create_user bob pw");
    b.ok("login bob pw");
    t.kill();
    a.err("login alice pw", "tracker unreachable");
    a.err("create_user bob pw", "tracker unreachable");
    a.err("bogus", "unknown command");
    // A logout no tracker takes still logs out here, and says so.
    let out = b.ok("logout");
    assert!(
        out.starts_with(
            "logged out bob; sharing paused (no tracker took the logout: tracker unreachable"
        ),
        "{out}"
    );
    assert!(out.ends_with("they end the session when its heartbeats stop)"), "{out}");
    b.err("list_groups", "not logged in");
}

#[test]
fn failover_to_the_next_tracker_in_the_list() {
    let dir = tempfile::tempdir().unwrap();
    // Two trackers that do not replicate (each list names only itself): this
    // checks the client's link alone; replicated failover is in durability.rs.
    let (mut t1, _) = TrackerProc::start(&dir.path().join("one").tap_mkdir());
    let (_t2, _) = TrackerProc::start(&dir.path().join("two").tap_mkdir());
    let info = dir.path().join("both.txt");
    std::fs::write(&info, format!("{}\n{}\n", t1.addr, _t2.addr)).unwrap();
    let mut a = node(&dir, &info);
    a.ok("create_user alice pw");
    t1.kill();
    // The second tracker never heard of alice, but it answers: the link moved on.
    a.ok("create_user alice pw");
    a.ok("login alice pw");
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// Registrations go to the tracker many files to a request: a directory of
/// more files than one request takes, shared in one group, a few in
/// another; a restart whose login resumes them all in both groups; and
/// downloads that list their own node as a peer once they hold a piece.
#[test]
fn many_shares_resume_in_every_group_and_downloads_become_peers() {
    let (dir, _t, info) = setup();
    let (mut a, listen, state) = alice_at_a_fixed_address(&dir, &info);
    let mut b = user(&dir, &info, "bob");
    for g in ["g", "h"] {
        owner_and_bob_in(&mut a, &mut b, g);
    }
    let (tree, other) = (dir.path().join("tree"), dir.path().join("other"));
    std::fs::create_dir(&tree).unwrap();
    std::fs::create_dir(&other).unwrap();
    for i in 0..70u64 {
        random_file(&tree.join(format!("f{i:02}.bin")), 1000 + i as usize, i);
    }
    for i in 0..3u64 {
        random_file(&other.join(format!("o{i}.bin")), 5000, 100 + i);
    }
    // 70 × 1000 bytes plus 0 + 1 + … + 69.
    assert_eq!(
        a.cmd(&format!("upload_file {} g", tree.display())),
        ["shared 70 file(s) in g: 72415 bytes, 70 pieces"]
    );
    assert_eq!(
        a.cmd(&format!("upload_file {} h", other.display())),
        ["shared 3 file(s) in h: 15000 bytes, 3 pieces"]
    );
    let listed = |b: &mut NodeProc, g: &str, peers: &str| {
        let lines = b.cmd(&format!("list_files {g}"));
        !lines.is_empty() && lines.iter().all(|l| l.ends_with(peers))
    };
    assert!(listed(&mut b, "g", "  1 peer") && listed(&mut b, "h", "  1 peer"));

    // A restart after a logout (nothing online), one file changed
    // meanwhile: the login registers the other 72 again, in both groups
    // (the share record is this address's, so the tracker still lists them
    // under it: each answer is "already sharing", which counts as resumed),
    // and stops sharing the changed one, which leaves the group.
    a.ok("logout");
    assert!(listed(&mut b, "g", "  0 peers"));
    a.kill();
    random_file(&tree.join("f07.bin"), 2000, 999);
    let mut a = NodeProc::start_at(&listen, &info, &state);
    assert_eq!(
        a.ok("login alice pw"),
        "logged in as alice; resumed sharing 72 file(s); \
         stopped sharing g/tree/f07.bin: changed since upload"
    );
    let g = b.cmd("list_files g");
    assert_eq!(g.len(), 69, "{g:?}");
    assert!(!g.iter().any(|l| l.starts_with("tree/f07.bin ")));
    assert!(listed(&mut b, "g", "  1 peer") && listed(&mut b, "h", "  1 peer"));

    // Bob's downloads each register his node as a sharer of their file.
    let dl = dir.path().join("dl");
    std::fs::create_dir(&dl).unwrap();
    for f in ["tree/f00.bin", "tree/f42.bin", "tree/f69.bin"] {
        b.ok(&format!("download_file g {f} {}", dl.display()));
    }
    b.ok(&format!("download_file h other/o1.bin {}", dl.display()));
    // A directory's name is no file's, and is said to be a directory.
    b.err(
        &format!("download_file g tree {}", dl.display()),
        "no such file in group g: tree is a directory there (download_file takes a file's name, \
         such as tree/f",
    );
    b.err(&format!("download_file g tre {}", dl.display()), "no such file in group g: tre");
    b.wait_downloads(|l| l.len() == 4 && l.iter().all(|l| l.starts_with("[C]")));
    assert_eq!(
        std::fs::read(dl.join("tree/f42.bin")).unwrap(),
        std::fs::read(tree.join("f42.bin")).unwrap()
    );
    eventually("bob listed as a peer of what he fetched", || {
        let g = a.cmd("list_files g");
        let h = a.cmd("list_files h");
        let two = |lines: &[String], name: &str| {
            lines.iter().any(|l| l.starts_with(&format!("{name}  ")) && l.ends_with("  2 peers"))
        };
        ["tree/f00.bin", "tree/f42.bin", "tree/f69.bin"].iter().all(|f| two(&g, f))
            && two(&h, "other/o1.bin")
            && g.iter().filter(|l| l.ends_with("  2 peers")).count() == 3
    });
}

#[test]
fn a_share_the_tracker_already_lists_but_the_node_lost_is_served_again() {
    let (dir, _t, info) = setup();
    let (mut a, listen, state) = alice_at_a_fixed_address(&dir, &info);
    let mut b = user(&dir, &info, "bob");
    owner_and_bob_in(&mut a, &mut b, "g");
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    random_file(&tree.join("x.bin"), 3000, 1);
    random_file(&tree.join("y.bin"), 700_000, 2);
    let share = format!("upload_file {} g", tree.display());
    assert_eq!(a.cmd(&share), ["shared 2 file(s) in g: 703000 bytes, 3 pieces"]);
    // Shared again by the same node: each file is a skip that says why,
    // and with nothing shared that is one error line, as for one file.
    let t = tree.display();
    a.err(
        &share,
        &format!(
            "nothing shared: all 2 file(s) under {t} skipped (the first: {t}/x.bin: file \
             tree/x.bin is already shared in group g by this node)"
        ),
    );
    random_file(&tree.join("z.bin"), 5000, 3);
    assert_eq!(
        a.cmd(&share),
        [
            format!("skipped {t}/x.bin: file tree/x.bin is already shared in group g by this node"),
            format!("skipped {t}/y.bin: file tree/y.bin is already shared in group g by this node"),
            "shared 1 file(s) in g: 5000 bytes, 1 piece; skipped 2".to_owned()
        ]
    );

    // The node's record is lost while the tracker still lists the node
    // under its address (what a registration whose answer was lost and
    // which the link sent again also looks like): sharing the files again
    // shares them, and the node serves them.
    a.kill();
    let records: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".sharelog"))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    std::fs::remove_file(&records[0]).unwrap();
    let mut a = NodeProc::start_at(&listen, &info, &state);
    assert_eq!(a.ok("login alice pw"), "logged in as alice");
    assert_eq!(a.cmd(&share), ["shared 3 file(s) in g: 708000 bytes, 4 pieces"]);
    let dl = dir.path().join("dl");
    std::fs::create_dir(&dl).unwrap();
    b.ok(&format!("download_file g tree/y.bin {}", dl.display()));
    b.wait_downloads(|l| l.len() == 1 && l[0].starts_with("[C]"));
    assert_eq!(
        std::fs::read(dl.join("tree/y.bin")).unwrap(),
        std::fs::read(tree.join("y.bin")).unwrap()
    );
}

/// A line that is not UTF-8 gets one error line, and the shell reads on
/// (it used to end, as at the end of input, dropping every later command).
#[test]
fn a_line_that_is_not_utf8_is_one_error_and_the_shell_goes_on() {
    use std::io::Write;
    let (dir, _t, info) = setup();
    let mut child = std::process::Command::new(common::bin("ringshare"))
        .arg("127.0.0.1:0")
        .arg(&info)
        .env("RINGSHARE_STATE_DIR", dir.path().join("state"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"list_groups\nlist_files \xe9t\xff\n\xff\ncreate_user al pw\n").unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "error: not logged in",
            "error: the line is not valid UTF-8 (at byte 12); ignored",
            "error: the line is not valid UTF-8 (at byte 1); ignored",
            "user al created",
        ],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
}

/// alice, whose node serves each piece `delay_ms` late, owning group `g`
/// with bob in it, and sharing `f.bin` of `len` random bytes there.
fn slow_alice_shares_f_with_bob(
    dir: &tempfile::TempDir,
    info: &Path,
    delay_ms: &str,
    len: usize,
    bob_listen: &str,
) -> (NodeProc, NodeProc, PathBuf) {
    let mut a = NodeProc::spawn(
        "127.0.0.1:0",
        info,
        &dir.path().join("state-a"),
        &[("RINGSHARE_SERVE_DELAY_MS", delay_ms)],
        None,
    );
    a.ok("create_user alice pw");
    a.ok("login alice pw");
    let mut b = NodeProc::start_at(bob_listen, info, &dir.path().join("state-b"));
    b.ok("create_user bob pw-bob");
    b.ok("login bob pw-bob");
    owner_and_bob_in(&mut a, &mut b, "g");
    let f = dir.path().join("f.bin");
    random_file(&f, len, len as u64);
    a.ok(&format!("upload_file {} g", f.display()));
    (a, b, f)
}

/// A `stop_share` of a file this node is downloading: the download
/// finishes, and the file is not shared — not then, and not at the next
/// login (its end used to record the share, and the login shared it anew).
#[test]
fn stop_share_during_a_download_holds_after_it_ends_and_across_logins() {
    let (dir, _t, info) = setup();
    let (mut a, mut b, f) =
        slow_alice_shares_f_with_bob(&dir, &info, "300", 3_000_000, "127.0.0.1:0");
    let dest = dir.path().join("got");
    std::fs::create_dir_all(&dest).unwrap();
    b.ok(&format!("download_file g f.bin {}", dest.display()));
    assert_eq!(
        b.ok("stop_share g f.bin"),
        "stopped sharing f.bin in g (its download goes on, and is not shared)"
    );
    b.wait_downloads(|out| out.iter().any(|l| l.starts_with("[C] [g] f.bin")));
    assert_eq!(std::fs::read(dest.join("f.bin")).unwrap(), std::fs::read(&f).unwrap());
    assert_eq!(a.cmd("list_files g"), ["f.bin  3000000 bytes  1 peer"]);
    b.ok("logout");
    let login = b.ok("login bob pw-bob");
    assert!(!login.contains("resumed sharing"), "{login}");
    assert_eq!(a.cmd("list_files g"), ["f.bin  3000000 bytes  1 peer"]);
}

/// A file shared in two groups, its share taken back in one: a download
/// from that group under way stops getting it from this node, though the
/// node still serves it in the other. (It went on to the end: the piece
/// server admitted the session with a ticket from the first group and
/// checked nothing more while the file stayed served; a black-box run
/// fetched 48 MiB for 47 s after the `stop_share`.)
#[test]
fn stop_share_in_one_group_stops_that_groups_download_though_another_shares_the_file() {
    let (dir, _t, info) = setup();
    let (mut a, mut b, f) =
        slow_alice_shares_f_with_bob(&dir, &info, "300", 6_000_000, "127.0.0.1:0");
    a.ok("create_group h");
    a.ok(&format!("upload_file {} h", f.display()));
    let dest = dir.path().join("got");
    std::fs::create_dir_all(&dest).unwrap();
    b.ok(&format!("download_file g f.bin {}", dest.display()));
    // Under way: a piece from alice is in.
    b.wait_downloads(|out| {
        out.iter().any(|l| l.starts_with("[D] [g] f.bin") && !l.contains(" 0%"))
    });
    a.ok("stop_share g f.bin");
    let out = b.wait_downloads(|out| {
        out.iter().any(|l| l.starts_with("[F] [g] f.bin") || l.starts_with("[C] [g] f.bin"))
    });
    assert!(out.iter().any(|l| l.starts_with("[F] [g] f.bin")), "{out:?}");
    assert_ne!(std::fs::read(dest.join("f.bin")).ok(), Some(std::fs::read(&f).unwrap()));
}

/// A node killed mid-download stays registered for the pieces it had; back
/// at its address, its next login withdraws that registration (the tracker
/// listed it for good: nobody could fetch from it, and the name could not
/// be shared anew with other bytes).
#[test]
fn a_download_cut_short_by_a_crash_is_withdrawn_at_the_next_login() {
    let (dir, _t, info) = setup();
    let listen = format!("127.0.0.1:{}", free_port());
    let state = dir.path().join("state-b");
    let (mut a, mut b, f) = slow_alice_shares_f_with_bob(&dir, &info, "300", 5_000_000, &listen);
    let dest = dir.path().join("got");
    std::fs::create_dir_all(&dest).unwrap();
    b.ok(&format!("download_file g f.bin {}", dest.display()));
    eventually("bob listed for his first piece", || {
        a.cmd("list_files g") == ["f.bin  5000000 bytes  2 peers"]
    });
    b.kill();
    a.ok("stop_share g f.bin");
    let mut b = NodeProc::start_at(&listen, &info, &state);
    let login = b.ok("login bob pw-bob");
    assert!(
        login.contains("stopped sharing g/f.bin: a download that did not finish here"),
        "{login}"
    );
    assert!(a.cmd("list_files g").is_empty(), "nobody shares it now");
    // The name is free for other bytes.
    random_file(&f, 4_000, 9);
    a.ok(&format!("upload_file {} g", f.display()));
    // Fetched again, the download resumes and finishes: then it is a share
    // that the next login resumes.
    b.ok(&format!("download_file g f.bin {}", dir.path().join("again.bin").display()));
    b.wait_downloads(|out| out.iter().any(|l| l.starts_with("[C]")));
    b.ok("logout");
    assert_eq!(b.ok("login bob pw-bob"), "logged in as bob; resumed sharing 1 file(s)");
}

/// A download that fails holding some pieces (its only sharer stopped)
/// leaves the listing: the tracker listed it from its first piece, and
/// left there it would be one peer for a file nobody can finish (a later
/// download waited 60 s on it rather than failing in 10 with none listed).
/// Fetched again, it is listed again.
#[test]
fn a_download_that_fails_is_withdrawn_from_the_listing() {
    let (dir, _t, info) = setup();
    let (mut a, mut b, f) =
        slow_alice_shares_f_with_bob(&dir, &info, "300", 5_000_000, "127.0.0.1:0");
    let dest = dir.path().join("got");
    std::fs::create_dir_all(&dest).unwrap();
    b.ok(&format!("download_file g f.bin {}", dest.display()));
    eventually("bob listed for his first piece", || {
        a.cmd("list_files g") == ["f.bin  5000000 bytes  2 peers"]
    });
    a.ok("stop_share g f.bin");
    let out = b.wait_downloads(|l| l.iter().any(|l| l.starts_with("[F]")));
    assert!(
        out[0].starts_with(
            "[F] [g] f.bin  no other node shares the file (for 10s the only node listed was \
             this one, which holds "
        ),
        "{out:?}"
    );
    eventually("the failed download withdrawn", || a.cmd("list_files g").is_empty());
    // Shared again, the download resumes, is listed, and finishes.
    a.ok(&format!("upload_file {} g", f.display()));
    b.ok(&format!("download_file g f.bin {}", dest.display()));
    let out = b.wait_downloads(|l| l.iter().any(|l| l.starts_with("[C]")));
    assert_eq!(out, ["[C] [g] f.bin"]);
    assert_eq!(std::fs::read(dest.join("f.bin")).unwrap(), std::fs::read(&f).unwrap());
    eventually("listed as a sharer once done", || {
        a.cmd("list_files g") == ["f.bin  5000000 bytes  2 peers"]
    });
}

/// A download run again into the same destination (after a logout stopped
/// it) takes the place of its stopped line in `show_downloads`: one line
/// per destination, not one per try.
#[test]
fn a_download_run_again_replaces_its_stopped_line() {
    let (dir, _t, info) = setup();
    let (_a, mut b, f) = slow_alice_shares_f_with_bob(&dir, &info, "200", 3_000_000, "127.0.0.1:0");
    let dest = dir.path().join("got.bin");
    for _ in 0..3 {
        b.ok(&format!("download_file g f.bin {}", dest.display()));
        b.ok("logout");
        b.ok("login bob pw-bob");
    }
    let lines = b.cmd("show_downloads");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("[F] [g] f.bin  stopped by logout"), "{lines:?}");
    b.ok(&format!("download_file g f.bin {}", dest.display()));
    let lines = b.wait_downloads(|out| out.iter().any(|l| l.starts_with("[C]")));
    assert_eq!(lines, ["[C] [g] f.bin"]);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&f).unwrap());
}

/// What node `n` holds open under `dir`.
fn fds_under(n: &NodeProc, dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/proc/{}/fd", n.child.id()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// A download that ended keeps none of its file's descriptors open: a
/// shell held three per finished download for as long as it ran (it ran
/// out of descriptors after a few hundred, and a deleted download kept
/// its disk space). What it fetched is still served (opened on demand),
/// and `show_downloads` still lists it.
#[test]
fn an_ended_download_keeps_no_descriptor_of_its_file() {
    let (dir, _t, info) = setup();
    let (mut a, _, _) = alice_at_a_fixed_address(&dir, &info);
    let mut b = user(&dir, &info, "bob");
    owner_and_bob_in(&mut a, &mut b, "g");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // Several pieces (a state file, direct writes) and one piece.
    random_file(&src.join("big.bin"), 3 * 512 * 1024 + 99, 1);
    random_file(&src.join("small.bin"), 4000, 2);
    a.ok(&format!("upload_file {} g", src.join("big.bin").display()));
    a.ok(&format!("upload_file {} g", src.join("small.bin").display()));
    let dl = dir.path().join("dl");
    std::fs::create_dir(&dl).unwrap();
    for f in ["big.bin", "small.bin"] {
        b.ok(&format!("download_file g {f} {}", dl.display()));
    }
    b.wait_downloads(|l| l.len() == 2 && l.iter().all(|l| l.starts_with("[C]")));
    // The next command lets go of what ended before it.
    assert_eq!(b.cmd("show_downloads"), ["[C] [g] big.bin", "[C] [g] small.bin"]);
    let open = fds_under(&b, &dl);
    assert!(open.is_empty(), "descriptors of ended downloads: {open:?}");
    // Bob still serves both: carol fetches them with alice gone.
    a.ok("logout");
    let mut c = user(&dir, &info, "carol");
    c.ok("join_group g");
    a.ok("login alice pw");
    a.ok("accept_request g carol");
    a.ok("logout");
    let got = dir.path().join("got");
    std::fs::create_dir(&got).unwrap();
    for f in ["big.bin", "small.bin"] {
        c.ok(&format!("download_file g {f} {}", got.display()));
    }
    c.wait_downloads(|l| l.len() == 2 && l.iter().all(|l| l.starts_with("[C]")));
    for f in ["big.bin", "small.bin"] {
        assert_eq!(std::fs::read(got.join(f)).unwrap(), std::fs::read(src.join(f)).unwrap());
    }
}
