//! What a failed `rbd`/`ceph` call means: a small table of named stderr signatures
//! ([`SIGNATURES`]) and the tools' errno exit statuses ([`EXIT_CODES`]), classified into a
//! [`Kind`] and carried by a [`CephError`] that names the object the call was about.

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
}
