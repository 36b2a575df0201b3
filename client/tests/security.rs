//! Access control at the peers (signed tickets), a full disk, and SIGINT
//! during a download — on real processes.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::{eventually, free_port, random_file, raw_login, NodeProc, RawClient, TrackerProc};
use ringshare_engine::meta::Sha1Digest;
use ringshare_engine::peer::{self, ErrorCode, Message};
use ringshare_engine::proto::{Request, Response};
use ringshare_engine::secure::{Keypair, PEER_PROLOGUE};
use ringshare_engine::secure_io::BlockingSecureStream;

fn node(dir: &Path, info: &Path, name: &str, listen: &str, env: &[(&str, &str)]) -> NodeProc {
    NodeProc::spawn(
        listen,
        info,
        &dir.join(format!("state-{name}")),
        env,
        Some(&dir.join(format!("{name}.stderr"))),
    )
}

fn addr_of(dir: &Path, name: &str) -> SocketAddr {
    let log = std::fs::read_to_string(dir.join(format!("{name}.stderr"))).unwrap();
    log.lines()
        .find(|l| l.contains("serving on"))
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Handshakes with a piece server over an encrypted link proving `key`;
/// the first answer: Ok(()) for a bitfield, Err(code) for an error.
fn knock_as(
    key: &Keypair,
    addr: SocketAddr,
    id: Sha1Digest,
    user: &str,
    ticket: &[u8],
) -> Result<(), ErrorCode> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut s = BlockingSecureStream::connect(tcp, key, PEER_PROLOGUE, None).unwrap();
    let mut out = Vec::new();
    peer::encode(
        &Message::Handshake { version: peer::VERSION, file_id: id, user, ticket },
        &mut out,
    );
    s.write_all(&out).unwrap();
    s.flush().unwrap();
    let mut h = [0u8; 8];
    s.read_exact(&mut h).unwrap();
    let (len, kind) = ringshare_engine::wire::parse_header(&h);
    let mut p = vec![0u8; len as usize - 8];
    s.read_exact(&mut p).unwrap();
    match peer::decode_payload(kind, &p).unwrap() {
        Message::Bitfield(_) => Ok(()),
        Message::Error { code, .. } => Err(code),
        other => panic!("{other:?}"),
    }
}

#[test]
fn only_members_with_valid_tickets_get_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("boot.txt");
    std::fs::write(&boot, "127.0.0.1:0\n").unwrap();
    let t = TrackerProc::start_with(&boot, 1, &dir.path().join("data"), &["--ticket-ttl", "1"]);
    let info = dir.path().join("info.txt");
    std::fs::write(&info, format!("{}\n", t.addr)).unwrap();

    let mut alice = node(dir.path(), &info, "alice", "127.0.0.1:0", &[]);
    alice.ok("create_user alice pw");
    alice.ok("login alice pw");
    alice.ok("create_group g");
    let f = dir.path().join("secret.bin");
    random_file(&f, 700_000, 1);
    let line = alice.ok(&format!("upload_file {} g", f.display()));
    let sha1 = line.rsplit(' ').next().unwrap();
    let id = Sha1Digest(hex::decode(sha1).unwrap().try_into().unwrap());
    let seeder = addr_of(dir.path(), "alice");

    // Tickets are bound to the key of the link that asked for them: this
    // client's. The same ticket from another node's link is refused.
    let tc_key = Keypair::generate();
    let knock = |addr, id, user: &str, ticket: &[u8]| knock_as(&tc_key, addr, id, user, ticket);
    let mut tc = RawClient::connect_as(t.addr, &tc_key).unwrap();
    let bob = raw_login(&mut tc, "bob");
    let eve = raw_login(&mut tc, "eve");
    assert_eq!(
        tc.call(&Request::JoinGroup { token: bob, group: "g".into() }).unwrap(),
        Response::Done
    );
    alice.ok("accept_request g bob");

    // A non-member gets no ticket, and knowing the hash is not enough.
    let r = tc
        .call(&Request::FileInfo { token: eve, group: "g".into(), file: "secret.bin".into() })
        .unwrap();
    assert!(matches!(r, Response::Refused(_)), "{r:?}");
    assert_eq!(knock(seeder, id, "eve", b""), Err(ErrorCode::BadTicket));
    assert_eq!(knock(seeder, id, "eve", &[7u8; 120]), Err(ErrorCode::BadTicket));
    let forged = ringshare_engine::ticket::sign(
        &[9u8; 32],
        &ringshare_engine::ticket::Ticket {
            user: "eve".into(),
            group: "g".into(),
            files: vec![id],
            expires_ms: u64::MAX,
            holder: Some(tc_key.public().0),
        },
    );
    assert_eq!(knock(seeder, id, "eve", &forged), Err(ErrorCode::BadTicket));
    // Nor is a group of one's own: eve registers the hash there (the
    // tracker cannot check bytes it never sees) and gets a ticket signed
    // for it, for a group alice does not share the file in. Refused alike
    // for a hash alice does not hold: the answer tells eve nothing.
    assert_eq!(
        tc.call(&Request::CreateGroup { token: eve, group: "own".into() }).unwrap(),
        Response::Done
    );
    let mut ticket_in_own = |name: &str, sha1: Sha1Digest| {
        let meta = ringshare_engine::meta::FileMeta {
            name: name.into(),
            len: 1,
            sha1,
            piece_hashes: vec![Sha1Digest([0; 20])],
        };
        let up = Request::UploadFile { token: eve, group: "own".into(), meta };
        assert_eq!(tc.call(&up).unwrap(), Response::Done);
        let ask = Request::FileInfo { token: eve, group: "own".into(), file: name.into() };
        let Response::FileInfo { ticket, .. } = tc.call(&ask).unwrap() else {
            panic!("no ticket in eve's own group")
        };
        ticket
    };
    let copy = ticket_in_own("copy.bin", id);
    assert_eq!(knock(seeder, id, "eve", &copy), Err(ErrorCode::BadTicket));
    let other = Sha1Digest([0x5a; 20]);
    let own = ticket_in_own("other.bin", other);
    assert_eq!(knock(seeder, other, "eve", &own), Err(ErrorCode::BadTicket));
    // Nor once alice, a member of eve's group too, starts fetching eve's
    // entry there: until its pieces verify, it is only a claim, and the
    // bytes alice serves under that hash are her secret file's.
    alice.ok("join_group own");
    let accept = Request::AcceptRequest { token: eve, group: "own".into(), user: "alice".into() };
    assert_eq!(tc.call(&accept).unwrap(), Response::Done);
    let bait = dir.path().join("bait");
    std::fs::create_dir(&bait).unwrap();
    alice.ok(&format!("download_file own copy.bin {}/", bait.display()));
    assert_eq!(knock(seeder, id, "eve", &copy), Err(ErrorCode::BadTicket));

    // A member's ticket works, for that member only.
    let Response::FileInfo { ticket, .. } = tc
        .call(&Request::FileInfo { token: bob, group: "g".into(), file: "secret.bin".into() })
        .unwrap()
    else {
        panic!("no ticket for a member")
    };
    assert_eq!(knock(seeder, id, "bob", &ticket), Ok(()));
    assert_eq!(knock(seeder, id, "eve", &ticket), Err(ErrorCode::BadTicket));
    // Copied to another node (another key), the ticket is useless.
    let thief = Keypair::generate();
    assert_eq!(knock_as(&thief, seeder, id, "bob", &ticket), Err(ErrorCode::BadTicket));
    // A plaintext downloader gets nothing from a seeder that did not ask
    // for plaintext: not even an answer.
    let mut plain = TcpStream::connect(seeder).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut out = Vec::new();
    peer::encode(
        &Message::Handshake { version: peer::VERSION, file_id: id, user: "bob", ticket: &ticket },
        &mut out,
    );
    plain.write_all(&out).unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(got.is_empty(), "a plaintext downloader was answered: {got:?}");

    // After leaving, the old ticket expires and no new one is issued.
    assert_eq!(
        tc.call(&Request::LeaveGroup { token: bob, group: "g".into() }).unwrap(),
        Response::Done
    );
    eventually("the ticket expires", || {
        knock(seeder, id, "bob", &ticket) == Err(ErrorCode::BadTicket)
    });
    let r = tc
        .call(&Request::FileInfo { token: bob, group: "g".into(), file: "secret.bin".into() })
        .unwrap();
    assert!(matches!(r, Response::Refused(_)), "{r:?}");
}

#[test]
fn a_full_disk_is_a_clear_error_and_the_download_works_once_there_is_room() {
    // Mounting needs root; elsewhere this scenario cannot be set up.
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_t, info) = TrackerProc::start(dir.path());
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success(), "mount a 2 MiB tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&small);

    let mut a = node(dir.path(), &info, "a", "127.0.0.1:0", &[]);
    a.ok("create_user a pw");
    a.ok("login a pw");
    a.ok("create_group g");
    let f = dir.path().join("big.bin");
    random_file(&f, 4 * 1024 * 1024, 2);
    a.ok(&format!("upload_file {} g", f.display()));
    let mut b = node(dir.path(), &info, "b", "127.0.0.1:0", &[]);
    b.ok("create_user b pw");
    b.ok("login b pw");
    b.ok("join_group g");
    a.ok("accept_request g b");
    let err =
        b.err(&format!("download_file g big.bin {}", small.display()), "No space left on device");
    assert!(err.contains("preallocate"), "{err}");
    let st = std::process::Command::new("mount")
        .args(["-o", "remount,size=16m"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success());
    b.ok(&format!("download_file g big.bin {}", small.display()));
    b.wait_downloads(|l| l.first().is_some_and(|l| l.starts_with("[C]")));
    assert_eq!(std::fs::read(small.join("big.bin")).unwrap(), std::fs::read(&f).unwrap());

    // The disk full mid-write (a file of one piece is not preallocated):
    // the reason names the file, whichever driver wrote.
    std::fs::write(small.join("filler"), vec![0u8; 12 * 1024 * 1024 - 64 * 1024]).unwrap();
    let one = dir.path().join("one.bin");
    random_file(&one, 300_000, 3);
    a.ok(&format!("upload_file {} g", one.display()));
    b.ok(&format!("download_file g one.bin {}", small.display()));
    let lines = b.wait_downloads(|l| l.iter().any(|l| l.starts_with("[F] [g] one.bin")));
    let part = small.join("one.bin.part");
    let want = format!("write {}: No space left on device", part.display());
    assert!(lines.iter().any(|l| l.contains(&want)), "{lines:?}");
}

#[test]
fn sigint_during_a_download_keeps_its_progress_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, info) = TrackerProc::start(dir.path());
    let mut s =
        node(dir.path(), &info, "seed", "127.0.0.1:0", &[("RINGSHARE_SERVE_DELAY_MS", "40")]);
    s.ok("create_user seed pw");
    s.ok("login seed pw");
    s.ok("create_group g");
    let f = dir.path().join("f.bin");
    random_file(&f, 12 * 1024 * 1024, 3);
    s.ok(&format!("upload_file {} g", f.display()));
    let listen = format!("127.0.0.1:{}", free_port());
    let mut d = node(dir.path(), &info, "down", &listen, &[]);
    d.ok("create_user down pw");
    d.ok("login down pw");
    d.ok("join_group g");
    s.ok("accept_request g down");
    let out = dir.path().join("out.bin");
    d.ok(&format!("download_file g f.bin {}", out.display()));
    d.wait_downloads(|l| {
        l.first()
            .and_then(|l| l.split_whitespace().find(|w| w.ends_with('%')))
            .is_some_and(|p| p.trim_end_matches('%').parse::<u32>().unwrap_or(0) >= 20)
    });
    let pid = d.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = d.child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "SIGINT stops the node");
    drop(d);
    let log = std::fs::read_to_string(dir.path().join("down.stderr")).unwrap();
    assert!(log.contains("interrupted; stopped 1 download(s)"), "{log}");

    let mut d = node(dir.path(), &info, "down", &listen, &[]);
    d.ok("login down pw");
    let line = d.ok(&format!("download_file g f.bin {}", out.display()));
    assert!(line.contains("resuming at"), "{line}");
    d.wait_downloads(|l| l.first().is_some_and(|l| l.starts_with("[C]")));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&f).unwrap());
}

/// A group the user leaves from another session stops being served by the
/// node within a heartbeat or so: a ticket for it, even one issued before,
/// is refused, and the node says why. (It was served until the node's next
/// login; an outsider who then made a group of that name and registered
/// the hash was admitted.)
#[test]
fn a_group_left_from_another_session_is_served_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("boot.txt");
    std::fs::write(&boot, "127.0.0.1:0\n").unwrap();
    let t = TrackerProc::start_with(&boot, 1, &dir.path().join("data"), &["--peer-ttl", "3"]);
    let info = dir.path().join("info.txt");
    std::fs::write(&info, format!("{}\n", t.addr)).unwrap();
    let mut alice = node(dir.path(), &info, "alice", "127.0.0.1:0", &[]);
    alice.ok("create_user alice pw");
    alice.ok("login alice pw");
    alice.ok("create_group g");
    let f = dir.path().join("x.bin");
    random_file(&f, 300_000, 4);
    let line = alice.ok(&format!("upload_file {} g", f.display()));
    let sha1 = line.rsplit(' ').next().unwrap();
    let id = Sha1Digest(hex::decode(sha1).unwrap().try_into().unwrap());
    let seeder = addr_of(dir.path(), "alice");
    // bob, a member, holds a ticket.
    let key = Keypair::generate();
    let mut tc = RawClient::connect_as(t.addr, &key).unwrap();
    let bob = raw_login(&mut tc, "bob");
    let join = Request::JoinGroup { token: bob, group: "g".into() };
    assert_eq!(tc.call(&join).unwrap(), Response::Done);
    alice.ok("accept_request g bob");
    let ask = Request::FileInfo { token: bob, group: "g".into(), file: "x.bin".into() };
    let Response::FileInfo { ticket, .. } = tc.call(&ask).unwrap() else { panic!("no ticket") };
    assert_eq!(knock_as(&key, seeder, id, "bob", &ticket), Ok(()));
    // alice leaves g from another session (another node's address).
    let login = Request::Login {
        user: "alice".into(),
        password: "pw".into(),
        peer_addr: "127.0.0.1:9".into(),
    };
    let Response::LoggedIn { token: other, .. } = tc.call(&login).unwrap() else {
        panic!("no second session")
    };
    let leave = Request::LeaveGroup { token: other, group: "g".into() };
    assert_eq!(tc.call(&leave).unwrap(), Response::Done);
    eventually("alice's node stops serving g", || {
        knock_as(&key, seeder, id, "bob", &ticket) == Err(ErrorCode::BadTicket)
    });
    let log = std::fs::read_to_string(dir.path().join("alice.stderr")).unwrap();
    assert!(log.contains("stopped sharing g/x.bin: no longer a member of g"), "{log}");
}
