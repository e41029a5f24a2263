//! The main job: a whole SR, volume and disk lifecycle on the local test cluster, driven
//! through the real plugin executables exactly as xapi-storage-script drives them, and
//! printed for a person: the VM's disk is plugged through the datapath plugin, written
//! with qemu-io, and read back, byte-checked, through a snapshot and a clone. Run it with
//! `scripts/demo` (which sets everything up first).

use std::process::Command;
use std::time::Instant;

use cephrbd_tests::{nbd_url, unique, Kind, Lab, Outcome, Plugin};
use serde_json::{json, Value};

const GIB: i64 = 1 << 30;

/// What the "VM" writes: (pattern byte, offset, length) for qemu-io.
const WRITES: [(u8, &str, &str); 2] = [(0x5a, "0", "4M"), (0xa5, "1G", "1M")];

fn size(bytes: &Value) -> String {
    let b = bytes.as_i64().unwrap_or(0) as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

fn short(key: &Value) -> String {
    key.as_str().unwrap_or_default().chars().take(8).collect()
}

struct Demo {
    plugin: Plugin,
    datapath: Plugin,
    sr: String,
}

/// What a VM's backend opens: the block device, or the NBD export (`nbd+unix://`).
fn target(backend: &Value) -> (String, String) {
    let list = backend["implementations"].as_array().cloned().unwrap_or_default();
    if let Some(dev) = list.iter().find(|i| i[0] == "BlockDevice").and_then(|i| i[1]["path"].as_str()) {
        return (dev.to_owned(), format!("block device {dev} (kernel)"));
    }
    let url = nbd_url(backend);
    let kind = list.first().map(|i| i[1]["backend_type"].as_str().unwrap_or("").to_owned()).unwrap_or_default();
    (url, format!("NBD export for {kind} (qemu-storage-daemon)"))
}

impl Demo {
    /// Runs one call, prints one line, returns the result (exits on failure).
    fn step(&self, method: &str, args: Value, what: impl FnOnce(&Value) -> String) -> Value {
        let mut args = args;
        if !self.sr.is_empty() && args.get("sr").is_none() && args.get("configuration").is_none() {
            args["sr"] = json!(self.sr);
        }
        let plugin = if method.starts_with("Datapath.") { &self.datapath } else { &self.plugin };
        let out: Outcome = plugin.call(method, args);
        let ms = out.elapsed.as_secs_f64() * 1e3;
        if out.status != 0 {
            println!("  {method:<22} FAILED ({ms:.0} ms): {}", out.stdout.trim());
            eprintln!("{}", out.stderr);
            std::process::exit(1);
        }
        let value = out.value();
        println!("  {method:<22} {:<62} {ms:>5.0} ms", what(&value));
        value
    }

    /// Datapath.attach + activate (read-only for a snapshot), as a VBD plug does: what the
    /// VM's backend opens.
    fn plug(&self, volume: &Value, read_only: bool) -> String {
        let uri = volume["uri"][0].clone();
        let backend = self.step("Datapath.attach", json!({"uri": uri, "domain": "1"}), |b| target(b).1);
        let activate = if read_only { "Datapath.activate_readonly" } else { "Datapath.activate" };
        self.step(activate, json!({"uri": uri, "domain": "1"}), |_| {
            format!("{} open {} here", short(&volume["key"]), if read_only { "read-only" } else { "read-write" })
        });
        target(&backend).0
    }

    /// Datapath.deactivate + detach, as a VBD unplug does.
    fn unplug(&self, volume: &Value) {
        let uri = volume["uri"][0].clone();
        self.step("Datapath.deactivate", json!({"uri": uri, "domain": "1"}), |_| "closed for writing".to_owned());
        self.step("Datapath.detach", json!({"uri": uri, "domain": "1"}), |_| "nothing left on this host".to_owned());
    }

    /// What the VM does through `target`: qemu-io commands ("write" or "read", which
    /// checks the pattern), one line.
    fn io(&self, target: &str, verb: &str) {
        let started = Instant::now();
        let mut cmd = Command::new("timeout");
        cmd.args(["120", "qemu-io", "-f", "raw"]);
        if verb == "read" {
            cmd.arg("-r");
        }
        for (byte, offset, length) in WRITES {
            cmd.args(["-c", &format!("{verb} -P {byte:#04x} {offset} {length}")]);
        }
        if verb == "write" {
            cmd.args(["-c", "flush"]);
        }
        let out = cmd.arg(target).output().unwrap_or_else(|e| {
            println!("  qemu-io: cannot run: {e}");
            std::process::exit(1)
        });
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let what: Vec<String> = WRITES.iter().map(|(b, o, l)| format!("{l} of {b:#04x} at {o}")).collect();
        if !out.status.success() || text.contains("failed") || text.contains("Pattern verification") {
            println!("  {:<22} FAILED ({ms:.0} ms): {}", format!("VM {verb}s"), text.trim());
            std::process::exit(1);
        }
        let line = if verb == "write" {
            format!("{}, flushed", what.join(", "))
        } else {
            format!("{}: every byte as written", what.join(", "))
        };
        println!("  {:<22} {line:<62} {ms:>5.0} ms", format!("VM {verb}s (qemu-io)"));
    }
}

fn main() {
    let lab = Lab::get();
    println!("cephrbd: the SMAPIv3 volume plugin against the test cluster ({}, pool {})", lab.conf.display(), lab.pool);
    println!(
        "Each line is one plugin process, run as xapi-storage-script runs it (<Method> --json, arguments on stdin).\n"
    );
    let mut demo = Demo { plugin: Plugin::new(Kind::Volume), datapath: Plugin::new(Kind::Datapath), sr: String::new() };

    println!("Plugin and SR (xe sr-create, PBD plug):");
    demo.step("Plugin.Query", json!({}), |q| {
        format!(
            "{} {} (API {}), {} features",
            q["plugin"].as_str().unwrap_or(""),
            q["version"].as_str().unwrap_or(""),
            q["required_api_version"].as_str().unwrap_or(""),
            q["features"].as_array().map_or(0, Vec::len)
        )
    });
    let mut config = lab.device_config();
    config["namespace"] = json!(unique("demo"));
    let uuid = uuid::Uuid::new_v4().to_string();
    let config = demo.step(
        "SR.create",
        json!({"uuid": uuid, "configuration": config, "name": "Ceph demo SR", "description": "made by scripts/demo"}),
        |c| format!("pool {}, namespace {}", c["pool"].as_str().unwrap_or(""), c["namespace"].as_str().unwrap_or("")),
    );
    let sr = demo.step("SR.attach", json!({"configuration": config}), |s| {
        format!("SR string {}…", &s.as_str().unwrap_or("")[..40.min(s.as_str().unwrap_or("").len())])
    });
    demo.sr = sr.as_str().unwrap_or_default().to_owned();
    demo.step("SR.stat", json!({}), |s| {
        format!(
            "{:?}: total {}, free {}",
            s["health"][0].as_str().unwrap_or(""),
            size(&s["total_space"]),
            size(&s["free_space"])
        )
    });

    println!("\nA VM's disk (VDI create):");
    let disk = demo.step(
        "Volume.create",
        json!({"name": "vm1 disk", "description": "", "size": 10 * GIB, "sharable": false}),
        |v| format!("{} {} thin, key {}", v["name"].as_str().unwrap_or(""), size(&v["virtual_size"]), short(&v["key"])),
    );
    demo.step("Volume.set", json!({"key": disk["key"], "k": "vdi-type", "v": "user"}), |_| {
        "vdi-type = user".to_owned()
    });

    println!("\nThe VM runs on this host (VBD plug: the datapath plugin; datapath=auto picks the mode):");
    let target = demo.plug(&disk, false);
    demo.io(&target, "write");
    demo.unplug(&disk);

    println!("\nSnapshot and clones (O(1): RBD snapshots and copy-on-write clones):");
    let snap = demo.step("Volume.snapshot", json!({"key": disk["key"]}), |v| {
        format!("read-only snapshot {} of {}", short(&v["key"]), short(&disk["key"]))
    });
    demo.step("Volume.set", json!({"key": snap["key"], "k": "is_a_snapshot", "v": "true"}), |_| {
        "is_a_snapshot = true".to_owned()
    });
    let clone = demo.step("Volume.clone", json!({"key": snap["key"]}), |v| {
        format!("writable copy-on-write clone {} of the snapshot", short(&v["key"]))
    });
    let fast = demo.step("Volume.clone", json!({"key": disk["key"]}), |v| {
        format!("fast clone {} of the running disk", short(&v["key"]))
    });
    demo.step("Volume.resize", json!({"key": clone["key"], "new_size": 20 * GIB}), |_| {
        "clone grown to 20 GiB".to_owned()
    });
    demo.step("Volume.stat", json!({"key": clone["key"]}), |v| {
        format!("{} is now {}", short(&v["key"]), size(&v["virtual_size"]))
    });

    println!("\nThe snapshot and the clone carry the VM's bytes (read back through the datapath):");
    let target = demo.plug(&snap, true);
    demo.io(&target, "read");
    demo.unplug(&snap);
    let target = demo.plug(&clone, false);
    demo.io(&target, "read");
    demo.unplug(&clone);

    println!("\nsr-scan (SR.ls):");
    let all = demo.step("SR.ls", json!({}), |l| format!("{} volumes", l.as_array().map_or(0, Vec::len)));
    for v in all.as_array().into_iter().flatten() {
        println!(
            "      {}  {:<10} {:>9}  {}  keys {}",
            short(&v["key"]),
            v["name"].as_str().unwrap_or(""),
            size(&v["virtual_size"]),
            if v["read_write"] == json!(true) { "rw" } else { "ro" },
            v["keys"]
        );
    }

    println!("\nClean-up (the original goes first: it still has dependants, so it only vanishes):");
    for v in [&disk, &snap, &clone, &fast] {
        demo.step("Volume.destroy", json!({"key": v["key"]}), |_| format!("{} destroyed", short(&v["key"])));
    }
    demo.step("SR.destroy", json!({}), |_| "namespace and header removed".to_owned());
    let left = lab.rbd(&["namespace", "ls", "--format", "json", &lab.pool]);
    let gone = !left.contains(config["namespace"].as_str().unwrap_or("?"));
    println!("\nLeft in Ceph: {}", if gone { "nothing (namespace gone)" } else { "the namespace is still there!" });
    if !gone {
        std::process::exit(1);
    }
}
