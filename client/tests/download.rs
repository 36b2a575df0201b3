//! Downloads between real `ringshare` processes over loopback: many peers,
//! re-sharing, faults (a killed seeder, a corrupt seeder, a killed
//! downloader), edge sizes and every error path of the download commands.

mod common;

use std::path::{Path, PathBuf};

use common::{eventually, free_port, random_file, NodeProc, TrackerProc};

const MIB: usize = 1024 * 1024;

struct Swarm {
    dir: tempfile::TempDir,
    _tracker: TrackerProc,
    info: PathBuf,
    /// The I/O backend (serving and fetching) every node runs (`RINGSHARE_IO`).
    io: &'static str,
}

impl Swarm {
    fn new(io: &'static str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (tracker, info) = TrackerProc::start(dir.path());
        Self { dir, _tracker: tracker, info, io }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A logged-in node for a new user; `delay_ms` slows the pieces it serves.
    fn user(&self, name: &str, delay_ms: u32) -> NodeProc {
        self.user_at(name, "127.0.0.1:0", delay_ms)
    }

    fn user_at(&self, name: &str, listen: &str, delay_ms: u32) -> NodeProc {
        let delay = delay_ms.to_string();
        let mut n = NodeProc::spawn(
            listen,
            &self.info,
            &self.path(&format!("state-{name}")),
            &[("RINGSHARE_SERVE_DELAY_MS", &delay), ("RINGSHARE_IO", self.io)],
            Some(&self.path(&format!("{name}.stderr"))),
        );
        let _ = n.cmd(&format!("create_user {name} pw"));
        n.ok(&format!("login {name} pw"));
        let log = std::fs::read_to_string(self.path(&format!("{name}.stderr"))).unwrap();
        assert!(
            log.contains(&format!("I/O backend (serving and fetching): {} (", self.io)),
            "node {name} does not run the {} backend: {log}",
            self.io
        );
        n
    }

    /// Bytes each peer contributed, from the downloader's completion line.
    fn contributions(&self, name: &str) -> Vec<(String, u64)> {
        let log = std::fs::read_to_string(self.path(&format!("{name}.stderr"))).unwrap_or_default();
        let line = log
            .lines()
            .rfind(|l| l.contains("ringshare: downloaded"))
            .unwrap_or_else(|| panic!("no completion line in {log:?}"));
        let list = line.split("): ").nth(1).unwrap_or("").trim_end_matches(')');
        list.split_whitespace()
            .filter_map(|kv| kv.split_once('=').map(|(a, b)| (a.to_owned(), b.parse().unwrap())))
            .collect()
    }

    /// The address a node serves on, from its start-up line.
    fn addr_of(&self, name: &str) -> String {
        let log = std::fs::read_to_string(self.path(&format!("{name}.stderr"))).unwrap();
        let line = log.lines().find(|l| l.contains("serving on")).unwrap();
        line.rsplit(' ').next().unwrap().to_owned()
    }
}

fn join(owner: &mut NodeProc, member: &mut NodeProc, group: &str, user: &str) {
    member.ok(&format!("join_group {group}"));
    owner.ok(&format!("accept_request {group} {user}"));
}

fn complete(lines: &[String]) -> bool {
    !lines.is_empty() && lines.iter().all(|l| l.starts_with("[C]"))
}

fn percent(lines: &[String]) -> u32 {
    lines
        .first()
        .and_then(|l| l.split_whitespace().find(|w| w.ends_with('%')))
        .and_then(|w| w.trim_end_matches('%').parse().ok())
        .unwrap_or(0)
}

fn same_bytes(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(
        x == y,
        "{} and {} differ ({} vs {} bytes)",
        a.display(),
        b.display(),
        x.len(),
        y.len()
    );
}

/// Whether this kernel lets the piece server use io_uring (containers and
/// sandboxes often block it; the node then falls back to threads).
fn uring_usable() -> bool {
    use ringshare_engine::serve::Backend;
    Backend::choose(Some(Backend::Uring)).0 == Backend::Uring
}

/// Runs a scenario once per I/O backend (serving and fetching): the same expectations hold
/// for io_uring and for the threads fallback.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(#[test] fn $name() {
                if !super::uring_usable() {
                    eprintln!("note: io_uring is not usable here; skipping the uring run");
                    return;
                }
                super::$name("uring")
            })*
        }
        mod threads {
            $(#[test] fn $name() { super::$name("threads") })*
        }
    };
}

on_every_backend!(
    three_seeders_one_downloader_and_a_second_downloader_fetching_from_the_first,
    a_killed_seeder_and_a_corrupt_seeder_cost_time_not_correctness,
    a_killed_downloader_resumes_without_refetching_verified_pieces,
    edge_sizes_concurrent_downloads_and_error_paths,
    a_download_goes_on_from_a_seed_that_logged_out_and_in_again,
);

/// A seed that logs out mid-download and in again: its uploads pause and
/// the download running from it goes on from it once it is back. (Its
/// links to the seed were kept, every request on them kept back: the
/// download never asked the seed again, and failed after 60 s.)
fn a_download_goes_on_from_a_seed_that_logged_out_and_in_again(io: &'static str) {
    let s = Swarm::new(io);
    let src = s.path("paused.bin");
    random_file(&src, 12 * MIB, 17);
    let mut seed = s.user("seed", 200);
    seed.ok("create_group g");
    seed.ok(&format!("upload_file {} g", src.display()));
    let mut d = s.user("down", 0);
    join(&mut seed, &mut d, "g", "down");
    let out = s.path("got.bin");
    d.ok(&format!("download_file g paused.bin {}", out.display()));
    d.wait_downloads(|l| percent(l) >= 20);
    assert!(seed.ok("logout").starts_with("logged out seed"));
    assert!(!complete(&d.cmd("show_downloads")), "paused, not done");
    assert_eq!(seed.ok("login seed pw"), "logged in as seed; resumed sharing 1 file(s)");
    let end = d.wait_downloads(|l| complete(l) || l.iter().any(|x| x.starts_with("[F]")));
    assert!(complete(&end), "{end:?}");
    same_bytes(&src, &out);
}

fn three_seeders_one_downloader_and_a_second_downloader_fetching_from_the_first(io: &'static str) {
    let s = Swarm::new(io);
    let src = s.path("big.bin");
    random_file(&src, 64 * MIB, 11);
    // Seeders are slowed so that the first downloader is still busy when the
    // second starts, and has pieces to give it.
    let mut seeders: Vec<NodeProc> = (0..3).map(|i| s.user(&format!("seed{i}"), 15)).collect();
    seeders[0].ok("create_group g");
    for i in 1..3 {
        let (owner, rest) = seeders.split_at_mut(1);
        join(&mut owner[0], &mut rest[i - 1], "g", &format!("seed{i}"));
    }
    for sd in &mut seeders {
        sd.ok(&format!("upload_file {} g", src.display()));
    }
    let mut d1 = s.user("down1", 0);
    let mut d2 = s.user("down2", 0);
    join(&mut seeders[0], &mut d1, "g", "down1");
    join(&mut seeders[0], &mut d2, "g", "down2");
    let out1 = s.path("out1");
    std::fs::create_dir(&out1).unwrap();
    let line = d1.ok(&format!("download_file g big.bin {}", out1.display()));
    assert!(line.contains("3 peer(s)"), "{line}");
    // Once the first downloader holds pieces, the tracker lists it as a peer.
    d1.wait_downloads(|l| percent(l) >= 10);
    // Listed once the tracker is told, which is not at once.
    eventually("down1 listed as a peer", || seeders[0].cmd("list_files g")[0].ends_with("4 peers"));
    let out2 = s.path("copy2.bin");
    d2.ok(&format!("download_file g big.bin {}", out2.display()));
    let shown = d1.wait_downloads(|l| l[0].starts_with("[D]") || complete(l));
    if shown[0].starts_with("[D]") {
        assert!(
            shown[0].contains("%  ") && shown[0].contains("MB/s") && shown[0].contains("peer"),
            "{shown:?}"
        );
    }
    d1.wait_downloads(complete);
    d2.wait_downloads(complete);
    same_bytes(&src, &out1.join("big.bin"));
    same_bytes(&src, &out2);
    let c1 = s.contributions("down1");
    assert!(c1.len() >= 2, "pieces came from several peers: {c1:?}");
    let d1_addr = s.addr_of("down1");
    let c2 = s.contributions("down2");
    assert!(
        c2.iter().any(|(a, b)| *a == d1_addr && *b > 0),
        "down2 fetched from down1 ({d1_addr}): {c2:?}"
    );
    // A finished download is a full seeder.
    eventually("down2 listed as a peer", || seeders[1].cmd("list_files g")[0].ends_with("5 peers"));
}

fn a_killed_seeder_and_a_corrupt_seeder_cost_time_not_correctness(io: &'static str) {
    let s = Swarm::new(io);
    let src = s.path("data.bin");
    random_file(&src, 16 * MIB, 12);
    let bad = s.path("bad").join("data.bin");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    std::fs::copy(&src, &bad).unwrap();
    let mut good = s.user("good", 20);
    let mut doomed = s.user("doomed", 20);
    let mut liar = s.user("liar", 0);
    let mut d = s.user("down", 0);
    good.ok("create_group g");
    join(&mut good, &mut doomed, "g", "doomed");
    join(&mut good, &mut liar, "g", "liar");
    join(&mut good, &mut d, "g", "down");
    good.ok(&format!("upload_file {} g", src.display()));
    doomed.ok(&format!("upload_file {} g", src.display()));
    liar.ok(&format!("upload_file {} g", bad.display()));
    // The liar's copy changes after it was hashed, its modification time
    // put back (a node refuses to serve a file whose length or mtime
    // changed): it now serves wrong bytes.
    let mtime = std::fs::metadata(&bad).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&bad).unwrap();
    for b in bytes.iter_mut().step_by(1000) {
        *b = b.wrapping_add(1);
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&bad)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(&bytes)?;
            f.set_modified(mtime)
        })
        .unwrap();

    let out = s.path("out.bin");
    d.ok(&format!("download_file g data.bin {}", out.display()));
    d.wait_downloads(|l| percent(l) >= 10 || complete(l));
    doomed.kill();
    d.wait_downloads(complete);
    same_bytes(&src, &out);
    let c = s.contributions("down");
    let liar_addr = s.addr_of("liar");
    assert!(c.iter().all(|(a, _)| *a != liar_addr), "nothing verified came from the liar: {c:?}");
    let log = std::fs::read_to_string(s.path("down.stderr")).unwrap();
    assert!(log.contains("failed its hash"), "the corrupt piece was detected: {log}");
}

fn a_killed_downloader_resumes_without_refetching_verified_pieces(io: &'static str) {
    let s = Swarm::new(io);
    let src = s.path("resume.bin");
    random_file(&src, 16 * MIB, 13);
    let mut seed = s.user("seed", 40);
    seed.ok("create_group g");
    seed.ok(&format!("upload_file {} g", src.display()));
    let listen = format!("127.0.0.1:{}", free_port());
    let mut d = s.user_at("down", &listen, 0);
    join(&mut seed, &mut d, "g", "down");
    let out = s.path("resumed.bin");
    d.ok(&format!("download_file g resume.bin {}", out.display()));
    d.wait_downloads(|l| percent(l) >= 30);
    d.kill();
    assert!(!out.exists());

    let mut d = s.user_at("down", &listen, 0);
    let line = d.ok(&format!("download_file g resume.bin {}", out.display()));
    let resumed: u64 = line
        .split("resuming at ")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resume in {line:?}"));
    assert!(resumed > 0);
    d.wait_downloads(complete);
    same_bytes(&src, &out);
    let fetched: u64 = s.contributions("down").iter().map(|(_, b)| b).sum();
    assert_eq!(
        fetched,
        16 * MIB as u64 - resumed * 512 * 1024,
        "only the missing pieces were fetched"
    );
}

fn edge_sizes_concurrent_downloads_and_error_paths(io: &'static str) {
    let s = Swarm::new(io);
    let mut a = s.user("alice", 0);
    let mut b = s.user("bob", 0);
    let mut outsider = s.user("eve", 0);
    a.ok("create_group g");
    join(&mut a, &mut b, "g", "bob");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("one", vec![0x5a]),
        ("exact", (0..2 * 512 * 1024).map(|i| (i % 251) as u8).collect()),
        ("zeros", vec![0u8; MIB + 3]),
    ];
    for (name, bytes) in &files {
        std::fs::write(s.path(name), bytes).unwrap();
        a.ok(&format!("upload_file {} g", s.path(name).display()));
    }
    let out = s.path("out");
    std::fs::create_dir(&out).unwrap();
    // Several downloads at once in one session.
    for (name, _) in &files {
        b.ok(&format!("download_file g {name} {}", out.display()));
    }
    let lines = b.wait_downloads(|l| l.len() == files.len() && complete(l));
    for (name, _) in &files {
        assert!(lines.contains(&format!("[C] [g] {name}")), "{lines:?}");
        same_bytes(&s.path(name), &out.join(name));
    }

    let d = out.display().to_string();
    b.err(&format!("download_file g one {d}"), "already exists");
    b.err(&format!("download_file g nothing {d}"), "no such file in group g: nothing");
    b.err(&format!("download_file nope one {d}"), "no such group: nope");
    b.err(&format!("download_file g one {d}/no/such/dir/x"), "does not exist");
    b.err("download_file g one", "wrong number of arguments");
    b.err("download_file g ../etc/passwd /tmp", "file name");
    outsider.err(
        &format!("download_file g one {}", s.path("stolen").display()),
        "not a member of group g",
    );
    assert!(!s.path("stolen").exists());
    let mut fresh = NodeProc::start(&s.info, &s.path("state-fresh"));
    fresh.err(&format!("download_file g one {d}"), "not logged in");
    fresh.err("show_downloads", "not logged in");
}
