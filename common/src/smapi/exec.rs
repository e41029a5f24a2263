//! The SMAPIv3 exec protocol, written once for every executable (docs/smapiv3.md).
//!
//! xapi-storage-script runs `<dir>/<Interface>.<method> --json` (a symlink to our
//! multi-call binary), writes the named arguments as one JSON object on stdin, closes it,
//! and reads exactly one JSON value from stdout: the result (`null` for unit) with exit 0,
//! or the error object `{"code","params","backtrace"}` with exit 1.
//!
//! [`run`] implements it:
//! 1. the method is `basename(argv[0])`, matched exactly and case-insensitively (ASCII)
//!    against the executable's table; under the executable's own name it is argv\[1\], and
//!    `--list` prints the table (the RPM uses it to create the symlinks);
//! 2. with `--json`, the arguments are read from stdin (with or without a trailing
//!    newline); without it, from positional arguments in IDL declaration order, maps as
//!    repeated `--name KEY VALUE` (for an operator at a shell);
//! 3. the arguments are validated against the method's schema **before** the operation
//!    runs, so a malformed request changes nothing;
//! 4. the operation's result is validated against the result schema before it is printed.
//!
//! Nothing but the answer is ever written to stdout; logs go to stderr and syslog.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Arg, ArgAction};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use tracing::{debug, error, info_span};

use super::error::SmapiError;
use super::schema::{self, Param, ParamKind, Part};
use crate::error::{chain, OpError, RequestError};

/// What an operation knows about the call it serves.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The method name from the table (`SR.create`).
    pub method: &'static str,
    /// The caller's opaque debug string (may hold a newline and a trace context).
    pub dbg: String,
    /// Every operation of the executable serving the call (`Plugin.Query` derives the
    /// features it declares from this table, so it never claims a missing method).
    pub operations: &'static [Operation],
}

/// A table entry's function: validated arguments in, result value out.
pub type Handler = fn(&Ctx, Value) -> Result<Value, OpError>;

/// One method an executable implements.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// The installed file name (`Plugin.Query`, `SR.create`); also the method name.
    pub name: &'static str,
    /// The function serving it (usually `|c, a| typed(c, a, module::function)`).
    pub handler: Handler,
}

/// One multi-call executable: its own name and its dispatch table.
#[derive(Debug, Clone, Copy)]
pub struct Executable {
    /// The name the binary is installed under (`volume`, `datapath`).
    pub name: &'static str,
    /// Every method, one entry each.
    pub operations: &'static [Operation],
}

impl Executable {
    /// The operation called `name`, compared case-insensitively (ASCII).
    pub fn find(&self, name: &str) -> Option<&'static Operation> {
        self.operations.iter().find(|op| op.name.eq_ignore_ascii_case(name))
    }

    /// True if this executable implements `name`.
    pub fn implements(&self, name: &str) -> bool {
        self.find(name).is_some()
    }
}

/// Exit statuses of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The result is on stdout.
    Success = 0,
    /// The error object is on stdout.
    Failure = 1,
}

/// What one invocation prints.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A successful result: one JSON value, exit 0.
    Result(Value),
    /// A failure: the error object, exit 1.
    Error(SmapiError),
    /// Text an operator asked for (`--list`, `--help`), exit 0.
    Text(String),
}

impl Answer {
    /// The exit status that goes with this answer.
    pub fn exit(&self) -> Exit {
        match self {
            Answer::Result(_) | Answer::Text(_) => Exit::Success,
            Answer::Error(_) => Exit::Failure,
        }
    }

    /// Writes the answer: exactly one JSON value (or the requested text) and a newline.
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        match self {
            Answer::Result(v) => serde_json::to_writer(&mut *out, v)?,
            Answer::Error(e) => serde_json::to_writer(&mut *out, e)?,
            Answer::Text(t) => out.write_all(t.trim_end().as_bytes())?,
        }
        out.write_all(b"\n")?;
        out.flush()
    }
}

/// Converts a typed front-end function into a table [`Handler`]: deserializes the (already
/// validated) arguments, runs `f`, serializes its result.
pub fn typed<Req, Resp>(ctx: &Ctx, args: Value, f: fn(Req) -> Result<Resp, OpError>) -> Result<Value, OpError>
where
    Req: DeserializeOwned,
    Resp: Serialize,
{
    let request: Req = serde_json::from_value(args).map_err(|e| RequestError::Invalid {
        method: ctx.method.to_owned(),
        violation: schema::Violation { path: String::new(), message: e.to_string() },
    })?;
    reply(ctx, f(request))
}

/// Serializes a result for the wire (a serialization failure is a bug of ours).
pub fn reply<Resp: Serialize>(ctx: &Ctx, result: Result<Resp, OpError>) -> Result<Value, OpError> {
    serde_json::to_value(result?).map_err(|e| OpError::InvalidResult {
        method: ctx.method.to_owned(),
        violation: schema::Violation { path: String::new(), message: e.to_string() },
    })
}

/// The process entry point of a multi-call executable: the whole of its `main`.
pub fn main(exe: &'static Executable) -> ExitCode {
    crate::process::log::init(exe.name);
    let argv: Vec<OsString> = std::env::args_os().collect();
    let answer = run(exe, &argv, &mut io::stdin().lock());
    let mut stdout = io::stdout().lock();
    if let Err(e) = answer.write_to(&mut stdout) {
        error!("{}", OpError::Output(e));
        return ExitCode::from(Exit::Failure as u8);
    }
    ExitCode::from(answer.exit() as u8)
}

/// Serves one invocation: `argv` as the process got it, `stdin` for `--json` mode.
pub fn run(exe: &'static Executable, argv: &[OsString], stdin: &mut dyn Read) -> Answer {
    crate::process::deadline::start();
    let invoked = argv.first().map(basename).unwrap_or_default();
    let (name, rest) = if exe.implements(&invoked) || !invoked.eq_ignore_ascii_case(exe.name) {
        (invoked, argv.get(1..).unwrap_or_default())
    } else {
        match argv.get(1).map(|a| a.to_string_lossy().into_owned()) {
            Some(flag) if flag == "--list" => {
                return Answer::Text(exe.operations.iter().map(|op| op.name).collect::<Vec<_>>().join("\n"));
            }
            None => return Answer::Text(usage(exe)),
            Some(flag) if flag == "--help" || flag == "-h" => return Answer::Text(usage(exe)),
            Some(method) => (method, argv.get(2..).unwrap_or_default()),
        }
    };
    let Some(op) = exe.find(&name) else {
        let err = OpError::Request(RequestError::UnknownMethod {
            name,
            known: exe.operations.iter().map(|op| op.name).collect::<Vec<_>>().join(", "),
        });
        error!("{}", chain(&err));
        return Answer::Error(SmapiError::from(&err));
    };
    let json_mode = rest.iter().any(|a| a == "--json" || a == "-j");
    let args = if json_mode { read_json(op.name, stdin) } else { parse_positional(op.name, rest) };
    let args = match args {
        Ok(args) => args,
        Err(Positional::Help(text)) => return Answer::Text(text),
        Err(Positional::Error(err)) => {
            let err = OpError::Request(err);
            error!(method = op.name, "{}", chain(&err));
            return Answer::Error(SmapiError::from(&err));
        }
    };
    let dbg = args.get("dbg").and_then(Value::as_str).unwrap_or_default().to_owned();
    let span = info_span!("call", method = op.name, dbg = %dbg.escape_debug());
    let _entered = span.enter();
    let started = Instant::now();
    let ctx = Ctx { method: op.name, dbg, operations: exe.operations };
    match serve(op, &ctx, args) {
        Ok(value) => {
            debug!(elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "done");
            Answer::Result(value)
        }
        Err(err) => {
            error!(elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "{}", chain(&err));
            Answer::Error(SmapiError::from(&err))
        }
    }
}

/// Validates, calls, and validates the result.
fn serve(op: &Operation, ctx: &Ctx, args: Value) -> Result<Value, OpError> {
    if let Err(violation) = schema::validate(op.name, Part::Args, &args)? {
        return Err(RequestError::Invalid { method: op.name.to_owned(), violation }.into());
    }
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| (op.handler)(ctx, args)));
    let value = outcome.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        Err(OpError::Panicked { method: op.name.to_owned(), message })
    })?;
    if let Err(violation) = schema::validate(op.name, Part::Result, &value)? {
        return Err(OpError::InvalidResult { method: op.name.to_owned(), violation });
    }
    Ok(value)
}

fn read_json(method: &str, stdin: &mut dyn Read) -> Result<Value, Positional> {
    let mut text = String::new();
    stdin.read_to_string(&mut text).map_err(|e| {
        Positional::Error(RequestError::MalformedJson { method: method.to_owned(), detail: e.to_string() })
    })?;
    if text.trim().is_empty() {
        return Err(Positional::Error(RequestError::EmptyInput { method: method.to_owned() }));
    }
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        Positional::Error(RequestError::MalformedJson { method: method.to_owned(), detail: e.to_string() })
    })?;
    if !value.is_object() {
        return Err(Positional::Error(RequestError::NotAnObject { method: method.to_owned(), found: kind_of(&value) }));
    }
    Ok(value)
}

/// Why positional parsing did not produce arguments.
enum Positional {
    /// The operator asked for help.
    Help(String),
    /// The command line is wrong.
    Error(RequestError),
}

fn parse_positional(method: &'static str, rest: &[OsString]) -> Result<Value, Positional> {
    let params = schema::params(method).map_err(|e| {
        Positional::Error(RequestError::CommandLine { method: method.to_owned(), message: e.to_string() })
    })?;
    let command = command_line(method, &params);
    let matches = command.try_get_matches_from(rest).map_err(|e| match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => Positional::Help(e.to_string()),
        _ => Positional::Error(RequestError::CommandLine {
            method: method.to_owned(),
            message: e.to_string().trim().to_owned(),
        }),
    })?;
    let bad = |name: &str, value: &str, what: &str| {
        Positional::Error(RequestError::CommandLine {
            method: method.to_owned(),
            message: format!("argument <{name}>: {value:?} is not {what}"),
        })
    };
    let mut object = Map::new();
    for param in &params {
        let value = match param.kind {
            ParamKind::Map => {
                let pairs: Vec<&String> = matches.get_many::<String>(&param.name).into_iter().flatten().collect();
                Value::Object(pairs.chunks(2).map(|kv| (kv[0].clone(), Value::from(kv[1].as_str()))).collect())
            }
            ParamKind::String | ParamKind::Integer | ParamKind::Bool | ParamKind::Json => {
                let text = matches.get_one::<String>(&param.name).cloned().unwrap_or_default();
                match param.kind {
                    ParamKind::Integer => {
                        Value::from(text.parse::<i64>().map_err(|_| bad(&param.name, &text, "a whole number"))?)
                    }
                    ParamKind::Bool => {
                        Value::from(text.parse::<bool>().map_err(|_| bad(&param.name, &text, "true or false"))?)
                    }
                    ParamKind::Json => {
                        serde_json::from_str(&text).map_err(|_| bad(&param.name, &text, "valid JSON"))?
                    }
                    ParamKind::String | ParamKind::Map => Value::from(text),
                }
            }
        };
        object.insert(param.name.clone(), value);
    }
    Ok(Value::Object(object))
}

/// The operator's command line for `method`: positional arguments in IDL order, maps as
/// repeated `--name KEY VALUE`.
fn command_line(method: &'static str, params: &[Param]) -> clap::Command {
    let mut command = clap::Command::new(method)
        .no_binary_name(true)
        .about("Without --json, arguments are positional, in IDL order; maps are given as repeated --NAME KEY VALUE.")
        .arg(
            Arg::new("json")
                .long("json")
                .short('j')
                .action(ArgAction::SetTrue)
                .help("Read the arguments as one JSON object on stdin"),
        );
    for param in params {
        let arg = Arg::new(param.name.clone());
        command = command.arg(match param.kind {
            ParamKind::Map => {
                arg.long(param.name.clone()).num_args(2).value_names(["KEY", "VALUE"]).action(ArgAction::Append)
            }
            ParamKind::String | ParamKind::Integer | ParamKind::Bool | ParamKind::Json => arg.required(true),
        });
    }
    command
}

fn usage(exe: &Executable) -> String {
    let mut text = format!(
        "{name}: cephrbd multi-call executable.\n\nInstalled as symlinks named after the methods; xapi-storage-script runs\n`<method> --json` with the arguments as one JSON object on stdin.\n\nUsage:\n  {name} <method> --json < args.json\n  {name} <method> <positional arguments…>   (see `{name} <method> --help`)\n  {name} --list\n\nMethods:\n",
        name = exe.name
    );
    for op in exe.operations {
        text.push_str("  ");
        text.push_str(op.name);
        text.push('\n');
    }
    text
}

fn basename(arg: &OsString) -> String {
    Path::new(arg).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize)]
    struct StatArgs {
        sr: String,
    }

    fn stat(req: StatArgs) -> Result<Value, OpError> {
        Ok(json!({"sr": req.sr, "name": "n", "description": "", "free_space": 1, "total_space": 2,
                  "datasources": [], "clustered": false, "health": ["Healthy", ""]}))
    }

    fn broken(_req: StatArgs) -> Result<Value, OpError> {
        Ok(json!({"sr": "s"}))
    }

    fn panics(_req: Value) -> Result<Value, OpError> {
        panic!("boom")
    }

    const OPS: &[Operation] = &[
        Operation { name: "SR.stat", handler: |c, a| typed(c, a, stat) },
        Operation { name: "SR.ls", handler: |c, a| typed(c, a, broken) },
        Operation { name: "SR.detach", handler: |c, a| typed(c, a, panics) },
    ];
    const EXE: Executable = Executable { name: "volume", operations: OPS };

    fn call(argv: &[&str], stdin: &str) -> Answer {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        run(&EXE, &argv, &mut stdin.as_bytes())
    }

    fn error_param(answer: &Answer) -> String {
        match answer {
            Answer::Error(e) => e.params.join(" | "),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn dispatch_is_exact_and_case_insensitive() {
        let answer = call(&["/x/sr.STAT", "--json"], r#"{"dbg":"d","sr":"s1"}"#);
        assert!(matches!(answer, Answer::Result(ref v) if v["sr"] == "s1"), "{answer:?}");
        assert!(error_param(&call(&["/x/SR.statistics", "--json"], "{}")).contains("unknown method `SR.statistics`"));
        assert!(error_param(&call(&["/x/XSR.stat", "--json"], "{}")).contains("Unimplemented"));
    }

    #[test]
    fn own_name_takes_the_method_from_argv1_and_lists() {
        assert!(matches!(call(&["volume", "SR.stat", "--json"], r#"{"dbg":"d","sr":"s"}"#), Answer::Result(_)));
        assert_eq!(call(&["/usr/bin/volume", "--list"], ""), Answer::Text("SR.stat\nSR.ls\nSR.detach".to_owned()));
    }

    #[test]
    fn json_mode_with_and_without_trailing_newline() {
        for stdin in [r#"{"dbg":"d","sr":"s"}"#, "{\"dbg\":\"d\",\"sr\":\"s\"}\n"] {
            assert!(matches!(call(&["SR.stat", "--json"], stdin), Answer::Result(_)));
        }
    }

    #[test]
    fn bad_input_is_named() {
        assert!(error_param(&call(&["SR.stat", "--json"], "")).contains("no request on stdin"));
        assert!(error_param(&call(&["SR.stat", "--json"], "{")).contains("not valid JSON"));
        assert!(error_param(&call(&["SR.stat", "--json"], "{} {}")).contains("not valid JSON"));
        assert!(error_param(&call(&["SR.stat", "--json"], "[1]")).contains("got an array"));
        assert!(error_param(&call(&["SR.stat", "--json"], r#"{"dbg":"d"}"#))
            .contains("field `sr`: required field is missing"));
        assert!(error_param(&call(&["SR.stat", "--json"], r#"{"dbg":"d","sr":5}"#))
            .contains("field `sr`: expected a string"));
    }

    #[test]
    fn positional_mode_follows_declaration_order() {
        let answer = call(&["SR.stat", "dbg-text", "sr-uri"], "");
        assert!(matches!(answer, Answer::Result(ref v) if v["sr"] == "sr-uri"), "{answer:?}");
        assert!(error_param(&call(&["SR.stat", "only-dbg"], "")).contains("required"));
        assert!(matches!(call(&["SR.stat", "--help"], ""), Answer::Text(t) if t.contains("<sr>")));
    }

    #[test]
    fn our_own_bugs_never_reach_stdout_as_bad_results() {
        let answer = call(&["SR.ls", "--json"], r#"{"dbg":"d","sr":"s"}"#);
        assert!(error_param(&answer).contains("Internal_error"), "{answer:?}");
        let answer = call(&["SR.detach", "--json"], r#"{"dbg":"d","sr":"s"}"#);
        assert!(error_param(&answer).contains("panicked: boom"), "{answer:?}");
    }

    #[test]
    fn answers_are_one_line_of_json() {
        let mut out = Vec::new();
        Answer::Result(Value::Null).write_to(&mut out).expect("writes");
        assert_eq!(out, b"null\n");
    }
}
