//! Every Ceph failure class gets an error that names its real cause (issue 14 item 8): a
//! missing, unreadable or undecodable keyring is not a missing pool, a ceph.conf without
//! monitors is not a missing SR, a kernel without the rbd module is not a missing image.

// An integration-test crate is all tests; the lint is for test code mixed into the library.
#![allow(clippy::tests_outside_test_module)]

use std::path::{Path, PathBuf};

use cephrbd_tests::xapi::{run_driver, Requests, XenApiServer};
use cephrbd_tests::{scratch_dir, uri_with_policy, Kind, Lab, Plugin, TestSr};
use common::layout::uri::SrUri;
use serde_json::{json, Value};

/// The SR string of `t` with another keyring and/or ceph.conf.
fn sr_with(t: &TestSr, keyring: Option<&Path>, conf: Option<&Path>) -> String {
    let mut sr = SrUri::parse(&t.sr).expect("our SR string");
    if let Some(k) = keyring {
        sr.conn.keyring = Some(k.to_path_buf());
    }
    if let Some(c) = conf {
        sr.conn.conf = c.to_path_buf();
    }
    sr.render()
}

fn create_on(t: &TestSr, sr: &str) -> (String, String) {
    t.plugin
        .call("Volume.create", json!({"sr": sr, "name": "x", "description": "", "size": 4096, "sharable": false}))
        .error_name_and_message()
}

#[test]
fn ceph_keyring_problems_name_the_keyring() {
    let lab = Lab::get();
    let dir = scratch_dir("keyring-errors");
    let keyring = dir.join("ceph.client.keyring");
    std::fs::copy(&lab.keyring, &keyring).expect("copy");
    let t = TestSr::with_config(|c| c["keyring"] = json!(keyring.display().to_string()));
    let v = t.create_volume("kept", 4096);
    let missing = dir.join("gone.keyring");

    // SR.create and SR.attach check the keyring before any Ceph call.
    let mut config = t.config.clone();
    config["keyring"] = json!(missing.display().to_string());
    let (name, message) = t.plugin.call("SR.attach", json!({"configuration": config})).error_name_and_message();
    assert_eq!(name, "Invalid_device_config", "{message}");
    assert!(message.contains("cannot be read") && message.contains("gone.keyring"), "{message}");

    // Calls on the SR string reach Ceph, whose ENOENT is the keyring, not the object.
    for (what, path) in [("missing", missing.clone()), ("a directory", dir.clone())] {
        let sr = sr_with(&t, Some(&path), None);
        let (name, message) = create_on(&t, &sr);
        assert_eq!(name, "Ceph_keyring_unusable", "{what}: {message}");
        assert!(message.contains(&path.display().to_string()), "{what}: {message}");
        let out = t.plugin.call("Volume.destroy", json!({"sr": sr, "key": v["key"]}));
        assert_eq!(out.error_name_and_message().0, "Ceph_keyring_unusable", "{what}: destroy must not succeed");
        let (name, message) = t.plugin.call("SR.stat", json!({"sr": sr})).error_name_and_message();
        assert_eq!(name, "Ceph_keyring_unusable", "{what}: {message}");
    }
    assert_eq!(t.ls().len(), 1, "nothing was destroyed");

    // The legacy driver: SRUnavailable, naming the keyring.
    let mut requests = Requests::new(vec![
        ("pool".to_owned(), lab.pool.clone()),
        ("ceph_conf".to_owned(), lab.conf.display().to_string()),
        ("ceph_user".to_owned(), lab.user.clone()),
        ("keyring".to_owned(), missing.display().to_string()),
        ("namespace".to_owned(), t.namespace.clone()),
    ]);
    requests.sr_uuid.clone_from(&t.uuid);
    let server = XenApiServer::start(&dir, &requests.session_ref, &requests.sr_ref, "errors");
    let fault = run_driver(&requests.sr("sr_attach", &[], true), server.socket(), &dir.join("run")).fault();
    assert!(fault.string.contains("gone.keyring") && fault.string.contains("cannot be read"), "{}", fault.string);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ceph_a_conf_without_monitors_is_not_a_missing_sr() {
    let t = TestSr::create();
    let dir = scratch_dir("nomon");
    let conf = dir.join("ceph.conf");
    let fsid = std::fs::read_to_string(&t.lab.conf)
        .expect("conf")
        .lines()
        .find(|l| l.trim_start().starts_with("fsid"))
        .expect("fsid line")
        .to_owned();
    std::fs::write(&conf, format!("[global]\n{fsid}\n")).expect("write");
    let mut config = t.config.clone();
    config["ceph_conf"] = json!(conf.display().to_string());
    let (name, message) = t.plugin.call("SR.attach", json!({"configuration": config})).error_name_and_message();
    assert_eq!(name, "Ceph_no_monitors", "{message}");
    assert!(message.contains("mon_host") && message.contains(&conf.display().to_string()), "{message}");
    let sr = sr_with(&t, None, Some(&conf));
    assert_eq!(t.plugin.call("SR.stat", json!({"sr": sr})).error_name_and_message().0, "Ceph_no_monitors");
    let (name, message) = create_on(&t, &sr_with(&t, None, Some(&dir.join("missing.conf"))));
    assert_eq!(name, "Ceph_config_unreadable", "{message}");
    assert!(message.contains("missing.conf"), "{message}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ceph_kernel_rbd_without_the_module_says_so() {
    let t = TestSr::create();
    let v = t.create_volume("krbd", 4 << 20);
    let run: PathBuf = scratch_dir("krbd");
    let dp = Plugin::new(Kind::Datapath).with_env("CEPHRBD_RUN_DIR", run.display().to_string());
    let uri = uri_with_policy(&v, "krbd");
    let out = dp.call("Datapath.attach", json!({"uri": uri, "domain": "0"}));
    if Path::new("/sys/bus/rbd").is_dir() {
        // A kernel with the driver maps it; nothing to classify here.
        let _: Value = out.ok();
        dp.call("Datapath.detach", json!({"uri": uri, "domain": "0"})).ok();
    } else {
        let (name, message) = out.error_name_and_message();
        assert_eq!(name, "Kernel_module_missing", "{message}");
        assert!(message.contains("modprobe rbd") && message.contains("datapath=qsd"), "{message}");
    }
    let _ = std::fs::remove_dir_all(run);
}
