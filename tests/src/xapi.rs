//! Stand-ins for xapi on the legacy (SMAPIv1) path, the only kind the project allows
//! (xapi itself cannot run here):
//!
//! - [`Requests`] writes the `methodCall` documents exactly as xapi's `sm_exec.ml` does
//!   (docs/smapiv1.md §3): untyped strings, `<value/>` for the empty string, the fixed
//!   key order, `SRmaster` first in device_config;
//! - [`XenApiServer`] is a XenAPI XML-RPC server on a unix socket that checks the session
//!   ref, the argument count and types of each call (int64 as strings, bools, maps,
//!   dates), keeps a small VDI table so scans and introductions behave as in xapi, answers
//!   with `Status`/`Value` envelopes and realistic refs, and records every call.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

use legacy::xmlrpc::{self, Value};

/// One field of a request document.
#[derive(Debug, Clone)]
pub enum Field {
    /// A string (written untyped, as xapi does).
    Str(String),
    /// An array of strings.
    List(Vec<String>),
    /// A struct of strings.
    Map(Vec<(String, String)>),
}

/// Escapes as xapi's xml-light2 does (not as our driver does: that is the point of a
/// stand-in): & < > " escaped, ' left alone, most control bytes dropped.
fn escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

fn string_value(s: &str) -> String {
    if s.is_empty() {
        "<value/>".to_owned()
    } else {
        format!("<value>{}</value>", escape(s))
    }
}

/// A `methodCall` document as xapi writes it: one line, no declaration.
pub fn method_call(command: &str, fields: &[(&str, Field)]) -> String {
    let mut out = format!("<methodCall><methodName>{}</methodName><params><param><value><struct>", escape(command));
    for (name, field) in fields {
        out.push_str(&format!("<member><name>{}</name>", escape(name)));
        match field {
            Field::Str(s) => out.push_str(&string_value(s)),
            Field::List(items) if items.is_empty() => out.push_str("<value><array><data/></array></value>"),
            Field::List(items) => {
                out.push_str("<value><array><data>");
                for i in items {
                    out.push_str(&string_value(i));
                }
                out.push_str("</data></array></value>");
            }
            Field::Map(pairs) if pairs.is_empty() => out.push_str("<value><struct/></value>"),
            Field::Map(pairs) => {
                out.push_str("<value><struct>");
                for (k, v) in pairs {
                    out.push_str(&format!("<member><name>{}</name>{}</member>", escape(k), string_value(v)));
                }
                out.push_str("</struct></value>");
            }
        }
        out.push_str("</member>");
    }
    out.push_str("</struct></value></param></params></methodCall>");
    out
}

/// A VDI as xapi knows it (what its requests carry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vdi {
    /// `vdi_ref`.
    pub vdi_ref: String,
    /// `vdi_uuid`.
    pub uuid: String,
    /// `vdi_location`.
    pub location: String,
}

/// The requests xapi sends for one SR on one host.
#[derive(Debug, Clone)]
pub struct Requests {
    /// `host_ref`.
    pub host_ref: String,
    /// `session_ref`.
    pub session_ref: String,
    /// `sr_ref`.
    pub sr_ref: String,
    /// `sr_uuid`.
    pub sr_uuid: String,
    /// The PBD's device-config (without SRmaster).
    pub device_config: Vec<(String, String)>,
}

fn s(text: &str) -> Field {
    Field::Str(text.to_owned())
}

fn list(items: &[&str]) -> Field {
    Field::List(items.iter().map(|i| (*i).to_owned()).collect())
}

impl Requests {
    /// Fresh refs for an SR with this device-config.
    pub fn new(device_config: Vec<(String, String)>) -> Self {
        let r = || format!("OpaqueRef:{}", uuid::Uuid::new_v4());
        Requests {
            host_ref: r(),
            session_ref: r(),
            sr_ref: r(),
            sr_uuid: uuid::Uuid::new_v4().to_string(),
            device_config,
        }
    }

    fn dconf(&self, master: Option<bool>) -> Field {
        let mut pairs = Vec::new();
        if let Some(m) = master {
            pairs.push(("SRmaster".to_owned(), m.to_string()));
        }
        pairs.extend(self.device_config.iter().cloned());
        Field::Map(pairs)
    }

    fn task(name: &str) -> Field {
        Field::Str(format!("DummyRef:|{}|{name}", uuid::Uuid::new_v4()))
    }

    /// `sr_get_driver_info`: no session, empty device_config.
    pub fn driver_info(&self) -> String {
        method_call(
            "sr_get_driver_info",
            &[
                ("host_ref", s(&self.host_ref)),
                ("command", s("sr_get_driver_info")),
                ("args", list(&[])),
                ("device_config", Field::Map(vec![])),
            ],
        )
    }

    /// `sr_probe` with this device-config.
    pub fn probe(&self) -> String {
        method_call(
            "sr_probe",
            &[
                ("host_ref", s(&self.host_ref)),
                ("command", s("sr_probe")),
                ("args", list(&[])),
                ("device_config", self.dconf(Some(true))),
                ("session_ref", s(&self.session_ref)),
                ("sr_sm_config", Field::Map(vec![])),
                ("subtask_of", Self::task("SR.probe")),
            ],
        )
    }

    /// An SR command (`sr_create` takes `["0"]` as args).
    pub fn sr(&self, command: &str, args: &[&str], master: bool) -> String {
        let task = match command {
            "sr_create" => "SR.create",
            "sr_attach" => "SR.attach",
            "sr_detach" => "SR.detach",
            "sr_scan" => "SR.scan",
            "sr_update" => "SR.stat",
            _ => "SR.destroy",
        };
        method_call(
            command,
            &[
                ("host_ref", s(&self.host_ref)),
                ("command", s(command)),
                ("args", list(args)),
                ("device_config", self.dconf(Some(master))),
                ("session_ref", s(&self.session_ref)),
                ("sr_ref", s(&self.sr_ref)),
                ("sr_uuid", s(&self.sr_uuid)),
                ("subtask_of", Self::task(task)),
            ],
        )
    }

    /// `vdi_create` as `VDI.create` sends it.
    pub fn vdi_create(&self, size: u64, name: &str) -> String {
        let size = size.to_string();
        method_call(
            "vdi_create",
            &[
                ("host_ref", s(&self.host_ref)),
                ("command", s("vdi_create")),
                ("args", list(&[&size, name, "", "", "false", "19700101T00:00:00Z", "", "false"])),
                ("device_config", self.dconf(Some(true))),
                ("session_ref", s(&self.session_ref)),
                ("sr_ref", s(&self.sr_ref)),
                ("vdi_type", s("user")),
                ("sr_uuid", s(&self.sr_uuid)),
                ("vdi_sm_config", Field::Map(vec![])),
                ("subtask_of", Self::task("VDI.create")),
            ],
        )
    }

    /// `vdi_introduce` of the volume at `location` under xapi's `new_uuid`.
    pub fn vdi_introduce(&self, location: &str, new_uuid: &str) -> String {
        method_call(
            "vdi_introduce",
            &[
                ("host_ref", s(&self.host_ref)),
                ("command", s("vdi_introduce")),
                ("args", list(&[])),
                ("device_config", self.dconf(Some(true))),
                ("session_ref", s(&self.session_ref)),
                ("sr_ref", s(&self.sr_ref)),
                ("sr_uuid", s(&self.sr_uuid)),
                ("vdi_location", s(location)),
                ("vdi_sm_config", Field::Map(vec![])),
                ("new_uuid", s(new_uuid)),
                ("subtask_of", Self::task("VDI.introduce")),
            ],
        )
    }

    /// A command on an existing VDI.
    pub fn vdi(&self, command: &str, args: &[&str], vdi: &Vdi, master: bool) -> String {
        let mut fields = vec![
            ("host_ref", s(&self.host_ref)),
            ("command", s(command)),
            ("args", list(args)),
            ("device_config", self.dconf(Some(master))),
            ("session_ref", s(&self.session_ref)),
            ("sr_ref", s(&self.sr_ref)),
            ("sr_uuid", s(&self.sr_uuid)),
            ("vdi_ref", s(&vdi.vdi_ref)),
            ("vdi_location", s(&vdi.location)),
            ("vdi_uuid", s(&vdi.uuid)),
        ];
        if matches!(command, "vdi_snapshot" | "vdi_clone") {
            fields.push(("driver_params", Field::Map(vec![])));
        }
        fields.push(("subtask_of", Self::task(command)));
        fields.push(("vdi_on_boot", s("persist")));
        fields.push(("vdi_allow_caching", s("false")));
        method_call(command, &fields)
    }
}

/// What one driver run printed.
#[derive(Debug, Clone)]
pub struct Run {
    /// The exit status (must be 0).
    pub status: i32,
    /// stdout: one methodResponse.
    pub stdout: String,
    /// stderr: logs.
    pub stderr: String,
}

impl Run {
    /// The result value; panics on a fault.
    pub fn ok(&self) -> Value {
        match self.response() {
            Ok(v) => v,
            Err(f) => panic!("fault {}: {}\nstderr:\n{}", f.code, f.string, self.stderr),
        }
    }

    /// The fault; panics on success.
    pub fn fault(&self) -> xmlrpc::Fault {
        match self.response() {
            Ok(v) => panic!("expected a fault, got {v:?}"),
            Err(f) => f,
        }
    }

    fn response(&self) -> Result<Value, xmlrpc::Fault> {
        assert_eq!(self.status, 0, "the driver must always exit 0\n{}", self.stderr);
        assert_eq!(self.stdout.matches("<methodResponse>").count(), 1, "exactly one document: {:?}", self.stdout);
        assert!(self.stdout.trim_end().ends_with("</methodResponse>"), "nothing after the document: {:?}", self.stdout);
        assert!(self.stdout.starts_with("<?xml") || self.stdout.starts_with("<methodResponse>"), "{:?}", self.stdout);
        xmlrpc::parse_response(&self.stdout).unwrap_or_else(|e| panic!("unreadable response ({e}): {}", self.stdout))
    }
}

/// Runs `/opt/xensource/sm/CephRBDSR <document>` as xapi's forkexecd does: no stdin, only
/// `PATH=/sbin:/usr/sbin:/bin:/usr/bin`, plus the test's socket and state directory.
pub fn run_driver(document: &str, xapi_socket: &Path, run_dir: &Path) -> Run {
    run_driver_with(document, xapi_socket, run_dir, &[])
}

/// [`run_driver`] with more environment variables (`CEPHRBD_LOG`, fault injection).
pub fn run_driver_with(document: &str, xapi_socket: &Path, run_dir: &Path, env: &[(&str, &str)]) -> Run {
    let out = Command::new(crate::binary("CephRBDSR"))
        .arg(document)
        .env_clear()
        .env("PATH", "/sbin:/usr/sbin:/bin:/usr/bin")
        .env("CEPHRBD_XAPI_SOCKET", xapi_socket)
        .env("CEPHRBD_RUN_DIR", run_dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run CephRBDSR");
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One recorded XenAPI call (session ref removed).
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The method.
    pub method: String,
    /// Its arguments after the session.
    pub args: Vec<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Ref,
    Str,
    Int64,
    Bool,
    Map,
    Date,
}

/// The XenAPI methods the driver may call, with their argument types after the session.
fn signature(method: &str) -> Option<&'static [Ty]> {
    use Ty::*;
    Some(match method {
        "VDI.db_introduce" => {
            &[Str, Str, Str, Ref, Str, Bool, Bool, Map, Str, Map, Map, Bool, Int64, Int64, Ref, Bool, Date, Ref, Bool]
        }
        "VDI.db_forget"
        | "SR.get_name_label"
        | "SR.get_name_description"
        | "VDI.get_name_label"
        | "VDI.get_name_description" => &[Ref],
        "VDI.get_all_records_where" => &[Str],
        "VDI.set_virtual_size" | "VDI.set_physical_utilisation" => &[Ref, Int64],
        "VDI.set_read_only" | "VDI.set_cbt_enabled" => &[Ref, Bool],
        "VDI.get_location" => &[Ref],
        "SR.set_physical_size" | "SR.set_physical_utilisation" | "SR.set_virtual_allocation" => &[Ref, Int64],
        _ => return None,
    })
}

fn type_ok(ty: Ty, v: &Value) -> bool {
    match ty {
        Ty::Ref => v.as_str().is_some_and(|s| s.starts_with("OpaqueRef:")),
        Ty::Str => v.as_str().is_some(),
        Ty::Int64 => v.as_str().is_some_and(|s| s.parse::<i64>().is_ok()),
        Ty::Bool => matches!(v, Value::Bool(_)),
        Ty::Map => v.members().is_some_and(|m| m.iter().all(|(_, v)| v.as_str().is_some())),
        Ty::Date => matches!(v, Value::DateTime(_)),
    }
}

/// xapi's VDI table, as far as the driver can see it.
#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    /// Methods that answer a failure (a xapi that goes wrong mid-command).
    failing: Vec<String>,
    vdis: BTreeMap<String, Vec<(String, Value)>>,
    sr_ref: String,
    sr_name: String,
}

/// A recording XenAPI server on a unix socket.
pub struct XenApiServer {
    socket: PathBuf,
    session: String,
    state: Arc<Mutex<State>>,
}

impl XenApiServer {
    /// Starts a server that accepts `session` for calls about SR `sr_ref`.
    pub fn start(dir: &Path, session: &str, sr_ref: &str, sr_name: &str) -> Self {
        let socket = dir.join("xapi.sock");
        let listener = UnixListener::bind(&socket).expect("bind XenAPI socket");
        let state =
            Arc::new(Mutex::new(State { sr_ref: sr_ref.to_owned(), sr_name: sr_name.to_owned(), ..State::default() }));
        let (shared, session_ref) = (Arc::clone(&state), session.to_owned());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (state, session) = (Arc::clone(&shared), session_ref.clone());
                thread::spawn(move || serve(stream, &session, &state));
            }
        });
        XenApiServer { socket, session: session.to_owned(), state }
    }

    /// The socket path (`CEPHRBD_XAPI_SOCKET`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The session ref it accepts.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().expect("state").calls.clone()
    }

    /// The calls of one method.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.method == method).collect()
    }

    /// The VDI xapi would now know with this location.
    pub fn vdi_by_location(&self, location: &str) -> Option<Vdi> {
        let state = self.state.lock().expect("state");
        state.vdis.iter().find_map(|(r, rec)| {
            let field =
                |k: &str| rec.iter().find(|(n, _)| n == k).and_then(|(_, v)| v.as_str()).unwrap_or_default().to_owned();
            (field("location") == location).then(|| Vdi {
                vdi_ref: r.clone(),
                uuid: field("uuid"),
                location: field("location"),
            })
        })
    }

    /// A field of a VDI record.
    pub fn vdi_field(&self, vdi_ref: &str, field: &str) -> Option<Value> {
        let state = self.state.lock().expect("state");
        state.vdis.get(vdi_ref).and_then(|rec| rec.iter().find(|(n, _)| n == field).map(|(_, v)| v.clone()))
    }

    /// Removes a VDI record, as xapi does after `vdi_delete` returns.
    pub fn destroy_record(&self, vdi_ref: &str) {
        self.state.lock().expect("state").vdis.remove(vdi_ref);
    }

    /// The number of VDI records.
    pub fn vdi_count(&self) -> usize {
        self.state.lock().expect("state").vdis.len()
    }

    /// Makes `method` answer `INTERNAL_ERROR` from now on (or again normally with `false`).
    pub fn fail(&self, method: &str, failing: bool) {
        let mut state = self.state.lock().expect("state");
        state.failing.retain(|m| m != method);
        if failing {
            state.failing.push(method.to_owned());
        }
    }

    /// Sets a string field of a VDI record, as `xe vdi-param-set` does.
    pub fn set_vdi_field(&self, vdi_ref: &str, field: &str, value: &str) {
        let mut state = self.state.lock().expect("state");
        let rec = state.vdis.get_mut(vdi_ref).expect("known VDI");
        rec.retain(|(n, _)| n != field);
        rec.push((field.to_owned(), Value::str(value)));
    }
}

fn envelope_ok(value: Value) -> Value {
    Value::Struct(vec![("Status".to_owned(), Value::str("Success")), ("Value".to_owned(), value)])
}

fn envelope_err(description: &[&str]) -> Value {
    Value::Struct(vec![
        ("Status".to_owned(), Value::str("Failure")),
        ("ErrorDescription".to_owned(), Value::Array(description.iter().map(|d| Value::str(*d)).collect())),
    ])
}

fn serve(stream: UnixStream, session: &str, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let reply = answer(&String::from_utf8_lossy(&body), session, state);
    let doc = xmlrpc::response(&reply);
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{doc}",
        doc.len()
    );
}

fn answer(body: &str, session: &str, state: &Mutex<State>) -> Value {
    let Ok((method, params)) = xmlrpc::parse_call(body) else { return envelope_err(&["XMLRPC_UNMARSHAL_FAILURE"]) };
    if params.first().and_then(Value::as_str) != Some(session) {
        return envelope_err(&["SESSION_INVALID", params.first().and_then(Value::as_str).unwrap_or("")]);
    }
    let args = params[1..].to_vec();
    let mut st = state.lock().expect("state");
    st.calls.push(Call { method: method.clone(), args: args.clone() });
    let Some(sig) = signature(&method) else { return envelope_err(&["MESSAGE_METHOD_UNKNOWN", &method]) };
    if sig.len() != args.len() {
        return envelope_err(&[
            "MESSAGE_PARAMETER_COUNT_MISMATCH",
            &method,
            &sig.len().to_string(),
            &args.len().to_string(),
        ]);
    }
    if let Some(i) = sig.iter().zip(&args).position(|(t, v)| !type_ok(*t, v)) {
        return envelope_err(&["FIELD_TYPE_ERROR", &method, &format!("argument {i}: {:?}", args[i])]);
    }
    if st.failing.contains(&method) {
        return envelope_err(&["INTERNAL_ERROR", "injected by the test"]);
    }
    let arg = |i: usize| args[i].as_str().unwrap_or_default().to_owned();
    let vdi_text = |st: &State, field: &str| -> Result<Value, Value> {
        let rec = st.vdis.get(&arg(0)).ok_or_else(|| envelope_err(&["HANDLE_INVALID", "VDI", &arg(0)]))?;
        Ok(rec.iter().find(|(n, _)| n == field).map_or_else(|| Value::str(""), |(_, v)| v.clone()))
    };
    match method.as_str() {
        "VDI.get_name_label" => vdi_text(&st, "name_label").map_or_else(|e| e, envelope_ok),
        "VDI.get_name_description" => vdi_text(&st, "name_description").map_or_else(|e| e, envelope_ok),
        "SR.get_name_label" => envelope_ok(Value::str(st.sr_name.clone())),
        "SR.get_name_description" => envelope_ok(Value::str("")),
        "VDI.db_introduce" => {
            if arg(3) != st.sr_ref {
                return envelope_err(&["HANDLE_INVALID", "SR", &arg(3)]);
            }
            let vdi_ref = format!("OpaqueRef:{}", uuid::Uuid::new_v4());
            let record = vec![
                ("uuid".to_owned(), args[0].clone()),
                ("name_label".to_owned(), args[1].clone()),
                ("name_description".to_owned(), args[2].clone()),
                ("SR".to_owned(), args[3].clone()),
                ("type".to_owned(), args[4].clone()),
                ("read_only".to_owned(), args[6].clone()),
                ("location".to_owned(), args[8].clone()),
                ("sm_config".to_owned(), args[10].clone()),
                ("virtual_size".to_owned(), args[12].clone()),
                ("physical_utilisation".to_owned(), args[13].clone()),
                ("cbt_enabled".to_owned(), args[18].clone()),
            ];
            st.vdis.insert(vdi_ref.clone(), record);
            envelope_ok(Value::str(vdi_ref))
        }
        "VDI.db_forget" => {
            st.vdis.remove(&arg(0));
            envelope_ok(Value::str(""))
        }
        "VDI.get_all_records_where" => {
            let expected = format!("field \"SR\" = \"{}\"", st.sr_ref);
            if arg(0) != expected {
                return envelope_err(&["SR_UNKNOWN_QUERY", &arg(0)]);
            }
            envelope_ok(Value::Struct(st.vdis.iter().map(|(r, rec)| (r.clone(), Value::Struct(rec.clone()))).collect()))
        }
        "VDI.get_location" => match st.vdis.get(&arg(0)) {
            Some(rec) => envelope_ok(
                rec.iter().find(|(n, _)| n == "location").map_or_else(|| Value::str(""), |(_, v)| v.clone()),
            ),
            None => envelope_err(&["HANDLE_INVALID", "VDI", &arg(0)]),
        },
        "VDI.set_virtual_size" | "VDI.set_physical_utilisation" | "VDI.set_read_only" | "VDI.set_cbt_enabled" => {
            let field = method.trim_start_matches("VDI.set_").to_owned();
            let Some(rec) = st.vdis.get_mut(&arg(0)) else { return envelope_err(&["HANDLE_INVALID", "VDI", &arg(0)]) };
            rec.retain(|(n, _)| *n != field);
            rec.push((field, args[1].clone()));
            envelope_ok(Value::str(""))
        }
        _ => {
            if arg(0) != st.sr_ref {
                return envelope_err(&["HANDLE_INVALID", "SR", &arg(0)]);
            }
            envelope_ok(Value::str(""))
        }
    }
}
