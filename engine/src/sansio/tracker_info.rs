//! Parsing `tracker_info.txt`: the list of tracker addresses.
//!
//! Three layouts are found in the wild and all are accepted:
//! `IP:PORT` per line, `IP PORT` per line, and the IP and the port on
//! alternate lines. Blank lines and `#` comments (whole-line or trailing) are
//! ignored. A file mixing layouts is parsed line by line: an address line
//! stands alone, a bare IP must be followed by a bare port. Anything else is
//! an error naming the line. Any layout may give the tracker's public key
//! (64 hex digits) after the port, on the same line; without one, a client
//! pins the key it first sees.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use thiserror::Error;

use crate::secure::PublicKey;

/// Why a tracker list is refused.
#[derive(Debug, Error)]
pub enum TrackerInfoError {
    /// The file could not be read. (The OS error is in the message, so it
    /// is not also the source: see [`crate::fsio::PathIoError`].)
    #[error("read {path}: {os}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        os: std::io::Error,
    },
    /// A line is not an address, an IP followed by a port line, or a comment.
    #[error("{path}:{line}: {reason}")]
    BadLine {
        /// The file.
        path: String,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The file lists no tracker.
    #[error("{0}: lists no tracker")]
    Empty(String),
}

/// The trackers listed in a `tracker_info.txt`, in order, each with the
/// public key its line gives after the address, if any.
#[derive(Debug, Clone)]
pub struct TrackerList {
    /// The addresses.
    pub addrs: Vec<SocketAddr>,
    /// The key each line gives (same order), checked at every connection.
    pub keys: Vec<Option<PublicKey>>,
    /// The file and the line each address ends on, for errors.
    path: String,
    lines: Vec<usize>,
}

/// Two lists are the same when they list the same trackers with the same
/// keys, however their files are laid out.
impl PartialEq for TrackerList {
    fn eq(&self, other: &Self) -> bool {
        self.addrs == other.addrs && self.keys == other.keys
    }
}

impl Eq for TrackerList {}

impl TrackerList {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, TrackerInfoError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|os| TrackerInfoError::Read { path: shown.clone(), os })?;
        Self::parse(&text, &shown)
    }

    /// Parses the text of a tracker list; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, TrackerInfoError> {
        let bad = |line: usize, reason: String| TrackerInfoError::BadLine {
            path: path.to_owned(),
            line,
            reason,
        };
        let mut out = Vec::new();
        let mut keys = Vec::new();
        // The line each address ends on, for the checks after.
        let mut at = Vec::new();
        let key_of = |n: usize, word: Option<&&str>| match word {
            None => Ok(None),
            Some(w) => w.parse::<PublicKey>().map(Some).map_err(|e| bad(n, e)),
        };
        // An IP seen on its own line, waiting for its port: (line number, ip).
        let mut pending: Option<(usize, IpAddr)> = None;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some((ip_line, ip)) = pending.take() {
                match (words.len(), words.first().map(|w| w.parse::<u16>())) {
                    (1 | 2, Some(Ok(port))) => {
                        out.push(SocketAddr::new(ip, port));
                        keys.push(key_of(n, words.get(1))?);
                        at.push(n);
                        continue;
                    }
                    _ => {
                        return Err(bad(
                            ip_line,
                            format!(
                                "IP {ip} is not followed by a port line (line {n}: {})",
                                excerpt(line)
                            ),
                        ))
                    }
                }
            }
            let first_addr = words.first().and_then(|w| w.parse::<SocketAddr>().ok());
            match (words.as_slice(), first_addr) {
                ([_] | [_, _], Some(addr)) => {
                    out.push(addr);
                    keys.push(key_of(n, words.get(1))?);
                    at.push(n);
                }
                ([one], None) => {
                    let ip = one.parse::<IpAddr>().map_err(|_| {
                        bad(n, format!("{} is not IP:PORT, IP PORT or an IP", excerpt(line)))
                    })?;
                    pending = Some((n, ip));
                }
                ([ip, port] | [ip, port, _], None) => {
                    let ip = ip
                        .parse::<IpAddr>()
                        .map_err(|_| bad(n, format!("{ip:?} is not an IP address")))?;
                    let port = port
                        .parse::<u16>()
                        .map_err(|_| bad(n, format!("{port:?} is not a port number")))?;
                    out.push(SocketAddr::new(ip, port));
                    keys.push(key_of(n, words.get(2))?);
                    at.push(n);
                }
                _ => {
                    return Err(bad(
                        n,
                        format!(
                            "{} is not IP:PORT, IP PORT or an IP (each optionally followed by \
                             the tracker's key)",
                            excerpt(line)
                        ),
                    ))
                }
            }
        }
        if let Some((n, ip)) = pending {
            return Err(bad(n, format!("IP {ip} has no port line after it")));
        }
        if out.is_empty() {
            return Err(TrackerInfoError::Empty(path.to_owned()));
        }
        // Each tracker once: a tracker listed twice would sync with itself
        // forever.
        // (An IPv4-mapped IPv6 address is its IPv4 address.)
        let same = |a: &SocketAddr, b: &SocketAddr| {
            a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
        };
        for (i, addr) in out.iter().enumerate() {
            if let Some(j) = out[..i].iter().position(|a| same(a, addr)) {
                return Err(bad(at[i], format!("{addr} is listed already, on line {}", at[j])));
            }
        }
        Ok(Self { addrs: out, keys, path: path.to_owned(), lines: at })
    }

    /// Refuses a tracker at port 0 other than tracker number `except`
    /// (1-based): a client or another tracker cannot reach it. (A tracker
    /// started on its own port-0 line takes any free port and prints it,
    /// for scripts.)
    pub fn check_ports(&self, except: Option<usize>) -> Result<(), TrackerInfoError> {
        for (i, addr) in self.addrs.iter().enumerate() {
            if addr.port() == 0 && except != Some(i + 1) {
                return Err(TrackerInfoError::BadLine {
                    path: self.path.clone(),
                    line: self.lines.get(i).copied().unwrap_or(i + 1),
                    reason: format!("{addr}: port 0 is no port to reach a tracker at"),
                });
            }
        }
        Ok(())
    }

    /// A list of addresses with no keys (each is pinned on first use).
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        let keys = vec![None; addrs.len()];
        let lines = (1..=addrs.len()).collect();
        Self { addrs, keys, path: "the tracker list".into(), lines }
    }

    /// The address of tracker `no` (1-based).
    pub fn get(&self, no: usize) -> Option<SocketAddr> {
        no.checked_sub(1).and_then(|i| self.addrs.get(i)).copied()
    }

    /// The key listed for tracker `no` (1-based), if the line gives one.
    pub fn key(&self, no: usize) -> Option<PublicKey> {
        no.checked_sub(1).and_then(|i| self.keys.get(i)).copied().flatten()
    }
}

impl fmt::Display for TrackerList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (a, k) in self.addrs.iter().zip(&self.keys) {
            match k {
                Some(k) => writeln!(f, "{a} {k}")?,
                None => writeln!(f, "{a}")?,
            }
        }
        Ok(())
    }
}

/// A line as an error quotes it: at most 60 characters of it.
fn excerpt(line: &str) -> String {
    match line.char_indices().nth(60) {
        Some((cut, _)) => format!("{:?}…", &line[..cut]),
        None => format!("{line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &TrackerList) -> Vec<String> {
        list.addrs.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn colon_layout() {
        let l = TrackerList::parse("# trackers\n127.0.0.1:5000\n\n127.0.0.1:5001 # second\n", "t")
            .unwrap();
        assert_eq!(addrs(&l), ["127.0.0.1:5000", "127.0.0.1:5001"]);
        assert_eq!(l.get(1).unwrap().port(), 5000);
        assert_eq!(l.get(0), None);
        assert_eq!(l.get(3), None);
    }

    #[test]
    fn space_layout() {
        let l = TrackerList::parse("127.0.0.1 5000\n127.0.0.2\t5001\n", "t").unwrap();
        assert_eq!(addrs(&l), ["127.0.0.1:5000", "127.0.0.2:5001"]);
    }

    #[test]
    fn alternate_lines_layout() {
        let l = TrackerList::parse("127.0.0.1\n5000\n\n127.0.0.1\n5001\n", "t").unwrap();
        assert_eq!(addrs(&l), ["127.0.0.1:5000", "127.0.0.1:5001"]);
    }

    #[test]
    fn ipv6_addresses() {
        let l = TrackerList::parse("[::1]:7000\n::1 7001\n", "t").unwrap();
        assert_eq!(addrs(&l), ["[::1]:7000", "[::1]:7001"]);
    }

    #[test]
    fn keys_after_the_port_in_every_layout() {
        let k = "ab".repeat(32);
        let text = format!("127.0.0.1:1 {k}\n127.0.0.1 2 {k}\n127.0.0.1\n3 {k}\n127.0.0.1:4\n");
        let l = TrackerList::parse(&text, "t").unwrap();
        assert_eq!(addrs(&l), ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"]);
        let key: PublicKey = k.parse().unwrap();
        assert_eq!(l.keys, [Some(key), Some(key), Some(key), None]);
        assert_eq!((l.key(1), l.key(4), l.key(9)), (Some(key), None, None));
        assert_eq!(TrackerList::parse(&l.to_string(), "t").unwrap(), l);
        let e = TrackerList::parse("127.0.0.1:1 nokey\n", "t").unwrap_err();
        assert!(e.to_string().contains("t:1:") && e.to_string().contains("public key"), "{e}");
    }

    #[test]
    fn errors_name_the_line() {
        let e = TrackerList::parse("127.0.0.1:1\nnot-an-address\n", "ti.txt").unwrap_err();
        assert!(e.to_string().starts_with("ti.txt:2:"), "{e}");
        let e = TrackerList::parse("127.0.0.1\n127.0.0.2\n", "t").unwrap_err();
        assert!(e.to_string().starts_with("t:1:"), "{e}");
        let e = TrackerList::parse("127.0.0.1:1\n127.0.0.1\n", "t").unwrap_err();
        assert!(e.to_string().contains("t:2:"), "{e}");
        let e = TrackerList::parse("127.0.0.1 99999\n", "t").unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
        let e = TrackerList::parse("# nothing\n\n", "t").unwrap_err();
        assert!(matches!(e, TrackerInfoError::Empty(_)));
        // The same tracker twice, in any layout, and port 0.
        let e = TrackerList::parse("127.0.0.1:7000\n127.0.0.2 7000\n127.0.0.1\n7000\n", "t")
            .unwrap_err();
        assert_eq!(e.to_string(), "t:4: 127.0.0.1:7000 is listed already, on line 1");
        let e = TrackerList::parse("127.0.0.1:7000\n[::ffff:127.0.0.1]:7000\n", "t").unwrap_err();
        assert!(e.to_string().ends_with("is listed already, on line 1"), "{e}");
        let list = TrackerList::parse("127.0.0.1:7\n\n127.0.0.1:0\n", "t").unwrap();
        let e = list.check_ports(None).unwrap_err();
        assert_eq!(e.to_string(), "t:3: 127.0.0.1:0: port 0 is no port to reach a tracker at");
        assert!(list.check_ports(Some(2)).is_ok(), "tracker 2 itself may take any port");
        assert!(list.check_ports(Some(1)).is_err());
        // A long line is quoted in part.
        let long = "x".repeat(100_000);
        let e = TrackerList::parse(&long, "t").unwrap_err().to_string();
        assert!(e.len() < 200 && e.contains("xxx\"…"), "{e}");
    }
}
