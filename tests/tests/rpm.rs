//! The RPM as a host would get it: its file list, the glibc floor of its binaries, the
//! plugin directories its %post creates, the sm-plugins drop-in, and Plugin.Query plus an
//! SR lifecycle through the installed symlinks against the test cluster.
//!
//! `scripts/test` builds the RPM (`scripts/build-rpm`) and names it in `CEPHRBD_RPM`.

// An integration-test crate is all tests; the lint is for test code mixed into the library.
#![allow(clippy::tests_outside_test_module)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cephrbd_tests::xapi::{run_driver, Requests};
use cephrbd_tests::{scratch_dir, Lab, Plugin, TestSr};
use serde_json::json;

/// The RPM under test. Without one these tests fail: they never pass untested.
fn rpm() -> PathBuf {
    std::env::var_os("CEPHRBD_RPM").map(PathBuf::from).unwrap_or_else(|| {
        panic!("CEPHRBD_RPM is not set: scripts/test builds the RPM and sets it (or run scripts/build-rpm and set it)")
    })
}

/// Unpacks the RPM's payload into a fresh root, as `rpm --root` would lay it out.
fn unpack(rpm: &Path) -> PathBuf {
    let root = scratch_dir("rpmroot");
    let mut rpm2cpio = Command::new("rpm2cpio").arg(rpm).stdout(Stdio::piped()).spawn().expect("rpm2cpio");
    let status = Command::new("cpio")
        .args(["-idm", "--quiet"])
        .current_dir(&root)
        .stdin(rpm2cpio.stdout.take().expect("pipe"))
        .status()
        .expect("cpio");
    assert!(status.success() && rpm2cpio.wait().expect("wait").success(), "unpack failed");
    root
}

fn run(program: &Path, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    assert!(out.status.success(), "{} {args:?}: {}", program.display(), String::from_utf8_lossy(&out.stderr));
}

/// The fault-injection variables (`common`'s `fault-injection` feature).
const INJECTION_HOOKS: &[&str] = &["CEPHRBD_CRASH_AFTER", "CEPHRBD_PANIC"];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The binaries the test suite runs do carry the hooks (so the RPM check below can fail).
#[test]
fn test_binaries_carry_the_injection_hooks() {
    for (binary, hooks) in
        [("volume", &INJECTION_HOOKS[..1]), ("datapath", &INJECTION_HOOKS[..1]), ("CephRBDSR", INJECTION_HOOKS)]
    {
        let bytes = std::fs::read(cephrbd_tests::binary(binary)).expect("read binary");
        for hook in hooks {
            assert!(contains(&bytes, hook.as_bytes()), "{binary} built for the tests lacks {hook}");
        }
    }
}

#[test]
fn ceph_rpm_installs_working_plugins() {
    let rpm = rpm();
    let listing = Command::new("rpm").args(["-qlp"]).arg(&rpm).output().expect("rpm -qlp");
    let files = String::from_utf8_lossy(&listing.stdout).into_owned();
    for path in [
        "/usr/libexec/cephrbd/volume",
        "/usr/libexec/cephrbd/datapath",
        "/usr/libexec/cephrbd/CephRBDSR",
        "/opt/xensource/sm/CephRBDSR",
        "/etc/xapi.conf.d/zz-cephrbd.conf",
    ] {
        assert!(files.lines().any(|l| l == path), "{path} missing from the RPM:\n{files}");
    }
    let root = unpack(&rpm);
    let lib = root.join("usr/libexec/cephrbd");
    for binary in ["volume", "datapath", "CephRBDSR"] {
        let out = Command::new("objdump").arg("-T").arg(lib.join(binary)).output().expect("objdump");
        let text = String::from_utf8_lossy(&out.stdout);
        let newest = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .filter_map(|w| w.strip_prefix("GLIBC_"))
            .filter_map(|v| {
                let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
                Some((parts.next()?, parts.next().unwrap_or(0)))
            })
            .max()
            .expect("glibc symbols");
        assert!(newest <= (2, 17), "{binary} needs GLIBC_{}.{}: it would not start on CentOS 7", newest.0, newest.1);
        // The crash and panic hooks are for the test suite's binaries only.
        let bytes = std::fs::read(lib.join(binary)).expect("read binary");
        for hook in INJECTION_HOOKS {
            assert!(!contains(&bytes, hook.as_bytes()), "{binary} in the RPM carries the test hook {hook}");
        }
    }

    // What %post does, twice (an upgrade refreshes in place), then the plugins.
    let install = lib.join("install-plugins");
    run(&install, &["--root", &root.display().to_string()]);
    run(&install, &["--root", &root.display().to_string()]);
    let scripts = root.join("usr/libexec/xapi-storage-script");
    assert_eq!(std::fs::read_dir(lib.join("staging")).expect("staging").count(), 0, "no leftovers");
    let volume_dir = scripts.join("volume/org.xen.xapi.storage.cephrbd-ng");
    let query = Plugin::at(&volume_dir).call("Plugin.Query", json!({})).ok();
    assert_eq!(query["plugin"], "cephrbd-ng");
    for scheme in ["cephrbd", "cephrbd+krbd", "cephrbd+qsd"] {
        let dp = Plugin::at(&scripts.join("datapath").join(scheme));
        assert!(dp.methods().iter().any(|m| m == "Datapath.activate"), "{scheme}: {:?}", dp.methods());
        assert_eq!(dp.call("Plugin.Query", json!({})).ok()["required_api_version"], "5.0");
    }

    // An SR lifecycle through the installed symlinks.
    let t = TestSr::through(Plugin::at(&volume_dir), Lab::get(), |_| {});
    let v = t.create_volume("from the rpm", 4 << 20);
    let snap = t.call("Volume.snapshot", json!({"key": v["key"]})).ok();
    t.call("Volume.clone", json!({"key": snap["key"]})).ok();
    assert_eq!(t.ls().len(), 3);
    drop(t);

    // The legacy driver through /opt/xensource/sm.
    let requests = Requests::new(vec![]);
    let out = run_driver(&requests.driver_info(), Path::new("/nonexistent"), &scratch_dir("rpm-run"));
    assert!(out.ok().get("capabilities").is_some());
    let legacy =
        Command::new(root.join("opt/xensource/sm/CephRBDSR")).arg(requests.driver_info()).output().expect("runs");
    assert!(String::from_utf8_lossy(&legacy.stdout).contains("<name>capabilities</name>"));

    // The operator's doctor on this host, with the SR's device-config.
    std::fs::create_dir_all(root.join("etc/xapi.conf.d")).expect("mkdir");
    std::fs::write(root.join("etc/xapi.conf"), "sm-plugins=ext nfs lvm\n").expect("write");
    run(&lib.join("sm-plugins-conf"), &["--root", &root.display().to_string()]);
    let lab = Lab::get();
    let dconf = |extra: &[&str]| {
        let mut args = vec![
            "--doctor".to_owned(),
            format!("pool={}", lab.pool),
            format!("ceph_conf={}", lab.conf.display()),
            format!("keyring={}", lab.keyring.display()),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    };
    let doctor = |args: &[String]| {
        let out = Command::new(lib.join("volume")).args(args).env("CEPHRBD_ROOT", &root).output().expect("doctor");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, report) = doctor(&dconf(&[]));
    assert_eq!(code, Some(0), "a healthy host:\n{report}");
    assert!(report.contains("OK   monitors and pool") && report.contains("OK   sm-plugins whitelist"), "{report}");
    std::fs::remove_file(volume_dir.join("SR.create")).expect("rm");
    let (code, report) = doctor(&dconf(&["pool=no-such-pool"]));
    assert_eq!(code, Some(1));
    assert!(report.contains("missing or wrong: SR.create") && report.contains("install-plugins"), "{report}");
    assert!(report.contains("create the pool"), "{report}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("mon_host={}", listener.local_addr().expect("addr"));
    let started = std::time::Instant::now();
    let (code, report) =
        doctor(&[dconf(&[]), vec![dead, "timeout=3".to_owned(), "ceph_conf=/dev/null".to_owned()]].concat());
    assert_eq!(code, Some(1));
    assert!(report.contains("did not answer within 3 s") && started.elapsed().as_secs() < 10, "{report}");

    // Removal (%preun) takes the plugin directories away and leaves the watched roots.
    run(&install, &["--root", &root.display().to_string(), "--remove"]);
    assert!(!volume_dir.exists() && scripts.join("volume").is_dir() && scripts.join("datapath").is_dir());
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn rpm_sm_plugins_drop_in_keeps_the_list_in_effect() {
    let rpm = rpm();
    let root = unpack(&rpm);
    let tool = root.join("usr/libexec/cephrbd/sm-plugins-conf");
    let r = root.display().to_string();
    let ours = root.join("etc/xapi.conf.d/zz-cephrbd.conf");
    // dom0 has /etc/xapi.conf.d (xapi owns it); the RPM ships the drop-in as %ghost only.
    std::fs::create_dir_all(root.join("etc/xapi.conf.d")).expect("mkdir");
    let read = || {
        std::fs::read_to_string(&ours)
            .ok()
            .and_then(|t| t.lines().find(|l| l.starts_with("sm-plugins=")).map(str::to_owned))
    };
    // No list configured: xapi allows every driver, nothing to write.
    run(&tool, &["--root", &r]);
    assert_eq!(read(), None);
    std::fs::write(
        root.join("etc/xapi.conf"),
        "# xapi\nsm-plugins=ext nfs iscsi lvmoiscsi dummy file hba rawhba udev iso lvm\nother=1\n",
    )
    .expect("write");
    run(&tool, &["--root", &r]);
    assert_eq!(
        read().as_deref(),
        Some("sm-plugins=ext nfs iscsi lvmoiscsi dummy file hba rawhba udev iso lvm cephrbd")
    );
    // A later drop-in resets the list: ours restates that one.
    std::fs::write(root.join("etc/xapi.conf.d/10-site.conf"), "sm-plugins = ext  lvm zfs\n").expect("write");
    run(&tool, &["--root", &r]);
    assert_eq!(read().as_deref(), Some("sm-plugins=ext lvm zfs cephrbd"));
    run(&tool, &["--root", &r]);
    assert_eq!(read().as_deref(), Some("sm-plugins=ext lvm zfs cephrbd"), "idempotent");
    std::fs::write(root.join("etc/xapi.conf.d/10-site.conf"), "sm-plugins=*\n").expect("write");
    run(&tool, &["--root", &r]);
    assert_eq!(read(), None, "everything is allowed already");
    std::fs::write(root.join("etc/xapi.conf.d/10-site.conf"), "sm-plugins=ext\n").expect("write");
    run(&tool, &["--root", &r]);
    run(&tool, &["--root", &r, "--remove"]);
    assert!(!ours.exists());
    let _ = std::fs::remove_dir_all(root);
}
