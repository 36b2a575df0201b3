//! Bulk transfers, the parts that need no network: which local files a
//! `share` of paths and directory trees means, hashing many files at once,
//! and which of a group's files a `get` of names, directory prefixes and
//! globs selects.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, Result};
use globset::{GlobBuilder, GlobMatcher};
use ringshare_engine::hash::{HashError, HashPool};
use ringshare_engine::meta::FileMeta;
use ringshare_engine::names::{self, NameKind};
use ringshare_engine::proto::FileEntry;

use crate::node::Skipped;

/// A local file to share and its name in the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Where to read it.
    pub path: PathBuf,
    /// Its name in the group: its file name, or its path from the shared
    /// directory's own name on (`photos/2026/a.jpg`).
    pub name: String,
}

/// The files that sharing `paths` means: each regular file given, and every
/// regular file under each directory given, in name order. Symbolic links
/// inside a tree are followed only to regular files inside the same tree;
/// a link to a directory is not followed (no cycles, no escape). Whatever
/// cannot be shared — not UTF-8, a name the rules refuse, a special file, a
/// name given twice (also as two spellings of one name in Unicode), a
/// directory that cannot be read — is skipped with its reason. Names are
/// shared in Unicode normal form C.
pub fn collect_files(paths: &[PathBuf]) -> (Vec<Item>, Vec<Skipped>) {
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    // Each name taken: its item's index, and whether it was spelled so.
    let mut names: std::collections::HashMap<String, (usize, bool)> = Default::default();
    let mut add = |items: &mut Vec<Item>, skipped: &mut Vec<Skipped>, mut item: Item| {
        // Shared under its composed spelling, whatever the file system's:
        // groups take new names in normal form C only.
        let composed = names::nfc(&item.name);
        let spelled_so = composed == item.name;
        item.name = composed;
        if let Err(e) = names::validate(NameKind::File, &item.name) {
            skipped.push(Skipped::new(&item.path, e.to_string()));
            return;
        }
        match names.get_mut(&item.name) {
            None => {
                names.insert(item.name.clone(), (items.len(), spelled_so));
                items.push(item);
            }
            Some((at, taken_spelled_so)) => {
                // Two spellings of one name: the one spelled as it is
                // shared is shared (`get` of that name gives its bytes).
                let twice = |shared: &Item| {
                    format!("the name {} is given twice: {} is shared under it", shared.name, {
                        let p = shared.path.display().to_string();
                        names::escaped_marks(&p).into_owned()
                    })
                };
                if spelled_so && !*taken_spelled_so {
                    *taken_spelled_so = true;
                    let other = std::mem::replace(&mut items[*at], item);
                    let why = twice(&items[*at]);
                    skipped.push(Skipped::new(&other.path, why));
                } else {
                    let why = twice(&items[*at]);
                    skipped.push(Skipped::new(&item.path, why));
                }
            }
        }
    };
    for arg in paths {
        let md = match std::fs::metadata(arg) {
            Ok(md) => md,
            Err(e) => {
                skipped.push(Skipped::new(arg, format!("path not found ({e})")));
                continue;
            }
        };
        let root = match std::fs::canonicalize(arg) {
            Ok(p) => p,
            Err(e) => {
                skipped.push(Skipped::new(arg, format!("resolve: {e}")));
                continue;
            }
        };
        // Named as given: a link to a directory (`photos -> /mnt/p2026`)
        // shares its files as `photos/…`, not under the target's name.
        // (`.` and `..` give no name of their own: the directory's.)
        let Some(own) = arg.file_name().or_else(|| root.file_name()) else {
            skipped.push(Skipped::new(
                arg,
                "has no name to share its files under (give a directory below it)".into(),
            ));
            continue;
        };
        let Some(base) = own.to_str().map(str::to_owned) else {
            skipped.push(Skipped::new(arg, "its name is not valid UTF-8".into()));
            continue;
        };
        if md.is_file() {
            add(&mut items, &mut skipped, Item { path: root, name: base });
            continue;
        }
        if !md.is_dir() {
            skipped.push(Skipped::new(arg, "not a regular file or directory".into()));
            continue;
        }
        let walk = walkdir::WalkDir::new(&root).follow_links(false).min_depth(1);
        for entry in walk.sort_by_file_name() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let at = e.path().unwrap_or(&root).to_owned();
                    let why = e.io_error().map_or_else(|| e.to_string(), ToString::to_string);
                    skipped.push(Skipped::new(&at, why));
                    continue;
                }
            };
            let ft = entry.file_type();
            if ft.is_dir() {
                continue;
            }
            let Some(name) = tree_name(&base, &root, entry.path()) else {
                skipped.push(Skipped::new(entry.path(), "its name is not valid UTF-8".into()));
                continue;
            };
            let path = if ft.is_symlink() {
                match link_target(&root, entry.path()) {
                    Ok(p) => p,
                    Err(why) => {
                        skipped.push(Skipped::new(entry.path(), why));
                        continue;
                    }
                }
            } else if ft.is_file() {
                entry.path().to_owned()
            } else {
                skipped.push(Skipped::new(entry.path(), "not a regular file".into()));
                continue;
            };
            add(&mut items, &mut skipped, Item { path, name });
        }
    }
    // Two paths to one tree (a link to a directory given beside it) walk
    // the same resolved files: each is said once.
    let mut said = std::collections::HashSet::new();
    skipped.retain(|s| said.insert((s.path.clone(), s.reason.clone())));
    (items, skipped)
}

/// `base/a/b` for `root/a/b`, if every component is UTF-8.
fn tree_name(base: &str, root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let mut name = base.to_owned();
    for c in rel.components() {
        name.push('/');
        name.push_str(c.as_os_str().to_str()?);
    }
    Some(name)
}

/// Where a symbolic link inside the tree at `root` leads, if it is a
/// regular file inside the same tree.
fn link_target(root: &Path, link: &Path) -> Result<PathBuf, String> {
    match std::fs::canonicalize(link) {
        Err(e) => Err(format!("a symbolic link that leads nowhere ({e})")),
        Ok(t) if !t.starts_with(root) => {
            Err(format!("a symbolic link out of the tree (to {}): not followed", t.display()))
        }
        Ok(t) if t.is_dir() => Err("a symbolic link to a directory: not followed".into()),
        Ok(t) if t.is_file() => Ok(t),
        Ok(_) => Err("a symbolic link to a special file".into()),
    }
}

/// Hashes every item, several files at once (one per core, each reading
/// and hashing its own pieces, big files' pieces also on `pool`): a tree of
/// small files keeps every core busy, not one per file in turn. Results in
/// the items' order. Once `stop` is set, what is not hashed yet is
/// [`HashError::Stopped`].
pub fn hash_all(
    pool: &HashPool,
    items: Vec<Item>,
    stop: &AtomicBool,
) -> Vec<(Item, Result<FileMeta, HashError>)> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(items.len());
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<Result<FileMeta, HashError>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { return };
                let r = pool.hash_file_unless(&item.path, &item.name, stop);
                out.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
            });
        }
    });
    let out = out.into_inner().unwrap_or_else(|p| p.into_inner());
    items
        .into_iter()
        .zip(out)
        .map(|(item, r)| {
            let r = r.unwrap_or_else(|| Err(HashError::NotAFile(item.path.display().to_string())));
            (item, r)
        })
        .collect()
}

/// Whether a `get` argument is a glob rather than a name or prefix.
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '{'])
}

/// What one `get` argument selects.
#[derive(Debug)]
enum Matcher {
    /// A file of that name, or every file under that directory prefix.
    Name(String),
    /// Every file under that directory prefix only (a name given with a
    /// trailing `/`: `photos/`), not a file of that name.
    Dir(String),
    /// Names the glob matches (`*` stays within a component, `**` crosses).
    Glob(GlobMatcher),
}

/// The files a `get` selects: every file when no pattern is given, else
/// those matched by a name, a directory prefix or a glob.
#[derive(Debug)]
pub struct Selection {
    /// Each pattern as given, and how it matches: as given, and in Unicode
    /// normal form C when that differs (a name typed or pasted from a file
    /// system that decomposes, `cafe\u{301}`, finds `caf\u{e9}`, the form
    /// names are shared in).
    patterns: Vec<(String, Vec<(String, Matcher)>)>,
}

impl Selection {
    /// Parses the patterns; a malformed glob is an error naming it.
    pub fn new(patterns: &[String]) -> Result<Self> {
        let matcher = |p: &str| -> Result<Matcher> {
            Ok(if is_glob(p) {
                let glob = GlobBuilder::new(p)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| anyhow!("bad pattern {p:?}: {e}"))?;
                Matcher::Glob(glob.compile_matcher())
            } else {
                let name = p.trim_end_matches('/');
                names::validate(NameKind::File, name).map_err(|e| {
                    // Named as given (`/photos/`, not the `/photos` checked).
                    let e = match name.len() < p.len() {
                        true => names::validate(NameKind::File, p).err().unwrap_or(e),
                        false => e,
                    };
                    anyhow!("{e}")
                })?;
                if name.len() < p.len() {
                    Matcher::Dir(name.to_owned())
                } else {
                    Matcher::Name(name.to_owned())
                }
            })
        };
        let mut out = Vec::new();
        for p in patterns {
            let mut forms = vec![(p.clone(), matcher(p)?)];
            let composed = names::nfc(p);
            if composed != *p {
                forms.push((composed.clone(), matcher(&composed)?));
            }
            out.push((p.clone(), forms));
        }
        Ok(Self { patterns: out })
    }

    /// The name prefixes to list from the tracker to see every candidate:
    /// one empty prefix (the whole group) when any pattern needs it.
    pub fn list_prefixes(&self) -> Vec<String> {
        if self.patterns.is_empty() {
            return vec![String::new()];
        }
        let mut prefixes: Vec<String> = self
            .patterns
            .iter()
            .flat_map(|(_, forms)| forms)
            .map(|(p, m)| match m {
                Matcher::Name(n) => n.clone(),
                Matcher::Dir(n) => format!("{n}/"),
                Matcher::Glob(_) => {
                    // The literal start of the glob, up to its last '/'.
                    let lit = &p[..p.find(['*', '?', '[', '{', '\\']).unwrap_or(p.len())];
                    lit[..lit.rfind('/').map_or(0, |i| i + 1)].to_owned()
                }
            })
            .collect();
        prefixes.sort();
        // Drop a prefix another one covers.
        let mut kept: Vec<String> = Vec::new();
        for p in prefixes {
            if !kept.iter().any(|k| p.starts_with(k.as_str())) {
                kept.push(p);
            }
        }
        kept
    }

    /// The listed files selected (each once, in name order), and the
    /// patterns that matched none of them.
    pub fn select(&self, listed: Vec<FileEntry>) -> (Vec<FileEntry>, Vec<String>) {
        if self.patterns.is_empty() {
            return (listed, Vec::new());
        }
        let mut hit = vec![false; self.patterns.len()];
        // A glob that is also the exact name of a listed file selects that
        // file only: `names/[ab].txt`, as `ls` shows it, is that file.
        let exact: Vec<Vec<bool>> = self
            .patterns
            .iter()
            .map(|(_, forms)| {
                forms
                    .iter()
                    .map(|(p, m)| {
                        matches!(m, Matcher::Glob(_)) && listed.iter().any(|f| f.name == *p)
                    })
                    .collect()
            })
            .collect();
        let mut chosen: Vec<FileEntry> = Vec::new();
        for f in listed {
            let mut take = false;
            for (i, (_, forms)) in self.patterns.iter().enumerate() {
                let ok = forms.iter().enumerate().any(|(j, (p, m))| match m {
                    Matcher::Name(n) => f.name == *n || names::under_dir(&f.name, n),
                    Matcher::Dir(n) => names::under_dir(&f.name, n),
                    Matcher::Glob(_) if exact[i][j] => f.name == *p,
                    Matcher::Glob(g) => g.is_match(&f.name),
                });
                if ok {
                    hit[i] = true;
                    take = true;
                }
            }
            if take {
                chosen.push(f);
            }
        }
        chosen.sort_by(|a, b| a.name.cmp(&b.name));
        chosen.dedup_by(|a, b| a.name == b.name);
        let missed = self
            .patterns
            .iter()
            .zip(hit)
            .filter(|(_, h)| !h)
            .map(|((p, _), _)| p.clone())
            .collect();
        (chosen, missed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> FileEntry {
        FileEntry { name: name.into(), len: 1, peers: 1 }
    }

    fn names_of(files: &[FileEntry]) -> Vec<&str> {
        files.iter().map(|f| f.name.as_str()).collect()
    }

    fn group() -> Vec<FileEntry> {
        ["a.txt", "photos/2026/a.jpg", "photos/2026/b.png", "photos/x.jpg", "photos2/y.jpg"]
            .into_iter()
            .map(entry)
            .collect()
    }

    #[test]
    fn names_prefixes_and_globs_select() {
        let sel = |p: &[&str]| {
            let s = Selection::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
            let (files, missed) = s.select(group());
            (names_of(&files).iter().map(|s| s.to_string()).collect::<Vec<_>>(), missed)
        };
        assert_eq!(sel(&[]).0.len(), 5);
        assert_eq!(sel(&["a.txt"]).0, ["a.txt"]);
        assert_eq!(sel(&["photos"]).0, ["photos/2026/a.jpg", "photos/2026/b.png", "photos/x.jpg"]);
        assert_eq!(sel(&["photos/"]).0.len(), 3);
        // With a trailing `/` a name is a directory's only: not the file.
        let (files, missed) = sel(&["a.txt/", "photos/x.jpg/"]);
        assert!(files.is_empty(), "{files:?}");
        assert_eq!(missed, ["a.txt/", "photos/x.jpg/"]);
        assert_eq!(sel(&["photos/2026/"]).0, ["photos/2026/a.jpg", "photos/2026/b.png"]);
        assert_eq!(sel(&["photos/**/*.jpg"]).0, ["photos/2026/a.jpg", "photos/x.jpg"]);
        assert_eq!(sel(&["photos/*.jpg"]).0, ["photos/x.jpg"]);
        assert_eq!(sel(&["*.txt", "a.txt"]).0, ["a.txt"], "each file once");
        let (files, missed) = sel(&["nothing", "*.gif", "a.txt"]);
        assert_eq!(files, ["a.txt"]);
        assert_eq!(missed, ["nothing", "*.gif"]);
        assert!(Selection::new(&["../x".to_string()]).is_err());
        assert!(Selection::new(&["a[".to_string()]).is_err());
        // A bad directory is named as given, its trailing `/` kept.
        let e = Selection::new(&["/photos/".to_string()]).err().unwrap().to_string();
        assert!(e.contains("\"/photos/\""), "{e}");
    }

    #[test]
    fn a_listed_name_with_glob_characters_selects_itself() {
        let listed: Vec<FileEntry> =
            ["n/[ab].txt", "n/a.txt", "n/b.txt", "n/x?", "n/xy"].into_iter().map(entry).collect();
        let sel = |p: &str| {
            let s = Selection::new(&[p.to_string()]).unwrap();
            names_of(&s.select(listed.clone()).0).iter().map(|s| s.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(sel("n/[ab].txt"), ["n/[ab].txt"], "the name ls shows, not a glob");
        assert_eq!(sel("n/x?"), ["n/x?"]);
        assert_eq!(sel("n/[a].txt"), ["n/a.txt"], "no such name: a glob");
        assert_eq!(sel("n/x*"), ["n/x?", "n/xy"]);
    }

    #[test]
    fn a_decomposed_name_or_pattern_finds_the_composed_name() {
        let listed: Vec<FileEntry> = ["tree/caf\u{e9}.txt", "tree/na\u{ef}ve/a.txt", "tree/x.txt"]
            .into_iter()
            .map(entry)
            .collect();
        let sel = |p: &str| {
            let s = Selection::new(&[p.to_string()]).unwrap();
            let (chosen, missed) = s.select(listed.clone());
            assert!(missed.is_empty(), "{p:?}");
            let prefixes = s.list_prefixes();
            assert!(chosen.iter().all(|f| prefixes.iter().any(|x| f.name.starts_with(x.as_str()))));
            names_of(&chosen).iter().map(|s| s.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(sel("tree/cafe\u{301}.txt"), ["tree/caf\u{e9}.txt"]);
        assert_eq!(sel("tree/nai\u{308}ve"), ["tree/na\u{ef}ve/a.txt"]);
        assert_eq!(sel("tree/cafe\u{301}*"), ["tree/caf\u{e9}.txt"]);
        assert_eq!(sel("tree/caf\u{e9}.txt"), ["tree/caf\u{e9}.txt"]);
    }

    #[test]
    fn only_the_needed_prefixes_are_listed() {
        let prefixes = |p: &[&str]| {
            Selection::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap()
                .list_prefixes()
        };
        assert_eq!(prefixes(&[]), [""]);
        assert_eq!(prefixes(&["photos/**/*.jpg"]), ["photos/"]);
        assert_eq!(
            prefixes(&["photos/2026/*.jpg", "photos/x.jpg"]),
            ["photos/2026/", "photos/x.jpg"]
        );
        assert_eq!(prefixes(&["photos", "photos/2026/*.jpg"]), ["photos"]);
        assert_eq!(prefixes(&["*.txt", "photos"]), [""]);
    }

    #[test]
    fn a_tree_given_through_a_link_is_named_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("p2026");
        std::fs::create_dir_all(real.join("sub")).unwrap();
        std::fs::write(real.join("sub/a.jpg"), b"a").unwrap();
        std::fs::write(dir.path().join("real.txt"), b"t").unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("photos")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real.txt"), dir.path().join("notes")).unwrap();
        let given = [dir.path().join("photos"), dir.path().join("notes")];
        let (items, skipped) = collect_files(&given);
        assert!(skipped.is_empty(), "{skipped:?}");
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["photos/sub/a.jpg", "notes"]);
        // The tree given again beside the link to it: its files under both
        // names, a file skipped said once (it was said once per path).
        std::os::unix::fs::symlink("/etc/hostname", real.join("out")).unwrap();
        let (items, skipped) = collect_files(&[real.clone(), dir.path().join("photos")]);
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["p2026/sub/a.jpg", "photos/sub/a.jpg"]);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        std::fs::remove_file(real.join("out")).unwrap();
        // The root has no name to put its files under.
        let (items, skipped) = collect_files(&[PathBuf::from("/")]);
        assert!(items.is_empty());
        assert!(
            skipped[0]
                .to_string()
                .ends_with("has no name to share its files under (give a directory below it)"),
            "{skipped:?}"
        );
    }

    #[test]
    fn trees_are_collected_with_their_relative_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("photos");
        std::fs::create_dir_all(root.join("2026/deep")).unwrap();
        std::fs::write(root.join("2026/a.jpg"), b"a").unwrap();
        std::fs::write(root.join("2026/deep/b.jpg"), b"b").unwrap();
        std::fs::write(root.join("top.txt"), b"t").unwrap();
        std::fs::write(root.join("has space.txt"), b"s").unwrap();
        std::os::unix::fs::symlink(root.join("top.txt"), root.join("inside-link")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("outside-link")).unwrap();
        std::os::unix::fs::symlink(root.join("2026"), root.join("dir-link")).unwrap();
        std::os::unix::fs::symlink(root.join("gone"), root.join("dangling")).unwrap();
        let single = dir.path().join("single.bin");
        std::fs::write(&single, b"x").unwrap();
        let missing = dir.path().join("missing");
        let (items, skipped) = collect_files(&[root.clone(), single.clone(), missing]);
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "photos/2026/a.jpg",
                "photos/2026/deep/b.jpg",
                "photos/inside-link",
                "photos/top.txt",
                "single.bin"
            ]
        );
        let root = std::fs::canonicalize(&root).unwrap();
        assert_eq!(items[2].path, root.join("top.txt"), "a link inside the tree reads its target");
        let why = |end: &str| {
            skipped
                .iter()
                .find(|s| s.path.ends_with(end))
                .map(|s| s.reason.clone())
                .unwrap_or_else(|| panic!("{end} not skipped: {skipped:?}"))
        };
        assert!(why("has space.txt").contains("whitespace"));
        assert!(why("outside-link").contains("out of the tree"));
        assert!(why("dir-link").contains("directory"));
        assert!(why("dangling").contains("leads nowhere"));
        assert!(why("missing").contains("not found"));
        assert_eq!(skipped.len(), 5, "{skipped:?}");
    }

    #[test]
    fn names_are_shared_composed_and_two_spellings_of_one_are_one_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cafe\u{301}");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("re\u{301}sume\u{301}.txt"), b"d").unwrap();
        std::fs::write(root.join("r\u{e9}sum\u{e9}.txt"), b"c").unwrap();
        let (items, skipped) = collect_files(std::slice::from_ref(&root));
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["caf\u{e9}/r\u{e9}sum\u{e9}.txt"]);
        // The file is read under its own spelling.
        assert!(items[0].path.exists());
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(skipped[0].reason.contains("given twice"), "{skipped:?}");
        // Beside a file spelled as the name is shared, the other spelling
        // is the one skipped, whichever comes first; the line tells the two
        // apart.
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("cafe\u{301}.txt"), b"decomposed").unwrap();
        std::fs::write(tree.join("caf\u{e9}.txt"), b"composed").unwrap();
        let (items, skipped) = collect_files(std::slice::from_ref(&tree));
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].name, "tree/caf\u{e9}.txt");
        assert_eq!(std::fs::read(&items[0].path).unwrap(), b"composed");
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        let line = skipped[0].to_string();
        assert!(
            line.contains("tree/cafe\\u{301}.txt: the name tree/caf\u{e9}.txt is given twice"),
            "{line}"
        );
    }

    #[test]
    fn many_files_hash_like_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let pool = HashPool::new(2);
        let items: Vec<Item> = (0..40)
            .map(|i| {
                let path = dir.path().join(format!("f{i}"));
                std::fs::write(&path, vec![i as u8; 1000 * i + 7]).unwrap();
                Item { path, name: format!("d/f{i}") }
            })
            .chain(std::iter::once(Item { path: dir.path().join("nope"), name: "d/nope".into() }))
            .collect();
        let out = hash_all(&pool, items.clone(), &AtomicBool::new(false));
        assert_eq!(out.len(), 41);
        for (item, r) in &out[..40] {
            assert_eq!(r.as_ref().unwrap(), &pool.hash_file(&item.path, &item.name).unwrap());
        }
        assert!(out[40].1.is_err());
        let out = hash_all(&pool, items.clone(), &AtomicBool::new(true));
        assert!(out.iter().all(|(_, r)| matches!(r, Err(HashError::Stopped(_)))));
    }
}
