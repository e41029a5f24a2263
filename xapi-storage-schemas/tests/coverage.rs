//! Schema coverage against the in-repo transcription of the IDL, `docs/idl-v5.md`.
//!
//! Every transcribed method of Plugin, SR, Volume, Datapath and Data has a schema
//! (`schemas/<Interface>.<method>.json`) and every schema names a transcribed method; each
//! schema requires exactly the transcribed parameters, in declaration order, and its result
//! is the transcribed result type. The transcription is compiled in (`include_str!`), so a
//! missing or moved file stops the build instead of skipping a check.

// An integration-test crate is all tests; the lint is for test code mixed into the library.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;

use serde_json::Value;

/// The transcription: Markdown whose method tables this file reads.
const TRANSCRIPTION: &str = include_str!("../../docs/idl-v5.md");

/// Every interface of the v5 IDL, with its number of methods (Task included).
const INTERFACES: &[(&str, usize)] =
    &[("Plugin", 3), ("SR", 9), ("Volume", 19), ("Datapath", 8), ("Data", 6), ("Task", 4)];

/// The interfaces the schemas cover (xapi-storage-script never calls Task).
const WITH_SCHEMAS: &[&str] = &["Plugin", "SR", "Volume", "Datapath", "Data"];

/// One transcribed method.
#[derive(Debug, PartialEq, Eq)]
struct Method {
    /// Parameter wire names in declaration order (their IDL types are not compared).
    params: Vec<String>,
    /// The IDL type of the result (`unit`, `volume`, …).
    result: String,
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn cells(line: &str) -> Vec<&str> {
    let line = line.trim();
    let inner = line.strip_prefix('|').and_then(|l| l.strip_suffix('|')).unwrap_or(line);
    inner.split('|').map(str::trim).collect()
}

/// Reads every method table: a header row `| method | parameters | result | … |`, the
/// separator row, then one row per method until the first line that is not a table row.
/// A row that does not have the expected shape is an error, never skipped.
fn parse(text: &str) -> Result<BTreeMap<String, Method>, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((_, line)) = lines.next() {
        let header = cells(line);
        if !line.trim_start().starts_with('|') || header.get(..3) != Some(&["method", "parameters", "result"][..]) {
            continue;
        }
        match lines.next() {
            Some((_, sep)) if sep.trim_start().starts_with("|---") => {}
            other => return Err(format!("method table without a separator row: {other:?}")),
        }
        while let Some((n, row)) = lines.next_if(|(_, l)| l.trim_start().starts_with('|')) {
            let at = n + 1;
            let row = cells(row);
            let [name, params, result, ..] = row[..] else {
                return Err(format!("line {at}: a method row needs method, parameters and result cells"));
            };
            let name = name
                .strip_prefix('`')
                .and_then(|n| n.strip_suffix('`'))
                .ok_or_else(|| format!("line {at}: the method name must be in backticks: {name}"))?;
            let (interface, method) =
                name.split_once('.').ok_or_else(|| format!("line {at}: not <Interface>.<method>: {name}"))?;
            if !INTERFACES.iter().any(|(i, _)| *i == interface) || !is_identifier(method) {
                return Err(format!("line {at}: unknown interface or bad method name: {name}"));
            }
            let params = params
                .split(',')
                .map(|p| match p.split_once(':') {
                    Some((wire, ty)) if is_identifier(wire.trim()) && !ty.trim().is_empty() => {
                        Ok(wire.trim().to_owned())
                    }
                    _ => Err(format!("line {at}: {name}: a parameter is not `name: type`: {p:?}")),
                })
                .collect::<Result<Vec<String>, String>>()?;
            if params.first().map(String::as_str) != Some("dbg") {
                return Err(format!("line {at}: {name}: the first parameter must be dbg"));
            }
            if !is_identifier(result) {
                return Err(format!("line {at}: {name}: bad result type {result:?}"));
            }
            let method = Method { params, result: result.to_owned() };
            if out.insert(name.to_owned(), method).is_some() {
                return Err(format!("line {at}: {name} is transcribed twice"));
            }
        }
    }
    Ok(out)
}

fn transcription() -> BTreeMap<String, Method> {
    parse(TRANSCRIPTION).unwrap_or_else(|e| panic!("docs/idl-v5.md: {e}"))
}

fn has_schema(method: &str) -> bool {
    WITH_SCHEMAS.iter().any(|i| method.split_once('.').is_some_and(|(interface, _)| interface == *i))
}

/// What differs between the transcribed methods (of the interfaces with schemas) and the
/// methods that have a schema file, one line per difference; empty when they agree.
fn compare(idl: &BTreeMap<String, Method>, schemas: &[&str]) -> Vec<String> {
    let mut problems: Vec<String> = idl
        .keys()
        .filter(|m| has_schema(m) && !schemas.contains(&m.as_str()))
        .map(|m| format!("transcribed method without a schema: {m}"))
        .collect();
    for s in schemas {
        if !has_schema(s) {
            problems.push(format!("schema for an interface the schemas do not cover: {s}"));
        } else if !idl.contains_key(*s) {
            problems.push(format!("schema naming no transcribed method: {s}"));
        }
    }
    problems
}

#[test]
fn the_transcription_has_every_method_of_every_interface() {
    let idl = transcription();
    for (interface, count) in INTERFACES {
        let found = idl.keys().filter(|m| m.split_once('.').is_some_and(|(i, _)| i == *interface)).count();
        assert_eq!(found, *count, "docs/idl-v5.md: methods of {interface}");
    }
    assert_eq!(idl.len(), INTERFACES.iter().map(|(_, n)| n).sum::<usize>());
}

#[test]
fn every_idl_method_has_a_schema_and_every_schema_an_idl_method() {
    let schemas: Vec<&str> = xapi_storage_schemas::methods().collect();
    let problems = compare(&transcription(), &schemas);
    assert!(problems.is_empty(), "schemas/ and docs/idl-v5.md differ:\n{}", problems.join("\n"));
}

#[test]
fn every_schema_requires_exactly_the_idl_parameters_in_order_and_returns_the_idl_result() {
    for (method, idl) in transcription().into_iter().filter(|(m, _)| has_schema(m)) {
        let text = xapi_storage_schemas::file(&format!("{method}.json")).expect("schema exists");
        let doc: Value = serde_json::from_str(text).expect("valid JSON");
        assert_eq!(doc["title"], method.as_str());
        let args = &doc["$defs"]["args"];
        let required: Vec<&str> =
            args["required"].as_array().expect("required").iter().filter_map(Value::as_str).collect();
        assert_eq!(required, idl.params, "{method}: required must list the IDL parameters in declaration order");
        let declared: Vec<&String> = args["properties"].as_object().expect("properties").keys().collect();
        assert_eq!(declared.len(), idl.params.len(), "{method}: a property for each parameter, nothing else");
        assert_eq!(args["additionalProperties"], true, "{method}: xapi may send fields newer than this IDL");
        let result = format!("types.json#/$defs/{}", idl.result);
        assert_eq!(doc["$defs"]["result"]["$ref"], result.as_str(), "{method}: the result is the IDL's type");
    }
}

/// The failure path stays tested: a transcription that lost a method, or a schema list that
/// lost one, is reported, and so is a row the parser cannot read.
#[test]
fn the_comparison_reports_a_method_missing_on_either_side() {
    let schemas: Vec<&str> = xapi_storage_schemas::methods().collect();

    let without_stat: String =
        TRANSCRIPTION.lines().filter(|l| !l.starts_with("| `Volume.stat` |")).map(|l| format!("{l}\n")).collect();
    let idl = parse(&without_stat).expect("still parses");
    assert_eq!(compare(&idl, &schemas), ["schema naming no transcribed method: Volume.stat"]);

    let fewer: Vec<&str> = schemas.iter().copied().filter(|s| *s != "SR.ls").collect();
    assert_eq!(compare(&transcription(), &fewer), ["transcribed method without a schema: SR.ls"]);

    let hand_made = "\
| method | parameters | result | in |
|---|---|---|---|
| `Plugin.query` | dbg: string | query_result | 8.2 |
| `Plugin.ls` | dbg: string | srs | 8.2 |
| `Task.ls` | dbg: string | task_list | 8.2 |
";
    let idl = parse(hand_made).expect("parses");
    assert_eq!(idl["Plugin.ls"], Method { params: vec!["dbg".to_owned()], result: "srs".to_owned() });
    assert_eq!(
        compare(&idl, &["Plugin.query", "Plugin.ls", "Plugin.diagnostics"]),
        ["schema naming no transcribed method: Plugin.diagnostics"]
    );
    // Task has no schemas: its methods are neither missing schemas nor allowed to have one.
    assert_eq!(
        compare(&idl, &["Plugin.query", "Plugin.ls", "Task.ls"]),
        ["schema for an interface the schemas do not cover: Task.ls"]
    );

    for bad in [
        "| method | parameters | result |\n| `SR.ls` | dbg: string, sr | volumes |\n",
        "| method | parameters | result |\n|---|---|---|\n| SR.ls | dbg: string | volumes |\n",
        "| method | parameters | result |\n|---|---|---|\n| `SR.ls` | sr: string | volumes |\n",
        "| method | parameters | result |\n|---|---|---|\n| `SR.ls` | dbg: string, sr | volumes |\n",
        "| method | parameters | result |\n|---|---|---|\n| `Bogus.ls` | dbg: string | volumes |\n",
        "| method | parameters | result |\n|---|---|---|\n| `SR.ls` | dbg: string |\n",
        "| method | parameters | result |\n|---|---|---|\n| `SR.ls` | dbg: string | x |\n| `SR.ls` | dbg: string | x |\n",
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad}");
    }
}
