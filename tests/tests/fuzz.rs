//! Mutation fuzzing, bounded in time (`CEPHRBD_FUZZ_SECONDS`, default 12 s in all): the
//! XML-RPC parser (legacy requests and XenAPI replies), JSON-Schema validation of every
//! method's request, and the whole exec protocol in process. Inputs start from real
//! documents and are mutated (bytes flipped, cut, spliced, repeated, random tags and
//! values). A panic, a hang, or an answer that is not exactly one protocol value fails the
//! test and prints the input, which then becomes a regression test below.

// An integration-test crate is all tests; the lint is for test code mixed into the library.
#![allow(clippy::tests_outside_test_module)]

use std::ffi::OsString;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use cephrbd_tests::xapi::{Requests, Vdi};
use common::smapi::exec::{self, Answer, Ctx, Executable, Operation};
use common::smapi::schema::{self, ParamKind, Part};
use legacy::xmlrpc;
use serde_json::{json, Value};

/// xorshift64*: deterministic, so a failure can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

const TOKENS: &[&str] = &[
    "<value>",
    "</value>",
    "<struct>",
    "</struct>",
    "<member>",
    "<name>",
    "</name>",
    "<array><data>",
    "</data></array>",
    "<string>",
    "<int>",
    "<i4>",
    "<boolean>",
    "<nil/>",
    "<value/>",
    "&amp;",
    "&#x0;",
    "&#1114112;",
    "&bogus;",
    "<![CDATA[",
    "]]>",
    "<!--",
    "-->",
    "<?xml",
    "?>",
    "\u{0}",
    "\u{fffd}",
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "1.5",
    "-1",
    "1e999",
    "18446744073709551616",
    "true",
    "\\u0000",
    "\\ud800",
];

fn mutate(rng: &mut Rng, seed: &str) -> String {
    let mut bytes = seed.as_bytes().to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(6) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            1 => bytes.truncate(at),
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                bytes.splice(at..at, token.iter().copied());
            }
            3 if !bytes.is_empty() => {
                let end = (at + rng.below(64)).min(bytes.len());
                let chunk: Vec<u8> = bytes[at.min(end)..end].to_vec();
                bytes.splice(at..at, chunk.iter().copied().cycle().take(chunk.len() * (1 + rng.below(50))));
            }
            4 => {
                let end = (at + rng.below(32)).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            _ => bytes.insert(at.min(bytes.len()), u8::try_from(rng.below(256)).unwrap_or(0)),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn budget() -> Duration {
    let total: u64 = std::env::var("CEPHRBD_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    Duration::from_secs(total) / 3
}

/// Runs `target` on mutations of `seeds` until the budget is spent; fails on a panic or
/// on one input taking longer than a second.
fn fuzz(name: &str, seeds: &[String], mut target: impl FnMut(&str)) -> usize {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let started = Instant::now();
    let mut runs = 0;
    while started.elapsed() < budget() {
        let seed = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed);
        let one = Instant::now();
        if panic::catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            panic!("{name}: panicked on input {input:?}");
        }
        assert!(one.elapsed() < Duration::from_secs(1), "{name}: {:?} on input {input:?}", one.elapsed());
        runs += 1;
    }
    eprintln!("fuzz: {name}: {runs} inputs, no crash");
    runs
}

fn legacy_seeds() -> Vec<String> {
    let r = Requests::new(vec![("pool".to_owned(), "rbd".to_owned()), ("ceph_user".to_owned(), "admin".to_owned())]);
    let vdi = Vdi { vdi_ref: "OpaqueRef:1".to_owned(), uuid: "u".to_owned(), location: "l".to_owned() };
    vec![
        r.driver_info(),
        r.probe(),
        r.sr("sr_create", &["0"], true),
        r.vdi_create(1 << 30, "disk <0> & \"x\""),
        r.vdi("vdi_snapshot", &[], &vdi, true),
        xmlrpc::response(&xmlrpc::Value::Struct(vec![
            ("Status".to_owned(), xmlrpc::Value::str("Success")),
            ("Value".to_owned(), xmlrpc::Value::Array(vec![xmlrpc::Value::Int(1), xmlrpc::Value::Nil])),
        ])),
        xmlrpc::fault(24, "in use"),
    ]
}

/// `value` with every character XML cannot carry replaced by U+FFFD, as our writer does.
fn xml_safe(value: xmlrpc::Value) -> xmlrpc::Value {
    use xmlrpc::Value;
    let text = |s: String| -> String {
        s.chars().map(|c| if xmlrpc::is_xml_char(c) { c } else { char::REPLACEMENT_CHARACTER }).collect()
    };
    match value {
        Value::String(s) => Value::String(text(s)),
        Value::DateTime(s) => Value::DateTime(text(s)),
        Value::Array(items) => Value::Array(items.into_iter().map(xml_safe).collect()),
        Value::Struct(members) => Value::Struct(members.into_iter().map(|(k, v)| (text(k), xml_safe(v))).collect()),
        other @ (Value::Int(_) | Value::Bool(_) | Value::Double(_) | Value::Nil) => other,
    }
}

#[test]
fn fuzz_xmlrpc_parser() {
    let seeds = legacy_seeds();
    fuzz("XML-RPC parser", &seeds, |input| {
        if let Ok((_, params)) = xmlrpc::parse_call(input) {
            // Whatever parses must write back, well-formed, and parse again to the same
            // value, but for the characters XML cannot carry, written as U+FFFD.
            for p in params {
                let document = xmlrpc::response(&p);
                assert!(document.chars().all(xmlrpc::is_xml_char), "{document:?}");
                let again = xmlrpc::parse_response(&document).expect("our own output parses");
                assert_eq!(again, Ok(xml_safe(p)));
            }
        }
        let _ = xmlrpc::parse_response(input);
    });
}

/// A valid argument object for `method`, from its schema.
fn valid_args(method: &str) -> Value {
    let mut args = serde_json::Map::new();
    for p in schema::params(method).expect("schema") {
        let v = match p.kind {
            ParamKind::String => json!("x"),
            ParamKind::Integer => json!(1),
            ParamKind::Bool => json!(true),
            ParamKind::Map => json!({"pool": "rbd"}),
            ParamKind::Json => json!(["Copy", ["a", "b"]]),
        };
        args.insert(p.name, v);
    }
    Value::Object(args)
}

#[test]
fn fuzz_request_validation() {
    let methods: Vec<&str> = xapi_storage_schemas_methods();
    let seeds: Vec<String> = methods.iter().map(|m| format!("{m}\n{}", valid_args(m))).collect();
    fuzz("request validation", &seeds, |input| {
        let Some((method, json)) = input.split_once('\n') else { return };
        if let Ok(value) = serde_json::from_str::<Value>(json) {
            match schema::validate(method, Part::Args, &value) {
                Ok(_) | Err(schema::SchemaError::NoSchema { .. }) => {}
                Err(e) => panic!("a valid schema reported {e}"),
            }
        }
    });
}

fn xapi_storage_schemas_methods() -> Vec<&'static str> {
    // Methods covering every kind of parameter: strings, int64, int, bools, maps, variants.
    [
        "Plugin.query",
        "SR.create",
        "SR.attach",
        "SR.probe",
        "SR.stat",
        "SR.ls",
        "Volume.create",
        "Volume.set",
        "Volume.resize",
        "Volume.list_changed_blocks",
        "Datapath.attach",
        "Datapath.open",
        "Data.copy",
        "Data.stat",
    ]
    .to_vec()
}

fn ok_unit(_ctx: &Ctx, _args: Value) -> Result<Value, common::OpError> {
    Ok(Value::Null)
}

static OPS: &[Operation] = &[
    Operation { name: "SR.detach", handler: ok_unit },
    Operation { name: "Volume.set", handler: ok_unit },
    Operation { name: "Datapath.activate", handler: ok_unit },
    Operation { name: "Volume.resize", handler: ok_unit },
];
static EXE: Executable = Executable { name: "volume", operations: OPS };

#[test]
fn fuzz_exec_protocol() {
    let seeds: Vec<String> = ["SR.detach", "Volume.set", "Datapath.activate", "Volume.resize"]
        .iter()
        .map(|m| format!("{m}\n{}", valid_args(m)))
        .collect();
    fuzz("exec protocol", &seeds, |input| {
        let (method, stdin) = input.split_once('\n').unwrap_or((input, ""));
        let argv: Vec<OsString> = vec![OsString::from(format!("/x/{method}")), OsString::from("--json")];
        let answer = exec::run(&EXE, &argv, &mut stdin.as_bytes());
        let mut out = Vec::new();
        answer.write_to(&mut out).expect("writes");
        let printed: Value = serde_json::from_slice(&out).expect("exactly one JSON value on stdout");
        match answer {
            Answer::Result(v) => assert_eq!(v, Value::Null),
            Answer::Error(_) => cephrbd_tests::check_error_object(&printed),
            Answer::Text(_) => panic!("text answer in --json mode"),
        }
    });
}

/// Regression tests for inputs the fuzzers found (none so far beyond these shapes).
#[test]
fn fuzz_regressions() {
    for doc in
        ["<a><b></a>", "<methodCall><methodName/></methodCall>", "<value><array></array></value>", "&#xFFFFFFFF;"]
    {
        let _ = xmlrpc::parse_call(doc);
        let _ = xmlrpc::parse_response(doc);
    }
}
