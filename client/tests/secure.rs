//! Encrypted, authenticated control links, driven through the real
//! binaries: what a recording relay sees, a changed tracker key, a key
//! listed in tracker_info.txt, and a node key file others can read.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::{bin, free_port, NodeProc, TrackerProc};

/// A TCP relay from an ephemeral loopback port to `to` that records every
/// byte it carries, both ways.
fn recording_relay(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let capture = Arc::new(Mutex::new(Vec::new()));
    let cap = Arc::clone(&capture);
    std::thread::spawn(move || {
        for inbound in listener.incoming() {
            let Ok(inbound) = inbound else { return };
            let Ok(outbound) = TcpStream::connect(to) else { continue };
            for (mut from, mut into) in
                [(inbound.try_clone().unwrap(), outbound.try_clone().unwrap()), (outbound, inbound)]
            {
                let cap = Arc::clone(&cap);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || into.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        cap.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    (addr, capture)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_recording_relay_between_client_and_tracker_captures_nothing_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (tracker, _) = TrackerProc::start(dir.path());
    let (relay, capture) = recording_relay(tracker.addr);
    let info = dir.path().join("via_relay.txt");
    std::fs::write(&info, format!("{relay}\n")).unwrap();
    let mut node = NodeProc::start(&info, &dir.path().join("state"));
    let (user, password, group) = ("relayuser7q", "Pa55-w0rd-never-on-the-wire", "group-x9k2");
    node.ok(&format!("create_user {user} {password}"));
    node.ok(&format!("login {user} {password}"));
    node.ok(&format!("create_group {group}"));
    node.err(&format!("login {user} wrong-{password}"), "");
    let seen = capture.lock().unwrap().clone();
    assert!(seen.len() > 500, "the relay carried the session ({} bytes)", seen.len());
    for secret in [password, user, group] {
        assert!(!contains(&seen, secret.as_bytes()), "{secret:?} crossed the relay readable");
    }
}

#[test]
fn a_changed_tracker_key_is_refused_naming_the_tracker_and_the_file_to_edit() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let info = dir.path().join("tracker_info.txt");
    std::fs::write(&info, format!("127.0.0.1:{port}\n")).unwrap();
    let state = dir.path().join("state");
    let mut first = TrackerProc::start_with(&info, 1, &dir.path().join("t1"), &[]);
    let first_key = first.key.clone();
    let mut node = NodeProc::start(&info, &state);
    node.ok("create_user ann pw");
    let pins = std::fs::read_to_string(state.join("known_trackers")).unwrap();
    assert!(pins.contains(&format!("127.0.0.1:{port} {first_key}")), "{pins}");
    first.kill();

    // Another tracker (another key) on the same address: a man in the
    // middle, as far as this client can tell.
    let second = TrackerProc::start_with(&info, 1, &dir.path().join("t2"), &[]);
    assert_ne!(second.key, first_key);
    let line = node.err("create_user bob pw", "known_trackers");
    assert!(line.contains(&format!("127.0.0.1:{port}")) && line.contains("refused"), "{line}");
    // The shell keeps working.
    node.err("login", "");

    // The key listed after the address wins over the pin: the operator's
    // fix. A wrong listed key is refused with a message saying where.
    std::fs::write(&info, format!("127.0.0.1:{port} {}\n", second.key)).unwrap();
    let mut fixed = NodeProc::start(&info, &state);
    fixed.ok("create_user bob pw");
    std::fs::write(&info, format!("127.0.0.1:{port} {first_key}\n")).unwrap();
    let mut wrong = NodeProc::start(&info, &state);
    wrong.err("create_user cid pw", "the tracker list gives");
}

#[test]
fn the_tracker_prints_its_key_and_keeps_it_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(bin("ringshare-tracker"))
        .args(["--print-key", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(printed.len(), 64, "{printed}");
    let info = dir.path().join("t.txt");
    std::fs::write(&info, "127.0.0.1:0\n").unwrap();
    let t = TrackerProc::start_with(&info, 1, &data, &[]);
    assert_eq!(t.key, printed);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data.join("tracker.key")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

fn start_fails(program: &Path, args: &[&str], state: &Path, needle: &str) {
    let out = Command::new(program)
        .args(args)
        .env("RINGSHARE_STATE_DIR", state)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains(needle), "{err}");
}

#[test]
fn key_files_others_can_read_or_that_are_damaged_are_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, info) = TrackerProc::start(dir.path());
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let key = state.join("node.key");
    std::fs::write(&key, format!("{}\n", "11".repeat(32))).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let info = info.to_str().unwrap();
    start_fails(&bin("ringshare"), &["127.0.0.1:0", info], &state, "chmod 600");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key, "not a key\n").unwrap();
    start_fails(&bin("ringshare"), &["127.0.0.1:0", info], &state, "damaged");

    // The tracker's own key file, the same way.
    let data = dir.path().join("tdata");
    std::fs::create_dir_all(&data).unwrap();
    let tkey = data.join("tracker.key");
    std::fs::write(&tkey, format!("{}\n", "22".repeat(32))).unwrap();
    std::fs::set_permissions(&tkey, std::fs::Permissions::from_mode(0o640)).unwrap();
    let boot = dir.path().join("boot.txt");
    std::fs::write(&boot, "127.0.0.1:0\n").unwrap();
    let data_s = data.to_str().unwrap();
    let args = [boot.to_str().unwrap(), "1", "--data-dir", data_s];
    start_fails(&bin("ringshare-tracker"), &args, &state, "chmod 600");
}

/// A relay that terminates links of the kind `prologue` names with a key
/// of its own (a man in the middle); counts the handshakes it was offered.
fn impostor_relay(prologue: &'static [u8]) -> (SocketAddr, Arc<Mutex<usize>>) {
    use ringshare_engine::secure::Keypair;
    use ringshare_engine::secure_io::BlockingSecureStream;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let offered = Arc::new(Mutex::new(0));
    let seen = Arc::clone(&offered);
    std::thread::spawn(move || {
        let me = Keypair::generate();
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            *seen.lock().unwrap() += 1;
            let me = me.clone();
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)));
                // The other end must refuse this key before saying anything.
                if let Ok(mut s) = BlockingSecureStream::accept(tcp, &me, prologue) {
                    let mut sink = [0u8; 1024];
                    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                }
            });
        }
    });
    (addr, offered)
}

/// `ringshare share` of `file` in group g as `user`, listening on `listen`
/// and listed under `advertise`; returns once it seeds.
fn seeder(
    dir: &Path,
    info: &Path,
    user: &str,
    file: &Path,
    listen: SocketAddr,
    advertise: SocketAddr,
) -> std::process::Child {
    let pw = dir.join(format!("pw-{user}"));
    std::fs::write(&pw, "pw\n").unwrap();
    let mut child = Command::new(bin("ringshare"))
        .args(["share", "--trackers"])
        .arg(info)
        .args(["--user", user, "--password-file"])
        .arg(&pw)
        .args(["--listen", &listen.to_string(), "--advertise", &advertise.to_string(), "g"])
        .arg(file)
        .env("RINGSHARE_STATE_DIR", dir.join(format!("state-{user}")))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("uploaded"), "{user}: {first}");
    let second = lines.next().unwrap().unwrap();
    assert!(second.starts_with("seeding on"), "{user}: {second}");
    child
}

#[test]
fn piece_links_carry_nothing_readable_and_an_impostor_seeder_gives_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, info) = TrackerProc::start(dir.path());
    let mut owner = NodeProc::start(&info, &dir.path().join("state-shell"));
    owner.ok("create_user alice pw");
    owner.ok("create_user carol pw");
    owner.ok("create_user downloader-bob-7q3 pw");
    owner.ok("login alice pw");
    owner.ok("create_group g");
    for user in ["carol", "downloader-bob-7q3"] {
        let mut n = NodeProc::start(&info, &dir.path().join(format!("state-join-{user}")));
        n.ok(&format!("login {user} pw"));
        n.ok("join_group g");
        owner.ok(&format!("accept_request g {user}"));
        n.ok("logout");
    }
    owner.ok("logout");
    let file = dir.path().join("payload.bin");
    common::random_file(&file, 3 * 1024 * 1024 + 5, 77);

    // alice is reached through a relay that records everything; carol's
    // listed address is a relay that answers with a key of its own.
    let alice_port: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (alice_relay, capture) = recording_relay(alice_port);
    let carol_port: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (carol_relay, offered) = impostor_relay(ringshare_engine::secure::PEER_PROLOGUE);
    let mut alice = seeder(dir.path(), &info, "alice", &file, alice_port, alice_relay);
    let mut carol = seeder(dir.path(), &info, "carol", &file, carol_port, carol_relay);

    let pw = dir.path().join("pw-downloader");
    std::fs::write(&pw, "pw\n").unwrap();
    let dest = dir.path().join("got.bin");
    let stats = dir.path().join("stats.json");
    let out = Command::new(bin("ringshare"))
        .args(["get", "--quiet", "--trackers"])
        .arg(&info)
        .args(["--user", "downloader-bob-7q3", "--password-file"])
        .arg(&pw)
        .arg("--stats")
        .arg(&stats)
        .args(["g", "payload.bin"])
        .arg(&dest)
        .env("RINGSHARE_STATE_DIR", dir.path().join("state-bob"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let data = std::fs::read(&file).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);

    // Every piece crossed alice's relay, and none of it is readable there.
    let seen = capture.lock().unwrap().clone();
    assert!(seen.len() > data.len(), "the file crossed the relay ({} bytes)", seen.len());
    for at in (0..data.len() - 64).step_by(data.len() / 16) {
        assert!(!contains(&seen, &data[at..at + 64]), "file bytes at {at} crossed readable");
    }
    // (A name as short as "bob" matches 3 MB of ciphertext by chance about
    // one run in six: the downloader's name is long enough not to.)
    assert!(!contains(&seen, b"downloader-bob-7q3"), "the user name crossed readable");
    // carol's impostor was offered a handshake and refused; it gave nothing.
    assert!(*offered.lock().unwrap() > 0, "the impostor was never tried");
    let doc = std::fs::read_to_string(&stats).unwrap();
    assert!(!doc.contains(&carol_relay.to_string()), "bytes from the impostor: {doc}");
    for child in [&mut alice, &mut carol] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A tracker pulling from another through a relay that answers with its
/// own key refuses it (the key listed for that tracker is checked) and
/// says so in its log.
#[test]
fn a_tracker_refuses_an_impostor_of_the_tracker_it_pulls_from() {
    let dir = tempfile::tempdir().unwrap();
    let key_of = |data: &Path| {
        let out = Command::new(bin("ringshare-tracker"))
            .args(["--print-key", "--data-dir"])
            .arg(data)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (one, two) = (dir.path().join("t1"), dir.path().join("t2"));
    let (k1, k2) = (key_of(&one), key_of(&two));
    // Tracker 2 is listed with its real key, at an impostor's address.
    let (impostor, offered) = impostor_relay(ringshare_engine::secure::CONTROL_PROLOGUE);
    let info = dir.path().join("tracker_info.txt");
    let port = free_port();
    std::fs::write(&info, format!("127.0.0.1:{port} {k1}\n{impostor} {k2}\n")).unwrap();
    let log = dir.path().join("t1.log");
    let mut t1 = Command::new(bin("ringshare-tracker"))
        .arg(&info)
        .arg("1")
        .arg("--data-dir")
        .arg(&one)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    common::eventually("tracker 1 refuses the impostor", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().any(|l| l.contains("tracker 2") && l.contains(&k2) && l.contains("expected"))
    });
    assert!(*offered.lock().unwrap() > 0, "the impostor was never tried");
    let _ = t1.kill();
    let _ = t1.wait();
}

/// Tracker-to-tracker streams carry nothing readable either: tracker 1
/// pulls from tracker 2 through a recording relay, learns what was done at
/// tracker 2 (a user, its login, a group), and the capture holds none of
/// the names nor the password hash.
#[test]
fn a_recording_relay_between_trackers_captures_nothing_readable() {
    use ringshare_engine::proto::{Request, Response};
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let two: SocketAddr = format!("127.0.0.1:{p2}").parse().unwrap();
    let (relay, capture) = recording_relay(two);
    // Tracker 1 reaches tracker 2 through the relay; tracker 2 reaches 1 directly.
    let info1 = dir.path().join("info1.txt");
    std::fs::write(&info1, format!("127.0.0.1:{p1}\n{relay}\n")).unwrap();
    let info2 = dir.path().join("info2.txt");
    std::fs::write(&info2, format!("127.0.0.1:{p1}\n{two}\n")).unwrap();
    let t1 = TrackerProc::start_with(&info1, 1, &dir.path().join("t1"), &[]);
    let t2 = TrackerProc::start_with(&info2, 2, &dir.path().join("t2"), &[]);
    let (user, password, group) = ("syncuser9q", "Sync-pass-never-on-the-wire", "grp-sync-7");
    let mut c2 = common::RawClient::connect(t2.addr).unwrap();
    let req = Request::CreateUser { user: user.into(), password: password.into() };
    assert_eq!(c2.call(&req).unwrap(), Response::Done);
    let login = Request::Login {
        user: user.into(),
        password: password.into(),
        peer_addr: "127.0.0.1:9".into(),
    };
    let Response::LoggedIn { token, .. } = c2.call(&login).unwrap() else { panic!("login") };
    assert_eq!(
        c2.call(&Request::CreateGroup { token, group: group.into() }).unwrap(),
        Response::Done
    );
    // Tracker 1 learns the group through the relay (listing groups is not
    // rate-limited, as failed logins would be).
    let mut c1 = common::RawClient::connect(t1.addr).unwrap();
    let probe = common::raw_login(&mut c1, "probe");
    common::eventually("tracker 1 learns the group through the relay", || {
        matches!(c1.call(&Request::ListGroups { token: probe }),
            Ok(Response::Names(n)) if n.iter().any(|g| g == group))
    });
    let seen = capture.lock().unwrap().clone();
    assert!(seen.len() > 200, "the sync stream crossed the relay ({} bytes)", seen.len());
    for secret in [user.as_bytes(), password.as_bytes(), group.as_bytes(), b"argon2id"] {
        assert!(!contains(&seen, secret), "{:?} crossed readable", String::from_utf8_lossy(secret));
    }
}
