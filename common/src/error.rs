//! The error layers and the one boundary where they become the SMAPI error object.
//!
//! Layers, innermost first:
//! - [`CommandError`](crate::runner::CommandError): an external program could not run,
//!   failed, or hit its time limit;
//! - [`CephError`](crate::ceph::CephError): what a failed `rbd`/`ceph` call means;
//! - [`RequestError`]: the request was malformed (nothing was changed);
//! - [`OpError`]: what an operation reports, wrapping the others.
//!
//! [`SmapiError::from`] is the only place an error becomes the
//! `{"code","params","backtrace"}` object xapi-storage-script parses (smapiv3.md §1.3). It
//! matches every variant by name, so a new variant cannot be forgotten.

use serde::Serialize;

use crate::ceph::CephError;
use crate::runner::CommandError;
use crate::schema::{SchemaError, Violation};

/// The error code xapi reports for every plugin failure (the Python bindings' default).
pub const BACKEND_FAILURE: &str = "SR_BACKEND_FAILURE";

/// A request that cannot be carried out as written. Raised before any side effect.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Nothing was read from stdin in `--json` mode.
    #[error("{method}: no request on stdin (expected one JSON object)")]
    EmptyInput {
        /// The method called.
        method: String,
    },
    /// stdin did not hold exactly one JSON value.
    #[error("{method}: the request on stdin is not valid JSON: {detail}")]
    MalformedJson {
        /// The method called.
        method: String,
        /// The parser's message, with line and column.
        detail: String,
    },
    /// stdin held JSON that is not an object of named arguments.
    #[error("{method}: the request must be a JSON object of named arguments, got {found}")]
    NotAnObject {
        /// The method called.
        method: String,
        /// What was found instead.
        found: &'static str,
    },
    /// The request breaks the method's schema.
    #[error("{method}: invalid request: {violation}")]
    Invalid {
        /// The method called.
        method: String,
        /// Which field, and what is wrong with it.
        violation: Violation,
    },
    /// argv\[0\] (or argv\[1\] under the executable's own name) names no method we implement.
    #[error("unknown method `{name}`; this executable implements: {known}")]
    UnknownMethod {
        /// The name we were called by.
        name: String,
        /// The methods we do implement, comma-separated.
        known: String,
    },
    /// The positional command line could not be parsed.
    #[error("{method}: {message}")]
    CommandLine {
        /// The method called.
        method: String,
        /// clap's explanation.
        message: String,
    },
    /// A device-config key we do not know (a typo must not be ignored).
    #[error("unknown device-config key `{key}`; valid keys are: {valid}")]
    UnknownConfigKey {
        /// The key given.
        key: String,
        /// Every accepted key, comma-separated.
        valid: String,
    },
    /// A required device-config key is absent.
    #[error("device-config key `{key}` is required")]
    MissingConfigKey {
        /// The key.
        key: &'static str,
    },
    /// An SR string or volume URI that is not one of ours.
    #[error("invalid {what} URI {uri:?}: {reason}")]
    BadUri {
        /// `SR` or `volume`.
        what: &'static str,
        /// The string given.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A size that cannot be a disk.
    #[error("invalid size {size}: {reason}")]
    BadSize {
        /// The size asked for, in bytes.
        size: i64,
        /// Why it is refused.
        reason: String,
    },
    /// A device-config value that cannot be used.
    #[error("device-config key `{key}` has an invalid value {value:?}: {reason}")]
    BadConfigValue {
        /// The key.
        key: &'static str,
        /// The value given (device-config never carries secrets).
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

/// What an operation reports when it cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The request was refused before anything was changed.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A Ceph call failed.
    #[error(transparent)]
    Ceph(#[from] CephError),
    /// An external program failed outside the Ceph driver.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// IDL `Volume_does_not_exist`: no volume has this key in the SR.
    #[error("volume {key} does not exist in this SR")]
    VolumeDoesNotExist {
        /// The key asked for.
        key: String,
    },
    /// IDL `SR_does_not_exist`: the configuration or SR string names no cephrbd SR.
    #[error("no cephrbd SR {uuid} in {pool}/{namespace}")]
    SrDoesNotExist {
        /// The SR uuid expected.
        uuid: String,
        /// The pool.
        pool: String,
        /// The namespace.
        namespace: String,
    },
    /// The pool named in device-config does not exist (cephrbd never creates pools).
    #[error("pool `{pool}` does not exist; existing pools: {existing}")]
    PoolNotFound {
        /// The pool asked for.
        pool: String,
        /// The pools that exist, comma-separated.
        existing: String,
    },
    /// SR.create into a namespace that already holds another SR or foreign images.
    #[error("namespace {pool}/{namespace} is already in use: {reason}")]
    NamespaceInUse {
        /// The pool.
        pool: String,
        /// The namespace.
        namespace: String,
        /// What is there.
        reason: String,
    },
    /// SR.destroy of an SR that still has volumes.
    #[error("the SR still has {count} volume(s); destroy them first")]
    SrNotEmpty {
        /// How many volumes remain.
        count: usize,
    },
    /// An operation that needs a writable volume was given a snapshot.
    #[error("volume {key} is a read-only snapshot: {action} is not possible")]
    ReadOnly {
        /// The key.
        key: String,
        /// What was refused.
        action: &'static str,
    },
    /// A resize that would shrink the volume.
    #[error("volume {key} is {current} bytes: shrinking it to {requested} bytes is refused")]
    Shrink {
        /// The key.
        key: String,
        /// Its size now.
        current: u64,
        /// The size asked for.
        requested: i64,
    },
    /// Another cephrbd call on this host holds a lock (an SR's, a volume's) for too long.
    #[error("another operation on {sr} did not release its lock within {} s", .waited.as_secs())]
    Locked {
        /// What is locked (an SR or volume uuid).
        sr: String,
        /// How long we waited.
        waited: std::time::Duration,
    },
    /// Local state (lock files) could not be used.
    #[error("cannot use {path}")]
    LocalState {
        /// The file or directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An operation failed and undoing its completed steps failed too; the listed leftovers
    /// are repaired by the next call or the consistency check.
    #[error("{cause}; undoing the completed steps also failed: {}", .failures.join("; "))]
    Rollback {
        /// Why the operation failed.
        cause: Box<OpError>,
        /// Each undo step that failed, with its error.
        failures: Vec<String>,
    },
    /// A XenAPI callback (legacy driver) failed.
    #[error(transparent)]
    XenApi(#[from] crate::xenapi::XenApiError),
    /// The embedded schemas are broken (a packaging bug).
    #[error("internal error: {0}")]
    Schema(#[from] SchemaError),
    /// We produced a result that breaks the method's result schema (a bug of ours); it is
    /// refused rather than handed to xapi.
    #[error("internal error: {method} produced an invalid result: {violation}")]
    InvalidResult {
        /// The method.
        method: String,
        /// What is wrong with the result.
        violation: Violation,
    },
    /// The operation panicked (a bug of ours).
    #[error("internal error: {method} panicked: {message}")]
    Panicked {
        /// The method.
        method: String,
        /// The panic message.
        message: String,
    },
    /// Writing the answer failed.
    #[error("cannot write the answer to stdout")]
    Output(#[source] std::io::Error),
}

/// The error object of the SMAPIv3 exec protocol (smapiv3.md §1.3), printed on stdout with
/// exit status 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmapiError {
    /// The XenAPI error code.
    pub code: String,
    /// `[<error name>, <detail>…]`: xapi shows these to the administrator.
    pub params: Vec<String>,
    /// The cause chain.
    pub backtrace: Backtrace,
}

/// The `backtrace` member of [`SmapiError`]; all three fields are required by xapi.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backtrace {
    /// The whole error chain, outermost first, joined by `: `.
    pub error: String,
    /// Source files (unused by us; required by the protocol).
    pub files: Vec<String>,
    /// Source lines (unused by us; required by the protocol).
    pub lines: Vec<i64>,
}

impl From<&OpError> for SmapiError {
    fn from(err: &OpError) -> Self {
        let (name, detail) = smapi_params(err);
        SmapiError {
            code: BACKEND_FAILURE.to_owned(),
            params: vec![name.to_owned(), detail],
            backtrace: Backtrace { error: chain(err), files: Vec::new(), lines: Vec::new() },
        }
    }
}

/// `params` of the error object: the error name and its detail. For the IDL's own errors
/// the detail is the object's identifier, as the Python bindings send it.
fn smapi_params(err: &OpError) -> (&'static str, String) {
    let message = err.to_string();
    let name = match err {
        OpError::Request(r) => match r {
            RequestError::EmptyInput { .. }
            | RequestError::MalformedJson { .. }
            | RequestError::NotAnObject { .. }
            | RequestError::Invalid { .. }
            | RequestError::CommandLine { .. }
            | RequestError::BadUri { .. }
            | RequestError::BadSize { .. } => "Invalid_request",
            RequestError::UnknownMethod { .. } => "Unimplemented",
            RequestError::UnknownConfigKey { .. }
            | RequestError::MissingConfigKey { .. }
            | RequestError::BadConfigValue { .. } => "Invalid_device_config",
        },
        OpError::VolumeDoesNotExist { key } => return ("Volume_does_not_exist", key.clone()),
        OpError::SrDoesNotExist { uuid, .. } => return ("SR_does_not_exist", uuid.clone()),
        OpError::PoolNotFound { .. } => "Pool_does_not_exist",
        OpError::NamespaceInUse { .. } => "SR_namespace_in_use",
        OpError::SrNotEmpty { .. } => "SR_not_empty",
        OpError::ReadOnly { .. } => "Volume_read_only",
        OpError::Shrink { .. } => "Volume_shrink_refused",
        OpError::Locked { .. } => "SR_busy",
        OpError::Rollback { cause, .. } => smapi_params(cause).0,
        OpError::Ceph(c) => c.smapi_name(),
        OpError::XenApi(_) => "XenAPI_failure",
        OpError::Command(c) => c.smapi_name(),
        OpError::LocalState { .. }
        | OpError::Schema(_)
        | OpError::InvalidResult { .. }
        | OpError::Panicked { .. }
        | OpError::Output(_) => "Internal_error",
    };
    (name, message)
}

/// The error and its sources, outermost first, joined by `: `.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_object_has_the_three_required_members() {
        let err = OpError::Request(RequestError::EmptyInput { method: "SR.stat".to_owned() });
        let obj = serde_json::to_value(SmapiError::from(&err)).expect("serializes");
        assert_eq!(obj["code"], "SR_BACKEND_FAILURE");
        assert_eq!(obj["params"][0], "Invalid_request");
        assert!(obj["params"][1].as_str().expect("string").contains("SR.stat"));
        assert!(obj["backtrace"]["error"].is_string());
        assert!(obj["backtrace"]["files"].is_array());
        assert!(obj["backtrace"]["lines"].is_array());
    }
}
