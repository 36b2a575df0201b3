//! Test harness: real `ringshare-tracker` and `ringshare` processes on
//! loopback, driven through standard input.
//!
//! Readiness is a line, never a sleep: a tracker is ready when it prints
//! `listening on ADDR`; a node's command is finished when the output of the
//! sync marker that follows it (an unknown command) comes back.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Guard against hangs: no test waits longer than this for one line.
const LINE_TIMEOUT: Duration = Duration::from_secs(120);

/// Path of a workspace binary, building it if this test run did not.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap(); // target/<profile>/deps -> target/<profile>
    let path = dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo).args(["build", "--bin", name]).status().unwrap();
        assert!(status.success(), "build {name}");
    }
    path
}

/// Lines of a child's output, read on a thread.
pub fn line_reader(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// A command for `program`, run inside network namespace `ns` when given
/// (`ip netns exec` execs the program: the child's pid is the program's).
pub fn in_netns(ns: Option<&str>, program: &Path) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A running tracker.
pub struct TrackerProc {
    pub child: Child,
    pub addr: SocketAddr,
    /// The public key it printed after its readiness line.
    pub key: String,
    pub stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl TrackerProc {
    /// Starts tracker `no` of the list in `info`, keeping its data in
    /// `data`, and waits until it listens.
    pub fn start_with(info: &Path, no: usize, data: &Path, extra: &[&str]) -> Self {
        Self::start_in(None, info, no, data, extra)
    }

    /// [`TrackerProc::start_with`] inside network namespace `ns`, if given.
    pub fn start_in(ns: Option<&str>, info: &Path, no: usize, data: &Path, extra: &[&str]) -> Self {
        let mut child = in_netns(ns, &bin("ringshare-tracker"))
            .arg(info)
            .arg(no.to_string())
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ringshare-tracker");
        let stdin = child.stdin.take();
        let lines = line_reader(child.stdout.take().unwrap());
        let first = lines.recv_timeout(LINE_TIMEOUT).expect("tracker readiness line");
        let addr = first
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from tracker: {first:?}"));
        let second = lines.recv_timeout(LINE_TIMEOUT).expect("tracker key line");
        let key = match second.split_once(" key ") {
            Some((_, k)) if k.len() == 64 => k.to_owned(),
            _ => panic!("unexpected second line from tracker: {second:?}"),
        };
        Self { child, addr, key, stdin, lines }
    }

    /// Starts a lone tracker on an ephemeral port; returns it and a
    /// tracker_info.txt (in `dir`) that names its real address.
    pub fn start(dir: &Path) -> (Self, PathBuf) {
        let boot = dir.join("tracker_boot.txt");
        std::fs::write(&boot, "127.0.0.1:0\n").unwrap();
        let t = Self::start_with(&boot, 1, &dir.join("tracker-data"), &[]);
        let info = dir.join("tracker_info.txt");
        std::fs::write(&info, format!("{}\n", t.addr)).unwrap();
        (t, info)
    }

    /// [`TrackerProc::start`] with a peer TTL of `ttl` seconds: its nodes
    /// heartbeat (and watch their shares) every third of it.
    pub fn start_with_ttl(dir: &Path, ttl: u32) -> (Self, PathBuf) {
        let boot = dir.join("boot.txt");
        std::fs::write(&boot, "127.0.0.1:0\n").unwrap();
        let t = Self::start_with(&boot, 1, &dir.join("tdata"), &["--peer-ttl", &ttl.to_string()]);
        let info = dir.join("tracker_info.txt");
        std::fs::write(&info, format!("{}\n", t.addr)).unwrap();
        (t, info)
    }

    /// Stops the tracker with SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TrackerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running client node driven through its standard input.
pub struct NodeProc {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seq: u32,
}

impl NodeProc {
    /// Starts `ringshare 127.0.0.1:0 <info>` keeping its records in `state`.
    pub fn start(info: &Path, state: &Path) -> Self {
        Self::start_at("127.0.0.1:0", info, state)
    }

    /// Starts a node serving on `listen`.
    pub fn start_at(listen: &str, info: &Path, state: &Path) -> Self {
        Self::spawn(listen, info, state, &[], None)
    }

    /// Starts a node with extra environment, its stderr appended to
    /// `stderr` when given.
    pub fn spawn(
        listen: &str,
        info: &Path,
        state: &Path,
        env: &[(&str, &str)],
        stderr: Option<&Path>,
    ) -> Self {
        Self::spawn_in(None, listen, info, state, env, stderr)
    }

    /// [`NodeProc::spawn`] inside network namespace `ns`, if given.
    pub fn spawn_in(
        ns: Option<&str>,
        listen: &str,
        info: &Path,
        state: &Path,
        env: &[(&str, &str)],
        stderr: Option<&Path>,
    ) -> Self {
        let err = match stderr {
            Some(p) => {
                Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap())
            }
            None => Stdio::null(),
        };
        let mut cmd = in_netns(ns, &bin("ringshare"));
        cmd.arg(listen).arg(info).env("RINGSHARE_STATE_DIR", state);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("spawn ringshare");
        let stdin = child.stdin.take();
        let lines = line_reader(child.stdout.take().unwrap());
        Self { child, stdin, lines, seq: 0 }
    }

    /// Runs `show_downloads` until `done` accepts its output; panics after
    /// `LINE_TIMEOUT` (a hang guard, not a timing assertion).
    pub fn wait_downloads(&mut self, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let start = std::time::Instant::now();
        loop {
            let out = self.cmd("show_downloads");
            if done(&out) {
                return out;
            }
            assert!(start.elapsed() < LINE_TIMEOUT, "downloads never got there: {out:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs one command and returns every line it printed.
    pub fn cmd(&mut self, line: &str) -> Vec<String> {
        self.seq += 1;
        let marker = format!("__sync_{}", self.seq);
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}\n{marker}").expect("write to node");
        stdin.flush().unwrap();
        let end = format!("error: unknown command: {marker} ");
        let mut out = Vec::new();
        loop {
            match self.lines.recv_timeout(LINE_TIMEOUT) {
                Ok(l) if l.starts_with(&end) => return out,
                Ok(l) => out.push(l),
                Err(_) => panic!("no end of output for {line:?}; got so far: {out:?}"),
            }
        }
    }

    /// Runs a command that must succeed with exactly one line; returns it.
    pub fn ok(&mut self, line: &str) -> String {
        let out = self.cmd(line);
        assert_eq!(out.len(), 1, "{line:?} printed {out:?}");
        assert!(!out[0].starts_with("error:"), "{line:?} failed: {}", out[0]);
        out.into_iter().next().unwrap()
    }

    /// Runs a command that must fail with exactly one `error:` line
    /// containing `needle`; returns the line.
    pub fn err(&mut self, line: &str, needle: &str) -> String {
        let out = self.cmd(line);
        assert_eq!(out.len(), 1, "{line:?} printed {out:?}");
        assert!(out[0].starts_with("error: "), "{line:?} did not fail: {}", out[0]);
        assert!(out[0].contains(needle), "{line:?}: {:?} lacks {needle:?}", out[0]);
        out.into_iter().next().unwrap()
    }

    /// Closes standard input and waits for the node to exit.
    pub fn close(mut self) -> std::process::ExitStatus {
        self.stdin.take();
        self.child.wait().unwrap()
    }

    /// Sends the node SIGTERM and waits for it to exit.
    #[allow(dead_code)]
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }

    /// Kills the node with SIGKILL.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The share records (`*.sharelog`) in a node's state directory.
#[allow(dead_code)]
pub fn share_records(state: &Path) -> Vec<String> {
    std::fs::read_dir(state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sharelog"))
        .collect()
}

/// A free loopback port (bound and released: a node restarted on it keeps
/// its identity in the tests that need a fixed address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A file of `len` pseudo-random bytes derived from `seed`.
pub fn random_file(path: &Path, len: usize, seed: u64) {
    ringshare_engine::sample::write_pseudo_random(path, len as u64, seed).unwrap();
}

/// A raw protocol connection to one tracker (for load and fault tests).
pub struct RawClient {
    stream: ringshare_engine::secure_io::BlockingSecureStream<std::net::TcpStream>,
}

impl RawClient {
    /// An encrypted connection with a fresh key (the tracker's is not checked).
    pub fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        Self::connect_as(addr, &ringshare_engine::secure::Keypair::generate())
    }

    /// The same, proving `key` (tickets asked for here are bound to it).
    pub fn connect_as(
        addr: SocketAddr,
        key: &ringshare_engine::secure::Keypair,
    ) -> std::io::Result<Self> {
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(LINE_TIMEOUT))?;
        let prologue = ringshare_engine::secure::CONTROL_PROLOGUE;
        let stream =
            ringshare_engine::secure_io::BlockingSecureStream::connect(stream, key, prologue, None)
                .map_err(std::io::Error::other)?;
        Ok(Self { stream })
    }

    /// One request, one response.
    pub fn call(
        &mut self,
        req: &ringshare_engine::proto::Request,
    ) -> std::io::Result<ringshare_engine::proto::Response> {
        use ringshare_engine::{proto, wire};
        use std::io::Read;
        let frame = proto::encode_frame(proto::REQUEST, req).map_err(std::io::Error::other)?;
        self.stream.write_all(&frame)?;
        self.stream.flush()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match wire::decode(&buf, proto::MAX_FRAME) {
                Ok((f, _)) => {
                    return postcard::from_bytes(f.payload).map_err(std::io::Error::other)
                }
                Err(wire::DecodeError::NeedMore(_)) => {}
                Err(e) => return Err(std::io::Error::other(e)),
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Polls `f` until it returns true; panics after `LINE_TIMEOUT` (a hang
/// guard, not a timing assertion).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < LINE_TIMEOUT, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Creates `user` (password `pw`) and logs in through a raw connection, as
/// a node at a placeholder address; returns the session token.
pub fn raw_login(c: &mut RawClient, user: &str) -> ringshare_engine::proto::Token {
    use ringshare_engine::proto::{Request, Response};
    let _ = c.call(&Request::CreateUser { user: user.into(), password: "pw".into() }).unwrap();
    let req = Request::Login {
        user: user.into(),
        password: "pw".into(),
        peer_addr: "127.0.0.1:9".into(),
    };
    match c.call(&req).unwrap() {
        Response::LoggedIn { token, .. } => token,
        other => panic!("login {user}: {other:?}"),
    }
}
