//! What this host holds of each volume: one JSON file per volume,
//! `<run dir>/dp/<volume>.json`, read and written only under that volume's lock
//! (`<volume>.lock`, removed with the state: see [`Held`]). The datapath operations keep it; their reaper repairs it after a
//! crash.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::lock::{lock_file, LockFile};
use super::Host;
use crate::error::OpError;

/// How a volume reaches this host: chosen at its first attach here, kept until the host
/// holds nothing of it any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Kernel RBD: `/dev/rbdN`.
    Krbd,
    /// rbd-nbd: librbd in a daemon, `/dev/nbdN`.
    Nbd,
    /// qemu-storage-daemon: librbd in a daemon, an NBD export on a unix socket.
    Qsd,
}

impl Mode {
    /// The word for it (also the device-config policy that forces it).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Krbd => "krbd",
            Mode::Nbd => "nbd",
            Mode::Qsd => "qsd",
        }
    }
}

/// The activation of a volume on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Active {
    /// The domain that activated it.
    pub domain: String,
    /// Read-only (snapshot or `activate_readonly`).
    pub read_only: bool,
    /// The writer lock this host holds on the image (read-write activations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
}

/// What this host holds of one volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The URI of the first attach.
    pub uri: String,
    /// The mode.
    pub mode: Mode,
    /// The domains holding an attach (the reference count).
    #[serde(default)]
    pub domains: BTreeSet<String>,
    /// Block-device modes: the device, once mapped. Kept after the last detach when its
    /// unmap failed: the reaper retries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Block-device modes: set while a map is under way (a crash in between leaves it for
    /// the reaper to find).
    #[serde(default)]
    pub mapping: bool,
    /// The Ceph client id of this host's mapping or daemon of the image, when known: the
    /// writer a takeover by another host must fence, named in the writer lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<u64>,
    /// The activation, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<Active>,
}

impl Attachment {
    /// True when the host holds nothing of the volume any more.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty() && self.device.is_none() && !self.mapping && self.active.is_none()
    }
}

fn local(path: &Path) -> impl Fn(std::io::Error) -> OpError + '_ {
    move |source| OpError::LocalState { path: path.display().to_string(), source }
}

/// One volume's state file, locked for as long as this value lives. When it is released
/// and the host holds nothing of the volume any more (no state file), the lock file goes
/// too, so the run dir does not fill with the locks of volumes long gone.
#[derive(Debug)]
pub struct Held {
    path: PathBuf,
    lock: Option<LockFile>,
}

impl Held {
    /// Takes volume `volume`'s lock on `host`, waiting at most `limit`.
    pub fn open(host: &Host, volume: Uuid, limit: Duration) -> Result<Held, OpError> {
        let dir = host.datapath_dir();
        let lock = lock_file(&dir.join(format!("{volume}.lock")), limit, &format!("volume {volume}"))?;
        Ok(Held { path: dir.join(format!("{volume}.json")), lock: Some(lock) })
    }

    /// The state, if the host holds anything of the volume.
    pub fn load(&self) -> Option<Attachment> {
        let text = fs::read_to_string(&self.path).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes the state (atomically), or removes it when nothing is held any more.
    pub fn save(&self, state: &Attachment) -> Result<(), OpError> {
        if state.is_empty() {
            return match fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(local(&self.path)(e)),
                _ => Ok(()),
            };
        }
        let tmp = self.path.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec(state).expect("state serializes")).map_err(local(&tmp))?;
        fs::rename(&tmp, &self.path).map_err(local(&self.path))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(lock) = self.lock.take() {
            if self.path.exists() {
                drop(lock);
            } else {
                lock.remove();
            }
        }
    }
}

/// Every volume this host has state, a lock or daemon files for.
pub fn volumes(host: &Host) -> BTreeSet<Uuid> {
    let Ok(entries) = fs::read_dir(host.datapath_dir()) else { return BTreeSet::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name.split_once('.').map_or(name.as_str(), |(id, _)| id).to_owned();
            Uuid::try_parse(&id).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14 item 9: a volume's lock file goes when its state goes.
    #[test]
    fn the_lock_file_goes_with_the_state() {
        let run_dir = std::env::temp_dir().join(format!("cephrbd-held-{}", Uuid::new_v4()));
        let host = Host { id: "test".to_owned(), run_dir: run_dir.clone(), sysfs: PathBuf::from("/sys") };
        let files = || -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(host.datapath_dir())
                .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            names.sort();
            names
        };
        let volume = Uuid::new_v4();
        // Looked at, nothing held: nothing left.
        drop(Held::open(&host, volume, Duration::from_secs(1)).expect("lock"));
        assert_eq!(files(), Vec::<String>::new());
        // Held: state and lock stay between calls.
        let held = Held::open(&host, volume, Duration::from_secs(1)).expect("lock");
        let mut state = Attachment {
            uri: "u".to_owned(),
            mode: Mode::Qsd,
            domains: ["1".to_owned()].into_iter().collect(),
            device: None,
            mapping: false,
            client: None,
            active: None,
        };
        held.save(&state).expect("save");
        drop(held);
        assert_eq!(files(), [format!("{volume}.json"), format!("{volume}.lock")]);
        // Released: both go.
        let held = Held::open(&host, volume, Duration::from_secs(1)).expect("lock");
        state.domains.clear();
        held.save(&state).expect("save");
        drop(held);
        assert_eq!(files(), Vec::<String>::new());
        let _ = fs::remove_dir_all(run_dir);
    }
}
