//! The legacy driver's answers are always one well-formed `methodResponse` on stdout and
//! exit status 0, whatever it is given and whatever goes wrong inside it. No cluster needed.

// An integration-test crate is all tests; the lint is for test code mixed into the library.
#![allow(clippy::tests_outside_test_module)]

use std::path::Path;

use cephrbd_tests::scratch_dir;
use cephrbd_tests::xapi::{run_driver_with, Requests};

/// Issue 14 item 3: a panic inside the driver (injected with `CEPHRBD_PANIC=1`, a test-only
/// hook) still prints exactly one methodResponse, a fault, and exits 0.
#[test]
fn a_panic_still_answers_one_fault_and_exits_0() {
    let run = scratch_dir("legacy-panic");
    let requests = Requests::new(vec![]);
    let out = run_driver_with(&requests.driver_info(), Path::new("/nonexistent"), &run, &[("CEPHRBD_PANIC", "1")]);
    let fault = out.fault();
    assert_eq!(fault.code, 202, "{}", fault.string);
    assert!(fault.string.contains("panicked") && fault.string.contains("injected panic"), "{}", fault.string);
    let _ = std::fs::remove_dir_all(run);
}

/// Python's XML-RPC reader (expat, as strict as xapi's parser about XML 1.0 characters)
/// accepts `document`; `Err` with its complaint otherwise.
fn python_reads(document: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, xmlrpc.client\ntry:\n    xmlrpc.client.loads(sys.stdin.buffer.read())\nexcept xmlrpc.client.Fault:\n    pass\n",
        ])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (Debian's, as scripts/build-rpm uses)");
    child.stdin.take().expect("stdin").write_all(document.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("wait");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Issue 14 item 5: control characters in the request (here the command name, as XML
/// character references) are echoed as visible escapes, never raw: the answer stays a
/// well-formed document.
#[test]
fn control_characters_in_a_request_never_break_the_answer() {
    let run = scratch_dir("legacy-ctl");
    let name = "sr_&#1;&#27;[2J&#8;";
    let document = format!(
        "<methodCall><methodName>{name}</methodName><params><param><value><struct><member><name>command</name><value>{name}</value></member></struct></value></param></params></methodCall>"
    );
    let out = run_driver_with(&document, Path::new("/nonexistent"), &run, &[]);
    let fault = out.fault();
    assert_eq!(fault.code, 38, "{}", fault.string);
    assert!(fault.string.contains("sr_\\u{1}\\u{1b}[2J\\u{8}"), "{:?}", fault.string);
    assert!(out.stdout.chars().all(legacy::xmlrpc::is_xml_char), "{:?}", out.stdout);
    python_reads(&out.stdout).unwrap_or_else(|e| panic!("not well-formed: {e}\n{:?}", out.stdout));
    let _ = std::fs::remove_dir_all(run);
}

/// Issue 14 item 5: a huge request is not echoed back whole: neither in the fault (stdout,
/// which xapi reads and logs) nor in the driver's own log. Through the executable (an
/// argument is at most 128 KiB) and in process with 10 MiB.
#[test]
fn huge_requests_are_not_echoed_back() {
    let run = scratch_dir("legacy-huge");
    let requests = Requests::new(vec![("pool".to_owned(), "rbd".to_owned())]);
    for size in ["A".repeat(100 << 10), "\u{1}".repeat(30 << 10)] {
        let document = requests.vdi_create(1, "x").replace("<value>1</value>", &format!("<value>{size}</value>"));
        let out = run_driver_with(&document, Path::new("/nonexistent"), &run, &[]);
        let fault = out.fault();
        assert_eq!(fault.code, 79, "{}", &fault.string[..200.min(fault.string.len())]);
        assert!(out.stdout.len() < 16 << 10, "{} bytes on stdout", out.stdout.len());
        assert!(out.stderr.len() < 32 << 10, "{} bytes on stderr", out.stderr.len());
        python_reads(&out.stdout).unwrap_or_else(|e| panic!("not well-formed: {e}"));
    }
    let document =
        requests.vdi_create(1, "x").replace("<value>1</value>", &format!("<value>{}</value>", "A".repeat(10 << 20)));
    let answer = legacy::driver::run(&["CephRBDSR".into(), document.into()]);
    assert!(answer.len() < 16 << 10, "{} bytes answered to a 10 MiB request", answer.len());
    let _ = std::fs::remove_dir_all(run);
}
