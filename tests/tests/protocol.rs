//! The exec protocol through the real executables, called as xapi-storage-script calls
//! them: dispatch, `--json`, positional mode, and every kind of bad input.

// An integration-test crate is all tests; the lint is for test code mixed into the library.
#![allow(clippy::tests_outside_test_module)]

use cephrbd_tests::{check_error_object, Kind, Plugin};
use serde_json::json;

#[test]
fn plugin_query_of_both_plugins_is_schema_valid() {
    let volume = Plugin::new(Kind::Volume).call("Plugin.Query", json!({})).ok();
    assert_eq!(volume["plugin"], "cephrbd-ng", "plugin must equal the SR type of the directory name");
    assert_eq!(volume["required_api_version"], "5.0");
    assert!(volume["configuration"]["pool"].is_string());
    let datapath = Plugin::new(Kind::Datapath).call("Plugin.Query", json!({})).ok();
    assert_eq!(datapath["required_api_version"], "5.0");
}

#[test]
fn features_name_only_installed_methods() {
    for kind in [Kind::Volume, Kind::Datapath] {
        let plugin = Plugin::new(kind);
        let query = plugin.call("Plugin.Query", json!({})).ok();
        for (method, feature) in common::admin::plugin::FEATURE_OF_METHOD {
            let declared = query["features"].as_array().expect("features").contains(&json!(feature));
            let installed = plugin.methods().iter().any(|m| m.eq_ignore_ascii_case(method));
            assert_eq!(declared, installed, "{kind:?}: feature {feature} vs method {method}");
        }
        for (feature, methods) in common::admin::plugin::FEATURE_OF_ALL_METHODS {
            let declared = query["features"].as_array().expect("features").contains(&json!(feature));
            let installed =
                methods.iter().all(|method| plugin.methods().iter().any(|m| m.eq_ignore_ascii_case(method)));
            assert_eq!(declared, installed, "{kind:?}: feature {feature} vs methods {methods:?}");
        }
    }
    let volume = Plugin::new(Kind::Volume).call("Plugin.Query", json!({})).ok();
    assert!(volume["features"].as_array().expect("features").contains(&json!("VDI_CONFIG_CBT")), "{volume}");
}

#[test]
fn diagnostics_is_a_string() {
    let report = Plugin::new(Kind::Volume).call("Plugin.diagnostics", json!({})).ok();
    assert!(report.as_str().expect("string").contains("rbd:"), "{report}");
}

#[test]
fn method_names_match_case_insensitively_and_exactly() {
    let plugin = Plugin::new(Kind::Volume);
    // xapi-storage-script may resolve Plugin.query to the file Plugin.Query and vice versa.
    std::os::unix::fs::symlink(plugin.dir().join("Plugin.Query"), plugin.dir().join("plugin.QUERY")).expect("symlink");
    assert_eq!(plugin.call("plugin.QUERY", json!({})).ok()["plugin"], "cephrbd-ng");
    std::os::unix::fs::symlink(plugin.dir().join("Plugin.Query"), plugin.dir().join("Plugin.QueryX")).expect("symlink");
    let (name, message) = plugin.call("Plugin.QueryX", json!({})).error_name_and_message();
    assert_eq!(name, "Unimplemented");
    assert!(message.contains("unknown method `Plugin.QueryX`"), "{message}");
}

#[test]
fn positional_mode_for_an_operator() {
    let plugin = Plugin::new(Kind::Volume);
    let out = plugin.call_raw("Plugin.Query", &["my-dbg"], b"");
    assert_eq!(out.value()["plugin"], "cephrbd-ng");
    let help = plugin.call_raw("Plugin.Query", &["--help"], b"");
    assert_eq!(help.status, 0);
    assert!(help.stdout.contains("<dbg>"), "{}", help.stdout);
}

/// Each bad request: a clear error object naming the problem, exit 1, nothing else on
/// stdout (the value parses as exactly one JSON value).
#[test]
fn bad_input_gets_a_clear_error_object() {
    let plugin = Plugin::new(Kind::Volume);
    let cases: &[(&str, &[u8], &str)] = &[
        ("Plugin.Query", b"{\"dbg\": ", "not valid JSON"),
        ("Plugin.Query", b"", "no request on stdin"),
        ("Plugin.Query", b"   \n", "no request on stdin"),
        ("Plugin.Query", b"[\"dbg\"]", "must be a JSON object"),
        ("Plugin.Query", b"{\"dbg\":\"a\"} {\"dbg\":\"b\"}", "not valid JSON"),
        ("Plugin.Query", b"{}", "field `dbg`: required field is missing"),
        ("Plugin.Query", b"{\"dbg\": 7}", "field `dbg`: expected a string, got the integer 7"),
        ("Plugin.diagnostics", b"{\"dbg\": null}", "field `dbg`: expected a string, got null"),
    ];
    for (method, stdin, expected) in cases {
        let out = plugin.call_raw(method, &["--json"], stdin);
        assert_eq!(out.status, 1, "{method} {stdin:?}: {}", out.stdout);
        let err = out.value();
        check_error_object(&err);
        assert_eq!(err["code"], "SR_BACKEND_FAILURE");
        assert_eq!(err["params"][0], "Invalid_request", "{err}");
        let message = err["params"][1].as_str().expect("message");
        assert!(message.contains(expected), "{method} {stdin:?}: {message:?} should mention {expected:?}");
        assert_eq!(out.stdout.lines().count(), 1, "exactly one line on stdout: {:?}", out.stdout);
    }
}

#[test]
fn a_request_with_trailing_newline_or_extra_fields_is_accepted() {
    let plugin = Plugin::new(Kind::Datapath);
    for stdin in [&b"{\"dbg\":\"x\"}\n"[..], b"{\"dbg\":\"x\",\"from_a_newer_xapi\":[1,2]}"] {
        assert_eq!(plugin.call_raw("Plugin.Query", &["--json"], stdin).status, 0);
    }
}

#[test]
fn own_name_lists_its_methods_and_rejects_unknown_ones() {
    let binary = cephrbd_tests::binary("volume");
    let out = std::process::Command::new(&binary).arg("--list").output().expect("runs");
    let list = String::from_utf8(out.stdout).expect("utf8");
    assert!(list.lines().any(|l| l == "Plugin.Query"), "{list}");
    let out = std::process::Command::new(&binary).args(["Bogus.op", "--json"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON value");
    check_error_object(&err);
    assert!(err["params"][1].as_str().expect("message").contains("Bogus.op"));
}
