//! `Plugin.Query` and `Plugin.diagnostics` for both executables.
//!
//! The features a plugin declares are derived from the executable's dispatch table
//! ([`FEATURE_OF_METHOD`]), so Query can never advertise a method that does not exist.
//! xapi names the SR type after `plugin`, which must equal the last component of the
//! volume plugin's directory name `org.xen.xapi.storage.<type>` (docs/smapiv3.md).

use std::fmt::Write as _;
use std::time::Duration;

use super::doctor;
use crate::config;
use crate::host::Host;
use crate::process::runner::{Cmd, Program};
use crate::smapi::exec::Operation;
use crate::smapi::wire::QueryResult;

/// The SR type of the SMAPIv3 volume plugin (`xe sr-create type=cephrbd-ng`).
pub const VOLUME_PLUGIN: &str = "cephrbd-ng";
/// The name the datapath plugin reports.
pub const DATAPATH_PLUGIN: &str = "cephrbd-datapath";
/// The API version both plugins are written against.
pub const API_VERSION: &str = "5.0";
/// The programs the driver runs, reported by diagnostics.
pub const TOOLS: &[&str] = &["rbd", "ceph", "qemu-storage-daemon"];

/// Feature strings xapi understands (smint.ml), declared when the method is in the table.
pub const FEATURE_OF_METHOD: &[(&str, &str)] = &[
    ("SR.create", "SR_CREATE"),
    ("SR.destroy", "SR_DELETE"),
    ("SR.attach", "SR_ATTACH"),
    ("SR.detach", "SR_DETACH"),
    ("SR.ls", "SR_SCAN"),
    ("SR.stat", "SR_UPDATE"),
    ("SR.probe", "SR_PROBE"),
    ("Volume.create", "VDI_CREATE"),
    ("Volume.destroy", "VDI_DELETE"),
    ("Volume.stat", "VDI_UPDATE"),
    ("Volume.clone", "VDI_CLONE"),
    ("Volume.snapshot", "VDI_SNAPSHOT"),
    ("Volume.resize", "VDI_RESIZE"),
];

/// Features that stand for several methods, declared only when every one of them is in
/// the table: xapi allows all four CBT calls on an SR whose plugin declares
/// `VDI_CONFIG_CBT` (`check_sm_feature_error` in xapi_vdi.ml).
pub const FEATURE_OF_ALL_METHODS: &[(&str, &[&str])] = &[(
    "VDI_CONFIG_CBT",
    &["Volume.enable_cbt", "Volume.disable_cbt", "Volume.data_destroy", "Volume.list_changed_blocks"],
)];

/// Features of the volume plugin that no method of its own stands for: xapi reads the
/// datapath's read-only activation from the volume plugin (storage_mux), and images are
/// thin. Each is tested: `Datapath.activate_readonly` in the datapath tests, thinness by
/// `physical_utilisation` with fast-diff.
pub const VOLUME_EXTRA_FEATURES: &[&str] = &["VDI_ACTIVATE_READONLY", "THIN_PROVISIONING"];

fn features(operations: &[Operation]) -> Vec<String> {
    let has = |method: &str| operations.iter().any(|op| op.name.eq_ignore_ascii_case(method));
    let mut features: Vec<String> =
        FEATURE_OF_METHOD.iter().filter(|(method, _)| has(method)).map(|(_, feature)| (*feature).to_owned()).collect();
    features.extend(
        FEATURE_OF_ALL_METHODS
            .iter()
            .filter(|(_, methods)| methods.iter().all(|m| has(m)))
            .map(|(feature, _)| (*feature).to_owned()),
    );
    features
}

fn query(operations: &[Operation], plugin: &str, description: &str, volume: bool) -> QueryResult {
    let mut features = features(operations);
    if volume {
        features.extend(VOLUME_EXTRA_FEATURES.iter().map(|f| (*f).to_owned()));
    }
    QueryResult {
        plugin: plugin.to_owned(),
        name: plugin.to_owned(),
        description: description.to_owned(),
        vendor: "cephrbd".to_owned(),
        copyright: "(C) the cephrbd authors, LGPL-2.1-only".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        required_api_version: API_VERSION.to_owned(),
        features,
        configuration: if volume {
            config::KEYS.iter().map(|(k, d)| ((*k).to_owned(), (*d).to_owned())).collect()
        } else {
            Default::default()
        },
        required_cluster_stack: Vec::new(),
    }
}

/// `Plugin.Query` of the volume plugin whose dispatch table is `operations`.
pub fn volume_query(operations: &[Operation]) -> QueryResult {
    query(operations, VOLUME_PLUGIN, "Ceph RBD images as XCP-ng virtual disks (SMAPIv3)", true)
}

/// `Plugin.Query` of the datapath plugin whose dispatch table is `operations`.
pub fn datapath_query(operations: &[Operation]) -> QueryResult {
    query(operations, DATAPATH_PLUGIN, "Block devices for cephrbd volumes (SMAPIv3 datapath)", false)
}

/// `Plugin.diagnostics`: a printable report of this host's view (no personal data, no
/// secrets): version, the methods of the executable, tool versions, and the host checks
/// of [`doctor`].
pub fn diagnostics(host: &Host, executable: &str, operations: &[Operation]) -> String {
    let mut report = String::new();
    let _ = writeln!(report, "cephrbd {} ({executable})", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(report, "methods: {}", operations.iter().map(|op| op.name).collect::<Vec<_>>().join(" "));
    for tool in TOOLS {
        if let Ok(program) = Program::resolve(tool) {
            let version = Cmd::new(&program, Duration::from_secs(10))
                .arg("--version")
                .run()
                .map(|out| String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_owned())
                .unwrap_or_else(|e| format!("version unknown: {e}"));
            let _ = writeln!(report, "{tool} version: {version}");
        }
    }
    for finding in doctor::host_checks(host) {
        let _ = writeln!(report, "{finding}");
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smapi::exec::reply;

    fn table(names: &[&'static str]) -> Vec<Operation> {
        names.iter().map(|name| Operation { name, handler: |c, _| reply(c, Ok(())) }).collect()
    }

    #[test]
    fn a_feature_of_several_methods_needs_all_of_them() {
        let cbt = ["Volume.enable_cbt", "Volume.disable_cbt", "Volume.data_destroy", "Volume.list_changed_blocks"];
        assert!(features(&table(&cbt)).contains(&"VDI_CONFIG_CBT".to_owned()));
        for missing in 0..cbt.len() {
            let some: Vec<&'static str> =
                cbt.iter().enumerate().filter(|(i, _)| *i != missing).map(|(_, m)| *m).collect();
            assert!(!features(&table(&some)).contains(&"VDI_CONFIG_CBT".to_owned()), "without {}", cbt[missing]);
        }
    }
}
