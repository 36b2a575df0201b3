//! The `ringshare-tracker` binary: argument and tracker_info.txt handling,
//! clean stops, and surviving garbage from clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

use ringshare_engine::proto::{self, Request, Response, REQUEST};

const BIN: &str = env!("CARGO_BIN_EXE_ringshare-tracker");

/// A tracker a test started: killed and reaped when dropped, so that a
/// test failing midway leaves no tracker running.
struct Daemon(Option<Child>);

impl Daemon {
    /// The process, no longer killed on drop (the test waits for it).
    fn into_child(mut self) -> Child {
        self.0.take().expect("a daemon's child is taken once")
    }
}

impl std::ops::Deref for Daemon {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("a daemon's child is taken once")
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a daemon's child is taken once")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(info: &std::path::Path, no: &str) -> Daemon {
    // Run in the list's directory: the default data directory lands there.
    Daemon(Some(
        Command::new(BIN)
            .current_dir(info.parent().unwrap())
            .arg(info)
            .arg(no)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ))
}

/// Waits for the readiness line and returns the bound address.
fn ready(child: &mut Child) -> SocketAddr {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("listening on"), "{line:?}");
    line.trim().rsplit(' ').next().unwrap().parse().unwrap()
}

fn stderr_of(child: Daemon) -> (std::process::ExitStatus, String) {
    let out = child.into_child().wait_with_output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn every_tracker_info_layout_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    for (i, text) in [
        "# colon layout\n127.0.0.1:0\n127.0.0.1:1\n",
        "127.0.0.1 0\n127.0.0.1 1\n",
        "127.0.0.1\n0\n\n127.0.0.1\n1\n",
    ]
    .iter()
    .enumerate()
    {
        let info = dir.path().join(format!("t{i}.txt"));
        std::fs::write(&info, text).unwrap();
        let mut t = spawn(&info, "1");
        let addr = ready(&mut t);
        assert!(addr.ip().is_loopback());
        writeln!(t.stdin.as_mut().unwrap(), "quit").unwrap();
        let (status, err) = stderr_of(t);
        assert!(status.success(), "layout {i}: quit exits cleanly");
        // Its log, into a pipe here, carries no terminal colour codes.
        assert!(!err.is_empty() && !err.contains('\x1b'), "{err:?}");
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let info = dir.path().join("t.txt");
    std::fs::write(&info, "127.0.0.1:0\nthis is wrong\n").unwrap();
    let (status, err) = stderr_of(spawn(&info, "1"));
    assert!(!status.success());
    assert!(err.contains("t.txt:2:"), "names the line: {err}");

    std::fs::write(&info, "127.0.0.1:0\n").unwrap();
    let (status, err) = stderr_of(spawn(&info, "2"));
    assert!(!status.success());
    assert!(err.contains("tracker number 2 is not in"), "{err}");
    let (status, err) = stderr_of(spawn(&info, "0"));
    assert!(!status.success(), "{err}");

    let (status, err) = stderr_of(spawn(&dir.path().join("missing.txt"), "1"));
    assert!(!status.success());
    assert!(err.contains("missing.txt"), "{err}");

    // A tracker listed twice would sync with itself; another tracker at
    // port 0 cannot be reached; a key on its own line that is not its key
    // would have every client refuse it.
    for (text, says) in [
        (
            "127.0.0.1:7000\n127.0.0.1:7000\n",
            "t.txt:2: 127.0.0.1:7000 is listed already, on line 1",
        ),
        (
            "127.0.0.1:0\n127.0.0.2:0\n",
            "t.txt:2: 127.0.0.2:0: port 0 is no port to reach a tracker at",
        ),
        (&format!("127.0.0.1:0 {}\n", "ab".repeat(32)), "lists key abab"),
    ] {
        std::fs::write(&info, text).unwrap();
        let (status, err) = stderr_of(spawn(&info, "1"));
        assert!(!status.success(), "{text}: {err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
        assert!(errors.len() == 1 && errors[0].contains(says), "{text}: {err}");
    }
}

#[test]
fn sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let info = dir.path().join("t.txt");
    std::fs::write(&info, "127.0.0.1:0\n").unwrap();
    let mut t = spawn(&info, "1");
    let addr = ready(&mut t);
    // Standard input left open and idle (a supervisor's pipe), and a client
    // connected: the tracker's read of stdin used to hold its exit until
    // stdin closed.
    let stdin = t.stdin.take();
    let client = TcpStream::connect(addr).unwrap();
    let status = Command::new("kill").arg("-TERM").arg(t.id().to_string()).status().unwrap();
    assert!(status.success());
    let status = t.wait().unwrap();
    assert!(status.success(), "SIGTERM exits with 0");
    drop((stdin, client));
}

#[test]
fn one_data_directory_takes_one_tracker() {
    let dir = tempfile::tempdir().unwrap();
    let info = dir.path().join("t.txt");
    std::fs::write(&info, "127.0.0.1:0\n").unwrap();
    let mut first = spawn(&info, "1");
    let at = ready(&mut first);
    // Tracker 2 never gets as far as its port.
    let info = dir.path().join("t2.txt");
    std::fs::write(&info, format!("{at}\n127.0.0.1:1\n")).unwrap();
    let data = dir.path().join("tracker-1.data");
    let as_tracker_2 = || {
        Command::new(BIN)
            .current_dir(dir.path())
            .arg(&info)
            .arg("2")
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let second = as_tracker_2();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("is in use by another tracker"), "{err}");
    assert!(errors[0].contains(&format!("process {}", first.id())), "{err}");
    first.kill().unwrap();
    first.wait().unwrap();
    // Free again, but tracker 1's: its number is recorded.
    let again = as_tracker_2();
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success());
    assert!(err.contains("holds the data of tracker 1, not tracker 2"), "{err}");
}

#[test]
fn garbage_gets_an_error_frame_and_the_tracker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let info = dir.path().join("t.txt");
    std::fs::write(&info, "127.0.0.1:0\n").unwrap();
    let mut t = spawn(&info, "1");
    let addr = ready(&mut t);

    let secure = || {
        let tcp = TcpStream::connect(addr).unwrap();
        let me = ringshare_engine::secure::Keypair::generate();
        let prologue = ringshare_engine::secure::CONTROL_PROLOGUE;
        ringshare_engine::secure_io::BlockingSecureStream::connect(tcp, &me, prologue, None)
            .unwrap()
    };
    // Bytes that are not a handshake (a plaintext frame: an empty record):
    // the connection is closed, nothing is answered.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&[0, 0, 0, 20, 0, 0, 0, 1, 2, 3]).unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    assert!(reply.is_empty(), "{reply:?}");

    // Inside the encrypted link, an absurd frame length: refused from the
    // header alone.
    let mut s = secure();
    s.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1]).unwrap();
    s.flush().unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let (frame, _) = ringshare_engine::wire::decode(&reply, proto::MAX_FRAME).unwrap();
    let resp: Response = postcard::from_bytes(frame.payload).unwrap();
    assert!(matches!(resp, Response::Refused(_)), "{resp:?}");

    // A well-framed but undecodable request.
    let mut s = secure();
    let mut bad = Vec::new();
    ringshare_engine::wire::encode(REQUEST, &[0xee; 40], &mut bad);
    s.write_all(&bad).unwrap();
    s.flush().unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert!(!reply.is_empty(), "an error frame before the disconnect");

    // Everyone else is still served.
    let mut s = secure();
    let req = Request::CreateUser { user: "u".into(), password: "p".into() };
    s.write_all(&proto::encode_frame(REQUEST, &req).unwrap()).unwrap();
    s.flush().unwrap();
    let mut buf = vec![0u8; 64];
    let n = s.read(&mut buf).unwrap();
    let (frame, _) = ringshare_engine::wire::decode(&buf[..n], proto::MAX_FRAME).unwrap();
    assert_eq!(postcard::from_bytes::<Response>(frame.payload).unwrap(), Response::Done);
    let _ = t.kill();
}

/// `--print-key` with a list and a number prints the key of that tracker
/// of the list; a number the list does not have, or a list that cannot be
/// read, is an error, and no data directory is made for it.
#[test]
fn print_key_takes_only_a_tracker_of_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("t.txt");
    std::fs::write(&list, "127.0.0.1:7000\n").unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN).args(args).arg("--print-key").current_dir(dir.path()).output().unwrap()
    };
    let out = run(&["t.txt", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim().len(), 64);
    assert!(dir.path().join("tracker-1.data/tracker.key").exists());
    // Made its owner's only, as a tracker makes its data directory.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let data = dir.path().join("tracker-1.data");
        assert_eq!(mode(&data), 0o700);
        for f in std::fs::read_dir(&data).unwrap() {
            let f = f.unwrap().path();
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
    }
    for (args, why) in [
        (
            ["t.txt", "3"],
            "error: tracker number 3 is not in t.txt (it lists 1 tracker(s), numbered from 1)",
        ),
        (
            ["t.txt", "0"],
            "error: tracker number 0 is not in t.txt (it lists 1 tracker(s), numbered from 1)",
        ),
        (["none.txt", "1"], "error: "),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with(why) && err.lines().count() == 1, "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
    assert!(!dir.path().join("tracker-3.data").exists());
    assert!(!dir.path().join("tracker-0.data").exists());
}

/// A tracker whose pulls a peer refuses (that peer's list gives another
/// key for it) says so in one ERROR line: it goes on taking changes that
/// the peer will not see. (It used to log "unreachable: unexpected frame
/// type 2" at INFO.)
#[test]
fn a_tracker_whose_pulls_are_refused_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let port = || TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (p1, p2) = (port(), port());
    // A key that is not tracker 1's.
    let out = Command::new(BIN)
        .arg("--print-key")
        .arg("--data-dir")
        .arg(dir.path().join("elsewhere"))
        .output()
        .unwrap();
    let other = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let list1 = dir.path().join("t1.txt");
    std::fs::write(&list1, format!("127.0.0.1:{p1}\n127.0.0.1:{p2}\n")).unwrap();
    let list2 = dir.path().join("t2.txt");
    std::fs::write(&list2, format!("127.0.0.1:{p1} {other}\n127.0.0.1:{p2}\n")).unwrap();
    let mut two = spawn(&list2, "2");
    ready(&mut two);
    let mut one = spawn(&list1, "1");
    ready(&mut one);
    let err = BufReader::new(one.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let said = err.lines().map_while(Result::ok).find(|l| l.contains("refuses this tracker"));
        let _ = tx.send(said);
    });
    // A hang guard, not a timing assertion: the first pull comes at once.
    let said = rx.recv_timeout(std::time::Duration::from_secs(60));
    for t in [&mut one, &mut two] {
        t.kill().unwrap();
        t.wait().unwrap();
    }
    let refused = said.ok().flatten().expect("no line about the refusal");
    assert!(refused.contains("ERROR"), "{refused}");
    assert!(refused.contains(&format!("tracker 2 at 127.0.0.1:{p2}")), "{refused}");
}

/// The whole state (password hashes, session tokens, the ticket key) goes
/// only to a link proving a tracker's key: not to any process on the host
/// (it was served to anyone on loopback). `--dump-state` proves the key in
/// the tracker's data directory.
#[test]
fn the_state_image_is_for_a_trackers_own_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let info = dir.path().join("t.txt");
    std::fs::write(&info, "127.0.0.1:0\n").unwrap();
    let mut t = spawn(&info, "1");
    let addr = ready(&mut t);
    // Another client of this host, with a key of its own.
    let tcp = TcpStream::connect(addr).unwrap();
    let stranger = ringshare_engine::secure::Keypair::generate();
    let prologue = ringshare_engine::secure::CONTROL_PROLOGUE;
    let mut s =
        ringshare_engine::secure_io::BlockingSecureStream::connect(tcp, &stranger, prologue, None)
            .unwrap();
    s.write_all(&proto::encode_frame(REQUEST, &Request::StateImage).unwrap()).unwrap();
    s.flush().unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let (frame, _) = ringshare_engine::wire::decode(&reply, proto::MAX_FRAME).unwrap();
    let resp: Response = postcard::from_bytes(frame.payload).unwrap();
    assert!(
        matches!(&resp, Response::Refused(r) if r.to_string().contains("proves a tracker's key")),
        "{resp:?}"
    );
    // The digest (a hash and a count) is still served to this host.
    let list = dir.path().join("asked.txt");
    std::fs::write(&list, format!("{addr}\n")).unwrap();
    let admin = |args: &[&str], cwd: &std::path::Path| {
        Command::new(BIN).current_dir(cwd).arg(&list).arg("1").args(args).output().unwrap()
    };
    let elsewhere = tempfile::tempdir().unwrap();
    let out = admin(&["--digest"], elsewhere.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // --dump-state without the tracker's key at hand: refused before asking.
    let dump = dir.path().join("state.bin");
    let out = admin(&["--dump-state", dump.to_str().unwrap()], elsewhere.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.starts_with("error: --dump-state proves a tracker's key"), "{err}");
    assert!(!dump.exists());
    // With its data directory (the default one, where it runs): served.
    let out = admin(&["--dump-state", dump.to_str().unwrap()], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::metadata(&dump).unwrap().len() > 0);
    // It holds password hashes and sessions: its owner's to read only.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dump).unwrap().permissions().mode() & 0o777, 0o600);
}
