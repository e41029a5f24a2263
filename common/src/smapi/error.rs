//! The one boundary where an [`OpError`] becomes the SMAPIv3 error object
//! `{"code","params","backtrace"}` that xapi-storage-script parses (docs/smapiv3.md,
//! "Errors"). Every error layer is matched variant by variant, with no catch-all arm, so a
//! new variant cannot reach xapi without a name.

use serde::Serialize;

use crate::ceph::CephError;
use crate::error::{chain, OpError, RequestError};
use crate::process::runner::{CommandError, Status};
use crate::process::secrets;

/// The error code xapi reports for every plugin failure (the Python bindings' default).
pub const BACKEND_FAILURE: &str = "SR_BACKEND_FAILURE";

/// The error object of the SMAPIv3 exec protocol, printed on stdout with exit status 1.
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
    /// The error object, with every secret the process knows scrubbed from its text
    /// ([`secrets::scrub`]): the last fence before xapi, which logs and shows it.
    fn from(err: &OpError) -> Self {
        let (name, detail) = params(err);
        SmapiError {
            code: BACKEND_FAILURE.to_owned(),
            params: vec![name.to_owned(), secrets::scrub(&detail)],
            backtrace: Backtrace { error: secrets::scrub(&chain(err)), files: Vec::new(), lines: Vec::new() },
        }
    }
}

/// `params` of the error object: the error name and its detail. For the IDL's own errors
/// the detail is the object's identifier, as the Python bindings send it.
fn params(err: &OpError) -> (&'static str, String) {
    let message = err.to_string();
    let name = match err {
        OpError::Request(r) => request_name(r),
        OpError::VolumeDoesNotExist { key } => return ("Volume_does_not_exist", key.clone()),
        OpError::SrDoesNotExist { uuid, .. } => return ("SR_does_not_exist", uuid.clone()),
        OpError::PoolNotFound { .. } => "Pool_does_not_exist",
        OpError::Unreadable { .. } => "SR_records_unreadable",
        OpError::LayoutTooNew { .. } => "SR_layout_too_new",
        OpError::NamespaceInUse { .. } => "SR_namespace_in_use",
        OpError::SrNotEmpty { .. } => "SR_not_empty",
        OpError::InUse { .. } => "Volume_in_use",
        OpError::NoDatapath { .. } => "Datapath_unavailable",
        OpError::ActivatedElsewhere { .. } => "Volume_activated_elsewhere",
        OpError::WriterGone { .. } => "Datapath_device_gone",
        OpError::ReadOnly { .. } => "Volume_read_only",
        OpError::DataDestroyed { .. } => "Volume_data_destroyed",
        OpError::NotSnapshot { .. } => "Volume_not_a_snapshot",
        OpError::NoCbtMetadata { .. } => "Volume_has_no_cbt_metadata",
        OpError::Unrelated { .. } => "Volumes_unrelated",
        OpError::Shrink { .. } => "Volume_shrink_refused",
        OpError::Locked { .. } => "SR_busy",
        OpError::Rollback { cause, .. } => params(cause).0,
        OpError::Ceph(c) => ceph_name(c),
        OpError::Command(c) => command_name(c),
        OpError::LocalState { .. }
        | OpError::Schema(_)
        | OpError::InvalidResult { .. }
        | OpError::Panicked { .. }
        | OpError::Output(_) => "Internal_error",
    };
    (name, message)
}

fn request_name(err: &RequestError) -> &'static str {
    match err {
        RequestError::EmptyInput { .. }
        | RequestError::MalformedJson { .. }
        | RequestError::NotAnObject { .. }
        | RequestError::Invalid { .. }
        | RequestError::CommandLine { .. }
        | RequestError::BadUri { .. }
        | RequestError::BadSize { .. }
        | RequestError::TooLong { .. } => "Invalid_request",
        RequestError::UnknownMethod { .. } => "Unimplemented",
        RequestError::UnknownConfigKey { .. }
        | RequestError::MissingConfigKey { .. }
        | RequestError::BadConfigValue { .. } => "Invalid_device_config",
    }
}

fn ceph_name(err: &CephError) -> &'static str {
    match err {
        CephError::NotFound { .. } => "Ceph_object_not_found",
        CephError::AlreadyExists { .. } => "Ceph_object_exists",
        CephError::Busy { .. } => "Ceph_object_busy",
        CephError::HasSnapshots { .. } => "Ceph_image_has_snapshots",
        CephError::Refused { .. } => "Ceph_request_refused",
        CephError::PermissionDenied { .. } => "Ceph_permission_denied",
        CephError::Unreachable { .. } => "Ceph_unreachable",
        CephError::TimedOut { .. } => "Timed_out",
        CephError::NoSpace { .. } => "Ceph_no_space",
        CephError::Keyring { .. } => "Ceph_keyring_unusable",
        CephError::KeyTypeUnsupported { .. } => "Ceph_key_type_unsupported",
        CephError::NoMonitors { .. } => "Ceph_no_monitors",
        CephError::ConfUnreadable { .. } => "Ceph_config_unreadable",
        CephError::KernelModule { .. } => "Kernel_module_missing",
        CephError::Failed { source } => command_name(source),
        CephError::BadSetting { .. } => "Invalid_device_config",
        CephError::BadOutput { .. } => "Ceph_bad_output",
    }
}

fn command_name(err: &CommandError) -> &'static str {
    match err {
        CommandError::NotFound { .. } => "Missing_dependency",
        CommandError::Spawn { .. } => "Internal_error",
        CommandError::Failed { status: Status::TimedOut(_), .. } => "Timed_out",
        CommandError::Failed { status: Status::Exit(_) | Status::Signal(_), .. } => "Command_failed",
    }
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

    #[test]
    fn a_time_limit_is_named_as_such() {
        let err = OpError::Command(CommandError::Failed {
            program: "sh",
            command: "sh".to_owned(),
            status: Status::TimedOut(std::time::Duration::from_secs(1)),
            stderr: String::new(),
        });
        assert_eq!(SmapiError::from(&err).params[0], "Timed_out");
    }
}
