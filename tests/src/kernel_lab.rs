//! The kernel lab: runs one command in a throwaway Linux guest that has `rbd.ko` and
//! `nbd.ko` (Debian's 6.1 kernel under QEMU), through `scripts/kernel-lab/run`
//! (docs/kernel-lab.md).
//!
//! The guest sees the host's whole filesystem at the same paths (writes stay in the guest),
//! fresh `/run` and `/var/log`, udev running, and the host's test cluster at its usual
//! `127.0.0.1` addresses. The command runs as root in the test's current directory with a
//! minimal `PATH` and only the environment given here. Directories passed in `share` are
//! live and writable: what the command writes there is on the host afterwards.
//!
//! A failure of the lab itself (no boot, kernel panic, hung guest) panics with the tail of
//! the guest's serial console; the command's own failure is an ordinary [`GuestOutcome`].

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// What the command did in the guest.
#[derive(Debug, Clone)]
pub struct GuestOutcome {
    /// The command's exit status (124 when it was killed at the limit: see `timed_out`).
    pub status: i32,
    /// True when the command did not finish within its limit and was killed.
    pub timed_out: bool,
    /// Everything the command printed on stdout.
    pub stdout: String,
    /// Everything the command printed on stderr.
    pub stderr: String,
    /// The guest's serial console (kernel messages, the lab's own steps).
    pub console_log_path: PathBuf,
    /// From QEMU's start until the guest was ready to run the command.
    pub boot: Duration,
    /// How long the command ran.
    pub elapsed: Duration,
}

/// Less common settings of a guest.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Kernel modules absent from the guest's module tree (`modprobe` fails for them as on
    /// a host whose kernel lacks them), e.g. `["rbd"]`.
    pub no_modules: Vec<String>,
    /// Limit on the boot (the script's default when `None`: 240 s under TCG).
    pub boot_timeout: Option<Duration>,
}

/// The lab's entry point, relative to this crate.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kernel-lab/run")
}

/// Runs `cmd` in a fresh guest with `env` as its environment (plus `PATH`, `HOME`,
/// `KERNEL_LAB_GUEST=1`) and `share` visible and writable at the same paths; the command
/// is killed after `limit`. Panics when the lab itself fails.
pub fn run(cmd: &[&str], env: &[(&str, &str)], share: &[&Path], limit: Duration) -> GuestOutcome {
    run_with(&Options::default(), cmd, env, share, limit)
}

/// [`run`] with [`Options`].
pub fn run_with(
    options: &Options,
    cmd: &[&str],
    env: &[(&str, &str)],
    share: &[&Path],
    limit: Duration,
) -> GuestOutcome {
    assert!(!cmd.is_empty(), "kernel_lab::run needs a command");
    let report = std::env::temp_dir().join(format!("cephrbd-kernel-lab-report-{}", uuid::Uuid::new_v4()));
    let limit_s = limit.as_secs().max(1) + u64::from(limit.subsec_nanos() > 0);
    let boot_s = options.boot_timeout.map(|b| b.as_secs().max(1));

    let mut command = Command::new(script());
    command.arg("--quiet").arg("--timeout").arg(limit_s.to_string()).arg("--report").arg(&report);
    if let Some(b) = boot_s {
        command.arg("--boot-timeout").arg(b.to_string());
    }
    for dir in share {
        command.arg("--share").arg(dir);
    }
    for (key, value) in env {
        command.arg("--env").arg(format!("{key}={value}"));
    }
    for module in &options.no_modules {
        command.arg("--no-module").arg(module);
    }
    command.arg("--").args(cmd);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());

    let started = Instant::now();
    let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", script().display()));
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    // The script limits every step itself; this is only a backstop against the script
    // hanging (install, boot, command, 30 s grace, power-off).
    let backstop = Duration::from_secs(boot_s.unwrap_or(240) + limit_s + 300);
    let exit = wait_or_stop(&mut child, backstop);
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let _ = std::fs::remove_file(&report);
    let fields: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();

    let Some(exit) = exit else {
        panic!(
            "kernel lab: {} did not finish within {} s: stopped\n--- stderr ---\n{stderr}",
            script().display(),
            backstop.as_secs()
        );
    };
    match fields.get("result").copied() {
        Some("ok" | "timeout") => {}
        result => panic!(
            "kernel lab failure ({}; exit {exit:?}, after {:.1} s) running {cmd:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            result.unwrap_or("no report"),
            started.elapsed().as_secs_f64()
        ),
    }
    let millis = |key: &str| Duration::from_millis(fields.get(key).and_then(|v| v.parse().ok()).unwrap_or(0));
    GuestOutcome {
        status: fields.get("status").and_then(|s| s.parse().ok()).or(exit).unwrap_or(-1),
        timed_out: fields.get("result") == Some(&"timeout"),
        stdout,
        stderr,
        console_log_path: PathBuf::from(fields.get("console_log").copied().unwrap_or_default()),
        boot: millis("boot_ms"),
        elapsed: millis("cmd_ms"),
    }
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for the script; past `limit`, asks it to stop (SIGTERM: it then kills its QEMU and
/// reports), and kills it 15 s later. `Some(exit code)`, or `None` when it had to be stopped.
fn wait_or_stop(child: &mut Child, limit: Duration) -> Option<Option<i32>> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status.code()),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
            _ => break,
        }
    }
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let grace = Instant::now() + Duration::from_secs(15);
    while Instant::now() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A guest that stays up and runs shell scripts on demand ([`Guest::sh`]), so that one
/// boot serves many steps (`scripts/kernel-lab/agent.sh`). Dropping it powers it off.
#[derive(Debug)]
pub struct Guest {
    /// A name for messages.
    pub name: String,
    /// The directory shared with the guest (same path on both sides).
    pub dir: PathBuf,
    /// Marks the lab's process (in its arguments) so that a hung guest can be stopped.
    tag: String,
    next: Mutex<u64>,
    lab: Mutex<Option<thread::JoinHandle<GuestOutcome>>>,
}

/// What one plugin call in a [`Guest`] answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The exit status (0 with a result, 1 with an error object).
    pub status: i32,
    /// The one JSON value on stdout (`Null` if there was none: the process died).
    pub value: serde_json::Value,
    /// Its stderr (the log).
    pub stderr: String,
}

impl Answer {
    /// The result, after checking the call succeeded (panics with its error otherwise).
    pub fn ok(&self) -> &serde_json::Value {
        assert_eq!(self.status, 0, "call failed: {}\n{}", self.value, self.stderr);
        &self.value
    }

    /// The error's (name, message), after checking the call failed.
    pub fn error(&self) -> (String, String) {
        assert_eq!(self.status, 1, "call was expected to fail: {}", self.value);
        let param = |i: usize| self.value["params"][i].as_str().unwrap_or_default().to_owned();
        (param(0), param(1))
    }
}

/// What one script did in a [`Guest`].
#[derive(Debug, Clone)]
pub struct Shell {
    /// Its exit status.
    pub status: i32,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Shell {
    /// stdout, after checking the script succeeded (panics with its stderr otherwise).
    pub fn ok(&self) -> &str {
        assert_eq!(self.status, 0, "guest script failed: {}\n--- stderr ---\n{}", self.stdout, self.stderr);
        &self.stdout
    }
}

impl Guest {
    /// Boots a guest named `name` that serves scripts until dropped (at most `lifetime`).
    /// `dir` is created, shared, and holds the scripts and their output; anything else the
    /// guest must see live (plugin directories made after boot) belongs in it too.
    pub fn boot(name: &str, options: &Options, lifetime: Duration) -> Guest {
        let dir = std::env::temp_dir().join(format!("cephrbd-guest-{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("guest dir");
        let agent = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kernel-lab/agent.sh");
        let tag = format!("cephrbd-guest-{}", uuid::Uuid::new_v4().simple());
        let (options, dir_text, tag_env) = (options.clone(), dir.display().to_string(), tag.clone());
        let lab = thread::spawn(move || {
            let agent = agent.display().to_string();
            run_with(
                &options,
                &["bash", &agent, &dir_text],
                &[("CEPHRBD_GUEST", &tag_env)],
                &[Path::new(&dir_text)],
                lifetime,
            )
        });
        let guest = Guest { name: name.to_owned(), dir, tag, next: Mutex::new(0), lab: Mutex::new(Some(lab)) };
        let deadline = Instant::now() + Duration::from_secs(400);
        while !guest.dir.join("ready").exists() {
            if guest.lab_finished() || Instant::now() > deadline {
                panic!("guest {name} never became ready: {}", guest.stop_hung());
            }
            thread::sleep(Duration::from_millis(200));
        }
        guest
    }

    fn lab_finished(&self) -> bool {
        self.lab.lock().unwrap_or_else(PoisonError::into_inner).as_ref().is_some_and(thread::JoinHandle::is_finished)
    }

    /// Stops a guest that hangs (SIGTERM to its lab, which kills QEMU and reports) and
    /// returns what the lab said: its error with the tail of the serial console.
    fn stop_hung(&self) -> String {
        let _ = std::fs::write(self.dir.join("stop"), "");
        for entry in std::fs::read_dir("/proc").into_iter().flatten().filter_map(Result::ok) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let is_ours = String::from_utf8_lossy(&cmdline).contains(&self.tag)
                && cmdline
                    .split(|b| *b == 0)
                    .next()
                    .is_some_and(|argv0| argv0.ends_with(b"run") || argv0.ends_with(b"bash"));
            if is_ours {
                let _ = Command::new("kill").arg("-TERM").arg(entry.file_name()).status();
            }
        }
        let Some(lab) = self.lab.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return "the guest was stopped already".to_owned();
        };
        match lab.join() {
            Ok(outcome) => format!("the guest stopped: {outcome:?}"),
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "the lab failed".to_owned()),
        }
    }

    /// Runs `script` (bash) in the guest: the guest kills it after `limit` (status 124,
    /// the kernel log's tail in its stderr); a guest that does not answer 30 s later is
    /// stopped and the call panics with its serial console.
    pub fn sh(&self, script: &str, limit: Duration) -> Shell {
        let n = {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            let n = *next;
            let tmp = self.dir.join(format!("cmd.{n}.tmp"));
            std::fs::write(&tmp, format!("# limit={}\n{script}", limit.as_secs().max(1))).expect("write script");
            std::fs::rename(&tmp, self.dir.join(format!("cmd.{n}"))).expect("publish script");
            *next += 1;
            n
        };
        let status = self.dir.join(format!("status.{n}"));
        let deadline = Instant::now() + limit + Duration::from_secs(30);
        while !status.exists() {
            if Instant::now() > deadline || self.lab_finished() {
                panic!("guest {} hangs or stopped running script {n}:\n{script}\n{}", self.name, self.stop_hung());
            }
            thread::sleep(Duration::from_millis(50));
        }
        let read = |file: &str| std::fs::read_to_string(self.dir.join(format!("{file}.{n}"))).unwrap_or_default();
        Shell { status: read("status").trim().parse().unwrap_or(-1), stdout: read("out"), stderr: read("err") }
    }
}

impl Guest {
    /// Links the plugin executables into the guest's directory as xapi-storage-script's
    /// plugin directories hold them: `dp/<Method>` (datapath) and `vol/<Method>` (volume).
    pub fn install_plugins(&self) {
        for (kind, exe) in [("dp", "datapath"), ("vol", "volume")] {
            let dir = self.dir.join(kind);
            std::fs::create_dir_all(&dir).expect("plugin dir");
            let exe = crate::binary(exe);
            let listed = Command::new(&exe).arg("--list").output().expect("--list");
            for method in String::from_utf8_lossy(&listed.stdout).lines() {
                std::os::unix::fs::symlink(&exe, dir.join(method)).expect("symlink");
            }
        }
    }

    /// `<plugin dir>/<method> --json` in the guest ([`Guest::install_plugins`] first), as
    /// xapi-storage-script runs it: arguments on stdin, an environment of `PATH` and `env`
    /// (`KEY=VALUE` words) only, within `limit`.
    pub fn call(&self, method: &str, mut args: serde_json::Value, env: &str, limit: Duration) -> Answer {
        args["dbg"] = serde_json::json!(format!("kernel-lab:{method}"));
        let kind = if method.starts_with("Datapath.") { "dp" } else { "vol" };
        let file = self.dir.join(format!("args-{}.json", uuid::Uuid::new_v4().simple()));
        std::fs::write(&file, serde_json::to_vec(&args).expect("json")).expect("args");
        let script = format!(
            "env -i PATH=/usr/bin:/bin {env} {}/{kind}/{method} --json < {}",
            self.dir.display(),
            file.display()
        );
        let out = self.sh(&script, limit);
        let value = serde_json::from_str(out.stdout.trim()).unwrap_or(serde_json::Value::Null);
        Answer { status: out.status, value, stderr: out.stderr }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("stop"), "");
        if let Some(lab) = self.lab.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = lab.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
