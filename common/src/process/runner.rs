//! The only place cephrbd starts an external program.
//!
//! Every call to `rbd`, `ceph`, `qemu-storage-daemon`, … goes through [`Cmd::run`], which:
//! - runs a [`Program`] resolved once to an absolute path from [`SEARCH_PATH`], never from
//!   `$PATH` (xapi-storage-script runs plugins with a minimal environment);
//! - clears the environment and sets a minimal one ([`CHILD_ENV`]);
//! - logs the program and its **redacted** arguments at `debug` before spawning;
//! - reads stdout and stderr concurrently, on threads, so a chatty child cannot deadlock;
//! - enforces a wall-clock time limit: the child runs in its own process group, which is
//!   killed with SIGKILL at the limit, then reaped;
//! - on failure returns a [`CommandError`] that keeps the exit status (or signal, or time
//!   limit) and the trimmed, capped, redacted stderr.
//!
//! [`redact`] hides secrets by pattern (`--key V`, `key=V`) and
//! [`secrets::scrub`](super::secrets::scrub) by value (every key the driver can know),
//! for the log line and the error alike: both the command line and the child's stderr
//! (where Ceph prints an undecodable key) go through both. cephrbd never puts a secret on
//! a command line; the redaction is a second fence.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tracing::debug;

use super::secrets;

/// Where programs are looked up, in order. Fixed: `$PATH` is not trusted to be set.
pub const SEARCH_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// The whole environment a child sees. `TZ=UTC`: the times Ceph's tools print (image and
/// snapshot timestamps) are then in UTC, whatever the host's zone.
pub const CHILD_ENV: &[(&str, &str)] = &[("PATH", SEARCH_PATH), ("LC_ALL", "C"), ("LANG", "C"), ("TZ", "UTC")];

/// How much of a child's stderr is kept in an error.
pub const STDERR_CAP: usize = 4096;

/// How long to wait for a killed child to be reaped before giving up on it (a process in
/// uninterruptible sleep, e.g. stuck in the kernel, cannot die at once).
const REAP_GRACE: Duration = Duration::from_secs(5);

/// Argument names whose value is a secret, wherever they appear (`--key V`, `--key=V`,
/// `key=V` inside a `,`- or `:`-separated option string).
const SECRET_NAMES: &[&str] = &["key", "secret", "password"];

/// An external program, resolved to an absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    name: &'static str,
    path: PathBuf,
}

impl Program {
    /// Finds `name` in [`SEARCH_PATH`].
    ///
    /// ```
    /// let sh = common::process::runner::Program::resolve("sh").unwrap();
    /// assert!(sh.path().is_absolute());
    /// ```
    pub fn resolve(name: &'static str) -> Result<Program, CommandError> {
        which::which_in(name, Some(SEARCH_PATH), "/")
            .map(|path| Program { name, path })
            .map_err(|_| CommandError::NotFound { program: name })
    }

    /// A program at a known absolute path (our own helpers, outside [`SEARCH_PATH`]).
    pub fn at(name: &'static str, path: &Path) -> Result<Program, CommandError> {
        if path.is_file() {
            Ok(Program { name, path: path.to_path_buf() })
        } else {
            Err(CommandError::NotFound { program: name })
        }
    }

    /// The program's short name (`rbd`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The absolute path that is executed.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// How a failed command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It exited with this non-zero status.
    Exit(i32),
    /// It was killed by this signal (not by us).
    Signal(i32),
    /// It was still running at its time limit and was killed.
    TimedOut(Duration),
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Exit(code) => write!(f, "exited with status {code}"),
            Status::Signal(sig) => write!(f, "was killed by signal {sig}"),
            Status::TimedOut(limit) => write!(f, "did not finish within {} s and was killed", limit.as_secs_f64()),
        }
    }
}

/// An external program could not be run, or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program is not installed in [`SEARCH_PATH`].
    #[error("required program `{program}` was not found in {SEARCH_PATH}")]
    NotFound {
        /// The program's name.
        program: &'static str,
    },
    /// The program exists but could not be started.
    #[error("cannot start `{program}`")]
    Spawn {
        /// The program's path.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The program ran and failed, or hit its time limit.
    #[error("`{command}` {status}{}", stderr_suffix(.stderr))]
    Failed {
        /// The program's short name.
        program: &'static str,
        /// The redacted command line.
        command: String,
        /// How it ended.
        status: Status,
        /// Its stderr, trimmed, redacted and capped at [`STDERR_CAP`] bytes.
        stderr: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

impl CommandError {
    /// True when the command was killed at its time limit.
    pub fn timed_out(&self) -> bool {
        matches!(self, CommandError::Failed { status: Status::TimedOut(_), .. })
    }

    /// The failed command's stderr, if it ran.
    pub fn stderr(&self) -> &str {
        match self {
            CommandError::Failed { stderr, .. } => stderr,
            CommandError::NotFound { .. } | CommandError::Spawn { .. } => "",
        }
    }

    /// The failed command's exit status, if it exited.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            CommandError::Failed { status: Status::Exit(code), .. } => Some(*code),
            CommandError::Failed { .. } | CommandError::NotFound { .. } | CommandError::Spawn { .. } => None,
        }
    }
}

/// What a successful command printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Everything it wrote on stdout.
    pub stdout: Vec<u8>,
    /// Its stderr, trimmed and capped (progress and warnings).
    pub stderr: String,
    /// Wall-clock time from spawn to reap.
    pub elapsed: Duration,
}

/// One command to run: a program, its arguments, optional stdin, and a time limit.
///
/// ```no_run
/// use std::time::Duration;
/// use common::process::runner::{Cmd, Program};
/// let rbd = Program::resolve("rbd")?;
/// let out = Cmd::new(&rbd, Duration::from_secs(30)).args(["ls", "--format", "json", "rbd"]).run()?;
/// println!("{}", String::from_utf8_lossy(&out.stdout));
/// # Ok::<(), common::process::runner::CommandError>(())
/// ```
#[derive(Debug)]
pub struct Cmd<'a> {
    program: &'a Program,
    args: Vec<OsString>,
    env: Vec<(&'static str, String)>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl<'a> Cmd<'a> {
    /// A command that runs `program` for at most `timeout`, and never past what is left of
    /// that limit in the current call ([`super::deadline`]).
    pub fn new(program: &'a Program, timeout: Duration) -> Self {
        Cmd { program, args: Vec::new(), env: Vec::new(), stdin: None, timeout: super::deadline::remaining(timeout) }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Adds one variable to the child's minimal environment (e.g. `CEPH_ARGS` for a
    /// program that has no option for what it carries). Logged like an argument.
    pub fn env(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.env.push((key, value.into()));
        self
    }

    /// Feeds `input` to the child's stdin (the way to hand it a secret).
    pub fn stdin(mut self, input: Vec<u8>) -> Self {
        self.stdin = Some(input);
        self
    }

    /// The redacted command line, as logged and as put in errors.
    pub fn display(&self) -> String {
        let mut words: Vec<String> = self.env.iter().map(|(k, v)| redact_text(&format!("{k}={v:?}"))).collect();
        words.push(self.program.name.to_owned());
        words.extend(redact(&self.args));
        secrets::scrub(&words.join(" "))
    }

    /// Runs the command to completion or to its time limit.
    pub fn run(self) -> Result<Output, CommandError> {
        let command = self.display();
        if self.timeout.is_zero() {
            debug!(target: "cephrbd::exec", program = self.program.name, %command, "not run: the call's time limit is spent");
            return Err(CommandError::Failed {
                program: self.program.name,
                command,
                status: Status::TimedOut(self.timeout),
                stderr: "not started: the call's time limit was already spent".to_owned(),
            });
        }
        debug!(target: "cephrbd::exec", program = self.program.name, timeout_s = self.timeout.as_secs_f64(), %command, "exec");
        let started = Instant::now();
        let mut child = self.spawn()?;
        let pid = child.id();
        let stdin_writer = child.stdin.take().map(|mut pipe| {
            let input = self.stdin.clone().unwrap_or_default();
            // A child that exits without reading its stdin closes the pipe: not our error.
            thread::spawn(move || drop(pipe.write_all(&input)))
        });
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || drop(tx.send(child.wait())));

        let waited = match rx.recv_timeout(self.timeout) {
            Ok(result) => Some(result),
            Err(_) => {
                kill_group(pid);
                rx.recv_timeout(REAP_GRACE).ok().map(|_| Err(io::Error::from(io::ErrorKind::TimedOut)))
            }
        };
        let elapsed = started.elapsed();
        drop(stdin_writer);
        let status = match waited {
            Some(Ok(status)) => exit_status(status),
            Some(Err(e)) if e.kind() == io::ErrorKind::TimedOut => Err(Status::TimedOut(self.timeout)),
            Some(Err(e)) => {
                return Err(CommandError::Spawn { program: self.program.path.display().to_string(), source: e })
            }
            None => Err(Status::TimedOut(self.timeout)),
        };
        let collect = |rx: mpsc::Receiver<Vec<u8>>| rx.recv_timeout(REAP_GRACE).unwrap_or_default();
        let stdout = collect(stdout);
        let stderr = tidy_stderr(&collect(stderr));
        debug!(target: "cephrbd::exec", program = self.program.name, elapsed_ms = elapsed.as_secs_f64() * 1e3,
               ok = status.is_ok(), "exec done");
        super::inject::after_command();
        match status {
            Ok(()) => Ok(Output { stdout, stderr, elapsed }),
            Err(status) => Err(CommandError::Failed { program: self.program.name, command, status, stderr }),
        }
    }

    /// Starts the command in a session of its own and returns at once: it outlives this
    /// process, with no stdin, stdout or stderr (nothing reaches the protocol answer), and no
    /// time limit of ours. Only for work that may be interrupted and resumed (a trash
    /// purge): wrap it in `timeout` to bound it.
    pub fn spawn_detached(self) -> Result<(), CommandError> {
        debug!(target: "cephrbd::exec", program = self.program.name, command = %self.display(), "exec detached");
        let mut cmd = self.command();
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: setsid(2) is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| if libc::setsid() == -1 { Err(io::Error::last_os_error()) } else { Ok(()) });
        }
        let child = cmd
            .spawn()
            .map_err(|source| CommandError::Spawn { program: self.program.path.display().to_string(), source })?;
        // Reaped by init once this process exits; a thread reaps it sooner if we live on.
        thread::spawn(move || {
            let mut child = child;
            drop(child.wait());
        });
        Ok(())
    }

    /// The program with its arguments and only the environment we give it, run from `/`.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program.path);
        cmd.args(&self.args)
            .env_clear()
            .envs(CHILD_ENV.iter().copied())
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir("/");
        cmd
    }

    fn spawn(&self) -> Result<Child, CommandError> {
        let mut cmd = self.command();
        cmd.stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so the time limit kills helpers it forks too.
            .process_group(0);
        cmd.spawn().map_err(|source| CommandError::Spawn { program: self.program.path.display().to_string(), source })
    }
}

/// Reads a pipe to its end on a thread; the receiver gets everything read.
fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error ends the stream; what was read so far is kept.
            let _ = pipe.read_to_end(&mut buf);
        }
        drop(tx.send(buf));
    });
    rx
}

/// True if `pid` is a live process (not a zombie) whose command line contains `marker`
/// (guards against a recycled pid).
pub fn alive_with(pid: i32, marker: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesised command name.
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    if matches!(state, None | Some('Z' | 'X')) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains(marker)
}

/// Sends `signal` to `pid`; false if it could not be sent.
pub fn signal(pid: i32, signal: libc::c_int) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) == 0 }
}

fn kill_group(pid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill(2) has no memory-safety preconditions; the group id is the child's pid,
    // which is not reaped yet (the waiter thread has not returned), so it cannot be reused.
    let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
    debug!(target: "cephrbd::exec", pid, rc, "killed process group at its time limit");
}

fn exit_status(status: ExitStatus) -> Result<(), Status> {
    if status.success() {
        Ok(())
    } else if let Some(code) = status.code() {
        Err(Status::Exit(code))
    } else {
        Err(Status::Signal(status.signal().unwrap_or(0)))
    }
}

fn tidy_stderr(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    // Scrubbed whole, before the cap: a cut must never leave half a secret.
    let text = secrets::scrub(&redact_text(text.trim()));
    if text.len() <= STDERR_CAP {
        return text;
    }
    let mut cut = STDERR_CAP;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes cut)", &text[..cut], text.len() - cut)
}

/// Hides secret values in a command line: the argument after `--key`, and the value of
/// `key=`/`secret=`/`password=` in any argument.
///
/// ```
/// use std::ffi::OsString;
/// let args: Vec<OsString> = ["--key", "AQBs", "driver=rbd,key=AQBs,pool=p", "--id", "admin"].iter().map(OsString::from).collect();
/// assert_eq!(common::process::runner::redact(&args), ["--key", "<redacted>", "driver=rbd,key=<redacted>,pool=p", "--id", "admin"]);
/// ```
pub fn redact(args: &[OsString]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for arg in args {
        let text = arg.to_string_lossy();
        if hide_next {
            out.push("<redacted>".to_owned());
            hide_next = false;
            continue;
        }
        hide_next = SECRET_NAMES.iter().any(|n| text.strip_prefix("--") == Some(n));
        out.push(redact_text(&text));
    }
    out
}

/// Hides the value of every `name=value` whose name is a secret, up to the next `,`, `:`,
/// or whitespace.
fn redact_text(text: &str) -> String {
    const SEPARATORS: [char; 6] = [',', ':', ' ', '\t', '\n', '"'];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        // The earliest `name=` of any secret name.
        let hit = SECRET_NAMES
            .iter()
            .filter_map(|name| rest.find(&format!("{name}=")).map(|pos| (pos, pos + name.len() + 1)))
            .min();
        let Some((pos, value_start)) = hit else {
            out.push_str(rest);
            return out;
        };
        let standalone = pos == 0 || rest[..pos].ends_with(SEPARATORS) || rest[..pos].ends_with('-');
        let value_len = rest[value_start..].find(SEPARATORS).unwrap_or(rest.len() - value_start);
        out.push_str(&rest[..value_start]);
        if standalone && value_len > 0 {
            out.push_str("<redacted>");
        } else {
            out.push_str(&rest[value_start..value_start + value_len]);
        }
        rest = &rest[value_start + value_len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh() -> Program {
        Program::resolve("sh").expect("sh exists")
    }

    #[test]
    fn success_keeps_stdout_and_stderr() {
        let out = Cmd::new(&sh(), Duration::from_secs(10)).args(["-c", "echo out; echo err >&2"]).run().expect("runs");
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, "err");
    }

    #[test]
    fn exit_status_is_kept_apart_from_signals() {
        let err = Cmd::new(&sh(), Duration::from_secs(10)).args(["-c", "echo why >&2; exit 3"]).run().unwrap_err();
        assert_eq!(err.exit_code(), Some(3));
        assert_eq!(err.stderr(), "why");
        assert_eq!(err.to_string(), "`sh -c echo why >&2; exit 3` exited with status 3: why");
        let err = Cmd::new(&sh(), Duration::from_secs(10)).args(["-c", "kill -TERM $$"]).run().unwrap_err();
        assert!(matches!(err, CommandError::Failed { status: Status::Signal(15), .. }), "{err}");
    }

    #[test]
    fn hung_command_is_killed_at_its_limit_with_its_children() {
        let started = Instant::now();
        // The child forks a grandchild that holds stdout open: both must go.
        let err = Cmd::new(&sh(), Duration::from_millis(300)).args(["-c", "sleep 30 & sleep 30"]).run().unwrap_err();
        assert!(err.timed_out(), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    }

    #[test]
    fn chatty_child_does_not_deadlock() {
        let out = Cmd::new(&sh(), Duration::from_secs(20))
            .args(["-c", "head -c 1000000 /dev/zero; head -c 1000000 /dev/zero >&2"])
            .run()
            .expect("runs");
        assert_eq!(out.stdout.len(), 1_000_000);
        assert!(out.stderr.len() < STDERR_CAP + 64);
    }

    #[test]
    fn stdin_is_fed_and_environment_is_minimal() {
        let out = Cmd::new(&sh(), Duration::from_secs(10))
            .args(["-c", "cat; env"])
            .stdin(b"in\n".to_vec())
            .run()
            .expect("runs");
        let text = String::from_utf8(out.stdout).expect("utf8");
        assert!(text.starts_with("in\n"));
        assert!(text.contains(&format!("PATH={SEARCH_PATH}")));
        assert!(!text.contains("HOME="), "{text}");
    }

    #[test]
    fn missing_program_is_named() {
        let err = Program::resolve("no-such-program-cephrbd").unwrap_err();
        assert_eq!(
            err.to_string(),
            "required program `no-such-program-cephrbd` was not found in /usr/sbin:/usr/bin:/sbin:/bin"
        );
    }

    #[test]
    fn secrets_never_reach_the_error() {
        let err = Cmd::new(&sh(), Duration::from_secs(10))
            .args(["-c", "echo key=AQBsecret >&2; exit 1", "--key", "AQBsecret"])
            .run()
            .unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("AQBsecret"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn redaction_leaves_ordinary_words_alone() {
        assert_eq!(redact_text("monkey=1 keyring=/etc/k key=s3cr3t"), "monkey=1 keyring=/etc/k key=<redacted>");
        assert_eq!(redact_text("rbd:p/i:key=abc:conf=/c"), "rbd:p/i:key=<redacted>:conf=/c");
        assert_eq!(redact_text("secret=a,key=b"), "secret=<redacted>,key=<redacted>");
    }
}
