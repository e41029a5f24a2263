//! Kernel RBD: finding mappings in sysfs, mapping and unmapping with `rbd device`.
//!
//! The sysfs root is a parameter so the lookup is unit-tested against a fixture tree
//! (`/sys/bus/rbd/devices/<id>/{pool,pool_ns,name,current_snap,client_id}`; the device is
//! `/dev/rbd<id>`). Mappings use `-o noshare`: each has its own Ceph client, so fencing one
//! (blocklisting its address) never touches another volume mapped on the same host.

use std::fs;
use std::path::{Path, PathBuf};

use std::time::Duration;

use super::{CephError, Conn};
use crate::process::runner::{Cmd, Program};

/// RBD feature bits, as `/sys/bus/rbd/supported_features` and librbd number them
/// (`RBD_FEATURE_*` in ceph/ceph `src/include/rbd/features.h`).
pub const FEATURE_BITS: &[(&str, u64)] = &[
    ("layering", 1),
    ("striping", 2),
    ("exclusive-lock", 4),
    ("object-map", 8),
    ("fast-diff", 16),
    ("deep-flatten", 32),
    ("journaling", 64),
    ("data-pool", 128),
    ("operations", 256),
];

/// The features of `features` this kernel cannot map (`mask`: its supported features); a
/// feature whose bit cephrbd does not know is counted as unmappable.
pub fn unmappable(features: &[String], mask: u64) -> Vec<String> {
    features
        .iter()
        .filter(|f| FEATURE_BITS.iter().find(|(n, _)| n == f).is_none_or(|(_, bit)| mask & bit == 0))
        .cloned()
        .collect()
}

/// Loads kernel module `module` (`modprobe`, within `limit`) unless sysfs already shows it
/// (`present`); with `dry_run`, only checks that it could be loaded (`modprobe -n`). A
/// module that cannot be loaded is [`CephError::KernelModule`].
pub fn load_module(module: &'static str, present: bool, limit: Duration, dry_run: bool) -> Result<(), CephError> {
    if present {
        return Ok(());
    }
    let program = Program::resolve("modprobe").map_err(|source| CephError::Failed { source })?;
    let args: &[&str] = if dry_run { &["-n", module] } else { &[module] };
    match Cmd::new(&program, limit).args(args).run() {
        Ok(_) => Ok(()),
        Err(source) if source.timed_out() => Err(CephError::Failed { source }),
        Err(source) => Err(CephError::KernelModule { module, source }),
    }
}

/// Where the kernel lists RBD devices, below a sysfs root.
const DEVICES: &str = "bus/rbd/devices";

/// One kernel RBD mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The device id (`N` of `/dev/rbdN`).
    pub id: String,
    /// The pool.
    pub pool: String,
    /// The namespace ("" for the default one).
    pub namespace: String,
    /// The image.
    pub image: String,
    /// The snapshot, `None` for the image head.
    pub snap: Option<String>,
    /// The Ceph client id of the mapping (`client.4567` → 4567).
    pub client: Option<u64>,
}

impl Mapping {
    /// The block device.
    pub fn device(&self) -> PathBuf {
        PathBuf::from(format!("/dev/rbd{}", self.id))
    }
}

fn read(dir: &Path, file: &str) -> Option<String> {
    fs::read_to_string(dir.join(file)).ok().map(|s| s.trim().to_owned())
}

/// True when this host has the kernel RBD driver loaded.
pub fn available(sysfs: &Path) -> bool {
    sysfs.join("bus/rbd").is_dir()
}

/// The image features this kernel can map (`/sys/bus/rbd/supported_features`, a hex mask).
pub fn supported_features(sysfs: &Path) -> Option<u64> {
    let text = read(&sysfs.join("bus/rbd"), "supported_features")?;
    u64::from_str_radix(text.trim_start_matches("0x"), 16).ok()
}

/// Every mapping the kernel has.
pub fn mappings(sysfs: &Path) -> Vec<Mapping> {
    let Ok(entries) = fs::read_dir(sysfs.join(DEVICES)) else { return Vec::new() };
    let mut out: Vec<Mapping> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let dir = e.path();
            let snap = read(&dir, "current_snap")?;
            Some(Mapping {
                id: e.file_name().to_string_lossy().into_owned(),
                pool: read(&dir, "pool")?,
                namespace: read(&dir, "pool_ns").unwrap_or_default(),
                image: read(&dir, "name")?,
                snap: (snap != "-").then_some(snap),
                client: read(&dir, "client_id").and_then(|c| c.trim_start_matches("client").parse().ok()),
            })
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// The mapping of `pool/namespace/image[@snap]`, if the kernel has one.
pub fn find(sysfs: &Path, pool: &str, namespace: &str, image: &str, snap: Option<&str>) -> Option<Mapping> {
    mappings(sysfs)
        .into_iter()
        .find(|m| m.pool == pool && m.namespace == namespace && m.image == image && m.snap.as_deref() == snap)
}

/// What `rbd device map` prints when the kernel has no RBD driver and `modprobe rbd`
/// fails (captured from rbd 16.2 on a kernel without the module); it then ends with
/// `map failed: (2) No such file or directory`, which must not read as a missing image.
pub const MODULE_MISSING: &str = "failed to load rbd kernel module";

/// `rbd device map --options=noshare[,ro]`: returns the device path. A kernel without the RBD
/// driver is [`CephError::KernelModule`], with its fix.
pub fn map(conn: &Conn, spec: &str, read_only: bool) -> Result<PathBuf, CephError> {
    let options = if read_only { "--options=noshare,ro" } else { "--options=noshare" };
    let mut args = vec!["device", "map", options];
    if read_only {
        args.push("--read-only");
    }
    args.push(spec);
    let out = conn.rbd(&format!("image {spec}"), &args).map_err(module_missing)?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Recognises a missing kernel module in a failed map.
fn module_missing(err: CephError) -> CephError {
    if !err.command().is_some_and(|c| c.stderr().contains(MODULE_MISSING)) {
        return err;
    }
    match err.into_command() {
        Ok(source) => CephError::KernelModule { module: "rbd", source },
        Err(err) => err,
    }
}

/// `rbd device unmap`; with `force`, also a device still open or whose client was fenced
/// (`--options=force`: its pending I/O fails).
pub fn unmap(conn: &Conn, device: &Path, force: bool) -> Result<(), CephError> {
    let device = device.display().to_string();
    let mut args = vec!["device", "unmap"];
    if force {
        args.push("--options=force");
    }
    args.push(&device);
    conn.rbd(&format!("device {device}"), &args).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs tree as kernel 4.19 lays it out.
    fn fixture() -> PathBuf {
        let root = std::env::temp_dir().join(format!("cephrbd-sysfs-{}", uuid::Uuid::new_v4()));
        for (id, pool, ns, name, snap, client) in [
            ("0", "rbd", "", "other", "-", "client4100"),
            ("3", "rbd", "cephrbd-x", "v-1", "-", "client4187"),
            ("5", "rbd", "cephrbd-x", "v-1", "s-2", "client4190"),
        ] {
            let dir = root.join(DEVICES).join(id);
            fs::create_dir_all(&dir).expect("mkdir");
            for (file, value) in
                [("pool", pool), ("pool_ns", ns), ("name", name), ("current_snap", snap), ("client_id", client)]
            {
                fs::write(dir.join(file), format!("{value}\n")).expect("write");
            }
        }
        fs::write(root.join("bus/rbd/supported_features"), "0x3d\n").expect("write");
        root
    }

    #[test]
    fn finds_the_mapping_of_an_image_and_of_a_snapshot() {
        let root = fixture();
        assert!(available(&root));
        let head = find(&root, "rbd", "cephrbd-x", "v-1", None).expect("mapped");
        assert_eq!(head.device(), PathBuf::from("/dev/rbd3"));
        assert_eq!(head.client, Some(4187));
        let snap = find(&root, "rbd", "cephrbd-x", "v-1", Some("s-2")).expect("mapped");
        assert_eq!(snap.id, "5");
        assert_eq!(find(&root, "rbd", "cephrbd-y", "v-1", None), None, "namespaces are told apart");
        assert_eq!(find(&root, "rbd", "", "other", None).map(|m| m.id), Some("0".to_owned()));
        assert_eq!(supported_features(&root), Some(0x3d));
        fs::remove_dir_all(root).expect("cleanup");
    }

    /// Issue 14 item 8: `rbd device map` on a kernel without the rbd module, as captured
    /// here (rbd 16.2.15, kernel 6.18 without modules), is a missing module, not a missing
    /// image.
    #[test]
    fn a_missing_module_is_named_with_its_fix() {
        use crate::process::runner::{CommandError, Status};
        let stderr = "modinfo: ERROR: Module rbd not found.\nmodprobe: FATAL: Module rbd not found in directory /lib/modules/6.18.44-fc-v669\nrbd: failed to load rbd kernel module (1)\nrbd: sysfs write failed\nIn some cases useful info is found in syslog - try \"dmesg | tail\".\nrbd: map failed: (2) No such file or directory";
        let failed = |stderr: &str| CommandError::Failed {
            program: "rbd",
            command: "rbd device map rbd/x".to_owned(),
            status: Status::Exit(2),
            stderr: stderr.to_owned(),
        };
        let classified = CephError::NotFound { what: "image rbd/x".to_owned(), source: failed(stderr) };
        let err = module_missing(classified);
        assert_eq!(err.kind(), crate::ceph::Kind::KernelModule);
        assert!(err.to_string().contains("modprobe rbd"), "{err}");
        let other = CephError::NotFound {
            what: "image rbd/x".to_owned(),
            source: failed("rbd: map failed: (2) No such file or directory"),
        };
        assert_eq!(module_missing(other).kind(), crate::ceph::Kind::NotFound);
    }

    #[test]
    fn a_vanished_device_or_missing_driver_is_not_an_error() {
        let root = fixture();
        fs::remove_dir_all(root.join(DEVICES).join("3")).expect("rm");
        assert_eq!(find(&root, "rbd", "cephrbd-x", "v-1", None), None);
        fs::remove_dir_all(&root).expect("cleanup");
        assert!(!available(&root));
        assert!(mappings(&root).is_empty());
    }
}
