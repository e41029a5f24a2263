//! The test harness: runs the plugin executables exactly as xapi-storage-script does, and
//! finds the single-node test cluster.
//!
//! [`Plugin`] lays out a plugin directory of symlinks named after the methods (as the RPM
//! does), then for each call runs `[<dir>/<Method>, "--json"]` with the arguments as one
//! compact JSON object on stdin (no trailing newline), closes stdin, and parses stdout as
//! exactly one JSON value (docs/smapiv3.md §3). The environment is cleared down to a minimal
//! `PATH`, as a daemon's would be, so the plugins cannot depend on the caller's `PATH`.
//! Every successful result is validated against the method's result schema and every
//! failure against the error-object shape; a mismatch fails the test.
//!
//! [`Lab`] reads the `env` file written by `scripts/ceph-lab/cluster-up.sh`.
//!
//! [`Chroot`] runs the plugins (see [`Plugin::inside`]) or any program inside a Debian
//! chroot of another Ceph release (`scripts/compat-lab/`).

pub mod kernel_lab;
pub mod xapi;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::smapi::schema::{self, Part};
use serde_json::{json, Value};

/// How long one plugin call may take in a test before the harness gives up on it.
pub const CALL_LIMIT: Duration = Duration::from_secs(120);

/// The environment the plugins run with: what a daemon started by systemd would have.
pub const DAEMON_ENV: &[(&str, &str)] = &[("PATH", "/usr/bin:/bin")];

/// Environment variables passed through from the test's own environment.
const PASSED_THROUGH: &[&str] = &["CEPHRBD_LOG", "CEPHRBD_STATE_DIR", "CEPHRBD_RUN_DIR"];

/// Which executable a plugin directory links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The volume plugin (`Plugin.*`, `SR.*`, `Volume.*`).
    Volume,
    /// The datapath plugin (`Plugin.*`, `Datapath.*`).
    Datapath,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Kind::Volume => "volume",
            Kind::Datapath => "datapath",
        }
    }
}

/// The directory holding the built executables: `$CEPHRBD_BIN_DIR`, or the cargo target
/// directory of the running test binary (`target/<profile>/deps/..`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CEPHRBD_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().expect("target/<profile>[/deps]");
    // Test binaries live in target/<profile>/deps, programs in target/<profile>.
    if dir.file_name().is_some_and(|n| n == "deps") { dir.parent().unwrap_or(dir) } else { dir }.to_path_buf()
}

/// The path of a built executable; panics with the fix if it was not built.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// A fresh scratch directory under the system temp dir.
pub fn scratch_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cephrbd-{label}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// What one call printed and how it ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The method called.
    pub method: String,
    /// The exit status.
    pub status: i32,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr (logs).
    pub stderr: String,
    /// How long the call took.
    pub elapsed: Duration,
}

impl Outcome {
    /// The single JSON value on stdout; panics if stdout is not exactly one JSON value.
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("{}: stdout is not exactly one JSON value ({e}): {:?}", self.method, self.stdout)
        })
    }

    /// The result of a successful call; panics with the error object otherwise.
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 0, "{} failed: {}\nstderr:\n{}", self.method, self.stdout, self.stderr);
        self.value()
    }

    /// The error object of a failed call; panics if the call succeeded.
    pub fn err(&self) -> Value {
        assert_eq!(self.status, 1, "{} was expected to fail with status 1: {}", self.method, self.stdout);
        self.value()
    }

    /// `params[0]` and `params[1]` of the error object: (error name, message).
    pub fn error_name_and_message(&self) -> (String, String) {
        let err = self.err();
        let param = |i: usize| err["params"][i].as_str().unwrap_or_default().to_owned();
        (param(0), param(1))
    }
}

/// A plugin directory of method symlinks, as xapi-storage-script sees it.
#[derive(Debug)]
pub struct Plugin {
    dir: PathBuf,
    methods: Vec<String>,
    env: Vec<(String, String)>,
    /// Made by the harness (removed on drop), not an installed directory.
    owned: bool,
    /// Program and arguments each call runs through (a chroot, see [`Plugin::inside`]);
    /// empty: the method file is run directly.
    prefix: Vec<OsString>,
}

impl Plugin {
    /// Lays out a directory for `kind` with one symlink per method (`<binary> --list`).
    pub fn new(kind: Kind) -> Self {
        Self::of_binary(kind, &binary(kind.binary()))
    }

    /// The plugin directory of `binary` (which is a `kind`): one symlink per method it lists.
    fn of_binary(kind: Kind, binary: &Path) -> Self {
        let listing = Command::new(binary).arg("--list").output().expect("run --list");
        assert!(listing.status.success(), "--list failed");
        let methods: Vec<String> =
            String::from_utf8(listing.stdout).expect("utf8").lines().map(str::to_owned).collect();
        let dir = scratch_dir(kind.binary());
        for method in &methods {
            symlink(binary, dir.join(method)).expect("symlink");
        }
        Plugin { dir, methods, env: Vec::new(), owned: true, prefix: Vec::new() }
    }

    /// An installed plugin directory (e.g. unpacked from the RPM), used as it is.
    pub fn at(dir: &Path) -> Self {
        let mut methods: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        methods.sort();
        Plugin { dir: dir.to_path_buf(), methods, env: Vec::new(), owned: false, prefix: Vec::new() }
    }

    /// Adds an environment variable for every call (e.g. a private state directory).
    pub fn with_env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// The methods installed (as `--list` printed them).
    pub fn methods(&self) -> &[String] {
        &self.methods
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Calls `method` with `args` as xapi-storage-script does and checks the answer's shape
    /// against the schemas. `dbg` is added if absent.
    pub fn call(&self, method: &str, mut args: Value) -> Outcome {
        if let Some(obj) = args.as_object_mut() {
            obj.entry("dbg").or_insert_with(|| json!(format!("test:{method}")));
        }
        let stdin = serde_json::to_vec(&args).expect("serializable");
        let outcome = self.call_raw(method, &["--json"], &stdin);
        check_shape(&outcome);
        outcome
    }

    /// Runs `<dir>/<file>` with `extra_args` and raw `stdin`; checks nothing.
    pub fn call_raw(&self, file: &str, extra_args: &[&str], stdin: &[u8]) -> Outcome {
        let started = Instant::now();
        let mut command = match self.prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(self.dir.join(file));
                c
            }
            None => Command::new(self.dir.join(file)),
        };
        command.args(extra_args).env_clear().envs(DAEMON_ENV.iter().copied());
        for key in PASSED_THROUGH {
            if let Some(value) = std::env::var_os(key) {
                command.env(key, value);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {file}: {e}"));
        let mut pipe = child.stdin.take().expect("stdin");
        // A plugin that fails before reading its stdin (an unknown method) closes the pipe.
        if let Err(e) = pipe.write_all(stdin) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
        }
        drop(pipe);
        let (mut out, mut err) = (child.stdout.take().expect("stdout"), child.stderr.take().expect("stderr"));
        let reader = thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        let mut stdout = String::new();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = out.read_to_string(&mut stdout);
            let _ = tx.send(stdout);
        });
        let stdout = rx.recv_timeout(CALL_LIMIT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("{file} did not answer within {CALL_LIMIT:?}: the plugin hung")
        });
        let status = child.wait().expect("wait").code().unwrap_or(-1);
        let stderr = reader.join().unwrap_or_default();
        Outcome { method: file.to_owned(), status, stdout, stderr, elapsed: started.elapsed() }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Fails the test unless the outcome is exactly one JSON value of the right shape: the
/// method's result schema on exit 0, the error object on exit 1.
pub fn check_shape(outcome: &Outcome) {
    let value = outcome.value();
    match outcome.status {
        0 => {
            if let Err(v) = schema::validate(&outcome.method, Part::Result, &value).expect("schemas load") {
                panic!("{} returned a result that breaks its schema: {v}\n{}", outcome.method, outcome.stdout);
            }
        }
        1 => check_error_object(&value),
        other => panic!("{} exited with {other}; the protocol allows 0 and 1\n{}", outcome.method, outcome.stderr),
    }
}

/// Fails the test unless `value` is `{"code": s, "params": [s…], "backtrace": {"error": s,
/// "files": [s…], "lines": [int…]}}`.
pub fn check_error_object(value: &Value) {
    let strings = |v: &Value| v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
    assert!(value["code"].is_string(), "error object without a string code: {value}");
    assert!(strings(&value["params"]), "error params must be strings: {value}");
    assert!(value["backtrace"]["error"].is_string(), "backtrace.error: {value}");
    assert!(strings(&value["backtrace"]["files"]), "backtrace.files: {value}");
    assert!(
        value["backtrace"]["lines"].as_array().is_some_and(|a| a.iter().all(|l| l.is_i64())),
        "backtrace.lines: {value}"
    );
    assert_eq!(value.as_object().map(|o| o.len()), Some(3), "exactly code, params, backtrace: {value}");
}

/// The single-node test cluster started by `scripts/ceph-lab/cluster-up.sh`.
#[derive(Debug, Clone)]
pub struct Lab {
    /// `CEPH_CONF`.
    pub conf: PathBuf,
    /// `CEPH_KEYRING`.
    pub keyring: PathBuf,
    /// `CEPH_USER`.
    pub user: String,
    /// `CEPH_MON_HOST`.
    pub mon_host: String,
    /// `CEPH_POOL`.
    pub pool: String,
    /// `CEPH_LAB_DIR`.
    pub dir: PathBuf,
}

impl Lab {
    /// Reads `$CEPHRBD_LAB_DIR/env` (default `/tmp/cephrbd-lab/env`). Panics with the fix if
    /// the cluster was not started: real-cluster tests never skip silently.
    pub fn get() -> Lab {
        let dir = std::env::var_os("CEPHRBD_LAB_DIR").map_or_else(|| PathBuf::from("/tmp/cephrbd-lab"), PathBuf::from);
        Lab::from_dir(&dir)
    }

    /// Reads `<dir>/env`.
    pub fn from_dir(dir: &Path) -> Lab {
        let path = dir.join("env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "no test cluster ({}: {e}); start one with scripts/ceph-lab/cluster-up.sh or run scripts/test",
                path.display()
            )
        });
        let vars: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.trim().trim_start_matches("export ").split_once('='))
            .map(|(k, v)| (k.trim(), v.trim().trim_matches('"').trim_matches('\'')))
            .collect();
        let var = |k: &str| (*vars.get(k).unwrap_or_else(|| panic!("{} lacks {k}", path.display()))).to_owned();
        Lab {
            conf: PathBuf::from(var("CEPH_CONF")),
            keyring: PathBuf::from(var("CEPH_KEYRING")),
            user: var("CEPH_USER"),
            mon_host: var("CEPH_MON_HOST"),
            pool: var("CEPH_POOL"),
            dir: PathBuf::from(var("CEPH_LAB_DIR")),
        }
    }

    /// The device-config an administrator would write for this cluster.
    pub fn device_config(&self) -> Value {
        json!({
            "pool": self.pool,
            "ceph_conf": self.conf.display().to_string(),
            "ceph_user": self.user,
            "keyring": self.keyring.display().to_string(),
        })
    }

    /// The driver's connection to this cluster with a time limit.
    pub fn conn(&self, timeout: Duration) -> common::ceph::Conn {
        common::ceph::Conn {
            conf: self.conf.clone(),
            id: self.user.clone(),
            keyring: Some(self.keyring.clone()),
            mon_host: None,
            timeout,
        }
    }

    /// Runs `rbd` against the lab as an administrator would (for assertions), returning
    /// stdout; panics on failure.
    pub fn rbd(&self, args: &[&str]) -> String {
        self.admin("rbd", args)
    }

    /// Runs `ceph` against the lab as an administrator would; panics on failure.
    pub fn ceph(&self, args: &[&str]) -> String {
        self.admin("ceph", args)
    }

    fn admin(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new(program)
            .args(["--conf", &self.conf.display().to_string(), "--id", &self.user, "--keyring"])
            .arg(&self.keyring)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8")
    }
}

/// A volume's datapath URI (`Volume.stat` gives one) with its policy set to `policy`
/// (`auto`, `krbd`, `nbd`, `qsd`), as an SR with device-config `datapath=<policy>` gives it.
pub fn uri_with_policy(volume: &Value, policy: &str) -> String {
    let uri = volume["uri"][0].as_str().unwrap_or_else(|| panic!("no URI in {volume}"));
    let (head, query) = uri.split_once('?').expect("a query");
    let mut pairs: Vec<String> = query.split('&').filter(|p| !p.starts_with("datapath=")).map(str::to_owned).collect();
    pairs.push(format!("datapath={policy}"));
    format!("{head}?{}", pairs.join("&"))
}

/// The same volume's URI as volumes made before the datapath policy had it: an old scheme
/// (`cephrbd+krbd`, `cephrbd+qsd`) that names one mode.
pub fn uri_with_old_scheme(volume: &Value, scheme: &str) -> String {
    let uri = volume["uri"][0].as_str().unwrap_or_else(|| panic!("no URI in {volume}"));
    let rest = uri.strip_prefix("cephrbd://").expect("a cephrbd:// URI");
    let (head, query) = rest.split_once('?').expect("a query");
    let pairs: Vec<&str> = query.split('&').filter(|p| !p.starts_with("datapath=")).collect();
    format!("{scheme}://{head}?{}", pairs.join("&"))
}

/// The `nbd+unix://` URL (for qemu-io and fio) of the `Nbd` implementation in a
/// `Datapath.attach` result (`nbd:unix:<socket>:exportname=<name>`).
pub fn nbd_url(backend: &Value) -> String {
    let nbd = backend["implementations"]
        .as_array()
        .and_then(|list| list.iter().find(|i| i[0] == "Nbd"))
        .and_then(|i| i[1]["uri"].as_str())
        .unwrap_or_else(|| panic!("no Nbd implementation in {backend}"));
    let (socket, export) = nbd
        .strip_prefix("nbd:unix:")
        .and_then(|r| r.rsplit_once(":exportname="))
        .expect("nbd:unix:<socket>:exportname=<name>");
    format!("nbd+unix:///{export}?socket={socket}")
}

/// A unique name for a test's objects (`t-<uuid>`), so tests never see each other's.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// An SR created through the plugin in a fresh namespace (`t-<uuid>`) of the lab's pool,
/// destroyed with everything in it when dropped (unless `KEEP_TEST_STATE=1`).
#[derive(Debug)]
pub struct TestSr {
    /// The volume plugin.
    pub plugin: Plugin,
    /// The cluster.
    pub lab: Lab,
    /// The configuration SR.create returned (the PBD's device-config).
    pub config: Value,
    /// The SR string SR.attach returned.
    pub sr: String,
    /// The SR uuid.
    pub uuid: String,
    /// The namespace.
    pub namespace: String,
}

impl TestSr {
    /// SR.create + SR.attach, as `xe sr-create` and PBD.plug do.
    pub fn create() -> TestSr {
        Self::with_config(|_| {})
    }

    /// Like [`TestSr::create`], after `edit` changed the device-config.
    pub fn with_config(edit: impl FnOnce(&mut Value)) -> TestSr {
        Self::on(Lab::get(), edit)
    }

    /// Like [`TestSr::with_config`], on another cluster.
    pub fn on(lab: Lab, edit: impl FnOnce(&mut Value)) -> TestSr {
        Self::through(Plugin::new(Kind::Volume), lab, edit)
    }

    /// Like [`TestSr::on`], through a given volume plugin directory.
    pub fn through(plugin: Plugin, lab: Lab, edit: impl FnOnce(&mut Value)) -> TestSr {
        let uuid = uuid::Uuid::new_v4().to_string();
        let namespace = unique("t");
        let mut config = lab.device_config();
        config["namespace"] = json!(namespace);
        edit(&mut config);
        let config = plugin
            .call(
                "SR.create",
                json!({"uuid": uuid, "configuration": config, "name": "test SR", "description": "made by a test"}),
            )
            .ok();
        let sr =
            plugin.call("SR.attach", json!({"configuration": config})).ok().as_str().expect("sr string").to_owned();
        TestSr { plugin, lab, config, sr, uuid, namespace }
    }

    /// Calls a method with `sr` added to the arguments.
    pub fn call(&self, method: &str, mut args: Value) -> Outcome {
        args["sr"] = json!(self.sr);
        self.plugin.call(method, args)
    }

    /// `Volume.create` of `size` bytes; returns the volume record.
    pub fn create_volume(&self, name: &str, size: i64) -> Value {
        self.call("Volume.create", json!({"name": name, "description": "", "size": size, "sharable": false})).ok()
    }

    /// The image names in the SR's namespace (`rbd ls`).
    pub fn images(&self) -> Vec<String> {
        let out = self.lab.rbd(&["ls", "--format", "json", "--pool", &self.lab.pool, "--namespace", &self.namespace]);
        serde_json::from_str(&out).expect("rbd ls json")
    }

    /// The snapshot names of an image of the SR.
    pub fn snapshots(&self, image: &str) -> Vec<String> {
        let spec = format!("{}/{}/{image}", self.lab.pool, self.namespace);
        let out = self.lab.rbd(&["snap", "ls", "--all", "--format", "json", &spec]);
        let snaps: Vec<Value> = serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).expect("json");
        snaps.iter().filter_map(|s| s["name"].as_str().map(str::to_owned)).collect()
    }

    /// The entries of the pool's trash in the SR's namespace.
    pub fn trash(&self) -> Vec<Value> {
        let out = self.lab.rbd(&[
            "trash",
            "ls",
            "--format",
            "json",
            "--pool",
            &self.lab.pool,
            "--namespace",
            &self.namespace,
        ]);
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).expect("json")
    }

    /// Waits (a minute at most) until only the SR's header is left in its namespace and
    /// the trash is empty: what destroys left to the background purge is reclaimed.
    pub fn assert_reclaimed(&self) {
        let done = wait_until(Duration::from_secs(60), || self.images() == ["cephrbd-sr"] && self.trash().is_empty());
        assert!(done, "not reclaimed: images {:?}, trash {:?}", self.images(), self.trash());
    }

    /// Every volume (`SR.ls`).
    pub fn ls(&self) -> Vec<Value> {
        self.call("SR.ls", json!({})).ok().as_array().expect("array").clone()
    }
}

impl Drop for TestSr {
    fn drop(&mut self) {
        if std::env::var("KEEP_TEST_STATE").as_deref() == Ok("1") {
            return;
        }
        let volumes = self.plugin.call("SR.ls", json!({"sr": self.sr}));
        if volumes.status == 0 {
            // Snapshots last: destroying their dependants first reclaims more at once.
            let mut list = volumes.value().as_array().cloned().unwrap_or_default();
            list.sort_by_key(|v| v["read_write"] == json!(false));
            for v in list {
                let _ = self.plugin.call_raw(
                    "Volume.destroy",
                    &["--json"],
                    &serde_json::to_vec(&json!({"dbg": "cleanup", "sr": self.sr, "key": v["key"]})).expect("json"),
                );
            }
        }
        let _ = self.plugin.call_raw(
            "SR.destroy",
            &["--json"],
            &serde_json::to_vec(&json!({"dbg": "cleanup", "sr": self.sr})).expect("json"),
        );
    }
}

/// A cluster of a test's own (in `/tmp/cephrbd-lab-<label>-<id>`, msgr2 only on a free
/// port, no mgr), for tests that stop or break daemons; torn down when dropped.
#[derive(Debug)]
pub struct PrivateLab {
    /// The cluster.
    pub lab: Lab,
}

impl PrivateLab {
    /// Starts it (about 1 s).
    pub fn start(label: &str) -> PrivateLab {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let dir = std::env::temp_dir().join(format!("cephrbd-lab-{label}-{}", uuid::Uuid::new_v4().simple()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ceph-lab/cluster-up.sh");
        let out = Command::new(script)
            .arg(&dir)
            .env("CEPH_LAB_MGR", "0")
            .env("CEPH_LAB_V1_PORT", "0")
            .env("CEPH_LAB_V2_PORT", port.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run cluster-up.sh");
        assert!(out.status.success(), "cluster-up.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
        PrivateLab { lab: Lab::from_dir(&dir) }
    }

    /// The pid of one of its daemons (`mon.a`, `osd.0`).
    pub fn pid(&self, daemon: &str) -> i32 {
        let path = self.lab.dir.join("run").join(format!("{daemon}.pid"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .parse()
            .expect("pid")
    }

    /// Starts a daemon again after it was killed (`mon.a`, `osd.0`), as cluster-up.sh does.
    pub fn restart(&self, daemon: &str) {
        let (program, id) = match daemon.split_once('.') {
            Some(("mon", id)) => ("ceph-mon", id),
            Some(("osd", id)) => ("ceph-osd", id),
            _ => panic!("cannot restart {daemon}"),
        };
        let pidfile = self.lab.dir.join("run").join(format!("{daemon}.pid"));
        let old = std::fs::read_to_string(&pidfile).unwrap_or_default();
        let mut child = Command::new("setsid")
            .args([program, "-f", "-c", &self.lab.conf.display().to_string(), "-i", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("restart {daemon}: {e}"));
        // Reaped when it exits (cluster-down.sh stops it by its pidfile).
        thread::spawn(move || child.wait());
        let started = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&pidfile).ok().is_some_and(|p| p != old && !p.trim().is_empty())
        });
        assert!(started, "{daemon} did not start again");
    }

    /// Sends a signal (`STOP`, `CONT`, `KILL`) to one of its daemons.
    pub fn signal(&self, daemon: &str, signal: &str) {
        let status =
            Command::new("kill").arg(format!("-{signal}")).arg(self.pid(daemon).to_string()).status().expect("kill");
        assert!(status.success(), "kill -{signal} {daemon}");
    }
}

impl Drop for PrivateLab {
    fn drop(&mut self) {
        // A stopped daemon must be resumed to be stopped.
        for daemon in ["mon.a", "osd.0"] {
            let _ = Command::new("kill").arg("-CONT").arg(self.pid(daemon).to_string()).status();
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ceph-lab/cluster-down.sh");
        let _ = Command::new(script).arg(&self.lab.dir).stdin(Stdio::null()).output();
        let _ = std::fs::remove_file(self.lab.dir.with_extension("lock"));
    }
}

/// Where plugin processes run: inside a Debian chroot made by
/// `scripts/compat-lab/chroot.sh` (another generation of the Ceph client: `bullseye` has
/// Nautilus 14.2, the one XCP-ng's dom0 runs), or on the host itself ([`Chroot::host`]).
///
/// A call inside a chroot goes through `scripts/compat-lab/run.sh`: a private mount
/// namespace with /proc, /dev, /sys and the named host directories bind-mounted at the
/// same paths, the host's network (so the test clusters on 127.0.0.1 answer), and the
/// chroot's own `rbd` and `ceph` on `PATH`.
#[derive(Debug, Clone)]
pub struct Chroot {
    /// The suite (`bullseye`, `trixie`, `forky`), or `host`.
    pub suite: String,
    /// Its root directory (`/` for the host).
    pub root: PathBuf,
}

impl Chroot {
    /// The chroot of `suite` (in `$CEPHRBD_CHROOT_CACHE`, default
    /// `/var/cache/cephrbd/chroots`). Panics with the command that builds it when it is
    /// missing or incomplete: the tests that need it never skip.
    pub fn get(suite: &str) -> Chroot {
        let cache = std::env::var_os("CEPHRBD_CHROOT_CACHE")
            .map_or_else(|| PathBuf::from("/var/cache/cephrbd/chroots"), PathBuf::from);
        let root = cache.join(suite);
        let marker = root.join(".cephrbd-chroot");
        assert!(
            marker.is_file(),
            "no complete {suite} chroot ({} is missing): build it with `scripts/compat-lab/chroot.sh {suite}` \
             (scripts/test does)",
            marker.display()
        );
        Chroot { suite: suite.to_owned(), root }
    }

    /// No chroot: programs run on the host, with the host's Ceph client.
    pub fn host() -> Chroot {
        Chroot { suite: "host".to_owned(), root: PathBuf::from("/") }
    }

    /// Whether this is the host itself.
    pub fn is_host(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The program and arguments that run a command inside the chroot with `binds`
    /// mounted (`run.sh --bind DIR… ROOT --`); empty for the host.
    pub fn prefix(&self, binds: &[&Path]) -> Vec<OsString> {
        if self.is_host() {
            return Vec::new();
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/compat-lab/run.sh");
        let mut prefix = vec![script.into_os_string()];
        for dir in binds {
            prefix.push("--bind".into());
            prefix.push(dir.as_os_str().to_owned());
        }
        prefix.push(self.root.as_os_str().to_owned());
        prefix.push("--".into());
        prefix
    }

    /// A command running `program` inside the chroot, with `binds` mounted.
    pub fn command(&self, program: &Path, binds: &[&Path]) -> Command {
        match self.prefix(binds).split_first() {
            Some((run, args)) => {
                let mut c = Command::new(run);
                c.args(args).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// What `rbd --version` says in this chroot (`ceph version 14.2.21 (…) nautilus (stable)`).
    pub fn ceph_version(&self) -> String {
        let out = self.command(Path::new("rbd"), &[]).arg("--version").output().expect("run rbd --version");
        assert!(out.status.success(), "rbd --version in {}: {}", self.suite, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Runs the legacy driver `CephRBDSR` of [`compat_bin_dir`] inside the chroot as
    /// [`xapi::run_driver`] runs it on the host (one `methodCall` in `argv[1]`, no stdin, the
    /// driver's `PATH`), with the XenAPI socket's directory, `run_dir` and `binds` mounted.
    pub fn run_driver(&self, document: &str, xapi_socket: &Path, run_dir: &Path, binds: &[&Path]) -> xapi::Run {
        let bins = compat_bin_dir();
        let driver = bins.join("CephRBDSR");
        assert!(driver.is_file(), "{} is missing: run scripts/build-rpm (scripts/test does)", driver.display());
        std::fs::create_dir_all(run_dir).expect("create the driver's run dir");
        let socket_dir = xapi_socket.parent().expect("socket directory");
        let mut all = vec![bins.as_path(), socket_dir, run_dir];
        all.extend_from_slice(binds);
        let out = self
            .command(&driver, &all)
            .arg(document)
            .env_clear()
            .env("PATH", "/sbin:/usr/sbin:/bin:/usr/bin")
            .env("CEPHRBD_XAPI_SOCKET", xapi_socket)
            .env("CEPHRBD_RUN_DIR", run_dir)
            .stdin(Stdio::null())
            .output()
            .expect("run CephRBDSR");
        xapi::Run {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The directory of the binaries built for glibc 2.17 (what the RPM ships, and what runs
/// in every chroot): `$CEPHRBD_COMPAT_BIN_DIR`, or `<target>/x86_64-unknown-linux-gnu/release`
/// where `scripts/build-rpm` leaves them.
pub fn compat_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CEPHRBD_COMPAT_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test binary path");
    // The test binary is <target>/<profile>/deps/<name>.
    let target = exe.ancestors().nth(3).expect("<target>/<profile>/deps/<test>");
    target.join("x86_64-unknown-linux-gnu").join("release")
}

impl Plugin {
    /// Like [`Plugin::new`], with the executables of `bins` (e.g. [`compat_bin_dir`]).
    pub fn of(kind: Kind, bins: &Path) -> Self {
        let binary = bins.join(kind.binary());
        assert!(binary.is_file(), "{} is missing: run scripts/build-rpm (scripts/test does)", binary.display());
        Self::of_binary(kind, &binary)
    }

    /// Runs every call inside `chroot` (nothing changes for [`Chroot::host`]), with the
    /// plugin directory, the directory of its executables and `binds` (e.g. the lab
    /// directory holding ceph.conf and the keyring) mounted. The plugins' lock directory
    /// (`CEPHRBD_RUN_DIR`) moves into the plugin directory, so the chroot stays untouched.
    pub fn inside(mut self, chroot: &Chroot, binds: &[&Path]) -> Self {
        let first = self.methods.first().expect("a method");
        let target = std::fs::read_link(self.dir.join(first)).expect("method symlink");
        let bins = target.parent().expect("binary directory").to_path_buf();
        let run = self.dir.join(".run");
        std::fs::create_dir_all(&run).expect("create run dir");
        let mut all = vec![self.dir.as_path(), bins.as_path()];
        all.extend_from_slice(binds);
        self.prefix = chroot.prefix(&all);
        let run = run.display().to_string();
        self.with_env("CEPHRBD_RUN_DIR", run)
    }
}
