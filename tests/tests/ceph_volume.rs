//! The SMAPIv3 volume plugin on the real test cluster, driven with the call sequences
//! xapi-storage-script performs (docs/smapiv3.md §5). Every result is schema-checked by the
//! harness.

// An integration-test crate is all tests; the lint is for test code mixed into the library.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;
use std::time::Duration;

use cephrbd_tests::{Kind, Lab, Plugin, TestSr};
use serde_json::{json, Value};

const GIB: i64 = 1 << 30;

fn key(v: &Value) -> String {
    v["key"].as_str().expect("key").to_owned()
}

fn image_of(v: &Value) -> String {
    // The datapath URI names the image: <scheme>://pool/ns/<image>[@snap]?…
    let uri = v["uri"][0].as_str().expect("uri");
    let path = uri.split('?').next().expect("path");
    path.rsplit('/').next().expect("leaf").split('@').next().expect("image").to_owned()
}

#[test]
fn ceph_xapi_lifecycle_leaves_nothing_behind() {
    let t = TestSr::create();
    // PBD.plug: SR.attach is idempotent, then SR.stat twice.
    let again = t.plugin.call("SR.attach", json!({"configuration": t.config})).ok();
    assert_eq!(again, json!(t.sr));
    for _ in 0..2 {
        let stat = t.call("SR.stat", json!({})).ok();
        assert_eq!(stat["name"], "test SR");
        assert_eq!(stat["uuid"], json!(t.uuid));
        assert_eq!(stat["health"], json!(["Healthy", ""]));
        assert!(stat["total_space"].as_i64().expect("int") > 0);
    }
    assert_eq!(t.config["sr_uuid"], json!(t.uuid), "SR.create returns what SR.attach needs");

    // VDI.create: Volume.create then Volume.set vdi-type.
    let disk = t.create_volume("disk0", GIB + 1);
    assert_eq!(disk["virtual_size"], json!(GIB + 512), "rounded up to whole sectors, never down");
    assert_eq!(disk["read_write"], true);
    let disk_key = key(&disk);
    t.call("Volume.set", json!({"key": disk_key, "k": "vdi-type", "v": "user"})).ok();

    // VM snapshot: Volume.snapshot then the keys xapi sets on it.
    let snap = t.call("Volume.snapshot", json!({"key": disk_key})).ok();
    assert_eq!(snap["read_write"], false);
    assert_eq!(snap["name"], "disk0", "name copied");
    assert_eq!(snap["keys"], json!({}), "keys are not copied");
    let snap_key = key(&snap);
    for (k, v) in
        [("snapshot_time", "20261125T01:02:03Z"), ("is_a_snapshot", "true"), ("snapshot_of", disk_key.as_str())]
    {
        t.call("Volume.set", json!({"key": snap_key, "k": k, "v": v})).ok();
    }

    // VM clone from the snapshot: a writable copy-on-write volume.
    let from_snap = t.call("Volume.clone", json!({"key": snap_key})).ok();
    assert_eq!(from_snap["read_write"], true);
    assert_eq!(from_snap["virtual_size"], disk["virtual_size"]);
    let info: Value = serde_json::from_str(&t.lab.rbd(&[
        "info",
        "--format",
        "json",
        &format!("{}/{}/{}", t.lab.pool, t.namespace, image_of(&from_snap)),
    ]))
    .expect("json");
    assert_eq!(info["parent"]["image"], json!(image_of(&disk)), "an RBD clone: no data copied");

    // VM revert: clone the snapshot, destroy the original (which has dependants).
    let reverted = t.call("Volume.clone", json!({"key": snap_key})).ok();
    t.call("Volume.stat", json!({"key": disk_key})).ok();
    t.call("Volume.destroy", json!({"key": disk_key})).ok();
    let keys: Vec<String> = t.ls().iter().map(key).collect();
    assert!(!keys.contains(&disk_key), "a destroyed volume vanishes from SR.ls at once");
    let (name, param) = t.call("Volume.stat", json!({"key": disk_key})).error_name_and_message();
    assert_eq!((name.as_str(), param.as_str()), ("Volume_does_not_exist", disk_key.as_str()));

    // Reset-on-boot: clone a writable volume, mark it, destroy the clone, unset.
    let reverted_key = key(&reverted);
    let on_boot = t.call("Volume.clone", json!({"key": reverted_key})).ok();
    t.call("Volume.set", json!({"key": reverted_key, "k": "clone-on-boot", "v": key(&on_boot)})).ok();
    t.call("Volume.destroy", json!({"key": key(&on_boot)})).ok();
    t.call("Volume.unset", json!({"key": reverted_key, "k": "clone-on-boot"})).ok();

    // Resize, then stat.
    t.call("Volume.resize", json!({"key": reverted_key, "new_size": 2 * GIB})).ok();
    assert_eq!(t.call("Volume.stat", json!({"key": reverted_key})).ok()["virtual_size"], json!(2 * GIB));

    // sr-scan: keys come back verbatim, snapshots read-only.
    let listed: BTreeMap<String, Value> = t.ls().into_iter().map(|v| (key(&v), v)).collect();
    assert_eq!(listed.len(), 3, "the snapshot and the two clones of it: {listed:?}");
    assert_eq!(listed[&snap_key]["keys"]["snapshot_of"], json!(disk_key));
    assert_eq!(listed[&snap_key]["read_write"], false);
    assert_eq!(listed[&reverted_key]["keys"], json!({}));

    // VDI.destroy of everything: stat then destroy, clones first.
    for k in [key(&from_snap), reverted_key, snap_key] {
        t.call("Volume.stat", json!({"key": k})).ok();
        t.call("Volume.destroy", json!({"key": k})).ok();
    }
    assert_eq!(t.ls(), Vec::<Value>::new());
    assert_eq!(t.images(), ["cephrbd-sr"], "all storage reclaimed");
    t.assert_trash_purged();

    // sr-destroy: SR.attach then SR.destroy; no trace remains.
    t.plugin.call("SR.attach", json!({"configuration": t.config})).ok();
    t.call("SR.destroy", json!({})).ok();
    let namespaces = t.lab.rbd(&["namespace", "ls", "--format", "json", &t.lab.pool]);
    assert!(!namespaces.contains(&t.namespace), "{namespaces}");
    t.call("SR.destroy", json!({})).ok();
}

#[test]
fn ceph_destroy_with_dependants_reclaims_when_the_last_goes() {
    let t = TestSr::create();
    let base = t.create_volume("base", 64 << 20);
    let snap = t.call("Volume.snapshot", json!({"key": key(&base)})).ok();
    let clone = t.call("Volume.clone", json!({"key": key(&snap)})).ok();
    let fast_clone = t.call("Volume.clone", json!({"key": key(&base)})).ok();
    let image = image_of(&base);

    t.call("Volume.destroy", json!({"key": key(&base)})).ok();
    t.call("Volume.destroy", json!({"key": key(&snap)})).ok();
    assert_eq!(t.ls().len(), 2, "only the clones remain visible");
    assert!(t.images().contains(&image), "the base is kept for its clones");

    t.call("Volume.destroy", json!({"key": key(&clone)})).ok();
    assert!(t.images().contains(&image), "the fast clone still depends on it");
    t.call("Volume.destroy", json!({"key": key(&fast_clone)})).ok();
    // The base goes once its clones' images have left the trash: the background purge the
    // destroys start reclaims it (docs/layout.md §3).
    t.assert_trash_purged();
    let reclaimed = cephrbd_tests::wait_until(std::time::Duration::from_secs(60), || {
        t.images() == ["cephrbd-sr"] && t.trash().is_empty()
    });
    assert!(reclaimed, "the base was not reclaimed: {:?}", t.images());
    assert_eq!(t.snapshots("cephrbd-sr"), Vec::<String>::new());
}

#[test]
fn ceph_a_destroyed_clone_releases_its_hidden_base_snapshot() {
    let t = TestSr::create();
    let disk = t.create_volume("d", 64 << 20);
    let clone = t.call("Volume.clone", json!({"key": key(&disk)})).ok();
    assert_eq!(t.snapshots(&image_of(&disk)).len(), 1);
    t.call("Volume.destroy", json!({"key": key(&clone)})).ok();
    // The clone's image is in the trash, where it still holds the base protected: the
    // background purge the destroy starts releases it (docs/layout.md §3).
    let released =
        cephrbd_tests::wait_until(std::time::Duration::from_secs(60), || t.snapshots(&image_of(&disk)).is_empty());
    assert!(released, "the hidden base is still there: {:?}", t.snapshots(&image_of(&disk)));
    t.call("Volume.destroy", json!({"key": key(&disk)})).ok();
    assert_eq!(t.images(), ["cephrbd-sr"]);
}

#[test]
fn ceph_keys_names_and_flags_persist_verbatim() {
    let t = TestSr::create();
    let v = t.call("Volume.create", json!({"name": "n", "description": "d", "size": 4096, "sharable": true})).ok();
    let k = key(&v);
    let values = [
        ("vdi-type", "user"),
        ("empty", ""),
        ("-dash", "-value"),
        ("_sm_config_host_OpaqueRef:1", "x y"),
        ("tagsfoo", "bar"),
        ("content_id", "ümlaut\nnew line \"quoted\""),
        ("clone-on-boot", "=starts with equals"),
    ];
    for (name, value) in values {
        t.call("Volume.set", json!({"key": k, "k": name, "v": value})).ok();
    }
    t.call("Volume.set_name", json!({"key": k, "new_name": "renamed ✓"})).ok();
    t.call("Volume.set_description", json!({"key": k, "new_description": ""})).ok();
    let stat = t.call("Volume.stat", json!({"key": k})).ok();
    let expected: BTreeMap<&str, &str> = values.into_iter().collect();
    assert_eq!(stat["keys"], json!(expected));
    assert_eq!(stat["name"], "renamed ✓");
    assert_eq!(stat["description"], "");
    assert_eq!(stat["sharable"], true);
    t.call("Volume.unset", json!({"key": k, "k": "vdi-type"})).ok();
    t.call("Volume.unset", json!({"key": k, "k": "never-set"})).ok();
    let listed = t.ls();
    assert_eq!(listed[0]["keys"].as_object().expect("keys").len(), values.len() - 1);
    t.call("SR.set_name", json!({"new_name": "SR renamed"})).ok();
    t.call("SR.set_description", json!({"new_description": "new words"})).ok();
    let stat = t.call("SR.stat", json!({})).ok();
    assert_eq!((stat["name"].as_str(), stat["description"].as_str()), (Some("SR renamed"), Some("new words")));
}

#[test]
fn ceph_resize_grows_and_refuses_to_shrink() {
    let t = TestSr::create();
    let v = t.create_volume("r", 64 << 20);
    let k = key(&v);
    t.call("Volume.resize", json!({"key": k, "new_size": (128 << 20) + 1})).ok();
    let size = t.call("Volume.stat", json!({"key": k})).ok()["virtual_size"].as_i64().expect("int");
    assert!(size > 128 << 20);
    let (name, message) = t.call("Volume.resize", json!({"key": k, "new_size": 64 << 20})).error_name_and_message();
    assert_eq!(name, "Volume_shrink_refused", "{message}");
    let snap = t.call("Volume.snapshot", json!({"key": k})).ok();
    let (name, _) = t.call("Volume.resize", json!({"key": key(&snap), "new_size": GIB})).error_name_and_message();
    assert_eq!(name, "Volume_read_only");
    assert_eq!(t.call("Volume.stat", json!({"key": k})).ok()["virtual_size"], json!(size), "nothing changed");
}

#[test]
fn ceph_probe_finds_pools_and_existing_srs() {
    let t = TestSr::create();
    let mut connection = t.lab.device_config();
    connection.as_object_mut().expect("object").remove("pool");
    let results = t.plugin.call("SR.probe", json!({"configuration": connection})).ok();
    let results = results.as_array().expect("array");
    for r in results {
        if r["configuration"].get("sr_uuid").is_some() {
            assert_eq!(r["complete"], true, "xapi's rule: sr_uuid in configuration ⇒ complete");
        }
        if r.get("sr").is_some() {
            assert!(r["configuration"].get("sr_uuid").is_some(), "xapi's rule: sr ⇒ sr_uuid in configuration");
        }
    }
    assert!(results.iter().any(|r| r["configuration"]["pool"] == json!(t.lab.pool) && r.get("sr").is_none()));
    let found = results.iter().find(|r| r["configuration"]["sr_uuid"] == json!(t.uuid)).expect("our SR is found");
    assert_eq!(found["sr"]["name"], "test SR");
    // The configuration found attaches the same SR.
    let sr = t.plugin.call("SR.attach", json!({"configuration": found["configuration"]})).ok();
    assert_eq!(sr, json!(t.sr));
}

#[test]
fn ceph_create_twice_is_idempotent_and_a_taken_namespace_is_refused() {
    let t = TestSr::create();
    let again = t
        .plugin
        .call("SR.create", json!({"uuid": t.uuid, "configuration": t.config, "name": "test SR", "description": ""}))
        .ok();
    assert_eq!(again, t.config);
    let mut other = t.config.clone();
    other.as_object_mut().expect("object").remove("sr_uuid");
    let out = t.plugin.call(
        "SR.create",
        json!({"uuid": uuid::Uuid::new_v4().to_string(), "configuration": other, "name": "x", "description": ""}),
    );
    let (name, message) = out.error_name_and_message();
    assert_eq!(name, "SR_namespace_in_use", "{message}");
}

/// Bad requests: a clear error, and nothing changes in the SR or the pool.
#[test]
fn ceph_bad_input_changes_nothing() {
    let t = TestSr::create();
    let v = t.create_volume("keep", 4096);
    let before = (t.ls(), t.images());
    let huge = 1i64 << 51;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("Volume.create", json!({"name": "z", "description": "", "size": 0, "sharable": false}), "Invalid_request"),
        ("Volume.create", json!({"name": "z", "description": "", "size": -1, "sharable": false}), "Invalid_request"),
        ("Volume.create", json!({"name": "z", "description": "", "size": huge, "sharable": false}), "Invalid_request"),
        ("Volume.create", json!({"name": "z", "description": "", "size": 1.5, "sharable": false}), "Invalid_request"),
        ("Volume.create", json!({"name": "z", "description": "", "size": "1", "sharable": false}), "Invalid_request"),
        ("Volume.stat", json!({"key": "not-a-key"}), "Volume_does_not_exist"),
        ("Volume.destroy", json!({"key": "not-a-key"}), "Volume_does_not_exist"),
        ("Volume.set", json!({"key": uuid::Uuid::new_v4().to_string(), "k": "a", "v": "b"}), "Volume_does_not_exist"),
        ("Volume.clone", json!({"key": "../etc"}), "Volume_does_not_exist"),
        ("Volume.resize", json!({"key": key(&v), "new_size": 0}), "Invalid_request"),
        ("Volume.resize", json!({"key": key(&v), "new_size": 512}), "Volume_shrink_refused"),
    ];
    for (method, args, expected) in cases {
        let (name, message) = t.call(method, args.clone()).error_name_and_message();
        assert_eq!(name, expected, "{method} {args}: {message}");
    }
    assert_eq!((t.ls(), t.images()), before, "bad requests changed the SR");
    let sr = common::layout::uri::SrUri::parse(&t.sr).expect("sr");
    assert_eq!(
        common::admin::check::check(&common::host::Host::from_env(), &sr, false, Duration::ZERO).expect("check"),
        vec![],
        "no key left behind"
    );
}

/// SR.create with a bad device-config: the error, after checking that the SR's namespace
/// (derived from the uuid) was not created.
fn create_error(config: Value) -> (String, String) {
    let lab = Lab::get();
    let plugin = Plugin::new(Kind::Volume);
    let uuid = uuid::Uuid::new_v4().to_string();
    let out = plugin.call("SR.create", json!({"uuid": uuid, "configuration": config, "name": "x", "description": ""}));
    let namespaces = lab.rbd(&["namespace", "ls", "--format", "json", &lab.pool]);
    assert!(!namespaces.contains(&uuid), "a failed SR.create left its namespace behind: {namespaces}");
    out.error_name_and_message()
}

#[test]
fn ceph_bad_device_config_is_refused_before_anything_happens() {
    let lab = Lab::get();
    let with = |k: &str, v: Value| {
        let mut c = lab.device_config();
        c[k] = v;
        c
    };
    let (name, message) = create_error(with("keyrign", json!("/tmp/x")));
    assert_eq!(name, "Invalid_device_config");
    assert!(message.contains("`keyrign`") && message.contains("ceph_conf"), "{message}");
    let mut no_pool = lab.device_config();
    no_pool.as_object_mut().expect("object").remove("pool");
    assert!(create_error(no_pool).1.contains("`pool` is required"));
    let (name, message) = create_error(with("pool", json!("no-such-pool")));
    assert_eq!(name, "Pool_does_not_exist");
    assert!(message.contains(&lab.pool), "the error lists the pools that exist: {message}");
    let (name, message) = create_error(with("ceph_user", json!("nobody")));
    assert_eq!(name, "Invalid_device_config", "{message}");
    assert!(message.contains("has no key for client.nobody"), "{message}");
    let dir = cephrbd_tests::scratch_dir("badkey");
    let keyring = dir.join("k");
    std::fs::write(&keyring, "[client.admin]\n\tkey = AQBHhSRpAAAAABAAmeTPsOgkxhxmRQBVw0pMOQ==\n").expect("write");
    let (name, message) = create_error(with("keyring", json!(keyring.display().to_string())));
    assert_eq!(name, "Ceph_permission_denied", "{message}");
    assert!(!message.contains("AQBHhSRp"), "a secret reached an error: {message}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut dead = with("mon_host", json!(listener.local_addr().expect("addr").to_string()));
    dead["timeout"] = json!("3");
    dead["ceph_conf"] = json!("/dev/null");
    let started = std::time::Instant::now();
    let (name, message) = create_error(dead);
    assert_eq!(name, "Ceph_unreachable", "{message}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ceph_unreachable_cluster_is_reported_by_sr_stat_within_the_limit() {
    let t = TestSr::create();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut sr = common::layout::uri::SrUri::parse(&t.sr).expect("ours");
    sr.conn.mon_host = Some(listener.local_addr().expect("addr").to_string());
    sr.conn.conf = "/dev/null".into();
    sr.conn.timeout = std::time::Duration::from_secs(3);
    let started = std::time::Instant::now();
    let stat = t.plugin.call("SR.stat", json!({"sr": sr.render()})).ok();
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(stat["health"][0], "Unreachable", "{stat}");
}

#[test]
fn ceph_sr_stat_is_quota_aware() {
    let lab = Lab::get();
    let pool = cephrbd_tests::unique("tq");
    lab.ceph(&["osd", "pool", "create", &pool, "8", "8"]);
    lab.rbd(&["pool", "init", &pool]);
    lab.ceph(&["osd", "pool", "set-quota", &pool, "max_bytes", "1073741824"]);
    let t = TestSr::with_config(|c| c["pool"] = json!(pool));
    let ok = cephrbd_tests::wait_until(std::time::Duration::from_secs(30), || {
        t.call("SR.stat", json!({})).ok()["total_space"] == json!(1i64 << 30)
    });
    let stat = t.call("SR.stat", json!({})).ok();
    assert!(ok, "total_space is the quota: {stat}");
    assert!(stat["free_space"].as_i64().expect("int") <= 1 << 30);
    drop(t);
    lab.ceph(&["osd", "pool", "rm", &pool, &pool, "--yes-i-really-really-mean-it"]);
}

/// 8 processes at once, each creating, snapshotting, cloning and setting keys, and all of
/// them setting keys on one shared volume: nothing is lost.
#[test]
fn ceph_parallel_processes_lose_nothing() {
    let t = TestSr::create();
    let shared = key(&t.create_volume("shared", 4096));
    let workers = 8;
    std::thread::scope(|s| {
        for w in 0..workers {
            let t = &t;
            let shared = shared.clone();
            s.spawn(move || {
                let v = key(&t.create_volume(&format!("w{w}"), 4096));
                for i in 0..3 {
                    t.call("Volume.set", json!({"key": v, "k": format!("k{i}"), "v": format!("{w}-{i}")})).ok();
                    t.call("Volume.set", json!({"key": shared, "k": format!("w{w}-k{i}"), "v": "x"})).ok();
                }
                let snap = t.call("Volume.snapshot", json!({"key": v})).ok();
                t.call("Volume.clone", json!({"key": key(&snap)})).ok();
                t.call("Volume.clone", json!({"key": v})).ok();
            });
        }
    });
    let all = t.ls();
    assert_eq!(all.len(), 1 + workers * 4, "every volume is there");
    let shared_keys = &all.iter().find(|v| key(v) == shared).expect("shared")["keys"];
    assert_eq!(shared_keys.as_object().expect("keys").len(), workers * 3, "no key lost: {shared_keys}");
    for v in all.iter().filter(|v| v["name"].as_str().is_some_and(|n| n.starts_with('w')) && v["read_write"] == true) {
        assert!(v["keys"].as_object().is_some_and(|k| k.len() == 3 || k.is_empty()), "{v}");
    }
}

/// A stopped monitor (SIGSTOP: the process is there, the port accepts, nothing answers):
/// SR.stat reports Unreachable within the SR's time limit, and Healthy once it resumes.
#[test]
fn ceph_stopped_monitor_gives_unreachable_within_the_limit_then_recovers() {
    let private = cephrbd_tests::PrivateLab::start("stopmon");
    let t = TestSr::on(private.lab.clone(), |c| c["timeout"] = json!("4"));
    assert_eq!(t.call("SR.stat", json!({})).ok()["health"][0], "Healthy");
    private.signal("mon.a", "STOP");
    let started = std::time::Instant::now();
    let stat = t.call("SR.stat", json!({})).ok();
    let elapsed = started.elapsed();
    let (name, _) = t
        .call("Volume.create", json!({"name": "x", "description": "", "size": 4096, "sharable": false}))
        .error_name_and_message();
    private.signal("mon.a", "CONT");
    assert_eq!(stat["health"][0], "Unreachable", "{stat}");
    assert!(elapsed < std::time::Duration::from_secs(10), "SR.stat took {elapsed:?} with a 4 s limit");
    assert_eq!(name, "Ceph_unreachable");
    let ok = cephrbd_tests::wait_until(std::time::Duration::from_secs(30), || {
        t.plugin
            .call_raw(
                "SR.stat",
                &["--json"],
                serde_json::to_string(&json!({"dbg": "d", "sr": t.sr})).expect("json").as_bytes(),
            )
            .status
            == 0
    });
    assert!(ok);
    assert_eq!(t.call("SR.stat", json!({})).ok()["health"][0], "Healthy", "recovered");
    t.create_volume("after recovery", 4096);
}

#[test]
fn ceph_destroy_of_a_non_empty_sr_is_refused() {
    let t = TestSr::create();
    t.create_volume("still here", 4096);
    let (name, message) = t.call("SR.destroy", json!({})).error_name_and_message();
    assert_eq!(name, "SR_not_empty", "{message}");
    assert!(message.contains("1 volume"), "{message}");
    assert_eq!(t.ls().len(), 1, "nothing changed");
}

/// With fast-diff, physical_utilisation is what the image really uses.
#[test]
fn ceph_usage_is_real_with_fast_diff() {
    let t = TestSr::with_config(|c| c["image_features"] = json!("layering,exclusive-lock,object-map,fast-diff"));
    let v = t.create_volume("used", 64 << 20);
    assert_eq!(v["physical_utilisation"], 0);
    let spec = format!("{}/{}/{}", t.lab.pool, t.namespace, image_of(&v));
    t.lab.rbd(&["bench", "--io-type", "write", "--io-size", "4M", "--io-total", "8M", "--io-pattern", "seq", &spec]);
    let used = t.call("Volume.stat", json!({"key": key(&v)})).ok()["physical_utilisation"].as_i64().expect("int");
    assert_eq!(used, 8 << 20);
    assert_eq!(t.ls()[0]["physical_utilisation"], json!(8 << 20));
}
