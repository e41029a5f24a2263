//! Running `rbd` and `ceph`: the connection prefix built once ([`Conn::prefix`]), the time
//! limit of the SR, and the classification of every failure into a [`CephError`].
//!
//! Callers never see a `Command`: they call [`Conn::rbd`] / [`Conn::ceph`] (or the typed
//! wrappers of [`crate::ceph::rbd`] built on them), which run through
//! [`crate::process::runner`]. No secret is ever on a command line: the key is read by the
//! tool from the keyring file. Before the first command, the keys of that keyring (and of
//! every other file Ceph may read one from) are learnt by value ([`Conn::learn_secrets`]),
//! so that a tool printing one cannot leak it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::cephx::{self, KeyType};
use super::error::{classify, CephError, Kind};
use crate::process::runner::{Cmd, CommandError, Output, Program, Status};
use crate::process::secrets;

/// The programs of the Ceph driver, resolved once per process.
fn program(name: &'static str, cell: &'static OnceLock<Result<Program, String>>) -> Result<Program, CommandError> {
    cell.get_or_init(|| Program::resolve(name).map_err(|e| e.to_string()))
        .clone()
        .map_err(|_| CommandError::NotFound { program: name })
}

fn rbd_program() -> Result<Program, CommandError> {
    static CELL: OnceLock<Result<Program, String>> = OnceLock::new();
    program("rbd", &CELL)
}

fn rados_program() -> Result<Program, CommandError> {
    static CELL: OnceLock<Result<Program, String>> = OnceLock::new();
    program("rados", &CELL)
}

fn ceph_program() -> Result<Program, CommandError> {
    static CELL: OnceLock<Result<Program, String>> = OnceLock::new();
    program("ceph", &CELL)
}

/// How to reach one cluster as one user: rendered once into every command's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    /// The configuration file.
    pub conf: PathBuf,
    /// The cephx id (no `client.` prefix).
    pub id: String,
    /// The keyring file, if not the one ceph.conf names.
    pub keyring: Option<PathBuf>,
    /// Monitor addresses overriding ceph.conf.
    pub mon_host: Option<String>,
    /// The wall-clock limit of each call.
    pub timeout: Duration,
}

/// Why a value cannot be handed to Ceph as a name (pool, namespace, user): it would be read
/// as an option or split an image spec. `None` when it can.
pub fn name_problem(value: &str) -> Option<String> {
    option_like(value).or_else(|| {
        value
            .chars()
            .find(|c| matches!(c, '/' | '@') || c.is_whitespace() || c.is_control())
            .map(|c| format!("must not contain {c:?}"))
    })
}

/// An empty value, or one that starts with `-` (a command line would read it as an option).
fn option_like(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("must not be empty".to_owned());
    }
    value.starts_with('-').then(|| "must not start with '-'".to_owned())
}

/// Why a path cannot be handed to Ceph (ceph.conf, keyring): it must be absolute (never
/// read as an option, never relative to a working directory), without control characters,
/// and without `,` or `;`, which Ceph reads as separators of a search list. Spaces are
/// fine: the path always travels whole (one argument, one environment variable).
pub fn path_problem(path: &Path) -> Option<String> {
    let text = path.to_str()?;
    if !path.is_absolute() {
        return Some("must be an absolute path".to_owned());
    }
    text.chars()
        .find(|c| matches!(c, ',' | ';') || c.is_control())
        .map(|c| format!("must not contain {c:?} (Ceph reads ',' and ';' as separators of a list of paths)"))
}

/// Why a monitor list cannot be handed to Ceph: it must hold no whitespace (Ceph splits
/// `CEPH_ARGS` on spaces: `1.2.3.4 --log-file /x` would add options) and not start with
/// `-`. Separate addresses with `,`.
pub fn mon_host_problem(value: &str) -> Option<String> {
    option_like(value).or_else(|| {
        value
            .chars()
            .find(|c| c.is_whitespace() || c.is_control())
            .map(|c| format!("must not contain {c:?} (separate monitor addresses with ',')"))
    })
}

impl Conn {
    /// The first setting that cannot be handed to Ceph, as (name, value, reason); `None`
    /// when every one can. device-config and URI parsing refuse such values up front; the
    /// driver checks again before every command.
    pub fn problem(&self) -> Option<(&'static str, String, String)> {
        let path = |name: &'static str, p: &Path| path_problem(p).map(|why| (name, p.display().to_string(), why));
        path("ceph_conf", &self.conf)
            .or_else(|| name_problem(&self.id).map(|why| ("ceph_user", self.id.clone(), why)))
            .or_else(|| self.keyring.as_deref().and_then(|k| path("keyring", k)))
            .or_else(|| {
                self.mon_host.as_deref().and_then(|m| mon_host_problem(m).map(|why| ("mon_host", m.to_owned(), why)))
            })
    }

    /// The arguments every `rbd`/`ceph` call starts with, each `--name=value` in one
    /// argument, so that no value is ever read as an option (whatever it starts with, for
    /// Ceph's parser and for the `ceph` tool's Python one alike).
    ///
    /// Ceph's own client time limits are set a little below the wall-clock limit, so that
    /// the tool usually gives up by itself with a clear message before the runner kills it.
    pub fn prefix(&self) -> Vec<String> {
        let client_limit = self.timeout.saturating_sub(Duration::from_secs(1)).max(Duration::from_secs(1)).as_secs();
        let mut args = vec![format!("--conf={}", self.conf.display()), format!("--id={}", self.id)];
        if let Some(keyring) = &self.keyring {
            args.push(format!("--keyring={}", keyring.display()));
        }
        if let Some(mon) = &self.mon_host {
            args.push(format!("--mon-host={mon}"));
        }
        for option in ["--client-mount-timeout", "--rados-mon-op-timeout", "--rados-osd-op-timeout"] {
            args.push(format!("{option}={client_limit}"));
        }
        args
    }

    /// Runs `rbd <prefix> <args>`; `what` names the object for error messages.
    pub fn rbd(&self, what: &str, args: &[&str]) -> Result<Output, CephError> {
        let program = rbd_program().map_err(|source| CephError::Failed { source })?;
        self.run(&program, what, args)
    }

    /// Runs `rbd <prefix> <args>` that may rightly take longer than one call (a trash
    /// purge: every object of an image without object-map), killed after `limit` instead of
    /// the connection's limit. Each Ceph request it makes keeps the connection's limit
    /// (`--rados-osd-op-timeout`…), so a cluster that stops answering still ends it.
    pub fn rbd_long(&self, what: &str, args: &[&str], limit: Duration) -> Result<Output, CephError> {
        let program = rbd_program().map_err(|source| CephError::Failed { source })?;
        self.run_limited(&program, what, args, limit)
    }

    /// Runs `rados <prefix> <args>`; `what` names the object for error messages.
    pub fn rados(&self, what: &str, args: &[&str]) -> Result<Output, CephError> {
        let program = rados_program().map_err(|source| CephError::Failed { source })?;
        self.run(&program, what, args)
    }

    /// Runs `rados … --format json` and parses stdout as `T`.
    pub fn rados_json<T: DeserializeOwned>(&self, what: &str, args: &[&str]) -> Result<T, CephError> {
        let program = rados_program().map_err(|source| CephError::Failed { source })?;
        self.json_of(&program, what, args, "null")
    }

    /// Runs `ceph <prefix> <args>`; `what` names the object for error messages.
    pub fn ceph(&self, what: &str, args: &[&str]) -> Result<Output, CephError> {
        let program = ceph_program().map_err(|source| CephError::Failed { source })?;
        let mut full = vec![format!("--connect-timeout={}", self.timeout.as_secs())];
        full.extend(args.iter().map(|a| (*a).to_owned()));
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        self.run(&program, what, &full)
    }

    /// Runs `rbd … --format json` and parses stdout as `T`. An empty stdout is parsed as
    /// `empty` (some subcommands print nothing when there is nothing to list).
    pub fn rbd_json<T: DeserializeOwned>(&self, what: &str, args: &[&str], empty: &str) -> Result<T, CephError> {
        let mut full = args.to_vec();
        full.push("--format=json");
        let out = self.rbd(what, &full)?;
        parse_json(&out.stdout, empty, || format!("rbd {}", full.join(" ")))
    }

    /// Runs `ceph … --format json` and parses stdout as `T`.
    pub fn ceph_json<T: DeserializeOwned>(&self, what: &str, args: &[&str]) -> Result<T, CephError> {
        let mut full = args.to_vec();
        full.push("--format=json");
        let out = self.ceph(what, &full)?;
        parse_json(&out.stdout, "null", || format!("ceph {}", full.join(" ")))
    }

    /// Learns every key Ceph may read for this connection ([`secrets`]), so that none can
    /// surface in an error or a log line: the keyring given (or, without one, those
    /// ceph.conf names and Ceph's default search list), key files, and keys written in
    /// ceph.conf itself. Each file is read once per process.
    pub fn learn_secrets(&self) {
        static CONFS: Mutex<BTreeSet<(PathBuf, String)>> = Mutex::new(BTreeSet::new());
        let first = CONFS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((self.conf.clone(), self.id.clone()));
        if let Some(keyring) = &self.keyring {
            secrets::learn_keyring(keyring);
        }
        if !first {
            return;
        }
        for file in self.key_files() {
            secrets::learn_keyring(&file);
        }
    }

    /// Every file Ceph may read this connection's key from: the keyring device-config names,
    /// or else the ceph.conf's `keyring` list and Ceph's default places; a `keyfile`; and
    /// the ceph.conf itself (it may hold a `key`).
    fn key_files(&self) -> Vec<PathBuf> {
        let text = std::fs::read_to_string(&self.conf).unwrap_or_default();
        let mut files: Vec<String> = self.keyring.iter().map(|k| k.display().to_string()).collect();
        files.extend(conf_values(&text, "keyfile"));
        if self.keyring.is_none() {
            files.extend(
                conf_values(&text, "keyring")
                    .iter()
                    .chain([&DEFAULT_KEYRING.to_owned()])
                    .flat_map(|list| list.split([',', ';']).map(|p| self.expand(p.trim())).collect::<Vec<_>>()),
            );
        }
        files.push(self.conf.display().to_string());
        files.into_iter().filter(|f| !f.is_empty()).map(PathBuf::from).collect()
    }

    /// Expands Ceph's metavariables in a configured path (`$cluster`, `$name`, `$id`,
    /// `$type`).
    fn expand(&self, path: &str) -> String {
        let name = format!("client.{}", self.id);
        [("cluster", "ceph"), ("name", name.as_str()), ("id", self.id.as_str()), ("type", "client")]
            .iter()
            .fold(path.to_owned(), |p, (var, value)| {
                p.replace(&format!("${{{var}}}"), value).replace(&format!("${var}"), value)
            })
    }

    /// The keyring file in use, for messages: the one given, or where Ceph looks.
    /// The types of the keys in the files Ceph may read this connection's key from.
    pub fn key_types(&self) -> Vec<KeyType> {
        self.key_files().iter().flat_map(|f| cephx::key_types_in(f)).collect()
    }

    fn keyring_description(&self) -> String {
        match &self.keyring {
            Some(path) => path.display().to_string(),
            None => format!("the keyring {} names (or /etc/ceph/ceph.client.{}.keyring)", self.conf.display(), self.id),
        }
    }

    /// Runs another Ceph program that takes the same connection prefix (`rbd-nbd`).
    pub fn run_program(&self, program: &Program, what: &str, args: &[&str]) -> Result<Output, CephError> {
        self.run(program, what, args)
    }

    /// Runs another Ceph program with `--format=json` and parses its stdout as `T`.
    pub fn json_of<T: DeserializeOwned>(
        &self,
        program: &Program,
        what: &str,
        args: &[&str],
        empty: &str,
    ) -> Result<T, CephError> {
        let mut full = args.to_vec();
        full.push("--format=json");
        let out = self.run(program, what, &full)?;
        parse_json(&out.stdout, empty, || format!("{} {}", program.name(), full.join(" ")))
    }

    fn run(&self, program: &Program, what: &str, args: &[&str]) -> Result<Output, CephError> {
        self.run_limited(program, what, args, self.timeout)
    }

    fn run_limited(&self, program: &Program, what: &str, args: &[&str], limit: Duration) -> Result<Output, CephError> {
        if let Some((name, value, reason)) = self.problem() {
            return Err(CephError::BadSetting { name, value, reason });
        }
        self.learn_secrets();
        Cmd::new(program, limit)
            .args(self.prefix())
            .args(args)
            .run()
            .map_err(|source| self.classify_failure(what, source))
    }

    fn classify_failure(&self, what: &str, source: CommandError) -> CephError {
        let what = what.to_owned();
        if let CommandError::Failed { status: Status::TimedOut(limit), .. } = source {
            return CephError::TimedOut { what, limit, source };
        }
        match classify(source.stderr(), source.exit_code()) {
            Kind::NotFound => CephError::NotFound { what, source },
            Kind::AlreadyExists => CephError::AlreadyExists { what, source },
            Kind::Busy => CephError::Busy { what, source },
            Kind::HasSnapshots => CephError::HasSnapshots { what, source },
            Kind::Invalid => CephError::Refused { what, source },
            Kind::PermissionDenied => {
                let hint =
                    if source.stderr().contains("handle_auth_bad_method") && self.key_types().contains(&KeyType::Aes) {
                        format!(
                            "; or, on a cluster of Ceph 19.2.6/20.2.4 or later that allows only aes256k keys (a new \
                         cluster's default), this aes key is refused: {}",
                            cephx::aes_fix(&self.id)
                        )
                    } else {
                        String::new()
                    };
                CephError::PermissionDenied { user: self.id.clone(), hint, source: Box::new(source) }
            }
            Kind::Unreachable => CephError::Unreachable { limit: self.timeout, source },
            Kind::TimedOut => CephError::TimedOut { what, limit: self.timeout, source },
            Kind::NoSpace => CephError::NoSpace { source },
            Kind::Keyring
                if source.stderr().contains("error setting modifier")
                    && self.key_types().contains(&KeyType::Aes256k) =>
            {
                let client = cephx::client_version(Duration::from_secs(10))
                    .map(|(a, b, c)| format!(" ({a}.{b}.{c})"))
                    .unwrap_or_default();
                let detail = format!(
                    "in {} is of type aes256k, which this host's Ceph client{client} cannot read: {}",
                    self.keyring_description(),
                    cephx::aes_fix(&self.id)
                );
                CephError::KeyTypeUnsupported { user: self.id.clone(), detail, source: Box::new(source) }
            }
            Kind::Keyring => CephError::Keyring {
                user: self.id.clone(),
                keyring: self.keyring_description(),
                source: Box::new(source),
            },
            Kind::NoMonitors => CephError::NoMonitors { conf: self.conf.display().to_string(), source },
            Kind::ConfUnreadable => CephError::ConfUnreadable { conf: self.conf.display().to_string(), source },
            // `classify` never says so: only `krbd::map` recognises a missing module.
            Kind::KernelModule | Kind::Other => CephError::Failed { source },
        }
    }
}

/// Where Ceph looks for a keyring when nothing names one (`keyring`'s default).
const DEFAULT_KEYRING: &str =
    "/etc/ceph/$cluster.$name.keyring,/etc/ceph/$cluster.keyring,/etc/ceph/keyring,/etc/ceph/keyring.bin";

/// Every value of option `name` in a ceph.conf, in any section.
fn conf_values(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with(['#', ';', '[']))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| secrets::option_name(k) == name)
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .collect()
}

fn parse_json<T: DeserializeOwned>(stdout: &[u8], empty: &str, command: impl Fn() -> String) -> Result<T, CephError> {
    let text = String::from_utf8_lossy(stdout);
    let text = if text.trim().is_empty() { empty } else { text.trim() };
    serde_json::from_str(text).map_err(|e| CephError::BadOutput { command: command(), detail: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        Conn {
            conf: PathBuf::from("/etc/ceph/ceph.conf"),
            id: "xcp".to_owned(),
            keyring: Some(PathBuf::from("/etc/ceph/k")),
            mon_host: None,
            timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn prefix_carries_identity_and_client_time_limits() {
        let p = conn().prefix();
        assert_eq!(&p[..3], ["--conf=/etc/ceph/ceph.conf", "--id=xcp", "--keyring=/etc/ceph/k"]);
        assert!(p.iter().any(|a| a == "--rados-osd-op-timeout=29"), "{p:?}");
        assert!(p.iter().any(|a| a == "--client-mount-timeout=29"), "{p:?}");
    }

    /// Issue 14 item 7: no configuration value can become an option.
    #[test]
    fn values_that_could_be_read_as_options_are_refused() {
        let attack = "127.0.0.1:3300 --log-file /tmp/x --debug-auth 30";
        let mut c = conn();
        c.mon_host = Some(attack.to_owned());
        assert_eq!(c.problem().map(|p| p.0), Some("mon_host"));
        c.mon_host = Some("[v2:10.0.0.1:3300,v1:10.0.0.1:6789],10.0.0.2".to_owned());
        assert_eq!(c.problem(), None);
        c.keyring = Some(PathBuf::from("--debug-auth=30"));
        assert_eq!(c.problem().map(|p| p.0), Some("keyring"));
        c.keyring = Some(PathBuf::from("/etc/ceph/my keyring"));
        assert_eq!(c.problem(), None, "spaces in paths are fine");
        c.keyring = Some(PathBuf::from("/etc/ceph/a,/tmp/b"));
        assert_eq!(c.problem().map(|p| p.0), Some("keyring"));
        c.keyring = None;
        c.conf = PathBuf::from("ceph.conf");
        assert_eq!(c.problem().map(|p| p.0), Some("ceph_conf"));
        c.conf = PathBuf::from("/etc/ceph/ceph.conf");
        c.id = "-x".to_owned();
        assert_eq!(c.problem().map(|p| p.0), Some("ceph_user"));
    }
}
