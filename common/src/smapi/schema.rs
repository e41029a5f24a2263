//! Validation of requests and results against `xapi-storage-schemas`.
//!
//! Every request is checked against `$defs/args` of its method's schema before the
//! operation runs, and every answer against `$defs/result` before it is printed, so a
//! malformed request changes nothing and a bug of ours never reaches xapi as bad JSON.
//!
//! The validator implements the part of the JSON Schema 2020-12 vocabulary the schema
//! files use (listed in [`KEYWORDS`]) and refuses any other keyword, so no constraint can be
//! silently ignored. One deliberate difference from the standard: `"integer"` accepts only a
//! JSON integer literal. JSON Schema would accept `1.0`; xapi's unmarshaller rejects floats
//! where an int64 belongs, and so do we.

use std::collections::HashMap;

use serde_json::{Map, Value};

pub use crate::error::{SchemaError, Violation};

/// The keywords this validator understands. Annotations (`title`, `description`, …) are
/// accepted and ignored; anything not listed is an error in the schema file.
pub const KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "$ref",
    "$defs",
    "$comment",
    "title",
    "description",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "oneOf",
    "anyOf",
];

/// Which half of a method's schema to validate against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The arguments object read from stdin (`$defs/args`).
    Args,
    /// The value printed on stdout on success (`$defs/result`).
    Result,
}

impl Part {
    fn def_name(self) -> &'static str {
        match self {
            Part::Args => "args",
            Part::Result => "result",
        }
    }
}

/// The parsed schema documents needed for one validation.
#[derive(Debug)]
pub struct Schemas {
    docs: HashMap<&'static str, Value>,
}

impl Schemas {
    /// Parses the schema file of `method` (matched case-insensitively) and the shared types.
    pub fn for_method(method: &str) -> Result<(Self, &'static str), SchemaError> {
        let (file, _) = xapi_storage_schemas::method_file(method)
            .ok_or_else(|| SchemaError::NoSchema { method: method.to_owned() })?;
        let mut docs = HashMap::new();
        for name in [file, xapi_storage_schemas::TYPES_FILE] {
            docs.insert(name, parse_file(name)?);
        }
        Ok((Schemas { docs }, file))
    }

    /// The `$defs/args` or `$defs/result` schema of a loaded method file.
    pub fn part(&self, file: &'static str, part: Part) -> Result<&Value, SchemaError> {
        self.docs[file].get("$defs").and_then(|d| d.get(part.def_name())).ok_or_else(|| SchemaError::Unsupported {
            file: file.to_owned(),
            location: format!("/$defs/{}", part.def_name()),
            problem: "missing".to_owned(),
        })
    }

    /// Resolves a `$ref` found in `file`, returning the target's file and schema.
    fn resolve(&self, file: &'static str, reference: &str) -> Result<(&'static str, &Value), SchemaError> {
        let (target_file, pointer) = match reference.split_once('#') {
            Some(("", pointer)) => (file, pointer),
            Some((other, pointer)) => (
                self.docs
                    .keys()
                    .copied()
                    .find(|k| *k == other)
                    .ok_or_else(|| unsupported(file, reference, "reference to a file that is not loaded"))?,
                pointer,
            ),
            None => return Err(unsupported(file, reference, "reference without a fragment")),
        };
        let target = self.docs[target_file]
            .pointer(pointer)
            .ok_or_else(|| unsupported(file, reference, "dangling reference"))?;
        Ok((target_file, target))
    }

    /// Checks `value` against `schema` (found in `file`).
    pub fn check(
        &self,
        file: &'static str,
        schema: &Value,
        value: &Value,
    ) -> Result<Result<(), Violation>, SchemaError> {
        let mut path = Vec::new();
        self.walk(file, schema, value, &mut path)
    }

    fn walk(
        &self,
        file: &'static str,
        schema: &Value,
        value: &Value,
        path: &mut Vec<String>,
    ) -> Result<Result<(), Violation>, SchemaError> {
        let violation = |path: &[String], message: String| Ok(Err(Violation { path: join_path(path), message }));
        let obj = match schema {
            Value::Bool(true) => return Ok(Ok(())),
            Value::Bool(false) => return violation(path, "is not allowed here".to_owned()),
            Value::Object(obj) => obj,
            _ => return Err(unsupported(file, &join_path(path), "a schema must be an object or a boolean")),
        };
        if let Some(key) = obj.keys().find(|k| !KEYWORDS.contains(&k.as_str())) {
            return Err(unsupported(file, &join_path(path), &format!("unsupported keyword `{key}`")));
        }
        if let Some(reference) = obj.get("$ref") {
            let reference =
                reference.as_str().ok_or_else(|| unsupported(file, &join_path(path), "$ref must be a string"))?;
            let (target_file, target) = self.resolve(file, reference)?;
            if let Err(v) = self.walk(target_file, target, value, path)? {
                return Ok(Err(v));
            }
        }
        if let Some(types) = obj.get("type") {
            let allowed: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => return Err(unsupported(file, &join_path(path), "type must be a string or an array")),
            };
            if !allowed.iter().any(|t| has_type(value, t)) {
                return violation(path, format!("expected {}, got {}", expected(&allowed), describe(value)));
            }
        }
        if let Some(c) = obj.get("const") {
            if c != value {
                return violation(path, format!("expected {c}, got {}", describe(value)));
            }
        }
        if let Some(Value::Array(options)) = obj.get("enum") {
            if !options.contains(value) {
                let list: Vec<String> = options.iter().map(Value::to_string).collect();
                return violation(path, format!("expected one of {}, got {}", list.join(", "), describe(value)));
            }
        }
        if let Some(n) = value.as_number() {
            if let Some(min) = obj.get("minimum").and_then(Value::as_number) {
                if compare(n, min) == std::cmp::Ordering::Less {
                    return violation(path, format!("{n} is below the minimum {min}"));
                }
            }
            if let Some(max) = obj.get("maximum").and_then(Value::as_number) {
                if compare(n, max) == std::cmp::Ordering::Greater {
                    return violation(path, format!("{n} is above the maximum {max}"));
                }
            }
        }
        if let Some(s) = value.as_str() {
            let len = s.chars().count();
            if let Some(min) = obj.get("minLength").and_then(Value::as_u64) {
                if (len as u64) < min {
                    return violation(path, format!("must be at least {min} characters long"));
                }
            }
            if let Some(max) = obj.get("maxLength").and_then(Value::as_u64) {
                if (len as u64) > max {
                    return violation(path, format!("must be at most {max} characters long"));
                }
            }
        }
        if let Value::Object(fields) = value {
            if let Err(v) = self.walk_object(file, obj, fields, path)? {
                return Ok(Err(v));
            }
        }
        if let Value::Array(items) = value {
            if let Err(v) = self.walk_array(file, obj, items, path)? {
                return Ok(Err(v));
            }
        }
        if let Some(Value::Array(options)) = obj.get("anyOf") {
            let mut first = None;
            for option in options {
                match self.walk(file, option, value, path)? {
                    Ok(()) => return Ok(Ok(())),
                    Err(v) => first = first.or(Some(v)),
                }
            }
            return Ok(Err(first.unwrap_or_else(|| Violation {
                path: join_path(path),
                message: "matches none of the allowed forms".to_owned(),
            })));
        }
        if let Some(Value::Array(options)) = obj.get("oneOf") {
            let mut matched = 0;
            let mut errors = Vec::new();
            for option in options {
                match self.walk(file, option, value, path)? {
                    Ok(()) => matched += 1,
                    Err(v) => errors.push(v.message),
                }
            }
            if matched != 1 {
                let message = if matched == 0 {
                    format!("{} matches none of the allowed forms ({})", describe(value), errors.join("; "))
                } else {
                    format!("{} matches {matched} of the allowed forms, exactly one is required", describe(value))
                };
                return violation(path, message);
            }
        }
        Ok(Ok(()))
    }

    fn walk_object(
        &self,
        file: &'static str,
        schema: &Map<String, Value>,
        fields: &Map<String, Value>,
        path: &mut Vec<String>,
    ) -> Result<Result<(), Violation>, SchemaError> {
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !fields.contains_key(name) {
                    path.push(name.to_owned());
                    let v = Violation { path: join_path(path), message: "required field is missing".to_owned() };
                    path.pop();
                    return Ok(Err(v));
                }
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, field) in fields {
            let sub = match properties.and_then(|p| p.get(name)) {
                Some(sub) => sub,
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        let known: Vec<&str> =
                            properties.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
                        path.push(name.clone());
                        let v = Violation {
                            path: join_path(path),
                            message: format!("unknown field; expected one of: {}", known.join(", ")),
                        };
                        path.pop();
                        return Ok(Err(v));
                    }
                    Some(sub) => sub,
                    None => continue,
                },
            };
            path.push(name.clone());
            let outcome = self.walk(file, sub, field, path)?;
            path.pop();
            if outcome.is_err() {
                return Ok(outcome);
            }
        }
        Ok(Ok(()))
    }

    fn walk_array(
        &self,
        file: &'static str,
        schema: &Map<String, Value>,
        items: &[Value],
        path: &mut Vec<String>,
    ) -> Result<Result<(), Violation>, SchemaError> {
        let n = items.len() as u64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
            if n < min {
                return Ok(Err(Violation {
                    path: join_path(path),
                    message: format!("expected at least {min} elements, got {n}"),
                }));
            }
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
            if n > max {
                return Ok(Err(Violation {
                    path: join_path(path),
                    message: format!("expected at most {max} elements, got {n}"),
                }));
            }
        }
        let prefix = schema.get("prefixItems").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for (i, item) in items.iter().enumerate() {
            let sub = match prefix.get(i).or_else(|| schema.get("items")) {
                Some(sub) => sub,
                None => continue,
            };
            path.push(format!("[{i}]"));
            let outcome = self.walk(file, sub, item, path)?;
            path.pop();
            if outcome.is_err() {
                return Ok(outcome);
            }
        }
        Ok(Ok(()))
    }
}

/// Validates `value` as the `part` of `method`.
///
/// The outer `Result` reports a broken schema (a bug of ours); the inner one a value that
/// breaks a valid schema.
///
/// ```
/// use common::smapi::schema::{validate, Part};
/// use serde_json::json;
/// let bad = json!({"dbg": "x", "sr": "s", "name": "n", "description": "", "size": 1.5, "sharable": false});
/// let violation = validate("Volume.create", Part::Args, &bad).unwrap().unwrap_err();
/// assert_eq!(violation.path, "size");
/// ```
pub fn validate(method: &str, part: Part, value: &Value) -> Result<Result<(), Violation>, SchemaError> {
    let (schemas, file) = Schemas::for_method(method)?;
    let schema = schemas.part(file, part)?;
    schemas.check(file, schema, value)
}

/// The kind of one declared parameter, as the command-line mode needs to convert it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A JSON string (dbg, sr, key, uri, …).
    String,
    /// A JSON integer.
    Integer,
    /// A JSON boolean.
    Bool,
    /// A string-to-string map given as repeated `--name KEY VALUE`.
    Map,
    /// Any other JSON value, given as JSON text.
    Json,
}

/// One declared parameter of a method, in declaration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The wire name.
    pub name: String,
    /// How the command line gives it.
    pub kind: ParamKind,
}

/// The declared parameters of `method`, in IDL declaration order (the schema's `required`).
pub fn params(method: &str) -> Result<Vec<Param>, SchemaError> {
    let (schemas, file) = Schemas::for_method(method)?;
    let args = schemas.part(file, Part::Args)?;
    let props = args.get("properties").and_then(Value::as_object);
    let mut out = Vec::new();
    for name in args.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        let mut schema = props.and_then(|p| p.get(name)).cloned().unwrap_or(Value::Bool(true));
        let mut schema_file = file;
        // Follow references to the type definition that says what the value is.
        while let Some(reference) = schema.get("$ref").and_then(Value::as_str).map(str::to_owned) {
            let (f, target) = schemas.resolve(schema_file, &reference)?;
            schema_file = f;
            schema = target.clone();
        }
        let kind = match schema.get("type").and_then(Value::as_str) {
            Some("string") => ParamKind::String,
            Some("integer") => ParamKind::Integer,
            Some("boolean") => ParamKind::Bool,
            // configuration, keys: an object whose every value has one schema (a string).
            Some("object") if schema.get("additionalProperties").is_some_and(Value::is_object) => ParamKind::Map,
            _ => ParamKind::Json,
        };
        out.push(Param { name: name.to_owned(), kind });
    }
    Ok(out)
}

fn parse_file(name: &'static str) -> Result<Value, SchemaError> {
    let text = xapi_storage_schemas::file(name).ok_or_else(|| SchemaError::NoSchema { method: name.to_owned() })?;
    serde_json::from_str(text).map_err(|e| SchemaError::Unparsable { file: name.to_owned(), detail: e.to_string() })
}

fn unsupported(file: &str, location: &str, problem: &str) -> SchemaError {
    SchemaError::Unsupported { file: file.to_owned(), location: location.to_owned(), problem: problem.to_owned() }
}

fn join_path(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if !out.is_empty() && !part.starts_with('[') {
            out.push('.');
        }
        out.push_str(part);
    }
    out
}

fn has_type(value: &Value, ty: &str) -> bool {
    match ty {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        _ => false,
    }
}

fn expected(types: &[&str]) -> String {
    let words: Vec<&str> = types
        .iter()
        .map(|t| match *t {
            "null" => "null",
            "boolean" => "a boolean (true or false)",
            "object" => "an object",
            "array" => "an array",
            "string" => "a string",
            "number" => "a number",
            "integer" => "an integer",
            other => other,
        })
        .collect();
    words.join(" or ")
}

/// Describes a JSON value for an error message without echoing long strings.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) if n.is_f64() => format!("the float {n}"),
        Value::Number(n) => format!("the integer {n}"),
        Value::String(s) if s.chars().count() <= 40 => format!("the string {s:?}"),
        Value::String(_) => "a string".to_owned(),
        Value::Array(a) => format!("an array of {} elements", a.len()),
        Value::Object(_) => "an object".to_owned(),
    }
}

fn compare(a: &serde_json::Number, b: &serde_json::Number) -> std::cmp::Ordering {
    let as_i128 = |n: &serde_json::Number| n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
    match (as_i128(a), as_i128(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => {
            let (x, y) = (a.as_f64().unwrap_or(f64::NAN), b.as_f64().unwrap_or(f64::NAN));
            x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(method: &str, value: Value) -> Result<(), Violation> {
        validate(method, Part::Args, &value).expect("schemas load")
    }

    /// Walks a schema file and fails on any keyword the validator would refuse.
    fn check_keywords(file: &str, schema: &Value, at: &str) {
        match schema {
            Value::Bool(_) => {}
            Value::Object(obj) => {
                for (k, v) in obj {
                    assert!(KEYWORDS.contains(&k.as_str()), "{file}{at}: unsupported keyword {k}");
                    match k.as_str() {
                        "properties" | "$defs" => {
                            for (name, sub) in v.as_object().expect("object") {
                                check_keywords(file, sub, &format!("{at}/{k}/{name}"));
                            }
                        }
                        "items" | "additionalProperties" => check_keywords(file, v, &format!("{at}/{k}")),
                        "prefixItems" | "oneOf" | "anyOf" => {
                            for (i, sub) in v.as_array().expect("array").iter().enumerate() {
                                check_keywords(file, sub, &format!("{at}/{k}/{i}"));
                            }
                        }
                        _ => {}
                    }
                }
            }
            other => panic!("{file}{at}: a schema must be an object or a boolean, got {other}"),
        }
    }

    #[test]
    fn every_schema_file_uses_only_supported_keywords() {
        for (name, text) in xapi_storage_schemas::FILES {
            let doc: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            check_keywords(name, &doc, "");
        }
    }

    #[test]
    fn every_method_has_args_and_result_and_every_ref_resolves() {
        for method in xapi_storage_schemas::methods() {
            let (schemas, file) = Schemas::for_method(method).expect("loads");
            schemas.part(file, Part::Args).expect("args");
            schemas.part(file, Part::Result).expect("result");
            params(method).unwrap_or_else(|e| panic!("{method}: {e}"));
        }
    }

    #[test]
    fn valid_request_passes_and_unknown_fields_are_tolerated() {
        let request = json!({"dbg": "d", "sr": "s", "name": "n", "description": "", "size": 1073741824,
                             "sharable": false, "added_by_a_newer_xapi": 1});
        assert_eq!(args("Volume.create", request), Ok(()));
    }

    #[test]
    fn float_where_int64_belongs_names_the_field() {
        let v = args(
            "Volume.create",
            json!({"dbg": "d", "sr": "s", "name": "n", "description": "", "size": 1024.0, "sharable": false}),
        )
        .unwrap_err();
        assert_eq!(v.path, "size");
        assert!(v.message.contains("float"), "{v}");
    }

    #[test]
    fn missing_field_and_wrong_type_are_named() {
        let v =
            args("SR.create", json!({"dbg": "d", "configuration": {}, "name": "n", "description": ""})).unwrap_err();
        assert_eq!(v.path, "uuid");
        let v = args(
            "SR.create",
            json!({"dbg": "d", "uuid": "u", "configuration": {"pool": 7}, "name": "n", "description": ""}),
        )
        .unwrap_err();
        assert_eq!(v.path, "configuration.pool");
        assert!(v.message.contains("expected a string"), "{v}");
    }

    #[test]
    fn int64_range_is_enforced() {
        let v = args("Volume.resize", json!({"dbg": "d", "sr": "s", "key": "k", "new_size": 18446744073709551615u64}))
            .unwrap_err();
        assert_eq!(v.path, "new_size");
    }

    #[test]
    fn results_are_strict() {
        let ok = json!({"implementations": [["XenDisk", {"params": "/dev/rbd0", "extra": {}, "backend_type": "vbd"}],
                                            ["BlockDevice", {"path": "/dev/rbd0"}]]});
        assert_eq!(validate("Datapath.attach", Part::Result, &ok).expect("loads"), Ok(()));
        let stray = json!({"implementations": [["BlockDevice", {"path": "/dev/rbd0", "extra": 1}]]});
        assert!(validate("Datapath.attach", Part::Result, &stray).expect("loads").is_err());
        let lowercase_tag = json!({"implementations": [["blockdevice", {"path": "/dev/rbd0"}]]});
        assert!(validate("Datapath.attach", Part::Result, &lowercase_tag).expect("loads").is_err());
        assert_eq!(validate("Datapath.activate", Part::Result, &Value::Null).expect("loads"), Ok(()));
        assert!(validate("Datapath.activate", Part::Result, &json!({})).expect("loads").is_err());
    }

    #[test]
    fn params_follow_declaration_order_and_kinds() {
        let p = params("SR.create").expect("schema");
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["dbg", "uuid", "configuration", "name", "description"]);
        assert_eq!(p[2].kind, ParamKind::Map);
        let p = params("Volume.create").expect("schema");
        assert_eq!(p[4].kind, ParamKind::Integer);
        assert_eq!(p[5].kind, ParamKind::Bool);
    }

    #[test]
    fn method_lookup_is_case_insensitive() {
        assert!(Schemas::for_method("Plugin.Query").is_ok());
        assert!(Schemas::for_method("volume.CREATE").is_ok());
        assert!(matches!(Schemas::for_method("Bogus.op"), Err(SchemaError::NoSchema { .. })));
    }
}
