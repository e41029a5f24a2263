//! The Ceph driver: connection arguments built once, and typed wrappers over the `rbd` and
//! `ceph` command-line tools.
//!
//! Callers never see a `Command`: they call [`Conn::rbd`] / [`Conn::ceph`] (or the typed
//! wrappers built on them), which prepend the connection prefix rendered by
//! [`Conn::prefix`] (`--conf`, `--id`, `--keyring`, `-m`, and Ceph's own client time limits)
//! and run through [`crate::runner`] with the SR's time limit. A failure is classified into
//! a [`CephError`] by a small table of named stderr signatures ([`SIGNATURES`]).
//!
//! No secret is ever on a command line: the key is read by the tool from the keyring file.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::config::DeviceConfig;
use crate::runner::{Cmd, CommandError, Output, Program};

/// How a failed Ceph call is understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The object (pool, image, snapshot, namespace) does not exist.
    NotFound,
    /// The object already exists.
    AlreadyExists,
    /// The object is in use (watchers, children, protected snapshot).
    Busy,
    /// An image cannot be removed because it has snapshots.
    HasSnapshots,
    /// The request was refused as invalid (e.g. unprotecting an unprotected snapshot).
    Invalid,
    /// The credentials were refused, or the user lacks a capability.
    PermissionDenied,
    /// The monitors or OSDs could not be reached within the time limit.
    Unreachable,
    /// The pool is full or over quota.
    NoSpace,
    /// Anything else.
    Other,
}

/// Named stderr signatures of the `rbd`/`ceph` tools, most specific first. Each has a unit
/// test against a captured sample. They are consulted before [`EXIT_CODES`] because some
/// failures exit with a code that means something else (a refused connection exits 13 or
/// 110 for the same cause).
pub const SIGNATURES: &[(&str, Kind)] = &[
    ("(13) Permission denied", Kind::PermissionDenied),
    ("(1) Operation not permitted", Kind::PermissionDenied),
    ("RADOS permission denied", Kind::PermissionDenied),
    ("(110) Connection timed out", Kind::Unreachable),
    ("RADOS timed out", Kind::Unreachable),
    ("(122) Disk quota exceeded", Kind::NoSpace),
    ("(28) No space left on device", Kind::NoSpace),
    ("image has snapshots", Kind::HasSnapshots),
    ("(17) File exists", Kind::AlreadyExists),
    ("(16) Device or resource busy", Kind::Busy),
    ("image still has watchers", Kind::Busy),
    ("(2) No such file or directory", Kind::NotFound),
    ("Error ENOENT", Kind::NotFound),
];

/// `rbd` and `ceph` exit with the errno of the failure: the meaning of the ones we act on.
pub const EXIT_CODES: &[(i32, Kind)] = &[
    (2, Kind::NotFound),
    (13, Kind::PermissionDenied),
    (16, Kind::Busy),
    (17, Kind::AlreadyExists),
    (22, Kind::Invalid),
    (28, Kind::NoSpace),
    (39, Kind::HasSnapshots),
    (110, Kind::Unreachable),
    (122, Kind::NoSpace),
];

/// A Ceph call that failed, with what it was about.
#[derive(Debug, thiserror::Error)]
pub enum CephError {
    /// The object does not exist.
    #[error("{what} does not exist")]
    NotFound {
        /// What was looked for (`image rbd/ns/x`).
        what: String,
        /// The failed command.
        #[source]
        source: CommandError,
    },
    /// The object already exists.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What was to be created.
        what: String,
        /// The failed command.
        #[source]
        source: CommandError,
    },
    /// The object is in use.
    #[error("{what} is in use")]
    Busy {
        /// What was busy.
        what: String,
        /// The failed command.
        #[source]
        source: CommandError,
    },
    /// The image cannot be removed: it has snapshots.
    #[error("{what} has snapshots")]
    HasSnapshots {
        /// The image.
        what: String,
        /// The failed command.
        #[source]
        source: CommandError,
    },
    /// Ceph refused the request as invalid in the object's present state.
    #[error("Ceph refused the request on {what}")]
    Refused {
        /// The object.
        what: String,
        /// The failed command.
        #[source]
        source: CommandError,
    },
    /// The credentials were refused.
    #[error("Ceph refused the credentials of client.{user} (check ceph_user and keyring)")]
    PermissionDenied {
        /// The cephx id used.
        user: String,
        /// The failed command.
        #[source]
        source: CommandError,
    },
    /// The cluster did not answer in time.
    #[error("the Ceph cluster did not answer within {} s (monitors unreachable or cluster unhealthy)", .limit.as_secs())]
    Unreachable {
        /// The time limit that was hit.
        limit: Duration,
        /// The failed command.
        #[source]
        source: CommandError,
    },
    /// The pool is full or over quota.
    #[error("the pool is full or over its quota")]
    NoSpace {
        /// The failed command.
        #[source]
        source: CommandError,
    },
    /// Any other failure.
    #[error("Ceph call failed")]
    Failed {
        /// The failed command.
        #[source]
        source: CommandError,
    },
    /// A tool answered with output we cannot parse.
    #[error("cannot parse the output of `{command}`: {detail}")]
    BadOutput {
        /// The command line (redacted).
        command: String,
        /// The parser's message.
        detail: String,
    },
}

impl CephError {
    /// The error name shown to xapi.
    pub fn smapi_name(&self) -> &'static str {
        match self {
            CephError::NotFound { .. } => "Ceph_object_not_found",
            CephError::AlreadyExists { .. } => "Ceph_object_exists",
            CephError::Busy { .. } => "Ceph_object_busy",
            CephError::HasSnapshots { .. } => "Ceph_image_has_snapshots",
            CephError::Refused { .. } => "Ceph_request_refused",
            CephError::PermissionDenied { .. } => "Ceph_permission_denied",
            CephError::Unreachable { .. } => "Ceph_unreachable",
            CephError::NoSpace { .. } => "Ceph_no_space",
            CephError::Failed { source } => source.smapi_name(),
            CephError::BadOutput { .. } => "Ceph_bad_output",
        }
    }

    /// The classification of this error.
    pub fn kind(&self) -> Kind {
        match self {
            CephError::NotFound { .. } => Kind::NotFound,
            CephError::AlreadyExists { .. } => Kind::AlreadyExists,
            CephError::Busy { .. } => Kind::Busy,
            CephError::HasSnapshots { .. } => Kind::HasSnapshots,
            CephError::Refused { .. } => Kind::Invalid,
            CephError::PermissionDenied { .. } => Kind::PermissionDenied,
            CephError::Unreachable { .. } => Kind::Unreachable,
            CephError::NoSpace { .. } => Kind::NoSpace,
            CephError::Failed { .. } | CephError::BadOutput { .. } => Kind::Other,
        }
    }
}

/// Classifies a failed command by its stderr signature, else by its exit status.
pub fn classify(stderr: &str, exit_code: Option<i32>) -> Kind {
    if let Some((_, kind)) = SIGNATURES.iter().find(|(sig, _)| stderr.contains(sig)) {
        return *kind;
    }
    EXIT_CODES.iter().find(|(code, _)| Some(*code) == exit_code).map_or(Kind::Other, |(_, kind)| *kind)
}

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

impl Conn {
    /// The connection a device-config describes.
    pub fn from_config(config: &DeviceConfig) -> Self {
        Conn {
            conf: config.ceph_conf.clone(),
            id: config.ceph_user.clone(),
            keyring: config.keyring.clone(),
            mon_host: config.mon_host.clone(),
            timeout: config.timeout,
        }
    }

    /// The arguments every `rbd`/`ceph` call starts with.
    ///
    /// Ceph's own client time limits are set a little below the wall-clock limit, so that
    /// the tool usually gives up by itself with a clear message before the runner kills it.
    pub fn prefix(&self) -> Vec<String> {
        let client_limit = self.timeout.saturating_sub(Duration::from_secs(1)).max(Duration::from_secs(1)).as_secs();
        let mut args = vec!["--conf".to_owned(), self.conf.display().to_string(), "--id".to_owned(), self.id.clone()];
        if let Some(keyring) = &self.keyring {
            args.extend(["--keyring".to_owned(), keyring.display().to_string()]);
        }
        if let Some(mon) = &self.mon_host {
            args.extend(["--mon-host".to_owned(), mon.clone()]);
        }
        for option in ["--client-mount-timeout", "--rados-mon-op-timeout", "--rados-osd-op-timeout"] {
            args.extend([option.to_owned(), client_limit.to_string()]);
        }
        args
    }

    /// Runs `rbd <prefix> <args>`; `what` names the object for error messages.
    pub fn rbd(&self, what: &str, args: &[&str]) -> Result<Output, CephError> {
        let program = rbd_program().map_err(|source| CephError::Failed { source })?;
        self.run(&program, what, args)
    }

    /// Runs `ceph <prefix> <args>`; `what` names the object for error messages.
    pub fn ceph(&self, what: &str, args: &[&str]) -> Result<Output, CephError> {
        let program = ceph_program().map_err(|source| CephError::Failed { source })?;
        let mut full = vec!["--connect-timeout".to_owned(), self.timeout.as_secs().to_string()];
        full.extend(args.iter().map(|a| (*a).to_owned()));
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        self.run(&program, what, &full)
    }

    /// Runs `rbd … --format json` and parses stdout as `T`. An empty stdout is parsed as
    /// `empty` (some subcommands print nothing when there is nothing to list).
    pub fn rbd_json<T: DeserializeOwned>(&self, what: &str, args: &[&str], empty: &str) -> Result<T, CephError> {
        let mut full = args.to_vec();
        full.extend(["--format", "json"]);
        let out = self.rbd(what, &full)?;
        parse_json(&out.stdout, empty, || format!("rbd {}", full.join(" ")))
    }

    /// Runs `ceph … --format json` and parses stdout as `T`.
    pub fn ceph_json<T: DeserializeOwned>(&self, what: &str, args: &[&str]) -> Result<T, CephError> {
        let mut full = args.to_vec();
        full.extend(["--format", "json"]);
        let out = self.ceph(what, &full)?;
        parse_json(&out.stdout, "null", || format!("ceph {}", full.join(" ")))
    }

    fn run(&self, program: &Program, what: &str, args: &[&str]) -> Result<Output, CephError> {
        Cmd::new(program, self.timeout)
            .args(self.prefix())
            .args(args)
            .run()
            .map_err(|source| self.classify_failure(what, source))
    }

    fn classify_failure(&self, what: &str, source: CommandError) -> CephError {
        if source.timed_out() {
            return CephError::Unreachable { limit: self.timeout, source };
        }
        let what = what.to_owned();
        match classify(source.stderr(), source.exit_code()) {
            Kind::NotFound => CephError::NotFound { what, source },
            Kind::AlreadyExists => CephError::AlreadyExists { what, source },
            Kind::Busy => CephError::Busy { what, source },
            Kind::HasSnapshots => CephError::HasSnapshots { what, source },
            Kind::Invalid => CephError::Refused { what, source },
            Kind::PermissionDenied => CephError::PermissionDenied { user: self.id.clone(), source },
            Kind::Unreachable => CephError::Unreachable { limit: self.timeout, source },
            Kind::NoSpace => CephError::NoSpace { source },
            Kind::Other => CephError::Failed { source },
        }
    }
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
        assert_eq!(&p[..6], ["--conf", "/etc/ceph/ceph.conf", "--id", "xcp", "--keyring", "/etc/ceph/k"]);
        assert!(p.windows(2).any(|w| w == ["--rados-osd-op-timeout", "29"]), "{p:?}");
        assert!(p.windows(2).any(|w| w == ["--client-mount-timeout", "29"]), "{p:?}");
    }

    /// Samples captured from Ceph 16.2.15 (Debian 12) against the lab cluster.
    #[test]
    fn stderr_signatures_classify_captured_samples() {
        let samples = [
            ("rbd: error opening image nope: (2) No such file or directory", Kind::NotFound),
            ("rbd: create error: (17) File exists", Kind::AlreadyExists),
            ("rbd: error: image still has watchers\nThis means the image is still open or the client using it crashed.", Kind::Busy),
            ("[errno 13] RADOS permission denied (error connecting to the cluster)", Kind::PermissionDenied),
            ("[errno 110] RADOS timed out (error connecting to the cluster)", Kind::Unreachable),
            ("rbd: delete error: (122) Disk quota exceeded", Kind::NoSpace),
            ("Error ENOENT: unrecognized pool 'nope'", Kind::NotFound),
            ("rbd: image has snapshots - these must be deleted with 'rbd snap purge' before the image can be removed.", Kind::HasSnapshots),
            ("something new", Kind::Other),
        ];
        for (stderr, kind) in samples {
            assert_eq!(classify(stderr, Some(1)), kind, "{stderr}");
        }
        // Messages without an errno in the text fall back to the exit status: "couldn't
        // connect to the cluster!" alone is a refused key (13) or a timeout (110).
        assert_eq!(classify("rbd: couldn't connect to the cluster!", Some(13)), Kind::PermissionDenied);
        assert_eq!(classify("rbd: couldn't connect to the cluster!", Some(110)), Kind::Unreachable);
        assert_eq!(classify("rbd: snap is already unprotected", Some(22)), Kind::Invalid);
        assert_eq!(classify("rbd: snap is already protected", Some(16)), Kind::Busy);
        assert_eq!(classify("rbd: snapshot 's1' is protected from removal.", Some(16)), Kind::Busy);
    }
}
