//! Nodes on separate hosts: network namespaces on one bridge, and one host
//! behind a NAT router with a forwarded port. Needs root, `ip` and `nft`
//! (`.ci/run` installs them); elsewhere it says so and does nothing.
//!
//! ```text
//!   rsa: 10.88.0.1  tracker, seeder alice (`share`, listens on 0.0.0.0)
//!   rsc: 10.88.0.4  downloader carol (`get`)                         ── bridge (rsw)
//!   rsr: 10.88.0.3  router: DNAT 10.88.0.3:17000 → 192.168.77.2:7000,
//!        192.168.77.1  masquerade outbound
//!   rsb: 192.168.77.2  seeder bob: --listen 0.0.0.0:7000 --advertise 10.88.0.3:17000
//! ```

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{bin, in_netns, random_file, NodeProc, TrackerProc};

/// Namespaces and links of one run, removed on drop (also on failure).
struct Net {
    id: String,
}

impl Net {
    fn ns(&self, host: &str) -> String {
        format!("rs{host}{}", self.id)
    }

    fn build() -> Result<Self, String> {
        let net = Net { id: (std::process::id() % 100_000).to_string() };
        for host in ["w", "a", "c", "r", "b"] {
            sh(&["ip", "netns", "add", &net.ns(host)])?;
            sh(&["ip", "-n", &net.ns(host), "link", "set", "lo", "up"])?;
        }
        let w = net.ns("w");
        sh(&["ip", "-n", &w, "link", "add", "br0", "type", "bridge"])?;
        sh(&["ip", "-n", &w, "link", "set", "br0", "up"])?;
        for (host, ip) in [("a", "10.88.0.1"), ("c", "10.88.0.4"), ("r", "10.88.0.3")] {
            let (port, eth) = (format!("p{host}{}", net.id), format!("e{host}{}", net.id));
            sh(&["ip", "link", "add", &port, "type", "veth", "peer", "name", &eth])?;
            sh(&["ip", "link", "set", &port, "netns", &w])?;
            sh(&["ip", "link", "set", &eth, "netns", &net.ns(host)])?;
            sh(&["ip", "-n", &w, "link", "set", &port, "master", "br0", "up"])?;
            let ns = net.ns(host);
            sh(&["ip", "-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", &eth])?;
            sh(&["ip", "-n", &ns, "link", "set", &eth, "up"])?;
        }
        // The private link behind the router.
        let (r, b) = (net.ns("r"), net.ns("b"));
        let (rb, br) = (format!("rb{}", net.id), format!("br{}", net.id));
        sh(&["ip", "link", "add", &rb, "type", "veth", "peer", "name", &br])?;
        sh(&["ip", "link", "set", &rb, "netns", &r])?;
        sh(&["ip", "link", "set", &br, "netns", &b])?;
        sh(&["ip", "-n", &r, "addr", "add", "192.168.77.1/24", "dev", &rb])?;
        sh(&["ip", "-n", &r, "link", "set", &rb, "up"])?;
        sh(&["ip", "-n", &b, "addr", "add", "192.168.77.2/24", "dev", &br])?;
        sh(&["ip", "-n", &b, "link", "set", &br, "up"])?;
        sh(&["ip", "-n", &b, "route", "add", "default", "via", "192.168.77.1"])?;
        sh(&["ip", "netns", "exec", &r, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let public = format!("er{}", net.id);
        let rules = format!(
            "table ip nat {{
               chain pre {{ type nat hook prerouting priority -100;
                 ip daddr 10.88.0.3 tcp dport 17000 dnat to 192.168.77.2:7000; }}
               chain post {{ type nat hook postrouting priority 100;
                 oifname \"{public}\" masquerade; }}
             }}"
        );
        let mut nft = Command::new("ip")
            .args(["netns", "exec", &r, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        std::io::Write::write_all(&mut nft.stdin.take().expect("stdin"), rules.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
        if !nft.wait().map_err(|e| e.to_string())?.success() {
            return Err("nft refused the NAT rules".into());
        }
        Ok(net)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for host in ["a", "c", "r", "b", "w"] {
            let ns = self.ns(host);
            // Anything still running in it first.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out =
        Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn usable() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    for tool in ["ip", "nft"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!("{tool} is missing"));
        }
    }
    Ok(())
}

fn one_shot(ns: &str, dir: &Path, args: &[&str], state: &str) -> Command {
    let mut c = in_netns(Some(ns), &bin("ringshare"));
    c.args(args).env("RINGSHARE_STATE_DIR", dir.join(state));
    c
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_download_across_hosts_and_through_a_forwarded_port() {
    if let Err(why) = usable() {
        eprintln!("note: skipping the namespace test: {why}");
        return;
    }
    let net = Net::build().expect("build the namespaces");
    let dir = tempfile::tempdir().unwrap();
    let info = dir.path().join("tracker_info.txt");
    std::fs::write(&info, "10.88.0.1:6970\n").unwrap();
    let _tracker =
        TrackerProc::start_in(Some(&net.ns("a")), &info, 1, &dir.path().join("tdata"), &[]);

    // Accounts and the group, from a node on the tracker's host.
    let mut admin = NodeProc::spawn_in(
        Some(&net.ns("a")),
        "10.88.0.1:0",
        &info,
        &dir.path().join("s0"),
        &[],
        None,
    );
    for u in ["alice", "bob", "carol"] {
        admin.ok(&format!("create_user {u} pw-{u}"));
        std::fs::write(dir.path().join(format!("pw-{u}")), format!("pw-{u}\n")).unwrap();
    }
    admin.ok("login alice pw-alice");
    admin.ok("create_group g");
    admin.ok("logout");
    for u in ["bob", "carol"] {
        admin.ok(&format!("login {u} pw-{u}"));
        admin.ok("join_group g");
        admin.ok("logout");
    }
    admin.ok("login alice pw-alice");
    admin.ok("accept_request g bob");
    admin.ok("accept_request g carol");
    admin.ok("logout");

    let file = dir.path().join("data.bin");
    random_file(&file, 12 * 1024 * 1024 + 5, 77);
    let pw = |u: &str| dir.path().join(format!("pw-{u}")).display().to_string();
    let (info_s, file_s) = (info.display().to_string(), file.display().to_string());
    let start_seeder = |ns: &str, user: &str, extra: &[&str]| {
        let mut args = vec!["share", "--trackers", &info_s, "--user", user, "--password-file"];
        let p = pw(user);
        args.push(&p);
        args.extend_from_slice(extra);
        args.extend_from_slice(&["g", &file_s]);
        let mut child = one_shot(ns, dir.path(), &args, &format!("state-{user}"))
            // Slow pieces, so that both seeders serve some.
            .env("RINGSHARE_SERVE_DELAY_MS", "20")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(first.starts_with("uploaded data.bin to g"), "{user}: {first:?}");
        let second = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(second.starts_with("seeding on"), "{user}: {second:?}");
        // Where it is listed, when that is not where it listens.
        if let Some(i) = extra.iter().position(|a| *a == "--advertise") {
            let listed = format!("(listed as {})", extra[i + 1]);
            assert!(second.contains(&listed), "{user}: {second:?}");
        }
        child
    };
    // alice gives no address: the tracker is not on loopback, so she
    // listens on every interface and is listed under 10.88.0.1.
    let mut alice = start_seeder(&net.ns("a"), "alice", &[]);
    // bob is behind the router: only his forwarded port reaches him.
    let mut bob = start_seeder(
        &net.ns("b"),
        "bob",
        &["--listen", "0.0.0.0:7000", "--advertise", "10.88.0.3:17000"],
    );

    let dest = dir.path().join("got.bin");
    let stats = dir.path().join("stats.json");
    let p = pw("carol");
    let args = [
        "get",
        "--trackers",
        &info_s,
        "--user",
        "carol",
        "--password-file",
        &p,
        "--quiet",
        "--stats",
        &stats.display().to_string(),
        "g",
        "data.bin",
        &dest.display().to_string(),
    ];
    let out = one_shot(&net.ns("c"), dir.path(), &args, "state-carol").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&file).unwrap());
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let from = |addr: &str| {
        doc["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["addr"].as_str().is_some_and(|a| a.starts_with(addr)))
            .map(|p| p["bytes"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert!(from("10.88.0.1:") > 0, "nothing from alice: {doc}");
    assert!(from("10.88.0.3:17000") > 0, "nothing from bob through his forwarded port: {doc}");

    for child in [&mut alice, &mut bob] {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        assert!(child.wait().unwrap().success(), "a seeder exits cleanly on SIGTERM");
    }
    drop(net);
}
