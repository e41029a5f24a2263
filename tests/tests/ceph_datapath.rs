//! The SMAPIv3 datapath plugin on the real test cluster: the userspace mode end to end with
//! real I/O, reference counting, fencing between two "hosts" (two state directories and
//! host ids), and crash reaping. Kernel RBD and rbd-nbd need a kernel with their modules:
//! they are tested in the kernel lab (ceph_kernel.rs).

// An integration-test crate is all tests; the lint is for test code mixed into the library.
#![allow(clippy::tests_outside_test_module)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cephrbd_tests::{nbd_url, scratch_dir, uri_with_policy, Kind, Plugin, TestSr};
use serde_json::{json, Value};

const MIB: usize = 1 << 20;

/// One stand-in host: its own state directory, shared by its two plugins.
struct Host {
    run: PathBuf,
    dp: Plugin,
}

impl Host {
    fn new(name: &str) -> Host {
        let run = scratch_dir(name);
        let dp = Plugin::new(Kind::Datapath)
            .with_env("CEPHRBD_RUN_DIR", run.display().to_string())
            .with_env("CEPHRBD_HOST_ID", name);
        Host { run, dp }
    }

    fn call(&self, method: &str, uri: &str, domain: &str) -> Value {
        self.dp.call(method, json!({"uri": uri, "domain": domain})).ok()
    }

    /// attach + activate: the export's URL for qemu-io.
    fn open(&self, uri: &str, domain: &str) -> String {
        let backend = self.call("Datapath.attach", uri, domain);
        let implementations = backend["implementations"].as_array().expect("implementations");
        assert_eq!(implementations[0][0], "XenDisk", "{backend}");
        assert_eq!(implementations[0][1]["backend_type"], "qdisk");
        self.call("Datapath.activate", uri, domain);
        nbd_url(&backend)
    }

    fn close(&self, uri: &str, domain: &str) {
        self.call("Datapath.deactivate", uri, domain);
        self.call("Datapath.detach", uri, domain);
    }

    /// Every file the host keeps: state, sockets, pidfiles, and locks (issue 14 item 9:
    /// those go with the state too).
    fn state_files(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.run.join("dp")) else { return Vec::new() };
        let mut names: Vec<String> =
            dir.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run);
    }
}

fn qsd_uri(volume: &Value) -> String {
    uri_with_policy(volume, "qsd")
}

/// Runs qemu-io commands on an export (read-only if the commands are all reads); returns
/// (success, output).
fn qemu_io(url: &str, commands: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("timeout");
    cmd.args(["60", "qemu-io", "-f", "raw"]);
    if commands.iter().all(|c| c.starts_with("read")) {
        cmd.arg("-r");
    }
    for c in commands {
        cmd.args(["-c", c]);
    }
    let out = cmd.arg(url).output().expect("qemu-io");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && !text.contains("failed"), text)
}

/// The image's bytes, read with `rbd export` (not through our datapath).
fn export(t: &TestSr, volume: &Value) -> Vec<u8> {
    let dir = scratch_dir("export");
    let file = dir.join("image");
    let uri = qsd_uri(volume);
    let leaf = uri.split('?').next().expect("path").rsplit('/').next().expect("leaf").replace("%40", "@");
    let spec = format!("{}/{}/{leaf}", t.lab.pool, t.namespace);
    t.lab.rbd(&["export", "--no-progress", &spec, &file.display().to_string()]);
    let bytes = std::fs::read(&file).expect("read export");
    let _ = std::fs::remove_dir_all(dir);
    bytes
}

fn all(bytes: &[u8], value: u8) -> bool {
    bytes.iter().all(|b| *b == value)
}

#[test]
fn ceph_userspace_datapath_carries_real_io_and_snapshots_are_read_only() {
    let t = TestSr::create();
    let host = Host::new("host");
    let v = t.create_volume("io", 16 << 20);
    let uri = qsd_uri(&v);
    let url = host.open(&uri, "7");
    let (ok, out) = qemu_io(&url, &["write -P 0x5a 0 4M", "write -P 0xa5 8M 1M", "flush"]);
    assert!(ok, "{out}");
    host.close(&uri, "7");
    assert_eq!(host.state_files(), Vec::<String>::new(), "nothing left on the host");
    let bytes = export(&t, &v);
    assert_eq!(bytes.len(), 16 * MIB);
    assert!(all(&bytes[..4 * MIB], 0x5a) && all(&bytes[8 * MIB..9 * MIB], 0xa5), "the pattern reached the image");
    assert!(all(&bytes[4 * MIB..8 * MIB], 0) && all(&bytes[9 * MIB..], 0));

    let snap = t.call("Volume.snapshot", json!({"key": v["key"]})).ok();
    let snap_uri = qsd_uri(&snap);
    let url = host.open(&snap_uri, "8");
    let (ok, out) = qemu_io(&url, &["read -P 0x5a 0 4M"]);
    assert!(ok, "the snapshot reads back: {out}");
    let (ok, out) = qemu_io(&url, &["write -P 0x11 0 4K"]);
    assert!(!ok, "a snapshot export must refuse writes: {out}");
    host.close(&snap_uri, "8");
    assert!(all(&export(&t, &snap)[..4 * MIB], 0x5a));
}

#[test]
fn ceph_attach_is_counted_by_uri_and_domain_and_detach_never_fails() {
    let t = TestSr::create();
    let host = Host::new("refs");
    let v = t.create_volume("refs", 4 << 20);
    let uri = qsd_uri(&v);
    let dom0 = "u0_vbd_0_51712";
    let first = host.call("Datapath.attach", &uri, "3");
    assert_eq!(host.call("Datapath.attach", &uri, dom0), first, "attach is idempotent, same answer");
    host.call("Datapath.attach", &uri, "3");
    host.call("Datapath.activate", &uri, "3");
    host.call("Datapath.activate", &uri, "3");
    host.call("Datapath.deactivate", &uri, "3");
    host.call("Datapath.detach", &uri, "3");
    assert_eq!(host.state_files().len(), 2, "dom0 still holds it (state and lock): {:?}", host.state_files());
    host.call("Datapath.detach", &uri, dom0);
    assert_eq!(host.state_files(), Vec::<String>::new());
    // Never attached: deactivate and detach succeed; activate is refused.
    host.call("Datapath.deactivate", &uri, "9");
    host.call("Datapath.detach", &uri, "9");
    let (name, message) =
        host.dp.call("Datapath.activate", json!({"uri": uri, "domain": "9"})).error_name_and_message();
    assert!(message.contains("not attached"), "{name}: {message}");
    host.dp.call("Datapath.open", json!({"uri": uri, "persistent": true})).ok();
    host.dp.call("Datapath.close", json!({"uri": uri})).ok();
    let (_, message) = host.dp.call("Datapath.open", json!({"uri": uri, "persistent": false})).error_name_and_message();
    assert!(message.contains("persistent=false"), "{message}");
}

/// Two hosts: after activate succeeded on B, the stale writer on A cannot change the image.
#[test]
fn ceph_activate_fences_the_previous_writer() {
    let t = TestSr::create();
    let (a, b) = (Host::new("host-a"), Host::new("host-b"));
    let v = t.create_volume("migrating", 8 << 20);
    let uri = qsd_uri(&v);
    let url_a = a.open(&uri, "5");
    let (ok, out) = qemu_io(&url_a, &["write -P 0x11 0 1M", "flush"]);
    assert!(ok, "{out}");
    // B activates while A (crashed, partitioned, or slow to deactivate) still has it open.
    let url_b = b.open(&uri, "6");
    let (ok, out) = qemu_io(&url_a, &["write -P 0x22 0 1M", "flush"]);
    assert!(!ok, "the stale writer on A could still write: {out}");
    let (ok, out) = qemu_io(&url_b, &["write -P 0x33 1M 1M", "flush"]);
    assert!(ok, "{out}");
    b.close(&uri, "6");
    a.close(&uri, "5");
    let bytes = export(&t, &v);
    assert!(all(&bytes[..MIB], 0x11), "A's write after the fence must not land");
    assert!(all(&bytes[MIB..2 * MIB], 0x33));
}

/// A cooperative migration (attach on B, deactivate on A, activate on B, detach on A)
/// fences nobody: A released the image's writer lock when it deactivated.
#[test]
fn ceph_a_cooperative_migration_fences_nobody() {
    let t = TestSr::create();
    let (a, b) = (Host::new("coop-a"), Host::new("coop-b"));
    let v = t.create_volume("migrating", 8 << 20);
    let uri = qsd_uri(&v);
    let url_a = a.open(&uri, "5");
    assert!(qemu_io(&url_a, &["write -P 0x11 0 1M", "flush"]).0);
    let backend_b = b.call("Datapath.attach", &uri, "6");
    a.call("Datapath.deactivate", &uri, "5");
    let activated = b.dp.call("Datapath.activate", json!({"uri": uri, "domain": "6"}));
    activated.ok();
    assert!(!activated.stderr.contains("fenced"), "a cooperative migration fenced: {}", activated.stderr);
    a.call("Datapath.detach", &uri, "5");
    assert_eq!(a.state_files(), Vec::<String>::new(), "nothing of the volume is left on A");
    let url_b = nbd_url(&backend_b);
    assert!(qemu_io(&url_b, &["read -P 0x11 0 1M", "write -P 0x22 1M 1M", "flush"]).0);
    b.close(&uri, "6");
    assert!(all(&export(&t, &v)[MIB..2 * MIB], 0x22));
}

/// Two hosts activating the same volume at the same moment: however their calls interleave,
/// afterwards at most one of them can write (the writer lock is taken atomically; a host
/// that finds the other's lock fences it).
#[test]
fn ceph_racing_activations_leave_exactly_one_writer() {
    let t = TestSr::create();
    for round in 0..4 {
        let (a, b) = (Host::new(&format!("race-a{round}")), Host::new(&format!("race-b{round}")));
        let v = t.create_volume("raced", 4 << 20);
        let uri = qsd_uri(&v);
        let urls: Vec<String> = [&a, &b].iter().map(|h| nbd_url(&h.call("Datapath.attach", &uri, "1"))).collect();
        let outcomes: Vec<i32> = std::thread::scope(|s| {
            let calls: Vec<_> = [&a, &b]
                .into_iter()
                .map(|h| {
                    let uri = uri.clone();
                    s.spawn(move || h.dp.call("Datapath.activate", json!({"uri": uri, "domain": "1"})).status)
                })
                .collect();
            calls.into_iter().map(|c| c.join().expect("activate")).collect()
        });
        assert!(outcomes.contains(&0), "round {round}: neither activation succeeded");
        let writers: Vec<bool> = urls.iter().map(|url| qemu_io(url, &["write -P 0x5a 0 64K", "flush"]).0).collect();
        assert_eq!(
            writers.iter().filter(|w| **w).count(),
            1,
            "round {round}: writers {writers:?}, activations {outcomes:?}"
        );
        for h in [&a, &b] {
            h.close(&uri, "1");
        }
    }
}

/// A volume URI of the scheme volumes had before the datapath policy still attaches, in
/// the mode its scheme names.
#[test]
fn ceph_uris_of_the_old_schemes_still_attach() {
    let t = TestSr::create();
    let host = Host::new("old-uri");
    let v = t.create_volume("old", 4 << 20);
    let uri = cephrbd_tests::uri_with_old_scheme(&v, "cephrbd+qsd");
    let url = host.open(&uri, "1");
    assert!(qemu_io(&url, &["write -P 0x44 0 64K", "flush"]).0);
    host.close(&uri, "1");
    assert_eq!(host.state_files(), Vec::<String>::new());
}

/// activate verifies what it reports: activated again after its daemon died, it does not
/// answer success without a daemon that serves the export.
#[test]
fn ceph_activate_verifies_its_daemon() {
    let t = TestSr::create();
    let host = Host::new("verify");
    let v = t.create_volume("verified", 4 << 20);
    let uri = qsd_uri(&v);
    let url = host.open(&uri, "1");
    let key = v["key"].as_str().expect("key");
    let pid: i32 = std::fs::read_to_string(host.run.join("dp").join(format!("{key}.pid")))
        .expect("pidfile")
        .trim()
        .parse()
        .expect("pid");
    Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("kill");
    cephrbd_tests::wait_until(std::time::Duration::from_secs(10), || !Path::new(&format!("/proc/{pid}")).exists());
    host.call("Datapath.activate", &uri, "1");
    assert!(qemu_io(&url, &["write -P 0x66 0 64K", "flush"]).0, "activate answered success without a daemon");
    host.close(&uri, "1");
}

/// A daemon killed under a running VM: SR.attach on that host finds and cleans it, and the
/// volume can be activated again.
#[test]
fn ceph_sr_attach_reaps_a_killed_daemon() {
    let t = TestSr::create();
    let host = Host::new("crash");
    let volume_plugin = Plugin::new(Kind::Volume).with_env("CEPHRBD_RUN_DIR", host.run.display().to_string());
    let v = t.create_volume("crash", 4 << 20);
    let uri = qsd_uri(&v);
    host.open(&uri, "4");
    let pidfile = host.run.join("dp").join(format!("{}.pid", v["key"].as_str().expect("key")));
    let pid = std::fs::read_to_string(&pidfile).expect("pidfile").trim().to_owned();
    assert!(Command::new("kill").args(["-9", &pid]).status().expect("kill").success());
    assert!(cephrbd_tests::wait_until(std::time::Duration::from_secs(5), || !Path::new(&format!(
        "/proc/{pid}/cmdline"
    ))
    .exists()
        || std::fs::read(format!("/proc/{pid}/cmdline")).map(|c| c.is_empty()).unwrap_or(true)));
    volume_plugin.call("SR.attach", json!({"configuration": t.config})).ok();
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(host.run.join("dp").join(format!("{}.json", v["key"].as_str().expect("key"))))
            .expect("state"),
    )
    .expect("json");
    assert!(state.get("active").is_none(), "the dead activation was cleared: {state}");
    assert!(
        !host.run.join("dp").join(format!("{}.sock", v["key"].as_str().expect("key"))).exists(),
        "stale socket removed"
    );
    host.call("Datapath.activate", &uri, "4");
    host.close(&uri, "4");
    assert_eq!(host.state_files(), Vec::<String>::new());
}

/// activate_readonly: the export refuses writes, and two hosts may hold it at once (no
/// fencing between readers).
#[test]
fn ceph_activate_readonly_exports_read_only_and_fences_nobody() {
    let t = TestSr::create();
    let (a, b) = (Host::new("ro-a"), Host::new("ro-b"));
    let v = t.create_volume("ro", 4 << 20);
    let uri = qsd_uri(&v);
    let url = a.open(&uri, "1");
    assert!(qemu_io(&url, &["write -P 0x77 0 1M", "flush"]).0);
    a.close(&uri, "1");
    let mut urls = Vec::new();
    for host in [&a, &b] {
        let backend = host.call("Datapath.attach", &uri, "2");
        host.call("Datapath.activate_readonly", &uri, "2");
        urls.push(nbd_url(&backend));
    }
    for url in &urls {
        let (ok, out) = qemu_io(url, &["read -P 0x77 0 1M"]);
        assert!(ok, "both readers read: {out}");
        assert!(!qemu_io(url, &["write -P 0x11 0 4K"]).0, "read-only export accepted a write");
    }
    a.close(&uri, "2");
    b.close(&uri, "2");
    assert!(all(&export(&t, &v)[..MIB], 0x77));
}

/// Issue 14 item 7: a `mon_host` that Ceph would split into options (`--log-file <path>
/// --debug-auth 30`: auth details written to a file of the caller's choice) is refused in
/// device-config and in a volume URI; nothing is started and the file never appears.
#[test]
fn ceph_no_configuration_value_becomes_a_ceph_option() {
    let t = TestSr::create();
    let host = Host::new("inject");
    let log = host.run.join("stolen.log");
    let attack = format!("127.0.0.1:3300 --log-file {} --debug-auth 30", log.display());

    // In a volume URI handed to the datapath (as if the SR string were forged).
    let v = t.create_volume("inject", 4 << 20);
    let mut uri = common::layout::uri::VolumeUri::parse(&qsd_uri(&v)).expect("our URI");
    uri.conn.mon_host = Some(attack.clone());
    let forged = uri.render();
    for method in ["Datapath.attach", "Datapath.activate_readonly", "Datapath.activate"] {
        let out = host.dp.call(method, json!({"uri": forged, "domain": "1"}));
        assert_eq!(out.status, 1, "{method} accepted {attack:?}");
        assert!(out.stdout.contains("mon_host"), "{method}: {}", out.stdout);
    }
    host.dp.call("Datapath.detach", json!({"uri": forged, "domain": "1"})).ok();
    assert!(!log.exists(), "Ceph read a configuration value as --log-file");

    let mut config = t.lab.device_config();
    config["mon_host"] = json!(attack);
    let out = t.plugin.call(
        "SR.create",
        json!({"uuid": uuid::Uuid::new_v4().to_string(), "configuration": config, "name": "x", "description": ""}),
    );
    let (name, message) = out.error_name_and_message();
    assert_eq!(name, "Invalid_device_config", "{message}");
    assert!(message.contains("mon_host"), "{message}");
}

/// Issue 14 item 7: a keyring and a ceph.conf whose paths hold spaces work, through the
/// userspace datapath too (the keyring used to be split in CEPH_ARGS).
#[test]
fn ceph_paths_with_spaces_work_end_to_end() {
    let lab = cephrbd_tests::Lab::get();
    let dir = scratch_dir("spaced").join("my ceph files");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let (keyring, conf) = (dir.join("client keyring"), dir.join("ceph config.conf"));
    std::fs::copy(&lab.keyring, &keyring).expect("copy keyring");
    std::fs::copy(&lab.conf, &conf).expect("copy conf");
    let t = TestSr::with_config(|c| {
        c["keyring"] = json!(keyring.display().to_string());
        c["ceph_conf"] = json!(conf.display().to_string());
    });
    let host = Host::new("spaced");
    let v = t.create_volume("spaced", 4 << 20);
    let uri = qsd_uri(&v);
    let url = host.open(&uri, "2");
    let (ok, out) = qemu_io(&url, &["write -P 0x4b 0 1M", "flush"]);
    assert!(ok, "{out}");
    host.close(&uri, "2");
    assert!(all(&export(&t, &v)[..MIB], 0x4b), "the write reached the image");
    drop(t);
    let _ = std::fs::remove_dir_all(dir.parent().expect("scratch"));
}
