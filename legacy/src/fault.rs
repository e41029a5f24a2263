//! Faults: the one place an error becomes an XML-RPC fault xapi understands
//! (docs/smapiv1.md, "Faults"). The codes are XE_SR_ERRORCODES numbers; the fault string is
//! `"<description> [opterr=<detail>]"`, as the Python SM drivers print it. Every error
//! variant is matched by name, with no catch-all arm.

use common::ceph::Kind;
use common::error::{chain, OpError, RequestError};

use crate::xenapi::XenApiError;
use crate::xmlrpc;

/// The XE_SR_ERRORCODES entries cephrbd reports: (code, name, description).
pub const ERROR_CODES: &[(i64, &str, &str)] = &[
    (16, "SRInUse", "The SR device is currently in use"),
    (24, "VDIInUse", "The VDI is currently in use"),
    (38, "Unimplemented", "The requested method is not supported/implemented"),
    (39, "SRNotEmpty", "The SR is not empty"),
    (40, "SRScan", "The SR scan failed "),
    (44, "SRNoSpace", "There is insufficient space"),
    (46, "VDIUnavailable", "The VDI is not available"),
    (66, "VDIType", "Invalid VDI type"),
    (47, "SRUnavailable", "The SR is not available"),
    (78, "VDICreate", "VDI Creation failed"),
    (79, "VDISize", "VDI Invalid size"),
    (80, "VDIDelete", "Failed to mark VDI hidden"),
    (81, "VDIClone", "Failed to clone VDI"),
    (82, "VDISnapshot", "Failed to snapshot VDI"),
    (110, "VDIResize", "VDI resize failed"),
    (115, "ConfigParamsMissing", "Not all required parameters specified."),
    (143, "BadRequest", "Failed to parse the request"),
    (144, "VDIMissing", "VDI could not be found"),
    (153, "APIFailure", "A Failure occurred accessing an API object"),
    (202, "SMGeneral", "General backend error"),
    (457, "CBTActivateFailed", "Unable to activate changed block tracking."),
    (458, "CBTDeactivateFailed", "Unable to deactivate changed block tracking."),
    (460, "CBTChangedBlocksError", "Failed to calculate changed blocks for given VDIs."),
];

/// A legacy command that failed: the XE_SR_ERRORCODES number and the detail.
#[derive(Debug)]
pub struct Fault {
    /// The XE_SR_ERRORCODES number.
    pub code: i64,
    /// What went wrong, for the administrator (`opterr`).
    pub detail: String,
}

impl Fault {
    /// A fault with this code and detail.
    pub fn new(code: i64, detail: impl Into<String>) -> Self {
        Fault { code, detail: detail.into() }
    }

    /// The fault for an operation error; `command_code` is the failing command's own code
    /// (`VDICreate`, `VDISnapshot`…), used where the error has no more specific one.
    pub fn of(command_code: i64, err: &OpError) -> Fault {
        Fault::new(code_of(command_code, err), chain(err))
    }

    /// A XenAPI callback that failed (`APIFailure`).
    pub fn xenapi(err: &XenApiError) -> Fault {
        Fault::new(153, chain(err))
    }

    /// The `methodResponse` document carrying this fault.
    pub fn render(&self) -> String {
        let description = ERROR_CODES.iter().find(|(c, _, _)| *c == self.code).map_or("", |(_, _, d)| d);
        xmlrpc::fault(self.code, &format!("{description} [opterr={}]", self.detail))
    }
}

fn code_of(command_code: i64, err: &OpError) -> i64 {
    match err {
        OpError::Request(r) => match r {
            RequestError::UnknownConfigKey { .. }
            | RequestError::MissingConfigKey { .. }
            | RequestError::BadConfigValue { .. } => 115,
            RequestError::BadSize { .. } => 79,
            RequestError::EmptyInput { .. }
            | RequestError::MalformedJson { .. }
            | RequestError::NotAnObject { .. }
            | RequestError::Invalid { .. }
            | RequestError::UnknownMethod { .. }
            | RequestError::CommandLine { .. }
            | RequestError::BadUri { .. }
            | RequestError::TooLong { .. } => 143,
        },
        OpError::Shrink { .. } => 79,
        OpError::VolumeDoesNotExist { .. } => 144,
        OpError::SrNotEmpty { .. } => 39,
        OpError::InUse { .. } => 24,
        OpError::SrDoesNotExist { .. }
        | OpError::PoolNotFound { .. }
        | OpError::Unreadable { .. }
        | OpError::LayoutTooNew { .. } => 47,
        OpError::NamespaceInUse { .. } => 16,
        OpError::NotSnapshot { .. } | OpError::NoCbtMetadata { .. } => 66,
        OpError::Unrelated { .. } => 460,
        OpError::Ceph(c) => match c.kind() {
            Kind::Unreachable | Kind::TimedOut | Kind::PermissionDenied => 47,
            Kind::Busy => 24,
            Kind::NoSpace => 44,
            Kind::NotFound | Kind::AlreadyExists | Kind::HasSnapshots | Kind::Invalid | Kind::Other => command_code,
        },
        OpError::Rollback { cause, .. } => code_of(command_code, cause),
        OpError::ReadOnly { .. }
        | OpError::DataDestroyed { .. }
        | OpError::Locked { .. }
        | OpError::Command(_)
        | OpError::LocalState { .. }
        | OpError::Schema(_)
        | OpError::InvalidResult { .. }
        | OpError::Panicked { .. }
        | OpError::Output(_) => command_code,
    }
}
