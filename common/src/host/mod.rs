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

/// One host's state directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
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
        Host { run_dir: var("CEPHRBD_RUN_DIR", DEFAULT_RUN_DIR), sysfs: var("CEPHRBD_SYSFS", "/sys") }
    }

    /// Where per-volume datapath state and daemon files live.
    pub fn datapath_dir(&self) -> PathBuf {
        self.run_dir.join("dp")
    }
}
