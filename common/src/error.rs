//! The errors of the operations, shared by both front ends.
//!
//! Layers, innermost first:
//! - [`CommandError`]: an external program could not run, failed, or hit its time limit;
//! - [`CephError`]: what a failed `rbd`/`ceph` call means;
//! - [`RequestError`]: the request was malformed (nothing was changed);
//! - [`OpError`]: what an operation reports, wrapping the others.
//!
//! Each front end turns an [`OpError`] into its own wire form in exactly one place: the
//! SMAPIv3 error object in `smapi::error`, the SMAPIv1 fault in the `legacy` crate. Both match every variant by name, so a new variant cannot be forgotten.

use std::fmt;

use crate::ceph::CephError;
use crate::process::runner::CommandError;

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
    /// A text field longer than cephrbd stores.
    #[error("{field} is {length} bytes long; at most {limit} are accepted")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        length: usize,
        /// The limit.
        limit: usize,
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
    /// Records of ours in the SR's header cannot be read (damaged, or written by something
    /// else). Nothing is dropped or repaired automatically: `volume --check` reports them.
    #[error("unreadable records in the SR (run `volume --check` on its SR string): {what}")]
    Unreadable {
        /// Each unreadable record and why.
        what: String,
    },
    /// The SR was written by a newer cephrbd whose layout this version does not know.
    #[error(
        "the SR has layout version {found}; this cephrbd understands up to {supported}: upgrade cephrbd on this host"
    )]
    LayoutTooNew {
        /// The SR's layout.
        found: u32,
        /// The newest layout this version knows.
        supported: u32,
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
    /// Volume.destroy of a volume that is open (a VM uses it, or a host still has it mapped).
    #[error("volume {key} is in use, open by: {holders}; detach it first")]
    InUse {
        /// The key.
        key: String,
        /// Who holds it open (each watcher of its image).
        holders: String,
    },
    /// No datapath mode can serve the volume on this host.
    #[error("no datapath can serve the volume on this host (policy {policy}): {reasons}")]
    NoDatapath {
        /// The SR's datapath policy.
        policy: &'static str,
        /// Why each mode the policy allows cannot, with its fix.
        reasons: String,
    },
    /// Another host activated the volume read-write at the same moment and won.
    #[error("volume {volume} was activated read-write on another host at the same moment; it is not active here")]
    ActivatedElsewhere {
        /// The volume.
        volume: String,
    },
    /// The mapping or daemon this host recorded for a volume is gone.
    #[error("volume {volume}: this host's {mode} mapping or daemon of it is gone (detach and attach it again)")]
    WriterGone {
        /// The volume.
        volume: String,
        /// The mode.
        mode: &'static str,
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
    /// An operation on a snapshot's data (attach, clone) of a snapshot whose data was
    /// destroyed (`Volume.data_destroy`): only its changed-block anchor is left.
    #[error(
        "volume {key} holds only changed-block tracking metadata (its data was destroyed by data_destroy): \
         {action} is not possible"
    )]
    DataDestroyed {
        /// The key.
        key: String,
        /// What was refused.
        action: &'static str,
    },
    /// An operation that needs a snapshot volume was given a writable one.
    #[error("volume {key} is not a snapshot: {action} is only possible on a snapshot")]
    NotSnapshot {
        /// The key.
        key: String,
        /// What was refused.
        action: &'static str,
    },
    /// `Volume.data_destroy` of a snapshot taken while changed block tracking was off: its
    /// data would be lost with nothing to keep.
    #[error(
        "volume {key} was not taken with changed block tracking enabled: destroying its data would keep \
         nothing a later list_changed_blocks could use (enable_cbt on its disk before the snapshot)"
    )]
    NoCbtMetadata {
        /// The key.
        key: String,
    },
    /// `Volume.list_changed_blocks` between volumes that are not the same disk at two
    /// points in time (not the same RBD image).
    #[error(
        "volumes {key} and {key2} share no history (they are not snapshots of the same disk): \
         no changed-block list exists between them"
    )]
    Unrelated {
        /// The first volume.
        key: String,
        /// The second volume.
        key2: String,
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

/// Where a value breaks its schema, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The path of the offending value inside the request (`size`, `configuration.pool`,
    /// `implementations[1]`); empty for the request as a whole.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "field `{}`: {}", self.path, self.message)
        }
    }
}

/// A schema file that cannot be used: an embedded-data bug, caught by the unit tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// No schema file exists for this method name.
    #[error("no schema for method `{method}`")]
    NoSchema {
        /// The method looked up.
        method: String,
    },
    /// A schema file is not valid JSON.
    #[error("schema file {file} is not valid JSON: {detail}")]
    Unparsable {
        /// The file name.
        file: String,
        /// serde_json's message.
        detail: String,
    },
    /// A schema uses something this validator does not implement.
    #[error("schema file {file} at {location}: {problem}")]
    Unsupported {
        /// The file name.
        file: String,
        /// A JSON pointer into the file.
        location: String,
        /// What is wrong.
        problem: String,
    },
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
