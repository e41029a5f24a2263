//! Host checks for an operator (`volume --doctor [KEY=VALUE…]`) and for
//! `Plugin.diagnostics`: each finding says what was checked, what was found, and the fix.
//!
//! Host checks (no device-config needed): the programs the driver runs, kernel RBD and the
//! image features it can map, the sm-plugins whitelist for the legacy driver, the plugin
//! directories. With a device-config: ceph.conf and keyring readable, a key for the user,
//! the monitors answering within the time limit, the pool present, and the SR's image
//! features against what this kernel maps.
//!
//! Paths below `/` can be moved with `CEPHRBD_ROOT` (tests run against an unpacked RPM).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::ceph::{krbd, rbd, Kind};
use crate::config::{DeviceConfig, DEFAULT_FEATURES};
use crate::error::chain;
use crate::host::Host;
use crate::process::runner::{Cmd, Program};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, with a caveat.
    Warn,
    /// Broken: something will fail.
    Fail,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How it came out.
    pub status: Status,
    /// What was checked.
    pub check: String,
    /// What was found.
    pub detail: String,
    /// What to do about it (for Warn and Fail).
    pub fix: Option<String>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            Status::Ok => "OK  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        write!(f, "{tag} {}: {}", self.check, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n     fix: {fix}")?;
        }
        Ok(())
    }
}

fn finding(status: Status, check: &str, detail: impl Into<String>, fix: Option<&str>) -> Finding {
    Finding { status, check: check.to_owned(), detail: detail.into(), fix: fix.map(str::to_owned) }
}

/// The root the installed files are looked up under.
pub fn root() -> PathBuf {
    std::env::var_os("CEPHRBD_ROOT").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// RBD feature bits (`/sys/bus/rbd/supported_features`, librbd's RBD_FEATURE_*).
pub const FEATURE_BITS: &[(&str, u64)] = &[
    ("layering", 1),
    ("striping", 2),
    ("exclusive-lock", 4),
    ("object-map", 8),
    ("fast-diff", 16),
    ("deep-flatten", 32),
];

/// Checks that need no device-config.
pub fn host_checks(host: &Host) -> Vec<Finding> {
    let mut out = Vec::new();
    for (tool, needed_for) in [("rbd", None), ("ceph", None), ("qemu-storage-daemon", Some("the qsd datapath"))] {
        out.push(match (Program::resolve(tool), needed_for) {
            (Ok(p), _) => finding(Status::Ok, &format!("program {tool}"), p.path().display().to_string(), None),
            (Err(_), None) => {
                finding(Status::Fail, &format!("program {tool}"), "not installed", Some("install ceph-common"))
            }
            (Err(_), Some(what)) => finding(
                Status::Warn,
                &format!("program {tool}"),
                format!("not installed: {what} cannot run"),
                Some("install qemu-storage-daemon with its rbd block driver, or use datapath=krbd"),
            ),
        });
    }
    out.push(kernel_check(&host.sysfs, &features_of(DEFAULT_FEATURES.iter().copied())));
    out.extend(plugin_dir_checks(&root()));
    out.push(whitelist_check(&root()));
    out
}

fn features_of<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    names.map(str::to_owned).collect()
}

fn kernel_check(sysfs: &Path, features: &[String]) -> Finding {
    let check = "kernel RBD";
    if !krbd::available(sysfs) {
        return finding(
            Status::Warn,
            check,
            "the rbd kernel module is not loaded: the krbd datapath cannot map",
            Some("modprobe rbd, or create SRs with device-config:datapath=qsd"),
        );
    }
    let Some(mask) = krbd::supported_features(sysfs) else {
        return finding(Status::Ok, check, "loaded (supported_features not published)", None);
    };
    let missing: Vec<&String> = features
        .iter()
        .filter(|f| FEATURE_BITS.iter().find(|(n, _)| n == f).is_some_and(|(_, bit)| mask & bit == 0))
        .collect();
    if missing.is_empty() {
        finding(Status::Ok, check, format!("maps image features {} (mask {mask:#x})", features.join(",")), None)
    } else {
        let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        finding(
            Status::Fail,
            check,
            format!("this kernel cannot map images with {} (mask {mask:#x})", names.join(",")),
            Some("set device-config:image_features=layering,exclusive-lock for new SRs, or use datapath=qsd"),
        )
    }
}

/// The plugin directories and what they must hold.
pub const PLUGIN_DIRS: &[(&str, &str)] = &[
    ("usr/libexec/xapi-storage-script/volume/org.xen.xapi.storage.cephrbd-ng", "volume"),
    ("usr/libexec/xapi-storage-script/datapath/cephrbd+krbd", "datapath"),
    ("usr/libexec/xapi-storage-script/datapath/cephrbd+qsd", "datapath"),
];

fn plugin_dir_checks(root: &Path) -> Vec<Finding> {
    let fix = Some("reinstall them: /usr/libexec/cephrbd/install-plugins (then systemctl restart xapi-storage-script)");
    let mut out = Vec::new();
    for (dir, binary) in PLUGIN_DIRS {
        let path = root.join(dir);
        let binary_path = root.join("usr/libexec/cephrbd").join(binary);
        let check =
            format!("plugin directory {}", Path::new(dir).file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
        if !binary_path.is_file() {
            out.push(finding(
                Status::Fail,
                &check,
                format!("{} is missing", binary_path.display()),
                Some("reinstall the cephrbd RPM"),
            ));
            continue;
        }
        let methods =
            Program::at(binary, &binary_path).and_then(|p| Cmd::new(&p, Duration::from_secs(10)).arg("--list").run());
        let methods: Vec<String> = match methods {
            Ok(o) => String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect(),
            Err(e) => {
                out.push(finding(
                    Status::Fail,
                    &check,
                    format!("{} cannot run: {e}", binary_path.display()),
                    Some("reinstall the cephrbd RPM"),
                ));
                continue;
            }
        };
        let broken: Vec<&String> = methods
            .iter()
            .filter(|m| std::fs::canonicalize(path.join(m)).ok() != std::fs::canonicalize(&binary_path).ok())
            .collect();
        out.push(if broken.is_empty() {
            finding(Status::Ok, &check, format!("{} methods linked", methods.len()), None)
        } else {
            let names: Vec<&str> = broken.iter().map(|s| s.as_str()).collect();
            finding(Status::Fail, &check, format!("missing or wrong: {}", names.join(" ")), fix)
        });
    }
    let legacy = root.join("opt/xensource/sm/CephRBDSR");
    out.push(if std::fs::canonicalize(&legacy).is_ok_and(|p| p.is_file()) {
        finding(Status::Ok, "legacy driver", legacy.display().to_string(), None)
    } else {
        finding(
            Status::Fail,
            "legacy driver",
            format!("{} is missing", legacy.display()),
            Some("reinstall the cephrbd RPM"),
        )
    });
    out
}

fn whitelist_check(root: &Path) -> Finding {
    let tool = root.join("usr/libexec/cephrbd/sm-plugins-conf");
    let check = "sm-plugins whitelist";
    if !tool.is_file() {
        return finding(
            Status::Warn,
            check,
            format!("cannot check: {} is missing", tool.display()),
            Some("reinstall the cephrbd RPM"),
        );
    }
    let out = Program::at("sm-plugins-conf", &tool).and_then(|p| {
        Cmd::new(&p, Duration::from_secs(10)).args(["--root", &root.display().to_string(), "--check"]).run()
    });
    match out {
        Ok(o) => finding(Status::Ok, check, String::from_utf8_lossy(&o.stdout).trim().to_owned(), None),
        Err(e) if e.exit_code() == Some(1) => finding(
            Status::Fail,
            check,
            e.stderr().to_owned(),
            Some("run /usr/libexec/cephrbd/sm-plugins-conf, then xe-toolstack-restart"),
        ),
        Err(e) => finding(Status::Warn, check, format!("cannot check: {e}"), Some("reinstall the cephrbd RPM")),
    }
}

/// Checks of one SR's device-config against the cluster.
pub fn config_checks(host: &Host, config: &DeviceConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    for (check, path) in [("ceph.conf", Some(&config.ceph_conf)), ("keyring", config.keyring.as_ref())] {
        let Some(path) = path else { continue };
        out.push(match std::fs::read(path) {
            Ok(_) => finding(Status::Ok, check, format!("{} readable", path.display()), None),
            Err(e) => finding(
                Status::Fail,
                check,
                format!("{}: {e}", path.display()),
                Some("copy it from a Ceph admin node (keyring mode 0600, owned by root)"),
            ),
        });
    }
    if let Err(e) = config.check_keyring() {
        out.push(finding(
            Status::Fail,
            "cephx key",
            e.to_string(),
            Some("ceph auth get client.<user> >> the keyring, or fix ceph_user"),
        ));
    }
    let conn = config.conn();
    let started = Instant::now();
    let check = format!("monitors and pool {}", config.pool);
    out.push(match rbd::namespace_ls(&conn, &config.pool) {
        Ok(namespaces) => finding(
            Status::Ok,
            &check,
            format!("answered in {} ms; {} namespaces", started.elapsed().as_millis(), namespaces.len()),
            None,
        ),
        Err(e) => {
            let fix = match e.kind() {
                Kind::NotFound => {
                    "create the pool (cephrbd never does): ceph osd pool create <pool>; rbd pool init <pool>"
                }
                Kind::PermissionDenied => {
                    "give the user caps: ceph auth caps client.<user> mon 'profile rbd' osd 'profile rbd pool=<pool>'"
                }
                Kind::Unreachable | Kind::TimedOut => {
                    "check mon_host/ceph.conf, the network to the monitors, and the cluster's health"
                }
                Kind::Keyring => "make the keyring readable and give it the user's key: ceph auth get client.<user>",
                Kind::NoMonitors => "set mon_host in ceph.conf (or device-config mon_host)",
                Kind::ConfUnreadable => "check ceph_conf: the file must exist and be readable",
                _ => "see the error",
            };
            finding(Status::Fail, &check, chain(&e), Some(fix))
        }
    });
    if let Some(features) = &config.image_features {
        out.push(kernel_check(&host.sysfs, features));
    }
    out
}

/// `volume --doctor [KEY=VALUE…]`: prints every finding; exit 1 if any failed.
pub fn main(args: impl Iterator<Item = String>) -> ExitCode {
    let mut raw = BTreeMap::new();
    for arg in args {
        match arg.split_once('=') {
            Some((k, v)) => {
                raw.insert(k.to_owned(), v.to_owned());
            }
            None => {
                eprintln!("usage: volume --doctor [KEY=VALUE…]   (device-config keys, e.g. pool=rbd ceph_user=xcp)");
                return ExitCode::from(2);
            }
        }
    }
    let host = Host::from_env();
    let mut findings = host_checks(&host);
    if !raw.is_empty() {
        match DeviceConfig::parse(&raw) {
            Ok(config) => findings.extend(config_checks(&host, &config)),
            Err(e) => findings.push(finding(
                Status::Fail,
                "device-config",
                e.to_string(),
                Some("see README: device-config keys"),
            )),
        }
    }
    let mut report = String::new();
    for f in &findings {
        let _ = writeln!(report, "{f}");
    }
    let failed = findings.iter().filter(|f| f.status == Status::Fail).count();
    let _ = writeln!(report, "{} checks, {failed} failed", findings.len());
    print!("{report}");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_features_are_compared_with_the_images_features() {
        let sysfs = std::env::temp_dir().join(format!("cephrbd-doctor-{}", uuid::Uuid::new_v4()));
        let features = features_of(DEFAULT_FEATURES.iter().copied());
        assert_eq!(kernel_check(&sysfs, &features).status, Status::Warn, "no rbd module");
        std::fs::create_dir_all(sysfs.join("bus/rbd")).expect("mkdir");
        std::fs::write(sysfs.join("bus/rbd/supported_features"), "0x1\n").expect("write");
        let f = kernel_check(&sysfs, &features);
        assert_eq!(f.status, Status::Fail);
        assert!(f.detail.contains("exclusive-lock") && f.fix.is_some(), "{f}");
        // A kernel that maps object-map and fast-diff too (Linux ≥ 5.3).
        std::fs::write(sysfs.join("bus/rbd/supported_features"), "0x3d\n").expect("write");
        assert_eq!(kernel_check(&sysfs, &features).status, Status::Ok);
        let fast_diff = features_of(["layering", "fast-diff"].into_iter());
        assert_eq!(kernel_check(&sysfs, &fast_diff).status, Status::Ok, "0x3d includes bit 16");
        std::fs::remove_dir_all(sysfs).expect("cleanup");
    }
}
