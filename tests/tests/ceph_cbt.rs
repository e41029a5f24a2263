//! Changed block tracking on the real test cluster, with real writes through the userspace
//! datapath: Xen Orchestra's delta backup replayed step by step (docs/cbt.md), a disk
//! grown between two snapshots, empty diffs, unrelated volumes, CBT disabled and enabled
//! again, and the anchors' place among destroys and the consistency check.

// An integration-test crate is all tests; the lint is for test code mixed into the library.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cephrbd_tests::{nbd_url, scratch_dir, uri_with_policy, Kind, Plugin, TestSr};
use common::admin::check;
use common::host::Host as HostState;
use common::layout::uri::SrUri;
use common::ops::bitmap::{is_set, unbase64, GRANULARITY};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;
/// RBD's default object size: the granularity of a fast-diff (`--whole-object`) diff.
const OBJECT: u64 = 4 * MIB;
const FAST_DIFF: &str = "layering,exclusive-lock,object-map,fast-diff";

fn key(v: &Value) -> String {
    v["key"].as_str().expect("key").to_owned()
}

/// This test's host: a state directory and the datapath plugin (userspace mode).
struct Host {
    run: PathBuf,
    dp: Plugin,
}

impl Host {
    fn new() -> Host {
        let run = scratch_dir("cbt");
        let dp = Plugin::new(Kind::Datapath).with_env("CEPHRBD_RUN_DIR", run.display().to_string());
        Host { run, dp }
    }

    fn call(&self, method: &str, uri: &str) -> Value {
        self.dp.call(method, json!({"uri": uri, "domain": "0"})).ok()
    }

    /// attach + activate (read-only for a snapshot, as XO's dom0 attach is): the export.
    fn open(&self, volume: &Value) -> String {
        let uri = uri_with_policy(volume, "qsd");
        let backend = self.call("Datapath.attach", &uri);
        let read_only = volume["read_write"] == json!(false);
        self.call(if read_only { "Datapath.activate_readonly" } else { "Datapath.activate" }, &uri);
        nbd_url(&backend)
    }

    fn close(&self, volume: &Value) {
        let uri = uri_with_policy(volume, "qsd");
        self.call("Datapath.deactivate", &uri);
        self.call("Datapath.detach", &uri);
    }

    /// Writes through the datapath with qemu-io commands (`write -P 0x11 0 64K`, …).
    fn write(&self, volume: &Value, commands: &[String]) {
        let url = self.open(volume);
        let mut cmd = Command::new("timeout");
        cmd.args(["60", "qemu-io", "-f", "raw"]);
        for c in commands.iter().chain([&"flush".to_owned()]) {
            cmd.args(["-c", c]);
        }
        let out = cmd.arg(&url).output().expect("qemu-io");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && !text.contains("failed"), "{text}");
        self.close(volume);
    }

    /// Every byte of a volume, read through a (read-only, for a snapshot) attach.
    fn read_all(&self, volume: &Value) -> Vec<u8> {
        let url = self.open(volume);
        let file = self.run.join(format!("{}.raw", key(volume)));
        qemu_img(&["convert", "-f", "raw", "-O", "raw", &url, &file.display().to_string()]);
        self.close(volume);
        let bytes = std::fs::read(&file).expect("read the copy");
        let _ = std::fs::remove_file(&file);
        bytes
    }

    /// Only the blocks set in `map`, read from `volume` through a read-only attach, one
    /// `qemu-img convert` of a window of the export (qemu's raw driver with `offset` and
    /// `size`) per run of consecutive blocks: `(offset, bytes)` pairs.
    fn read_blocks(&self, volume: &Value, map: &[u8], size: u64) -> Vec<(u64, Vec<u8>)> {
        let url = self.open(volume);
        let (export, socket) = url
            .strip_prefix("nbd+unix:///")
            .and_then(|rest| rest.split_once("?socket="))
            .expect("nbd+unix:///<export>?socket=<path>");
        let blocks = size.div_ceil(GRANULARITY);
        let mut runs = Vec::new();
        let mut block = 0;
        while block < blocks {
            if !is_set(map, block) {
                block += 1;
                continue;
            }
            let first = block;
            while block < blocks && is_set(map, block) {
                block += 1;
            }
            let (offset, length) = (first * GRANULARITY, (block * GRANULARITY).min(size) - first * GRANULARITY);
            let file = self.run.join(format!("run-{first}.raw"));
            let window = format!(
                "driver=raw,offset={offset},size={length},file.driver=nbd,file.server.type=unix,\
                 file.server.path={socket},file.export={export}"
            );
            qemu_img(&["convert", "--image-opts", &window, "-O", "raw", &file.display().to_string()]);
            let bytes = std::fs::read(&file).expect("read the run");
            assert_eq!(u64::try_from(bytes.len()).expect("len"), length);
            runs.push((offset, bytes));
            let _ = std::fs::remove_file(&file);
        }
        self.close(volume);
        runs
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run);
    }
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("timeout").arg("120").arg("qemu-img").args(args).output().expect("qemu-img");
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `Volume.list_changed_blocks(from, to)` over the whole volume: the decoded bitmap.
fn changed_blocks(t: &TestSr, from: &Value, to: &Value) -> Vec<u8> {
    let out = t
        .call("Volume.list_changed_blocks", json!({"key": from["key"], "key2": to["key"], "offset": 0, "length": -1}))
        .ok();
    assert_eq!(out["granularity"], json!(GRANULARITY), "{out}");
    unbase64(out["bitmap"].as_str().expect("bitmap")).expect("base64")
}

fn set_blocks(map: &[u8]) -> BTreeSet<u64> {
    (0..u64::try_from(map.len()).expect("len") * 8).filter(|b| is_set(map, *b)).collect()
}

/// The blocks `writes` (offset, length) touch.
fn touched(writes: &[(u64, u64)]) -> BTreeSet<u64> {
    writes.iter().flat_map(|(o, l)| (o / GRANULARITY)..(o + l).div_ceil(GRANULARITY)).collect()
}

/// No omission (every block written is flagged: a missing one would be lost from the
/// backup), nothing flagged outside the RADOS objects written, and the bitmap covers
/// `size` in whole 32-bit words.
fn assert_covers(map: &[u8], writes: &[(u64, u64)], size: u64, context: &str) -> (usize, usize) {
    let flagged = set_blocks(map);
    let exact = touched(writes);
    let missing: Vec<_> = exact.difference(&flagged).collect();
    assert!(missing.is_empty(), "{context}: written blocks not flagged (data loss): {missing:?}");
    let objects: BTreeSet<u64> = exact.iter().map(|b| b * GRANULARITY / OBJECT).collect();
    let stray: Vec<_> = flagged.iter().filter(|b| !objects.contains(&(*b * GRANULARITY / OBJECT))).collect();
    assert!(stray.is_empty(), "{context}: blocks flagged outside the objects written: {stray:?}");
    let bits = size.div_ceil(GRANULARITY);
    assert_eq!(u64::try_from(map.len()).expect("len"), bits.div_ceil(32) * 4, "{context}: bitmap length");
    (exact.len(), flagged.len())
}

fn write_commands(writes: &[(u64, u64, u8)]) -> Vec<String> {
    writes
        .iter()
        .map(|(o, l, p)| if *p == 0 { format!("write -z {o} {l}") } else { format!("write -P {p:#04x} {o} {l}") })
        .collect()
}

/// Xen Orchestra's delta backup (`@xen-orchestra/xapi` `exportContent` with CBT), replayed
/// against one SR: enable CBT, write, snapshot S1, full backup of S1 through a read-only
/// attach, write a known set of aligned and unaligned ranges, snapshot S2,
/// `list_changed_blocks(S1, S2)`, `data_destroy(S1)`, then the backup rebuilt from the S1
/// copy and only the flagged blocks of S2 must equal S2 byte for byte.
fn xo_delta_flow(features: Option<&str>) -> (usize, usize) {
    let t = TestSr::with_config(|c| {
        if let Some(f) = features {
            c["image_features"] = json!(f);
        }
    });
    let host = Host::new();
    let size = 48 * MIB;
    let v = t.create_volume("vm disk", i64::try_from(size).expect("size"));
    assert_eq!(v["cbt_enabled"], json!(false), "{v}");
    t.call("Volume.enable_cbt", json!({"key": v["key"]})).ok();
    t.call("Volume.enable_cbt", json!({"key": v["key"]})).ok();
    let v = t.call("Volume.stat", json!({"key": v["key"]})).ok();
    assert_eq!(v["cbt_enabled"], json!(true), "{v}");
    host.write(&v, &write_commands(&[(0, 8 * MIB, 0x11), (20 * MIB, 3 * MIB, 0x22), (40 * MIB, 100 * KIB, 0x23)]));

    let s1 = t.call("Volume.snapshot", json!({"key": v["key"]})).ok();
    assert_eq!((s1["cbt_enabled"].clone(), s1["read_write"].clone()), (json!(true), json!(false)), "{s1}");
    let backup = host.read_all(&s1);
    assert_eq!(backup.len(), usize::try_from(size).expect("size"));

    // Aligned blocks, unaligned ranges inside a block and across block and object
    // boundaries, zeroes written over data, and zeroes written where nothing ever was.
    let writes = [
        (0, 64 * KIB, 0x33),
        (MIB + 100, 1000, 0x44),
        (5 * MIB - 512, 1024, 0x55),
        (8 * MIB - 3 * KIB, 6 * KIB, 0x56),
        (30 * MIB, 128 * KIB, 0x66),
        (21 * MIB, 64 * KIB, 0),
        (47 * MIB + 60 * KIB, 8 * KIB, 0x77),
    ];
    host.write(&v, &write_commands(&writes));
    let mut expected: Vec<(u64, u64)> = writes.iter().map(|(o, l, _)| (*o, *l)).collect();
    let never_written = (12 * MIB, 64 * KIB);
    host.write(&v, &[format!("write -z {} {}", never_written.0, never_written.1)]);
    let s2 = t.call("Volume.snapshot", json!({"key": v["key"]})).ok();

    let map = changed_blocks(&t, &s1, &s2);
    // Zeroes written where the disk was never written change nothing: librbd writes no
    // object there, and both snapshots read zeroes. Flagging them would not be wrong.
    if !set_blocks(&map).contains(&(never_written.0 / GRANULARITY)) {
        eprintln!("cbt: zeroes written over nothing are not a change (as expected)");
    } else {
        expected.push(never_written);
    }
    let counts = assert_covers(&map, &expected, size, "S1 -> S2");
    assert_eq!(changed_blocks(&t, &s2, &s1), map, "the order of the two volumes does not matter");
    let to_head = changed_blocks(&t, &s1, &v);
    assert_covers(&to_head, &expected, size, "S1 -> the disk itself");

    // XO destroys the data of the base it exported; its anchor stays for the next diff.
    t.call("Volume.data_destroy", json!({"key": s1["key"]})).ok();
    t.call("Volume.data_destroy", json!({"key": s1["key"]})).ok();
    let s1 = t.call("Volume.stat", json!({"key": s1["key"]})).ok();
    assert_eq!(s1["keys"]["vdi-type"], "cbt_metadata", "{s1}");
    assert_eq!(s1["cbt_enabled"], json!(true));
    let uri = uri_with_policy(&s1, "qsd");
    assert!(uri.contains("data_destroyed=1"), "{uri}");
    for method in ["Datapath.attach", "Datapath.activate_readonly", "Datapath.activate"] {
        let (name, message) = host.dp.call(method, json!({"uri": uri, "domain": "0"})).error_name_and_message();
        assert_eq!(name, "Volume_data_destroyed", "{method}: {message}");
        assert!(message.contains("holds only changed-block tracking metadata"), "{message}");
    }
    let (name, _) = t.call("Volume.clone", json!({"key": s1["key"]})).error_name_and_message();
    assert_eq!(name, "Volume_data_destroyed");
    assert_eq!(changed_blocks(&t, &s1, &s2), map, "the diff from the anchor is unchanged");

    // The incremental backup: the S1 copy plus only the flagged blocks of S2.
    let mut rebuilt = backup;
    for (offset, bytes) in host.read_blocks(&s2, &map, size) {
        let at = usize::try_from(offset).expect("offset");
        rebuilt[at..at + bytes.len()].copy_from_slice(&bytes);
    }
    let s2_bytes = host.read_all(&s2);
    assert_same(&rebuilt, &s2_bytes, &map, "S2");
    eprintln!(
        "cbt ({}): {} blocks written, {} flagged; rebuilt S2 equals S2",
        features.unwrap_or("default features"),
        counts.0,
        counts.1
    );
    counts
}

/// The rebuilt backup equals the volume read whole, byte for byte; otherwise the first
/// differing blocks, and whether they were flagged.
fn assert_same(rebuilt: &[u8], whole: &[u8], map: &[u8], what: &str) {
    assert_eq!(rebuilt.len(), whole.len(), "{what}: length");
    let block = usize::try_from(GRANULARITY).expect("block");
    let differ: Vec<(usize, bool)> = rebuilt
        .chunks(block)
        .zip(whole.chunks(block))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| (i, is_set(map, u64::try_from(i).expect("i"))))
        .take(10)
        .collect();
    assert!(differ.is_empty(), "{what}: the rebuilt backup differs in blocks (block, flagged): {differ:?}");
}

#[test]
fn ceph_cbt_xo_delta_backup_rebuilds_the_later_snapshot_exactly() {
    let (exact, flagged) = xo_delta_flow(None);
    let (_, coarse) = xo_delta_flow(Some(FAST_DIFF));
    assert!(flagged <= coarse, "the exact diff flags no more than the object-granular one: {flagged} vs {coarse}");
    assert!(exact <= flagged);
}

/// A disk grown between S1 and S2: the bitmap covers S2's size, and the rebuilt backup
/// (the S1 copy extended with zeroes, plus the flagged blocks) equals S2.
#[test]
fn ceph_cbt_volume_grown_between_snapshots() {
    let t = TestSr::create();
    let host = Host::new();
    let v = t.create_volume("growing", i64::try_from(20 * MIB).expect("size"));
    t.call("Volume.enable_cbt", json!({"key": v["key"]})).ok();
    host.write(&v, &write_commands(&[(0, 2 * MIB, 0x31), (19 * MIB, MIB, 0x32)]));
    let s1 = t.call("Volume.snapshot", json!({"key": v["key"]})).ok();
    let backup = host.read_all(&s1);
    let size = 36 * MIB + 192 * KIB;
    t.call("Volume.resize", json!({"key": v["key"], "new_size": size})).ok();
    let v = t.call("Volume.stat", json!({"key": v["key"]})).ok();
    let writes = [(19 * MIB + 512, 4 * KIB, 0x41), (20 * MIB, 64 * KIB, 0x42), (36 * MIB + 100 * KIB, 92 * KIB, 0x43)];
    host.write(&v, &write_commands(&writes));
    let s2 = t.call("Volume.snapshot", json!({"key": v["key"]})).ok();
    assert_eq!(s2["virtual_size"], json!(size));
    let map = changed_blocks(&t, &s1, &s2);
    let expected: Vec<(u64, u64)> = writes.iter().map(|(o, l, _)| (*o, *l)).collect();
    assert_covers(&map, &expected, size, "grown");
    t.call("Volume.data_destroy", json!({"key": s1["key"]})).ok();
    let mut rebuilt = backup;
    rebuilt.resize(usize::try_from(size).expect("size"), 0);
    for (offset, bytes) in host.read_blocks(&s2, &map, size) {
        let at = usize::try_from(offset).expect("offset");
        rebuilt[at..at + bytes.len()].copy_from_slice(&bytes);
    }
    assert_same(&rebuilt, &host.read_all(&s2), &map, "grown S2");
    // A window of the bitmap: offset and length select blocks, widened to whole blocks.
    let out = t
        .call(
            "Volume.list_changed_blocks",
            json!({"key": s1["key"], "key2": s2["key"], "offset": 20 * MIB - 1, "length": 2}),
        )
        .ok();
    let window = unbase64(out["bitmap"].as_str().expect("bitmap")).expect("base64");
    assert_eq!(set_blocks(&window), BTreeSet::from([1]), "blocks 319 and 320: only the second was written");
}

/// Nothing written: every bit clear, whatever the pair; volumes of two disks, or a disk
/// and a clone of it, are refused with a clear error.
#[test]
fn ceph_cbt_empty_diffs_and_unrelated_volumes() {
    let t = TestSr::create();
    let host = Host::new();
    let a = t.create_volume("a", i64::try_from(8 * MIB).expect("size"));
    let b = t.create_volume("b", i64::try_from(8 * MIB).expect("size"));
    for v in [&a, &b] {
        t.call("Volume.enable_cbt", json!({"key": v["key"]})).ok();
    }
    host.write(&a, &write_commands(&[(0, MIB, 0x51)]));
    let a1 = t.call("Volume.snapshot", json!({"key": a["key"]})).ok();
    let a2 = t.call("Volume.snapshot", json!({"key": a["key"]})).ok();
    let b1 = t.call("Volume.snapshot", json!({"key": b["key"]})).ok();
    for (from, to) in [(&a1, &a2), (&a2, &a1), (&a1, &a1), (&a2, &a), (&a, &a)] {
        let map = changed_blocks(&t, from, to);
        assert_eq!(map.len(), 16, "8 MiB: 128 bits");
        assert!(map.iter().all(|b| *b == 0), "{} -> {}: {map:?}", from["key"], to["key"]);
    }
    let clone = t.call("Volume.clone", json!({"key": a1["key"]})).ok();
    assert_eq!(clone["cbt_enabled"], json!(false), "a clone is a new disk: {clone}");
    for (from, to) in [(&a1, &b1), (&a, &b), (&a1, &b), (&a1, &clone), (&clone, &a)] {
        let out = t.call(
            "Volume.list_changed_blocks",
            json!({"key": from["key"], "key2": to["key"], "offset": 0, "length": -1}),
        );
        let (name, message) = out.error_name_and_message();
        assert_eq!(name, "Volumes_unrelated", "{message}");
        assert!(message.contains("share no history"), "{message}");
    }
    let gone = uuid::Uuid::new_v4().to_string();
    let out = t.call("Volume.list_changed_blocks", json!({"key": a1["key"], "key2": gone, "offset": 0, "length": -1}));
    assert_eq!(out.error_name_and_message().0, "Volume_does_not_exist");
    // Every volume record says whether CBT is on.
    for v in t.ls() {
        assert!(v["cbt_enabled"].is_boolean(), "{v}");
    }
}

/// Disabling CBT drops what only CBT needed (the anchors of the disk) and keeps the
/// snapshots that hold data; enabling it again starts anew.
#[test]
fn ceph_cbt_disabled_then_enabled_again() {
    let t = TestSr::create();
    let host = Host::new();
    let v = t.create_volume("toggled", i64::try_from(8 * MIB).expect("size"));
    t.call("Volume.enable_cbt", json!({"key": v["key"]})).ok();
    let s1 = t.call("Volume.snapshot", json!({"key": v["key"]})).ok();
    let kept = t.call("Volume.snapshot", json!({"key": v["key"]})).ok();
    t.call("Volume.data_destroy", json!({"key": s1["key"]})).ok();
    let (name, _) = t.call("Volume.enable_cbt", json!({"key": s1["key"]})).error_name_and_message();
    assert_eq!(name, "Volume_read_only", "CBT is a property of disks");
    let (name, _) = t.call("Volume.data_destroy", json!({"key": v["key"]})).error_name_and_message();
    assert_eq!(name, "Volume_not_a_snapshot");

    t.call("Volume.disable_cbt", json!({"key": v["key"]})).ok();
    assert_eq!(t.call("Volume.stat", json!({"key": v["key"]})).ok()["cbt_enabled"], json!(false));
    let (name, _) = t.call("Volume.stat", json!({"key": s1["key"]})).error_name_and_message();
    assert_eq!(name, "Volume_does_not_exist", "the anchor went with CBT");
    assert_eq!(t.snapshots(&image(&v)).len(), 1, "its RBD snapshot too: {:?}", t.snapshots(&image(&v)));
    let kept = t.call("Volume.stat", json!({"key": kept["key"]})).ok();
    assert_eq!(kept["cbt_enabled"], json!(true), "a snapshot that holds data keeps its flag");
    t.call("Volume.disable_cbt", json!({"key": v["key"]})).ok();

    let plain = t.call("Volume.snapshot", json!({"key": v["key"]})).ok();
    assert_eq!(plain["cbt_enabled"], json!(false));
    let (name, message) = t.call("Volume.data_destroy", json!({"key": plain["key"]})).error_name_and_message();
    assert_eq!(name, "Volume_has_no_cbt_metadata", "{message}");

    t.call("Volume.enable_cbt", json!({"key": v["key"]})).ok();
    host.write(&v, &write_commands(&[(3 * MIB, 64 * KIB, 0x61)]));
    let s3 = t.call("Volume.snapshot", json!({"key": v["key"]})).ok();
    assert_eq!(s3["cbt_enabled"], json!(true));
    assert_covers(&changed_blocks(&t, &plain, &s3), &[(3 * MIB, 64 * KIB)], 8 * MIB, "after enabling again");
    assert_covers(&changed_blocks(&t, &kept, &s3), &[(3 * MIB, 64 * KIB)], 8 * MIB, "across the disabled time");
    t.call("Volume.data_destroy", json!({"key": s3["key"]})).ok();
}

fn image(v: &Value) -> String {
    let uri = v["uri"][0].as_str().expect("uri");
    let leaf = uri.split('?').next().and_then(|p| p.rsplit('/').next()).expect("leaf");
    leaf.split("%40").next().expect("image").to_owned()
}

fn check(t: &TestSr, repair: bool) -> Vec<check::Finding> {
    let sr = SrUri::parse(&t.sr).expect("sr");
    check::check(&HostState::from_env(), &sr, repair, Duration::ZERO).expect("check")
}

/// Anchors never keep a disk alive nor block a destroy: destroying the disk takes its
/// anchors along once no volume of it holds data, and the storage is reclaimed; an anchor
/// left with nothing to compare with is found and destroyed by the check.
#[test]
fn ceph_cbt_anchors_never_block_destroy_and_the_check_knows_them() {
    let t = TestSr::create();
    // The disk with an anchor and a snapshot that holds data: destroying the disk keeps
    // both (the snapshot holds data), destroying the snapshot then takes the anchor too.
    let v = t.create_volume("a", i64::try_from(8 * MIB).expect("size"));
    t.call("Volume.enable_cbt", json!({"key": v["key"]})).ok();
    let anchor = t.call("Volume.snapshot", json!({"key": v["key"]})).ok();
    let data = t.call("Volume.snapshot", json!({"key": v["key"]})).ok();
    t.call("Volume.data_destroy", json!({"key": anchor["key"]})).ok();
    t.call("Volume.destroy", json!({"key": v["key"]})).ok();
    let keys: BTreeSet<String> = t.ls().iter().map(key).collect();
    assert_eq!(keys, BTreeSet::from([key(&anchor), key(&data)]));
    assert!(check(&t, false).is_empty(), "an anchor beside a snapshot with data is fine");
    t.call("Volume.destroy", json!({"key": data["key"]})).ok();
    assert!(t.ls().is_empty(), "the anchor went with the last volume holding data: {:?}", t.ls());
    t.assert_reclaimed();

    // The disk goes while only anchors are left: they go with it.
    let v = t.create_volume("b", i64::try_from(8 * MIB).expect("size"));
    t.call("Volume.enable_cbt", json!({"key": v["key"]})).ok();
    let a1 = t.call("Volume.snapshot", json!({"key": v["key"]})).ok();
    t.call("Volume.data_destroy", json!({"key": a1["key"]})).ok();
    t.call("Volume.destroy", json!({"key": v["key"]})).ok();
    assert!(t.ls().is_empty(), "{:?}", t.ls());

    // Anchors whose disk's data volumes were all made anchors after the disk went: the
    // check finds them and its repair destroys them; then nothing is left.
    let v = t.create_volume("c", i64::try_from(8 * MIB).expect("size"));
    t.call("Volume.enable_cbt", json!({"key": v["key"]})).ok();
    let c1 = t.call("Volume.snapshot", json!({"key": v["key"]})).ok();
    let c2 = t.call("Volume.snapshot", json!({"key": v["key"]})).ok();
    t.call("Volume.destroy", json!({"key": v["key"]})).ok();
    for s in [&c1, &c2] {
        t.call("Volume.data_destroy", json!({"key": s["key"]})).ok();
    }
    let found = check(&t, false);
    let anchors: Vec<_> = found.iter().filter(|f| matches!(f.problem, check::Problem::OrphanedAnchor { .. })).collect();
    assert_eq!(anchors.len(), 2, "{found:?}");
    eprintln!("check: {}", anchors[0]);
    check(&t, true);
    let left: Vec<_> =
        check(&t, false).into_iter().filter(|f| !matches!(f.problem, check::Problem::Trash { .. })).collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(t.ls().is_empty(), "{:?}", t.ls());
}
