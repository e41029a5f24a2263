//! The SMAPIv1 exec driver `CephRBDSR` (SR type `cephrbd`) on the real test cluster, driven
//! with the request documents xapi writes, against a recording XenAPI server.

// An integration-test crate is all tests; the lint is for test code mixed into the library.
#![allow(clippy::tests_outside_test_module)]

use std::path::PathBuf;

use cephrbd_tests::xapi::{method_call, run_driver, Field, Requests, Run, Vdi, XenApiServer};
use cephrbd_tests::{scratch_dir, Lab, TestSr};
use legacy::xmlrpc::Value;
use serde_json::json;

const MIB: u64 = 1 << 20;

/// One host with xapi stand-in: a state directory, a XenAPI server, the SR's requests.
struct Host {
    dir: PathBuf,
    server: XenApiServer,
    req: Requests,
}

impl Host {
    fn new(device_config: Vec<(String, String)>) -> Host {
        let dir = scratch_dir("legacy");
        let req = Requests::new(device_config);
        let server = XenApiServer::start(&dir, &req.session_ref, &req.sr_ref, "Ceph legacy SR");
        Host { dir, server, req }
    }

    fn run(&self, document: &str) -> Run {
        run_driver(document, self.server.socket(), &self.dir.join("run"))
    }

    fn namespace(&self) -> String {
        format!("cephrbd-{}", self.req.sr_uuid)
    }

    /// The VDI the driver introduced for a `{uuid, location}` answer.
    fn introduced(&self, answer: &Value) -> Vdi {
        let location = answer.get("location").and_then(Value::as_str).expect("location");
        let vdi = self.server.vdi_by_location(location).expect("introduced to xapi before the answer");
        assert_eq!(Some(vdi.uuid.as_str()), answer.get("uuid").and_then(Value::as_str));
        vdi
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn lab_config(lab: &Lab, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut c = vec![
        ("pool".to_owned(), lab.pool.clone()),
        ("ceph_conf".to_owned(), lab.conf.display().to_string()),
        ("ceph_user".to_owned(), lab.user.clone()),
        ("keyring".to_owned(), lab.keyring.display().to_string()),
    ];
    c.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    c
}

fn qemu_io(url: &str, commands: &[&str]) -> bool {
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["60", "qemu-io", "-f", "raw"]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    let out = cmd.arg(url).output().expect("qemu-io");
    out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("failed")
}

#[test]
fn driver_info_has_all_eight_fields() {
    let host = Host::new(vec![]);
    let info = host.run(&host.req.driver_info()).ok();
    for field in ["name", "description", "vendor", "copyright", "driver_version", "required_api_version"] {
        assert!(info.get(field).and_then(Value::as_str).is_some(), "{field}");
    }
    let caps: Vec<&str> =
        info.get("capabilities").and_then(Value::items).expect("array").iter().filter_map(Value::as_str).collect();
    assert!(caps.contains(&"VDI_ACTIVATE") && caps.contains(&"SR_SCAN"), "{caps:?}");
    let config = info.get("configuration").and_then(Value::items).expect("array");
    assert!(config.iter().any(|c| c.get("key").and_then(Value::as_str) == Some("pool")));
    assert!(host.server.calls().is_empty(), "driver info needs no session");
}

/// The request builder writes what xapi writes, byte for byte (docs/smapiv1.md §3).
#[test]
fn request_documents_match_xapis_bytes() {
    let doc = method_call(
        "sr_create",
        &[
            ("host_ref", Field::Str("OpaqueRef:5d8e2c17-3b3c-4f0e-9a52-0c2f6a1b9e01".into())),
            ("command", Field::Str("sr_create".into())),
            ("args", Field::List(vec!["0".into()])),
            (
                "device_config",
                Field::Map(vec![
                    ("SRmaster".into(), "true".into()),
                    ("pool".into(), "xcp".into()),
                    ("ceph_conf".into(), "/etc/ceph/ceph.conf".into()),
                    ("ceph_user".into(), "admin".into()),
                ]),
            ),
            ("session_ref", Field::Str("OpaqueRef:9c1b7e44-0d2a-4c61-b7f3-6e5a2d8f1c30".into())),
            ("sr_ref", Field::Str("OpaqueRef:2f4a6c8e-1b3d-4e5f-8a7b-9c0d1e2f3a4b".into())),
            ("sr_uuid", Field::Str("3f6c1b0e-8a1e-4d7e-9a53-2b8f4c3c9f10".into())),
            ("subtask_of", Field::Str("DummyRef:|a1b2c3d4-0002-4000-8000-000000000002|SR.create".into())),
        ],
    );
    assert_eq!(doc, "<methodCall><methodName>sr_create</methodName><params><param><value><struct><member><name>host_ref</name><value>OpaqueRef:5d8e2c17-3b3c-4f0e-9a52-0c2f6a1b9e01</value></member><member><name>command</name><value>sr_create</value></member><member><name>args</name><value><array><data><value>0</value></data></array></value></member><member><name>device_config</name><value><struct><member><name>SRmaster</name><value>true</value></member><member><name>pool</name><value>xcp</value></member><member><name>ceph_conf</name><value>/etc/ceph/ceph.conf</value></member><member><name>ceph_user</name><value>admin</value></member></struct></value></member><member><name>session_ref</name><value>OpaqueRef:9c1b7e44-0d2a-4c61-b7f3-6e5a2d8f1c30</value></member><member><name>sr_ref</name><value>OpaqueRef:2f4a6c8e-1b3d-4e5f-8a7b-9c0d1e2f3a4b</value></member><member><name>sr_uuid</name><value>3f6c1b0e-8a1e-4d7e-9a53-2b8f4c3c9f10</value></member><member><name>subtask_of</name><value>DummyRef:|a1b2c3d4-0002-4000-8000-000000000002|SR.create</value></member></struct></value></param></params></methodCall>");
}

/// A whole VM disk lifecycle through the legacy driver, with real I/O through the
/// userspace datapath, and the XenAPI calls xapi needs.
#[test]
fn ceph_legacy_vm_disk_lifecycle() {
    let lab = Lab::get();
    let host = Host::new(lab_config(&lab, &[("datapath", "qsd")]));
    let r = &host.req;
    assert_eq!(host.run(&r.sr("sr_create", &["0"], true)).ok(), Value::Nil);
    assert_eq!(host.server.calls_of("SR.get_name_label").len(), 1);
    assert_eq!(host.run(&r.sr("sr_attach", &[], true)).ok(), Value::Nil);

    let created = host.run(&r.vdi_create(32 * MIB, "disk0")).ok();
    let disk = host.introduced(&created);
    let intro = &host.server.calls_of("VDI.db_introduce")[0];
    assert_eq!(intro.args[12], Value::str((32 * MIB).to_string()), "virtual_size as an int64 string");
    assert_eq!(intro.args[4], Value::str("user"));

    let attach = host.run(&r.vdi("vdi_attach", &["true"], &disk, false)).ok();
    let nbd = attach.get("params_nbd").and_then(Value::as_str).expect("params_nbd").to_owned();
    assert!(attach.get("xenstore_data").and_then(|x| x.get("vdi-uuid")).is_some());
    assert_eq!(host.run(&r.vdi("vdi_activate", &["true"], &disk, false)).ok(), Value::Nil);
    let (socket, export) = nbd.strip_prefix("nbd:unix:").and_then(|n| n.rsplit_once(":exportname=")).expect("nbd uri");
    assert!(qemu_io(&format!("nbd+unix:///{export}?socket={socket}"), &["write -P 0x3c 0 4M", "flush"]));

    let snap = host.introduced(&host.run(&r.vdi("vdi_snapshot", &[], &disk, true)).ok());
    assert_eq!(host.server.vdi_field(&snap.vdi_ref, "read_only"), Some(Value::Bool(true)));
    let clone = host.introduced(&host.run(&r.vdi("vdi_clone", &[], &snap, true)).ok());
    assert_eq!(host.server.vdi_field(&clone.vdi_ref, "read_only"), Some(Value::Bool(false)));

    assert_eq!(host.run(&r.vdi("vdi_deactivate", &[], &disk, false)).ok(), Value::Nil);
    assert_eq!(host.run(&r.vdi("vdi_detach", &[], &disk, false)).ok(), Value::Nil);
    let resized = host.run(&r.vdi("vdi_resize", &[&(64 * MIB).to_string()], &disk, true)).ok();
    assert_eq!(resized.get("location").and_then(Value::as_str), Some(disk.location.as_str()));
    let set = host.server.calls_of("VDI.set_virtual_size");
    assert_eq!(
        set.last().map(|c| c.args.clone()),
        Some(vec![Value::str(disk.vdi_ref.clone()), Value::str((64 * MIB).to_string())])
    );

    // The data went through: the clone of the snapshot holds the pattern.
    let spec = format!("{}/{}/v-{}", lab.pool, host.namespace(), clone.location);
    let file = host.dir.join("clone.raw");
    lab.rbd(&["export", "--no-progress", &spec, &file.display().to_string()]);
    let bytes = std::fs::read(&file).expect("export");
    assert!(bytes[..4 << 20].iter().all(|b| *b == 0x3c), "the snapshot and its clone hold what was written");

    for vdi in [&clone, &snap, &disk] {
        assert_eq!(host.run(&r.vdi("vdi_delete", &[], vdi, true)).ok(), Value::Nil);
        host.server.destroy_record(&vdi.vdi_ref);
    }
    assert_eq!(host.run(&r.sr("sr_scan", &[], true)).ok(), Value::Nil);
    for method in ["SR.set_physical_size", "SR.set_physical_utilisation", "SR.set_virtual_allocation"] {
        assert!(!host.server.calls_of(method).is_empty(), "{method} after scan");
    }
    assert_eq!(host.server.vdi_count(), 0);
    assert_eq!(host.run(&r.sr("sr_update", &[], true)).ok(), Value::Nil);
    assert_eq!(host.run(&r.sr("sr_delete", &[], true)).ok(), Value::Nil);
    let namespaces = lab.rbd(&["namespace", "ls", "--format", "json", &lab.pool]);
    assert!(!namespaces.contains(&host.namespace()), "sr_delete leaves nothing: {namespaces}");
}

/// The same layout from both front ends: volumes made by the SMAPIv3 plugin appear in a
/// legacy scan, and a legacy VDI appears in SR.ls.
#[test]
fn ceph_both_front_ends_share_one_layout() {
    let t = TestSr::create();
    let config: Vec<(String, String)> = t
        .config
        .as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    let mut host = Host::new(config);
    host.req.sr_uuid.clone_from(&t.uuid);
    let v3 = t.create_volume("from v3", 8 << 20);
    t.call("Volume.set", json!({"key": v3["key"], "k": "vdi-type", "v": "user"})).ok();
    assert_eq!(host.run(&host.req.sr("sr_attach", &[], true)).ok(), Value::Nil);
    assert_eq!(host.run(&host.req.sr("sr_scan", &[], true)).ok(), Value::Nil);
    let seen = host.server.vdi_by_location(v3["key"].as_str().expect("key")).expect("v3 volume introduced by the scan");
    assert_eq!(host.server.vdi_field(&seen.vdi_ref, "virtual_size"), Some(Value::str((8u64 << 20).to_string())));

    let legacy = host.run(&host.req.vdi_create(4 * MIB, "from v2")).ok();
    let key = legacy.get("location").and_then(Value::as_str).expect("location").to_owned();
    let listed = t.ls();
    let found = listed.iter().find(|v| v["key"] == json!(key)).expect("legacy VDI in SR.ls");
    assert_eq!(found["name"], "from v2");
    assert_eq!(found["keys"]["vdi-type"], "user");
    // sr_probe finds this SR; vdi_introduce gives a volume xapi's chosen uuid.
    let probe = host.run(&host.req.probe()).ok();
    let probe = probe.as_str().expect("probe answers a string");
    assert!(probe.contains(&format!("<UUID>{}</UUID>", t.uuid)) && probe.contains("<Pool>"), "{probe}");
    let extra = t.create_volume("introduced", 4 << 20);
    let new_uuid = uuid::Uuid::new_v4().to_string();
    let answer = host.run(&host.req.vdi_introduce(extra["key"].as_str().expect("key"), &new_uuid)).ok();
    assert_eq!(answer.get("uuid").and_then(Value::as_str), Some(new_uuid.as_str()));
    let introduced = host.server.vdi_by_location(extra["key"].as_str().expect("key")).expect("introduced");
    assert_eq!(introduced.uuid, new_uuid);
    // A volume destroyed by the SMAPIv3 side is forgotten by the next legacy scan.
    t.call("Volume.destroy", json!({"key": v3["key"]})).ok();
    assert_eq!(host.run(&host.req.sr("sr_scan", &[], true)).ok(), Value::Nil);
    assert!(host.server.vdi_by_location(v3["key"].as_str().expect("key")).is_none());
    assert_eq!(host.server.calls_of("VDI.db_forget").len(), 1);
}

/// Bad input: the right fault, exit 0, one document on stdout, nothing changed.
#[test]
fn ceph_legacy_bad_input_gets_the_right_fault() {
    let lab = Lab::get();
    let host = Host::new(lab_config(&lab, &[]));
    let r = &host.req;
    let bad_key = Requests { device_config: lab_config(&lab, &[("keyrign", "/x")]), ..r.clone() };
    let no_uuid = method_call(
        "vdi_create",
        &[
            ("host_ref", Field::Str(r.host_ref.clone())),
            ("command", Field::Str("vdi_create".into())),
            ("args", Field::List(vec!["1".into()])),
        ],
    );
    let cases: Vec<(String, i64, &str)> = vec![
        ("<methodCall><methodName>sr_create".to_owned(), 143, "malformed"),
        ("not xml at all".to_owned(), 143, "malformed"),
        (no_uuid, 143, "sr_uuid"),
        (r.sr("sr_frobnicate", &[], true), 38, "sr_frobnicate"),
        (bad_key.sr("sr_create", &["0"], true), 115, "keyrign"),
    ];
    for (doc, code, words) in cases {
        let fault = host.run(&doc).fault();
        assert_eq!(fault.code, code, "{doc}: {}", fault.string);
        assert!(fault.string.contains(words), "{:?} should mention {words:?}", fault.string);
        assert!(fault.string.contains("[opterr="), "{}", fault.string);
    }
    // No arguments at all, or two: still one fault document and exit 0.
    let out = std::process::Command::new(cephrbd_tests::binary("CephRBDSR")).output().expect("runs");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("<int>143</int>"));
    let namespaces = lab.rbd(&["namespace", "ls", "--format", "json", &lab.pool]);
    assert!(!namespaces.contains(&host.namespace()), "a refused request created something");
    // On an SR that exists: bad sizes and unknown VDIs.
    assert_eq!(host.run(&r.sr("sr_create", &["0"], true)).ok(), Value::Nil);
    let missing = Vdi { vdi_ref: "OpaqueRef:x".into(), uuid: "u".into(), location: uuid::Uuid::new_v4().to_string() };
    for (doc, code, words) in [
        (r.vdi_create(u64::MAX, "too big"), 79, "not a number"),
        (r.vdi("vdi_snapshot", &[], &missing, true), 144, "does not exist"),
        (r.vdi("vdi_resize", &["12"], &missing, true), 144, "does not exist"),
    ] {
        let fault = host.run(&doc).fault();
        assert_eq!(fault.code, code, "{}", fault.string);
        assert!(fault.string.contains(words), "{:?} should mention {words:?}", fault.string);
    }
    assert_eq!(host.run(&r.vdi("vdi_delete", &[], &missing, true)).ok(), Value::Nil, "deleting what is gone succeeds");
    assert!(host.server.calls_of("VDI.db_introduce").is_empty());
    // Issue 14 item 2: size 0 is a size (xapi's own self-test sends it).
    let zero = host.introduced(&host.run(&r.vdi_create(0, "zero")).ok());
    assert_eq!(host.server.vdi_field(&zero.vdi_ref, "virtual_size"), Some(Value::str("0")));
    assert_eq!(host.run(&r.vdi("vdi_delete", &[], &zero, true)).ok(), Value::Nil);
    host.server.destroy_record(&zero.vdi_ref);
    assert_eq!(host.run(&r.sr("sr_delete", &[], true)).ok(), Value::Nil);
}

/// The volume `location` names, read from Ceph with the common operations.
fn stat_in_ceph(host: &Host, location: &str) -> common::smapi::wire::Volume {
    let mut config: std::collections::BTreeMap<String, String> = host.req.device_config.iter().cloned().collect();
    config.insert("sr_uuid".to_owned(), host.req.sr_uuid.clone());
    let parsed = common::config::DeviceConfig::parse(&config).expect("device-config");
    let sr = common::layout::uri::SrUri::from_config(&parsed, parsed.sr_uuid.expect("uuid"));
    common::ops::volume::stat(&sr, location).expect("Volume.stat")
}

fn ls_images(lab: &Lab, namespace: &str) -> Vec<String> {
    let out = lab.rbd(&["ls", "--format", "json", "--pool", &lab.pool, "--namespace", namespace]);
    let mut images: Vec<String> = serde_json::from_str(&out).expect("json");
    images.sort();
    images
}

/// Issue 14 item 3: vdi_create, vdi_snapshot and vdi_clone that fail after making their
/// volume (xapi refuses VDI.db_introduce) destroy it again: nothing is left for the next
/// sr_scan to adopt as a VDI nobody asked for.
#[test]
fn ceph_legacy_failed_creations_leave_nothing_behind() {
    let lab = Lab::get();
    let host = Host::new(lab_config(&lab, &[]));
    let r = &host.req;
    assert_eq!(host.run(&r.sr("sr_create", &["0"], true)).ok(), Value::Nil);
    let disk = host.introduced(&host.run(&r.vdi_create(4 * MIB, "disk")).ok());
    let before = ls_images(&lab, &host.namespace());
    host.server.fail("VDI.db_introduce", true);
    for (doc, code) in [
        (r.vdi_create(4 * MIB, "orphan"), 153),
        (r.vdi("vdi_snapshot", &[], &disk, true), 153),
        (r.vdi("vdi_clone", &[], &disk, true), 153),
    ] {
        let fault = host.run(&doc).fault();
        assert_eq!(fault.code, code, "{}", fault.string);
        assert!(fault.string.contains("VDI.db_introduce"), "{}", fault.string);
    }
    host.server.fail("VDI.db_introduce", false);
    assert_eq!(ls_images(&lab, &host.namespace()), before, "an image was left behind");
    let spec = format!("{}/{}/v-{}", lab.pool, host.namespace(), disk.location);
    let snaps = || lab.rbd(&["snap", "ls", "--all", "--format", "json", &spec]);
    // The undone clone went to the trash; its hidden base goes with the purge that follows.
    let gone = cephrbd_tests::wait_until(std::time::Duration::from_secs(60), || {
        let s = snaps();
        s.trim().is_empty() || s.trim() == "[]"
    });
    assert!(gone, "a snapshot was left behind: {}", snaps());
    assert_eq!(host.run(&r.sr("sr_scan", &[], true)).ok(), Value::Nil);
    assert_eq!(host.server.vdi_count(), 1, "the scan adopted a leftover");
    assert_eq!(host.run(&r.vdi("vdi_delete", &[], &disk, true)).ok(), Value::Nil);
    host.server.destroy_record(&disk.vdi_ref);
    assert_eq!(host.run(&r.sr("sr_delete", &[], true)).ok(), Value::Nil);
}

/// Issue 14 item 3: vdi_update writes the name and description xapi holds to Ceph.
#[test]
fn ceph_legacy_vdi_update_writes_name_and_description_to_ceph() {
    let lab = Lab::get();
    let host = Host::new(lab_config(&lab, &[]));
    let r = &host.req;
    assert_eq!(host.run(&r.sr("sr_create", &["0"], true)).ok(), Value::Nil);
    let disk = host.introduced(&host.run(&r.vdi_create(4 * MIB, "before")).ok());
    host.server.set_vdi_field(&disk.vdi_ref, "name_label", "after \u{e9}t\u{e9}");
    host.server.set_vdi_field(&disk.vdi_ref, "name_description", "the system disk");
    assert_eq!(host.run(&r.vdi("vdi_update", &[], &disk, true)).ok(), Value::Nil);
    let v = stat_in_ceph(&host, &disk.location);
    assert_eq!((v.name.as_str(), v.description.as_str()), ("after \u{e9}t\u{e9}", "the system disk"));
    // Whatever XML can carry comes back exactly: quotes, backslashes, tab and line breaks,
    // what looks like an option or one of our records, bidi controls, the empty string.
    for (name, description) in [
        ("--help", "x\",\"v.00000000-0000-0000-0000-000000000000\":\"={}"),
        ("tab\there\nline\r\n", "back\\slash 'quote' <tag> &amp;"),
        ("\u{202e}\u{1f600}%41%zz", ""),
    ] {
        host.server.set_vdi_field(&disk.vdi_ref, "name_label", name);
        host.server.set_vdi_field(&disk.vdi_ref, "name_description", description);
        assert_eq!(host.run(&r.vdi("vdi_update", &[], &disk, true)).ok(), Value::Nil);
        let v = stat_in_ceph(&host, &disk.location);
        assert_eq!((v.name.as_str(), v.description.as_str()), (name, description));
    }
    assert_eq!(host.run(&r.vdi("vdi_delete", &[], &disk, true)).ok(), Value::Nil);
    host.server.destroy_record(&disk.vdi_ref);
    assert_eq!(host.run(&r.sr("sr_delete", &[], true)).ok(), Value::Nil);
}

/// Issue 14 item 1 (guard): sr_update while the monitors do not answer records no size at
/// all (SRUnavailable: xapi keeps what it has), never a 0-byte SR.
#[test]
fn ceph_legacy_sr_update_while_unreachable_records_no_size() {
    let lab = Lab::get();
    let host = Host::new(lab_config(&lab, &[]));
    let r = &host.req;
    assert_eq!(host.run(&r.sr("sr_create", &["0"], true)).ok(), Value::Nil);
    assert_eq!(host.run(&r.sr("sr_update", &[], true)).ok(), Value::Nil);
    let recorded = || host.server.calls_of("SR.set_physical_size").len();
    let healthy = recorded();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mon = listener.local_addr().expect("addr").to_string();
    let mut device_config = lab_config(&lab, &[("mon_host", &mon), ("timeout", "3")]);
    for (k, v) in &mut device_config {
        if k == "ceph_conf" {
            *v = "/dev/null".to_owned();
        }
    }
    let dead = Requests { device_config, ..r.clone() };
    let fault = host.run(&dead.sr("sr_update", &[], true)).fault();
    assert_eq!(fault.code, 47, "{}", fault.string);
    assert_eq!(recorded(), healthy, "a size was recorded while Ceph did not answer");
    assert_eq!(host.run(&r.sr("sr_delete", &[], true)).ok(), Value::Nil);
}

/// `sr_scan` running while VDIs are created and deleted: the driver serialises what the SM
/// drivers serialise (their `OPS_EXCLUSIVE` set), so a scan never forgets a VDI created
/// meanwhile nor brings back one deleted meanwhile; at the end xapi's records and the SR
/// agree exactly.
#[test]
fn ceph_legacy_scan_racing_creates_and_deletes_forgets_and_resurrects_nothing() {
    let lab = Lab::get();
    let host = Host::new(lab_config(&lab, &[]));
    let r = &host.req;
    assert_eq!(host.run(&r.sr("sr_create", &["0"], true)).ok(), Value::Nil);
    assert_eq!(host.run(&r.sr("sr_attach", &[], true)).ok(), Value::Nil);
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut kept = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                assert_eq!(host.run(&r.sr("sr_scan", &[], true)).ok(), Value::Nil);
            }
        });
        for i in 0..10 {
            let vdi = host.introduced(&host.run(&r.vdi_create(MIB, &format!("race{i}"))).ok());
            if i % 2 == 0 {
                assert_eq!(host.run(&r.vdi("vdi_delete", &[], &vdi, true)).ok(), Value::Nil);
                host.server.destroy_record(&vdi.vdi_ref);
            } else {
                kept.push(vdi);
            }
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    for vdi in &kept {
        assert!(host.server.vdi_by_location(&vdi.location).is_some(), "a scan forgot {}", vdi.location);
    }
    assert_eq!(host.server.vdi_count(), kept.len(), "a scan brought back a deleted VDI");
    for vdi in &kept {
        assert_eq!(host.run(&r.vdi("vdi_delete", &[], vdi, true)).ok(), Value::Nil);
        host.server.destroy_record(&vdi.vdi_ref);
    }
    assert_eq!(host.run(&r.sr("sr_delete", &[], true)).ok(), Value::Nil);
}

/// VDIs over 2 TiB are declared (`LARGE_VDI`), and deleting one fits the time limit: the
/// image goes to the RBD trash at once, its objects are deleted in the background.
#[test]
fn ceph_legacy_large_vdis_are_declared_and_deleted_in_bounded_time() {
    let lab = Lab::get();
    // With object-map the purge that follows only visits objects that exist, so the test
    // does not wait minutes for it; the delete itself does not depend on it (the image is
    // moved to the trash either way; ceph_integrity's large-volume test uses the default
    // features, without object-map).
    let host = Host::new(lab_config(&lab, &[("image_features", "layering,exclusive-lock,object-map,fast-diff")]));
    let r = &host.req;
    let info = host.run(&r.driver_info()).ok();
    let caps: Vec<&str> =
        info.get("capabilities").and_then(Value::items).expect("array").iter().filter_map(Value::as_str).collect();
    assert!(caps.contains(&"LARGE_VDI"), "{caps:?}");
    assert_eq!(host.run(&r.sr("sr_create", &["0"], true)).ok(), Value::Nil);
    let vdi = host.introduced(&host.run(&r.vdi_create(4 << 40, "large")).ok());
    let started = std::time::Instant::now();
    assert_eq!(host.run(&r.vdi("vdi_delete", &[], &vdi, true)).ok(), Value::Nil);
    let elapsed = started.elapsed();
    assert!(elapsed < std::time::Duration::from_secs(5), "vdi_delete of 4 TiB took {elapsed:?}");
    host.server.destroy_record(&vdi.vdi_ref);
    // sr_delete waits for the purge only within its limit: retried until the trash is empty.
    let deleted = cephrbd_tests::wait_until(std::time::Duration::from_secs(300), || {
        !host.run(&r.sr("sr_delete", &[], true)).stdout.contains("<fault>")
    });
    assert!(deleted, "sr_delete never succeeded once the trash was purged");
}

/// Changed block tracking through the legacy driver, as xapi's SMAPIv1 path sends it
/// (`vdi_enable_cbt`, `vdi_list_changed_blocks` with the newer VDI's ref in `args[0]`,
/// `vdi_data_destroy`, `vdi_disable_cbt`), on the SR the SMAPIv3 plugin also reads: both
/// front ends answer the same bitmap, and the scan keeps xapi's `cbt_enabled` true to Ceph.
#[test]
fn ceph_legacy_cbt_matches_the_smapiv3_plugin() {
    let t = TestSr::with_config(|c| c["datapath"] = json!("qsd"));
    let config: Vec<(String, String)> = t
        .config
        .as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    let mut host = Host::new(config);
    host.req.sr_uuid.clone_from(&t.uuid);
    let r = &host.req;
    let info = host.run(&r.driver_info()).ok();
    let caps: Vec<&str> =
        info.get("capabilities").and_then(Value::items).expect("array").iter().filter_map(Value::as_str).collect();
    assert!(caps.contains(&"VDI_CONFIG_CBT"), "{caps:?}");
    assert_eq!(host.run(&r.sr("sr_attach", &[], true)).ok(), Value::Nil);
    let disk = host.introduced(&host.run(&r.vdi_create(16 * MIB, "cbt disk")).ok());
    assert_eq!(host.run(&r.vdi("vdi_enable_cbt", &[], &disk, true)).ok(), Value::Nil);
    let write = |commands: &[&str]| {
        let attach = host.run(&r.vdi("vdi_attach", &["true"], &disk, false)).ok();
        let nbd = attach.get("params_nbd").and_then(Value::as_str).expect("params_nbd").to_owned();
        assert_eq!(host.run(&r.vdi("vdi_activate", &["true"], &disk, false)).ok(), Value::Nil);
        let (socket, export) = nbd.strip_prefix("nbd:unix:").and_then(|n| n.rsplit_once(":exportname=")).expect("nbd");
        let mut all = commands.to_vec();
        all.push("flush");
        assert!(qemu_io(&format!("nbd+unix:///{export}?socket={socket}"), &all));
        assert_eq!(host.run(&r.vdi("vdi_deactivate", &[], &disk, false)).ok(), Value::Nil);
        assert_eq!(host.run(&r.vdi("vdi_detach", &[], &disk, false)).ok(), Value::Nil);
    };
    write(&["write -P 0x71 0 4M"]);
    let s1 = host.introduced(&host.run(&r.vdi("vdi_snapshot", &[], &disk, true)).ok());
    assert_eq!(host.server.vdi_field(&s1.vdi_ref, "cbt_enabled"), Some(Value::Bool(true)), "introduced with CBT");
    write(&["write -P 0x72 1048576 65536", "write -P 0x73 9437284 100"]);
    let s2 = host.introduced(&host.run(&r.vdi("vdi_snapshot", &[], &disk, true)).ok());

    let answer = host.run(&r.vdi("vdi_list_changed_blocks", &[&s2.vdi_ref], &s1, true)).ok();
    let bitmap = answer.as_str().expect("a base64 string").to_owned();
    assert_eq!(host.server.calls_of("VDI.get_location").len(), 1, "the newer VDI found by its ref");
    let v3 = t
        .call("Volume.list_changed_blocks", json!({"key": s1.location, "key2": s2.location, "offset": 0, "length": -1}))
        .ok();
    assert_eq!(v3["bitmap"], json!(bitmap), "both front ends answer the same bitmap");
    let map = common::ops::bitmap::unbase64(&bitmap).expect("base64");
    for block in [16, 144] {
        assert!(common::ops::bitmap::is_set(&map, block), "block {block} was written: {map:?}");
    }

    assert_eq!(host.run(&r.vdi("vdi_data_destroy", &[], &s1, true)).ok(), Value::Nil);
    let fault = host.run(&r.vdi("vdi_attach", &["false"], &s1, false)).fault();
    assert_eq!(fault.code, 46, "{}", fault.string);
    assert!(fault.string.contains("changed-block tracking metadata"), "{}", fault.string);
    let fault = host.run(&r.vdi("vdi_data_destroy", &[], &disk, true)).fault();
    assert_eq!(fault.code, 66, "data_destroy of a disk: {}", fault.string);
    let other = host.introduced(&host.run(&r.vdi_create(MIB, "other")).ok());
    let fault = host.run(&r.vdi("vdi_list_changed_blocks", &[&other.vdi_ref], &s2, true)).fault();
    assert_eq!(fault.code, 460, "{}", fault.string);
    assert!(fault.string.contains("share no history"), "{}", fault.string);

    // The scan: xapi's record of the disk learns CBT is on; the anchor stays.
    assert_eq!(host.run(&r.sr("sr_scan", &[], true)).ok(), Value::Nil);
    assert_eq!(host.server.vdi_field(&disk.vdi_ref, "cbt_enabled"), Some(Value::Bool(true)));
    assert!(host.server.vdi_by_location(&s1.location).is_some());
    // Disabling drops the anchor; the scan forgets it and turns CBT off in xapi's record.
    assert_eq!(host.run(&r.vdi("vdi_disable_cbt", &[], &disk, true)).ok(), Value::Nil);
    assert_eq!(host.run(&r.sr("sr_scan", &[], true)).ok(), Value::Nil);
    assert!(host.server.vdi_by_location(&s1.location).is_none(), "the anchor is forgotten");
    assert_eq!(host.server.vdi_field(&disk.vdi_ref, "cbt_enabled"), Some(Value::Bool(false)));
    for vdi in [&other, &s2, &disk] {
        assert_eq!(host.run(&r.vdi("vdi_delete", &[], vdi, true)).ok(), Value::Nil);
        host.server.destroy_record(&vdi.vdi_ref);
    }
}
