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
#[derive(Debug, thiserror::Error)]
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
        let name = match err {
            OpError::Request(r) => match r {
                RequestError::EmptyInput { .. }
                | RequestError::MalformedJson { .. }
                | RequestError::NotAnObject { .. }
                | RequestError::Invalid { .. }
                | RequestError::CommandLine { .. } => "Invalid_request",
                RequestError::UnknownMethod { .. } => "Unimplemented",
                RequestError::UnknownConfigKey { .. }
                | RequestError::MissingConfigKey { .. }
                | RequestError::BadConfigValue { .. } => "Invalid_device_config",
            },
            OpError::Ceph(c) => c.smapi_name(),
            OpError::Command(c) => c.smapi_name(),
            OpError::Schema(_) | OpError::InvalidResult { .. } | OpError::Panicked { .. } | OpError::Output(_) => {
                "Internal_error"
            }
        };
        SmapiError {
            code: BACKEND_FAILURE.to_owned(),
            params: vec![name.to_owned(), err.to_string()],
            backtrace: Backtrace { error: chain(err), files: Vec::new(), lines: Vec::new() },
        }
    }
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
