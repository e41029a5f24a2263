//! Schema coverage: every IDL method has a schema and every schema names an IDL method.
//!
//! Two checks: `schemas/` against the committed transcription `idl-v5.txt` (always), and
//! that transcription against the spec it was taken from, `shared/spec/idl-v5.md`, when
//! the spec is checked out beside the repository (as in CI).

// An integration-test crate is all tests; the lint is for test code mixed into the library.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// `Interface.method` → parameter names, from `idl-v5.txt`.
fn transcription() -> BTreeMap<String, Vec<String>> {
    xapi_storage_schemas::IDL_METHODS
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut words = l.split_whitespace().map(str::to_owned);
            let method = words.next().expect("method name");
            (method, words.collect())
        })
        .collect()
}

#[test]
fn every_idl_method_has_a_schema_and_every_schema_an_idl_method() {
    let idl = transcription();
    let schemas: Vec<&str> = xapi_storage_schemas::methods().collect();
    let missing: Vec<&String> = idl.keys().filter(|m| !schemas.contains(&m.as_str())).collect();
    let extra: Vec<&&str> = schemas.iter().filter(|m| !idl.contains_key(**m)).collect();
    assert!(missing.is_empty(), "IDL methods without a schema: {missing:?}");
    assert!(extra.is_empty(), "schemas naming no IDL method: {extra:?}");
    assert_eq!(idl.len(), 45, "Plugin 3 + SR 9 + Volume 19 + Datapath 8 + Data 6");
}

#[test]
fn every_schema_requires_exactly_the_idl_parameters_in_order() {
    for (method, params) in transcription() {
        let text = xapi_storage_schemas::file(&format!("{method}.json")).expect("schema exists");
        let doc: Value = serde_json::from_str(text).expect("valid JSON");
        assert_eq!(doc["title"], method.as_str());
        let args = &doc["$defs"]["args"];
        let required: Vec<&str> =
            args["required"].as_array().expect("required").iter().filter_map(Value::as_str).collect();
        assert_eq!(required, params, "{method}: required must list the IDL parameters in declaration order");
        let declared: Vec<&String> = args["properties"].as_object().expect("properties").keys().collect();
        assert_eq!(declared.len(), params.len(), "{method}: a property for each parameter, nothing else");
        assert_eq!(args["additionalProperties"], true, "{method}: xapi may send fields newer than this IDL");
        assert!(doc["$defs"]["result"].is_object(), "{method}: result schema");
    }
}

/// Reads the method tables of the spec: rows `| `Interface.method` | dbg, … |`.
fn spec_methods(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(name), Some(params)) = (cells.get(1), cells.get(2)) else { continue };
        let Some(name) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) else { continue };
        let interface = name.split('.').next().unwrap_or_default();
        if !["Plugin", "SR", "Volume", "Datapath", "Data"].contains(&interface) || !name.contains('.') {
            continue;
        }
        let params = params
            .split(',')
            .filter_map(|p| {
                let p = p.trim().trim_start_matches('*');
                let word: String = p.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                (!word.is_empty()).then_some(word)
            })
            .collect::<Vec<String>>();
        // Method tables list the parameters, dbg first; other tables (version history) do not.
        if params.first().map(String::as_str) == Some("dbg") {
            out.entry(name.to_owned()).or_insert(params);
        }
    }
    out
}

#[test]
fn transcription_matches_the_spec_when_it_is_checked_out() {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/idl-v5.md");
    let Ok(text) = std::fs::read_to_string(&spec) else {
        eprintln!("skipped: {} is not checked out beside the repository", spec.display());
        return;
    };
    assert_eq!(spec_methods(&text), transcription(), "idl-v5.txt differs from {}", spec.display());
}
