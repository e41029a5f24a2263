//! Reliability: the plugin killed after each Ceph command of an operation, daemons of a
//! private cluster stopped or killed during operations, and many clients at once. Every
//! scenario ends with the SR's consistency check clean (`common::check`), after the
//! repairs it is allowed to make. Each prints what it injected (`--nocapture`), for
//! RELIABILITY.md.

// An integration-test crate is all tests; the lint is for test code mixed into the library.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cephrbd_tests::{scratch_dir, uri_with_policy, Kind, Outcome, Plugin, PrivateLab, TestSr};
use common::admin::check;
use common::host::Host;
use common::layout::uri::SrUri;
use serde_json::{json, Value};

fn key(v: &Value) -> String {
    v["key"].as_str().expect("key").to_owned()
}

/// Runs `method` through a plugin that kills itself after its `n`th Ceph command.
fn crash_after(kind: Kind, n: usize, run_dir: Option<&str>, method: &str, args: &Value) -> Outcome {
    let mut plugin = Plugin::new(kind).with_env("CEPHRBD_CRASH_AFTER", n.to_string());
    if let Some(dir) = run_dir {
        plugin = plugin.with_env("CEPHRBD_RUN_DIR", dir);
    }
    let mut args = args.clone();
    args["dbg"] = json!("crash test");
    plugin.call_raw(method, &["--json"], &serde_json::to_vec(&args).expect("json"))
}

/// Repairs, then checks that nothing is left to repair. No call runs on the SR meanwhile, so
/// unrecorded storage of any age is a leftover (grace zero).
fn assert_consistent(sr: &str, context: &str) -> usize {
    let sr = SrUri::parse(sr).expect("sr");
    let check = |repair| {
        check::check(&Host::from_env(), &sr, repair, Duration::ZERO)
            .unwrap_or_else(|e| panic!("{context}: check failed: {e}"))
    };
    let repaired = check(true);
    // Destroys leave images in the trash for a background purge: that is not a leftover.
    let left: Vec<_> =
        check(false).into_iter().filter(|f| !matches!(f.problem, check::Problem::Trash { .. })).collect();
    assert!(left.is_empty(), "{context}: inconsistent after repair: {left:?}");
    repaired.len()
}

/// One operation killed after each of its Ceph commands in turn; after each crash the
/// check repairs what is safe, and the operation can be run again.
fn crash_each_step(t: &TestSr, name: &str, setup: impl Fn() -> (String, Value), again_ok: &[&str]) -> (usize, usize) {
    let (mut crashes, mut repairs) = (0, 0);
    for n in 1..=24 {
        let (method, args) = setup();
        let out = crash_after(Kind::Volume, n, None, &method, &args);
        if out.status == 0 {
            break;
        }
        assert!(out.status != 1, "{name}: failed instead of crashing at command {n}: {}", out.stdout);
        crashes += 1;
        repairs += assert_consistent(&t.sr, &format!("{name} killed after command {n}"));
        let mut retry = args.clone();
        retry["sr"] = json!(t.sr);
        let again = t.plugin.call(&method, retry);
        if again.status != 0 {
            let (error, message) = again.error_name_and_message();
            assert!(again_ok.contains(&error.as_str()), "{name} after a crash at command {n}: {error}: {message}");
        }
        assert_consistent(&t.sr, &format!("{name}: the call after the crash at {n}"));
    }
    eprintln!("crash: {name}: killed after each of {crashes} commands; {repairs} repairs; nothing lost");
    (crashes, repairs)
}

#[test]
fn ceph_plugin_killed_after_each_ceph_command_leaves_a_repairable_state() {
    let t = TestSr::create();
    let sr = t.sr.clone();
    let create = || {
        ("Volume.create".to_owned(), json!({"sr": sr, "name": "c", "description": "", "size": 4096, "sharable": false}))
    };
    crash_each_step(&t, "Volume.create", create, &[]);
    let base = key(&t.create_volume("base", 4 << 20));
    crash_each_step(&t, "Volume.snapshot", || ("Volume.snapshot".to_owned(), json!({"sr": sr, "key": base})), &[]);
    crash_each_step(&t, "Volume.clone (writable)", || ("Volume.clone".to_owned(), json!({"sr": sr, "key": base})), &[]);
    let snap = key(&t.call("Volume.snapshot", json!({"key": base})).ok());
    crash_each_step(&t, "Volume.clone (snapshot)", || ("Volume.clone".to_owned(), json!({"sr": sr, "key": snap})), &[]);
    // Destroy of a clone of a writable volume: it reclaims the hidden base too.
    crash_each_step(
        &t,
        "Volume.destroy (fast clone)",
        || {
            let clone = key(&t.call("Volume.clone", json!({"key": base})).ok());
            ("Volume.destroy".to_owned(), json!({"sr": sr, "key": clone}))
        },
        &["Volume_does_not_exist"],
    );
    // Destroy of a volume that still has a snapshot: it only vanishes.
    crash_each_step(
        &t,
        "Volume.destroy (with a snapshot)",
        || {
            let v = key(&t.create_volume("d", 4096));
            t.call("Volume.snapshot", json!({"key": v})).ok();
            t.call("Volume.set", json!({"key": v, "k": "a", "v": "b"})).ok();
            ("Volume.destroy".to_owned(), json!({"sr": sr, "key": v}))
        },
        &["Volume_does_not_exist"],
    );
    // Datapath: activate killed after each command (status, daemon start).
    let run = scratch_dir("crash-dp");
    let dp = Plugin::new(Kind::Datapath).with_env("CEPHRBD_RUN_DIR", run.display().to_string());
    let uri = uri_with_policy(&t.create_volume("dp", 4 << 20), "qsd");
    let args = json!({"uri": uri, "domain": "1"});
    let mut crashes = 0;
    for n in 1..=4 {
        dp.call("Datapath.attach", args.clone()).ok();
        let out = crash_after(Kind::Datapath, n, Some(&run.display().to_string()), "Datapath.activate", &args);
        if out.status == 0 {
            dp.call("Datapath.deactivate", args.clone()).ok();
            dp.call("Datapath.detach", args.clone()).ok();
            break;
        }
        crashes += 1;
        // SR.attach on this host reaps; then activate works and the cycle completes.
        Plugin::new(Kind::Volume)
            .with_env("CEPHRBD_RUN_DIR", run.display().to_string())
            .call("SR.attach", json!({"configuration": t.config}))
            .ok();
        dp.call("Datapath.activate", args.clone()).ok();
        dp.call("Datapath.deactivate", args.clone()).ok();
        dp.call("Datapath.detach", args.clone()).ok();
    }
    eprintln!("crash: Datapath.activate: killed after each of {crashes} commands; reaped by SR.attach");
    let leftovers: Vec<_> = std::fs::read_dir(run.join("dp"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name())
                .filter(|n| !n.to_string_lossy().ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "host state left: {leftovers:?}");
    assert_consistent(&t.sr, "after the datapath crashes");
    let _ = std::fs::remove_dir_all(run);
}

/// What a fault looks like from the client: SR.stat answers `Unreachable`, and every
/// other call ends with a clear Ceph error, each within the SR's time limit.
fn during_fault(t: &TestSr, limit: Duration, what: &str, calls: &[(&str, Value)]) -> Vec<String> {
    let mut report = Vec::new();
    let started = Instant::now();
    let stat = t.call("SR.stat", json!({}));
    let elapsed = started.elapsed();
    assert!(elapsed < limit, "{what}: SR.stat took {elapsed:?}");
    if stat.status == 0 {
        assert_ne!(stat.value()["health"][0], "Healthy", "{what}: SR.stat says Healthy");
    }
    report.push(format!("SR.stat {:.1} s", elapsed.as_secs_f64()));
    for (method, args) in calls {
        let started = Instant::now();
        let out = t.call(method, args.clone());
        let elapsed = started.elapsed();
        assert!(elapsed < limit, "{what}: {method} took {elapsed:?}");
        assert_eq!(out.status, 1, "{what}: {method} succeeded during the fault");
        let (name, _) = out.error_name_and_message();
        assert!(name.starts_with("Ceph_") || name == "Timed_out", "{what}: {method}: unclear error {name}");
        report.push(format!("{method} {:.1} s", elapsed.as_secs_f64()));
    }
    report
}

/// The monitor stopped (SIGSTOP), the monitor killed, and the OSD stalled (SIGSTOP):
/// every call gives a clear error within the time limit, never a hang; after recovery the
/// same calls succeed and the SR is consistent.
#[test]
fn ceph_faults_give_errors_within_the_limit_and_recovery_works() {
    let lab = PrivateLab::start("faults");
    let timeout = 4;
    let t = TestSr::on(lab.lab.clone(), |c| c["timeout"] = json!(timeout.to_string()));
    let limit = Duration::from_secs(timeout * 2 + 2);
    let base_volume = t.create_volume("base", 4 << 20);
    let base = key(&base_volume);
    let snap = key(&t.call("Volume.snapshot", json!({"key": base})).ok());
    let run = scratch_dir("fault-dp");
    let dp = Plugin::new(Kind::Datapath).with_env("CEPHRBD_RUN_DIR", run.display().to_string());
    let dp_args = json!({"uri": uri_with_policy(&base_volume, "qsd"), "domain": "1"});
    for (fault, daemon) in [("monitor stopped", "mon.a"), ("OSD stalled", "osd.0"), ("monitor killed", "mon.a")] {
        match fault {
            "monitor killed" => lab.signal(daemon, "KILL"),
            _ => lab.signal(daemon, "STOP"),
        }
        let calls = [
            ("Volume.create", json!({"name": "f", "description": "", "size": 4096, "sharable": false})),
            ("Volume.snapshot", json!({"key": base})),
            ("Volume.clone", json!({"key": snap})),
            ("Volume.destroy", json!({"key": snap})),
            ("Volume.stat", json!({"key": base})),
        ];
        let mut report = during_fault(&t, limit, fault, &calls);
        // Attach needs no Ceph call in the userspace mode; activate does (the fence).
        dp.call("Datapath.attach", dp_args.clone()).ok();
        let started = Instant::now();
        let out = dp.call("Datapath.activate", dp_args.clone());
        let elapsed = started.elapsed();
        assert!(elapsed < limit && out.status == 1, "{fault}: Datapath.activate: {elapsed:?} {}", out.stdout);
        report.push(format!("Datapath.activate {:.1} s", elapsed.as_secs_f64()));
        match fault {
            "monitor killed" => lab.restart(daemon),
            _ => lab.signal(daemon, "CONT"),
        }
        let healthy = cephrbd_tests::wait_until(Duration::from_secs(60), || {
            let out = t.plugin.call_raw(
                "SR.stat",
                &["--json"],
                serde_json::to_string(&json!({"dbg": "d", "sr": t.sr})).expect("json").as_bytes(),
            );
            out.status == 0 && out.stdout.contains("Healthy")
        });
        assert!(healthy, "{fault}: the SR did not recover");
        for m in ["Datapath.activate", "Datapath.deactivate", "Datapath.detach"] {
            dp.call(m, dp_args.clone()).ok();
        }
        let v = key(&t.create_volume("after", 4096));
        t.call("Volume.clone", json!({"key": snap})).ok();
        t.call("Volume.destroy", json!({"key": v})).ok();
        assert_consistent(&t.sr, fault);
        eprintln!("fault: {fault}: {} (limit {} s); recovered", report.join(", "), timeout);
    }
    let _ = std::fs::remove_dir_all(run);
}

/// What one load client did: the shared keys it wrote, the volumes it left alive, rounds.
type Client = (BTreeSet<String>, Vec<String>, usize);

/// 16 clients at once for a while (60 s by default, `CEPHRBD_LOAD_SECONDS`), each mixing
/// every volume operation, destroys included, and attach/detach on one SR and one host,
/// while an operator runs `volume --check --repair` over and over: no lost key, no lost
/// volume, no double map, no leaked image.
#[test]
fn ceph_sixteen_parallel_clients_lose_nothing() {
    let seconds: u64 = std::env::var("CEPHRBD_LOAD_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let t = TestSr::create();
    let run = scratch_dir("load");
    let shared = key(&t.create_volume("shared", 4096));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (results, repairs): (Vec<Client>, (usize, usize)) = std::thread::scope(|s| {
        let repairer = s.spawn(|| {
            let sr = SrUri::parse(&t.sr).expect("sr");
            let (mut rounds, mut repaired) = (0, 0);
            while Instant::now() < deadline {
                let grace = check::default_grace(&sr);
                let findings = check::check(&Host::from_env(), &sr, true, grace).expect("repair");
                repaired += findings.iter().filter(|f| f.repaired).count();
                rounds += 1;
            }
            (rounds, repaired)
        });
        let handles: Vec<_> = (0..16)
            .map(|w| {
                let (t, shared, run) = (&t, shared.clone(), run.clone());
                s.spawn(move || {
                    let dp = Plugin::new(Kind::Datapath).with_env("CEPHRBD_RUN_DIR", run.display().to_string());
                    let mut shared_keys = BTreeSet::new();
                    let (mut ops, mut alive) = (0usize, Vec::new());
                    let mut i = 0usize;
                    while Instant::now() < deadline {
                        i += 1;
                        let k = format!("w{w}-{i}");
                        t.call("Volume.set", json!({"key": shared, "k": k, "v": "x"})).ok();
                        shared_keys.insert(k);
                        let v = t.create_volume(&format!("w{w}"), 4 << 20);
                        let vk = key(&v);
                        t.call("Volume.set", json!({"key": vk, "k": "vdi-type", "v": "user"})).ok();
                        match i % 4 {
                            0 => {
                                let snap = key(&t.call("Volume.snapshot", json!({"key": vk})).ok());
                                let clone = key(&t.call("Volume.clone", json!({"key": snap})).ok());
                                t.call("Volume.destroy", json!({"key": vk})).ok();
                                t.call("Volume.destroy", json!({"key": snap})).ok();
                                alive.push(clone);
                            }
                            1 => {
                                let uri = uri_with_policy(&v, "qsd");
                                let args = json!({"uri": uri, "domain": format!("{w}")});
                                for m in
                                    ["Datapath.attach", "Datapath.activate", "Datapath.deactivate", "Datapath.detach"]
                                {
                                    dp.call(m, args.clone()).ok();
                                }
                                alive.push(vk);
                            }
                            2 => {
                                t.call("Volume.resize", json!({"key": vk, "new_size": 8 << 20})).ok();
                                t.call("Volume.clone", json!({"key": vk})).ok();
                                alive.push(vk);
                            }
                            _ => {
                                t.call("Volume.destroy", json!({"key": vk})).ok();
                            }
                        }
                        ops += 1;
                    }
                    (shared_keys, alive, ops)
                })
            })
            .collect();
        let results = handles.into_iter().map(|h| h.join().expect("client")).collect();
        (results, repairer.join().expect("repairer"))
    });
    let listed = t.ls();
    let shared_now = &listed.iter().find(|v| key(v) == shared).expect("shared")["keys"];
    let written: BTreeSet<String> = results.iter().flat_map(|(k, _, _)| k.iter().cloned()).collect();
    for k in &written {
        assert_eq!(shared_now[k], "x", "key {k} was lost");
    }
    let alive: Vec<&String> = results.iter().flat_map(|(_, a, _)| a).collect();
    for k in &alive {
        assert!(listed.iter().any(|v| key(v) == **k), "volume {k} was lost (the repair ran {} times)", repairs.0);
    }
    let ops: usize = results.iter().map(|(_, _, o)| *o).sum();
    let daemons = std::fs::read_dir(run.join("dp"))
        .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().ends_with(".pid")).count())
        .unwrap_or(0);
    assert_eq!(daemons, 0, "daemons left running");
    assert_consistent(&t.sr, "after the load");
    eprintln!(
        "load: 16 clients, {seconds} s, {ops} rounds ({} shared keys written, all present), {} volumes listed, no daemon left; beside them {} check --repair rounds repaired {} findings",
        written.len(),
        listed.len(),
        repairs.0,
        repairs.1
    );
    let _ = std::fs::remove_dir_all(run);
}

/// Changed block tracking killed after each of its Ceph commands: enable, a snapshot of a
/// CBT disk, data_destroy, list_changed_blocks, disable (which destroys anchors) and the
/// destroy of a disk whose anchor goes with it. After each crash the check repairs, the
/// call run again completes, and the diff between the surviving snapshots stays right.
#[test]
fn ceph_cbt_calls_killed_after_each_ceph_command_leave_a_repairable_state() {
    let t = TestSr::create();
    let sr = t.sr.clone();
    let disk = key(&t.create_volume("cbt", 4 << 20));
    let mut report = Vec::new();
    let mut run = |name: &str, setup: &dyn Fn() -> (String, Value), again_ok: &[&str]| {
        let (crashes, repairs) = crash_each_step(&t, name, setup, again_ok);
        report.push(format!("{name}: {crashes} crash points, {repairs} repairs"));
    };
    run("Volume.enable_cbt", &|| ("Volume.enable_cbt".to_owned(), json!({"sr": sr, "key": disk})), &[]);
    assert_eq!(t.call("Volume.stat", json!({"key": disk})).ok()["cbt_enabled"], json!(true));
    run("Volume.snapshot (CBT)", &|| ("Volume.snapshot".to_owned(), json!({"sr": sr, "key": disk})), &[]);
    run(
        "Volume.data_destroy",
        &|| {
            let snap = key(&t.call("Volume.snapshot", json!({"key": disk})).ok());
            ("Volume.data_destroy".to_owned(), json!({"sr": sr, "key": snap}))
        },
        &[],
    );
    let snaps: Vec<Value> = t.ls().into_iter().filter(|v| v["read_write"] == json!(false)).collect();
    assert!(snaps.iter().all(|s| s["cbt_enabled"] == json!(true)), "every snapshot of the CBT disk is CBT");
    let (first, last) = (snaps[0]["key"].clone(), snaps[snaps.len() - 1]["key"].clone());
    run(
        "Volume.list_changed_blocks",
        &|| {
            (
                "Volume.list_changed_blocks".to_owned(),
                json!({"sr": sr, "key": first, "key2": last, "offset": 0, "length": -1}),
            )
        },
        &[],
    );
    run(
        "Volume.disable_cbt (destroys the anchors)",
        &|| {
            t.call("Volume.enable_cbt", json!({"key": disk})).ok();
            let snap = key(&t.call("Volume.snapshot", json!({"key": disk})).ok());
            t.call("Volume.data_destroy", json!({"key": snap})).ok();
            ("Volume.disable_cbt".to_owned(), json!({"sr": sr, "key": disk}))
        },
        &[],
    );
    assert!(
        t.ls().iter().all(|v| v["keys"]["vdi-type"] != json!("cbt_metadata")),
        "disable_cbt run again after each crash dropped every anchor: {:?}",
        t.ls()
    );
    run(
        "Volume.destroy of a disk with an anchor",
        &|| {
            let other = key(&t.create_volume("anchored", 4 << 20));
            t.call("Volume.enable_cbt", json!({"key": other})).ok();
            let snap = key(&t.call("Volume.snapshot", json!({"key": other})).ok());
            t.call("Volume.data_destroy", json!({"key": snap})).ok();
            ("Volume.destroy".to_owned(), json!({"sr": sr, "key": other}))
        },
        &["Volume_does_not_exist"],
    );
    assert!(
        t.ls().iter().all(|v| v["name"] != json!("anchored")),
        "no anchor of a destroyed disk is left: {:?}",
        t.ls()
    );
    for line in report {
        eprintln!("crash: {line}");
    }
}
