//! Downloads as the shell sees them: where a download goes and how
//! `show_downloads` prints it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use ringshare_engine::fetch::{Download, Progress, Status};
use ringshare_engine::store::DestDir;

/// One download started from this node.
#[derive(Debug)]
pub struct DownloadEntry {
    /// The group it came from.
    pub group: String,
    /// The file's name in the group.
    pub name: String,
    /// Where it goes.
    pub dest: PathBuf,
    /// The download, or how it ended once let go of.
    pub fetch: Fetch,
    /// Why it was stopped by this node (logout), if it was.
    pub paused: Option<String>,
    /// `dest` spelled one way ([`dest_key`]).
    pub dest_key: PathBuf,
    /// Set by a `stop_share` of its file while it runs: it finishes, but
    /// is not registered, recorded or served as a share.
    pub unshared: Arc<std::sync::atomic::AtomicBool>,
}

/// `dest` spelled one way: two paths are the same path (`Path`'s `==`,
/// component by component) exactly when their keys are the same bytes.
/// Comparing keys is a `memcmp`; comparing paths parsed both again each
/// time: 2.8 % of the getter's samples in a bulk get running 128 files.
pub fn dest_key(dest: &Path) -> PathBuf {
    dest.components().collect()
}

/// A download as an entry holds it.
#[derive(Debug)]
pub enum Fetch {
    /// Running, or ended and not let go of yet.
    Held(Arc<Download>),
    /// Ended and let go of ([`DownloadEntry::let_go_if_ended`]): where it
    /// stood at its end. Its part file's descriptors are closed.
    Ended(Progress),
}

impl DownloadEntry {
    /// The download, unless it ended and was let go of.
    pub fn download(&self) -> Option<&Arc<Download>> {
        match &self.fetch {
            Fetch::Held(d) => Some(d),
            Fetch::Ended(_) => None,
        }
    }

    /// Whether it is still fetching.
    pub fn is_running(&self) -> bool {
        self.paused.is_none() && self.download().is_some_and(|d| d.status() == Status::Running)
    }

    /// Lets go of the download once it has ended (complete, failed, or
    /// paused by this node), keeping where it stood for `show_downloads`.
    /// An ended download held three descriptors of its file (the part
    /// file, its `O_DIRECT` twin, what served it while it ran) for as long
    /// as the shell listed it: a shell ran out of descriptors after a few
    /// hundred downloads, and a file deleted after its download, or no
    /// longer shared, kept its disk space.
    pub fn let_go_if_ended(&mut self) {
        if let Fetch::Held(d) = &self.fetch {
            if !self.is_running() {
                self.fetch = Fetch::Ended(d.progress());
            }
        }
    }

    /// The `show_downloads` line.
    pub fn line(&self) -> String {
        let p = match &self.fetch {
            Fetch::Held(d) => d.progress(),
            Fetch::Ended(p) => p.clone(),
        };
        match &self.paused {
            Some(why) => format!("[F] [{}] {}  {why}", self.group, self.name),
            None => format_line(&self.group, &self.name, &p),
        }
    }
}

/// `[D] [group] name  42%  123.4 MB/s  3 peers`, `[C] [group] name` or
/// `[F] [group] name  reason`.
pub fn format_line(group: &str, name: &str, p: &Progress) -> String {
    match &p.status {
        Status::Complete => format!("[C] [{group}] {name}"),
        Status::Failed(why) => format!("[F] [{group}] {name}  {why}"),
        Status::Running => {
            let pct = if p.total == 0 { 100.0 } else { p.verified as f64 * 100.0 / p.total as f64 };
            let s = if p.peers == 1 { "" } else { "s" };
            format!(
                "[D] [{group}] {name}  {:.0}%  {:.1} MB/s  {} peer{s}",
                pct.floor(),
                p.rate / 1e6,
                p.peers
            )
        }
    }
}

/// Something is already at a download's destination: a file is never
/// overwritten.
#[derive(Debug, thiserror::Error)]
#[error("destination {} already exists", .0.display())]
pub struct DestExists(pub PathBuf);

impl DestExists {
    /// Whether `e` says a download's destination is taken (this error, or
    /// the part file's own check).
    pub fn is(e: &anyhow::Error) -> bool {
        e.downcast_ref::<Self>().is_some()
            || matches!(
                e.downcast_ref::<ringshare_engine::store::StoreError>(),
                Some(ringshare_engine::store::StoreError::Exists(_))
            )
    }
}

/// Directories a bulk fetch has already found to be directories (not
/// symbolic links, not files) or made itself, so that each is looked at
/// once rather than once for every file under it (three `statx` of a
/// small file's five, most of them lookups of names not there yet).
///
/// Only a directory no other user can swap for a symbolic link is taken
/// as it was: one whose parent this user owns and no group or other may
/// write (a fetch's own `mkdir` under the usual umask makes such parents).
/// Any other is looked at every time, as every directory is when off
/// (the default; [`KnownDirs::remembering`] turns it on). A directory this
/// user removes in the middle of the fetch is not made again: the files
/// under it fail, and the same command run again fetches them.
///
/// Remembering, it also keeps the directories it made, for
/// [`KnownDirs::remove_empty_made`].
#[derive(Debug, Default)]
pub struct KnownDirs {
    seen: Option<std::collections::HashMap<PathBuf, bool>>,
    made: Vec<PathBuf>,
    /// The destinations given (directories named by the user: opened by
    /// path, links followed), and those held open.
    roots: std::collections::HashMap<PathBuf, Option<Arc<DestDir>>>,
    /// Directories under a destination held open for the downloads into
    /// them ([`KnownDirs::dir`]), when remembering.
    open: std::collections::HashMap<PathBuf, Arc<DestDir>>,
}

/// Most directories a remembering [`KnownDirs`] holds open (fewer under a
/// low limit on open files: an eighth of it).
const MOST_OPEN_DIRS: u64 = 512;

impl KnownDirs {
    /// Remembers the directories it is told about.
    pub fn remembering() -> Self {
        Self {
            seen: Some(std::collections::HashMap::new()),
            made: Vec::new(),
            roots: std::collections::HashMap::new(),
            open: std::collections::HashMap::new(),
        }
    }

    pub fn remembers(&self) -> bool {
        self.seen.is_some()
    }

    /// Records `dir`, just made for a download (when remembering).
    fn made(&mut self, dir: &Path) {
        if self.remembers() {
            self.made.push(dir.to_owned());
        }
    }

    /// `create_dir_all(dir)`, recording each directory it makes (when
    /// remembering).
    pub fn make_all(&mut self, dir: &Path) -> std::io::Result<()> {
        let missing = missing_dirs(dir);
        std::fs::create_dir_all(dir)?;
        // Shallowest first, as made: removed in the reverse order.
        for d in missing.iter().rev() {
            self.made(d);
        }
        Ok(())
    }

    /// Removes the directories it made that are empty now, deepest first,
    /// and forgets them: a fetch that failed (its part files removed) or
    /// was refused leaves no empty directories behind. One holding
    /// anything (a fetched file, a part file to resume, the user's own) is
    /// left alone: `rmdir` removes only an empty one.
    pub fn remove_empty_made(&mut self) {
        for dir in std::mem::take(&mut self.made).iter().rev() {
            // Through its parent held open: a directory on the path
            // replaced by a link does not make it remove another.
            let removed = self.dir_of(dir).is_ok_and(|p| std::fs::remove_dir(p.at(dir)).is_ok());
            if removed {
                if let Some(m) = self.seen.as_mut() {
                    m.remove(dir);
                }
            }
        }
        // A directory removed is not made in again through its old handle.
        self.open.clear();
        self.roots.values_mut().for_each(|d| *d = None);
    }

    /// Records `dir` as a destination the user named: opened by its
    /// path, links followed ([`KnownDirs::dir`]).
    fn root(&mut self, dir: &Path) {
        self.roots.entry(dir.to_owned()).or_insert(None);
    }

    /// Directory `dir`, held open ([`DestDir`]): a destination the user
    /// named is opened by its path; a directory under one from its
    /// parent's open directory, never through a symbolic link
    /// ([`StoreError::Replaced`]), so that a directory replaced mid-fetch
    /// by a link to elsewhere gets nothing. Remembering, each is opened
    /// once.
    ///
    /// [`StoreError::Replaced`]: ringshare_engine::store::StoreError::Replaced
    pub fn dir(&mut self, dir: &Path) -> Result<Arc<DestDir>, ringshare_engine::store::StoreError> {
        if let Some(Some(d)) = self.roots.get(dir) {
            return Ok(Arc::clone(d));
        }
        if let Some(d) = self.open.get(dir) {
            return Ok(Arc::clone(d));
        }
        let under = !self.roots.contains_key(dir)
            && self.roots.keys().any(|r| dir.starts_with(r) && dir != r.as_path());
        let d = match dir.parent() {
            Some(parent) if under => Arc::new(self.dir(parent)?.child(dir)?),
            _ => Arc::new(DestDir::open(dir)?),
        };
        if self.remembers() {
            if let Some(slot) = self.roots.get_mut(dir) {
                *slot = Some(Arc::clone(&d));
            } else {
                let most = MOST_OPEN_DIRS.min(ringshare_engine::store::open_files_limit() / 8);
                if self.open.len() as u64 >= most {
                    self.open.clear();
                }
                self.open.insert(dir.to_owned(), Arc::clone(&d));
            }
        }
        Ok(d)
    }

    /// The directory a download to `path` makes its files in, held open
    /// ([`KnownDirs::dir`]).
    pub fn dir_of(
        &mut self,
        path: &Path,
    ) -> Result<Arc<DestDir>, ringshare_engine::store::StoreError> {
        self.dir(path.parent().unwrap_or(Path::new("")))
    }

    /// Whether `dir` was found a directory and still must be one: its
    /// parent was found to be only this user's to change.
    fn knows(&self, dir: &Path) -> bool {
        let Some(m) = &self.seen else { return false };
        m.contains_key(dir) && dir.parent().is_some_and(|p| m.get(p) == Some(&true))
    }

    /// Whether the destination `dest` itself was found a directory (a
    /// symbolic link to one included: it is the user's own choice).
    fn knows_dest(&self, dest: &Path) -> bool {
        self.seen.as_ref().is_some_and(|m| m.contains_key(dest))
    }

    /// Records directory `dir`, whose metadata is `md`: whether only this
    /// user can change its entries.
    fn learn(&mut self, dir: &Path, md: &std::fs::Metadata) {
        use std::os::unix::fs::MetadataExt;
        if let Some(m) = self.seen.as_mut() {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let me = unsafe { libc::geteuid() };
            m.insert(dir.to_owned(), md.uid() == me && md.mode() & 0o022 == 0);
        }
    }
}

/// `dir` and the directories above it that are not there, deepest first:
/// what `create_dir_all(dir)` would make.
pub fn missing_dirs(dir: &Path) -> Vec<PathBuf> {
    dir.ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && std::fs::symlink_metadata(d).is_err())
        .map(Path::to_path_buf)
        .collect()
}

/// The path a download of `name` to `dest` writes: inside `dest` when it is
/// a directory (a name with directories, `photos/a.jpg`, gets them made
/// there, see [`path_in_dir`]), else `dest` itself, whose directory must
/// exist.
pub fn resolve_dest(dest: &str, name: &str) -> Result<PathBuf> {
    resolve(dest, name, &mut KnownDirs::default(), true)
}

/// [`resolve_dest`] for a download about to create its part file, with the
/// directories already looked at in `known`. The path itself is not looked
/// at: the part file's creation (`PartFile::open`) refuses a path that is
/// taken, with the same error ([`DestExists::is`]).
pub fn resolve_dest_known(dest: &str, name: &str, known: &mut KnownDirs) -> Result<PathBuf> {
    resolve(dest, name, known, false)
}

fn resolve(dest: &str, name: &str, known: &mut KnownDirs, look: bool) -> Result<PathBuf> {
    // An empty word (`''` in the shell) names no place: it was taken for a
    // file named "" in the working directory, whose final move failed.
    anyhow::ensure!(!dest.is_empty(), "the destination path is empty");
    let d = Path::new(dest);
    // A trailing `/` says a directory: made if missing (as a bulk get's
    // DEST is), not taken for a file's path.
    if dest.ends_with('/') && !d.exists() {
        known
            .make_all(d)
            .with_context(|| format!("create the destination directory {}", d.display()))?;
    }
    let is_dir = known.knows_dest(d)
        || match std::fs::metadata(d) {
            Ok(md) if md.is_dir() => {
                known.learn(d, &md);
                true
            }
            _ => false,
        };
    if is_dir {
        let path = dirs_made_for(d, name, known)?;
        if look && std::fs::symlink_metadata(&path).is_ok() {
            return Err(DestExists(path).into());
        }
        return Ok(path);
    }
    let path = d.to_owned();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    known.root(path.parent().unwrap_or(Path::new("")));
    if !parent.is_dir() {
        if std::fs::symlink_metadata(&parent).is_ok() {
            bail!("destination directory {} is not a directory", parent.display());
        }
        bail!("destination directory {} does not exist", parent.display());
    }
    if look && path.exists() {
        return Err(DestExists(path).into());
    }
    Ok(path)
}

/// Where file `name` (a checked relative path, see
/// [`ringshare_engine::names`]) goes under directory `dir`: its directories
/// are made as needed; an existing one that is a symbolic link or not a
/// directory is refused (the file would land outside `dir`), and so is an
/// existing file at the path (a different file is never overwritten).
pub fn path_in_dir(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dirs_made_for(dir, name, &mut KnownDirs::default())?;
    if std::fs::symlink_metadata(&path).is_ok() {
        return Err(DestExists(path).into());
    }
    Ok(path)
}

/// [`path_in_dir`] without looking at the path itself.
fn dirs_made_for(dir: &Path, name: &str, known: &mut KnownDirs) -> Result<PathBuf> {
    ringshare_engine::names::validate(ringshare_engine::names::NameKind::File, name)?;
    known.root(dir);
    let mut path = dir.to_owned();
    let mut parts = name.split('/').peekable();
    while let Some(part) = parts.next() {
        path.push(part);
        if parts.peek().is_none() {
            break;
        }
        if known.knows(&path) {
            continue;
        }
        // Looked at and made through its parent held open.
        let parent = known.dir_of(&path)?;
        let at = parent.at(&path);
        match std::fs::symlink_metadata(&at) {
            Ok(md) if md.is_dir() => known.learn(&path, &md),
            Ok(md) if md.file_type().is_symlink() => {
                bail!(
                    "{} is a symbolic link: {name} would be written outside {}",
                    path.display(),
                    dir.display()
                )
            }
            Ok(_) => bail!("{} is not a directory: cannot write {name} under it", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::create_dir(&at) {
                    Ok(()) => known.made(&path),
                    Err(_) if at.is_dir() => {}
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("create directory {}", path.display()))
                    }
                }
                if known.remembers() {
                    // Its mode is the umask's: looked at once, as made.
                    if let Ok(md) = std::fs::symlink_metadata(&at) {
                        if md.is_dir() {
                            known.learn(&path, &md);
                        }
                    }
                }
            }
            Err(e) => return Err(e).with_context(|| format!("inspect {}", path.display())),
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory under the destination replaced by a symbolic link
    /// mid-fetch: what goes under it is made in the directory held open
    /// (moved away), a directory first looked at after the swap is refused,
    /// and the clean-up removes nothing through the link.
    #[test]
    fn a_directory_replaced_by_a_link_gets_nothing_through_it() {
        let tmp = tempfile::tempdir().unwrap();
        let (dest, elsewhere) = (tmp.path().join("dest"), tmp.path().join("elsewhere"));
        std::fs::create_dir_all(dest.join("old")).unwrap();
        std::fs::create_dir_all(elsewhere.join("s/made")).unwrap();
        std::fs::create_dir_all(elsewhere.join("old")).unwrap();
        let d = dest.to_str().unwrap();
        let mut known = KnownDirs::remembering();
        let f = resolve_dest_known(d, "s/made/f", &mut known).unwrap();
        known.dir_of(&f).unwrap();
        // `dest/s` goes, a link to elsewhere in its place.
        std::fs::rename(dest.join("s"), tmp.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dest.join("s")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dest.join("old/s")).unwrap();
        // Under the directory held open: made there.
        let g = resolve_dest_known(d, "s/made/new/g", &mut known).unwrap();
        known.dir_of(&g).unwrap();
        assert!(tmp.path().join("moved/made/new").is_dir());
        assert!(!elsewhere.join("s/made/new").exists());
        // Looked at first after a swap: refused.
        let err = resolve_dest_known(d, "old/s/x", &mut known).unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        // The clean-up removes what it made, where it made it.
        known.remove_empty_made();
        assert!(!tmp.path().join("moved/made/new").exists());
        assert!(elsewhere.join("s/made").is_dir() && elsewhere.join("old").is_dir());
    }

    /// Two destinations are the same by their keys' bytes exactly when
    /// they are the same `Path`, however they are spelled.
    #[test]
    fn dest_keys_are_equal_exactly_when_paths_are() {
        let spellings = [
            "a/b", "a//b", "a/b/", "./a/b", "a/./b", "/a/b", "//a/b", "a/b/c", "a", "a/b/.",
            "a/../b", "../a/b", ".", "",
        ];
        for x in spellings {
            for y in spellings {
                let same = Path::new(x) == Path::new(y);
                let keys = dest_key(Path::new(x)).as_os_str() == dest_key(Path::new(y));
                assert_eq!(keys, same, "{x:?} against {y:?}");
            }
        }
    }

    fn progress(status: Status, verified: u64, peers: usize) -> Progress {
        Progress { total: 1000, verified, peers, rate: 2_500_000.0, status }
    }

    #[test]
    fn lines_follow_the_documented_format() {
        assert_eq!(
            format_line("g", "f.bin", &progress(Status::Running, 425, 3)),
            "[D] [g] f.bin  42%  2.5 MB/s  3 peers"
        );
        assert_eq!(
            format_line("g", "f.bin", &progress(Status::Running, 0, 1)),
            "[D] [g] f.bin  0%  2.5 MB/s  1 peer"
        );
        assert_eq!(
            format_line("g", "f.bin", &progress(Status::Complete, 1000, 0)),
            "[C] [g] f.bin"
        );
        assert_eq!(
            format_line("g", "f.bin", &progress(Status::Failed("no peer".into()), 10, 0)),
            "[F] [g] f.bin  no peer"
        );
    }

    #[test]
    fn destination_rules() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(resolve_dest(d, "a.bin").unwrap(), dir.path().join("a.bin"));
        let explicit = format!("{d}/renamed.bin");
        assert_eq!(resolve_dest(&explicit, "a.bin").unwrap(), dir.path().join("renamed.bin"));
        std::fs::write(dir.path().join("a.bin"), b"x").unwrap();
        assert!(resolve_dest(d, "a.bin").unwrap_err().to_string().contains("already exists"));
        let empty = resolve_dest("", "a.bin").unwrap_err().to_string();
        assert_eq!(empty, "the destination path is empty");
        let missing = format!("{d}/no/such/dir/x");
        assert!(resolve_dest(&missing, "a.bin")
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
        let under_a_file = format!("{d}/a.bin/x");
        assert!(resolve_dest(&under_a_file, "a.bin")
            .unwrap_err()
            .to_string()
            .ends_with("a.bin is not a directory"));
        // A trailing `/`: a directory, made if missing.
        let new_dir = format!("{d}/new/dir/");
        assert_eq!(resolve_dest(&new_dir, "a.bin").unwrap(), dir.path().join("new/dir/a.bin"));
        assert!(dir.path().join("new/dir").is_dir());
    }

    #[test]
    fn names_with_directories_stay_under_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let p = resolve_dest(d, "photos/2026/a.jpg").unwrap();
        assert_eq!(p, dir.path().join("photos/2026/a.jpg"));
        assert!(dir.path().join("photos/2026").is_dir());
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let e = resolve_dest(d, "link/x.bin").unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let e = resolve_dest(d, "file/x.bin").unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        for bad in ["../x", "/etc/passwd", "a/../../x", "a//b"] {
            assert!(path_in_dir(dir.path(), bad).is_err(), "{bad}");
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_bulk_fetch_looks_once_at_directories_only_this_user_can_change() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let at = |p: &str| dir.path().join(p);
        let mode = |p: &str, m: u32| {
            std::fs::set_permissions(at(p), std::fs::Permissions::from_mode(m)).unwrap()
        };
        std::fs::create_dir_all(at("a/b")).unwrap();
        std::fs::create_dir_all(at("open/c")).unwrap();
        mode("a", 0o755);
        mode("open", 0o777);
        let mut known = KnownDirs::remembering();
        for name in ["a/b/x.bin", "open/c/x.bin", "new/d/x.bin"] {
            assert_eq!(resolve_dest_known(d, name, &mut known).unwrap(), at(name));
        }
        assert!(at("new/d").is_dir());
        // `a/b` is in a directory only this user may change: not looked at
        // again (removed, it is not made again).
        std::fs::remove_dir(at("a/b")).unwrap();
        assert_eq!(resolve_dest_known(d, "a/b/y.bin", &mut known).unwrap(), at("a/b/y.bin"));
        assert!(!at("a/b").exists());
        // `open/c` is in a directory others may write: looked at every
        // time, so a symbolic link put in its place is refused.
        let outside = tempfile::tempdir().unwrap();
        std::fs::remove_dir(at("open/c")).unwrap();
        std::os::unix::fs::symlink(outside.path(), at("open/c")).unwrap();
        let e = resolve_dest_known(d, "open/c/y.bin", &mut known).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        // Off (the shell's downloads): every directory looked at each time.
        let mut off = KnownDirs::default();
        resolve_dest_known(d, "a/b/y.bin", &mut off).unwrap();
        assert!(at("a/b").is_dir());
        // What a first look refuses is refused again, not remembered.
        std::os::unix::fs::symlink(outside.path(), at("link")).unwrap();
        for _ in 0..2 {
            let e = resolve_dest_known(d, "link/x.bin", &mut known).unwrap_err().to_string();
            assert!(e.contains("symbolic link"), "{e}");
        }
        // A file, or a dangling link, at the path itself is left to the
        // part file's creation to refuse (one look fewer); `resolve_dest`
        // looks.
        std::fs::write(at("a/b/z.bin"), b"z").unwrap();
        assert!(resolve_dest_known(d, "a/b/z.bin", &mut known).is_ok());
        assert!(DestExists::is(&resolve_dest(d, "a/b/z.bin").unwrap_err()));
        std::os::unix::fs::symlink(at("nowhere"), at("a/b/dangling.bin")).unwrap();
        assert!(DestExists::is(&resolve_dest(d, "a/b/dangling.bin").unwrap_err()));
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
