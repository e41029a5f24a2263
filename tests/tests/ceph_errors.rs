//! Every Ceph failure class gets an error that names its real cause (issue 14 item 8): a
//! missing, unreadable or undecodable keyring is not a missing pool, a ceph.conf without
//! monitors is not a missing SR, an aes256k key is not a malformed keyring. (A kernel
//! without the rbd module: tests/tests/ceph_kernel.rs, on a real kernel without it.)

// An integration-test crate is all tests; the lint is for test code mixed into the library.
#![allow(clippy::tests_outside_test_module)]

use std::path::Path;

use cephrbd_tests::xapi::{run_driver, Requests, XenApiServer};
use cephrbd_tests::{scratch_dir, Lab, TestSr};
use common::layout::uri::SrUri;
use serde_json::json;

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

/// An aes256k key (encoded type 2, as Ceph 19.2.6 and 20.2.4 make them; not a real key).
const AES256K_KEY: &str = "AgAAiStpAAAAACAAAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

/// Issue 15 item 4: a keyring holding an aes256k key, which the client cannot read (this
/// machine's 16.2, like XCP-ng's 14.2 and 15.2), gets an error that says so and gives the
/// fix, without the key; the doctor fails the key type with the same fix.
#[test]
fn ceph_an_aes256k_key_gets_the_explanation_and_the_fix() {
    let t = TestSr::create();
    let dir = scratch_dir("aes256k");
    let keyring = dir.join("ceph.client.keyring");
    std::fs::write(&keyring, format!("[client.{}]\n\tkey = {AES256K_KEY}\n", t.lab.user)).expect("write");
    let (name, message) = create_on(&t, &sr_with(&t, Some(&keyring), None));
    assert_eq!(name, "Ceph_key_type_unsupported", "{message}");
    for needle in ["aes256k", "auth_allowed_ciphers aes,aes256k", "--key_type aes", &keyring.display().to_string()] {
        assert!(message.contains(needle), "{needle:?} missing from: {message}");
    }
    let out = t.plugin.call("Volume.create", json!({"sr": sr_with(&t, Some(&keyring), None), "name": "x", "description": "", "size": 4096, "sharable": false}));
    assert!(!out.stdout.contains(AES256K_KEY) && !out.stderr.contains(AES256K_KEY), "the key leaked: {out:?}");

    // An aes key the cluster refuses: a wrong key, or (on 19.2.6/20.2.4 clusters that allow
    // only aes256k) any aes key. Ceph says the same for both, so the error names both.
    let wrong = dir.join("wrong.keyring");
    std::fs::write(&wrong, format!("[client.{}]\n\tkey = AQBsJQxpAAAAABAAAQIDBAUGBwgJCgsMDQ4PEA==\n", t.lab.user))
        .expect("write");
    let (name, message) = create_on(&t, &sr_with(&t, Some(&wrong), None));
    assert_eq!(name, "Ceph_permission_denied", "{message}");
    assert!(
        message.contains("check ceph_user and keyring") && message.contains("auth_allowed_ciphers aes,aes256k"),
        "{message}"
    );

    let doctor = std::process::Command::new(cephrbd_tests::binary("volume"))
        .args([
            "--doctor".to_owned(),
            format!("pool={}", t.lab.pool),
            format!("ceph_conf={}", t.lab.conf.display()),
            format!("keyring={}", keyring.display()),
        ])
        .output()
        .expect("doctor");
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert_eq!(doctor.status.code(), Some(1), "{report}");
    assert!(report.contains("FAIL cephx key type: an aes256k key") && report.contains("--key_type aes"), "{report}");
    assert!(!report.contains(AES256K_KEY), "{report}");
    let _ = std::fs::remove_dir_all(dir);
}
