//! No secret reaches anything cephrbd emits (issue 14 item 6): when Ceph cannot decode a
//! keyring it prints `type=key val=<KEY>` on stderr; that text goes into the SMAPIv3 error
//! object, the SMAPIv1 fault string and the logs, and the key must be scrubbed from all of
//! them, by value.

// An integration-test crate is all tests; the lint is for test code mixed into the library.
#![allow(clippy::tests_outside_test_module)]

use std::path::Path;

use cephrbd_tests::xapi::{run_driver_with, Requests, XenApiServer};
use cephrbd_tests::{scratch_dir, Lab, TestSr};
use serde_json::json;

/// The key of the `[client.<user>]` section of a keyring file.
fn key_of(keyring: &Path) -> String {
    let text = std::fs::read_to_string(keyring).expect("read keyring");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("key"))
        .filter_map(|l| l.trim_start().strip_prefix('='))
        .map(|k| k.trim().to_owned())
        .next()
        .expect("a key line")
}

/// Fails if `text` holds the key or any 16-character piece of it.
fn assert_no_key(what: &str, text: &str, key: &str) {
    let bytes = key.as_bytes();
    for piece in bytes.windows(16) {
        let piece = std::str::from_utf8(piece).expect("base64 is ASCII");
        assert!(!text.contains(piece), "{what} leaks the key (…{piece}…):\n{text}");
    }
}

#[test]
fn ceph_an_undecodable_key_never_leaks_through_either_front_end_or_the_logs() {
    let lab = Lab::get();
    let dir = scratch_dir("secrets");
    let keyring = dir.join("ceph.client.keyring");
    std::fs::copy(&lab.keyring, &keyring).expect("copy keyring");
    let t = TestSr::with_config(|c| c["keyring"] = json!(keyring.display().to_string()));
    t.create_volume("before", 4096);

    // A key damaged by a bad copy (its last character lost): Ceph refuses it and echoes it.
    let real = key_of(&lab.keyring);
    let damaged = &real[..real.len() - 1];
    std::fs::write(&keyring, format!("[client.{}]\n\tkey = {damaged}\n", lab.user)).expect("write keyring");
    let leaked_by_ceph = {
        let out = std::process::Command::new("rbd")
            .args(["--conf", &lab.conf.display().to_string(), "--id", &lab.user, "--keyring"])
            .arg(&keyring)
            .args(["ls", &lab.pool])
            .output()
            .expect("rbd");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(leaked_by_ceph.contains(&format!("val={damaged}")), "Ceph no longer echoes the key: {leaked_by_ceph}");

    // SMAPIv3: the error object on stdout and the log on stderr, at debug level.
    let plugin = cephrbd_tests::Plugin::new(cephrbd_tests::Kind::Volume).with_env("CEPHRBD_LOG", "debug");
    for (method, args) in [
        ("Volume.create", json!({"sr": t.sr, "name": "x", "description": "", "size": 4096, "sharable": false})),
        ("SR.stat", json!({"sr": t.sr})),
        ("SR.attach", json!({"configuration": t.config})),
    ] {
        let out = plugin.call(method, args);
        assert_eq!(out.status, 1, "{method} succeeded with a damaged key");
        assert_no_key(&format!("{method} answer"), &out.stdout, damaged);
        assert_no_key(&format!("{method} log"), &out.stderr, damaged);
        assert!(out.stdout.contains("<redacted>"), "{method}: Ceph's message is kept, the key hidden: {}", out.stdout);
    }

    // SMAPIv1: the fault string and the log.
    let config: Vec<(String, String)> = t
        .config
        .as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    let mut requests = Requests::new(config);
    requests.sr_uuid.clone_from(&t.uuid);
    let server = XenApiServer::start(&dir, &requests.session_ref, &requests.sr_ref, "secrets");
    for document in
        [requests.sr("sr_attach", &[], true), requests.vdi_create(4096, "x"), requests.sr("sr_scan", &[], true)]
    {
        let out = run_driver_with(&document, server.socket(), &dir.join("run"), &[("CEPHRBD_LOG", "debug")]);
        let fault = out.fault();
        assert_no_key("legacy fault", &fault.string, damaged);
        assert_no_key("legacy answer", &out.stdout, damaged);
        assert_no_key("legacy log", &out.stderr, damaged);
    }

    std::fs::copy(&lab.keyring, &keyring).expect("restore keyring");
    drop(t);
    let _ = std::fs::remove_dir_all(dir);
}
