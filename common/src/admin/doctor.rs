//! Host checks for an operator (`volume --doctor [KEY=VALUE…]`) and for
//! `Plugin.diagnostics`: each finding says what was checked, what was found, and the fix.
//!
//! Host checks (no device-config needed): the programs the driver runs, kernel RBD and the
//! image features it can map, the sm-plugins whitelist for the legacy driver, the plugin
//! directories. With a device-config: ceph.conf and keyring readable, a key for the user,
//! its cephx key type against this host's Ceph client (aes256k), the monitors answering within the time limit, the pool present, and the SR's image
//! features against what this kernel maps.
//!
//! Paths below `/` can be moved with `CEPHRBD_ROOT` (tests run against an unpacked RPM).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::ceph::cephx::{self, KeyType};
use crate::ceph::{rbd, CephError, Kind};
use crate::config::{DeviceConfig, DEFAULT_FEATURES};
use crate::error::chain;
use crate::host::Host;
use crate::ops::datapath;
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

/// Checks that need no device-config.
pub fn host_checks(host: &Host) -> Vec<Finding> {
    let mut out = Vec::new();
    for tool in ["rbd", "ceph"] {
        out.push(match Program::resolve(tool) {
            Ok(p) => finding(Status::Ok, &format!("program {tool}"), p.path().display().to_string(), None),
            Err(_) => finding(Status::Fail, &format!("program {tool}"), "not installed", Some("install ceph-common")),
        });
    }
    out.push(modes_check(host, &features_of(DEFAULT_FEATURES.iter().copied())));
    out.extend(plugin_dir_checks(&root()));
    out.push(whitelist_check(&root()));
    out
}

fn features_of<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    names.map(str::to_owned).collect()
}

/// Which datapath modes this host can use for images with `features`, and the one
/// `datapath=auto` picks (kernel modules are checked with `modprobe -n`, never loaded).
fn modes_check(host: &Host, features: &[String]) -> Finding {
    let check = "datapath modes";
    let mut usable = Vec::new();
    let mut lines = Vec::new();
    for mode in datapath::MODES {
        match datapath::unusable_for(host, mode, || Ok(features.to_vec()), Duration::from_secs(10), true) {
            Ok(None) => {
                usable.push(mode);
                lines.push(format!("{} usable", mode.name()));
            }
            Ok(Some(why)) => lines.push(format!("{}: {why}", mode.name())),
            Err(e) => lines.push(format!("{}: cannot tell: {}", mode.name(), chain(&e))),
        }
    }
    match usable.first() {
        Some(mode) => finding(
            Status::Ok,
            check,
            format!("auto picks {} for images with {}; {}", mode.name(), features.join(","), lines.join("; ")),
            None,
        ),
        None => finding(
            Status::Fail,
            check,
            lines.join("; "),
            Some("install rbd-nbd (maps any image) and make sure the nbd module loads, or load the rbd module"),
        ),
    }
}

/// The plugin directories and what they must hold.
pub const PLUGIN_DIRS: &[(&str, &str)] = &[
    ("usr/libexec/xapi-storage-script/volume/org.xen.xapi.storage.cephrbd-ng", "volume"),
    ("usr/libexec/xapi-storage-script/datapath/cephrbd", "datapath"),
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
    out.extend(key_type_check(&conn.key_types(), cephx::client_version(Duration::from_secs(10)), &config.ceph_user));
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
                Kind::Keyring if matches!(e, CephError::KeyTypeUnsupported { .. }) => "see the cephx key type check",
                Kind::Keyring => "make the keyring readable and give it the user's key: ceph auth get client.<user>",
                Kind::NoMonitors => "set mon_host in ceph.conf (or device-config mon_host)",
                Kind::ConfUnreadable => "check ceph_conf: the file must exist and be readable",
                _ => "see the error",
            };
            finding(Status::Fail, &check, chain(&e), Some(fix))
        }
    });
    if let Some(features) = &config.image_features {
        out.push(modes_check(host, features));
    }
    out
}

/// The type of the user's key against what this host's Ceph client (`client`) and kernel
/// read (docs/ceph-versions.md §4). No finding when no key file could be read.
fn key_type_check(types: &[KeyType], client: Option<cephx::Version>, user: &str) -> Option<Finding> {
    let check = "cephx key type";
    let version = client.map_or_else(|| "unknown".to_owned(), |(a, b, c)| format!("{a}.{b}.{c}"));
    if types.is_empty() {
        return None;
    }
    let fix = cephx::aes_fix(user);
    Some(if types.contains(&KeyType::Aes256k) {
        if client.is_some_and(cephx::reads_aes256k) {
            finding(
                Status::Warn,
                check,
                format!(
                    "an aes256k key: this host's Ceph client ({version}) reads it, but kernel RBD before Linux 7.0 \
                     cannot use it (datapath krbd fails; auto falls back to rbd-nbd)"
                ),
                Some(&fix),
            )
        } else {
            finding(
                Status::Fail,
                check,
                format!("an aes256k key, which this host's Ceph client ({version}) cannot read: every call fails"),
                Some(&fix),
            )
        }
    } else if types.contains(&KeyType::Aes) {
        finding(
            Status::Ok,
            check,
            format!(
                "aes (every Ceph client and kernel reads it; client {version}). A cluster of Ceph 19.2.6/20.2.4 or \
                 later must allow it: auth_allowed_ciphers includes aes"
            ),
            None,
        )
    } else {
        let found: Vec<String> = types.iter().map(|t| t.name()).collect();
        finding(Status::Warn, check, format!("no aes or aes256k key found ({})", found.join(", ")), None)
    })
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

    /// The modes report follows what the kernel maps (fixture sysfs trees; rbd-nbd is
    /// installed by the lab's install-deps.sh).
    #[test]
    fn the_modes_report_follows_the_kernels_features() {
        let sysfs = std::env::temp_dir().join(format!("cephrbd-doctor-{}", uuid::Uuid::new_v4()));
        let host = Host { id: "test".to_owned(), run_dir: sysfs.join("run"), sysfs: sysfs.clone() };
        let features = features_of(DEFAULT_FEATURES.iter().copied());
        std::fs::create_dir_all(sysfs.join("bus/rbd")).expect("mkdir");
        std::fs::create_dir_all(sysfs.join("module/nbd")).expect("mkdir");
        // A kernel that maps object-map and fast-diff too (Linux ≥ 5.3).
        std::fs::write(sysfs.join("bus/rbd/supported_features"), "0x3d\n").expect("write");
        let f = modes_check(&host, &features);
        assert!(f.status == Status::Ok && f.detail.starts_with("auto picks krbd"), "{f}");
        // A kernel that maps layering only: rbd-nbd takes over.
        std::fs::write(sysfs.join("bus/rbd/supported_features"), "0x1\n").expect("write");
        let f = modes_check(&host, &features);
        assert!(f.detail.starts_with("auto picks nbd") && f.detail.contains("exclusive-lock"), "{f}");
        std::fs::remove_dir_all(sysfs).expect("cleanup");
    }

    /// Issue 15: an aes256k key fails on XCP-ng's clients and says how to fix it.
    #[test]
    fn an_aes256k_key_is_checked_against_the_client() {
        let fail = key_type_check(&[KeyType::Aes256k], Some((14, 2, 21)), "xcp").expect("a finding");
        assert_eq!(fail.status, Status::Fail, "{fail}");
        assert!(
            fail.detail.contains("14.2.21") && fail.fix.as_deref().is_some_and(|f| f.contains("--key_type aes")),
            "{fail}"
        );
        let warn = key_type_check(&[KeyType::Aes256k], Some((20, 2, 4)), "xcp").expect("a finding");
        assert_eq!(warn.status, Status::Warn, "{warn}");
        let ok = key_type_check(&[KeyType::Aes], Some((14, 2, 21)), "xcp").expect("a finding");
        assert_eq!(ok.status, Status::Ok, "{ok}");
        assert!(key_type_check(&[], None, "xcp").is_none());
    }
}
