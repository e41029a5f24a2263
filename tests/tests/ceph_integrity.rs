//! Nothing lost, nothing poisoned: hostile values in every field, SRs poisoned by earlier
//! versions, unreadable records, repair running beside live calls, large volumes, calls
//! racing a destroy, forged SR strings and URIs, and a Ceph stall in the middle of a call.
//! Each test is a regression test of a defect found by attacking the built binaries; its
//! name says what it guards.

// An integration-test crate is all tests; the lint is for test code mixed into the library.
#![allow(clippy::tests_outside_test_module)]

use std::time::{Duration, Instant};

use cephrbd_tests::{scratch_dir, uri_with_policy, wait_until, Kind, Plugin, PrivateLab, TestSr};
use common::admin::check::{self, Problem};
use common::host::Host;
use common::layout::uri::SrUri;
use serde_json::{json, Value};

fn key(v: &Value) -> String {
    v["key"].as_str().expect("key").to_owned()
}

/// The SR's header image, where its records are.
fn header(t: &TestSr) -> String {
    format!("{}/{}/cephrbd-sr", t.lab.pool, t.namespace)
}

/// Every finding of the check (report only), except images waiting in the trash for the
/// background purge.
fn findings(t: &TestSr, grace: Duration) -> Vec<check::Finding> {
    let sr = SrUri::parse(&t.sr).expect("sr");
    check::check(&Host::from_env(), &sr, false, grace)
        .expect("check")
        .into_iter()
        .filter(|f| !matches!(f.problem, Problem::Trash { .. }))
        .collect()
}

/// Strings xapi can send in any field: quotes, backslashes, every control character, NUL,
/// what looks like our own records, a leading dash, percent signs, non-ASCII.
fn hostile() -> Vec<String> {
    let controls: String = (0u8..0x20).map(char::from).chain(['\u{7f}']).collect();
    vec![
        "a\"b".to_owned(),
        "back\\slash\\".to_owned(),
        controls,
        "\0".to_owned(),
        "line\nbreak\r\n".to_owned(),
        "x\",\"v.00000000-0000-0000-0000-000000000000\":\"={}".to_owned(),
        "g.v-00000000-0000-0000-0000-000000000000".to_owned(),
        "--help".to_owned(),
        "%41%zz%".to_owned(),
        "é€😀\u{202e}".to_owned(),
        String::new(),
    ]
}

/// Any bytes in a key, a value, a name or a description come back exactly, and the whole SR
/// keeps working: listing, stat, snapshot, clone, destroy, the check.
#[test]
fn ceph_any_bytes_in_keys_values_names_round_trip_and_never_break_the_sr() {
    let t = TestSr::create();
    let values = hostile();
    let v = key(&t.create_volume("plain", 4096));
    for (i, text) in values.iter().enumerate() {
        t.call("Volume.set", json!({"key": v, "k": text, "v": format!("v{i}")})).ok();
        t.call("Volume.set", json!({"key": v, "k": format!("k{i}"), "v": text})).ok();
    }
    let named: Vec<String> = values
        .iter()
        .map(|text| {
            let created =
                t.call("Volume.create", json!({"name": text, "description": text, "size": 4096, "sharable": false}));
            key(&created.ok())
        })
        .collect();
    t.call("Volume.set_name", json!({"key": v, "new_name": values[2]})).ok();
    t.call("Volume.set_description", json!({"key": v, "new_description": values[4]})).ok();
    t.call("SR.set_name", json!({"new_name": values[0]})).ok();
    t.call("SR.set_description", json!({"new_description": values[5]})).ok();

    let stat = t.call("Volume.stat", json!({"key": v})).ok();
    for (i, text) in values.iter().enumerate() {
        assert_eq!(stat["keys"][text], json!(format!("v{i}")), "key {text:?}");
        assert_eq!(stat["keys"][format!("k{i}")], json!(text), "value {text:?}");
    }
    assert_eq!(stat["name"], json!(values[2]));
    assert_eq!(stat["description"], json!(values[4]));
    let listed = t.ls();
    assert_eq!(listed.len(), 1 + values.len(), "no fake volume appeared: {listed:?}");
    for (k, text) in named.iter().zip(&values) {
        let v = listed.iter().find(|v| key(v) == *k).expect("listed");
        assert_eq!((&v["name"], &v["description"]), (&json!(text), &json!(text)));
    }
    let sr_stat = t.call("SR.stat", json!({})).ok();
    assert_eq!((&sr_stat["name"], &sr_stat["description"]), (&json!(values[0]), &json!(values[5])));
    let snap = t.call("Volume.snapshot", json!({"key": v})).ok();
    t.call("Volume.clone", json!({"key": key(&snap)})).ok();
    t.call("Volume.destroy", json!({"key": v})).ok();
    assert_eq!(findings(&t, Duration::ZERO), vec![], "the check sees a sound SR");
    // A value too large for one command-line argument is refused, and changes nothing.
    let (name, _) =
        t.call("Volume.set", json!({"key": named[0], "k": "big", "v": "x".repeat(100_000)})).error_name_and_message();
    assert_eq!(name, "Invalid_request");
}

/// A crafted key that spells out a volume record pointing at another volume's image
/// (layout 1 stored keys verbatim, and `rbd image-meta list` does not escape them) must
/// never become a volume, nor make a destroy delete the victim.
#[test]
fn ceph_a_crafted_key_cannot_inject_a_record_or_delete_another_volume() {
    let t = TestSr::create();
    let victim = t.create_volume("victim", 4096);
    let image = victim["uri"][0]
        .as_str()
        .expect("uri")
        .rsplit('/')
        .next()
        .expect("leaf")
        .split('?')
        .next()
        .expect("image")
        .to_owned();
    let fake = uuid::Uuid::new_v4();
    let record = format!(r#"{{"name":"fake","description":"","image":"{image}","size":4096,"sharable":false}}"#);
    let crafted = format!("x\",\"v.{fake}\":\"={}", record.replace('"', "\\\""));
    let attacker = key(&t.create_volume("attacker", 4096));
    t.call("Volume.set", json!({"key": attacker, "k": crafted, "v": "1"})).ok();
    let keys: Vec<String> = t.ls().iter().map(key).collect();
    assert!(!keys.contains(&fake.to_string()), "an injected record became a volume");
    t.call("Volume.destroy", json!({"key": fake.to_string()})).ok();
    t.call("Volume.stat", json!({"key": key(&victim)})).ok();
    assert!(t.images().contains(&image), "the victim's image is gone");
    assert_eq!(t.call("Volume.stat", json!({"key": attacker})).ok()["keys"][&crafted], json!("1"));
}

/// An SR that layout 1 left with verbatim keys holding `"` and control characters (so its
/// listing is not valid JSON), one of them spelling out a fake record and a fake garbage
/// mark: every call still reads it (each key is confirmed one by one), nothing injected is
/// believed, the repair stores the keys again encoded, and the listing is clean again.
#[test]
fn ceph_an_sr_poisoned_by_verbatim_keys_is_readable_and_repairable() {
    let t = TestSr::create();
    let victim = t.create_volume("victim", 4096);
    let owner = key(&t.create_volume("owner", 4096));
    let image = t.images().into_iter().find(|i| i != "cephrbd-sr").expect("an image");
    let fake = uuid::Uuid::new_v4();
    let poison = [
        format!("k.{owner}.quote\"d"),
        format!("k.{owner}.ctl\u{1}\t"),
        format!("k.{owner}.x\",\"v.{fake}\":\"={{\\\"name\\\":\\\"f\\\",\\\"description\\\":\\\"\\\",\\\"image\\\":\\\"{image}\\\",\\\"size\\\":1,\\\"sharable\\\":false}}\",\"g.{image}\":\"={{}}"),
    ];
    for (i, k) in poison.iter().enumerate() {
        t.lab.rbd(&["image-meta", "set", &header(&t), "--", k, &format!("=value {i} \"quoted\"")]);
    }
    let listing = t.lab.rbd(&["image-meta", "list", "--format", "json", &header(&t)]);
    assert!(serde_json::from_str::<Value>(&listing).is_err(), "the poison does make rbd's listing invalid JSON");
    let listed = t.ls();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let stat = t.call("Volume.stat", json!({"key": owner})).ok();
    assert_eq!(stat["keys"]["quote\"d"], json!("value 0 \"quoted\""));
    assert_eq!(stat["keys"]["ctl\u{1}\t"], json!("value 1 \"quoted\""));
    t.call("Volume.stat", json!({"key": key(&victim)})).ok();
    let found = findings(&t, Duration::ZERO);
    assert!(found.iter().any(|f| matches!(f.problem, Problem::LegacyKeys { count: 3 })), "{found:?}");
    assert!(
        !found.iter().any(|f| matches!(f.problem, Problem::Unreclaimed { .. } | Problem::OrphanImage { .. })),
        "{found:?}"
    );
    let sr = SrUri::parse(&t.sr).expect("sr");
    check::check(&Host::from_env(), &sr, true, Duration::ZERO).expect("repair");
    assert_eq!(findings(&t, Duration::ZERO), vec![]);
    let listing = t.lab.rbd(&["image-meta", "list", "--format", "json", &header(&t)]);
    serde_json::from_str::<Value>(&listing).expect("the listing is valid JSON again");
    let stat = t.call("Volume.stat", json!({"key": owner})).ok();
    assert_eq!(stat["keys"].as_object().map(|k| k.len()), Some(3), "{stat}");
    assert_eq!(stat["keys"]["quote\"d"], json!("value 0 \"quoted\""));
    assert!(t.images().contains(&image), "the victim's image is there");
}

/// A record that cannot be read is never dropped: the listing refuses (xapi would forget
/// the volume), the volume's calls say why, the others work, and the repair leaves it and
/// every image alone. An SR written by a newer layout is refused with the reason.
#[test]
fn ceph_unreadable_records_are_reported_never_dropped_nor_repaired() {
    let t = TestSr::create();
    let good = key(&t.create_volume("good", 4096));
    let broken = key(&t.create_volume("broken", 4096));
    let images_before = t.images();
    t.lab.rbd(&["image-meta", "set", &header(&t), "--", &format!("v.{broken}"), "%7Bnot json"]);
    let (name, message) = t.call("SR.ls", json!({})).error_name_and_message();
    assert_eq!(name, "SR_records_unreadable", "{message}");
    assert!(message.contains(&broken), "{message}");
    let (name, _) = t.call("Volume.stat", json!({"key": broken})).error_name_and_message();
    assert_eq!(name, "SR_records_unreadable");
    t.call("Volume.stat", json!({"key": good})).ok();
    t.call("Volume.snapshot", json!({"key": good})).ok();
    let sr = SrUri::parse(&t.sr).expect("sr");
    let repaired = check::check(&Host::from_env(), &sr, true, Duration::ZERO).expect("check");
    assert!(repaired.iter().any(|f| matches!(f.problem, Problem::Unreadable { .. }) && !f.repaired), "{repaired:?}");
    assert_eq!(t.images(), images_before, "no image was removed");
    // Restored by hand, everything is back.
    let record =
        json!({"name": "broken", "description": "", "image": format!("v-{broken}"), "size": 4096, "sharable": false});
    t.lab.rbd(&["image-meta", "set", &header(&t), "--", &format!("v.{broken}"), &format!("={record}")]);
    assert_eq!(t.ls().len(), 3);

    let newer = t.lab.rbd(&["image-meta", "get", &header(&t), "sr"]).trim_end().to_owned();
    let newer = newer.replacen("\"layout\":2", "\"layout\":99", 1).replacen("%22layout%22:2", "%22layout%22:99", 1);
    assert!(newer.contains("99"), "{newer}");
    t.lab.rbd(&["image-meta", "set", &header(&t), "--", "sr", &newer]);
    for (method, args) in [
        ("SR.ls", json!({})),
        ("Volume.stat", json!({"key": good})),
        ("Volume.set", json!({"key": good, "k": "a", "v": "b"})),
    ] {
        let (name, message) = t.call(method, args).error_name_and_message();
        assert_eq!(name, "SR_layout_too_new", "{method}: {message}");
        assert!(message.contains("upgrade cephrbd"), "{message}");
    }
    let older = newer.replacen("99", "2", 1);
    t.lab.rbd(&["image-meta", "set", &header(&t), "--", "sr", &older]);
}

/// `--check --repair` running over and over while snapshots, clones and creates are made:
/// every volume a call reported stays whole (its image or snapshot is never taken for a
/// leftover), and afterwards the SR is consistent.
#[test]
fn ceph_repair_beside_live_calls_never_removes_what_they_record() {
    let t = TestSr::create();
    let base = key(&t.create_volume("base", 4 << 20));
    let sr = SrUri::parse(&t.sr).expect("sr");
    let done = std::sync::atomic::AtomicBool::new(false);
    let (made, repairs) = std::thread::scope(|s| {
        let repairer = s.spawn(|| {
            let mut rounds = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let grace = check::default_grace(&sr);
                check::check(&Host::from_env(), &sr, true, grace).expect("repair");
                rounds += 1;
            }
            rounds
        });
        let mut made = Vec::new();
        for _ in 0..8 {
            made.push(key(&t.call("Volume.snapshot", json!({"key": base})).ok()));
            made.push(key(&t.call("Volume.clone", json!({"key": base})).ok()));
            made.push(key(&t.create_volume("new", 4096)));
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (made, repairer.join().expect("repairer"))
    });
    assert!(repairs >= 2, "the repair ran {repairs} times only");
    for k in &made {
        t.call("Volume.stat", json!({"key": k})).ok();
    }
    assert_eq!(findings(&t, Duration::ZERO), vec![], "{} calls, {repairs} repairs", made.len());
    eprintln!("repair: {repairs} repairs beside {} snapshot/clone/create calls; nothing lost", made.len());
}

/// A volume over 2 TiB without object-map (what XCP-ng's kernel maps) is destroyed within
/// seconds (its image goes to the trash; its objects are deleted in the background), and a
/// destroy repeated after that succeeds. The smallest such volume (2 TiB and one sector, a
/// LARGE_VDI): the background purge visits its 524,289 objects, 95 s on this machine under
/// load, and the test waits for it so that its load does not spill into later tests.
#[test]
fn ceph_a_large_volume_is_destroyed_in_bounded_time_and_destroy_is_idempotent() {
    let t = TestSr::create();
    let size: i64 = (2 << 40) + 512;
    let v = key(&t.create_volume("large", size));
    let started = Instant::now();
    t.call("Volume.destroy", json!({"key": v})).ok();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "destroy of a 2 TiB volume took {elapsed:?}");
    assert!(t.ls().is_empty());
    t.call("Volume.destroy", json!({"key": v})).ok();
    let purge = Instant::now();
    let purged = wait_until(Duration::from_secs(600), || t.trash().is_empty());
    eprintln!(
        "destroy: 2 TiB volume in {:.2} s; trash purged in the background {:.0} s later: {purged}",
        elapsed.as_secs_f64(),
        purge.elapsed().as_secs_f64()
    );
    assert!(purged, "the background purge did not empty the trash in 10 minutes");
}

/// `Volume.resize` racing `Volume.destroy` never brings the destroyed volume back, and
/// `set`, `set_name`, `set_description` racing it leave no key behind.
#[test]
fn ceph_calls_racing_a_destroy_bring_nothing_back() {
    let t = TestSr::create();
    for round in 0..12 {
        let v = key(&t.create_volume("racer", 4096));
        std::thread::scope(|s| {
            let calls = [
                ("Volume.resize", json!({"key": v, "new_size": 8192})),
                ("Volume.set", json!({"key": v, "k": "a", "v": "b"})),
                ("Volume.set_name", json!({"key": v, "new_name": "n"})),
                ("Volume.set_description", json!({"key": v, "new_description": "d"})),
            ];
            for (method, args) in calls {
                let t = &t;
                s.spawn(move || t.call(method, args));
            }
            s.spawn(|| t.call("Volume.destroy", json!({"key": v})).ok());
        });
        assert!(t.ls().is_empty(), "round {round}: the destroyed volume came back: {:?}", t.ls());
        let left = findings(&t, Duration::ZERO);
        assert_eq!(left, vec![], "round {round}: something was left");
    }
}

/// A clone destroyed on one host while its parent is destroyed on another (the SR lock is
/// per host): whichever finishes last reclaims the parent; no garbage is left.
#[test]
fn ceph_parent_and_clone_destroyed_on_two_hosts_leave_no_garbage() {
    let t = TestSr::create();
    let (a, b) = (scratch_dir("host-a"), scratch_dir("host-b"));
    let host = |dir: &std::path::Path| Plugin::new(Kind::Volume).with_env("CEPHRBD_RUN_DIR", dir.display().to_string());
    let (host_a, host_b) = (host(&a), host(&b));
    for _ in 0..6 {
        let parent = key(&t.create_volume("parent", 4096));
        let clone = key(&t.call("Volume.clone", json!({"key": parent})).ok());
        std::thread::scope(|s| {
            s.spawn(|| host_a.call("Volume.destroy", json!({"sr": t.sr, "key": parent})).ok());
            s.spawn(|| host_b.call("Volume.destroy", json!({"sr": t.sr, "key": clone})).ok());
        });
        // The last of the two may have left the parent to the purge it started (the clone
        // was still in the trash): it converges without anyone's repair.
        let converged = wait_until(Duration::from_secs(60), || {
            findings(&t, Duration::ZERO).is_empty() && t.images() == ["cephrbd-sr"]
        });
        assert!(converged, "left: {:?}, images {:?}", findings(&t, Duration::ZERO), t.images());
    }
    for dir in [a, b] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A volume open on a host (here, exported by the userspace datapath) cannot be
/// destroyed, with or without snapshots: it would vanish under a running VM.
#[test]
fn ceph_destroy_of_a_volume_in_use_is_refused_with_or_without_snapshots() {
    let t = TestSr::create();
    let run = scratch_dir("in-use");
    let dp = Plugin::new(Kind::Datapath).with_env("CEPHRBD_RUN_DIR", run.display().to_string());
    for with_snapshot in [false, true] {
        let volume = t.create_volume("used", 4 << 20);
        if with_snapshot {
            t.call("Volume.snapshot", json!({"key": key(&volume)})).ok();
        }
        let args = json!({"uri": uri_with_policy(&volume, "qsd"), "domain": "1"});
        dp.call("Datapath.attach", args.clone()).ok();
        dp.call("Datapath.activate", args.clone()).ok();
        let (name, message) = t.call("Volume.destroy", json!({"key": key(&volume)})).error_name_and_message();
        assert_eq!(name, "Volume_in_use", "with a snapshot: {with_snapshot}: {message}");
        t.call("Volume.stat", json!({"key": key(&volume)})).ok();
        dp.call("Datapath.deactivate", args.clone()).ok();
        dp.call("Datapath.detach", args).ok();
        t.call("Volume.destroy", json!({"key": key(&volume)})).ok();
    }
    let _ = std::fs::remove_dir_all(run);
}

/// An SR string naming another SR's namespace under another uuid, or with names that are
/// not names, writes nothing anywhere; a volume URI whose key is not the one its image
/// names is refused before anything is touched.
#[test]
fn ceph_forged_sr_strings_and_uris_are_refused() {
    let victim = TestSr::create();
    let other = TestSr::create();
    let v = victim.create_volume("victim", 4096);
    let before =
        (victim.ls(), victim.images(), victim.lab.rbd(&["image-meta", "list", "--format", "json", &header(&victim)]));
    let mut forged = SrUri::parse(&other.sr).expect("sr");
    forged.namespace = victim.namespace.clone();
    let forged = forged.render();
    let calls = [
        ("Volume.create", json!({"name": "x", "description": "", "size": 4096, "sharable": false})),
        ("SR.set_name", json!({"new_name": "pwned"})),
        ("Volume.set", json!({"key": key(&v), "k": "a", "v": "b"})),
        ("Volume.set_name", json!({"key": key(&v), "new_name": "pwned"})),
        ("Volume.destroy", json!({"key": key(&v)})),
        ("Volume.snapshot", json!({"key": key(&v)})),
    ];
    for (method, mut args) in calls {
        args["sr"] = json!(forged);
        let (name, message) = other.plugin.call(method, args).error_name_and_message();
        assert_eq!(name, "SR_does_not_exist", "{method}: {message}");
    }
    let after =
        (victim.ls(), victim.images(), victim.lab.rbd(&["image-meta", "list", "--format", "json", &header(&victim)]));
    assert_eq!(after, before, "a forged SR string changed another SR");
    let bad_pool = victim.sr.replacen(&format!("cephrbd://{}/", victim.lab.pool), "cephrbd://-x/", 1);
    let (name, _) = victim.plugin.call("SR.stat", json!({"sr": bad_pool})).error_name_and_message();
    assert_eq!(name, "Invalid_request");

    let w = victim.create_volume("w", 4096);
    let uri = uri_with_policy(&w, "qsd").replace(&format!("volume={}", key(&w)), &format!("volume={}", key(&v)));
    let dp = Plugin::new(Kind::Datapath);
    for method in ["Datapath.attach", "Datapath.activate", "Datapath.deactivate"] {
        let (name, message) = dp.call(method, json!({"uri": uri, "domain": "1"})).error_name_and_message();
        assert_eq!(name, "Invalid_request", "{method}: {message}");
    }
}

/// A Ceph stall in the middle of a call (time limit 4 s): the call, rollback included,
/// answers within its limit, not one limit per step; what it could not undo is journaled
/// on the host and carried out by the next call, so the SR is consistent without a repair.
#[test]
fn ceph_a_stall_mid_call_answers_within_the_limit_and_the_next_call_repairs() {
    let lab = PrivateLab::start("stall");
    let t = TestSr::on(lab.lab.clone(), |c| c["timeout"] = json!("4"));
    let base = key(&t.create_volume("base", 4 << 20));
    let limit = Duration::from_millis(4_000 + 1_500);
    let mut slowest = Duration::ZERO;
    let mut journaled = 0;
    let journal = Host::from_env().run_dir.join("pending").join(format!("{}.json", t.uuid));
    for delay in [0u64, 40, 80, 120, 160, 200, 240] {
        let (elapsed, out) = std::thread::scope(|s| {
            let call = s.spawn(|| {
                let started = Instant::now();
                let out = t.call("Volume.clone", json!({"key": base}));
                (started.elapsed(), out)
            });
            std::thread::sleep(Duration::from_millis(delay));
            lab.signal("osd.0", "STOP");
            call.join().expect("call")
        });
        lab.signal("osd.0", "CONT");
        slowest = slowest.max(elapsed);
        assert!(elapsed < limit, "a clone stalled after {delay} ms answered after {elapsed:?}: {}", out.stdout);
        if journal.exists() {
            journaled += 1;
        }
        // After recovery, the next call carries out what was journaled.
        let healthy = wait_until(Duration::from_secs(60), || {
            t.plugin
                .call_raw(
                    "SR.stat",
                    &["--json"],
                    serde_json::to_string(&json!({"dbg": "d", "sr": t.sr})).expect("json").as_bytes(),
                )
                .stdout
                .contains("Healthy")
        });
        assert!(healthy, "the cluster did not recover");
        t.create_volume("next", 4096);
        assert!(!journal.exists(), "the next call left the journal: {:?}", std::fs::read_to_string(&journal));
        assert_eq!(findings(&t, Duration::ZERO), vec![], "after a stall at {delay} ms and the next call");
    }
    eprintln!(
        "stall: slowest clone answered in {:.1} s (limit 4 s); {journaled} rounds journaled an undo",
        slowest.as_secs_f64()
    );
}
