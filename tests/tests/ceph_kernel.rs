//! The datapath on real kernels: two guests of the kernel lab (Debian's 6.1 kernel with
//! rbd.ko and nbd.ko, under QEMU, docs/kernel-lab.md) stand for two XCP-ng hosts, each with
//! its own kernel, mappings, host state and Ceph clients; a third boots without the rbd and
//! nbd modules. The plugin executables run in the guests exactly as xapi-storage-script
//! runs them; volumes are made on this machine; the bytes are checked with `rbd export`.
//!
//! One boot of each guest serves every scenario (a boot costs 15-30 s under TCG), so this
//! file has its own harness: each scenario is reported as a test, in libtest's format, and
//! the count of those that ran in the guests is the last line.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cephrbd_tests::kernel_lab::{Answer, Guest, Options, Shell};
use cephrbd_tests::{uri_with_policy, Lab, TestSr};
use serde_json::{json, Value};

const MIB: usize = 1 << 20;
const STEP: Duration = Duration::from_secs(240);

/// One stand-in host: a guest, and the host id its plugins use.
struct Host {
    guest: Guest,
    id: &'static str,
}

impl Host {
    fn boot(name: &str, id: &'static str, options: &Options) -> Host {
        let guest = Guest::boot(name, options, Duration::from_secs(3000));
        guest.install_plugins();
        Host { guest, id }
    }

    fn sh(&self, script: &str) -> Shell {
        self.guest.sh(script, STEP)
    }

    /// `<plugin dir>/<method> --json` in the guest, as xapi-storage-script runs it.
    fn call(&self, method: &str, args: Value) -> Answer {
        self.call_with(method, args, "")
    }

    fn call_with(&self, method: &str, args: Value, env: &str) -> Answer {
        self.guest.call(method, args, &format!("CEPHRBD_HOST_ID={} {env}", self.id), STEP)
    }

    fn dp(&self, method: &str, uri: &str, domain: &str) -> Answer {
        self.call(method, json!({"uri": uri, "domain": domain}))
    }

    /// Writes `bytes` copies of `byte` at `offset` through `device`, with direct I/O. Fails
    /// when `device` is no block device (dd would create a file in its place, which a later
    /// `rbd map` finds where its device node should be).
    fn write(&self, device: &str, offset: usize, bytes: usize, byte: u8) -> Shell {
        self.sh(&format!(
            "[ -b {device} ] || exit 2; head -c {bytes} /dev/zero | tr '\\000' '\\{byte:03o}' | dd of={device} bs=64K seek={} oflag=direct,seek_bytes iflag=fullblock status=none conv=notrunc",
            offset
        ))
    }

    /// Reads `bytes` at `offset` from `device` (direct I/O): true when they all are `byte`.
    fn holds(&self, device: &str, offset: usize, bytes: usize, byte: u8) -> bool {
        let out = self.sh(&format!(
            "dd if={device} bs=64K skip={offset} count={bytes} iflag=direct,skip_bytes,count_bytes status=none | od -An -tx1 -v | tr -s ' \\n' '\\n' | sort -u | grep -v '^$'"
        ));
        out.status == 0 && out.stdout.trim() == format!("{byte:02x}")
    }

    fn mappings(&self) -> String {
        self.sh("ls /sys/bus/rbd/devices 2>/dev/null; ls /sys/block | grep '^nbd' | while read d; do [ -s /sys/block/$d/pid ] && echo $d; done").stdout
    }
}

/// The path of a `BlockDevice` implementation.
fn device(backend: &Value) -> String {
    backend["implementations"]
        .as_array()
        .and_then(|l| l.iter().find(|i| i[0] == "BlockDevice"))
        .and_then(|i| i[1]["path"].as_str())
        .unwrap_or_else(|| panic!("no BlockDevice in {backend}"))
        .to_owned()
}

/// The image's bytes, as `rbd export` on this machine sees them.
fn export(t: &TestSr, volume: &Value) -> Vec<u8> {
    let uri = volume["uri"][0].as_str().expect("uri");
    let leaf = uri.split('?').next().and_then(|u| u.rsplit('/').next()).expect("leaf");
    let file = std::env::temp_dir().join(format!("cephrbd-export-{}", uuid::Uuid::new_v4()));
    t.lab.rbd(&[
        "export",
        "--no-progress",
        &format!("{}/{}/{leaf}", t.lab.pool, t.namespace),
        &file.display().to_string(),
    ]);
    let bytes = std::fs::read(&file).expect("export");
    let _ = std::fs::remove_file(file);
    bytes
}

fn all(bytes: &[u8], byte: u8) -> bool {
    bytes.iter().all(|b| *b == byte)
}

fn blocklist(lab: &Lab) -> Vec<String> {
    let out = lab.ceph(&["osd", "blocklist", "ls", "--format", "json"]);
    let entries: Vec<Value> = serde_json::from_str(&out).unwrap_or_default();
    entries.iter().filter_map(|e| e["addr"].as_str().map(str::to_owned)).collect()
}

struct Kit {
    a: Host,
    b: Host,
    bare: Host,
}

type Scenario = fn(&Kit);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let skips: Vec<&String> = args.windows(2).filter(|w| w[0] == "--skip").map(|w| &w[1]).collect();
    let scenarios: &[(&str, Scenario)] = &[
        ("kernel_rbd_attach_activate_write_and_read_back", kernel_rbd_io),
        ("kernel_rbd_snapshot_read_only_on_the_other_host", kernel_rbd_snapshot_read_only),
        ("rbd_nbd_attach_activate_write_and_read_back", rbd_nbd_io),
        ("auto_takes_rbd_nbd_for_features_the_kernel_cannot_map", auto_takes_nbd_for_unmappable_features),
        ("the_kernels_supported_features_drive_what_krbd_accepts", supported_features_drive_krbd),
        ("a_cooperative_migration_fences_nobody_and_leaves_nothing_on_a", cooperative_migration),
        ("a_takeover_fences_only_the_writer", takeover_fences_only_the_writer),
        ("racing_activations_leave_exactly_one_writer", racing_activations),
        ("a_crash_between_steps_is_reaped_by_sr_attach", crash_then_reaper),
        ("a_host_without_the_modules_gets_the_reason_and_keeps_nothing", host_without_modules),
        ("a_step_that_hangs_is_killed_with_the_kernel_log", hung_step),
        // Last: it stops the bare guest.
        ("a_guest_that_stops_answering_is_stopped_with_its_console", hung_guest),
    ];
    let chosen: Vec<&(&str, Scenario)> = scenarios
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .filter(|(name, _)| !skips.iter().any(|s| name.contains(s.as_str())))
        .collect();
    println!("\nrunning {} tests (in kernel-lab guests)", chosen.len());
    let started = Instant::now();
    if chosen.is_empty() {
        println!(
            "\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; {} filtered out; finished in 0.00s\n",
            scenarios.len()
        );
        return ExitCode::SUCCESS;
    }
    let boot = Instant::now();
    let (a, b, bare) = std::thread::scope(|s| {
        let a = s.spawn(|| Host::boot("a", "guest-a", &Options::default()));
        let b = s.spawn(|| Host::boot("b", "guest-b", &Options::default()));
        let bare = s.spawn(|| {
            let options = Options { no_modules: vec!["rbd".to_owned(), "nbd".to_owned()], boot_timeout: None };
            Host::boot("bare", "guest-bare", &options)
        });
        (a.join().expect("guest a"), b.join().expect("guest b"), bare.join().expect("guest bare"))
    });
    eprintln!("kernel lab: three guests up in {:.1} s", boot.elapsed().as_secs_f64());
    let kit = Kit { a, b, bare };
    let mut failed = Vec::new();
    for (name, scenario) in &chosen {
        let at = Instant::now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| scenario(&kit)));
        let secs = at.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => println!("test {name} ... ok ({secs:.1} s)"),
            Err(_) => {
                for host in [&kit.a, &kit.b] {
                    let seen = host.sh("dmesg | tail -n 25; ls -l /dev/rbd* /dev/nbd0 2>&1 | head -n 20");
                    eprintln!(
                        "--- guest {} after {name}: kernel log and devices ---\n{}",
                        host.guest.name, seen.stdout
                    );
                }
                println!("test {name} ... FAILED ({secs:.1} s)");
                failed.push(*name);
            }
        }
    }
    drop(kit);
    let passed = chosen.len() - failed.len();
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; 0 ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        scenarios.len() - chosen.len(),
        started.elapsed().as_secs_f64()
    );
    eprintln!("kernel lab: {passed} of {} tests ran and passed in the guests", chosen.len());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    }
}

/// An SR whose volumes the guests use. Its time limit is four times the default: the
/// guests are emulated (TCG), and a Python `ceph` command takes 8-25 s there, not 0.5 s.
fn sr(policy: &str, features: Option<&str>) -> TestSr {
    TestSr::with_config(|c| {
        c["datapath"] = json!(policy);
        c["timeout"] = json!("120");
        if let Some(f) = features {
            c["image_features"] = json!(f);
        }
    })
}

fn kernel_rbd_io(kit: &Kit) {
    let t = sr("krbd", None);
    let v = t.create_volume("krbd", 8 << 20);
    let uri = uri_with_policy(&v, "krbd");
    let backend = kit.a.dp("Datapath.attach", &uri, "1").ok().clone();
    let dev = device(&backend);
    assert!(dev.starts_with("/dev/rbd"), "{backend}");
    assert_eq!(backend["implementations"][0][1]["backend_type"], "vbd");
    assert_eq!(kit.a.dp("Datapath.attach", &uri, "2").ok(), &backend, "the same mapping for a second domain");
    kit.a.dp("Datapath.activate", &uri, "1").ok();
    kit.a.write(&dev, 0, MIB, 0x5a).ok();
    kit.a.write(&dev, 3 * MIB, MIB, 0xa5).ok();
    kit.a.dp("Datapath.deactivate", &uri, "1").ok();
    kit.a.dp("Datapath.detach", &uri, "1").ok();
    kit.a.dp("Datapath.detach", &uri, "2").ok();
    let bytes = export(&t, &v);
    assert!(all(&bytes[..MIB], 0x5a) && all(&bytes[3 * MIB..4 * MIB], 0xa5) && all(&bytes[MIB..3 * MIB], 0));
    assert!(!kit.a.mappings().contains(dev.trim_start_matches("/dev/rbd")) || kit.a.mappings().is_empty());
}

fn kernel_rbd_snapshot_read_only(kit: &Kit) {
    let t = sr("krbd", None);
    let v = t.create_volume("origin", 4 << 20);
    let uri = uri_with_policy(&v, "krbd");
    let dev = device(kit.a.dp("Datapath.attach", &uri, "1").ok());
    kit.a.dp("Datapath.activate", &uri, "1").ok();
    kit.a.write(&dev, 0, MIB, 0x3c).ok();
    let snap = t.call("Volume.snapshot", json!({"key": v["key"]})).ok();
    let snap_uri = uri_with_policy(&snap, "krbd");
    let snap_dev = device(kit.b.dp("Datapath.attach", &snap_uri, "7").ok());
    kit.b.dp("Datapath.activate_readonly", &snap_uri, "7").ok();
    assert!(kit.b.holds(&snap_dev, 0, MIB, 0x3c), "B reads the snapshot");
    assert_ne!(kit.b.write(&snap_dev, 0, 65536, 0x11).status, 0, "a snapshot mapping accepted a write");
    kit.a.write(&dev, 0, MIB, 0x77).ok();
    assert!(kit.b.holds(&snap_dev, 0, MIB, 0x3c), "the snapshot keeps its data while A writes");
    kit.b.dp("Datapath.deactivate", &snap_uri, "7").ok();
    kit.b.dp("Datapath.detach", &snap_uri, "7").ok();
    kit.a.dp("Datapath.deactivate", &uri, "1").ok();
    kit.a.dp("Datapath.detach", &uri, "1").ok();
}

fn rbd_nbd_io(kit: &Kit) {
    let t = sr("nbd", None);
    let v = t.create_volume("nbd", 8 << 20);
    let uri = uri_with_policy(&v, "nbd");
    let backend = kit.b.dp("Datapath.attach", &uri, "1").ok().clone();
    let dev = device(&backend);
    assert!(dev.starts_with("/dev/nbd"), "{backend}");
    kit.b.dp("Datapath.activate", &uri, "1").ok();
    kit.b.write(&dev, MIB, 2 * MIB, 0x6b).ok();
    kit.b.dp("Datapath.deactivate", &uri, "1").ok();
    kit.b.dp("Datapath.detach", &uri, "1").ok();
    let bytes = export(&t, &v);
    assert!(all(&bytes[MIB..3 * MIB], 0x6b) && all(&bytes[..MIB], 0));
    let left = kit.b.sh("rbd-nbd list-mapped --format json").stdout;
    assert!(!left.contains(&dev), "the nbd mapping is left: {left}");
}

fn auto_takes_nbd_for_unmappable_features(kit: &Kit) {
    let t = sr("auto", Some("layering,exclusive-lock,journaling"));
    let v = t.create_volume("journaled", 4 << 20);
    let uri = v["uri"][0].as_str().expect("uri").to_owned();
    assert!(uri.contains("datapath=auto"), "{uri}");
    let dev = device(kit.a.dp("Datapath.attach", &uri, "1").ok());
    assert!(dev.starts_with("/dev/nbd"), "auto chose {dev} for an image with journaling");
    kit.a.dp("Datapath.activate", &uri, "1").ok();
    kit.a.write(&dev, 0, MIB, 0x42).ok();
    kit.a.dp("Datapath.deactivate", &uri, "1").ok();
    kit.a.dp("Datapath.detach", &uri, "1").ok();
    assert!(all(&export(&t, &v)[..MIB], 0x42));
    // The default features: auto takes the kernel.
    let plain_sr = sr("auto", None);
    let plain = plain_sr.create_volume("plain", 4 << 20);
    let plain_uri = plain["uri"][0].as_str().expect("uri").to_owned();
    let dev = device(kit.a.dp("Datapath.attach", &plain_uri, "1").ok());
    assert!(dev.starts_with("/dev/rbd"), "auto chose {dev} for the default features");
    kit.a.dp("Datapath.detach", &plain_uri, "1").ok();
}

fn supported_features_drive_krbd(kit: &Kit) {
    let mask = kit.a.sh("cat /sys/bus/rbd/supported_features").ok().trim().to_owned();
    assert_eq!(mask, "0x1bf", "Debian 6.1's kernel RBD");
    let t = sr("krbd", Some("layering,exclusive-lock,journaling"));
    let v = t.create_volume("journaled", 4 << 20);
    let uri = uri_with_policy(&v, "krbd");
    let (name, message) = kit.a.dp("Datapath.attach", &uri, "1").error();
    assert_eq!(name, "Datapath_unavailable", "{message}");
    assert!(message.contains("journaling") && message.contains("0x1bf"), "{message}");
    assert!(kit
        .a
        .sh("ls /run/cephrbd/dp 2>/dev/null")
        .stdout
        .lines()
        .all(|l| !l.contains(v["key"].as_str().expect("key"))));
}

fn cooperative_migration(kit: &Kit) {
    let t = sr("krbd", None);
    let v = t.create_volume("migrating", 8 << 20);
    let uri = uri_with_policy(&v, "krbd");
    let before = blocklist(&t.lab);
    let dev_a = device(kit.a.dp("Datapath.attach", &uri, "1").ok());
    kit.a.dp("Datapath.activate", &uri, "1").ok();
    kit.a.write(&dev_a, 0, MIB, 0x11).ok();
    let dev_b = device(kit.b.dp("Datapath.attach", &uri, "2").ok());
    kit.a.dp("Datapath.deactivate", &uri, "1").ok();
    let activated = kit.b.dp("Datapath.activate", &uri, "2");
    activated.ok();
    assert!(!activated.stderr.contains("fenced"), "{}", activated.stderr);
    kit.a.dp("Datapath.detach", &uri, "1").ok();
    kit.b.write(&dev_b, MIB, MIB, 0x22).ok();
    assert_eq!(blocklist(&t.lab), before, "a cooperative migration added a blocklist entry");
    let a_maps = kit.a.sh("rbd device list --format json 2>/dev/null || true").stdout;
    assert!(!a_maps.contains(v["key"].as_str().expect("key")), "A still maps the volume: {a_maps}");
    kit.b.dp("Datapath.deactivate", &uri, "2").ok();
    kit.b.dp("Datapath.detach", &uri, "2").ok();
    let bytes = export(&t, &v);
    assert!(all(&bytes[..MIB], 0x11) && all(&bytes[MIB..2 * MIB], 0x22));
}

fn takeover_fences_only_the_writer(kit: &Kit) {
    let t = sr("krbd", None);
    let v = t.create_volume("taken", 8 << 20);
    let uri = uri_with_policy(&v, "krbd");
    let snap = t.call("Volume.snapshot", json!({"key": v["key"]})).ok();
    let snap_uri = uri_with_policy(&snap, "krbd");
    // A: the writer, and a read-only user of a snapshot (another client, same host).
    let dev_a = device(kit.a.dp("Datapath.attach", &uri, "1").ok());
    kit.a.dp("Datapath.activate", &uri, "1").ok();
    let snap_dev = device(kit.a.dp("Datapath.attach", &snap_uri, "9").ok());
    kit.a.dp("Datapath.activate_readonly", &snap_uri, "9").ok();
    let log = kit.a.guest.dir.join("writer.log");
    let log_text = log.display();
    // A writes without pause (0xaa over the first MiB, 64 KiB at a time), until a write fails.
    kit.a
        .sh(&format!(
            "setsid bash -c 'i=0; while [ -b {dev_a} ] && head -c 65536 /dev/zero | tr \"\\000\" \"\\252\" | dd of={dev_a} bs=64K seek=$((i % 16)) oflag=direct status=none conv=notrunc; do i=$((i+1)); echo $i > {log_text}.n; done; echo failed >> {log_text}' >/dev/null 2>&1 &"
        ))
        .ok();
    assert!(
        cephrbd_tests::wait_until(Duration::from_secs(60), || Path::new(&format!("{}.n", log.display())).exists()),
        "A's writer never wrote"
    );
    // B takes over without A deactivating (A "hangs").
    let dev_b = device(kit.b.dp("Datapath.attach", &uri, "2").ok());
    let activated = kit.b.dp("Datapath.activate", &uri, "2");
    activated.ok();
    assert!(activated.stderr.contains("fenced"), "B fenced nobody: {}", activated.stderr);
    kit.b.write(&dev_b, 0, MIB, 0xbb).ok();
    assert!(
        cephrbd_tests::wait_until(Duration::from_secs(120), || std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("failed"))),
        "A kept writing after B's activate"
    );
    assert!(kit.a.holds(&snap_dev, 0, MIB, 0), "the read-only user on A was fenced too");
    assert!(all(&export(&t, &v)[..MIB], 0xbb), "a write of A landed after B's");
    // A's detach still succeeds and leaves no mapping of the writer.
    kit.a.dp("Datapath.detach", &uri, "1").ok();
    kit.a.dp("Datapath.deactivate", &snap_uri, "9").ok();
    kit.a.dp("Datapath.detach", &snap_uri, "9").ok();
    assert!(!kit.a.mappings().lines().any(|l| format!("/dev/rbd{l}") == dev_a), "A's fenced mapping is left");
    kit.b.dp("Datapath.deactivate", &uri, "2").ok();
    kit.b.dp("Datapath.detach", &uri, "2").ok();
}

fn racing_activations(kit: &Kit) {
    let t = sr("krbd", None);
    for round in 0..3 {
        let v = t.create_volume("raced", 4 << 20);
        let uri = uri_with_policy(&v, "krbd");
        let devs =
            [device(kit.a.dp("Datapath.attach", &uri, "1").ok()), device(kit.b.dp("Datapath.attach", &uri, "1").ok())];
        let answers: Vec<Answer> = std::thread::scope(|s| {
            let calls = [&kit.a, &kit.b].map(|h| {
                let uri = uri.clone();
                s.spawn(move || h.dp("Datapath.activate", &uri, "1"))
            });
            calls.into_iter().map(|c| c.join().expect("activate")).collect()
        });
        let statuses: Vec<String> =
            answers.iter().map(|a| if a.status == 0 { "ok".to_owned() } else { a.value.to_string() }).collect();
        // Overlapping calls: one wins the writer lock, the other is refused. Calls that happen
        // to run one after the other: the second takes over (it cannot tell a racing host
        // from a hung one) and fences the first. Either way one device accepts writes.
        let won = answers.iter().filter(|a| a.status == 0).count();
        assert!(won >= 1, "round {round}: no activation succeeded: {statuses:?}");
        if won == 2 {
            assert!(answers.iter().any(|a| a.stderr.contains("fenced")), "round {round}: two writers, nobody fenced");
        }
        for loser in answers.iter().filter(|a| a.status != 0) {
            assert_eq!(loser.error().0, "Volume_activated_elsewhere", "round {round}: {statuses:?}");
        }
        let writers: Vec<bool> = [(&kit.a, &devs[0]), (&kit.b, &devs[1])]
            .iter()
            .map(|(h, d)| h.write(d, 0, 65536, 0x7e).status == 0)
            .collect();
        assert_eq!(writers.iter().filter(|w| **w).count(), 1, "round {round}: writers {writers:?} after {statuses:?}");
        for h in [&kit.a, &kit.b] {
            h.dp("Datapath.detach", &uri, "1");
        }
    }
}

/// Kills `method` after each of its Ceph and kernel commands in turn (the fault-injection
/// hook of the test build), runs `SR.attach` (the reaper) and detaches: after every crash
/// the host is left with no mapping and no state, and the volume then still goes through a
/// whole attach, activate, write, deactivate, detach. Returns how many crashes it made.
fn crash_each_step(host: &Host, t: &TestSr, method: &str) -> usize {
    let v = t.create_volume("crashed", 4 << 20);
    let uri = uri_with_policy(&v, "krbd");
    let image = format!("v-{}", v["key"].as_str().expect("key"));
    let clean = |when: &str| {
        let left = host.sh(&format!(
            "rbd device list 2>&1 | grep -- {image}; ls /run/cephrbd/dp 2>/dev/null | grep -- {}",
            &image[2..]
        ));
        assert!(left.stdout.trim().is_empty(), "{method}, {when}: left on the host: {}", left.stdout);
    };
    let mut crashes = 0;
    for n in 1..=12 {
        if method != "Datapath.attach" {
            host.dp("Datapath.attach", &uri, "3").ok();
        }
        if method == "Datapath.deactivate" || method == "Datapath.detach" {
            host.dp("Datapath.activate", &uri, "3").ok();
        }
        let out = host.call_with(method, json!({"uri": uri, "domain": "3"}), &format!("CEPHRBD_CRASH_AFTER={n}"));
        host.call("SR.attach", json!({"configuration": t.config})).ok();
        host.dp("Datapath.detach", &uri, "3").ok();
        clean(&format!("after a crash at command {n}, SR.attach and detach"));
        if out.status == 0 {
            break;
        }
        assert!(out.value.is_null(), "{method} failed instead of crashing: {}", out.value);
        crashes += 1;
    }
    let dev = device(host.dp("Datapath.attach", &uri, "4").ok());
    host.dp("Datapath.activate", &uri, "4").ok();
    host.write(&dev, 0, MIB, 0x5c).ok();
    host.dp("Datapath.deactivate", &uri, "4").ok();
    host.dp("Datapath.detach", &uri, "4").ok();
    clean("after the lifecycle that followed the crashes");
    assert!(all(&export(t, &v)[..MIB], 0x5c), "{method}: the write after the crashes did not land");
    crashes
}

fn crash_then_reaper(kit: &Kit) {
    let t = sr("krbd", None);
    // Two hosts, two methods each, in parallel (each guest has one emulated CPU).
    let crashes: Vec<(&str, usize)> = std::thread::scope(|s| {
        let plans =
            [(&kit.a, ["Datapath.attach", "Datapath.deactivate"]), (&kit.b, ["Datapath.activate", "Datapath.detach"])];
        let runs = plans.map(|(host, methods)| {
            let t = &t;
            s.spawn(move || methods.map(|m| (m, crash_each_step(host, t, m))))
        });
        runs.into_iter().flat_map(|r| r.join().expect("crash run")).collect()
    });
    eprintln!("crashes made, by method: {crashes:?}");
    assert!(crashes.iter().all(|(_, n)| *n > 0), "a method never crashed (no Ceph or kernel command?): {crashes:?}");
}

fn host_without_modules(kit: &Kit) {
    let t = sr("krbd", None);
    let v = t.create_volume("nomodule", 4 << 20);
    let (name, message) = kit.bare.dp("Datapath.attach", &uri_with_policy(&v, "krbd"), "1").error();
    assert_eq!(name, "Datapath_unavailable", "{message}");
    assert!(message.contains("rbd kernel module") && message.contains("modprobe rbd"), "{message}");
    let (name, message) = kit.bare.dp("Datapath.attach", &uri_with_policy(&v, "nbd"), "1").error();
    assert_eq!(name, "Datapath_unavailable", "{message}");
    assert!(message.contains("nbd kernel module") && message.contains("modprobe nbd"), "{message}");
    let state = kit.bare.sh("ls -A /run/cephrbd/dp 2>/dev/null || true").stdout;
    assert!(state.trim().is_empty(), "a failed attach left state: {state}");
    // auto passes over both to the userspace daemon (this machine has qemu-storage-daemon;
    // a stock XCP-ng host has not, and then auto's error lists all three reasons).
    let uri = uri_with_policy(&v, "auto");
    let backend = kit.bare.dp("Datapath.attach", &uri, "1").ok().clone();
    assert_eq!(backend["implementations"][0][1]["backend_type"], "qdisk", "{backend}");
    kit.bare.dp("Datapath.detach", &uri, "1").ok();
}

fn hung_step(kit: &Kit) {
    let at = Instant::now();
    let out = kit.a.guest.sh("echo started; sleep 600", Duration::from_secs(3));
    assert_eq!(out.status, 124, "{out:?}");
    assert!(out.stdout.contains("started") && out.stderr.contains("killed after 3 s; kernel log:"), "{out:?}");
    assert!(at.elapsed() < Duration::from_secs(30), "the guest took {:?} to kill a 3 s step", at.elapsed());
    assert_eq!(kit.a.sh("echo alive").ok().trim(), "alive", "the guest serves the next step");
}

fn hung_guest(kit: &Kit) {
    let at = Instant::now();
    let hung = panic::catch_unwind(AssertUnwindSafe(|| {
        kit.bare.guest.sh("pkill -STOP -f kernel-lab/agent.sh", Duration::from_secs(2))
    }));
    let message = hung.expect_err("a guest that stopped answering went unnoticed");
    let message = message.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("hangs or stopped"), "{message}");
    assert!(message.contains("serial console"), "no console log in: {message}");
    assert!(at.elapsed() < Duration::from_secs(90), "stopping a hung guest took {:?}", at.elapsed());
}
