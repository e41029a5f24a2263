//! Benchmark of the userspace datapath: fio through the NBD export that
//! `Datapath.attach`/`activate` set up, against `rbd bench` (librbd directly, cache off like
//! the export's `cache.direct=on`) on the same image in the same run. Prints a markdown
//! table with the ratio and writes it to `bench/datapath.md`. Run with `scripts/bench`.

use std::process::Command;
use std::time::Instant;

use cephrbd_tests::{nbd_url, scratch_dir, uri_with_scheme, Kind, Plugin, TestSr};
use serde_json::{json, Value};

/// One workload, run the same way through both paths.
struct Workload {
    name: &'static str,
    fio_rw: &'static str,
    rbd_type: &'static str,
    pattern: &'static str,
    block: u64,
    depth: u32,
    total: u64,
}

const MIB: u64 = 1 << 20;

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "seq write 1 MiB QD16",
        fio_rw: "write",
        rbd_type: "write",
        pattern: "seq",
        block: MIB,
        depth: 16,
        total: 256 * MIB,
    },
    Workload {
        name: "seq read 1 MiB QD16",
        fio_rw: "read",
        rbd_type: "read",
        pattern: "seq",
        block: MIB,
        depth: 16,
        total: 256 * MIB,
    },
    Workload {
        name: "rand write 4 KiB QD32",
        fio_rw: "randwrite",
        rbd_type: "write",
        pattern: "rand",
        block: 4096,
        depth: 32,
        total: 64 * MIB,
    },
    Workload {
        name: "rand read 4 KiB QD32",
        fio_rw: "randread",
        rbd_type: "read",
        pattern: "rand",
        block: 4096,
        depth: 32,
        total: 64 * MIB,
    },
    Workload {
        name: "rand write 4 KiB QD1",
        fio_rw: "randwrite",
        rbd_type: "write",
        pattern: "rand",
        block: 4096,
        depth: 1,
        total: 8 * MIB,
    },
    Workload {
        name: "rand read 4 KiB QD1",
        fio_rw: "randread",
        rbd_type: "read",
        pattern: "rand",
        block: 4096,
        depth: 1,
        total: 16 * MIB,
    },
];

const SIZE: u64 = 256 * MIB;

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run benchmark tool");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// IOPS of fio through the export.
fn fio(url: &str, w: &Workload) -> f64 {
    let text = output(Command::new("fio").args([
        "--name=bench",
        "--ioengine=nbd",
        &format!("--uri={url}"),
        &format!("--rw={}", w.fio_rw),
        &format!("--bs={}", w.block),
        &format!("--iodepth={}", w.depth),
        &format!("--size={SIZE}"),
        &format!("--io_size={}", w.total),
        "--output-format=json",
    ]));
    // fio's nbd engine prints a line before the JSON.
    let json: Value = serde_json::from_str(&text[text.find('{').expect("fio json")..]).expect("fio json");
    let job = &json["jobs"][0];
    job["read"]["iops"].as_f64().unwrap_or(0.0) + job["write"]["iops"].as_f64().unwrap_or(0.0)
}

/// IOPS of `rbd bench` on the image.
fn rbd_bench(t: &TestSr, spec: &str, w: &Workload) -> f64 {
    let text = t.lab.rbd(&[
        "bench",
        "--rbd-cache=false",
        "--io-type",
        w.rbd_type,
        "--io-size",
        &w.block.to_string(),
        "--io-threads",
        &w.depth.to_string(),
        "--io-pattern",
        w.pattern,
        "--io-total",
        &w.total.to_string(),
        spec,
    ]);
    // Last line: "elapsed: 1   ops: 16384   ops/sec: 20686.9   bytes/sec: 81 MiB/s"
    let last = text.lines().rev().find(|l| l.contains("ops/sec:")).expect("rbd bench summary");
    let words: Vec<&str> = last.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "ops/sec:").expect("ops/sec");
    words[at + 1].parse().expect("number")
}

fn tool_version(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

fn main() {
    let started = Instant::now();
    let t = TestSr::create();
    let run = scratch_dir("bench");
    let dp = Plugin::new(Kind::Datapath).with_env("CEPHRBD_RUN_DIR", run.display().to_string());
    let size = i64::try_from(SIZE).expect("fits");
    let v = t.call("Volume.create", json!({"name": "bench", "description": "", "size": size, "sharable": false})).ok();
    let uri = uri_with_scheme(&v, "cephrbd+qsd");
    let image = uri.split('?').next().and_then(|p| p.rsplit('/').next()).expect("image").to_owned();
    let spec = format!("{}/{}/{image}", t.lab.pool, t.namespace);
    // Fill the image first so reads touch real objects on both paths.
    t.lab.rbd(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "4M",
        "--io-total",
        &SIZE.to_string(),
        "--io-pattern",
        "seq",
        &spec,
    ]);
    let args = json!({"uri": uri, "domain": "0"});
    let backend = dp.call("Datapath.attach", args.clone()).ok();
    let url = nbd_url(&backend);

    let mut table = String::from(
        "| workload | NBD export (qemu-storage-daemon) | rbd bench (librbd, same image) | ratio |\n|---|---:|---:|---:|\n",
    );
    let mut ratios = Vec::new();
    for w in WORKLOADS {
        dp.call("Datapath.activate", args.clone()).ok();
        let ours = fio(&url, w);
        dp.call("Datapath.deactivate", args.clone()).ok();
        let floor = rbd_bench(&t, &spec, w);
        let ratio = ours / floor;
        ratios.push(ratio);
        let unit = |iops: f64| {
            if w.block >= MIB {
                format!("{:.0} MiB/s", iops * w.block as f64 / MIB as f64)
            } else {
                format!("{iops:.0} IOPS")
            }
        };
        let line = format!("| {} | {} | {} | **{ratio:.2}x** |\n", w.name, unit(ours), unit(floor));
        print!("{line}");
        table.push_str(&line);
    }
    dp.call("Datapath.detach", args).ok();
    let _ = std::fs::remove_dir_all(&run);

    let report = format!(
        "# Userspace datapath benchmark\n\n\
         Produced by `scripts/bench` ({}), {}.\n\n\
         Machine: {} CPUs, {}; single-node test cluster (memstore OSD, 127.0.0.1).\n\
         Tools: {}; {}; {}.\n\n\
         Each workload moves the same number of bytes over a {} MiB volume that was filled first.\n\
         Ours: fio's nbd engine through the export made by `Datapath.attach` + `Datapath.activate`.\n\
         Floor: `rbd bench --rbd-cache=false` on the same image, run while our daemon is deactivated.\n\
         Ratio = ours / floor (1.00 = as fast as librbd itself).\n\n{table}\n\
         Lowest ratio: {:.2}x. Whole run: {:.0} s.\n",
        env!("CARGO_PKG_VERSION"),
        tool_version("date", "-u"),
        std::thread::available_parallelism().map_or(0, usize::from),
        tool_version("uname", "-sr"),
        tool_version("rbd", "--version"),
        tool_version("qemu-storage-daemon", "--version"),
        tool_version("fio", "--version"),
        SIZE / MIB,
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        started.elapsed().as_secs_f64(),
    );
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/datapath.md");
    std::fs::create_dir_all(path.parent().expect("dir")).expect("bench dir");
    std::fs::write(&path, report).expect("write report");
    println!("written to {}", path.display());
}
