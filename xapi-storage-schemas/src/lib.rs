//! JSON Schemas (draft 2020-12) for the xapi-storage v5 interfaces Plugin, SR, Volume,
//! Datapath and Data, transcribed from the IDL (`ocaml/xapi-storage/generator/lib` in
//! xapi-project/xen-api). The method list, parameters, result types and provenance are in
//! the repository's `docs/idl-v5.md`; `tests/coverage.rs` checks these files against it.
//!
//! Layout:
//! - `schemas/types.json` holds one `$defs` entry per IDL type (`volume`, `sr_stat`, `int64`, …).
//! - `schemas/<Interface>.<method>.json` holds `$defs/args` (the object xapi-storage-script
//!   writes on stdin; unknown fields allowed, `required` in declaration order) and
//!   `$defs/result` (what the plugin prints; strict: no stray fields, no `null`, int64 as a
//!   JSON integer).
//!
//! This crate only carries the data. The validator lives in `common::schema`; it supports the
//! subset of the 2020-12 vocabulary these files use and refuses any other keyword, so no
//! schema can be silently ignored.

include!(concat!(env!("OUT_DIR"), "/files.rs"));

/// The file name holding the shared type definitions.
pub const TYPES_FILE: &str = "types.json";

/// The contents of one schema file, by file name (`"SR.create.json"`, `"types.json"`).
pub fn file(name: &str) -> Option<&'static str> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
}

/// The IDL method names that have a schema file (`"SR.create"`, `"Plugin.query"`, …).
pub fn methods() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|(n, _)| *n).filter(|n| *n != TYPES_FILE).filter_map(|n| n.strip_suffix(".json"))
}

/// The schema file of an IDL method, looked up case-insensitively as xapi-storage-script
/// resolves executable names (`Plugin.Query` finds `Plugin.query.json`).
pub fn method_file(method: &str) -> Option<(&'static str, &'static str)> {
    methods()
        .find(|m| m.eq_ignore_ascii_case(method))
        .and_then(|m| FILES.iter().find(|(n, _)| n.strip_suffix(".json") == Some(m)))
        .map(|(n, text)| (*n, *text))
}
