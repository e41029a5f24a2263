//! What a failed `rbd`/`ceph` call means: a small table of named stderr signatures
//! ([`SIGNATURES`]) and the tools' errno exit statuses ([`EXIT_CODES`]), classified into a
//! [`Kind`] and carried by a [`CephError`] that names the object the call was about.
//!
//! Classification goes from the connection to the object ([`classify`]): first what stops
//! the tool from reaching the cluster at all (no monitor address, an unreadable ceph.conf,
//! a keyring Ceph cannot load, refused credentials, a time limit), then, once a failure is
//! known to be a failed *connection*, never an object's absence: `rbd` exits 2 (ENOENT)
//! both for a missing image and for a keyring it cannot find, and reading the second as
//! the first turned a missing keyring into "pool does not exist" and a `rbd rm` into a
//! silent success. Lines Ceph prints while searching its default keyring locations
//! ([`NOISE`]) are ignored: the `ceph` tool prints them on every call, successful or not.

use std::time::Duration;

use crate::process::runner::CommandError;

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
    /// The monitors or OSDs could not be reached: the tool gave up by itself.
    Unreachable,
    /// The command was still running at its time limit and was killed.
    TimedOut,
    /// The pool is full or over quota.
    NoSpace,
    /// No key could be loaded: the keyring is missing, unreadable, or cannot be decoded.
    Keyring,
    /// The tool has no monitor address to contact (no `mon_host` in ceph.conf or
    /// device-config).
    NoMonitors,
    /// The Ceph configuration file cannot be read.
    ConfUnreadable,
    /// A kernel module the call needs is not loaded and cannot be loaded.
    KernelModule,
    /// Anything else.
    Other,
}

/// Lines Ceph prints while it searches for a keyring in its default places. The `ceph`
/// tool prints them on every call (it opens a first handle before reading its arguments),
/// so they say nothing about a failure; they also hold `(2) No such file or directory`.
pub const NOISE: &[&str] = &["unable to find a keyring on", "no keyring found at"];

/// Named stderr signatures of failures to reach the cluster, checked first, most specific
/// first. Each has a unit test against a sample captured from Ceph 16.2.
pub const CONNECTION_SIGNATURES: &[(&str, Kind)] = &[
    ("cannot identify monitors to contact", Kind::NoMonitors),
    ("unable to open config file", Kind::ConfUnreadable),
    ("monclient: keyring not found", Kind::Keyring),
    ("auth: failed to load", Kind::Keyring),
    ("(13) Permission denied", Kind::PermissionDenied),
    ("(1) Operation not permitted", Kind::PermissionDenied),
    ("RADOS permission denied", Kind::PermissionDenied),
    ("(110) Connection timed out", Kind::Unreachable),
    ("RADOS timed out", Kind::Unreachable),
    // `ceph`'s way of saying ENOENT on connect: no key found (monitors were checked above).
    ("RADOS object not found (error connecting to the cluster)", Kind::Keyring),
];

/// What `rbd` and `ceph` print when they could not connect at all, whatever the cause.
pub const CONNECT_FAILED: &[&str] = &["couldn't connect to the cluster", "error connecting to the cluster"];

/// Named stderr signatures of the `rbd`/`ceph` tools about objects, once connected, most
/// specific first. Each has a unit test against a captured sample. They are consulted
/// before [`EXIT_CODES`] because some failures exit with a code that means something else.
pub const SIGNATURES: &[(&str, Kind)] = &[
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
    #[error("Ceph refused the credentials of client.{user} (check ceph_user and keyring){hint}")]
    PermissionDenied {
        /// The cephx id used.
        user: String,
        /// More about the likely cause ("" or starting with "; "): an aes key refused by a
        /// cluster that allows only aes256k keys (`cephx`).
        hint: String,
        /// The failed command (boxed: this variant carries two texts).
        #[source]
        source: Box<CommandError>,
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
    /// The command did not finish within its time limit and was killed: the cluster is
    /// slow or stalled, or the operation too large for the limit.
    #[error("{what}: the Ceph call did not finish within {} s (cluster stalled or unhealthy, or the operation too large for the limit)", .limit.as_secs_f64())]
    TimedOut {
        /// What the call was about.
        what: String,
        /// The limit it had.
        limit: Duration,
        /// The killed command.
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
    /// No key could be loaded for the user.
    #[error("Ceph cannot load a key for client.{user} from {keyring}: the keyring is missing, unreadable or malformed (it must hold `key = <base64>` under [client.{user}]: ceph auth get client.{user})")]
    Keyring {
        /// The cephx id used.
        user: String,
        /// The keyring file, or where Ceph looked for one.
        keyring: String,
        /// The failed command (boxed: this variant carries two names).
        #[source]
        source: Box<CommandError>,
    },
    /// The keyring holds a key of a type this host's Ceph client cannot read (an aes256k
    /// key, `cephx`).
    #[error("the key of client.{user} {detail}")]
    KeyTypeUnsupported {
        /// The cephx id used.
        user: String,
        /// Where the key is, its type, the client, and the fix.
        detail: String,
        /// The failed command.
        #[source]
        source: Box<CommandError>,
    },
    /// There is no monitor address to contact.
    #[error(
        "no Ceph monitor to contact: {conf} has no mon_host and device-config gives none (set mon_host in either)"
    )]
    NoMonitors {
        /// The configuration file used.
        conf: String,
        /// The failed command.
        #[source]
        source: CommandError,
    },
    /// The configuration file cannot be read.
    #[error("cannot read the Ceph configuration file {conf} (check device-config ceph_conf)")]
    ConfUnreadable {
        /// The configuration file.
        conf: String,
        /// The failed command.
        #[source]
        source: CommandError,
    },
    /// A kernel module is missing.
    #[error("the kernel module `{module}` is not loaded and cannot be loaded: run `modprobe {module}`, or let datapath=auto use another mode")]
    KernelModule {
        /// The module.
        module: &'static str,
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
    /// A connection setting that cannot be handed to Ceph (device-config and URI parsing
    /// refuse these first; this is the driver's second check, before any command).
    #[error("{name} {value:?} cannot be handed to Ceph: {reason}")]
    BadSetting {
        /// The setting (`mon_host`, `keyring`, …).
        name: &'static str,
        /// Its value (never a secret: paths and addresses).
        value: String,
        /// Why.
        reason: String,
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
            CephError::TimedOut { .. } => Kind::TimedOut,
            CephError::NoSpace { .. } => Kind::NoSpace,
            CephError::Keyring { .. } | CephError::KeyTypeUnsupported { .. } => Kind::Keyring,
            CephError::NoMonitors { .. } => Kind::NoMonitors,
            CephError::ConfUnreadable { .. } => Kind::ConfUnreadable,
            CephError::KernelModule { .. } => Kind::KernelModule,
            // Never Invalid: idempotent steps read Invalid as "already done".
            CephError::Failed { .. } | CephError::BadSetting { .. } | CephError::BadOutput { .. } => Kind::Other,
        }
    }

    /// The failed command, if a command failed (not for unparsable output).
    pub fn command(&self) -> Option<&CommandError> {
        match self {
            CephError::NotFound { source, .. }
            | CephError::AlreadyExists { source, .. }
            | CephError::Busy { source, .. }
            | CephError::HasSnapshots { source, .. }
            | CephError::Refused { source, .. }
            | CephError::Unreachable { source, .. }
            | CephError::TimedOut { source, .. }
            | CephError::NoSpace { source }
            | CephError::NoMonitors { source, .. }
            | CephError::ConfUnreadable { source, .. }
            | CephError::KernelModule { source, .. }
            | CephError::Failed { source } => Some(source),
            CephError::Keyring { source, .. }
            | CephError::KeyTypeUnsupported { source, .. }
            | CephError::PermissionDenied { source, .. } => Some(source),
            CephError::BadSetting { .. } | CephError::BadOutput { .. } => None,
        }
    }

    /// The failed command, by value; the error itself when there is none.
    pub fn into_command(self) -> Result<CommandError, CephError> {
        match self {
            CephError::NotFound { source, .. }
            | CephError::AlreadyExists { source, .. }
            | CephError::Busy { source, .. }
            | CephError::HasSnapshots { source, .. }
            | CephError::Refused { source, .. }
            | CephError::Unreachable { source, .. }
            | CephError::TimedOut { source, .. }
            | CephError::NoSpace { source }
            | CephError::NoMonitors { source, .. }
            | CephError::ConfUnreadable { source, .. }
            | CephError::KernelModule { source, .. }
            | CephError::Failed { source } => Ok(source),
            CephError::Keyring { source, .. }
            | CephError::KeyTypeUnsupported { source, .. }
            | CephError::PermissionDenied { source, .. } => Ok(*source),
            other @ (CephError::BadSetting { .. } | CephError::BadOutput { .. }) => Err(other),
        }
    }
}

/// Classifies a failed command: [`NOISE`] lines are dropped; then a connection signature
/// ([`CONNECTION_SIGNATURES`]); then, for a failed connection ([`CONNECT_FAILED`]), its
/// errno (ENOENT: no key found; never a missing object); then an object signature
/// ([`SIGNATURES`]); then the exit status ([`EXIT_CODES`]).
pub fn classify(stderr: &str, exit_code: Option<i32>) -> Kind {
    let text: String = stderr.lines().filter(|l| !NOISE.iter().any(|n| l.contains(n))).collect::<Vec<_>>().join("\n");
    let signature = |table: &[(&str, Kind)]| table.iter().find(|(sig, _)| text.contains(sig)).map(|(_, k)| *k);
    if let Some(kind) = signature(CONNECTION_SIGNATURES) {
        return kind;
    }
    if CONNECT_FAILED.iter().any(|s| text.contains(s)) {
        return match exit_code {
            Some(2) => Kind::Keyring,
            Some(1 | 13) => Kind::PermissionDenied,
            Some(110) => Kind::Unreachable,
            _ => Kind::Other,
        };
    }
    if let Some(kind) = signature(SIGNATURES) {
        return kind;
    }
    EXIT_CODES.iter().find(|(code, _)| Some(*code) == exit_code).map_or(Kind::Other, |(_, kind)| *kind)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Issue 14 item 8: each way of failing to reach the cluster names its cause, never a
    /// missing object. Samples captured from `rbd`/`ceph` 16.2.15 against the lab cluster.
    #[test]
    fn connection_failures_name_their_cause() {
        let missing_keyring_rbd = "2026-11-30T10:14:06.469+0000 7fb518a91380 -1 auth: unable to find a keyring on /nonexistent/kr: (2) No such file or directory\n2026-11-30T10:14:06.469+0000 7fb518a91380 -1 AuthRegistry(0x55af70ee4998) no keyring found at /nonexistent/kr, disabling cephx\nrbd: couldn't connect to the cluster!\nrbd: listing images failed: (2) No such file or directory";
        let missing_keyring_ceph = "2026-11-30T10:14:13.345+0000 7f57f101b6c0 -1 auth: unable to find a keyring on /etc/ceph/ceph.client.admin.keyring,/etc/ceph/ceph.keyring,/etc/ceph/keyring,/etc/ceph/keyring.bin,: (2) No such file or directory\n2026-11-30T10:14:13.353+0000 7f57f081a6c0 -1 auth: unable to find a keyring on /nonexistent/kr: (2) No such file or directory\n[errno 2] RADOS object not found (error connecting to the cluster)";
        let keyring_is_a_directory = "2026-11-30T10:14:06.673+0000 7f99c1a8d380 -1 auth: error reading file: /tmp: bufferlist::read_file(/tmp): read error:(21) Is a directory\n2026-11-30T10:14:06.673+0000 7f99c1a8d380 -1 auth: failed to load /tmp: (21) Is a directory\n2026-11-30T10:14:06.673+0000 7f99c1a8d380 -1 monclient: keyring not found\nrbd: couldn't connect to the cluster!";
        let malformed_key = "2026-11-30T10:13:55.073+0000 7f4ff989f380 -1 auth: error parsing file kr: error setting modifier for [client.admin] type=key val=<redacted>: Malformed input\n2026-11-30T10:13:55.073+0000 7f4ff989f380 -1 auth: failed to load kr: (5) Input/output error\n2026-11-30T10:13:55.089+0000 7f4ff989f380 -1 monclient: keyring not found\nrbd: couldn't connect to the cluster!\nrbd: listing images failed: (5) Input/output error";
        let no_monitors_rbd = "2026-11-30T10:14:10.125+0000 7f7497e57380 -1 failed for service _ceph-mon._tcp\nunable to get monitor info from DNS SRV with service name: ceph-mon\n2026-11-30T10:14:10.125+0000 7f7497e57380 -1 monclient: get_monmap_and_config cannot identify monitors to contact\nrbd: couldn't connect to the cluster!";
        let no_monitors_ceph = "2026-11-30T10:14:10.261+0000 7f12d171b6c0 -1 monclient: get_monmap_and_config cannot identify monitors to contact\n[errno 2] RADOS object not found (error connecting to the cluster)";
        let missing_conf = "global_init: unable to open config file from search list /nonexistent.conf";
        let wrong_user = "2026-11-30T10:14:06.709+0000 7f51d0d816c0 -1 monclient(hunting): handle_auth_bad_method server allowed_methods [2] but i only support [2]\nrbd: couldn't connect to the cluster!";
        for (stderr, exit, kind) in [
            (missing_keyring_rbd, 2, Kind::Keyring),
            (missing_keyring_ceph, 1, Kind::Keyring),
            (keyring_is_a_directory, 21, Kind::Keyring),
            (malformed_key, 5, Kind::Keyring),
            (no_monitors_rbd, 2, Kind::NoMonitors),
            (no_monitors_ceph, 1, Kind::NoMonitors),
            (missing_conf, 1, Kind::ConfUnreadable),
            (wrong_user, 13, Kind::PermissionDenied),
        ] {
            assert_eq!(classify(stderr, Some(exit)), kind, "{stderr}");
        }
        // The `ceph` tool's keyring search noise does not turn other failures into a
        // missing object or a keyring problem.
        let noise = "2026-11-30T10:15:45.969+0000 7fa0cfdff6c0 -1 auth: unable to find a keyring on /etc/ceph/ceph.client.admin.keyring,/etc/ceph/ceph.keyring,/etc/ceph/keyring,/etc/ceph/keyring.bin,: (2) No such file or directory\n2026-11-30T10:15:45.969+0000 7fa0cfdff6c0 -1 AuthRegistry(0x7fa0c805b630) no keyring found at /etc/ceph/ceph.client.admin.keyring,/etc/ceph/ceph.keyring,/etc/ceph/keyring,/etc/ceph/keyring.bin,, disabling cephx";
        assert_eq!(classify(&format!("{noise}\nError EINVAL: invalid command"), Some(22)), Kind::Invalid);
        assert_eq!(classify(&format!("{noise}\nError ENOENT: unrecognized pool 'nope'"), Some(2)), Kind::NotFound);
    }
}
