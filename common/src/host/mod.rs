//! State this host keeps between calls: locks ([`lock`]), what it holds of each volume
//! ([`attachments`]) and the last figures of each SR ([`figures`]), all under one run
//! directory that is cleared at reboot, like the mappings and daemons it describes.
//!
//! Operations receive a [`Host`] rather than reading the environment, so two "hosts" (two
//! run directories) can share one machine in tests.

pub mod attachments;
pub mod figures;
pub mod lock;

use std::path::PathBuf;

/// The default run directory.
pub const DEFAULT_RUN_DIR: &str = "/run/cephrbd";

/// One host's identity and state directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// What names this host to the others (in the writer lock a volume's activation takes):
    /// `CEPHRBD_HOST_ID`, else the XCP-ng installation uuid, else the host name.
    pub id: String,
    /// Where locks, attachments and daemon files live (`/run/cephrbd`).
    pub run_dir: PathBuf,
    /// The sysfs root the kernel's RBD devices are read from (`/sys`).
    pub sysfs: PathBuf,
}

impl Host {
    /// This host as the environment describes it: `CEPHRBD_RUN_DIR` and `CEPHRBD_SYSFS`
    /// override the defaults (tests use them to run two hosts on one machine).
    pub fn from_env() -> Host {
        let var =
            |name: &str, default: &str| std::env::var_os(name).map_or_else(|| PathBuf::from(default), PathBuf::from);
        Host { id: host_id(), run_dir: var("CEPHRBD_RUN_DIR", DEFAULT_RUN_DIR), sysfs: var("CEPHRBD_SYSFS", "/sys") }
    }

    /// Where per-volume datapath state and daemon files live.
    pub fn datapath_dir(&self) -> PathBuf {
        self.run_dir.join("dp")
    }
}

/// This host's id (see [`Host::id`]): one word, no spaces.
fn host_id() -> String {
    let word = |s: &str| s.split_whitespace().next().unwrap_or_default().to_owned();
    if let Some(id) = std::env::var("CEPHRBD_HOST_ID").ok().filter(|v| !v.trim().is_empty()) {
        return word(&id);
    }
    let inventory = std::fs::read_to_string("/etc/xensource-inventory").unwrap_or_default();
    let installation = inventory
        .lines()
        .find_map(|l| l.strip_prefix("INSTALLATION_UUID="))
        .map(|v| v.trim().trim_matches('\'').to_owned());
    if let Some(uuid) = installation.filter(|u| !u.is_empty()) {
        return word(&uuid);
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    if name.trim().is_empty() {
        "unknown-host".to_owned()
    } else {
        word(&name)
    }
}
