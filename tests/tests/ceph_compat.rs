//! Other Ceph client generations: the whole SR and volume lifecycle, and the legacy
//! driver's snapshot path, with the binaries built for glibc 2.17 (what the RPM ships)
//! running inside a Debian chroot whose `rbd` and `ceph` are another Ceph release,
//! against the test cluster on the host.
//!
//! By default the client is `bullseye`: Ceph 14.2 Nautilus, the generation of XCP-ng's
//! dom0. `scripts/test` builds the chroot (`scripts/compat-lab/chroot.sh bullseye`) and the
//! binaries (`scripts/build-rpm`); without them these tests fail with the command to run.
//!
//! `scripts/compat` runs the same tests for every cell of its client × cluster matrix:
//! - `CEPHRBD_COMPAT_CLIENT`: `bullseye` (14.2), `trixie` (18.2), `forky` (20.2), or `host`
//!   (no chroot: the host's own client);
//! - `CEPHRBD_LAB_DIR`: the cluster (a directory made by `scripts/ceph-lab/cluster-up.sh`).

// An integration-test crate is all tests; the lint is for test code mixed into the library.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;

use cephrbd_tests::xapi::{Requests, Run, Vdi, XenApiServer};
use cephrbd_tests::{compat_bin_dir, scratch_dir, Chroot, Kind, Lab, Plugin, TestSr};
use legacy::xmlrpc::Value as Xml;
use serde_json::{json, Value};

const MIB: i64 = 1 << 20;

/// The client generation to test with (`CEPHRBD_COMPAT_CLIENT`, default `bullseye`).
fn client() -> Chroot {
    match std::env::var("CEPHRBD_COMPAT_CLIENT").as_deref() {
        Ok("host") => Chroot::host(),
        Ok(suite) if !suite.is_empty() => Chroot::get(suite),
        _ => Chroot::get("bullseye"),
    }
}

/// The Ceph release a chroot suite carries.
fn release_of(suite: &str) -> Option<&'static str> {
    match suite {
        "bullseye" => Some("14.2."),
        "trixie" => Some("18.2."),
        "forky" => Some("20.2."),
        _ => None,
    }
}

fn key(v: &Value) -> String {
    v["key"].as_str().expect("key").to_owned()
}

/// The RBD image (and snapshot) a volume's datapath URI names: `<image>[@<snap>]`.
fn image_of(v: &Value) -> String {
    let uri = v["uri"][0].as_str().expect("uri");
    let path = uri.split('?').next().expect("path");
    path.rsplit('/').next().expect("leaf").replace("%40", "@")
}

/// A scratch directory removed when the test ends, however it ends.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `rbd info` of an image of the SR, read with the host's client.
fn info(t: &TestSr, image: &str) -> Value {
    let spec = format!("{}/{}/{image}", t.lab.pool, t.namespace);
    serde_json::from_str(&t.lab.rbd(&["info", "--format", "json", &spec])).expect("rbd info json")
}

#[test]
fn ceph_compat_client_is_the_generation_asked_for() {
    let c = client();
    let version = c.ceph_version();
    eprintln!("client {}: {version}", c.suite);
    if let Some(release) = release_of(&c.suite) {
        assert!(version.starts_with(&format!("ceph version {release}")), "{} carries {version}", c.suite);
    }
    // The RPM's binaries (glibc 2.17) start there.
    let bins = compat_bin_dir();
    let out = c.command(&bins.join("volume"), &[&bins]).arg("--list").output().expect("run volume --list");
    assert!(out.status.success(), "volume --list in {}: {}", c.suite, String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).lines().any(|l| l == "SR.create"));
}

/// Every SMAPIv3 call xapi makes in an SR's life, through the client under test; the
/// results are checked with the host's `rbd`.
#[test]
fn ceph_compat_volume_lifecycle() {
    let c = client();
    let lab = Lab::get();
    let plugin = Plugin::of(Kind::Volume, &compat_bin_dir()).inside(&c, &[&lab.dir]);
    // SR.create + SR.attach.
    let t = TestSr::through(plugin, lab, |_| {});
    let stat = t.call("SR.stat", json!({})).ok();
    assert_eq!(stat["uuid"], json!(t.uuid));
    assert_eq!(stat["health"], json!(["Healthy", ""]));
    assert!(stat["total_space"].as_i64().expect("int") > 0);

    // Volume.create, set/unset.
    let base = t.create_volume("base", 8 * MIB);
    let base_key = key(&base);
    assert_eq!(info(&t, &image_of(&base))["size"], json!(8 * MIB));
    t.call("Volume.set", json!({"key": base_key, "k": "vdi-type", "v": "user"})).ok();
    t.call("Volume.set_name", json!({"key": base_key, "new_name": "renamed"})).ok();
    t.call("Volume.set_description", json!({"key": base_key, "new_description": "-starts with a dash"})).ok();
    let stat = t.call("Volume.stat", json!({"key": base_key})).ok();
    assert_eq!(stat["keys"], json!({"vdi-type": "user"}));
    assert_eq!((stat["name"].as_str(), stat["description"].as_str()), (Some("renamed"), Some("-starts with a dash")));
    t.call("Volume.unset", json!({"key": base_key, "k": "vdi-type"})).ok();
    assert_eq!(t.call("Volume.stat", json!({"key": base_key})).ok()["keys"], json!({}));

    // Snapshot: an RBD snapshot of the image.
    let snap = t.call("Volume.snapshot", json!({"key": base_key})).ok();
    let snap_key = key(&snap);
    assert_eq!(snap["read_write"], false);
    let (image, snap_name) = image_of(&snap).split_once('@').map(|(i, s)| (i.to_owned(), s.to_owned())).expect("@");
    assert_eq!(image, image_of(&base));
    assert!(t.snapshots(&image).contains(&snap_name), "{snap_name} in rbd snap ls of {image}");

    // Clone of the snapshot, clone of the writable volume: RBD clones of the base.
    let from_snap = t.call("Volume.clone", json!({"key": snap_key})).ok();
    assert_eq!(from_snap["read_write"], true);
    assert_eq!(info(&t, &image_of(&from_snap))["parent"]["image"], json!(image));
    let from_rw = t.call("Volume.clone", json!({"key": base_key})).ok();
    assert_eq!(from_rw["read_write"], true);
    assert_eq!(from_rw["virtual_size"], json!(8 * MIB));
    assert_eq!(info(&t, &image_of(&from_rw))["parent"]["image"], json!(image));

    // Resize.
    t.call("Volume.resize", json!({"key": base_key, "new_size": 16 * MIB})).ok();
    assert_eq!(t.call("Volume.stat", json!({"key": base_key})).ok()["virtual_size"], json!(16 * MIB));
    assert_eq!(info(&t, &image)["size"], json!(16 * MIB));

    let listed: BTreeMap<String, Value> = t.ls().into_iter().map(|v| (key(&v), v)).collect();
    assert_eq!(listed.len(), 4, "base, snapshot, two clones: {listed:?}");

    // Destroy with dependants: the base (a snapshot and two clones depend on it) goes from
    // the SR at once; then the snapshot (a clone still depends on it); then the clones.
    t.call("Volume.destroy", json!({"key": base_key})).ok();
    assert!(!t.ls().iter().any(|v| key(v) == base_key), "a destroyed volume vanishes from SR.ls");
    let (name, _) = t.call("Volume.stat", json!({"key": base_key})).error_name_and_message();
    assert_eq!(name, "Volume_does_not_exist");
    t.call("Volume.stat", json!({"key": key(&from_snap)})).ok();
    t.call("Volume.destroy", json!({"key": snap_key})).ok();
    t.call("Volume.stat", json!({"key": key(&from_snap)})).ok();
    for clone in [&from_snap, &from_rw] {
        t.call("Volume.destroy", json!({"key": key(clone)})).ok();
    }
    assert_eq!(t.ls(), Vec::<Value>::new());
    // Destroyed images leave through the trash; the purge each destroy starts (in the
    // chroot too) reclaims what a clone in the trash still held.
    let reclaimed = cephrbd_tests::wait_until(std::time::Duration::from_secs(60), || {
        t.images() == ["cephrbd-sr"] && t.trash().is_empty()
    });
    assert!(reclaimed, "all storage reclaimed (host rbd ls): {:?}, trash {:?}", t.images(), t.trash());
    assert_eq!(t.snapshots("cephrbd-sr"), Vec::<String>::new());

    // SR.probe with only the connection keys finds the pool and this SR.
    let mut connection = t.lab.device_config();
    connection.as_object_mut().expect("object").remove("pool");
    let results = t.plugin.call("SR.probe", json!({"configuration": connection})).ok();
    let results = results.as_array().expect("array");
    let found = results.iter().find(|r| r["configuration"]["sr_uuid"] == json!(t.uuid)).expect("our SR is found");
    assert_eq!(found["sr"]["name"], "test SR");

    // SR.destroy: the namespace goes.
    t.call("SR.destroy", json!({})).ok();
    let namespaces = t.lab.rbd(&["namespace", "ls", "--format", "json", &t.lab.pool]);
    assert!(!namespaces.contains(&t.namespace), "SR.destroy leaves nothing: {namespaces}");
}

/// The legacy driver (`CephRBDSR`, SR type `cephrbd`) through the client under test:
/// create, snapshot, clones, resize, delete with dependants, scan, delete the SR.
#[test]
fn ceph_compat_legacy_snapshot_path() {
    let c = client();
    let lab = Lab::get();
    let scratch = Scratch(scratch_dir("compat-legacy"));
    let dir = &scratch.0;
    let req = Requests::new(vec![
        ("pool".to_owned(), lab.pool.clone()),
        ("ceph_conf".to_owned(), lab.conf.display().to_string()),
        ("ceph_user".to_owned(), lab.user.clone()),
        ("keyring".to_owned(), lab.keyring.display().to_string()),
    ]);
    let server = XenApiServer::start(dir, &req.session_ref, &req.sr_ref, "compat legacy SR");
    let run = |document: &str| -> Run { c.run_driver(document, server.socket(), &dir.join("run"), &[&lab.dir]) };
    let introduced = |answer: &Xml| -> Vdi {
        let location = answer.get("location").and_then(Xml::as_str).expect("location");
        server.vdi_by_location(location).expect("introduced to xapi before the answer")
    };
    let namespace = format!("cephrbd-{}", req.sr_uuid);
    let image = |vdi: &Vdi| format!("{}/{namespace}/v-{}", lab.pool, vdi.location);

    assert_eq!(run(&req.sr("sr_create", &["0"], true)).ok(), Xml::Nil);
    assert_eq!(run(&req.sr("sr_attach", &[], true)).ok(), Xml::Nil);
    let disk = introduced(&run(&req.vdi_create(16 * MIB as u64, "disk0")).ok());

    let snap = introduced(&run(&req.vdi("vdi_snapshot", &[], &disk, true)).ok());
    assert_eq!(server.vdi_field(&snap.vdi_ref, "read_only"), Some(Xml::Bool(true)));
    let clone = introduced(&run(&req.vdi("vdi_clone", &[], &snap, true)).ok());
    assert_eq!(server.vdi_field(&clone.vdi_ref, "read_only"), Some(Xml::Bool(false)));
    let copy = introduced(&run(&req.vdi("vdi_clone", &[], &disk, true)).ok());
    for dependant in [&clone, &copy] {
        let info: Value =
            serde_json::from_str(&lab.rbd(&["info", "--format", "json", &image(dependant)])).expect("json");
        assert_eq!(info["parent"]["image"], json!(format!("v-{}", disk.location)), "an RBD clone of the disk");
    }
    let resized = run(&req.vdi("vdi_resize", &[&(32 * MIB).to_string()], &disk, true)).ok();
    assert_eq!(resized.get("location").and_then(Xml::as_str), Some(disk.location.as_str()));
    let info: Value = serde_json::from_str(&lab.rbd(&["info", "--format", "json", &image(&disk)])).expect("json");
    assert_eq!(info["size"], json!(32 * MIB));

    // The disk first, while its snapshot and clones exist.
    for vdi in [&disk, &snap, &clone, &copy] {
        assert_eq!(run(&req.vdi("vdi_delete", &[], vdi, true)).ok(), Xml::Nil);
        server.destroy_record(&vdi.vdi_ref);
    }
    assert_eq!(run(&req.sr("sr_scan", &[], true)).ok(), Xml::Nil);
    assert_eq!(server.vdi_count(), 0);
    let images = || {
        let listed = lab.rbd(&["ls", "--format", "json", "--pool", &lab.pool, "--namespace", &namespace]);
        serde_json::from_str::<Vec<String>>(&listed).expect("json")
    };
    // What the clones held goes with the purge the last delete started.
    let reclaimed = cephrbd_tests::wait_until(std::time::Duration::from_secs(60), || images() == ["cephrbd-sr"]);
    assert!(reclaimed, "all storage reclaimed: {:?}", images());
    let deleted = run(&req.sr("sr_delete", &[], true));
    if deleted.stdout.contains("<fault>") {
        // Who holds the header open, for the report (seen once under heavy load: a watcher).
        let status = lab.rbd(&["status", "--format", "json", &format!("{}/{namespace}/cephrbd-sr", lab.pool)]);
        panic!("sr_delete failed: {}\nrbd status of the header: {status}\n{}", deleted.stdout, deleted.stderr);
    }
    assert_eq!(deleted.ok(), Xml::Nil);
    let namespaces = lab.rbd(&["namespace", "ls", "--format", "json", &lab.pool]);
    assert!(!namespaces.contains(&namespace), "sr_delete leaves nothing: {namespaces}");
}

/// Changed block tracking through the client under test: Nautilus 14.2's `rbd diff`
/// (dom0's) takes the same arguments and prints the same JSON, with and without
/// fast-diff, in either order of the two snapshots.
#[test]
fn ceph_compat_changed_blocks() {
    let c = client();
    for features in ["layering,exclusive-lock", "layering,exclusive-lock,object-map,fast-diff"] {
        let lab = Lab::get();
        let plugin = Plugin::of(Kind::Volume, &compat_bin_dir()).inside(&c, &[&lab.dir]);
        let t = TestSr::through(plugin, lab, |config| config["image_features"] = json!(features));
        let disk = t.create_volume("cbt", 16 * MIB);
        t.call("Volume.enable_cbt", json!({"key": disk["key"]})).ok();
        let s1 = t.call("Volume.snapshot", json!({"key": disk["key"]})).ok();
        assert_eq!(s1["cbt_enabled"], json!(true));
        // 64 KiB at offset 0 and at 5 MiB, written by qemu's librbd on the host.
        let target = format!(
            "rbd:{}/{}/{}:conf={}:id={}:keyring={}",
            t.lab.pool,
            t.namespace,
            image_of(&disk),
            t.lab.conf.display(),
            t.lab.user,
            t.lab.keyring.display()
        );
        let out = std::process::Command::new("qemu-io")
            .args(["-f", "raw", "-c", "write -P 0x5a 0 64K", "-c", "write -P 0x5b 5M 64K", &target])
            .output()
            .expect("qemu-io");
        assert!(out.status.success(), "qemu-io: {}", String::from_utf8_lossy(&out.stderr));
        let s2 = t.call("Volume.snapshot", json!({"key": disk["key"]})).ok();
        for (from, to) in [(&s1, &s2), (&s2, &s1)] {
            let out = t
                .call(
                    "Volume.list_changed_blocks",
                    json!({"key": from["key"], "key2": to["key"], "offset": 0, "length": -1}),
                )
                .ok();
            let map = common::ops::bitmap::unbase64(out["bitmap"].as_str().expect("bitmap")).expect("base64");
            assert_eq!(map.len(), 32, "{features}: 16 MiB is 256 bits");
            for block in [0, 80] {
                assert!(common::ops::bitmap::is_set(&map, block), "{features}: block {block} not flagged: {map:?}");
            }
            assert!(!common::ops::bitmap::is_set(&map, 255), "{features}: the last object was not written");
        }
        t.call("Volume.data_destroy", json!({"key": s1["key"]})).ok();
        for v in [&s2, &s1, &disk] {
            t.call("Volume.destroy", json!({"key": v["key"]})).ok();
        }
    }
}
