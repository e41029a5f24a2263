//! The last `SR.stat` figures this host got from Ceph, per SR: `<run dir>/sr-<uuid>.stat`.
//!
//! When the cluster does not answer, `SR.stat` reports these with health `Unreachable`
//! instead of zeros: xapi records whatever sizes `SR.stat` returns, and a 0-byte SR is a
//! lie that alarms administrators and misleads placement. Written after every successful
//! stat (atomically: a temporary file renamed into place); a file that cannot be written
//! or read only costs the fallback, never the call.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tracing::warn;
use uuid::Uuid;

use super::Host;

/// What `SR.stat` last reported for an SR while Ceph answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    /// The SR's name.
    pub name: String,
    /// The SR's description.
    pub description: String,
    /// Total bytes.
    pub total_space: i64,
    /// Free bytes.
    pub free_space: i64,
}

fn path(host: &Host, sr: Uuid) -> PathBuf {
    host.run_dir.join(format!("sr-{sr}.stat"))
}

/// Remembers the figures of `sr`; a failure is logged, never returned.
pub fn save(host: &Host, sr: Uuid, figures: &Figures) {
    let file = path(host, sr);
    let tmp = file.with_extension(format!("stat.{}", std::process::id()));
    let written = fs::create_dir_all(&host.run_dir)
        .and_then(|()| fs::write(&tmp, serde_json::to_vec(figures).expect("figures serialize")))
        .and_then(|()| fs::rename(&tmp, &file));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        warn!(file = %file.display(), "cannot keep the SR's figures for when Ceph is unreachable: {e}");
    }
}

/// The last figures of `sr` this host saw, if any.
pub fn load(host: &Host, sr: Uuid) -> Option<Figures> {
    serde_json::from_slice(&fs::read(path(host, sr)).ok()?).ok()
}

/// Forgets the figures of `sr` (SR.destroy).
pub fn forget(host: &Host, sr: Uuid) {
    let _ = fs::remove_file(path(host, sr));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_round_trip_and_go() {
        let host = Host {
            id: "test".to_owned(),
            run_dir: std::env::temp_dir().join(format!("cephrbd-figures-{}", Uuid::new_v4())),
            sysfs: PathBuf::from("/sys"),
        };
        let sr = Uuid::new_v4();
        assert_eq!(load(&host, sr), None);
        let f = Figures { name: "n".to_owned(), description: "d".to_owned(), total_space: 10, free_space: 4 };
        save(&host, sr, &f);
        assert_eq!(load(&host, sr), Some(f));
        forget(&host, sr);
        assert_eq!(load(&host, sr), None);
        let _ = fs::remove_dir_all(&host.run_dir);
    }
}
