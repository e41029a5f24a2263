//! Host-local locks, for the few steps that read, decide, and write across several Ceph
//! objects (reclaiming storage when a volume is destroyed) and for each volume's datapath
//! state. Ceph makes each single write atomic; these locks stop two processes on one host
//! from deciding on the same stale view. xapi runs an SR's volume operations on its master,
//! so host-local is where the concurrency is.

use std::fs::{self, File, TryLockError};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::Host;
use crate::error::OpError;

/// Opens (creating it) and exclusively locks `path`, waiting at most `limit`; `holder`
/// names what is locked in the error. The lock is held until the file is dropped.
pub fn lock_file(path: &Path, limit: Duration, holder: &str) -> Result<File, OpError> {
    lock_file_as(path, limit, holder, false)
}

/// Like [`lock_file`], with a shared lock when `shared` (any number of shared holders, or
/// one exclusive holder).
pub fn lock_file_as(path: &Path, limit: Duration, holder: &str, shared: bool) -> Result<File, OpError> {
    let local = |source| OpError::LocalState { path: path.display().to_string(), source };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|source| OpError::LocalState { path: dir.display().to_string(), source })?;
    }
    let file = File::options().create(true).truncate(false).write(true).open(path).map_err(local)?;
    let started = Instant::now();
    loop {
        let attempt = if shared { file.try_lock_shared() } else { file.try_lock() };
        match attempt {
            Ok(()) => {
                if started.elapsed() > Duration::from_millis(100) {
                    // Waiting for another call is not this call's Ceph work.
                    crate::process::deadline::restart();
                }
                return Ok(file);
            }
            Err(TryLockError::WouldBlock) if started.elapsed() < limit => thread::sleep(Duration::from_millis(10)),
            Err(TryLockError::WouldBlock) => return Err(OpError::Locked { sr: holder.to_owned(), waited: limit }),
            Err(TryLockError::Error(e)) => return Err(local(e)),
        }
    }
}

/// A lock on one SR on this host, held until dropped: exclusive for the calls that read,
/// decide and write across several objects (destroy, resize), shared for the calls that
/// write one key (so they run in parallel with each other, never during a destroy).
#[derive(Debug)]
pub struct SrLock {
    _file: File,
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
        Ok(SrLock { _file: lock_file_as(&path, limit, &sr.to_string(), shared)? })
    }
}
