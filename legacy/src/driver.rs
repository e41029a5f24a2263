//! The SMAPIv1 exec-driver front end: `/opt/xensource/sm/CephRBDSR`, SR type `cephrbd`
//! (docs/smapiv1.md).
//!
//! xapi runs `[CephRBDSR, <methodCall>]` with no stdin and a bare `PATH`; the driver prints
//! exactly one `methodResponse` and always exits 0. Faults carry XE_SR_ERRORCODES numbers
//! and `"<description> [opterr=<detail>]"`; 16/24/38/39/144 have special meanings to xapi.
//!
//! Every command is translated into the same `common::ops` operations the SMAPIv3 plugin uses,
//! on the same layout in Ceph (the SR's namespace is derived from `sr_uuid` unless
//! device-config names one), so an SR can be forgotten and introduced under the other
//! type. What xapi keeps in its own database (new VDIs, sizes, SR usage) is written back
//! with XenAPI calls under the request's session ([`crate::xenapi`]). Errors become faults
//! in one place, [`crate::fault`].

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use tracing::{error, info, info_span, warn};

use common::config::{self, Datapath, DeviceConfig};
use common::error::chain;
use common::host::lock::{lock_file, LockFile};
use common::host::Host;
use common::layout::names::parse_uuid;
use common::layout::uri::{SrUri, VolumeUri};
use common::ops::{cbt, datapath, sr, volume};
use common::smapi::wire::{Implementation, Volume};
use common::OpError;

use crate::fault::Fault;
use crate::xenapi::Session;
use crate::xmlrpc::{self, Value};

/// The domain the legacy path counts its attachments under (xapi attaches once per host).
pub const DOMAIN: &str = "legacy";

/// Capabilities declared by `sr_get_driver_info`: only what works and is tested.
pub const CAPABILITIES: &[&str] = &[
    "SR_PROBE",
    "SR_UPDATE",
    "SR_SCAN",
    "SR_ATTACH",
    "SR_DETACH",
    "VDI_CREATE",
    "VDI_DELETE",
    "VDI_ATTACH",
    "VDI_DETACH",
    "VDI_ACTIVATE",
    "VDI_DEACTIVATE",
    "VDI_CLONE",
    "VDI_SNAPSHOT",
    "VDI_RESIZE",
    "VDI_UPDATE",
    "VDI_INTRODUCE",
    // vdi_enable_cbt, vdi_disable_cbt, vdi_data_destroy, vdi_list_changed_blocks
    // (docs/cbt.md): RBD snapshots are the anchors, `rbd diff` the changed blocks.
    "VDI_CONFIG_CBT",
    "THIN_PROVISIONING",
    // VDIs over 2 TiB: destroy moves the image to the RBD trash in constant time and the
    // trash is purged in the background, so a destroy of any size fits the time limit.
    "LARGE_VDI",
];

/// The fields of the request struct this driver reads (the rest are ignored).
#[derive(Debug, Default)]
struct Request {
    command: String,
    args: Vec<String>,
    device_config: BTreeMap<String, String>,
    session_ref: Option<String>,
    subtask_of: Option<String>,
    sr_ref: Option<String>,
    sr_uuid: Option<String>,
    vdi_ref: Option<String>,
    vdi_location: Option<String>,
    vdi_uuid: Option<String>,
    vdi_type: Option<String>,
    new_uuid: Option<String>,
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::members)
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
        .collect()
}

impl Request {
    fn parse(argv: &[OsString]) -> Result<Request, Fault> {
        let [_, document] = argv else {
            return Err(Fault::new(
                143,
                format!("expected one argument (the XML-RPC request), got {}", argv.len().saturating_sub(1)),
            ));
        };
        let document = document.to_str().ok_or_else(|| Fault::new(143, "the request is not UTF-8"))?;
        let (method, params) = xmlrpc::parse_call(document).map_err(|e| Fault::new(143, e.to_string()))?;
        let [params] = params.as_slice() else {
            return Err(Fault::new(143, "expected exactly one parameter, a struct"));
        };
        let text = |k: &str| params.get(k).and_then(Value::as_str).map(str::to_owned);
        let command = text("command").unwrap_or_else(|| method.clone());
        if command != method {
            return Err(Fault::new(143, format!("methodName {method} and command {command} differ")));
        }
        let mut device_config = string_map(params.get("device_config"));
        // Added by xapi, not by the administrator.
        device_config.remove("SRmaster");
        Ok(Request {
            command,
            args: params
                .get("args")
                .and_then(Value::items)
                .unwrap_or_default()
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            device_config,
            session_ref: text("session_ref"),
            subtask_of: text("subtask_of"),
            sr_ref: text("sr_ref"),
            sr_uuid: text("sr_uuid"),
            vdi_ref: text("vdi_ref"),
            vdi_location: text("vdi_location"),
            vdi_uuid: text("vdi_uuid"),
            vdi_type: text("vdi_type"),
            new_uuid: text("new_uuid"),
        })
    }

    fn need<'a>(&self, field: &'a Option<String>, name: &str) -> Result<&'a str, Fault> {
        field.as_deref().ok_or_else(|| Fault::new(143, format!("the request has no {name}")))
    }

    fn arg(&self, i: usize) -> Result<&str, Fault> {
        self.args
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| Fault::new(143, format!("{} needs argument {i}", self.command)))
    }

    /// The device-config with the SR uuid xapi gave, as SR.create would have returned it.
    fn config(&self) -> Result<BTreeMap<String, String>, Fault> {
        let mut config = self.device_config.clone();
        config.insert("sr_uuid".to_owned(), self.need(&self.sr_uuid, "sr_uuid")?.to_owned());
        Ok(config)
    }

    /// The SR string of this request's SR.
    fn sr(&self) -> Result<SrUri, Fault> {
        let config = DeviceConfig::parse(&self.config()?).map_err(|e| Fault::of(47, &e.into()))?;
        let uuid = config.sr_uuid.ok_or_else(|| Fault::new(143, "no sr_uuid"))?;
        Ok(SrUri::from_config(&config, uuid))
    }

    fn session(&self, timeout: Duration) -> Result<Session, Fault> {
        Ok(Session::new(self.need(&self.session_ref, "session_ref")?, self.subtask_of.as_deref(), timeout))
    }
}

/// Serves one invocation: returns the `methodResponse` document to print. Never panics: a
/// panic anywhere in the command (a bug of ours) becomes an `SMGeneral` fault, so xapi
/// still reads exactly one document and exit status 0.
pub fn run(argv: &[OsString]) -> String {
    common::process::deadline::start();
    panic::catch_unwind(AssertUnwindSafe(|| serve(argv))).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        let fault = Fault::new(202, format!("internal error: the driver panicked: {message}"));
        error!("{}", fault.detail);
        fault.render()
    })
}

fn serve(argv: &[OsString]) -> String {
    let request = match Request::parse(argv) {
        Ok(r) => r,
        Err(f) => {
            error!("bad request: {}", f.detail);
            return f.render();
        }
    };
    // What the request says, bounded and escaped: every log line of the call carries it.
    let span = info_span!(
        "legacy",
        command = %short(&request.command),
        sr = %short(request.sr_uuid.as_deref().unwrap_or(""))
    );
    let _entered = span.enter();
    common::process::inject::panic_point(&request.command);
    match dispatch(&request) {
        Ok(value) => xmlrpc::response(&value),
        Err(f) => {
            error!(code = f.code, "{}", f.detail);
            f.render()
        }
    }
}

/// The commands the SM drivers run under their SR lock (LVHDSR's `OPS_EXCLUSIVE` in
/// xcp-ng/sm): on one host, none of them runs while another does, so an `sr_scan` cannot
/// interleave with a `vdi_create` or `vdi_delete` and forget or resurrect a VDI.
pub const OPS_EXCLUSIVE: &[&str] = &[
    "sr_create",
    "sr_delete",
    "sr_attach",
    "sr_detach",
    "sr_scan",
    "sr_update",
    "vdi_create",
    "vdi_delete",
    "vdi_resize",
    "vdi_snapshot",
    "vdi_clone",
];

/// Holds this host's legacy lock of the request's SR for an exclusive command (a lock file
/// of its own: the operations take the SR's own lock inside).
fn exclusive(req: &Request) -> Result<Option<LockFile>, Fault> {
    if !OPS_EXCLUSIVE.contains(&req.command.as_str()) {
        return Ok(None);
    }
    let Some(sr_uuid) = req.sr_uuid.as_deref().filter(|u| uuid::Uuid::try_parse(u).is_ok()) else {
        return Ok(None);
    };
    let timeout = DeviceConfig::parse(&req.config()?).map(|c| c.timeout).unwrap_or(config::DEFAULT_TIMEOUT);
    let path = Host::from_env().run_dir.join(format!("legacy-{sr_uuid}.lock"));
    let lock = lock_file(&path, timeout, &format!("SR {sr_uuid}")).map_err(|e| Fault::of(16, &e))?;
    Ok(Some(lock))
}

/// A request's word for a log field: escaped, at most 64 characters.
fn short(text: &str) -> String {
    let mut out: String = text.chars().take(64).flat_map(char::escape_debug).collect();
    if text.chars().nth(64).is_some() {
        out.push('…');
    }
    out
}

fn dispatch(req: &Request) -> Result<Value, Fault> {
    let _exclusive = exclusive(req)?;
    match req.command.as_str() {
        "sr_get_driver_info" => Ok(driver_info()),
        "sr_probe" => sr_probe(req),
        "sr_create" => sr_create(req),
        "sr_attach" => {
            sr::attach(&Host::from_env(), &req.config()?).map_err(|e| Fault::of(47, &e))?;
            Ok(Value::Nil)
        }
        "sr_detach" | "vdi_epoch_begin" | "vdi_epoch_end" => Ok(Value::Nil),
        "vdi_update" => vdi_update(req),
        "sr_delete" => {
            sr::destroy(&Host::from_env(), &req.sr()?).map_err(|e| Fault::of(202, &e))?;
            Ok(Value::Nil)
        }
        "sr_scan" => sr_scan(req),
        "sr_update" => {
            let sr = req.sr()?;
            let session = req.session(sr.conn.timeout)?;
            update_sr_sizes(req, &sr, &session, None)?;
            Ok(Value::Nil)
        }
        "vdi_create" => vdi_create(req),
        "vdi_introduce" => vdi_introduce(req),
        "vdi_delete" => vdi_delete(req),
        "vdi_snapshot" | "vdi_clone" => vdi_copy(req),
        "vdi_resize" => vdi_resize(req),
        "vdi_attach" => vdi_attach(req),
        "vdi_activate" => {
            let uri = volume_uri(req)?;
            cbt::attachable(&uri).map_err(|e| Fault::of(46, &e))?;
            let read_only = req.arg(0)? == "false";
            datapath::activate(&Host::from_env(), &uri, DOMAIN, read_only).map_err(|e| Fault::of(46, &e))?;
            Ok(Value::Nil)
        }
        "vdi_deactivate" => {
            datapath::deactivate(&Host::from_env(), &volume_uri(req)?, DOMAIN).map_err(|e| Fault::of(46, &e))?;
            Ok(Value::Nil)
        }
        "vdi_detach" => {
            // Never fails (datapath::detach logs what it leaves).
            if let Ok(uri) = volume_uri(req) {
                datapath::detach(&Host::from_env(), &uri.render(), DOMAIN);
            }
            Ok(Value::Nil)
        }
        "vdi_enable_cbt" | "vdi_disable_cbt" | "vdi_data_destroy" => {
            let sr = req.sr()?;
            let key = req.need(&req.vdi_location, "vdi_location")?;
            let host = Host::from_env();
            match req.command.as_str() {
                "vdi_enable_cbt" => cbt::enable(&host, &sr, key).map_err(|e| Fault::of(457, &e))?,
                "vdi_disable_cbt" => cbt::disable(&host, &sr, key).map_err(|e| Fault::of(458, &e))?,
                _ => cbt::data_destroy(&host, &sr, key).map_err(|e| Fault::of(80, &e))?,
            }
            Ok(Value::Nil)
        }
        "vdi_list_changed_blocks" => vdi_list_changed_blocks(req),
        other => Err(Fault::new(38, format!("command {other} is not implemented by CephRBDSR"))),
    }
}

fn driver_info() -> Value {
    let s = |k: &str, v: &str| (k.to_owned(), Value::str(v));
    Value::Struct(vec![
        s("name", "Ceph RBD"),
        s("description", "Ceph RBD images as XCP-ng virtual disks (cephrbd, legacy SR type)"),
        s("vendor", "cephrbd"),
        s("copyright", "(C) the cephrbd authors, LGPL-2.1-only"),
        s("driver_version", env!("CARGO_PKG_VERSION")),
        s("required_api_version", "1.0"),
        ("capabilities".to_owned(), Value::Array(CAPABILITIES.iter().map(|c| Value::str(*c)).collect())),
        (
            "configuration".to_owned(),
            Value::Array(
                config::KEYS
                    .iter()
                    .filter(|(k, _)| *k != "sr_uuid")
                    .map(|(k, d)| Value::Struct(vec![s("key", k), s("description", d)]))
                    .collect(),
            ),
        ),
    ])
}

fn sr_probe(req: &Request) -> Result<Value, Fault> {
    let results = sr::probe(&req.device_config).map_err(|e| Fault::of(47, &e))?;
    let mut xml = String::from("<?xml version=\"1.0\"?><SRlist>");
    for r in &results {
        let field = |out: &mut String, tag: &str, value: &str| {
            out.push_str(&format!("<{tag}>"));
            xmlrpc::escape_into(out, value);
            out.push_str(&format!("</{tag}>"));
        };
        let info = &r.extra_info;
        match &r.sr {
            Some(stat) => {
                xml.push_str("<SR>");
                field(&mut xml, "UUID", stat.uuid.as_deref().unwrap_or_default());
                field(&mut xml, "NameLabel", &stat.name);
                field(&mut xml, "PoolName", info.get("pool").map_or("", String::as_str));
                field(&mut xml, "Namespace", info.get("namespace").map_or("", String::as_str));
                field(&mut xml, "Size", &stat.total_space.to_string());
                field(&mut xml, "FreeSpace", &stat.free_space.to_string());
                xml.push_str("</SR>");
            }
            None => {
                xml.push_str("<Pool>");
                field(&mut xml, "PoolName", info.get("pool").map_or("", String::as_str));
                field(&mut xml, "Size", info.get("total_space").map_or("", String::as_str));
                field(&mut xml, "FreeSpace", info.get("free_space").map_or("", String::as_str));
                xml.push_str("</Pool>");
            }
        }
    }
    xml.push_str("</SRlist>");
    Ok(Value::String(xml))
}

fn sr_create(req: &Request) -> Result<Value, Fault> {
    let sr_uuid = req.need(&req.sr_uuid, "sr_uuid")?;
    let config = DeviceConfig::parse(&req.device_config).map_err(|e| Fault::of(115, &e.into()))?;
    // The name lives in xapi's database; keep a copy in Ceph for SR.probe.
    let session = req.session(config.timeout)?;
    let sr_ref = req.need(&req.sr_ref, "sr_ref")?;
    let text = |method: &str| {
        session
            .call(method, vec![Value::str(sr_ref)])
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let (name, description) = (text("SR.get_name_label"), text("SR.get_name_description"));
    let uuid = parse_uuid("sr_uuid", sr_uuid).map_err(|e| Fault::of(143, &e.into()))?;
    sr::create(&Host::from_env(), &req.device_config, uuid, &name, &description).map_err(|e| Fault::of(202, &e))?;
    Ok(Value::Nil)
}

/// `VDI.db_introduce` of a volume; returns the `{uuid, location}` struct xapi expects.
fn introduce(
    req: &Request,
    session: &Session,
    v: &Volume,
    uuid: &str,
    vdi_type: &str,
    sr: &SrUri,
) -> Result<Value, Fault> {
    let sr_ref = req.need(&req.sr_ref, "sr_ref")?;
    let mut sm_config = Vec::new();
    if sr.datapath != Datapath::Qsd {
        // A raw /dev/rbdN or /dev/nbdN is served by blkback, not tapdisk (docs/smapiv1.md §5).
        sm_config.push(("backend-kind".to_owned(), Value::str("vbd")));
    }
    let args = vec![
        Value::str(uuid),
        Value::str(v.name.clone()),
        Value::str(v.description.clone()),
        Value::str(sr_ref),
        Value::str(vdi_type),
        Value::Bool(v.sharable),
        Value::Bool(!v.read_write),
        Value::Struct(Vec::new()),
        Value::str(v.key.clone()),
        Value::Struct(Vec::new()),
        Value::Struct(sm_config),
        Value::Bool(true),
        Value::str(v.virtual_size.to_string()),
        Value::str(v.physical_utilisation.to_string()),
        Value::str("OpaqueRef:NULL"),
        Value::Bool(false),
        Value::DateTime("19700101T00:00:00Z".to_owned()),
        Value::str("OpaqueRef:NULL"),
        Value::Bool(v.cbt_enabled),
    ];
    session.call("VDI.db_introduce", args).map_err(|e| Fault::xenapi(&e))?;
    info!(vdi = uuid, location = %v.key, "VDI introduced to xapi");
    Ok(vdi_info(uuid, &v.key))
}

fn vdi_info(uuid: &str, location: &str) -> Value {
    Value::Struct(vec![("uuid".to_owned(), Value::str(uuid)), ("location".to_owned(), Value::str(location))])
}

fn vdi_create(req: &Request) -> Result<Value, Fault> {
    let sr = req.sr()?;
    let session = req.session(sr.conn.timeout)?;
    let size: i64 =
        req.arg(0)?.parse().map_err(|_| Fault::new(79, format!("size {:?} is not a number", req.args[0])))?;
    let vdi_type = req.vdi_type.clone().unwrap_or_else(|| "user".to_owned());
    let sharable = matches!(vdi_type.as_str(), "ha_statefile" | "redo_log");
    let description = req.args.get(2).cloned().unwrap_or_default();
    let v = volume::create(&Host::from_env(), &sr, req.arg(1)?, &description, size, sharable)
        .map_err(|e| Fault::of(78, &e))?;
    let done = volume::set(&Host::from_env(), &sr, &v.key, "vdi-type", &vdi_type)
        .map_err(|e| Fault::of(78, &e))
        .and_then(|()| introduce(req, &session, &v, &v.key, &vdi_type, &sr));
    undo_unless_done(&sr, &v, done)
}

/// A new volume xapi did not get: destroyed again, so the next `sr_scan` does not adopt
/// it as a VDI nobody asked for. A failed destroy is added to the fault.
fn undo_unless_done(sr: &SrUri, new: &Volume, done: Result<Value, Fault>) -> Result<Value, Fault> {
    let Err(mut fault) = done else { return done };
    match volume::destroy(&Host::from_env(), sr, &new.key) {
        Ok(()) => info!(volume = %new.key, "the new volume was destroyed again: xapi did not get it"),
        Err(e) => {
            warn!(volume = %new.key, "cannot destroy the volume xapi did not get: {}", chain(&e));
            fault = Fault::new(
                fault.code,
                format!("{}; destroying the new volume {} also failed: {}", fault.detail, new.key, chain(&e)),
            );
        }
    }
    Err(fault)
}

/// `vdi_update`: xapi changed the VDI's name or description (`xe vdi-param-set`); they are
/// read back from xapi and written to Ceph, where `SR.probe`, `sr_scan` and the SMAPIv3
/// plugin read them.
fn vdi_update(req: &Request) -> Result<Value, Fault> {
    let sr = req.sr()?;
    let session = req.session(sr.conn.timeout)?;
    let key = req.need(&req.vdi_location, "vdi_location")?;
    let vdi_ref = req.need(&req.vdi_ref, "vdi_ref")?;
    let text = |method: &str| -> Result<String, Fault> {
        let value = session.call(method, vec![Value::str(vdi_ref)]).map_err(|e| Fault::xenapi(&e))?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    };
    let (name, description) = (text("VDI.get_name_label")?, text("VDI.get_name_description")?);
    volume::set_name(&Host::from_env(), &sr, key, &name).map_err(|e| Fault::of(202, &e))?;
    volume::set_description(&Host::from_env(), &sr, key, &description).map_err(|e| Fault::of(202, &e))?;
    info!(volume = key, "name and description written to Ceph");
    Ok(Value::Nil)
}

fn vdi_introduce(req: &Request) -> Result<Value, Fault> {
    let sr = req.sr()?;
    let session = req.session(sr.conn.timeout)?;
    let location = req.need(&req.vdi_location, "vdi_location")?;
    let v = volume::stat(&sr, location).map_err(|e| Fault::of(144, &e))?;
    let uuid = req.new_uuid.clone().unwrap_or_else(|| v.key.clone());
    let vdi_type = v.keys.get("vdi-type").cloned().unwrap_or_else(|| "user".to_owned());
    introduce(req, &session, &v, &uuid, &vdi_type, &sr)
}

fn vdi_delete(req: &Request) -> Result<Value, Fault> {
    let sr = req.sr()?;
    let key = req.need(&req.vdi_location, "vdi_location")?;
    match volume::destroy(&Host::from_env(), &sr, key) {
        // Already gone: xapi removes its record next; deleting twice must not fail.
        Ok(()) | Err(OpError::VolumeDoesNotExist { .. }) => Ok(Value::Nil),
        Err(e) => Err(Fault::of(80, &e)),
    }
}

fn vdi_copy(req: &Request) -> Result<Value, Fault> {
    let sr = req.sr()?;
    let session = req.session(sr.conn.timeout)?;
    let key = req.need(&req.vdi_location, "vdi_location")?.to_owned();
    let (new, code) = if req.command == "vdi_snapshot" {
        (volume::snapshot(&Host::from_env(), &sr, &key), 82)
    } else {
        (volume::clone(&Host::from_env(), &sr, &key), 81)
    };
    let new = new.map_err(|e| Fault::of(code, &e))?;
    let done = volume::stat(&sr, &key).map_err(|e| Fault::of(code, &e)).and_then(|source| {
        let vdi_type = source.keys.get("vdi-type").cloned().unwrap_or_else(|| "user".to_owned());
        volume::set(&Host::from_env(), &sr, &new.key, "vdi-type", &vdi_type).map_err(|e| Fault::of(code, &e))?;
        introduce(req, &session, &new, &new.key, &vdi_type, &sr)
    });
    undo_unless_done(&sr, &new, done)
}

fn vdi_resize(req: &Request) -> Result<Value, Fault> {
    let sr = req.sr()?;
    let session = req.session(sr.conn.timeout)?;
    let key = req.need(&req.vdi_location, "vdi_location")?.to_owned();
    let new_size: i64 =
        req.arg(0)?.parse().map_err(|_| Fault::new(79, format!("size {:?} is not a number", req.args[0])))?;
    volume::resize(&Host::from_env(), &sr, &key, new_size).map_err(|e| Fault::of(110, &e))?;
    let v = volume::stat(&sr, &key).map_err(|e| Fault::of(110, &e))?;
    let vdi_ref = req.need(&req.vdi_ref, "vdi_ref")?;
    session
        .call("VDI.set_virtual_size", vec![Value::str(vdi_ref), Value::str(v.virtual_size.to_string())])
        .map_err(|e| Fault::xenapi(&e))?;
    Ok(vdi_info(req.vdi_uuid.as_deref().unwrap_or(&v.key), &v.key))
}

/// The datapath URI of this request's VDI (the SR's preferred scheme).
fn volume_uri(req: &Request) -> Result<VolumeUri, Fault> {
    let sr = req.sr()?;
    let key = req.need(&req.vdi_location, "vdi_location")?;
    let v = volume::stat(&sr, key).map_err(|e| Fault::of(144, &e))?;
    let uri = v.uri.first().ok_or_else(|| Fault::new(46, "the volume has no datapath URI"))?;
    VolumeUri::parse(uri).map_err(|e| Fault::of(46, &e.into()))
}

/// `vdi_list_changed_blocks`: xapi sends the older VDI as the request's VDI and the newer
/// one's ref as `args[0]` (`vdi_list_changed_blocks` in sm.ml); its location is our key.
fn vdi_list_changed_blocks(req: &Request) -> Result<Value, Fault> {
    let sr = req.sr()?;
    let session = req.session(sr.conn.timeout)?;
    let from = req.need(&req.vdi_location, "vdi_location")?;
    let to = session.call("VDI.get_location", vec![Value::str(req.arg(0)?)]).map_err(|e| Fault::xenapi(&e))?;
    let to = to.as_str().ok_or_else(|| Fault::new(153, "VDI.get_location did not answer a string"))?;
    let changed = cbt::list_changed_blocks(&sr, from, to, 0, -1).map_err(|e| Fault::of(460, &e))?;
    Ok(Value::String(changed.bitmap))
}

fn vdi_attach(req: &Request) -> Result<Value, Fault> {
    let uri = volume_uri(req)?;
    cbt::attachable(&uri).map_err(|e| Fault::of(46, &e))?;
    let backend = datapath::attach(&Host::from_env(), &uri, DOMAIN).map_err(|e| Fault::of(46, &e))?;
    let key = req.vdi_location.clone().unwrap_or_default();
    let s = |k: &str, v: String| (k.to_owned(), Value::String(v));
    let mut device = None;
    let mut nbd = String::new();
    for implementation in &backend.implementations {
        match implementation {
            Implementation::BlockDevice { path } => device = Some(path.clone()),
            Implementation::Nbd { uri } => nbd.clone_from(uri),
            Implementation::XenDisk { .. } => {}
        }
    }
    // 8.2 requires params and 8.3 params_nbd (which may be empty): both, always. Without a
    // block device (the qemu-storage-daemon mode), params is the NBD export too.
    let mut members = vec![s("params", device.unwrap_or_else(|| nbd.clone()))];
    members.push(s("params_nbd", nbd));
    members.push(("o_direct".to_owned(), Value::Bool(true)));
    members.push(s("o_direct_reason", "SR_NOT_SUPPORTED".to_owned()));
    members.push(("xenstore_data".to_owned(), Value::Struct(vec![s("vdi-uuid", key)])));
    Ok(Value::Struct(members))
}

/// Records SR usage in xapi: physical size, utilisation, and virtual allocation.
fn update_sr_sizes(req: &Request, sr: &SrUri, session: &Session, volumes: Option<&[Volume]>) -> Result<(), Fault> {
    let sr_ref = req.need(&req.sr_ref, "sr_ref")?;
    let stat = sr::stat(&Host::from_env(), sr).map_err(|e| Fault::of(47, &e))?;
    let listed;
    let volumes = match volumes {
        Some(v) => v,
        None => {
            listed = sr::ls(sr).map_err(|e| Fault::of(47, &e))?;
            &listed
        }
    };
    let allocation: i64 = volumes.iter().map(|v| v.virtual_size).sum();
    for (method, value) in [
        ("SR.set_physical_size", stat.total_space),
        ("SR.set_physical_utilisation", stat.total_space - stat.free_space),
        ("SR.set_virtual_allocation", allocation),
    ] {
        session.call(method, vec![Value::str(sr_ref), Value::str(value.to_string())]).map_err(|e| Fault::xenapi(&e))?;
    }
    Ok(())
}

/// `sr_scan`: makes xapi's VDI records match the SR, by location: introduce what is new,
/// forget what is gone, correct sizes and read-only flags; then the SR's sizes.
fn sr_scan(req: &Request) -> Result<Value, Fault> {
    let sr = req.sr()?;
    let session = req.session(sr.conn.timeout)?;
    let sr_ref = req.need(&req.sr_ref, "sr_ref")?;
    let volumes = sr::ls(&sr).map_err(|e| Fault::of(40, &e))?;
    let known = session
        .call("VDI.get_all_records_where", vec![Value::str(format!("field \"SR\" = \"{sr_ref}\""))])
        .map_err(|e| Fault::xenapi(&e))?;
    let known: Vec<(String, &Value)> =
        known.members().unwrap_or_default().iter().map(|(r, v)| (r.clone(), v)).collect();
    let location = |rec: &Value| rec.get("location").and_then(Value::as_str).unwrap_or_default().to_owned();
    for v in &volumes {
        match known.iter().find(|(_, rec)| location(rec) == v.key) {
            None => {
                let vdi_type = v.keys.get("vdi-type").cloned().unwrap_or_else(|| "user".to_owned());
                introduce(req, &session, v, &v.key, &vdi_type, &sr)?;
            }
            Some((vdi_ref, rec)) => {
                let differs = |field: &str, ours: String| rec.get(field).and_then(Value::as_str) != Some(ours.as_str());
                for (field, method, value) in [
                    ("virtual_size", "VDI.set_virtual_size", v.virtual_size.to_string()),
                    ("physical_utilisation", "VDI.set_physical_utilisation", v.physical_utilisation.to_string()),
                ] {
                    if differs(field, value.clone()) {
                        session
                            .call(method, vec![Value::str(vdi_ref.clone()), Value::str(value)])
                            .map_err(|e| Fault::xenapi(&e))?;
                    }
                }
                if rec.get("read_only") != Some(&Value::Bool(!v.read_write)) {
                    session
                        .call("VDI.set_read_only", vec![Value::str(vdi_ref.clone()), Value::Bool(!v.read_write)])
                        .map_err(|e| Fault::xenapi(&e))?;
                }
                // As the SM drivers' scan does (`_db_update` in sm's VDI.py): xapi keeps
                // CBT only where the driver says it is on.
                if rec.get("cbt_enabled") != Some(&Value::Bool(v.cbt_enabled)) {
                    session
                        .call("VDI.set_cbt_enabled", vec![Value::str(vdi_ref.clone()), Value::Bool(v.cbt_enabled)])
                        .map_err(|e| Fault::xenapi(&e))?;
                }
            }
        }
    }
    let gone: Vec<&(String, &Value)> =
        known.iter().filter(|(_, rec)| !volumes.iter().any(|v| v.key == location(rec))).collect();
    // Never forget a VDI on one reading: look again, now, at each one that seems gone.
    let again = if gone.is_empty() { Vec::new() } else { sr::ls(&sr).map_err(|e| Fault::of(40, &e))? };
    for (vdi_ref, rec) in gone {
        if again.iter().any(|v| v.key == location(rec)) {
            continue;
        }
        warn!(vdi = %vdi_ref, location = %location(rec), "VDI gone from Ceph: forgetting it");
        session.call("VDI.db_forget", vec![Value::str(vdi_ref.clone())]).map_err(|e| Fault::xenapi(&e))?;
    }
    update_sr_sizes(req, &sr, &session, Some(&volumes))?;
    Ok(Value::Nil)
}
