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
