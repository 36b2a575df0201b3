//! Who this tracker is on the network, and how it knows the other trackers.
//!
//! Every connection to a tracker is encrypted and authenticated (Noise XX,
//! `ringshare_engine::secure`). The tracker proves the key pair in its data
//! directory (`tracker.key`, created on first start with mode 0600). A
//! tracker it pulls from must prove the key its line in `tracker_info.txt`
//! gives; a line without a key is pinned on first use in the data
//! directory's `known_trackers`. A tracker pulling from this one must prove
//! the listed key, or the key pinned when this one reached it: an inbound
//! link pins nothing.

use std::path::Path;

use ringshare_engine::secure::{Keypair, PublicKey};
use ringshare_engine::secure_io::{load_or_create_key, KeyFileError, Pins};
use ringshare_engine::tracker_info::TrackerList;

/// The tracker's key file in its data directory.
pub const KEY_FILE: &str = "tracker.key";
/// The other trackers' keys pinned on first use, in the data directory.
pub const PINS_FILE: &str = "known_trackers";

/// This tracker's key pair and the keys it expects of the others.
#[derive(Debug)]
pub struct Links {
    me: Keypair,
    list: TrackerList,
    pins: Pins,
}

impl Links {
    /// The links of a tracker keeping its data in `data_dir`.
    pub fn open(data_dir: &Path, list: TrackerList) -> anyhow::Result<Self> {
        crate::durable::private_dir(data_dir)?;
        let me = load_or_create_key(&data_dir.join(KEY_FILE))?;
        let pins = Pins::load(&data_dir.join(PINS_FILE)).map_err(anyhow::Error::msg)?;
        Ok(Self { me, list, pins })
    }

    /// A tracker with a fresh key and no peers (the demo's).
    pub fn ephemeral() -> Self {
        Self {
            me: Keypair::generate(),
            list: TrackerList::new(Vec::new()),
            pins: Pins::load(Path::new("/nonexistent/ringshare-pins"))
                .expect("a missing pin file is an empty one"),
        }
    }

    /// This tracker's key pair.
    pub fn keypair(&self) -> &Keypair {
        &self.me
    }

    /// The key tracker `no` must prove: the listed one, else the pinned one
    /// (`None` on first contact: it will be pinned).
    pub fn expected(&self, no: u16) -> Option<PublicKey> {
        let no = usize::from(no);
        self.list.key(no).or_else(|| self.pins.get(&pin_name(no)))
    }

    /// The key pinned for tracker `no` when it was first met (not the
    /// listed one).
    pub fn pinned(&self, no: u16) -> Option<PublicKey> {
        self.pins.get(&pin_name(usize::from(no)))
    }

    /// Whether `key` is this tracker's own or one another tracker of the
    /// list must prove (listed or pinned): what the whole state image is
    /// served to (`--dump-state` proves the key in a tracker's data
    /// directory).
    pub fn is_tracker_key(&self, key: PublicKey) -> bool {
        key == self.me.public()
            || (1..=self.list.addrs.len())
                .filter_map(|n| u16::try_from(n).ok())
                .any(|n| self.expected(n) == Some(key))
    }

    /// Checks the key a link claiming to be tracker `no` proved when it
    /// dialled this one: the listed key, else the one pinned when this
    /// tracker reached `no` at its listed address. Never pins: anything
    /// that can send from a listed tracker's address (any process on its
    /// host) would otherwise become that tracker by dialling first, and be
    /// served the whole state.
    pub fn check_inbound(&self, no: u16, got: PublicKey) -> Result<(), String> {
        match self.expected(no) {
            Some(k) if k == got => Ok(()),
            Some(k) if self.list.key(usize::from(no)).is_some() => Err(format!(
                "tracker {no} proved key {got}, not the key {k} the tracker list gives for it"
            )),
            Some(k) => Err(format!(
                "tracker {no} proved key {got}, not its key {k} pinned in this tracker's \
                 {PINS_FILE}: if tracker {no} has a new key (a new data directory), give that \
                 key on its line of the tracker list, or delete its line from {PINS_FILE} and \
                 restart this tracker"
            )),
            None => Err(format!(
                "tracker {no} has not been reached from here yet: its key is pinned when this \
                 tracker reaches it at its listed address (or give its key in the tracker list)"
            )),
        }
    }

    /// Checks the key tracker `no` proved, pinning it on first contact.
    pub fn check(&self, no: u16, got: PublicKey) -> Result<(), String> {
        let n = usize::from(no);
        match self.list.key(n) {
            Some(k) if k == got => Ok(()),
            Some(k) => Err(format!(
                "tracker {no} proved key {got}, not the key {k} the tracker list gives for it"
            )),
            None => self.pins.check_or_pin("tracker", &pin_name(n), got).map_err(|e| e.to_string()),
        }
    }
}

/// Pins of other trackers are by tracker number (their addresses may move).
fn pin_name(no: usize) -> String {
    format!("tracker-{no}")
}

/// Prints the public key of the key file in `data_dir` (creating it if
/// needed): `ringshare-tracker --print-key`.
pub fn print_key(data_dir: &Path) -> Result<PublicKey, KeyFileError> {
    let path = data_dir.join(KEY_FILE);
    let new = !path.exists();
    // Its owner's only, as the tracker makes it ([`crate::durable::private_dir`];
    // an error there shows again as the key is written).
    let _ = crate::durable::private_dir(data_dir);
    let key = load_or_create_key(&path)?.public();
    if new {
        // The tracker has not run yet: its first start is not a restart
        // after losing its data (see [`has_run_before`]).
        let _ = ringshare_engine::fsio::write_atomically(&data_dir.join(UNUSED_KEY_MARKER), b"");
    }
    Ok(key)
}

/// Marks a key made by `--print-key` before the tracker's first start.
pub const UNUSED_KEY_MARKER: &str = "tracker.key.unused";

/// Whether the tracker of `data_dir` has run before: its key file exists
/// and was not just made by `--print-key`. Call before [`Links::open`].
pub fn has_run_before(data_dir: &Path) -> bool {
    data_dir.join(KEY_FILE).exists() && !data_dir.join(UNUSED_KEY_MARKER).exists()
}

/// Forgets the `--print-key` marker once the tracker has started.
pub fn key_used(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(UNUSED_KEY_MARKER));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_keys_are_required_and_unlisted_ones_pinned_on_first_contact() {
        let dir = tempfile::tempdir().unwrap();
        let (two, three, other) = (
            Keypair::generate().public(),
            Keypair::generate().public(),
            Keypair::generate().public(),
        );
        let text = format!("127.0.0.1:1\n127.0.0.1:2 {two}\n127.0.0.1:3\n");
        let list = TrackerList::parse(&text, "t").unwrap();
        let links = Links::open(dir.path(), list.clone()).unwrap();
        // Listed: that key and no other, from the first contact on.
        assert_eq!(links.expected(2), Some(two));
        assert!(links.check(2, two).is_ok());
        assert!(links.check(2, other).unwrap_err().contains("tracker list"));
        // Unlisted: whatever it first proves, then only that.
        assert_eq!(links.expected(3), None);
        assert!(links.check(3, three).is_ok());
        assert_eq!(links.expected(3), Some(three));
        assert!(links.check(3, other).unwrap_err().contains(PINS_FILE));
        // A pull from a tracker with another key says which key it was
        // held to, and how to mend it.
        assert!(links
            .check_inbound(2, other)
            .unwrap_err()
            .ends_with("the tracker list gives for it"));
        let why = links.check_inbound(3, other).unwrap_err();
        assert!(why.contains(&format!("not its key {three} pinned in this tracker's {PINS_FILE}")));
        assert!(
            why.ends_with(&format!("delete its line from {PINS_FILE} and restart this tracker"))
        );
        // The pin and the tracker's own key survive a restart.
        let me = links.keypair().public();
        let again = Links::open(dir.path(), list).unwrap();
        assert_eq!((again.expected(3), again.keypair().public()), (Some(three), me));
    }
}
