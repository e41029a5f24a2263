//! Host-local locks, for the few steps that read, decide, and write across several Ceph
//! objects (reclaiming storage when a volume is destroyed) and for each volume's datapath
//! state. Ceph makes each single write atomic; these locks stop two processes on one host
//! from deciding on the same stale view. xapi runs an SR's volume operations on its master,
//! so host-local is where the concurrency is.
//!
//! A lock is an `flock` on a file of the run dir. A volume's lock file goes when the
//! volume's state goes, so lock files do not pile up with volumes (an SR's stays: one per
//! SR, and it is taken shared too, where removal cannot be made safe). Removing a lock file
//! is safe only while holding its lock exclusively, and a waiter may have opened the file
//! before it was removed: once it gets the lock, it checks that the path still names the
//! file it locked, and starts again on a fresh one otherwise ([`lock_file`]). Two processes
//! can therefore never both hold "the" lock.

use std::fs::{self, File, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::Host;
use crate::error::OpError;

/// A lock on a file, held until dropped.
#[derive(Debug)]
pub struct LockFile {
    path: PathBuf,
    file: File,
}

impl LockFile {
    /// The locked path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file while still holding its (exclusive) lock, then releases it. A
    /// process waiting for it finds the path gone or new, and locks the new file instead.
    pub fn remove(self) {
        let _ = fs::remove_file(&self.path);
        drop(self.file);
    }
}

/// True when `path` still names the file `file` is open on.
fn still_named(path: &Path, file: &File) -> bool {
    match (fs::metadata(path), file.metadata()) {
        (Ok(named), Ok(held)) => named.dev() == held.dev() && named.ino() == held.ino(),
        _ => false,
    }
}

/// Opens (creating it) and exclusively locks `path`, waiting at most `limit`; `holder`
/// names what is locked in the error. If the file was removed or replaced by its previous
/// holder while we waited for it, the lock is taken again on the file the path names now.
pub fn lock_file(path: &Path, limit: Duration, holder: &str) -> Result<LockFile, OpError> {
    lock_file_as(path, limit, holder, false)
}

/// Like [`lock_file`], with a shared lock when `shared` (any number of shared holders, or
/// one exclusive holder).
pub fn lock_file_as(path: &Path, limit: Duration, holder: &str, shared: bool) -> Result<LockFile, OpError> {
    let local = |source| OpError::LocalState { path: path.display().to_string(), source };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|source| OpError::LocalState { path: dir.display().to_string(), source })?;
    }
    let started = Instant::now();
    loop {
        let file = File::options().create(true).truncate(false).write(true).open(path).map_err(local)?;
        loop {
            let attempt = if shared { file.try_lock_shared() } else { file.try_lock() };
            match attempt {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if started.elapsed() < limit => thread::sleep(Duration::from_millis(10)),
                Err(TryLockError::WouldBlock) => return Err(OpError::Locked { sr: holder.to_owned(), waited: limit }),
                Err(TryLockError::Error(e)) => return Err(local(e)),
            }
        }
        if still_named(path, &file) {
            if started.elapsed() > Duration::from_millis(100) {
                // Waiting for another call is not this call's Ceph work.
                crate::process::deadline::restart();
            }
            return Ok(LockFile { path: path.to_path_buf(), file });
        }
        // The previous holder removed it: the lock we hold guards nothing. Again.
    }
}

/// A lock on one SR on this host, held until dropped: exclusive for the calls that read,
/// decide and write across several objects (destroy, resize), shared for the calls that
/// write one key (so they run in parallel with each other, never during a destroy).
#[derive(Debug)]
pub struct SrLock {
    _lock: LockFile,
}

impl SrLock {
    /// Takes the SR's lock exclusively on `host`, waiting at most `limit`.
    pub fn exclusive(host: &Host, sr: Uuid, limit: Duration) -> Result<SrLock, OpError> {
        Self::take(host, sr, limit, false)
    }

    /// Takes the SR's lock shared on `host`, waiting at most `limit`.
    pub fn shared(host: &Host, sr: Uuid, limit: Duration) -> Result<SrLock, OpError> {
        Self::take(host, sr, limit, true)
    }

    fn take(host: &Host, sr: Uuid, limit: Duration, shared: bool) -> Result<SrLock, OpError> {
        let path = host.run_dir.join(format!("sr-{sr}.lock"));
        Ok(SrLock { _lock: lock_file_as(&path, limit, &sr.to_string(), shared)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cephrbd-lock-{}", Uuid::new_v4()));
        fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    /// Shared holders run together; an exclusive one waits for them all.
    #[test]
    fn shared_holders_exclude_an_exclusive_one() {
        let dir = scratch();
        let host = Host { id: "test".to_owned(), run_dir: dir.clone(), sysfs: PathBuf::from("/sys") };
        let sr = Uuid::new_v4();
        let a = SrLock::shared(&host, sr, Duration::from_secs(1)).expect("shared");
        let b = SrLock::shared(&host, sr, Duration::from_secs(1)).expect("a second shared");
        assert!(SrLock::exclusive(&host, sr, Duration::from_millis(50)).is_err());
        drop((a, b));
        SrLock::exclusive(&host, sr, Duration::from_secs(1)).expect("exclusive once they are gone");
        let _ = fs::remove_dir_all(dir);
    }

    /// Removing lock files at release never lets two holders in: many threads (each its own
    /// open file, as separate processes would be) take, hold and remove the same lock.
    #[test]
    fn removal_at_release_keeps_the_lock_exclusive() {
        let dir = scratch();
        let path = dir.join("x.lock");
        let inside = Arc::new(AtomicUsize::new(0));
        let overlaps = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (path, inside, overlaps) = (path.clone(), Arc::clone(&inside), Arc::clone(&overlaps));
                thread::spawn(move || {
                    for _ in 0..150 {
                        let lock = lock_file(&path, Duration::from_secs(30), "x").expect("lock");
                        if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                            overlaps.fetch_add(1, Ordering::SeqCst);
                        }
                        thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                        lock.remove();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two holders at once");
        assert!(!path.exists());
        let _ = fs::remove_dir_all(dir);
    }
}
