//! File helpers every durable record shares: an I/O error that names what
//! was done to which file, and the atomic replace of a small file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Raises this process's soft limit on open files to its hard limit (often
/// 1024 against 524288) and returns the limit now in force (`u64::MAX` if
/// unknown): a node keeps every file it serves open, a tracker a
/// descriptor per connection.
pub fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write only `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return u64::MAX;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

/// An I/O error, with what was being done and to which file.
///
/// Its message ends with the OS error's, which it therefore does not also
/// give as its `source`: an error chain printed whole (`{:#}`, as every
/// binary prints its `error:` line) said the OS error twice.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {os}")]
pub struct PathIoError {
    /// What was being done.
    pub what: &'static str,
    /// The file.
    pub path: String,
    /// The OS error.
    pub os: io::Error,
}

impl PathIoError {
    /// For `map_err`: the error of doing `what` to `path`.
    pub fn at<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |os| Self { what, path: path.display().to_string(), os }
    }
}

/// `path` with `suffix` appended to its last component (`a.bin` + `.part`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Replaces `dest` with `bytes` so that a crash leaves either the old or
/// the new content: writes a new `<dest>.tmp…` (never an existing file
/// there, never through a link), fsyncs it, renames it over `dest` and
/// fsyncs the directory. The file is its owner's to read only (mode 0600:
/// records of what a node shares, a tracker's state). Returns the new
/// file, open for writing.
pub fn write_atomically(dest: &Path, bytes: &[u8]) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut tmp = with_suffix(dest, ".tmp");
    let mut tries = 0;
    let mut f = loop {
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => break f,
            // Somebody's file, a link, or a temporary a crash left: another
            // name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => {
                tries += 1;
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tmp = with_suffix(dest, &format!(".tmp.{}.{n}", std::process::id()));
            }
            Err(e) => return Err(e),
        }
    };
    // A failure (a full disk) takes the temporary away again: each try
    // makes a new one, and those left filled a tracker's disk for good.
    if let Err(e) =
        f.write_all(bytes).and_then(|()| f.sync_all()).and_then(|()| fs::rename(&tmp, dest))
    {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        // The rename fails: a directory is where the file goes.
        let dest = dir.path().join("record");
        fs::create_dir(dest.join("")).unwrap();
        fs::write(dest.join("x"), b"x").unwrap();
        for _ in 0..3 {
            assert!(write_atomically(&dest, b"content").is_err());
        }
        let left: Vec<_> =
            fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, [std::ffi::OsString::from("record")]);
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("record");
        fs::write(&dest, b"old").unwrap();
        write_atomically(&dest, b"new content").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new content");
        assert!(!dir.path().join("record.tmp").exists());
        // A file or a link already at the temporary's name is left alone.
        fs::write(dir.path().join("record.tmp"), b"mine").unwrap();
        std::os::unix::fs::symlink("target", dir.path().join("record.tmp.x")).unwrap();
        write_atomically(&dest, b"newer").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"newer");
        assert_eq!(fs::read(dir.path().join("record.tmp")).unwrap(), b"mine");
        assert!(!dir.path().join("target").exists());
        let err = PathIoError::at("write", &dest)(io::Error::other("boom"));
        assert_eq!(err.to_string(), format!("write {}: boom", dest.display()));
        // Said once: the message carries the OS error, so no source repeats it.
        assert!(std::error::Error::source(&err).is_none());
    }
}
