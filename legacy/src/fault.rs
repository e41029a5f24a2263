//! Faults: the one place an error becomes an XML-RPC fault xapi understands
//! (docs/smapiv1.md, "Faults"). The codes are XE_SR_ERRORCODES numbers; the fault string is
//! `"<description> [opterr=<detail>]"`, as the Python SM drivers print it. Every error
//! variant is matched by name, with no catch-all arm.

use common::ceph::Kind;
use common::error::{chain, OpError, RequestError};
use common::process::secrets;

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
    /// A fault with this code and detail. The detail reaches xapi's log and the
    /// administrator, so it is scrubbed of every secret the process knows
    /// ([`secrets::scrub`]), its control characters are written as escapes (`\u{1b}`:
    /// visible, and never in the document, where XML forbids them), and it is cut at
    /// [`MAX_DETAIL`] bytes (a request can be 16 MiB; its echo must not be).
    pub fn new(code: i64, detail: impl Into<String>) -> Self {
        Fault { code, detail: tidy(&secrets::scrub(&detail.into())) }
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

/// The longest fault detail, in bytes (a failed command's stderr is capped at 4 KiB).
pub const MAX_DETAIL: usize = 8192;

fn tidy(detail: &str) -> String {
    let mut out = String::with_capacity(detail.len().min(MAX_DETAIL + 64));
    for (at, c) in detail.char_indices() {
        if out.len() >= MAX_DETAIL {
            out.push_str(&format!("… ({} bytes cut)", detail.len() - at));
            break;
        }
        if (c.is_control() && c != '\n' && c != '\t') || !xmlrpc::is_xml_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
        OpError::InUse { .. } | OpError::ActivatedElsewhere { .. } => 24,
        OpError::NoDatapath { .. } | OpError::WriterGone { .. } => 46,
        OpError::SrDoesNotExist { .. }
        | OpError::PoolNotFound { .. }
        | OpError::Unreadable { .. }
        | OpError::LayoutTooNew { .. } => 47,
        OpError::NamespaceInUse { .. } => 16,
        OpError::NotSnapshot { .. } | OpError::NoCbtMetadata { .. } => 66,
        OpError::Unrelated { .. } => 460,
        OpError::Ceph(c) => match c.kind() {
            Kind::Unreachable
            | Kind::TimedOut
            | Kind::PermissionDenied
            | Kind::Keyring
            | Kind::NoMonitors
            | Kind::ConfUnreadable => 47,
            Kind::Busy => 24,
            Kind::NoSpace => 44,
            Kind::NotFound
            | Kind::AlreadyExists
            | Kind::HasSnapshots
            | Kind::Invalid
            | Kind::KernelModule
            | Kind::Other => command_code,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14 item 5: what a request held comes back visible, bounded, and well-formed.
    #[test]
    fn details_are_escaped_and_bounded() {
        let f = Fault::new(143, "methodName \u{1}\u{1b}[2J is unknown");
        assert_eq!(f.detail, "methodName \\u{1}\\u{1b}[2J is unknown");
        let huge = Fault::new(79, format!("size {:?} is not a number", "A".repeat(10 << 20)));
        assert!(huge.detail.len() < MAX_DETAIL + 64, "{}", huge.detail.len());
        assert!(huge.detail.ends_with("bytes cut)"), "{}", &huge.detail[huge.detail.len() - 40..]);
        assert!(huge.render().len() < 2 * MAX_DETAIL);
    }
}
