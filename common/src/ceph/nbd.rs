//! rbd-nbd: librbd in a userspace daemon, served to the kernel as `/dev/nbdN`. Maps images
//! with any feature librbd knows (journaling included), where kernel RBD cannot; needs the
//! `nbd` kernel module (in XCP-ng's dom0: xapi's own NBD client uses it) and the `rbd-nbd`
//! program (packaged beside ceph-common in Ceph's el7 repositories).
//!
//! `rbd-nbd map` forks the daemon and returns once the device is ready, printing its path.
//! Each mapping is one daemon, one Ceph client: fencing one never touches another.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;

use super::{CephError, Conn, ImageSpec};
use crate::process::runner::{CommandError, Program};

/// The program, resolved once per process.
pub fn program() -> Result<Program, CommandError> {
    static CELL: OnceLock<Result<Program, String>> = OnceLock::new();
    CELL.get_or_init(|| Program::resolve("rbd-nbd").map_err(|e| e.to_string()))
        .clone()
        .map_err(|_| CommandError::NotFound { program: "rbd-nbd" })
}

/// True when this kernel has the nbd driver loaded (`/sys/module/nbd`, below a sysfs root).
pub fn available(sysfs: &Path) -> bool {
    sysfs.join("module/nbd").is_dir()
}

/// One mapping, as `rbd-nbd list-mapped --format json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Mapping {
    /// The daemon's pid.
    #[serde(default)]
    pub pid: i64,
    /// The pool.
    pub pool: String,
    /// The namespace ("" for the default one).
    #[serde(default)]
    pub namespace: String,
    /// The image.
    pub image: String,
    /// The snapshot, `-` for the image head.
    #[serde(default)]
    pub snap: String,
    /// The device (`/dev/nbdN`).
    pub device: String,
}

impl Mapping {
    /// True when this mapping is of `image` (its head when `snap` is `None`).
    pub fn is_of(&self, image: &ImageSpec) -> bool {
        let snap = image.snap.as_deref().unwrap_or("-");
        self.pool == image.pool && self.namespace == image.namespace && self.image == image.image && self.snap == snap
    }
}

/// Every mapping rbd-nbd daemons hold on this host.
pub fn mappings(conn: &Conn) -> Result<Vec<Mapping>, CephError> {
    let program = program().map_err(|source| CephError::Failed { source })?;
    conn.json_of(&program, "rbd-nbd mappings", &["list-mapped"], "[]")
}

/// `rbd-nbd map [--read-only] <spec>`: the device it made.
pub fn map(conn: &Conn, image: &ImageSpec, read_only: bool) -> Result<PathBuf, CephError> {
    let program = program().map_err(|source| CephError::Failed { source })?;
    let spec = image.to_string();
    let mut args = vec!["map"];
    if read_only {
        args.push("--read-only");
    }
    args.push(&spec);
    let out = conn.run_program(&program, &format!("image {spec}"), &args)?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// `rbd-nbd unmap <device>`: the daemon exits and the device is released.
pub fn unmap(conn: &Conn, device: &Path) -> Result<(), CephError> {
    let program = program().map_err(|source| CephError::Failed { source })?;
    let device = device.display().to_string();
    conn.run_program(&program, &format!("device {device}"), &["unmap", &device]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_are_matched_to_their_image() {
        let listed: Vec<Mapping> = serde_json::from_str(
            r#"[{"id":0,"pid":4242,"pool":"rbd","namespace":"n","image":"v-1","snap":"-","device":"/dev/nbd0"},
                {"id":1,"pid":4243,"pool":"rbd","namespace":"n","image":"v-1","snap":"s-2","device":"/dev/nbd1"}]"#,
        )
        .expect("parses");
        let head = ImageSpec { pool: "rbd".into(), namespace: "n".into(), image: "v-1".into(), snap: None };
        let snap = ImageSpec { snap: Some("s-2".into()), ..head.clone() };
        assert!(listed[0].is_of(&head) && !listed[0].is_of(&snap));
        assert!(listed[1].is_of(&snap) && !listed[1].is_of(&head));
    }
}
