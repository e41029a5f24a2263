//! The main job: a whole SR and volume lifecycle on the local test cluster, driven
//! through the real plugin executables exactly as xapi-storage-script drives them, and
//! printed for a person. Run it with `scripts/demo` (which sets everything up first).

use cephrbd_tests::{unique, Kind, Lab, Outcome, Plugin};
use serde_json::{json, Value};

const GIB: i64 = 1 << 30;

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
    sr: String,
}

impl Demo {
    /// Runs one call, prints one line, returns the result (exits on failure).
    fn step(&self, method: &str, args: Value, what: impl FnOnce(&Value) -> String) -> Value {
        let mut args = args;
        if !self.sr.is_empty() && args.get("sr").is_none() && args.get("configuration").is_none() {
            args["sr"] = json!(self.sr);
        }
        let out: Outcome = self.plugin.call(method, args);
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
}

fn main() {
    let lab = Lab::get();
    println!("cephrbd: the SMAPIv3 volume plugin against the test cluster ({}, pool {})", lab.conf.display(), lab.pool);
    println!(
        "Each line is one plugin process, run as xapi-storage-script runs it (<Method> --json, arguments on stdin).\n"
    );
    let mut demo = Demo { plugin: Plugin::new(Kind::Volume), sr: String::new() };

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

    println!("\nA VM's disk (VDI create, snapshot, clone, revert, resize):");
    let disk = demo.step(
        "Volume.create",
        json!({"name": "vm1 disk", "description": "", "size": 10 * GIB, "sharable": false}),
        |v| format!("{} {} thin, key {}", v["name"].as_str().unwrap_or(""), size(&v["virtual_size"]), short(&v["key"])),
    );
    demo.step("Volume.set", json!({"key": disk["key"], "k": "vdi-type", "v": "user"}), |_| {
        "vdi-type = user".to_owned()
    });
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
