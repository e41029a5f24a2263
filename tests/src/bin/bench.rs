//! The benchmarks (`scripts/bench`): every SMAPIv3 operation beside its floor, how cost
//! grows with the number of volumes, and the userspace datapath beside fio's rbd engine.
//! Writes BENCHMARKS.md at the repository root.
//!
//! - **Operations**: each is run as xapi runs it (one plugin process per call, through the
//!   harness) at least 20 times; its floor is the bare `rbd`/`ceph` commands the operation
//!   fundamentally needs, run from this process the same number of times, interleaved.
//!   The headline is median(ours) / median(floor). With `CEPHRBD_LOG=debug` the runner
//!   logs every command it runs with its duration: that gives Ceph commands per call and
//!   the time spent outside Ceph commands.
//! - **Scaling**: SR.ls, SR.stat and Volume.stat with 10, 100 and 1000 volumes.
//! - **Datapath**: fio through the NBD export that Datapath.attach + activate set up,
//!   against fio's rbd engine (librbd) in the same run, on a twin image in the pool's
//!   default namespace (the engine cannot address a RADOS namespace; the driver refuses
//!   the default one); the datapath code path is the production one.
//! - **Datapath modes**: kernel RBD, rbd-nbd and qemu-storage-daemon side by side on the
//!   same image in one kernel-lab guest, beside fio's rbd engine there on the twin (ratios only: the
//!   guest is emulated).
//! - **Changed block tracking**: `Volume.list_changed_blocks` at 1, 10, 100 GiB and 2 TiB
//!   of virtual size, with and without fast-diff, beside the one `rbd diff` it runs.
//!   `CEPHRBD_BENCH_ONLY=cbt` measures only this section and rewrites only it in
//!   BENCHMARKS.md.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use cephrbd_tests::{nbd_url, scratch_dir, uri_with_policy, Kind, Lab, Plugin, TestSr};
use serde_json::{json, Value};

const RUNS: usize = 20;

/// Why the targets this design misses are missed, and what would close each gap. Kept
/// beside the code whose cost it explains; the numbers above it are measured each run.
const WHY: &str = "\
**Why the misses, and what would close them.**\n\n\
- *Operations that read the SR's records first* (snapshot, clone, resize, destroy) pay \
one `rbd image-meta` read (~35 ms here) that their floor does not; destroy also looks for \
watchers and for a writer lock left by a crashed host, and removes the volume's other keys. \
Volume.set and its kin run three `rbd` processes at once (the SR's record, the volume's \
record, the write: one process each, since `rbd image-meta get` reads one key) on 2 CPUs \
that also run the cluster. Closing the rest: keep images named after their keys (they \
are) and act first, reading the records only on the error path (resize can rely on `rbd \
resize` refusing to shrink), or keep the process alive (a per-host daemon holding a librados connection: one `rbd` command \
costs ~30 ms of process start and monitor handshake, the same call through librados \
under 1 ms, docs/ceph-lab.md, Control-path latency; librados also reads several keys in \
one request).\n\
- *SR.ls (and Volume.stat) at 1000 volumes* run one command whatever the count, but that \
command, `rbd image-meta list` of the header, grows with the ~3 keys per volume: librbd \
pages through the header's omap and prints every key as JSON (the floor column of the \
scaling table, run bare). What is ours on top (\"SR.ls vs floor\") is parsing and \
decoding those keys and printing ~500 KB of answer at 1000 volumes: a few milliseconds \
at 100 volumes, 10 to 20 at 1000. Closing it: one key per volume \
(fold name, description and `Volume.set` keys into the record, at the price of a \
read-modify-write under a lock for `Volume.set`), or reading the omap in process \
through librados.\n\
- *The datapath cycle* is four processes where the floor is one daemon start, plus the \
writer lock: at activate `rados lock info` (is another host's writer to fence?), two `rbd \
status` around the daemon's start (its Ceph client goes in the lock's cookie) and `rados \
lock get`; at deactivate `lock info`, `lock break` and the lock object's removal. Cheaper \
would need librados in process.\n\
- *The userspace datapath* adds one copy through the NBD unix socket and qemu's block layer \
on a 2-CPU machine that also runs the OSD and fio: large sequential transfers suffer most. \
An `iothread` for the export did not help (measured by hand: 3664 vs 4249 IOPS). What \
would: the kernel datapath (krbd) on real hosts, which has no userspace hop, or spreading \
the export over several NBD connections and iothreads on hosts with more cores (not \
measured here).\n";
const MIB: u64 = 1 << 20;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median and 90th percentile of samples (ms): nearest rank.
fn stats(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |percent: usize| samples[((samples.len() - 1) * percent + 50) / 100];
    (at(50), at(90))
}

/// What the runner's debug log says about one call.
#[derive(Default, Clone)]
struct CallLog {
    /// When each command ran: (start, end) in ms of the day, from the log line's
    /// timestamp (its end) and its `elapsed_ms`.
    commands: Vec<(f64, f64)>,
}

impl CallLog {
    /// Time during which at least one command ran: the union of their intervals, so
    /// commands run in parallel (SR.stat, Volume.create's SR check beside its create)
    /// count once, and sequential ones each.
    fn ceph_ms(&self) -> f64 {
        let mut spans = self.commands.clone();
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mut total, mut reach) = (0.0, f64::NEG_INFINITY);
        for (start, end) in spans {
            total += (end - start.max(reach)).max(0.0);
            reach = reach.max(end);
        }
        total
    }
}

/// Milliseconds since midnight of a log line's leading RFC 3339 timestamp
/// (`2026-11-30T13:48:34.294139Z …`).
fn log_time_ms(line: &str) -> Option<f64> {
    let time = line.split_whitespace().next()?.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let (h, m, s) =
        (parts.next()?.parse::<f64>().ok()?, parts.next()?.parse::<f64>().ok()?, parts.next()?.parse::<f64>().ok()?);
    Some(((h * 60.0 + m) * 60.0 + s) * 1e3)
}

fn parse_log(stderr: &str) -> CallLog {
    let mut log = CallLog::default();
    for line in stderr.lines().filter(|l| l.contains("exec done")) {
        let elapsed = line.split("elapsed_ms=").nth(1).and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok());
        if let (Some(end), Some(elapsed)) = (log_time_ms(line), elapsed) {
            log.commands.push((end - elapsed, end));
        }
    }
    log
}

struct Row {
    name: String,
    ours: (f64, f64),
    floor: (f64, f64),
    floor_what: String,
    commands: usize,
    non_ceph: f64,
}

/// Times `op` (a plugin call) and `floor` (bare commands) RUNS times each, interleaved.
/// `op` returns the call's stderr (debug log).
fn measure(name: &str, floor_what: &str, op: impl FnMut(usize) -> String, floor: impl FnMut(usize)) -> Row {
    measure_runs(RUNS, name, floor_what, op, floor)
}

/// [`measure`] with `runs` runs of each.
fn measure_runs(
    runs: usize,
    name: &str,
    floor_what: &str,
    mut op: impl FnMut(usize) -> String,
    mut floor: impl FnMut(usize),
) -> Row {
    let (mut ours, mut bare, mut non_ceph) = (Vec::new(), Vec::new(), Vec::new());
    let mut commands = 0;
    for i in 0..runs {
        let started = Instant::now();
        let log = parse_log(&op(i));
        let wall = ms(started.elapsed());
        ours.push(wall);
        non_ceph.push(wall - log.ceph_ms());
        commands = commands.max(log.commands.len());
        let started = Instant::now();
        floor(i);
        bare.push(ms(started.elapsed()));
    }
    let row = Row {
        name: name.to_owned(),
        ours: stats(&mut ours),
        floor: stats(&mut bare),
        floor_what: floor_what.to_owned(),
        commands,
        non_ceph: stats(&mut non_ceph).0,
    };
    eprintln!("  {name}: {:.1} ms vs {:.1} ms", row.ours.0, row.floor.0);
    row
}

fn image_of(v: &Value) -> String {
    let uri = v["uri"][0].as_str().unwrap_or_default();
    let leaf = uri.split('?').next().and_then(|p| p.rsplit('/').next()).unwrap_or_default();
    leaf.split("%40").next().unwrap_or_default().to_owned()
}

/// What the targets are judged on.
#[derive(Default)]
struct Summary {
    /// The largest time outside Ceph commands per call (ms), and where.
    non_ceph: (f64, String),
    /// Operations above 1.2x their floor: (name, ratio).
    slow: Vec<(String, f64)>,
    /// SR.ls at 1000 volumes over SR.ls at 10.
    ls_growth: f64,
    /// The lowest datapath ratio.
    datapath: f64,
}

fn control_path(t: &TestSr, debug: &Plugin, table: &mut String, summary: &mut Summary) {
    let lab = &t.lab;
    let spec = |image: &str| format!("{}/{}/{image}", lab.pool, t.namespace);
    let call = |method: &str, args: Value| {
        let mut args = args;
        args["sr"] = json!(t.sr);
        let out = debug.call(method, args);
        assert_eq!(out.status, 0, "{method}: {}", out.stdout);
        out
    };
    let header = spec("cephrbd-sr");
    let mut rows = Vec::new();
    let query = measure(
        "Plugin.Query (no Ceph: process start to answer)",
        "—",
        |_| call("Plugin.Query", json!({})).stderr,
        |_| {},
    );
    rows.push(query);
    rows.push(measure(
        "SR.stat",
        "`ceph df detail`",
        |_| call("SR.stat", json!({})).stderr,
        |_| {
            lab.ceph(&["df", "detail", "--format", "json"]);
        },
    ));
    rows.push(measure(
        "SR.ls",
        "`rbd image-meta list` (header)",
        |_| call("SR.ls", json!({})).stderr,
        |_| {
            lab.rbd(&["image-meta", "list", "--format", "json", &header]);
        },
    ));
    let base =
        call("Volume.create", json!({"name": "bench", "description": "", "size": 64 * MIB, "sharable": false})).value();
    let key = base["key"].as_str().unwrap_or_default().to_owned();
    let mut created = Vec::new();
    rows.push(measure(
        "Volume.create",
        "`rbd create` + `rbd image-meta set`",
        |_| {
            let out =
                call("Volume.create", json!({"name": "c", "description": "", "size": 64 * MIB, "sharable": false}));
            created.push(out.value()["key"].as_str().unwrap_or_default().to_owned());
            out.stderr
        },
        |i| {
            let image = format!("floor-{i}");
            lab.rbd(&["create", "--size", "64M", "--image-feature", "layering,exclusive-lock", &spec(&image)]);
            lab.rbd(&["image-meta", "set", &header, &format!("floor.{i}"), "=x"]);
        },
    ));
    rows.push(measure(
        "Volume.stat",
        "`rbd image-meta list` (header)",
        |_| call("Volume.stat", json!({"key": key})).stderr,
        |_| {
            lab.rbd(&["image-meta", "list", "--format", "json", &header]);
        },
    ));
    rows.push(measure(
        "Volume.set",
        "`rbd image-meta set`",
        |i| call("Volume.set", json!({"key": key, "k": format!("k{i}"), "v": "v"})).stderr,
        |i| {
            lab.rbd(&["image-meta", "set", &header, &format!("floor.k{i}"), "=v"]);
        },
    ));
    let mut snaps = Vec::new();
    rows.push(measure(
        "Volume.snapshot",
        "`rbd snap create` + `rbd image-meta set`",
        |_| {
            let out = call("Volume.snapshot", json!({"key": key}));
            snaps.push(out.value()["key"].as_str().unwrap_or_default().to_owned());
            out.stderr
        },
        |i| {
            lab.rbd(&["snap", "create", "--no-progress", &format!("{}@fs{i}", spec("floor-0"))]);
            lab.rbd(&["image-meta", "set", &header, &format!("floor.s{i}"), "=x"]);
        },
    ));
    let snap_key = snaps[0].clone();
    let mut clones = Vec::new();
    rows.push(measure(
        "Volume.clone (of a snapshot)",
        "`rbd snap protect` + `rbd clone` + `rbd image-meta set`",
        |_| {
            let out = call("Volume.clone", json!({"key": snap_key}));
            clones.push(out.value()["key"].as_str().unwrap_or_default().to_owned());
            out.stderr
        },
        |i| {
            let snap = format!("{}@fs{i}", spec("floor-0"));
            lab.rbd(&["snap", "protect", &snap]);
            lab.rbd(&[
                "clone",
                "--image-feature",
                "layering,exclusive-lock",
                &snap,
                &spec(&format!("floor-clone-{i}")),
            ]);
            lab.rbd(&["image-meta", "set", &header, &format!("floor.c{i}"), "=x"]);
        },
    ));
    rows.push(measure(
        "Volume.resize",
        "`rbd resize` + `rbd image-meta set`",
        |i| call("Volume.resize", json!({"key": created[i], "new_size": 128 * MIB})).stderr,
        |i| {
            lab.rbd(&["resize", "--no-progress", "--size", "128M", &spec(&format!("floor-{i}"))]);
            lab.rbd(&["image-meta", "set", &header, &format!("floor.{i}"), "=y"]);
        },
    ));
    rows.push(measure(
        "Volume.destroy (a clone: its storage goes at once)",
        "`rbd rm` + `rbd image-meta remove`",
        |i| call("Volume.destroy", json!({"key": clones[i]})).stderr,
        |i| {
            lab.rbd(&["rm", "--no-progress", &spec(&format!("floor-clone-{i}"))]);
            lab.rbd(&["image-meta", "remove", &header, &format!("floor.c{i}")]);
        },
    ));
    // Userspace datapath cycle on one volume.
    let run = scratch_dir("bench-dp");
    let dp = Plugin::new(Kind::Datapath)
        .with_env("CEPHRBD_RUN_DIR", run.display().to_string())
        .with_env("CEPHRBD_LOG", "debug");
    let uri = uri_with_policy(&base, "qsd");
    let dp_args = json!({"uri": uri, "domain": "0"});
    let socket = run.join("floor.sock");
    let pidfile = run.join("floor.pid");
    let conf = lab.conf.display().to_string();
    let blockdev = format!(
        "driver=rbd,node-name=disk,pool={},namespace={},image={},conf={conf},user={},cache.direct=on",
        lab.pool,
        t.namespace,
        image_of(&base),
        lab.user
    );
    rows.push(measure(
        "attach + activate + deactivate + detach (qsd)",
        "`qemu-storage-daemon --daemonize` + SIGTERM",
        |_| {
            let mut log = String::new();
            for method in ["Datapath.attach", "Datapath.activate", "Datapath.deactivate", "Datapath.detach"] {
                let out = dp.call(method, dp_args.clone());
                assert_eq!(out.status, 0, "{method}: {}", out.stdout);
                log.push_str(&out.stderr);
            }
            log
        },
        |_| {
            let _ = std::fs::remove_file(&socket);
            let status = Command::new("qemu-storage-daemon")
                .env("CEPH_ARGS", format!("--keyring {}", lab.keyring.display()))
                .args(["--blockdev", &blockdev])
                .args(["--nbd-server", &format!("addr.type=unix,addr.path={}", socket.display())])
                .args(["--export", "type=nbd,id=e,node-name=disk,name=x,writable=on"])
                .args(["--pidfile", &pidfile.display().to_string(), "--daemonize"])
                .status()
                .expect("qsd");
            assert!(status.success());
            let pid = std::fs::read_to_string(&pidfile).expect("pid").trim().to_owned();
            let _ = Command::new("kill").arg(&pid).status();
            while std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
                && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        },
    ));
    let _ = std::fs::remove_dir_all(&run);

    table.push_str("| operation | ours: median / p90 (ms) | floor: median / p90 (ms) | floor = | **ratio** | Ceph commands | outside Ceph (ms) |\n|---|---:|---:|---|---:|---:|---:|\n");
    for r in &rows {
        let calls = if r.name.starts_with("attach") { 4.0 } else { 1.0 };
        if r.non_ceph / calls > summary.non_ceph.0 {
            summary.non_ceph = (r.non_ceph / calls, r.name.clone());
        }
        if r.floor.0 > 0.5 && r.ours.0 / r.floor.0 > 1.2 {
            summary.slow.push((r.name.clone(), r.ours.0 / r.floor.0));
        }
        let ratio = if r.floor.0 > 0.5 { format!("**{:.2}x**", r.ours.0 / r.floor.0) } else { "—".to_owned() };
        let _ = writeln!(
            table,
            "| {} | {:.1} / {:.1} | {:.1} / {:.1} | {} | {ratio} | {} | {:.1} |",
            r.name, r.ours.0, r.ours.1, r.floor.0, r.floor.1, r.floor_what, r.commands, r.non_ceph
        );
    }
    // The floor's images and keys go by hand (TestSr's clean-up takes the volumes).
    let try_rbd = |args: &[&str]| {
        let _ = Command::new("rbd")
            .args(["--conf", &conf, "--id", &lab.user, "--keyring"])
            .arg(&lab.keyring)
            .args(args)
            .output();
    };
    for i in 0..RUNS {
        try_rbd(&["snap", "unprotect", &format!("{}@fs{i}", spec("floor-0"))]);
    }
    for i in 0..RUNS {
        try_rbd(&["snap", "purge", "--no-progress", &spec(&format!("floor-{i}"))]);
        try_rbd(&["rm", "--no-progress", &spec(&format!("floor-{i}"))]);
    }
    let keys: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&lab.rbd(&["image-meta", "list", "--format", "json", &header])).unwrap_or_default();
    for k in keys.keys().filter(|k| k.starts_with("floor.")) {
        try_rbd(&["image-meta", "remove", &header, k]);
    }
}

fn scaling(table: &mut String, summary: &mut Summary) {
    let t = TestSr::create();
    let plugin = Plugin::new(Kind::Volume);
    let call = |method: &str, args: Value| {
        let mut args = args;
        args["sr"] = json!(t.sr);
        let out = plugin.call(method, args);
        assert_eq!(out.status, 0, "{method}: {}", out.stdout);
        out
    };
    let mut count = 0;
    let mut first_key = String::new();
    let mut base = None;
    table.push_str(
        "| volumes | SR.ls median / p90 (ms) | its floor: `rbd image-meta list` of the header (ms) | SR.ls vs floor \
         | SR.stat median / p90 (ms) | Volume.stat median / p90 (ms) | SR.ls vs 10 |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let header = format!("{}/{}/{}", t.lab.pool, t.namespace, common::layout::names::HEADER_IMAGE);
    for level in [10usize, 100, 1000] {
        eprintln!("  scaling: creating volumes up to {level}");
        while count < level {
            let v = call(
                "Volume.create",
                json!({"name": format!("s{count}"), "description": "", "size": 4 * MIB, "sharable": false}),
            )
            .value();
            call("Volume.set", json!({"key": v["key"], "k": "vdi-type", "v": "user"}));
            if first_key.is_empty() {
                first_key = v["key"].as_str().unwrap_or_default().to_owned();
            }
            count += 1;
        }
        // The plugin process's time only: the harness's own check of the answer against its
        // schema (1000 records) is not the driver's.
        let time = |method: &str, args: Value| {
            let mut samples: Vec<f64> = (0..RUNS).map(|_| ms(call(method, args.clone()).elapsed)).collect();
            stats(&mut samples)
        };
        let ls = time("SR.ls", json!({}));
        // The one command SR.ls runs, bare: what grows with the volumes in Ceph itself.
        let mut floor: Vec<f64> = (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                t.lab.rbd(&["image-meta", "list", &header, "--format", "json"]);
                ms(started.elapsed())
            })
            .collect();
        let floor = stats(&mut floor);
        let stat = time("SR.stat", json!({}));
        let vstat = time("Volume.stat", json!({"key": first_key}));
        let base_ls = *base.get_or_insert(ls.0);
        summary.ls_growth = ls.0 / base_ls;
        let _ = writeln!(
            table,
            "| {level} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2}x | {:.1} / {:.1} | {:.1} / {:.1} | **{:.2}x** |",
            ls.0,
            ls.1,
            floor.0,
            floor.1,
            ls.0 / floor.0,
            stat.0,
            stat.1,
            vstat.0,
            vstat.1,
            ls.0 / base_ls
        );
    }
    // A throwaway SR: remove its images in parallel, then its header and namespace
    // (destroying 1000 volumes one call at a time would take minutes).
    eprintln!("  scaling: removing the {count} images");
    let images: Vec<String> = serde_json::from_str(&t.lab.rbd(&[
        "ls",
        "--format",
        "json",
        "--pool",
        &t.lab.pool,
        "--namespace",
        &t.namespace,
    ]))
    .unwrap_or_default();
    std::thread::scope(|s| {
        for chunk in images.chunks(images.len().div_ceil(4).max(1)) {
            let t = &t;
            s.spawn(move || {
                for image in chunk {
                    t.lab.rbd(&["rm", "--no-progress", &format!("{}/{}/{image}", t.lab.pool, t.namespace)]);
                }
            });
        }
    });
    t.lab.rbd(&["namespace", "remove", "--pool", &t.lab.pool, "--namespace", &t.namespace]);
}

/// IOPS of fio with `engine_args`.
fn fio(engine_args: &[String], env: &[(&str, String)], rw: &str, bs: u64, depth: u32, total: u64, size: u64) -> f64 {
    let mut cmd = Command::new("fio");
    cmd.args(["--name=bench", "--output-format=json", &format!("--rw={rw}"), &format!("--bs={bs}")])
        .args([format!("--iodepth={depth}"), format!("--size={size}"), format!("--io_size={total}")])
        .args(engine_args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("fio");
    assert!(out.status.success(), "fio: {}", String::from_utf8_lossy(&out.stderr));
    fio_iops(&String::from_utf8_lossy(&out.stdout))
}

/// The IOPS (reads and writes) in fio's JSON output.
fn fio_iops(text: &str) -> f64 {
    let json: Value = serde_json::from_str(&text[text.find('{').expect("fio json")..]).expect("fio json");
    let job = &json["jobs"][0];
    job["read"]["iops"].as_f64().unwrap_or(0.0) + job["write"]["iops"].as_f64().unwrap_or(0.0)
}

/// IOPS (or MiB/s for 1 MiB blocks) as a table cell.
fn rate(iops: f64, bs: u64) -> String {
    if bs >= MIB {
        format!("{:.0} MiB/s", iops * bs as f64 / MIB as f64)
    } else {
        format!("{iops:.0} IOPS")
    }
}

/// Namespace of the benchmark's volume-named images (the driver refuses the default one).
const BENCH_NAMESPACE: &str = "cephrbd-bench";

/// The images a datapath benchmark reads and writes: a volume-named one of 256 MiB in
/// [`BENCH_NAMESPACE`] for the driver (its URI with `policy` from `uri`), and its twin for
/// fio's rbd engine in the pool's default namespace (the engine cannot address a
/// namespace; a namespace only prefixes object names, so both live in the same PGs of
/// the same pool). Both are written whole first.
struct BenchImages<'a> {
    lab: &'a Lab,
    volume: uuid::Uuid,
    /// The twin's name, in the default namespace.
    floor: String,
}

impl<'a> BenchImages<'a> {
    fn create(lab: &'a Lab) -> Self {
        let volume = uuid::Uuid::new_v4();
        let images = BenchImages { lab, volume, floor: format!("floor-{volume}") };
        if !lab.rbd(&["namespace", "ls", "--pool", &lab.pool]).contains(BENCH_NAMESPACE) {
            lab.rbd(&["namespace", "create", "--pool", &lab.pool, "--namespace", BENCH_NAMESPACE]);
        }
        for spec in [images.ours(), images.floor()] {
            lab.rbd(&["create", "--size", "256M", "--image-feature", "layering,exclusive-lock", &spec]);
            lab.rbd(&[
                "bench",
                "--io-type",
                "write",
                "--io-size",
                "4M",
                "--io-total",
                "256M",
                "--io-pattern",
                "seq",
                &spec,
            ]);
        }
        images
    }

    fn ours(&self) -> String {
        format!("{}/{BENCH_NAMESPACE}/v-{}", self.lab.pool, self.volume)
    }

    fn floor(&self) -> String {
        format!("{}/{}", self.lab.pool, self.floor)
    }

    /// The driver's volume URI of the namespaced image with `datapath`: written by hand, as
    /// no SR holds it; the datapath code path is the production one (a URI whose key is
    /// not the one its image carries is refused as forged, hence the volume's name).
    fn uri(&self, datapath: common::config::Datapath) -> String {
        common::layout::uri::VolumeUri {
            scheme: common::layout::uri::VOLUME_SCHEME.to_owned(),
            datapath,
            pool: self.lab.pool.clone(),
            namespace: BENCH_NAMESPACE.to_owned(),
            image: format!("v-{}", self.volume),
            snap: None,
            volume: self.volume,
            conn: self.lab.conn(Duration::from_secs(120)),
            data_destroyed: false,
        }
        .render()
    }
}

impl Drop for BenchImages<'_> {
    fn drop(&mut self) {
        // After a failure the images stay for a look (the lab is a scratch cluster).
        if !std::thread::panicking() {
            for spec in [self.ours(), self.floor()] {
                self.lab.rbd(&["rm", "--no-progress", &spec]);
            }
        }
    }
}

fn datapath(lab: &Lab, table: &mut String) -> f64 {
    let size = 256 * MIB;
    // Named as the driver names a volume's image: a URI whose key is not the one its image
    // carries is refused as forged.
    let images = BenchImages::create(lab);
    let uri = images.uri(common::config::Datapath::Qsd);
    let run = scratch_dir("bench-fio");
    let dp = Plugin::new(Kind::Datapath).with_env("CEPHRBD_RUN_DIR", run.display().to_string());
    let args = json!({"uri": uri, "domain": "0"});
    let backend = dp.call("Datapath.attach", args.clone()).ok();
    let url = nbd_url(&backend);
    let rbd_engine = vec![
        "--ioengine=rbd".to_owned(),
        format!("--clientname={}", lab.user),
        format!("--pool={}", lab.pool),
        format!("--rbdname={}", images.floor),
    ];
    let rbd_env = [
        ("CEPH_CONF", lab.conf.display().to_string()),
        ("CEPH_ARGS", format!("--keyring {} --rbd-cache=false", lab.keyring.display())),
    ];
    let nbd_engine = vec!["--ioengine=nbd".to_owned(), format!("--uri={url}")];
    table.push_str("| workload | NBD export (ours) | fio rbd engine (librbd) | **ratio** |\n|---|---:|---:|---:|\n");
    let mut lowest = f64::INFINITY;
    for (name, rw, bs, depth, total) in [
        ("seq write 1 MiB QD16", "write", MIB, 16, 256 * MIB),
        ("seq read 1 MiB QD16", "read", MIB, 16, 256 * MIB),
        ("rand write 4 KiB QD32", "randwrite", 4096, 32, 64 * MIB),
        ("rand read 4 KiB QD32", "randread", 4096, 32, 64 * MIB),
        ("rand write 4 KiB QD1", "randwrite", 4096, 1, 8 * MIB),
        ("rand read 4 KiB QD1", "randread", 4096, 1, 16 * MIB),
    ] {
        dp.call("Datapath.activate", args.clone()).ok();
        let ours = fio(&nbd_engine, &[], rw, bs, depth, total, size);
        dp.call("Datapath.deactivate", args.clone()).ok();
        let floor = fio(&rbd_engine, &rbd_env, rw, bs, depth, total, size);
        let ratio = ours / floor;
        lowest = lowest.min(ratio);
        eprintln!("  {name}: {} vs {}", rate(ours, bs), rate(floor, bs));
        let _ = writeln!(table, "| {name} | {} | {} | **{ratio:.2}x** |", rate(ours, bs), rate(floor, bs));
    }
    dp.call("Datapath.detach", args).ok();
    let _ = std::fs::remove_dir_all(&run);
    lowest
}

/// The datapath modes side by side on real kernels (issue 17): one kernel-lab guest maps
/// the same image through kernel RBD, rbd-nbd and qemu-storage-daemon (each through the
/// datapath plugin, attach + activate, in the guest), and fio drives each for a fixed time
/// beside fio's rbd engine (librbd, no kernel) in the same guest, in the same run. The
/// guest is emulated (TCG): absolute figures are far below a real host's, and emulation
/// weighs on userspace and kernel code alike, so only the ratios are worth reading, and
/// even those must be measured again on a real host (docs/kernel-lab.md).
fn datapath_modes(lab: &Lab, table: &mut String) {
    use cephrbd_tests::kernel_lab::{Guest, Options};
    use common::config::Datapath;
    let step = Duration::from_secs(300);
    let guest = Guest::boot("bench", &Options::default(), Duration::from_secs(3600));
    guest.install_plugins();
    let images = BenchImages::create(lab);
    let workloads: [(&str, &str, u64, u32); 4] = [
        ("seq write 1 MiB QD16", "write", MIB, 16),
        ("seq read 1 MiB QD16", "read", MIB, 16),
        ("rand write 4 KiB QD32", "randwrite", 4096, 32),
        ("rand read 4 KiB QD32", "randread", 4096, 32),
    ];
    let run_fio = |engine: &str, env: &str, rw: &str, bs: u64, depth: u32| -> f64 {
        let out = guest.sh(
            &format!(
                "{env} fio --name=bench --output-format=json --rw={rw} --bs={bs} --iodepth={depth} --size=256M \
                 --time_based --runtime=8 --ramp_time=1 {engine}"
            ),
            step,
        );
        assert_eq!(out.status, 0, "fio in the guest: {}{}", out.stdout, out.stderr);
        fio_iops(&out.stdout)
    };
    let mut results: Vec<(String, Vec<f64>)> = Vec::new();
    for (label, policy) in [
        ("kernel RBD (`/dev/rbdN`)", Datapath::Krbd),
        ("rbd-nbd (`/dev/nbdN`)", Datapath::Nbd),
        ("qemu-storage-daemon (NBD socket)", Datapath::Qsd),
    ] {
        let args = json!({"uri": images.uri(policy), "domain": "1"});
        let backend = guest.call("Datapath.attach", args.clone(), "", step).ok().clone();
        guest.call("Datapath.activate", args.clone(), "", step).ok();
        let list = backend["implementations"].as_array().cloned().unwrap_or_default();
        let engine = match list.iter().find(|i| i[0] == "BlockDevice").and_then(|i| i[1]["path"].as_str()) {
            Some(device) => format!("--ioengine=libaio --direct=1 --filename={device}"),
            None => format!("--ioengine=nbd --uri={}", nbd_url(&backend)),
        };
        let figures = workloads.iter().map(|(_, rw, bs, depth)| run_fio(&engine, "", rw, *bs, *depth)).collect();
        guest.call("Datapath.deactivate", args.clone(), "", step).ok();
        guest.call("Datapath.detach", args, "", step).ok();
        eprintln!("  {label}: {figures:?}");
        results.push((label.to_owned(), figures));
    }
    let librbd_env =
        format!("CEPH_CONF={} CEPH_ARGS='--keyring {} --rbd-cache=false'", lab.conf.display(), lab.keyring.display());
    let librbd_engine =
        format!("--ioengine=rbd --clientname={} --pool={} --rbdname={}", lab.user, lab.pool, images.floor);
    let floor: Vec<f64> =
        workloads.iter().map(|(_, rw, bs, depth)| run_fio(&librbd_engine, &librbd_env, rw, *bs, *depth)).collect();
    eprintln!("  fio rbd engine: {floor:?}");
    table.push_str("| workload | ");
    for (label, _) in &results {
        let _ = write!(table, "{label} | ");
    }
    table.push_str("fio rbd engine (librbd) |\n|---|");
    table.push_str(&"---:|".repeat(results.len() + 1));
    table.push('\n');
    for (w, (name, _, bs, _)) in workloads.iter().enumerate() {
        let _ = write!(table, "| {name} | ");
        for (_, figures) in &results {
            let _ = write!(table, "{} (**{:.2}x**) | ", rate(figures[w], *bs), figures[w] / floor[w]);
        }
        let _ = writeln!(table, "{} |", rate(floor[w], *bs));
    }
    drop(guest);
}

const GIB: u64 = 1 << 30;
/// Runs of `list_changed_blocks` per size up to 100 GiB (a diff without fast-diff visits
/// every object of the image: seconds at 100 GiB).
const CBT_RUNS: usize = 10;
/// The heading of the CBT section (the only one `CEPHRBD_BENCH_ONLY=cbt` rewrites).
const CBT_HEADING: &str = "## Changed block tracking: list_changed_blocks beside `rbd diff`";

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// 64 extents of 64 KiB spread evenly over the volume (shifted by half a stride in the
/// second phase), written through the userspace datapath.
fn write_extents(dp: &Plugin, volume: &Value, size: u64, phase: u64) {
    let uri = uri_with_policy(volume, "qsd");
    let args = json!({"uri": uri, "domain": "0"});
    let url = nbd_url(&dp.call("Datapath.attach", args.clone()).ok());
    dp.call("Datapath.activate", args.clone()).ok();
    let stride = size / 64;
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw"]);
    for i in 0..64 {
        let offset = (i * stride + phase * stride / 2) / 65536 * 65536;
        cmd.args(["-c", &format!("write -P {:#04x} {offset} 64K", 0x10 + phase)]);
    }
    let out = cmd.arg(&url).output().expect("qemu-io");
    assert!(out.status.success(), "qemu-io: {}", String::from_utf8_lossy(&out.stderr));
    dp.call("Datapath.deactivate", args.clone()).ok();
    dp.call("Datapath.detach", args).ok();
}

fn size_label(bytes: u64) -> String {
    if bytes >= 1 << 40 {
        format!("{} TiB", bytes >> 40)
    } else {
        format!("{} GiB", bytes >> 30)
    }
}

/// `list_changed_blocks(S1, S2)` of volumes of 1, 10, 100 GiB and 2 TiB, without and with
/// fast-diff, beside the one `rbd diff` it runs. Returns the section (heading included).
fn cbt() -> String {
    let started = Instant::now();
    let load = load_average();
    let mut table = String::from(
        "| virtual size | image features | runs | ours: median / p90 (ms) | `rbd diff` alone: median / p90 (ms) | **ratio** | Ceph commands | outside Ceph (ms) | blocks flagged (64 written) |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut notes = Vec::new();
    for features in ["layering,exclusive-lock", "layering,exclusive-lock,object-map,fast-diff"] {
        let fast = features.contains("fast-diff");
        let t = TestSr::with_config(|c| c["image_features"] = json!(features));
        let debug = Plugin::new(Kind::Volume).with_env("CEPHRBD_LOG", "debug");
        let run = scratch_dir("bench-cbt");
        let dp = Plugin::new(Kind::Datapath).with_env("CEPHRBD_RUN_DIR", run.display().to_string());
        let call = |method: &str, mut args: Value| {
            args["sr"] = json!(t.sr);
            debug.call(method, args)
        };
        for size in [GIB, 10 * GIB, 100 * GIB, 2 << 40] {
            eprintln!("  cbt: {} with {features}", size_label(size));
            let v =
                call("Volume.create", json!({"name": "cbt", "description": "", "size": size, "sharable": false})).ok();
            call("Volume.enable_cbt", json!({"key": v["key"]})).ok();
            write_extents(&dp, &v, size, 0);
            let s1 = call("Volume.snapshot", json!({"key": v["key"]})).ok();
            write_extents(&dp, &v, size, 1);
            let s2 = call("Volume.snapshot", json!({"key": v["key"]})).ok();
            let snap = |s: &Value| {
                let uri = s["uri"][0].as_str().unwrap_or_default();
                uri.split('?')
                    .next()
                    .and_then(|p| p.rsplit('/').next())
                    .and_then(|l| l.split("%40").nth(1))
                    .unwrap_or_default()
                    .to_owned()
            };
            let spec = format!("{}/{}/{}@{}", t.lab.pool, t.namespace, image_of(&v), snap(&s2));
            let from = snap(&s1);
            let mut floor_args = vec![
                "--rbd-concurrent-management-ops",
                common::ceph::rbd::DIFF_CONCURRENCY,
                "diff",
                "--from-snap",
                from.as_str(),
            ];
            if fast {
                floor_args.push("--whole-object");
            }
            floor_args.extend([spec.as_str(), "--format", "json"]);
            let args = json!({"key": s1["key"], "key2": s2["key"], "offset": 0, "length": -1});
            let runs = if size > 100 * GIB { 1 } else { CBT_RUNS };
            let first = call("Volume.list_changed_blocks", args.clone());
            let flagged = if first.status == 0 {
                let map = common::ops::bitmap::unbase64(first.value()["bitmap"].as_str().unwrap_or_default())
                    .unwrap_or_default();
                map.iter().map(|b| b.count_ones()).sum::<u32>().to_string()
            } else {
                "—".to_owned()
            };
            let mut failure = None;
            let row = measure_runs(
                runs,
                "list_changed_blocks",
                "rbd diff",
                |_| {
                    let started = Instant::now();
                    let out = call("Volume.list_changed_blocks", args.clone());
                    if out.status != 0 {
                        let (name, message) = out.error_name_and_message();
                        failure = Some(format!("{name} after {:.1} s: {message}", started.elapsed().as_secs_f64()));
                    }
                    out.stderr
                },
                |_| {
                    t.lab.rbd(&floor_args);
                },
            );
            let ratio = row.ours.0 / row.floor.0;
            let ours = match &failure {
                Some(f) => {
                    notes.push(format!("{} with {features}: ours failed: {f}", size_label(size)));
                    format!("**failed** ({:.0})", row.ours.0)
                }
                None => format!("{:.1} / {:.1}", row.ours.0, row.ours.1),
            };
            let _ = writeln!(
                table,
                "| {} | {features} | {runs} | {ours} | {:.1} / {:.1} | **{ratio:.2}x** | {} | {:.1} | {flagged} |",
                size_label(size),
                row.floor.0,
                row.floor.1,
                row.commands,
                row.non_ceph,
            );
            for volume in [&s2, &s1, &v] {
                call("Volume.destroy", json!({"key": volume["key"]}));
            }
        }
        // The 2 TiB image without object-map takes a while to purge: wait for it, so the
        // SR can be destroyed.
        let purged = cephrbd_tests::wait_until(Duration::from_secs(600), || t.trash().is_empty());
        if !purged {
            notes.push(format!("the trash of {} was not purged within 10 minutes", t.namespace));
        }
        let _ = std::fs::remove_dir_all(&run);
    }
    let notes = if notes.is_empty() { String::new() } else { format!("\nNotes of this run: {}.\n", notes.join("; ")) };
    format!(
        "{CBT_HEADING}\n\n\
         One thin volume per row, CBT enabled: 64 extents of 64 KiB written through the userspace datapath, \
         snapshot S1, 64 other extents, snapshot S2. Ours is `Volume.list_changed_blocks(S1, S2)` as xapi runs it \
         (one process, records read, `rbd diff`, the bitmap built and encoded); its floor is the one `rbd diff \
         --from-snap` it runs (with `--whole-object` when the images have fast-diff, and 128 requests in flight, \
         as ours does), run from the bench, interleaved with ours. The SR's time limit is the default, 30 s (the diff gets one per 512 GiB). Load average when the section \
         started: {load} (2 CPUs shared with other work); the section took {:.0} s.\n\n{table}{notes}\n{CBT_WHY}",
        started.elapsed().as_secs_f64(),
    )
}

/// What the CBT figures mean (kept beside the code that measures them).
const CBT_WHY: &str = "\
**What the figures say.**\n\n\
- *With fast-diff* the diff reads the object maps of the two snapshots (2 bits per 4 MiB object): well under \
a second at any size, 2 TiB included, far inside the 30 s limit. The bitmap is at object granularity: a \
64 KiB write flags its whole 4 MiB object (64 bits), which Xen Orchestra reads as two 2 MiB blocks.\n\
- *Without fast-diff* (what XCP-ng's 4.19 kernel can map) librbd asks the OSDs about every object of the \
image, written or not: the time grows with the virtual size, not with what changed (128 requests in flight; \
librbd's default of 10 was measured 1.6 to 1.8 times slower at 100 GiB). The bitmap is near-exact (a newly \
written object is reported from its start to the end of what was written; here every write started an \
object, so exactly the 64 blocks written are flagged).\n\
- *Ours beside its floor*: one `rbd image-meta list` (the records, which name the image and snapshots) \
before the diff, and the process start; building and encoding the bitmap is milliseconds even at 2 TiB (32 \
Mi bits, a 4 MiB bitmap, 5.6 MB of base64). Where the diff itself takes tens of milliseconds (fast-diff) \
that doubles the time; where it takes seconds it is noise.\n\
- *2 TiB without fast-diff* needs one RADOS request per object (524 288): measured above in one run, 20 to \
30 s here depending on the load, about the default 30 s limit. The diff is therefore given one time limit \
per 512 GiB of the larger volume (at least one, at most eight: 120 s for 2 TiB at the default limit, \
`DIFF_BYTES_PER_LIMIT` in `common/src/ops/cbt.rs`); it only reads, and the records read before it has \
already shown the cluster answers. Past its bound the call fails with `Timed_out` and Xen Orchestra falls \
back to a full export (nothing is lost, the backup is only slower). Fast-diff images (with the userspace \
datapath, `datapath=qsd`) make the diff's time independent of the size.\n";

/// Replaces the CBT section of an existing BENCHMARKS.md (or adds it before the last line).
fn splice_cbt(report: &str, section: &str) -> String {
    match report.find(CBT_HEADING) {
        Some(start) => {
            let rest = &report[start + CBT_HEADING.len()..];
            let end = rest
                .find("\n## ")
                .or_else(|| rest.find("\nWhole run:"))
                .map_or(report.len(), |e| start + CBT_HEADING.len() + e + 1);
            format!("{}{section}\n{}", &report[..start], &report[end..])
        }
        None => match report.rfind("\nWhole run:") {
            Some(at) => format!("{}{section}\n{}", &report[..=at], &report[at + 1..]),
            None => format!("{report}\n{section}"),
        },
    }
}

fn version(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

fn main() {
    let started = Instant::now();
    let lab = Lab::get();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
    if std::env::var("CEPHRBD_BENCH_ONLY").as_deref() == Ok("cbt") {
        // Only the CBT section, measured now; the rest of BENCHMARKS.md stays as written.
        eprintln!("changed block tracking…");
        let section = cbt();
        let report = splice_cbt(&std::fs::read_to_string(&path).unwrap_or_default(), &section);
        std::fs::write(&path, &report).expect("write BENCHMARKS.md");
        print!("{section}");
        return;
    }
    if std::env::var("CEPHRBD_BENCH_ONLY").as_deref() == Ok("modes") {
        // Only the datapath modes, printed; BENCHMARKS.md is left as it is.
        let mut modes = String::new();
        datapath_modes(&lab, &mut modes);
        print!("{modes}");
        return;
    }
    eprintln!("operations…");
    let mut ops = String::new();
    let mut summary = Summary::default();
    {
        let t = TestSr::create();
        let debug = Plugin::new(Kind::Volume).with_env("CEPHRBD_LOG", "debug");
        control_path(&t, &debug, &mut ops, &mut summary);
    }
    eprintln!("scaling…");
    let mut scale = String::new();
    scaling(&mut scale, &mut summary);
    eprintln!("datapath…");
    let mut dp = String::new();
    summary.datapath = datapath(&lab, &mut dp);
    eprintln!("datapath modes in the kernel lab…");
    let mut modes = String::new();
    datapath_modes(&lab, &mut modes);
    eprintln!("changed block tracking…");
    let cbt_section = cbt();
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let slow: Vec<String> = summary.slow.iter().map(|(n, r)| format!("{n} {r:.2}x")).collect();
    let targets = format!(
        "| target | measured | |\n|---|---|---|\n\
         | time outside Ceph commands < 5 ms per call | {:.1} ms at most ({}) | {} |\n\
         | every operation within 1.2x of its floor | {} | {} |\n\
         | SR.ls at 1000 volumes within 1.5x of SR.ls at 10 | {:.2}x | {} |\n\
         | userspace datapath ≥ 0.8x of fio's rbd engine on every workload | {:.2}x lowest | {} |\n",
        summary.non_ceph.0,
        summary.non_ceph.1,
        verdict(summary.non_ceph.0 < 5.0),
        if slow.is_empty() { "all within".to_owned() } else { format!("above: {}", slow.join(", ")) },
        verdict(slow.is_empty()),
        summary.ls_growth,
        verdict(summary.ls_growth <= 1.5),
        summary.datapath,
        verdict(summary.datapath >= 0.8),
    );
    let lowest = summary.datapath;
    let report = format!(
        "# cephrbd benchmarks\n\n\
         Written by `scripts/bench` (cephrbd {}) on {}.\n\
         Machine: {} CPUs, {} GiB RAM, {}. Cluster: the single-node test cluster (memstore OSD, mon and mgr, all on 127.0.0.1).\n\
         Tools: {}; {}; {}.\n\n\
         ## Targets\n\n{targets}\n{WHY}\n\
         ## Operations beside their floor\n\n\
         Each operation runs {RUNS} times as xapi runs it (one process per call, arguments on stdin); its floor is the \
         bare Ceph commands it fundamentally needs, run {RUNS} times from the bench, interleaved with ours. \
         \"Ceph commands\" and \"outside Ceph\" come from the runner's debug log (every command it runs, with its \
         duration): the time outside Ceph is process start, parsing, validation and JSON.\n\n{ops}\n\
         ## Scaling with the number of volumes\n\n{scale}\n\
         ## Userspace datapath beside fio's rbd engine\n\n\
         Same 256 MiB image (filled first), same run, same amount of I/O; librbd's cache off on both sides. \
         Lowest ratio: {lowest:.2}x.\n\n{dp}\n\
         ## Datapath modes on a real kernel (kernel lab, emulated)\n\n\
         One guest of the kernel lab (Debian's 6.1 kernel under QEMU TCG, one emulated CPU, docs/kernel-lab.md) \
         maps the same 256 MiB image (written first) through each mode with the datapath plugin (attach + \
         activate in the guest), and fio runs 8 s per workload against each, then fio's rbd engine (librbd, \
         cache off) in the same guest; ratios against that engine. **Emulation distorts everything**: the \
         absolute figures are far below a real host's, and kernel and userspace code are both emulated, so \
         what holds here is only the order of magnitude between modes. What must be measured on a real \
         XCP-ng host: each mode's throughput and latency against the same engine, and tapdisk or qemu-dp \
         on top (not run here).\n\n{modes}\n\
         {cbt_section}\n\
         Whole run: {:.0} s.\n",
        env!("CARGO_PKG_VERSION"),
        version("date", "-u"),
        std::thread::available_parallelism().map_or(0, usize::from),
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<u64>().ok()))
            .map_or(0, |kib| kib >> 20),
        version("uname", "-sr"),
        version("rbd", "--version"),
        version("qemu-storage-daemon", "--version"),
        version("fio", "--version"),
        started.elapsed().as_secs_f64(),
    );
    std::fs::write(&path, &report).expect("write BENCHMARKS.md");
    print!("{report}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_in_parallel_count_once_and_sequential_ones_each() {
        // Volume.create: the SR check (61 ms) beside the create (66 ms), then the record
        // (50 ms): 66 + 50 of the 118 ms call were Ceph's.
        let log = parse_log(
            "2026-11-30T13:48:34.294139Z DEBUG call{method=\"Volume.create\"}: exec done program=\"rbd\" elapsed_ms=61.227766 ok=true\n\
             2026-11-30T13:48:34.299148Z DEBUG exec done program=\"rbd\" elapsed_ms=66.477624 ok=true\n\
             2026-11-30T13:48:34.299452Z DEBUG exec program=\"rbd\" timeout_s=29.9\n\
             2026-11-30T13:48:34.349975Z DEBUG call{method=\"Volume.create\"}: exec done program=\"rbd\" elapsed_ms=50.497315 ok=true\n",
        );
        assert_eq!(log.commands.len(), 3);
        assert!((log.ceph_ms() - (66.477624 + 50.497315)).abs() < 0.01, "{}", log.ceph_ms());
    }

    #[test]
    fn the_cbt_section_is_added_once_then_replaced() {
        let report = "# cephrbd benchmarks\n\n## Userspace datapath\n\n| a |\n\nWhole run: 300 s.\n";
        let first = splice_cbt(report, &format!("{CBT_HEADING}\n\nfirst\n"));
        assert_eq!(first, format!("# cephrbd benchmarks\n\n## Userspace datapath\n\n| a |\n\n{CBT_HEADING}\n\nfirst\n\nWhole run: 300 s.\n"));
        let second = splice_cbt(&first, &format!("{CBT_HEADING}\n\nsecond\n"));
        assert_eq!(second, first.replace("first", "second"));
    }
}
