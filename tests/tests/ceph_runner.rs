//! The command runner and the Ceph connection against the real test cluster.

// An integration-test crate is all tests; the lint is for test code mixed into the library.
#![allow(clippy::tests_outside_test_module)]

use std::net::TcpListener;
use std::time::{Duration, Instant};

use cephrbd_tests::{unique, Lab};
use common::ceph::{CephError, Kind};
use common::process::runner::{Cmd, Program};

/// A monitor address that accepts TCP connections and never says a word: what a wedged
/// or SIGSTOPped monitor looks like to a client.
fn silent_monitor() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    (listener, addr)
}

#[test]
fn ceph_runner_creates_and_removes_an_image() {
    let lab = Lab::get();
    let conn = lab.conn(Duration::from_secs(30));
    let spec = format!("{}/{}", lab.pool, unique("t-runner"));
    conn.rbd("image", &["create", "--size", "64M", &spec]).expect("rbd create");
    let info: serde_json::Value = conn.rbd_json("image", &["info", &spec], "null").expect("rbd info");
    assert_eq!(info["size"], 64 << 20);
    let err = conn.rbd("image", &["create", "--size", "64M", &spec]).unwrap_err();
    assert_eq!(err.kind(), Kind::AlreadyExists, "{err}");
    conn.rbd("image", &["rm", "--no-progress", &spec]).expect("rbd rm");
    let err = conn.rbd_json::<serde_json::Value>(&spec, &["info", &spec], "null").unwrap_err();
    assert!(matches!(err, CephError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn ceph_hung_command_is_killed_at_its_limit() {
    let lab = Lab::get();
    let (_listener, addr) = silent_monitor();
    let rbd = Program::resolve("rbd").expect("rbd installed");
    let started = Instant::now();
    // Ceph's own client time limit is set far beyond ours, so only the runner can end it.
    let err = Cmd::new(&rbd, Duration::from_secs(2))
        .args(["--conf", "/dev/null", "--id", &lab.user, "--keyring"])
        .arg(&lab.keyring)
        .args(["--mon-host", &addr, "--client-mount-timeout", "600", "ls", &lab.pool])
        .run()
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(err.timed_out(), "{err}");
    assert!(elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(7), "killed after {elapsed:?}");
    assert!(err.to_string().contains("did not finish within 2 s and was killed"), "{err}");
}

#[test]
fn ceph_unreachable_monitor_is_a_clear_error_within_the_limit() {
    let lab = Lab::get();
    let (_listener, addr) = silent_monitor();
    let mut conn = lab.conn(Duration::from_secs(3));
    conn.conf = "/dev/null".into();
    conn.mon_host = Some(addr);
    let started = Instant::now();
    let err = conn.rbd("pool", &["ls", &lab.pool]).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(9), "took {:?}", started.elapsed());
    assert_eq!(err.kind(), Kind::Unreachable, "{err}");
    assert!(err.to_string().contains("did not answer within 3 s"), "{err}");
}

#[test]
fn ceph_wrong_keyring_is_permission_denied() {
    let lab = Lab::get();
    let dir = cephrbd_tests::scratch_dir("keyring");
    let keyring = dir.join("wrong.keyring");
    std::fs::write(&keyring, "[client.admin]\n\tkey = AQBHhSRpAAAAABAAmeTPsOgkxhxmRQBVw0pMOQ==\n").expect("write");
    let mut conn = lab.conn(Duration::from_secs(10));
    conn.keyring = Some(keyring);
    let err = conn.rbd("pool", &["ls", &lab.pool]).unwrap_err();
    let text = common::error::chain(&err);
    assert!(!text.contains("AQBHhSRp"), "a key reached an error: {text}");
    assert_eq!(err.kind(), Kind::PermissionDenied, "{text}");
    let _ = std::fs::remove_dir_all(dir);
}
