//! Host-local locks, for the few steps that read, decide, and write across several Ceph
//! objects (reclaiming storage when a volume is destroyed). Ceph makes each single write
//! atomic; these locks stop two processes on one host from deciding on the same stale
//! view. xapi runs an SR's volume operations on its master, so host-local is where the
//! concurrency is.

use std::fs::{self, File, TryLockError};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::error::OpError;

/// Where lock files live; `CEPHRBD_RUN_DIR` overrides it (tests).
pub fn run_dir() -> PathBuf {
    std::env::var_os("CEPHRBD_RUN_DIR").map_or_else(|| PathBuf::from("/run/cephrbd"), PathBuf::from)
}

/// An exclusive lock on one SR, held until dropped.
#[derive(Debug)]
pub struct SrLock {
    _file: File,
}

impl SrLock {
    /// Takes the SR's lock, waiting at most `limit`.
    pub fn acquire(sr: Uuid, limit: Duration) -> Result<SrLock, OpError> {
        let dir = run_dir();
        let local = |path: &PathBuf| {
            let path = path.display().to_string();
            move |source| OpError::LocalState { path, source }
        };
        fs::create_dir_all(&dir).map_err(local(&dir))?;
        let path = dir.join(format!("sr-{sr}.lock"));
        let file = File::options().create(true).truncate(false).write(true).open(&path).map_err(local(&path))?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(SrLock { _file: file }),
                Err(TryLockError::WouldBlock) if started.elapsed() < limit => thread::sleep(Duration::from_millis(10)),
                Err(TryLockError::WouldBlock) => return Err(OpError::Locked { sr: sr.to_string(), waited: limit }),
                Err(TryLockError::Error(e)) => return Err(local(&path)(e)),
            }
        }
    }
}
